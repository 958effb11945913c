//! Splitting one budget across streams: Antfarm's way, and two naive ones
//! to measure it against.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::curve::Curve;

/// How the infrastructure tier's upload is split across streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Antfarm: every stream's minimum first, then by marginal gain on the
    /// estimated response curves, weighted by priority.
    #[default]
    Antfarm,
    /// Streams in the order they appeared, each taking what it would use,
    /// until the budget is gone: an unmanaged pool.
    FirstCome,
    /// In proportion to viewers.
    ByViewers,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::Antfarm, Policy::FirstCome, Policy::ByViewers];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Antfarm => "antfarm",
            Policy::FirstCome => "first-come",
            Policy::ByViewers => "by-viewers",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Policy::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown allocation policy {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// One stream's claim on the budget.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// Its estimated response curve.
    pub curve: &'a Curve,
    /// What it gets before any stream gets more, bit/s.
    pub minimum_bps: f64,
    /// Weight on its marginal gain (1 for equal standing).
    pub priority: f64,
    pub viewers: u32,
    /// What it would deliver if every viewer played, bit/s.
    pub demand_bps: f64,
}

/// Splits `budget_bps` across `claims` by `policy`. The shares never add up
/// to more than the budget; claims listed earlier came first.
pub fn split(policy: Policy, budget_bps: f64, claims: &[Claim<'_>]) -> Vec<f64> {
    let budget = if budget_bps.is_finite() {
        budget_bps.max(0.0)
    } else {
        0.0
    };
    match policy {
        Policy::Antfarm => by_marginal_gain(budget, claims),
        Policy::FirstCome => first_come(budget, claims),
        Policy::ByViewers => by_viewers(budget, claims),
    }
}

/// The minimums first (scaled down alike when they alone exceed the budget),
/// then the curves' segments past them, steepest weighted slope first (for
/// concave curves this maximises the weighted goodput), then whatever is
/// left as headroom: to the streams whose curves flatten short of their
/// demand, in proportion to the goodput they miss (weighted), else in
/// proportion to the shares. A curve flat below its demand says more did
/// not help when it was seen, not that viewers miss nothing; a stream that
/// plays in full has no use for headroom.
///
/// More budget never lowers a share: each phase only adds to the last.
fn by_marginal_gain(budget: f64, claims: &[Claim<'_>]) -> Vec<f64> {
    let minimums: Vec<f64> = claims.iter().map(|c| sane(c.minimum_bps)).collect();
    let floor: f64 = minimums.iter().sum();
    if budget <= floor {
        let scale = if floor > 0.0 { budget / floor } else { 0.0 };
        return minimums.iter().map(|m| m * scale).collect();
    }
    let mut shares = minimums;
    let mut left = budget - floor;

    // (weighted slope, claim, width) of every segment past the minimum.
    let mut steps: Vec<(f64, usize, f64)> = Vec::with_capacity(claims.len() * 2);
    for (i, c) in claims.iter().enumerate() {
        let weight = c.priority.clamp(MIN_PRIORITY, MAX_PRIORITY);
        let mut x = 0.0;
        for seg in c.curve.segments() {
            let past = (x + seg.width - shares[i]).min(seg.width);
            if past > 0.0 {
                steps.push((seg.slope * weight, i, past));
            }
            x += seg.width;
        }
    }
    steps.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i, width) in steps {
        let take = width.min(left);
        shares[i] += take;
        left -= take;
        if left <= 0.0 {
            return shares;
        }
    }

    let missed: Vec<f64> = claims
        .iter()
        .zip(&shares)
        .map(|(c, &share)| {
            let weight = c.priority.clamp(MIN_PRIORITY, MAX_PRIORITY);
            (sane(c.demand_bps) - c.curve.value(share)).max(0.0) * weight
        })
        .collect();
    let all_missed: f64 = missed.iter().sum();
    let given: f64 = shares.iter().sum();
    if all_missed > 0.0 {
        for (share, m) in shares.iter_mut().zip(&missed) {
            *share += left * m / all_missed;
        }
    } else if given > 0.0 {
        let scale = 1.0 + left / given;
        shares.iter_mut().for_each(|s| *s *= scale);
    } else if !shares.is_empty() {
        let each = left / shares.len() as f64;
        shares.iter_mut().for_each(|s| *s = each);
    }
    shares
}

/// Priorities outside this range are clamped: a weight of 0 would let a
/// stream starve above its minimum however cheap its goodput.
const MIN_PRIORITY: f64 = 0.01;
const MAX_PRIORITY: f64 = 100.0;

fn first_come(budget: f64, claims: &[Claim<'_>]) -> Vec<f64> {
    let mut left = budget;
    claims
        .iter()
        .map(|c| {
            let take = sane(c.curve.knee()).min(left);
            left -= take;
            take
        })
        .collect()
}

fn by_viewers(budget: f64, claims: &[Claim<'_>]) -> Vec<f64> {
    let viewers: u64 = claims.iter().map(|c| u64::from(c.viewers)).sum();
    if viewers == 0 {
        return vec![0.0; claims.len()];
    }
    claims
        .iter()
        .map(|c| budget * c.viewers as f64 / viewers as f64)
        .collect()
}

fn sane(x: f64) -> f64 {
    if x.is_finite() {
        x.max(0.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::curve::Prior;
    use proptest::prelude::*;

    const MBPS: f64 = 1_000_000.0;

    fn prior(viewers: u32, upload_mbps: f64) -> Curve {
        Prior {
            viewers,
            bitrate_bps: 2.0 * MBPS,
            upload_bps: upload_mbps * MBPS,
        }
        .curve()
    }

    fn claims<'a>(curves: &'a [Curve], viewers: &[u32]) -> Vec<Claim<'a>> {
        curves
            .iter()
            .zip(viewers)
            .map(|(curve, &viewers)| Claim {
                curve,
                minimum_bps: 2.0 * MBPS,
                priority: 1.0,
                viewers,
                demand_bps: f64::from(viewers) * 2.0 * MBPS,
            })
            .collect()
    }

    /// One 150-viewer swarm short of upload, ten of 3 viewers, one singleton.
    fn mix() -> (Vec<Curve>, Vec<u32>) {
        let mut curves = vec![prior(150, 150.0)];
        let mut viewers = vec![150];
        for _ in 0..10 {
            curves.push(prior(3, 2.0));
            viewers.push(3);
        }
        curves.push(prior(1, 1.0));
        viewers.push(1);
        (curves, viewers)
    }

    fn goodput(claims: &[Claim<'_>], shares: &[f64]) -> f64 {
        claims
            .iter()
            .zip(shares)
            .map(|(c, &s)| c.curve.value(s))
            .sum()
    }

    #[test]
    fn antfarm_seeds_the_singleton_that_splitting_by_viewers_starves() {
        let (curves, viewers) = mix();
        let c = claims(&curves, &viewers);
        let budget = 60.0 * MBPS;
        let ant = split(Policy::Antfarm, budget, &c);
        let naive = split(Policy::ByViewers, budget, &c);
        let single = c.len() - 1;
        assert!(ant[single] >= 2.0 * MBPS, "{ant:?}");
        assert!(naive[single] < 1.0 * MBPS, "{naive:?}");
        assert!(goodput(&c, &ant) > goodput(&c, &naive));
    }

    #[test]
    fn first_come_gives_the_first_stream_all_it_would_use_and_the_last_nothing() {
        let (curves, viewers) = mix();
        let c = claims(&curves, &viewers);
        let knee = c[0].curve.knee();
        let first = split(Policy::FirstCome, knee + 1.0 * MBPS, &c);
        assert!((first[0] - knee).abs() < 1.0, "{first:?}");
        assert!((first[1] - 1.0 * MBPS).abs() < 1.0, "{first:?}");
        assert_eq!(first[c.len() - 1], 0.0);
    }

    #[test]
    fn a_budget_below_the_minimums_scales_them_alike() {
        let (curves, viewers) = mix();
        let c = claims(&curves, &viewers);
        let shares = split(Policy::Antfarm, 12.0 * MBPS, &c);
        for s in &shares {
            assert!((s - 1.0 * MBPS).abs() < 1.0, "{shares:?}");
        }
    }

    #[test]
    fn budget_past_every_knee_is_headroom_in_proportion() {
        let (curves, viewers) = mix();
        let c = claims(&curves, &viewers);
        let knees: f64 = c.iter().map(|c| c.curve.knee().max(c.minimum_bps)).sum();
        let shares = split(Policy::Antfarm, 2.0 * knees, &c);
        for (cl, s) in c.iter().zip(&shares) {
            assert!(
                (s - 2.0 * cl.curve.knee().max(cl.minimum_bps)).abs() < 1e-3 * s,
                "{shares:?}"
            );
        }
    }

    /// A 100-viewer swarm whose curve was seen to flatten at 98 % of its
    /// demand, and a singleton that plays in full at one copy: headroom
    /// goes to the swarm that still misses something.
    #[test]
    fn headroom_goes_to_a_stream_short_of_its_demand() {
        let flat_short = Curve::from_segments(&[(2.0 * MBPS, 98.0)]);
        let singleton = prior(1, 0.0);
        let curves = [flat_short, singleton];
        let c = claims(&curves, &[100, 1]);
        let shares = split(Policy::Antfarm, 10.0 * MBPS, &c);
        assert!((shares[1] - 2.0 * MBPS).abs() < 1.0, "{shares:?}");
        assert!((shares[0] - 8.0 * MBPS).abs() < 1.0, "{shares:?}");
    }

    #[test]
    fn priority_buys_a_stream_its_goodput_first() {
        let curves = [prior(1, 0.0), prior(1, 0.0)];
        let mut c = claims(&curves, &[1, 1]);
        for cl in &mut c {
            cl.minimum_bps = 0.0;
        }
        c[1].priority = 2.0;
        let shares = split(Policy::Antfarm, 2.0 * MBPS, &c);
        assert_eq!(shares, vec![0.0, 2.0 * MBPS]);
    }

    #[test]
    fn policy_names_round_trip_and_a_bad_one_is_a_clear_error() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
        }
        let err = "fair".parse::<Policy>().unwrap_err();
        assert!(err.contains("antfarm, first-come, by-viewers"), "{err}");
    }

    fn arb_claims() -> impl Strategy<Value = Vec<(u32, f64, f64, f64)>> {
        // viewers, upload Mbit/s, minimum Mbit/s, priority
        prop::collection::vec((0u32..300, 0.0f64..600.0, 0.0f64..4.0, 0.5f64..4.0), 1..40)
    }

    fn build(raw: &[(u32, f64, f64, f64)]) -> (Vec<Curve>, Vec<(f64, f64, u32)>) {
        let curves = raw.iter().map(|&(v, u, _, _)| prior(v, u)).collect();
        let rest = raw.iter().map(|&(v, _, m, p)| (m * MBPS, p, v)).collect();
        (curves, rest)
    }

    fn as_claims<'a>(curves: &'a [Curve], rest: &[(f64, f64, u32)], equal: bool) -> Vec<Claim<'a>> {
        curves
            .iter()
            .zip(rest)
            .map(|(curve, &(minimum_bps, priority, viewers))| Claim {
                curve,
                minimum_bps,
                priority: if equal { 1.0 } else { priority },
                viewers,
                demand_bps: f64::from(viewers) * 2.0 * MBPS,
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(17), ..ProptestConfig::default() })]

        #[test]
        fn no_policy_gives_out_more_than_the_budget(raw in arb_claims(), budget in 0.0f64..2_000.0) {
            let (curves, rest) = build(&raw);
            let c = as_claims(&curves, &rest, false);
            for p in Policy::ALL {
                let shares = split(p, budget * MBPS, &c);
                prop_assert_eq!(shares.len(), c.len());
                prop_assert!(shares.iter().all(|s| s.is_finite() && *s >= 0.0));
                prop_assert!(shares.iter().sum::<f64>() <= budget * MBPS * (1.0 + 1e-9) + 1e-6, "{} {:?}", p, shares);
            }
        }

        #[test]
        fn antfarm_meets_every_minimum_the_budget_allows(raw in arb_claims(), budget in 0.0f64..2_000.0) {
            let (curves, rest) = build(&raw);
            let c = as_claims(&curves, &rest, false);
            let shares = split(Policy::Antfarm, budget * MBPS, &c);
            let floor: f64 = c.iter().map(|c| c.minimum_bps).sum();
            for (cl, s) in c.iter().zip(&shares) {
                let due = if floor <= budget * MBPS { cl.minimum_bps } else { cl.minimum_bps * budget * MBPS / floor };
                prop_assert!(*s >= due * (1.0 - 1e-9), "{} < {}", s, due);
            }
        }

        #[test]
        fn more_budget_never_lowers_a_share_under_equal_priorities(
            raw in arb_claims(), budget in 0.0f64..2_000.0, more in 0.0f64..500.0,
        ) {
            let (curves, rest) = build(&raw);
            let c = as_claims(&curves, &rest, true);
            for p in Policy::ALL {
                let less = split(p, budget * MBPS, &c);
                let plus = split(p, (budget + more) * MBPS, &c);
                for (a, b) in less.iter().zip(&plus) {
                    prop_assert!(*b >= *a * (1.0 - 1e-9) - 1e-6, "{}: {} -> {}", p, a, b);
                }
            }
        }

        #[test]
        fn antfarm_goodput_is_at_least_the_naive_policies(raw in arb_claims(), budget in 0.0f64..2_000.0) {
            let (curves, rest) = build(&raw);
            let mut c = as_claims(&curves, &rest, true);
            // Without minimums, marginal gain on concave curves is optimal.
            c.iter_mut().for_each(|c| c.minimum_bps = 0.0);
            let ant = goodput(&c, &split(Policy::Antfarm, budget * MBPS, &c));
            for p in [Policy::FirstCome, Policy::ByViewers] {
                let other = goodput(&c, &split(p, budget * MBPS, &c));
                prop_assert!(ant >= other * (1.0 - 1e-9), "{}: {} < {}", p, ant, other);
            }
        }
    }
}
