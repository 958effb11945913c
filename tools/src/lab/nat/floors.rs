//! Figures a NAT lab run must reach, or `shoal-lab nat` exits non-zero
//! (how `.ci/run` holds the line).

use std::collections::BTreeMap;

use clap::Args;
use serde::Serialize;

use super::figures::{ClassFigures, ViewerFigures};

#[derive(Args, Clone, Debug, Default, Serialize)]
pub struct NatFloors {
    /// Exit non-zero if any viewer's continuity is below this (a viewer
    /// must never stall because of P2P, wherever it sits).
    #[arg(long)]
    pub min_continuity: Option<f64>,
    /// Exit non-zero if the home viewers' offload (cone and symmetric
    /// together, bytes-weighted) is below this.
    #[arg(long)]
    pub min_home_offload: Option<f64>,
    /// Exit non-zero if any viewer took longer than this from joining to
    /// its first playable segment, e.g. 10s (a viewer that never started
    /// misses it too).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_ms")]
    pub max_startup: Option<std::time::Duration>,
    /// Exit non-zero if relayed payload is above this share of peer
    /// payload (passes while nodes do not report `relayed`).
    #[arg(long)]
    pub max_relayed: Option<f64>,
}

fn as_ms<S: serde::Serializer>(d: &Option<std::time::Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_millis() as u64),
        None => s.serialize_none(),
    }
}

impl NatFloors {
    /// Every floor missed, in words; empty when the run passes.
    pub fn misses(
        &self,
        viewers: &[ViewerFigures],
        classes: &BTreeMap<&'static str, ClassFigures>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(min) = self.min_continuity {
            for v in viewers.iter().filter(|v| v.continuity < min) {
                out.push(format!(
                    "{} ({}) continuity {:.4} is below {min}",
                    v.name,
                    v.class.name(),
                    v.continuity
                ));
            }
        }
        if let Some(max) = self.max_startup {
            let max_ms = max.as_millis() as u64;
            for v in viewers
                .iter()
                .filter(|v| v.startup_ms.is_none_or(|s| s > max_ms))
            {
                out.push(format!(
                    "{} ({}) start-up {} is above {max_ms} ms",
                    v.name,
                    v.class.name(),
                    v.startup_ms
                        .map_or_else(|| "never came".into(), |s| format!("{s} ms"))
                ));
            }
        }
        if let (Some(min), Some(home)) = (self.min_home_offload, classes.get("home")) {
            if home.offload < min {
                out.push(format!(
                    "home viewers' offload {:.4} is below {min}",
                    home.offload
                ));
            }
        }
        if let (Some(max), Some(relayed)) =
            (self.max_relayed, classes.get("all").and_then(|c| c.relayed))
        {
            if relayed > max {
                out.push(format!(
                    "relayed payload {relayed:.4} of peer payload is above {max}"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::nat::{
        figures::{by_class, ViewerId},
        plan::Class,
        reading::Reading,
    };
    use shoal_mesh::proto::Stats;

    fn viewer(name: &str, class: Class, peers: u64, infra: u64, on_time: u64) -> ViewerFigures {
        let r = Reading {
            stats: Stats {
                payload_from_peers: peers,
                payload_from_infra: infra,
                pieces_due: 100,
                pieces_on_time: on_time,
                startup_ms: Some(1_000),
                ..Stats::default()
            },
            ..Reading::default()
        };
        let id = ViewerId {
            name: name.into(),
            class,
            ip: String::new(),
            public_ip: String::new(),
        };
        ViewerFigures::new(&id, Some(&r))
    }

    #[test]
    fn each_floor_names_what_missed_it() {
        let v = vec![
            viewer("pub1", Class::Public, 50, 50, 100),
            viewer("h1", Class::Cone, 20, 80, 100),
            viewer("h2", Class::Symmetric, 30, 70, 90),
        ];
        let classes = by_class(&v);
        let floors = NatFloors {
            min_continuity: Some(0.999),
            min_home_offload: Some(0.9),
            max_startup: Some(std::time::Duration::from_millis(1_500)),
            max_relayed: Some(0.05),
        };
        let misses = floors.misses(&v, &classes);
        assert_eq!(misses.len(), 2, "{misses:?}");
        assert!(misses[0].starts_with("h2 (symmetric) continuity 0.9000"));
        assert!(misses[1].starts_with("home viewers' offload 0.2500"));
        let strict = NatFloors {
            max_startup: Some(std::time::Duration::from_millis(999)),
            ..NatFloors::default()
        };
        assert_eq!(strict.misses(&v, &classes).len(), 3);
    }

    #[test]
    fn no_floors_no_misses() {
        let v = vec![viewer("h1", Class::Cone, 0, 100, 0)];
        assert!(NatFloors::default().misses(&v, &by_class(&v)).is_empty());
    }
}
