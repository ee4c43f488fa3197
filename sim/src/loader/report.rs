//! `cache-sim report` for a loader seed: an SVG timeline of the nodes'
//! flights in the air, refresh tasks, local entries and waiting events,
//! with the violation (if any) marked where it was found.

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
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(text)?;
        let verdict = match &o.violation {
            None => "PASS".to_string(),
            Some(v) => format!("FAIL {} at {} ms", v.inv, v.at_ms),
        };
        let bugs = if s.bugs.is_empty() {
            "none".to_string()
        } else {
            s.bugs.to_string()
        };
        let caption = format!(
            "scenario {} · seed {} · loader switches: {bugs} · {verdict}",
            s.name, o.plan.seed
        );
        let t_max = o.samples.last().map_or(1, |x| x.0).max(o.sim_ms).max(1);
        let y_max = o
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
        for (i, (name, color)) in SERIES.iter().enumerate() {
            chart
                .draw_series(LineSeries::new(
                    o.samples.iter().map(|(t, g)| (*t, g[i])),
                    color.stroke_width(2),
                ))
                .map_err(text)?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        if let Some(v) = &o.violation {
            chart
                .draw_series(LineSeries::new(
                    [(v.at_ms, 0), (v.at_ms, y_max + 1)],
                    RED.stroke_width(2),
                ))
                .map_err(text)?
                .label(v.inv)
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
