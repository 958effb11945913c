//! A deterministic discrete-event simulator that runs the real
//! [`crate::proto::Engine`]s in virtual time (after iroh-gossip's `sim.rs`).
//!
//! Virtual time advances in steps of 1 ms, jumping over ms without events.
//! A piece frame sent at `t` by node `a` leaves after `a`'s upload queue
//! drains (when an upload cap is set) and arrives at departure + one-way
//! delay; control frames wait for one packet at most (streams interleave at
//! packet granularity). Fallback fetches reach an HTTP origin with a fixed
//! delay. The same seed gives the same run, byte for byte.
//!
//! # Two partitions, one ms at a time
//!
//! The run is a conservative parallel simulation. Nodes are split into
//! two fixed partitions (by id parity), each with its own event
//! queue; every one-way delay between two nodes is at least 1 ms (shorter
//! ones are rounded up), so nothing a node does at ms `t` reaches another
//! node before `t + 1`. Each ms then runs in three phases:
//!
//! 1. **Serial**: whatever reads or changes more than one node or the
//!    run's shared state — joins, departures (churn draws from the run's
//!    rng), tracker answers (they rank other engines) and the seeder's
//!    segment cuts (the signer).
//! 2. **Partitions**, side by side on up to [`SimConfig::threads`] threads:
//!    each runs all its events of the ms, those it schedules for the same
//!    ms on its own nodes included (a timer due now). Frames and session
//!    events for the other partition wait in an outbox, fallback fetches
//!    in a list.
//! 3. **Barrier**: each partition's outbox becomes the other's inbox, and
//!    the fetches are answered from the seeder's store (the HTTP origin
//!    holds what the seeder published), partition 0's first, after the
//!    inbox events. Each partition moves its inbox into its queue, in
//!    order, when it starts its next ms (on its own thread, so the two
//!    hand-overs run side by side), after what the serial phase of that
//!    ms scheduled.
//!
//! A partition reads only its own nodes and the `World` (delays, upload
//! caps, who is present), which only the serial phase changes, so each
//! queue receives the same events in the same order however many threads
//! run: the run is the same with one thread or two. (The engines also
//! share the stream key's verification memo, behind a lock: which thread
//! checks a piece first changes who hashes it, not what anyone sees.)

mod config;
mod partition;
mod queue;
mod report;
mod streams;
mod tracker;
mod worker;
mod world;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use bytes::Bytes;
use libp2p::identity::Keypair;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use self::{
    config::{default_threads, Network, SimConfig},
    report::{SimReport, RATIO_SAMPLE},
    streams::{run_streams, StreamOutcome, StreamsConfig, StreamsReport},
};
use self::{
    partition::{part_of, Event, Fetched, Node, Partition, PARTS},
    queue::Queue,
    worker::Worker,
    world::World,
};
use crate::proto::{
    piece::flags, Config, Engine, Input, Piece, Signer, Stats, StreamKey, Summary, MAX_PIECE_BYTES,
};

/// Node id in the simulator; the seeder is node 0.
pub type NodeId = u32;

/// Simulated time between progress reports.
const PROGRESS_MS: u64 = 5_000;

/// Most buffers [`payload`] keeps: 251 fills of a few piece sizes (one
/// per bitrate a process simulates).
const PAYLOAD_POOL: usize = 251 * 16;

/// The bytes of a simulated piece: `len` bytes of `seq % 251`. Buffers are
/// immutable, so every piece with the same fill and length shares one, in
/// every run of the process: a thousand streams' windows then cost a few
/// MiB of payload instead of gigabytes, with the same bytes, hashes and
/// signatures (the verification memo tells pieces apart by header and
/// signature as well as by buffer).
fn payload(seq: u64, len: usize) -> Bytes {
    static POOL: Mutex<BTreeMap<(u8, usize), Bytes>> = Mutex::new(BTreeMap::new());
    let fill = (seq % 251) as u8;
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(b) = pool.get(&(fill, len)) {
        return b.clone();
    }
    let b = Bytes::from(vec![fill; len]);
    if pool.len() < PAYLOAD_POOL {
        pool.insert((fill, len), b.clone());
    }
    b
}

/// Something that runs in the serial phase of its ms (see the module notes).
#[derive(Debug)]
enum Serial {
    Join(NodeId),
    Leave,
    Tracker(NodeId),
    Cut,
}

/// Runs a simulation to its end.
pub fn run(cfg: &SimConfig) -> SimReport {
    Sim::new(cfg).run()
}

struct Sim<'a> {
    /// Shared with the worker thread while it runs a ms, changed (through
    /// [`Sim::world_mut`]) only between.
    world: Arc<World<'a>>,
    rng: ChaCha8Rng,
    /// The ms being run.
    now: u64,
    serial: Queue<Serial>,
    /// By id; partition 1 is lent to the worker thread while it runs.
    parts: Vec<Partition>,
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
    /// Serial events run (the partitions count theirs).
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
            world: Arc::new(World {
                cfg,
                slot: (0..=cfg.viewers as u32).collect(),
                running: vec![false; cfg.viewers + 1],
            }),
            rng,
            now: 0,
            serial: Queue::default(),
            parts: (0..PARTS).map(Partition::new).collect(),
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

    fn cfg(&self) -> &'a SimConfig {
        self.world.cfg
    }

    /// The world, between ms (no partition runs, so no one else holds it).
    fn world_mut(&mut self) -> &mut World<'a> {
        Arc::get_mut(&mut self.world).expect("no partition runs between ms")
    }

    fn node(&self, n: NodeId) -> Option<&Node> {
        self.parts[part_of(n)].node(n)
    }

    /// Events run so far.
    fn events(&self) -> u64 {
        self.processed + self.parts.iter().map(|p| p.processed).sum::<u64>()
    }

    fn run(mut self) -> SimReport {
        let cfg = self.cfg();
        self.start();
        std::thread::scope(|s| {
            let worker = (cfg.threads > 1).then(|| Worker::spawn(s));
            self.run_until(cfg.duration_ms, worker.as_ref());
            // Dropping `worker` ends its thread, which the scope joins.
        });
        self.finish()
    }

    /// Puts the seeder in and schedules the joins, cuts and churn.
    fn start(&mut self) {
        let cfg = self.cfg();
        let stream = self.signer.stream();
        let seeder = Engine::with_key(Config::seeder(stream), self.key.clone(), cfg.seed, 0);
        self.parts[0].set(0, Some(Node::new(seeder, 0)));
        self.world_mut().running[0] = true;
        self.serial.push(0, Serial::Cut);
        // The seeder announces too: the tracker tells it the swarm's size
        // and hands it viewers to spread its pushes over.
        self.serial.push(0, Serial::Tracker(0));
        for v in 1..=cfg.viewers {
            let t = cfg.join_over_ms * v as u64 / cfg.viewers.max(1) as u64;
            self.serial.push(t, Serial::Join(v as NodeId));
        }
        if let Some(gap) = self.churn_gap_ms() {
            // Churn starts once everyone has joined.
            self.serial.push(cfg.join_over_ms + gap, Serial::Leave);
        }
    }

    /// What the run measured, once it has run.
    fn finish(mut self) -> SimReport {
        let events = self.events();
        let mut viewers: Vec<Stats> = (1..self.world.ids())
            .filter_map(|n| self.node(n))
            .map(|n| n.engine.stats().clone())
            .collect();
        let departures = self.departed.len() as u64;
        viewers.append(&mut self.departed);
        let seeder = self.node(0).expect("seeder").engine.stats().clone();
        let (neighbor_delay_ms, best_delay_ms) = self.neighbor_delays();
        SimReport {
            neighbor_delay_ms,
            best_delay_ms,
            coord_error_median: self.coord_error(),
            summary: Summary::new(&viewers, std::slice::from_ref(&seeder), self.origin_payload),
            viewers,
            seeder,
            origin_payload: self.origin_payload,
            events,
            departures,
        }
    }

    /// Runs every ms up to `end_ms`, partition 1 on `worker` if there is
    /// one.
    fn run_until(&mut self, end_ms: u64, worker: Option<&Worker<'a>>) {
        let mut next_report = PROGRESS_MS;
        while let Some(t) = self.next_time() {
            if t > end_ms {
                break;
            }
            if t >= next_report {
                if let Some(report) = self.cfg().progress {
                    report(next_report, self.events());
                }
                next_report += PROGRESS_MS;
            }
            self.now = t;
            self.serial.advance_to(t);
            for p in &mut self.parts {
                p.advance_to(t);
            }
            while let Some(event) = self.serial.pop_now() {
                self.processed += 1;
                self.step(event);
            }
            self.run_partitions(worker);
            self.barrier();
        }
    }

    /// The next ms with an event anywhere.
    fn next_time(&mut self) -> Option<u64> {
        let serial = self.serial.next_time();
        self.parts
            .iter_mut()
            .filter_map(Partition::next_time)
            .chain(serial)
            .min()
    }

    /// Phase 2: every partition runs the ms, partition 1 on the worker
    /// when there is one and work on both sides.
    fn run_partitions(&mut self, worker: Option<&Worker<'a>>) {
        let now = self.now;
        let busy = |p: &mut Partition| p.next_time() == Some(now);
        match worker {
            Some(worker) if self.parts.iter_mut().all(busy) => {
                let theirs = self.parts.pop().expect("partition 1");
                worker.start(theirs, Arc::clone(&self.world), now);
                self.parts[0].run_ms(&self.world, now);
                self.parts.push(worker.finish());
            }
            _ => {
                for p in &mut self.parts {
                    p.run_ms(&self.world, now);
                }
            }
        }
    }

    /// Phase 3: each partition's outbox becomes the other's inbox, and the
    /// fetches are answered after it, in partition order; each partition
    /// moves its inbox into its queue when it runs its next ms.
    fn barrier(&mut self) {
        let now = self.now;
        let [p0, p1] = self.parts.as_mut_slice() else {
            unreachable!("two partitions");
        };
        p0.hand_over(p1, now);
        p1.hand_over(p0, now);
        // At least 1 ms, like any delay, so the answer lands in a later ms.
        let rtt = (2 * self.cfg().origin_one_way_ms).max(1);
        for i in 0..PARTS {
            let mut fetches = std::mem::take(&mut self.parts[i].fetches);
            for f in fetches.drain(..) {
                let seq = match f.what {
                    Fetched::Piece(seq) => seq,
                    Fetched::Edge => {
                        // The origin tells what the seeder holds; holding
                        // no segment start yet, it has nothing to tell.
                        let edge = self.node(0).and_then(|s| s.engine.live_edge());
                        if let Some(edge) = edge {
                            let input = Input::LiveEdge(edge);
                            self.parts[part_of(f.node)]
                                .receive(now + rtt, Event::Input(f.node, Box::new(input)));
                        }
                        continue;
                    }
                };
                let piece: Option<Piece> = self.node(0).and_then(|s| s.engine.piece(seq).cloned());
                // Over the stream's budget the origin refuses, as a real
                // one answers 429, and the viewer's fetch fails.
                let piece = piece.filter(|p| self.parts[0].origin_allows(p.data.len(), now));
                let input = match piece {
                    Some(p) => {
                        self.origin_payload += p.data.len() as u64;
                        Input::InfraPiece(p)
                    }
                    None => Input::InfraFailed { seq },
                };
                self.parts[part_of(f.node)]
                    .receive(now + rtt, Event::Input(f.node, Box::new(input)));
            }
            self.parts[i].fetches = fetches;
        }
    }

    /// Hands `input` to node `n` from the serial phase.
    fn input(&mut self, n: NodeId, input: Input<NodeId>) {
        self.parts[part_of(n)].input(&self.world, self.now, n, input);
    }

    /// Time between departures, when there is churn.
    fn churn_gap_ms(&self) -> Option<u64> {
        let per_min = self.cfg().churn_per_min * self.cfg().viewers as f64;
        (per_min > 0.0).then(|| (60_000.0 / per_min).max(1.0) as u64)
    }

    /// Phase 1: one serial event.
    fn step(&mut self, event: Serial) {
        let now = self.now;
        let cfg = self.cfg();
        match event {
            Serial::Join(v) => self.join(v),
            Serial::Leave => self.churn(),
            Serial::Tracker(v) => {
                if !self.world.is_running(v) {
                    return; // left
                }
                let viewers = u32::try_from(self.present.len()).unwrap_or(u32::MAX);
                self.input(v, Input::Swarm { viewers });
                let hints = self.tracker_hints(v);
                self.input(v, Input::Candidates(hints));
                self.serial
                    .push(now + cfg.tracker_interval_ms, Serial::Tracker(v));
            }
            Serial::Cut => {
                self.cut_segment();
                self.serial.push(now + cfg.segment_ms, Serial::Cut);
            }
        }
    }

    fn join(&mut self, v: NodeId) {
        let now = self.now;
        let sim = self.cfg();
        let mut cfg = Config::viewer(self.signer.stream());
        cfg.max_degree = sim.max_degree;
        cfg.selection = sim.selection;
        cfg.loc = self.world.loc(v);
        // No player to hand pieces to.
        cfg.deliver = false;
        // The viewer sets its upload limit a little under its link rate, as
        // `--upload-limit` asks of a real user, so its link never queues.
        let upload = self.world.upload_bps(v);
        cfg.upload_limit = upload.map(|b| b * 9 / 80);
        cfg.upload_kbps = upload.map_or(0, |b| (b / 1000) as u32);
        let seed = sim.seed.wrapping_add(v as u64);
        let engine = Engine::with_key(cfg, self.key.clone(), seed, now);
        self.parts[part_of(v)].set(v, Some(Node::new(engine, now)));
        self.world_mut().running[v as usize] = true;
        self.present_at[v as usize] = self.present.len();
        self.present.push(v);
        self.serial.push(now, Serial::Tracker(v));
    }

    /// A random viewer leaves; a newcomer takes its place in the topology.
    fn churn(&mut self) {
        let now = self.now;
        if let Some(gap) = self.churn_gap_ms() {
            self.serial.push(now + gap, Serial::Leave);
        }
        if self.present.is_empty() {
            return;
        }
        let gone = self.present[self.rng.gen_range(0..self.present.len())];
        let Some(node) = self.parts[part_of(gone)].set(gone, None) else {
            return;
        };
        self.world_mut().running[gone as usize] = false;
        // Its sessions end: each neighbour notices after the one-way delay.
        for &p in node.engine.neighbors() {
            let d = self.world.delay(gone, p);
            let input = Input::Disconnected { peer: gone };
            self.parts[part_of(p)].push(now + d, Event::Input(p, Box::new(input)));
        }
        self.departed.push(node.engine.stats().clone());
        let at = self.present_at[gone as usize];
        self.present.swap_remove(at);
        if let Some(&moved) = self.present.get(at) {
            self.present_at[moved as usize] = at;
        }
        let newcomer = self.world.ids();
        let world = self.world_mut();
        world.slot.push(world.slot[gone as usize]);
        world.running.push(false);
        self.present_at.push(usize::MAX);
        self.join(newcomer);
    }

    /// Cuts one segment's pieces, spread evenly over the segment's span.
    fn cut_segment(&mut self) {
        let bytes = (self.cfg().bitrate_bps * self.cfg().segment_ms / 8_000) as usize;
        let pieces = bytes
            .div_ceil(self.cfg().piece_bytes.min(MAX_PIECE_BYTES))
            .max(1);
        let per_piece = bytes / pieces;
        for i in 0..pieces {
            let mut f = 0;
            if i == 0 {
                f |= flags::FIRST;
            }
            let duration = if i + 1 == pieces {
                f |= flags::LAST;
                self.cfg().segment_ms as u32
            } else {
                0
            };
            let t = self.now + self.cfg().segment_ms * i as u64 / pieces as u64;
            let data = payload(self.seq, per_piece);
            let piece = self
                .signer
                .sign(self.seq, self.segment, f, t, duration, data)
                .expect("piece within limit");
            self.seq += 1;
            self.parts[0].push(t, Event::Input(0, Box::new(Input::Publish(piece))));
        }
        self.segment += 1;
    }
}

#[cfg(test)]
mod tests;
