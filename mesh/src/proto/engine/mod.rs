//! The engine: one node's view of one stream's mesh.
//!
//! A data-driven overlay in the spirit of CoolStreaming/DONet: neighbours
//! exchange buffer maps and batched `Have`s, and a deadline-aware scheduler
//! pulls missing pieces from the neighbour with the lowest expected completion
//! time ([`schedule`]). The seeder injects each new piece once (push to
//! `push_fanout` neighbours), viewers spread it, and a piece still missing at
//! deadline − margin is fetched from infrastructure, so P2P never stalls a
//! viewer. Playback deadlines and the continuity measure live in [`playback`].
//!
//! Driving rule (as in quinn-proto and str0m): after every call to
//! [`Engine::handle`] or [`Engine::handle_timeout`], drain
//! [`Engine::poll_output`] until it returns `None`, then call
//! [`Engine::handle_timeout`] once `now` reaches [`Engine::poll_timeout`].

mod peers;
mod playback;
mod schedule;
mod session;
mod spread;
mod store;
mod timers;
mod window;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{de::DeserializeOwned, Serialize};

use super::{
    coords::Coord,
    piece::{Piece, StreamId, StreamKey},
    stats::Stats,
    upload::TokenBucket,
    wire::{self, Locality, Message, PeerInfo, Role},
};
use peers::{
    candidates::{Candidate, HANDSHAKE_TIMEOUT_MS},
    neighbors::Neighbors,
};
use playback::Playback;
use session::MAX_CANDIDATES;
use store::Store;
use timers::{Timer, Timers};

/// What a peer id must offer: the driver's `PeerId`, or a small integer in
/// the simulator. `Ord` keeps iteration deterministic.
pub trait PeerId: Clone + Ord + std::fmt::Debug + Serialize + DeserializeOwned {}
impl<T: Clone + Ord + std::fmt::Debug + Serialize + DeserializeOwned> PeerId for T {}

/// Tunables. Times in milliseconds.
#[derive(Clone, Debug)]
pub struct Config {
    pub stream: StreamId,
    pub role: Role,
    /// Active neighbours never exceed this; within [`DEGREE_CAPS`].
    pub max_degree: usize,
    /// Pieces older than this (behind the newest) are dropped from the store.
    pub window_ms: u64,
    /// Bound on stored payload, whatever the window says.
    pub max_store_bytes: usize,
    /// Deadline of a piece = produced-at + this (or more if start-up took longer).
    pub playout_delay_ms: u64,
    /// A piece still missing at deadline − margin is fetched from infrastructure.
    pub fallback_margin_ms: u64,
    /// Requests in flight per neighbour.
    pub max_inflight_per_peer: usize,
    /// Requests in flight to infrastructure over HTTP.
    pub max_infra_inflight: usize,
    /// Payload upload limit in bytes/s (`None`: unlimited).
    pub upload_limit: Option<u64>,
    /// Haves are batched over this interval; 0 (the default): each input's
    /// new pieces are announced as soon as it is handled.
    pub have_interval_ms: u64,
    /// Ping and neighbour upkeep interval.
    pub tick_ms: u64,
    /// A request not answered within this is asked again elsewhere.
    pub request_timeout_ms: u64,
    /// New pieces pushed eagerly to this many neighbours (seeders: 1, so each
    /// piece leaves the origin about once).
    pub push_fanout: usize,
    /// A piece pushed by infrastructure is relayed at once to this many
    /// viewer neighbours (best provisioned first) that lack it.
    pub relay_push: usize,
    /// Upload kbit/s advertised in the handshake.
    pub upload_kbps: u32,
    /// How neighbours are chosen (the full score, or an ablation).
    pub selection: Selection,
    /// This node's AS and subnet, when known (see [`Input::Located`]).
    pub loc: Locality,
    /// How often the neighbour set is reconsidered.
    pub optimize_ms: u64,
    /// Hand each new verified piece to the player as [`Output::Deliver`]
    /// (the default). The simulator, which has no player, turns it off.
    pub deliver: bool,
}

impl Config {
    /// Defaults for a viewer.
    pub fn viewer(stream: StreamId) -> Self {
        Config {
            stream,
            role: Role::Viewer,
            max_degree: 8,
            window_ms: 30_000,
            max_store_bytes: 64 << 20,
            playout_delay_ms: 3_000,
            fallback_margin_ms: 1_000,
            max_inflight_per_peer: 8,
            max_infra_inflight: 16,
            upload_limit: None,
            have_interval_ms: 0,
            tick_ms: 1_000,
            request_timeout_ms: 1_500,
            push_fanout: 0,
            relay_push: 2,
            upload_kbps: 0,
            selection: Selection::Full,
            loc: Locality::default(),
            optimize_ms: 5_000,
            deliver: true,
        }
    }

    /// Defaults for a seeder (origin).
    pub fn seeder(stream: StreamId) -> Self {
        Config {
            role: Role::Seeder,
            max_degree: 8,
            push_fanout: 1,
            ..Config::viewer(stream)
        }
    }
}

/// The degree caps an engine accepts (and so every CLI): at least one
/// neighbour, and few enough that every pass over them stays short.
pub const DEGREE_CAPS: std::ops::RangeInclusive<usize> = 1..=64;

/// Parses a degree cap given on a command line: a number in [`DEGREE_CAPS`].
pub fn parse_degree_cap(s: &str) -> Result<usize, String> {
    let (min, max) = (DEGREE_CAPS.start(), DEGREE_CAPS.end());
    s.parse::<usize>()
        .ok()
        .filter(|d| DEGREE_CAPS.contains(d))
        .ok_or_else(|| format!("'{s}' is not a neighbour count from {min} to {max}"))
}

/// A configuration the engine cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the stream key is invalid: {0}")]
    Key(#[from] super::PieceError),
    #[error("max_degree {0} is outside {min}..={max}", min = DEGREE_CAPS.start(), max = DEGREE_CAPS.end())]
    MaxDegree(usize),
}

impl Config {
    /// Whether the engine can run with this configuration.
    pub fn check(&self) -> Result<(), EngineError> {
        if !DEGREE_CAPS.contains(&self.max_degree) {
            return Err(EngineError::MaxDegree(self.max_degree));
        }
        Ok(())
    }
}

/// How a node chooses its neighbours: the full score and two ablations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Selection {
    /// Whatever chance gives: candidates in random order, never replaced.
    Random,
    /// RTT alone: measured median, or predicted from coordinates.
    Rtt,
    /// RTT median and stability, AS and subnet affinity, delivered rate
    /// and free capacity.
    #[default]
    Full,
}

/// A moment, as the driver reads its two clocks, in ms. Every timer runs
/// on `mono` (steady, any origin), so that a step of the system clock
/// neither stalls nor races the node; `wall` (ms since the Unix epoch, the
/// clock of the broadcaster's `produced_at` stamps) only judges pieces
/// against those stamps: lag, deadlines, the live edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time {
    pub mono: u64,
    pub wall: u64,
}

impl From<u64> for Time {
    /// One clock read as both: the simulator's virtual time.
    fn from(ms: u64) -> Time {
        Time { mono: ms, wall: ms }
    }
}

/// Something that happened, for the engine to handle.
#[derive(Clone, Debug)]
pub enum Input<P> {
    /// A session's transport is up. `outbound`: we dialled.
    Connected { peer: P, outbound: bool },
    /// The session is gone.
    Disconnected { peer: P },
    /// A dial we asked for failed.
    DialFailed { peer: P },
    /// A frame body (after the length prefix, already checked by
    /// [`wire::check_len`]).
    Frame { from: P, body: wire::Body },
    /// The peer broke framing (e.g. a length over the limit): the driver
    /// stopped reading it.
    Malformed { from: P },
    /// Peers we may connect to (tracker hints, peer exchange).
    Candidates(Vec<PeerInfo<P>>),
    /// The broadcaster cut a new piece (seeders only).
    Publish(Piece),
    /// Answer to [`Output::FetchInfra`].
    InfraPiece(Piece),
    /// [`Output::FetchInfra`] failed.
    InfraFailed { seq: u64 },
    /// The tracker told this node its AS and subnet.
    Located(Locality),
    /// The tracker told this node how many viewers the stream has.
    Swarm { viewers: u32 },
}

/// Something the engine wants done.
#[derive(Clone, Debug, PartialEq)]
pub enum Output<P> {
    /// Write this frame (length prefix included) to the peer.
    Send { to: P, frame: wire::Frame },
    /// Dial this peer; answer with `Connected` or `DialFailed`.
    Connect(PeerInfo<P>),
    /// Close the session.
    Disconnect { peer: P, reason: &'static str },
    /// Fetch this piece from infrastructure (HTTP origin); answer with
    /// `InfraPiece` or `InfraFailed`.
    FetchInfra { seq: u64 },
    /// A verified piece, new here, for the player.
    Deliver(Piece),
}

/// One node's protocol state for one stream.
#[derive(Debug)]
pub struct Engine<P: PeerId> {
    cfg: Config,
    key: StreamKey,
    rng: ChaCha8Rng,
    joined_at: u64,
    store: Store,
    /// Segment starts heard of (from buffer maps/haves) or held.
    segment_starts: BTreeSet<u64>,
    /// When each piece not yet held was first heard of: stands in for its
    /// produced-at until the piece arrives.
    heard: BTreeMap<u64, u64>,
    /// Highest seq any neighbour announced or we hold.
    newest_known: Option<u64>,
    neighbors: Neighbors<P>,
    candidates: BTreeMap<P, Candidate<P>>,
    /// Pieces requested and when: from a neighbour, or from infra (`None`).
    inflight: BTreeMap<u64, Ask<P>>,
    playback: Playback,
    upload: TokenBucket,
    /// Requests waiting for upload budget.
    upload_queue: VecDeque<(P, u64)>,
    push_next: usize,
    outputs: VecDeque<Output<P>>,
    timers: Timers,
    /// The stream's pace, from a long enough run of held pieces.
    ms_per_piece: Option<f64>,
    /// Dials made so far (every fourth goes to a random candidate).
    dials: u64,
    /// When a new verified piece last arrived (announcements prove
    /// nothing: a peer can announce what it does not have).
    last_news: u64,
    /// The neighbourhood went quiet: dial the next candidates at random.
    starved: bool,
    /// When a neighbour was last dropped to let a newcomer in.
    last_evict: Option<u64>,
    /// A swap under way: the closer candidate is dialled first, and the
    /// neighbour it replaces goes only once it has accepted.
    swap: Option<Swap<P>>,
    /// The candidate being probed for an RTT sample (see `probe`).
    probe: Option<P>,
    /// Probes made so far (which one it is picks far, random or close
    /// candidates, `probe`).
    probes: u64,
    /// Probes still to start in this tick's run (`PROBES_PER_TICK`).
    probe_budget: u32,
    /// Something the scheduler acts on changed since it last ran.
    news: bool,
    /// A uniform draw in [0, 1) made once: this node keeps one long link
    /// (a random dial in four, its slowest neighbour never swapped) while
    /// the draw is under [`long_link_share`] of the swarm's size.
    long_link_draw: f32,
    /// Viewers in the swarm, as the tracker last said.
    swarm_viewers: Option<u32>,
    /// Where this node is in the RTT map (Vivaldi).
    coord: Coord,
    /// The wall clock minus the monotonic one, as last read (`Time`).
    wall_offset: i128,
    stats: Stats,
}

/// A neighbour swap in progress (see `optimize_neighbors`).
#[derive(Clone, Debug)]
struct Swap<P> {
    /// The candidate dialled.
    to: P,
    /// The neighbour it replaces once it accepts.
    victim: P,
}

/// A piece asked of a neighbour (`from: None`: of infrastructure over HTTP).
#[derive(Clone, Debug)]
struct Ask<P> {
    from: Option<P>,
    at: u64,
    /// Asked elsewhere if not answered by then.
    until: u64,
}

/// The first [`wire::MAX_LIST`] entries of `pending`, taken out of it.
fn take_batch(pending: &mut Vec<u64>) -> Vec<u64> {
    if pending.len() <= wire::MAX_LIST {
        std::mem::take(pending)
    } else {
        pending.drain(..wire::MAX_LIST).collect()
    }
}

/// Below this many viewers every node keeps a long link: a small swarm's
/// regions hold too few peers to carry the stream on their own (at 100
/// viewers over five regions, one node in four keeping one costs 5–10 %
/// of offload to fallback).
const LONG_LINK_ALL_BELOW: f32 = 100.0;
/// The share of nodes that keep a long link in a mid-size swarm (400 to
/// 800 viewers), and while the swarm's size is unknown.
const LONG_LINK_SHARE: f32 = 0.25;
/// Long links a swarm of more than 800 viewers keeps, about: there the
/// seeder's spread (see `spread`) carries the stream into every region.
const LONG_LINKS: f32 = 200.0;

/// The share of nodes that keep a long link in a swarm of `viewers`:
/// all of them up to [`LONG_LINK_ALL_BELOW`], then `100 / viewers` down
/// to [`LONG_LINK_SHARE`]; past 800 viewers, [`LONG_LINKS`] in all
/// (0.1 at 2,000, 0.02 at 10,000). Long links once joined the regions;
/// in a large swarm the seeder's pushes enter every region at once, and
/// what is left for long links is to teach the coordinates the far side
/// of the map. At 10,000 viewers one in ten keeping a far neighbour cost
/// 0.1 of `neighbor_rtt_ratio` over one in fifty, for no offload.
fn long_link_share(viewers: Option<u32>) -> f32 {
    match viewers {
        Some(n) if n > 0 => {
            let n = n as f32;
            (LONG_LINK_ALL_BELOW / n)
                .max(LONG_LINK_SHARE.min(LONG_LINKS / n))
                .min(1.0)
        }
        _ => LONG_LINK_SHARE,
    }
}

/// Peer exchange interval.
const EXCHANGE_MS: u64 = 5_000;

/// How often a viewer starts a run of probes for RTT samples.
const PROBE_MS: u64 = 1_000;
/// Probes in a run, one after the other: each starts when the previous is
/// answered. At 2,000 simulated viewers, three rather than one took the
/// median coordinate error from 0.173 to 0.118, and `neighbor_rtt_ratio`
/// from 1.329 to 1.288 (the better map ranks close candidates better), for
/// 3 % more simulated events.
const PROBES_PER_TICK: u32 = 3;
/// After this long in the mesh a viewer probes once per [`PROBE_MS`], not
/// [`PROBES_PER_TICK`] times: its coordinate has settled and its
/// neighbours are chosen, and one probe a second still meets newcomers and
/// keeps the map current. Each probe is a session set up and torn down
/// (a dial, two `Hello`s, a `Refuse`); at 10,000 simulated viewers probes
/// were a fifth of all events.
const PROBE_SETTLE_MS: u64 = 20_000;

/// Pause before asking infrastructure again for a piece it did not have.
const INFRA_RETRY_MS: u64 = 250;

/// Requests queued for upload budget, at most.
const UPLOAD_QUEUE: usize = 64;
/// How often the scheduler runs without news before it can tell when it
/// is next due (no stream start or pace known yet).
const SCHEDULE_MS: u64 = 100;
/// Once it can tell, it runs when next due (a request's timeout, a piece's
/// fallback margin: `schedule::next_due`), and at least this often. At
/// 2,000 simulated viewers the 100 ms period was a tenth of all events.
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
        let upload = TokenBucket::new(cfg.upload_limit, now);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let long_link_draw = rand::Rng::gen::<f32>(&mut rng);
        Engine {
            key,
            rng,
            joined_at: now,
            store: Store::default(),
            segment_starts: BTreeSet::new(),
            heard: BTreeMap::new(),
            newest_known: None,
            neighbors: Neighbors::default(),
            candidates: BTreeMap::new(),
            inflight: BTreeMap::new(),
            playback: Playback::new(cfg.role == Role::Viewer),
            upload,
            upload_queue: VecDeque::new(),
            push_next: 0,
            outputs: VecDeque::new(),
            timers: Timers::starting(now, cfg.optimize_ms),
            dials: 0,
            last_news: now,
            starved: false,
            last_evict: None,
            swap: None,
            probe: None,
            probes: 0,
            probe_budget: 0,
            news: false,
            long_link_draw,
            swarm_viewers: None,
            ms_per_piece: None,
            coord: Coord::default(),
            wall_offset: i128::from(time.wall) - i128::from(time.mono),
            stats: Stats::default(),
            cfg,
        }
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

    /// Whether this node keeps a long link (see [`long_link_share`]).
    fn long_link(&self) -> bool {
        self.long_link_draw < long_link_share(self.swarm_viewers)
    }

    /// In the mesh for [`PROBE_SETTLE_MS`] or more: the coordinate has
    /// settled and the neighbours are chosen (fewer, closer probes).
    fn settled(&self, now: u64) -> bool {
        now >= self.joined_at + PROBE_SETTLE_MS
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
    pub fn warm(&self, from: Option<&P>) -> u64 {
        let mut sum = self.timers.next_wake().unwrap_or(0);
        if let Some(n) = from.and_then(|p| self.neighbors.get(p)) {
            sum = sum.wrapping_add(n.connected_at);
        }
        if let Some((&s, _)) = self.heard.first_key_value() {
            sum = sum.wrapping_add(s);
        }
        if let Some((&s, _)) = self.inflight.first_key_value() {
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
        if let Some(u) = self.upload_ready_at() {
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
                if let Some(c) = self.candidates.get_mut(&peer) {
                    c.back_off(now);
                }
                if self.swap.as_ref().is_some_and(|s| s.to == peer) {
                    self.swap = None;
                }
                if self.probe.as_ref() == Some(&peer) {
                    self.probe = None;
                }
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
            Input::Publish(piece) => self.publish(piece, now),
            Input::InfraPiece(piece) => {
                let seq = piece.header.seq;
                if matches!(self.inflight.get(&seq), Some(Ask { from: None, .. })) {
                    self.inflight.remove(&seq);
                }
                if self.key.verify(&piece).is_ok() {
                    self.accept(piece, None, true, now);
                } else {
                    self.stats.bad_pieces += 1;
                }
            }
            Input::Located(loc) => self.cfg.loc = loc,
            Input::Swarm { viewers } => self.swarm_viewers = Some(viewers),
            Input::InfraFailed { seq } => {
                self.news = true;
                // Not at the origin (yet): ask again after a pause, not at
                // once, or a piece nobody has becomes a busy loop.
                if let Some(a) = self.inflight.get_mut(&seq) {
                    if a.from.is_none() {
                        a.until = a.until.min(now + INFRA_RETRY_MS);
                    }
                }
            }
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

    /// Notes where the wall clock stands against the monotonic one, and
    /// returns the monotonic time, which every timer runs on.
    fn read_clock(&mut self, time: Time) -> u64 {
        self.wall_offset = i128::from(time.wall) - i128::from(time.mono);
        time.mono
    }

    /// The wall-clock time at monotonic time `mono`.
    fn wall(&self, mono: u64) -> u64 {
        (i128::from(mono) + self.wall_offset).clamp(0, u64::MAX.into()) as u64
    }

    /// The monotonic time at wall-clock time `wall` (a piece's deadline,
    /// say, as a timer).
    fn mono(&self, wall: u64) -> u64 {
        (i128::from(wall) - self.wall_offset).clamp(0, u64::MAX.into()) as u64
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

    /// A seeder's new piece: store it, push it to `push_fanout` neighbours
    /// (viewers first, round robin) and announce it to the rest.
    fn publish(&mut self, piece: Piece, now: u64) {
        if self.key.verify(&piece).is_err() || self.store.contains_key(&piece.header.seq) {
            return;
        }
        self.learn_pace();
        // Push to `spread` viewers: all of them when there are no more (they
        // were chosen to cover the map), else the better-provisioned half
        // in turn, where the first copies can be passed on quickly.
        let mut viewers: Vec<(u32, P)> = self
            .neighbors
            .active_viewers()
            .map(|(p, n)| (n.capacity(), p.clone()))
            .collect();
        let fanout = self.spread();
        if fanout < viewers.len() {
            viewers.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            viewers.truncate(viewers.len().div_ceil(2));
        }
        let viewers: Vec<P> = viewers.into_iter().map(|(_, p)| p).collect();
        let seq = piece.header.seq;
        for i in 0..fanout.min(viewers.len()) {
            let to = viewers[(self.push_next + i) % viewers.len()].clone();
            if let Some(n) = self.neighbors.get_mut(&to) {
                n.has.insert(seq);
            }
            self.send(&to, &Message::Piece(piece.clone()));
        }
        self.push_next = self.push_next.wrapping_add(1);
        self.store_piece(piece, now);
    }

    /// A verified piece arrived from `from` (`None`: infra over HTTP).
    fn accept(&mut self, piece: Piece, from: Option<&P>, from_infra: bool, now: u64) {
        let seq = piece.header.seq;
        let len = piece.data.len() as u64;
        let held = self.store.contains_key(&seq);
        let lag = self.wall(now).saturating_sub(piece.header.produced_at);
        if !self.stats.count_receipt(len, held, from_infra, lag) {
            return;
        }
        if let Some(p) = from {
            if let Some(n) = self.neighbors.get_mut(p) {
                n.has.insert(seq);
            }
        }
        if self.cfg.deliver {
            self.outputs.push_back(Output::Deliver(piece.clone()));
        }
        self.store_piece(piece, now);
    }

    /// Stores a piece, queues `Have`s for neighbours that lack it, and
    /// prunes the store to the window.
    fn store_piece(&mut self, piece: Piece, now: u64) {
        let seq = piece.header.seq;
        self.news = true;
        let first = piece.header.is_first();
        if self.store.last().is_none() {
            self.forget_outside_window(seq);
        }
        self.playback
            .arrived(seq, piece.header.produced_at, self.wall(now));
        self.heard.remove(&seq);
        if first {
            self.segment_starts.insert(seq);
        } else if self.playback.start == Some(seq) {
            // Announced as a segment start, and it is not one: choose again.
            self.segment_starts.remove(&seq);
            self.playback.start = None;
        }
        self.newest_known = self.newest_known.max(Some(seq));
        self.last_news = now;
        self.stats.newest_seq = self.stats.newest_seq.max(Some(seq));
        self.store.insert(self.key.intern(piece));
        for n in self.neighbors.values_mut() {
            if n.is_active() && !n.has.contains(seq) {
                n.pending_have.push(seq);
                if first {
                    n.pending_starts.push(seq);
                }
            }
        }
        if !self.timers.is_armed(Timer::Have) {
            self.timers
                .set(Timer::Have, now + self.cfg.have_interval_ms);
        }
        let (delay, margin) = (self.cfg.playout_delay_ms, self.cfg.fallback_margin_ms);
        let wall = self.wall(now);
        if self
            .playback
            .check_startup(&self.store, wall, delay, margin)
        {
            self.stats.startup_ms = Some(now.saturating_sub(self.joined_at));
        }
        self.prune();
    }

    /// The first verified piece, `seq`, fixes the window (`SeqWindow`):
    /// whatever announcements made us believe outside it is forgotten, as
    /// the window would have refused it.
    fn forget_outside_window(&mut self, seq: u64) {
        let window = window::SeqWindow::around(Some(seq));
        self.heard.retain(|&s, _| window.admits(s));
        self.segment_starts.retain(|&s| window.admits(s));
        if self.playback.start.is_some_and(|s| !window.admits(s)) {
            self.playback.start = None;
        }
        if self.newest_known.is_some_and(|s| !window.admits(s)) {
            let heard = self.heard.last_key_value().map(|(&s, _)| s);
            self.newest_known = heard.max(Some(seq));
        }
    }

    /// Drops pieces that fell out of the window or over the byte bound.
    fn prune(&mut self) {
        let newest_at = match self.store.last() {
            Some(p) => p.header.produced_at,
            None => return,
        };
        while let Some(oldest) = self.store.first() {
            let expired = oldest.header.produced_at + self.cfg.window_ms < newest_at;
            if !expired && self.store.bytes() <= self.cfg.max_store_bytes {
                break;
            }
            self.store.pop_first();
        }
        if let Some(low) = self.store.first().map(|p| p.header.seq) {
            // Both are ordered: forgetting what is below `low` is popping.
            while self.segment_starts.first().is_some_and(|&s| s < low) {
                self.segment_starts.pop_first();
            }
            while self.heard.first_key_value().is_some_and(|(&s, _)| s < low) {
                self.heard.pop_first();
            }
            for n in self.neighbors.values_mut() {
                n.has.retain_from(low);
            }
        }
    }

    fn flush_haves(&mut self, now: u64) {
        self.timers.stop(Timer::Have);
        // One pass over the neighbours (a lookup per neighbour would read
        // the map again); frames go out in neighbour order.
        let mut haves: Vec<(P, Message<P>)> = Vec::new();
        let mut more = false;
        for (p, n) in self.neighbors.iter_mut() {
            if n.pending_have.is_empty() {
                continue;
            }
            // Anything over a frame's bound goes in the next batch; a
            // batch within it is handed over whole, not copied.
            let seqs = take_batch(&mut n.pending_have);
            let starts = take_batch(&mut n.pending_starts);
            more |= !n.pending_have.is_empty() || !n.pending_starts.is_empty();
            haves.push((
                p.clone(),
                Message::Have {
                    seqs,
                    segment_starts: starts,
                },
            ));
        }
        if more {
            self.timers
                .set(Timer::Have, now + self.cfg.have_interval_ms);
        }
        for (p, msg) in &haves {
            self.send(p, msg);
        }
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
        self.fill_neighbors(now);
        if self.timers.is_due(Timer::Probe, now) {
            self.timers.set(Timer::Probe, now + PROBE_MS);
            self.probe_budget = if self.settled(now) {
                0
            } else {
                PROBES_PER_TICK - 1
            };
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

    fn upload_ready_at(&self) -> Option<u64> {
        let (_, seq) = self.upload_queue.front()?;
        let len = self.store.get(seq).map_or(0, |p| p.data.len());
        Some(self.upload.ready_at(len as u64))
    }

    /// Serves queued requests as the upload budget allows.
    fn drain_upload(&mut self, now: u64) {
        while let Some((peer, seq)) = self.upload_queue.front().cloned() {
            let Some(piece) = self.store.get(&seq) else {
                self.upload_queue.pop_front();
                self.send(&peer, &Message::Missing { seqs: vec![seq] });
                continue;
            };
            if !self.upload.take(piece.data.len() as u64, now) {
                break;
            }
            self.upload_queue.pop_front();
            if self.neighbors.get(&peer).is_some_and(|n| n.is_active()) {
                // Encoded from the store: the piece is not cloned to be sent.
                let (frame, payload) = (wire::encode_piece_frame(piece), piece.data.len());
                self.send_frame(&peer, frame, payload);
            }
        }
    }
}

#[cfg(test)]
mod tests;
