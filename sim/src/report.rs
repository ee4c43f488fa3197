//! The SVG timeline of `cache-sim report`: `dagger_dagql_cache_entries` by
//! bucket and `dagger_connected_clients` over simulated time (the leak
//! picture: a leak is a line that does not come back to zero).

use crate::run::RunOutcome;

const W: f64 = 900.0;
const H: f64 = 360.0;
const PAD: f64 = 50.0;

/// A line: name, colour, value of a sample.
type Series = (&'static str, &'static str, fn(&crate::run::Sample) -> usize);

/// The SVG document.
pub fn svg(o: &RunOutcome) -> String {
    let series: [Series; 6] = [
        ("dagger_dagql_cache_entries", "#000000", |s| {
            s.buckets.total()
        }),
        ("ongoing_calls", "#d62728", |s| s.buckets.ongoing_calls),
        ("completed_calls", "#1f77b4", |s| s.buckets.completed_calls),
        ("completed_calls_by_content", "#17becf", |s| {
            s.buckets.completed_calls_by_content
        }),
        ("arbitrary (ongoing+completed)", "#9467bd", |s| {
            s.buckets.ongoing_arbitrary + s.buckets.completed_arbitrary
        }),
        ("dagger_connected_clients", "#2ca02c", |s| s.clients),
    ];
    let t_max = o.samples.last().map_or(1, |s| s.at_ms.max(1)) as f64;
    let y_max = o
        .samples
        .iter()
        .flat_map(|s| series.iter().map(move |(_, _, f)| f(s)))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |t: u64| PAD + (t as f64 / t_max) * (W - 2.0 * PAD);
    let y = |v: usize| H - PAD - (v as f64 / y_max) * (H - 2.0 * PAD);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"monospace\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{PAD}\" y=\"20\">seed {} — cache entries by bucket and connected clients over simulated time (max {y_max})</text>\n",
        o.plan.seed
    );
    out.push_str(&format!(
        "<line x1=\"{PAD}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>\n<text x=\"{}\" y=\"{}\">{} ms</text>\n",
        H - PAD,
        W - PAD,
        H - PAD,
        W - PAD - 40.0,
        H - PAD + 15.0,
        t_max
    ));
    for (i, (name, color, f)) in series.iter().enumerate() {
        let pts: Vec<String> = o
            .samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.at_ms), y(f(s))))
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>\n",
            pts.join(" "),
            PAD + 10.0,
            PAD + 14.0 * i as f64
        ));
    }
    for f in o.trace.iter().filter(|l| l.contains(" fault ")) {
        if let Some(t) = f
            .split("ms")
            .next()
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            out.push_str(&format!(
                "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#ff7f0e\" stroke-dasharray=\"2,3\"/>\n",
                x(t),
                PAD,
                H - PAD
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}
