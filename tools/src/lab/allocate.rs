//! `shoal-lab allocate`: the coordinator's allocation round at scale, timed
//! on one core.
//!
//! Streams get Zipf popularity over the viewers, and each viewer an upload
//! from the lab's mixed spread. Each round every viewer reports, the reports
//! are tallied per stream (in arrival order: shuffled) and the allocator
//! splits the budget; that is what is timed. The swarms answer their
//! budgets by the fluid bound (`allocation::Prior`), not by running engines:
//! the figures beside the timing show how the policies differ in principle,
//! and the simulator measures them with the real engine.

use std::{collections::HashMap, io::Write, time::Instant};

use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use shoal_mesh::allocation::{Allocator, AllocatorConfig, Policy, Prior, SwarmTally, ViewerReport};

use super::population::mixed_upload_factor;

/// How big a round to time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllocateConfig {
    pub streams: u32,
    pub viewers: u64,
    pub rounds: u32,
    /// Infrastructure upload to split, as a multiple of what the swarms
    /// need to play everywhere (the sum of their fluid knees).
    pub budget_of_need: f64,
    pub policies: Vec<Policy>,
    pub bitrate_bps: u64,
    /// Zipf exponent of stream popularity.
    pub zipf: f64,
    pub seed: u64,
}

impl Default for AllocateConfig {
    fn default() -> Self {
        AllocateConfig {
            streams: 10_000,
            viewers: 1_000_000,
            rounds: 5,
            budget_of_need: 1.0,
            policies: Policy::ALL.to_vec(),
            bitrate_bps: 2_000_000,
            zipf: 1.0,
            seed: 1,
        }
    }
}

/// One policy's rounds.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyRounds {
    pub policy: Policy,
    /// Tally and split, per round, ms.
    pub round_ms: Vec<f64>,
    pub round_ms_median: f64,
    /// Of the last round, by the fluid bound: goodput / demand over all
    /// viewers, the lowest stream continuity, and the streams below 0.99.
    pub goodput_of_demand: f64,
    pub min_continuity: f64,
    pub streams_below_099: u32,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct AllocateOutput {
    pub config: AllocateConfig,
    pub need_bps: f64,
    pub budget_bps: u64,
    pub policies: Vec<PolicyRounds>,
}

/// A stream's swarm as the fluid bound sees it.
#[derive(Clone, Debug)]
struct FluidSwarm {
    prior: Prior,
    /// Each viewer's upload, bit/s.
    uploads: Vec<u64>,
}

impl FluidSwarm {
    /// What the swarm uses of `budget_bps`, and its continuity.
    fn respond(&self, budget_bps: f64) -> (f64, f64) {
        let curve = self.prior.curve();
        let used = budget_bps.min(curve.knee());
        let demand = f64::from(self.prior.viewers) * self.prior.bitrate_bps;
        let continuity = if demand > 0.0 {
            curve.value(used) / demand
        } else {
            1.0
        };
        (used, continuity.min(1.0))
    }
}

/// Zipf popularity: every stream has at least one viewer, and the counts
/// add up to `viewers` (at least one per stream).
fn popularity(streams: u32, viewers: u64, zipf: f64) -> Vec<u32> {
    let weights: Vec<f64> = (1..=streams).map(|k| (k as f64).powf(-zipf)).collect();
    let total: f64 = weights.iter().sum();
    let spare = viewers.saturating_sub(u64::from(streams)) as f64;
    let mut counts: Vec<u32> = weights
        .iter()
        .map(|w| 1 + (spare * w / total).floor() as u32)
        .collect();
    let short = viewers.saturating_sub(counts.iter().map(|&c| u64::from(c)).sum());
    if let Some(first) = counts.first_mut() {
        *first += short as u32;
    }
    counts
}

/// Runs each policy for `cfg.rounds` rounds on one thread, writing a line
/// per round to `progress`.
pub fn allocate(cfg: &AllocateConfig, progress: &mut impl Write) -> anyhow::Result<AllocateOutput> {
    anyhow::ensure!(cfg.streams > 0, "--streams must be at least 1");
    anyhow::ensure!(
        cfg.viewers >= u64::from(cfg.streams) && cfg.viewers <= 10_000_000,
        "--viewers must be between the number of streams and 10,000,000"
    );
    anyhow::ensure!(cfg.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        cfg.budget_of_need.is_finite() && cfg.budget_of_need >= 0.0,
        "the budget must be a non-negative multiple of the need"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let bitrate = cfg.bitrate_bps as f64;
    let swarms: Vec<FluidSwarm> = popularity(cfg.streams, cfg.viewers, cfg.zipf)
        .into_iter()
        .map(|n| {
            let uploads: Vec<u64> = (0..n)
                .map(|_| (bitrate * mixed_upload_factor(rng.gen())) as u64)
                .collect();
            let prior = Prior {
                viewers: n,
                bitrate_bps: bitrate,
                upload_bps: uploads.iter().sum::<u64>() as f64,
            };
            FluidSwarm { prior, uploads }
        })
        .collect();
    let need_bps: f64 = swarms.iter().map(|s| s.prior.curve().knee()).sum();
    let budget_bps = (need_bps * cfg.budget_of_need) as u64;
    writeln!(
        progress,
        "{} streams, {} viewers: need {:.1} Mbit/s, budget {:.1} Mbit/s",
        cfg.streams,
        cfg.viewers,
        need_bps / 1e6,
        budget_bps as f64 / 1e6
    )?;

    // Who reports, in the order the reports arrive.
    let mut arrivals: Vec<(u32, u32)> = swarms
        .iter()
        .enumerate()
        .flat_map(|(s, sw)| (0..sw.prior.viewers).map(move |v| (s as u32, v)))
        .collect();
    arrivals.shuffle(&mut rng);

    let interval_ms = 1_000;
    let mut policies = Vec::new();
    for &policy in &cfg.policies {
        let alloc_cfg = AllocatorConfig {
            policy,
            ..AllocatorConfig::default()
        };
        let mut allocator: Allocator<u32> = Allocator::new(alloc_cfg, cfg.seed);
        // Before the first round the swarms fend for themselves.
        let mut budgets = vec![f64::INFINITY; swarms.len()];
        let mut round_ms = Vec::new();
        let mut last = (0.0, 1.0, 0);
        for round in 1..=cfg.rounds {
            let answers: Vec<(f64, f64)> = swarms
                .iter()
                .zip(&budgets)
                .map(|(s, &b)| s.respond(b))
                .collect();
            let reports: Vec<(u32, ViewerReport)> = arrivals
                .iter()
                .map(|&(s, v)| {
                    let sw = &swarms[s as usize];
                    let (used, continuity) = answers[s as usize];
                    let per_viewer_bytes = used / f64::from(sw.prior.viewers) / 8.0;
                    (
                        s,
                        ViewerReport {
                            infra_bytes: per_viewer_bytes as u64,
                            pieces_due: 1_000,
                            pieces_in_time: (continuity * 1_000.0).round() as u64,
                            playing: continuity > 0.0,
                            upload_bps: sw.uploads[v as usize],
                        },
                    )
                })
                .collect();

            let started = Instant::now();
            let mut tallies: HashMap<u32, SwarmTally> = HashMap::with_capacity(swarms.len());
            for (s, r) in &reports {
                tallies.entry(*s).or_default().add(r);
            }
            for (s, t) in tallies {
                allocator.report(s, t.report(interval_ms, bitrate));
            }
            let shares = allocator.round(budget_bps);
            let ms = started.elapsed().as_secs_f64() * 1e3;
            round_ms.push(ms);

            for share in &shares {
                budgets[share.stream as usize] = share.budget_bps as f64;
            }
            last = fluid_figures(&swarms, &budgets);
            writeln!(
                progress,
                "  {policy} round {round}: {ms:.0} ms, goodput {:.4} of demand, min continuity {:.4}",
                last.0, last.1
            )?;
        }
        let mut sorted = round_ms.clone();
        sorted.sort_by(f64::total_cmp);
        policies.push(PolicyRounds {
            policy,
            round_ms_median: sorted[sorted.len() / 2],
            round_ms,
            goodput_of_demand: last.0,
            min_continuity: last.1,
            streams_below_099: last.2,
        });
    }
    Ok(AllocateOutput {
        config: cfg.clone(),
        need_bps,
        budget_bps,
        policies,
    })
}

/// Goodput over demand, the lowest continuity and the streams below 0.99,
/// with these budgets.
fn fluid_figures(swarms: &[FluidSwarm], budgets: &[f64]) -> (f64, f64, u32) {
    let (mut goodput, mut demand, mut min, mut below) = (0.0, 0.0, 1.0f64, 0);
    for (s, &b) in swarms.iter().zip(budgets) {
        let (_, c) = s.respond(b);
        let d = f64::from(s.prior.viewers) * s.prior.bitrate_bps;
        goodput += c * d;
        demand += d;
        min = min.min(c);
        if c < 0.99 {
            below += 1;
        }
    }
    (
        if demand > 0.0 { goodput / demand } else { 1.0 },
        min,
        below,
    )
}

/// The table `allocate` ends with.
pub fn table(out: &AllocateOutput) -> String {
    let mut t = format!(
        "{:<12} {:>14} {:>10} {:>16} {:>15}\n",
        "policy", "round ms (med)", "goodput*", "min continuity*", "streams < 0.99*"
    );
    for p in &out.policies {
        t += &format!(
            "{:<12} {:>14.0} {:>10.4} {:>16.4} {:>15}\n",
            p.policy.name(),
            p.round_ms_median,
            p.goodput_of_demand,
            p.min_continuity,
            p.streams_below_099
        );
    }
    t + "* of the last round, by the fluid bound (not the engine: `shoal-lab sim` measures that)\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn popularity_is_zipf_and_adds_up() {
        let p = popularity(100, 10_000, 1.0);
        assert_eq!(p.iter().map(|&c| u64::from(c)).sum::<u64>(), 10_000);
        assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");
        assert!(p.iter().all(|&c| c >= 1));
        assert!(p[0] > 10 * p[99]);
    }

    #[test]
    fn a_small_run_gives_every_policy_its_figures() {
        let cfg = AllocateConfig {
            streams: 50,
            viewers: 2_000,
            rounds: 3,
            ..AllocateConfig::default()
        };
        let mut sink = Vec::new();
        let out = allocate(&cfg, &mut sink).unwrap();
        assert_eq!(out.policies.len(), 3);
        let by = |p: Policy| out.policies.iter().find(|r| r.policy == p).unwrap();
        // With exactly what the swarms need, Antfarm serves every stream and
        // splitting by viewers leaves the smallest ones short.
        assert!(
            by(Policy::Antfarm).min_continuity >= 0.99,
            "{:?}",
            by(Policy::Antfarm)
        );
        assert!(by(Policy::ByViewers).streams_below_099 > 0);
        assert!(by(Policy::Antfarm).goodput_of_demand >= by(Policy::ByViewers).goodput_of_demand);
        assert!(String::from_utf8(sink).unwrap().contains("antfarm round 3"));
    }

    #[test]
    fn nonsense_sizes_are_clear_errors() {
        let mut sink = Vec::new();
        for cfg in [
            AllocateConfig {
                streams: 0,
                ..AllocateConfig::default()
            },
            AllocateConfig {
                streams: 10,
                viewers: 5,
                ..AllocateConfig::default()
            },
            AllocateConfig {
                rounds: 0,
                ..AllocateConfig::default()
            },
            AllocateConfig {
                budget_of_need: f64::NAN,
                ..AllocateConfig::default()
            },
        ] {
            assert!(allocate(&cfg, &mut sink).is_err());
        }
    }
}
