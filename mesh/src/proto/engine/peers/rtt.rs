//! Round-trip times to a neighbour, from shoal's own ping frames.

use std::collections::VecDeque;

/// RTT samples kept per neighbour (median and spread are taken over them).
const RTT_SAMPLES: usize = 16;
/// Samples in the running minimum of [`Rtt::base_median`].
const QUEUE_FILTER: usize = 8;

/// The medians are read far more often than samples arrive (every
/// scheduling run weighs each holder's RTT), so both are computed once per
/// sample, on the stack, and kept.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rtt {
    samples: VecDeque<u64>,
    median: Option<u64>,
    base_median: Option<u64>,
}

impl Rtt {
    pub(crate) fn record(&mut self, ms: u64) {
        if self.samples.len() == RTT_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
        let mut buf = [0u64; RTT_SAMPLES];
        let s = &mut buf[..self.samples.len()];
        for (slot, &v) in s.iter_mut().zip(&self.samples) {
            *slot = v;
        }
        self.base_median = base_median_of(s);
        s.sort_unstable();
        self.median = s.get(s.len() / 2).copied();
    }

    /// Spread of the recent samples (population standard deviation).
    pub(crate) fn stddev(&self) -> Option<f32> {
        if self.samples.len() < 2 {
            return None;
        }
        let n = self.samples.len() as f32;
        let mean = self.samples.iter().sum::<u64>() as f32 / n;
        let var = self
            .samples
            .iter()
            .map(|&s| (s as f32 - mean).powi(2))
            .sum::<f32>()
            / n;
        Some(var.sqrt())
    }

    /// The smallest of the last few samples: the path's delay with the
    /// least queueing, for the coordinate (queues are not distance).
    pub(crate) fn recent_min(&self, n: usize) -> Option<u64> {
        self.samples.iter().rev().take(n).min().copied()
    }

    /// Median of the samples after a running minimum over [`QUEUE_FILTER`]
    /// samples: the path's typical RTT without the queueing a ping meets
    /// behind pieces (a loaded neighbour is not a far one; its load shows
    /// in the spread and the delivery rate instead).
    pub(crate) fn base_median(&self) -> Option<u64> {
        self.base_median
    }

    pub(crate) fn median(&self) -> Option<u64> {
        self.median
    }
}

/// [`Rtt::base_median`] of samples `s`, oldest first.
fn base_median_of(s: &[u64]) -> Option<u64> {
    let w = QUEUE_FILTER.min(s.len()).max(1);
    let mut buf = [0u64; RTT_SAMPLES];
    let mut n = 0;
    for win in s.windows(w) {
        buf[n] = *win.iter().min().expect("non-empty");
        n += 1;
    }
    let mins = &mut buf[..n];
    mins.sort_unstable();
    mins.get(mins.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_median_over_recent_samples() {
        let mut r = Rtt::default();
        assert_eq!(r.median(), None);
        for s in [50, 10, 30] {
            r.record(s);
        }
        assert_eq!(r.median(), Some(30));
        for _ in 0..RTT_SAMPLES {
            r.record(5);
        }
        assert_eq!(r.median(), Some(5));
    }

    /// The kept medians are those of the samples, as computed before they
    /// were kept: sorted copies, and a running minimum's windows.
    #[test]
    fn kept_medians_match_the_samples() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut r = Rtt::default();
        assert_eq!((r.median(), r.base_median()), (None, None));
        for _ in 0..200 {
            r.record(rng.gen_range(1..300));
            let s: Vec<u64> = r.samples.iter().copied().collect();
            let mut sorted = s.clone();
            sorted.sort_unstable();
            assert_eq!(r.median(), sorted.get(sorted.len() / 2).copied());
            let w = QUEUE_FILTER.min(s.len()).max(1);
            let mut mins: Vec<u64> = s.windows(w).map(|w| *w.iter().min().unwrap()).collect();
            mins.sort_unstable();
            assert_eq!(r.base_median(), mins.get(mins.len() / 2).copied());
        }
    }
}
