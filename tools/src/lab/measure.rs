//! What a lab run measures of its viewers: a [`Sample`] of every second,
//! and each viewer's [`NodeResult`] at the end, with the neighbours it
//! chose judged against the best it could have had.

use std::collections::HashMap;

use libp2p::PeerId;
use shoal_mesh::proto::Stats;

use super::{
    layout::Layout,
    population::{upload_caps, Book, NodeSnap},
    reflectors::LabReflectors,
    result::{NodeResult, Sample},
    scenario::Scenario,
    system::Infra,
    topology::Topology,
};

/// Each viewer's result (those that left, then those present at the end
/// with their neighbours judged) and Σ chosen / Σ best neighbour RTT.
pub(crate) fn node_results(
    sc: &Scenario,
    topo: &Topology,
    book: &Book,
    present: Vec<NodeSnap>,
    departed: Vec<NodeSnap>,
) -> (Vec<NodeResult>, Option<f64>) {
    let caps = upload_caps(sc);
    let layout = Layout::of(sc);
    let mut results: Vec<NodeResult> = departed
        .into_iter()
        .map(|n| node_result(n, &caps, topo, &layout))
        .collect();
    let book = book.read().expect("lock");
    let ratio = judge_neighbors(present, &book, topo, &caps, &layout, &mut results);
    (results, ratio)
}

fn node_result(n: NodeSnap, caps: &[Option<u64>], topo: &Topology, layout: &Layout) -> NodeResult {
    NodeResult {
        index: n.slot,
        stream: layout.stream_of(n.slot),
        peer_id: n.peer_id,
        region: topo.region(n.slot).map(str::to_string),
        upload_cap_bps: caps[n.slot],
        joined_at_s: n.joined_at_s,
        left_at_s: n.left_at_s,
        stats: n.stats,
        neighbor_rtt_ms: None,
        best_rtt_ms: None,
    }
}

/// Neighbour quality, judged against every node of the viewer's stream
/// present at the end (its seeder included): appends the present viewers'
/// results, with their neighbours' mean RTT and the best possible, to
/// `results`, and returns Σ chosen / Σ best. `present` is by slot.
fn judge_neighbors(
    present: Vec<NodeSnap>,
    book: &HashMap<PeerId, usize>,
    topo: &Topology,
    caps: &[Option<u64>],
    layout: &Layout,
    results: &mut Vec<NodeResult>,
) -> Option<f64> {
    // Each stream's present nodes: only they can be a viewer's neighbours.
    let mut present_slots: Vec<Vec<usize>> = (0..layout.streams())
        .map(|s| vec![layout.seeder_slot(s)])
        .collect();
    for n in &present {
        present_slots[layout.stream_of(n.slot)].push(n.slot);
    }
    let (mut chosen_sum, mut best_sum) = (0.0, 0.0);
    for n in present {
        let slots_of: Vec<usize> = n
            .neighbors
            .iter()
            .filter_map(|p| p.parse::<PeerId>().ok())
            .filter_map(|p| book.get(&p).copied())
            .collect();
        let mut r = node_result(n, caps, topo, layout);
        if !slots_of.is_empty() {
            let chosen = slots_of
                .iter()
                .map(|&s| topo.rtt_ms(r.index, s))
                .sum::<f64>()
                / slots_of.len() as f64;
            let best = topo.best_mean_rtt(r.index, &present_slots[r.stream], slots_of.len());
            r.neighbor_rtt_ms = Some(chosen);
            r.best_rtt_ms = best;
            if let Some(b) = best {
                chosen_sum += chosen;
                best_sum += b;
            }
        }
        results.push(r);
    }
    (best_sum > 0.0).then(|| chosen_sum / best_sum)
}

/// Cumulative counters over every viewer ever present.
#[derive(Default)]
pub(crate) struct Totals {
    from_peers: u64,
    from_infra: u64,
    due: u64,
    on_time: u64,
    infra_sent: u64,
}

/// One second of the run, from the viewers present (`live`) and the merged
/// final figures of those that left (`departed`).
pub(crate) fn sample(
    t: f64,
    live: &[Stats],
    departed: &Stats,
    (infra, reflectors): (&[Infra], Option<&LabReflectors>),
    prev: &Totals,
) -> (Sample, Totals) {
    let mut all = departed.clone();
    for s in live {
        all.merge(s);
    }
    let (infra_stats, http) = egress(infra, reflectors);
    let totals = Totals {
        from_peers: all.payload_from_peers,
        from_infra: all.payload_from_infra,
        due: all.pieces_due,
        on_time: all.pieces_on_time,
        infra_sent: infra_stats.iter().map(|s| s.payload_sent).sum::<u64>() + http,
    };
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    let d_peers = totals.from_peers - prev.from_peers.min(totals.from_peers);
    let d_infra = totals.from_infra - prev.from_infra.min(totals.from_infra);
    let sample = Sample {
        t_s: t,
        viewers: live.len(),
        playing: live.iter().filter(|s| s.startup_ms.is_some()).count(),
        offload: ratio(d_peers, d_peers + d_infra),
        continuity: ratio(
            totals.on_time - prev.on_time.min(totals.on_time),
            totals.due - prev.due.min(totals.due),
        ),
        lag_p95_ms: all.lag_ms.quantile(0.95),
        seeder_egress: ratio(
            totals.infra_sent - prev.infra_sent.min(totals.infra_sent),
            d_peers + d_infra,
        ),
        neighbors_mean: live.iter().map(|s| s.neighbors as f64).sum::<f64>()
            / live.len().max(1) as f64,
    };
    (sample, totals)
}

/// Infrastructure mesh stats and HTTP payload served, over every stream's
/// infra side and every reflector.
pub(crate) fn egress(infra: &[Infra], reflectors: Option<&LabReflectors>) -> (Vec<Stats>, u64) {
    let mut stats = Vec::new();
    let mut http = 0;
    for i in infra {
        let (s, h) = i.egress();
        stats.extend(s);
        http += h;
    }
    if let Some(r) = reflectors {
        let (s, h) = r.egress();
        stats.extend(s);
        http += h;
    }
    (stats, http)
}
