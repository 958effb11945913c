//! Many streams at once under one infrastructure budget, split by the real
//! coordinator ([`crate::allocation::Allocator`]).
//!
//! Each stream is a simulated swarm of its own (a [`Sim`]: its seeder, its
//! key, its viewers, its HTTP origin), and no frame crosses between two
//! swarms. The coordinator is what joins them: the run advances every swarm
//! in lockstep rounds of [`StreamsConfig::interval_ms`], and at each round's
//! end, serially and in stream order, it
//!
//! 1. sums each swarm's viewer reports of the round (what a viewer's
//!    announce carries: infrastructure bytes received, pieces due and in
//!    time, playing or not, its upload; `net::announce`), bounded as the
//!    tracker bounds them;
//! 2. runs one allocator round over the tier's budget;
//! 3. gives each seeder its stream's budget (`Input::Budget`), and holds
//!    the stream's HTTP origin to the same budget: one token bucket per
//!    stream, charged by the seeder's mesh payload and taken from by each
//!    fallback answer, which is refused (the fetch fails, as a `429` does
//!    for the real client) while it is spent — `net::BudgetGate`'s rule.
//!
//! Before the first round no swarm has reported, so the coordinator has
//! nothing to split by: each stream gets an even part of the budget.
//!
//! Between round ends the swarms are independent, so they run side by side
//! on up to [`StreamsConfig::threads`] threads (each swarm on one thread,
//! the biggest first); what a swarm does depends only on its own state and
//! the budgets, so the run is the same on one thread or two.

use std::{
    cmp::Reverse,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex, PoisonError,
    },
};

use super::{
    partition::{part_of, Event},
    Sim, SimConfig, SimReport,
};
use crate::{
    allocation::{Allocator, AllocatorConfig, SwarmTally, ViewerReport},
    proto::{Input, Stats, Summary},
};

/// A run of several streams.
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    /// One swarm per stream, in stream order. Each needs its own `seed`
    /// (the seed picks the stream's key). Their `duration_ms`, `threads`
    /// and `progress` are not used: the run's are.
    pub streams: Vec<SimConfig>,
    pub duration_ms: u64,
    /// The coordinator's policy and minimums; `None`: no coordinator and
    /// no budgets (every seeder serves what it is asked).
    pub allocator: Option<AllocatorConfig>,
    /// The infrastructure tier's upload to split, bit/s (above 0).
    pub budget_bps: u64,
    /// Time between allocation rounds (the lab's tracker: 2 s).
    pub interval_ms: u64,
    /// Seeds the allocator's exploration.
    pub seed: u64,
    /// Threads that run the swarms (0 counts as 1). The run is the same
    /// whatever this is.
    pub threads: usize,
    /// Called after each round with (simulated ms, events so far).
    pub progress: Option<fn(u64, u64)>,
}

/// What one stream measured.
#[derive(Clone, Debug)]
pub struct StreamOutcome {
    pub report: SimReport,
    /// Its budget over the run, integrated: bytes its seeder's mesh and
    /// origin together were allowed (`None`: no budget).
    pub budget_bytes: Option<u64>,
    /// Its budget in the last round, and the most it was given, bit/s.
    pub last_budget_bps: Option<u64>,
    pub peak_budget_bps: Option<u64>,
}

/// What a run of several streams measured.
#[derive(Clone, Debug)]
pub struct StreamsReport {
    /// In stream order.
    pub streams: Vec<StreamOutcome>,
    /// Over every viewer of every stream, every seeder and origin.
    pub summary: Summary,
    pub events: u64,
    /// Allocation rounds run.
    pub rounds: u64,
}

/// A viewer's counters at the last round end, to report the difference.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    infra_bytes: u64,
    pieces_due: u64,
    pieces_in_time: u64,
}

impl Counters {
    fn of(s: &Stats) -> Self {
        Counters {
            infra_bytes: s.payload_from_infra,
            pieces_due: s.pieces_due,
            pieces_in_time: s.pieces_on_time,
        }
    }
}

/// One stream's swarm and what the coordinator keeps of it.
struct Swarm<'a> {
    sim: Sim<'a>,
    /// By node id (a newcomer after churn starts from zero).
    last: Vec<Counters>,
    /// Its budget, bit/s, and since when (ms).
    budget: Option<(u64, u64)>,
    /// The budget integrated up to `budget`'s start, bit·ms.
    granted: u128,
    /// The most it was given, bit/s.
    peak: Option<u64>,
}

impl<'a> Swarm<'a> {
    fn new(cfg: &'a SimConfig) -> Self {
        let mut sim = Sim::new(cfg);
        sim.start();
        Swarm {
            sim,
            last: Vec::new(),
            budget: None,
            granted: 0,
            peak: None,
        }
    }

    /// Its viewers' reports of the round that ends now.
    fn tally(&mut self, interval_ms: u64) -> SwarmTally {
        let bitrate = self.sim.cfg().bitrate_bps;
        let ids = self.sim.world.ids();
        self.last.resize(ids as usize, Counters::default());
        let mut tally = SwarmTally::default();
        for n in 1..ids {
            let Some(node) = self.sim.node(n) else {
                continue; // not joined yet, or left
            };
            let stats = node.engine.stats();
            let now = Counters::of(stats);
            let then = std::mem::replace(&mut self.last[n as usize], now);
            let report = ViewerReport {
                infra_bytes: now.infra_bytes.saturating_sub(then.infra_bytes),
                pieces_due: now.pieces_due.saturating_sub(then.pieces_due),
                pieces_in_time: now.pieces_in_time.saturating_sub(then.pieces_in_time),
                playing: stats.startup_ms.is_some(),
                upload_bps: u64::from(node.engine.config().upload_kbps) * 1000,
            };
            tally.add(&report.bounded(bitrate, interval_ms));
        }
        tally
    }

    /// Gives the stream `bps` from `at` (ms), for its seeder's mesh and
    /// origin together.
    fn set_budget(&mut self, bps: u64, at: u64) {
        self.close_budget(at);
        self.budget = Some((bps, at));
        self.peak = self.peak.max(Some(bps));
        let seeder = &mut self.sim.parts[part_of(0)];
        seeder.set_origin_budget(bps / 8, at);
        // Every event up to `at` has run: the seeder hears of it next ms.
        let input = Input::Budget { bps: Some(bps) };
        seeder.push(at + 1, Event::Input(0, Box::new(input)));
    }

    /// Adds the budget since it was set to `granted`, up to `at`.
    fn close_budget(&mut self, at: u64) {
        if let Some((bps, since)) = self.budget {
            self.granted += u128::from(bps) * u128::from(at.saturating_sub(since));
            self.budget = Some((bps, at));
        }
    }
}

/// Runs several streams under one budget to the end.
pub fn run_streams(cfg: &StreamsConfig) -> StreamsReport {
    let mut swarms: Vec<Swarm<'_>> = cfg.streams.iter().map(Swarm::new).collect();
    let mut allocator = cfg.allocator.map(|a| Allocator::<usize>::new(a, cfg.seed));
    if allocator.is_some() {
        let even = cfg.budget_bps / swarms.len().max(1) as u64;
        for s in &mut swarms {
            s.set_budget(even, 0);
        }
    }
    // Biggest first, so that a thread's last swarm is a small one.
    let mut order: Vec<usize> = (0..swarms.len()).collect();
    order.sort_by_key(|&i| Reverse(cfg.streams[i].viewers));
    let interval = cfg.interval_ms.max(1);
    let mut rounds = 0;
    let mut t = 0;
    while t < cfg.duration_ms {
        let end = (t + interval).min(cfg.duration_ms);
        swarms = advance(swarms, &order, end, cfg.threads);
        t = end;
        if let (Some(a), true) = (allocator.as_mut(), t < cfg.duration_ms) {
            round(a, &mut swarms, cfg.budget_bps, interval, t);
            rounds += 1;
        }
        if let Some(report) = cfg.progress {
            report(t, swarms.iter().map(|s| s.sim.events()).sum());
        }
    }
    finish(swarms, cfg.duration_ms, rounds)
}

/// One coordinator round at `now`, serially and in stream order.
fn round(
    allocator: &mut Allocator<usize>,
    swarms: &mut [Swarm<'_>],
    budget_bps: u64,
    interval_ms: u64,
    now: u64,
) {
    for (i, s) in swarms.iter_mut().enumerate() {
        let bitrate = s.sim.cfg().bitrate_bps as f64;
        let tally = s.tally(interval_ms);
        allocator.report(i, tally.report(interval_ms, bitrate));
    }
    for share in allocator.round(budget_bps) {
        swarms[share.stream].set_budget(share.budget_bps, now);
    }
}

/// Runs every swarm up to `end` (ms), on up to `threads` threads: each
/// takes the next swarm in `order` until none is left.
fn advance<'a>(
    swarms: Vec<Swarm<'a>>,
    order: &[usize],
    end: u64,
    threads: usize,
) -> Vec<Swarm<'a>> {
    let swarms: Vec<Mutex<Swarm<'a>>> = swarms.into_iter().map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        // Bounded: each pass takes one of `order`'s indices.
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let mut swarm = swarms[i].lock().unwrap_or_else(PoisonError::into_inner);
            swarm.sim.run_until(end, None);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads.max(1) {
            s.spawn(work);
        }
        work();
    });
    swarms
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect()
}

fn finish(swarms: Vec<Swarm<'_>>, end: u64, rounds: u64) -> StreamsReport {
    let mut events = 0;
    let mut viewers = Vec::new();
    let mut seeders = Vec::new();
    let mut origin = 0;
    let streams: Vec<StreamOutcome> = swarms
        .into_iter()
        .map(|mut s| {
            s.close_budget(end);
            let budget = s.budget.map(|(bps, _)| bps);
            let granted = s.budget.map(|_| (s.granted / 8_000) as u64);
            let report = s.sim.finish();
            events += report.events;
            viewers.extend_from_slice(&report.viewers);
            seeders.push(report.seeder.clone());
            origin += report.origin_payload;
            StreamOutcome {
                report,
                budget_bytes: granted,
                last_budget_bps: budget,
                peak_budget_bps: s.peak,
            }
        })
        .collect();
    StreamsReport {
        summary: Summary::new(&viewers, &seeders, origin),
        streams,
        events,
        rounds,
    }
}

#[cfg(test)]
mod tests;
