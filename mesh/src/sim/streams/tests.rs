use super::*;
use crate::{allocation::Policy, proto::MAX_PIECE_BYTES, sim::tests::seed};

const BITRATE: u64 = 1_000_000;

/// Five streams (30, 15, 8, 6 viewers and a singleton last) under `policy`
/// with a budget of `copies` of the bitrate in all. Viewers upload 3× the
/// bitrate and say so, so the coordinator knows what a swarm can forward.
fn five_streams(policy: Option<Policy>, copies: f64, threads: usize) -> StreamsConfig {
    five_streams_for(policy, copies, threads, 12_000)
}

fn five_streams_for(
    policy: Option<Policy>,
    copies: f64,
    threads: usize,
    duration_ms: u64,
) -> StreamsConfig {
    let streams = [30, 15, 8, 6, 1]
        .iter()
        .enumerate()
        .map(|(i, &viewers)| SimConfig {
            viewers,
            seed: seed().wrapping_add(1_000 * i as u64),
            bitrate_bps: BITRATE,
            viewer_upload_bps: Some(3 * BITRATE),
            join_over_ms: 1_000,
            ..SimConfig::default()
        })
        .collect();
    StreamsConfig {
        streams,
        duration_ms,
        allocator: policy.map(|policy| AllocatorConfig {
            policy,
            ..AllocatorConfig::default()
        }),
        budget_bps: (copies * BITRATE as f64) as u64,
        interval_ms: 2_000,
        seed: seed(),
        threads,
        progress: None,
    }
}

/// Each stream's seeder mesh and origin together stay within the budget
/// it was given over the run, give or take what a token bucket lets
/// through at each change of rate (its burst, 50 ms of rate, and a piece
/// of debt, for the seeder's bucket and the origin's).
#[test]
fn no_stream_spends_more_than_its_budget() {
    let cfg = five_streams(Some(Policy::Antfarm), 6.0, 1);
    let r = run_streams(&cfg);
    assert_eq!(r.rounds, 5);
    for (i, s) in r.streams.iter().enumerate() {
        let used = s.report.seeder.payload_sent + s.report.origin_payload;
        let granted = s.budget_bytes.expect("a budget");
        let changes = r.rounds + 1;
        let burst = s.peak_budget_bps.expect("a budget") / 8 / 20;
        let slack = changes * 2 * (MAX_PIECE_BYTES as u64 + burst);
        eprintln!(
            "stream {i}: used {used} B (mesh {}, origin {}) of {granted} B, slack {slack}",
            s.report.seeder.payload_sent, s.report.origin_payload
        );
        assert!(used <= granted + slack, "stream {i}: {used} > {granted}");
    }
    let given: u64 = r.streams.iter().filter_map(|s| s.budget_bytes).sum();
    assert!(given <= cfg.budget_bps / 8 * cfg.duration_ms / 1_000);
}

/// The swarms run side by side between rounds: the run is the same on one
/// thread as on two.
#[test]
fn one_thread_or_two_same_run() {
    let one = run_streams(&five_streams(Some(Policy::Antfarm), 5.5, 1));
    let two = run_streams(&five_streams(Some(Policy::Antfarm), 5.5, 2));
    assert_eq!(one.summary, two.summary);
    assert_eq!(one.events, two.events);
    for (a, b) in one.streams.iter().zip(&two.streams) {
        assert_eq!(a.report.viewers, b.report.viewers);
        assert_eq!(a.report.seeder, b.report.seeder);
        assert_eq!(a.budget_bytes, b.budget_bytes);
    }
}

/// Without a coordinator nothing holds the seeders back: every stream plays.
#[test]
fn without_a_coordinator_every_stream_plays() {
    let r = run_streams(&five_streams(None, 1.0, 2));
    for s in &r.streams {
        assert_eq!(s.budget_bytes, None);
        assert!(s.report.summary.continuity.min >= 0.99, "{s:?}");
    }
}

/// A tight budget (the minimums and a tenth), 30 s: `antfarm` gives every
/// stream its one copy first, so the singleton gets a copy or more and
/// plays throughout; `first-come` serves the streams in the order they
/// came, each up to its knee, and the singleton, last, is left with what
/// remains once the bigger swarms' knees grow (held at their budgets,
/// their curves extend towards their demand): 0.68–0.87 of a copy over
/// the run at seeds 7, 1, 2 and 3. At this size that does not starve it
/// outright: it played 1.0, 0.81, 1.0 and 1.0 of its pieces in time (the
/// shortfall comes late, and a lone viewer's fallback is cheap), so only
/// less than the minimum and "no better than antfarm" are asserted of it.
#[test]
fn under_a_tight_budget_antfarm_keeps_the_singleton_playing() {
    let cfg = five_streams_for(Some(Policy::Antfarm), 5.5, 2, 30_000);
    let copy = BITRATE / 8 * cfg.duration_ms / 1_000;
    let singleton = |policy| {
        let r = run_streams(&five_streams_for(Some(policy), 5.5, 2, 30_000));
        let s = &r.streams[4];
        assert_eq!(s.report.viewers.len(), 1);
        eprintln!(
            "{policy}: singleton {:?}, budget {:?} B, sent {} + {} B",
            s.report.summary.continuity,
            s.budget_bytes,
            s.report.seeder.payload_sent,
            s.report.origin_payload
        );
        let copies = s.budget_bytes.expect("a budget") as f64 / copy as f64;
        (s.report.summary.continuity.mean, copies)
    };
    let (antfarm, antfarm_copies) = singleton(Policy::Antfarm);
    let (first_come, first_come_copies) = singleton(Policy::FirstCome);
    assert!(antfarm >= 0.99, "antfarm {antfarm}");
    assert!(
        antfarm_copies >= 1.0,
        "antfarm gave {antfarm_copies} copies"
    );
    assert!(
        first_come_copies < 1.0,
        "first-come gave {first_come_copies} copies"
    );
    assert!(first_come <= antfarm, "first-come {first_come}");
}
