//! A short lab run under an emulated network writes a report a person can
//! open: the HTML page and valid SVG plots.

use shoal_tools::lab::{
    report::write_report,
    run::{run, RunOptions},
    scenario::{Scenario, TopologySpec, UploadSpec},
    system::System,
};

/// Everyone 40 ms from everyone, uploads to spare, joins within a second.
fn small() -> Scenario {
    Scenario {
        topology: TopologySpec::Uniform { rtt_ms: 40 },
        upload: UploadSpec::Fixed { bps: 8_000_000 },
        join_over_s: 1.0,
        ..Scenario::default()
    }
}

async fn run_shoal(sc: &Scenario) -> shoal_tools::lab::result::RunResult {
    let opts = RunOptions {
        system: System::Shoal,
        progress: false,
        processes: 1,
    };
    run(sc, &opts, &mut std::io::sink()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_writes_a_report_with_svg_plots() {
    let sc = Scenario {
        name: "short".into(),
        nodes: 6,
        duration_s: 10.0,
        ..small()
    };
    let result = run_shoal(&sc).await;
    assert_eq!(result.nodes.len(), 6);
    assert!(result.timeline.len() >= 8, "one sample a second");
    assert!(result.summary.offload > 0.0, "{:?}", result.summary);
    assert_eq!(result.summary.not_started, 0, "{:?}", result.summary);
    // Everyone sits 40 ms from everyone: the chosen set is the best set.
    let ratio = result.neighbor_rtt_ratio.expect("a ratio");
    assert!((0.9..1.1).contains(&ratio), "{ratio}");

    let dir = std::env::temp_dir().join(format!("shoal-report-{}", std::process::id()));
    let page = write_report(&dir, std::slice::from_ref(&result)).unwrap();
    let html = std::fs::read_to_string(&page).unwrap();
    let mut svgs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "svg") {
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.trim_start().starts_with("<svg"), "{}", path.display());
            assert!(svg.trim_end().ends_with("</svg>"), "{}", path.display());
            assert!(svg.contains("<text"), "axis labels in {}", path.display());
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            assert!(html.contains(&name), "the page shows {name}");
            svgs += 1;
        }
    }
    assert!(svgs >= 6, "{svgs} plots");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A short run of two streams (4 viewers and a singleton) under a tight
/// infrastructure budget: every viewer of each stream starts, each stream
/// has its own figures, and the streams' viewers add up to the run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_mix_runs_every_stream_and_measures_each() {
    let sc = Scenario {
        name: "mix".into(),
        nodes: 5,
        streams: Some("4,1".parse().unwrap()),
        infra_budget_bps: Some(3_000_000),
        duration_s: 15.0,
        ..small()
    };
    let result = run_shoal(&sc).await;
    assert_eq!(result.nodes.len(), 5);
    assert_eq!(result.summary.not_started, 0, "{:?}", result.summary);
    assert_eq!(result.streams.len(), 2);
    let ids: std::collections::HashSet<&str> =
        result.streams.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!(ids.len(), 2, "each stream its own seeder key and id");
    for (s, want) in result.streams.iter().zip([4, 1]) {
        assert_eq!((s.viewers, s.summary.nodes), (want, want), "{s:?}");
        assert_eq!(
            s.summary.not_started, 0,
            "stream {}: {:?}",
            s.index, s.summary
        );
        assert!(s.infra_bps_per_viewer > 0.0, "stream {}", s.index);
        assert!(s.summary.lag_ms.p50 > 0, "stream {}", s.index);
        assert!(s.budget_bps.is_some(), "stream {} has a budget", s.index);
    }
    let per_stream: usize = result.streams.iter().map(|s| s.summary.nodes).sum();
    assert_eq!(per_stream, result.summary.nodes);
    assert!(result.nodes.iter().filter(|n| n.stream == 1).count() == 1);
    assert!(result.continuity_goodput_bps > 0.0);
}

/// A short run of two streams with two reflectors, one of which is killed
/// for good: the coordinator gives both streams reflectors fed by their
/// seeders, viewers take infrastructure payload from the reflectors, every
/// viewer starts, and the kill is on record with the window after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflectors_serve_the_viewers_and_one_can_be_killed() {
    let kill = shoal_tools::lab::scenario::Restart {
        role: shoal_tools::lab::scenario::RestartRole::Reflector,
        at_s: 12.0,
        down_s: f64::INFINITY,
    };
    let sc = Scenario {
        name: "reflectors".into(),
        nodes: 5,
        streams: Some("4,1".parse().unwrap()),
        reflectors: 2,
        restarts: vec![kill],
        duration_s: 20.0,
        ..small()
    };
    let result = run_shoal(&sc).await;
    assert_eq!(result.summary.not_started, 0, "{:?}", result.summary);
    assert_eq!(result.reflectors.len(), 2);
    for s in &result.streams {
        let r = s.reflection.as_ref().expect("reflection figures");
        assert!(r.fed_by_seeder >= 1, "stream {}: {r:?}", s.index);
        assert!(r.published_bytes > 0 && r.seeder_copies > 0.0, "{r:?}");
    }
    let share = result.fallback_from_reflectors.expect("a share");
    assert!(share > 0.0, "viewers took nothing from reflectors");
    let stopped: Vec<_> = (result.reflectors.iter())
        .filter(|r| !r.running_at_end)
        .collect();
    assert_eq!(stopped.len(), 1, "{:?}", result.reflectors);
    assert_eq!(stopped[0].stopped_at_s.len(), 1);
    assert_eq!(result.faults.len(), 1);
    assert_eq!(result.faults[0].role, "reflector");
    assert_eq!(result.faults[0].viewers, 5);
}
