//! The play-out timeline: which complete segments are played, in which order.
//!
//! The playlist and `live.ts` must not change their mind. In HLS a segment's
//! media sequence number is implicit (`EXT-X-MEDIA-SEQUENCE` + its position), so
//! listing `9, 11` and later `9, 10, 11` would renumber `11.ts` under a player
//! that already fetched it. The timeline therefore decides segments strictly in
//! order, once each:
//!
//! - the next segment is complete: it is *listed*;
//! - it is missing while a later segment has been complete for the gap timeout
//!   (2 × target duration): it and any other missing segments up to that later
//!   one are *skipped* for good, and the next listed segment carries a
//!   discontinuity (RFC 8216 §4.3.2.3);
//! - otherwise it waits; [`Advance::deadline`] says when to look again.
//!
//! Media sequence numbers count listed segments: a listed segment's number is
//! its segment number minus the segments skipped before it, so without gaps the
//! two are equal, and after a gap they stay consistent across playlist reloads.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use super::segments::SegmentStore;

/// One listed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) segment: u64,
    /// HLS media sequence number.
    pub(crate) msn: u64,
    /// HLS discontinuity sequence number (discontinuities up to and including this one).
    pub(crate) dsn: u64,
    /// Follows skipped segments.
    pub(crate) discontinuity: bool,
    pub(crate) duration_ms: u32,
}

/// What [`Timeline::advance`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Advance {
    /// Entries were listed or dropped.
    pub(crate) changed: bool,
    /// When a pending gap decision falls due.
    pub(crate) deadline: Option<Instant>,
}

#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// Listed segments still in the store, oldest first.
    entries: VecDeque<Entry>,
    /// Highest segment decided (listed or skipped).
    decided: Option<u64>,
    skipped: u64,
    discontinuities: u64,
    /// The next listed segment follows a gap.
    after_gap: bool,
}

/// Skip a missing segment once a later one has been complete this long.
pub(crate) fn gap_timeout(store: &SegmentStore) -> Duration {
    Duration::from_secs(2 * target_duration_s(store.max_duration_ms().unwrap_or(0)))
}

/// `EXT-X-TARGETDURATION` for a longest segment of `max_ms`: whole seconds
/// rounded up, at least 1.
pub(crate) fn target_duration_s(max_ms: u32) -> u64 {
    u64::from(max_ms).div_ceil(1_000).max(1)
}

impl Timeline {
    pub(crate) fn entries(&self) -> &VecDeque<Entry> {
        &self.entries
    }

    /// Decides every segment that can be decided at `now`.
    pub(crate) fn advance(&mut self, store: &SegmentStore, now: Instant) -> Advance {
        let mut changed = false;
        // Listed segments leave only when the store's window evicts them.
        while self
            .entries
            .front()
            .is_some_and(|e| store.info(e.segment).is_none())
        {
            self.entries.pop_front();
            changed = true;
        }
        let gap = gap_timeout(store);
        let mut deadline = None;
        loop {
            let next = match self.decided {
                Some(d) => match d.checked_add(1) {
                    Some(n) => n,
                    None => break,
                },
                // Play from the first segment that completes.
                None => match store.oldest_complete() {
                    Some(info) => info.number,
                    None => break,
                },
            };
            if next < store.floor() {
                // Evicted before it could be decided.
                self.skip(next, store.floor());
                continue;
            }
            if let Some(info) = store.info(next) {
                self.list(next, info.duration_ms);
                changed = true;
                continue;
            }
            let Some(later) = store.next_complete_after(next) else {
                break;
            };
            let due = later.completed_at + gap;
            if now < due {
                deadline = Some(due);
                break;
            }
            self.skip(next, later.number);
        }
        while self.entries.len() > store.max_segments() {
            self.entries.pop_front();
        }
        Advance { changed, deadline }
    }

    /// Gives up on segments `from..to`.
    fn skip(&mut self, from: u64, to: u64) {
        self.skipped += to - from;
        self.decided = Some(to - 1);
        self.after_gap = true;
    }

    fn list(&mut self, segment: u64, duration_ms: u32) {
        let discontinuity = std::mem::take(&mut self.after_gap);
        if discontinuity {
            self.discontinuities += 1;
        }
        self.entries.push_back(Entry {
            segment,
            msn: segment - self.skipped,
            dsn: self.discontinuities,
            discontinuity,
            duration_ms,
        });
        self.decided = Some(segment);
    }
}

#[cfg(test)]
mod tests {
    use super::{super::segments::tests::*, *};

    fn complete(store: &mut SegmentStore, s: &shoal_mesh::proto::Signer, n: u64, at: Instant) {
        for p in segment_pieces(s, n, n * 10, 2, 1_000) {
            store.insert_at(&p, at);
        }
    }

    fn listed(t: &Timeline) -> Vec<(u64, u64, bool)> {
        t.entries()
            .iter()
            .map(|e| (e.segment, e.msn, e.discontinuity))
            .collect()
    }

    #[test]
    fn lists_in_order_and_waits_for_a_missing_segment() {
        let s = signer();
        let mut store = SegmentStore::new(s.stream(), 30);
        let mut t = Timeline::default();
        let t0 = Instant::now();
        assert_eq!(
            t.advance(&store, t0),
            Advance {
                changed: false,
                deadline: None
            }
        );
        complete(&mut store, &s, 7, t0);
        complete(&mut store, &s, 8, t0);
        complete(&mut store, &s, 10, t0);
        let a = t.advance(&store, t0);
        assert!(a.changed);
        assert_eq!(a.deadline, Some(t0 + Duration::from_secs(2)));
        assert_eq!(listed(&t), vec![(7, 7, false), (8, 8, false)]);
        // 9 completes in time: no gap.
        complete(&mut store, &s, 9, t0 + Duration::from_secs(1));
        t.advance(&store, t0 + Duration::from_secs(1));
        assert_eq!(
            listed(&t),
            vec![(7, 7, false), (8, 8, false), (9, 9, false), (10, 10, false)]
        );
    }

    #[test]
    fn skips_a_gap_after_the_timeout_for_good() {
        let s = signer();
        let mut store = SegmentStore::new(s.stream(), 30);
        let mut t = Timeline::default();
        let t0 = Instant::now();
        complete(&mut store, &s, 1, t0);
        complete(&mut store, &s, 4, t0);
        complete(&mut store, &s, 5, t0);
        t.advance(&store, t0 + Duration::from_millis(1_999));
        assert_eq!(listed(&t), vec![(1, 1, false)]);
        let a = t.advance(&store, t0 + Duration::from_secs(2));
        assert_eq!(a.deadline, None);
        let expected = vec![(1, 1, false), (4, 2, true), (5, 3, false)];
        assert_eq!(listed(&t), expected);
        assert_eq!(t.entries()[1].dsn, 1);
        // A skipped segment completing late is not listed after all.
        complete(&mut store, &s, 2, t0 + Duration::from_secs(3));
        assert!(!t.advance(&store, t0 + Duration::from_secs(3)).changed);
        assert_eq!(listed(&t), expected);
    }

    #[test]
    fn window_eviction_drops_entries_and_skips_undecided() {
        let s = signer();
        let mut store = SegmentStore::new(s.stream(), 3);
        let mut t = Timeline::default();
        let t0 = Instant::now();
        complete(&mut store, &s, 0, t0);
        complete(&mut store, &s, 2, t0);
        t.advance(&store, t0);
        assert_eq!(listed(&t), vec![(0, 0, false)]);
        // Jump far ahead: 0 is evicted, 1..=9 are skipped without waiting.
        complete(&mut store, &s, 10, t0);
        complete(&mut store, &s, 12, t0);
        t.advance(&store, t0);
        assert_eq!(listed(&t), vec![(10, 1, true)]);
    }
}
