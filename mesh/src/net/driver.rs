//! The driver task: one `select!` loop that feeds each stream's engine its
//! swarm events, session frames, commands and timer, and carries out what
//! it asks.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{core::transport::ListenerId, identify, swarm::SwarmEvent, PeerId, Swarm};
use tokio::sync::{mpsc, watch, Semaphore};

use super::{
    clock::Clock,
    handle::{Host, HostCommand, LaneWatch},
    lane::Lane,
    links::{LinkKind, Links, NetStatus},
    origins::{fetch_edge_first, fetch_first},
    protocol,
    session::{LaneEvent, PeerEvent},
    swarm::{build_swarm, listen_all, Behaviour, BehaviourEvent},
    BudgetGate, Command, HostConfig, NetConfig, NetError, NetHandle, OnPiece, Traversal,
    COMMAND_QUEUE, EVENT_QUEUE, INFRA_FETCHES,
};
use crate::proto::{Config, Engine, Input, Output, PeerInfo, Stats, StreamId};

/// How long a connection outlives its closed session, so that the session's
/// last frames leave the muxer first (protocol.md §10).
const LINGER: Duration = Duration::from_secs(1);

/// Connecting to an HTTP origin, at most: on a LAN or the internet a
/// connection takes well under this, so longer means the origin is gone.
const ORIGIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

mod discovery;
mod sessions;
mod traversal;

use discovery::Discovery;

use traversal::own_address;

/// How long the loop sleeps with no engine timer pending (no lanes).
const IDLE: Duration = Duration::from_secs(1);

/// How long a session waits on a relayed connection for DCUtR to punch a
/// direct one, before it settles for the relay (docs/nat.md).
const UPGRADE_WAIT: Duration = Duration::from_secs(5);

/// A stream takes neighbours over relays only while it has fewer direct
/// ones than this.
const RELAY_BELOW: usize = 3;

/// Starts a node of one stream: a host that joins `cfg.engine.stream`.
/// Returns once the listen addresses are known.
pub async fn start(cfg: NetConfig, on_piece: Option<OnPiece>) -> Result<NetHandle, NetError> {
    cfg.engine.check()?;
    let host = start_host(cfg.host).await?;
    host.join(cfg.engine, on_piece).await
}

/// Starts a host that carries no stream yet (see [`Host::join`]).
/// Returns once the listen addresses are known.
pub async fn start_host(cfg: HostConfig) -> Result<Host, NetError> {
    let mut swarm = build_swarm(&cfg)?;
    let addrs = listen_all(&mut swarm, &cfg.listen)
        .await
        .map_err(|(addr, reason)| NetError::Listen { addr, reason })?;
    let mut links = Links::default();
    for addr in &addrs {
        links.listening(addr.clone());
        own_address(&mut swarm, cfg.traversal, addr);
    }
    let (status_tx, status) = watch::channel(links.status(|_| None));
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let peer_id = *swarm.local_peer_id();
    let mut driver = Driver {
        clock: Clock::start(),
        control: swarm.behaviour().stream.new_control(),
        swarm,
        seed: cfg.seed,
        lanes: BTreeMap::new(),
        dialing: BTreeMap::new(),
        next_gen: 0,
        events_tx,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            // A dead origin is left in time to ask another within the
            // engine's request timeout (3 s).
            .connect_timeout(ORIGIN_CONNECT_TIMEOUT)
            // An origin is a peer's claim (docs/discovery.md): it may not
            // send the node on to any other host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| NetError::Transport(e.to_string()))?,
        fetches: Arc::new(Semaphore::new(INFRA_FETCHES)),
        touched: Vec::new(),
        traversal: cfg.traversal,
        links,
        status_tx,
        upgrading: BTreeMap::new(),
        relay_candidates: Vec::new(),
        reserving: HashMap::new(),
        refused: BTreeMap::new(),
        discovery: Discovery::default(),
    };
    driver.bootstrap(&cfg.bootstrap)?;
    let task = tokio::spawn(driver.run(cmd_rx, events_rx));
    Ok(Host::new(peer_id, addrs, status, cmd_tx, task))
}

struct Driver {
    clock: Clock,
    swarm: Swarm<Behaviour>,
    control: libp2p_stream::Control,
    seed: u64,
    lanes: BTreeMap<StreamId, Lane>,
    /// Peers being dialled, and the streams that want a session with each.
    dialing: BTreeMap<PeerId, BTreeSet<StreamId>>,
    next_gen: u64,
    events_tx: mpsc::Sender<PeerEvent>,
    http: reqwest::Client,
    fetches: Arc<Semaphore>,
    /// Scratch list of the lanes to drain, kept to save an allocation per
    /// event.
    touched: Vec<StreamId>,
    traversal: Traversal,
    links: Links,
    status_tx: watch::Sender<NetStatus>,
    /// Peers reached over a relay, and the streams waiting for DCUtR to
    /// give them a direct connection before they open their sessions.
    upgrading: BTreeMap<PeerId, BTreeSet<StreamId>>,
    /// Infrastructure that can relay for this host (tracker hints).
    relay_candidates: Vec<PeerInfo<PeerId>>,
    /// Relay reservations asked for or held, by listener.
    reserving: HashMap<ListenerId, PeerId>,
    /// Relays that refused or dropped a reservation, and when.
    refused: BTreeMap<PeerId, Instant>,
    discovery: Discovery,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<HostCommand>,
        mut events: mpsc::Receiver<PeerEvent>,
    ) {
        let mut stats_every = tokio::time::interval(Duration::from_millis(250));
        loop {
            let now = self.clock.now().mono;
            let sleep = self
                .lanes
                .values()
                .map(|l| l.engine.poll_timeout())
                .min()
                .map_or(IDLE, |wake| Duration::from_millis(wake.saturating_sub(now)));
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                Some(ev) = events.recv() => self.on_peer_event(ev),
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break, // the application let go of every handle
                },
                _ = tokio::time::sleep(sleep) => self.on_timeout(),
                _ = stats_every.tick() => {
                    for lane in self.lanes.values() {
                        lane.publish_stats();
                    }
                    self.publish_status();
                    self.reserve_relays();
                    self.discovery_tick();
                }
            }
            self.drain_all();
        }
    }

    fn on_command(&mut self, cmd: HostCommand) {
        match cmd {
            HostCommand::Join {
                engine,
                on_piece,
                reply,
            } => {
                let _ = reply.send(self.join(engine, on_piece));
            }
            HostCommand::Leave(stream) => {
                if let Some(lane) = self.lanes.remove(&stream) {
                    // Dropping the sessions flushes and closes their
                    // streams; each writer's end lets its connection go.
                    drop(lane);
                    for peers in self.dialing.values_mut() {
                        peers.remove(&stream);
                    }
                    self.forget_stream(&stream);
                }
            }
            HostCommand::Lane(stream, cmd) => self.on_lane_command(stream, cmd),
        }
    }

    fn join(&mut self, cfg: Config, on_piece: Option<OnPiece>) -> Result<LaneWatch, NetError> {
        let stream = cfg.stream;
        if self.lanes.contains_key(&stream) {
            return Err(NetError::AlreadyJoined(stream));
        }
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&stream.0[..8]);
        let seed = self.seed ^ u64::from_le_bytes(seed);
        let engine = Engine::new(cfg, seed, self.clock.now())?;
        let mut incoming = self
            .control
            .accept(protocol(&stream))
            .map_err(|e| NetError::Transport(e.to_string()))?;
        // Each accepted stream goes to the driver at once: libp2p-stream
        // holds only one waiting.
        let tx = self.events_tx.clone();
        let accept = tokio::spawn(async move {
            while let Some((peer, s)) = incoming.next().await {
                let ev = PeerEvent::Lane(stream, LaneEvent::Accepted(peer, s));
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        });
        let (stats_tx, stats) = watch::channel(Stats::default());
        let (neighbors_tx, neighbors) = watch::channel(Vec::new());
        let gate = BudgetGate::default();
        let lane = Lane::new(
            engine,
            on_piece,
            gate.clone(),
            stats_tx,
            neighbors_tx,
            accept,
        );
        self.lanes.insert(stream, lane);
        self.discover(stream);
        Ok(LaneWatch {
            stats,
            neighbors,
            gate,
        })
    }

    fn on_lane_command(&mut self, stream: StreamId, cmd: Command) {
        let now = self.clock.now();
        let me = *self.swarm.local_peer_id();
        let Some(lane) = self.lanes.get_mut(&stream) else {
            return; // left meanwhile
        };
        let input = match cmd {
            Command::Candidates(peers) => {
                Input::Candidates(peers.into_iter().filter(|p| p.peer != me).collect())
            }
            Command::Located(loc) => Input::Located(loc),
            Command::Swarm(viewers) => Input::Swarm { viewers },
            Command::Budget(bps) => {
                lane.gate.set_rate(bps.map(|b| b / 8));
                Input::Budget { bps }
            }
            Command::Publish(piece) => Input::Publish(piece),
            Command::Reflected(on) => Input::Reflected(on),
            Command::Parents(peers) => {
                Input::Parents(peers.into_iter().filter(|p| p.peer != me).collect())
            }
            Command::Origins(urls) => {
                lane.origins.set(urls);
                return;
            }
            Command::Relays(peers) => {
                self.relay_candidates = peers.into_iter().filter(|p| p.peer != me).collect();
                self.reserve_relays();
                return;
            }
            Command::Tracked(tracked) => {
                self.set_tracked(stream, tracked);
                return;
            }
        };
        lane.handle(input, now);
    }

    fn on_timeout(&mut self) {
        let now = self.clock.now();
        for lane in self.lanes.values_mut() {
            if lane.engine.poll_timeout() <= now.mono {
                lane.handle_timeout(now);
            }
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            // Whoever asked for the dial opens its stream; over a relay, once
            // DCUtR has had its chance to punch a direct connection.
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.links.connected(connection_id, peer_id, &endpoint);
                self.on_connected(peer_id, &endpoint);
                if endpoint.is_relayed() {
                    if let Some(streams) = self.dialing.remove(&peer_id) {
                        self.upgrading.entry(peer_id).or_default().extend(streams);
                        let tx = self.events_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(UPGRADE_WAIT).await;
                            let _ = tx.send(PeerEvent::UpgradeWaited(peer_id)).await;
                        });
                    }
                    return;
                }
                // Direct at last: a relay circuit is only the last resort.
                for relayed in self.links.relayed(&peer_id) {
                    self.swarm.close_connection(relayed);
                }
                let mut streams = self.dialing.remove(&peer_id).unwrap_or_default();
                streams.extend(self.upgrading.remove(&peer_id).unwrap_or_default());
                self.open_streams(peer_id, streams);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.links.closed(connection_id, peer_id, num_established);
                if num_established == 0 {
                    self.on_disconnected(&peer_id);
                    let now = self.clock.now();
                    for lane in self.lanes.values_mut() {
                        lane.close_session(peer_id, now);
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                own_address(&mut self.swarm, self.traversal, &address);
                self.links.listening(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.links.stopped_listening(&address),
            SwarmEvent::ListenerClosed { listener_id, .. }
            | SwarmEvent::ListenerError { listener_id, .. } => {
                if let Some(relay) = self.reserving.remove(&listener_id) {
                    tracing::debug!(%relay, "relay reservation ended");
                    self.links.relays.remove(&relay);
                    self.refused.insert(relay, Instant::now());
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                self.links.confirmed(address);
            }
            SwarmEvent::ExternalAddrExpired { address } => self.links.expired(&address),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.on_kad(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identify(peer_id, info),
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if !self.swarm.is_connected(&peer) => {
                tracing::debug!(%peer, "dial failed: {error}");
                self.on_disconnected(&peer);
                let now = self.clock.now();
                for stream in self.dialing.remove(&peer).unwrap_or_default() {
                    if let Some(lane) = self.lanes.get_mut(&stream) {
                        if !lane.sessions.contains_key(&peer) {
                            lane.handle(Input::DialFailed { peer }, now);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn on_peer_event(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::Lane(stream, ev) => self.on_lane_event(stream, ev),
            PeerEvent::Lingered(peer) => {
                if !self.has_session(&peer) {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
            PeerEvent::UpgradeWaited(peer) => {
                if let Some(streams) = self.upgrading.remove(&peer) {
                    self.settle_for_relay(peer, streams);
                }
            }
        }
    }

    fn on_lane_event(&mut self, stream: StreamId, ev: LaneEvent) {
        let now = self.clock.now();
        if let LaneEvent::WriterDone(peer, gen) = ev {
            // Either a session the engine ended has flushed its last
            // frames, or a live session's writer stalled or failed: in both
            // cases the session goes (freeing its degree slot), and the
            // connection with the peer's last session of any stream.
            if let Some(lane) = self.lanes.get_mut(&stream) {
                if lane.is_current(&peer, gen) {
                    lane.close_session(peer, now);
                }
            }
            if !self.has_session(&peer) {
                // Not at once: the muxer may still hold the stream's last
                // frames (a Refuse), and closing the connection under it
                // drops them.
                let tx = self.events_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(LINGER).await;
                    let _ = tx.send(PeerEvent::Lingered(peer)).await;
                });
            }
            return;
        }
        let Some(lane) = self.lanes.get_mut(&stream) else {
            return; // the stream was left: its streams close with it
        };
        match ev {
            LaneEvent::Accepted(peer, s) => self.open_session(stream, peer, s, false),
            LaneEvent::Opened(peer, s) => self.open_session(stream, peer, s, true),
            LaneEvent::OpenFailed(peer) => {
                if !lane.sessions.contains_key(&peer) {
                    lane.handle(Input::DialFailed { peer }, now);
                }
            }
            LaneEvent::Frame(peer, gen, body) => {
                self.links.count_received(&peer, body.len() as u64 + 4);
                if lane.is_current(&peer, gen) {
                    let relayed = self.links.kind(&peer) == Some(LinkKind::Relayed);
                    let input = Input::Frame {
                        from: peer,
                        body: body.into(),
                    };
                    lane.handle_frame(input, now, relayed);
                }
            }
            LaneEvent::Malformed(peer, gen) => {
                if lane.is_current(&peer, gen) {
                    lane.handle(Input::Malformed { from: peer }, now);
                }
            }
            LaneEvent::Closed(peer, gen) => {
                if lane.is_current(&peer, gen) {
                    lane.close_session(peer, now);
                }
            }
            LaneEvent::Infra(input) => lane.handle(input, now),
            LaneEvent::OriginDown(url) => {
                tracing::debug!(%url, "origin unreachable: passed over for a while");
                lane.origins.down(&url, std::time::Instant::now());
            }
            LaneEvent::WriterDone(..) => unreachable!("handled above"),
        }
    }

    fn has_session(&self, peer: &PeerId) -> bool {
        self.lanes.values().any(|l| l.sessions.contains_key(peer))
    }

    /// Drains the lanes whose engines were given something since the last
    /// drain (one, after most events).
    fn drain_all(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.extend(
            self.lanes
                .iter_mut()
                .filter_map(|(s, l)| l.take_touched().then_some(*s)),
        );
        for stream in touched.drain(..) {
            self.drain(stream);
        }
        self.touched = touched;
    }

    /// Carries out everything a lane's engine asked for.
    fn drain(&mut self, stream: StreamId) {
        loop {
            let Some(lane) = self.lanes.get_mut(&stream) else {
                return;
            };
            let Some(out) = lane.engine.poll_output() else {
                return;
            };
            match out {
                Output::Send { to, frame } => {
                    let (head, payload) = frame.parts();
                    self.links
                        .count_sent(&to, (head.len() + payload.len()) as u64);
                    let payload = payload.len() as u64;
                    if payload > 0 {
                        lane.gate.charge(payload);
                    }
                    let stuck = lane.sessions.get(&to).is_some_and(|s| !s.send(frame));
                    if stuck {
                        tracing::debug!(peer = %to, "send queue full: dropping the peer");
                        lane.close_session(to, self.clock.now());
                        let _ = self.swarm.disconnect_peer_id(to);
                    }
                }
                Output::Connect(info) => self.dial(stream, info),
                Output::Disconnect { peer, reason } => {
                    tracing::debug!(%peer, reason, "disconnecting");
                    // Dropping the session flushes its queue (a Refuse, say)
                    // and closes the stream; WriterDone closes the connection.
                    lane.sessions.remove(&peer);
                }
                Output::FetchInfra { seq } => self.fetch_infra(stream, seq),
                Output::FetchEdge => self.fetch_edge(stream),
                Output::Deliver(piece) => {
                    if let Some(f) = lane.on_piece.as_mut() {
                        f(&piece);
                    }
                }
            }
        }
    }

    fn lane_input(&mut self, stream: StreamId, input: Input<PeerId>) {
        let now = self.clock.now();
        if let Some(lane) = self.lanes.get_mut(&stream) {
            lane.handle(input, now);
        }
    }

    /// Fetches a piece from an HTTP origin in a task, bounded by a semaphore.
    fn fetch_infra(&mut self, stream: StreamId, seq: u64) {
        let tx = self.events_tx.clone();
        let Some(lane) = self.lanes.get(&stream) else {
            return;
        };
        if lane.origins.is_empty() {
            self.lane_input(stream, Input::InfraFailed { seq });
            return;
        }
        let tries = lane.origins.pick(seq, std::time::Instant::now());
        let http = self.http.clone();
        let permits = self.fetches.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let (piece, unreachable) = fetch_first(&http, &tries, seq).await;
            for origin in unreachable {
                let ev = LaneEvent::OriginDown(origin);
                let _ = tx.send(PeerEvent::Lane(stream, ev)).await;
            }
            let input = match piece {
                Some(piece) => Input::InfraPiece(piece),
                None => Input::InfraFailed { seq },
            };
            let _ = tx
                .send(PeerEvent::Lane(stream, LaneEvent::Infra(input)))
                .await;
        });
    }

    /// Asks the HTTP origins where the live edge is, in a task bounded by
    /// the same semaphore as piece fetches, with the same failover. No
    /// answer is no input: the engine asks again when it sees fit.
    fn fetch_edge(&mut self, stream: StreamId) {
        let tx = self.events_tx.clone();
        let Some(lane) = self.lanes.get(&stream) else {
            return;
        };
        // Successive asks start at successive origins, as pieces do.
        let turn = self.seed.wrapping_add(lane.engine.stats().edge_queries);
        let tries = lane.origins.pick(turn, std::time::Instant::now());
        if tries.is_empty() {
            return;
        }
        let http = self.http.clone();
        let permits = self.fetches.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let (edge, unreachable) = fetch_edge_first(&http, &tries, &stream).await;
            for origin in unreachable {
                let ev = LaneEvent::OriginDown(origin);
                let _ = tx.send(PeerEvent::Lane(stream, ev)).await;
            }
            if let Some(edge) = edge {
                let input = Input::LiveEdge(edge);
                let _ = tx
                    .send(PeerEvent::Lane(stream, LaneEvent::Infra(input)))
                    .await;
            }
        });
    }
}
