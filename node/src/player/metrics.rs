//! `/metrics`: the node's measures in the OpenMetrics text format.
//!
//! The engine hands over a [`Stats`] snapshot about once a second, with
//! cumulative counters. Rather than mirror it into live metric objects (and
//! track deltas, which break when an engine restarts), each scrape encodes the
//! latest snapshot through a [`Collector`].

use prometheus_client::{
    collector::Collector,
    encoding::{text, DescriptorEncoder, EncodeGaugeValue, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use shoal_mesh::proto::Stats;

/// `Content-Type` of [`encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Player-side gauges reported next to the engine's stats.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PlayerGauges {
    pub(crate) segments_complete: usize,
    pub(crate) newest_segment: Option<u64>,
    pub(crate) live_clients: usize,
}

#[derive(Debug)]
struct Snapshot {
    stats: Stats,
    player: PlayerGauges,
}

/// The OpenMetrics exposition of `stats` and `player`.
pub(crate) fn encode(stats: Stats, player: PlayerGauges) -> Result<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot { stats, player }));
    let mut out = String::new();
    text::encode(&mut out, &registry)?;
    Ok(out)
}

type Result<T = ()> = std::result::Result<T, std::fmt::Error>;

/// A gauge family of `(label value, value)` samples; unknown values (`None`)
/// are left out, so the family is present but empty until measured.
fn gauges<V: EncodeGaugeValue + Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: &[(&str, Option<V>)],
) -> Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, v) in samples {
        if let Some(v) = v {
            let labels = [(label, *value)];
            ConstGauge::new(*v).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: Option<V>,
) -> Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    match v {
        Some(v) => ConstGauge::new(v).encode(m),
        None => Ok(()),
    }
}

/// A counter; the text encoder appends `_total` to `name`.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result {
        let (s, p, e) = (&self.stats, &self.player, &mut enc);
        let ratios = [
            (
                "shoal_offload",
                "Share of payload received from viewers rather than infrastructure.",
                s.offload(),
            ),
            (
                "shoal_continuity",
                "Share of due pieces held by their playback deadline.",
                s.continuity(),
            ),
            (
                "shoal_overhead",
                "Non-payload bytes sent per payload byte sent.",
                s.overhead(),
            ),
            (
                "shoal_duplicate",
                "Share of received payload that was a duplicate.",
                s.duplicate(),
            ),
            (
                "shoal_neighbor_rtt_ms",
                "Mean of the neighbours' median RTTs, in ms.",
                Some(s.neighbor_rtt_ms),
            ),
        ];
        for (name, help, v) in ratios {
            gauge(e, name, help, v)?;
        }
        let lag = |q: f64| s.lag_ms.quantile(q);
        let lag_max = (s.lag_ms.count() > 0).then(|| s.lag_ms.max());
        gauges(
            e,
            "shoal_lag_ms",
            "Piece complete here minus produced-at, in ms (max as quantile 1).",
            "quantile",
            &[("0.5", lag(0.5)), ("0.95", lag(0.95)), ("1", lag_max)],
        )?;
        let levels = [
            (
                "shoal_startup_ms",
                "Join to first playable segment, in ms.",
                s.startup_ms,
            ),
            (
                "shoal_neighbors",
                "Active neighbours.",
                Some(u64::from(s.neighbors)),
            ),
            ("shoal_newest_seq", "Newest piece held.", s.newest_seq),
            (
                "shoal_segments_complete",
                "Complete segments in the player's window.",
                Some(p.segments_complete as u64),
            ),
            (
                "shoal_newest_segment",
                "Newest segment number seen.",
                p.newest_segment,
            ),
            (
                "shoal_live_clients",
                "Open live.ts streams.",
                Some(p.live_clients as u64),
            ),
        ];
        for (name, help, v) in levels {
            gauge(e, name, help, v)?;
        }
        let mut m = e.encode_descriptor(
            "shoal_payload_bytes",
            "Piece payload bytes received, by source.",
            None,
            MetricType::Counter,
        )?;
        for (source, v) in [
            ("peer", s.payload_from_peers),
            ("infra", s.payload_from_infra),
            ("duplicate", s.payload_duplicate),
        ] {
            ConstCounter::new(v).encode(m.encode_family(&[("source", source)])?)?;
        }
        let counters = [
            (
                "shoal_payload_sent_bytes",
                "Piece payload bytes sent to other nodes.",
                s.payload_sent,
            ),
            (
                "shoal_overhead_sent_bytes",
                "Non-payload bytes sent on the mesh.",
                s.overhead_sent,
            ),
            (
                "shoal_pieces_due",
                "Pieces whose playback deadline has passed, after start-up.",
                s.pieces_due,
            ),
            (
                "shoal_pieces_on_time",
                "Due pieces held by their deadline.",
                s.pieces_on_time,
            ),
            (
                "shoal_fallback_requests",
                "Pieces asked of infrastructure.",
                s.fallback_requests,
            ),
            (
                "shoal_bad_pieces",
                "Pieces dropped for a bad signature, hash, length or stream.",
                s.bad_pieces,
            ),
            (
                "shoal_protocol_violations",
                "Peers disconnected for breaking the protocol.",
                s.protocol_violations,
            ),
        ];
        for (name, help, v) in counters {
            counter(e, name, help, v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_stats_and_skips_unknowns() {
        let mut stats = Stats {
            payload_from_peers: 300,
            payload_from_infra: 100,
            neighbors: 5,
            ..Stats::default()
        };
        stats.lag_ms.record(120);
        let text = encode(
            stats,
            PlayerGauges {
                segments_complete: 4,
                newest_segment: Some(41),
                live_clients: 1,
            },
        )
        .unwrap();
        for line in [
            "# TYPE shoal_offload gauge\n",
            "shoal_offload 0.75\n",
            "shoal_lag_ms{quantile=\"0.5\"} 120\n",
            "shoal_payload_bytes_total{source=\"peer\"} 300\n",
            "shoal_payload_bytes_total{source=\"infra\"} 100\n",
            "shoal_neighbors 5\n",
            "shoal_bad_pieces_total 0\n",
            "shoal_newest_segment 41\n",
            "# EOF\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // No due pieces yet: continuity is unknown, not 0.
        assert!(text.contains("# TYPE shoal_continuity gauge\n"));
        assert!(!text.contains("\nshoal_continuity "), "{text}");
    }
}
