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

fn signer() -> Signer {
    Signer::new(&Keypair::ed25519_from_bytes([7u8; 32]).expect("key")).expect("ed25519")
}

fn other_signer() -> Signer {
    Signer::new(&Keypair::ed25519_from_bytes([9u8; 32]).expect("key")).expect("ed25519")
}

fn piece(s: &Signer, seq: u64, segment: u64, fl: u8, at: u64, size: usize) -> Piece {
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

#[test]
fn handshake_activates_both_sides_and_exchanges_buffer_maps() {
    let s = signer();
    let mut net = Net::new(5);
    net.add(1, Config::viewer(s.stream()));
    net.add(2, Config::viewer(s.stream()));
    net.connect(1, 2);
    net.run_for(100);

    for (me, other) in [(1, 2), (2, 1)] {
        assert_eq!(net.e(me).degree(), 1);
        assert_eq!(net.e(me).neighbors().collect::<Vec<_>>(), vec![&other]);
        let got = net.received(me, other);
        assert!(
            matches!(got[0], Message::Hello(h) if h.stream == s.stream() && h.role == Role::Viewer),
            "{got:?}"
        );
        assert!(matches!(got[1], Message::BufferMap { .. }), "{got:?}");
    }
    assert!(net.disconnects(1).is_empty() && net.disconnects(2).is_empty());
}

#[test]
fn degree_cap_refuses_the_third_inbound_session() {
    let s = signer();
    let mut net = Net::new(5);
    let mut cfg = Config::viewer(s.stream());
    cfg.max_degree = 2;
    net.add(1, cfg);
    for p in 2..=6 {
        net.add(p, Config::viewer(s.stream()));
    }
    // 4 is well connected (more than half of 1's cap), so 1 does not make
    // room for it.
    net.connect(4, 5);
    net.connect(4, 6);
    net.run_for(100);
    // All three dial at once; 4's Hello is handled last.
    for p in 2..=4 {
        net.connect(p, 1);
    }
    net.run_for(500);

    assert_eq!(net.e(1).degree(), 2);
    assert_eq!(net.e(1).neighbors().collect::<Vec<_>>(), vec![&2, &3]);
    assert_eq!(net.max_degree_seen[&1], 2, "degree never above the cap");
    assert_eq!(net.e(2).degree(), 1);
    assert_eq!(net.e(3).degree(), 1);
    assert_eq!(net.e(4).degree(), 2);

    let refuse = net.position(|e| {
        matches!(
            e,
            Ev::Sent {
                from: 1,
                to: 4,
                msg: Message::Refuse {
                    reason: RefuseReason::Full,
                    ..
                }
            }
        )
    });
    let closed = net.position(|e| matches!(e, Ev::Disconnect { by: 1, peer: 4, .. }));
    assert!(refuse.is_some(), "Refuse(Full) sent to 4");
    assert!(closed.is_some(), "session to 4 closed");
    assert!(refuse < closed, "Refuse before Disconnect");
    for p in [2, 3] {
        assert!(!net
            .sent(1, p)
            .iter()
            .any(|m| matches!(m, Message::Refuse { .. })));
    }
    assert_eq!(net.disconnects(1), vec![(4, "refused")]);
}

#[test]
fn a_full_node_makes_room_for_a_poorly_connected_newcomer() {
    let s = signer();
    let mut net = Net::new(5);
    let mut cfg = Config::viewer(s.stream());
    cfg.max_degree = 2;
    net.add(1, cfg);
    for p in 2..=5 {
        net.add(p, Config::viewer(s.stream()));
    }
    // 3 is the better connected of 1's two neighbours.
    net.connect(3, 5);
    net.run_for(100);
    net.connect(2, 1);
    net.connect(3, 1);
    net.run_for(100);
    net.connect(4, 1);
    net.run_for(100);
    assert_eq!(net.e(1).neighbors().collect::<Vec<_>>(), vec![&2, &4]);
    assert_eq!(
        net.disconnects(1),
        vec![(3, "evicted for a poorly connected newcomer")]
    );
    assert_eq!(net.max_degree_seen[&1], 2, "degree never above the cap");
}

#[test]
fn a_full_node_weighs_a_dialler_on_the_rtt_the_dialler_measured() {
    let s = signer();
    let mut net = Net::new(20);
    let mut cfg = Config::viewer(s.stream());
    cfg.optimize_ms = 1_000;
    full_with_two(&mut net, cfg);
    // Both neighbours measured (40 ms) and in place for a period.
    net.run_for(2_100);
    assert_eq!(net.e(1).degree(), 2);
    let dial = |net: &mut Net, fake: u32, rtt_ms: u32| {
        net.connect(fake, 1);
        let Message::Hello(mut h) = hello(s.stream(), Role::Viewer) else {
            unreachable!()
        };
        h.degree = 4; // well connected: no room is made for a newcomer
        h.rtt_ms = rtt_ms;
        net.send_as(fake, 1, &Message::Hello(h));
    };
    // A fresh coordinate predicts nothing, and nothing was measured.
    dial(&mut net, 8, 0);
    assert_eq!(net.e(1).neighbors().collect::<Vec<_>>(), vec![&2, &3]);
    assert_eq!(net.disconnects(1), vec![(8, "refused")]);
    // The dialler measured 5 ms (a probe of us): clearly closer.
    dial(&mut net, 9, 5);
    assert_eq!(net.e(1).degree(), 2);
    assert!(net.e(1).neighbors().any(|&p| p == 9), "9 let in");
    let replaced = net.disconnects(1)[1];
    assert!([2, 3].contains(&replaced.0));
    assert_eq!(replaced.1, "replaced by a closer candidate");
    assert_eq!(net.max_degree_seen[&1], 2, "degree never above the cap");
}

#[test]
fn refused_dialler_takes_suggestions_without_a_violation() {
    let s = signer();
    let mut net = Net::new(5);
    let mut cfg = Config::viewer(s.stream());
    cfg.max_degree = 2;
    net.add(1, cfg);
    for p in 2..=6 {
        net.add(p, Config::viewer(s.stream()));
    }
    net.connect(4, 5);
    net.connect(4, 6);
    net.connect(2, 1);
    net.connect(3, 1);
    net.run_for(100);
    // 1 knows addresses of its neighbours, so it can suggest them.
    let info = |p: u32| PeerInfo::new(p, vec![format!("/memory/{p}")]);
    net.input(1, Input::Candidates(vec![info(2), info(3)]));
    net.connect(4, 1);
    net.run_for(100);

    let refused = net.sent(1, 4).into_iter().find_map(|m| match m {
        Message::Refuse {
            reason,
            suggestions,
        } => Some((*reason, suggestions.clone())),
        _ => None,
    });
    let (reason, suggestions) = refused.expect("4 is refused");
    assert_eq!(reason, RefuseReason::Full);
    assert_eq!(suggestions, vec![info(2), info(3)]);
    // A refusal is the protocol working, not a violation by the refuser...
    assert_eq!(
        net.e(4).stats().protocol_violations,
        0,
        "{:?}",
        net.disconnects(4)
    );
    // ...and the dialler goes on to a suggested peer.
    net.run_for(3_000);
    assert!(net.e(4).degree() >= 1, "4 connected to a suggested peer");
}

#[test]
fn unknown_stream_is_refused_and_disconnected() {
    let mut net = Net::new(5);
    net.add(1, Config::viewer(signer().stream()));
    net.add(2, Config::viewer(other_signer().stream()));
    net.connect(2, 1);
    net.run_for(100);

    // The dialled side's `Hello` would mean a slot: a refusal comes alone.
    let to_2 = net.sent(1, 2);
    assert_eq!(to_2.len(), 1, "{to_2:?}");
    assert!(
        matches!(&to_2[0], Message::Refuse { reason: RefuseReason::UnknownStream, suggestions } if suggestions.is_empty()),
        "{to_2:?}"
    );
    assert_eq!(net.disconnects(1), vec![(2, "refused")]);
    assert_eq!(net.e(1).degree(), 0);
    assert_eq!(net.e(1).stats().protocol_violations, 0);
}

#[test]
fn malformed_frames_from_an_active_peer_disconnect_it() {
    let stream = signer().stream();
    let ping = body(&Message::Ping {
        nonce: 5,
        coord: Coord::default(),
    });
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut random = |len: usize, first: Option<u8>| {
        let mut b = vec![0u8; len];
        rng.fill_bytes(&mut b);
        if let Some(f) = first {
            b[0] = f;
        }
        Bytes::from(b)
    };
    let mut wrong_version = ping.to_vec();
    wrong_version[0] = FRAME_VERSION + 1;
    let mut trailing = ping.to_vec();
    trailing.push(0);
    let cases: Vec<(&str, Bytes)> = vec![
        ("random bytes", random(40, None)),
        ("random bytes, short", random(3, None)),
        ("random after version", random(40, Some(FRAME_VERSION))),
        (
            "unknown variant",
            Bytes::from_static(&[FRAME_VERSION, 200, 200, 200]),
        ),
        ("wrong version", Bytes::from(wrong_version)),
        ("trailing bytes", Bytes::from(trailing)),
        (
            "list over bound",
            body(&Message::Request {
                seqs: (0..=wire::MAX_LIST as u64).collect(),
            }),
        ),
        ("empty", Bytes::new()),
    ];
    for (name, bad) in cases {
        assert!(wire::decode::<u32>(&bad).is_err(), "{name} must not decode");
        let mut net = Net::new(0);
        viewer_with_fake(&mut net, Config::viewer(stream), 9);
        net.send_raw(9, 1, bad);
        assert_eq!(net.disconnects(1), vec![(9, "malformed frame")], "{name}");
        assert_eq!(net.e(1).stats().protocol_violations, 1, "{name}");
        assert_eq!(net.e(1).degree(), 0, "{name}");
        // Whatever it sends next is ignored.
        let before = net.sent(1, 9).len();
        net.send_as(
            9,
            1,
            &Message::Ping {
                nonce: 1,
                coord: Coord::default(),
            },
        );
        assert_eq!(net.sent(1, 9).len(), before, "{name}: no pong after close");
    }
}

#[test]
fn message_before_hello_disconnects() {
    let stream = signer().stream();
    for early in [
        Message::Ping {
            nonce: 1,
            coord: Coord::default(),
        },
        Message::Request { seqs: vec![0] },
        Message::BufferMap {
            base: 0,
            bits: vec![1],
            segment_starts: vec![0],
        },
    ] {
        let mut net = Net::new(0);
        net.add(1, Config::viewer(stream));
        net.connect(9, 1);
        net.send_as(9, 1, &early);
        assert_eq!(
            net.disconnects(1),
            vec![(9, "message before hello")],
            "{early:?}"
        );
        assert_eq!(net.e(1).stats().protocol_violations, 1);
        // Its Hello is too late now.
        net.send_as(9, 1, &hello(stream, Role::Viewer));
        assert_eq!(net.e(1).degree(), 0);
    }
}

#[test]
fn bad_pieces_are_dropped_and_the_sender_disconnected_after_three() {
    let s = signer();
    let mut net = Net::new(0);
    viewer_with_fake(&mut net, Config::viewer(s.stream()), 9);

    // A good piece is taken (the control).
    let good = piece(&s, 0, 0, flags::FIRST, net.now, 1_000);
    net.send_as(9, 1, &Message::Piece(good.clone()));
    assert_eq!(net.delivered(1), vec![0]);
    assert_eq!(net.e(1).piece(0), Some(&good));

    let valid = piece(&s, 1, 0, 0, net.now, 1_000);
    let mut flipped = valid.clone();
    let mut data = flipped.data.to_vec();
    data[10] ^= 1;
    flipped.data = Bytes::from(data);
    let foreign = piece(&other_signer(), 1, 0, 0, net.now, 1_000);
    let mut forged = foreign.clone();
    forged.header.stream = s.stream();

    for (i, bad) in [flipped, foreign, forged].into_iter().enumerate() {
        assert!(
            net.disconnects(1).is_empty(),
            "still connected before bad piece {i}"
        );
        net.send_as(9, 1, &Message::Piece(bad));
        assert_eq!(net.e(1).stats().bad_pieces, i as u64 + 1);
        assert_eq!(net.e(1).piece(1), None);
        assert_eq!(net.delivered(1), vec![0], "bad piece {i} not delivered");
    }
    assert_eq!(net.disconnects(1), vec![(9, "bad pieces")]);
    assert_eq!(net.e(1).stats().protocol_violations, 1);
    assert_eq!(net.e(1).stats().payload_from_peers, 1_000);
}

#[test]
fn pieces_flow_from_seeder_through_a_viewer_to_a_viewer() {
    let s = signer();
    const SEEDER: u32 = 100;
    let (a, b) = (1, 2);
    let mut net = Net::new(10);
    net.add(SEEDER, Config::seeder(s.stream()));
    net.add(a, Config::viewer(s.stream()));
    net.add(b, Config::viewer(s.stream()));
    net.connect(a, SEEDER);
    net.connect(b, a);
    net.run_for(200);
    assert_eq!(net.e(a).degree(), 2);
    assert_eq!(net.e(b).degree(), 1);

    // 8 segments of 4 pieces, one piece every 250 ms.
    const SEGMENTS: u64 = 8;
    const PER_SEGMENT: u64 = 4;
    const SIZE: usize = 8_000;
    let total = SEGMENTS * PER_SEGMENT;
    let mut last_at = 0;
    for seq in 0..total {
        let fl = match seq % PER_SEGMENT {
            0 => flags::FIRST,
            i if i == PER_SEGMENT - 1 => flags::LAST,
            _ => 0,
        };
        last_at = net.now;
        let p = piece(&s, seq, seq / PER_SEGMENT, fl, last_at, SIZE);
        net.input(SEEDER, Input::Publish(p));
        net.run_for(250);
    }
    // Past every real piece's deadline (produced + 3 s), but before the
    // pieces the viewers extrapolate after the stream stops are due.
    net.run_until(last_at + 3_000 + 100);

    let all: Vec<u64> = (0..total).collect();
    for v in [a, b] {
        let mut got = net.delivered(v);
        got.sort_unstable();
        assert_eq!(got, all, "viewer {v} got every piece once");
        let st = net.e(v).stats();
        assert!(st.startup_ms.is_some(), "viewer {v} started");
        assert!(st.pieces_due >= total, "viewer {v}: {} due", st.pieces_due);
        assert_eq!(st.continuity(), Some(1.0), "viewer {v}");
        assert!(
            net.fetches(v).iter().all(|&(_, seq)| seq >= total),
            "viewer {v} never fell back for a real piece"
        );
    }
    let bytes = total * SIZE as u64;
    assert_eq!(net.e(a).stats().payload_from_infra, bytes);
    assert_eq!(net.e(b).stats().payload_from_peers, bytes);
    assert_eq!(net.e(b).stats().payload_from_infra, 0);
    let from_a = net
        .received(b, a)
        .iter()
        .filter(|m| matches!(m, Message::Piece(_)))
        .count();
    assert_eq!(from_a as u64, total, "every piece of b came from a");
    // The seeder sent each piece once.
    assert_eq!(net.e(SEEDER).stats().payload_sent, bytes);
}

#[test]
fn a_seeder_push_is_relayed_to_the_best_provisioned_neighbours() {
    let s = signer();
    const SEEDER: u32 = 100;
    let mut net = Net::new(10);
    net.add(SEEDER, Config::seeder(s.stream()));
    net.add(1, Config::viewer(s.stream()));
    // Upload advertised by 2, 3 and 4: 4 and 2 are the best provisioned.
    for (v, kbps) in [(2, 5_000), (3, 1_000), (4, 20_000)] {
        let mut cfg = Config::viewer(s.stream());
        cfg.upload_kbps = kbps;
        net.add(v, cfg);
        net.connect(v, 1);
    }
    net.connect(1, SEEDER);
    net.run_for(200);
    net.input(
        SEEDER,
        Input::Publish(piece(&s, 0, 0, flags::FIRST, net.now, 8_000)),
    );
    net.run_for(500);
    let asked = |v: u32| {
        net.sent(v, 1)
            .iter()
            .any(|m| matches!(m, Message::Request { seqs } if seqs.contains(&0)))
    };
    let pieces = |v: u32| {
        net.received(v, 1)
            .iter()
            .filter(|m| matches!(m, Message::Piece(_)))
            .count()
    };
    // 4 and 2 got it pushed, unasked; 3 had to ask after the Have.
    assert_eq!((pieces(4), asked(4)), (1, false));
    assert_eq!((pieces(2), asked(2)), (1, false));
    assert_eq!((pieces(3), asked(3)), (1, true));
    for v in [2, 3, 4] {
        assert_eq!(net.e(v).stats().payload_duplicate, 0, "viewer {v}");
    }
}

#[test]
fn missing_piece_falls_back_to_infra_at_deadline_minus_margin() {
    let s = signer();
    let mut net = Net::new(0);
    let cfg = Config::viewer(s.stream());
    let (delay, margin) = (cfg.playout_delay_ms, cfg.fallback_margin_ms);
    viewer_with_fake(&mut net, cfg, 9);
    net.run_for(100);

    // The neighbour announces a segment, then never answers.
    let heard_at = net.now;
    let seg = segment(&s, 0, 0, 5, heard_at, 5_000);
    net.send_as(
        9,
        1,
        &Message::Have {
            seqs: (0..5).collect(),
            segment_starts: vec![0],
        },
    );
    assert!(
        net.sent(1, 9)
            .iter()
            .any(|m| matches!(m, Message::Request { .. })),
        "asks the neighbour that announced the pieces first"
    );
    let fallback_at = heard_at + delay - margin;
    net.run_until(fallback_at - 1);
    assert!(
        net.fetches(1).is_empty(),
        "no fallback before deadline - margin"
    );

    net.run_until(fallback_at + 100);
    let fetched: BTreeSet<u64> = net.fetches(1).iter().map(|&(_, seq)| seq).collect();
    assert_eq!(fetched, (0..5).collect());
    for (at, seq) in net.fetches(1) {
        assert!(
            at >= fallback_at,
            "seq {seq} fetched at {at} < {fallback_at}"
        );
    }

    for p in seg {
        net.input(1, Input::InfraPiece(p));
    }
    let st = net.e(1).stats();
    assert_eq!(st.payload_from_infra, 5 * 5_000);
    assert_eq!(st.payload_from_peers, 0);
    assert!(st.startup_ms.is_some());
    assert_eq!(net.delivered(1), vec![0, 1, 2, 3, 4]);
}

#[test]
fn a_piece_stored_after_its_deadline_is_late_even_if_judged_later() {
    let s = signer();
    let mut net = Net::new(0);
    let cfg = Config::viewer(s.stream());
    let delay = cfg.playout_delay_ms;
    viewer_with_fake(&mut net, cfg, 9);
    net.run_for(100);

    // Two segments produced now; all but the last piece arrive at once.
    let at = net.now;
    let mut pieces = segment(&s, 0, 0, 4, at, 1_000);
    pieces.extend(segment(&s, 4, 1, 4, at, 1_000));
    let last = pieces.pop().expect("piece 7");
    for p in pieces {
        net.send_as(9, 1, &Message::Piece(p));
    }
    assert!(net.e(1).stats().startup_ms.is_some(), "playing");

    // The engine sleeps past the deadline (no timer runs in between), then
    // the last piece arrives: judged afterwards, it still counts late.
    net.now = at + delay + 1;
    net.send_as(9, 1, &Message::Piece(last));
    net.run_for(200);
    let st = net.e(1).stats();
    assert_eq!(st.pieces_due, 8);
    assert_eq!(st.pieces_on_time, 7);
}

#[test]
fn scheduler_spreads_requests_under_the_inflight_bound() {
    let s = signer();
    let mut net = Net::new(20);
    const N: u64 = 30;
    const SIZE: usize = 10_000;
    let pieces = segment(&s, 0, 0, N, net.now, SIZE);
    let holders = [11, 12, 13];
    for h in holders {
        net.add(h, Config::viewer(s.stream()));
        for p in &pieces {
            net.input(h, Input::InfraPiece(p.clone()));
        }
    }
    let cfg = Config::viewer(s.stream());
    let cap = cfg.max_inflight_per_peer;
    assert!(N as usize > cap);
    net.add(1, cfg);
    for h in holders {
        net.connect(1, h);
    }
    net.run_for(1_000);

    let mut got = net.delivered(1);
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert_eq!(net.e(1).stats().payload_from_peers, N * SIZE as u64);

    // Replay the log from 1's point of view: asked minus answered.
    let mut outstanding: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut asked: BTreeMap<u32, usize> = BTreeMap::new();
    for ev in &net.log {
        match ev {
            Ev::Sent {
                from: 1,
                to,
                msg: Message::Request { seqs },
            } => {
                *asked.entry(*to).or_default() += seqs.len();
                let o = outstanding.entry(*to).or_default();
                o.extend(seqs.iter().copied());
                assert!(o.len() <= cap, "{} outstanding to {to}: {o:?}", o.len());
            }
            Ev::Recv {
                from,
                to: 1,
                msg: Message::Piece(p),
            } => {
                outstanding.entry(*from).or_default().remove(&p.header.seq);
            }
            Ev::Recv {
                from,
                to: 1,
                msg: Message::Missing { seqs },
            } => {
                for s in seqs {
                    outstanding.entry(*from).or_default().remove(s);
                }
            }
            _ => {}
        }
    }
    assert!(
        asked.len() > 1,
        "requests went to more than one neighbour: {asked:?}"
    );
    assert_eq!(
        asked.keys().copied().collect::<Vec<_>>(),
        holders,
        "{asked:?}"
    );
}

#[test]
fn upload_limit_caps_payload_and_refuses_the_excess() {
    let s = signer();
    const RATE: u64 = 100_000;
    const SIZE: usize = 10_000;
    const N: u64 = 100;
    let mut net = Net::new(0);
    let mut cfg = Config::viewer(s.stream());
    cfg.upload_limit = Some(RATE);
    net.add(1, cfg);
    for p in segment(&s, 0, 0, N, net.now, SIZE) {
        net.input(1, Input::InfraPiece(p));
    }
    let fakes = [21, 22, 23, 24];
    for f in fakes {
        add_fake(&mut net, f, s.stream());
    }

    // Every 200 ms each fake asks for the next 8 pieces: ~1.6 MB/s asked.
    let mut next = 0u64;
    let mut requested = 0usize;
    while net.now + 200 <= T0 + 5_000 {
        for f in fakes {
            let seqs: Vec<u64> = (0..8).map(|i| (next + i) % N).collect();
            next += 8;
            requested += seqs.len();
            net.send_as(f, 1, &Message::Request { seqs });
        }
        net.run_for(200);
    }
    net.run_until(T0 + 5_000);

    let elapsed_s = (net.now - T0) as f64 / 1000.0;
    // The token bucket's burst: a quarter second, at least two full pieces.
    let burst = (RATE as f64 / 4.0).max(2.0 * crate::proto::MAX_PIECE_BYTES as f64);
    let bound = RATE as f64 * elapsed_s + burst;
    let sent = net.e(1).stats().payload_sent as f64;
    assert!(sent <= bound, "sent {sent} > {bound}");
    assert!(sent >= 0.8 * RATE as f64 * elapsed_s, "sent only {sent}");

    let mut pieces = 0usize;
    let mut missing = 0usize;
    for f in fakes {
        for m in net.sent(1, f) {
            match m {
                Message::Piece(p) => {
                    assert!(p.header.seq < N);
                    pieces += 1;
                }
                Message::Missing { seqs } => {
                    assert!(seqs.iter().all(|s| net.e(1).piece(*s).is_some()));
                    missing += seqs.len();
                }
                _ => {}
            }
        }
    }
    assert_eq!(pieces as u64 * SIZE as u64, net.e(1).stats().payload_sent);
    assert!(missing > 0, "held pieces over budget are answered Missing");
    // Every request is answered one way or the other, or still queued.
    let unanswered = requested - pieces - missing;
    assert!(
        unanswered <= super::UPLOAD_QUEUE,
        "{unanswered} requests dropped"
    );
}

#[test]
fn upload_limit_serves_what_a_refilled_budget_covers() {
    let s = signer();
    const RATE: u64 = 100_000;
    const SIZE: usize = 10_000;
    let mut net = Net::new(0);
    let mut cfg = Config::viewer(s.stream());
    cfg.upload_limit = Some(RATE);
    net.add(1, cfg);
    for p in segment(&s, 0, 0, 40, net.now, SIZE) {
        net.input(1, Input::InfraPiece(p));
    }
    add_fake(&mut net, 21, s.stream());
    let served = |net: &Net| {
        let msgs = net.sent(1, 21);
        let pieces = msgs
            .iter()
            .filter(|m| matches!(m, Message::Piece(_)))
            .count();
        let missing: Vec<u64> = msgs
            .iter()
            .filter_map(|m| match m {
                Message::Missing { seqs } => Some(seqs.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        (pieces, missing)
    };

    // A burst of requests: what the budget covers is queued, the rest is
    // refused at once.
    net.send_as(
        21,
        1,
        &Message::Request {
            seqs: (0..20).collect(),
        },
    );
    let (_, refused_fresh) = served(&net);
    assert!(!refused_fresh.is_empty(), "20 pieces exceed the budget");
    // Idle long enough to send the queue and refill the bucket.
    net.run_for(5_000);
    let (sent, _) = served(&net);
    assert_eq!(sent, 20 - refused_fresh.len());
    // The same burst again is judged on the refilled bucket: no more is
    // refused than the first time (stale tokens would refuse it all).
    net.send_as(
        21,
        1,
        &Message::Request {
            seqs: (20..40).collect(),
        },
    );
    let (_, refused) = served(&net);
    assert_eq!(refused.len(), 2 * refused_fresh.len(), "{refused:?}");
}

#[test]
fn ping_pong_measures_rtt() {
    let s = signer();
    let mut net = Net::new(20);
    net.add(1, Config::viewer(s.stream()));
    net.add(2, Config::viewer(s.stream()));
    net.connect(1, 2);
    // First pings at T0 + tick, pongs 40 ms later; the stat is refreshed on
    // the next tick.
    let tick = net.e(1).config().tick_ms;
    net.run_until(T0 + 2 * tick + 10);
    for v in [1, 2] {
        let rtt = net.e(v).stats().neighbor_rtt_ms;
        assert!((rtt - 40.0).abs() < 1.0, "viewer {v}: rtt {rtt}");
        assert_eq!(net.e(v).stats().neighbors, 1);
    }
    let pongs = net
        .received(1, 2)
        .iter()
        .filter(|m| matches!(m, Message::Pong { .. }))
        .count();
    assert!(pongs >= 1);
}

#[test]
fn a_probe_is_refused_and_changes_nothing_at_the_target() {
    let s = signer();
    let mut net = Net::new(20);
    full_with_two(&mut net, Config::viewer(s.stream()));
    net.run_for(100);
    // 4 has no slot to fill: it only probes. Its Hello says degree 0,
    // which from a dialler would make 1 evict a neighbour for it.
    add_prober(&mut net, 4, s.stream());
    let target = PeerInfo {
        peer: 1,
        addrs: vec![],
        coord: Some(net.e(1).coord()),
        loc: Default::default(),
        free: Some(0),
    };
    net.input(4, Input::Candidates(vec![target]));
    net.run_for(1_500);

    assert!(
        matches!(net.sent(4, 1).first(), Some(Message::Hello(h)) if h.max_degree == 0),
        "a probe asks for no slot"
    );
    assert!(net.sent(1, 4).iter().any(|m| matches!(
        m,
        Message::Refuse {
            reason: RefuseReason::Full,
            ..
        }
    )));
    assert_eq!(net.e(1).neighbors().collect::<Vec<_>>(), vec![&2, &3]);
    assert_eq!(net.disconnects(1), vec![(4, "refused")]);
    assert_eq!(net.disconnects(4), vec![(1, "probe answered")]);
    assert_eq!(net.e(4).neighbors().collect::<Vec<_>>(), vec![&PROBER_HOLD]);
    assert_eq!(net.e(4).stats().protocol_violations, 0);
    assert_ne!(net.e(4).coord(), Coord::default(), "the sample moved it");
}

#[test]
fn a_tick_starts_three_probes_one_after_the_other() {
    let s = signer();
    let mut net = Net::new(20);
    let targets: Vec<u32> = (10..16).collect();
    for &t in &targets {
        net.add(t, Config::viewer(s.stream()));
    }
    let tick = Config::viewer(s.stream()).tick_ms;
    add_prober(&mut net, 4, s.stream());
    let infos = targets
        .iter()
        .map(|&t| PeerInfo {
            peer: t,
            addrs: vec![],
            coord: Some(net.e(t).coord()),
            loc: Default::default(),
            free: Some(8),
        })
        .collect();
    net.input(4, Input::Candidates(infos));
    // One tick's run, well before the next tick.
    net.run_for(tick + tick / 2);
    let answered = net.disconnects(4);
    assert_eq!(answered.len(), 3, "{answered:?}");
    assert!(answered.iter().all(|(_, why)| *why == "probe answered"));
    let mut probed: Vec<u32> = answered.iter().map(|(p, _)| *p).collect();
    probed.dedup();
    assert_eq!(probed.len(), 3, "three different candidates");
    // One at a time: each probe's Hello goes out after the previous answer.
    let hellos: Vec<usize> = probed
        .iter()
        .map(|&t| {
            net.position(
                |e| matches!(e, Ev::Sent { from: 4, to, msg: Message::Hello(_) } if *to == t),
            )
            .expect("probe hello")
        })
        .collect();
    let answers: Vec<usize> = probed
        .iter()
        .map(|&t| {
            net.position(|e| matches!(e, Ev::Disconnect { by: 4, peer, .. } if *peer == t))
                .expect("answer")
        })
        .collect();
    assert!(answers[0] < hellos[1] && answers[1] < hellos[2]);
}

#[test]
fn every_node_keeps_a_long_link_in_a_small_swarm_and_fewer_in_larger_ones() {
    use super::long_link_share;
    assert_eq!(long_link_share(Some(60)), 1.0);
    assert_eq!(long_link_share(Some(200)), 0.5);
    assert_eq!(long_link_share(Some(400)), 0.25);
    assert_eq!(long_link_share(Some(800)), 0.25);
    assert_eq!(long_link_share(Some(2_000)), 0.1);
    assert_eq!(long_link_share(Some(10_000)), 0.02);
    assert_eq!(long_link_share(Some(100_000)), 0.002, "200 in all");
    assert_eq!(long_link_share(Some(0)), 0.25, "not said");
    assert_eq!(long_link_share(None), 0.25);
}

/// The dialled side sends its `Hello` only when it takes the dialler: a
/// dialler (a swap's, say) reads the peer's `Hello` as a slot, so a full
/// node that refuses must not send one first.
#[test]
fn the_dialled_side_greets_only_when_it_accepts() {
    let mut net = Net::new(9);
    let mut full = Config::viewer(signer().stream());
    full.max_degree = 1;
    net.add(1, full);
    net.add(2, Config::viewer(signer().stream()));
    net.add(3, Config::viewer(signer().stream()));
    net.connect(2, 1);
    net.run_for(100);
    let to_2 = net.sent(1, 2);
    assert!(matches!(to_2[0], Message::Hello(_)), "{to_2:?}");
    assert!(matches!(to_2[1], Message::BufferMap { .. }), "{to_2:?}");
    assert_eq!(net.e(1).degree(), 1);

    // Full, 1 takes the poorly connected 3 in place of 2 (§6.2, 3a) and
    // greets it...
    net.connect(3, 1);
    net.run_for(100);
    let to_3 = net.sent(1, 3);
    assert!(matches!(to_3[0], Message::Hello(_)), "{to_3:?}");
    assert_eq!(net.e(1).neighbors().copied().collect::<Vec<_>>(), [3]);
    // ...but within a second of that eviction it refuses 4, without a
    // `Hello` before or with the refusal.
    net.add(4, Config::viewer(signer().stream()));
    net.connect(4, 1);
    net.run_for(100);
    let to_4 = net.sent(1, 4);
    assert_eq!(to_4.len(), 1, "{to_4:?}");
    assert!(matches!(to_4[0], Message::Refuse { .. }), "{to_4:?}");
    assert_eq!(net.e(1).neighbors().copied().collect::<Vec<_>>(), [3]);
}

/// The candidate table does not freeze once full: each optimisation period
/// prunes it back, keeping peers in session or being dialled and the
/// closest others, and a closer peer named later finds room.
#[test]
fn a_full_candidate_table_is_pruned_to_the_closest() {
    let s = signer();
    let mut e: Engine<u32> = Engine::new(Config::viewer(s.stream()), 7, 0).unwrap();
    e.coord = Coord {
        x: 0.0,
        y: 0.0,
        height: 1.0,
        error: 0.1,
    };
    // Peer p sits p ms away (plus heights): ids over 1,000 are the far ones.
    let at = |p: u32| PeerInfo {
        coord: Some(Coord {
            x: p as f32,
            y: 0.0,
            height: 1.0,
            error: 0.1,
        }),
        ..PeerInfo::new(p, vec![format!("/memory/{p}")])
    };
    // Far peers first, as a newcomer's first, unranked hints are.
    e.handle(Input::Candidates((1_001..1_300).map(at).collect()), 0);
    e.handle(Input::Candidates((1..=100).map(at).collect()), 0);
    assert_eq!(e.candidates.len(), super::session::MAX_CANDIDATES);
    assert!(
        !e.candidates.contains_key(&1),
        "a full table ignores newcomers"
    );
    e.handle_timeout(0);
    let dialled: Vec<u32> = std::iter::from_fn(|| e.poll_output())
        .filter_map(|o| match o {
            Output::Connect(info) => Some(info.peer),
            _ => None,
        })
        .collect();
    assert!(!dialled.is_empty());

    e.handle_timeout(e.cfg.optimize_ms);
    assert_eq!(e.candidates.len(), super::session::KEEP_CANDIDATES);
    for p in &dialled {
        assert!(e.candidates.contains_key(p), "dial to {p} under way");
    }
    // All but `KEEP_RANDOM` of the places went to the closest.
    let far: Vec<u32> = e
        .candidates
        .keys()
        .copied()
        .filter(|&p| p > 1_000)
        .collect();
    let closest = super::session::KEEP_CANDIDATES - super::session::KEEP_RANDOM - dialled.len();
    for p in 1_001..1_001 + closest as u32 {
        assert!(far.contains(&p), "{p} is among the closest");
    }
    e.handle(
        Input::Candidates((1..=10).map(at).collect()),
        e.cfg.optimize_ms,
    );
    assert!(
        (1..=10).all(|p| e.candidates.contains_key(&p)),
        "room again"
    );
}

mod clock;
mod hostile;
mod spread;
