//! `shoal-reflector`: carries the streams the coordinator assigns it.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use libp2p::{identity::Keypair, Multiaddr};
use shoal_mesh::{net, rate::rate_arg};
use shoal_reflector::{Reflector, ReflectorConfig, DEFAULT_FAN_OUT};
use shoal_seeder::keyfile;

/// Relays Shoal streams: takes each from two parents, serves viewers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Tracker base URL (its coordinator assigns the streams); repeat it,
    /// or give a comma-separated list, when trackers shard by stream: the
    /// first that answers assigns, each stream announces to its own.
    #[arg(long, required = true)]
    tracker: Vec<String>,
    /// A DHT host to join through, `MULTIADDR/p2p/PEER_ID` (repeatable).
    /// The reflector provides the streams it carries in the DHT, so that
    /// viewers without a tracker find it.
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// Mesh listen address (repeatable), instead of every interface on
    /// --port. Loopback only turns NAT traversal off.
    #[arg(long)]
    listen: Vec<Multiaddr>,
    /// Mesh port, TCP and QUIC, on every interface.
    #[arg(long, default_value_t = net::DEFAULT_INFRA_PORT)]
    port: u16,
    /// HTTP origin address (fallback for viewers). Bound to every
    /// interface, the origin is announced at the address the tracker sees.
    #[arg(long, default_value = "0.0.0.0:7081")]
    http: SocketAddr,
    /// Upload limit over all streams, e.g. 100mbps (default: unlimited).
    #[arg(long, value_parser = rate_arg)]
    upload_limit: Option<u64>,
    /// Downstream sessions (viewers and reflectors) over all streams.
    #[arg(long, default_value_t = DEFAULT_FAN_OUT, value_parser = clap::value_parser!(u32).range(1..=4096))]
    fan_out: u32,
    /// Site or rack, so children get parents in different domains.
    #[arg(long)]
    failure_domain: Option<String>,
    /// Identity key file (created if missing); default: a new identity.
    #[arg(long)]
    key: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,libp2p=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-reflector: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = ReflectorConfig::new(&args.tracker.join(","));
    cfg.keypair = match &args.key {
        Some(path) => keyfile::load_or_create(path)
            .with_context(|| format!("cannot use key file {}", path.display()))?,
        None => Keypair::generate_ed25519(),
    };
    (cfg.listen, cfg.traversal) = net::listen_plan(args.listen, args.port, net::Traversal::Infra);
    cfg.http = args.http;
    cfg.dht = true;
    cfg.bootstrap = args.bootstrap;
    cfg.upload_limit_bps = args.upload_limit;
    cfg.fan_out = args.fan_out;
    cfg.failure_domain = args.failure_domain;
    let reflector = Reflector::start(cfg).await?;
    println!("peer: {}", reflector.host.peer_id);
    println!("origin: http://{}", reflector.http_addr);
    for a in &reflector.host.addrs {
        println!("mesh: {a}/p2p/{}", reflector.host.peer_id);
    }
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {
                if !reflector.is_running() {
                    anyhow::bail!("the reflector stopped");
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
