//! The DESIGN measures per viewer and per class of viewer (public, cone
//! home, symmetric home, and all homes together), from the viewers'
//! `/stats` readings.
//!
//! Offload, continuity and start-up reuse `Stats`' and `Summary`'s own
//! arithmetic, so the NAT lab means by them what `run` and `sim` mean.

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_mesh::proto::{Stats, Summary};

use super::{plan::Class, reading::Reading};

/// One viewer at the end of a run.
#[derive(Clone, Debug, Serialize)]
pub struct ViewerFigures {
    pub name: String,
    pub class: Class,
    pub ip: String,
    pub public_ip: String,
    /// `None`: no payload received at all.
    pub offload: Option<f64>,
    /// 0 for a viewer that never started, as `Summary` counts it.
    pub continuity: f64,
    pub lag_ms: Lag,
    pub startup_ms: Option<u64>,
    pub neighbors: u32,
    pub fallback_requests: u64,
    pub payload_from_peers: u64,
    pub payload_from_infra: u64,
    /// `nat.status` from /stats; `None`: absent.
    pub nat_status: Option<String>,
    /// Neighbours direct / hole-punched / relayed; `None`: absent.
    pub connections: Option<Connections>,
    /// Payload over relays / payload from peers; `None`: absent or no
    /// peer payload.
    pub relayed: Option<f64>,
    /// Whether /stats ever answered.
    pub answered: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Lag {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Connections {
    pub direct: u64,
    pub hole_punched: u64,
    pub relayed: u64,
}

impl Connections {
    fn from_counts([direct, hole_punched, relayed]: [u64; 3]) -> Connections {
        Connections {
            direct,
            hole_punched,
            relayed,
        }
    }

    fn add(&mut self, o: Connections) {
        self.direct += o.direct;
        self.hole_punched += o.hole_punched;
        self.relayed += o.relayed;
    }

    /// Each kind's share of all neighbours, or `None` with none.
    pub fn shares(&self) -> Option<Shares> {
        let total = self.direct + self.hole_punched + self.relayed;
        (total > 0).then(|| Shares {
            direct: self.direct as f64 / total as f64,
            hole_punched: self.hole_punched as f64 / total as f64,
            relayed: self.relayed as f64 / total as f64,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Shares {
    pub direct: f64,
    pub hole_punched: f64,
    pub relayed: f64,
}

/// A class of viewers together.
#[derive(Clone, Debug, Serialize)]
pub struct ClassFigures {
    pub viewers: usize,
    /// Bytes-weighted over the class: its peer payload / all its payload.
    pub offload: f64,
    pub continuity: MeanMin,
    /// Median of the viewers' p50s; the worst p95 and max.
    pub lag_ms: Lag,
    pub startup_ms: StartupFigures,
    pub not_started: usize,
    pub neighbors_mean: f64,
    /// `None` when no viewer of the class lists its peers.
    pub connections: Option<Connections>,
    pub connection_shares: Option<Shares>,
    /// Relayed payload / peer payload over the viewers reporting `relayed`.
    pub relayed: Option<f64>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct MeanMin {
    pub mean: f64,
    pub min: f64,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct StartupFigures {
    pub p50: u64,
    pub p95: u64,
    pub max: Option<u64>,
}

/// What the lab knows of a viewer besides its reading.
#[derive(Clone, Debug)]
pub struct ViewerId {
    pub name: String,
    pub class: Class,
    pub ip: String,
    pub public_ip: String,
}

impl ViewerFigures {
    /// `reading` is the latest answer, `None` if the node never answered
    /// (counted as not started).
    pub fn new(id: &ViewerId, reading: Option<&Reading>) -> ViewerFigures {
        let empty = Reading::default();
        let r = reading.unwrap_or(&empty);
        let s = &r.stats;
        let relayed = r.relayed.and_then(|b| {
            (s.payload_from_peers > 0).then(|| b as f64 / s.payload_from_peers as f64)
        });
        ViewerFigures {
            name: id.name.clone(),
            class: id.class,
            ip: id.ip.clone(),
            public_ip: id.public_ip.clone(),
            offload: s.offload(),
            continuity: continuity(s),
            lag_ms: Lag {
                p50: r.lag_p50,
                p95: r.lag_p95,
                max: r.lag_max,
            },
            startup_ms: s.startup_ms,
            neighbors: s.neighbors,
            fallback_requests: s.fallback_requests,
            payload_from_peers: s.payload_from_peers,
            payload_from_infra: s.payload_from_infra,
            nat_status: r.nat_status.clone(),
            connections: r.connections().map(Connections::from_counts),
            relayed,
            answered: reading.is_some(),
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            payload_from_peers: self.payload_from_peers,
            payload_from_infra: self.payload_from_infra,
            startup_ms: self.startup_ms,
            ..Stats::default()
        }
    }
}

/// One viewer's continuity the way `Summary` counts it: 0 before
/// start-up, 1 when started but nothing is due yet.
fn continuity(s: &Stats) -> f64 {
    let one = Summary::new(std::slice::from_ref(s), &[], 0);
    one.continuity.mean
}

fn median(mut xs: Vec<u64>) -> Option<u64> {
    xs.sort_unstable();
    (!xs.is_empty()).then(|| xs[xs.len() / 2])
}

impl ClassFigures {
    /// `None` for an empty class.
    pub fn new(viewers: &[&ViewerFigures]) -> Option<ClassFigures> {
        if viewers.is_empty() {
            return None;
        }
        let stats: Vec<Stats> = viewers.iter().map(|v| v.stats()).collect();
        let summary = Summary::new(&stats, &[], 0);
        let continuities = viewers.iter().map(|v| v.continuity);
        let n = viewers.len() as f64;
        let mut connections: Option<Connections> = None;
        for c in viewers.iter().filter_map(|v| v.connections) {
            connections.get_or_insert_with(Connections::default).add(c);
        }
        let reporting: Vec<&&ViewerFigures> =
            viewers.iter().filter(|v| v.relayed.is_some()).collect();
        let relayed = (!reporting.is_empty()).then(|| {
            let relayed: f64 = reporting
                .iter()
                .map(|v| v.relayed.unwrap_or(0.0) * v.payload_from_peers as f64)
                .sum();
            let peer: u64 = reporting.iter().map(|v| v.payload_from_peers).sum();
            if peer == 0 {
                0.0
            } else {
                relayed / peer as f64
            }
        });
        Some(ClassFigures {
            viewers: viewers.len(),
            offload: summary.offload,
            continuity: MeanMin {
                mean: continuities.clone().sum::<f64>() / n,
                min: continuities.fold(f64::INFINITY, f64::min),
            },
            lag_ms: Lag {
                p50: median(viewers.iter().filter_map(|v| v.lag_ms.p50).collect()),
                p95: viewers.iter().filter_map(|v| v.lag_ms.p95).max(),
                max: viewers.iter().filter_map(|v| v.lag_ms.max).max(),
            },
            startup_ms: StartupFigures {
                p50: summary.startup_ms.p50,
                p95: summary.startup_ms.p95,
                max: viewers.iter().filter_map(|v| v.startup_ms).max(),
            },
            not_started: summary.not_started,
            neighbors_mean: viewers.iter().map(|v| f64::from(v.neighbors)).sum::<f64>() / n,
            connection_shares: connections.and_then(|c| c.shares()),
            connections,
            relayed,
        })
    }
}

/// The groups a report shows: each class, all homes, and everyone.
pub fn by_class(viewers: &[ViewerFigures]) -> BTreeMap<&'static str, ClassFigures> {
    let mut out = BTreeMap::new();
    let mut group = |name, keep: &dyn Fn(Class) -> bool| {
        let members: Vec<&ViewerFigures> = viewers.iter().filter(|v| keep(v.class)).collect();
        if let Some(f) = ClassFigures::new(&members) {
            out.insert(name, f);
        }
    };
    for class in Class::ALL {
        group(class.name(), &|c| c == class);
    }
    group("home", &Class::is_home);
    group("all", &|_| true);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::nat::reading::{Connection, PeerLink};

    fn id(name: &str, class: Class) -> ViewerId {
        ViewerId {
            name: name.into(),
            class,
            ip: "192.168.1.2".into(),
            public_ip: "203.0.113.101".into(),
        }
    }

    fn reading(peers: u64, infra: u64, due: u64, on_time: u64) -> Reading {
        Reading {
            stats: Stats {
                payload_from_peers: peers,
                payload_from_infra: infra,
                pieces_due: due,
                pieces_on_time: on_time,
                startup_ms: Some(1_000 + peers),
                neighbors: 2,
                ..Stats::default()
            },
            lag_p50: Some(100 + peers),
            lag_p95: Some(500),
            lag_max: Some(900),
            ..Reading::default()
        }
    }

    #[test]
    fn class_offload_is_weighted_by_bytes() {
        let a = ViewerFigures::new(&id("h1", Class::Cone), Some(&reading(100, 0, 10, 10)));
        let b = ViewerFigures::new(&id("h2", Class::Cone), Some(&reading(0, 300, 10, 5)));
        let c = ClassFigures::new(&[&a, &b]).unwrap();
        assert_eq!(c.offload, 0.25);
        assert_eq!(c.continuity.mean, 0.75);
        assert_eq!(c.continuity.min, 0.5);
        assert_eq!(c.neighbors_mean, 2.0);
        assert_eq!(c.lag_ms.p95, Some(500));
        assert_eq!(c.startup_ms.max, Some(1_100));
        assert_eq!(c.connections, None);
        assert_eq!(c.relayed, None);
    }

    #[test]
    fn a_silent_viewer_counts_as_never_started() {
        let silent = ViewerFigures::new(&id("h3", Class::Symmetric), None);
        assert!(!silent.answered);
        assert_eq!(silent.continuity, 0.0);
        let ok = ViewerFigures::new(&id("h4", Class::Symmetric), Some(&reading(1, 1, 4, 4)));
        let c = ClassFigures::new(&[&silent, &ok]).unwrap();
        assert_eq!(c.not_started, 1);
        assert_eq!(c.continuity.min, 0.0);
        assert_eq!(c.continuity.mean, 0.5);
    }

    #[test]
    fn connection_shares_and_relayed_payload() {
        let link = |c| PeerLink {
            peer_id: "p".into(),
            addr: None,
            connection: Some(c),
            rtt_ms: None,
            bytes_sent: None,
            bytes_received: None,
        };
        let mut r = reading(1_000, 0, 1, 1);
        r.peers = Some(vec![
            link(Connection::Direct),
            link(Connection::HolePunched),
            link(Connection::HolePunched),
            link(Connection::Relayed),
        ]);
        r.relayed = Some(100);
        let a = ViewerFigures::new(&id("h1", Class::Cone), Some(&r));
        assert_eq!(a.relayed, Some(0.1));
        let mut r2 = reading(3_000, 0, 1, 1);
        r2.peers = Some(vec![]);
        r2.relayed = Some(0);
        let b = ViewerFigures::new(&id("h2", Class::Cone), Some(&r2));
        let c = ClassFigures::new(&[&a, &b]).unwrap();
        let s = c.connection_shares.unwrap();
        assert_eq!((s.direct, s.hole_punched, s.relayed), (0.25, 0.5, 0.25));
        assert_eq!(c.relayed, Some(100.0 / 4_000.0));
    }

    #[test]
    fn groups_cover_each_class_homes_and_all() {
        let v = vec![
            ViewerFigures::new(&id("pub1", Class::Public), Some(&reading(0, 10, 1, 1))),
            ViewerFigures::new(&id("h1", Class::Cone), Some(&reading(10, 0, 1, 1))),
            ViewerFigures::new(&id("h2", Class::Symmetric), Some(&reading(10, 10, 1, 1))),
        ];
        let g = by_class(&v);
        let names: Vec<&str> = g.keys().copied().collect();
        assert_eq!(names, ["all", "cone", "home", "public", "symmetric"]);
        assert_eq!(g["home"].viewers, 2);
        assert_eq!(g["home"].offload, 20.0 / 30.0);
        assert_eq!(g["all"].viewers, 3);
    }
}
