//! Network coordinates: predict the RTT to a peer never probed.
//!
//! Vivaldi (Dabek, Cox, Kaashoek, Morris, "Vivaldi: A Decentralized Network
//! Coordinate System", SIGCOMM 2004), in 2-D Euclidean space plus a height
//! (§5.3: the height models the access link every path from a node crosses).
//! Each RTT sample to a neighbour moves our coordinate along the spring
//! between us, by a step weighted by our confidence relative to theirs, so
//! well-placed nodes stay put and newcomers move fast. No all-pairs work:
//! each node learns only from its own samples, and coordinates travel in
//! handshakes, pongs, tracker hints and peer exchange.

use serde::{Deserialize, Serialize};

/// Error estimate of a node that has measured nothing (relative error).
const INITIAL_ERROR: f32 = 1.5;
/// Vivaldi's tuning constants (§4.3): error and coordinate step weights.
const CE: f32 = 0.25;
const CC: f32 = 0.25;
/// Heights never reach zero (a node always has some access delay).
const MIN_HEIGHT: f32 = 0.1;
/// Coordinates are clamped to this many ms from the origin (bad samples
/// or a lying peer cannot throw a node out of the map).
const MAX_COORD: f32 = 10_000.0;

/// A node's place in the map, in milliseconds of RTT.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coord {
    pub x: f32,
    pub y: f32,
    pub height: f32,
    /// Relative error of this node's predictions (0 = perfect).
    pub error: f32,
}

impl Default for Coord {
    fn default() -> Self {
        Coord {
            x: 0.0,
            y: 0.0,
            height: MIN_HEIGHT,
            error: INITIAL_ERROR,
        }
    }
}

impl Coord {
    /// Predicted RTT to `other`, in ms.
    pub fn rtt_ms(&self, other: &Coord) -> f32 {
        let (dx, dy) = (self.x - other.x, self.y - other.y);
        (dx * dx + dy * dy).sqrt() + self.height + other.height
    }

    /// Whether a coordinate from the wire is usable.
    pub fn is_valid(&self) -> bool {
        [self.x, self.y, self.height, self.error]
            .iter()
            .all(|v| v.is_finite())
            && self.x.abs() <= MAX_COORD
            && self.y.abs() <= MAX_COORD
            && (0.0..=MAX_COORD).contains(&self.height)
            && self.error >= 0.0
    }

    /// Moves this coordinate for one RTT sample to a node at `remote`.
    /// `jitter` (two numbers in [0, 1)) picks a direction when the two
    /// coordinates coincide, as they do for two newcomers (only the first
    /// is used; the pair keeps call sites symmetric with the RNG).
    pub fn observe(&mut self, remote: &Coord, rtt_ms: f32, jitter: (f32, f32)) {
        if !remote.is_valid() || !rtt_ms.is_finite() || rtt_ms <= 0.0 {
            return;
        }
        let rtt = rtt_ms.min(MAX_COORD);
        let dist = self.rtt_ms(remote);
        // Confidence weight: trust the side with the lower error more.
        let w = self.error / (self.error + remote.error).max(1e-6);
        let sample_error = (dist - rtt).abs() / rtt;
        self.error =
            (sample_error * CE * w + self.error * (1.0 - CE * w)).clamp(0.0, INITIAL_ERROR);
        let force = CC * w * (rtt - dist);
        // Unit vector from the remote to us, height included (§5.3).
        let (mut dx, mut dy) = (self.x - remote.x, self.y - remote.y);
        let mut planar = (dx * dx + dy * dy).sqrt();
        if planar < 1e-3 {
            let angle = jitter.0 * std::f32::consts::TAU;
            (dx, dy, planar) = (angle.cos(), angle.sin(), 1.0);
        }
        let norm = (planar + self.height + remote.height).max(1e-3);
        // Along the unit vector: planar part (dx, dy) / norm, height part
        // (h_self + h_remote) / norm.
        let step = force / norm;
        self.x = (self.x + step * dx).clamp(-MAX_COORD, MAX_COORD);
        self.y = (self.y + step * dy).clamp(-MAX_COORD, MAX_COORD);
        self.height =
            (self.height + step * (self.height + remote.height)).clamp(MIN_HEIGHT, MAX_COORD);
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Nodes on a plane with access delays; each samples a few random
    /// others per round. Predictions end up within 25 % (median).
    #[test]
    fn converges_on_a_planar_network_with_access_delays() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 60;
        let truth: Vec<(f32, f32, f32)> = (0..n)
            .map(|_| {
                (
                    rng.gen_range(0.0..150.0),
                    rng.gen_range(0.0..150.0),
                    rng.gen_range(1.0..10.0),
                )
            })
            .collect();
        let rtt = |a: usize, b: usize| {
            let (p, q) = (truth[a], truth[b]);
            ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt() + p.2 + q.2
        };
        let mut c = vec![Coord::default(); n];
        for _ in 0..200 {
            for a in 0..n {
                for _ in 0..4 {
                    let b = rng.gen_range(0..n);
                    if a != b {
                        let remote = c[b];
                        let j = (rng.gen(), rng.gen());
                        c[a].observe(&remote, rtt(a, b), j);
                    }
                }
            }
        }
        let mut errs: Vec<f32> = (0..n)
            .flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b)))
            .map(|(a, b)| (c[a].rtt_ms(&c[b]) - rtt(a, b)).abs() / rtt(a, b))
            .collect();
        errs.sort_by(f32::total_cmp);
        let median = errs[errs.len() / 2];
        assert!(median < 0.25, "median relative error {median}");
        assert!(c.iter().all(|x| x.error < 0.6), "errors settle");
    }

    #[test]
    fn junk_from_the_wire_is_ignored() {
        let mut me = Coord::default();
        let bad = Coord {
            x: f32::NAN,
            ..Coord::default()
        };
        me.observe(&bad, 50.0, (0.1, 0.2));
        assert_eq!(me, Coord::default());
        me.observe(&Coord::default(), -3.0, (0.1, 0.2));
        assert_eq!(me, Coord::default());
        let far = Coord {
            x: 1e9,
            ..Coord::default()
        };
        assert!(!far.is_valid());
    }
}
