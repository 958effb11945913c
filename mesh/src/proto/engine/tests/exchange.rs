//! Pieces moving: the seeder's push and its relay, pulls spread over
//! neighbours, the upload limit, fallback to infrastructure, deadlines.

use super::*;

/// The seeder 100, viewer 1 its neighbour, viewer 2 only 1's, sessions up.
fn seeder_then_two_in_a_row(s: &Signer) -> Net {
    let mut net = Net::new(10);
    net.add(100, Config::seeder(s.stream()));
    net.add(1, Config::viewer(s.stream()));
    net.add(2, Config::viewer(s.stream()));
    net.connect(1, 100);
    net.connect(2, 1);
    net.run_for(200);
    net
}

#[test]
fn pieces_flow_from_seeder_through_a_viewer_to_a_viewer() {
    let s = signer();
    const SEEDER: u32 = 100;
    let (a, b) = (1, 2);
    let mut net = seeder_then_two_in_a_row(&s);
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
        unanswered <= crate::proto::engine::uploads::UPLOAD_QUEUE,
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
fn a_start_whose_first_segment_cannot_be_had_gives_way_to_a_newer_one() {
    const FEEDER: u32 = 9;
    let s = signer();
    let mut net = Net::new(10);
    net.add(1, Config::viewer(s.stream()));
    add_fake(&mut net, FEEDER, s.stream());
    // The first segment's first piece is announced but never comes: nobody
    // the viewer can reach holds it any more.
    net.send_as(
        FEEDER,
        1,
        &Message::Have {
            seqs: vec![0],
            segment_starts: vec![0],
        },
    );
    for p in segment(&s, 0, 0, 4, net.now, 1_000).into_iter().skip(1) {
        net.send_as(FEEDER, 1, &Message::Piece(p));
    }
    assert_eq!(net.e(1).playback.start, Some(0));
    // The stream goes on, a segment a second, piece 0 still missing.
    for seg in 1..10u64 {
        net.run_for(1_000);
        for p in segment(&s, seg * 4, seg, 4, net.now, 1_000) {
            net.send_as(FEEDER, 1, &Message::Piece(p));
        }
    }
    let v = net.e(1);
    assert!(
        v.playback.start > Some(0),
        "still waiting on piece 0: {:?}",
        v.playback.start
    );
    assert!(v.stats().startup_ms.is_some(), "never started");
}

/// The broadcaster stops for 8 s, longer than the playout delay, and comes
/// back where it left off (the same seqs, produced later): viewers that
/// judged the missing stretch late, and believed pieces past it were due
/// long ago, rebuffer and play the stream again, the one the seeder does
/// not push to included.
#[test]
fn viewers_play_again_after_the_broadcaster_pauses() {
    let s = signer();
    const SEEDER: u32 = 100;
    let (a, b) = (1, 2);
    let mut net = seeder_then_two_in_a_row(&s);

    // Segments of 4 pieces, one piece every 250 ms.
    const PER_SEGMENT: u64 = 4;
    let publish = |net: &mut Net, segments: std::ops::Range<u64>| {
        for seg in segments {
            for p in segment(&s, seg * PER_SEGMENT, seg, PER_SEGMENT, net.now, 8_000) {
                net.input(SEEDER, Input::Publish(p));
                net.run_for(250);
            }
        }
    };
    publish(&mut net, 0..8);
    net.run_for(8_000);
    let before: Vec<u64> = [a, b].map(|v| net.e(v).stats().pieces_on_time).to_vec();
    publish(&mut net, 8..24);
    net.run_for(4_000);

    let all: Vec<(u64, u64)> = [a, b]
        .into_iter()
        .zip(before)
        .map(|(v, before)| {
            let st = net.e(v).stats();
            (st.pieces_on_time - before, st.pieces_due)
        })
        .collect();
    for (v, &(played, due)) in [a, b].into_iter().zip(&all) {
        // Of the 16 segments after the pause, all but the few it took to
        // find it stalled and start again.
        assert!(
            played >= 10 * PER_SEGMENT,
            "viewer {v} played {played} after the pause: {all:?}"
        );
        // Each piece is judged once: 24 segments and the pause's 8 s.
        assert!(due <= (24 + 8) * PER_SEGMENT, "viewer {v}: {due} judged");
    }
}
