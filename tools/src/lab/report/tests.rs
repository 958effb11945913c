use std::path::PathBuf;

use shoal_mesh::proto::{Stats, Summary};

use super::*;
use crate::lab::{
    result::{NodeResult, RunResult, Sample, StreamResult},
    scenario::{Allocation, Scenario},
};

const SVGS: [&str; 9] = [
    "stream_bandwidth.svg",
    "stream_continuity.svg",
    "offload.svg",
    "continuity.svg",
    "lag_cdf.svg",
    "startup_cdf.svg",
    "upload_download.svg",
    "neighbor_rtt.svg",
    "seeder_egress.svg",
];

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "shoal-report-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn node(i: usize, rtt: bool) -> NodeResult {
    let mut stats = Stats {
        payload_from_peers: 3_000_000 + 400_000 * i as u64,
        payload_from_infra: 1_000_000,
        payload_sent: 2_500_000 * i as u64,
        overhead_sent: 50_000,
        pieces_due: 100,
        pieces_on_time: 98,
        // One viewer never starts.
        startup_ms: (i != 3).then_some(800 + 350 * i as u64),
        ..Stats::default()
    };
    for k in 0..200u64 {
        stats.lag_ms.record(120 + k * 7 + 40 * i as u64);
    }
    if i == 0 {
        stats.lag_ms.record(70_000);
    }
    NodeResult {
        index: i,
        stream: 0,
        peer_id: format!("12D3KooW{i}"),
        region: Some("eu".into()),
        upload_cap_bps: None,
        joined_at_s: i as f64,
        left_at_s: None,
        stats,
        neighbor_rtt_ms: rtt.then_some(40.0 + 9.0 * i as f64),
        best_rtt_ms: rtt.then_some(30.0 + 5.0 * i as f64),
    }
}

fn synthetic(system: &str, scale: f64) -> RunResult {
    let nodes: Vec<NodeResult> = (0..6).map(|i| node(i, system != "client-server")).collect();
    let timeline = (0..30)
        .map(|t| Sample {
            t_s: t as f64,
            viewers: 6,
            playing: 5,
            // Gaps (None) and a bad value must not break the lines.
            offload: match t {
                0 | 1 | 12 => None,
                20 => Some(f64::NAN),
                _ => Some((0.9 * scale).min(1.0) - 0.3 / (t as f64)),
            },
            continuity: (t > 2).then_some(0.97 + 0.001 * (t % 3) as f64),
            lag_p95_ms: Some(900),
            seeder_egress: (t > 0).then_some(0.2 * scale + 0.01 * t as f64),
            neighbors_mean: 5.0,
        })
        .collect();
    let stats: Vec<Stats> = nodes.iter().map(|n| n.stats.clone()).collect();
    let summary = Summary::new(&stats, &[], 6_000_000);
    RunResult {
        system: system.into(),
        scenario: Scenario {
            name: "geo-<50> & \"friends\"".into(),
            nodes: 6,
            ..Scenario::default()
        },
        streams: vec![StreamResult {
            index: 0,
            stream: "ab".repeat(32),
            viewers: 6,
            bitrate_bps: 2_000_000,
            summary: summary.clone(),
            infra_bps_per_viewer: 500_000.0 * scale,
            budget_bps: None,
            seeder_mesh_bps: 1_000_000.0,
            seeder_http_bps: 200_000.0,
            reflection: None,
        }],
        continuity_goodput_bps: 6.0 * 2e6 * summary.continuity.mean,
        summary,
        neighbor_rtt_ratio: (system != "client-server").then_some(1.3),
        nodes,
        timeline,
        wall_s: 31.5,
        cpu_s: 4.2,
        cpu_s_per_node: 0.7,
        peak_rss_bytes: 120_000_000,
        peak_rss_bytes_per_node: 20_000_000,
        reflectors: Vec::new(),
        fallback_from_reflectors: None,
        faults: Vec::new(),
        trackers: None,
        viewer_interval_s: None,
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check_svg(svg: &str, file: &str) {
    assert!(svg.trim_start().starts_with("<svg"), "{file}: {svg:.80}");
    assert!(svg.trim_end().ends_with("</svg>"), "{file}");
    assert!(
        svg.contains("<path") || svg.contains("<polyline") || svg.contains("<circle"),
        "{file} draws nothing"
    );
    assert!(svg.contains("<text"), "{file} has no text");
}

#[test]
fn one_run_writes_every_plot() {
    let tmp = TempDir::new("one");
    let run = synthetic("shoal", 1.0);
    let index = write_report(&tmp.0, std::slice::from_ref(&run)).unwrap();
    assert_eq!(index, tmp.0.join("index.html"));
    let html = read(&index);
    assert!(html.starts_with("<!DOCTYPE html>"));
    for file in SVGS {
        let svg = read(&tmp.0.join(file));
        check_svg(&svg, file);
        assert!(
            html.contains(&format!("<img src=\"{file}\"")),
            "{file} not linked"
        );
    }
    // Axis labels, with units.
    let labels = [
        ("offload.svg", "time since start (s)"),
        ("offload.svg", "offload (share of payload from viewers)"),
        ("continuity.svg", "continuity (share of due pieces on time)"),
        ("lag_cdf.svg", "lag (ms, log scale)"),
        ("lag_cdf.svg", "cumulative share of pieces"),
        ("startup_cdf.svg", "start-up time (ms)"),
        ("upload_download.svg", "payload received (MB)"),
        ("upload_download.svg", "payload sent (MB)"),
        ("neighbor_rtt.svg", "best possible mean RTT (ms)"),
        ("neighbor_rtt.svg", "chosen neighbours&apos; mean RTT (ms)"),
        (
            "seeder_egress.svg",
            "seeder egress (infra payload / viewer payload)",
        ),
    ];
    for (file, label) in labels {
        let svg = read(&tmp.0.join(file));
        let plain = label.replace("&apos;", "'");
        assert!(
            svg.contains(label)
                || svg.contains(&plain)
                || svg.contains(&label.replace("&apos;", "&#39;")),
            "{file} lacks the label {label:?}"
        );
    }
    // Scatter plots have one point per viewer (plus the legend marker).
    let scatter = read(&tmp.0.join("upload_download.svg"));
    assert!(scatter.matches("<circle").count() >= 6);
    // The diagonal's legend entry.
    assert!(read(&tmp.0.join("neighbor_rtt.svg")).contains("y = x (optimal)"));

    // The page: summary, scenario JSON, escaped text.
    assert!(html.contains("<table>"));
    assert!(html.contains("neighbour RTT ratio"));
    assert!(html.contains("peak memory per viewer (MB)"));
    assert!(html.contains("1/N = 0.833 for N = 6 viewers"));
    assert!(html.contains("1/N = 0.833 for N = 6 viewers"));
    assert!(html.contains("geo-&lt;50&gt; &amp; &quot;friends&quot;"));
    assert!(!html.contains("geo-<50>"));
    assert!(html.contains("&quot;duration_s&quot;: 60.0"));
    assert!(!html.contains("<script"));
}

#[test]
fn systems_overlay_with_a_legend() {
    let tmp = TempDir::new("bench");
    let runs = [
        synthetic("shoal", 1.0),
        synthetic("random", 0.8),
        synthetic("gossipsub", 0.6),
        synthetic("client-server", 0.0),
    ];
    let index = write_report(&tmp.0, &runs).unwrap();
    let html = read(&index);
    assert!(html.contains("shoal vs random vs gossipsub vs client-server"));
    for file in SVGS {
        let svg = read(&tmp.0.join(file));
        check_svg(&svg, file);
        for sys in ["shoal", "random", "gossipsub"] {
            assert!(svg.contains(sys), "{file} has no legend entry for {sys}");
        }
    }
    // Each system keeps its colour in the plots.
    let offload = read(&tmp.0.join("offload.svg"));
    for hex in ["#1F77B4", "#FF7F0E", "#2CA02C", "#D62728"] {
        assert!(
            offload.to_uppercase().contains(hex),
            "offload.svg lacks colour {hex}"
        );
    }
    // client-server has no RTT data: said in the caption, still one row.
    assert!(html.contains("No data for: client-server."));
    assert_eq!(html.matches("<tr><td><span class=\"swatch\"").count(), 4);
}

#[test]
fn empty_run_still_writes_a_page() {
    let tmp = TempDir::new("empty");
    let run = RunResult {
        system: "shoal".into(),
        scenario: Scenario::default(),
        summary: Summary::default(),
        streams: Vec::new(),
        continuity_goodput_bps: 0.0,
        neighbor_rtt_ratio: None,
        nodes: Vec::new(),
        timeline: Vec::new(),
        wall_s: 0.0,
        cpu_s: 0.0,
        cpu_s_per_node: f64::NAN,
        peak_rss_bytes: 0,
        peak_rss_bytes_per_node: 0,
        reflectors: Vec::new(),
        fallback_from_reflectors: None,
        faults: Vec::new(),
        trackers: None,
        viewer_interval_s: None,
    };
    // A stale plot from an earlier report must not survive.
    fs::create_dir_all(&tmp.0).unwrap();
    fs::write(tmp.0.join("offload.svg"), "<svg></svg>").unwrap();
    let index = write_report(&tmp.0, &[run]).unwrap();
    let html = read(&index);
    assert!(html.contains("</html>"));
    assert!(!html.contains("<img"));
    assert_eq!(html.matches("Not plotted:").count(), SVGS.len());
    assert!(!tmp.0.join("offload.svg").exists());

    // No runs at all.
    let index = write_report(&tmp.0, &[]).unwrap();
    assert!(read(&index).contains("No runs to report."));
}

#[test]
fn duplicate_systems_get_distinct_names_and_colours() {
    let runs = [
        synthetic("shoal", 1.0),
        synthetic("shoal", 0.9),
        synthetic("", 0.5),
    ];
    let s = systems(&runs);
    let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["shoal", "shoal #2", "unnamed"]);
    assert_ne!(s[0].color, s[1].color);
}

/// A run of a 3-stream mix (4, 2, 1 viewers, written smallest first) under
/// `policy`, whose small streams get `small_share` of the large one's
/// bandwidth per viewer.
fn mix_run(policy: Allocation, small_share: f64) -> RunResult {
    let mut run = synthetic("shoal", 1.0);
    run.scenario.streams = Some("1,2,4".parse().unwrap());
    run.scenario.nodes = 7;
    run.scenario.allocation = policy;
    run.scenario.infra_budget_bps = Some(3_000_000);
    let base = run.streams[0].clone();
    run.streams = [1usize, 2, 4]
        .into_iter()
        .enumerate()
        .map(|(index, viewers)| {
            let mut s = base.clone();
            s.index = index;
            s.viewers = viewers;
            s.stream = format!("{index:064x}");
            let share = if viewers == 4 { 1.0 } else { small_share };
            s.infra_bps_per_viewer = 400_000.0 * share;
            s.summary.continuity.mean = share;
            s.budget_bps = Some((1_000_000.0 * share) as u64);
            s
        })
        .collect();
    run
}

#[test]
fn policies_are_named_and_plotted_per_stream_largest_first() {
    let tmp = TempDir::new("policies");
    let runs = [
        mix_run(Allocation::Antfarm, 0.9),
        mix_run(Allocation::FirstCome, 0.1),
    ];
    let index = write_report(&tmp.0, &runs).unwrap();
    let html = read(&index);
    assert!(
        html.contains("antfarm vs first-come"),
        "runs named by policy"
    );
    for file in ["stream_bandwidth.svg", "stream_continuity.svg"] {
        let svg = read(&tmp.0.join(file));
        check_svg(&svg, file);
        assert!(
            svg.contains("antfarm") && svg.contains("first-come"),
            "{file}"
        );
    }
    assert!(
        html.contains("1 = 4 viewers, 2 = 2, 3 = 1"),
        "ranks by size"
    );
    // The per-stream table: one row per run and stream, largest first.
    assert!(html.contains("<h2>Streams</h2>"));
    assert_eq!(html.matches("<td title=\"").count(), 6);
    let first_row = html.find("<td title=\"").unwrap();
    assert!(html[first_row..].starts_with(&format!("<td title=\"{:064x}\">2</td><td>4</td>", 2)));
    assert!(html.contains("3 streams of 1,2,4 viewers"));
    assert!(
        !html.contains("do not share one scenario"),
        "only the policy differs"
    );
    assert!(html.contains("1 \u{2212} S/N = 0.571 for S = 3 streams and N = 7 viewers"));
    // The small streams' starvation is in the plotted data.
    let first_come = &plots(&runs, &systems(&runs))[7].series[1];
    assert_eq!(
        first_come.segments,
        vec![vec![(1.0, 400.0), (2.0, 40.0), (3.0, 40.0)]]
    );
}

#[test]
fn lag_cdf_follows_quantiles() {
    let mut h = MsHistogram::default();
    for ms in [5, 15, 25, 35] {
        h.record(ms);
    }
    let cdf = lag_cdf(&h);
    assert_eq!(
        cdf,
        vec![vec![(10.0, 0.25), (20.0, 0.5), (30.0, 0.75), (35.0, 1.0)]]
    );
    assert!(lag_cdf(&MsHistogram::default()).is_empty());
}

#[test]
fn html_escapes() {
    assert_eq!(
        html::escape("<a href='x'>\"&\"</a>"),
        "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;"
    );
}

#[test]
fn a_run_with_reflectors_and_a_kill_shows_them_as_text_and_html() {
    use shoal_mesh::proto::stats::MeanMin;

    use crate::lab::result::{FaultResult, ReflectorResult, StreamReflection};

    let plain = synthetic("shoal", 1.0);
    assert!(reflection::text(&plain).is_none());
    let mut run = plain.clone();
    run.streams[0].reflection = Some(StreamReflection {
        published_bytes: 22_500_000,
        seeder_copies: 2.02,
        seeder_copies_needed: 2.0,
        reflectors: 2,
        fed_by_seeder: 2,
        reflectors_mesh_bps: 8e6,
        reflectors_http_bps: 1e6,
        fallback_from_reflectors: Some(0.97),
    });
    run.reflectors = vec![ReflectorResult {
        index: 3,
        peer_id: "12D3KooW".into(),
        region: Some("europe".into()),
        failure_domain: "europe-0".into(),
        streams: vec![0],
        mesh_bps: 8e6,
        http_bps: 1e6,
        to_viewers_bps: 5e6,
        stopped_at_s: vec![30.0],
        running_at_end: false,
    }];
    run.fallback_from_reflectors = Some(0.97);
    run.faults = vec![FaultResult {
        role: "reflector".into(),
        at_s: 30.0,
        down_s: f64::INFINITY,
        from_s: 30.1,
        to_s: 90.0,
        viewers: 10,
        continuity: MeanMin {
            mean: 0.9995,
            min: 0.998,
        },
    }];
    let text = reflection::text(&run).unwrap();
    assert!(text.contains("fallback from reflectors: 0.9700"), "{text}");
    assert!(text.contains("2.020") && text.contains("2/2"), "{text}");
    assert!(text.contains("europe") && text.contains("30s"), "{text}");
    assert!(text.contains("reflector@30s (down for good)"), "{text}");
    assert!(text.contains("min 0.9980"), "{text}");
    // The JSON says "never" for a kill for good, and reads it back.
    let json = serde_json::to_string(&run.faults[0]).unwrap();
    assert!(json.contains(r#""down_s":"never""#), "{json}");
    let back: FaultResult = serde_json::from_str(&json).unwrap();
    assert!(back.down_s.is_infinite());

    let tmp = TempDir::new("reflectors");
    let html = read(&write_report(&tmp.0, std::slice::from_ref(&run)).unwrap());
    assert!(html.contains("Reflectors and faults"));
    assert!(html.contains("fallback from reflectors: 0.9700"));
    let none = TempDir::new("no-reflectors");
    let html = read(&write_report(&none.0, std::slice::from_ref(&plain)).unwrap());
    assert!(!html.contains("Reflectors and faults"));
}
