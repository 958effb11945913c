//! A short lab run under an emulated network writes a report a person can
//! open: the HTML page and valid SVG plots.

use shoal_tools::lab::{
    report::write_report,
    run::{run, RunOptions},
    scenario::{Scenario, TopologySpec, UploadSpec},
    system::System,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_writes_a_report_with_svg_plots() {
    let sc = Scenario {
        name: "short".into(),
        nodes: 6,
        duration_s: 10.0,
        topology: TopologySpec::Uniform { rtt_ms: 40 },
        upload: UploadSpec::Fixed { bps: 8_000_000 },
        join_over_s: 1.0,
        ..Scenario::default()
    };
    let opts = RunOptions {
        system: System::Shoal,
        progress: false,
        processes: 1,
    };
    let result = run(&sc, &opts, &mut std::io::sink()).await.unwrap();
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
