//! The viewer's side of Shoal: joins a stream's mesh and serves a local player.
//!
//! [`Node::start`] runs the mesh driver, the tracker announcer and the player
//! HTTP server in the current tokio runtime; `main.rs` is a thin CLI over it.

pub mod player;

use std::{net::SocketAddr, time::Duration};

use libp2p::{identity::Keypair, Multiaddr};
use shoal_mesh::{
    hints,
    net::{self, Announcer, NetConfig, NetHandle},
    proto::{Config, Stats, StreamId},
    shards::Trackers,
};
use tokio::{net::TcpListener, task::JoinHandle};

pub use player::Player;

/// How to run a viewer node.
#[derive(Debug)]
pub struct NodeConfig {
    /// One or more tracker base URLs, comma-separated: the stream's
    /// tracker is picked among them by rendezvous hashing. Empty: none, the
    /// DHT finds the stream's hosts (`dht` must be on).
    pub tracker: String,
    /// Runs Shoal's DHT: provides the stream, and finds its hosts there
    /// while no tracker answers (docs/discovery.md).
    pub dht: bool,
    /// DHT hosts to join through: multiaddrs ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    pub stream: StreamId,
    /// Player HTTP address (port 0: any); `None` runs headless (lab nodes).
    pub player: Option<SocketAddr>,
    pub max_degree: usize,
    /// Payload upload limit, bits/s (`None`: unlimited).
    pub upload_limit_bps: Option<u64>,
    /// Mesh listen addresses; empty: loopback TCP and QUIC.
    pub listen: Vec<Multiaddr>,
    /// NAT traversal (off on loopback; the CLI turns it on).
    pub traversal: net::Traversal,
    /// Seed of the engine's random choices (`None`: random).
    pub seed: Option<u64>,
    /// Mesh identity (`None`: a fresh key).
    pub keypair: Option<Keypair>,
    /// Emulated links (lab only).
    pub shaping: Option<net::Shaping>,
    /// Engine settings applied last (lab experiments).
    pub tune: Option<fn(&mut Config)>,
}

impl NodeConfig {
    pub fn new(tracker: &str, stream: StreamId) -> Self {
        NodeConfig {
            tracker: tracker.to_string(),
            dht: false,
            bootstrap: Vec::new(),
            stream,
            player: Some(SocketAddr::from(([127, 0, 0, 1], 7090))),
            max_degree: 8,
            upload_limit_bps: None,
            listen: Vec::new(),
            traversal: net::Traversal::Off,
            seed: None,
            keypair: None,
            shaping: None,
            tune: None,
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
    #[error("no tracker and no DHT: the node could not find the stream")]
    NoDiscovery,
}

/// A running viewer node. Dropping it stops everything.
#[derive(Debug)]
pub struct Node {
    pub stream: StreamId,
    /// Where the player server listens (`None`: headless).
    pub player_addr: Option<SocketAddr>,
    pub net: NetHandle,
    pub player: Player,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let trackers = match cfg.tracker.trim() {
            "" if !cfg.dht => return Err(NodeError::NoDiscovery),
            "" => None,
            list => Some(Trackers::parse(list)?),
        };
        let listener = match cfg.player {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::Player { addr, source })?;
                let bound = l
                    .local_addr()
                    .map_err(|source| NodeError::Player { addr, source })?;
                Some((l, bound))
            }
            None => None,
        };
        let mut engine = Config::viewer(cfg.stream);
        engine.max_degree = cfg.max_degree;
        engine.upload_limit = cfg.upload_limit_bps.map(|b| b / 8);
        engine.upload_kbps = cfg.upload_limit_bps.map_or(0, |b| (b / 1000) as u32);
        if let Some(tune) = cfg.tune {
            tune(&mut engine);
        }
        // Segments kept for the player: the engine's window at ~1 s segments.
        let player = Player::new(cfg.stream, (engine.window_ms / 1000) as usize);
        let keypair = cfg.keypair.unwrap_or_else(Keypair::generate_ed25519);
        let mut net_cfg = match cfg.shaping {
            Some(shaping) => NetConfig::lab(keypair, engine, shaping),
            None => NetConfig::local(keypair, engine),
        };
        if !cfg.listen.is_empty() {
            net_cfg.host.listen = cfg.listen;
        }
        net_cfg.host.traversal = cfg.traversal;
        net_cfg.host.dht = cfg.dht;
        net_cfg.host.bootstrap = cfg.bootstrap;
        if let Some(seed) = cfg.seed {
            net_cfg.host.seed = seed;
        }
        let mut tasks = Vec::new();
        let (net, player_addr) = match listener {
            Some((listener, addr)) => {
                let feed = player.clone();
                let on_piece: net::OnPiece = Box::new(move |p| {
                    feed.push_piece(p);
                });
                let net = net::start(net_cfg, Some(on_piece)).await?;
                let server = player.clone();
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = player::serve(server, listener).await {
                        tracing::error!("player server stopped: {e}");
                    }
                }));
                (net, Some(addr))
            }
            None => (net::start(net_cfg, None).await?, None),
        };
        if let Some(trackers) = trackers {
            let announcer = Announcer {
                trackers,
                stream: cfg.stream,
                role: hints::Role::Viewer,
                max_degree: cfg.max_degree as u32,
                upload_kbps: cfg.upload_limit_bps.map_or(0, |b| (b / 1000) as u32),
                http: None,
                name: None,
                use_candidates: true,
                bitrate_kbps: None,
            };
            tasks.push(announcer.spawn(&net));
        }
        if player_addr.is_some() {
            let stats_player = player.clone();
            let stats = net.stats_watch();
            let host = net.host().clone();
            tasks.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(500));
                loop {
                    every.tick().await;
                    stats_player.set_stats(stats.borrow().clone());
                    stats_player.set_net_status(host.net_status());
                }
            }));
        }
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

    fn player_url(&self, file: &str) -> String {
        match self.player_addr {
            Some(addr) => format!("http://{addr}/streams/{}/{file}", self.stream),
            None => String::from("(headless node: no player)"),
        }
    }

    /// Player URL of the HLS playlist.
    pub fn playlist_url(&self) -> String {
        self.player_url("index.m3u8")
    }

    /// Player URL of the progressive MPEG-TS stream.
    pub fn live_url(&self) -> String {
        self.player_url("live.ts")
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
