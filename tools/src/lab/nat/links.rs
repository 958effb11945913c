//! Neighbour links between classes of viewers (public–cone, cone–cone,
//! …), by how each is connected: what tells whether homes reach each
//! other directly, through a punched hole or only through a relay.
//!
//! A link is counted once per pair, from whichever end lists the other in
//! its `/stats` `peers`; the peer ids come from each node's `peer:` line.

use std::collections::{BTreeMap, HashMap};

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

/// Links between viewers, per class pair. `viewers` holds each viewer's
/// class, peer id (if known) and latest reading. `None` when no viewer
/// lists its peers.
pub fn by_class_pair(
    viewers: &[(Class, Option<String>, Option<&Reading>)],
) -> Option<BTreeMap<String, Connections>> {
    let class_of: HashMap<&str, Class> = viewers
        .iter()
        .filter_map(|(c, id, _)| Some((id.as_deref()?, *c)))
        .collect();
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
            let key = if *id <= p.peer_id {
                (id.clone(), p.peer_id.clone())
            } else {
                (p.peer_id.clone(), id.clone())
            };
            seen.entry(key).or_insert(kind);
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
