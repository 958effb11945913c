//! Feeds: a reflector takes full copies from its parents, keeps the first
//! and passes each new piece on (`engine::feeds`, docs/protocol.md §7.7).

use super::*;

const REFLECTOR: u32 = 50;
/// A fake reflector fed by the engine under test.
const CHILD: u32 = 60;
/// A fake viewer neighbour of the engine under test.
const VIEWER: u32 = 61;
const PARENT_A: u32 = 100;
const PARENT_B: u32 = 101;
const SIZE: usize = 1_000;

fn info(peer: u32) -> PeerInfo<u32> {
    PeerInfo::new(peer, vec![format!("/memory/{peer}")])
}

/// Fake `fake` dials engine `to` and greets as `role`.
fn greet(net: &mut Net, fake: u32, to: u32, role: Role) {
    let stream = net.e(to).config().stream;
    net.connect(fake, to);
    net.send_as(fake, to, &hello(stream, role));
    assert!(net.e(to).neighbors().any(|&p| p == fake), "{fake} is in");
}

/// Fake reflector `fake` greets engine `to` and asks to be fed.
fn add_child(net: &mut Net, fake: u32, to: u32) {
    greet(net, fake, to, Role::Reflector);
    net.send_as(fake, to, &Message::Feed { on: true });
}

/// Seqs of the pieces `from` sent `to`, in order.
fn pieces_sent(net: &Net, from: u32, to: u32) -> Vec<u64> {
    let piece = |m: &&Message<u32>| match m {
        Message::Piece(p) => Some(p.header.seq),
        _ => None,
    };
    net.sent(from, to).iter().filter_map(piece).collect()
}

/// What each `Feed` `from` sent `to` asked, in order.
fn feeds_sent(net: &Net, from: u32, to: u32) -> Vec<bool> {
    let feed = |m: &&Message<u32>| match m {
        Message::Feed { on } => Some(*on),
        _ => None,
    };
    net.sent(from, to).iter().filter_map(feed).collect()
}

/// Seeder `at` publishes the first `n` pieces of segment 0, 100 ms apart.
fn publish_segment(net: &mut Net, s: &Signer, at: u32, n: u64) {
    for seq in 0..n {
        let fl = if seq == 0 { flags::FIRST } else { 0 };
        net.input(at, Input::Publish(piece(s, seq, 0, fl, net.now, SIZE)));
        net.run_for(100);
    }
}

fn is_neighbor(net: &Net, of: u32, peer: u32) -> bool {
    net.e(of).neighbors().any(|&p| p == peer)
}

/// Seeders A and B, and a reflector told to take the stream from both,
/// with a fed child and a viewer neighbour.
fn reflector_with_two_parents(net: &mut Net, s: &Signer) {
    net.add(PARENT_A, Config::seeder(s.stream()));
    net.add(PARENT_B, Config::seeder(s.stream()));
    net.add(REFLECTOR, Config::reflector(s.stream()));
    net.input(
        REFLECTOR,
        Input::Parents(vec![info(PARENT_A), info(PARENT_B)]),
    );
    net.run_for(50);
    for parent in [PARENT_A, PARENT_B] {
        assert!(is_neighbor(net, REFLECTOR, parent), "parent {parent}");
        assert_eq!(feeds_sent(net, REFLECTOR, parent), vec![true]);
    }
    add_child(net, CHILD, REFLECTOR);
    greet(net, VIEWER, REFLECTOR, Role::Viewer);
}

/// Both parents publish piece `seq` at once; A's copy is sent first.
fn publish_at_both(net: &mut Net, s: &Signer, seq: u64) {
    let fl = if seq == 0 { flags::FIRST } else { 0 };
    let p = piece(s, seq, 0, fl, net.now, SIZE);
    net.input(PARENT_A, Input::Publish(p.clone()));
    net.input(PARENT_B, Input::Publish(p));
}

#[test]
fn a_reflector_keeps_the_first_copy_and_passes_each_piece_on_once() {
    let s = signer();
    let mut net = Net::new(5);
    reflector_with_two_parents(&mut net, &s);
    for seq in 0..4 {
        publish_at_both(&mut net, &s, seq);
        net.run_for(100);
    }
    let all: Vec<u64> = (0..4).collect();
    assert_eq!(net.delivered(REFLECTOR), all);
    let stats = net.e(REFLECTOR).stats();
    assert_eq!(stats.payload_from_infra, 4 * SIZE as u64);
    assert_eq!(stats.payload_duplicate, 4 * SIZE as u64, "B's copies");
    assert_eq!(pieces_sent(&net, REFLECTOR, CHILD), all);
    assert_eq!(pieces_sent(&net, REFLECTOR, VIEWER), all);
    for seq in all {
        // Passed on as A's copy arrived, before B's did.
        let fed = net
            .position(|e| {
                matches!(e, Ev::Sent { from: REFLECTOR, to: CHILD, msg: Message::Piece(p) }
                    if p.header.seq == seq)
            })
            .expect("fed");
        let second = net
            .position(|e| {
                matches!(e, Ev::Recv { from: PARENT_B, to: REFLECTOR, msg: Message::Piece(p) }
                    if p.header.seq == seq)
            })
            .expect("B's copy");
        assert!(fed < second, "piece {seq}");
    }
    for parent in [PARENT_A, PARENT_B] {
        assert!(pieces_sent(&net, REFLECTOR, parent).is_empty(), "{parent}");
    }
}

#[test]
fn a_lost_parent_costs_no_piece_and_is_redialled_after_its_back_off() {
    let s = signer();
    let mut net = Net::new(5);
    reflector_with_two_parents(&mut net, &s);
    publish_at_both(&mut net, &s, 0);
    net.run_for(100);

    net.input(REFLECTOR, Input::Disconnected { peer: PARENT_A });
    net.input(PARENT_A, Input::Disconnected { peer: REFLECTOR });
    for seq in 1..4 {
        publish_at_both(&mut net, &s, seq);
        net.run_for(100);
    }
    let all: Vec<u64> = (0..4).collect();
    assert_eq!(net.delivered(REFLECTOR), all, "B's feed carries on");
    assert_eq!(pieces_sent(&net, REFLECTOR, CHILD), all);
    // A delivered before it went: the first back-off, one second, then
    // the next tick's dial.
    assert!(
        !is_neighbor(&net, REFLECTOR, PARENT_A),
        "not redialled at once"
    );
    net.run_for(2_000);
    assert!(is_neighbor(&net, REFLECTOR, PARENT_A), "redialled");
    assert_eq!(feeds_sent(&net, REFLECTOR, PARENT_A), vec![true, true]);

    publish_at_both(&mut net, &s, 4);
    net.run_for(100);
    assert_eq!(
        pieces_sent(&net, REFLECTOR, CHILD),
        (0..5).collect::<Vec<_>>()
    );
    assert_eq!(
        net.e(REFLECTOR).stats().payload_duplicate,
        2 * SIZE as u64,
        "both copies again"
    );
}

#[test]
fn a_bad_piece_from_a_parent_is_dropped_and_the_parent_penalised() {
    const FAKE_PARENT: u32 = 70;
    let s = signer();
    let mut net = Net::new(5);
    net.add(REFLECTOR, Config::reflector(s.stream()));
    net.input(REFLECTOR, Input::Parents(vec![info(FAKE_PARENT)]));
    // Our dial of a fake fails; the parent dials us instead.
    greet(&mut net, FAKE_PARENT, REFLECTOR, Role::Seeder);
    net.run_for(50);
    assert_eq!(feeds_sent(&net, REFLECTOR, FAKE_PARENT), vec![true]);
    add_child(&mut net, CHILD, REFLECTOR);

    let good = piece(&s, 0, 0, flags::FIRST, net.now, SIZE);
    net.send_as(FAKE_PARENT, REFLECTOR, &Message::Piece(good));
    for strike in 1..=3 {
        let foreign = piece(&other_signer(), strike, 0, 0, net.now, SIZE);
        net.send_as(FAKE_PARENT, REFLECTOR, &Message::Piece(foreign));
        assert_eq!(net.e(REFLECTOR).stats().bad_pieces, strike);
    }
    assert_eq!(net.delivered(REFLECTOR), vec![0]);
    assert_eq!(pieces_sent(&net, REFLECTOR, CHILD), vec![0]);
    assert_eq!(
        net.disconnects(REFLECTOR),
        vec![(FAKE_PARENT, "bad pieces")]
    );
    assert_eq!(net.e(REFLECTOR).stats().protocol_violations, 1);
}

#[test]
fn feed_from_a_viewer_or_a_seeder_is_a_violation() {
    let s = signer();
    let mut net = Net::new(5);
    net.add(PARENT_A, Config::seeder(s.stream()));
    for (fake, role) in [(1, Role::Viewer), (2, Role::Seeder)] {
        greet(&mut net, fake, PARENT_A, role);
        net.send_as(fake, PARENT_A, &Message::Feed { on: true });
        assert!(!is_neighbor(&net, PARENT_A, fake), "{role:?}");
    }
    assert_eq!(
        net.disconnects(PARENT_A),
        vec![
            (1, "feed from a non-reflector"),
            (2, "feed from a non-reflector")
        ]
    );
    assert_eq!(net.e(PARENT_A).stats().protocol_violations, 2);
}

#[test]
fn a_seeder_pushes_every_piece_to_each_fed_reflector_and_still_to_its_spread() {
    const UNFED: u32 = 62;
    let s = signer();
    let mut net = Net::new(5);
    net.add(PARENT_A, Config::seeder(s.stream()));
    add_child(&mut net, CHILD, PARENT_A);
    add_child(&mut net, CHILD + 10, PARENT_A);
    greet(&mut net, UNFED, PARENT_A, Role::Reflector);
    greet(&mut net, VIEWER, PARENT_A, Role::Viewer);
    publish_segment(&mut net, &s, PARENT_A, 5);
    let all: Vec<u64> = (0..5).collect();
    assert_eq!(pieces_sent(&net, PARENT_A, CHILD), all);
    assert_eq!(pieces_sent(&net, PARENT_A, CHILD + 10), all);
    assert_eq!(pieces_sent(&net, PARENT_A, VIEWER), all, "push_fanout 1");
    assert!(pieces_sent(&net, PARENT_A, UNFED).is_empty());
}

#[test]
fn feed_off_stops_the_pushes() {
    let s = signer();
    let mut net = Net::new(5);
    net.add(PARENT_A, Config::seeder(s.stream()));
    add_child(&mut net, CHILD, PARENT_A);
    net.input(
        PARENT_A,
        Input::Publish(piece(&s, 0, 0, flags::FIRST, net.now, SIZE)),
    );
    net.send_as(CHILD, PARENT_A, &Message::Feed { on: false });
    net.input(PARENT_A, Input::Publish(piece(&s, 1, 0, 0, net.now, SIZE)));
    net.run_for(100);
    assert_eq!(pieces_sent(&net, PARENT_A, CHILD), vec![0]);
    let announced = net
        .sent(PARENT_A, CHILD)
        .into_iter()
        .any(|m| matches!(m, Message::Have { seqs, .. } if seqs.contains(&1)));
    assert!(announced, "piece 1 is only announced");
}

#[test]
fn a_parent_dropped_from_the_list_is_told_to_stop_and_closed() {
    let s = signer();
    let mut net = Net::new(5);
    reflector_with_two_parents(&mut net, &s);
    net.input(REFLECTOR, Input::Parents(vec![info(PARENT_B)]));
    net.run_for(5_000);
    assert_eq!(feeds_sent(&net, REFLECTOR, PARENT_A), vec![true, false]);
    assert!(net
        .disconnects(REFLECTOR)
        .contains(&(PARENT_A, "no longer a parent")));
    assert!(!is_neighbor(&net, REFLECTOR, PARENT_A), "not redialled");
    assert_eq!(feeds_sent(&net, REFLECTOR, PARENT_B), vec![true]);
}

/// Infrastructure's sessions with each other are outside its cap: a full
/// seeder takes a reflector child without refusing it or dropping a viewer,
/// and a reflector full of viewers still keeps its parent.
#[test]
fn a_parent_session_is_never_refused_nor_costs_a_viewer_its_slot() {
    let s = signer();
    let mut net = Net::new(5);
    let mut seeder = Config::seeder(s.stream());
    seeder.max_degree = 1;
    net.add(PARENT_A, seeder);
    greet(&mut net, VIEWER, PARENT_A, Role::Viewer);
    let mut reflector = Config::reflector(s.stream());
    reflector.max_degree = 1;
    net.add(REFLECTOR, reflector);
    greet(&mut net, VIEWER + 1, REFLECTOR, Role::Viewer);

    net.input(REFLECTOR, Input::Parents(vec![info(PARENT_A)]));
    net.run_for(50);
    assert!(is_neighbor(&net, REFLECTOR, PARENT_A));
    assert!(is_neighbor(&net, PARENT_A, VIEWER));
    assert!(is_neighbor(&net, REFLECTOR, VIEWER + 1));
    assert!(net.disconnects(PARENT_A).is_empty());
    assert!(net.disconnects(REFLECTOR).is_empty());
    assert_eq!(feeds_sent(&net, REFLECTOR, PARENT_A), vec![true]);
}

#[test]
fn a_seeder_of_a_reflected_stream_feeds_its_reflectors_and_lets_its_viewers_go() {
    let s = signer();
    let mut net = Net::new(5);
    net.add(PARENT_A, Config::seeder(s.stream()));
    add_child(&mut net, CHILD, PARENT_A);
    greet(&mut net, VIEWER, PARENT_A, Role::Viewer);
    net.input(PARENT_A, Input::Reflected(true));
    assert!(!is_neighbor(&net, PARENT_A, VIEWER), "the viewer goes");
    assert!(is_neighbor(&net, PARENT_A, CHILD), "the reflector stays");
    publish_segment(&mut net, &s, PARENT_A, 5);
    assert_eq!(
        pieces_sent(&net, PARENT_A, CHILD),
        (0..5).collect::<Vec<_>>()
    );
    assert!(pieces_sent(&net, PARENT_A, VIEWER).is_empty());
    // A viewer that dials it now is not admitted.
    const LATE: u32 = 70;
    let stream = s.stream();
    net.connect(LATE, PARENT_A);
    net.send_as(LATE, PARENT_A, &hello(stream, Role::Viewer));
    assert!(!is_neighbor(&net, PARENT_A, LATE));
    // Once the reflectors are gone, viewers are welcome again.
    net.input(PARENT_A, Input::Reflected(false));
    greet(&mut net, VIEWER, PARENT_A, Role::Viewer);
}
