//! `shoal-lab bench`: one scenario, several systems, one invocation; or,
//! with `--policies`, one scenario (normally a stream mix) under several
//! allocation policies of the coordinator, system shoal.
//!
//! Each run goes in its own child process (`shoal-lab run`), one after
//! the other, under the same scenario and seed, so CPU time and peak memory
//! are each run's own and nothing one run leaves behind (sockets, tasks)
//! disturbs the next.

use std::{io::Write, process::Stdio};

use anyhow::{bail, Context};
use serde_json::json;

use shoal_mesh::allocation::Policy;

use super::{
    result::RunResult,
    scenario::{Allocation, Scenario},
    system::System,
};

/// Runs every system and returns their results in the order given.
pub async fn bench(
    sc: &Scenario,
    systems: &[System],
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Vec<RunResult>> {
    for &system in systems {
        super::run::check_system(sc, system)?;
    }
    let runs: Vec<(System, Scenario)> = systems.iter().map(|&s| (s, sc.clone())).collect();
    run_each(&runs, out).await
}

/// Runs Shoal through the scenario once per allocation policy and returns
/// their results in the order given.
pub async fn bench_policies(
    sc: &Scenario,
    policies: &[Policy],
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Vec<RunResult>> {
    let runs: Vec<(System, Scenario)> = policies
        .iter()
        .map(|&p| {
            let sc = Scenario {
                allocation: Allocation::from(p),
                ..sc.clone()
            };
            (System::Shoal, sc)
        })
        .collect();
    run_each(&runs, out).await
}

/// Runs each (system, scenario) in turn, each in its own child process.
async fn run_each(
    runs: &[(System, Scenario)],
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Vec<RunResult>> {
    let exe = std::env::current_exe().context("cannot find the shoal-lab executable")?;
    let dir = std::env::temp_dir().join(format!("shoal-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut results = Vec::new();
    for (i, (system, sc)) in runs.iter().enumerate() {
        let what = match &sc.streams {
            Some(mix) => format!("{system}, allocation {}, streams {mix}", sc.allocation),
            None => system.to_string(),
        };
        writeln!(
            out,
            "running {what} ({} viewers, {} s)...",
            sc.nodes, sc.duration_s
        )?;
        let scenario_file = dir.join(format!("scenario-{i}.json"));
        std::fs::write(&scenario_file, serde_json::to_string(sc)?)?;
        let json = dir.join(format!("{system}-{i}.json"));
        let status = tokio::process::Command::new(&exe)
            .arg("run")
            .arg("--scenario-file")
            .arg(&scenario_file)
            .arg("--system")
            .arg(system.to_string())
            .arg("--json")
            .arg(&json)
            .arg("--quiet")
            .stdin(Stdio::null())
            .status()
            .await
            .with_context(|| format!("cannot start the {system} run"))?;
        if !status.success() {
            bail!("the {system} run failed ({status})");
        }
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("the {system} run wrote no result"))?;
        let r: RunResult = serde_json::from_str(&text)?;
        writeln!(
            out,
            "  {what}: offload {:.3}, continuity {:.4}, lag p95 {} ms",
            r.summary.offload, r.summary.continuity.mean, r.summary.lag_ms.p95
        )?;
        results.push(r);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(results)
}

/// The measures of one system, with the DESIGN.md names.
pub fn measures(r: &RunResult) -> serde_json::Value {
    let mut v = serde_json::to_value(&r.summary).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("neighbor_rtt_ratio".into(), json!(r.neighbor_rtt_ratio));
        m.insert("cpu_s_per_node".into(), json!(r.cpu_s_per_node));
        m.insert(
            "peak_rss_bytes_per_node".into(),
            json!(r.peak_rss_bytes_per_node),
        );
        m.insert("wall_s".into(), json!(r.wall_s));
        if r.fallback_from_reflectors.is_some() {
            m.insert(
                "fallback_from_reflectors".into(),
                json!(r.fallback_from_reflectors),
            );
        }
        if !r.faults.is_empty() {
            m.insert("faults".into(), json!(r.faults));
        }
    }
    v
}

/// `{"scenario": {...}, "systems": {"shoal": {...}, ...}}`.
pub fn bench_json(sc: &Scenario, results: &[RunResult]) -> serde_json::Value {
    let systems: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|r| (r.system.clone(), measures(r)))
        .collect();
    json!({ "scenario": sc, "systems": systems })
}

/// `{"scenario": {...}, "policies": {"antfarm": {...}, ...}}`: each
/// policy's measures, its goodput and its per-stream figures.
pub fn policies_json(sc: &Scenario, results: &[RunResult]) -> serde_json::Value {
    let policies: serde_json::Map<String, serde_json::Value> = policy_names(results)
        .into_iter()
        .zip(results)
        .map(|(name, r)| {
            let mut v = measures(r);
            if let Some(m) = v.as_object_mut() {
                m.insert(
                    "continuity_goodput_bps".into(),
                    json!(r.continuity_goodput_bps),
                );
                m.insert("streams".into(), json!(r.streams));
            }
            (name, v)
        })
        .collect();
    json!({ "scenario": sc, "policies": policies })
}

/// The policies side by side: whole-run figures, then each stream's
/// infrastructure bandwidth per viewer, continuity and budget under each.
pub fn policies_table(results: &[RunResult]) -> String {
    type Col = (&'static str, fn(&RunResult) -> f64);
    let cols: [Col; 8] = [
        ("goodput Mb/s", |r| r.continuity_goodput_bps / 1e6),
        ("cont.mean", |r| r.summary.continuity.mean),
        ("cont.min", |r| r.summary.continuity.min),
        ("worst strm", |r| {
            (r.streams.iter())
                .map(|s| s.summary.continuity.mean)
                .fold(f64::NAN, f64::min)
        }),
        ("offload", |r| r.summary.offload),
        ("egress", |r| r.summary.seeder_egress),
        ("lag p95", |r| r.summary.lag_ms.p95 as f64),
        ("start p50", |r| r.summary.startup_ms.p50 as f64),
    ];
    let names = policy_names(results);
    let mut s = format!("{:<14}", "policy");
    for (name, _) in &cols {
        s.push_str(&format!(" {name:>12}"));
    }
    s.push('\n');
    for (r, name) in results.iter().zip(&names) {
        s.push_str(&format!("{name:<14}"));
        for (_, f) in &cols {
            s.push_str(&format!(" {:>12}", fmt(f(r))));
        }
        s.push('\n');
    }
    s.push_str(
        "\nper stream: infra kbit/s per viewer / continuity mean / budget kbit/s / \
         seeder mesh + HTTP kbit/s\n",
    );
    s.push_str(&format!("{:<7} {:>7}", "stream", "viewers"));
    for name in &names {
        s.push_str(&format!(" {name:>32}"));
    }
    s.push('\n');
    let streams = results.iter().map(|r| r.streams.len()).max().unwrap_or(0);
    for i in 0..streams {
        let viewers = results
            .iter()
            .find_map(|r| r.streams.get(i))
            .map_or(0, |st| st.viewers);
        s.push_str(&format!("{i:<7} {viewers:>7}"));
        for r in results {
            let cell = r.streams.get(i).map_or("-".into(), |st| {
                format!(
                    "{:.0} / {:.3} / {} / {:.0}+{:.0}",
                    st.infra_bps_per_viewer / 1e3,
                    st.summary.continuity.mean,
                    st.budget_bps
                        .map_or("-".into(), |b| format!("{:.0}", b as f64 / 1e3)),
                    st.seeder_mesh_bps / 1e3,
                    st.seeder_http_bps / 1e3,
                )
            });
            s.push_str(&format!(" {cell:>32}"));
        }
        s.push('\n');
    }
    s
}

/// Each run's allocation policy, which names it in a policies bench (even
/// a bench of one policy).
fn policy_names(results: &[RunResult]) -> Vec<String> {
    (results.iter())
        .map(|r| r.scenario.allocation.to_string())
        .collect()
}

/// The comparison table, each system's figures with its ratio to Shoal.
pub fn table(results: &[RunResult]) -> String {
    type Col = (&'static str, fn(&RunResult) -> f64);
    let cols: [Col; 12] = [
        ("offload", |r| r.summary.offload),
        ("cont.mean", |r| r.summary.continuity.mean),
        ("cont.min", |r| r.summary.continuity.min),
        ("lag p50", |r| r.summary.lag_ms.p50 as f64),
        ("lag p95", |r| r.summary.lag_ms.p95 as f64),
        ("start p50", |r| r.summary.startup_ms.p50 as f64),
        ("dup", |r| r.summary.duplicate),
        ("overhead", |r| r.summary.overhead),
        ("egress", |r| r.summary.seeder_egress),
        ("rtt ratio", |r| r.neighbor_rtt_ratio.unwrap_or(f64::NAN)),
        ("cpu s/node", |r| r.cpu_s_per_node),
        ("MB/node", |r| r.peak_rss_bytes_per_node as f64 / 1e6),
    ];
    let shoal = results.iter().find(|r| r.system == "shoal");
    let mut s = format!("{:<14}", "system");
    for (name, _) in &cols {
        s.push_str(&format!(" {name:>10}"));
    }
    s.push('\n');
    for r in results {
        s.push_str(&format!("{:<14}", r.system));
        for (_, f) in &cols {
            s.push_str(&format!(" {:>10}", fmt(f(r))));
        }
        s.push('\n');
        if let Some(base) = shoal.filter(|b| b.system != r.system) {
            s.push_str(&format!("{:<14}", "  ÷ shoal"));
            for (_, f) in &cols {
                let (a, b) = (f(r), f(base));
                let ratio = if b == 0.0 && a == 0.0 { 1.0 } else { a / b };
                s.push_str(&format!(" {:>10}", fmt(ratio)));
            }
            s.push('\n');
        }
    }
    s
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.is_infinite() {
        "inf".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use shoal_mesh::proto::Summary;

    use super::*;
    use crate::lab::result::StreamResult;

    fn policy_run(policy: Policy, small_continuity: f64) -> RunResult {
        let stream = |index: usize, viewers: usize, continuity: f64| {
            let mut summary = Summary::default();
            summary.continuity.mean = continuity;
            StreamResult {
                index,
                stream: format!("{index:064x}"),
                viewers,
                bitrate_bps: 2_000_000,
                summary,
                infra_bps_per_viewer: 100_000.0,
                budget_bps: Some(1_000_000),
                seeder_mesh_bps: 2_000_000.0,
                seeder_http_bps: 0.0,
                reflection: None,
            }
        };
        RunResult {
            system: "shoal".into(),
            scenario: Scenario {
                allocation: policy.into(),
                ..Scenario::default()
            },
            summary: Summary::default(),
            streams: vec![stream(0, 10, 1.0), stream(1, 1, small_continuity)],
            continuity_goodput_bps: 0.0,
            neighbor_rtt_ratio: None,
            nodes: Vec::new(),
            timeline: Vec::new(),
            wall_s: 0.0,
            cpu_s: 0.0,
            cpu_s_per_node: 0.0,
            peak_rss_bytes: 0,
            peak_rss_bytes_per_node: 0,
            reflectors: Vec::new(),
            fallback_from_reflectors: None,
            faults: Vec::new(),
            trackers: None,
            viewer_interval_s: None,
        }
    }

    #[test]
    fn policies_are_keyed_by_name_with_their_streams() {
        let sc = Scenario::default();
        let one = [policy_run(Policy::FirstCome, 0.5)];
        let v = policies_json(&sc, &one);
        let streams = &v["policies"]["first-come"]["streams"];
        assert_eq!(streams.as_array().map(Vec::len), Some(2), "{v}");
        assert_eq!(streams[1]["viewers"], 1);

        let both = [
            policy_run(Policy::Antfarm, 1.0),
            policy_run(Policy::ByViewers, 0.25),
        ];
        let table = policies_table(&both);
        assert!(
            table.contains("antfarm") && table.contains("by-viewers"),
            "{table}"
        );
        // The worst stream's continuity, and the singleton's row.
        assert!(table.contains("0.250"), "{table}");
        assert!(table.contains("100 / 0.250 / 1000 / 2000+0"), "{table}");
    }
}
