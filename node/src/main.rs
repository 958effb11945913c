//! `shoal-node`: a viewer's node, run beside the player.

use std::{net::SocketAddr, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use libp2p::Multiaddr;
use shoal_mesh::{
    net,
    proto::{engine::parse_degree_cap, StreamId},
    rate::rate_arg,
};
use shoal_node::{Node, NodeConfig};

/// Watches a Shoal stream: joins its mesh and serves it to a local player.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Tracker base URL; repeat it (or give a comma-separated list) to
    /// shard by stream: the stream's tracker is picked by rendezvous
    /// hashing, the next one taken when it does not answer. Optional with
    /// --bootstrap: the DHT finds the stream's hosts.
    #[arg(long)]
    tracker: Vec<String>,
    /// A DHT host to join through, `MULTIADDR/p2p/PEER_ID` (repeatable):
    /// a seeder's or reflector's (or a public viewer's: a viewer behind a
    /// NAT runs the DHT as a client and answers no one).
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// Stream id (64 hex characters, as the seeder prints it).
    #[arg(long)]
    stream: StreamId,
    /// Local player HTTP address.
    #[arg(long, default_value = "127.0.0.1:7090")]
    player: SocketAddr,
    /// Most neighbours at once.
    #[arg(long, default_value_t = 8, value_parser = parse_degree_cap)]
    max_degree: usize,
    /// Upload limit for serving other viewers, e.g. 4mbps (default: unlimited).
    #[arg(long, value_parser = rate_arg)]
    upload_limit: Option<u64>,
    /// Mesh listen address (repeatable), instead of every interface on
    /// --port. Loopback only turns NAT traversal off.
    #[arg(long)]
    listen: Vec<Multiaddr>,
    /// Mesh port, TCP and QUIC, on every interface.
    #[arg(long, default_value_t = net::DEFAULT_NODE_PORT)]
    port: u16,
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
            eprintln!("shoal-node: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.tracker.is_empty() && args.bootstrap.is_empty() {
        anyhow::bail!(
            "nowhere to find the stream: give --tracker URL, --bootstrap MULTIADDR/p2p/PEER_ID \
             (a seeder's or reflector's, or a public viewer's, `mesh:` address), or both"
        );
    }
    let mut cfg = NodeConfig::new(&args.tracker.join(","), args.stream);
    cfg.dht = true;
    cfg.bootstrap = args.bootstrap;
    cfg.player = Some(args.player);
    cfg.max_degree = args.max_degree;
    cfg.upload_limit_bps = args.upload_limit;
    (cfg.listen, cfg.traversal) = net::listen_plan(args.listen, args.port, net::Traversal::Viewer);
    let node = Node::start(cfg).await.context("cannot start the node")?;
    println!("peer: {}", node.net.peer_id);
    for a in &node.net.addrs {
        println!("mesh: {a}/p2p/{}", node.net.peer_id);
    }
    println!("hls: {}", node.playlist_url());
    println!("live: {}", node.live_url());
    if let Some(addr) = node.player_addr {
        println!("stats: http://{addr}/stats");
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    Ok(())
}
