//! `shoal-lab bench-tracker`: the real tracker's HTTP server on loopback,
//! in this process on a thread of its own (one core), driven by keep-alive
//! HTTP/1.1 connections from another thread, each announcing as a random
//! viewer of one stream whose swarm was filled first. Reports announces
//! per second of wall time and per second of the server thread's CPU,
//! latency percentiles as the clients see them, and the resident memory
//! the filled registry added per viewer (docs/tuning.md, "Tracker").

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;
use shoal_mesh::{
    allocation::ViewerReport,
    hints::{Announce, Role},
    proto::Coord,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
};

use super::usage;
use crate::tracker::{self, Registry, TrackerConfig};

/// How to bench the tracker.
#[derive(Clone, Debug)]
pub struct TrackerBenchConfig {
    /// Swarm sizes, each benched on a fresh registry.
    pub viewers: Vec<usize>,
    /// Load time per size.
    pub duration: Duration,
    /// Keep-alive connections, each with one request in flight.
    pub connections: usize,
    pub seed: u64,
}

/// Which viewers announce in a load phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViewerState {
    /// Viewers still joining: no report, no neighbours; answered the base
    /// interval and full candidates.
    Joining,
    /// Settled viewers (playing, all their neighbours, every piece in
    /// time): answered the long interval and a few candidates.
    Settled,
}

/// One swarm size's figures for one kind of announcer.
#[derive(Clone, Debug, Serialize)]
pub struct TrackerBenchResult {
    pub viewers: usize,
    pub viewer_state: ViewerState,
    pub announces: u64,
    pub wall_s: f64,
    /// The server thread's CPU seconds over the load.
    pub server_cpu_s: f64,
    pub announces_per_s: f64,
    /// Announces per second of the server's one core.
    pub announces_per_core_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Resident memory the filled registry added, per viewer.
    pub rss_bytes_per_viewer: f64,
    /// Mean answer body.
    pub answer_bytes: u64,
    /// Seconds taken to fill the registry.
    pub fill_s: f64,
    /// One announce in the registry alone (no HTTP, no JSON), mean µs:
    /// the rest of a core's time per announce is the server's HTTP and JSON.
    pub registry_us: f64,
}

/// The stream every benched viewer announces.
const STREAM: &str = "5b0a15b0a15b0a15b0a15b0a15b0a15b0a15b0a15b0a15b0a15b0a15b0a15b0a";

/// Runs each size in turn; blocking (it starts its own threads).
pub fn bench_tracker(cfg: &TrackerBenchConfig) -> anyhow::Result<Vec<TrackerBenchResult>> {
    if cfg.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let mut out = Vec::new();
    for &n in &cfg.viewers {
        if n == 0 {
            bail!("a swarm of 0 viewers has nothing to bench");
        }
        out.extend(one_size(cfg, n)?);
    }
    Ok(out)
}

/// Fills a registry with `n` settled viewers, then loads it with joining
/// viewers' announces, then with settled viewers'.
fn one_size(cfg: &TrackerBenchConfig, n: usize) -> anyhow::Result<Vec<TrackerBenchResult>> {
    let config = TrackerConfig {
        max_peers_per_stream: n.max(100_000) + cfg.connections,
        max_peers_total: n.max(1_000_000) + cfg.connections,
        ..TrackerConfig::default()
    };
    let rss0 = usage::rss_bytes();
    let fill = Instant::now();
    let mut registry = Registry::new(config, cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let now = Instant::now();
    for i in 0..n {
        // Filling asks for no candidates: only the record is wanted.
        let mut a = viewer(i, ViewerState::Settled, &mut rng);
        a.want = 0;
        registry.announce(a, None, now)?;
    }
    let fill_s = fill.elapsed().as_secs_f64();
    let rss_bytes_per_viewer = usage::rss_bytes().saturating_sub(rss0) as f64 / n as f64;
    let mut out = Vec::new();
    for kind in [ViewerState::Joining, ViewerState::Settled] {
        let registry_us = time_registry(&mut registry, n, kind, &mut rng);
        let figures = Figures {
            n,
            kind,
            rss_bytes_per_viewer,
            fill_s,
            registry_us,
        };
        let shared = Arc::new(Mutex::new(registry));
        out.push(load(cfg, &shared, figures)?);
        registry = Arc::into_inner(shared)
            .context("the server kept the registry")?
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    Ok(out)
}

/// What is known of a phase before its load.
struct Figures {
    n: usize,
    kind: ViewerState,
    rss_bytes_per_viewer: f64,
    fill_s: f64,
    registry_us: f64,
}

/// Serves `registry` on one core and drives it for `cfg.duration`.
fn load(
    cfg: &TrackerBenchConfig,
    registry: &Arc<Mutex<Registry>>,
    f: Figures,
) -> anyhow::Result<TrackerBenchResult> {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server_registry = Arc::clone(registry);
    let server = std::thread::Builder::new()
        .name("tracker-bench".into())
        .spawn(move || serve_one_core(server_registry, addr_tx, stop_rx))?;
    let addr: SocketAddr = addr_rx.recv().context("the tracker did not start")??;

    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let load = clients.block_on(drive(addr, f.n, f.kind, cfg))?;
    let _ = stop_tx.send(());
    let server_cpu_s = server
        .join()
        .map_err(|_| anyhow::anyhow!("the tracker thread panicked"))??;

    let mut latencies = load.latencies_us;
    latencies.sort_unstable();
    let pct = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        latencies.get(i).copied().unwrap_or(0)
    };
    let announces = latencies.len() as u64;
    Ok(TrackerBenchResult {
        viewers: f.n,
        viewer_state: f.kind,
        announces,
        wall_s: load.wall_s,
        server_cpu_s,
        announces_per_s: announces as f64 / load.wall_s.max(1e-9),
        announces_per_core_s: announces as f64 / server_cpu_s.max(1e-9),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: latencies.last().copied().unwrap_or(0),
        rss_bytes_per_viewer: f.rss_bytes_per_viewer,
        answer_bytes: load.answer_bytes / announces.max(1),
        fill_s: f.fill_s,
        registry_us: f.registry_us,
    })
}

/// Mean µs of [`REGISTRY_ROUNDS`] announces straight into the registry
/// (bodies made beforehand, so only the registry is timed).
fn time_registry(registry: &mut Registry, n: usize, kind: ViewerState, rng: &mut StdRng) -> f64 {
    let announces: Vec<Announce> = (0..REGISTRY_ROUNDS)
        .map(|_| viewer(rng.gen_range(0..n), kind, rng))
        .collect();
    let now = Instant::now();
    let start = Instant::now();
    for a in announces {
        // A refusal would be timed too: the bench's bounds admit every viewer.
        let _ = registry.announce(a, None, now);
    }
    start.elapsed().as_secs_f64() * 1e6 / REGISTRY_ROUNDS as f64
}

const REGISTRY_ROUNDS: usize = 20_000;

/// Serves on one current-thread runtime until `stop`; returns the CPU
/// seconds the thread used while serving.
fn serve_one_core(
    registry: Arc<Mutex<Registry>>,
    addr_tx: std::sync::mpsc::Sender<std::io::Result<SocketAddr>>,
    stop: oneshot::Receiver<()>,
) -> anyhow::Result<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let bound = async {
            let l = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            let addr = l.local_addr()?;
            Ok::<_, std::io::Error>((l, addr))
        }
        .await;
        let listener = match bound {
            Ok((l, addr)) => {
                let _ = addr_tx.send(Ok(addr));
                l
            }
            Err(e) => {
                let _ = addr_tx.send(Err(e));
                bail!("cannot listen on loopback");
            }
        };
        let cpu0 = usage::thread_cpu_seconds();
        let app =
            tracker::router_over(registry).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await?;
        Ok(usage::thread_cpu_seconds() - cpu0)
    })
}

struct Load {
    latencies_us: Vec<u64>,
    answer_bytes: u64,
    wall_s: f64,
}

/// `cfg.connections` keep-alive connections announcing as random viewers
/// of the `n` for `cfg.duration`.
async fn drive(
    addr: SocketAddr,
    n: usize,
    kind: ViewerState,
    cfg: &TrackerBenchConfig,
) -> anyhow::Result<Load> {
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut tasks = Vec::with_capacity(cfg.connections);
    for c in 0..cfg.connections {
        let seed = cfg.seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        tasks.push(tokio::spawn(connection(addr, n, kind, seed, deadline)));
    }
    let mut load = Load {
        latencies_us: Vec::new(),
        answer_bytes: 0,
        wall_s: 0.0,
    };
    for t in tasks {
        let (lat, bytes) = t.await??;
        load.latencies_us.extend(lat);
        load.answer_bytes += bytes;
    }
    load.wall_s = start.elapsed().as_secs_f64();
    Ok(load)
}

/// One client connection: request, whole answer, next, until `deadline`.
async fn connection(
    addr: SocketAddr,
    n: usize,
    kind: ViewerState,
    seed: u64,
    deadline: Instant,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut latencies = Vec::new();
    let mut bytes = 0u64;
    while Instant::now() < deadline {
        let body = serde_json::to_vec(&viewer(rng.gen_range(0..n), kind, &mut rng))?;
        let mut req = format!(
            "POST /v1/announce HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let sent = Instant::now();
        stream.write_all(&req).await?;
        bytes += read_answer(&mut stream, &mut buf).await? as u64;
        latencies.push(sent.elapsed().as_micros() as u64);
    }
    Ok((latencies, bytes))
}

/// Reads one `200` answer with a `content-length`; returns its body size.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    buf.clear();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("the tracker closed the connection");
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("answer head not UTF-8")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("the tracker answered {}", head.lines().next().unwrap_or(""));
    }
    let len: usize = (head.lines())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .context("answer without content-length")?;
    while buf.len() < head_end + len {
        if stream.read_buf(buf).await? == 0 {
            bail!("the tracker closed the connection mid-answer");
        }
    }
    Ok(len)
}

/// Viewer `i` as it announces: two addresses and a coordinate; settled,
/// all its neighbours and a report of every piece in time.
fn viewer(i: usize, kind: ViewerState, rng: &mut StdRng) -> Announce {
    let settled = kind == ViewerState::Settled;
    Announce {
        stream: STREAM.to_owned(),
        // Shaped as libp2p ids are: a common prefix, then digits that differ.
        peer_id: format!("12D3KooW{}", &blake3::hash(&i.to_le_bytes()).to_hex()[..44]),
        // Public addresses, as a viewer announces once AutoNAT confirms
        // them (docs/nat.md).
        addrs: vec![
            format!("/ip4/{}/tcp/4001", public_ip(i)),
            format!("/ip4/{}/udp/4001/quic-v1", public_ip(i)),
        ],
        role: Role::Viewer,
        degree: if settled { 8 } else { 0 },
        max_degree: 8,
        upload_kbps: 4000,
        http: None,
        name: None,
        want: 16,
        // What the node sends (`mesh/src/net/announce.rs`).
        counters: serde_json::Value::Null,
        coord: Some(Coord {
            x: rng.gen_range(-150.0..150.0),
            y: rng.gen_range(-150.0..150.0),
            height: 2.0,
            error: 0.2,
        }),
        report: settled.then_some(ViewerReport {
            infra_bytes: 0,
            pieces_due: 250,
            pieces_in_time: 250,
            playing: true,
            upload_bps: 4_000_000,
        }),
        bitrate_kbps: 0,
    }
}

/// Viewer `i`'s address, in 45.0.0.0/8 (a public range).
fn public_ip(i: usize) -> String {
    format!("45.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255)
}

/// The figures as a table.
pub fn table(results: &[TrackerBenchResult]) -> String {
    let mut s = format!(
        "{:>9} {:>8} {:>10} {:>11} {:>8} {:>8} {:>8} {:>10} {:>8} {:>11}\n",
        "viewers",
        "who",
        "announce/s",
        "per core/s",
        "p50 µs",
        "p99 µs",
        "max µs",
        "B/viewer",
        "answer B",
        "registry µs"
    );
    for r in results {
        s += &format!(
            "{:>9} {:>8} {:>10.0} {:>11.0} {:>8} {:>8} {:>8} {:>10.0} {:>8} {:>11.1}\n",
            r.viewers,
            match r.viewer_state {
                ViewerState::Joining => "joining",
                ViewerState::Settled => "settled",
            },
            r.announces_per_s,
            r.announces_per_core_s,
            r.p50_us,
            r.p99_us,
            r.max_us,
            r.rss_bytes_per_viewer,
            r.answer_bytes,
            r.registry_us
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run end to end: every announce answered, figures filled.
    #[test]
    fn a_short_run_answers_every_announce() {
        let cfg = TrackerBenchConfig {
            viewers: vec![200],
            duration: Duration::from_millis(300),
            connections: 2,
            seed: 1,
        };
        let results = bench_tracker(&cfg).unwrap();
        let [joining, settled] = &results[..] else {
            panic!("two phases: {results:?}");
        };
        for r in &results {
            assert_eq!(r.viewers, 200);
            assert!(r.announces > 0);
            assert!(r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
        }
        assert_eq!(
            (joining.viewer_state, settled.viewer_state),
            (ViewerState::Joining, ViewerState::Settled)
        );
        assert!(
            settled.answer_bytes < joining.answer_bytes,
            "a settled viewer gets fewer candidates"
        );
        assert!(table(&results).contains("settled"));
        assert!(bench_tracker(&TrackerBenchConfig {
            connections: 0,
            ..cfg
        })
        .is_err());
    }
}
