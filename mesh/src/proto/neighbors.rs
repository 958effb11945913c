//! What the engine knows of each neighbour and candidate.

use std::collections::{BTreeSet, VecDeque};

use super::{
    coords::Coord,
    seqset::SeqSet,
    wire::{Locality, PeerInfo, Role},
};

/// RTT samples kept per neighbour (median and spread are taken over them).
const RTT_SAMPLES: usize = 16;
/// Samples in the running minimum of [`Rtt::base_median`].
const QUEUE_FILTER: usize = 8;
/// Delivery rate assumed before a neighbour has delivered anything, bytes/s.
const INITIAL_RATE: f64 = 1_000_000.0;

/// Where a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Transport is up; waiting for the peer's `Hello`.
    Greeting,
    /// Handshake done: pieces may flow.
    Active,
}

/// Round-trip time from shoal's own ping frames.
///
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

/// A connected peer.
#[derive(Debug)]
pub(crate) struct Neighbor {
    pub(crate) phase: Phase,
    /// We dialled it (outbound sessions are never refused for the cap).
    pub(crate) outbound: bool,
    pub(crate) role: Role,
    pub(crate) connected_at: u64,
    /// Pieces it holds, as far as its buffer map and haves tell.
    pub(crate) has: SeqSet,
    /// Pieces we asked of it and when.
    pub(crate) inflight: BTreeSet<u64>,
    /// Haves not yet sent to it.
    pub(crate) pending_have: Vec<u64>,
    pub(crate) pending_starts: Vec<u64>,
    pub(crate) rtt: Rtt,
    /// Nonce and send time of the ping awaiting its pong.
    pub(crate) ping: Option<(u64, u64)>,
    /// Smoothed delivery rate of requested pieces, bytes/s.
    pub(crate) rate: f64,
    /// Strikes for bad pieces and timeouts.
    pub(crate) penalty: u32,
    /// Upload it advertised in its Hello, kbit/s (0: not limited).
    pub(crate) upload_kbps: u32,
    /// Its latest network coordinate.
    pub(crate) coord: Option<Coord>,
    /// Its AS and subnet, from its Hello.
    pub(crate) loc: Locality,
    /// Neighbour slots it had free when it greeted us.
    pub(crate) free: Option<u16>,
}

impl Neighbor {
    pub(crate) fn new(outbound: bool, now: u64) -> Self {
        Neighbor {
            phase: Phase::Greeting,
            outbound,
            role: Role::Viewer,
            connected_at: now,
            has: SeqSet::default(),
            inflight: BTreeSet::new(),
            pending_have: Vec::new(),
            pending_starts: Vec::new(),
            rtt: Rtt::default(),
            ping: None,
            rate: INITIAL_RATE,
            penalty: 0,
            upload_kbps: 0,
            coord: None,
            loc: Locality::default(),
            free: None,
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.phase == Phase::Active
    }

    /// Expected time until a piece of `bytes` asked now would arrive, in ms:
    /// RTT plus everything already queued at the delivery rate (DESIGN.md,
    /// "lowest expected completion time").
    /// Advertised upload, with "not limited" as the most.
    pub(crate) fn capacity(&self) -> u32 {
        if self.upload_kbps == 0 {
            u32::MAX
        } else {
            self.upload_kbps
        }
    }

    pub(crate) fn expected_ms(&self, bytes: usize, queued_bytes: usize) -> f64 {
        let rtt = self.rtt.median().unwrap_or(100) as f64;
        rtt + (queued_bytes + bytes) as f64 * 1000.0 / self.rate
    }

    /// A requested piece arrived `elapsed_ms` after it was asked for, with
    /// `queued` other requests to this neighbour ahead of or beside it.
    /// The service time is what is left after the round trip, shared by
    /// the pieces served in that time; the rate never exceeds what the
    /// neighbour advertised.
    pub(crate) fn observe_delivery(&mut self, bytes: usize, elapsed_ms: u64, queued: usize) {
        let rtt = self.rtt.median().unwrap_or(0);
        let service_ms = elapsed_ms.saturating_sub(rtt).max(1) as f64;
        let sample = (bytes * (queued + 1)) as f64 * 1000.0 / service_ms;
        let mut rate = 0.8 * self.rate + 0.2 * sample;
        if self.upload_kbps > 0 {
            rate = rate.min(f64::from(self.upload_kbps) * 1000.0 / 8.0);
        }
        self.rate = rate.max(1_000.0);
    }
}

/// A peer we may connect to.
#[derive(Debug)]
pub(crate) struct Candidate<P> {
    pub(crate) info: PeerInfo<P>,
    /// Not before this time (after a failure or a refusal).
    pub(crate) retry_at: u64,
    pub(crate) failures: u32,
    /// When we dialled it, while the dial is pending.
    pub(crate) dialing_since: Option<u64>,
    /// Its RTT (queue-filtered median) as measured while it was our
    /// neighbour: once known, it replaces the coordinate's prediction.
    pub(crate) measured_ms: Option<u32>,
}

impl<P> Candidate<P> {
    pub(crate) fn new(info: PeerInfo<P>) -> Self {
        Candidate {
            info,
            retry_at: 0,
            failures: 0,
            dialing_since: None,
            measured_ms: None,
        }
    }

    /// Exponential back-off after a failure: 2 s, 4 s, … up to 60 s.
    pub(crate) fn back_off(&mut self, now: u64) {
        self.failures = self.failures.saturating_add(1);
        let wait = 1_000u64 << self.failures.min(6);
        self.retry_at = now + wait.min(60_000);
        self.dialing_since = None;
    }
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

    #[test]
    fn expected_time_grows_with_queue() {
        let n = Neighbor::new(true, 0);
        assert!(n.expected_ms(1000, 100_000) > n.expected_ms(1000, 0));
    }

    #[test]
    fn back_off_is_bounded() {
        let mut c = Candidate::new(PeerInfo::new(1u32, vec![]));
        for _ in 0..20 {
            c.back_off(0);
        }
        assert_eq!(c.retry_at, 60_000);
    }
}
