//! `shoal-lab sim`: the real `mesh::proto` engines in virtual time under the
//! lab's network model (topology and upload spread), via `mesh::sim`.

use std::{sync::Arc, time::Instant};

use anyhow::bail;
use serde::Serialize;
use shoal_mesh::{
    proto::Summary,
    sim::{self, Network, SimConfig},
};

use super::{population::upload_caps, scenario::Scenario, system::System, topology::Topology};

/// What a simulated run measured, with how fast it ran.
#[derive(Clone, Debug, Serialize)]
pub struct SimOutput {
    pub system: String,
    pub scenario: Scenario,
    pub summary: Summary,
    pub neighbor_rtt_ratio: Option<f64>,
    /// Median relative error of coordinate-predicted RTTs (sampled pairs).
    pub coord_error_median: Option<f64>,
    /// Viewers that left during the run (churn).
    pub departures: u64,
    /// Neighbours swapped for better ones, per viewer (mesh churn).
    pub swaps_per_viewer: f64,
    pub wall_s: f64,
    /// Simulated viewer-seconds per wall-clock second.
    pub node_seconds_per_wall_s: f64,
    pub events: u64,
    /// Threads that ran the partitions.
    pub threads: usize,
    /// Peak resident memory of this process (Linux), MiB.
    pub peak_rss_mib: Option<u64>,
}

/// Runs a scenario in the simulator (full score, RTT-only or random
/// neighbours) on `threads` threads (default: [`sim::default_threads`]).
pub fn run_sim(sc: &Scenario, system: System, threads: Option<u16>) -> anyhow::Result<SimOutput> {
    sc.validate()?;
    let Some(selection) = system.selection() else {
        bail!("the simulator runs Shoal's engine only: --system shoal, rtt or random");
    };
    if !sc.restarts.is_empty() || sc.download_bps.is_some() {
        bail!("restarts and download caps are not simulated yet: use `shoal-lab run`");
    }
    if sc.streams.is_some() {
        bail!("a stream mix runs through `sim_streams::run_sim_streams`");
    }
    let topo = Arc::new(Topology::new(&sc.topology, sc.nodes + 1, sc.seed)?);
    let topo_loc = topo.clone();
    let network = Network {
        one_way_ms: Arc::new(move |a, b| {
            topo.one_way_ms(a as usize, b as usize).round().max(1.0) as u64
        }),
        upload_bps: upload_caps(sc),
        loc: (0..=sc.nodes).map(|slot| topo_loc.locality(slot)).collect(),
    };
    let cfg = SimConfig {
        viewers: sc.nodes,
        duration_ms: (sc.duration_s * 1000.0) as u64,
        seed: sc.seed,
        bitrate_bps: sc.bitrate_bps,
        join_over_ms: (sc.join_over_s * 1000.0) as u64,
        max_degree: sc.max_degree,
        churn_per_min: sc.churn_per_min,
        selection,
        network: Some(network),
        progress: Some(print_progress),
        threads: threads.map_or_else(sim::default_threads, usize::from),
        ..SimConfig::default()
    };
    let wall = Instant::now();
    *STARTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(wall);
    let report = sim::run(&cfg);
    let wall_s = wall.elapsed().as_secs_f64();
    let ratio =
        (report.best_delay_ms > 0.0).then(|| report.neighbor_delay_ms / report.best_delay_ms);
    Ok(SimOutput {
        system: system.to_string(),
        scenario: sc.clone(),
        summary: report.summary,
        neighbor_rtt_ratio: ratio,
        coord_error_median: report.coord_error_median,
        departures: report.departures,
        swaps_per_viewer: report.viewers.iter().map(|v| v.neighbor_swaps).sum::<u64>() as f64
            / report.viewers.len().max(1) as f64,
        wall_s,
        node_seconds_per_wall_s: sc.nodes as f64 * sc.duration_s / wall_s.max(1e-9),
        events: report.events,
        threads: cfg.threads,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Wall-clock start of the current simulation, for progress lines.
pub(super) static STARTED: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

pub(super) fn print_progress(sim_ms: u64, events: u64) {
    let started = *STARTED.lock().unwrap_or_else(|e| e.into_inner());
    let wall = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    eprintln!(
        "  simulated {:.0} s in {wall:.0} s wall, {events} events",
        sim_ms as f64 / 1000.0
    );
}

/// The process's peak resident set (`VmHWM` in /proc/self/status), MiB.
pub(super) fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Starts the peak resident set afresh (Linux: `5` to
/// /proc/self/clear_refs), so that each of several runs in one process
/// has its own; where that fails the peak is the process's so far.
pub(super) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::scenario::{TopologySpec, UploadSpec};

    #[test]
    fn same_seed_same_summary() {
        let sc = Scenario {
            nodes: 60,
            duration_s: 30.0,
            topology: TopologySpec::Geo,
            upload: UploadSpec::Mixed,
            join_over_s: 5.0,
            churn_per_min: 0.1,
            ..Scenario::default()
        };
        let a = run_sim(&sc, System::Shoal, None).unwrap();
        let b = run_sim(&sc, System::Shoal, None).unwrap();
        assert_eq!(a.summary, b.summary);
        assert_eq!(a.events, b.events);
        assert_eq!(a.neighbor_rtt_ratio, b.neighbor_rtt_ratio);
        assert!(a.departures > 0, "churn happened");
    }

    /// The partitions give the same run on one thread as on two.
    #[test]
    fn one_thread_or_two_same_summary() {
        let sc = Scenario {
            nodes: 200,
            duration_s: 15.0,
            topology: TopologySpec::Geo,
            upload: UploadSpec::Mixed,
            join_over_s: 5.0,
            churn_per_min: 0.2,
            ..Scenario::default()
        };
        let one = run_sim(&sc, System::Shoal, Some(1)).unwrap();
        let two = run_sim(&sc, System::Shoal, Some(2)).unwrap();
        assert_eq!((one.threads, two.threads), (1, 2));
        assert_eq!(one.summary, two.summary);
        assert_eq!(one.events, two.events);
        assert_eq!(one.neighbor_rtt_ratio, two.neighbor_rtt_ratio);
        assert_eq!(one.coord_error_median, two.coord_error_median);
        assert_eq!(one.swaps_per_viewer, two.swaps_per_viewer);
    }

    /// 500 viewers across the geo regions with the realistic upload spread:
    /// everyone plays, peers carry the stream, and the score finds closer
    /// neighbours than chance, with RTT alone in between.
    #[test]
    fn five_hundred_viewers_ablation() {
        let sc = Scenario {
            nodes: 500,
            duration_s: 40.0,
            topology: TopologySpec::Geo,
            upload: UploadSpec::Mixed,
            join_over_s: 10.0,
            ..Scenario::default()
        };
        let full = run_sim(&sc, System::Shoal, None).unwrap();
        let random = run_sim(&sc, System::Random, None).unwrap();
        let s = &full.summary;
        eprintln!(
            "full: {s:?} ratio {:?} coord error {:?}; random ratio {:?}",
            full.neighbor_rtt_ratio, full.coord_error_median, random.neighbor_rtt_ratio
        );
        assert_eq!(s.not_started, 0);
        assert!(s.continuity.mean >= 0.999, "{s:?}");
        assert!(s.continuity.min >= 0.99, "{s:?}");
        assert!(s.offload >= 0.95, "{s:?}");
        assert!(s.duplicate <= 0.03, "{s:?}");
        let (f, r) = (
            full.neighbor_rtt_ratio.unwrap(),
            random.neighbor_rtt_ratio.unwrap(),
        );
        assert!(f <= 2.0 && f <= 0.5 * r, "full {f} vs random {r}");
        // The bar for coordinates on the geo topology.
        assert!(full.coord_error_median.unwrap() <= 0.25);
    }

    /// Viewers leave and newcomers take their place (20 %/min): the rest
    /// keep playing.
    #[test]
    fn churn_keeps_playing() {
        let sc = Scenario {
            nodes: 300,
            duration_s: 40.0,
            topology: TopologySpec::Geo,
            upload: UploadSpec::Mixed,
            join_over_s: 5.0,
            churn_per_min: 0.2,
            ..Scenario::default()
        };
        let out = run_sim(&sc, System::Shoal, None).unwrap();
        let s = &out.summary;
        eprintln!("{s:?} departures {}", out.departures);
        // 20 %/min of 300 over the 35 s after everyone joined.
        assert!(out.departures >= 30, "{}", out.departures);
        assert!(s.continuity.mean >= 0.99, "{s:?}");
        assert!(s.offload >= 0.9, "{s:?}");
    }
}
