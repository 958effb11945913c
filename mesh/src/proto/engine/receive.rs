//! Pieces coming in: a seeder's own, a neighbour's, infrastructure's;
//! verified, counted, stored within the window and announced.

use super::{window::SeqWindow, Engine, PeerId, Timer};
use crate::proto::{engine::Output, piece::Piece, wire::Role};

impl<P: PeerId> Engine<P> {
    /// A seeder's new piece: fanned out (see [`Self::fan_out`]), stored
    /// and announced to the rest.
    pub(super) fn publish(&mut self, piece: Piece, now: u64) {
        if self.key.verify(&piece).is_err() || self.store.contains_key(&piece.header.seq) {
            return;
        }
        self.fan_out(&piece, None, now);
        self.store_piece(piece, now);
    }

    /// A new verified piece at infrastructure, from `from` (`None`: the
    /// broadcaster or HTTP), before it is stored: fed neighbours get it
    /// (`feed`), then `spread` viewers, as the seeder's push. Both are
    /// marked as holding it, so the `Have`s that storing it queues skip
    /// them.
    fn fan_out(&mut self, piece: &Piece, from: Option<&P>, now: u64) {
        // Infrastructure does not pull, so it learns the stream's pace here.
        self.edge.learn_pace(&self.store);
        self.feed(piece, from, now);
        self.push_to_spread(piece, from);
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
            self.parents.delivered(p);
        }
        // A reflector passes on whatever is new to it, from whomever; the
        // second parent's copy is a duplicate and went no further.
        if self.cfg.role == Role::Reflector {
            self.fan_out(&piece, from, now);
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
            // The first start; a start after a rebuffer is not start-up.
            (self.stats.startup_ms).get_or_insert(now.saturating_sub(self.joined_at));
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
