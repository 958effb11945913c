//! What a run simulates: its size, stream, network and churn.

use std::sync::Arc;

use super::{partition::PARTS, NodeId};
use crate::proto::{Locality, Selection};

/// A simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Viewers (the seeder comes on top).
    pub viewers: usize,
    pub duration_ms: u64,
    pub seed: u64,
    pub bitrate_bps: u64,
    pub segment_ms: u64,
    /// Largest piece the seeder cuts (pieces of a segment are equal sizes).
    pub piece_bytes: usize,
    /// One-way delay between two nodes is drawn once per pair from this
    /// range (at least 1 ms: see the module notes).
    pub one_way_ms: (u64, u64),
    /// One-way delay to the HTTP origin used for fallback.
    pub origin_one_way_ms: u64,
    /// Viewer upload cap, bits/s (`None`: unlimited).
    pub viewer_upload_bps: Option<u64>,
    /// Viewers join evenly over this span.
    pub join_over_ms: u64,
    /// Candidates handed out per tracker answer.
    pub hints: usize,
    /// Peers the tracker ranks per answer: a random sample of this many
    /// joined peers (the real tracker ranks a window of up to 4,096).
    pub tracker_window: usize,
    /// Viewers replaced per minute, as a share of all viewers (0.1: 10 %):
    /// a random viewer leaves and a new one joins in its place.
    pub churn_per_min: f64,
    pub tracker_interval_ms: u64,
    /// Viewer engine settings (stream id is filled in).
    pub max_degree: usize,
    /// How viewers choose neighbours (the full score or an ablation).
    pub selection: Selection,
    /// Called every 5 s of simulated time with (simulated ms, events so far).
    pub progress: Option<fn(u64, u64)>,
    /// A network model in place of `one_way_ms` and `viewer_upload_bps`
    /// (the lab's topologies and capacity spreads).
    pub network: Option<Network>,
    /// Threads that run the partitions (1 or 2; 0 counts as 1). The run
    /// is the same whatever this is.
    pub threads: usize,
}

/// A network model: one-way delay per pair and upload per node.
#[derive(Clone)]
pub struct Network {
    /// One-way delay in ms from the first node to the second (the
    /// simulator rounds 0 up to 1).
    pub one_way_ms: Arc<dyn Fn(NodeId, NodeId) -> u64 + Send + Sync>,
    /// Upload cap of each node in bits/s (`None`: unlimited), by node id.
    pub upload_bps: Vec<Option<u64>>,
    /// AS and subnet of each node, by node id (empty: unknown).
    pub loc: Vec<Locality>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("nodes", &self.upload_bps.len())
            .finish_non_exhaustive()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            viewers: 50,
            duration_ms: 30_000,
            seed: 1,
            bitrate_bps: 2_000_000,
            segment_ms: 1_000,
            piece_bytes: 32 * 1024,
            one_way_ms: (5, 50),
            origin_one_way_ms: 20,
            viewer_upload_bps: None,
            join_over_ms: 2_000,
            hints: 20,
            tracker_window: 256,
            churn_per_min: 0.0,
            tracker_interval_ms: 5_000,
            max_degree: 8,
            selection: Selection::Full,
            network: None,
            progress: None,
            threads: default_threads(),
        }
    }
}

/// The threads a run uses unless told: one per core, at most one per
/// partition.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(PARTS))
}
