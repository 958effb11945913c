//! The reflector tier's figures of a run with reflectors (docs/lab.md
//! §7.2): per stream, the copies its seeder sent against what the parent
//! scheme needs and whose payload its viewers' infrastructure share was;
//! per reflector, what it sent; per restart, continuity over the minute
//! after it. As text (after `run`'s results table) and as HTML.

use std::fmt::Write;

use super::{html::escape, RunResult};

/// The text tables, or `None` for a run without reflectors or faults.
pub fn text(run: &RunResult) -> Option<String> {
    if run.reflectors.is_empty() && run.faults.is_empty() {
        return None;
    }
    let mut t = String::new();
    if !run.reflectors.is_empty() {
        let _ = writeln!(
            t,
            "fallback from reflectors: {}",
            share(run.fallback_from_reflectors)
        );
        let _ = writeln!(
            t,
            "{:>6} {:>7} {:>10} {:>10} {:>6} {:>11} {:>11} {:>10}",
            "stream",
            "viewers",
            "seeder cp",
            "needed cp",
            "refl",
            "refl mesh",
            "refl HTTP",
            "from refl"
        );
        for s in &run.streams {
            let Some(r) = &s.reflection else { continue };
            let _ = writeln!(
                t,
                "{:>6} {:>7} {:>10.3} {:>10.0} {:>6} {:>11} {:>11} {:>10}",
                s.index,
                s.viewers,
                r.seeder_copies,
                r.seeder_copies_needed,
                format!("{}/{}", r.fed_by_seeder, r.reflectors),
                kbps(r.reflectors_mesh_bps),
                kbps(r.reflectors_http_bps),
                share(r.fallback_from_reflectors),
            );
        }
        let _ = writeln!(
            t,
            "{:>9} {:>14} {:>10} {:>11} {:>11} {:>11}  stopped at",
            "reflector", "region", "streams", "mesh", "HTTP", "to viewers"
        );
        for r in &run.reflectors {
            let streams: Vec<String> = r.streams.iter().map(usize::to_string).collect();
            let stopped: Vec<String> = r.stopped_at_s.iter().map(|t| format!("{t:.0}s")).collect();
            let _ = writeln!(
                t,
                "{:>9} {:>14} {:>10} {:>11} {:>11} {:>11}  {}",
                r.index,
                r.region.as_deref().unwrap_or("-"),
                streams.join(","),
                kbps(r.mesh_bps),
                kbps(r.http_bps),
                kbps(r.to_viewers_bps),
                if stopped.is_empty() {
                    "-".to_string()
                } else {
                    stopped.join(", ")
                },
            );
        }
    }
    for f in &run.faults {
        let _ = writeln!(
            t,
            "after {}@{:.0}s (down {}): continuity over {:.0}–{:.0} s, {} viewers: mean {:.4}, min {:.4}",
            f.role,
            f.at_s,
            down(f.down_s),
            f.from_s,
            f.to_s,
            f.viewers,
            f.continuity.mean,
            f.continuity.min
        );
    }
    Some(t)
}

/// The HTML section, empty for runs without reflectors or faults.
pub(super) fn html(h: &mut String, runs: &[RunResult], names: &[String]) {
    if runs
        .iter()
        .all(|r| r.reflectors.is_empty() && r.faults.is_empty())
    {
        return;
    }
    h.push_str("<h2>Reflectors and faults</h2>\n");
    for (run, name) in runs.iter().zip(names) {
        if let Some(text) = text(run) {
            let _ = writeln!(h, "<h3>{}</h3>\n<pre>{}</pre>", escape(name), escape(&text));
        }
    }
    h.push_str(
        "<p class=\"defs\">seeder cp: the seeder's mesh + HTTP payload / the payload it \
         published. needed cp: copies the parent scheme needs of it (the reflectors feeding \
         from it in the tracker's last round; unreflected, one per 250 viewers). refl: \
         reflectors fed by the seeder / the stream's reflectors. from refl: share of the \
         viewers' infrastructure payload (mesh and HTTP) that came from reflectors. Rates in \
         kbit/s over the run.</p>\n",
    );
}

fn kbps(bps: f64) -> String {
    format!("{:.0}k", bps / 1e3)
}

fn share(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.4}"))
}

fn down(s: f64) -> String {
    if s.is_finite() {
        format!("{s} s")
    } else {
        "for good".into()
    }
}
