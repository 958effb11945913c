//! Random bytes at a fixed bitrate, cut like a real stream: for benchmarks,
//! where the mesh's behaviour matters and the content does not.

use std::time::Duration;

use bytes::Bytes;
use rand::{rngs::StdRng, RngCore, SeedableRng};
use shoal_mesh::proto::MAX_PIECE_BYTES;

use super::Cut;

/// Endless schedule of synthetic cuts. Sans-IO: [`next`](Self::next) says
/// what to send and when (counted from the start); the caller waits.
#[derive(Debug)]
pub(crate) struct Synthetic {
    bits_per_sec: u64,
    target: Duration,
    rng: StdRng,
    segment: u64,
    /// Bytes of the current segment already emitted.
    sent: usize,
}

impl Synthetic {
    pub(crate) fn new(bits_per_sec: u64, target_segment_ms: u32, seed: u64) -> Self {
        Self {
            bits_per_sec,
            target: Duration::from_millis(u64::from(target_segment_ms.max(1))),
            rng: StdRng::seed_from_u64(seed),
            segment: 0,
            sent: 0,
        }
    }

    /// Bytes in every segment (at least one, so a tiny rate still ticks).
    fn segment_len(&self) -> usize {
        let bits = u128::from(self.bits_per_sec) * self.target.as_millis() / 1000;
        usize::try_from(bits / 8).unwrap_or(usize::MAX).max(1)
    }

    /// The next piece, and when it is due: the moment its last byte would
    /// have been produced at the bitrate. The last piece of a segment is due
    /// when the segment's time is over.
    pub(crate) fn next(&mut self) -> (Duration, Cut) {
        let len = self.segment_len();
        let size = (len - self.sent).min(MAX_PIECE_BYTES);
        let mut data = vec![0u8; size];
        self.rng.fill_bytes(&mut data);
        let first = self.sent == 0;
        self.sent += size;
        let last = self.sent == len;
        let progress = self.target.mul_f64(self.sent as f64 / len as f64);
        let segment_start = self
            .target
            .saturating_mul(u32::try_from(self.segment).unwrap_or(u32::MAX));
        let due = segment_start.saturating_add(progress);
        let cut = Cut {
            data: Bytes::from(data),
            segment: self.segment,
            first,
            last,
            duration_ms: if last {
                u32::try_from(self.target.as_millis()).unwrap_or(u32::MAX)
            } else {
                0
            },
        };
        if last {
            self.segment += 1;
            self.sent = 0;
        }
        (due, cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_flags_are_right() {
        let mut synthetic = Synthetic::new(2_000_000, 1000, 7);
        let mut bytes = 0usize;
        let mut in_segment = 0usize;
        let mut last_due = Duration::ZERO;
        let mut segments = 0;
        loop {
            let (due, cut) = synthetic.next();
            if due > Duration::from_secs(10) {
                break;
            }
            assert!(due >= last_due);
            last_due = due;
            assert!(cut.data.len() <= MAX_PIECE_BYTES && !cut.data.is_empty());
            // 2 Mbit/s × 1 s = 250 000 bytes per segment.
            assert_eq!(cut.first, in_segment == 0, "first flag at {bytes}");
            bytes += cut.data.len();
            in_segment += cut.data.len();
            assert_eq!(cut.last, in_segment == 250_000, "last flag at {bytes}");
            if cut.last {
                in_segment = 0;
                assert_eq!(cut.duration_ms, 1000);
                assert_eq!(cut.segment, segments);
                assert_eq!(due, Duration::from_secs(segments + 1));
                segments += 1;
            }
        }
        assert_eq!(segments, 10);
        assert_eq!(bytes, 2_500_000); // 10 s at 2 Mbit/s
    }

    #[test]
    fn tiny_rate_still_makes_segments() {
        let mut synthetic = Synthetic::new(1, 500, 1);
        let (due, cut) = synthetic.next();
        assert_eq!(cut.data.len(), 1);
        assert!(cut.first && cut.last);
        assert_eq!(due, Duration::from_millis(500));
    }
}
