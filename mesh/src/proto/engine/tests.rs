//! Engine tests. A tiny in-memory network (`Net`) wires several engines
//! together with a fixed one-way delay and virtual time; ids that are not
//! engines are scripted "fake" peers whose frames the test injects by hand
//! and whose received frames are only logged.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use libp2p::identity::Keypair;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Config, Engine, Input, Output, Time};
use crate::proto::Coord;
use crate::proto::{
    piece::{flags, Piece, Signer, StreamId},
    wire::{self, Hello, Message, PeerInfo, RefuseReason, Role, FRAME_VERSION, PROTOCOL_VERSION},
};

/// Virtual time at which every test starts.
const T0: u64 = 1_000;

/// What happened on the network, in the order it happened.
#[derive(Clone, Debug)]
enum Ev {
    Sent {
        from: u32,
        to: u32,
        msg: Message<u32>,
    },
    Recv {
        from: u32,
        to: u32,
        msg: Message<u32>,
    },
    Disconnect {
        by: u32,
        peer: u32,
        reason: &'static str,
    },
    Fetch {
        at: u64,
        by: u32,
        seq: u64,
    },
    Deliver {
        by: u32,
        seq: u64,
    },
    FetchEdge {
        at: u64,
        by: u32,
    },
}

struct Net {
    now: u64,
    /// One-way delay of every frame and disconnect notice, ms.
    delay: u64,
    engines: BTreeMap<u32, Engine<u32>>,
    /// Inputs waiting to be handed to an engine: (at, order) -> (to, input).
    queue: BTreeMap<(u64, u64), (u32, Input<u32>)>,
    order: u64,
    log: Vec<Ev>,
    max_degree_seen: BTreeMap<u32, usize>,
    /// How far each engine's wall clock is off virtual time, ms.
    wall_offset: BTreeMap<u32, i64>,
}

impl Net {
    fn new(delay: u64) -> Self {
        Net {
            now: T0,
            delay,
            engines: BTreeMap::new(),
            queue: BTreeMap::new(),
            order: 0,
            log: Vec::new(),
            max_degree_seen: BTreeMap::new(),
            wall_offset: BTreeMap::new(),
        }
    }

    fn add(&mut self, id: u32, cfg: Config) {
        let engine = Engine::new(cfg, u64::from(id), self.now).expect("valid stream key");
        self.engines.insert(id, engine);
    }

    /// Engine `id`'s clocks now.
    fn time(&self, id: u32) -> Time {
        let offset = self.wall_offset.get(&id).copied().unwrap_or(0);
        Time {
            mono: self.now,
            wall: self.now.saturating_add_signed(offset),
        }
    }

    fn e(&self, id: u32) -> &Engine<u32> {
        &self.engines[&id]
    }

    fn push(&mut self, at: u64, to: u32, input: Input<u32>) {
        self.order += 1;
        self.queue.insert((at, self.order), (to, input));
    }

    /// `dialler` dials `target` (either may be a fake peer).
    fn connect(&mut self, dialler: u32, target: u32) {
        let now = self.now;
        self.push(
            now,
            dialler,
            Input::Connected {
                peer: target,
                outbound: true,
            },
        );
        self.push(
            now,
            target,
            Input::Connected {
                peer: dialler,
                outbound: false,
            },
        );
        self.settle();
    }

    /// A fake peer sends `msg` to engine `to`, arriving now.
    fn send_as(&mut self, fake: u32, to: u32, msg: &Message<u32>) {
        self.send_raw(fake, to, body(msg));
    }

    fn send_raw(&mut self, fake: u32, to: u32, body: Bytes) {
        self.push(
            self.now,
            to,
            Input::Frame {
                from: fake,
                body: body.into(),
            },
        );
        self.settle();
    }

    /// Hands an input to an engine now (e.g. `InfraPiece`).
    fn input(&mut self, to: u32, input: Input<u32>) {
        self.push(self.now, to, input);
        self.settle();
    }

    fn settle(&mut self) {
        self.run_until(self.now);
    }

    fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    /// Delivers queued inputs and fires timers, in time order, up to `end`.
    fn run_until(&mut self, end: u64) {
        let mut spins = 0u32;
        loop {
            let ev_at = self.queue.keys().next().map(|k| k.0);
            let timer_at = self.engines.values().map(|e| e.poll_timeout()).min();
            let Some(t) = ev_at.into_iter().chain(timer_at).min() else {
                break;
            };
            let t = t.max(self.now);
            if t > end {
                break;
            }
            if t == self.now {
                spins += 1;
                assert!(spins < 100_000, "engines livelock at {t}");
            } else {
                spins = 0;
                self.now = t;
            }
            if ev_at.is_some_and(|e| e <= t) {
                let (_, (to, input)) = self.queue.pop_first().expect("event");
                self.deliver(to, input);
            } else {
                let due: Vec<u32> = self
                    .engines
                    .iter()
                    .filter(|(_, e)| e.poll_timeout() <= t)
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    let time = self.time(id);
                    self.engines
                        .get_mut(&id)
                        .expect("engine")
                        .handle_timeout(time);
                    self.drain(id);
                }
            }
        }
        self.now = self.now.max(end);
    }

    fn deliver(&mut self, to: u32, input: Input<u32>) {
        if !self.engines.contains_key(&to) {
            return; // A fake peer: its sent frames are logged already.
        }
        if let Input::Frame { from, body } = &input {
            if let Ok(msg) = wire::decode_body::<u32>(body) {
                self.log.push(Ev::Recv {
                    from: *from,
                    to,
                    msg,
                });
            }
        }
        let time = self.time(to);
        self.engines
            .get_mut(&to)
            .expect("engine")
            .handle(input, time);
        self.drain(to);
    }

    /// Carries out everything engine `id` asked for.
    fn drain(&mut self, id: u32) {
        let now = self.now;
        let engine = self.engines.get_mut(&id).expect("engine");
        let degree = engine.degree();
        let mut outs = Vec::new();
        while let Some(out) = engine.poll_output() {
            outs.push(out);
        }
        let seen = self.max_degree_seen.entry(id).or_default();
        *seen = (*seen).max(degree);
        for out in outs {
            match out {
                Output::Send { to, frame } => {
                    // One buffer, as the driver reads it (the simulator
                    // passes the two parts instead).
                    let frame = frame.to_bytes();
                    let len = u32::from_be_bytes(frame[..4].try_into().expect("prefix"));
                    assert_eq!(wire::check_len(len), Ok(frame.len() - 4), "bad prefix");
                    let msg = wire::decode::<u32>(&frame[4..]).expect("engines send valid frames");
                    self.log.push(Ev::Sent { from: id, to, msg });
                    if self.engines.contains_key(&to) {
                        let body = frame.slice(4..);
                        self.push(
                            now + self.delay,
                            to,
                            Input::Frame {
                                from: id,
                                body: body.into(),
                            },
                        );
                    }
                }
                Output::Connect(PeerInfo { peer, .. }) => {
                    if self.engines.contains_key(&peer) {
                        self.push(
                            now,
                            id,
                            Input::Connected {
                                peer,
                                outbound: true,
                            },
                        );
                        let back = Input::Connected {
                            peer: id,
                            outbound: false,
                        };
                        self.push(now, peer, back);
                    } else {
                        self.push(now, id, Input::DialFailed { peer });
                    }
                }
                Output::Disconnect { peer, reason } => {
                    self.log.push(Ev::Disconnect {
                        by: id,
                        peer,
                        reason,
                    });
                    self.push(now + self.delay, peer, Input::Disconnected { peer: id });
                }
                Output::FetchInfra { seq } => self.log.push(Ev::Fetch {
                    at: now,
                    by: id,
                    seq,
                }),
                Output::FetchEdge => self.log.push(Ev::FetchEdge { at: now, by: id }),
                Output::Deliver(p) => self.log.push(Ev::Deliver {
                    by: id,
                    seq: p.header.seq,
                }),
            }
        }
    }

    /// Messages `from` sent to `to`, in order.
    fn sent(&self, from: u32, to: u32) -> Vec<&Message<u32>> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Ev::Sent {
                    from: f,
                    to: t,
                    msg,
                } if *f == from && *t == to => Some(msg),
                _ => None,
            })
            .collect()
    }

    /// Messages engine `to` was handed from `from`, in order.
    fn received(&self, to: u32, from: u32) -> Vec<&Message<u32>> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Ev::Recv {
                    from: f,
                    to: t,
                    msg,
                } if *f == from && *t == to => Some(msg),
                _ => None,
            })
            .collect()
    }

    /// Sessions `by` closed: (peer, reason).
    fn disconnects(&self, by: u32) -> Vec<(u32, &'static str)> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Ev::Disconnect {
                    by: b,
                    peer,
                    reason,
                } if *b == by => Some((*peer, *reason)),
                _ => None,
            })
            .collect()
    }

    fn delivered(&self, by: u32) -> Vec<u64> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Ev::Deliver { by: b, seq } if *b == by => Some(*seq),
                _ => None,
            })
            .collect()
    }

    /// (when, seq) of every `FetchInfra` from `by`.
    fn fetches(&self, by: u32) -> Vec<(u64, u64)> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Ev::Fetch { at, by: b, seq } if *b == by => Some((*at, *seq)),
                _ => None,
            })
            .collect()
    }

    /// Position in the log of the first event matching `f`.
    fn position(&self, f: impl Fn(&Ev) -> bool) -> Option<usize> {
        self.log.iter().position(f)
    }
}

pub(super) fn signer() -> Signer {
    Signer::new(&Keypair::ed25519_from_bytes([7u8; 32]).expect("key")).expect("ed25519")
}

fn other_signer() -> Signer {
    Signer::new(&Keypair::ed25519_from_bytes([9u8; 32]).expect("key")).expect("ed25519")
}

pub(super) fn piece(s: &Signer, seq: u64, segment: u64, fl: u8, at: u64, size: usize) -> Piece {
    let data = Bytes::from(vec![(seq % 251) as u8; size]);
    let duration = if fl & flags::LAST != 0 { 1_000 } else { 0 };
    s.sign(seq, segment, fl, at, duration, data).expect("sign")
}

/// Pieces `first..first + n` forming one segment, all produced at `at`.
fn segment(s: &Signer, first: u64, seg: u64, n: u64, at: u64, size: usize) -> Vec<Piece> {
    (first..first + n)
        .map(|seq| {
            let mut fl = 0;
            if seq == first {
                fl |= flags::FIRST;
            }
            if seq == first + n - 1 {
                fl |= flags::LAST;
            }
            piece(s, seq, seg, fl, at, size)
        })
        .collect()
}

fn hello(stream: StreamId, role: Role) -> Message<u32> {
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        stream,
        role,
        degree: 0,
        max_degree: 8,
        upload_kbps: 0,
        coord: Coord::default(),
        loc: Default::default(),
        rtt_ms: 0,
    })
}

/// A frame body (what follows the length prefix).
fn body(msg: &Message<u32>) -> Bytes {
    wire::encode(msg).slice(4..)
}

/// Engine 1 (a viewer) with an active session to fake peer `fake`.
fn viewer_with_fake(net: &mut Net, cfg: Config, fake: u32) {
    let stream = cfg.stream;
    net.add(1, cfg);
    add_fake(net, fake, stream);
}

/// Viewer 1 (`cfg` at a cap of 2), dialled by viewers 2 and 3: full.
fn full_with_two(net: &mut Net, mut cfg: Config) {
    let stream = cfg.stream;
    cfg.max_degree = 2;
    net.add(1, cfg);
    for p in [2, 3] {
        net.add(p, Config::viewer(stream));
    }
    net.connect(2, 1);
    net.connect(3, 1);
}

/// The fake neighbour that fills a prober's only slot.
const PROBER_HOLD: u32 = 99;

/// Viewer `id` at a cap of one, held by a fake neighbour: with no slot to
/// fill, it only probes.
fn add_prober(net: &mut Net, id: u32, stream: StreamId) {
    let mut cfg = Config::viewer(stream);
    cfg.max_degree = 1;
    net.add(id, cfg);
    net.connect(PROBER_HOLD, id);
    net.send_as(PROBER_HOLD, id, &hello(stream, Role::Viewer));
    assert_eq!(net.e(id).degree(), 1, "the prober is full");
}

/// Fake viewer `fake` dials engine 1 and completes the handshake.
fn add_fake(net: &mut Net, fake: u32, stream: StreamId) {
    let degree = net.e(1).degree();
    net.connect(fake, 1);
    net.send_as(fake, 1, &hello(stream, Role::Viewer));
    assert_eq!(net.e(1).degree(), degree + 1, "fake peer {fake} is active");
}

mod clock;
mod exchange;
mod feeds;
mod hostile;
mod invariants;
mod peers;
mod session;
mod spread;
mod unreachable;
