//! What a lab run measured: the `--json` output and the report's input.

use serde::{Deserialize, Serialize};
use shoal_mesh::proto::{stats::MeanMin, Stats, Summary};

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
    /// The run's reflectors (`reflectors` > 0), by slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reflectors: Vec<ReflectorResult>,
    /// Of the infrastructure payload viewers received (mesh and HTTP),
    /// the share that came from reflectors rather than seeders (runs with
    /// reflectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_from_reflectors: Option<f64>,
    /// Continuity over the minute after each restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultResult>,
    /// With several trackers (`trackers` > 1): where each stream landed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trackers: Option<ShardResult>,
    /// At the end of the run, the mean announce interval the trackers last
    /// gave the viewers they list (docs/protocol.md §12.4), seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer_interval_s: Option<f64>,
}

/// One reflector of a run: what it carried and sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReflectorResult {
    /// Its slot.
    pub index: usize,
    pub peer_id: String,
    /// Region under the geo topology.
    pub region: Option<String>,
    pub failure_domain: String,
    /// The streams it carried at some time (indices into `streams`).
    pub streams: Vec<usize>,
    /// Payload it sent over the mesh (to viewers and reflectors) and over
    /// HTTP, bit/s over the run.
    pub mesh_bps: f64,
    pub http_bps: f64,
    /// Of that, what went to viewers (the mesh part estimated from the
    /// bytes its links carried, docs/lab.md §7.2), bit/s.
    pub to_viewers_bps: f64,
    /// When a restart stopped it, seconds into the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped_at_s: Vec<f64>,
    pub running_at_end: bool,
}

/// A stream's seeder and reflectors in a run with reflectors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamReflection {
    /// Payload its seeder signed over the run, bytes: one copy of the
    /// stream.
    pub published_bytes: u64,
    /// (Seeder mesh + HTTP payload) / published: copies its seeder sent.
    pub seeder_copies: f64,
    /// Copies the parent scheme needs of its seeder: the reflectors
    /// feeding from it when the stream is reflected; when not, one per
    /// 250 viewers (at least 1), the spread's entry points.
    pub seeder_copies_needed: f64,
    /// Its reflectors in the tracker's last round (`GET /v1/streams/{id}`),
    /// and how many of them take it from its seeder.
    pub reflectors: usize,
    pub fed_by_seeder: usize,
    /// What its reflectors sent for it, bit/s over the run.
    pub reflectors_mesh_bps: f64,
    pub reflectors_http_bps: f64,
    /// Of the infrastructure payload its viewers received, the share from
    /// reflectors.
    pub fallback_from_reflectors: Option<f64>,
}

/// The run's trackers sharding its streams (docs/lab.md §5).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardResult {
    pub trackers: usize,
    /// The tracker a `shard` restart killed (by index), and when.
    pub killed: Option<usize>,
    pub killed_at_s: Option<f64>,
    pub streams: Vec<StreamShard>,
}

/// One stream's trackers: the one rendezvous hashing names and where it
/// was seen.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamShard {
    /// Its place in the mix.
    pub index: usize,
    /// The tracker rendezvous hashing names first, and second.
    pub tracker: usize,
    pub next_tracker: usize,
    /// Every tracker that listed it, sampled once a second, before any kill:
    /// `[tracker]` when it landed where hashing says.
    pub landed_on: Vec<usize>,
    /// Its tracker was the one killed.
    pub moved: bool,
    /// Seconds from the kill until its next tracker listed all its viewers.
    pub moved_after_s: Option<f64>,
}

/// Continuity over the window after a restart (docs/lab.md §7.2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultResult {
    pub role: String,
    pub at_s: f64,
    /// Infinite (`"never"`) for a kill for good.
    #[serde(with = "super::scenario::downtime")]
    pub down_s: f64,
    /// The window: the first sample at or after the fault, to a minute
    /// later or the end of the run.
    pub from_s: f64,
    pub to_s: f64,
    /// Viewers present over the whole window with pieces due in it.
    pub viewers: usize,
    /// Per-viewer continuity over the window, mean and min.
    pub continuity: MeanMin,
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
    /// Its seeder's and reflectors' figures (runs with reflectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reflection: Option<StreamReflection>,
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
