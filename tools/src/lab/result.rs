//! What a lab run measured: the `--json` output and the report's input.

use serde::{Deserialize, Serialize};
use shoal_mesh::proto::{Stats, Summary};

use super::scenario::Scenario;

/// One system's run of one scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    /// `shoal`, `random`, `gossipsub` or `client-server`.
    pub system: String,
    pub scenario: Scenario,
    /// The DESIGN.md measures over all viewers.
    pub summary: Summary,
    /// The same measures per stream, in the mix's order (one entry for a
    /// single-stream run).
    #[serde(default)]
    pub streams: Vec<StreamResult>,
    /// Σ over streams of viewers × bitrate × mean continuity, bit/s: the
    /// goodput the run delivered, the coordinator's objective.
    #[serde(default)]
    pub continuity_goodput_bps: f64,
    /// Mean true RTT to chosen neighbours / mean true RTT to the best
    /// possible set of the same size (mesh systems only).
    pub neighbor_rtt_ratio: Option<f64>,
    pub nodes: Vec<NodeResult>,
    /// One sample per second.
    pub timeline: Vec<Sample>,
    pub wall_s: f64,
    /// CPU seconds of the whole process, and per viewer.
    pub cpu_s: f64,
    pub cpu_s_per_node: f64,
    /// Peak resident memory of the process, and per viewer.
    pub peak_rss_bytes: u64,
    pub peak_rss_bytes_per_node: u64,
}

/// One stream of a run: its viewers' measures and what infrastructure
/// gave it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamResult {
    /// Its place in the mix, from 0.
    pub index: usize,
    /// Its stream id (hex).
    pub stream: String,
    /// Viewers in the mix (with churn, more occupants may have come and
    /// gone; `summary.nodes` counts them all).
    pub viewers: usize,
    pub bitrate_bps: u64,
    /// The DESIGN.md measures over its viewers; `seeder_egress` is its
    /// own seeder's.
    pub summary: Summary,
    /// Infrastructure payload its viewers received, bits/s per viewer:
    /// bytes × 8 / viewers / run seconds ("bandwidth per viewer").
    pub infra_bps_per_viewer: f64,
    /// What its seeder sent over the run, bit/s: over the mesh (held to
    /// the coordinator's budget) and as HTTP fallback (not held to it yet,
    /// docs/coordinator.md), which together make up what its viewers got.
    #[serde(default)]
    pub seeder_mesh_bps: f64,
    #[serde(default)]
    pub seeder_http_bps: f64,
    /// The last budget the coordinator gave the stream, bits/s
    /// (`GET /v1/streams/{id}`; `None`: no allocation, or none yet).
    pub budget_bps: Option<u64>,
}

/// One viewer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeResult {
    pub index: usize,
    /// The stream it watched: its index in [`RunResult::streams`].
    #[serde(default)]
    pub stream: usize,
    pub peer_id: String,
    /// Region name under the geo topology.
    pub region: Option<String>,
    pub upload_cap_bps: Option<u64>,
    pub joined_at_s: f64,
    pub left_at_s: Option<f64>,
    pub stats: Stats,
    /// Mean true RTT to its neighbours at the end, and to the best set.
    pub neighbor_rtt_ms: Option<f64>,
    pub best_rtt_ms: Option<f64>,
}

/// The mesh at one moment; ratios are over the last interval.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    pub t_s: f64,
    pub viewers: usize,
    pub playing: usize,
    pub offload: Option<f64>,
    pub continuity: Option<f64>,
    pub lag_p95_ms: Option<u64>,
    pub seeder_egress: Option<f64>,
    pub neighbors_mean: f64,
}

/// How each of several runs is named in tables, JSON and plots: by system;
/// by allocation policy when the runs share a system but not a policy (a
/// policies bench); by both when both differ.
pub fn run_names(runs: &[RunResult]) -> Vec<String> {
    let differ = |f: fn(&RunResult) -> String| {
        runs.iter()
            .any(|r| runs.first().is_some_and(|a| f(a) != f(r)))
    };
    let systems_differ = differ(|r| r.system.clone());
    let policies_differ = differ(|r| r.scenario.allocation.to_string());
    runs.iter()
        .map(|r| match (systems_differ, policies_differ) {
            (false, true) => r.scenario.allocation.to_string(),
            (true, true) => format!("{} {}", r.system, r.scenario.allocation),
            _ => r.system.clone(),
        })
        .collect()
}
