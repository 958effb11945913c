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

mod announce;
mod clock;
mod session;
mod shaper;

pub use announce::Announcer;
pub use clock::now_ms;
pub use shaper::{
    shaped_tcp_transport, DelayFn, Shaped, ShapedMuxer, Shaper, Shaping, ShapingCounters,
    MAX_QUEUED,
};

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use libp2p::{
    connection_limits::{self, ConnectionLimits},
    identify,
    identity::Keypair,
    noise,
    swarm::{dial_opts::DialOpts, NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::proto::{wire, Config, Engine, Input, Locality, Output, PeerInfo, Piece, Stats};
use clock::Clock;
use session::{PeerEvent, Session};

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
/// How long a connection outlives its closed session, so that the session's
/// last frames leave the muxer first (protocol.md §10).
const LINGER: Duration = Duration::from_secs(1);

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

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// Called with each verified piece new to this node (for its player).
pub type OnPiece = Box<dyn FnMut(&Piece) + Send>;

/// Starts a node: builds the swarm, listens, and runs the driver task.
/// Returns once the listen addresses are known.
pub async fn start(cfg: NetConfig, on_piece: Option<OnPiece>) -> Result<NetHandle, NetError> {
    let clock = Clock::start();
    let engine = Engine::new(cfg.engine.clone(), cfg.seed, clock.now())?;
    let mut swarm = build_swarm(&cfg)?;
    let addrs = listen_all(&mut swarm, &cfg.listen)
        .await
        .map_err(|(addr, reason)| NetError::Listen { addr, reason })?;
    let incoming = swarm
        .behaviour()
        .stream
        .new_control()
        .accept(PROTOCOL)
        .map_err(|e| NetError::Transport(e.to_string()))?;
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (stats_tx, stats_rx) = watch::channel(Stats::default());
    let (neighbors_tx, neighbors_rx) = watch::channel(Vec::new());
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let peer_id = *swarm.local_peer_id();
    let driver = Driver {
        clock,
        control: swarm.behaviour().stream.new_control(),
        swarm,
        engine,
        sessions: BTreeMap::new(),
        next_gen: 0,
        events_tx,
        origins: Vec::new(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| NetError::Transport(e.to_string()))?,
        fetches: Arc::new(Semaphore::new(INFRA_FETCHES)),
        on_piece,
        stats_tx,
        neighbors_tx,
    };
    let task = tokio::spawn(driver.run(incoming, cmd_rx, events_rx));
    Ok(NetHandle {
        peer_id,
        addrs,
        commands: cmd_tx,
        stats: stats_rx,
        neighbors: neighbors_rx,
        task,
    })
}

/// Listens on every address and waits (up to 5 s) until each is bound;
/// returns the bound addresses, or the address that failed and why.
/// Shared by the Shoal driver and the lab's gossipsub baseline.
pub async fn listen_all<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    listen: &[Multiaddr],
) -> Result<Vec<Multiaddr>, (Multiaddr, String)> {
    for addr in listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| (addr.clone(), e.to_string()))?;
    }
    let mut addrs = Vec::new();
    let wait = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(wait);
    while addrs.len() < listen.len() {
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => addrs.push(address),
                SwarmEvent::ListenerError { error, .. }
                | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                    return Err((listen[addrs.len()].clone(), error.to_string()));
                }
                _ => {}
            },
            _ = &mut wait => break,
        }
    }
    if addrs.is_empty() && !listen.is_empty() {
        let why = "no listener came up within 5 s".to_string();
        return Err((listen[0].clone(), why));
    }
    Ok(addrs)
}

fn build_swarm(cfg: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let err = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let limits = ConnectionLimits::default()
        .with_max_established(Some(cfg.max_connections))
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(64))
        .with_max_pending_outgoing(Some(64));
    let behaviour = |key: &Keypair| Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        identify: identify::Behaviour::new(identify::Config::new(
            "/shoal/id/1".into(),
            key.public(),
        )),
        stream: libp2p_stream::Behaviour::new(),
    };
    // Sessions ping every second; this only reaps connections that
    // never carried a shoal stream.
    let swarm_config =
        |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(30));
    let builder = libp2p::SwarmBuilder::with_existing_identity(cfg.keypair.clone()).with_tokio();
    let swarm = match &cfg.shaping {
        // Shaped: TCP only, since QUIC would bypass the shaper.
        Some(shaping) => {
            let transport =
                shaped_tcp_transport(&cfg.keypair, shaping.clone()).map_err(|e| err(&e))?;
            builder
                .with_other_transport(|_| transport)
                .map_err(|e| err(&e))?
                .with_behaviour(behaviour)
                .map_err(|e| err(&e))?
                .with_swarm_config(swarm_config)
                .build()
        }
        None => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| err(&e))?
            .with_quic()
            .with_dns()
            .map_err(|e| err(&e))?
            .with_behaviour(behaviour)
            .map_err(|e| err(&e))?
            .with_swarm_config(swarm_config)
            .build(),
    };
    Ok(swarm)
}

struct Driver {
    clock: Clock,
    swarm: Swarm<Behaviour>,
    control: libp2p_stream::Control,
    engine: Engine<PeerId>,
    sessions: BTreeMap<PeerId, Session>,
    next_gen: u64,
    events_tx: mpsc::Sender<PeerEvent>,
    origins: Vec<String>,
    http: reqwest::Client,
    fetches: Arc<Semaphore>,
    on_piece: Option<OnPiece>,
    stats_tx: watch::Sender<Stats>,
    neighbors_tx: watch::Sender<Vec<PeerId>>,
}

impl Driver {
    async fn run(
        mut self,
        mut incoming: libp2p_stream::IncomingStreams,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<PeerEvent>,
    ) {
        let mut stats_every = tokio::time::interval(Duration::from_millis(250));
        loop {
            let wake = self.engine.poll_timeout();
            let sleep = Duration::from_millis(wake.saturating_sub(self.clock.now().mono));
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                Some((peer, stream)) = incoming.next() => self.open_session(peer, stream, false),
                Some(ev) = events.recv() => self.on_peer_event(ev),
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break, // the application let go of the handle
                },
                _ = tokio::time::sleep(sleep) => self.engine.handle_timeout(self.clock.now()),
                _ = stats_every.tick() => {
                    self.stats_tx.send_replace(self.engine.stats().clone());
                    self.neighbors_tx
                        .send_replace(self.engine.neighbors().copied().collect());
                }
            }
            self.drain();
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.clock.now();
        match cmd {
            Command::Candidates(peers) => {
                let me = *self.swarm.local_peer_id();
                let peers = peers.into_iter().filter(|p| p.peer != me).collect();
                self.engine.handle(Input::Candidates(peers), now);
            }
            Command::Located(loc) => self.engine.handle(Input::Located(loc), now),
            Command::Swarm(viewers) => self.engine.handle(Input::Swarm { viewers }, now),
            Command::Origins(urls) => self.origins = urls,
            Command::Publish(piece) => self.engine.handle(Input::Publish(piece), now),
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            // The dialler opens the one shoal stream.
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } if endpoint.is_dialer() && !self.sessions.contains_key(&peer_id) => {
                self.open_stream(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.close_session(peer_id),
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, "dial failed: {error}");
                if !self.sessions.contains_key(&peer) {
                    self.engine
                        .handle(Input::DialFailed { peer }, self.clock.now());
                }
            }
            _ => {}
        }
    }

    fn on_peer_event(&mut self, ev: PeerEvent) {
        let now = self.clock.now();
        match ev {
            PeerEvent::Opened(peer, stream) => self.open_session(peer, stream, true),
            PeerEvent::OpenFailed(peer) => {
                if !self.sessions.contains_key(&peer) {
                    self.engine.handle(Input::DialFailed { peer }, now);
                }
            }
            PeerEvent::Frame(peer, gen, body) => {
                if self.sessions.get(&peer).is_some_and(|s| s.gen == gen) {
                    self.engine.handle(
                        Input::Frame {
                            from: peer,
                            body: body.into(),
                        },
                        now,
                    );
                }
            }
            PeerEvent::Malformed(peer, gen) => {
                if self.sessions.get(&peer).is_some_and(|s| s.gen == gen) {
                    self.engine.handle(Input::Malformed { from: peer }, now);
                }
            }
            PeerEvent::Closed(peer, gen) => {
                if self.sessions.get(&peer).is_some_and(|s| s.gen == gen) {
                    self.close_session(peer);
                }
            }
            PeerEvent::WriterDone(peer, gen) => {
                // Either a session the engine ended has flushed its last
                // frames, or a live session's writer stalled or failed: in
                // both cases the connection goes (and a live session with
                // it, freeing its degree slot).
                if self.sessions.get(&peer).is_some_and(|s| s.gen == gen) {
                    self.close_session(peer);
                }
                if !self.sessions.contains_key(&peer) {
                    // Not at once: the muxer may still hold the stream's
                    // last frames (a Refuse), and closing the connection
                    // under it drops them.
                    let tx = self.events_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(LINGER).await;
                        let _ = tx.send(PeerEvent::Lingered(peer)).await;
                    });
                }
            }
            PeerEvent::Lingered(peer) => {
                if !self.sessions.contains_key(&peer) {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
            PeerEvent::Infra(input) => self.engine.handle(input, now),
        }
    }

    /// Starts a session on a new stream. With two streams for one peer
    /// (both dialled at once), both sides keep the one opened by the
    /// smaller peer id, and the engine starts over on it.
    fn open_session(&mut self, peer: PeerId, stream: libp2p::Stream, outbound: bool) {
        let me = *self.swarm.local_peer_id();
        let opener = if outbound { me } else { peer };
        if let Some(existing) = self.sessions.get(&peer) {
            let existing_opener = if existing.outbound { me } else { peer };
            if existing_opener <= opener {
                return; // keep the existing stream; the new one is dropped
            }
            self.close_session(peer);
        }
        self.next_gen += 1;
        let session = Session::spawn(
            peer,
            self.next_gen,
            outbound,
            stream,
            self.events_tx.clone(),
        );
        self.sessions.insert(peer, session);
        self.engine
            .handle(Input::Connected { peer, outbound }, self.clock.now());
    }

    fn close_session(&mut self, peer: PeerId) {
        if self.sessions.remove(&peer).is_some() {
            self.engine
                .handle(Input::Disconnected { peer }, self.clock.now());
        }
    }

    /// Carries out everything the engine asked for.
    fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Send { to, frame } => {
                    let stuck = self.sessions.get(&to).is_some_and(|s| !s.send(frame));
                    if stuck {
                        tracing::debug!(peer = %to, "send queue full: dropping the peer");
                        self.sessions.remove(&to);
                        let _ = self.swarm.disconnect_peer_id(to);
                        self.engine
                            .handle(Input::Disconnected { peer: to }, self.clock.now());
                    }
                }
                Output::Connect(info) => self.dial(info),
                Output::Disconnect { peer, reason } => {
                    tracing::debug!(%peer, reason, "disconnecting");
                    // Dropping the session flushes its queue (a Refuse, say)
                    // and closes the stream; WriterDone closes the connection.
                    self.sessions.remove(&peer);
                }
                Output::FetchInfra { seq } => self.fetch_infra(seq),
                Output::Deliver(piece) => {
                    if let Some(f) = self.on_piece.as_mut() {
                        f(&piece);
                    }
                }
            }
        }
    }

    fn dial(&mut self, info: PeerInfo<PeerId>) {
        let peer = info.peer;
        if self.swarm.is_connected(&peer) {
            // Connected without a session (e.g. an old connection): open one.
            self.open_stream(peer);
            return;
        }
        let addrs: Vec<Multiaddr> = info.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let opts = DialOpts::peer_id(peer).addresses(addrs).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, "cannot dial: {e}");
            self.engine
                .handle(Input::DialFailed { peer }, self.clock.now());
        }
    }

    /// Opens a shoal stream to a connected peer, in a task.
    fn open_stream(&self, peer: PeerId) {
        let mut control = self.control.clone();
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let ev = match control.open_stream(peer, PROTOCOL).await {
                Ok(stream) => PeerEvent::Opened(peer, stream),
                Err(e) => {
                    tracing::debug!(%peer, "cannot open shoal stream: {e}");
                    PeerEvent::OpenFailed(peer)
                }
            };
            let _ = tx.send(ev).await;
        });
    }

    /// Fetches a piece from an HTTP origin in a task, bounded by a semaphore.
    fn fetch_infra(&mut self, seq: u64) {
        let tx = self.events_tx.clone();
        if self.origins.is_empty() {
            let _ = tx.try_send(PeerEvent::Infra(Input::InfraFailed { seq }));
            return;
        }
        let origin = self.origins[seq as usize % self.origins.len()].clone();
        let http = self.http.clone();
        let permits = self.fetches.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let input = match fetch_piece(&http, &origin, seq).await {
                Ok(piece) => Input::InfraPiece(piece),
                Err(e) => {
                    tracing::debug!(seq, %origin, "fallback fetch failed: {e}");
                    Input::InfraFailed { seq }
                }
            };
            let _ = tx.send(PeerEvent::Infra(input)).await;
        });
    }
}

/// `GET {origin}/v1/pieces/{seq}`: one piece as a `Message::Piece` frame.
pub async fn fetch_piece(http: &reqwest::Client, origin: &str, seq: u64) -> Result<Piece, String> {
    let url = format!("{}/v1/pieces/{seq}", origin.trim_end_matches('/'));
    let mut resp = http.get(&url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > wire::MAX_FRAME_BYTES + 4 {
            return Err("response exceeds the frame limit".into());
        }
        body.extend_from_slice(&chunk);
    }
    let body = Bytes::from(body);
    if body.len() < 4 {
        return Err("short response".into());
    }
    match wire::decode::<PeerId>(&body[4..]) {
        Ok(crate::proto::Message::Piece(p)) if p.header.seq == seq => Ok(p),
        Ok(_) => Err("response is not the requested piece".into()),
        Err(e) => Err(e.to_string()),
    }
}
