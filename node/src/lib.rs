//! The viewer's side of Shoal: joins a stream's mesh and serves a local player.
//!
//! [`Node::start`] runs the mesh driver, the tracker announcer and the player
//! HTTP server in the current tokio runtime; `main.rs` is a thin CLI over it.

pub mod player;

use std::{net::SocketAddr, time::Duration};

use libp2p::{identity::Keypair, Multiaddr};
use shoal_mesh::{
    hints::{self, TrackerClient},
    net::{self, Announcer, NetConfig, NetHandle},
    proto::{Config, Stats, StreamId},
};
use tokio::{net::TcpListener, task::JoinHandle};

pub use player::Player;

/// How to run a viewer node.
#[derive(Debug)]
pub struct NodeConfig {
    pub tracker: String,
    pub stream: StreamId,
    /// Player HTTP address (port 0: any).
    pub player: SocketAddr,
    pub max_degree: usize,
    /// Payload upload limit, bits/s (`None`: unlimited).
    pub upload_limit_bps: Option<u64>,
    /// Mesh listen addresses; empty: loopback TCP and QUIC.
    pub listen: Vec<Multiaddr>,
    /// Seed of the engine's random choices (`None`: random).
    pub seed: Option<u64>,
}

impl NodeConfig {
    pub fn new(tracker: &str, stream: StreamId) -> Self {
        NodeConfig {
            tracker: tracker.to_string(),
            stream,
            player: SocketAddr::from(([127, 0, 0, 1], 7090)),
            max_degree: 8,
            upload_limit_bps: None,
            listen: Vec::new(),
            seed: None,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("cannot listen for the player on {addr}: {source}")]
    Player {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tracker(#[from] hints::HintsError),
}

/// A running viewer node. Dropping it stops everything.
#[derive(Debug)]
pub struct Node {
    pub stream: StreamId,
    pub player_addr: SocketAddr,
    pub net: NetHandle,
    pub player: Player,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let client = TrackerClient::new(&cfg.tracker)?;
        let listener = TcpListener::bind(cfg.player)
            .await
            .map_err(|source| NodeError::Player {
                addr: cfg.player,
                source,
            })?;
        let player_addr = listener.local_addr().map_err(|source| NodeError::Player {
            addr: cfg.player,
            source,
        })?;
        let mut engine = Config::viewer(cfg.stream);
        engine.max_degree = cfg.max_degree;
        engine.upload_limit = cfg.upload_limit_bps.map(|b| b / 8);
        engine.upload_kbps = cfg.upload_limit_bps.map_or(0, |b| (b / 1000) as u32);
        // Segments kept for the player: the engine's window at ~1 s segments.
        let player = Player::new(cfg.stream, (engine.window_ms / 1000) as usize);
        let mut net_cfg = NetConfig::local(Keypair::generate_ed25519(), engine);
        if !cfg.listen.is_empty() {
            net_cfg.listen = cfg.listen;
        }
        if let Some(seed) = cfg.seed {
            net_cfg.seed = seed;
        }
        let feed = player.clone();
        let net = net::start(
            net_cfg,
            Some(Box::new(move |p| {
                feed.push_piece(p);
            })),
        )
        .await?;

        let server = player.clone();
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = player::serve(server, listener).await {
                tracing::error!("player server stopped: {e}");
            }
        })];
        let announcer = Announcer {
            client,
            stream: cfg.stream,
            role: hints::Role::Viewer,
            max_degree: cfg.max_degree as u32,
            upload_kbps: cfg.upload_limit_bps.map_or(0, |b| (b / 1000) as u32),
            http: None,
            name: None,
            use_candidates: true,
        };
        tasks.push(announcer.spawn(&net));
        let stats_player = player.clone();
        let stats = net.stats_watch();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                every.tick().await;
                stats_player.set_stats(stats.borrow().clone());
            }
        }));
        Ok(Node {
            stream: cfg.stream,
            player_addr,
            net,
            player,
            tasks,
        })
    }

    pub fn stats(&self) -> Stats {
        self.net.stats()
    }

    /// Player URL of the HLS playlist.
    pub fn playlist_url(&self) -> String {
        format!(
            "http://{}/streams/{}/index.m3u8",
            self.player_addr, self.stream
        )
    }

    /// Player URL of the progressive MPEG-TS stream.
    pub fn live_url(&self) -> String {
        format!(
            "http://{}/streams/{}/live.ts",
            self.player_addr, self.stream
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.net.shutdown();
    }
}
