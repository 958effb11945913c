//! Emulated latency between lab nodes: who is how far from whom.
//!
//! Slot 0 is the seeder; slots 1..=N are viewers (a viewer replaced by
//! churn takes over its slot). RTTs are symmetric and fixed for a run, drawn
//! from the scenario's seed.

use std::{collections::HashMap, path::Path};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::scenario::TopologySpec;

/// A region of the geo topology: share of viewers and base RTTs to others.
struct Region {
    name: &'static str,
    weight: f64,
}

const REGIONS: [Region; 5] = [
    Region {
        name: "na-east",
        weight: 0.25,
    },
    Region {
        name: "na-west",
        weight: 0.15,
    },
    Region {
        name: "europe",
        weight: 0.30,
    },
    Region {
        name: "asia",
        weight: 0.20,
    },
    Region {
        name: "south-america",
        weight: 0.10,
    },
];

/// RTT between region centres in ms (60–300 ms across regions).
const CROSS_RTT: [[f64; 5]; 5] = [
    [0.0, 70.0, 90.0, 200.0, 120.0],
    [70.0, 0.0, 150.0, 130.0, 170.0],
    [90.0, 150.0, 0.0, 250.0, 200.0],
    [200.0, 130.0, 250.0, 0.0, 300.0],
    [120.0, 170.0, 200.0, 300.0, 0.0],
];

/// The seeder's region in the geo topology.
const SEEDER_REGION: usize = 2;

/// Latency between every pair of slots.
#[derive(Clone, Debug)]
pub struct Topology {
    kind: Kind,
    /// Per slot: one-way access delay in ms (last mile), added to every path.
    access_ms: Vec<f64>,
    /// Per slot: jitter bound in ms.
    jitter_ms: Vec<f64>,
}

#[derive(Clone, Debug)]
enum Kind {
    Geo {
        region: Vec<usize>,
        /// Position within the region, in ms of RTT, so intra-region RTTs
        /// are metric (triangle inequality holds, as coordinates expect).
        pos: Vec<(f64, f64)>,
    },
    Uniform(f64),
    Matrix(HashMap<(usize, usize), f64>),
}

/// Why a topology cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read the RTT matrix {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("RTT matrix line {line}: {why}")]
    Line { line: usize, why: String },
    #[error("the RTT matrix has no entry for nodes {0} and {1}")]
    Missing(usize, usize),
}

impl Topology {
    /// A topology for `slots` slots (seeder included).
    pub fn new(spec: &TopologySpec, slots: usize, seed: u64) -> Result<Topology, TopologyError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7070_7070);
        let (kind, access_ms, jitter_ms) = match spec {
            TopologySpec::Geo => {
                let mut region = Vec::with_capacity(slots);
                let mut pos = Vec::with_capacity(slots);
                for slot in 0..slots {
                    let r = if slot == 0 {
                        SEEDER_REGION
                    } else {
                        pick_region(rng.gen())
                    };
                    region.push(r);
                    // A disc of radius 17.5 ms: pairs inside are 0–35 ms
                    // apart; with access delays, 5–40 ms RTT within a region.
                    let (a, d): (f64, f64) = (rng.gen::<f64>() * std::f64::consts::TAU, rng.gen());
                    let radius = 17.5 * d.sqrt();
                    pos.push((radius * a.cos(), radius * a.sin()));
                }
                let access = (0..slots)
                    .map(|s| if s == 0 { 0.5 } else { rng.gen_range(1.0..5.0) })
                    .collect();
                let jitter = (0..slots)
                    .map(|s| if s == 0 { 0.0 } else { rng.gen_range(0.0..3.0) })
                    .collect();
                (Kind::Geo { region, pos }, access, jitter)
            }
            TopologySpec::Uniform { rtt_ms } => (
                Kind::Uniform(*rtt_ms as f64),
                vec![0.0; slots],
                vec![0.0; slots],
            ),
            TopologySpec::Matrix { path } => {
                let m = load_matrix(Path::new(path))?;
                for a in 0..slots {
                    for b in a + 1..slots {
                        if !m.contains_key(&(a, b)) {
                            return Err(TopologyError::Missing(a, b));
                        }
                    }
                }
                (Kind::Matrix(m), vec![0.0; slots], vec![0.0; slots])
            }
        };
        Ok(Topology {
            kind,
            access_ms,
            jitter_ms,
        })
    }

    pub fn slots(&self) -> usize {
        self.access_ms.len()
    }

    /// Round-trip time between two slots, in ms.
    pub fn rtt_ms(&self, a: usize, b: usize) -> f64 {
        if a == b {
            return 0.0;
        }
        let core = match &self.kind {
            Kind::Geo { region, pos } => {
                let (ra, rb) = (region[a], region[b]);
                let (pa, pb) = (pos[a], pos[b]);
                let spread = ((pa.0 - pb.0).powi(2) + (pa.1 - pb.1).powi(2)).sqrt();
                if ra == rb {
                    5.0 + spread
                } else {
                    CROSS_RTT[ra][rb] + spread
                }
            }
            Kind::Uniform(ms) => *ms,
            Kind::Matrix(m) => m[&(a.min(b), a.max(b))],
        };
        core + 2.0 * (self.access_ms[a] + self.access_ms[b])
    }

    /// One-way delay from `from` to `to`, in ms (half the RTT).
    pub fn one_way_ms(&self, from: usize, to: usize) -> f64 {
        self.rtt_ms(from, to) / 2.0
    }

    /// Jitter bound of a slot's links, in ms.
    pub fn jitter_ms(&self, slot: usize) -> f64 {
        self.jitter_ms[slot]
    }

    /// The region of a slot under the geo topology.
    pub fn region(&self, slot: usize) -> Option<&'static str> {
        match &self.kind {
            Kind::Geo { region, .. } => Some(REGIONS[region[slot]].name),
            _ => None,
        }
    }

    /// Mean RTT from `slot` to the `k` closest of `others`: the best
    /// neighbour set of that size.
    pub fn best_mean_rtt(&self, slot: usize, others: &[usize], k: usize) -> Option<f64> {
        let mut rtts: Vec<f64> = others
            .iter()
            .filter(|&&o| o != slot)
            .map(|&o| self.rtt_ms(slot, o))
            .collect();
        if rtts.is_empty() || k == 0 {
            return None;
        }
        rtts.sort_by(f64::total_cmp);
        let k = k.min(rtts.len());
        Some(rtts[..k].iter().sum::<f64>() / k as f64)
    }
}

fn pick_region(x: f64) -> usize {
    let mut acc = 0.0;
    for (i, r) in REGIONS.iter().enumerate() {
        acc += r.weight;
        if x < acc {
            return i;
        }
    }
    REGIONS.len() - 1
}

/// Reads `a,b,rtt_ms` rows (a header line is allowed), keyed (min, max).
fn load_matrix(path: &Path) -> Result<HashMap<(usize, usize), f64>, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut m = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && line.starts_with('a')) {
            continue;
        }
        let bad = |why: &str| TopologyError::Line {
            line: i + 1,
            why: why.to_string(),
        };
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let [a, b, rtt] = cols[..] else {
            return Err(bad("expected a,b,rtt_ms"));
        };
        let a: usize = a.parse().map_err(|_| bad("a is not a node index"))?;
        let b: usize = b.parse().map_err(|_| bad("b is not a node index"))?;
        let rtt: f64 = rtt.parse().map_err(|_| bad("rtt_ms is not a number"))?;
        if !(0.0..=10_000.0).contains(&rtt) || a == b {
            return Err(bad("rtt_ms must be 0..10000 between two different nodes"));
        }
        m.insert((a.min(b), a.max(b)), rtt);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geo_rtts_are_in_the_stated_ranges() {
        let t = Topology::new(&TopologySpec::Geo, 300, 1).unwrap();
        let (mut intra, mut cross) = (Vec::new(), Vec::new());
        for a in 1..300 {
            for b in a + 1..300 {
                let rtt = t.rtt_ms(a, b);
                assert_eq!(rtt, t.rtt_ms(b, a));
                if t.region(a) == t.region(b) {
                    intra.push(rtt);
                } else {
                    cross.push(rtt);
                }
            }
        }
        let range = |v: &[f64]| {
            (
                v.iter().copied().fold(f64::MAX, f64::min),
                v.iter().copied().fold(0.0, f64::max),
            )
        };
        let (lo, hi) = range(&intra);
        assert!(lo >= 5.0 && hi <= 60.0, "intra {lo}..{hi}");
        // 60–300 ms between region centres, plus up to 35 ms of spread
        // within the regions and 20 ms of access delay.
        let (lo, hi) = range(&cross);
        assert!(lo >= 60.0 && hi <= 355.0, "cross {lo}..{hi}");
    }

    #[test]
    fn matrix_files_parse_and_must_be_complete() {
        let dir = std::env::temp_dir().join(format!("shoal-rtt-{}", std::process::id()));
        std::fs::write(&dir, "a,b,rtt_ms\n0,1,20\n2,0,30\n1,2,40\n").unwrap();
        let spec = TopologySpec::Matrix {
            path: dir.display().to_string(),
        };
        let t = Topology::new(&spec, 3, 1).unwrap();
        assert_eq!(t.rtt_ms(2, 0), 30.0);
        assert_eq!(t.rtt_ms(1, 2), 40.0);
        assert!(matches!(
            Topology::new(&spec, 4, 1),
            Err(TopologyError::Missing(0, 3))
        ));
        std::fs::write(&dir, "0,1,abc\n").unwrap();
        assert!(matches!(
            Topology::new(&spec, 2, 1),
            Err(TopologyError::Line { line: 1, .. })
        ));
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn best_set_is_the_closest() {
        let t = Topology::new(&TopologySpec::Uniform { rtt_ms: 50 }, 10, 1).unwrap();
        assert_eq!(t.best_mean_rtt(1, &[0, 2, 3], 2), Some(50.0));
        assert_eq!(t.best_mean_rtt(1, &[1], 2), None);
    }
}
