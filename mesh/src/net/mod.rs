//! The libp2p + tokio driver: runs one [`Engine`] for real.
//!
//! One task owns the swarm and the engine and runs a single `select!` loop
//! (after iroh-gossip's `net.rs`): swarm events, new shoal streams, frames
//! read by per-session reader tasks, commands from the application, and the
//! engine's timer. After every input it drains the engine's outputs.
//!
//! Transport: TCP + noise + yamux, and QUIC; identify; connection limits.
//! Shoal speaks on one libp2p-stream stream per peer, protocol `/shoal/1`,
//! opened by the dialler. Every queue is bounded: frames to a peer that
//! cannot keep up are not buffered without limit — that peer is dropped.
//!
//! [`Engine`]: crate::proto::Engine

mod announce;
mod clock;
mod driver;
mod origin;
mod origins;
mod session;
mod shaper;
mod swarm;

pub use announce::Announcer;
pub use clock::now_ms;
pub use driver::start;
pub use origin::{fetch_piece, FetchError};
pub use shaper::{
    shaped_tcp_transport, DelayFn, Shaped, ShapedMuxer, Shaper, Shaping, ShapingCounters,
    MAX_QUEUED,
};
pub use swarm::listen_all;

use libp2p::{identity::Keypair, Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, watch};

use crate::proto::{Config, Locality, PeerInfo, Piece, Stats};

/// Shoal's protocol name on libp2p-stream.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/1");

/// Frames queued per peer before the peer counts as stuck and is dropped.
const PEER_QUEUE: usize = 128;
/// Events from session tasks waiting for the driver.
const EVENT_QUEUE: usize = 1024;
/// Commands from the application waiting for the driver.
const COMMAND_QUEUE: usize = 256;
/// Concurrent HTTP fetches from infrastructure.
const INFRA_FETCHES: usize = 16;

/// How to run a node on the network.
#[derive(Debug)]
pub struct NetConfig {
    pub keypair: Keypair,
    /// Multiaddrs to listen on (TCP and/or QUIC).
    pub listen: Vec<Multiaddr>,
    pub engine: Config,
    /// Seed of the engine's random choices.
    pub seed: u64,
    /// Established connections, at most (incoming + outgoing).
    pub max_connections: u32,
    /// Lab network emulation (delay, caps). When set, the node runs over
    /// [`shaped_tcp_transport`] only — no QUIC, no DNS — so `listen` must
    /// hold TCP addresses (see [`NetConfig::lab`]).
    pub shaping: Option<Shaping>,
}

impl NetConfig {
    /// Loopback TCP and QUIC on ephemeral ports.
    pub fn local(keypair: Keypair, engine: Config) -> Self {
        let max_connections = engine.max_degree as u32 * 2 + 16;
        NetConfig {
            keypair,
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/127.0.0.1/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            engine,
            seed: rand::random(),
            max_connections,
            shaping: None,
        }
    }

    /// A lab node: loopback TCP only, its links shaped.
    pub fn lab(keypair: Keypair, engine: Config, shaping: Shaping) -> Self {
        NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
            shaping: Some(shaping),
            ..Self::local(keypair, engine)
        }
    }
}

/// What the application can ask of a running node.
#[derive(Debug)]
pub enum Command {
    /// Peers to consider as neighbours (tracker hints).
    Candidates(Vec<PeerInfo<PeerId>>),
    /// This node's own AS and subnet, as the tracker sees them.
    Located(Locality),
    /// Viewers in the stream, as the tracker counts them.
    Swarm(u32),
    /// The coordinator's budget for this node in the stream, bit/s.
    Budget(Option<u64>),
    /// Base URLs of infrastructure HTTP origins, for fallback.
    Origins(Vec<String>),
    /// A piece the broadcaster cut (seeders).
    Publish(Piece),
}

/// Errors starting the driver.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Engine(#[from] crate::proto::engine::EngineError),
    #[error("cannot build the libp2p transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("the node has stopped")]
    Stopped,
}

/// A running node.
#[derive(Debug)]
pub struct NetHandle {
    pub peer_id: PeerId,
    /// Addresses the node listens on.
    pub addrs: Vec<Multiaddr>,
    commands: mpsc::Sender<Command>,
    stats: watch::Receiver<Stats>,
    neighbors: watch::Receiver<Vec<PeerId>>,
    task: tokio::task::JoinHandle<()>,
}

impl NetHandle {
    pub async fn send(&self, cmd: Command) -> Result<(), NetError> {
        self.commands.send(cmd).await.map_err(|_| NetError::Stopped)
    }

    /// A sender for commands, for tasks that outlive a borrow of the handle.
    pub fn commander(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// A receiver of stats snapshots.
    pub fn stats_watch(&self) -> watch::Receiver<Stats> {
        self.stats.clone()
    }

    /// The latest stats (refreshed four times a second).
    pub fn stats(&self) -> Stats {
        self.stats.borrow().clone()
    }

    /// Active neighbours (refreshed with the stats).
    pub fn neighbors(&self) -> Vec<PeerId> {
        self.neighbors.borrow().clone()
    }

    /// Degree now.
    pub fn degree(&self) -> u32 {
        self.stats.borrow().neighbors
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops the node: its connections close.
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for NetHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Called with each verified piece new to this node (for its player).
pub type OnPiece = Box<dyn FnMut(&Piece) + Send>;
