//! Counters behind every measure in DESIGN.md, kept by each engine.
//!
//! Counters are cumulative; the measures (offload, continuity, …) are ratios
//! derived from them, so several engines' stats can be summed before the
//! ratio is taken (see [`Stats::merge`]).

use serde::{Deserialize, Serialize};

/// Histogram of milliseconds with bounded memory (240 buckets): 10 ms
/// resolution below 1 s, 100 ms below 10 s, 1 s up to 60 s, then one overflow
/// bucket. Quantiles report a bucket's upper bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsHistogram {
    buckets: Vec<u32>,
    count: u64,
    max: u64,
}

const FINE: u64 = 100; // 0..1000 ms by 10
const MID: u64 = 90; // 1000..10000 ms by 100
const COARSE: u64 = 50; // 10000..60000 ms by 1000
const BUCKETS: usize = (FINE + MID + COARSE + 1) as usize;

impl Default for MsHistogram {
    fn default() -> Self {
        MsHistogram {
            buckets: vec![0; BUCKETS],
            count: 0,
            max: 0,
        }
    }
}

impl MsHistogram {
    fn bucket(ms: u64) -> usize {
        let b = if ms < 1_000 {
            ms / 10
        } else if ms < 10_000 {
            FINE + (ms - 1_000) / 100
        } else if ms < 60_000 {
            FINE + MID + (ms - 10_000) / 1_000
        } else {
            FINE + MID + COARSE
        };
        b as usize
    }

    fn upper_bound(bucket: usize) -> u64 {
        let b = bucket as u64;
        if b < FINE {
            (b + 1) * 10
        } else if b < FINE + MID {
            1_000 + (b - FINE + 1) * 100
        } else if b < FINE + MID + COARSE {
            10_000 + (b - FINE - MID + 1) * 1_000
        } else {
            u64::MAX
        }
    }

    pub fn record(&mut self, ms: u64) {
        self.buckets[Self::bucket(ms)] += 1;
        self.count += 1;
        self.max = self.max.max(ms);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `q`-quantile (0.0..=1.0), or `None` when empty. Never above `max`.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(Self::upper_bound(i).min(self.max));
            }
        }
        Some(self.max)
    }

    pub fn merge(&mut self, other: &MsHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }
}

/// One engine's counters. Payload means piece data bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Payload received from viewers (first copies only).
    pub payload_from_peers: u64,
    /// Payload received from seeders/reflectors, over the mesh or HTTP.
    pub payload_from_infra: u64,
    /// Payload received for pieces already held.
    pub payload_duplicate: u64,
    /// Of the payload received, what came over relayed connections (set by
    /// the driver; the engine cannot tell).
    #[serde(default)]
    pub relayed: u64,
    /// Payload sent to other nodes.
    pub payload_sent: u64,
    /// Everything else sent on the mesh: frame headers, piece headers and
    /// signatures, buffer maps, haves, requests, pings.
    pub overhead_sent: u64,
    /// Pieces whose playback deadline has passed, after start-up.
    pub pieces_due: u64,
    /// Of those, pieces held by their deadline.
    pub pieces_on_time: u64,
    /// Join to first playable (complete) segment.
    pub startup_ms: Option<u64>,
    /// Piece complete here − produced-at.
    pub lag_ms: MsHistogram,
    /// Pieces asked of infrastructure because no neighbour delivered in time.
    pub fallback_requests: u64,
    /// Pieces dropped for a bad signature, hash, length or stream.
    pub bad_pieces: u64,
    /// Peers disconnected for breaking the protocol.
    pub protocol_violations: u64,
    /// Active neighbours now.
    pub neighbors: u32,
    /// Mean of the neighbours' median RTTs now, in ms.
    pub neighbor_rtt_ms: f64,
    /// Newest piece held.
    pub newest_seq: Option<u64>,
    /// The node's network coordinate now.
    #[serde(default)]
    pub coord: Option<super::coords::Coord>,
    /// Neighbours replaced by the periodic optimisation.
    #[serde(default)]
    pub neighbor_swaps: u64,
    /// Times infrastructure was asked where the live edge is, for want of
    /// peers that tell (`Output::FetchEdge`).
    #[serde(default)]
    pub edge_queries: u64,
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl Stats {
    /// Counts a piece's payload on receipt, by the definitions of DESIGN.md:
    /// a duplicate if already held, else first-copy payload from viewers or
    /// infrastructure, with its lag. Returns whether it was a first copy.
    pub fn count_receipt(
        &mut self,
        bytes: u64,
        already_held: bool,
        from_infra: bool,
        lag_ms: u64,
    ) -> bool {
        if already_held {
            self.payload_duplicate += bytes;
            return false;
        }
        if from_infra {
            self.payload_from_infra += bytes;
        } else {
            self.payload_from_peers += bytes;
        }
        self.lag_ms.record(lag_ms);
        true
    }

    pub fn payload_received(&self) -> u64 {
        self.payload_from_peers + self.payload_from_infra
    }

    /// Share of payload received from viewers rather than infrastructure.
    pub fn offload(&self) -> Option<f64> {
        ratio(self.payload_from_peers, self.payload_received())
    }

    /// Share of due pieces held by their playback deadline.
    pub fn continuity(&self) -> Option<f64> {
        ratio(self.pieces_on_time, self.pieces_due)
    }

    /// Non-payload bytes sent per payload byte sent.
    pub fn overhead(&self) -> Option<f64> {
        ratio(self.overhead_sent, self.payload_sent)
    }

    /// Share of received payload that was a duplicate.
    pub fn duplicate(&self) -> Option<f64> {
        ratio(
            self.payload_duplicate,
            self.payload_received() + self.payload_duplicate,
        )
    }

    /// Adds another engine's counters (gauges are summed too; divide by the
    /// count of engines where a mean is wanted). The pattern names every
    /// field, so a counter added to `Stats` and forgotten here does not
    /// compile.
    pub fn merge(&mut self, o: &Stats) {
        let Stats {
            payload_from_peers,
            payload_from_infra,
            payload_duplicate,
            relayed,
            payload_sent,
            overhead_sent,
            pieces_due,
            pieces_on_time,
            startup_ms,
            lag_ms,
            fallback_requests,
            bad_pieces,
            protocol_violations,
            neighbors,
            neighbor_rtt_ms,
            newest_seq,
            coord: _, // a position, meaningless summed
            neighbor_swaps,
            edge_queries,
        } = o;
        self.payload_from_peers += payload_from_peers;
        self.payload_from_infra += payload_from_infra;
        self.payload_duplicate += payload_duplicate;
        self.relayed += relayed;
        self.payload_sent += payload_sent;
        self.overhead_sent += overhead_sent;
        self.pieces_due += pieces_due;
        self.pieces_on_time += pieces_on_time;
        // The slowest start-up of those merged.
        self.startup_ms = self.startup_ms.max(*startup_ms);
        self.lag_ms.merge(lag_ms);
        self.fallback_requests += fallback_requests;
        self.bad_pieces += bad_pieces;
        self.protocol_violations += protocol_violations;
        self.neighbors += neighbors;
        self.neighbor_rtt_ms += neighbor_rtt_ms;
        self.newest_seq = self.newest_seq.max(*newest_seq);
        self.neighbor_swaps += neighbor_swaps;
        self.edge_queries += edge_queries;
    }

    /// The measures as JSON, with the names DESIGN.md fixes.
    pub fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "offload": self.offload(),
            "continuity": self.continuity(),
            "lag_ms": {
                "p50": self.lag_ms.quantile(0.5),
                "p95": self.lag_ms.quantile(0.95),
                "max": (self.lag_ms.count() > 0).then(|| self.lag_ms.max()),
            },
            "startup_ms": self.startup_ms,
            "overhead": self.overhead(),
            "duplicate": self.duplicate(),
            "relayed": self.relayed,
            "neighbors": self.neighbors,
            "neighbor_rtt_ms": self.neighbor_rtt_ms,
            "counters": {
                "payload_from_peers": self.payload_from_peers,
                "payload_from_infra": self.payload_from_infra,
                "payload_duplicate": self.payload_duplicate,
                "payload_sent": self.payload_sent,
                "overhead_sent": self.overhead_sent,
                "pieces_due": self.pieces_due,
                "pieces_on_time": self.pieces_on_time,
                "fallback_requests": self.fallback_requests,
                "edge_queries": self.edge_queries,
                "bad_pieces": self.bad_pieces,
                "protocol_violations": self.protocol_violations,
                "newest_seq": self.newest_seq,
            },
        })
    }
}

/// Whole-run measures over many viewers, as the lab and the simulator
/// report them (names fixed by DESIGN.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub nodes: usize,
    pub offload: f64,
    pub continuity: MeanMin,
    pub lag_ms: LagSummary,
    pub startup_ms: StartupSummary,
    pub overhead: f64,
    pub duplicate: f64,
    pub seeder_egress: f64,
    /// Viewers that never completed a first segment.
    pub not_started: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanMin {
    pub mean: f64,
    pub min: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LagSummary {
    pub p50: u64,
    pub p95: u64,
    pub max: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StartupSummary {
    pub p50: u64,
    pub p95: u64,
}

impl Summary {
    /// `viewers`: each viewer's stats; `infra`: each seeder/reflector's;
    /// `infra_http_payload`: payload infrastructure served over HTTP.
    /// A viewer that never started counts with continuity 0.
    pub fn new(viewers: &[Stats], infra: &[Stats], infra_http_payload: u64) -> Summary {
        let mut all = Stats::default();
        for v in viewers {
            all.merge(v);
        }
        let continuities: Vec<f64> = viewers
            .iter()
            .map(|v| {
                if v.startup_ms.is_some() {
                    v.continuity().unwrap_or(1.0)
                } else {
                    0.0
                }
            })
            .collect();
        let mut startup = MsHistogram::default();
        for v in viewers.iter().filter_map(|v| v.startup_ms) {
            startup.record(v);
        }
        let infra_payload: u64 =
            infra.iter().map(|s| s.payload_sent).sum::<u64>() + infra_http_payload;
        let sent_payload = all.payload_sent + infra.iter().map(|s| s.payload_sent).sum::<u64>();
        let sent_overhead = all.overhead_sent + infra.iter().map(|s| s.overhead_sent).sum::<u64>();
        let n = continuities.len().max(1) as f64;
        Summary {
            nodes: viewers.len(),
            offload: all.offload().unwrap_or(0.0),
            continuity: MeanMin {
                mean: continuities.iter().sum::<f64>() / n,
                min: continuities
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min)
                    .min(1.0),
            },
            lag_ms: LagSummary {
                p50: all.lag_ms.quantile(0.5).unwrap_or(0),
                p95: all.lag_ms.quantile(0.95).unwrap_or(0),
                max: all.lag_ms.max(),
            },
            startup_ms: StartupSummary {
                p50: startup.quantile(0.5).unwrap_or(0),
                p95: startup.quantile(0.95).unwrap_or(0),
            },
            overhead: ratio(sent_overhead, sent_payload).unwrap_or(0.0),
            duplicate: all.duplicate().unwrap_or(0.0),
            seeder_egress: ratio(infra_payload, all.payload_received()).unwrap_or(0.0),
            not_started: viewers.iter().filter(|v| v.startup_ms.is_none()).count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_buckets() {
        let mut h = MsHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in [5, 15, 25, 1_234, 70_000] {
            h.record(ms);
        }
        assert_eq!(h.quantile(0.2), Some(10));
        assert_eq!(h.quantile(0.6), Some(30));
        assert_eq!(h.quantile(0.8), Some(1_300));
        assert_eq!(h.quantile(1.0), Some(70_000));
        assert_eq!(h.max(), 70_000);
    }

    #[test]
    fn ratios_and_merge() {
        let mut a = Stats {
            payload_from_peers: 90,
            payload_from_infra: 10,
            pieces_due: 10,
            pieces_on_time: 10,
            ..Stats::default()
        };
        assert_eq!(a.offload(), Some(0.9));
        let b = Stats {
            payload_from_infra: 100,
            pieces_due: 10,
            pieces_on_time: 5,
            ..Stats::default()
        };
        a.merge(&b);
        assert_eq!(a.offload(), Some(0.45));
        assert_eq!(a.continuity(), Some(0.75));
        assert_eq!(Stats::default().offload(), None);
    }

    /// Every counter of one engine, each a different non-zero value.
    fn every_counter_set() -> Stats {
        let mut lag_ms = MsHistogram::default();
        lag_ms.record(120);
        Stats {
            payload_from_peers: 1,
            payload_from_infra: 2,
            payload_duplicate: 3,
            payload_sent: 4,
            overhead_sent: 5,
            pieces_due: 6,
            pieces_on_time: 7,
            startup_ms: Some(8),
            lag_ms,
            fallback_requests: 9,
            bad_pieces: 10,
            protocol_violations: 11,
            neighbors: 12,
            neighbor_rtt_ms: 13.0,
            newest_seq: Some(14),
            coord: None,
            neighbor_swaps: 15,
            relayed: 16,
            edge_queries: 17,
        }
    }

    #[test]
    fn merging_into_nothing_keeps_every_counter() {
        let one = every_counter_set();
        let mut all = Stats::default();
        all.merge(&one);
        assert_eq!(all, one);
        all.merge(&one);
        assert_eq!(all.neighbor_swaps, 30);
        assert_eq!(all.protocol_violations, 22);
        assert_eq!(all.lag_ms.count(), 2);
    }
}
