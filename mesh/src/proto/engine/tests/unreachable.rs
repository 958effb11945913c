//! A viewer whose every dial fails (issue 18): with no neighbour to hear
//! the live edge from, it asks infrastructure where the edge is and plays
//! from infrastructure, starting within the usual start-up time.

use super::*;
use crate::proto::engine::{window, LiveEdge};

/// The stream: a piece every 250 ms, four to a segment, the first cut
/// when the test's clock starts, a second before the viewer joins.
const PIECE_MS: u64 = 250;
const PIECES_PER_SEGMENT: u64 = 4;
const FIRST_PRODUCED: u64 = 0;

/// Start-up as viewers usually see it: the lab's p50 is 2–3.5 s
/// (docs/lab.md §3c). A stranded viewer waits a tick for peers, then
/// fetches a whole segment from infrastructure at the fallback margin
/// before its deadline: 1 s + (3 s − 1 s) and round trips.
const USUAL_STARTUP_MS: u64 = 3_500;

/// The HTTP origin, scripted: it holds every piece cut by now and answers
/// the viewer's fetches after `RTT_MS`.
struct Origin {
    signer: Signer,
    /// Log entries already answered.
    seen: usize,
}

const RTT_MS: u64 = 20;

impl Origin {
    fn piece(&self, seq: u64) -> Piece {
        let mut fl = 0;
        if seq.is_multiple_of(PIECES_PER_SEGMENT) {
            fl |= flags::FIRST;
        }
        if seq % PIECES_PER_SEGMENT == PIECES_PER_SEGMENT - 1 {
            fl |= flags::LAST;
        }
        let at = FIRST_PRODUCED + seq * PIECE_MS;
        piece(&self.signer, seq, seq / PIECES_PER_SEGMENT, fl, at, 100)
    }

    /// The newest piece cut at `now`.
    fn newest(now: u64) -> u64 {
        (now - FIRST_PRODUCED) / PIECE_MS
    }

    /// Answers what the viewer asked since the last call.
    fn serve(&mut self, net: &mut Net) {
        let asked: Vec<Ev> = net.log[self.seen..].to_vec();
        self.seen = net.log.len();
        let at = net.now + RTT_MS;
        for ev in asked {
            let input = match ev {
                Ev::FetchEdge { .. } => {
                    let held = (0..=Self::newest(at)).rev().map(|seq| {
                        let h = self.piece(seq).header;
                        (seq, h.is_first(), h.is_last())
                    });
                    Input::LiveEdge(LiveEdge::of_held(held).expect("a segment start"))
                }
                Ev::Fetch { seq, .. } if seq <= Self::newest(at) => {
                    Input::InfraPiece(self.piece(seq))
                }
                Ev::Fetch { seq, .. } => Input::InfraFailed { seq },
                _ => continue,
            };
            net.push(at, 1, input);
        }
    }
}

/// Runs the viewer for `ms`, the origin answering as it goes.
fn run(net: &mut Net, origin: &mut Origin, ms: u64) {
    let end = net.now + ms;
    while net.now < end {
        net.run_for(10);
        origin.serve(net);
    }
}

#[test]
fn a_viewer_whose_every_dial_fails_starts_from_infrastructure() {
    let s = signer();
    let mut net = Net::new(5);
    net.add(1, Config::viewer(s.stream()));
    let mut origin = Origin { signer: s, seen: 0 };
    // Candidates nobody can reach: the harness answers a dial of an id
    // that is no engine with `DialFailed`.
    let unreachable: Vec<PeerInfo<u32>> = (50..58)
        .map(|peer| PeerInfo::new(peer, vec![format!("/ip4/10.0.0.{peer}/tcp/4001")]))
        .collect();
    net.input(1, Input::Candidates(unreachable));

    run(&mut net, &mut origin, USUAL_STARTUP_MS);
    let stats = net.e(1).stats().clone();
    assert_eq!(net.max_degree_seen[&1], 0, "no dial succeeded");
    let asks: Vec<u64> = (net.log.iter())
        .filter_map(|e| match e {
            Ev::FetchEdge { at, by: 1 } => Some(*at),
            _ => None,
        })
        .collect();
    assert_eq!(
        asks.first(),
        Some(&(T0 + 1_000)),
        "asked a tick after joining"
    );
    let startup = stats.startup_ms.expect("playing within the usual start-up");
    assert!(startup <= USUAL_STARTUP_MS, "start-up took {startup} ms");
    assert!(!net.delivered(1).is_empty(), "pieces went to the player");
    assert!(!net.fetches(1).is_empty());
    assert_eq!(stats.payload_from_peers, 0);

    // It keeps playing from infrastructure, and stops asking where the
    // edge is once playing: pieces' pace carries the edge on.
    let asked_before = net.e(1).stats().edge_queries;
    run(&mut net, &mut origin, 20_000);
    let stats = net.e(1).stats();
    assert!(stats.pieces_due >= 70, "{stats:?}");
    assert_eq!(stats.pieces_on_time, stats.pieces_due, "continuity 1");
    assert_eq!(stats.edge_queries, asked_before);
    assert!(asked_before <= 3, "{asked_before} asks");
}

#[test]
fn an_edge_that_cannot_be_is_not_believed() {
    let s = signer();
    let mut net = Net::new(5);
    net.add(1, Config::viewer(s.stream()));
    let origin = Origin { signer: s, seen: 0 };
    // A verified piece fixes the window the edge must lie in.
    net.input(1, Input::InfraPiece(origin.piece(40)));
    for (newest, segment_start) in [
        (44, 48),                                       // a start after the newest
        (40 + 2 * window::SPAN, 40 + 2 * window::SPAN), // far outside the window
        (5_000, 40),                                    // a segment of thousands of pieces
    ] {
        let edge = LiveEdge {
            newest,
            segment_start,
        };
        net.input(1, Input::LiveEdge(edge));
        assert_eq!(net.e(1).edge.newest(), Some(40), "{edge:?} believed");
    }
    net.input(
        1,
        Input::LiveEdge(LiveEdge {
            newest: 46,
            segment_start: 44,
        }),
    );
    assert_eq!(net.e(1).edge.newest(), Some(46));
    assert!(net.e(1).edge.segment_starts().contains(&44));
}
