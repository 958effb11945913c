//! The NAT lab's figures as text: one line per viewer, one per class,
//! and the short progress line printed while the run goes.

use std::{collections::BTreeMap, fmt::Write};

use super::{
    figures::{ClassFigures, Connections, ViewerFigures},
    links::Punches,
};

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn opt_ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn links_cell(c: Option<Connections>) -> String {
    c.map_or_else(
        || "absent".into(),
        |c| format!("{}/{}/{}", c.direct, c.hole_punched, c.relayed),
    )
}

/// The per-viewer and per-class tables.
pub fn text(viewers: &[ViewerFigures], classes: &BTreeMap<&'static str, ClassFigures>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<6} {:<9} {:>7} {:>10} {:>11} {:>8} {:>5} {:>6} {:>14} {:>7} {:>8}",
        "viewer",
        "class",
        "offload",
        "continuity",
        "lag p50/p95",
        "startup",
        "nbrs",
        "fallbk",
        "dir/punch/rel",
        "relayed",
        "nat"
    );
    for v in viewers {
        let _ = writeln!(
            s,
            "{:<6} {:<9} {:>7} {:>10.4} {:>11} {:>8} {:>5} {:>6} {:>14} {:>7} {:>8}",
            v.name,
            v.class.name(),
            opt_ratio(v.offload),
            v.continuity,
            format!("{}/{}", opt(v.lag_ms.p50), opt(v.lag_ms.p95)),
            opt(v.startup_ms),
            v.neighbors,
            v.fallback_requests,
            links_cell(v.connections),
            opt_ratio(v.relayed),
            v.nat_status.as_deref().unwrap_or("absent"),
        );
    }
    let _ = writeln!(
        s,
        "\n{:<9} {:>7} {:>7} {:>15} {:>11} {:>13} {:>7} {:>9} {:>20} {:>7}",
        "class",
        "viewers",
        "offload",
        "continuity m/min",
        "lag p50/p95",
        "startup p50/max",
        "nbrs",
        "unstarted",
        "direct/punched/relayed",
        "relayed"
    );
    for (name, c) in classes {
        let shares = c.connection_shares.map_or_else(
            || "absent".into(),
            |s| format!("{:.2}/{:.2}/{:.2}", s.direct, s.hole_punched, s.relayed),
        );
        let _ = writeln!(
            s,
            "{:<9} {:>7} {:>7.3} {:>15} {:>11} {:>13} {:>7.1} {:>9} {:>20} {:>7}",
            name,
            c.viewers,
            c.offload,
            format!("{:.4}/{:.4}", c.continuity.mean, c.continuity.min),
            format!("{}/{}", opt(c.lag_ms.p50), opt(c.lag_ms.p95)),
            format!("{}/{}", c.startup_ms.p50, opt(c.startup_ms.max)),
            c.neighbors_mean,
            c.not_started,
            shares,
            opt_ratio(c.relayed),
        );
    }
    s
}

/// Neighbour links between classes, direct/hole-punched/relayed.
pub fn links(links: Option<&BTreeMap<String, Connections>>) -> String {
    let Some(links) = links else {
        return "links between classes: absent (nodes do not list their peers)".into();
    };
    let mut s = "links between classes (direct/hole-punched/relayed):".to_string();
    for (pair, c) in links {
        let _ = write!(s, "  {pair} {}", self::links_cell(Some(*c)));
    }
    s
}

/// Hole punches per class pair, punched/tried.
pub fn punches(punches: Option<&BTreeMap<String, Punches>>) -> String {
    let Some(punches) = punches else {
        return "hole punches: absent (nodes do not report them)".into();
    };
    let mut s = "hole punches (punched/tried):".to_string();
    for (pair, p) in punches {
        let _ = write!(s, "  {pair} {}/{}", p.punched, p.tried);
    }
    s
}

/// One line of progress: each class's offload, mean continuity and
/// neighbours so far.
pub fn progress(t_s: u64, classes: &BTreeMap<&'static str, ClassFigures>) -> String {
    let mut s = format!("{t_s:>4}s");
    for name in ["public", "cone", "symmetric"] {
        if let Some(c) = classes.get(name) {
            let _ = write!(
                s,
                " | {name} offload {:.2} continuity {:.3} nbrs {:.1}",
                c.offload, c.continuity.mean, c.neighbors_mean
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::nat::{
        figures::{by_class, ViewerId},
        plan::Class,
    };

    #[test]
    fn absent_nat_fields_read_absent_and_classes_are_listed() {
        let id = ViewerId {
            name: "h1".into(),
            class: Class::Cone,
            ip: String::new(),
            public_ip: String::new(),
        };
        let v = vec![ViewerFigures::new(&id, None)];
        let classes = by_class(&v);
        let t = text(&v, &classes);
        assert!(t.contains("absent"));
        assert!(t.lines().any(|l| l.starts_with("cone ")));
        assert!(t.lines().any(|l| l.starts_with("home ")));
        assert!(links(None).contains("absent"));
        assert!(punches(None).contains("absent"));
        let tried = BTreeMap::from([(
            "cone-cone".to_string(),
            Punches {
                tried: 4,
                punched: 3,
            },
        )]);
        assert!(punches(Some(&tried)).contains("cone-cone 3/4"));
        let p = progress(10, &classes);
        assert!(p.starts_with("  10s | cone offload 0.00"));
    }
}
