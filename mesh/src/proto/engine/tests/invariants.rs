//! The engine's invariants under arbitrary input: any sequence of
//! sessions, frames (well-formed but hostile, or garbage), pieces and time
//! steps keeps every bound. A fixed number of seeded cases runs in
//! `cargo test`; `fuzz/fuzz_targets/engine.rs` explores the same ground
//! for as long as it is given.

use proptest::{prelude::*, test_runner::RngSeed};

use super::*;
use crate::proto::{
    engine::{
        feeds::MAX_BACKBONE,
        peers::{candidates::MAX_CANDIDATES, parents::MAX_PARENTS},
        uploads::UPLOAD_QUEUE,
    },
    wire::MAX_SEQ,
};

/// Pieces of the stream the cases draw from: 12 segments of 4.
const POOL: u64 = 48;
/// Outputs one step may cause, at most (a step is one input and the
/// timers it makes due).
const MAX_OUTPUTS_PER_STEP: usize = 10_000;

#[derive(Clone, Debug)]
enum Step {
    Connect {
        peer: u32,
        outbound: bool,
    },
    Greet {
        peer: u32,
        role: u8,
    },
    Disconnect {
        peer: u32,
    },
    Have {
        peer: u32,
        seqs: Vec<u64>,
        starts: Vec<u64>,
    },
    Map {
        peer: u32,
        base: u64,
        bits: Vec<u8>,
    },
    Request {
        peer: u32,
        seqs: Vec<u64>,
    },
    Missing {
        peer: u32,
        seqs: Vec<u64>,
    },
    Garbage {
        peer: u32,
        body: Vec<u8>,
    },
    Piece {
        peer: u32,
        index: u64,
    },
    Infra {
        index: u64,
    },
    Candidates {
        peers: Vec<u32>,
    },
    Parents {
        peers: Vec<u32>,
    },
    Feed {
        peer: u32,
        on: bool,
    },
    Advance {
        ms: u64,
    },
    ShiftWall {
        s: i16,
    },
}

/// A seq near the stream, or anywhere at all.
fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![0..POOL + 64, any::<u64>(), (MAX_SEQ - 4)..=(MAX_SEQ + 4)]
}

fn step() -> impl Strategy<Value = Step> {
    let peer = 2u32..9;
    prop_oneof![
        (peer.clone(), any::<bool>()).prop_map(|(peer, outbound)| Step::Connect { peer, outbound }),
        (peer.clone(), 0u8..3).prop_map(|(peer, role)| Step::Greet { peer, role }),
        peer.clone().prop_map(|peer| Step::Disconnect { peer }),
        (
            peer.clone(),
            prop::collection::vec(seq(), 0..40),
            prop::collection::vec(seq(), 0..4)
        )
            .prop_map(|(peer, seqs, starts)| Step::Have { peer, seqs, starts }),
        (
            peer.clone(),
            seq(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(peer, base, bits)| Step::Map { peer, base, bits }),
        (peer.clone(), prop::collection::vec(seq(), 0..20))
            .prop_map(|(peer, seqs)| Step::Request { peer, seqs }),
        (peer.clone(), prop::collection::vec(seq(), 0..20))
            .prop_map(|(peer, seqs)| Step::Missing { peer, seqs }),
        (peer.clone(), prop::collection::vec(any::<u8>(), 0..48))
            .prop_map(|(peer, body)| Step::Garbage { peer, body }),
        (peer.clone(), 0..POOL).prop_map(|(peer, index)| Step::Piece { peer, index }),
        (0..POOL).prop_map(|index| Step::Infra { index }),
        prop::collection::vec(2u32..40, 0..20).prop_map(|peers| Step::Candidates { peers }),
        prop::collection::vec(2u32..12, 0..4).prop_map(|peers| Step::Parents { peers }),
        (peer.clone(), any::<bool>()).prop_map(|(peer, on)| Step::Feed { peer, on }),
        (0u64..3_000).prop_map(|ms| Step::Advance { ms }),
        any::<i16>().prop_map(|s| Step::ShiftWall { s }),
    ]
}

struct Driven {
    engine: Engine<u32>,
    pieces: Vec<Piece>,
    stream: StreamId,
    now: u64,
    wall_offset: i64,
    cap_seen: usize,
}

impl Driven {
    fn time(&self) -> Time {
        Time {
            mono: self.now,
            wall: self.now.saturating_add_signed(self.wall_offset),
        }
    }

    fn frame(&mut self, from: u32, msg: &Message<u32>) {
        let time = self.time();
        self.engine.handle(
            Input::Frame {
                from,
                body: body(msg).into(),
            },
            time,
        );
    }

    fn run(&mut self, step: Step) {
        let time = self.time();
        match step {
            Step::Connect { peer, outbound } => self
                .engine
                .handle(Input::Connected { peer, outbound }, time),
            Step::Greet { peer, role } => {
                let role = [Role::Viewer, Role::Seeder, Role::Reflector][usize::from(role)];
                self.engine.handle(
                    Input::Connected {
                        peer,
                        outbound: false,
                    },
                    time,
                );
                self.frame(peer, &hello(self.stream, role));
            }
            Step::Disconnect { peer } => self.engine.handle(Input::Disconnected { peer }, time),
            Step::Have { peer, seqs, starts } => self.frame(
                peer,
                &Message::Have {
                    seqs,
                    segment_starts: starts,
                },
            ),
            Step::Map { peer, base, bits } => self.frame(
                peer,
                &Message::BufferMap {
                    base,
                    bits,
                    segment_starts: Vec::new(),
                },
            ),
            Step::Request { peer, seqs } => self.frame(peer, &Message::Request { seqs }),
            Step::Missing { peer, seqs } => self.frame(peer, &Message::Missing { seqs }),
            Step::Garbage { peer, body } => self.engine.handle(
                Input::Frame {
                    from: peer,
                    body: Bytes::from(body).into(),
                },
                time,
            ),
            Step::Piece { peer, index } => {
                let piece = self.pieces[index as usize].clone();
                self.frame(peer, &Message::Piece(piece));
            }
            Step::Infra { index } => {
                let piece = self.pieces[index as usize].clone();
                self.engine.handle(Input::InfraPiece(piece), time);
            }
            Step::Candidates { peers } => {
                let infos = peers
                    .into_iter()
                    .map(|p| PeerInfo::new(p, vec![]))
                    .collect();
                self.engine.handle(Input::Candidates(infos), time);
            }
            Step::Parents { peers } => {
                let infos = peers
                    .into_iter()
                    .map(|p| PeerInfo::new(p, vec![]))
                    .collect();
                self.engine.handle(Input::Parents(infos), time);
            }
            Step::Feed { peer, on } => self.frame(peer, &Message::Feed { on }),
            Step::Advance { ms } => {
                let end = self.now + ms;
                // Every timer due on the way fires, as a driver fires them.
                while self.engine.poll_timeout() <= end {
                    self.now = self.now.max(self.engine.poll_timeout());
                    let time = self.time();
                    self.engine.handle_timeout(time);
                    self.drain();
                    assert!(self.engine.poll_timeout() > self.now, "a timer due twice");
                }
                self.now = end;
            }
            Step::ShiftWall { s } => self.wall_offset += i64::from(s) * 1_000,
        }
        self.drain();
    }

    fn drain(&mut self) {
        let mut outputs = 0;
        while let Some(out) = self.engine.poll_output() {
            outputs += 1;
            assert!(outputs < MAX_OUTPUTS_PER_STEP, "unbounded outputs");
            if let Output::Send { frame, .. } = out {
                let frame = frame.to_bytes();
                assert!(
                    wire::decode::<u32>(&frame[4..]).is_ok(),
                    "a frame we sent decodes"
                );
            }
        }
        self.check();
    }

    fn check(&mut self) {
        let e = &self.engine;
        self.cap_seen = self.cap_seen.max(e.degree_cap());
        assert!(e.capped_degree() <= self.cap_seen, "degree over the cap");
        assert!(e.backbone_degree() <= MAX_BACKBONE + MAX_PARENTS);
        assert_eq!(e.degree(), e.neighbors().count());
        assert!(e.store.bytes() <= e.cfg.max_store_bytes);
        assert!(e.edge.heard().len() <= 4 * wire::MAX_LIST);
        assert!(e.edge.segment_starts().len() <= wire::MAX_LIST);
        assert!(e.uploads.len() <= UPLOAD_QUEUE);
        assert!(e.candidates.len() <= MAX_CANDIDATES);
        assert!(e.edge.newest().is_none_or(|n| n < MAX_SEQ + (1 << 20)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(16),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_input_sequence_breaks_a_bound(
        role in 0usize..3,
        max_degree in 1usize..5,
        steps in prop::collection::vec(step(), 1..120),
    ) {
        let s = signer();
        let configs = [Config::viewer, Config::seeder, Config::reflector];
        let mut cfg = configs[role](s.stream());
        cfg.max_degree = max_degree;
        cfg.max_store_bytes = 40_000;
        let pieces = (0..POOL / 4)
            .flat_map(|seg| segment(&s, seg * 4, seg, 4, T0 + seg * 1_000, 2_000))
            .collect();
        let mut d = Driven {
            engine: Engine::new(cfg, 1, T0).expect("a valid config"),
            pieces,
            stream: s.stream(),
            now: T0,
            wall_offset: 0,
            cap_seen: 0,
        };
        for step in steps {
            d.run(step);
        }
    }
}
