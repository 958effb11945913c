//! Pieces coming in: a seeder's own, a neighbour's, infrastructure's;
//! verified, counted, stored within the window and announced.

use super::{window::SeqWindow, Engine, PeerId, Timer};
use crate::proto::{engine::Output, piece::Piece, wire::Message};

impl<P: PeerId> Engine<P> {
    /// A seeder's new piece: store it, push it to `push_fanout` neighbours
    /// (viewers first, round robin) and announce it to the rest.
    pub(super) fn publish(&mut self, piece: Piece, now: u64) {
        if self.key.verify(&piece).is_err() || self.store.contains_key(&piece.header.seq) {
            return;
        }
        self.edge.learn_pace(&self.store);
        // Push to `spread` viewers: all of them when there are no more (they
        // were chosen to cover the map), else the better-provisioned half
        // in turn, where the first copies can be passed on quickly.
        let mut viewers: Vec<(u32, P)> = self
            .neighbors
            .active_viewers()
            .map(|(p, n)| (n.capacity(), p.clone()))
            .collect();
        let fanout = self.spread();
        if fanout < viewers.len() {
            viewers.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            viewers.truncate(viewers.len().div_ceil(2));
        }
        let viewers: Vec<P> = viewers.into_iter().map(|(_, p)| p).collect();
        let seq = piece.header.seq;
        for i in 0..fanout.min(viewers.len()) {
            let to = viewers[(self.push_next + i) % viewers.len()].clone();
            if let Some(n) = self.neighbors.get_mut(&to) {
                n.has.insert(seq);
            }
            self.send(&to, &Message::Piece(piece.clone()));
        }
        self.push_next = self.push_next.wrapping_add(1);
        self.store_piece(piece, now);
    }

    /// A verified piece arrived from `from` (`None`: infra over HTTP).
    pub(super) fn accept(&mut self, piece: Piece, from: Option<&P>, from_infra: bool, now: u64) {
        let seq = piece.header.seq;
        let len = piece.data.len() as u64;
        let held = self.store.contains_key(&seq);
        let lag = self.wall(now).saturating_sub(piece.header.produced_at);
        if !self.stats.count_receipt(len, held, from_infra, lag) {
            return;
        }
        if let Some(p) = from {
            if let Some(n) = self.neighbors.get_mut(p) {
                n.has.insert(seq);
            }
        }
        if self.cfg.deliver {
            self.outputs.push_back(Output::Deliver(piece.clone()));
        }
        self.store_piece(piece, now);
    }

    /// Stores a piece, queues `Have`s for neighbours that lack it, and
    /// prunes the store to the window.
    pub(super) fn store_piece(&mut self, piece: Piece, now: u64) {
        let seq = piece.header.seq;
        self.news = true;
        let first = piece.header.is_first();
        if self.store.last().is_none() {
            // The first verified piece fixes the window: whatever
            // announcements made us believe outside it is forgotten, as the
            // window would have refused it.
            let window = SeqWindow::around(Some(seq));
            self.edge.forget_outside(window, seq);
            if self.playback.start.is_some_and(|s| !window.admits(s)) {
                self.playback.start = None;
            }
        }
        self.playback
            .arrived(seq, piece.header.produced_at, self.wall(now));
        // Announced as a segment start, and it is not one: choose again.
        let false_start = !first && self.playback.start == Some(seq);
        self.edge.held(seq, first, false_start);
        if false_start {
            self.playback.start = None;
        }
        self.selector.fed(now);
        self.stats.newest_seq = self.stats.newest_seq.max(Some(seq));
        self.store.insert(self.key.intern(piece));
        for n in self.neighbors.values_mut() {
            if n.is_active() && !n.has.contains(seq) {
                n.pending_have.push(seq);
                if first {
                    n.pending_starts.push(seq);
                }
            }
        }
        if !self.timers.is_armed(Timer::Have) {
            self.timers
                .set(Timer::Have, now + self.cfg.have_interval_ms);
        }
        let (delay, margin) = (self.cfg.playout_delay_ms, self.cfg.fallback_margin_ms);
        let wall = self.wall(now);
        if self
            .playback
            .check_startup(&self.store, wall, delay, margin)
        {
            self.stats.startup_ms = Some(now.saturating_sub(self.joined_at));
        }
        self.prune();
    }

    /// Drops pieces that fell out of the window or over the byte bound.
    pub(super) fn prune(&mut self) {
        let newest_at = match self.store.last() {
            Some(p) => p.header.produced_at,
            None => return,
        };
        while let Some(oldest) = self.store.first() {
            let expired = oldest.header.produced_at + self.cfg.window_ms < newest_at;
            if !expired && self.store.bytes() <= self.cfg.max_store_bytes {
                break;
            }
            self.store.pop_first();
        }
        if let Some(low) = self.store.first().map(|p| p.header.seq) {
            self.edge.forget_below(low);
            for n in self.neighbors.values_mut() {
                n.has.retain_from(low);
            }
        }
    }
}
