//! Choosing and measuring peers: pings, probes, long links, the candidate
//! table.

use super::*;

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
    use crate::proto::engine::peers::selection::long_link_share;
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
    assert_eq!(
        e.candidates.len(),
        crate::proto::engine::peers::candidates::MAX_CANDIDATES
    );
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
    assert_eq!(
        e.candidates.len(),
        crate::proto::engine::peers::discovery::KEEP_CANDIDATES
    );
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
    let closest = crate::proto::engine::peers::discovery::KEEP_CANDIDATES
        - crate::proto::engine::peers::discovery::KEEP_RANDOM
        - dialled.len();
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
