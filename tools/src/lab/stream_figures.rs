//! Per-stream figures of a run: each stream's viewers measured apart
//! ([`StreamResult`]), and the goodput of the whole mix.

use shoal_mesh::proto::{Stats, Summary};

use super::{
    layout::Layout,
    reflectors::LabReflectors,
    result::{NodeResult, StreamResult},
    scenario::Scenario,
    system::Infra,
};

/// Each stream's figures, in the mix's order. `results` are every viewer's
/// (departed ones included), `budgets` each stream's last budget from the
/// coordinator. What the run's reflectors sent for a stream is its
/// infrastructure egress as much as its seeder's.
pub(crate) fn stream_results(
    sc: &Scenario,
    results: &[NodeResult],
    infra: &[Infra],
    budgets: &[Option<u64>],
    reflectors: Option<&LabReflectors>,
) -> Vec<StreamResult> {
    let layout = Layout::of(sc);
    (0..layout.streams())
        .map(|s| {
            let viewers: Vec<Stats> = (results.iter())
                .filter(|r| r.stream == s)
                .map(|r| r.stats.clone())
                .collect();
            let (mut infra_stats, http) =
                infra.get(s).map_or_else(Default::default, |i| i.egress());
            let mesh: u64 = infra_stats.iter().map(|i| i.payload_sent).sum();
            let mut infra_http = http;
            if let (Some(r), Some(i)) = (reflectors, infra.get(s)) {
                let reflected = r.stream_egress(i.stream());
                infra_stats.extend(reflected.mesh);
                infra_http += reflected.http;
            }
            let summary = Summary::new(&viewers, &infra_stats, infra_http);
            let bps = |bytes: u64| bytes as f64 * 8.0 / sc.duration_s.max(1e-9);
            let from_infra: u64 = viewers.iter().map(|v| v.payload_from_infra).sum();
            let n = layout.viewers_of(s);
            StreamResult {
                index: s,
                stream: infra
                    .get(s)
                    .map(|i| i.stream().to_string())
                    .unwrap_or_default(),
                viewers: n,
                bitrate_bps: sc.bitrate_bps,
                summary,
                infra_bps_per_viewer: from_infra as f64 * 8.0
                    / n.max(1) as f64
                    / sc.duration_s.max(1e-9),
                budget_bps: budgets.get(s).copied().flatten(),
                seeder_mesh_bps: bps(mesh),
                seeder_http_bps: bps(http),
                reflection: None,
            }
        })
        .collect()
}

/// Σ over streams of viewers × bitrate × mean continuity, bit/s.
pub(crate) fn continuity_goodput_bps(streams: &[StreamResult]) -> f64 {
    streams
        .iter()
        .map(|s| s.viewers as f64 * s.bitrate_bps as f64 * s.summary.continuity.mean)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(stream: usize, from_infra: u64, on_time: u64) -> NodeResult {
        NodeResult {
            index: 0,
            stream,
            peer_id: String::new(),
            region: None,
            upload_cap_bps: None,
            joined_at_s: 0.0,
            left_at_s: None,
            stats: Stats {
                payload_from_infra: from_infra,
                pieces_due: 100,
                pieces_on_time: on_time,
                startup_ms: Some(500),
                ..Stats::default()
            },
            neighbor_rtt_ms: None,
            best_rtt_ms: None,
        }
    }

    #[test]
    fn each_stream_is_measured_over_its_own_viewers() {
        let sc = Scenario {
            nodes: 3,
            duration_s: 10.0,
            bitrate_bps: 1_000_000,
            streams: Some("2,1".parse().unwrap()),
            ..Scenario::default()
        };
        let results = [
            viewer(0, 1_000_000, 100),
            viewer(0, 0, 100),
            viewer(1, 500_000, 50),
        ];
        let streams = stream_results(&sc, &results, &[], &[Some(7), None], None);
        assert_eq!(streams.len(), 2);
        assert_eq!((streams[0].viewers, streams[1].viewers), (2, 1));
        assert_eq!(streams[0].summary.nodes + streams[1].summary.nodes, 3);
        // 1 MB over 2 viewers and 10 s; 0.5 MB over 1 viewer.
        assert_eq!(streams[0].infra_bps_per_viewer, 400_000.0);
        assert_eq!(streams[1].infra_bps_per_viewer, 400_000.0);
        assert_eq!(
            (streams[0].budget_bps, streams[1].budget_bps),
            (Some(7), None)
        );
        assert_eq!(streams[1].summary.continuity.mean, 0.5);
        // 2 viewers × 1 Mbps × 1.0 + 1 × 1 Mbps × 0.5.
        assert_eq!(continuity_goodput_bps(&streams), 2_500_000.0);
    }
}
