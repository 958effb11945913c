//! One partition of the simulated nodes: their engines, their events and
//! what they send to the other partition.
//!
//! A partition only ever touches its own nodes. Everything it needs from
//! the rest of the run is in the `World` (delays, upload caps, who is
//! present), which does not change while partitions run; what it does to
//! other nodes leaves through its outbox, which the simulator delivers
//! between ms (see the notes of the `sim` module).

use std::collections::VecDeque;

use crate::proto::{upload::TokenBucket, wire::Frame, Coord, Engine, Input, Output};

use super::{queue::Queue, world::World, NodeId};

/// A link's packet: what a control frame waits for behind payload.
const PACKET_BYTES: u64 = 1_500;

/// Partitions of a run, fixed so that a run does not depend on how many
/// threads run them.
pub(super) const PARTS: usize = 2;

/// The partition holding node `n`.
pub(super) fn part_of(n: NodeId) -> usize {
    n as usize % PARTS
}

/// Where node `n` sits in its partition's `nodes`.
fn index(n: NodeId) -> usize {
    n as usize / PARTS
}

/// An event at one node. Kept small (a frame is most events): rarer
/// inputs are boxed.
#[derive(Debug)]
pub(super) enum Event {
    Frame {
        to: NodeId,
        from: NodeId,
        frame: Frame,
    },
    Input(NodeId, Box<Input<NodeId>>),
    Timer(NodeId),
}

impl Event {
    /// The node the event happens at.
    pub(super) fn node(&self) -> NodeId {
        match self {
            Event::Frame { to, .. } => *to,
            Event::Input(n, _) | Event::Timer(n) => *n,
        }
    }
}

pub(super) struct Node {
    pub(super) engine: Engine<NodeId>,
    timer_at: u64,
    upload_free_at: u64,
}

impl Node {
    pub(super) fn new(engine: Engine<NodeId>, now: u64) -> Self {
        Node {
            engine,
            timer_at: u64::MAX,
            upload_free_at: now,
        }
    }
}

/// What the tracker model reads of a node (its coordinate and free
/// neighbour slots), copied out of the engine after every event the node
/// runs, so it always equals the engine's own figures. The tracker ranks
/// hundreds of random nodes per answer: reading them from one dense table
/// instead of from as many engines spread over gigabytes saves a cache miss
/// or three per node ranked.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Soft {
    pub(super) coord: Coord,
    pub(super) free: u16,
    /// Active neighbours, as its announce would say.
    pub(super) degree: u16,
    /// The node is in the run (its slot in `nodes` is `Some`).
    pub(super) present: bool,
}

impl Soft {
    fn of(engine: &Engine<NodeId>) -> Self {
        Soft {
            coord: engine.coord(),
            free: engine.config().max_degree.saturating_sub(engine.degree()) as u16,
            degree: engine.degree() as u16,
            present: true,
        }
    }
}

/// A fallback fetch of this ms, answered between ms: the origin's copy is
/// the seeder's store, in partition 0.
#[derive(Debug)]
pub(super) struct Fetch {
    pub(super) node: NodeId,
    pub(super) what: Fetched,
}

/// What a fallback fetch asks the origin for.
#[derive(Debug)]
pub(super) enum Fetched {
    Piece(u64),
    /// Where the live edge is (`GET /v1/stream`).
    Edge,
}

#[derive(Default)]
pub(super) struct Partition {
    /// Which partition this is.
    id: usize,
    /// By [`index`]; `None`: not joined yet, or left.
    nodes: Vec<Option<Node>>,
    /// By [`index`], as `nodes`.
    soft: Vec<Soft>,
    queue: Queue<Event>,
    /// Events for the other partition, in the order they were made; all
    /// at least 1 ms ahead (every delay between two nodes is).
    outbox: Vec<(u64, Event)>,
    /// The other partition's outbox of the last ms run, and fallback
    /// answers after it, in that order: this partition moves them into
    /// its queue when it runs its next ms (on its own thread, so the two
    /// hand-overs run side by side).
    inbox: Vec<(u64, Event)>,
    /// The earliest time in `outbox`, and in `inbox` (`u64::MAX`: empty).
    outbox_at: u64,
    inbox_at: u64,
    /// Fallback fetches asked for this ms.
    pub(super) fetches: Vec<Fetch>,
    /// Events run.
    pub(super) processed: u64,
    /// The stream's budget as its HTTP origin sees it (partition 0 only,
    /// the seeder's): a token bucket over payload that the seeder's mesh
    /// sends are charged to and fallback answers are taken from, as
    /// `net::BudgetGate` is in the real seeder. `None`: no budget.
    origin_gate: Option<TokenBucket>,
    origin_rate: Option<u64>,
}

impl Partition {
    pub(super) fn new(id: usize) -> Self {
        Partition {
            id,
            outbox_at: u64::MAX,
            inbox_at: u64::MAX,
            ..Partition::default()
        }
    }

    pub(super) fn node(&self, n: NodeId) -> Option<&Node> {
        self.nodes.get(index(n))?.as_ref()
    }

    /// What the tracker reads of node `n`, when it is in the run.
    pub(super) fn soft(&self, n: NodeId) -> Option<&Soft> {
        self.soft.get(index(n)).filter(|s| s.present)
    }

    /// Puts node `n` (of this partition) in or out of the run.
    pub(super) fn set(&mut self, n: NodeId, node: Option<Node>) -> Option<Node> {
        debug_assert_eq!(part_of(n), self.id);
        let i = index(n);
        if i >= self.nodes.len() {
            self.nodes.resize_with(i + 1, || None);
            self.soft.resize(i + 1, Soft::default());
        }
        self.soft[i] = node
            .as_ref()
            .map_or_else(Soft::default, |n| Soft::of(&n.engine));
        std::mem::replace(&mut self.nodes[i], node)
    }

    /// Schedules an event at one of this partition's nodes.
    pub(super) fn push(&mut self, t: u64, event: Event) {
        debug_assert_eq!(part_of(event.node()), self.id);
        self.queue.push(t, event);
    }

    /// Schedules an event at any node: the other partition's wait in the
    /// outbox.
    fn send(&mut self, t: u64, event: Event) {
        if part_of(event.node()) == self.id {
            self.queue.push(t, event);
        } else {
            self.outbox_at = self.outbox_at.min(t);
            self.outbox.push((t, event));
        }
    }

    /// Adds an event at one of this partition's nodes to its inbox (after
    /// what is there), from between ms.
    pub(super) fn receive(&mut self, t: u64, event: Event) {
        debug_assert_eq!(part_of(event.node()), self.id);
        self.inbox_at = self.inbox_at.min(t);
        self.inbox.push((t, event));
    }

    /// Makes this partition's outbox of ms `now` the inbox of `to`.
    pub(super) fn hand_over(&mut self, to: &mut Partition, now: u64) {
        debug_assert!(to.inbox.is_empty(), "the inbox was run");
        debug_assert!(self.outbox.iter().all(|&(t, _)| t > now), "1 ms at least");
        std::mem::swap(&mut self.outbox, &mut to.inbox);
        to.inbox_at = std::mem::replace(&mut self.outbox_at, u64::MAX);
    }

    /// Sets the stream's budget (bytes/s) for its seeder's mesh and HTTP
    /// origin together; like `BudgetGate::set_rate`, an unchanged rate
    /// keeps its balance.
    pub(super) fn set_origin_budget(&mut self, rate: u64, now: u64) {
        debug_assert_eq!(self.id, part_of(0), "the seeder's partition");
        if self.origin_rate != Some(rate) {
            self.origin_rate = Some(rate);
            self.origin_gate = Some(TokenBucket::new(Some(rate), now));
        }
    }

    /// Whether the origin may answer a fallback fetch of `bytes` now (taking
    /// them from the budget if so).
    pub(super) fn origin_allows(&mut self, bytes: usize, now: u64) -> bool {
        self.origin_gate
            .as_mut()
            .is_none_or(|g| g.take(bytes as u64, now))
    }

    pub(super) fn next_time(&mut self) -> Option<u64> {
        let inbox = (self.inbox_at != u64::MAX).then_some(self.inbox_at);
        match (self.queue.next_time(), inbox) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn advance_to(&mut self, t: u64) {
        self.queue.advance_to(t);
    }

    /// Runs every event of ms `now`, those it schedules for `now` included.
    pub(super) fn run_ms(&mut self, world: &World<'_>, now: u64) {
        self.inbox_at = u64::MAX;
        for (t, event) in self.inbox.drain(..) {
            debug_assert_eq!(part_of(event.node()), self.id);
            self.queue.push(t, event);
        }
        while let Some(event) = self.queue.pop_now() {
            if let Some(next) = self.queue.loaded() {
                warm(&self.nodes, next);
            }
            self.processed += 1;
            self.step(world, now, event);
        }
    }

    fn step(&mut self, world: &World<'_>, now: u64, event: Event) {
        match event {
            Event::Frame { to, from, frame } => {
                let body = frame.body();
                self.input(world, now, to, Input::Frame { from, body })
            }
            Event::Input(n, input) => self.input(world, now, n, *input),
            Event::Timer(n) => {
                let Some(node) = self.nodes[index(n)].as_mut() else {
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
                    self.queue.push(due, Event::Timer(n));
                    return;
                }
                node.engine.handle_timeout(now);
                self.drain(world, now, n);
            }
        }
    }

    /// Hands `input` to node `n` (if present) and carries out its outputs.
    pub(super) fn input(&mut self, world: &World<'_>, now: u64, n: NodeId, input: Input<NodeId>) {
        let Some(node) = self.nodes.get_mut(index(n)).and_then(Option::as_mut) else {
            return;
        };
        node.engine.handle(input, now);
        self.drain(world, now, n);
    }

    /// Carries out a node's outputs and re-arms its timer.
    fn drain(&mut self, world: &World<'_>, now: u64, n: NodeId) {
        let upload_bps = world.upload_bps(n);
        loop {
            let Some(node) = self.nodes[index(n)].as_mut() else {
                return;
            };
            let Some(out) = node.engine.poll_output() else {
                self.soft[index(n)] = Soft::of(&node.engine);
                let t = node.engine.poll_timeout().max(now);
                if t < node.timer_at {
                    node.timer_at = t;
                    self.queue.push(t, Event::Timer(n));
                }
                return;
            };
            match out {
                Output::Send { to, frame } => {
                    if n == 0 {
                        if let Some(gate) = self.origin_gate.as_mut() {
                            gate.charge(frame.parts().1.len() as u64, now);
                        }
                    }
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
                    let t = depart + world.delay(n, to);
                    self.send(t, Event::Frame { to, from: n, frame });
                }
                Output::Connect(info) => {
                    let to = info.peer;
                    let d = world.delay(n, to);
                    if world.is_running(to) {
                        let accepted = Input::Connected {
                            peer: n,
                            outbound: false,
                        };
                        self.send(now + d, Event::Input(to, Box::new(accepted)));
                        let up = Input::Connected {
                            peer: to,
                            outbound: true,
                        };
                        self.send(now + 2 * d, Event::Input(n, Box::new(up)));
                    } else {
                        let failed = Input::DialFailed { peer: to };
                        self.send(now + 2 * d, Event::Input(n, Box::new(failed)));
                    }
                }
                Output::Disconnect { peer, .. } => {
                    let d = world.delay(n, peer);
                    let gone = Input::Disconnected { peer: n };
                    self.send(now + d, Event::Input(peer, Box::new(gone)));
                }
                Output::FetchInfra { seq } => self.fetches.push(Fetch {
                    node: n,
                    what: Fetched::Piece(seq),
                }),
                Output::FetchEdge => self.fetches.push(Fetch {
                    node: n,
                    what: Fetched::Edge,
                }),
                Output::Deliver(_) => {}
            }
        }
    }
}

/// Reads what the next events will touch first (their node, its
/// neighbours and timers, a frame's bytes), all at once: the cache misses
/// of a chunk of events overlap instead of stalling one event at a time.
/// (A large run's nodes do not fit in any cache, and `unsafe` prefetch
/// hints are not allowed here.)
fn warm(nodes: &[Option<Node>], next: &VecDeque<Event>) {
    let mut sum = 0u64;
    for event in next {
        if let Some(node) = nodes.get(index(event.node())).and_then(Option::as_ref) {
            let from = match event {
                Event::Frame { from, .. } => Some(from),
                _ => None,
            };
            sum = sum
                .wrapping_add(node.timer_at)
                .wrapping_add(node.engine.poll_timeout())
                .wrapping_add(node.engine.warm(from));
        }
        if let Event::Frame { frame, .. } = event {
            if let Some(&b) = frame.parts().0.get(4) {
                sum = sum.wrapping_add(u64::from(b));
            }
        }
    }
    std::hint::black_box(sum);
}
