//! Neighbour links between classes of viewers (public–cone, cone–cone,
//! …), by how each is connected: what tells whether homes reach each
//! other directly, through a punched hole or only through a relay.
//!
//! A link is counted once per pair, from whichever end lists the other in
//! its `/stats` `peers`; the peer ids come from each node's `peer:` line.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{
    figures::Connections,
    plan::Class,
    reading::{Connection, Reading},
};

/// The node's peer id from its log (`shoal-node` prints `peer: <ID>`
/// first on stdout).
pub fn peer_id_in_log(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.strip_prefix("peer: "))
        .map(|id| id.trim().to_string())
}

/// `"cone-cone"`, `"public-symmetric"`: the two classes in `Class` order.
fn pair_name(a: Class, b: Class) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("{}-{}", lo.name(), hi.name())
}

/// Hole punches between viewers of a class pair: the pairs DCUtR tried,
/// from either end, and those it punched through, from either end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Punches {
    pub tried: u64,
    pub punched: u64,
}

/// Hole punches per class pair, from each viewer's `nat.punches`. `None`
/// when no viewer reports its punches.
pub fn punches_by_class_pair(
    viewers: &[(Class, Option<String>, Option<&Reading>)],
) -> Option<BTreeMap<String, Punches>> {
    let class_of = classes(viewers);
    let mut pairs: HashMap<(String, String), bool> = HashMap::new();
    let mut any = false;
    for (_, id, reading) in viewers {
        let (Some(id), Some(tries)) = (id, reading.and_then(|r| r.punches.as_ref())) else {
            continue;
        };
        any = true;
        for (peer, punched) in tries {
            if class_of.contains_key(peer.as_str()) {
                *pairs.entry(pair_key(id, peer)).or_default() |= *punched;
            }
        }
    }
    if !any {
        return None;
    }
    let mut out: BTreeMap<String, Punches> = BTreeMap::new();
    for ((a, b), punched) in pairs {
        let entry = out
            .entry(pair_name(class_of[a.as_str()], class_of[b.as_str()]))
            .or_default();
        entry.tried += 1;
        entry.punched += u64::from(punched);
    }
    Some(out)
}

/// Each viewer's class by peer id.
fn classes<'a>(
    viewers: &'a [(Class, Option<String>, Option<&Reading>)],
) -> HashMap<&'a str, Class> {
    viewers
        .iter()
        .filter_map(|(c, id, _)| Some((id.as_deref()?, *c)))
        .collect()
}

/// A pair of peer ids in one order, whichever end names it.
fn pair_key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// Links between viewers, per class pair. `viewers` holds each viewer's
/// class, peer id (if known) and latest reading. `None` when no viewer
/// lists its peers.
pub fn by_class_pair(
    viewers: &[(Class, Option<String>, Option<&Reading>)],
) -> Option<BTreeMap<String, Connections>> {
    let class_of = classes(viewers);
    let mut seen: HashMap<(String, String), Connection> = HashMap::new();
    let mut any = false;
    for (_, id, reading) in viewers {
        let (Some(id), Some(peers)) = (id, reading.and_then(|r| r.peers.as_ref())) else {
            continue;
        };
        any = true;
        for p in peers {
            let (Some(kind), true) = (p.connection, class_of.contains_key(p.peer_id.as_str()))
            else {
                continue;
            };
            seen.entry(pair_key(id, &p.peer_id)).or_insert(kind);
        }
    }
    if !any {
        return None;
    }
    let mut out: BTreeMap<String, Connections> = BTreeMap::new();
    for ((a, b), kind) in seen {
        let entry = out
            .entry(pair_name(class_of[a.as_str()], class_of[b.as_str()]))
            .or_default();
        match kind {
            Connection::Direct => entry.direct += 1,
            Connection::HolePunched => entry.hole_punched += 1,
            Connection::Relayed => entry.relayed += 1,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::nat::reading::PeerLink;

    fn reading(peers: &[(&str, Connection)]) -> Reading {
        Reading {
            peers: Some(
                peers
                    .iter()
                    .map(|(id, c)| PeerLink {
                        peer_id: id.to_string(),
                        addr: None,
                        connection: Some(*c),
                        rtt_ms: None,
                        bytes_sent: None,
                        bytes_received: None,
                    })
                    .collect(),
            ),
            ..Reading::default()
        }
    }

    #[test]
    fn each_pair_counts_once_under_its_classes() {
        let p1 = reading(&[("h1", Connection::Direct), ("seeder", Connection::Direct)]);
        let h1 = reading(&[("p1", Connection::Direct), ("h2", Connection::HolePunched)]);
        let h2 = reading(&[("h1", Connection::HolePunched), ("h3", Connection::Relayed)]);
        let h3 = reading(&[("h2", Connection::Relayed)]);
        let viewers = [
            (Class::Public, Some("p1".to_string()), Some(&p1)),
            (Class::Cone, Some("h1".to_string()), Some(&h1)),
            (Class::Cone, Some("h2".to_string()), Some(&h2)),
            (Class::Symmetric, Some("h3".to_string()), Some(&h3)),
        ];
        let links = by_class_pair(&viewers).unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!(links["public-cone"].direct, 1);
        assert_eq!(links["cone-cone"].hole_punched, 1);
        assert_eq!(links["cone-cone"].direct, 0);
        assert_eq!(links["cone-symmetric"].relayed, 1);
    }

    #[test]
    fn a_pair_tried_from_either_end_counts_once_and_punched_if_either_says_so() {
        let tries = |t: &[(&str, bool)]| Reading {
            punches: Some(t.iter().map(|(p, ok)| (p.to_string(), *ok)).collect()),
            ..Reading::default()
        };
        let h1 = tries(&[("h2", false), ("h3", false), ("stranger", true)]);
        let h2 = tries(&[("h1", true)]);
        let h3 = tries(&[("h1", false)]);
        let viewers = [
            (Class::Cone, Some("h1".to_string()), Some(&h1)),
            (Class::Cone, Some("h2".to_string()), Some(&h2)),
            (Class::Symmetric, Some("h3".to_string()), Some(&h3)),
        ];
        let punches = punches_by_class_pair(&viewers).unwrap();
        assert_eq!(
            punches["cone-cone"],
            Punches {
                tried: 1,
                punched: 1
            }
        );
        assert_eq!(
            punches["cone-symmetric"],
            Punches {
                tried: 1,
                punched: 0
            }
        );
        assert_eq!(punches.len(), 2);
        let silent = Reading::default();
        assert_eq!(
            punches_by_class_pair(&[(Class::Cone, Some("a".into()), Some(&silent))]),
            None
        );
    }

    #[test]
    fn absent_without_peer_lists() {
        let r = Reading::default();
        assert_eq!(
            by_class_pair(&[(Class::Cone, Some("a".into()), Some(&r))]),
            None
        );
    }

    #[test]
    fn peer_id_is_the_first_peer_line() {
        let log = "peer: 12D3KooWabc\nhls: http://x\n";
        assert_eq!(peer_id_in_log(log).as_deref(), Some("12D3KooWabc"));
        assert_eq!(peer_id_in_log("error\n"), None);
    }
}
