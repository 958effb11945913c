//! `shoal-lab demo`: tracker + seeder (bundled clip) + N viewers in one
//! process on loopback, with a live progress table and a final summary.
//!
//! Like `shoal-lab run`, each viewer's mesh listens on its own loopback
//! address 127.A.B.C, its synthetic /24, and the tracker holds the matching
//! AS table (a `uniform` topology's: a few ASes by viewer number). The
//! seeder, the players and the tracker stay on 127.0.0.1.

use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use libp2p::identity::Keypair;
use shoal_mesh::proto::{Stats, Summary};
use shoal_node::{Node, NodeConfig};
use shoal_seeder::{Input, Seeder, SeederConfig};

use super::{run::tracker_config, scenario::TopologySpec, topology::Topology};
use crate::tracker;

/// What a demo runs.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub nodes: usize,
    pub duration: Duration,
    pub input: Input,
    pub max_degree: usize,
    /// Player address of the first viewer (the one printed to watch).
    pub first_player: SocketAddr,
    pub json: Option<PathBuf>,
    /// Print the progress table.
    pub progress: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            nodes: 20,
            duration: Duration::from_secs(60),
            input: Input::Clip,
            max_degree: 8,
            first_player: SocketAddr::from(([127, 0, 0, 1], 7090)),
            json: None,
            progress: true,
        }
    }
}

/// Runs a demo to its end and returns the summary.
pub async fn run_demo(cfg: &DemoConfig, out: &mut (dyn Write + Send)) -> anyhow::Result<Summary> {
    // Slot i + 1 is viewer i; no latency is emulated, so only the
    // localities of the topology are used.
    let topo = Topology::new(&TopologySpec::Uniform { rtt_ms: 0 }, cfg.nodes + 1, 1)?;
    let (tracker_addr, tracker_task) = tracker::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        tracker_config(&topo)?,
    )
    .await
    .context("the tracker failed to start")?;
    let tracker_url = format!("http://{tracker_addr}");
    writeln!(out, "tracker: {tracker_url}")?;

    let mut seeder_cfg = SeederConfig::new("demo", cfg.input.clone(), Keypair::generate_ed25519());
    seeder_cfg.tracker = Some(tracker_url.clone());
    let mut seeder = Seeder::start(seeder_cfg)
        .await
        .context("the seeder failed to start")?;
    if !seeder.ready(Duration::from_secs(20)).await {
        let why = match tokio::time::timeout(Duration::from_millis(100), seeder.wait()).await {
            Ok(Err(e)) => e,
            _ => "no media within 20 s".into(),
        };
        bail!("the seeder failed to start: {why}");
    }
    writeln!(out, "stream: {}", seeder.stream)?;

    let mut nodes = Vec::with_capacity(cfg.nodes);
    for i in 0..cfg.nodes {
        let mut node_cfg = NodeConfig::new(&tracker_url, seeder.stream);
        node_cfg.max_degree = cfg.max_degree;
        node_cfg.listen = listen_on(topo.address(i + 1))?;
        node_cfg.player = Some(if i == 0 {
            cfg.first_player
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let node = match Node::start(node_cfg).await {
            Ok(n) => n,
            // The well-known port may be taken: any port will do.
            Err(shoal_node::NodeError::Player { .. }) if i == 0 => {
                let mut retry = NodeConfig::new(&tracker_url, seeder.stream);
                retry.max_degree = cfg.max_degree;
                retry.listen = listen_on(topo.address(i + 1))?;
                retry.player = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
                Node::start(retry).await
            }
            .with_context(|| format!("viewer {i} failed to start"))?,
            Err(e) => return Err(e).with_context(|| format!("viewer {i} failed to start")),
        };
        if i == 0 {
            writeln!(out, "watch viewer 0 while it runs:")?;
            writeln!(out, "  ffplay {}", node.live_url())?;
            writeln!(out, "  vlc {}", node.playlist_url())?;
        }
        nodes.push(node);
    }
    writeln!(
        out,
        "{} viewers joined; running for {}",
        nodes.len(),
        humantime::format_duration(cfg.duration)
    )?;

    let started = Instant::now();
    if cfg.progress {
        writeln!(
            out,
            "{:>5} {:>7} {:>8} {:>10} {:>8} {:>8} {:>6} {:>7}",
            "t(s)", "playing", "offload", "contin.", "min", "lag p95", "nbrs", "egress"
        )?;
    }
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    while started.elapsed() < cfg.duration {
        every.tick().await;
        if !seeder.net.is_running() {
            bail!("the seeder stopped");
        }
        if cfg.progress {
            let s = summarize(&nodes, &seeder);
            let viewers: Vec<Stats> = nodes.iter().map(Node::stats).collect();
            let nbrs = viewers.iter().map(|v| v.neighbors as f64).sum::<f64>()
                / viewers.len().max(1) as f64;
            writeln!(
                out,
                "{:>5} {:>7} {:>8.3} {:>10.4} {:>8.3} {:>8} {:>6.1} {:>7.3}",
                started.elapsed().as_secs(),
                s.nodes - s.not_started,
                s.offload,
                s.continuity.mean,
                s.continuity.min,
                s.lag_ms.p95,
                nbrs,
                s.seeder_egress
            )?;
        }
    }
    // Let the last stats snapshots land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let summary = summarize(&nodes, &seeder);
    print_summary(out, &summary)?;
    if let Some(path) = &cfg.json {
        let json = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(out, "summary written to {}", path.display())?;
    }
    drop(nodes);
    drop(seeder);
    tracker_task.abort();
    Ok(summary)
}

/// A viewer's mesh addresses: TCP and QUIC on its own loopback address.
fn listen_on(ip: Ipv4Addr) -> anyhow::Result<Vec<libp2p::Multiaddr>> {
    Ok(vec![
        format!("/ip4/{ip}/tcp/0").parse()?,
        format!("/ip4/{ip}/udp/0/quic-v1").parse()?,
    ])
}

fn summarize(nodes: &[Node], seeder: &Seeder) -> Summary {
    let viewers: Vec<Stats> = nodes.iter().map(Node::stats).collect();
    Summary::new(&viewers, &[seeder.stats()], seeder.origin.payload_served())
}

fn print_summary(out: &mut (dyn Write + Send), s: &Summary) -> std::io::Result<()> {
    writeln!(out, "summary ({} viewers):", s.nodes)?;
    writeln!(out, "  offload        {:.4}", s.offload)?;
    writeln!(
        out,
        "  continuity     mean {:.4}  min {:.4}",
        s.continuity.mean, s.continuity.min
    )?;
    writeln!(
        out,
        "  lag_ms         p50 {}  p95 {}  max {}",
        s.lag_ms.p50, s.lag_ms.p95, s.lag_ms.max
    )?;
    writeln!(
        out,
        "  startup_ms     p50 {}  p95 {}",
        s.startup_ms.p50, s.startup_ms.p95
    )?;
    writeln!(out, "  overhead       {:.4}", s.overhead)?;
    writeln!(out, "  duplicate      {:.4}", s.duplicate)?;
    writeln!(out, "  seeder_egress  {:.4}", s.seeder_egress)?;
    if s.not_started > 0 {
        writeln!(out, "  not started    {}", s.not_started)?;
    }
    Ok(())
}
