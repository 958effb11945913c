//! The libp2p + tokio driver: runs [`Engine`]s for real, one per stream.
//!
//! One task owns the swarm and every stream's engine (a *lane*) and runs a
//! single `select!` loop (after iroh-gossip's `net.rs`): swarm events, new
//! shoal streams, frames read by per-session reader tasks, commands from the
//! application, and the engines' timers. After every input it drains the
//! engines' outputs. A viewer or a seeder runs one lane; a reflector one per
//! stream it carries, over one peer id and one set of connections.
//!
//! Transport: TCP + noise + yamux, and QUIC; identify; connection limits.
//! Shoal speaks on one libp2p-stream stream per peer and stream, protocol
//! `/shoal/2/<stream id>`, opened by the dialler. Every queue is bounded:
//! frames to a peer that cannot keep up are not buffered without limit —
//! that peer is dropped.
//!
//! [`Engine`]: crate::proto::Engine

mod advert;
mod announce;
mod budget;
mod clock;
pub mod dht;
mod driver;
mod handle;
mod lane;
mod links;
mod origin;
mod origins;
mod session;
mod shaper;
mod swarm;

pub use advert::{origin_seen_at, Advert};
pub use announce::{dialable, Announcer};
pub use budget::BudgetGate;
pub use clock::now_ms;
pub use driver::{start, start_host};
pub use handle::{Commander, Host, NetHandle};
pub use links::{LinkKind, NatStatus, NetStatus, PeerLink, Punch};
pub use origin::{fetch_edge, fetch_piece, FetchError, StreamDescription};
pub use shaper::{
    shaped_tcp_transport, DelayFn, SentToFn, Shaped, ShapedMuxer, Shaper, Shaping, ShapingCounters,
    MAX_QUEUED,
};
pub use swarm::listen_all;

use libp2p::{identity::Keypair, Multiaddr, PeerId, StreamProtocol};

use crate::proto::{Config, Locality, PeerInfo, Piece, StreamId};

/// Shoal's protocol name on libp2p-stream for one stream: a node that does
/// not carry the stream refuses it in negotiation, before any frame.
pub fn protocol(stream: &StreamId) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/shoal/2/{stream}"))
        .expect("a hex stream id makes a valid protocol name")
}

/// Frames queued per peer before the peer counts as stuck and is dropped.
const PEER_QUEUE: usize = 128;
/// Events from session tasks waiting for the driver.
const EVENT_QUEUE: usize = 1024;
/// Commands from the application waiting for the driver.
const COMMAND_QUEUE: usize = 256;
/// Concurrent HTTP fetches from infrastructure.
const INFRA_FETCHES: usize = 16;

/// How to run a host on the network: its identity, listeners and limits,
/// whatever streams it carries.
#[derive(Debug)]
pub struct HostConfig {
    pub keypair: Keypair,
    /// Multiaddrs to listen on (TCP and/or QUIC).
    pub listen: Vec<Multiaddr>,
    /// Seed of the engines' random choices (mixed with each stream's id).
    pub seed: u64,
    /// Established connections, at most (incoming + outgoing).
    pub max_connections: u32,
    /// Lab network emulation (delay, caps). When set, the host runs over
    /// [`shaped_tcp_transport`] only — no QUIC, no DNS — so `listen` must
    /// hold TCP addresses (see [`HostConfig::lab`]).
    pub shaping: Option<Shaping>,
    /// NAT traversal: off on loopback meshes.
    pub traversal: Traversal,
    /// Runs Shoal's Kademlia DHT ([`dht`]): provides the streams it
    /// carries, and looks them up while no tracker answers. Off on the
    /// lab's meshes, which have a tracker.
    pub dht: bool,
    /// DHT hosts to join through: multiaddrs ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// What identify tells peers of this host: its role and HTTP origin.
    pub advert: Advert,
}

/// How much of libp2p's NAT traversal a host runs (docs/nat.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traversal {
    /// None: a loopback mesh (tests, the lab).
    Off,
    /// A viewer: AutoNAT, a relay reservation when it cannot be dialled,
    /// DCUtR, UPnP, and a relay for others with room for a few, once its
    /// own address is confirmed public.
    Viewer,
    /// Seeders and reflectors: the same, as relays with room for many.
    Infra,
}

/// The port a viewer's node listens on by default, TCP and QUIC.
pub const DEFAULT_NODE_PORT: u16 = 7091;
/// The port seeders and reflectors listen on by default, TCP and QUIC.
pub const DEFAULT_INFRA_PORT: u16 = 7092;

impl HostConfig {
    /// Loopback TCP and QUIC on ephemeral ports, room for `sessions`
    /// neighbours (over all streams).
    pub fn local(keypair: Keypair, sessions: usize) -> Self {
        let max_connections = u32::try_from(sessions).unwrap_or(u32::MAX / 4) * 2 + 16;
        HostConfig {
            keypair,
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/127.0.0.1/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            seed: rand::random(),
            max_connections,
            shaping: None,
            traversal: Traversal::Off,
            dht: false,
            bootstrap: Vec::new(),
            advert: Advert::default(),
        }
    }

    /// Every interface, TCP and QUIC on `port`, with NAT traversal: a host
    /// on the real internet.
    pub fn internet(keypair: Keypair, sessions: usize, port: u16, traversal: Traversal) -> Self {
        HostConfig {
            listen: every_interface(port),
            traversal,
            ..Self::local(keypair, sessions)
        }
    }

    /// A lab host: loopback TCP only, its links shaped.
    pub fn lab(keypair: Keypair, sessions: usize, shaping: Shaping) -> Self {
        HostConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
            shaping: Some(shaping),
            ..Self::local(keypair, sessions)
        }
    }
}

/// TCP and QUIC on every IPv4 interface at `port`.
pub fn every_interface(port: u16) -> Vec<Multiaddr> {
    vec![
        Multiaddr::from(std::net::Ipv4Addr::UNSPECIFIED)
            .with(libp2p::multiaddr::Protocol::Tcp(port)),
        Multiaddr::from(std::net::Ipv4Addr::UNSPECIFIED)
            .with(libp2p::multiaddr::Protocol::Udp(port))
            .with(libp2p::multiaddr::Protocol::QuicV1),
    ]
}

/// What a binary listens on and how much NAT traversal it runs, from its
/// `--listen` (repeatable) and `--port`: every interface on `port` by
/// default, with traversal; what `--listen` says otherwise, with traversal
/// unless every address is loopback (a local mesh).
pub fn listen_plan(
    listen: Vec<Multiaddr>,
    port: u16,
    traversal: Traversal,
) -> (Vec<Multiaddr>, Traversal) {
    if listen.is_empty() {
        return (every_interface(port), traversal);
    }
    let local = listen
        .iter()
        .all(|a| crate::reach::Scope::of(a) == crate::reach::Scope::Host);
    (listen, if local { Traversal::Off } else { traversal })
}

/// How to run a node of one stream: a host and the stream's engine.
#[derive(Debug)]
pub struct NetConfig {
    pub host: HostConfig,
    pub engine: Config,
}

impl NetConfig {
    /// Loopback TCP and QUIC on ephemeral ports.
    pub fn local(keypair: Keypair, engine: Config) -> Self {
        let host = HostConfig::local(keypair, engine.max_degree);
        NetConfig { host, engine }
    }

    /// A lab node: loopback TCP only, its links shaped.
    pub fn lab(keypair: Keypair, engine: Config, shaping: Shaping) -> Self {
        let host = HostConfig::lab(keypair, engine.max_degree, shaping);
        NetConfig { host, engine }
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
    /// The coordinator's budget for this node in the stream, bit/s: held
    /// by the engine on the mesh and by the stream's [`BudgetGate`] over
    /// HTTP.
    Budget(Option<u64>),
    /// Base URLs of infrastructure HTTP origins, for fallback.
    Origins(Vec<String>),
    /// Infrastructure to take a relay reservation with, should this host
    /// turn out not to be reachable (tracker hints).
    Relays(Vec<PeerInfo<PeerId>>),
    /// A piece the broadcaster cut (seeders).
    Publish(Piece),
    /// The peers to take the stream from (reflectors: the coordinator's
    /// assignment, protocol.md §7.7).
    Parents(Vec<PeerInfo<PeerId>>),
    /// Whether reflectors serve the stream's viewers (seeders then feed
    /// the reflectors only).
    Reflected(bool),
    /// Whether a tracker answers for the stream: while none does, the host
    /// looks the stream up in the DHT (docs/discovery.md). A host starts
    /// as if none did.
    Tracked(bool),
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
    #[error("the node carries stream {0} already")]
    AlreadyJoined(StreamId),
    #[error("bootstrap address {0} must end in /p2p/<peer id>")]
    Bootstrap(Multiaddr),
}

/// Called with each verified piece new to this node (for its player).
pub type OnPiece = Box<dyn FnMut(&Piece) + Send>;
