//! The stream's bitrate as the seeder cuts it, for the coordinator.

use std::collections::VecDeque;

/// Span the bitrate is measured over: several segments, so one big
/// keyframe does not swing it.
const WINDOW_MS: u64 = 10_000;

/// Payload over the last [`WINDOW_MS`] of production time.
#[derive(Debug, Default)]
pub(crate) struct BitrateMeter {
    pieces: VecDeque<(u64, u64)>,
    bytes: u64,
}

impl BitrateMeter {
    /// Counts a piece of `bytes` produced at `at_ms`; returns the bitrate in
    /// kbit/s once a second of stream has been seen.
    pub(crate) fn add(&mut self, at_ms: u64, bytes: usize) -> Option<u32> {
        self.pieces.push_back((at_ms, bytes as u64));
        self.bytes += bytes as u64;
        while let Some(&(t, b)) = self.pieces.front() {
            if t.saturating_add(WINDOW_MS) >= at_ms {
                break;
            }
            self.pieces.pop_front();
            self.bytes -= b;
        }
        let first = self.pieces.front()?.0;
        let span_ms = at_ms.saturating_sub(first);
        if span_ms < 1_000 {
            return None;
        }
        let kbps = self.bytes * 8 / span_ms;
        Some(kbps.try_into().unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_stream_measures_its_rate_over_the_window() {
        let mut m = BitrateMeter::default();
        let mut last = None;
        // 2 Mbit/s: 25,000 bytes every 100 ms, for 30 s.
        for i in 0..300u64 {
            last = m.add(i * 100, 25_000).or(last);
        }
        // The window holds 10 s of pieces over a 10 s span, give or take one.
        let kbps = last.expect("measured");
        assert!((1_950..=2_050).contains(&kbps), "{kbps}");
        assert!(m.pieces.len() <= 101);
    }

    #[test]
    fn less_than_a_second_is_not_a_rate() {
        let mut m = BitrateMeter::default();
        assert_eq!(m.add(0, 1_000), None);
        assert_eq!(m.add(999, 1_000), None);
        assert!(m.add(1_000, 1_000).is_some());
    }
}
