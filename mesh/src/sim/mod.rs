//! A deterministic discrete-event simulator that runs the real
//! [`crate::proto::Engine`]s in virtual time (after iroh-gossip's `sim.rs`).
//!
//! Events sit in a heap ordered by (time, insertion number); virtual time
//! jumps to the next one. A piece frame sent at `t` by node `a` leaves after
//! `a`'s upload queue drains (when an upload cap is set) and arrives at
//! departure + one-way delay; control frames wait for one packet at most
//! (streams interleave at packet granularity). Fallback fetches reach an HTTP origin with a
//! fixed delay. The same seed gives the same run, byte for byte.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use bytes::Bytes;
use libp2p::identity::Keypair;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::proto::{
    piece::flags, wire::Frame, Config, Coord, Engine, Input, Locality, Output, PeerInfo, Piece,
    Selection, Signer, Stats, StreamKey, Summary, MAX_PIECE_BYTES,
};

/// Node id in the simulator; the seeder is node 0.
pub type NodeId = u32;

/// A simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Viewers (the seeder comes on top).
    pub viewers: usize,
    pub duration_ms: u64,
    pub seed: u64,
    pub bitrate_bps: u64,
    pub segment_ms: u64,
    /// Largest piece the seeder cuts (pieces of a segment are equal sizes).
    pub piece_bytes: usize,
    /// One-way delay between two nodes is drawn once per pair from this range.
    pub one_way_ms: (u64, u64),
    /// One-way delay to the HTTP origin used for fallback.
    pub origin_one_way_ms: u64,
    /// Viewer upload cap, bits/s (`None`: unlimited).
    pub viewer_upload_bps: Option<u64>,
    /// Viewers join evenly over this span.
    pub join_over_ms: u64,
    /// Candidates handed out per tracker answer.
    pub hints: usize,
    /// Peers the tracker ranks per answer: a random sample of this many
    /// joined peers (the real tracker ranks a window of up to 4,096).
    pub tracker_window: usize,
    /// Viewers replaced per minute, as a share of all viewers (0.1: 10 %):
    /// a random viewer leaves and a new one joins in its place.
    pub churn_per_min: f64,
    pub tracker_interval_ms: u64,
    /// Viewer engine settings (stream id is filled in).
    pub max_degree: usize,
    /// How viewers choose neighbours (the full score or an ablation).
    pub selection: Selection,
    /// Called every 5 s of simulated time with (simulated ms, events so far).
    pub progress: Option<fn(u64, u64)>,
    /// A network model in place of `one_way_ms` and `viewer_upload_bps`
    /// (the lab's topologies and capacity spreads).
    pub network: Option<Network>,
}

/// A network model: one-way delay per pair and upload per node.
#[derive(Clone)]
pub struct Network {
    /// One-way delay in ms from the first node to the second.
    pub one_way_ms: Arc<dyn Fn(NodeId, NodeId) -> u64 + Send + Sync>,
    /// Upload cap of each node in bits/s (`None`: unlimited), by node id.
    pub upload_bps: Vec<Option<u64>>,
    /// AS and subnet of each node, by node id (empty: unknown).
    pub loc: Vec<Locality>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("nodes", &self.upload_bps.len())
            .finish_non_exhaustive()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            viewers: 50,
            duration_ms: 30_000,
            seed: 1,
            bitrate_bps: 2_000_000,
            segment_ms: 1_000,
            piece_bytes: 32 * 1024,
            one_way_ms: (5, 50),
            origin_one_way_ms: 20,
            viewer_upload_bps: None,
            join_over_ms: 2_000,
            hints: 20,
            tracker_window: 256,
            churn_per_min: 0.0,
            tracker_interval_ms: 5_000,
            max_degree: 8,
            selection: Selection::Full,
            network: None,
            progress: None,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub summary: Summary,
    /// Every viewer that took part, those that left included.
    pub viewers: Vec<Stats>,
    pub seeder: Stats,
    pub origin_payload: u64,
    pub events: u64,
    /// Mean one-way delay from viewers to their neighbours at the end, and
    /// to the closest possible set of the same size (over a sample of at
    /// most [`RATIO_SAMPLE`] viewers).
    pub neighbor_delay_ms: f64,
    pub best_delay_ms: f64,
    /// Median relative error of coordinate-predicted RTTs against true RTTs
    /// (sampled viewer pairs, at the end), when coordinates are usable.
    pub coord_error_median: Option<f64>,
    /// Viewers that left (churn).
    pub departures: u64,
}

/// Simulated time between progress reports.
const PROGRESS_MS: u64 = 5_000;

/// A link's packet: what a control frame waits for behind payload.
const PACKET_BYTES: u64 = 1_500;

/// Viewers over which the neighbour RTT ratio is computed, at most.
pub const RATIO_SAMPLE: usize = 2_000;
/// Peers each sampled viewer's coordinate is checked against.
const COORD_PAIRS: usize = 16;

/// Kept small (a frame is most events): rarer inputs are boxed.
#[derive(Debug)]
enum Event {
    Join(NodeId),
    Leave,
    Frame {
        to: NodeId,
        from: NodeId,
        frame: Frame,
    },
    Input(NodeId, Box<Input<NodeId>>),
    Timer(NodeId),
    Cut,
    Tracker(NodeId),
}

/// Buckets of the calendar: one per ms over this span (a power of two).
const CALENDAR_MS: u64 = 1 << 13;
/// Events per chunk of a bucket.
const CHUNK: usize = 32;

/// The event queue: a calendar of one bucket per ms, each a FIFO of
/// fixed-size chunks, so events of the same ms come out in the order they
/// were scheduled: the order of (time, insertion number), without a heap,
/// and the next events lie side by side (see [`warm`]). Events further
/// ahead than the calendar wait in `later`, keyed by (time, insertion
/// number), and move into their bucket before any event of their ms can
/// be scheduled directly, which keeps that order.
struct Queue {
    /// The ms being drained.
    now: u64,
    /// Chunks of each ms, by ms modulo the span.
    buckets: Vec<VecDeque<VecDeque<Event>>>,
    /// The chunk being drained (taken from the front of `now`'s bucket).
    current: VecDeque<Event>,
    /// `current` was just refilled.
    loaded: bool,
    /// Empty chunks, to reuse.
    spare: Vec<VecDeque<Event>>,
    /// Events in `buckets` and `current`.
    queued: usize,
    later: BTreeMap<(u64, u64), Event>,
    next_id: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            now: 0,
            buckets: (0..CALENDAR_MS).map(|_| VecDeque::new()).collect(),
            current: VecDeque::new(),
            loaded: false,
            spare: Vec::new(),
            queued: 0,
            later: BTreeMap::new(),
            next_id: 0,
        }
    }
}

impl Queue {
    /// Schedules `event` at `t` (not before the ms being drained).
    fn push(&mut self, t: u64, event: Event) {
        debug_assert!(t >= self.now, "no event in the past");
        let t = t.max(self.now);
        if t >= self.now + CALENDAR_MS {
            self.later.insert((t, self.next_id), event);
            self.next_id += 1;
            return;
        }
        self.append(t, event);
    }

    fn append(&mut self, t: u64, event: Event) {
        let bucket = &mut self.buckets[(t % CALENDAR_MS) as usize];
        if bucket.back().is_none_or(|c| c.len() == CHUNK) {
            let chunk = self
                .spare
                .pop()
                .unwrap_or_else(|| VecDeque::with_capacity(CHUNK));
            bucket.push_back(chunk);
        }
        bucket.back_mut().expect("a chunk").push_back(event);
        self.queued += 1;
    }

    /// The earliest event (ties: first scheduled first).
    fn pop(&mut self) -> Option<(u64, Event)> {
        loop {
            if let Some(event) = self.current.pop_front() {
                self.queued -= 1;
                return Some((self.now, event));
            }
            let b = (self.now % CALENDAR_MS) as usize;
            if let Some(chunk) = self.buckets[b].pop_front() {
                self.spare.push(std::mem::replace(&mut self.current, chunk));
                self.loaded = true;
                continue;
            }
            // Next ms; over an empty calendar, straight to the next event.
            self.now += 1;
            if self.queued == 0 {
                let (&(t, _), _) = self.later.first_key_value()?;
                self.now = self.now.max(t);
            }
            while let Some(entry) = self.later.first_entry() {
                if entry.key().0 >= self.now + CALENDAR_MS {
                    break;
                }
                let ((t, _), event) = entry.remove_entry();
                self.append(t, event);
            }
        }
    }

    /// The events `pop` returns next, once per chunk: `Some` when a chunk
    /// was loaded since the last call.
    fn loaded(&mut self) -> Option<&VecDeque<Event>> {
        std::mem::take(&mut self.loaded).then_some(&self.current)
    }
}

struct Node {
    engine: Engine<NodeId>,
    timer_at: u64,
    upload_free_at: u64,
}

/// Reads what the next events will touch first (their node, its
/// neighbours and timers, a frame's bytes), all at once: the cache misses
/// of a chunk of events overlap instead of stalling one event at a time.
/// (A large run's nodes do not fit in any cache, and `unsafe` prefetch
/// hints are not allowed here.)
fn warm(nodes: &[Option<Node>], next: &VecDeque<Event>) {
    let mut sum = 0u64;
    for event in next {
        let (n, frame) = match event {
            Event::Frame { to, frame, .. } => (*to, Some(frame)),
            Event::Input(n, _) | Event::Timer(n) => (*n, None),
            _ => continue,
        };
        if let Some(node) = nodes.get(n as usize).and_then(Option::as_ref) {
            sum = sum
                .wrapping_add(node.timer_at)
                .wrapping_add(node.engine.degree() as u64)
                .wrapping_add(node.engine.poll_timeout());
        }
        if let Some(&b) = frame.and_then(|f| f.parts().0.get(4)) {
            sum = sum.wrapping_add(u64::from(b));
        }
    }
    std::hint::black_box(sum);
}

/// Runs a simulation to its end.
pub fn run(cfg: &SimConfig) -> SimReport {
    Sim::new(cfg).run()
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    queue: Queue,
    /// By node id; a viewer that joins by churn gets a new id.
    nodes: Vec<Option<Node>>,
    /// The topology slot of each node id (a newcomer takes the leaver's).
    slot: Vec<u32>,
    /// Present viewers, for the tracker and churn to draw from.
    present: Vec<NodeId>,
    /// Where each node id is in `present`.
    present_at: Vec<usize>,
    /// Stats of viewers that left.
    departed: Vec<Stats>,
    signer: Signer,
    key: StreamKey,
    seq: u64,
    segment: u64,
    origin_payload: u64,
    processed: u64,
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut secret: [u8; 32] = rng.gen();
        let keypair = Keypair::ed25519_from_bytes(&mut secret).expect("32 bytes");
        let signer = Signer::new(&keypair).expect("ed25519");
        let key = StreamKey::shared(signer.stream()).expect("ed25519");
        Sim {
            cfg,
            rng,
            now: 0,
            queue: Queue::default(),
            nodes: (0..=cfg.viewers).map(|_| None).collect(),
            slot: (0..=cfg.viewers as u32).collect(),
            present: Vec::with_capacity(cfg.viewers),
            present_at: vec![usize::MAX; cfg.viewers + 1],
            departed: Vec::new(),
            signer,
            key,
            seq: 0,
            segment: 0,
            origin_payload: 0,
            processed: 0,
        }
    }

    fn at(&mut self, t: u64, event: Event) {
        self.queue.push(t, event);
    }

    /// Upload cap of a node, bits/s.
    fn upload_bps(&self, n: NodeId) -> Option<u64> {
        let slot = self.slot[n as usize];
        match &self.cfg.network {
            Some(net) => net.upload_bps.get(slot as usize).copied().flatten(),
            None if slot == 0 => None,
            None => self.cfg.viewer_upload_bps,
        }
    }

    fn loc(&self, n: NodeId) -> Locality {
        let slot = self.slot[n as usize] as usize;
        self.cfg
            .network
            .as_ref()
            .and_then(|net| net.loc.get(slot).copied())
            .unwrap_or_default()
    }

    /// One-way delay of a pair, stable for the run.
    fn delay(&self, a: NodeId, b: NodeId) -> u64 {
        self.slot_delay(self.slot[a as usize], self.slot[b as usize])
    }

    fn slot_delay(&self, a: u32, b: u32) -> u64 {
        if let Some(net) = &self.cfg.network {
            return (net.one_way_ms)(a, b);
        }
        let (lo, hi) = self.cfg.one_way_ms;
        let (x, y) = (a.min(b) as u64, a.max(b) as u64);
        let mut h = self.cfg.seed
            ^ x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ y.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        h ^= h >> 29;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 32;
        lo + h % (hi - lo + 1)
    }

    fn run(mut self) -> SimReport {
        let stream = self.signer.stream();
        let seeder = Engine::with_key(Config::seeder(stream), self.key.clone(), self.cfg.seed, 0);
        self.nodes[0] = Some(Node {
            engine: seeder,
            timer_at: u64::MAX,
            upload_free_at: 0,
        });
        self.at(0, Event::Cut);
        for v in 1..=self.cfg.viewers {
            let t = self.cfg.join_over_ms * v as u64 / self.cfg.viewers.max(1) as u64;
            self.at(t, Event::Join(v as NodeId));
        }
        if let Some(gap) = self.churn_gap_ms() {
            // Churn starts once everyone has joined.
            self.at(self.cfg.join_over_ms + gap, Event::Leave);
        }
        let mut next_report = PROGRESS_MS;
        while let Some((t, event)) = self.queue.pop() {
            if let Some(next) = self.queue.loaded() {
                warm(&self.nodes, next);
            }
            if t > self.cfg.duration_ms {
                break;
            }
            if t >= next_report {
                if let Some(report) = self.cfg.progress {
                    report(next_report, self.processed);
                }
                next_report += PROGRESS_MS;
            }
            self.now = t;
            self.processed += 1;
            self.step(event);
        }
        let mut viewers: Vec<Stats> = self.nodes[1..]
            .iter()
            .flatten()
            .map(|n| n.engine.stats().clone())
            .collect();
        let departures = self.departed.len() as u64;
        viewers.append(&mut self.departed);
        let seeder = self.nodes[0]
            .as_ref()
            .expect("seeder")
            .engine
            .stats()
            .clone();
        let (neighbor_delay_ms, best_delay_ms) = self.neighbor_delays();
        SimReport {
            neighbor_delay_ms,
            best_delay_ms,
            coord_error_median: self.coord_error(),
            summary: Summary::new(&viewers, std::slice::from_ref(&seeder), self.origin_payload),
            viewers,
            seeder,
            origin_payload: self.origin_payload,
            events: self.processed,
            departures,
        }
    }

    /// Time between departures, when there is churn.
    fn churn_gap_ms(&self) -> Option<u64> {
        let per_min = self.cfg.churn_per_min * self.cfg.viewers as f64;
        (per_min > 0.0).then(|| (60_000.0 / per_min).max(1.0) as u64)
    }

    /// A spread-out, deterministic sample of present viewers.
    fn sample_viewers(&self, n: usize) -> Vec<NodeId> {
        let step = self.present.len().div_ceil(n.max(1)).max(1);
        let mut out: Vec<NodeId> = self.present.iter().step_by(step).copied().collect();
        out.sort_unstable();
        out
    }

    fn neighbor_delays(&self) -> (f64, f64) {
        let ids: Vec<NodeId> = (0..self.nodes.len() as NodeId)
            .filter(|&n| self.nodes[n as usize].is_some())
            .collect();
        let (mut chosen, mut best, mut n) = (0.0, 0.0, 0usize);
        let mut all = Vec::with_capacity(ids.len());
        for v in self.sample_viewers(RATIO_SAMPLE) {
            let Some(node) = &self.nodes[v as usize] else {
                continue;
            };
            let ds: Vec<u64> = node.engine.neighbors().map(|&p| self.delay(v, p)).collect();
            if ds.is_empty() {
                continue;
            }
            all.clear();
            all.extend(ids.iter().filter(|&&o| o != v).map(|&o| self.delay(v, o)));
            let k = ds.len().min(all.len());
            if k < all.len() {
                all.select_nth_unstable(k - 1);
            }
            chosen += ds.iter().sum::<u64>() as f64 / ds.len() as f64;
            best += all[..k].iter().sum::<u64>() as f64 / k as f64;
            n += 1;
        }
        let n = n.max(1) as f64;
        (chosen / n, best / n)
    }

    /// Median relative error of predicted RTT over sampled viewer pairs.
    fn coord_error(&self) -> Option<f64> {
        let sample = self.sample_viewers(RATIO_SAMPLE / 4);
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0xC0);
        let mut errors = Vec::new();
        for &v in &sample {
            let Some(a) = &self.nodes[v as usize] else {
                continue;
            };
            for _ in 0..COORD_PAIRS {
                let o = self.present[rng.gen_range(0..self.present.len())];
                let Some(b) = self.nodes[o as usize].as_ref().filter(|_| o != v) else {
                    continue;
                };
                let truth = 2 * self.delay(v, o);
                let predicted = a.engine.coord().rtt_ms(&b.engine.coord());
                errors.push((f64::from(predicted) - truth as f64).abs() / truth.max(1) as f64);
            }
        }
        if errors.is_empty() {
            return None;
        }
        errors.sort_by(f64::total_cmp);
        Some(errors[errors.len() / 2])
    }

    fn step(&mut self, e: Event) {
        let now = self.now;
        match e {
            Event::Join(v) => self.join(v),
            Event::Leave => self.churn(),
            Event::Tracker(v) => {
                if self.nodes[v as usize].is_none() {
                    return; // left
                }
                let viewers = u32::try_from(self.present.len()).unwrap_or(u32::MAX);
                self.input(v, Input::Swarm { viewers });
                let hints = self.tracker_hints(v);
                self.input(v, Input::Candidates(hints));
                self.at(now + self.cfg.tracker_interval_ms, Event::Tracker(v));
            }
            Event::Frame { to, from, frame } => {
                let body = frame.body();
                self.input(to, Input::Frame { from, body })
            }
            Event::Input(n, input) => self.input(n, *input),
            Event::Timer(n) => {
                let Some(node) = self.nodes[n as usize].as_mut() else {
                    return;
                };
                if node.timer_at != now {
                    return; // superseded
                }
                node.timer_at = u64::MAX;
                // Inputs since this was armed may have put it off: a
                // driver re-reads `poll_timeout` after every input (as
                // `net` does), so it would not wake now.
                let due = node.engine.poll_timeout();
                if due > now {
                    node.timer_at = due;
                    self.at(due, Event::Timer(n));
                    return;
                }
                node.engine.handle_timeout(now);
                self.drain(n);
            }
            Event::Cut => {
                self.cut_segment();
                self.at(now + self.cfg.segment_ms, Event::Cut);
            }
        }
    }

    fn join(&mut self, v: NodeId) {
        let now = self.now;
        let mut cfg = Config::viewer(self.signer.stream());
        cfg.max_degree = self.cfg.max_degree;
        cfg.selection = self.cfg.selection;
        cfg.loc = self.loc(v);
        // The viewer sets its upload limit a little under its link rate, as
        // `--upload-limit` asks of a real user, so its link never queues.
        cfg.upload_limit = self.upload_bps(v).map(|b| b * 9 / 80);
        cfg.upload_kbps = self.upload_bps(v).map_or(0, |b| (b / 1000) as u32);
        let seed = self.cfg.seed.wrapping_add(v as u64);
        let engine = Engine::with_key(cfg, self.key.clone(), seed, now);
        self.nodes[v as usize] = Some(Node {
            engine,
            timer_at: u64::MAX,
            upload_free_at: now,
        });
        self.present_at[v as usize] = self.present.len();
        self.present.push(v);
        self.at(now, Event::Tracker(v));
    }

    /// A random viewer leaves; a newcomer takes its place in the topology.
    fn churn(&mut self) {
        let now = self.now;
        if let Some(gap) = self.churn_gap_ms() {
            self.at(now + gap, Event::Leave);
        }
        if self.present.is_empty() {
            return;
        }
        let gone = self.present[self.rng.gen_range(0..self.present.len())];
        let Some(node) = self.nodes[gone as usize].take() else {
            return;
        };
        // Its sessions end: each neighbour notices after the one-way delay.
        for &p in node.engine.neighbors() {
            let d = self.delay(gone, p);
            self.at(
                now + d,
                Event::Input(p, Box::new(Input::Disconnected { peer: gone })),
            );
        }
        self.departed.push(node.engine.stats().clone());
        let at = self.present_at[gone as usize];
        self.present.swap_remove(at);
        if let Some(&moved) = self.present.get(at) {
            self.present_at[moved as usize] = at;
        }
        let newcomer = self.nodes.len() as NodeId;
        self.nodes.push(None);
        self.slot.push(self.slot[gone as usize]);
        self.present_at.push(usize::MAX);
        self.join(newcomer);
    }

    /// The tracker's answer: a random sample of joined peers ranked as the
    /// tracker ranks them (free degree, then subnet and AS affinity and
    /// predicted RTT), best first.
    fn tracker_hints(&mut self, v: NodeId) -> Vec<PeerInfo<NodeId>> {
        let me = self.nodes[v as usize].as_ref().expect("present");
        let (coord, loc) = (me.engine.coord(), self.loc(v));
        let usable = |c: &Coord| c.error < 1.0;
        let mut pool: Vec<NodeId> = Vec::with_capacity(self.cfg.tracker_window + 1);
        pool.push(0); // infrastructure is always listed
        if self.present.len() <= self.cfg.tracker_window {
            pool.extend(self.present.iter().copied());
        } else {
            for _ in 0..self.cfg.tracker_window {
                pool.push(self.present[self.rng.gen_range(0..self.present.len())]);
            }
            pool.sort_unstable();
            pool.dedup();
        }
        let mut ranked: Vec<(bool, f32, NodeId, PeerInfo<NodeId>)> = pool
            .into_iter()
            .filter(|&p| p != v)
            .filter_map(|p| {
                let e = &self.nodes[p as usize].as_ref()?.engine;
                let free = e.config().max_degree.saturating_sub(e.degree()) as u16;
                let pc = e.coord();
                let ploc = self.loc(p);
                let mut key = if usable(&coord) && usable(&pc) {
                    coord.rtt_ms(&pc)
                } else {
                    f32::MAX / 4.0
                };
                if loc.same_subnet(&ploc) {
                    key *= 0.5;
                } else if loc.same_as(&ploc) {
                    key *= 0.75;
                }
                let info = PeerInfo {
                    peer: p,
                    addrs: vec![],
                    coord: Some(pc),
                    loc: ploc,
                    free: Some(free),
                };
                Some((free == 0, key, p, info))
            })
            .collect();
        ranked.sort_by(|a, b| {
            (a.0, a.1)
                .partial_cmp(&(b.0, b.1))
                .unwrap_or(Ordering::Equal)
                .then(a.2.cmp(&b.2))
        });
        ranked.truncate(self.cfg.hints);
        ranked.into_iter().map(|(_, _, _, info)| info).collect()
    }

    /// Cuts one segment's pieces, spread evenly over the segment's span.
    fn cut_segment(&mut self) {
        let bytes = (self.cfg.bitrate_bps * self.cfg.segment_ms / 8_000) as usize;
        let pieces = bytes
            .div_ceil(self.cfg.piece_bytes.min(MAX_PIECE_BYTES))
            .max(1);
        let per_piece = bytes / pieces;
        for i in 0..pieces {
            let mut f = 0;
            if i == 0 {
                f |= flags::FIRST;
            }
            let duration = if i + 1 == pieces {
                f |= flags::LAST;
                self.cfg.segment_ms as u32
            } else {
                0
            };
            let t = self.now + self.cfg.segment_ms * i as u64 / pieces as u64;
            let data = Bytes::from(vec![(self.seq % 251) as u8; per_piece]);
            let piece = self
                .signer
                .sign(self.seq, self.segment, f, t, duration, data)
                .expect("piece within limit");
            self.seq += 1;
            self.at(t, Event::Input(0, Box::new(Input::Publish(piece))));
        }
        self.segment += 1;
    }

    fn input(&mut self, n: NodeId, input: Input<NodeId>) {
        let Some(node) = self.nodes[n as usize].as_mut() else {
            return;
        };
        node.engine.handle(input, self.now);
        self.drain(n);
    }

    /// Carries out a node's outputs and re-arms its timer.
    fn drain(&mut self, n: NodeId) {
        let now = self.now;
        let upload_bps = self.upload_bps(n);
        loop {
            let Some(node) = self.nodes[n as usize].as_mut() else {
                return;
            };
            let Some(out) = node.engine.poll_output() else {
                let t = node.engine.poll_timeout().max(now);
                if t < node.timer_at {
                    node.timer_at = t;
                    self.at(t, Event::Timer(n));
                }
                return;
            };
            match out {
                Output::Send { to, frame } => {
                    let depart = match upload_bps {
                        // Control frames are interleaved with payload at
                        // packet granularity (QUIC streams, yamux frames):
                        // they wait for one packet, not for queued pieces,
                        // and take their share of the link.
                        Some(bps) if frame.parts().1.is_empty() => {
                            let own = frame.len() as u64 * 8_000 / bps.max(1);
                            node.upload_free_at = node.upload_free_at.max(now) + own;
                            now + (PACKET_BYTES * 8_000 / bps.max(1))
                                .min(node.upload_free_at.saturating_sub(now))
                                + own
                        }
                        Some(bps) => {
                            let start = node.upload_free_at.max(now);
                            node.upload_free_at = start + frame.len() as u64 * 8_000 / bps.max(1);
                            node.upload_free_at
                        }
                        None => now,
                    };
                    let t = depart + self.delay(n, to);
                    self.at(t, Event::Frame { to, from: n, frame });
                }
                Output::Connect(info) => {
                    let to = info.peer;
                    let d = self.delay(n, to);
                    if self.nodes[to as usize].is_some() {
                        self.at(
                            now + d,
                            Event::Input(
                                to,
                                Box::new(Input::Connected {
                                    peer: n,
                                    outbound: false,
                                }),
                            ),
                        );
                        self.at(
                            now + 2 * d,
                            Event::Input(
                                n,
                                Box::new(Input::Connected {
                                    peer: to,
                                    outbound: true,
                                }),
                            ),
                        );
                    } else {
                        self.at(
                            now + 2 * d,
                            Event::Input(n, Box::new(Input::DialFailed { peer: to })),
                        );
                    }
                }
                Output::Disconnect { peer, .. } => {
                    let d = self.delay(n, peer);
                    self.at(
                        now + d,
                        Event::Input(peer, Box::new(Input::Disconnected { peer: n })),
                    );
                }
                Output::FetchInfra { seq } => {
                    let rtt = 2 * self.cfg.origin_one_way_ms;
                    let piece: Option<Piece> = self.nodes[0]
                        .as_ref()
                        .and_then(|s| s.engine.piece(seq).cloned());
                    let input = match piece {
                        Some(p) => {
                            self.origin_payload += p.data.len() as u64;
                            Input::InfraPiece(p)
                        }
                        None => Input::InfraFailed { seq },
                    };
                    self.at(now + rtt, Event::Input(n, Box::new(input)));
                }
                Output::Deliver(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
