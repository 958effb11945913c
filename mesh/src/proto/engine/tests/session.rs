//! Sessions: the handshake, the degree cap, refusals, and what breaks a
//! session (malformed frames, messages out of turn, bad pieces).

use super::*;

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

/// Viewers 1 to 6; 1 takes two neighbours at most, and 4 is already
/// well connected (5 and 6: more than half of 1's cap), so 1 does not make
/// room for it.
fn capped_at_two_beside_a_well_connected_four() -> Net {
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
    net
}

#[test]
fn degree_cap_refuses_the_third_inbound_session() {
    let mut net = capped_at_two_beside_a_well_connected_four();
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
    let mut net = capped_at_two_beside_a_well_connected_four();
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
