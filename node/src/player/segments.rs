//! The bounded store of segments a viewer can play.
//!
//! Pieces arrive verified but in any order (several neighbours, fallback
//! fetches, retransmissions). A segment becomes playable once its pieces run
//! without a hole from a piece flagged FIRST to a piece flagged LAST; it is
//! then concatenated once into one [`Bytes`] (for MPEG-TS input that is a
//! playable HLS segment starting with PAT, PMT and a keyframe) and its pieces
//! are dropped.
//!
//! The store keeps the newest `max_segments` segment numbers: segments older
//! than that window are evicted, and their late pieces are ignored, so memory is
//! bounded by the window times the broadcaster's segment size.

use std::{collections::BTreeMap, fmt};

use bytes::{Bytes, BytesMut};
use shoal_mesh::proto::{Piece, StreamId};
use tokio::time::Instant;

/// A complete segment, as listed by [`SegmentStore::complete_segments`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment number (from the piece headers).
    pub number: u64,
    /// Duration announced by the segment's LAST piece, in ms.
    pub duration_ms: u32,
    /// Size of the concatenated segment.
    pub bytes: usize,
    /// Broadcaster's clock when the FIRST piece was cut (ms since the epoch).
    pub produced_at: u64,
    /// When the segment became complete here.
    pub completed_at: Instant,
}

/// Bounded store of the segments this viewer can play, fed with verified
/// pieces in any order.
pub struct SegmentStore {
    stream: StreamId,
    max_segments: usize,
    segments: BTreeMap<u64, Segment>,
    /// Newest segment number any piece has named.
    newest: Option<u64>,
}

enum Segment {
    Partial(Partial),
    Complete { info: SegmentInfo, data: Bytes },
}

#[derive(Default)]
struct Partial {
    /// Piece payloads by seq.
    pieces: BTreeMap<u64, Bytes>,
    /// Lowest seq flagged FIRST, with its produced-at.
    first: Option<(u64, u64)>,
    /// Lowest seq flagged LAST, with the segment duration it carries.
    last: Option<(u64, u32)>,
}

impl Partial {
    fn add(&mut self, piece: &Piece) {
        let h = &piece.header;
        if self.pieces.contains_key(&h.seq) {
            return;
        }
        self.pieces.insert(h.seq, piece.data.clone());
        if h.is_first() && self.first.is_none_or(|(seq, _)| h.seq < seq) {
            self.first = Some((h.seq, h.produced_at));
        }
        if h.is_last() && self.last.is_none_or(|(seq, _)| h.seq < seq) {
            self.last = Some((h.seq, h.duration_ms));
        }
    }

    /// The concatenated segment, once the pieces first..=last are all held.
    fn assemble(&self, number: u64, now: Instant) -> Option<(SegmentInfo, Bytes)> {
        let (first, produced_at) = self.first?;
        let (last, duration_ms) = self.last?;
        let span = last.checked_sub(first)?;
        let held = self.pieces.range(first..=last);
        // `held` has no duplicates, so `span + 1` pieces in range means no hole.
        if u64::try_from(held.clone().count()).ok()?.checked_sub(1)? != span {
            return None;
        }
        let len = held.clone().map(|(_, d)| d.len()).sum();
        let mut data = BytesMut::with_capacity(len);
        for (_, d) in held {
            data.extend_from_slice(d);
        }
        let info = SegmentInfo {
            number,
            duration_ms,
            bytes: len,
            produced_at,
            completed_at: now,
        };
        Some((info, data.freeze()))
    }
}

impl fmt::Debug for SegmentStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentStore")
            .field("stream", &self.stream)
            .field("max_segments", &self.max_segments)
            .field("held", &self.segments.len())
            .field("complete", &self.complete_count())
            .field("newest", &self.newest)
            .finish()
    }
}

impl SegmentStore {
    /// A store keeping the newest `max_segments` (at least 1) segment numbers.
    pub fn new(stream: StreamId, max_segments: usize) -> Self {
        SegmentStore {
            stream,
            max_segments: max_segments.max(1),
            segments: BTreeMap::new(),
            newest: None,
        }
    }

    pub fn stream(&self) -> StreamId {
        self.stream
    }

    pub fn max_segments(&self) -> usize {
        self.max_segments
    }

    /// Adds a verified piece; see [`SegmentStore::insert_at`].
    pub fn insert(&mut self, piece: &Piece) -> Option<SegmentInfo> {
        self.insert_at(piece, Instant::now())
    }

    /// Adds a verified piece received at `now`. Duplicates, pieces of other
    /// streams and pieces of segments older than the window are ignored.
    /// Returns the segment this piece completed, if any.
    pub fn insert_at(&mut self, piece: &Piece, now: Instant) -> Option<SegmentInfo> {
        let h = &piece.header;
        if h.stream != self.stream || h.segment < self.floor() {
            return None;
        }
        if self.newest.is_none_or(|n| h.segment > n) {
            self.newest = Some(h.segment);
            let floor = self.floor();
            self.segments = self.segments.split_off(&floor);
        }
        let segment = self
            .segments
            .entry(h.segment)
            .or_insert_with(|| Segment::Partial(Partial::default()));
        let Segment::Partial(partial) = segment else {
            return None; // already complete: a duplicate
        };
        partial.add(piece);
        let (info, data) = partial.assemble(h.segment, now)?;
        *segment = Segment::Complete { info, data };
        Some(info)
    }

    /// Lowest segment number inside the window; older ones are gone for good.
    pub fn floor(&self) -> u64 {
        let keep = self.max_segments as u64 - 1;
        self.newest.map_or(0, |n| n.saturating_sub(keep))
    }

    /// Newest segment number any piece has named, complete or not.
    pub fn newest_segment(&self) -> Option<u64> {
        self.newest
    }

    /// Complete segments in the window, oldest first.
    pub fn complete_segments(&self) -> Vec<SegmentInfo> {
        self.completes(..).collect()
    }

    pub fn complete_count(&self) -> usize {
        self.completes(..).count()
    }

    /// The complete segment `n`, if held.
    pub fn info(&self, n: u64) -> Option<SegmentInfo> {
        match self.segments.get(&n)? {
            Segment::Complete { info, .. } => Some(*info),
            Segment::Partial(_) => None,
        }
    }

    /// Concatenated data of the complete segment `n`.
    pub fn segment(&self, n: u64) -> Option<Bytes> {
        match self.segments.get(&n)? {
            Segment::Complete { data, .. } => Some(data.clone()),
            Segment::Partial(_) => None,
        }
    }

    pub fn oldest_complete(&self) -> Option<SegmentInfo> {
        self.completes(..).next()
    }

    pub fn newest_complete(&self) -> Option<SegmentInfo> {
        self.completes(..).next_back()
    }

    /// The first complete segment after `n`.
    pub fn next_complete_after(&self, n: u64) -> Option<SegmentInfo> {
        let from = n.checked_add(1)?;
        self.completes(from..).next()
    }

    /// Longest duration among the complete segments, in ms.
    pub fn max_duration_ms(&self) -> Option<u32> {
        self.completes(..).map(|i| i.duration_ms).max()
    }

    fn completes(
        &self,
        range: impl std::ops::RangeBounds<u64>,
    ) -> impl DoubleEndedIterator<Item = SegmentInfo> + '_ {
        self.segments.range(range).filter_map(|(_, s)| match s {
            Segment::Complete { info, .. } => Some(*info),
            Segment::Partial(_) => None,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use libp2p::identity::Keypair;
    use shoal_mesh::proto::{piece::flags, Signer};

    use super::*;

    pub(crate) fn signer() -> Signer {
        Signer::new(&Keypair::generate_ed25519()).unwrap()
    }

    /// The pieces of segment `n`: `count` pieces from `first_seq`, payload
    /// `"<n>:<i>;"`, the last one announcing `duration_ms`.
    pub(crate) fn segment_pieces(
        s: &Signer,
        n: u64,
        first_seq: u64,
        count: u64,
        duration_ms: u32,
    ) -> Vec<Piece> {
        (0..count)
            .map(|i| {
                let mut fl = 0;
                if i == 0 {
                    fl |= flags::FIRST;
                }
                if i + 1 == count {
                    fl |= flags::LAST;
                }
                let dur = if i + 1 == count { duration_ms } else { 0 };
                let data = Bytes::from(format!("{n}:{i};"));
                s.sign(first_seq + i, n, fl, 1_000 + n, dur, data).unwrap()
            })
            .collect()
    }

    /// What [`segment_pieces`] concatenates to.
    pub(crate) fn segment_bytes(n: u64, count: u64) -> Bytes {
        Bytes::from((0..count).map(|i| format!("{n}:{i};")).collect::<String>())
    }

    #[test]
    fn complete_only_when_contiguous_first_to_last() {
        let s = signer();
        let mut store = SegmentStore::new(s.stream(), 30);
        let p = segment_pieces(&s, 5, 50, 4, 1_000);
        assert_eq!(store.insert(&p[0]), None);
        assert_eq!(store.insert(&p[1]), None);
        // LAST without the piece before it: a hole.
        assert_eq!(store.insert(&p[3]), None);
        assert!(store.complete_segments().is_empty());
        assert_eq!(store.segment(5), None);
        let info = store.insert(&p[2]).expect("now contiguous");
        assert_eq!((info.number, info.duration_ms), (5, 1_000));
        assert_eq!(info.bytes, segment_bytes(5, 4).len());
        assert_eq!(store.segment(5), Some(segment_bytes(5, 4)));
        assert_eq!(store.complete_segments(), vec![info]);
    }

    #[test]
    fn needs_both_first_and_last() {
        let s = signer();
        let mut store = SegmentStore::new(s.stream(), 30);
        let p = segment_pieces(&s, 2, 20, 3, 900);
        // Middle and last only: nothing says where the segment starts.
        store.insert(&p[1]);
        store.insert(&p[2]);
        assert_eq!(store.complete_count(), 0);
        // First and middle of the next segment: no LAST yet.
        for piece in &segment_pieces(&s, 3, 23, 3, 900)[..2] {
            store.insert(piece);
        }
        assert_eq!(store.complete_count(), 0);
        assert!(store.insert(&p[0]).is_some());
        assert_eq!(
            store
                .complete_segments()
                .iter()
                .map(|i| i.number)
                .collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn out_of_order_and_duplicates() {
        let s = signer();
        let mut store = SegmentStore::new(s.stream(), 30);
        let mut pieces: Vec<Piece> = (0..4)
            .flat_map(|n| segment_pieces(&s, n, n * 5, 5, 1_000 + n as u32))
            .collect();
        pieces.reverse();
        pieces.swap(1, 7);
        let mut completed = Vec::new();
        for p in &pieces {
            completed.extend(store.insert(p).map(|i| i.number));
            // Every piece twice: duplicates change nothing.
            assert_eq!(store.insert(p), None);
        }
        completed.sort_unstable();
        assert_eq!(completed, vec![0, 1, 2, 3]);
        for n in 0..4 {
            assert_eq!(store.segment(n), Some(segment_bytes(n, 5)));
            assert_eq!(store.info(n).unwrap().duration_ms, 1_000 + n as u32);
        }
        assert_eq!(store.max_duration_ms(), Some(1_003));
    }

    #[test]
    fn single_piece_segment() {
        let s = signer();
        let mut store = SegmentStore::new(s.stream(), 30);
        let p = segment_pieces(&s, 9, 0, 1, 500);
        assert!(store.insert(&p[0]).is_some());
        assert_eq!(store.segment(9), Some(segment_bytes(9, 1)));
    }

    #[test]
    fn window_evicts_old_segments_and_ignores_late_pieces() {
        let s = signer();
        let mut store = SegmentStore::new(s.stream(), 3);
        let all: Vec<Vec<Piece>> = (0..6)
            .map(|n| segment_pieces(&s, n, n * 2, 2, 1_000))
            .collect();
        // Segment 1 is left incomplete.
        store.insert(&all[1][0]);
        for n in [0, 2, 3] {
            for p in &all[n] {
                store.insert(p);
            }
        }
        assert_eq!(store.floor(), 1);
        assert_eq!(store.segment(0), None, "0 is outside the window 1..=3");
        assert_eq!(store.complete_count(), 2);
        for p in &all[5] {
            store.insert(p);
        }
        assert_eq!(store.floor(), 3);
        let held: Vec<u64> = store.complete_segments().iter().map(|i| i.number).collect();
        assert_eq!(held, vec![3, 5]);
        // Late pieces of evicted segments are ignored.
        store.insert(&all[1][1]);
        for p in &all[2] {
            assert_eq!(store.insert(p), None);
        }
        assert_eq!(store.segment(1), None);
        assert_eq!(store.segment(2), None);
        assert!(store.segments.len() <= 3);
        // Segment 4, inside the window, still completes late.
        for p in &all[4] {
            store.insert(p);
        }
        assert_eq!(store.segment(4), Some(segment_bytes(4, 2)));
    }

    #[test]
    fn ignores_other_streams() {
        let s = signer();
        let mut store = SegmentStore::new(s.stream(), 3);
        for p in segment_pieces(&signer(), 0, 0, 1, 1_000) {
            assert_eq!(store.insert(&p), None);
        }
        assert_eq!(store.newest_segment(), None);
    }
}
