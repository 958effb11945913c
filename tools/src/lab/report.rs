//! The lab's report: `index.html` plus one SVG per plot, for one run or for
//! several systems on the same scenario side by side (`shoal-lab bench`:
//! shoal, random, gossipsub, client-server), each system overlaid in every
//! plot in its own colour. Runs of one system under several allocation
//! policies (`bench --policies`) are named and coloured by policy, and the
//! per-stream plots show what each policy gave each stream of the mix.
//!
//! The page is self-contained (inline CSS, no scripts) apart from the SVG
//! files it links, which sit next to it. Missing data never fails a report:
//! a plot without data is left out with a note saying why.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use plotters::{chart::SeriesLabelPosition, style::RGBColor};
use shoal_mesh::proto::MsHistogram;

use super::result::{run_names, RunResult, Sample, StreamResult};

mod html;
pub mod reflection;
mod svg;
#[cfg(test)]
mod tests;

use svg::{Mark, Plot, Series};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot serialise the scenario: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes `dir/index.html` and its SVG plots (creating `dir` if needed) and
/// returns the path of `index.html`.
///
/// `runs` are shown side by side, in order; normally they share a scenario
/// and differ by system. An empty slice or runs without nodes or samples
/// still give a page, with notes where plots would be.
pub fn write_report(dir: &Path, runs: &[RunResult]) -> Result<PathBuf, ReportError> {
    fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let systems = systems(runs);
    let mut figures = Vec::new();
    for plot in plots(runs, &systems) {
        figures.push(render(dir, plot)?);
    }
    let page = html::page(runs, &systems, &figures)?;
    let index = dir.join("index.html");
    write(&index, page.as_bytes())?;
    Ok(index)
}

/// How a run is named and coloured in every plot and the table.
#[derive(Clone, Debug)]
struct System {
    name: String,
    color: RGBColor,
}

/// A plot as it ended up on the page.
#[derive(Debug)]
enum Figure {
    Drawn {
        file: &'static str,
        title: &'static str,
        caption: String,
    },
    Skipped {
        title: &'static str,
        note: String,
    },
}

/// Fixed colours for the known systems (so a system keeps its colour from
/// one report to the next), then a spare palette.
const KNOWN: [(&str, RGBColor); 4] = [
    ("shoal", RGBColor(31, 119, 180)),
    ("random", RGBColor(255, 127, 14)),
    ("gossipsub", RGBColor(44, 160, 44)),
    ("client-server", RGBColor(214, 39, 40)),
];
const SPARE: [RGBColor; 6] = [
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn systems(runs: &[RunResult]) -> Vec<System> {
    let mut out: Vec<System> = Vec::with_capacity(runs.len());
    let mut spare = SPARE.iter().cycle();
    for name in run_names(runs) {
        let base = if name.trim().is_empty() {
            "unnamed"
        } else {
            name.trim()
        };
        let same = out
            .iter()
            .filter(|s| s.name == base || s.name.starts_with(&format!("{base} #")))
            .count();
        let name = if same == 0 {
            base.to_string()
        } else {
            format!("{base} #{}", same + 1)
        };
        let known = KNOWN
            .iter()
            .find(|(n, _)| *n == base)
            .map(|&(_, c)| c)
            .filter(|c| out.iter().all(|s| s.color != *c));
        let color = known.unwrap_or_else(|| *spare.next().unwrap_or(&SPARE[0]));
        out.push(System { name, color });
    }
    out
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    fs::write(path, bytes).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Draws one plot into `dir`, or explains why it is not there (removing any
/// stale file of the same name from an earlier report).
fn render(dir: &Path, plot: Plot) -> Result<Figure, ReportError> {
    let path = dir.join(plot.file);
    let drawn = if plot.has_data() {
        svg::draw(&plot).map_err(|e| format!("could not be drawn: {e}"))
    } else {
        Err(plot.empty_note.to_string())
    };
    match drawn {
        Ok(text) => {
            write(&path, text.as_bytes())?;
            let mut caption = plot.caption;
            let missing: Vec<&str> = plot
                .series
                .iter()
                .filter(|s| s.is_empty())
                .map(|s| s.name.as_str())
                .collect();
            if !missing.is_empty() {
                caption.push_str(&format!(" No data for: {}.", missing.join(", ")));
            }
            Ok(Figure::Drawn {
                file: plot.file,
                title: plot.title,
                caption,
            })
        }
        Err(note) => {
            if let Err(source) = fs::remove_file(&path) {
                if source.kind() != io::ErrorKind::NotFound {
                    return Err(ReportError::Io { path, source });
                }
            }
            Ok(Figure::Skipped {
                title: plot.title,
                note,
            })
        }
    }
}

/// Bytes to MB (10^6 bytes).
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// One run's points, as line segments (or one segment of scattered points).
type Segments = Vec<Vec<(f64, f64)>>;

/// All plots, in page order.
fn plots(runs: &[RunResult], systems: &[System]) -> Vec<Plot> {
    let series = |f: &dyn Fn(&RunResult) -> Segments| -> Vec<Series> {
        runs.iter()
            .zip(systems)
            .map(|(run, sys)| Series {
                name: sys.name.clone(),
                color: sys.color,
                segments: f(run),
            })
            .collect()
    };
    let time = |pick: fn(&Sample) -> Option<f64>| {
        series(&|run: &RunResult| timeline_segments(&run.timeline, pick))
    };
    let lag_pieces: u64 = runs.iter().map(|r| merged_lag(r).count()).sum();
    let viewers: usize = runs.iter().map(|r| r.nodes.len()).sum();
    let started: usize = runs
        .iter()
        .flat_map(|r| &r.nodes)
        .filter(|n| n.stats.startup_ms.is_some())
        .count();
    let with_rtt = runs
        .iter()
        .flat_map(|r| &r.nodes)
        .filter(|n| n.best_rtt_ms.is_some() && n.neighbor_rtt_ms.is_some())
        .count();

    vec![
        Plot {
            file: "offload.svg",
            title: "Offload over time",
            caption: "Share of the payload viewers received from other viewers rather than \
                      from infrastructure, over each one-second interval."
                .into(),
            empty_note: "No timeline sample has an offload value.",
            x_desc: "time since start (s)",
            y_desc: "offload (share of payload from viewers)",
            mark: Mark::Lines,
            x_log: false,
            y_top: 1.0,
            diagonal: None,
            legend_at: SeriesLabelPosition::LowerRight,
            series: time(|s| s.offload),
        },
        Plot {
            file: "continuity.svg",
            title: "Continuity over time",
            caption: "Share of the pieces due in each interval that were in the players' \
                      buffers by their playback deadline (viewers past start-up)."
                .into(),
            empty_note: "No timeline sample has a continuity value.",
            x_desc: "time since start (s)",
            y_desc: "continuity (share of due pieces on time)",
            mark: Mark::Lines,
            x_log: false,
            y_top: 1.0,
            diagonal: None,
            legend_at: SeriesLabelPosition::LowerRight,
            series: time(|s| s.continuity),
        },
        Plot {
            file: "lag_cdf.svg",
            title: "Lag CDF",
            caption: format!(
                "Time from a piece being produced to it being complete at a viewer, all \
                 viewers' histograms merged ({lag_pieces} pieces). Histogram buckets are \
                 10 ms wide below 1 s, 100 ms below 10 s and 1 s above; points are bucket \
                 upper bounds. Log scale."
            ),
            empty_note: "No viewer completed a piece.",
            x_desc: "lag (ms, log scale)",
            y_desc: "cumulative share of pieces",
            mark: Mark::Lines,
            x_log: true,
            y_top: 1.0,
            diagonal: None,
            legend_at: SeriesLabelPosition::LowerRight,
            series: series(&|run: &RunResult| lag_cdf(&merged_lag(run))),
        },
        Plot {
            file: "startup_cdf.svg",
            title: "Start-up CDF",
            caption: format!(
                "Time from joining to the first playable segment, as a share of all \
                 viewers: a curve that ends below 1 has viewers that never started \
                 ({started} of {viewers} viewers started)."
            ),
            empty_note: "No viewer started playing.",
            x_desc: "start-up time (ms)",
            y_desc: "cumulative share of viewers",
            mark: Mark::Lines,
            x_log: false,
            y_top: 1.0,
            diagonal: None,
            legend_at: SeriesLabelPosition::LowerRight,
            series: series(&startup_cdf),
        },
        Plot {
            file: "upload_download.svg",
            title: "Upload vs download per viewer",
            caption: "One point per viewer: payload received (from viewers and \
                      infrastructure) against payload sent to other viewers. \
                      MB = 10^6 bytes."
                .into(),
            empty_note: "No viewers.",
            x_desc: "payload received (MB)",
            y_desc: "payload sent (MB)",
            mark: Mark::Points,
            x_log: false,
            y_top: 0.0,
            diagonal: Some("sent = received"),
            legend_at: SeriesLabelPosition::UpperLeft,
            series: series(&|run: &RunResult| {
                vec![run
                    .nodes
                    .iter()
                    .map(|n| (mb(n.stats.payload_received()), mb(n.stats.payload_sent)))
                    .collect()]
            }),
        },
        Plot {
            file: "neighbor_rtt.svg",
            title: "Neighbour RTT vs the best possible set",
            caption: format!(
                "One point per viewer: mean true RTT to its chosen neighbours at the end \
                 against the mean to the best possible set of the same size; points on \
                 the line are optimal ({with_rtt} viewers with data; only mesh systems in \
                 the lab know true RTT)."
            ),
            empty_note: "No viewer has true-RTT data (only mesh systems in the lab measure it).",
            x_desc: "best possible mean RTT (ms)",
            y_desc: "chosen neighbours' mean RTT (ms)",
            mark: Mark::Points,
            x_log: false,
            y_top: 0.0,
            diagonal: Some("y = x (optimal)"),
            legend_at: SeriesLabelPosition::UpperLeft,
            series: series(&|run: &RunResult| {
                vec![run
                    .nodes
                    .iter()
                    .filter_map(|n| Some((n.best_rtt_ms?, n.neighbor_rtt_ms?)))
                    .collect()]
            }),
        },
        Plot {
            file: "seeder_egress.svg",
            title: "Seeder egress over time",
            caption: "Payload sent by infrastructure (seeders and reflectors) over each \
                      interval, relative to one stream copy per viewer: 1 is what a plain \
                      CDN would send."
                .into(),
            empty_note: "No timeline sample has a seeder-egress value.",
            x_desc: "time since start (s)",
            y_desc: "seeder egress (infra payload / viewer payload)",
            mark: Mark::Lines,
            x_log: false,
            y_top: 1.0,
            diagonal: None,
            legend_at: SeriesLabelPosition::UpperRight,
            series: time(|s| s.seeder_egress),
        },
        Plot {
            file: "stream_bandwidth.svg",
            title: "Infrastructure bandwidth per viewer, by stream",
            caption: format!(
                "Infrastructure payload each stream's viewers received over the run, in \
                 kbit/s per viewer, streams ordered largest to smallest ({}). The y axis \
                 reaches the bitrate, one whole copy per viewer: a small stream far \
                 below it gets its pieces from peers or not at all (see the next plot).",
                stream_order(runs)
            ),
            empty_note: "No run has per-stream figures.",
            x_desc: "stream, largest to smallest (1 = most viewers)",
            y_desc: "infrastructure kbit/s per viewer",
            mark: Mark::Lines,
            x_log: false,
            y_top: (runs.iter())
                .map(|r| r.scenario.bitrate_bps as f64 / 1e3)
                .fold(0.0, f64::max),
            diagonal: None,
            legend_at: SeriesLabelPosition::UpperRight,
            series: series(&|run: &RunResult| by_size(run, |s| s.infra_bps_per_viewer / 1e3)),
        },
        Plot {
            file: "stream_continuity.svg",
            title: "Continuity by stream",
            caption: format!(
                "Mean continuity over each stream's viewers (a viewer that never started \
                 counts as 0), streams ordered largest to smallest ({}): a policy that \
                 starves small streams shows as a curve falling to the right.",
                stream_order(runs)
            ),
            empty_note: "No run has per-stream figures.",
            x_desc: "stream, largest to smallest (1 = most viewers)",
            y_desc: "continuity (mean over the stream's viewers)",
            mark: Mark::Lines,
            x_log: false,
            y_top: 1.0,
            diagonal: None,
            legend_at: SeriesLabelPosition::LowerLeft,
            series: series(&|run: &RunResult| by_size(run, |s| s.summary.continuity.mean)),
        },
    ]
}

/// A run's streams, largest first (ties in mix order).
fn streams_by_size(run: &RunResult) -> Vec<&StreamResult> {
    let mut streams: Vec<&StreamResult> = run.streams.iter().collect();
    streams.sort_by_key(|s| (std::cmp::Reverse(s.viewers), s.index));
    streams
}

/// One value per stream at its rank by size (1 = the largest).
fn by_size(run: &RunResult, value: fn(&StreamResult) -> f64) -> Segments {
    let points: Vec<(f64, f64)> = streams_by_size(run)
        .into_iter()
        .enumerate()
        .map(|(rank, s)| ((rank + 1) as f64, value(s)))
        .collect();
    if points.is_empty() {
        Vec::new()
    } else {
        vec![points]
    }
}

/// The viewers of each rank, as the caption says them: "1 = 100 viewers,
/// 2 = 20, 3 = 1" (from the first run with streams).
fn stream_order(runs: &[RunResult]) -> String {
    let Some(run) = runs.iter().find(|r| !r.streams.is_empty()) else {
        return "no streams".into();
    };
    let sizes: Vec<String> = streams_by_size(run)
        .iter()
        .enumerate()
        .map(|(rank, s)| match rank {
            0 => format!("1 = {} viewers", s.viewers),
            _ => format!("{} = {}", rank + 1, s.viewers),
        })
        .collect();
    sizes.join(", ")
}

/// Splits a timeline into runs of consecutive samples that have a value, so
/// intervals without one show as gaps rather than being bridged.
fn timeline_segments(timeline: &[Sample], pick: fn(&Sample) -> Option<f64>) -> Segments {
    let mut out: Segments = Vec::new();
    let mut current = Vec::new();
    for s in timeline {
        match pick(s) {
            Some(v) if v.is_finite() && s.t_s.is_finite() => current.push((s.t_s, v)),
            _ => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn merged_lag(run: &RunResult) -> MsHistogram {
    let mut all = MsHistogram::default();
    for n in &run.nodes {
        all.merge(&n.stats.lag_ms);
    }
    all
}

/// Quantile steps the lag CDF is read at (0.1 % resolution).
const CDF_STEPS: u32 = 1_000;

/// The CDF of a histogram as (ms, share ≤ ms) points, read through
/// `quantile`: for each distinct value, the largest share that maps to it.
fn lag_cdf(h: &MsHistogram) -> Segments {
    if h.count() == 0 {
        return Vec::new();
    }
    let mut points: Vec<(f64, f64)> = Vec::new();
    for i in 1..=CDF_STEPS {
        let q = f64::from(i) / f64::from(CDF_STEPS);
        let Some(ms) = h.quantile(q) else { continue };
        let ms = ms as f64;
        match points.last_mut() {
            Some(last) if last.0 == ms => last.1 = q,
            _ => points.push((ms, q)),
        }
    }
    vec![points]
}

/// The empirical CDF of start-up times as a staircase, as a share of all
/// viewers (those that never started keep it below 1).
fn startup_cdf(run: &RunResult) -> Segments {
    let mut ms: Vec<u64> = run
        .nodes
        .iter()
        .filter_map(|n| n.stats.startup_ms)
        .collect();
    if ms.is_empty() {
        return Vec::new();
    }
    ms.sort_unstable();
    let n = run.nodes.len() as f64;
    let mut points = vec![(0.0, 0.0)];
    for (i, &v) in ms.iter().enumerate() {
        let v = v as f64;
        points.push((v, i as f64 / n));
        points.push((v, (i + 1) as f64 / n));
    }
    vec![points]
}
