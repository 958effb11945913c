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

/// One viewer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeResult {
    pub index: usize,
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
