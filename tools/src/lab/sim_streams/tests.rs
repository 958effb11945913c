use super::*;
use crate::lab::scenario::{TopologySpec, UploadSpec};

/// A small mix under two policies: every stream is measured, the buckets
/// add up, and the budgets given stay within the tier's.
#[test]
fn a_mix_runs_under_each_policy() {
    let sc = Scenario {
        nodes: 30,
        streams: Some("20,9,1".parse().unwrap()),
        duration_s: 8.0,
        join_over_s: 2.0,
        topology: TopologySpec::Geo,
        upload: UploadSpec::Mixed,
        ..Scenario::default()
    };
    let budget = 4 * sc.bitrate_bps;
    let policies = [Allocation::Antfarm, Allocation::FirstCome];
    let out = run_sim_streams(&sc, System::Shoal, Some(2), &policies, Some(budget)).unwrap();
    assert_eq!((out.streams, out.minimums_bps), (3, 3 * sc.bitrate_bps));
    assert_eq!(out.policies.len(), 2);
    for p in &out.policies {
        assert_eq!(p.per_stream.len(), 3);
        assert_eq!(p.summary.nodes, 30);
        assert_eq!(p.rounds, 3);
        let buckets: usize = p.by_size.iter().map(|b| b.streams).sum();
        assert_eq!(buckets, 3);
        assert_eq!(p.smallest[0].viewers, 1);
        let given: f64 = p.per_stream.iter().filter_map(|s| s.budget_bps).sum();
        assert!(given <= budget as f64 + 1.0, "{given} > {budget}");
    }
    let none = run_sim_streams(&sc, System::Shoal, Some(1), &[Allocation::Off], None).unwrap();
    assert_eq!(none.budget_bps, None);
    assert!(none.policies[0]
        .per_stream
        .iter()
        .all(|s| s.budget_bps.is_none()));
    assert!(run_sim_streams(&sc, System::Shoal, None, &policies, None).is_err());
}
