//! Emulated latency between lab nodes: who is how far from whom.
//!
//! Slot 0 is the seeder; slots 1..=N are viewers (a viewer replaced by
//! churn takes over its slot). A run of S streams puts its S seeders in
//! slots 0..S-1 ([`Topology::with_infra`], `super::layout`), all in the
//! seeder's region, and R reflectors after them
//! ([`Topology::with_reflectors`]), spread over the regions as a CDN's
//! points of presence. RTTs are symmetric and fixed for a run, drawn
//! from the scenario's seed.
//!
//! Each slot also has a synthetic place in the Internet's structure, a
//! loopback address and an AS ([`Topology::locality`], [`Topology::address`],
//! [`Topology::asn_table`]): the lab's viewers listen on their address, so
//! the tracker finds their /24 and, from the lab's AS table, their AS, as it
//! would on the Internet; the simulator can give its engines the same
//! localities. Under `geo`, an AS is a compact part of a region and a /24 a
//! compact part of an AS, so the same /24 means closest.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use shoal_mesh::proto::Locality;

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

/// Where the geo topology puts reflectors, one per region in turn, largest
/// share of viewers first (europe, na-east, asia, na-west, south-america),
/// as a CDN opens its points of presence where its audience is.
const REFLECTOR_REGIONS: [usize; 5] = [2, 0, 3, 1, 4];

/// Latency between every pair of slots.
#[derive(Clone, Debug)]
pub struct Topology {
    kind: Kind,
    /// Per slot: one-way access delay in ms (last mile), added to every path.
    access_ms: Vec<f64>,
    /// Per slot: jitter bound in ms.
    jitter_ms: Vec<f64>,
    /// Per slot: synthetic AS and loopback address.
    places: Vec<Place>,
}

/// Where a slot sits: its AS and its loopback address, whose /24 is its
/// synthetic subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    asn: u32,
    addr: Ipv4Addr,
}

#[derive(Clone, Debug)]
enum Kind {
    /// Per slot: where it is, in one record (the simulator asks
    /// [`Topology::rtt_ms`] for every frame sent, between random pairs of
    /// up to 100,001 slots).
    Geo(Vec<Spot>),
    Uniform(f64),
    Matrix(HashMap<(usize, usize), f64>),
}

/// A slot under `geo`: one cache line holds two.
#[derive(Clone, Copy, Debug)]
struct Spot {
    /// Position within the region, in ms of RTT, so intra-region RTTs are
    /// metric (triangle inequality holds, as coordinates expect).
    x: f64,
    y: f64,
    /// The slot's access delay (as in `Topology::access_ms`).
    access_ms: f64,
    region: usize,
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
        Topology::with_infra(spec, 1, slots, seed)
    }

    /// A topology for `slots` slots of which the first `infra` are seeders:
    /// under `geo` they sit in the seeder's region with a datacenter's
    /// access delay and no jitter. (Their synthetic addresses go unused:
    /// seeders listen on 127.0.0.1.)
    pub fn with_infra(
        spec: &TopologySpec,
        infra: usize,
        slots: usize,
        seed: u64,
    ) -> Result<Topology, TopologyError> {
        Topology::with_reflectors(spec, infra, 0, slots, seed)
    }

    /// A topology for `slots` slots: `seeders` seeders, then `reflectors`
    /// reflectors, then viewers. Reflectors are infrastructure as the
    /// seeders are (a datacenter's access delay, no jitter); under `geo`
    /// reflector `i` sits in `REFLECTOR_REGIONS[i % 5]`.
    pub fn with_reflectors(
        spec: &TopologySpec,
        seeders: usize,
        reflectors: usize,
        slots: usize,
        seed: u64,
    ) -> Result<Topology, TopologyError> {
        let infra = seeders + reflectors;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7070_7070);
        let (kind, access_ms, jitter_ms) = match spec {
            TopologySpec::Geo => {
                let mut region = Vec::with_capacity(slots);
                let mut pos = Vec::with_capacity(slots);
                for slot in 0..slots {
                    let r = if slot < seeders {
                        SEEDER_REGION
                    } else if slot < infra {
                        REFLECTOR_REGIONS[(slot - seeders) % REFLECTOR_REGIONS.len()]
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
                let access: Vec<f64> = (0..slots)
                    .map(|s| {
                        if s < infra {
                            0.5
                        } else {
                            rng.gen_range(1.0..5.0)
                        }
                    })
                    .collect();
                let jitter = (0..slots)
                    .map(|s| {
                        if s < infra {
                            0.0
                        } else {
                            rng.gen_range(0.0..3.0)
                        }
                    })
                    .collect();
                let spots = (0..slots)
                    .map(|s| Spot {
                        x: pos[s].0,
                        y: pos[s].1,
                        access_ms: access[s],
                        region: region[s],
                    })
                    .collect();
                (Kind::Geo(spots), access, jitter)
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
        let places = places(&kind, slots);
        Ok(Topology {
            kind,
            access_ms,
            jitter_ms,
            places,
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
            Kind::Geo(spots) => {
                let (sa, sb) = (spots[a], spots[b]);
                let spread = ((sa.x - sb.x).powi(2) + (sa.y - sb.y).powi(2)).sqrt();
                let core = if sa.region == sb.region {
                    5.0 + spread
                } else {
                    CROSS_RTT[sa.region][sb.region] + spread
                };
                return core + 2.0 * (sa.access_ms + sb.access_ms);
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

    /// The slot's synthetic AS and subnet: `Locality::of_ip` of its
    /// [`address`](Self::address), with its AS, so the tracker (given
    /// [`asn_table`](Self::asn_table)) and the simulator agree.
    pub fn locality(&self, slot: usize) -> Locality {
        let p = self.places[slot];
        Locality::of_ip(IpAddr::V4(p.addr), p.asn)
    }

    /// The loopback address the slot's node listens on: 127.0.0.1 for the
    /// seeder, 127.A.B.C with A ≥ 1 for viewers, the /24 being the subnet.
    /// (Linux routes all of 127.0.0.0/8 to the loopback interface.)
    pub fn address(&self, slot: usize) -> Ipv4Addr {
        self.places[slot].addr
    }

    /// The slots' AS table for the tracker (`--asn-table`): one
    /// `127.A.B.0/24,asn` line per subnet in use, the seeder's included.
    pub fn asn_table(&self) -> String {
        let subnets: BTreeMap<Ipv4Addr, u32> = (self.places.iter())
            .map(|p| (Ipv4Addr::from(u32::from(p.addr) & !0xff), p.asn))
            .collect();
        let mut text = String::from("# shoal-lab: synthetic subnets and AS numbers\n");
        for (net, asn) in subnets {
            text.push_str(&format!("{net}/24,{asn}\n"));
        }
        text
    }

    /// The region of a slot under the geo topology.
    pub fn region(&self, slot: usize) -> Option<&'static str> {
        match &self.kind {
            Kind::Geo(spots) => Some(REGIONS[spots[slot].region].name),
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

/// The seeder's AS; viewers' ASes follow. Private-use AS numbers (RFC 6996).
const SEEDER_ASN: u32 = 64512;

/// Most viewers in one synthetic /24: about √N (at least 8), so a /24 holds
/// 5–10 viewers at 100 and ~100 at 10,000; at most 250, so hosts fit in a
/// /24's 254 addresses.
fn max_subnet_size(viewers: usize) -> usize {
    ((viewers as f64).sqrt().round() as usize).clamp(8, 250)
}

/// Every slot's AS and address. Viewers' /24s are numbered from 0 in AS
/// order and laid out as 127.(1 + g / 256).(g % 256).0/24, hosts from .1 in
/// slot order; the seeder has 127.0.0.1 and an AS of its own.
///
/// - `geo`: each region is bisected (at the median, across its longer
///   side) into up to 4 ASes, as long as each keeps at least two /24s'
///   worth of viewers, and each AS is bisected the same way until its
///   parts fit in a /24 ([`max_subnet_size`]).
/// - `uniform` and matrices (no geography): `N / (2 × max /24)` ASes, at
///   least 1 and at most 8, of consecutive slots, each cut into equal
///   runs of consecutive slots that fit in a /24.
fn places(kind: &Kind, slots: usize) -> Vec<Place> {
    let viewers = slots.saturating_sub(1);
    let t = max_subnet_size(viewers);
    // ASes, each a list of /24s, each a list of slots.
    let mut ases: Vec<Vec<Vec<usize>>> = Vec::new();
    match kind {
        Kind::Geo(spots) => {
            for r in 0..REGIONS.len() {
                let members: Vec<usize> = (1..slots).filter(|&s| spots[s].region == r).collect();
                if members.is_empty() {
                    continue;
                }
                let mut groups = Vec::new();
                bisect(members, spots, &mut groups, &|g| g.len() / 2 < 2 * t, 2);
                for g in groups {
                    let mut subnets = Vec::new();
                    bisect(g, spots, &mut subnets, &|g| g.len() <= t, usize::MAX);
                    ases.push(subnets);
                }
            }
        }
        Kind::Uniform(_) | Kind::Matrix(_) => {
            let n_as = (viewers / (2 * t)).clamp(1, 8);
            let members = |k: usize| (1 + viewers * k / n_as)..(1 + viewers * (k + 1) / n_as);
            for k in 0..n_as {
                let m: Vec<usize> = members(k).collect();
                let n_sub = m.len().div_ceil(t).max(1);
                let subnets = (0..n_sub)
                    .map(|j| m[m.len() * j / n_sub..m.len() * (j + 1) / n_sub].to_vec())
                    .collect();
                ases.push(subnets);
            }
        }
    }
    let mut places = vec![
        Place {
            asn: SEEDER_ASN,
            addr: Ipv4Addr::new(127, 0, 0, 1),
        };
        slots
    ];
    let mut g = 0usize;
    for (k, subnets) in ases.into_iter().enumerate() {
        for mut subnet in subnets.into_iter().filter(|s| !s.is_empty()) {
            subnet.sort_unstable();
            // 254 × 256 /24s hold millions of viewers: saturating is moot.
            let (a, b) = ((1 + g / 256).min(255), g % 256);
            for (i, slot) in subnet.into_iter().enumerate() {
                places[slot] = Place {
                    asn: SEEDER_ASN + 1 + k as u32,
                    addr: Ipv4Addr::new(127, a as u8, b as u8, 1 + i as u8),
                };
            }
            g += 1;
        }
    }
    places
}

/// Splits `group` in two at the median of the coordinate along which it
/// spreads most (ties by slot), recursively, at most `depth` levels deep,
/// and pushes the parts for which `done` holds (or at the depth limit) to
/// `out`, in order.
fn bisect(
    mut group: Vec<usize>,
    spots: &[Spot],
    out: &mut Vec<Vec<usize>>,
    done: &dyn Fn(&[usize]) -> bool,
    depth: usize,
) {
    if group.len() < 2 || depth == 0 || done(&group) {
        out.push(group);
        return;
    }
    let extent = |f: fn(&Spot) -> f64| {
        let (lo, hi) = group
            .iter()
            .map(|&s| f(&spots[s]))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        hi - lo
    };
    let along_x = extent(|p| p.x) >= extent(|p| p.y);
    group.sort_by(|&a, &b| {
        let (pa, pb) = (spots[a], spots[b]);
        let (ka, kb) = if along_x { (pa.x, pb.x) } else { (pa.y, pb.y) };
        ka.total_cmp(&kb).then(a.cmp(&b))
    });
    let upper = group.split_off(group.len() / 2);
    bisect(group, spots, out, done, depth - 1);
    bisect(upper, spots, out, done, depth - 1);
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
    fn reflectors_are_points_of_presence_in_every_region() {
        let t = Topology::with_reflectors(&TopologySpec::Geo, 3, 6, 3 + 6 + 40, 1).unwrap();
        let regions: Vec<_> = (3..9).map(|s| t.region(s).unwrap()).collect();
        assert_eq!(
            regions,
            [
                "europe",
                "na-east",
                "asia",
                "na-west",
                "south-america",
                "europe"
            ]
        );
        assert!((0..3).all(|s| t.region(s) == Some("europe")));
        assert!((3..9).all(|r| t.jitter_ms(r) == 0.0));
        // The european PoP is near the seeders (5–35 ms of core, 0.5 ms of
        // access each); the na-east one an ocean away.
        assert!(t.rtt_ms(3, 0) <= 42.0, "{}", t.rtt_ms(3, 0));
        assert!(t.rtt_ms(4, 0) >= 90.0, "{}", t.rtt_ms(4, 0));
        // Without reflectors, the same topology as before.
        let a = Topology::with_infra(&TopologySpec::Geo, 3, 43, 1).unwrap();
        let b = Topology::with_reflectors(&TopologySpec::Geo, 3, 0, 43, 1).unwrap();
        assert!((0..43).all(|x| (0..43).all(|y| a.rtt_ms(x, y) == b.rtt_ms(x, y))));
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

    /// Viewers per /24 and per AS.
    fn groups(t: &Topology) -> (HashMap<u64, Vec<usize>>, HashMap<u32, Vec<usize>>) {
        let (mut subnets, mut ases) = (HashMap::<_, Vec<_>>::new(), HashMap::<_, Vec<_>>::new());
        for s in 1..t.slots() {
            let l = t.locality(s);
            subnets.entry(l.subnet).or_default().push(s);
            ases.entry(l.asn).or_default().push(s);
        }
        (subnets, ases)
    }

    #[test]
    fn localities_are_deterministic_and_match_the_addresses() {
        for spec in [TopologySpec::Geo, TopologySpec::Uniform { rtt_ms: 50 }] {
            let a = Topology::new(&spec, 201, 5).unwrap();
            let b = Topology::new(&spec, 201, 5).unwrap();
            let locs = |t: &Topology| (0..201).map(|s| t.locality(s)).collect::<Vec<_>>();
            assert_eq!(locs(&a), locs(&b), "{spec:?}");
            let table = crate::tracker::AsnTable::parse(&a.asn_table(), "lab").unwrap();
            let mut addrs = std::collections::HashSet::new();
            for s in 0..201 {
                let (ip, loc) = (a.address(s), a.locality(s));
                assert!(ip.is_loopback() && addrs.insert(ip), "{ip} twice");
                assert_eq!(loc, Locality::of_ip(IpAddr::V4(ip), loc.asn));
                // What the tracker will find from the lab's table.
                assert_eq!(table.lookup(IpAddr::V4(ip)), loc.asn);
                assert_ne!(loc.asn, 0);
            }
            // The seeder has an AS and a /24 of its own, at 127.0.0.1.
            assert_eq!(a.address(0), Ipv4Addr::LOCALHOST);
            let seeder = a.locality(0);
            assert!((1..201).all(|s| {
                let l = a.locality(s);
                !l.same_as(&seeder) && !l.same_subnet(&seeder)
            }));
        }
        // The seed moves viewers, and so their places.
        let (a, b) = (
            Topology::new(&TopologySpec::Geo, 201, 5).unwrap(),
            Topology::new(&TopologySpec::Geo, 201, 6).unwrap(),
        );
        assert!((1..201).any(|s| a.locality(s) != b.locality(s)));
    }

    #[test]
    fn geo_subnets_and_ases_group_close_nodes() {
        let t = Topology::new(&TopologySpec::Geo, 1001, 3).unwrap();
        let (subnets, ases) = groups(&t);
        // ~√1000 = 32 at most per /24, bisected: at least half that.
        let sizes: Vec<usize> = subnets.values().map(Vec::len).collect();
        assert!(sizes.iter().all(|&n| (8..=32).contains(&n)), "{sizes:?}");
        // A few ASes per region, each of several /24s, within one region.
        assert!((10..=20).contains(&ases.len()), "{} ASes", ases.len());
        for members in ases.values() {
            assert!(members.iter().all(|&s| t.region(s) == t.region(members[0])));
            let n24 = (members.iter())
                .map(|&s| t.locality(s).subnet)
                .collect::<std::collections::HashSet<_>>()
                .len();
            assert!(n24 >= 2, "an AS of {} in one /24", members.len());
        }
        // Closer and closer: same region < same AS < same /24, on average.
        let (mut sum, mut n) = ([0.0; 3], [0usize; 3]);
        for a in 1..=1000 {
            for b in a + 1..=1000 {
                let (la, lb) = (t.locality(a), t.locality(b));
                let k = match () {
                    _ if la.same_subnet(&lb) => 0,
                    _ if la.same_as(&lb) => 1,
                    _ if t.region(a) == t.region(b) => 2,
                    _ => continue,
                };
                sum[k] += t.rtt_ms(a, b);
                n[k] += 1;
            }
        }
        let mean: Vec<f64> = (0..3).map(|k| sum[k] / n[k] as f64).collect();
        assert!(
            mean[0] + 3.0 < mean[1] && mean[1] + 3.0 < mean[2],
            "{mean:?}"
        );

        // At 100 viewers: /24s of about 5–10, one or more per AS.
        let (subnets, _) = groups(&Topology::new(&TopologySpec::Geo, 101, 1).unwrap());
        assert!(subnets.values().all(|m| (4..=10).contains(&m.len())));
    }

    #[test]
    fn uniform_ases_go_by_slot() {
        let t = Topology::new(&TopologySpec::Uniform { rtt_ms: 50 }, 101, 1).unwrap();
        let (subnets, ases) = groups(&t);
        assert_eq!(ases.len(), 5);
        assert!(ases.values().all(|m| m.len() == 20));
        assert!(subnets.values().all(|m| m.len() == 10));
        assert!(t.locality(1).same_subnet(&t.locality(10)));
        assert!(t.locality(1).same_as(&t.locality(20)));
        assert!(!t.locality(20).same_as(&t.locality(21)));
        assert_eq!(t.address(1), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(t.address(11), Ipv4Addr::new(127, 1, 1, 1));
        let tiny = Topology::new(&TopologySpec::Uniform { rtt_ms: 50 }, 3, 1).unwrap();
        assert!(tiny.locality(1).same_subnet(&tiny.locality(2)));
    }

    #[test]
    fn best_set_is_the_closest() {
        let t = Topology::new(&TopologySpec::Uniform { rtt_ms: 50 }, 10, 1).unwrap();
        assert_eq!(t.best_mean_rtt(1, &[0, 2, 3], 2), Some(50.0));
        assert_eq!(t.best_mean_rtt(1, &[1], 2), None);
    }
}
