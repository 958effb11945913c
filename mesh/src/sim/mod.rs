//! A deterministic discrete-event simulator that runs the real
//! [`crate::proto::Engine`]s in virtual time (after iroh-gossip's `sim.rs`).
//!
//! Events sit in a heap ordered by (time, insertion number); virtual time
//! jumps to the next one. A frame sent at `t` by node `a` leaves after `a`'s
//! upload queue drains (when an upload cap is set) and arrives at
//! departure + one-way delay. Fallback fetches reach an HTTP origin with a
//! fixed delay. The same seed gives the same run, byte for byte.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::Arc,
};

use bytes::Bytes;
use libp2p::identity::Keypair;
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::proto::{
    piece::flags, Config, Engine, Input, Output, PeerInfo, Piece, Selection, Signer, Stats,
    Summary, MAX_PIECE_BYTES,
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
    pub tracker_interval_ms: u64,
    /// Viewer engine settings (stream id is filled in).
    pub max_degree: usize,
    /// How viewers choose neighbours (the full score or an ablation).
    pub selection: Selection,
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
            one_way_ms: (5, 50),
            origin_one_way_ms: 20,
            viewer_upload_bps: None,
            join_over_ms: 2_000,
            hints: 20,
            tracker_interval_ms: 5_000,
            max_degree: 8,
            selection: Selection::Full,
            network: None,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub summary: Summary,
    pub viewers: Vec<Stats>,
    pub seeder: Stats,
    pub origin_payload: u64,
    pub events: u64,
    /// Mean one-way delay from viewers to their neighbours at the end, and
    /// to the closest possible set of the same size.
    pub neighbor_delay_ms: f64,
    pub best_delay_ms: f64,
}

#[derive(Debug)]
enum Event {
    Join(NodeId),
    Input(NodeId, Input<NodeId>),
    Timer(NodeId),
    Cut,
    Tracker(NodeId),
}

struct Node {
    engine: Engine<NodeId>,
    timer_at: u64,
    upload_free_at: u64,
}

/// Runs a simulation to its end.
pub fn run(cfg: &SimConfig) -> SimReport {
    Sim::new(cfg).run()
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: HashMap<usize, Event>,
    next_id: usize,
    nodes: Vec<Option<Node>>,
    signer: Signer,
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
        Sim {
            cfg,
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_id: 0,
            nodes: (0..=cfg.viewers).map(|_| None).collect(),
            signer: Signer::new(&keypair).expect("ed25519"),
            seq: 0,
            segment: 0,
            origin_payload: 0,
            processed: 0,
        }
    }

    fn at(&mut self, t: u64, e: Event) {
        let id = self.next_id;
        self.next_id += 1;
        self.events.insert(id, e);
        self.queue.push(Reverse((t, id as u64, id)));
    }

    /// Upload cap of a node, bits/s.
    fn upload_bps(&self, n: NodeId) -> Option<u64> {
        match &self.cfg.network {
            Some(net) => net.upload_bps.get(n as usize).copied().flatten(),
            None if n == 0 => None,
            None => self.cfg.viewer_upload_bps,
        }
    }

    /// One-way delay of a pair, stable for the run.
    fn delay(&self, a: NodeId, b: NodeId) -> u64 {
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
        let seeder = Engine::new(Config::seeder(stream), self.cfg.seed, 0).expect("key");
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
        while let Some(Reverse((t, _, id))) = self.queue.pop() {
            if t > self.cfg.duration_ms {
                break;
            }
            self.now = t;
            let e = self.events.remove(&id).expect("scheduled");
            self.processed += 1;
            self.step(e);
        }
        let viewers: Vec<Stats> = self.nodes[1..]
            .iter()
            .flatten()
            .map(|n| n.engine.stats().clone())
            .collect();
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
            summary: Summary::new(&viewers, std::slice::from_ref(&seeder), self.origin_payload),
            viewers,
            seeder,
            origin_payload: self.origin_payload,
            events: self.processed,
        }
    }

    fn neighbor_delays(&self) -> (f64, f64) {
        let ids: Vec<NodeId> = (0..self.nodes.len() as NodeId).collect();
        let (mut chosen, mut best, mut n) = (0.0, 0.0, 0usize);
        for (v, node) in self.nodes.iter().enumerate().skip(1) {
            let Some(node) = node else { continue };
            let v = v as NodeId;
            let ds: Vec<u64> = node.engine.neighbors().map(|&p| self.delay(v, p)).collect();
            if ds.is_empty() {
                continue;
            }
            let mut all: Vec<u64> = ids
                .iter()
                .filter(|&&o| o != v)
                .map(|&o| self.delay(v, o))
                .collect();
            all.sort_unstable();
            chosen += ds.iter().sum::<u64>() as f64 / ds.len() as f64;
            best += all[..ds.len()].iter().sum::<u64>() as f64 / ds.len() as f64;
            n += 1;
        }
        let n = n.max(1) as f64;
        (chosen / n, best / n)
    }

    fn step(&mut self, e: Event) {
        let now = self.now;
        match e {
            Event::Join(v) => {
                let mut cfg = Config::viewer(self.signer.stream());
                cfg.max_degree = self.cfg.max_degree;
                cfg.selection = self.cfg.selection;
                // The viewer sets its upload limit a little under its link rate, as
                // `--upload-limit` asks of a real user, so its link never queues.
                cfg.upload_limit = self.upload_bps(v).map(|b| b * 9 / 80);
                cfg.upload_kbps = self.upload_bps(v).map_or(0, |b| (b / 1000) as u32);
                let seed = self.cfg.seed.wrapping_add(v as u64);
                let engine = Engine::new(cfg, seed, now).expect("key");
                self.nodes[v as usize] = Some(Node {
                    engine,
                    timer_at: u64::MAX,
                    upload_free_at: now,
                });
                self.at(now, Event::Tracker(v));
            }
            Event::Tracker(v) => {
                let mut joined: Vec<NodeId> = (0..self.nodes.len() as NodeId)
                    .filter(|&n| n != v && self.nodes[n as usize].is_some())
                    .collect();
                joined.shuffle(&mut self.rng);
                joined.truncate(self.cfg.hints);
                let hints = joined
                    .into_iter()
                    .map(|peer| PeerInfo {
                        peer,
                        addrs: vec![],
                        // The tracker passes on what nodes announce.
                        coord: self.nodes[peer as usize].as_ref().map(|n| n.engine.coord()),
                        loc: Default::default(),
                        free: None,
                    })
                    .collect();
                self.input(v, Input::Candidates(hints));
                self.at(now + self.cfg.tracker_interval_ms, Event::Tracker(v));
            }
            Event::Input(n, input) => self.input(n, input),
            Event::Timer(n) => {
                let Some(node) = self.nodes[n as usize].as_mut() else {
                    return;
                };
                if node.timer_at != now {
                    return; // superseded
                }
                node.timer_at = u64::MAX;
                node.engine.handle_timeout(now);
                self.drain(n);
            }
            Event::Cut => {
                self.cut_segment();
                self.at(now + self.cfg.segment_ms, Event::Cut);
            }
        }
    }

    /// Cuts one segment's pieces, spread evenly over the segment's span.
    fn cut_segment(&mut self) {
        let bytes = (self.cfg.bitrate_bps * self.cfg.segment_ms / 8_000) as usize;
        let pieces = bytes.div_ceil(MAX_PIECE_BYTES).max(1);
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
            self.at(t, Event::Input(0, Input::Publish(piece)));
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
                        Some(bps) => {
                            let start = node.upload_free_at.max(now);
                            node.upload_free_at = start + frame.len() as u64 * 8_000 / bps.max(1);
                            node.upload_free_at
                        }
                        None => now,
                    };
                    let body = frame.body();
                    let t = depart + self.delay(n, to);
                    self.at(t, Event::Input(to, Input::Frame { from: n, body }));
                }
                Output::Connect(info) => {
                    let to = info.peer;
                    let d = self.delay(n, to);
                    if self.nodes[to as usize].is_some() {
                        self.at(
                            now + d,
                            Event::Input(
                                to,
                                Input::Connected {
                                    peer: n,
                                    outbound: false,
                                },
                            ),
                        );
                        self.at(
                            now + 2 * d,
                            Event::Input(
                                n,
                                Input::Connected {
                                    peer: to,
                                    outbound: true,
                                },
                            ),
                        );
                    } else {
                        self.at(now + 2 * d, Event::Input(n, Input::DialFailed { peer: to }));
                    }
                }
                Output::Disconnect { peer, .. } => {
                    let d = self.delay(n, peer);
                    self.at(now + d, Event::Input(peer, Input::Disconnected { peer: n }));
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
                    self.at(now + rtt, Event::Input(n, input));
                }
                Output::Deliver(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
