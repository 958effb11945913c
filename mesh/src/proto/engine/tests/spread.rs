//! Infrastructure spreads its neighbours over the map (`engine::spread`).

use super::*;

const SEEDER: u32 = 100;

/// A coordinate `x` ms east of the origin, trusted.
fn at(x: f32) -> Coord {
    Coord {
        x,
        y: 0.0,
        height: 1.0,
        error: 0.1,
    }
}

fn hint(peer: u32, coord: Coord) -> PeerInfo<u32> {
    PeerInfo {
        coord: Some(coord),
        ..PeerInfo::new(peer, vec![format!("/memory/{peer}")])
    }
}

/// A seeder told of 2,000 viewers pushes to eight (one per 250), so it
/// dials eight; told of three clusters of candidates, all close together
/// within each, it dials into every cluster rather than into the first.
#[test]
fn a_seeder_dials_viewers_all_over_the_map() {
    let s = signer();
    let mut net = Net::new(5);
    net.add(SEEDER, Config::seeder(s.stream()));
    // Engines 1..=30: ten at 0 ms, ten at 300 ms, ten at 600 ms.
    let mut hints = Vec::new();
    for v in 1..=30u32 {
        net.add(v, Config::viewer(s.stream()));
        hints.push(hint(v, at(300.0 * ((v - 1) / 10) as f32 + v as f32 / 10.0)));
    }
    net.input(SEEDER, Input::Swarm { viewers: 2_000 });
    net.input(SEEDER, Input::Candidates(hints));
    net.run_for(1_500);

    let picked: Vec<u32> = net.e(SEEDER).neighbors().copied().collect();
    assert_eq!(picked.len(), 8, "{picked:?}");
    for cluster in 0..3 {
        let range = 1 + 10 * cluster..=10 + 10 * cluster;
        assert!(
            picked.iter().any(|v| range.contains(v)),
            "no entry point in cluster {cluster}: {picked:?}"
        );
    }
}

/// A viewer at its cap greeted by infrastructure drops a viewer neighbour
/// and takes it: the seeder's pushes must reach every region.
#[test]
fn a_full_viewer_makes_room_for_infrastructure() {
    let s = signer();
    let mut net = Net::new(5);
    full_with_two(&mut net, Config::viewer(s.stream()));
    net.run_for(100);
    assert_eq!(net.e(1).degree(), 2);

    net.add(SEEDER, Config::seeder(s.stream()));
    net.connect(SEEDER, 1);
    net.run_for(100);
    let neighbors: Vec<u32> = net.e(1).neighbors().copied().collect();
    assert!(neighbors.contains(&SEEDER), "{neighbors:?}");
    assert_eq!(neighbors.len(), 2, "the cap holds: {neighbors:?}");
    assert_eq!(net.disconnects(1).len(), 1, "one viewer made room");
    assert!(net.e(SEEDER).neighbors().any(|&p| p == 1));
}

/// Once the stream's pace is known, the seeder keeps no viewer it dialled
/// whose upload cannot pass its pushes on, and pushes every new piece to
/// each of the viewers it keeps when it has no more than its spread.
#[test]
fn a_seeder_pushes_to_viewers_that_can_relay() {
    let s = signer();
    let mut net = Net::new(5);
    net.add(SEEDER, Config::seeder(s.stream()));
    // 250 kB/s of pieces: 2 Mbit/s.
    for seq in 0..8 {
        let fl = if seq == 0 { flags::FIRST } else { 0 };
        net.input(
            SEEDER,
            Input::Publish(piece(&s, seq, 0, fl, net.now, 31_250)),
        );
        net.run_for(125);
    }
    // 1 uploads 20 Mbit/s, 2 only 1 Mbit/s (less than the stream).
    for (v, kbps) in [(1, 20_000), (2, 1_000)] {
        let mut cfg = Config::viewer(s.stream());
        cfg.upload_kbps = kbps;
        net.add(v, cfg);
    }
    let hints = vec![hint(1, at(10.0)), hint(2, at(200.0))];
    net.input(SEEDER, Input::Candidates(hints));
    net.run_for(1_500);
    assert_eq!(net.e(SEEDER).neighbors().collect::<Vec<_>>(), vec![&1]);
    assert!(net
        .disconnects(SEEDER)
        .contains(&(2, "too little upload to relay pushes")));

    let seq = 8;
    let next = piece(&s, seq, 1, flags::FIRST, net.now, 31_250);
    net.input(SEEDER, Input::Publish(next));
    net.run_for(100);
    assert!(net
        .received(1, SEEDER)
        .iter()
        .any(|m| matches!(m, Message::Piece(p) if p.header.seq == seq)));
}

/// A seeder connected to viewers `1..=n`, each uploading 20 Mbit/s.
fn seeder_with_fast_viewers(s: &Signer, n: u32) -> Net {
    let mut net = Net::new(5);
    net.add(SEEDER, Config::seeder(s.stream()));
    for v in 1..=n {
        let mut cfg = Config::viewer(s.stream());
        cfg.upload_kbps = 20_000;
        net.add(v, cfg);
        net.connect(v, SEEDER);
    }
    net
}

/// The coordinator's budget holds a seeder's pushes as well as what it is
/// asked for: at half the stream's rate it sends about half a copy, where
/// unbudgeted it pushes a copy to each of its spread.
#[test]
fn a_budget_holds_the_seeders_push() {
    let sent = |budget: Option<u64>| {
        let s = signer();
        let mut net = seeder_with_fast_viewers(&s, 3);
        net.input(SEEDER, Input::Swarm { viewers: 750 });
        net.input(SEEDER, Input::Budget { bps: budget });
        // 2 Mbit/s for 4 s: 32 pieces of 31,250 bytes.
        for seq in 0..32 {
            let fl = if seq % 8 == 0 { flags::FIRST } else { 0 };
            let p = piece(&s, seq, seq / 8, fl, net.now, 31_250);
            net.input(SEEDER, Input::Publish(p));
            net.run_for(125);
        }
        net.e(SEEDER).stats().payload_sent
    };
    // Pushes start once the sessions are up, a piece or so in.
    let copy = 32 * 31_250;
    let free = sent(None);
    assert!(free >= 5 * copy / 2, "a copy to each of the spread: {free}");
    // 1 Mbit/s over 4 s, its 50 ms burst and one piece of debt.
    let held = sent(Some(1_000_000));
    assert!(held <= 500_000 + 6_250 + 31_250, "{held}");
    assert!(held >= 400_000, "the budget is used: {held}");
}

/// A seeder of a swarm too large for every viewer to keep a long link
/// pushes each piece to four entry points, not one; under a budget, to as
/// many as it affords with half a copy left for requests.
#[test]
fn a_mid_size_swarm_gets_four_entry_points_as_far_as_the_budget_affords() {
    let s = signer();
    // Eight neighbours: it pushes among the better-provisioned half.
    let mut net = seeder_with_fast_viewers(&s, 8);
    net.input(SEEDER, Input::Swarm { viewers: 300 });
    // 2 Mbit/s: pieces of 31,250 bytes every 125 ms.
    const N: u64 = 16;
    for seq in 0..N {
        let fl = if seq % 8 == 0 { flags::FIRST } else { 0 };
        let p = piece(&s, seq, seq / 8, fl, net.now, 31_250);
        net.input(SEEDER, Input::Publish(p));
        // Pushes only: too soon after the last piece for a request.
        net.run_for(if seq + 1 == N { 20 } else { 125 });
    }
    let pushed = (1..=8)
        .filter(|&v| {
            net.received(v, SEEDER)
                .iter()
                .any(|m| matches!(m, Message::Piece(p) if p.header.seq == N - 1))
        })
        .count();
    assert_eq!(pushed, 4);

    // Three copies' worth: two pushed, the rest kept for requests.
    net.input(
        SEEDER,
        Input::Budget {
            bps: Some(6_000_000),
        },
    );
    assert_eq!(net.e(SEEDER).spread(), 2);
    // Little more than one: one.
    net.input(
        SEEDER,
        Input::Budget {
            bps: Some(2_400_000),
        },
    );
    assert_eq!(net.e(SEEDER).spread(), 1);
    // A small swarm: one, as every viewer keeps a long link.
    net.input(SEEDER, Input::Budget { bps: None });
    net.input(SEEDER, Input::Swarm { viewers: 100 });
    assert_eq!(net.e(SEEDER).spread(), 1);
}
