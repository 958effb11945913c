//! What this node believes of the stream beyond its store: pieces heard of
//! (and when), segment starts, the newest seq and the stream's pace, from
//! neighbours' announcements and from the pieces it holds.

use std::collections::{BTreeMap, BTreeSet};

#[cfg(test)]
use super::window;
use super::{store::Store, window::SeqWindow};
use crate::proto::wire;

/// Pieces and produced-at span needed before the stream's rate is trusted.
const MIN_RATE_PIECES: u64 = 2;
const MIN_RATE_SPAN_MS: u64 = 200;
/// Pieces heard of but not held, remembered at most.
pub(super) const MAX_HEARD: usize = 4 * wire::MAX_LIST;
/// Segment starts remembered at most.
pub(super) const MAX_SEGMENT_STARTS: usize = wire::MAX_LIST;

/// The live edge as this node knows it. Announcements are unverified, so
/// everything here is bounded, and only held pieces move it for certain.
#[derive(Debug, Default)]
pub(super) struct Edge {
    /// Segment starts heard of (from buffer maps/haves) or held.
    segment_starts: BTreeSet<u64>,
    /// When each piece not yet held was first heard of (wall clock): stands
    /// in for its produced-at until the piece arrives.
    heard: BTreeMap<u64, u64>,
    /// Highest seq any neighbour announced or we hold.
    newest: Option<u64>,
    /// The stream's pace, from a long enough run of held pieces.
    ms_per_piece: Option<f64>,
}

impl Edge {
    /// Highest seq any neighbour announced or we hold.
    pub(super) fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// The stream's pace in ms per piece, as last learnt.
    pub(super) fn pace(&self) -> Option<f64> {
        self.ms_per_piece
    }

    /// When `seq` was first heard of (wall clock), while not held.
    pub(super) fn heard_at(&self, seq: u64) -> Option<u64> {
        self.heard.get(&seq).copied()
    }

    /// The lowest seq heard of and not held.
    pub(super) fn first_heard(&self) -> Option<u64> {
        self.heard.first_key_value().map(|(&s, _)| s)
    }

    #[cfg(test)]
    pub(super) fn heard(&self) -> &BTreeMap<u64, u64> {
        &self.heard
    }

    #[cfg(test)]
    pub(super) fn segment_starts(&self) -> &BTreeSet<u64> {
        &self.segment_starts
    }

    /// Notes pieces and segment starts a neighbour announced at `wall`.
    /// Returns whether it is news for the scheduler: a segment start, a
    /// newer seq, or a piece we neither hold nor have `asked` for (a new
    /// holder of a piece in flight changes nothing until the request times
    /// out).
    pub(super) fn learn(
        &mut self,
        seqs: &[u64],
        starts: &[u64],
        store: &Store,
        asked: impl Fn(u64) -> bool,
        wall: u64,
    ) -> bool {
        let mut news = !starts.is_empty();
        let low = store.first_seq().unwrap_or(0);
        for &s in seqs {
            if s >= low && !store.contains_key(&s) {
                self.heard.entry(s).or_insert(wall);
                news |= !asked(s);
            }
            // A newer seq is news for the scheduler, not for starvation
            // (`replace_if_starved`): only a verified piece proves the
            // neighbourhood is fed.
            news |= self.newest.is_none_or(|n| s > n);
            self.newest = self.newest.max(Some(s));
        }
        // Bound what unverified announcements can make us remember. The
        // farthest ahead go first: a flood of claims displaces only other
        // claims beyond the live edge, never what is due next.
        while self.heard.len() > MAX_HEARD {
            self.heard.pop_last();
        }
        self.segment_starts.extend(starts.iter().copied());
        while self.segment_starts.len() > MAX_SEGMENT_STARTS {
            self.segment_starts.pop_last();
        }
        news
    }

    /// A verified piece is held: it is no longer only heard of, and whether
    /// it starts a segment is now known. An announced start that is not
    /// one (`false_start`: the playback start chose it) is forgotten.
    pub(super) fn held(&mut self, seq: u64, first: bool, false_start: bool) {
        self.heard.remove(&seq);
        if first {
            self.segment_starts.insert(seq);
        } else if false_start {
            self.segment_starts.remove(&seq);
        }
        self.newest = self.newest.max(Some(seq));
    }

    /// Pieces the broadcaster must have cut by now (at `wall`), from the
    /// rate seen in the store, are treated as heard of even if no neighbour
    /// announced them yet: when the whole neighbourhood lags, those pieces
    /// still reach their deadline and fall back to infrastructure instead
    /// of stalling.
    pub(super) fn extrapolate(&mut self, store: &Store, wall: u64) {
        let Some(ms_per_piece) = self.learn_pace(store) else {
            return;
        };
        let Some(p1) = store.last() else {
            return;
        };
        let s1 = p1.header.seq;
        let behind = wall.saturating_sub(p1.header.produced_at) as f64;
        // One piece of slack: the newest piece may be in flight.
        let expected = (behind / ms_per_piece).floor() as u64;
        let edge = s1 + expected.saturating_sub(1).min(wire::MAX_LIST as u64);
        for seq in self.newest.unwrap_or(s1).max(s1) + 1..=edge {
            let produced = p1.header.produced_at + ((seq - s1) as f64 * ms_per_piece) as u64;
            self.heard.entry(seq).or_insert(produced);
        }
        self.newest = self.newest.max(Some(edge));
    }

    /// The stream's pace in ms per piece, from the held pieces (kept for
    /// [`Edge::pace`]), once they span enough to be trusted.
    pub(super) fn learn_pace(&mut self, store: &Store) -> Option<f64> {
        let (p0, p1) = (store.first()?, store.last()?);
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

    /// The first verified piece, `seq`, fixes the window: whatever
    /// announcements made us believe outside it is forgotten, as the
    /// window would have refused it.
    pub(super) fn forget_outside(&mut self, window: SeqWindow, seq: u64) {
        self.heard.retain(|&s, _| window.admits(s));
        self.segment_starts.retain(|&s| window.admits(s));
        if self.newest.is_some_and(|s| !window.admits(s)) {
            let heard = self.heard.last_key_value().map(|(&s, _)| s);
            self.newest = heard.max(Some(seq));
        }
    }

    /// Forgets what lies below the store's oldest piece, `low`.
    pub(super) fn forget_below(&mut self, low: u64) {
        // Both are ordered: forgetting what is below `low` is popping.
        while self.segment_starts.first().is_some_and(|&s| s < low) {
            self.segment_starts.pop_first();
        }
        while self.heard.first_key_value().is_some_and(|(&s, _)| s < low) {
            self.heard.pop_first();
        }
    }

    /// Forgets the unheld pieces from `seq` on (a rebuffer: what was
    /// believed of them proved wrong); the newest seq falls back to what
    /// is still known.
    pub(super) fn forget_from(&mut self, seq: u64, store: &Store) {
        self.heard.split_off(&seq);
        let held = store.last().map(|p| p.header.seq);
        let heard = self.heard.last_key_value().map(|(&s, _)| s);
        let start = self.segment_starts.last().copied();
        self.newest = held.max(heard).max(start);
    }

    /// Where to start playing, at `from` or after: the second newest
    /// segment start we know of, so the first segment completes quickly
    /// and the player has a segment in hand while the next one arrives.
    pub(super) fn start_point(&self, store: &Store, from: u64) -> Option<u64> {
        let newest = self.newest?;
        // A start is announced, so unverified: one we hold must be a first
        // piece (and a held one that is not is dropped, see `held`), so the
        // start is confirmed by the broadcaster's word.
        let mut starts = self
            .segment_starts
            .range(from..=newest.max(from))
            .rev()
            .filter(|&s| store.get(s).is_none_or(|p| p.header.is_first()));
        let latest = starts.next().copied();
        starts.next().copied().or(latest)
    }

    /// Best guess of when a piece was produced: its own stamp when held,
    /// else the earliest of: the next held piece's stamp, the previous held
    /// piece's stamp plus the stream's pace, and when it was first heard of.
    pub(super) fn produced_estimate(&self, store: &Store, seq: u64) -> Option<u64> {
        if let Some(p) = store.get(&seq) {
            return Some(p.header.produced_at);
        }
        let next_held = store.at_or_after(seq).map(|p| p.header.produced_at);
        // From the stream's pace after the previous held piece: being heard
        // of can lag production by seconds when the neighbourhood lags.
        let paced = self.ms_per_piece.and_then(|ms| {
            let p = store.before(seq)?;
            Some(p.header.produced_at + ((seq - p.header.seq) as f64 * ms) as u64)
        });
        // Written out rather than as an iterator over an array: this runs
        // for every missing piece in every scheduling run.
        min_known(min_known(self.heard_at(seq), next_held), paced)
    }
}

/// The smaller of two values, either of which may be unknown.
fn min_known(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::proto::{
        engine::tests::{piece, signer},
        piece::flags,
    };

    /// A store of pieces `seqs`, one every 100 ms; segments start at
    /// multiples of 4.
    fn store(seqs: std::ops::Range<u64>) -> Store {
        let s = signer();
        let mut store = Store::default();
        for seq in seqs {
            let fl = if seq % 4 == 0 { flags::FIRST } else { 0 };
            store.insert(Arc::new(piece(&s, seq, seq / 4, fl, seq * 100, 10)));
        }
        store
    }

    #[test]
    fn a_flood_of_claims_keeps_what_is_due_next() {
        let (mut edge, store) = (Edge::default(), store(0..4));
        let claims: Vec<u64> = (4..4 + MAX_HEARD as u64 + 500).collect();
        for batch in claims.chunks(wire::MAX_LIST) {
            edge.learn(batch, &[], &store, |_| false, 0);
        }
        assert_eq!(edge.heard().len(), MAX_HEARD);
        assert_eq!(edge.first_heard(), Some(4), "the next piece is still known");
        assert_eq!(edge.newest(), claims.last().copied());
    }

    #[test]
    fn announcements_are_news_only_when_they_change_what_to_ask() {
        let (mut edge, store) = (Edge::default(), store(0..4));
        assert!(edge.learn(&[5], &[], &store, |_| false, 0), "a new piece");
        assert!(!edge.learn(&[5], &[], &store, |_| true, 0), "asked already");
        assert!(!edge.learn(&[2], &[], &store, |_| false, 0), "held already");
        assert!(
            edge.learn(&[], &[8], &store, |_| false, 0),
            "a segment start"
        );
    }

    #[test]
    fn a_held_piece_that_was_announced_as_a_start_and_is_not_one_is_forgotten() {
        let (mut edge, store) = (Edge::default(), store(0..9));
        edge.learn(&[9, 10], &[4, 8, 10], &store, |_| false, 0);
        assert_eq!(edge.start_point(&store, 0), Some(8), "second newest start");
        edge.held(10, false, true);
        assert!(!edge.segment_starts().contains(&10));
        assert_eq!(edge.heard_at(10), None);
        assert_eq!(edge.start_point(&store, 0), Some(4));
    }

    #[test]
    fn the_edge_is_extrapolated_from_the_pace_of_held_pieces() {
        let (mut edge, store) = (Edge::default(), store(0..10));
        // Piece 9 was produced at 900 ms; at 1,400 ms pieces up to 14 are
        // cut, one of which may still be in flight.
        edge.extrapolate(&store, 1_400);
        assert_eq!(edge.pace(), Some(100.0));
        assert_eq!(edge.newest(), Some(13));
        assert_eq!(edge.heard_at(12), Some(1_200));
        assert_eq!(edge.produced_estimate(&store, 11), Some(1_100));
    }

    #[test]
    fn what_lies_outside_the_first_verified_window_is_forgotten() {
        let (mut edge, store) = (Edge::default(), store(0..1));
        let far = 3 * window::SPAN;
        edge.learn(&[5, far], &[4, far], &store, |_| false, 0);
        edge.forget_outside(SeqWindow::around(Some(0)), 0);
        assert_eq!(edge.newest(), Some(5));
        assert!(edge.segment_starts().iter().all(|&s| s < far));
        assert_eq!(edge.heard().keys().copied().collect::<Vec<_>>(), vec![5]);
    }
}
