//! Drawing one plot as SVG text with plotters.
//!
//! Text needs no font file: without a font feature plotters only estimates
//! text extents, and the SVG backend writes `<text>` elements that the
//! browser renders with its own `sans-serif`.

use std::{error::Error, ops::Range};

use plotters::{
    coord::ranged1d::{AsRangedCoord, ValueFormatter},
    prelude::*,
};

/// Pixel size of every plot.
const SIZE: (u32, u32) = (820, 480);

/// How a series is marked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mark {
    Lines,
    Points,
}

/// One system's data in a plot: lines are drawn per segment (gaps between).
#[derive(Clone, Debug)]
pub(super) struct Series {
    pub(super) name: String,
    pub(super) color: RGBColor,
    pub(super) segments: super::Segments,
}

impl Series {
    fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.segments
            .iter()
            .flatten()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.points().next().is_none()
    }
}

/// One plot: what to draw and how to label it.
#[derive(Debug)]
pub(super) struct Plot {
    pub(super) file: &'static str,
    pub(super) title: &'static str,
    pub(super) caption: String,
    /// Shown instead of the plot when no series has data.
    pub(super) empty_note: &'static str,
    pub(super) x_desc: &'static str,
    pub(super) y_desc: &'static str,
    pub(super) mark: Mark,
    /// Logarithmic x axis (values below 1 are drawn at 1).
    pub(super) x_log: bool,
    /// The y axis reaches at least this (1 for shares); both axes start at 0
    /// (but a log x axis).
    pub(super) y_top: f64,
    /// Draw the y = x line, with this legend label (linear axes only).
    pub(super) diagonal: Option<&'static str>,
    pub(super) legend_at: SeriesLabelPosition,
    pub(super) series: Vec<Series>,
}

impl Plot {
    pub(super) fn has_data(&self) -> bool {
        self.series.iter().any(|s| !s.is_empty())
    }

    fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.series.iter().flat_map(Series::points)
    }
}

/// The plot as an SVG document.
pub(super) fn draw(plot: &Plot) -> Result<String, String> {
    let x_max = plot.points().map(|p| p.0).fold(0.0, f64::max);
    let y_max = plot.points().map(|p| p.1).fold(plot.y_top, f64::max);
    let y = 0.0..headroom(y_max);
    let mut buf = String::new();
    let drawn = if plot.x_log {
        let x_min = plot
            .points()
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min)
            .max(1.0);
        // Whole decades, so the axis always has labelled ticks.
        let lo = 10f64.powf(x_min.log10().floor());
        let hi = 10f64.powf(x_max.max(1.0).log10().ceil()).max(lo * 10.0);
        render(plot, (lo..hi).log_scale(), y, &mut buf)
    } else {
        render(plot, 0.0..headroom(x_max), y, &mut buf)
    };
    drawn.map_err(|e| e.to_string())?;
    Ok(buf)
}

/// An axis end a little past the data (1 when there is nothing to show).
fn headroom(max: f64) -> f64 {
    if max.is_finite() && max > 0.0 {
        max * 1.05
    } else {
        1.0
    }
}

/// Tick labels: at most three decimals, without trailing zeros.
fn tick(v: &f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

fn render<X>(
    plot: &Plot,
    x: X,
    y: Range<f64>,
    buf: &mut String,
) -> Result<(), Box<dyn Error + Send + Sync>>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let root = SVGBackend::with_string(buf, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(plot.title, ("sans-serif", 22))
        .margin(14)
        .margin_right(32)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y.clone())?;
    chart
        .configure_mesh()
        .x_desc(plot.x_desc)
        .y_desc(plot.y_desc)
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;

    let mut labelled = false;
    if let (Some(label), false) = (plot.diagonal, plot.x_log) {
        let x_range: Range<f64> = chart.x_range();
        let end = x_range.end.min(y.end);
        let style = ShapeStyle::from(&RGBColor(90, 90, 90)).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (end, end)],
                8,
                5,
                style,
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        labelled = true;
    }

    for series in &plot.series {
        let color = series.color;
        let mut first = true;
        for segment in &series.segments {
            let points: Vec<(f64, f64)> = segment
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            if points.is_empty() {
                continue;
            }
            let anno = match plot.mark {
                Mark::Lines if points.len() > 1 => {
                    chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?
                }
                // A lone sample between gaps still shows, as a dot.
                Mark::Lines => chart.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 2, color.filled())),
                )?,
                Mark::Points => chart.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.mix(0.65).filled())),
                )?,
            };
            if first {
                first = false;
                labelled = true;
                let name = series.name.clone();
                match plot.mark {
                    Mark::Lines => anno.label(name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    }),
                    Mark::Points => anno
                        .label(name)
                        .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled())),
                };
            }
        }
    }

    if labelled {
        chart
            .configure_series_labels()
            .position(plot.legend_at.clone())
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.7))
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
