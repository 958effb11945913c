//! The driver task: one `select!` loop that feeds the engine swarm events,
//! session frames, commands and its timer, and carries out what it asks.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use libp2p::{
    swarm::{dial_opts::DialOpts, SwarmEvent},
    Multiaddr, PeerId, Swarm,
};
use tokio::sync::{mpsc, watch, Semaphore};

use super::{
    clock::Clock,
    origins::{fetch_first, Origins},
    session::{PeerEvent, Session},
    swarm::{build_swarm, listen_all, Behaviour, BehaviourEvent},
    Command, NetConfig, NetError, NetHandle, OnPiece, COMMAND_QUEUE, EVENT_QUEUE, INFRA_FETCHES,
    PROTOCOL,
};
use crate::proto::{Engine, Input, Output, PeerInfo, Stats};

/// How long a connection outlives its closed session, so that the session's
/// last frames leave the muxer first (protocol.md §10).
const LINGER: Duration = Duration::from_secs(1);

/// Connecting to an HTTP origin, at most: on a LAN or the internet a
/// connection takes well under this, so longer means the origin is gone.
const ORIGIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

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
        origins: Origins::default(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            // A dead origin is left in time to ask another within the
            // engine's request timeout (3 s).
            .connect_timeout(ORIGIN_CONNECT_TIMEOUT)
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

struct Driver {
    clock: Clock,
    swarm: Swarm<Behaviour>,
    control: libp2p_stream::Control,
    engine: Engine<PeerId>,
    sessions: BTreeMap<PeerId, Session>,
    next_gen: u64,
    events_tx: mpsc::Sender<PeerEvent>,
    origins: Origins,
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
            Command::Budget(bps) => self.engine.handle(Input::Budget { bps }, now),
            Command::Origins(urls) => self.origins.set(urls),
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
            PeerEvent::OriginDown(url) => {
                tracing::debug!(%url, "origin unreachable: passed over for a while");
                self.origins.down(&url, std::time::Instant::now());
            }
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
        let tries = self.origins.pick(seq, std::time::Instant::now());
        let http = self.http.clone();
        let permits = self.fetches.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let (piece, unreachable) = fetch_first(&http, &tries, seq).await;
            for origin in unreachable {
                let _ = tx.send(PeerEvent::OriginDown(origin)).await;
            }
            let input = match piece {
                Some(piece) => Input::InfraPiece(piece),
                None => Input::InfraFailed { seq },
            };
            let _ = tx.send(PeerEvent::Infra(input)).await;
        });
    }
}
