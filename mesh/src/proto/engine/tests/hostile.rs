//! A neighbour (or a tracker) that says things no honest peer would: each
//! test is one such input, and shows that it is refused and harms nothing.

use super::*;
use crate::proto::{seqset::MAX_SPAN, wire::MAX_SEQ};

const SEEDER: u32 = 100;
const LIAR: u32 = 9;
const PER_SEGMENT: u64 = 4;

/// Viewer 1 fed by a seeder, with fake neighbour `LIAR` active too.
fn fed_viewer(net: &mut Net, s: &Signer) {
    net.add(SEEDER, Config::seeder(s.stream()));
    net.add(1, Config::viewer(s.stream()));
    net.connect(1, SEEDER);
    add_fake(net, LIAR, s.stream());
    net.run_for(200);
}

/// Publishes pieces `from..to` at the seeder, one every 250 ms.
fn stream(net: &mut Net, s: &Signer, from: u64, to: u64) {
    for seq in from..to {
        let fl = match seq % PER_SEGMENT {
            0 => flags::FIRST,
            i if i == PER_SEGMENT - 1 => flags::LAST,
            _ => 0,
        };
        let p = piece(s, seq, seq / PER_SEGMENT, fl, net.now, 2_000);
        net.input(SEEDER, Input::Publish(p));
        net.run_for(250);
    }
}

fn have(seqs: Vec<u64>) -> Message<u32> {
    Message::Have {
        seqs,
        segment_starts: Vec::new(),
    }
}

#[test]
fn a_have_of_u64_max_disconnects_the_sender_and_the_stream_plays_on() {
    let s = signer();
    let mut net = Net::new(10);
    fed_viewer(&mut net, &s);
    stream(&mut net, &s, 0, 32); // 8 s
    let newest = net.e(1).edge.newest();

    net.send_as(LIAR, 1, &have(vec![u64::MAX]));
    assert_eq!(net.disconnects(1), vec![(LIAR, "malformed frame")]);
    assert_eq!(net.e(1).stats().protocol_violations, 1);
    assert_eq!(net.e(1).edge.newest(), newest, "the live edge did not move");

    stream(&mut net, &s, 32, 64);
    // Past the last piece's deadline, before those extrapolated after it.
    net.run_for(2_850);
    let v = net.e(1);
    assert_eq!(v.stats().continuity(), Some(1.0));
    // Only the pieces extrapolated since the stream stopped (about three
    // seconds' worth) are believed in: nothing near u64::MAX.
    assert!(
        v.edge.heard().keys().all(|&s| (64..64 + 16).contains(&s)),
        "heard: {:?}",
        v.edge.heard().keys().collect::<Vec<_>>()
    );
    assert_eq!(v.stats().newest_seq, Some(63));
}

#[test]
fn a_seq_outside_the_window_around_verified_pieces_is_a_violation() {
    let s = signer();
    let beyond = 41 + MAX_SPAN;
    for msg in [
        have(vec![beyond]),
        Message::Have {
            seqs: vec![],
            segment_starts: vec![beyond],
        },
        Message::Request { seqs: vec![beyond] },
        Message::Missing { seqs: vec![beyond] },
        Message::Cancel { seqs: vec![beyond] },
        Message::BufferMap {
            base: beyond,
            bits: vec![1],
            segment_starts: vec![],
        },
    ] {
        let mut net = Net::new(10);
        fed_viewer(&mut net, &s);
        stream(&mut net, &s, 0, 41);
        net.send_as(LIAR, 1, &msg);
        assert_eq!(
            net.disconnects(1),
            vec![(LIAR, "sequence number out of window")],
            "{msg:?}"
        );
        assert_eq!(net.e(1).edge.newest(), Some(40), "{msg:?}");
    }
}

#[test]
fn a_buffer_map_based_near_u64_max_is_malformed() {
    let s = signer();
    let mut net = Net::new(10);
    fed_viewer(&mut net, &s);
    net.send_as(
        LIAR,
        1,
        &Message::BufferMap {
            base: u64::MAX - 3,
            bits: vec![0xFF],
            segment_starts: vec![],
        },
    );
    assert_eq!(net.disconnects(1), vec![(LIAR, "malformed frame")]);
    // Just inside the wire's bound, before anything is verified: taken
    // as a claim, and forgotten once the first piece fixes the window.
    let mut net = Net::new(10);
    fed_viewer(&mut net, &s);
    net.send_as(
        LIAR,
        1,
        &Message::BufferMap {
            base: MAX_SEQ - 8,
            bits: vec![0xFF],
            segment_starts: vec![MAX_SEQ - 8],
        },
    );
    assert!(net.disconnects(1).is_empty());
    stream(&mut net, &s, 0, 24);
    // Past the last piece's deadline, before those extrapolated after it.
    net.run_for(2_850);
    let v = net.e(1);
    assert_eq!(v.edge.newest().map(|n| n < 100), Some(true));
    assert!(v.edge.segment_starts().iter().all(|&s| s < 100));
    assert_eq!(v.stats().continuity(), Some(1.0));
}

#[test]
fn a_degree_cap_of_one_holds_and_starves_without_underflow() {
    let s = signer();
    let mut cfg = Config::viewer(s.stream());
    cfg.max_degree = 1;
    let mut net = Net::new(10);
    net.add(1, cfg);
    add_fake(&mut net, LIAR, s.stream());
    net.connect(LIAR + 1, 1);
    net.send_as(LIAR + 1, 1, &hello(s.stream(), Role::Viewer));
    assert_eq!(net.e(1).degree(), 1);
    // Nothing arrives for long enough to count as starved.
    net.run_for(10_000);
    assert!(net.max_degree_seen[&1] <= 1);
    assert!(net
        .disconnects(1)
        .iter()
        .any(|&(_, r)| r == "no news from the neighbourhood"));
}

#[test]
fn tracker_hints_out_of_bounds_are_neither_dialled_nor_passed_on() {
    let s = signer();
    let mut net = Net::new(10);
    net.add(1, Config::viewer(s.stream()));
    let long = PeerInfo::new(20, vec!["x".repeat(wire::MAX_ADDR_LEN + 1)]);
    let many = PeerInfo::new(
        21,
        vec!["/ip4/1.2.3.4/tcp/1".to_string(); wire::MAX_ADDRS + 1],
    );
    let mut bad_coord = PeerInfo::new(22, vec![]);
    bad_coord.coord = Some(Coord {
        x: f32::NAN,
        ..Coord::default()
    });
    let good = PeerInfo::new(23, vec!["/ip4/1.2.3.4/tcp/1".to_string()]);
    net.input(1, Input::Candidates(vec![long, many, bad_coord, good]));
    let known: Vec<u32> = net.e(1).candidates.keys().copied().collect();
    assert_eq!(known, vec![23]);
}

#[test]
fn a_degree_cap_out_of_range_is_a_clear_error() {
    use crate::proto::engine::{parse_degree_cap, EngineError, DEGREE_CAPS};
    let s = signer();
    for bad in [0, DEGREE_CAPS.end() + 1] {
        let mut cfg = Config::viewer(s.stream());
        cfg.max_degree = bad;
        assert!(matches!(
            Engine::<u32>::new(cfg, 1, T0),
            Err(EngineError::MaxDegree(d)) if d == bad
        ));
    }
    assert_eq!(parse_degree_cap("1"), Ok(1));
    assert_eq!(parse_degree_cap("64"), Ok(64));
    assert!(parse_degree_cap("0").is_err());
    assert!(parse_degree_cap("65").is_err());
    assert!(parse_degree_cap("-1").is_err());
}

#[test]
fn an_announced_segment_start_that_is_not_one_does_not_become_the_start() {
    let s = signer();
    let mut net = Net::new(10);
    net.add(1, Config::viewer(s.stream()));
    add_fake(&mut net, LIAR, s.stream());
    // It claims pieces 0..8 with starts at 1 and 5 (the real ones are 0
    // and 4), so the viewer would start at 1, in mid-segment.
    net.send_as(
        LIAR,
        1,
        &Message::Have {
            seqs: (0..8).collect(),
            segment_starts: vec![1, 5],
        },
    );
    assert_eq!(net.e(1).playback.start, Some(1), "a tentative start");
    let mut pieces = segment(&s, 0, 0, 4, net.now, 1_000);
    pieces.extend(segment(&s, 4, 1, 4, net.now, 1_000));
    for p in pieces.iter().take(2) {
        net.send_as(LIAR, 1, &Message::Piece(p.clone()));
    }
    assert_eq!(
        net.e(1).playback.start,
        Some(0),
        "piece 1 is no segment start: chosen again, with piece 0 verified"
    );
    for p in pieces.iter().skip(2) {
        net.send_as(LIAR, 1, &Message::Piece(p.clone()));
    }
    let v = net.e(1);
    assert_eq!(v.playback.start, Some(0));
    assert!(v.stats().startup_ms.is_some());
    let Message::BufferMap { segment_starts, .. } = v.buffer_map() else {
        unreachable!("a buffer map")
    };
    assert_eq!(
        segment_starts,
        vec![4, 0],
        "only verified starts are passed on"
    );
}

#[test]
fn a_flood_of_claims_does_not_push_out_what_is_due_next() {
    let s = signer();
    let mut net = Net::new(10);
    fed_viewer(&mut net, &s);
    stream(&mut net, &s, 0, 8);
    // A neighbour announces the next piece honestly...
    net.send_as(LIAR, 1, &have(vec![8]));
    assert!(net.e(1).edge.heard().contains_key(&8));
    // ...then thousands of claims far ahead, within the window.
    for batch in 0..5u64 {
        let from = 1_000 + batch * wire::MAX_LIST as u64;
        net.send_as(
            LIAR,
            1,
            &have((from..from + wire::MAX_LIST as u64).collect()),
        );
    }
    let v = net.e(1);
    assert!(v.edge.heard().len() <= 4 * wire::MAX_LIST);
    assert!(
        v.edge.heard().contains_key(&8),
        "the next piece is still known"
    );
}

#[test]
fn announcements_alone_do_not_hold_off_starvation() {
    let s = signer();
    let mut cfg = Config::viewer(s.stream());
    cfg.max_degree = 2;
    let mut net = Net::new(10);
    net.add(1, cfg);
    add_fake(&mut net, LIAR, s.stream());
    add_fake(&mut net, LIAR + 1, s.stream());
    let pieces = segment(&s, 0, 0, 4, net.now, 1_000);
    for p in &pieces {
        net.send_as(LIAR, 1, &Message::Piece(p.clone()));
    }
    // Ever newer claims, never a piece: the neighbourhood is starved all
    // the same.
    for i in 0..6u64 {
        net.send_as(LIAR, 1, &have(vec![10 + i]));
        net.run_for(1_000);
    }
    assert!(
        !net.disconnects(1).is_empty(),
        "a starved viewer lets a neighbour go"
    );
    assert!(net
        .disconnects(1)
        .iter()
        .all(|&(_, r)| r == "no news from the neighbourhood"));
}
