//! The sequence numbers a neighbour may name: a bounded window around the
//! newest piece this node has verified.
//!
//! Announcements and requests are unverified, so nothing derived from them
//! may be trusted to stay near the stream: a single `Have` of a seq near
//! `u64::MAX` would otherwise become the live edge. The wire keeps every
//! seq below [`MAX_SEQ`] (so that no arithmetic on one overflows); the
//! window keeps them near what this node has seen signed. A seq outside it
//! is a protocol violation (docs/protocol.md §6.3).

use crate::proto::{seqset::MAX_SPAN, wire::MAX_SEQ};

/// How far from the newest verified piece a seq may lie, either way: the
/// span one buffer map can cover (32,768 pieces, 14 minutes of a
/// 20 Mbit/s stream in 64 KiB pieces), far more than any honest store.
pub(super) const SPAN: u64 = MAX_SPAN;

/// The window around one node's newest verified piece.
#[derive(Clone, Copy, Debug)]
pub(super) struct SeqWindow {
    newest_verified: Option<u64>,
}

impl SeqWindow {
    /// The window around `newest_verified` (`None`: nothing verified yet,
    /// when only the wire's bound applies).
    pub(super) fn around(newest_verified: Option<u64>) -> Self {
        SeqWindow { newest_verified }
    }

    pub(super) fn admits(self, seq: u64) -> bool {
        seq < MAX_SEQ
            && self
                .newest_verified
                .is_none_or(|n| n.saturating_sub(SPAN) <= seq && seq <= n.saturating_add(SPAN))
    }

    pub(super) fn admits_all(self, seqs: &[u64]) -> bool {
        seqs.iter().all(|&s| self.admits(s))
    }

    /// Whether every seq a buffer map names is admitted: its base and its
    /// highest set bit (the bitmap is bounded, so those two bound the rest).
    pub(super) fn admits_map(self, base: u64, bits: &[u8]) -> bool {
        let Some(byte) = bits.iter().rposition(|&b| b != 0) else {
            return true; // names nothing
        };
        let bit = 7 - bits[byte].leading_zeros() as u64;
        let highest = base.saturating_add(byte as u64 * 8 + bit);
        self.admits(base) && self.admits(highest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_anything_is_verified_only_the_wire_bound_applies() {
        let w = SeqWindow::around(None);
        assert!(w.admits(0));
        assert!(w.admits(MAX_SEQ - 1));
        assert!(!w.admits(MAX_SEQ));
        assert!(!w.admits(u64::MAX));
    }

    #[test]
    fn a_seq_far_from_the_newest_verified_is_refused() {
        let w = SeqWindow::around(Some(100_000));
        assert!(w.admits(100_000 + SPAN));
        assert!(!w.admits(100_001 + SPAN));
        assert!(w.admits(100_000 - SPAN));
        assert!(!w.admits(99_999 - SPAN));
        assert!(!w.admits(u64::MAX));
        // Near the ends of the range nothing overflows.
        assert!(SeqWindow::around(Some(3)).admits(0));
        assert!(!SeqWindow::around(Some(MAX_SEQ - 1)).admits(MAX_SEQ));
    }

    #[test]
    fn a_buffer_map_is_judged_by_its_base_and_highest_bit() {
        let w = SeqWindow::around(Some(1_000));
        assert!(w.admits_map(990, &[0b1000_0001, 0, 0]));
        assert!(w.admits_map(u64::MAX, &[0, 0]), "names nothing");
        let mut bits = vec![0u8; (SPAN as usize) / 8];
        bits[0] = 1;
        assert!(w.admits_map(1_000, &bits));
        *bits.last_mut().unwrap() = 0x80;
        assert!(
            w.admits_map(1_001, &bits),
            "highest bit at the window's edge"
        );
        assert!(!w.admits_map(1_002, &bits), "highest bit beyond the window");
        assert!(!w.admits_map(u64::MAX - 3, &[0xFF]));
    }
}
