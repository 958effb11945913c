//! The coordinator inside the tracker (docs/coordinator.md): once per
//! interval it sums each stream's viewer reports and splits the
//! infrastructure tier's upload across the streams; each infrastructure
//! announcer is told its part of its stream's budget.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use shoal_mesh::allocation::{Allocator, AllocatorConfig, Policy, SwarmReport, SwarmTally};

use super::swarm::Swarm;

/// How the tracker coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoordinatorConfig {
    pub policy: Policy,
    /// The tier's upload to split, bit/s; `None`: what the live
    /// infrastructure announces (`upload_kbps`), each node counted once.
    pub budget_bps: Option<u64>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            policy: Policy::Antfarm,
            budget_bps: None,
        }
    }
}

#[derive(Debug)]
pub(super) struct Coordinator {
    budget_bps: Option<u64>,
    allocator: Allocator<String>,
    /// Each stream's budget from the last round.
    budgets: HashMap<String, u64>,
    next_round: Option<Instant>,
}

impl Coordinator {
    pub(super) fn new(cfg: CoordinatorConfig, seed: u64) -> Self {
        let alloc = AllocatorConfig {
            policy: cfg.policy,
            ..AllocatorConfig::default()
        };
        Coordinator {
            budget_bps: cfg.budget_bps,
            allocator: Allocator::new(alloc, seed),
            budgets: HashMap::new(),
            next_round: None,
        }
    }

    /// Runs a round if one is due: at most once per `interval`, the span
    /// viewers' reports cover.
    pub(super) fn maybe_round(
        &mut self,
        streams: &HashMap<String, Swarm>,
        now: Instant,
        interval: Duration,
    ) {
        if self.next_round.is_some_and(|at| now < at) {
            return;
        }
        self.next_round = Some(now + interval);
        self.round(streams, now, interval);
    }

    fn round(&mut self, streams: &HashMap<String, Swarm>, now: Instant, interval: Duration) {
        let tier = self
            .budget_bps
            .unwrap_or_else(|| announced_capacity(streams, now));
        let interval_ms = interval.as_millis().try_into().unwrap_or(u64::MAX);
        let mut judged = HashSet::new();
        for (id, swarm) in streams {
            let Some(report) = swarm_report(swarm, now, interval_ms) else {
                continue;
            };
            tracing::debug!(stream = %id, ?report, "swarm report");
            self.allocator.report(id.clone(), report);
            judged.insert(id.as_str());
        }
        self.allocator.retain(|id| judged.contains(id.as_str()));
        self.budgets.clear();
        if tier == 0 {
            return;
        }
        for share in self.allocator.round(tier) {
            tracing::debug!(?share, "budget");
            self.budgets.insert(share.stream, share.budget_bps);
        }
    }

    /// The stream's budget from the last round.
    pub(super) fn budget(&self, stream: &str) -> Option<u64> {
        self.budgets.get(stream).copied()
    }

    /// The budget of one of `stream`'s live infrastructure nodes: an even
    /// part of the stream's. `None` before the stream's first round, or
    /// with no tier budget known.
    pub(super) fn budget_for(&self, stream: &str, swarm: &Swarm, now: Instant) -> Option<u64> {
        let budget = self.budget(stream)?;
        let nodes = swarm.infra.live(now).count();
        Some(budget / nodes.max(1) as u64)
    }
}

/// The swarm's interval from its live viewers' last reports, each scaled
/// to one interval of `interval_ms` whatever span it covers; `None`
/// without a bitrate, as goodput cannot be told from bytes without one.
fn swarm_report(swarm: &Swarm, now: Instant, interval_ms: u64) -> Option<SwarmReport> {
    let bitrate_bps = (swarm.infra.live(now))
        .map(|p| u64::from(p.bitrate_kbps) * 1000)
        .max()
        .filter(|&b| b > 0)?;
    let mut tally = SwarmTally::default();
    for viewer in swarm.viewers.live(now) {
        if let Some(report) = viewer.report {
            let span_ms = u64::from(viewer.report_span_ms);
            let report = report.rescaled(span_ms, interval_ms);
            tally.add(&report.bounded(bitrate_bps, interval_ms));
        }
    }
    Some(tally.report(interval_ms, bitrate_bps as f64))
}

/// The upload the live infrastructure announces, bit/s, each node once
/// however many streams it carries.
fn announced_capacity(streams: &HashMap<String, Swarm>, now: Instant) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for swarm in streams.values() {
        for p in swarm.infra.live(now) {
            if seen.insert(&*p.peer_id) {
                total = total.saturating_add(u64::from(p.upload_kbps) * 1000);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use shoal_mesh::{
        allocation::ViewerReport,
        hints::{Announce, Role},
    };

    use super::*;
    use crate::tracker::{
        fixtures::{peer, stream},
        Registry, TrackerConfig,
    };

    fn seeder(id: &str, n: u8, upload_kbps: u32) -> Announce {
        let mut a = peer(id, "10.0.0.1", Role::Seeder, 0, 8);
        a.stream = stream(n);
        a.upload_kbps = upload_kbps;
        a.bitrate_kbps = 2_000;
        a
    }

    fn viewer(id: &str, n: u8, continuity: f64) -> Announce {
        let mut a = peer(id, "10.0.1.1", Role::Viewer, 0, 8);
        a.stream = stream(n);
        a.report = Some(ViewerReport {
            infra_bytes: 250_000,
            pieces_due: 100,
            pieces_in_time: (continuity * 100.0) as u64,
            playing: true,
            upload_bps: 3_000_000,
        });
        a
    }

    /// A big stream and a singleton on 12 Mbit/s of infrastructure.
    fn two_streams(reg: &mut Registry, now: Instant) {
        reg.announce(seeder("s1", 1, 6_000), None, now).unwrap();
        reg.announce(seeder("s2", 2, 6_000), None, now).unwrap();
        for i in 0..40 {
            reg.announce(viewer(&format!("v{i}"), 1, 1.0), None, now)
                .unwrap();
        }
        reg.announce(viewer("alone", 2, 0.5), None, now).unwrap();
    }

    /// A tracker with `cfg` after two intervals of [`two_streams`]: the
    /// second interval's announces carry the first round's budgets.
    fn after_two_rounds(cfg: TrackerConfig) -> (Registry, Instant) {
        let mut reg = Registry::new(cfg, 1);
        let t0 = Instant::now();
        two_streams(&mut reg, t0);
        let t1 = t0 + Duration::from_secs(5);
        two_streams(&mut reg, t1);
        (reg, t1)
    }

    /// The budget the tracker tells `a` at `now`.
    fn budget_of(reg: &mut Registry, a: Announce, now: Instant) -> Option<u64> {
        reg.announce(a, None, now).unwrap().budget_bps
    }

    #[test]
    fn infrastructure_is_told_its_part_of_the_tier_split_across_streams() {
        let (mut reg, t1) = after_two_rounds(TrackerConfig::default());
        let b1 = budget_of(&mut reg, seeder("s1", 1, 6_000), t1).expect("a budget");
        let b2 = budget_of(&mut reg, seeder("s2", 2, 6_000), t1).expect("a budget");
        assert!(b1 + b2 <= 12_000_000, "{b1} + {b2}");
        // Each stream at least its minimum: one copy of the stream.
        assert!(b1 >= 2_000_000 && b2 >= 2_000_000, "{b1} {b2}");
        let detail = reg.stream_detail(&stream(1), t1).unwrap();
        assert_eq!(
            detail.budget_bps,
            Some(b1),
            "one seeder: the stream's whole budget"
        );
        // Viewers are not given budgets.
        assert_eq!(budget_of(&mut reg, viewer("v0", 1, 1.0), t1), None);
    }

    #[test]
    fn one_viewer_overstating_its_fallback_cannot_starve_its_stream() {
        // Stream 1 turns budget into goodput five times over; stream 2's
        // three viewers upload nothing, so it turns it into goodput once.
        let budget_of_stream_1 = |liar: bool| {
            let mut reg = Registry::new(TrackerConfig::default(), 1);
            let t0 = Instant::now();
            for now in [t0, t0 + Duration::from_secs(5)] {
                reg.announce(seeder("s1", 1, 6_000), None, now).unwrap();
                reg.announce(seeder("s2", 2, 6_000), None, now).unwrap();
                for i in 0..40 {
                    reg.announce(viewer(&format!("v{i}"), 1, 1.0), None, now)
                        .unwrap();
                }
                if liar {
                    let mut a = viewer("liar", 1, 1.0);
                    a.report.as_mut().unwrap().infra_bytes = u64::MAX;
                    reg.announce(a, None, now).unwrap();
                }
                for i in 0..3 {
                    let mut a = viewer(&format!("w{i}"), 2, 0.5);
                    a.report.as_mut().unwrap().upload_bps = 0;
                    reg.announce(a, None, now).unwrap();
                }
            }
            let now = t0 + Duration::from_secs(5);
            budget_of(&mut reg, seeder("s1", 1, 6_000), now).expect("a budget")
        };
        assert_eq!(budget_of_stream_1(true), budget_of_stream_1(false));
    }

    #[test]
    fn no_budget_is_given_without_a_capacity_or_a_bitrate() {
        let mut reg = Registry::new(TrackerConfig::default(), 1);
        let now = Instant::now();
        let mut s = seeder("s1", 1, 0);
        reg.announce(s.clone(), None, now).unwrap();
        reg.announce(viewer("v", 1, 1.0), None, now).unwrap();
        let later = now + Duration::from_secs(5);
        assert_eq!(budget_of(&mut reg, s.clone(), later), None);
        s.upload_kbps = 10_000;
        s.bitrate_kbps = 0;
        let later = later + Duration::from_secs(5);
        reg.announce(s.clone(), None, later).unwrap();
        assert_eq!(budget_of(&mut reg, s, later + Duration::from_secs(5)), None);
    }

    #[test]
    fn an_operator_budget_replaces_the_announced_capacity() {
        let (mut reg, t1) = after_two_rounds(TrackerConfig {
            coordinator: Some(CoordinatorConfig {
                budget_bps: Some(4_000_000),
                ..CoordinatorConfig::default()
            }),
            ..TrackerConfig::default()
        });
        let b1 = budget_of(&mut reg, seeder("s1", 1, 6_000), t1);
        let b2 = budget_of(&mut reg, seeder("s2", 2, 6_000), t1);
        assert_eq!((b1, b2), (Some(2_000_000), Some(2_000_000)));
    }

    #[test]
    fn a_tracker_without_a_coordinator_gives_no_budgets() {
        let (mut reg, t1) = after_two_rounds(TrackerConfig {
            coordinator: None,
            ..TrackerConfig::default()
        });
        assert_eq!(budget_of(&mut reg, seeder("s1", 1, 6_000), t1), None);
    }

    /// Settled viewers announce every 25 s with reports of 25 s: the
    /// swarm's interval reads as when they announced every 5 s.
    #[test]
    fn a_settled_viewers_long_report_counts_as_one_interval() {
        let report_at = |every_s: u64| {
            let mut reg = Registry::new(TrackerConfig::default(), 1);
            let t0 = Instant::now();
            let mut now = t0;
            loop {
                reg.announce(seeder("s1", 1, 6_000), None, now).unwrap();
                for i in 0..10 {
                    let mut a = viewer(&format!("v{i}"), 1, 1.0);
                    a.degree = 8;
                    let r = a.report.as_mut().unwrap();
                    r.infra_bytes = 50_000 * every_s;
                    r.pieces_due = 20 * every_s;
                    r.pieces_in_time = r.pieces_due;
                    reg.announce(a, None, now).unwrap();
                }
                if now >= t0 + Duration::from_secs(50) {
                    break;
                }
                now += Duration::from_secs(every_s);
            }
            let swarm = &reg.streams_for_test()[&stream(1)];
            swarm_report(swarm, now, 5_000).unwrap()
        };
        let (short, long) = (report_at(5), report_at(25));
        assert_eq!(short.viewers, 10);
        assert_eq!(long, short);
        assert_eq!(short.infra_bps, 10.0 * 50_000.0 * 8.0);
        assert_eq!(short.goodput_bps, 10.0 * 2_000_000.0);
    }

    #[test]
    fn a_node_on_two_streams_counts_once() {
        let mut reg = Registry::new(TrackerConfig::default(), 1);
        let now = Instant::now();
        reg.announce(seeder("r", 1, 6_000), None, now).unwrap();
        reg.announce(seeder("r", 2, 6_000), None, now).unwrap();
        reg.announce(seeder("s", 2, 1_000), None, now).unwrap();
        let streams = &reg.streams_for_test();
        assert_eq!(announced_capacity(streams, now), 7_000_000);
    }
}
