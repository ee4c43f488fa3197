//! `cache-sim report` for a loader seed: an SVG timeline of the nodes'
//! flights in the air, refresh tasks, local entries and waiting events,
//! with the violation (if any) marked where it was found. The drawing
//! ([`timeline_svg`]) is shared with the `loader-net` world, whose gauges
//! differ.

use plotters::prelude::*;

use super::scenario::LoaderScenario;
use super::world::LoaderOutcome;

const SIZE: (u32, u32) = (1000, 480);
const SERIES: [(&str, RGBColor); 4] = [
    ("flights in the air", RGBColor(31, 119, 180)),
    ("refresh tasks", RGBColor(44, 160, 44)),
    ("local entries", RGBColor(255, 127, 14)),
    ("events waiting", RGBColor(148, 103, 189)),
];

fn text<E: std::fmt::Display>(e: E) -> String {
    format!("cannot draw the timeline: {e}")
}

/// The SVG text of `o`'s timeline.
pub fn svg(o: &LoaderOutcome, s: &LoaderScenario) -> Result<String, String> {
    let bugs = if s.bugs.is_empty() {
        "none".to_string()
    } else {
        s.bugs.to_string()
    };
    let samples: Vec<(u64, &[usize])> = o.samples.iter().map(|(t, g)| (*t, &g[..])).collect();
    timeline_svg(&Timeline {
        world: format!(
            "scenario {} · seed {} · loader switches: {bugs}",
            s.name, o.plan.seed
        ),
        series: &SERIES,
        samples: &samples,
        sim_ms: o.sim_ms,
        violation: o.violation.as_ref().map(|v| (v.inv, v.at_ms)),
    })
}

/// A loader world's timeline: gauges sampled over simulated time.
pub struct Timeline<'a> {
    /// The caption's start: scenario, seed, switches (the verdict follows).
    pub world: String,
    /// Each gauge's name and colour, in the samples' order.
    pub series: &'a [(&'a str, RGBColor)],
    /// `(simulated ms, one value per series)`, in time order.
    pub samples: &'a [(u64, &'a [usize])],
    /// When the run ended, simulated ms.
    pub sim_ms: u64,
    /// The violation (invariant, simulated ms), marked as a red line.
    pub violation: Option<(&'a str, u64)>,
}

/// The SVG text of a loader world's timeline (`loader`, `loader-faults`,
/// `loader-net`).
pub fn timeline_svg(t: &Timeline<'_>) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(text)?;
        let verdict = match t.violation {
            None => "PASS".to_string(),
            Some((inv, at)) => format!("FAIL {inv} at {at} ms"),
        };
        let caption = format!("{} · {verdict}", t.world);
        let t_max = t.samples.last().map_or(1, |x| x.0).max(t.sim_ms).max(1);
        let y_max = t
            .samples
            .iter()
            .flat_map(|(_, g)| g.iter().copied())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0..t_max + 1, 0..y_max + 1)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc("simulated ms")
            .y_desc("count (all nodes)")
            .draw()
            .map_err(text)?;
        for (i, (name, color)) in t.series.iter().enumerate() {
            chart
                .draw_series(LineSeries::new(
                    t.samples
                        .iter()
                        .map(|(at, g)| (*at, g.get(i).copied().unwrap_or(0))),
                    color.stroke_width(2),
                ))
                .map_err(text)?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        if let Some((inv, at)) = t.violation {
            chart
                .draw_series(LineSeries::new(
                    [(at, 0), (at, y_max + 1)],
                    RED.stroke_width(2),
                ))
                .map_err(text)?
                .label(inv)
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(text)?;
        root.present().map_err(text)?;
    }
    Ok(out)
}
