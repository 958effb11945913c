//! The wall clock may step under a running node (NTP, a user): timers run
//! on the monotonic clock, so a step in either direction stalls nothing.

use super::*;

const SEEDER: u32 = 100;
const VIEWER: u32 = 1;

/// Publishes pieces `from..to`, four to a segment, one every 250 ms.
fn stream(net: &mut Net, s: &Signer, from: u64, to: u64) {
    for seq in from..to {
        let fl = match seq % 4 {
            0 => flags::FIRST,
            3 => flags::LAST,
            _ => 0,
        };
        let p = piece(s, seq, seq / 4, fl, net.now, 2_000);
        net.input(SEEDER, Input::Publish(p));
        net.run_for(250);
    }
}

fn pings_sent_after(net: &Net, at_event: usize) -> usize {
    net.log[at_event..]
        .iter()
        .filter(|e| {
            matches!(
                e,
                Ev::Sent {
                    from: VIEWER,
                    msg: Message::Ping { .. },
                    ..
                }
            )
        })
        .count()
}

#[test]
fn a_wall_clock_step_either_way_stalls_neither_timers_nor_pieces() {
    for step in [-3_600_000i64, 3_600_000] {
        let s = signer();
        let mut net = Net::new(10);
        net.add(SEEDER, Config::seeder(s.stream()));
        net.add(VIEWER, Config::viewer(s.stream()));
        net.connect(VIEWER, SEEDER);
        net.run_for(200);
        stream(&mut net, &s, 0, 16);
        assert!(
            net.e(VIEWER).stats().startup_ms.is_some(),
            "{:?}",
            net.e(VIEWER).stats()
        );

        net.wall_offset.insert(VIEWER, step);
        let mark = net.log.len();
        stream(&mut net, &s, 16, 40);
        let got = net.delivered(VIEWER);
        assert!(
            (16..40).all(|seq| got.contains(&seq)),
            "step {step}: every piece after the step arrives"
        );
        assert!(
            pings_sent_after(&net, mark) >= 5,
            "step {step}: the tick keeps pinging once a second"
        );
        assert_eq!(net.e(VIEWER).degree(), 1, "step {step}");
    }
}
