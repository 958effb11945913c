//! `shoal-lab run`: N real nodes on loopback under an emulated network.
//!
//! Latency and capacity are emulated inside each node's driver (the kernel
//! has no netem): every connection's muxer is shaped by the one-way delay to
//! its remote and the node's upload/download caps ([`shoal_mesh::net::Shaping`]).
//! The lab knows every node's slot in the [`Topology`], so it also knows the
//! true RTTs and can judge the neighbours each node chose.
//!
//! With `processes` = K > 1, this process (index 0) runs the tracker, the
//! seeder and the viewer slots `slot % K == 0`, and K − 1 worker processes
//! ([`super::worker`]) run the others; each process's [`Population`] does
//! the joins and churn of its own slots, and this one merges the workers'
//! snapshots into its samples and results.
//!
//! Each Shoal viewer listens on its slot's own loopback address 127.A.B.C
//! ([`Topology::address`]), whose /24 is its synthetic subnet, and the
//! in-process tracker holds the topology's AS table, so the tracker tells
//! every node its synthetic locality as it would on the Internet. The
//! seeder, its HTTP origin and the tracker stay on 127.0.0.1 (the seeder's
//! own /24 and AS).

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use libp2p::PeerId;
use shoal_mesh::proto::{Stats, Summary};

use super::{
    population::{full_book, shaping, slot_key, upload_caps, Book, NodeSnap, Population},
    result::{NodeResult, RunResult, Sample},
    scenario::{RestartRole, Scenario},
    system::{Infra, System},
    topology::Topology,
    usage,
    worker::{WorkerSpec, Workers},
};
use crate::tracker::{self, AsnTable, TrackerConfig};

/// How a run is watched.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub system: System,
    /// Print a progress line per second.
    pub progress: bool,
    /// OS processes the viewers are spread over (1: all in this one).
    pub processes: usize,
}

/// Runs one system through a scenario.
pub async fn run(
    sc: &Scenario,
    opts: &RunOptions,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<RunResult> {
    sc.validate_lab()?;
    let processes = opts.processes.max(1);
    if processes > 1 {
        if !matches!(opts.system, System::Shoal | System::Rtt | System::Random) {
            bail!(
                "--processes {processes}: {} runs in one process only (its viewers share \
                 state with the infra side); use --processes 1",
                opts.system
            );
        }
        if processes > sc.nodes {
            bail!(
                "--processes {processes} is more than the {} viewers",
                sc.nodes
            );
        }
    }
    let wall = Instant::now();
    let cpu0 = usage::cpu_seconds();
    let slots = sc.nodes + 1;
    let topo = Arc::new(Topology::new(&sc.topology, slots, sc.seed)?);
    // One process learns its viewers' peer ids as they start; several must
    // know each other's in advance.
    let book: Book = if processes > 1 {
        full_book(sc)
    } else {
        Arc::new(RwLock::new(HashMap::new()))
    };

    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let tracker_config = tracker_config(&topo)?;
    let (tracker_addr, mut tracker_task) = tracker::spawn(any, tracker_config.clone())
        .await
        .context("tracker")?;
    let tracker_url = format!("http://{tracker_addr}");

    let seeder_key = slot_key(sc.seed, 0, 0);
    book.write()
        .expect("lock")
        .insert(seeder_key.public().to_peer_id(), 0);
    let seeder_shaping = shaping(&topo, &book, 0, None, None);
    let mut infra = Infra::start(
        opts.system,
        sc,
        &tracker_url,
        seeder_key.clone(),
        seeder_shaping.clone(),
        topo.clone(),
    )
    .await
    .context("the seeder failed to start")?;
    if processes > 1 {
        writeln!(
            out,
            "{}: {} viewers in {processes} processes, {} s, stream {}",
            opts.system,
            sc.nodes,
            sc.duration_s,
            infra.stream()
        )?;
    } else {
        writeln!(
            out,
            "{}: {} viewers, {} s, stream {}",
            opts.system,
            sc.nodes,
            sc.duration_s,
            infra.stream()
        )?;
    }

    let mut pop = Population::new(
        opts.system,
        sc,
        topo.clone(),
        book.clone(),
        &tracker_url,
        infra.stream(),
        0,
        processes,
    );
    let mut workers = Workers::spawn(
        &WorkerSpec {
            scenario: sc.clone(),
            system: opts.system,
            index: 0,
            processes,
            tracker_url: tracker_url.clone(),
            stream: infra.stream().to_string(),
        },
        &book,
    )
    .await?;
    workers.go().await?;

    let mut timeline: Vec<Sample> = Vec::new();
    let mut prev = Totals::default();
    let mut restarts: Vec<_> = sc
        .restarts
        .iter()
        .map(|r| (r.clone(), false, false))
        .collect();
    let start = Instant::now();
    let mut next_sample = 1.0;
    let tick = Duration::from_millis(100);
    if opts.progress {
        writeln!(
            out,
            "{:>5} {:>7} {:>8} {:>8} {:>8} {:>6} {:>7}",
            "t(s)", "playing", "offload", "contin.", "lag p95", "nbrs", "egress"
        )?;
    }
    loop {
        let t = start.elapsed().as_secs_f64();
        if t >= sc.duration_s {
            break;
        }
        pop.join_due(t, Some(&infra)).await?;
        // Restarts.
        for (r, down, up) in restarts.iter_mut() {
            if !*down && t >= r.at_s {
                *down = true;
                writeln!(out, "  {:.0}s: {} goes down for {} s", t, r.role, r.down_s)?;
                match r.role {
                    RestartRole::Tracker => tracker_task.abort(),
                    RestartRole::Seeder => infra.stop(),
                }
            }
            if *down && !*up && t >= r.at_s + r.down_s {
                *up = true;
                writeln!(out, "  {:.0}s: {} is back", t, r.role)?;
                match r.role {
                    RestartRole::Tracker => {
                        tracker_task = restart_tracker(tracker_addr, &tracker_config).await?;
                    }
                    RestartRole::Seeder => infra
                        .restart()
                        .await
                        .context("the seeder failed to restart")?,
                }
            }
        }
        if t >= next_sample {
            next_sample += 1.0;
            workers.check().await?;
            pop.churn(t, Some(&infra)).await?;
            // This process's viewers now, the workers' as of their latest
            // report (at most a second old).
            let mut live = pop.present_stats();
            let mut departed = Stats::default();
            for d in &pop.departed {
                departed.merge(&d.stats);
            }
            workers.add_to_sample(&mut live, &mut departed);
            let (sample, totals) = sample(t, &live, &departed, &infra, &prev);
            prev = totals;
            if opts.progress {
                writeln!(
                    out,
                    "{:>5.0} {:>7} {:>8} {:>8} {:>8} {:>6.1} {:>7}",
                    t,
                    sample.playing,
                    fmt_opt(sample.offload, 3),
                    fmt_opt(sample.continuity, 4),
                    sample.lag_p95_ms.map_or("-".into(), |v| v.to_string()),
                    sample.neighbors_mean,
                    fmt_opt(sample.seeder_egress, 3),
                )?;
            }
            timeline.push(sample);
        }
        tokio::time::sleep(tick).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Every process's final figures, taken as close together as can be.
    workers.stop().await;
    let mut present = pop.finish(&infra);
    let mut departed = std::mem::take(&mut pop.departed);
    let remote = workers.finish().await?;
    present.extend(remote.present);
    departed.extend(remote.departed);
    present.sort_by_key(|n| n.slot);

    let caps = upload_caps(sc);
    let mut results: Vec<NodeResult> = departed
        .into_iter()
        .map(|n| node_result(n, &caps, &topo))
        .collect();
    let neighbor_rtt_ratio = {
        let book = book.read().expect("lock");
        judge_neighbors(present, &book, &topo, &caps, &mut results)
    };
    let viewers: Vec<Stats> = results.iter().map(|r| r.stats.clone()).collect();
    let (infra_stats, http) = infra.egress();
    let summary = Summary::new(&viewers, &infra_stats, http);
    // The workers' CPU and peak memory add to this process's (the sum of
    // the peaks bounds the peak of the sum).
    let cpu_s = usage::cpu_seconds() - cpu0 + remote.cpu_s;
    let peak = usage::peak_rss_bytes() + remote.peak_rss_bytes;
    results.sort_by_key(|r| (r.index, r.joined_at_s as u64));
    drop(pop);
    infra.stop();
    tracker_task.abort();
    let n = sc.nodes.max(1);
    Ok(RunResult {
        system: opts.system.to_string(),
        scenario: sc.clone(),
        summary,
        neighbor_rtt_ratio,
        nodes: results,
        timeline,
        wall_s: wall.elapsed().as_secs_f64(),
        cpu_s,
        cpu_s_per_node: cpu_s / n as f64,
        peak_rss_bytes: peak,
        peak_rss_bytes_per_node: peak / n as u64,
    })
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The lab's tracker: a 2 s announce interval, and the topology's AS table
/// (what `shoal-tracker --asn-table` would load from a file).
pub(crate) fn tracker_config(topo: &Topology) -> anyhow::Result<TrackerConfig> {
    let table = AsnTable::parse(&topo.asn_table(), "the lab's AS table")?;
    Ok(TrackerConfig {
        asn_table: Arc::new(table),
        ..TrackerConfig::with_interval(2)
    })
}

async fn restart_tracker(
    addr: SocketAddr,
    config: &TrackerConfig,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // The old listener may take a moment to be released.
    for _ in 0..50 {
        if let Ok((_, task)) = tracker::spawn(addr, config.clone()).await {
            return Ok(task);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the tracker could not listen on {addr} again")
}

fn node_result(n: NodeSnap, caps: &[Option<u64>], topo: &Topology) -> NodeResult {
    NodeResult {
        index: n.slot,
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

/// Neighbour quality, judged against every node present at the end (the
/// seeder included): appends the present viewers' results, with their
/// neighbours' mean RTT and the best possible, to `results`, and returns
/// Σ chosen / Σ best. `present` is by slot.
fn judge_neighbors(
    present: Vec<NodeSnap>,
    book: &HashMap<PeerId, usize>,
    topo: &Topology,
    caps: &[Option<u64>],
    results: &mut Vec<NodeResult>,
) -> Option<f64> {
    let present_slots: Vec<usize> = std::iter::once(0)
        .chain(present.iter().map(|n| n.slot))
        .collect();
    let (mut chosen_sum, mut best_sum) = (0.0, 0.0);
    for n in present {
        let slots_of: Vec<usize> = n
            .neighbors
            .iter()
            .filter_map(|p| p.parse::<PeerId>().ok())
            .filter_map(|p| book.get(&p).copied())
            .collect();
        let mut r = node_result(n, caps, topo);
        if !slots_of.is_empty() {
            let chosen = slots_of
                .iter()
                .map(|&s| topo.rtt_ms(r.index, s))
                .sum::<f64>()
                / slots_of.len() as f64;
            let best = topo.best_mean_rtt(r.index, &present_slots, slots_of.len());
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
struct Totals {
    from_peers: u64,
    from_infra: u64,
    due: u64,
    on_time: u64,
    infra_sent: u64,
}

/// One second of the run, from the viewers present (`live`) and the merged
/// final figures of those that left (`departed`).
fn sample(
    t: f64,
    live: &[Stats],
    departed: &Stats,
    infra: &Infra,
    prev: &Totals,
) -> (Sample, Totals) {
    let mut all = departed.clone();
    for s in live {
        all.merge(s);
    }
    let (infra_stats, http) = infra.egress();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_tracker_tells_each_slot_its_synthetic_locality() {
        let topo = Topology::new(&super::super::scenario::TopologySpec::Geo, 41, 9).unwrap();
        let mut registry = tracker::Registry::new(tracker_config(&topo).unwrap(), 1);
        let now = Instant::now();
        let loopback = Some("127.0.0.1".parse().unwrap());
        for slot in 0..41 {
            let announce = shoal_mesh::hints::Announce {
                stream: "ab".repeat(32),
                peer_id: format!("slot{slot}"),
                addrs: vec![format!("/ip4/{}/tcp/4001", topo.address(slot))],
                role: shoal_mesh::hints::Role::Viewer,
                degree: 0,
                max_degree: 8,
                upload_kbps: 0,
                http: None,
                name: None,
                want: 10,
                counters: serde_json::Value::Null,
                coord: None,
            };
            let hints = registry.announce(announce, loopback, now).unwrap();
            assert_eq!(hints.you, topo.locality(slot), "slot {slot}");
            assert_ne!(hints.you.asn, 0);
        }
    }
}
