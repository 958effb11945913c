//! What a run measured, and the end-of-run measures of neighbour choice
//! and coordinate accuracy.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{NodeId, Sim};
use crate::proto::{Stats, Summary};

/// What a run measured.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub summary: Summary,
    /// Every viewer that took part, those that left included.
    pub viewers: Vec<Stats>,
    pub seeder: Stats,
    pub origin_payload: u64,
    pub events: u64,
    /// Mean one-way delay from viewers to their neighbours at the end, and
    /// to the closest possible set of the same size (over a sample of at
    /// most [`RATIO_SAMPLE`] viewers).
    pub neighbor_delay_ms: f64,
    pub best_delay_ms: f64,
    /// Median relative error of coordinate-predicted RTTs against true RTTs
    /// (sampled viewer pairs, at the end), when coordinates are usable.
    pub coord_error_median: Option<f64>,
    /// Viewers that left (churn).
    pub departures: u64,
}

/// Viewers over which the neighbour RTT ratio is computed, at most.
pub const RATIO_SAMPLE: usize = 2_000;
/// Peers each sampled viewer's coordinate is checked against.
const COORD_PAIRS: usize = 16;

impl Sim<'_> {
    /// A spread-out, deterministic sample of present viewers.
    fn sample_viewers(&self, n: usize) -> Vec<NodeId> {
        let step = self.present.len().div_ceil(n.max(1)).max(1);
        let mut out: Vec<NodeId> = self.present.iter().step_by(step).copied().collect();
        out.sort_unstable();
        out
    }

    pub(super) fn neighbor_delays(&self) -> (f64, f64) {
        let ids: Vec<NodeId> = (0..self.world.ids())
            .filter(|&n| self.node(n).is_some())
            .collect();
        let (mut chosen, mut best, mut n) = (0.0, 0.0, 0usize);
        let mut all = Vec::with_capacity(ids.len());
        for v in self.sample_viewers(RATIO_SAMPLE) {
            let Some(node) = &self.node(v) else {
                continue;
            };
            let ds: Vec<u64> = node
                .engine
                .neighbors()
                .map(|&p| self.world.delay(v, p))
                .collect();
            if ds.is_empty() {
                continue;
            }
            all.clear();
            all.extend(
                ids.iter()
                    .filter(|&&o| o != v)
                    .map(|&o| self.world.delay(v, o)),
            );
            let k = ds.len().min(all.len());
            if k < all.len() {
                all.select_nth_unstable(k - 1);
            }
            chosen += ds.iter().sum::<u64>() as f64 / ds.len() as f64;
            best += all[..k].iter().sum::<u64>() as f64 / k as f64;
            n += 1;
        }
        let n = n.max(1) as f64;
        (chosen / n, best / n)
    }

    /// Median relative error of predicted RTT over sampled viewer pairs.
    pub(super) fn coord_error(&self) -> Option<f64> {
        let sample = self.sample_viewers(RATIO_SAMPLE / 4);
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg().seed ^ 0xC0);
        let mut errors = Vec::new();
        for &v in &sample {
            let Some(a) = &self.node(v) else {
                continue;
            };
            for _ in 0..COORD_PAIRS {
                let o = self.present[rng.gen_range(0..self.present.len())];
                let Some(b) = self.node(o).filter(|_| o != v) else {
                    continue;
                };
                let truth = 2 * self.world.delay(v, o);
                let predicted = a.engine.coord().rtt_ms(&b.engine.coord());
                errors.push((f64::from(predicted) - truth as f64).abs() / truth.max(1) as f64);
            }
        }
        if errors.is_empty() {
            return None;
        }
        errors.sort_by(f64::total_cmp);
        Some(errors[errors.len() / 2])
    }
}
