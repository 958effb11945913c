//! `shoal-lab sim --streams MIX` (or `--zipf S`): several streams in the
//! simulator, each a swarm of its own with its own seeder, under one
//! infrastructure budget split by the real allocator
//! (`mesh::sim::run_streams`), once per allocation policy.
//!
//! Slots follow the lab's layout (`super::layout`): the S seeders in slots
//! 0..S−1, then the viewers, shared out among the streams as `run` shares
//! them, so a stream's swarm sees the same delays, uploads and ASes its
//! nodes would have in `run`.

use std::{sync::Arc, time::Instant};

use anyhow::bail;
use serde::Serialize;
use shoal_mesh::{
    allocation::AllocatorConfig,
    proto::Summary,
    sim::{self, run_streams, Network, SimConfig, StreamOutcome, StreamsConfig},
};

use super::{
    layout::Layout,
    population::upload_caps,
    scenario::{Allocation, Scenario},
    sim::{peak_rss_mib, print_progress, reset_peak_rss, STARTED},
    system::System,
    topology::Topology,
};

/// Time between the coordinator's rounds, as the lab's tracker has it.
pub const ALLOCATION_INTERVAL_MS: u64 = 2_000;
/// Stream sizes of [`SizeBucket`]s: lower bounds, by decade.
const BUCKETS: [usize; 5] = [1, 10, 100, 1_000, 10_000];
/// Smallest streams listed on their own.
const SMALLEST: usize = 10;

/// Several policies on one mix.
#[derive(Clone, Debug, Serialize)]
pub struct SimStreamsOutput {
    pub system: String,
    pub scenario: Scenario,
    pub streams: usize,
    /// The tier's budget, bit/s (`None`: no coordinator).
    pub budget_bps: Option<u64>,
    /// Every stream's minimum together (one copy of the bitrate each).
    pub minimums_bps: u64,
    pub threads: usize,
    pub policies: Vec<PolicyOutcome>,
}

/// One policy's run.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyOutcome {
    pub allocation: Allocation,
    /// Over every viewer of every stream.
    pub summary: Summary,
    /// Each stream's mean viewer continuity: the lowest, and the mean over
    /// streams.
    pub stream_continuity_min: f64,
    pub stream_continuity_mean: f64,
    pub streams_below_099: usize,
    /// Σ viewers × bitrate × the stream's mean continuity, bit/s, and as a
    /// share of every viewer playing everything.
    pub goodput_bps: f64,
    pub goodput_of_demand: f64,
    pub rounds: u64,
    pub events: u64,
    pub wall_s: f64,
    /// Peak resident memory of this run (Linux), MiB.
    pub peak_rss_mib: Option<u64>,
    pub by_size: Vec<SizeBucket>,
    /// The [`SMALLEST`] smallest streams.
    pub smallest: Vec<StreamFigures>,
    /// Every stream, in mix order.
    pub per_stream: Vec<StreamFigures>,
}

/// Streams of one size range.
#[derive(Clone, Debug, Serialize)]
pub struct SizeBucket {
    /// Viewers per stream, from `min_viewers` up to (not including) the
    /// next bucket's.
    pub min_viewers: usize,
    pub streams: usize,
    pub viewers: usize,
    pub continuity_mean: f64,
    /// The lowest stream mean continuity among them.
    pub continuity_min: f64,
    /// Mean budget per stream over the run, bit/s, and per viewer.
    pub budget_bps_per_stream: Option<f64>,
    pub budget_bps_per_viewer: Option<f64>,
    /// What their seeders sent over the mesh and HTTP, per stream, bit/s.
    pub infra_bps_per_stream: f64,
}

/// One stream's figures.
#[derive(Clone, Debug, Serialize)]
pub struct StreamFigures {
    pub index: usize,
    pub viewers: usize,
    pub continuity_mean: f64,
    pub continuity_min: f64,
    pub not_started: usize,
    pub offload: f64,
    /// Mean budget over the run, and the last round's, bit/s.
    pub budget_bps: Option<f64>,
    pub last_budget_bps: Option<u64>,
    pub seeder_mesh_bps: f64,
    pub seeder_http_bps: f64,
}

/// Runs the scenario's mix once per policy (`Allocation::Off`: no
/// coordinator) under `budget_bps`.
pub fn run_sim_streams(
    sc: &Scenario,
    system: System,
    threads: Option<u16>,
    policies: &[Allocation],
    budget_bps: Option<u64>,
) -> anyhow::Result<SimStreamsOutput> {
    sc.validate()?;
    let Some(selection) = system.selection() else {
        bail!("the simulator runs Shoal's engine only: --system shoal, rtt or random");
    };
    if !sc.restarts.is_empty() || sc.download_bps.is_some() {
        bail!("restarts and download caps are not simulated yet: use `shoal-lab run`");
    }
    let coordinated = policies.iter().any(|p| p.policy().is_some());
    if coordinated && budget_bps.is_none() {
        bail!("a simulated coordinator needs a budget: --infra-budget RATE or --budget-copies X");
    }
    let layout = Layout::of(sc);
    let topo = Arc::new(Topology::with_infra(
        &sc.topology,
        layout.streams(),
        layout.slots(),
        sc.seed,
    )?);
    let caps = upload_caps(sc);
    // Each stream's slots: its seeder's, then its viewers' in join order.
    let mut slots: Vec<Vec<usize>> = (0..layout.streams())
        .map(|s| vec![layout.seeder_slot(s)])
        .collect();
    for slot in layout.viewer_slots() {
        slots[layout.stream_of(slot)].push(slot);
    }
    let streams: Vec<SimConfig> = slots
        .into_iter()
        .enumerate()
        .map(|(s, slots)| {
            let slots = Arc::new(slots);
            let (topo_delay, map) = (topo.clone(), slots.clone());
            let network = Network {
                one_way_ms: Arc::new(move |a, b| {
                    let (a, b) = (map[a as usize], map[b as usize]);
                    topo_delay.one_way_ms(a, b).round().max(1.0) as u64
                }),
                upload_bps: slots.iter().map(|&g| caps[g]).collect(),
                loc: slots.iter().map(|&g| topo.locality(g)).collect(),
            };
            SimConfig {
                viewers: layout.viewers_of(s),
                duration_ms: (sc.duration_s * 1000.0) as u64,
                // Its own seed, hence its own key and engine seeds.
                seed: sc
                    .seed
                    .wrapping_add((s as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                bitrate_bps: sc.bitrate_bps,
                join_over_ms: (sc.join_over_s * 1000.0) as u64,
                max_degree: sc.max_degree,
                churn_per_min: sc.churn_per_min,
                selection,
                network: Some(network),
                progress: None,
                threads: 1,
                ..SimConfig::default()
            }
        })
        .collect();
    let threads = threads.map_or_else(sim::default_threads, usize::from);
    let mut outcomes = Vec::new();
    for &allocation in policies {
        let cfg = StreamsConfig {
            streams: streams.clone(),
            duration_ms: (sc.duration_s * 1000.0) as u64,
            allocator: allocation.policy().map(|policy| AllocatorConfig {
                policy,
                ..AllocatorConfig::default()
            }),
            budget_bps: budget_bps.unwrap_or(0),
            interval_ms: ALLOCATION_INTERVAL_MS,
            seed: sc.seed,
            threads,
            progress: Some(print_progress),
        };
        eprintln!("  {allocation}:");
        reset_peak_rss();
        let wall = Instant::now();
        *STARTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(wall);
        let report = run_streams(&cfg);
        let wall_s = wall.elapsed().as_secs_f64();
        let per_stream: Vec<StreamFigures> = report
            .streams
            .iter()
            .enumerate()
            .map(|(i, o)| figures(i, o, sc.duration_s))
            .collect();
        outcomes.push(outcome(
            allocation,
            sc,
            report.summary,
            per_stream,
            (report.rounds, report.events, wall_s),
        ));
    }
    Ok(SimStreamsOutput {
        system: system.to_string(),
        scenario: sc.clone(),
        streams: layout.streams(),
        budget_bps: budget_bps.filter(|_| coordinated),
        minimums_bps: layout.streams() as u64 * sc.bitrate_bps,
        threads,
        policies: outcomes,
    })
}

fn figures(index: usize, o: &StreamOutcome, duration_s: f64) -> StreamFigures {
    let bps = |bytes: u64| bytes as f64 * 8.0 / duration_s.max(1e-9);
    let s = &o.report.summary;
    StreamFigures {
        index,
        viewers: o.report.viewers.len(),
        continuity_mean: s.continuity.mean,
        continuity_min: s.continuity.min,
        not_started: s.not_started,
        offload: s.offload,
        budget_bps: o.budget_bytes.map(bps),
        last_budget_bps: o.last_budget_bps,
        seeder_mesh_bps: bps(o.report.seeder.payload_sent),
        seeder_http_bps: bps(o.report.origin_payload),
    }
}

fn outcome(
    allocation: Allocation,
    sc: &Scenario,
    summary: Summary,
    per_stream: Vec<StreamFigures>,
    (rounds, events, wall_s): (u64, u64, f64),
) -> PolicyOutcome {
    let n = per_stream.len().max(1) as f64;
    let bitrate = sc.bitrate_bps as f64;
    let goodput_bps: f64 = per_stream
        .iter()
        .map(|s| s.viewers as f64 * bitrate * s.continuity_mean)
        .sum();
    let viewers: usize = per_stream.iter().map(|s| s.viewers).sum();
    let mut smallest = per_stream.clone();
    smallest.sort_by_key(|s| (s.viewers, s.index));
    smallest.truncate(SMALLEST);
    PolicyOutcome {
        allocation,
        summary,
        stream_continuity_min: per_stream
            .iter()
            .map(|s| s.continuity_mean)
            .fold(1.0, f64::min),
        stream_continuity_mean: per_stream.iter().map(|s| s.continuity_mean).sum::<f64>() / n,
        streams_below_099: per_stream
            .iter()
            .filter(|s| s.continuity_mean < 0.99)
            .count(),
        goodput_bps,
        goodput_of_demand: goodput_bps / (viewers.max(1) as f64 * bitrate),
        rounds,
        events,
        wall_s,
        peak_rss_mib: peak_rss_mib(),
        by_size: by_size(&per_stream),
        smallest,
        per_stream,
    }
}

fn by_size(streams: &[StreamFigures]) -> Vec<SizeBucket> {
    BUCKETS
        .iter()
        .enumerate()
        .filter_map(|(i, &min)| {
            let max = BUCKETS.get(i + 1).copied().unwrap_or(usize::MAX);
            let these: Vec<&StreamFigures> = streams
                .iter()
                .filter(|s| (min..max).contains(&s.viewers))
                .collect();
            if these.is_empty() {
                return None;
            }
            let n = these.len() as f64;
            let viewers: usize = these.iter().map(|s| s.viewers).sum();
            let budget: Option<f64> = these.iter().map(|s| s.budget_bps).sum();
            Some(SizeBucket {
                min_viewers: min,
                streams: these.len(),
                viewers,
                continuity_mean: these.iter().map(|s| s.continuity_mean).sum::<f64>() / n,
                continuity_min: these.iter().map(|s| s.continuity_mean).fold(1.0, f64::min),
                budget_bps_per_stream: budget.map(|b| b / n),
                budget_bps_per_viewer: budget.map(|b| b / viewers.max(1) as f64),
                infra_bps_per_stream: these
                    .iter()
                    .map(|s| s.seeder_mesh_bps + s.seeder_http_bps)
                    .sum::<f64>()
                    / n,
            })
        })
        .collect()
}

/// Prints the policies side by side, then the streams by size.
pub fn print_policies(out: &SimStreamsOutput) {
    let mbps = |b: f64| b / 1e6;
    println!(
        "{} streams, {} viewers; budget {}, minimums {:.0} Mb/s",
        out.streams,
        out.scenario.nodes,
        out.budget_bps
            .map_or("none".into(), |b| format!("{:.1} Mb/s", mbps(b as f64))),
        mbps(out.minimums_bps as f64)
    );
    println!(
        "{:<11} {:>9} {:>9} {:>9} {:>7} {:>8} {:>8} {:>9} {:>7} {:>7} {:>10} {:>7}",
        "policy",
        "strm min",
        "strm mean",
        "view min",
        "< 0.99",
        "goodput",
        "offload",
        "lag p95",
        "rounds",
        "wall s",
        "events",
        "RSS MiB"
    );
    for p in &out.policies {
        println!(
            "{:<11} {:>9.4} {:>9.4} {:>9.4} {:>7} {:>8.4} {:>8.4} {:>9} {:>7} {:>7.0} {:>10} {:>7}",
            p.allocation.to_string(),
            p.stream_continuity_min,
            p.stream_continuity_mean,
            p.summary.continuity.min,
            p.streams_below_099,
            p.goodput_of_demand,
            p.summary.offload,
            p.summary.lag_ms.p95,
            p.rounds,
            p.wall_s,
            p.events,
            p.peak_rss_mib.map_or("-".into(), |m| m.to_string()),
        );
    }
    println!("by stream size: continuity mean / min stream, budget kbit/s per stream, infra sent kbit/s per stream");
    for p in &out.policies {
        for b in &p.by_size {
            println!(
                "{:<11} {:>6}+ viewers: {:>4} streams  {:.4} / {:.4}  budget {:>8}  sent {:>8.0}",
                p.allocation.to_string(),
                b.min_viewers,
                b.streams,
                b.continuity_mean,
                b.continuity_min,
                b.budget_bps_per_stream
                    .map_or("-".into(), |x| format!("{:.0}", x / 1e3)),
                b.infra_bps_per_stream / 1e3
            );
        }
    }
}

#[cfg(test)]
mod tests;
