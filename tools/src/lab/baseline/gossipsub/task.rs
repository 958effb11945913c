//! A gossipsub node's task: its swarm, commands and meter, in one
//! `select!` loop.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    gossipsub::{self, IdentTopic, MessageAcceptance},
    swarm::{dial_opts::DialOpts, SwarmEvent},
    Multiaddr, PeerId, Swarm,
};
use shoal_mesh::{
    net::now_ms,
    proto::{wire, Message, Stats, StreamKey},
};
use tokio::sync::{mpsc, watch};

use super::{message::piece_of, Behaviour, BehaviourEvent, Command, Meter};

/// How often the meter is ticked and the stats snapshot refreshed.
const TICK: Duration = Duration::from_millis(100);

pub(super) fn dial_peer(swarm: &mut Swarm<Behaviour>, peer: PeerId, addrs: Vec<Multiaddr>) {
    if peer == *swarm.local_peer_id() || swarm.is_connected(&peer) {
        return;
    }
    let opts = DialOpts::peer_id(peer).addresses(addrs).build();
    if let Err(e) = swarm.dial(opts) {
        tracing::debug!(%peer, "gossipsub baseline: cannot dial: {e}");
    }
}

/// A node's task state.
pub(super) struct Node {
    swarm: Swarm<Behaviour>,
    key: StreamKey,
    publisher: PeerId,
    topic: IdentTopic,
    /// Viewers only.
    meter: Option<Meter>,
    /// The publisher's own counters (newest seq, bad pieces offered).
    published: Stats,
    /// Duplicate payload already passed to the meter.
    duplicates_fed: u64,
    snapshot: watch::Sender<Stats>,
}

impl Node {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        key: StreamKey,
        publisher: PeerId,
        topic: IdentTopic,
        meter: Option<Meter>,
        snapshot: watch::Sender<Stats>,
    ) -> Self {
        Node {
            swarm,
            key,
            publisher,
            topic,
            meter,
            published: Stats::default(),
            duplicates_fed: 0,
            snapshot,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break, // the handle was dropped
                },
                _ = tick.tick() => self.refresh(),
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial(peer, addrs) => dial_peer(&mut self.swarm, peer, addrs),
            Command::Publish(piece) => {
                if self.key.verify(&piece).is_err() {
                    self.published.bad_pieces += 1;
                    return;
                }
                let seq = piece.header.seq;
                let frame = wire::encode::<PeerId>(&Message::Piece(piece));
                let gossip = &mut self.swarm.behaviour_mut().gossip;
                gossip.see(seq);
                self.published.newest_seq = self.published.newest_seq.max(Some(seq));
                if let Err(e) = gossip.inner.publish(self.topic.clone(), frame.to_vec()) {
                    tracing::debug!(seq, "gossipsub baseline: publish failed: {e}");
                }
            }
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_message(propagation_source, &message_id, &message.data),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, "gossipsub baseline: dial failed: {error}");
            }
            _ => {}
        }
    }

    /// The first copy of a message: verify, let gossipsub relay it or not,
    /// and meter it.
    fn on_message(&mut self, from: PeerId, id: &gossipsub::MessageId, data: &[u8]) {
        let now = now_ms();
        let piece = piece_of(data).filter(|p| self.key.verify(p).is_ok());
        let acceptance = if piece.is_some() {
            MessageAcceptance::Accept
        } else {
            MessageAcceptance::Reject
        };
        self.swarm
            .behaviour_mut()
            .gossip
            .inner
            .report_message_validation_result(id, &from, acceptance);
        match (piece, self.meter.as_mut()) {
            (Some(p), Some(meter)) => {
                meter.on_piece(&p.header, from == self.publisher, now);
            }
            (None, Some(meter)) => meter.on_bad_piece(),
            (None, None) => self.published.bad_pieces += 1,
            (Some(_), None) => {}
        }
    }

    /// Ticks the meter and publishes a stats snapshot.
    fn refresh(&mut self) {
        let gossip = &self.swarm.behaviour().gossip;
        let duplicates = gossip.duplicate_payload;
        let neighbors = gossip.inner.mesh_peers(&self.topic.hash()).count() as u32;
        let mut stats = match self.meter.as_mut() {
            Some(meter) => {
                meter.on_duplicate(duplicates - self.duplicates_fed);
                self.duplicates_fed = duplicates;
                meter.tick(now_ms());
                meter.stats()
            }
            None => {
                let mut s = self.published.clone();
                s.payload_duplicate = duplicates;
                s
            }
        };
        stats.neighbors = neighbors;
        self.snapshot.send_replace(stats);
    }
}
