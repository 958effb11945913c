//! What gossipsub nodes count below gossipsub: every message copy a
//! connection delivers, for duplicates and for the senders' ledger (see
//! "The counters, exactly" in the module notes).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    gossipsub::{self, TopicHash},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};
use shoal_mesh::proto::StreamId;

use super::message::piece_of;

/// Piece seqs remembered for duplicate detection.
const SEEN_MAX: usize = 8192;

/// Payload each node sent, as credited by the nodes that received it.
/// Share one per run among all nodes: a node's `payload_sent` is what the
/// others received from it.
#[derive(Clone, Debug, Default)]
pub struct SentLedger(Arc<Mutex<HashMap<PeerId, u64>>>);

impl SentLedger {
    pub fn new() -> Self {
        SentLedger::default()
    }

    fn credit(&self, sender: PeerId, payload: u64) {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(sender)
            .or_default() += payload;
    }

    /// Payload bytes the others received from `peer`.
    pub fn sent_by(&self, peer: &PeerId) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(peer)
            .copied()
            .unwrap_or(0)
    }
}

/// Gossipsub, plus a look at every message copy a connection delivers:
/// duplicate payload received and the senders' payload ledger.
pub(super) struct Counting {
    pub(super) inner: gossipsub::Behaviour,
    topic: TopicHash,
    stream: StreamId,
    /// Piece seqs received or published; below `seen_floor` all count as seen.
    seen: BTreeSet<u64>,
    seen_floor: u64,
    pub(super) duplicate_payload: u64,
    ledger: SentLedger,
}

type GossipHandlerEvent = THandlerOutEvent<gossipsub::Behaviour>;

impl Counting {
    pub(super) fn new(
        inner: gossipsub::Behaviour,
        topic: TopicHash,
        stream: StreamId,
        ledger: SentLedger,
    ) -> Self {
        Counting {
            inner,
            topic,
            stream,
            seen: BTreeSet::new(),
            seen_floor: 0,
            duplicate_payload: 0,
            ledger,
        }
    }

    /// Marks a seq seen; false if it already was.
    pub(super) fn see(&mut self, seq: u64) -> bool {
        if seq < self.seen_floor || !self.seen.insert(seq) {
            return false;
        }
        while self.seen.len() > SEEN_MAX {
            if let Some(low) = self.seen.pop_first() {
                self.seen_floor = low + 1;
            }
        }
        true
    }

    fn observe(&mut self, from: PeerId, msg: &gossipsub::RawMessage) {
        if msg.topic != self.topic {
            return;
        }
        let Some(piece) = piece_of(&msg.data) else {
            return;
        };
        if piece.header.stream != self.stream {
            return;
        }
        let payload = piece.data.len() as u64;
        self.ledger.credit(from, payload);
        if !self.see(piece.header.seq) {
            self.duplicate_payload += payload;
        }
    }
}

impl NetworkBehaviour for Counting {
    type ConnectionHandler = THandler<gossipsub::Behaviour>;
    type ToSwarm = gossipsub::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addrs: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner
            .handle_pending_outbound_connection(id, peer, addrs, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        if let GossipHandlerEvent::Message { rpc, .. } = &event {
            for msg in &rpc.messages {
                self.observe(peer, msg);
            }
        }
        self.inner.on_connection_handler_event(peer, id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}
