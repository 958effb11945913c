//! One stream on a host: its engine, its sessions, its fallback origins and
//! where its stats go.

use std::collections::BTreeMap;

use libp2p::PeerId;
use tokio::{sync::watch, task::JoinHandle};

use super::{origins::Origins, session::Session, BudgetGate, OnPiece};
use crate::proto::{Engine, Input, Stats, Time};

pub(super) struct Lane {
    pub(super) engine: Engine<PeerId>,
    /// At most one session per peer: both sides keep the stream opened by
    /// the smaller peer id (see `Driver::open_session`).
    pub(super) sessions: BTreeMap<PeerId, Session>,
    pub(super) origins: Origins,
    pub(super) on_piece: Option<OnPiece>,
    /// The coordinator's budget, shared with the node's HTTP origin.
    pub(super) gate: BudgetGate,
    stats_tx: watch::Sender<Stats>,
    neighbors_tx: watch::Sender<Vec<PeerId>>,
    /// Hands the lane's inbound streams to the driver; aborted with the lane.
    accept: JoinHandle<()>,
    /// The engine was given something since the driver last drained it.
    touched: bool,
    /// Payload received over relayed connections (docs/nat.md).
    relayed: u64,
}

impl Lane {
    pub(super) fn new(
        engine: Engine<PeerId>,
        on_piece: Option<OnPiece>,
        gate: BudgetGate,
        stats_tx: watch::Sender<Stats>,
        neighbors_tx: watch::Sender<Vec<PeerId>>,
        accept: JoinHandle<()>,
    ) -> Self {
        Lane {
            engine,
            sessions: BTreeMap::new(),
            origins: Origins::default(),
            on_piece,
            gate,
            stats_tx,
            neighbors_tx,
            accept,
            touched: false,
            relayed: 0,
        }
    }

    /// Hands the engine an input; the driver drains it after the event.
    pub(super) fn handle(&mut self, input: Input<PeerId>, now: Time) {
        self.touched = true;
        self.engine.handle(input, now);
    }

    /// Hands the engine a frame; what payload it brought counts as
    /// relayed when it came over a relay.
    pub(super) fn handle_frame(&mut self, frame: Input<PeerId>, now: Time, relayed: bool) {
        let payload = |s: &Stats| s.payload_received() + s.payload_duplicate;
        let before = payload(self.engine.stats());
        self.handle(frame, now);
        if relayed {
            self.relayed += payload(self.engine.stats()).saturating_sub(before);
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Time) {
        self.touched = true;
        self.engine.handle_timeout(now);
    }

    /// Whether the engine was given something since the last call.
    pub(super) fn take_touched(&mut self) -> bool {
        std::mem::take(&mut self.touched)
    }

    /// The session with `peer`, if it is generation `gen`.
    pub(super) fn is_current(&self, peer: &PeerId, gen: u64) -> bool {
        self.sessions.get(peer).is_some_and(|s| s.gen == gen)
    }

    /// Ends the session with `peer`, if any, and tells the engine.
    pub(super) fn close_session(&mut self, peer: PeerId, now: Time) {
        if self.sessions.remove(&peer).is_some() {
            self.handle(Input::Disconnected { peer }, now);
        }
    }

    pub(super) fn publish_stats(&self) {
        let mut stats = self.engine.stats().clone();
        stats.relayed = self.relayed;
        self.stats_tx.send_replace(stats);
        self.neighbors_tx
            .send_replace(self.engine.neighbors().copied().collect());
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
