//! The SVG timeline of `cache-sim report`: `dagger_dagql_cache_entries` by
//! bucket and `dagger_connected_clients` over simulated time (the leak
//! picture: a leak is a line that does not come back to zero), with a
//! dashed mark at every fault. Drawn with plotters' SVG backend (its
//! built-in font metrics: no system fonts, so the file is the same on every
//! machine).

use plotters::prelude::*;

use crate::run::{RunOutcome, Sample};

/// Size of the picture, pixels.
const SIZE: (u32, u32) = (960, 420);

/// A line: name, colour, value of a sample.
type Series = (&'static str, RGBColor, fn(&Sample) -> usize);

const SERIES: [Series; 6] = [
    ("dagger_dagql_cache_entries", BLACK, |s| s.buckets.total()),
    ("ongoing_calls", RGBColor(0xd6, 0x27, 0x28), |s| {
        s.buckets.ongoing_calls
    }),
    ("completed_calls", RGBColor(0x1f, 0x77, 0xb4), |s| {
        s.buckets.completed_calls
    }),
    (
        "completed_calls_by_content",
        RGBColor(0x17, 0xbe, 0xcf),
        |s| s.buckets.completed_calls_by_content,
    ),
    (
        "arbitrary (ongoing+completed)",
        RGBColor(0x94, 0x67, 0xbd),
        |s| s.buckets.ongoing_arbitrary + s.buckets.completed_arbitrary,
    ),
    (
        "dagger_connected_clients",
        RGBColor(0x2c, 0xa0, 0x2c),
        |s| s.clients,
    ),
];

const FAULT: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

/// Simulated ms of every fault line in the trace.
fn fault_times(o: &RunOutcome) -> Vec<u64> {
    o.trace
        .iter()
        .filter(|l| l.contains(" fault "))
        .filter_map(|l| l.split("ms").next()?.trim().parse().ok())
        .collect()
}

/// The SVG document.
pub fn svg(o: &RunOutcome) -> Result<String, String> {
    let t_max = o.samples.last().map_or(1, |s| s.at_ms.max(1));
    let y_max = o
        .samples
        .iter()
        .flat_map(|s| SERIES.iter().map(move |(_, _, f)| f(s)))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = String::new();
    draw(o, t_max, y_max, &mut out).map_err(|e| format!("cannot draw the timeline: {e}"))?;
    Ok(out)
}

fn draw(o: &RunOutcome, t_max: u64, y_max: usize, out: &mut String) -> Result<(), String> {
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(text)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "seed {}: cache entries by bucket and connected clients",
                o.plan.seed
            ),
            ("monospace", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(0..t_max, 0..y_max + 1)
        .map_err(text)?;
    chart
        .configure_mesh()
        .x_desc("simulated ms")
        .y_desc("count")
        .light_line_style(WHITE)
        .draw()
        .map_err(text)?;
    for t in fault_times(o) {
        chart
            .draw_series(DashedLineSeries::new(
                [(t, 0), (t, y_max + 1)],
                3,
                3,
                FAULT.stroke_width(1),
            ))
            .map_err(text)?;
    }
    for (name, color, f) in SERIES {
        chart
            .draw_series(LineSeries::new(
                o.samples.iter().map(|s| (s.at_ms, f(s))),
                color.stroke_width(2),
            ))
            .map_err(text)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(text)?;
    root.present().map_err(text)?;
    Ok(())
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}
