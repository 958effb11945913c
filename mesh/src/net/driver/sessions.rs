//! Sessions as the driver opens them: dialling, opening a shoal stream on a
//! connection, and the tie-break when both sides opened one.

use std::collections::BTreeSet;

use libp2p::{swarm::dial_opts::DialOpts, Multiaddr, PeerId};

use super::{Driver, RELAY_BELOW};
use crate::{
    net::{
        links::LinkKind,
        protocol,
        session::{LaneEvent, PeerEvent, Session},
    },
    proto::{Input, PeerInfo, StreamId},
};

impl Driver {
    /// Opens a session with a connected peer for each stream still without
    /// one.
    pub(super) fn open_streams(&mut self, peer: PeerId, streams: BTreeSet<StreamId>) {
        for stream in streams {
            let waiting = self
                .lanes
                .get(&stream)
                .is_some_and(|l| !l.sessions.contains_key(&peer));
            if waiting {
                self.open_stream(stream, peer);
            }
        }
    }

    /// Starts a session on a new stream. With two streams for one peer
    /// (both dialled at once), both sides keep the one opened by the
    /// smaller peer id, and the engine starts over on it.
    pub(super) fn open_session(
        &mut self,
        stream: StreamId,
        peer: PeerId,
        s: libp2p::Stream,
        outbound: bool,
    ) {
        let me = *self.swarm.local_peer_id();
        let now = self.clock.now();
        // A relayed peer asking to be a neighbour of a stream with enough
        // direct ones is turned away.
        let relayed_extra = !outbound
            && self.links.kind(&peer) == Some(LinkKind::Relayed)
            && self.direct_sessions(&stream) >= RELAY_BELOW;
        let Some(lane) = self.lanes.get_mut(&stream) else {
            return;
        };
        if relayed_extra && !lane.sessions.contains_key(&peer) {
            return; // the same last-resort rule as the opener's
        }
        let opener = if outbound { me } else { peer };
        if let Some(existing) = lane.sessions.get(&peer) {
            let existing_opener = if existing.outbound { me } else { peer };
            if existing_opener <= opener {
                return; // keep the existing stream; the new one is dropped
            }
            lane.close_session(peer, now);
        }
        self.next_gen += 1;
        let session = Session::spawn(
            stream,
            peer,
            self.next_gen,
            outbound,
            s,
            self.events_tx.clone(),
        );
        lane.sessions.insert(peer, session);
        lane.handle(Input::Connected { peer, outbound }, now);
    }

    pub(super) fn dial(&mut self, stream: StreamId, info: PeerInfo<PeerId>) {
        let peer = info.peer;
        if self.swarm.is_connected(&peer) {
            // Connected already (another stream's session, or an old
            // connection): open this stream's session on it.
            self.open_stream(stream, peer);
            return;
        }
        self.dialing.entry(peer).or_default().insert(stream);
        let addrs: Vec<Multiaddr> = info.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let opts = DialOpts::peer_id(peer).addresses(addrs).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, "cannot dial: {e}");
            self.dialing.remove(&peer);
            self.lane_input(stream, Input::DialFailed { peer });
        }
    }

    /// Opens a shoal stream to a connected peer, in a task.
    pub(super) fn open_stream(&self, stream: StreamId, peer: PeerId) {
        let mut control = self.control.clone();
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let ev = match control.open_stream(peer, protocol(&stream)).await {
                Ok(s) => LaneEvent::Opened(peer, s),
                Err(e) => {
                    tracing::debug!(%peer, "cannot open shoal stream: {e}");
                    LaneEvent::OpenFailed(peer)
                }
            };
            let _ = tx.send(PeerEvent::Lane(stream, ev)).await;
        });
    }
}
