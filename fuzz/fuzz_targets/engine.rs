//! An `Engine` (viewer, seeder or reflector) driven through its public façade by a
//! sequence of arbitrary inputs (docs/fuzzing.md).
//!
//! Up to 12 fake peers connect, greet, send raw bytes or well-formed but
//! hostile messages (any sequence number, any `Hello`), disconnect; real
//! pieces signed by the stream's key are published (seeder) or arrive from
//! peers and infrastructure (viewer, reflector), so there is stream state
//! to attack; a reflector is given parents among the fake peers;
//! time moves forward and due timers fire. Peers that are asked for a piece
//! they were given answer with it, so pieces flow both ways.
//!
//! After every step: no panic; `degree()` within the highest cap the engine
//! has had (`max_degree` for a viewer; for infrastructure, plus its bounded
//! sessions with infrastructure) and equal to the
//! number of `neighbors()`; fewer than `MAX_OUTPUTS` outputs; every frame
//! sent is within the frame limit and decodes; only verified pieces are
//! delivered; the held pieces fit `max_store_bytes` and the window; after
//! `handle_timeout(now)` the next timeout is in the future (a driver that
//! sleeps until `poll_timeout` would otherwise spin).
//!
//! The wall clock may step either way under a steady monotonic one
//! (`Step::StepWall`), as NTP or a user may move it.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use libp2p::identity::Keypair;
use shoal_mesh::proto::{
    piece::{flags, Signer, StreamId},
    wire::{self, Hello, Message, PeerInfo, RefuseReason, PROTOCOL_VERSION},
    Config, Coord, Engine, Input, LiveEdge, Locality, Output, Piece, Role, Time,
};

/// The engine's clock when each input starts.
const T0: u64 = 1_000;
/// Pieces of the pool, cut every `PIECE_MS`, 4 to a segment.
const POOL: usize = 256;
const PIECE_MS: u64 = 250;
const PIECE_BYTES: usize = 700;
/// Steps per input, so no input runs forever.
const MAX_STEPS: usize = 200;
/// Outputs one step may produce, and frames fake peers answer per step.
const MAX_OUTPUTS: usize = 100_000;
const MAX_ANSWERS: usize = 512;
/// `handle_timeout` calls per `Advance`.
const MAX_TIMER_ROUNDS: usize = 64;
/// Fake peers are ids `PEER_BASE..PEER_BASE + PEERS`.
const PEER_BASE: u32 = 100;
const PEERS: u8 = 12;

struct Pool {
    stream: StreamId,
    pieces: Vec<Piece>,
}

fn pool() -> &'static Pool {
    static POOL_: OnceLock<Pool> = OnceLock::new();
    POOL_.get_or_init(|| {
        let key = Keypair::ed25519_from_bytes([7u8; 32]).expect("key");
        let signer = Signer::new(&key).expect("ed25519");
        let pieces = (0..POOL as u64)
            .map(|seq| {
                let mut fl = 0;
                if seq % 4 == 0 {
                    fl |= flags::FIRST;
                }
                if seq % 4 == 3 {
                    fl |= flags::LAST;
                }
                let duration = if fl & flags::LAST != 0 { 1_000 } else { 0 };
                let data = Bytes::from(vec![(seq % 251) as u8; PIECE_BYTES]);
                let at = T0 + seq * PIECE_MS;
                signer
                    .sign(seq, seq / 4, fl, at, duration, data)
                    .expect("sign")
            })
            .collect();
        Pool {
            stream: signer.stream(),
            pieces,
        }
    })
}

#[derive(Arbitrary, Debug)]
struct Scenario {
    /// Viewer, seeder or reflector (`role`).
    role: u8,
    max_degree: u8,
    store_pieces: u8,
    window_s: u8,
    have_interval_ms: u8,
    upload_kib_s: Option<u8>,
    push_fanout: u8,
    seed: u64,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
struct Peer(u8);

impl Peer {
    fn id(&self) -> u32 {
        PEER_BASE + u32::from(self.0 % PEERS)
    }
}

/// A sequence number: near the stream (relative to the next piece of the
/// pool) or anything at all.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Seq {
    Near(i16),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum FuzzCoord {
    Small {
        x: i16,
        y: i16,
        height: u16,
        error: u8,
    },
    Raw {
        x: f32,
        y: f32,
        height: f32,
        error: f32,
    },
}

impl FuzzCoord {
    fn coord(&self) -> Coord {
        match *self {
            FuzzCoord::Small {
                x,
                y,
                height,
                error,
            } => Coord {
                x: f32::from(x) / 10.0,
                y: f32::from(y) / 10.0,
                height: f32::from(height) / 100.0,
                error: f32::from(error) / 100.0,
            },
            FuzzCoord::Raw {
                x,
                y,
                height,
                error,
            } => Coord {
                x,
                y,
                height,
                error,
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
struct FuzzHello {
    wrong_stream: bool,
    version: Option<u16>,
    role: u8,
    degree: u16,
    max_degree: u16,
    upload_kbps: u32,
    coord: FuzzCoord,
    asn: u32,
    subnet: u64,
    rtt_ms: u32,
}

#[derive(Arbitrary, Debug)]
struct FuzzPeerInfo {
    peer: Peer,
    addrs: u8,
    coord: Option<FuzzCoord>,
    asn: u32,
    subnet: u64,
    free: Option<u16>,
}

#[derive(Arbitrary, Debug)]
enum FuzzMsg {
    Hello(FuzzHello),
    Refuse {
        reason: u8,
        suggestions: Vec<FuzzPeerInfo>,
    },
    BufferMap {
        base: Seq,
        bits: Vec<u8>,
        segment_starts: Vec<Seq>,
    },
    Have {
        seqs: Vec<Seq>,
        segment_starts: Vec<Seq>,
    },
    Request {
        seqs: Vec<Seq>,
    },
    /// A piece of the pool, possibly with its payload or signature spoiled.
    Piece {
        index: u8,
        spoil: u8,
    },
    Missing {
        seqs: Vec<Seq>,
    },
    Ping {
        nonce: u64,
        coord: FuzzCoord,
    },
    Pong {
        nonce: u64,
        coord: FuzzCoord,
    },
    Cancel {
        seqs: Vec<Seq>,
    },
    Peers {
        peers: Vec<FuzzPeerInfo>,
    },
    Feed {
        on: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Step {
    Connect {
        peer: Peer,
        outbound: bool,
    },
    /// Connect and send a well-formed `Hello` for the stream.
    Greet {
        peer: Peer,
        role: u8,
        coord: FuzzCoord,
        infra_max: u8,
    },
    Disconnect {
        peer: Peer,
    },
    DialFailed {
        peer: Peer,
    },
    Malformed {
        peer: Peer,
    },
    Raw {
        peer: Peer,
        body: Vec<u8>,
    },
    Send {
        peer: Peer,
        msg: FuzzMsg,
    },
    Candidates(Vec<FuzzPeerInfo>),
    /// The coordinator's parents for a reflector (others ignore them).
    Parents(Vec<FuzzPeerInfo>),
    /// The next `n` pieces of the stream, published (seeder) or fetched
    /// from infrastructure or pushed by a peer (viewer), as time goes by.
    Stream {
        n: u8,
        from: Option<Peer>,
    },
    InfraPiece {
        index: u8,
        spoil: u8,
    },
    InfraFailed {
        seq: Seq,
    },
    /// Infrastructure's word on where the live edge is (unverified).
    LiveEdge {
        newest: Seq,
        segment_start: Seq,
    },
    Located {
        asn: u32,
        subnet: u64,
    },
    Swarm {
        viewers: u32,
    },
    /// The coordinator's budget, any value or none.
    Budget {
        bps: Option<u64>,
    },
    /// The tracker says reflectors serve the stream, or no longer do.
    Reflected(bool),
    Advance {
        ms: u16,
    },
    /// The wall clock steps by this many seconds; timers run on.
    StepWall {
        s: i16,
    },
}

struct Harness {
    engine: Engine<u32>,
    max_degree: usize,
    /// The highest degree cap the engine has had (`Engine::degree_cap`).
    cap_seen: usize,
    max_store_bytes: usize,
    window_ms: u64,
    now: u64,
    /// The wall clock minus `now`, ms.
    wall_offset: i64,
    /// Next pool piece the stream produces.
    head: u64,
    role: Role,
    /// Frames fake peers send back (a requested piece they hold).
    answers: Vec<(u32, Bytes)>,
}

fn role(r: u8) -> Role {
    match r % 3 {
        0 => Role::Viewer,
        1 => Role::Seeder,
        _ => Role::Reflector,
    }
}

impl Harness {
    fn seq(&self, s: Seq) -> u64 {
        match s {
            Seq::Near(d) => self.head.saturating_add_signed(i64::from(d)),
            Seq::Raw(x) => x,
        }
    }

    fn seqs(&self, s: &[Seq]) -> Vec<u64> {
        s.iter()
            .take(wire::MAX_LIST)
            .map(|&s| self.seq(s))
            .collect()
    }

    fn piece(&self, index: u8, spoil: u8) -> Piece {
        let mut p = pool().pieces[usize::from(index) % POOL].clone();
        match spoil % 8 {
            1 => {
                let mut d = p.data.to_vec();
                d[0] ^= 1;
                p.data = d.into();
            }
            2 => {
                let mut s = p.signature.to_vec();
                s[0] ^= 1;
                p.signature = s.into();
            }
            3 => p.header.seq ^= 1,
            _ => {}
        }
        p
    }

    fn peer_info(&self, i: &FuzzPeerInfo) -> PeerInfo<u32> {
        PeerInfo {
            peer: i.peer.id(),
            addrs: (0..i.addrs % 4)
                .map(|a| format!("/ip4/10.0.0.{a}/tcp/1"))
                .collect(),
            coord: i.coord.as_ref().map(FuzzCoord::coord),
            loc: Locality {
                asn: i.asn,
                subnet: i.subnet,
            },
            free: i.free,
        }
    }

    fn hello(&self, h: &FuzzHello) -> Hello {
        let mut stream = pool().stream;
        if h.wrong_stream {
            stream.0[0] ^= 1;
        }
        Hello {
            version: h.version.unwrap_or(PROTOCOL_VERSION),
            stream,
            role: role(h.role),
            degree: h.degree,
            max_degree: h.max_degree,
            upload_kbps: h.upload_kbps,
            coord: h.coord.coord(),
            loc: Locality {
                asn: h.asn,
                subnet: h.subnet,
            },
            rtt_ms: h.rtt_ms,
        }
    }

    fn message(&self, m: &FuzzMsg) -> Message<u32> {
        let peers = |ps: &[FuzzPeerInfo]| {
            ps.iter()
                .take(wire::MAX_SUGGESTIONS)
                .map(|p| self.peer_info(p))
                .collect()
        };
        match m {
            FuzzMsg::Hello(h) => Message::Hello(self.hello(h)),
            FuzzMsg::Refuse {
                reason,
                suggestions,
            } => Message::Refuse {
                reason: match reason % 3 {
                    0 => RefuseReason::Full,
                    1 => RefuseReason::UnknownStream,
                    _ => RefuseReason::Version,
                },
                suggestions: peers(suggestions),
            },
            FuzzMsg::BufferMap {
                base,
                bits,
                segment_starts,
            } => Message::BufferMap {
                base: self.seq(*base),
                bits: bits.iter().take(wire::MAX_BITMAP_BYTES).copied().collect(),
                segment_starts: self.seqs(segment_starts),
            },
            FuzzMsg::Have {
                seqs,
                segment_starts,
            } => Message::Have {
                seqs: self.seqs(seqs),
                segment_starts: self.seqs(segment_starts),
            },
            FuzzMsg::Request { seqs } => Message::Request {
                seqs: self.seqs(seqs),
            },
            FuzzMsg::Piece { index, spoil } => Message::Piece(self.piece(*index, *spoil)),
            FuzzMsg::Missing { seqs } => Message::Missing {
                seqs: self.seqs(seqs),
            },
            FuzzMsg::Ping { nonce, coord } => Message::Ping {
                nonce: *nonce,
                coord: coord.coord(),
            },
            FuzzMsg::Pong { nonce, coord } => Message::Pong {
                nonce: *nonce,
                coord: coord.coord(),
            },
            FuzzMsg::Cancel { seqs } => Message::Cancel {
                seqs: self.seqs(seqs),
            },
            FuzzMsg::Peers { peers: ps } => Message::Peers { peers: peers(ps) },
            FuzzMsg::Feed { on } => Message::Feed { on: *on },
        }
    }

    fn frame(&mut self, from: u32, msg: &Message<u32>) {
        let body = wire::encode_frame(msg).body();
        self.engine.handle(Input::Frame { from, body }, self.time());
    }

    /// The engine's two clocks now.
    fn time(&self) -> Time {
        Time {
            mono: self.now,
            wall: self.now.saturating_add_signed(self.wall_offset),
        }
    }

    fn step(&mut self, step: &Step) {
        let now = self.time();
        match step {
            Step::Connect { peer, outbound } => self.engine.handle(
                Input::Connected {
                    peer: peer.id(),
                    outbound: *outbound,
                },
                now,
            ),
            Step::Greet {
                peer,
                role: r,
                coord,
                infra_max,
            } => {
                let id = peer.id();
                self.engine.handle(
                    Input::Connected {
                        peer: id,
                        outbound: false,
                    },
                    now,
                );
                self.drain();
                let role = role(*r);
                let hello = Hello {
                    version: PROTOCOL_VERSION,
                    stream: pool().stream,
                    role,
                    degree: 1,
                    max_degree: if role.is_infra() {
                        u16::from(*infra_max)
                    } else {
                        8
                    },
                    upload_kbps: 0,
                    coord: coord.coord(),
                    loc: Locality::default(),
                    rtt_ms: 0,
                };
                self.frame(id, &Message::Hello(hello));
            }
            Step::Disconnect { peer } => self
                .engine
                .handle(Input::Disconnected { peer: peer.id() }, now),
            Step::DialFailed { peer } => self
                .engine
                .handle(Input::DialFailed { peer: peer.id() }, now),
            Step::Malformed { peer } => self
                .engine
                .handle(Input::Malformed { from: peer.id() }, now),
            Step::Raw { peer, body } => {
                let body: Vec<u8> = body.iter().take(wire::MAX_FRAME_BYTES).copied().collect();
                self.engine.handle(
                    Input::Frame {
                        from: peer.id(),
                        body: Bytes::from(body).into(),
                    },
                    now,
                );
            }
            Step::Send { peer, msg } => {
                let msg = self.message(msg);
                self.frame(peer.id(), &msg);
            }
            Step::Candidates(peers) => {
                let peers = peers.iter().take(64).map(|p| self.peer_info(p)).collect();
                self.engine.handle(Input::Candidates(peers), now);
            }
            Step::Parents(peers) => {
                let peers = peers.iter().take(16).map(|p| self.peer_info(p)).collect();
                self.engine.handle(Input::Parents(peers), now);
            }
            Step::Stream { n, from } => {
                for _ in 0..(n % 16) {
                    if self.head as usize >= POOL {
                        break;
                    }
                    let piece = pool().pieces[self.head as usize].clone();
                    self.head += 1;
                    self.advance(piece.header.produced_at.saturating_sub(self.now));
                    let input = match (self.role == Role::Seeder, from) {
                        (true, _) => Input::Publish(piece),
                        (false, Some(peer)) => {
                            self.frame(peer.id(), &Message::Piece(piece));
                            self.drain();
                            continue;
                        }
                        (false, None) => Input::InfraPiece(piece),
                    };
                    self.engine.handle(input, self.time());
                    self.drain();
                }
            }
            Step::InfraPiece { index, spoil } => {
                let piece = self.piece(*index, *spoil);
                self.engine.handle(Input::InfraPiece(piece), now);
            }
            Step::InfraFailed { seq } => {
                let seq = self.seq(*seq);
                self.engine.handle(Input::InfraFailed { seq }, now);
            }
            Step::LiveEdge {
                newest,
                segment_start,
            } => {
                let edge = LiveEdge {
                    newest: self.seq(*newest),
                    segment_start: self.seq(*segment_start),
                };
                self.engine.handle(Input::LiveEdge(edge), now);
            }
            Step::Located { asn, subnet } => self.engine.handle(
                Input::Located(Locality {
                    asn: *asn,
                    subnet: *subnet,
                }),
                now,
            ),
            Step::Swarm { viewers } => self.engine.handle(Input::Swarm { viewers: *viewers }, now),
            Step::Budget { bps } => self.engine.handle(Input::Budget { bps: *bps }, now),
            Step::Reflected(on) => self.engine.handle(Input::Reflected(*on), now),
            Step::Advance { ms } => self.advance(u64::from(*ms)),
            Step::StepWall { s } => self.wall_offset += i64::from(*s) * 1_000,
        }
        self.drain();
    }

    /// Moves the clock forward and fires what is due, as a driver does.
    fn advance(&mut self, ms: u64) {
        self.now += ms;
        for _ in 0..MAX_TIMER_ROUNDS {
            if self.engine.poll_timeout() > self.now {
                break;
            }
            self.engine.handle_timeout(self.time());
            self.drain();
            let next = self.engine.poll_timeout();
            assert!(
                next > self.now,
                "poll_timeout {next} not after handle_timeout({})",
                self.now
            );
        }
    }

    /// Drains the outputs, checking each; fake peers answer requests for
    /// pool pieces; then checks the engine's invariants.
    fn drain(&mut self) {
        let mut outputs = 0;
        loop {
            while let Some(out) = self.engine.poll_output() {
                outputs += 1;
                assert!(outputs < MAX_OUTPUTS, "unbounded outputs in one step");
                self.check_output(out);
            }
            if self.answers.is_empty() {
                break;
            }
            for (from, body) in std::mem::take(&mut self.answers) {
                self.engine.handle(
                    Input::Frame {
                        from,
                        body: body.into(),
                    },
                    self.time(),
                );
            }
        }
        self.check();
    }

    fn check_output(&mut self, out: Output<u32>) {
        match out {
            Output::Send { to, frame } => {
                assert!(frame.len() <= 4 + wire::MAX_FRAME_BYTES);
                let msg = wire::decode_body::<u32>(&frame.body())
                    .unwrap_or_else(|e| panic!("engine sent a bad frame to {to}: {e}"));
                if let Message::Request { seqs } = msg {
                    for s in seqs {
                        let held = s < self.head.min(POOL as u64);
                        if held && self.answers.len() < MAX_ANSWERS {
                            let piece = pool().pieces[s as usize].clone();
                            let frame = wire::encode(&Message::<u32>::Piece(piece));
                            self.answers.push((to, frame.slice(4..)));
                        }
                    }
                }
            }
            Output::Deliver(p) => {
                let seq = p.header.seq;
                assert!(
                    (seq as usize) < POOL && p == pool().pieces[seq as usize],
                    "delivered an unverified piece {seq}"
                );
            }
            Output::Connect(_)
            | Output::Disconnect { .. }
            | Output::FetchInfra { .. }
            | Output::FetchEdge => {}
        }
    }

    fn check(&mut self) {
        let degree = self.engine.degree();
        // A viewer's cap is its max_degree; infrastructure's follows the
        // swarm's size (its spread) and never drops anyone when it falls.
        self.cap_seen = self.cap_seen.max(self.engine.degree_cap());
        // Infrastructure's sessions with infrastructure are outside its cap,
        // up to 16 besides its at most 8 parents (docs/protocol.md §7.7).
        let backbone = if self.role.is_infra() { 16 + 8 } else { 0 };
        assert!(
            degree <= self.cap_seen + backbone,
            "degree {degree} over the cap {}",
            self.cap_seen
        );
        if !self.role.is_infra() {
            assert!(degree <= self.max_degree, "a viewer over max_degree");
        }
        assert_eq!(self.engine.neighbors().count(), degree);
        let held: Vec<&Piece> = (0..POOL as u64)
            .filter_map(|s| self.engine.piece(s))
            .collect();
        let bytes: usize = held.iter().map(|p| p.data.len()).sum();
        assert!(
            bytes <= self.max_store_bytes,
            "store holds {bytes} bytes over its bound {}",
            self.max_store_bytes
        );
        if let Some(newest) = held.iter().map(|p| p.header.produced_at).max() {
            let oldest = held
                .iter()
                .map(|p| p.header.produced_at)
                .min()
                .unwrap_or(newest);
            assert!(
                oldest + self.window_ms >= newest,
                "store holds pieces outside its window"
            );
        }
    }
}

fuzz_target!(|s: Scenario| {
    let p = pool();
    let role = role(s.role);
    let mut cfg = match role {
        Role::Viewer => Config::viewer(p.stream),
        Role::Seeder => Config::seeder(p.stream),
        Role::Reflector => Config::reflector(p.stream),
    };
    cfg.max_degree = 1 + usize::from(s.max_degree % 12);
    cfg.max_store_bytes = (1 + usize::from(s.store_pieces)) * PIECE_BYTES;
    cfg.window_ms = 1_000 + u64::from(s.window_s) * 250;
    cfg.have_interval_ms = u64::from(s.have_interval_ms);
    cfg.upload_limit = s.upload_kib_s.map(|k| 1024 * (1 + u64::from(k)));
    cfg.push_fanout = usize::from(s.push_fanout % 4);
    let mut h = Harness {
        max_degree: cfg.max_degree,
        cap_seen: 0,
        max_store_bytes: cfg.max_store_bytes,
        window_ms: cfg.window_ms,
        engine: Engine::new(cfg, s.seed, T0).expect("the pool's stream key"),
        now: T0,
        wall_offset: 0,
        head: 0,
        role,
        answers: Vec::new(),
    };
    h.drain();
    for step in s.steps.iter().take(MAX_STEPS) {
        h.step(step);
    }
});
