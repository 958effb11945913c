//! The report page.

use std::fmt::Write as _;

use super::{streams_by_size, Figure, ReportError, RunResult, StreamResult, System};
use crate::lab::scenario::Scenario;

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;\
padding:0 1em;color:#222;line-height:1.4}\
h1{font-size:1.6em;margin-bottom:.2em}.sub{color:#555;margin-top:0}\
table{border-collapse:collapse;font-size:.88em;margin:1em 0;display:block;overflow-x:auto}\
th,td{border:1px solid #ccc;padding:.3em .55em;text-align:right;white-space:nowrap}\
th{background:#f3f3f3;vertical-align:bottom}th[title]{cursor:help}\
td:first-child,th:first-child{text-align:left}\
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.4em;border-radius:2px;\
vertical-align:baseline}\
pre{background:#f7f7f7;border:1px solid #ddd;padding:.8em;overflow-x:auto;font-size:.85em}\
figure{margin:2em 0}figure img{max-width:100%;border:1px solid #eee}\
figcaption{color:#444;font-size:.9em;margin-top:.3em}\
.note{color:#8a5a00;background:#fff8e6;border-left:3px solid #e0a800;padding:.4em .8em}\
.defs{color:#555;font-size:.85em}";

/// Table columns: header, DESIGN.md definition (shown as a tooltip), value.
type Column = (&'static str, &'static str, fn(&RunResult) -> String);

const COLUMNS: &[Column] = &[
    ("viewers", "Viewers in the run.", |r| {
        r.summary.nodes.to_string()
    }),
    (
        "not started",
        "Viewers that never completed a first segment.",
        |r| r.summary.not_started.to_string(),
    ),
    (
        "offload",
        "Payload bytes received from viewers / all payload bytes received by viewers.",
        |r| ratio(r.summary.offload),
    ),
    (
        "continuity mean",
        "Pieces in the player's buffer by their playback deadline / pieces due, after \
         start-up; mean over viewers (a viewer that never started counts as 0).",
        |r| ratio(r.summary.continuity.mean),
    ),
    (
        "continuity min",
        "As continuity mean, the worst viewer.",
        |r| ratio(r.summary.continuity.min),
    ),
    (
        "lag p50 (ms)",
        "Time a piece is complete at a viewer minus its produced-at, median.",
        |r| r.summary.lag_ms.p50.to_string(),
    ),
    ("lag p95 (ms)", "Lag, 95th percentile.", |r| {
        r.summary.lag_ms.p95.to_string()
    }),
    ("lag max (ms)", "Lag, maximum.", |r| {
        r.summary.lag_ms.max.to_string()
    }),
    (
        "start-up p50 (ms)",
        "Join to first playable segment, median over viewers that started.",
        |r| r.summary.startup_ms.p50.to_string(),
    ),
    ("start-up p95 (ms)", "Start-up, 95th percentile.", |r| {
        r.summary.startup_ms.p95.to_string()
    }),
    (
        "overhead",
        "Non-payload bytes sent / payload bytes sent.",
        |r| ratio(r.summary.overhead),
    ),
    (
        "duplicate",
        "Payload bytes received for pieces already held / payload received.",
        |r| ratio(r.summary.duplicate),
    ),
    (
        "seeder egress",
        "Infrastructure payload bytes sent / payload bytes viewers received (first copies).",
        |r| ratio(r.summary.seeder_egress),
    ),
    (
        "neighbour RTT ratio",
        "Mean RTT to chosen neighbours / mean RTT to the best possible set of the same \
         size (mesh systems only).",
        |r| {
            r.neighbor_rtt_ratio
                .map_or_else(|| "\u{2013}".into(), ratio)
        },
    ),
    (
        "CPU per viewer (s)",
        "CPU seconds of the process / viewers.",
        |r| fixed(r.cpu_s_per_node, 3),
    ),
    (
        "peak memory per viewer (MB)",
        "Peak resident memory of the process / viewers; MB = 10^6 bytes.",
        |r| fixed(r.peak_rss_bytes_per_node as f64 / 1e6, 1),
    ),
    ("wall time (s)", "Wall-clock length of the run.", |r| {
        fixed(r.wall_s, 1)
    }),
];

/// Per-stream table columns: header, definition, value.
type StreamColumn = (&'static str, &'static str, fn(&StreamResult) -> String);

const STREAM_COLUMNS: &[StreamColumn] = &[
    ("viewers", "Viewers of the stream in the mix.", |s| {
        s.viewers.to_string()
    }),
    (
        "infra kbit/s per viewer",
        "Infrastructure payload the stream's viewers received (mesh and HTTP) \
         \u{d7} 8 / viewers / run seconds.",
        |s| fixed(s.infra_bps_per_viewer / 1e3, 0),
    ),
    (
        "budget kbit/s",
        "The last budget the coordinator gave the stream (GET /v1/streams/{id}).",
        |s| {
            s.budget_bps
                .map_or_else(|| "\u{2013}".into(), |b| fixed(b as f64 / 1e3, 0))
        },
    ),
    (
        "seeder mesh kbit/s",
        "Payload the stream's seeder sent over the mesh \u{d7} 8 / run seconds: what \
         the budget holds.",
        |s| fixed(s.seeder_mesh_bps / 1e3, 0),
    ),
    (
        "seeder HTTP kbit/s",
        "Payload the stream's seeder served as HTTP fallback \u{d7} 8 / run seconds: \
         not held to the budget yet (docs/coordinator.md).",
        |s| fixed(s.seeder_http_bps / 1e3, 0),
    ),
    (
        "offload",
        "As in the summary, over the stream's viewers.",
        |s| ratio(s.summary.offload),
    ),
    (
        "continuity mean",
        "As in the summary, over the stream's viewers.",
        |s| ratio(s.summary.continuity.mean),
    ),
    ("continuity min", "The stream's worst viewer.", |s| {
        ratio(s.summary.continuity.min)
    }),
    (
        "lag p50 (ms)",
        "Lag, median over the stream's pieces.",
        |s| s.summary.lag_ms.p50.to_string(),
    ),
    ("lag p95 (ms)", "Lag, 95th percentile.", |s| {
        s.summary.lag_ms.p95.to_string()
    }),
    (
        "start-up p50 (ms)",
        "Join to first playable segment, median over the stream's viewers that started.",
        |s| s.summary.startup_ms.p50.to_string(),
    ),
    (
        "not started",
        "The stream's viewers that never started.",
        |s| s.summary.not_started.to_string(),
    ),
];

/// Each run's streams, largest first, and its continuity-weighted goodput.
fn stream_table(h: &mut String, runs: &[RunResult], systems: &[System]) {
    h.push_str("<h2>Streams</h2>\n<table>\n<thead><tr><th>run</th><th>stream</th>");
    for (name, def, _) in STREAM_COLUMNS {
        let _ = write!(h, "<th title=\"{}\">{}</th>", escape(def), escape(name));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for (run, sys) in runs.iter().zip(systems) {
        for s in streams_by_size(run) {
            let _ = write!(
                h,
                "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td>\
                 <td title=\"{}\">{}</td>",
                color_hex(sys),
                escape(&sys.name),
                escape(&s.stream),
                s.index
            );
            for (_, _, value) in STREAM_COLUMNS {
                let _ = write!(h, "<td>{}</td>", escape(&value(s)));
            }
            h.push_str("</tr>\n");
        }
    }
    h.push_str(
        "</tbody>\n</table>\n<p class=\"defs\">Continuity-weighted goodput \
                (\u{3a3} over streams of viewers \u{d7} bitrate \u{d7} mean continuity): ",
    );
    let goodputs: Vec<String> = runs
        .iter()
        .zip(systems)
        .map(|(r, sys)| {
            format!(
                "{} {} Mbit/s",
                escape(&sys.name),
                fixed(r.continuity_goodput_bps / 1e6, 2)
            )
        })
        .collect();
    let _ = writeln!(
        h,
        "{}. Hover a stream number for its id.</p>",
        goodputs.join(", ")
    );
}

fn fixed(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "\u{2013}".into()
    }
}

fn ratio(v: f64) -> String {
    fixed(v, 3)
}

fn color_hex(s: &System) -> String {
    let c = s.color;
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// Unique values in first-seen order.
fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The whole page. (Writing to a `String` cannot fail, so `write!`'s
/// results are ignored.)
pub(super) fn page(
    runs: &[RunResult],
    systems: &[System],
    figures: &[Figure],
) -> Result<String, ReportError> {
    let scenario_names = unique(runs.iter().map(|r| r.scenario.name.as_str()));
    let system_names: Vec<&str> = systems.iter().map(|s| s.name.as_str()).collect();
    let mut title = String::from("Shoal lab report");
    if !scenario_names.is_empty() {
        title.push_str(&format!(": {}", scenario_names.join(", ")));
    }
    if !system_names.is_empty() {
        title.push_str(&format!(" \u{2014} {}", system_names.join(" vs ")));
    }

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>\n",
        t = escape(&title)
    );

    let Some(first) = runs.first() else {
        h.push_str("<p class=\"note\">No runs to report.</p>\n</body>\n</html>\n");
        return Ok(h);
    };
    let s = &first.scenario;
    let _ = writeln!(
        h,
        "<p class=\"sub\">{} viewers \u{b7} {} s \u{b7} {:.2} Mbit/s \u{b7} max degree {} \u{b7} \
         churn {:.0} %/min \u{b7} seed {}</p>",
        s.nodes,
        s.duration_s,
        s.bitrate_bps as f64 / 1e6,
        s.max_degree,
        s.churn_per_min * 100.0,
        s.seed
    );
    if let Some(mix) = &s.streams {
        let budget = s
            .infra_budget_bps
            .map_or("the seeders' announced upload".into(), |b| {
                format!("{:.2} Mbit/s", b as f64 / 1e6)
            });
        let _ = writeln!(
            h,
            "<p class=\"sub\">{} streams of {} viewers \u{b7} infrastructure budget {}</p>",
            mix.streams(),
            escape(&mix.to_string()),
            escape(&budget)
        );
    }

    // Summary table.
    h.push_str("<h2>Summary</h2>\n<table>\n<thead><tr><th>system</th>");
    for (name, def, _) in COLUMNS {
        let _ = write!(h, "<th title=\"{}\">{}</th>", escape(def), escape(name));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for (run, sys) in runs.iter().zip(systems) {
        let _ = write!(
            h,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td>",
            color_hex(sys),
            escape(&sys.name)
        );
        for (_, _, value) in COLUMNS {
            let _ = write!(h, "<td>{}</td>", escape(&value(run)));
        }
        h.push_str("</tr>\n");
    }
    let _ = write!(
        h,
        "</tbody>\n</table>\n<p class=\"defs\">Shares and ratios are over the whole run and \
         all viewers; hover a column header for its definition (DESIGN.md, Measures). "
    );
    let streams = s.mix().streams();
    let n = s.nodes.max(1);
    if streams > 1 {
        // One seeder copy per piece per stream.
        let _ = writeln!(
            h,
            "One seeder copy per piece of each stream bounds offload at 1 \u{2212} S/N = {:.3} \
             for S = {streams} streams and N = {n} viewers.</p>",
            1.0 - streams as f64 / n as f64,
        );
    } else {
        let _ = writeln!(
            h,
            "One seeder copy per piece bounds offload at 1 \u{2212} 1/N = {:.3} for N = {} \
             viewers.</p>",
            1.0 - 1.0 / n as f64,
            s.nodes
        );
    }

    if runs.iter().any(|r| r.streams.len() > 1) {
        stream_table(&mut h, runs, systems);
    }
    let names: Vec<String> = systems.iter().map(|s| s.name.clone()).collect();
    super::reflection::html(&mut h, runs, &names);

    // Scenario(s).
    h.push_str("<h2>Scenario</h2>\n");
    // Runs of a policies bench differ only in their allocation, which
    // names them: one scenario shows for all.
    let same_but_allocation = |r: &RunResult| {
        Scenario {
            allocation: first.scenario.allocation,
            ..r.scenario.clone()
        } == first.scenario
    };
    if runs.iter().all(same_but_allocation) {
        let _ = writeln!(
            h,
            "<pre>{}</pre>",
            escape(&serde_json::to_string_pretty(&first.scenario)?)
        );
    } else {
        h.push_str("<p class=\"note\">The runs do not share one scenario.</p>\n");
        for (run, sys) in runs.iter().zip(systems) {
            let _ = writeln!(
                h,
                "<h3>{}</h3>\n<pre>{}</pre>",
                escape(&sys.name),
                escape(&serde_json::to_string_pretty(&run.scenario)?)
            );
        }
    }

    // Plots.
    h.push_str("<h2>Plots</h2>\n");
    for f in figures {
        match f {
            Figure::Drawn {
                file,
                title,
                caption,
            } => {
                let _ = writeln!(
                    h,
                    "<figure>\n<img src=\"{}\" alt=\"{}\" width=\"820\" height=\"480\">\n\
                     <figcaption>{}</figcaption>\n</figure>",
                    escape(file),
                    escape(title),
                    escape(caption)
                );
            }
            Figure::Skipped { title, note } => {
                let _ = writeln!(
                    h,
                    "<h3>{}</h3>\n<p class=\"note\">Not plotted: {}</p>",
                    escape(title),
                    escape(note)
                );
            }
        }
    }
    h.push_str("</body>\n</html>\n");
    Ok(h)
}
