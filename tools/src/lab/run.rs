//! `shoal-lab run`: N real nodes on loopback under an emulated network.
//!
//! Latency and capacity are emulated inside each node's driver (the kernel
//! has no netem): every connection's muxer is shaped by the one-way delay to
//! its remote and the node's upload/download caps ([`shoal_mesh::net::Shaping`]).
//! The lab knows every node's slot in the [`Topology`], so it also knows the
//! true RTTs and can judge the neighbours each node chose.

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use libp2p::{identity::Keypair, PeerId};
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_mesh::{
    net::{Shaping, ShapingCounters},
    proto::{Config, Stats, Summary},
};
use shoal_node::{Node, NodeConfig};

use super::{
    result::{NodeResult, RunResult, Sample},
    scenario::{Scenario, UploadSpec},
    system::{Infra, System, Viewer},
    topology::Topology,
    usage,
};
use crate::tracker::{self, TrackerConfig};

/// How a run is watched.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub system: System,
    /// Print a progress line per second.
    pub progress: bool,
}

/// Who sits in which slot, for the shapers' delay lookups.
type Book = Arc<RwLock<HashMap<PeerId, usize>>>;

/// Deterministic key of a slot's `gen`-th occupant.
pub(crate) fn slot_key(seed: u64, slot: usize, gen: u32) -> Keypair {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((slot as u64) << 20) ^ u64::from(gen) << 52);
    let mut secret: [u8; 32] = rng.gen();
    Keypair::ed25519_from_bytes(&mut secret).expect("32 bytes make a key")
}

/// Upload cap of each viewer slot, bits/s.
pub(crate) fn upload_caps(sc: &Scenario) -> Vec<Option<u64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(sc.seed ^ 0x5EED_CAFE);
    (0..=sc.nodes)
        .map(|slot| match (&sc.upload, slot) {
            (_, 0) | (UploadSpec::Unlimited, _) => None,
            (UploadSpec::Fixed { bps }, _) => Some(*bps),
            // About 30 % of viewers below the bitrate, the rest above: the
            // spread of residential uplinks relative to a 2 Mbps stream.
            (UploadSpec::Mixed, _) => {
                let x: f64 = rng.gen();
                let factor = match x {
                    x if x < 0.15 => 0.5,
                    x if x < 0.30 => 0.8,
                    x if x < 0.60 => 1.5,
                    x if x < 0.85 => 3.0,
                    _ => 10.0,
                };
                Some((sc.bitrate_bps as f64 * factor) as u64)
            }
        })
        .collect()
}

fn shaping(
    topo: &Arc<Topology>,
    book: &Book,
    slot: usize,
    upload_bps: Option<u64>,
    download_bps: Option<u64>,
) -> Shaping {
    let (topo2, book) = (topo.clone(), book.clone());
    Shaping {
        delay: Arc::new(move |peer: &PeerId| {
            let from = *book.read().ok()?.get(peer)?;
            Some(Duration::from_secs_f64(
                topo2.one_way_ms(from, slot) / 1000.0,
            ))
        }),
        jitter: Duration::from_secs_f64(topo.jitter_ms(slot) / 1000.0),
        upload_bps,
        download_bps,
        counters: Arc::new(ShapingCounters::default()),
    }
}

/// A viewer slot's life so far.
struct Slot {
    viewer: Option<Viewer>,
    gen: u32,
    joined_at_s: f64,
    upload: Option<u64>,
}

/// Runs one system through a scenario.
pub async fn run(
    sc: &Scenario,
    opts: &RunOptions,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<RunResult> {
    sc.validate()?;
    let wall = Instant::now();
    let cpu0 = usage::cpu_seconds();
    let slots = sc.nodes + 1;
    let topo = Arc::new(Topology::new(&sc.topology, slots, sc.seed)?);
    let book: Book = Arc::new(RwLock::new(HashMap::new()));
    let caps = upload_caps(sc);
    let mut rng = ChaCha8Rng::seed_from_u64(sc.seed ^ 0xC4u64);

    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (tracker_addr, mut tracker_task) = tracker::spawn(any, TrackerConfig::with_interval(2))
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
    writeln!(
        out,
        "{}: {} viewers, {} s, stream {}",
        opts.system,
        sc.nodes,
        sc.duration_s,
        infra.stream()
    )?;

    let mut slots_state: Vec<Slot> = (0..slots)
        .map(|s| Slot {
            viewer: None,
            gen: 0,
            joined_at_s: 0.0,
            upload: caps[s],
        })
        .collect();
    let mut results: Vec<NodeResult> = Vec::new();
    let mut timeline: Vec<Sample> = Vec::new();
    let mut prev = Totals::default();
    let mut churn_acc = 0.0;
    let mut restarts: Vec<_> = sc
        .restarts
        .iter()
        .map(|r| (r.clone(), false, false))
        .collect();
    let start = Instant::now();
    let mut next_sample = 1.0;
    let mut next_join = 1usize;
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
        // Joins, spread evenly over join_over_s.
        while next_join <= sc.nodes
            && t >= sc.join_over_s * (next_join - 1) as f64 / sc.nodes as f64
        {
            let slot = next_join;
            start_viewer(
                opts.system,
                sc,
                &mut slots_state[slot],
                slot,
                &topo,
                &book,
                &infra,
                &tracker_url,
                t,
            )
            .await?;
            next_join += 1;
        }
        // Restarts.
        for (r, down, up) in restarts.iter_mut() {
            if !*down && t >= r.at_s {
                *down = true;
                writeln!(out, "  {:.0}s: {} goes down for {} s", t, r.role, r.down_s)?;
                if r.role == "tracker" {
                    tracker_task.abort();
                } else {
                    infra.stop();
                }
            }
            if *down && !*up && t >= r.at_s + r.down_s {
                *up = true;
                writeln!(out, "  {:.0}s: {} is back", t, r.role)?;
                if r.role == "tracker" {
                    tracker_task = restart_tracker(tracker_addr).await?;
                } else {
                    infra
                        .restart()
                        .await
                        .context("the seeder failed to restart")?;
                }
            }
        }
        if t >= next_sample {
            next_sample += 1.0;
            // Churn: abrupt leaves, each replaced by a fresh viewer.
            let live: Vec<usize> = (1..slots)
                .filter(|&s| slots_state[s].viewer.is_some())
                .collect();
            churn_acc += sc.churn_per_min / 60.0 * live.len() as f64;
            while churn_acc >= 1.0 && !live.is_empty() {
                churn_acc -= 1.0;
                let slot = *live.choose(&mut rng).expect("not empty");
                if let Some(v) = slots_state[slot].viewer.take() {
                    results.push(node_result(&v, slot, &slots_state[slot], Some(t), &topo));
                    infra.account(&v);
                }
                slots_state[slot].gen += 1;
                start_viewer(
                    opts.system,
                    sc,
                    &mut slots_state[slot],
                    slot,
                    &topo,
                    &book,
                    &infra,
                    &tracker_url,
                    t,
                )
                .await?;
            }
            let (sample, totals) = sample(t, &slots_state, &results, &infra, &prev);
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

    let end = start.elapsed().as_secs_f64();
    for (slot, state) in slots_state.iter().enumerate().skip(1) {
        if let Some(v) = &state.viewer {
            results.push(node_result(v, slot, state, None, &topo));
            infra.account(v);
        }
    }
    // Neighbour quality, judged against every node present at the end.
    let present: Vec<usize> = (0..slots)
        .filter(|&s| s == 0 || slots_state[s].viewer.is_some())
        .collect();
    let (mut chosen_sum, mut best_sum) = (0.0, 0.0);
    for r in results.iter_mut().filter(|r| r.left_at_s.is_none()) {
        let Some(v) = &slots_state[r.index].viewer else {
            continue;
        };
        let slots_of: Vec<usize> = {
            let book = book.read().expect("lock");
            v.neighbors()
                .iter()
                .filter_map(|p| book.get(p).copied())
                .collect()
        };
        if slots_of.is_empty() {
            continue;
        }
        let chosen = slots_of
            .iter()
            .map(|&s| topo.rtt_ms(r.index, s))
            .sum::<f64>()
            / slots_of.len() as f64;
        let best = topo.best_mean_rtt(r.index, &present, slots_of.len());
        r.neighbor_rtt_ms = Some(chosen);
        r.best_rtt_ms = best;
        if let Some(b) = best {
            chosen_sum += chosen;
            best_sum += b;
        }
    }
    let neighbor_rtt_ratio = (best_sum > 0.0).then(|| chosen_sum / best_sum);
    let viewers: Vec<Stats> = results.iter().map(|r| r.stats.clone()).collect();
    let (infra_stats, http) = infra.egress();
    let summary = Summary::new(&viewers, &infra_stats, http);
    let cpu_s = usage::cpu_seconds() - cpu0;
    let peak = usage::peak_rss_bytes();
    results.sort_by_key(|r| (r.index, r.joined_at_s as u64));
    drop(slots_state);
    infra.stop();
    tracker_task.abort();
    let n = sc.nodes.max(1);
    let _ = end;
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

async fn restart_tracker(addr: SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // The old listener may take a moment to be released.
    for _ in 0..50 {
        if let Ok((_, task)) = tracker::spawn(addr, TrackerConfig::with_interval(2)).await {
            return Ok(task);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the tracker could not listen on {addr} again")
}

#[allow(clippy::too_many_arguments)]
async fn start_viewer(
    system: System,
    sc: &Scenario,
    slot_state: &mut Slot,
    slot: usize,
    topo: &Arc<Topology>,
    book: &Book,
    infra: &Infra,
    tracker_url: &str,
    t: f64,
) -> anyhow::Result<()> {
    let key = slot_key(sc.seed, slot, slot_state.gen);
    book.write()
        .expect("lock")
        .insert(key.public().to_peer_id(), slot);
    let shaping = shaping(topo, book, slot, slot_state.upload, sc.download_bps);
    let viewer = match system {
        System::Shoal | System::Random => {
            let mut cfg = NodeConfig::new(tracker_url, infra.stream());
            cfg.player = None;
            cfg.max_degree = sc.max_degree;
            // A viewer sets its upload limit a little under its link, as
            // `--upload-limit` asks of a real user, so its link never queues.
            cfg.upload_limit_bps = slot_state.upload.map(|b| b * 9 / 10);
            cfg.seed = Some(sc.seed ^ ((slot as u64) << 8) ^ u64::from(slot_state.gen));
            cfg.keypair = Some(key);
            cfg.shaping = Some(shaping);
            if system == System::Random {
                cfg.tune = Some(|c: &mut Config| c.random_neighbors = true);
            }
            Viewer::Shoal(
                Node::start(cfg)
                    .await
                    .with_context(|| format!("viewer {slot} failed to start"))?,
            )
        }
        _ => {
            infra
                .start_baseline_viewer(slot, key, shaping, topo)
                .await?
        }
    };
    slot_state.viewer = Some(viewer);
    slot_state.joined_at_s = t;
    Ok(())
}

fn node_result(
    v: &Viewer,
    slot: usize,
    s: &Slot,
    left: Option<f64>,
    topo: &Topology,
) -> NodeResult {
    NodeResult {
        index: slot,
        peer_id: v.peer_id().map(|p| p.to_string()).unwrap_or_default(),
        region: topo.region(slot).map(str::to_string),
        upload_cap_bps: s.upload,
        joined_at_s: s.joined_at_s,
        left_at_s: left,
        stats: v.stats(),
        neighbor_rtt_ms: None,
        best_rtt_ms: None,
    }
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

fn sample(
    t: f64,
    slots: &[Slot],
    departed: &[NodeResult],
    infra: &Infra,
    prev: &Totals,
) -> (Sample, Totals) {
    let live: Vec<Stats> = slots[1..]
        .iter()
        .filter_map(|s| s.viewer.as_ref())
        .map(Viewer::stats)
        .collect();
    let mut all = Stats::default();
    for s in live.iter().chain(departed.iter().map(|r| &r.stats)) {
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
