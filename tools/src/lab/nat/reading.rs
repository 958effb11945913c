//! One node's `/stats` as the NAT lab reads it.
//!
//! The counters behind offload and continuity are there today. The NAT
//! fields (`nat`, `peers`, `relayed`) arrive with issue 18's traversal
//! work: each is read when present and kept as `None` otherwise, so the
//! report says "absent" rather than a made-up zero.

use serde::Serialize;
use serde_json::Value;
use shoal_mesh::proto::Stats;

/// How a neighbour is connected, as `/stats` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connection {
    Direct,
    HolePunched,
    Relayed,
}

impl Connection {
    fn parse(s: &str) -> Option<Connection> {
        match s {
            "direct" => Some(Connection::Direct),
            "hole-punched" => Some(Connection::HolePunched),
            "relayed" => Some(Connection::Relayed),
            _ => None,
        }
    }
}

/// One entry of `/stats`' `peers`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerLink {
    pub peer_id: String,
    pub addr: Option<String>,
    /// `None` when the node names a kind this lab does not know.
    pub connection: Option<Connection>,
    pub rtt_ms: Option<f64>,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
}

/// What one `/stats` answer says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// The engine's counters the measures are computed from.
    pub stats: Stats,
    /// `lag_ms` quantiles as the node reports them (its histogram is not
    /// served whole).
    pub lag_p50: Option<u64>,
    pub lag_p95: Option<u64>,
    pub lag_max: Option<u64>,
    /// `nat.status`: "public", "private" or "unknown".
    pub nat_status: Option<String>,
    /// `nat.punches`: peers DCUtR tried, and whether it punched through.
    pub punches: Option<Vec<(String, bool)>>,
    pub peers: Option<Vec<PeerLink>>,
    /// Payload bytes that came over relayed connections (also counted in
    /// `payload_from_peers`).
    pub relayed: Option<u64>,
}

/// `/stats` was not the JSON object a node serves.
#[derive(Debug, thiserror::Error)]
pub enum ReadingError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no `counters` object")]
    NoCounters,
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn opt_u64(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

impl Reading {
    pub fn parse(body: &str) -> Result<Reading, ReadingError> {
        let v: Value = serde_json::from_str(body)?;
        let c = v.get("counters").ok_or(ReadingError::NoCounters)?;
        let stats = Stats {
            payload_from_peers: u64_at(c, "payload_from_peers"),
            payload_from_infra: u64_at(c, "payload_from_infra"),
            payload_duplicate: u64_at(c, "payload_duplicate"),
            payload_sent: u64_at(c, "payload_sent"),
            overhead_sent: u64_at(c, "overhead_sent"),
            pieces_due: u64_at(c, "pieces_due"),
            pieces_on_time: u64_at(c, "pieces_on_time"),
            fallback_requests: u64_at(c, "fallback_requests"),
            newest_seq: opt_u64(c, "newest_seq"),
            startup_ms: opt_u64(&v, "startup_ms"),
            neighbors: u64_at(&v, "neighbors") as u32,
            neighbor_rtt_ms: v
                .get("neighbor_rtt_ms")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            ..Stats::default()
        };
        let lag = v.get("lag_ms").cloned().unwrap_or(Value::Null);
        let peers = v.get("peers").and_then(Value::as_array).map(|peers| {
            peers
                .iter()
                .map(|p| PeerLink {
                    peer_id: p
                        .get("peer_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    addr: p.get("addr").and_then(Value::as_str).map(String::from),
                    connection: p
                        .get("connection")
                        .and_then(Value::as_str)
                        .and_then(Connection::parse),
                    rtt_ms: p.get("rtt_ms").and_then(Value::as_f64),
                    bytes_sent: opt_u64(p, "bytes_sent"),
                    bytes_received: opt_u64(p, "bytes_received"),
                })
                .collect()
        });
        Ok(Reading {
            stats,
            lag_p50: opt_u64(&lag, "p50"),
            lag_p95: opt_u64(&lag, "p95"),
            lag_max: opt_u64(&lag, "max"),
            nat_status: v
                .get("nat")
                .and_then(|n| n.get("status"))
                .and_then(Value::as_str)
                .map(String::from),
            punches: v
                .get("nat")
                .and_then(|n| n.get("punches"))
                .and_then(Value::as_array)
                .map(|tries| {
                    tries
                        .iter()
                        .filter_map(|t| {
                            let peer = t.get("peer_id")?.as_str()?.to_string();
                            Some((peer, t.get("punched")?.as_bool()?))
                        })
                        .collect()
                }),
            peers,
            relayed: opt_u64(&v, "relayed"),
        })
    }

    /// Neighbours by how they are connected: direct, hole-punched,
    /// relayed; `None` while the node does not list its peers.
    pub fn connections(&self) -> Option<[u64; 3]> {
        let peers = self.peers.as_ref()?;
        let mut n = [0; 3];
        for p in peers {
            match p.connection {
                Some(Connection::Direct) => n[0] += 1,
                Some(Connection::HolePunched) => n[1] += 1,
                Some(Connection::Relayed) => n[2] += 1,
                None => {}
            }
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a node serves today (mesh/src/proto/stats.rs `report()` plus
    /// the player's `stream` and `segments`).
    const TODAY: &str = r#"{
        "offload": 0.25, "continuity": 1.0,
        "lag_ms": {"p50": 300, "p95": 900, "max": 1200},
        "startup_ms": 2100, "overhead": 0.05, "duplicate": 0.0,
        "neighbors": 2, "neighbor_rtt_ms": 0.4,
        "counters": {"payload_from_peers": 250, "payload_from_infra": 750,
            "payload_duplicate": 0, "payload_sent": 10, "overhead_sent": 1,
            "pieces_due": 40, "pieces_on_time": 39, "fallback_requests": 30,
            "bad_pieces": 0, "protocol_violations": 0, "newest_seq": 77},
        "stream": "ab", "segments": {"first": 1, "last": 9, "complete": 9}
    }"#;

    #[test]
    fn todays_stats_give_the_measures_and_no_nat_fields() {
        let r = Reading::parse(TODAY).unwrap();
        assert_eq!(r.stats.offload(), Some(0.25));
        assert_eq!(r.stats.continuity(), Some(39.0 / 40.0));
        assert_eq!(r.stats.startup_ms, Some(2100));
        assert_eq!(r.stats.neighbors, 2);
        assert_eq!(
            (r.lag_p50, r.lag_p95, r.lag_max),
            (Some(300), Some(900), Some(1200))
        );
        assert_eq!(r.nat_status, None);
        assert_eq!(r.punches, None);
        assert_eq!(r.peers, None);
        assert_eq!(r.relayed, None);
        assert_eq!(r.connections(), None);
    }

    #[test]
    fn nat_fields_are_read_when_present() {
        let mut v: Value = serde_json::from_str(TODAY).unwrap();
        v["nat"] = serde_json::json!({"status": "private",
            "punches": [{"peer_id": "a", "punched": true}, {"peer_id": "b"}]});
        v["relayed"] = 40.into();
        v["peers"] = serde_json::json!([
            {"peer_id": "a", "addr": "/ip4/11.0.0.11/tcp/4001", "connection": "direct",
             "rtt_ms": 1.5, "bytes_sent": 10, "bytes_received": 20},
            {"peer_id": "b", "connection": "hole-punched"},
            {"peer_id": "c", "connection": "relayed"},
            {"peer_id": "d", "connection": "relayed"},
            {"peer_id": "e", "connection": "carrier-pigeon"}
        ]);
        let r = Reading::parse(&v.to_string()).unwrap();
        assert_eq!(r.nat_status.as_deref(), Some("private"));
        assert_eq!(r.relayed, Some(40));
        assert_eq!(r.connections(), Some([1, 1, 2]));
        let a = &r.peers.as_ref().unwrap()[0];
        assert_eq!(a.rtt_ms, Some(1.5));
        assert_eq!(a.bytes_received, Some(20));
        assert_eq!(r.peers.as_ref().unwrap()[4].connection, None);
        assert_eq!(r.punches, Some(vec![("a".to_string(), true)]));
    }

    #[test]
    fn a_node_that_never_started_reads_as_not_started() {
        let body = r#"{"startup_ms": null, "neighbors": 0, "lag_ms": {"p50": null},
            "counters": {"payload_from_peers": 0, "payload_from_infra": 0}}"#;
        let r = Reading::parse(body).unwrap();
        assert_eq!(r.stats.startup_ms, None);
        assert_eq!(r.stats.offload(), None);
        assert_eq!(r.lag_p50, None);
    }

    #[test]
    fn other_answers_are_errors() {
        assert!(Reading::parse("<html>").is_err());
        assert!(matches!(
            Reading::parse("{}"),
            Err(ReadingError::NoCounters)
        ));
    }
}
