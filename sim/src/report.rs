//! The SVG timeline of `cache-sim report`: `dagger_dagql_cache_entries` by
//! bucket and `dagger_connected_clients` over simulated time (the leak
//! picture: a leak is a line that does not come back to zero), a dashed
//! mark at every injected fault (one colour and dash pattern per fault
//! kind), and for a failing seed a red mark at the violation, labelled with
//! its invariant.
//!
//! The title says what ran and how it ended (scenario, seed, bug-zoo
//! switches, PASS or FAIL INV-k); the legend sits in its own panel right of
//! the plot, so it never covers the data, and names every series and every
//! fault kind drawn. Drawn with plotters' SVG backend (its built-in font
//! metrics: no system fonts, so the file is the same on every machine).

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::plan::FaultKind;
use crate::run::{RunOutcome, Sample};
use crate::scenario::Scenario;

/// Size of the picture, pixels.
const SIZE: (u32, u32) = (1120, 480);
/// Height of the title band, pixels.
const TITLE_H: u32 = 56;
/// Width of the legend panel, pixels.
const LEGEND_W: u32 = 270;
/// Longest violation detail in the subtitle, characters.
const DETAIL_CHARS: usize = 110;

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

/// How a fault kind is drawn: colour and (dash, gap) lengths in pixels,
/// in [`FaultKind::ALL`] order; none of the colours is a series colour.
const FAULT_STYLE: [(RGBColor, u32, u32); 8] = [
    (RGBColor(0xff, 0x7f, 0x0e), 6, 3),  // partition
    (RGBColor(0xbc, 0xbd, 0x22), 2, 2),  // latency
    (RGBColor(0xe3, 0x77, 0xc2), 8, 4),  // drop-connection
    (RGBColor(0x8c, 0x56, 0x4b), 4, 2),  // client-crash
    (RGBColor(0x7f, 0x7f, 0x7f), 10, 3), // engine-restart
    (RGBColor(0xe6, 0xab, 0x02), 3, 5),  // store-error
    (RGBColor(0x1b, 0x9e, 0x77), 1, 3),  // store-slow
    (RGBColor(0x75, 0x70, 0xb3), 6, 6),  // clock-jump
];

/// The violation mark.
const VIOLATION: RGBColor = RGBColor(0xc0, 0x00, 0x00);

/// Every injected fault in the trace: (simulated ms, index in
/// [`FaultKind::ALL`]). Injection lines read `<ms>ms fault <kind> client<c>
/// arg <n>`; repairs and notes (`engine restarted`, `store-error not
/// injected`) are not faults.
fn faults(o: &RunOutcome) -> Vec<(u64, usize)> {
    o.trace
        .iter()
        .filter_map(|l| {
            let (at, rest) = l.split_once("ms")?;
            let mut words = rest.split_whitespace();
            if words.next()? != "fault" {
                return None;
            }
            let kind = words.next()?;
            if !words.next()?.starts_with("client") {
                return None;
            }
            let k = FaultKind::ALL.iter().position(|f| f.name() == kind)?;
            Some((at.trim().parse().ok()?, k))
        })
        .collect()
}

/// The SVG document of outcome `o` of a seed of scenario `s`.
pub fn svg(o: &RunOutcome, s: &Scenario) -> Result<String, String> {
    let mut out = String::new();
    draw(o, s, &mut out).map_err(|e| format!("cannot draw the timeline: {e}"))?;
    Ok(out)
}

/// `PASS`, or `FAIL INV-k`.
fn verdict(o: &RunOutcome) -> String {
    match o.first_invariant() {
        None => "PASS".into(),
        Some(inv) => format!("FAIL {inv}"),
    }
}

fn draw(o: &RunOutcome, s: &Scenario, out: &mut String) -> Result<(), String> {
    let violation = o.violations.first();
    let t_max = o
        .samples
        .last()
        .map_or(1, |x| x.at_ms)
        .max(violation.map_or(0, |v| v.at_ms))
        .max(1);
    let y_max = o
        .samples
        .iter()
        .flat_map(|x| SERIES.iter().map(move |(_, _, f)| f(x)))
        .max()
        .unwrap_or(0)
        .max(1);
    let faults = faults(o);

    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(text)?;
    let (title, body) = root.split_vertically(TITLE_H);
    let (plot, legend) = body.split_horizontally(SIZE.0 - LEGEND_W);

    let bugs = if s.bugs.is_empty() {
        "none".to_string()
    } else {
        s.bugs.to_string()
    };
    let heading = format!(
        "scenario {} · seed {} · bug switches: {} · {}",
        s.name,
        o.plan.seed,
        bugs,
        verdict(o)
    );
    let head_color = if violation.is_some() {
        VIOLATION
    } else {
        BLACK
    };
    title
        .draw(&Text::new(
            heading,
            (14, 10),
            ("sans-serif", 18)
                .into_font()
                .style(FontStyle::Bold)
                .color(&head_color),
        ))
        .map_err(text)?;
    let sub = match violation {
        Some(v) => {
            let mut d: String = v.detail.chars().take(DETAIL_CHARS).collect();
            if d.len() < v.detail.len() {
                d.push('…');
            }
            format!("violated {} at {} ms: {d}", v.inv, v.at_ms)
        }
        None => {
            "cache entries by bucket and connected clients over simulated time; every oracle passed"
                .into()
        }
    };
    title
        .draw(&Text::new(
            sub,
            (14, 34),
            ("sans-serif", 13).into_font().color(&head_color),
        ))
        .map_err(text)?;

    // A little room right of the last sample, so that a violation found
    // at the end (INV-1, INV-11) is not drawn on the frame.
    let x_end = t_max + (t_max / 50).max(1);
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(0..x_end, 0..y_max + 1)
        .map_err(text)?;
    chart
        .configure_mesh()
        .x_desc("simulated ms")
        .y_desc("count")
        .light_line_style(WHITE)
        .draw()
        .map_err(text)?;
    for &(t, k) in &faults {
        let (color, dash, gap) = FAULT_STYLE[k];
        chart
            .draw_series(DashedLineSeries::new(
                [(t, 0), (t, y_max + 1)],
                dash,
                gap,
                color.stroke_width(1),
            ))
            .map_err(text)?;
    }
    for (_, color, f) in SERIES {
        chart
            .draw_series(LineSeries::new(
                o.samples.iter().map(|x| (x.at_ms, f(x))),
                color.stroke_width(2),
            ))
            .map_err(text)?;
    }
    if let Some(v) = violation {
        chart
            .draw_series(LineSeries::new(
                [(v.at_ms, 0), (v.at_ms, y_max + 1)],
                VIOLATION.stroke_width(2),
            ))
            .map_err(text)?;
        // The label sits at the top of the line, left of it when the line
        // is near the right edge.
        let (px, py) = chart.backend_coord(&(v.at_ms, y_max + 1));
        let label = v.inv.to_string();
        let font = ("sans-serif", 13).into_font().style(FontStyle::Bold);
        let w = label.len() as i32 * 8;
        let x = if v.at_ms * 5 > x_end * 4 {
            px - w - 4
        } else {
            px + 4
        };
        root.draw(&Text::new(label, (x, py + 2), font.color(&VIOLATION)))
            .map_err(text)?;
    }
    draw_legend(&legend, &faults, violation.map(|v| (v.inv, v.at_ms)))?;
    root.present().map_err(text)?;
    Ok(())
}

/// The legend panel: every series, every fault kind drawn (with its count),
/// and the violation.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    faults: &[(u64, usize)],
    violation: Option<(&str, u64)>,
) -> Result<(), String> {
    let font = ("sans-serif", 12).into_font();
    let head = ("sans-serif", 12).into_font().style(FontStyle::Bold);
    let mut y = 20;
    let step = 17;
    let x0 = 8;
    let x1 = 36;
    area.draw(&Text::new("series", (x0, y), head.clone()))
        .map_err(text)?;
    y += step;
    for (name, color, _) in SERIES {
        area.draw(&PathElement::new(
            [(x0, y + 6), (x0 + 22, y + 6)],
            color.stroke_width(2),
        ))
        .map_err(text)?;
        area.draw(&Text::new(name, (x1, y), font.clone()))
            .map_err(text)?;
        y += step;
    }
    y += step / 2;
    let mut counts = [0usize; FaultKind::ALL.len()];
    for &(_, k) in faults {
        counts[k] += 1;
    }
    let header = if faults.is_empty() {
        "faults: none injected"
    } else {
        "faults (dashed)"
    };
    area.draw(&Text::new(header, (x0, y), head.clone()))
        .map_err(text)?;
    y += step;
    for (k, kind) in FaultKind::ALL.iter().enumerate() {
        if counts[k] == 0 {
            continue;
        }
        let (color, dash, gap) = FAULT_STYLE[k];
        // The legend swatch repeats the kind's dash pattern.
        let mut x = x0;
        while x < x0 + 22 {
            let end = (x + dash as i32).min(x0 + 22);
            area.draw(&PathElement::new(
                [(x, y + 6), (end, y + 6)],
                color.stroke_width(2),
            ))
            .map_err(text)?;
            x = end + gap as i32;
        }
        area.draw(&Text::new(
            format!("fault: {} (×{})", kind.name(), counts[k]),
            (x1, y),
            font.clone(),
        ))
        .map_err(text)?;
        y += step;
    }
    if let Some((inv, at)) = violation {
        y += step / 2;
        area.draw(&Text::new("verdict", (x0, y), head))
            .map_err(text)?;
        y += step;
        area.draw(&PathElement::new(
            [(x0, y + 6), (x0 + 22, y + 6)],
            VIOLATION.stroke_width(2),
        ))
        .map_err(text)?;
        area.draw(&Text::new(
            format!("{inv} violated at {at} ms"),
            (x1, y),
            font.color(&VIOLATION),
        ))
        .map_err(text)?;
    }
    Ok(())
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}
