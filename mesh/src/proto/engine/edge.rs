//! What this node believes of the stream beyond its store: pieces heard of
//! (and when), segment starts, the newest seq and the stream's pace, from
//! neighbours' announcements and from the pieces it holds.

use super::{window, Engine, PeerId};
use crate::proto::wire;

/// Pieces and produced-at span needed before the stream's rate is trusted.
const MIN_RATE_PIECES: u64 = 2;
const MIN_RATE_SPAN_MS: u64 = 200;

impl<P: PeerId> Engine<P> {
    /// Notes pieces and segment starts a neighbour announced.
    pub(super) fn learn(&mut self, seqs: &[u64], starts: &[u64], now: u64) {
        // News for the scheduler: a segment start, or a piece we neither
        // hold nor have asked for (a new holder of a piece in flight
        // changes nothing until the request times out).
        self.news |= !starts.is_empty();
        let low = self.store.first_seq().unwrap_or(0);
        let wall = self.wall(now);
        for &s in seqs {
            if s >= low && !self.store.contains_key(&s) {
                self.heard.entry(s).or_insert(wall);
                self.news |= !self.inflight.contains_key(&s);
            }
            // A newer seq is news for the scheduler, not for starvation
            // (`replace_if_starved`): only a verified piece proves the
            // neighbourhood is fed.
            self.news |= self.newest_known.is_none_or(|n| s > n);
            self.newest_known = self.newest_known.max(Some(s));
        }
        // Bound what unverified announcements can make us remember. The
        // farthest ahead go first: a flood of claims displaces only other
        // claims beyond the live edge, never what is due next.
        while self.heard.len() > 4 * wire::MAX_LIST {
            self.heard.pop_last();
        }
        self.segment_starts.extend(starts.iter().copied());
        while self.segment_starts.len() > wire::MAX_LIST {
            self.segment_starts.pop_last();
        }
    }

    /// Pieces the broadcaster must have cut by now, from the rate seen in
    /// the store, are treated as heard of even if no neighbour announced
    /// them yet: when the whole neighbourhood lags, those pieces still reach
    /// their deadline and fall back to infrastructure instead of stalling.
    pub(super) fn extrapolate_edge(&mut self, now: u64) {
        let Some(ms_per_piece) = self.learn_pace() else {
            return;
        };
        let Some(p1) = self.store.last() else {
            return;
        };
        let s1 = p1.header.seq;
        let behind = self.wall(now).saturating_sub(p1.header.produced_at) as f64;
        // One piece of slack: the newest piece may be in flight.
        let expected = (behind / ms_per_piece).floor() as u64;
        let edge = s1 + expected.saturating_sub(1).min(wire::MAX_LIST as u64);
        for seq in self.newest_known.unwrap_or(s1).max(s1) + 1..=edge {
            let produced = p1.header.produced_at + ((seq - s1) as f64 * ms_per_piece) as u64;
            self.heard.entry(seq).or_insert(produced);
        }
        self.newest_known = self.newest_known.max(Some(edge));
    }

    /// The stream's pace in ms per piece, from the held pieces (kept in
    /// `ms_per_piece`), once they span enough to be trusted.
    pub(super) fn learn_pace(&mut self) -> Option<f64> {
        let (p0, p1) = (self.store.first()?, self.store.last()?);
        let (s0, s1) = (p0.header.seq, p1.header.seq);
        // The rate is only trusted over a long enough run of pieces: pieces
        // cut together share a produced-at, so a short run can make the
        // stream look a thousand times faster than it is.
        let span = p1.header.produced_at.saturating_sub(p0.header.produced_at);
        if s1 < s0 + MIN_RATE_PIECES || span < MIN_RATE_SPAN_MS {
            return None;
        }
        let ms_per_piece = span as f64 / (s1 - s0) as f64;
        self.ms_per_piece = Some(ms_per_piece);
        Some(ms_per_piece)
    }

    /// The first verified piece, `seq`, fixes the window (`SeqWindow`):
    /// whatever announcements made us believe outside it is forgotten, as
    /// the window would have refused it.
    pub(super) fn forget_outside_window(&mut self, seq: u64) {
        let window = window::SeqWindow::around(Some(seq));
        self.heard.retain(|&s, _| window.admits(s));
        self.segment_starts.retain(|&s| window.admits(s));
        if self.playback.start.is_some_and(|s| !window.admits(s)) {
            self.playback.start = None;
        }
        if self.newest_known.is_some_and(|s| !window.admits(s)) {
            let heard = self.heard.last_key_value().map(|(&s, _)| s);
            self.newest_known = heard.max(Some(seq));
        }
    }
}
