//! The coordinator's allocation round: from the swarms' reports to a budget
//! per stream.

use std::collections::BTreeMap;

use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    curve::{CurveEstimate, Observation, Prior},
    split::{split, Claim, Policy},
    tally::SwarmReport,
};

/// How the allocator splits and learns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AllocatorConfig {
    pub policy: Policy,
    /// Every stream's minimum, in copies of its bitrate: one copy seeds a
    /// swarm of any size and plays a singleton.
    pub minimum_copies: f64,
    /// Share of its budget a stream may lend to, or borrow from, a random
    /// partner each round, so the curves stay known around the operating
    /// point as swarms change (Antfarm's exploration, out of headroom only).
    /// Only `antfarm` explores.
    pub explore: f64,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            policy: Policy::Antfarm,
            minimum_copies: 1.0,
            explore: 0.05,
        }
    }
}

/// What an operator sets for a stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamSettings {
    /// Weight on the stream's goodput (1: equal standing).
    pub priority: f64,
    /// Its minimum, bit/s, instead of [`AllocatorConfig::minimum_copies`].
    pub minimum_bps: Option<f64>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            priority: 1.0,
            minimum_bps: None,
        }
    }
}

/// One stream's budget for the next interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share<K> {
    pub stream: K,
    pub budget_bps: u64,
    /// Where its estimated response curve goes flat: what it would use.
    pub knee_bps: u64,
    pub viewers: u32,
}

#[derive(Debug)]
struct Swarm {
    settings: StreamSettings,
    estimate: CurveEstimate,
    latest: SwarmReport,
    /// Its budget since the last round; `None` before its first.
    given_bps: Option<f64>,
    /// The round it first reported in: `first-come` serves in this order.
    arrived: u64,
}

/// The coordinator's allocator for a set of streams. Each interval: a
/// [`report`](Self::report) per swarm, then one [`round`](Self::round).
#[derive(Debug)]
pub struct Allocator<K> {
    cfg: AllocatorConfig,
    swarms: BTreeMap<K, Swarm>,
    rng: ChaCha8Rng,
    rounds: u64,
}

impl<K: Ord + Clone> Allocator<K> {
    pub fn new(cfg: AllocatorConfig, seed: u64) -> Self {
        Allocator {
            cfg,
            swarms: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            rounds: 0,
        }
    }

    /// A swarm's interval: what its viewers received with the budget it had.
    pub fn report(&mut self, stream: K, report: SwarmReport) {
        let arrived = self.rounds;
        let swarm = self.swarms.entry(stream).or_insert_with(|| Swarm {
            settings: StreamSettings::default(),
            estimate: CurveEstimate::default(),
            latest: report,
            given_bps: None,
            arrived,
        });
        if let Some(given_bps) = swarm.given_bps {
            swarm.estimate.observe(Observation {
                given_bps,
                infra_bps: report.infra_bps,
                goodput_bps: report.goodput_bps,
                demand_bps: report.demand_bps(),
                waiting_bps: report.waiting_bps(),
            });
        }
        swarm.latest = report;
    }

    /// Sets a stream's priority and minimum; it takes effect next round.
    pub fn configure(&mut self, stream: &K, settings: StreamSettings) -> bool {
        match self.swarms.get_mut(stream) {
            Some(s) => {
                s.settings = settings;
                true
            }
            None => false,
        }
    }

    /// Keeps only the streams `keep` says are still there: the others
    /// ended, or their shard moved elsewhere.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.swarms.retain(|k, _| keep(k));
    }

    /// Splits `budget_bps` across the streams for the next interval. The
    /// shares, in stream order, never add up to more than the budget.
    pub fn round(&mut self, budget_bps: u64) -> Vec<Share<K>> {
        self.rounds += 1;
        let mut order: Vec<(&K, &Swarm)> = self.swarms.iter().collect();
        if self.cfg.policy == Policy::FirstCome {
            order.sort_by_key(|(_, s)| s.arrived);
        }
        let curves: Vec<_> = order
            .iter()
            .map(|(_, s)| {
                let r = &s.latest;
                let prior = Prior {
                    viewers: r.viewers,
                    bitrate_bps: r.bitrate_bps,
                    upload_bps: r.upload_bps,
                };
                s.estimate.curve(r.demand_bps(), &prior)
            })
            .collect();
        let minimums: Vec<f64> = order
            .iter()
            .map(|(_, s)| {
                let copies = self.cfg.minimum_copies * s.latest.bitrate_bps;
                let minimum = s.settings.minimum_bps.unwrap_or(copies);
                if s.latest.viewers == 0 {
                    0.0
                } else {
                    minimum.min(s.latest.demand_bps())
                }
            })
            .collect();
        let claims: Vec<Claim<'_>> = order
            .iter()
            .zip(&curves)
            .zip(&minimums)
            .map(|(((_, s), curve), &minimum_bps)| Claim {
                curve,
                minimum_bps,
                priority: s.settings.priority,
                viewers: s.latest.viewers,
                demand_bps: s.latest.demand_bps(),
            })
            .collect();
        let mut shares = split(self.cfg.policy, budget_bps as f64, &claims);
        if self.cfg.policy == Policy::Antfarm {
            let keep: Vec<f64> = curves
                .iter()
                .zip(&minimums)
                .map(|(c, m)| c.knee().max(*m))
                .collect();
            explore(&mut shares, &keep, self.cfg.explore, &mut self.rng);
        }

        let mut keyed: Vec<Share<K>> = order
            .iter()
            .zip(&curves)
            .zip(&shares)
            .map(|(((k, s), curve), &share)| Share {
                stream: (*k).clone(),
                budget_bps: share.floor() as u64,
                knee_bps: curve.knee().floor() as u64,
                viewers: s.latest.viewers,
            })
            .collect();
        for share in &keyed {
            if let Some(s) = self.swarms.get_mut(&share.stream) {
                s.given_bps = Some(share.budget_bps as f64);
            }
        }
        keyed.sort_by(|a, b| a.stream.cmp(&b.stream));
        keyed
    }
}

/// Moves up to `fraction` of the smaller share between random pairs of
/// streams, out of the donor's headroom over `keep` (its knee or minimum,
/// whichever is more): the sum holds, and no stream gives up what it is
/// thought to need. A stream held back by its budget thus learns what more
/// would buy it, at no stream's expense; with no headroom anywhere, the
/// curves' optimistic extension past the last budget seen explores instead
/// ([`CurveEstimate::curve`]).
fn explore(shares: &mut [f64], keep: &[f64], fraction: f64, rng: &mut impl Rng) {
    if !(fraction > 0.0 && fraction.is_finite()) || shares.len() < 2 {
        return;
    }
    let mut idx: Vec<usize> = (0..shares.len()).collect();
    idx.shuffle(rng);
    for pair in idx.chunks_exact(2) {
        let (donor, taker) = if rng.gen() {
            (pair[0], pair[1])
        } else {
            (pair[1], pair[0])
        };
        let spare = (shares[donor] - keep[donor]).max(0.0);
        let step = (fraction.min(1.0) * shares[donor].min(shares[taker])).min(spare);
        shares[donor] -= step;
        shares[taker] += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBPS: f64 = 1_000_000.0;

    fn report(viewers: u32, upload_mbps: f64, infra_mbps: f64, continuity: f64) -> SwarmReport {
        SwarmReport {
            viewers,
            bitrate_bps: 2.0 * MBPS,
            upload_bps: upload_mbps * MBPS,
            infra_bps: infra_mbps * MBPS,
            goodput_bps: f64::from(viewers) * 2.0 * MBPS * continuity,
            playing: viewers,
        }
    }

    #[test]
    fn every_round_stays_within_the_budget_and_every_minimum() {
        let mut a = Allocator::new(AllocatorConfig::default(), 1);
        for round in 0..20u64 {
            a.report(0, report(150, 150.0, 40.0, 0.9));
            for s in 1..11 {
                a.report(s, report(3, 2.0, 4.0, 0.95));
            }
            a.report(11, report(1, 1.0, 2.0, 1.0));
            let budget = 30_000_000 + round * 1_000_000;
            let shares = a.round(budget);
            assert_eq!(shares.len(), 12);
            assert!(shares.iter().map(|s| s.budget_bps).sum::<u64>() <= budget);
            for s in &shares {
                assert!(
                    s.budget_bps as f64 >= 2.0 * MBPS - 1.0,
                    "round {round}: {s:?}"
                );
            }
        }
    }

    #[test]
    fn a_swarm_that_uses_less_than_it_is_given_gives_the_rest_back() {
        let cfg = AllocatorConfig {
            explore: 0.0,
            ..AllocatorConfig::default()
        };
        let mut a = Allocator::new(cfg, 1);
        a.report("big", report(100, 400.0, 0.0, 1.0));
        a.report("small", report(2, 0.0, 0.0, 1.0));
        let first = a.round(20_000_000);
        // The big swarm was given more than it used: its knee is what it used.
        a.report("big", report(100, 400.0, 3.0, 1.0));
        a.report("small", report(2, 0.0, 4.0, 1.0));
        let second = a.round(20_000_000);
        let big = second.iter().find(|s| s.stream == "big").unwrap();
        assert_eq!(big.knee_bps, 3_000_000, "{first:?} {second:?}");
    }

    #[test]
    fn a_stream_configured_with_priority_is_served_first() {
        let cfg = AllocatorConfig {
            explore: 0.0,
            ..AllocatorConfig::default()
        };
        let share_of_b = |priority: f64| {
            let mut a = Allocator::new(cfg, 1);
            a.report("a", report(3, 0.0, 0.0, 1.0));
            a.report("b", report(3, 0.0, 0.0, 1.0));
            let settings = StreamSettings {
                priority,
                minimum_bps: None,
            };
            assert!(a.configure(&"b", settings));
            a.round(6_000_000)[1].budget_bps
        };
        // Equal curves: at equal priority the tie goes to the first stream.
        assert_eq!(share_of_b(1.0), 2_000_000);
        assert_eq!(share_of_b(2.0), 4_000_000);
        assert!(!Allocator::<&str>::new(cfg, 1).configure(&"c", StreamSettings::default()));
    }

    #[test]
    fn a_stream_without_viewers_gets_nothing() {
        let mut a = Allocator::new(AllocatorConfig::default(), 1);
        a.report(1, report(0, 0.0, 0.0, 1.0));
        a.report(2, report(1, 0.0, 0.0, 1.0));
        let shares = a.round(10_000_000);
        assert_eq!(shares[0].budget_bps, 0);
    }

    #[test]
    fn exploration_keeps_the_sum_and_what_each_stream_needs() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let n = rng.gen_range(2..30);
            let keep: Vec<f64> = (0..n).map(|_| rng.gen_range(0.0..5.0)).collect();
            let mut shares: Vec<f64> = keep.iter().map(|k| k + rng.gen_range(0.0..10.0)).collect();
            let before: f64 = shares.iter().sum();
            let lent = shares.clone();
            explore(&mut shares, &keep, 0.2, &mut rng);
            assert!((shares.iter().sum::<f64>() - before).abs() < 1e-9 * before);
            assert_ne!(shares, lent, "nothing moved");
            for (s, k) in shares.iter().zip(&keep) {
                assert!(*s >= *k - 1e-12);
            }
        }
    }

    #[test]
    fn first_come_serves_streams_in_the_order_they_arrived() {
        let cfg = AllocatorConfig {
            policy: Policy::FirstCome,
            ..AllocatorConfig::default()
        };
        let mut a = Allocator::new(cfg, 1);
        a.report(9, report(1, 0.0, 2.0, 1.0));
        a.round(0);
        a.report(1, report(1, 0.0, 2.0, 1.0));
        let shares = a.round(2_000_000);
        assert_eq!(
            shares
                .iter()
                .map(|s| (s.stream, s.budget_bps))
                .collect::<Vec<_>>(),
            vec![(1, 0), (9, 2_000_000)]
        );
    }
}
