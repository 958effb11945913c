//! The engine: one node's view of one stream's mesh.
//!
//! A data-driven overlay in the spirit of CoolStreaming/DONet: neighbours
//! exchange buffer maps and batched `Have`s, and a deadline-aware scheduler
//! pulls missing pieces from the neighbour with the lowest expected completion
//! time ([`schedule`]). The seeder injects each new piece once (push to
//! `push_fanout` neighbours), viewers spread it, and a piece still missing at
//! deadline − margin is fetched from infrastructure, so P2P never stalls a
//! viewer. Playback deadlines and the continuity measure live in [`playback`].
//! Reflectors take full copies of every piece from several parents and
//! pass each new one on at once to the reflectors they feed ([`feeds`]).
//!
//! Driving rule (as in quinn-proto and str0m): after every call to
//! [`Engine::handle`] or [`Engine::handle_timeout`], drain
//! [`Engine::poll_output`] until it returns `None`, then call
//! [`Engine::handle_timeout`] once `now` reaches [`Engine::poll_timeout`].

mod config;
mod edge;
mod edge_query;
mod feeds;
mod io;
mod peers;
mod playback;
mod receive;
mod requests;
mod schedule;
mod session;
mod spread;
mod store;
mod supply;
mod timers;
mod uploads;
mod window;

use std::collections::VecDeque;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{de::DeserializeOwned, Serialize};

use super::{
    coords::Coord,
    piece::{Piece, StreamKey},
    stats::Stats,
    wire::{self, Message, Role},
};
pub use config::{parse_degree_cap, Config, EngineError, Selection, DEGREE_CAPS};
use edge::Edge;
use edge_query::EdgeQuery;
use io::WallClock;
pub use io::{Input, LiveEdge, Output, Time};
use peers::{
    candidates::{Candidates, HANDSHAKE_TIMEOUT_MS, MAX_CANDIDATES},
    neighbors::Neighbors,
    parents::Parents,
};
use peers::{
    probe::{Prober, PROBES_PER_TICK, PROBE_MS},
    selection::Selector,
};
use playback::Playback;
use requests::Requests;
use store::Store;
use timers::{Timer, Timers};
use uploads::Uploads;

/// What a peer id must offer: the driver's `PeerId`, or a small integer in
/// the simulator. `Ord` keeps iteration deterministic.
pub trait PeerId: Clone + Ord + std::fmt::Debug + Serialize + DeserializeOwned {}
impl<T: Clone + Ord + std::fmt::Debug + Serialize + DeserializeOwned> PeerId for T {}

/// One node's protocol state for one stream.
#[derive(Debug)]
pub struct Engine<P: PeerId> {
    cfg: Config,
    key: StreamKey,
    rng: ChaCha8Rng,
    joined_at: u64,
    store: Store,
    edge: Edge,
    /// When to ask infrastructure where the edge is, for want of peers.
    edge_query: EdgeQuery,
    neighbors: Neighbors<P>,
    candidates: Candidates<P>,
    /// Whom a reflector takes the stream from (see `feeds`).
    parents: Parents<P>,
    requests: Requests<P>,
    playback: Playback,
    uploads: Uploads<P>,
    push_next: usize,
    outputs: VecDeque<Output<P>>,
    timers: Timers,
    selector: Selector<P>,
    prober: Prober<P>,
    /// Something the scheduler acts on changed since it last ran.
    news: bool,
    /// Where this node is in the RTT map (Vivaldi).
    coord: Coord,
    clock: WallClock,
    stats: Stats,
}

/// Peer exchange interval.
const EXCHANGE_MS: u64 = 5_000;

/// Pause before asking infrastructure again for a piece it did not have.
const INFRA_RETRY_MS: u64 = 250;

/// How often the scheduler runs without news before it can tell when it
/// is next due (no stream start or pace known yet).
const SCHEDULE_MS: u64 = 100;
/// Once it can tell, it runs when next due (a request's timeout, a piece's
/// fallback margin: `schedule::next_due`), and at least this often: a
/// fixed period wakes every viewer for nothing (docs/tuning.md,
/// "Scheduler timing").
const SCHEDULE_IDLE_MS: u64 = 1_000;

impl<P: PeerId> Engine<P> {
    /// A new engine; `seed` makes every random choice reproducible.
    pub fn new(cfg: Config, seed: u64, now: impl Into<Time>) -> Result<Self, EngineError> {
        cfg.check()?;
        let key = StreamKey::new(cfg.stream)?;
        Ok(Self::with_key(cfg, key, seed, now))
    }

    /// A new engine verifying with `key` (e.g. [`StreamKey::shared`]);
    /// `key` must be the key of `cfg.stream`, and `cfg` pass
    /// [`Config::check`].
    pub fn with_key(cfg: Config, key: StreamKey, seed: u64, now: impl Into<Time>) -> Self {
        assert_eq!(key.id(), cfg.stream, "the stream's own key");
        assert!(cfg.check().is_ok(), "a checked configuration");
        let time = now.into();
        let now = time.mono;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let long_link_draw = rand::Rng::gen::<f32>(&mut rng);
        let mut engine = Engine {
            key,
            rng,
            joined_at: now,
            store: Store::default(),
            edge: Edge::default(),
            edge_query: EdgeQuery::starting(now),
            neighbors: Neighbors::default(),
            candidates: Candidates::default(),
            parents: Parents::default(),
            requests: Requests::default(),
            playback: Playback::new(cfg.role == Role::Viewer),
            uploads: Uploads::new(cfg.upload_limit, now),
            push_next: 0,
            outputs: VecDeque::new(),
            timers: Timers::starting(now, cfg.optimize_ms),
            selector: Selector::new(long_link_draw, now),
            prober: Prober::default(),
            news: false,
            coord: Coord::default(),
            clock: WallClock::new(time),
            stats: Stats::default(),
            cfg,
        };
        engine.watch_edge(now);
        engine
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// This node's network coordinate.
    pub fn coord(&self) -> Coord {
        self.coord
    }

    /// A held piece, for serving it over HTTP or to a player.
    pub fn piece(&self, seq: u64) -> Option<&Piece> {
        self.store.get(&seq)
    }

    /// Active neighbours.
    pub fn neighbors(&self) -> impl Iterator<Item = &P> {
        self.neighbors.active().map(|(p, _)| p)
    }

    /// A neighbour's median RTT, when measured.
    pub fn neighbor_rtt_ms(&self, peer: &P) -> Option<u64> {
        self.neighbors.get(peer).and_then(|n| n.rtt.median())
    }

    /// Active neighbours now.
    pub fn degree(&self) -> usize {
        self.neighbors.degree()
    }

    /// Reads, and changes nothing, what an input from `from` (or a timer,
    /// when `None`) reads first: the neighbour's record, the ends of the
    /// store and of the lists of pieces heard of and asked for. A driver
    /// that runs many engines (the simulator) calls it for its next few
    /// events at once, so that their cache misses overlap instead of
    /// stalling one event at a time. The sum is only to be kept alive.
    pub(crate) fn warm(&self, from: Option<&P>) -> u64 {
        let mut sum = self.timers.next_wake().unwrap_or(0);
        if let Some(n) = from.and_then(|p| self.neighbors.get(p)) {
            sum = sum.wrapping_add(n.connected_at);
        }
        if let Some(s) = self.edge.first_heard() {
            sum = sum.wrapping_add(s);
        }
        if let Some(s) = self.requests.first_seq() {
            sum = sum.wrapping_add(s);
        }
        if let Some(p) = self.store.last() {
            sum = sum.wrapping_add(p.header.produced_at);
        }
        sum
    }

    /// Next output to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    /// When [`Engine::handle_timeout`] must be called next, on the
    /// monotonic clock (`Time::mono`).
    pub fn poll_timeout(&self) -> u64 {
        let mut t = self.timers.next_wake().unwrap_or(u64::MAX);
        if let Some(u) = self.uploads.ready_at(&self.store) {
            t = t.min(u);
        }
        t
    }

    /// Handles one input.
    pub fn handle(&mut self, input: Input<P>, now: impl Into<Time>) {
        let now = self.read_clock(now.into());
        match input {
            Input::Connected { peer, outbound } => self.on_connected(peer, outbound, now),
            Input::Disconnected { peer } => self.on_disconnected(&peer, now),
            Input::DialFailed { peer } => {
                self.candidates.failed(&peer, now);
                self.parents.lost(&peer, now);
                self.selector.swap_failed(&peer);
                self.prober.ended(&peer);
            }
            Input::Frame { from, body } => self.on_frame(from, body, now),
            Input::Malformed { from } => {
                if self.neighbors.contains_key(&from) {
                    self.violation(&from, "malformed frame", now);
                }
            }
            // Hints are checked as a peer list on the wire is, before they
            // are dialled or passed on in `Peers` and `Refuse`.
            Input::Candidates(mut peers) => {
                peers.retain(wire::is_valid_peer_info);
                peers.truncate(MAX_CANDIDATES);
                self.add_candidates(peers)
            }
            Input::Parents(peers) => self.set_parents(peers, now),
            Input::Reflected(on) => self.set_reflected(on, now),
            Input::Publish(piece) => self.publish(piece, now),
            Input::InfraPiece(piece) => {
                let seq = piece.header.seq;
                self.requests.close(seq, None);
                if self.key.verify(&piece).is_ok() {
                    self.accept(piece, None, true, now);
                } else {
                    self.stats.bad_pieces += 1;
                }
            }
            Input::Located(loc) => self.cfg.loc = loc,
            Input::Swarm { viewers } => self.selector.set_swarm_viewers(viewers),
            Input::Budget { bps } => self.uploads.set_budget(bps.map(|b| b / 8), now),
            Input::InfraFailed { seq } => {
                self.news = true;
                // Not at the origin (yet): ask again after a pause.
                self.requests.retry_infra_by(seq, now + INFRA_RETRY_MS);
            }
            Input::LiveEdge(edge) => self.on_live_edge(edge, now),
        }
        self.after_input(now);
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: impl Into<Time>) {
        let now = self.read_clock(now.into());
        if self.timers.is_due(Timer::Tick, now) {
            if self.timers.is_due(Timer::Optimize, now) {
                self.timers.set(Timer::Optimize, now + self.cfg.optimize_ms);
                self.prune_candidates();
                self.optimize_neighbors(now);
            }
            self.tick(now);
            if self.timers.is_due(Timer::EdgeQuery, now) {
                self.query_edge(now);
            }
            self.timers.set(Timer::Tick, now + self.cfg.tick_ms);
        }
        if self.timers.is_due(Timer::Have, now) {
            self.flush_haves(now);
        }
        self.drain_upload(now);
        self.playback_check(now);
        if self.timers.is_due(Timer::Schedule, now) {
            self.schedule(now);
        }
    }

    /// Notes where the wall clock stands and returns the monotonic time,
    /// which every timer runs on.
    fn read_clock(&mut self, time: Time) -> u64 {
        self.clock.read(time)
    }

    /// The wall-clock time at monotonic time `mono`.
    fn wall(&self, mono: u64) -> u64 {
        self.clock.wall(mono)
    }

    /// The monotonic time at wall-clock time `wall` (a piece's deadline,
    /// say, as a timer).
    fn mono(&self, wall: u64) -> u64 {
        self.clock.mono(wall)
    }

    fn after_input(&mut self, now: u64) {
        // Without a batching interval, the pieces this input brought are
        // announced at once, before anything else it causes.
        if self.timers.is_due(Timer::Have, now) {
            self.flush_haves(now);
        }
        self.drain_upload(now);
        // Deadlines move only with news about pieces; otherwise the next
        // timer run judges them (`Playback::arrived` keeps that exact).
        if self.news {
            self.playback_check(now);
        }
        // Only news about pieces or neighbours changes what to ask of whom;
        // the timed run (`Timer::Schedule`) covers timeouts and deadlines.
        if std::mem::take(&mut self.news) {
            self.schedule(now);
        }
    }

    /// Queues a frame, counting payload and overhead bytes sent.
    fn send(&mut self, to: &P, msg: &Message<P>) {
        let frame = wire::encode_frame(msg);
        let payload = match msg {
            Message::Piece(p) => p.data.len(),
            _ => 0,
        };
        self.send_frame(to, frame, payload);
    }

    /// Queues an encoded frame carrying `payload` bytes of piece data.
    fn send_frame(&mut self, to: &P, frame: wire::Frame, payload: usize) {
        self.stats.payload_sent += payload as u64;
        self.stats.overhead_sent += (frame.len() - payload) as u64;
        self.outputs.push_back(Output::Send {
            to: to.clone(),
            frame,
        });
    }

    /// Upkeep once per tick: pings, neighbour set, dial timeouts.
    fn tick(&mut self, now: u64) {
        let peers: Vec<P> = self.neighbors.active().map(|(p, _)| p.clone()).collect();
        let coord = self.coord;
        for p in &peers {
            let nonce = self.rng_u64();
            if let Some(n) = self.neighbors.get_mut(p) {
                n.ping = Some((nonce, now));
            }
            self.send(p, &Message::Ping { nonce, coord });
        }
        if self.timers.is_due(Timer::Exchange, now) {
            self.timers.set(Timer::Exchange, now + EXCHANGE_MS);
            self.exchange_peers(&peers);
        }
        // Sessions that never finished the handshake.
        let stale: Vec<P> = self
            .neighbors
            .iter()
            .filter(|(_, n)| !n.is_active() && now >= n.connected_at + HANDSHAKE_TIMEOUT_MS)
            .map(|(p, _)| p.clone())
            .collect();
        for p in stale {
            self.drop_peer(&p, "handshake timeout", now);
        }
        self.replace_if_starved(now);
        self.dial_parents(now);
        self.fill_neighbors(now);
        if self.timers.is_due(Timer::Probe, now) {
            self.timers.set(Timer::Probe, now + PROBE_MS);
            let more = if self.settled(now) {
                0
            } else {
                PROBES_PER_TICK - 1
            };
            self.prober.start_run(more);
            self.probe(now);
        }
        self.update_neighbor_stats();
    }

    fn update_neighbor_stats(&mut self) {
        let (sum, count) = self
            .neighbors
            .values()
            .filter(|n| n.is_active())
            .filter_map(|n| n.rtt.median())
            .fold((0u64, 0usize), |(sum, count), rtt| (sum + rtt, count + 1));
        self.stats.neighbors = self.degree() as u32;
        self.stats.coord = Some(self.coord);
        self.stats.neighbor_rtt_ms = if count == 0 {
            0.0
        } else {
            sum as f64 / count as f64
        };
    }

    fn rng_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.rng)
    }

    fn rng_f32(&mut self) -> f32 {
        rand::Rng::gen(&mut self.rng)
    }
}

#[cfg(test)]
mod tests;
