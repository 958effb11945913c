//! `shoal-seeder`: ingests a live stream, cuts and signs it, and feeds the mesh.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use clap::Parser;
use libp2p::{identity::Keypair, Multiaddr};
use shoal_mesh::{net, proto::engine::parse_degree_cap};
use shoal_seeder::{keyfile, Input, Seeder, SeederConfig};

/// Broadcasts a live stream into a Shoal mesh.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Tracker base URL; repeat it (or give a comma-separated list) to
    /// shard by stream: the stream's tracker is picked by rendezvous
    /// hashing, the next one taken when it does not answer.
    #[arg(long)]
    tracker: Vec<String>,
    /// A DHT host to join through, `MULTIADDR/p2p/PEER_ID` (repeatable).
    /// The seeder provides its stream in the DHT whether or not it is given
    /// one: viewers that bootstrap from it find it there.
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// Stream name shown by the tracker.
    #[arg(long, default_value = "demo")]
    name: String,
    /// `clip` (bundled test clip, looped), `-` (MPEG-TS on stdin), a `.ts`
    /// file, or `synthetic:RATE` (random bytes, e.g. synthetic:2mbps).
    #[arg(long, default_value = "clip")]
    input: Input,
    /// Pace a file input by its timestamps, as a live encoder would.
    #[arg(long)]
    realtime: bool,
    /// HTTP origin address (fallback for viewers). Bound to every
    /// interface, the origin is announced at the address the tracker sees.
    #[arg(long, default_value = "0.0.0.0:7080")]
    http: SocketAddr,
    /// Mesh listen address (repeatable), instead of every interface on
    /// --port. Loopback only turns NAT traversal off.
    #[arg(long)]
    listen: Vec<Multiaddr>,
    /// Mesh port, TCP and QUIC, on every interface.
    #[arg(long, default_value_t = net::DEFAULT_INFRA_PORT)]
    port: u16,
    /// Broadcaster key file (created if missing); the key is the stream id.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Viewers fed directly over the mesh.
    #[arg(long, default_value_t = 8, value_parser = parse_degree_cap)]
    max_degree: usize,
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
            eprintln!("shoal-seeder: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let key = match &args.key {
        Some(path) => keyfile::load_or_create(path)
            .with_context(|| format!("cannot use key file {}", path.display()))?,
        None => Keypair::generate_ed25519(),
    };
    let mut input = args.input;
    if let Input::File { realtime, .. } = &mut input {
        *realtime = args.realtime;
    } else if args.realtime {
        bail!("--realtime applies to a file input only");
    }
    let mut cfg = SeederConfig::new(&args.name, input, key);
    cfg.tracker = (!args.tracker.is_empty()).then(|| args.tracker.join(","));
    cfg.http = args.http;
    cfg.dht = true;
    cfg.bootstrap = args.bootstrap;
    (cfg.listen, cfg.traversal) = net::listen_plan(args.listen, args.port, net::Traversal::Infra);
    cfg.max_degree = args.max_degree;
    let mut seeder = Seeder::start(cfg).await?;
    if !seeder.ready(Duration::from_secs(20)).await {
        if let Err(e) = seeder.wait().await {
            bail!("input failed: {e}");
        }
        bail!("no media came from the input within 20 s");
    }
    println!("stream: {}", seeder.stream);
    println!("origin: http://{}", seeder.http_addr);
    for a in &seeder.net.addrs {
        println!("mesh: {a}/p2p/{}", seeder.net.peer_id);
    }
    tokio::select! {
        r = seeder.wait() => match r {
            Ok(()) => {
                tracing::info!("input ended; serving the window for 30 s more");
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            }
            Err(e) => bail!("input failed: {e}"),
        },
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
