//! `shoal-lab bench`: one scenario, several systems, one invocation.
//!
//! Each system runs in its own child process (`shoal-lab run`), one after
//! the other, under the same scenario and seed, so CPU time and peak memory
//! are each system's own and nothing one system leaves behind (sockets,
//! tasks) disturbs the next.

use std::{io::Write, process::Stdio};

use anyhow::{bail, Context};
use serde_json::json;

use super::{result::RunResult, scenario::Scenario, system::System};

/// Runs every system and returns their results in the order given.
pub async fn bench(
    sc: &Scenario,
    systems: &[System],
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Vec<RunResult>> {
    let exe = std::env::current_exe().context("cannot find the shoal-lab executable")?;
    let dir = std::env::temp_dir().join(format!("shoal-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let scenario_file = dir.join("scenario.json");
    std::fs::write(&scenario_file, serde_json::to_string(sc)?)?;
    let mut results = Vec::new();
    for system in systems {
        writeln!(
            out,
            "running {system} ({} viewers, {} s)...",
            sc.nodes, sc.duration_s
        )?;
        let json = dir.join(format!("{system}.json"));
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
            "  {system}: offload {:.3}, continuity {:.4}, lag p95 {} ms",
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
