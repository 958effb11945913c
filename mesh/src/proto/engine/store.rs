//! The pieces a node holds: a window of consecutive seqs near the live edge.
//!
//! Held seqs are dense (a node holds almost every piece of its window), so a
//! slot per seq from a moving base is smaller and faster than a tree: a
//! lookup is an index, the oldest and newest pieces are the ends. Pieces are
//! shared (`Arc`): engines in one process that hold the same piece hold one
//! copy of it ([`crate::proto::StreamKey::intern`]).

use std::{collections::VecDeque, sync::Arc};

use crate::proto::piece::Piece;

/// Most seqs the store spans: a piece further ahead than this drops the
/// oldest ones, so no seq can make the slots grow without bound.
const MAX_SPAN: u64 = 1 << 20;

#[derive(Debug, Default)]
pub(super) struct Store {
    /// Seq of `slots[0]`.
    base: u64,
    /// Empty, or starts and ends with a held piece.
    slots: VecDeque<Option<Arc<Piece>>>,
    bytes: usize,
}

impl Store {
    pub(super) fn get(&self, seq: &u64) -> Option<&Piece> {
        let i = seq.checked_sub(self.base)?;
        self.slots.get(usize::try_from(i).ok()?)?.as_deref()
    }

    pub(super) fn contains_key(&self, seq: &u64) -> bool {
        self.get(seq).is_some()
    }

    /// Payload bytes held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn first(&self) -> Option<&Piece> {
        self.slots.front()?.as_deref()
    }

    /// Seq of the oldest piece, without reading the piece (it is the
    /// first slot's, which is always held).
    pub(super) fn first_seq(&self) -> Option<u64> {
        (!self.slots.is_empty()).then_some(self.base)
    }

    pub(super) fn last(&self) -> Option<&Piece> {
        self.slots.back()?.as_deref()
    }

    /// Held seqs, oldest first.
    pub(super) fn keys(&self) -> impl DoubleEndedIterator<Item = &u64> + '_ {
        self.values().map(|p| &p.header.seq)
    }

    /// Held pieces, oldest first.
    pub(super) fn values(&self) -> impl DoubleEndedIterator<Item = &Piece> + '_ {
        self.slots.iter().flatten().map(|p| &**p)
    }

    /// The first held piece at or after `seq`.
    pub(super) fn at_or_after(&self, seq: u64) -> Option<&Piece> {
        let from = seq.saturating_sub(self.base);
        if from >= self.slots.len() as u64 {
            return None;
        }
        self.slots
            .range(from as usize..)
            .flatten()
            .next()
            .map(|p| &**p)
    }

    /// The last held piece before `seq`.
    pub(super) fn before(&self, seq: u64) -> Option<&Piece> {
        let to = seq.checked_sub(self.base)?.min(self.slots.len() as u64);
        self.slots
            .range(..to as usize)
            .flatten()
            .next_back()
            .map(|p| &**p)
    }

    /// Held seqs in `lo..=hi`, in order.
    pub(super) fn seqs_in(&self, lo: u64, hi: u64) -> impl Iterator<Item = u64> + '_ {
        let n = self.slots.len() as u64;
        let from = lo.saturating_sub(self.base).min(n);
        let to = hi
            .checked_sub(self.base)
            .map_or(0, |i| i.saturating_add(1).min(n));
        let base = self.base;
        self.slots
            .range(from as usize..to.max(from) as usize)
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .map(move |(i, _)| base + from + i as u64)
    }

    /// Holds `piece` (replacing any piece of the same seq).
    pub(super) fn insert(&mut self, piece: Arc<Piece>) {
        let seq = piece.header.seq;
        if self.slots.is_empty() {
            self.base = seq;
        }
        if seq < self.base {
            if self.base - seq + self.slots.len() as u64 > MAX_SPAN {
                return; // far older than what we hold
            }
            for _ in seq..self.base {
                self.slots.push_front(None);
            }
            self.base = seq;
        }
        while seq - self.base >= MAX_SPAN {
            self.pop_first();
            if self.slots.is_empty() {
                self.base = seq;
            }
        }
        let i = (seq - self.base) as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        let len = piece.data.len();
        if let Some(old) = self.slots[i].replace(piece) {
            self.bytes -= old.data.len();
        }
        self.bytes += len;
    }

    /// Drops the oldest piece.
    pub(super) fn pop_first(&mut self) -> Option<Arc<Piece>> {
        let piece = self.slots.pop_front()?;
        self.base += 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        let piece = piece?;
        self.bytes -= piece.data.len();
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::piece::{PieceHeader, StreamId};

    fn piece(seq: u64) -> Arc<Piece> {
        Arc::new(Piece {
            header: PieceHeader {
                stream: StreamId([0; 32]),
                seq,
                segment: 0,
                flags: 0,
                produced_at: seq * 10,
                duration_ms: 0,
                len: 3,
                hash: [0; 32],
            },
            signature: bytes::Bytes::new(),
            data: bytes::Bytes::from_static(b"abc"),
        })
    }

    #[test]
    fn behaves_like_an_ordered_map() {
        let mut s = Store::default();
        for seq in [10, 12, 11, 15, 8] {
            s.insert(piece(seq));
        }
        s.insert(piece(12));
        assert_eq!(s.keys().count(), 5);
        assert_eq!(s.bytes(), 15);
        let keys: Vec<u64> = s.keys().copied().collect();
        assert_eq!(keys, [8, 10, 11, 12, 15]);
        assert_eq!(s.keys().next_back(), Some(&15));
        assert!(s.contains_key(&11) && !s.contains_key(&9) && !s.contains_key(&16));
        assert_eq!(s.at_or_after(13).map(|p| p.header.seq), Some(15));
        assert_eq!(s.at_or_after(16).map(|p| p.header.seq), None);
        assert_eq!(s.before(10).map(|p| p.header.seq), Some(8));
        assert_eq!(s.before(8).map(|p| p.header.seq), None);
        assert_eq!(s.before(100).map(|p| p.header.seq), Some(15));
        assert_eq!(s.seqs_in(9, 12).collect::<Vec<_>>(), [10, 11, 12]);
        assert_eq!(s.seqs_in(0, 100).count(), 5);
        assert_eq!(s.seqs_in(16, 100).count(), 0);
        assert_eq!(s.seqs_in(0, 7).count(), 0);
        assert_eq!(s.first_seq(), Some(8));
        assert_eq!(s.pop_first().map(|p| p.header.seq), Some(8));
        assert_eq!(s.first_seq(), Some(10));
        assert_eq!(s.first().map(|p| p.header.seq), Some(10));
        assert_eq!(s.last().map(|p| p.header.seq), Some(15));
        assert_eq!(s.keys().count(), 4);
    }

    #[test]
    fn a_far_seq_drops_the_oldest() {
        let mut s = Store::default();
        s.insert(piece(1));
        s.insert(piece(2 * MAX_SPAN));
        assert_eq!(s.keys().copied().collect::<Vec<_>>(), [2 * MAX_SPAN]);
        s.insert(piece(1));
        assert_eq!(s.keys().count(), 1, "far older than what is held");
    }
}
