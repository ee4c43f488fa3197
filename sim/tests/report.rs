//! `cache-sim report`: the SVG leak picture (O-1 metrics over simulated time).

use cache_core::bugs::Bug;
use sim::report::svg;
use sim::{run_seed, Plant, Scenario};

#[test]
fn the_timeline_names_both_metrics_and_is_the_same_every_time() {
    let s = Scenario::named("standard").unwrap();
    let a = svg(&run_seed(3, &s, None), &s).unwrap();
    let b = svg(&run_seed(3, &s, None), &s).unwrap();
    assert_eq!(a, b, "INV-12: the picture is deterministic too");
    assert!(a.starts_with("<svg") && a.trim_end().ends_with("</svg>"));
    for name in [
        "dagger_dagql_cache_entries",
        "dagger_connected_clients",
        "ongoing_calls",
        "completed_calls_by_content",
    ] {
        assert!(a.contains(name), "legend lacks {name}");
    }
    // The title: scenario, seed, switches, verdict.
    assert!(a.contains("scenario standard"), "title lacks the scenario");
    assert!(a.contains("seed 3"));
    assert!(a.contains("bug switches: none"));
    assert!(a.contains("PASS"));
    assert!(!a.contains("INV-"), "a passing seed marks no violation");
}

#[test]
fn every_fault_kind_drawn_has_a_legend_entry() {
    // Seed 3 of `standard` injects store errors, engine restarts, dropped
    // connections and a clock jump (its trace says so).
    let s = Scenario::named("standard").unwrap();
    let o = run_seed(3, &s, None);
    let a = svg(&o, &s).unwrap();
    let mut kinds = 0;
    for kind in sim::plan::FaultKind::ALL {
        let injected = o
            .trace
            .iter()
            .any(|l| l.contains(&format!(" fault    {} client", kind.name())));
        let label = format!("fault: {} (×", kind.name());
        assert_eq!(
            a.contains(&label),
            injected,
            "legend entry for {} (injected: {injected})",
            kind.name()
        );
        kinds += usize::from(injected);
    }
    assert!(kinds >= 2, "seed 3 injects several kinds of fault");
}

#[test]
fn a_failing_seed_names_its_switch_and_marks_the_invariant() {
    let s = Scenario::named("standard")
        .unwrap()
        .with_bugs(&[Bug::DupCompletionDiscard.name()])
        .unwrap();
    let o = run_seed(0, &s, None);
    let inv = o
        .first_invariant()
        .expect("dup-completion-discard fails seed 0");
    let a = svg(&o, &s).unwrap();
    assert!(a.contains("bug switches: dup-completion-discard"));
    assert!(
        a.contains(&format!("FAIL {inv}")),
        "title lacks the verdict"
    );
    assert!(
        a.contains(&format!("{inv} violated at {} ms", o.violations[0].at_ms)),
        "legend lacks the violation"
    );
    // The time-axis mark is a text element holding only the invariant.
    assert!(
        texts(&a).any(|t| t == inv),
        "no {inv} marker on the time axis"
    );
}

/// The contents of the SVG's text elements, trimmed.
fn texts(svg: &str) -> impl Iterator<Item = &str> {
    svg.split("</text>")
        .filter_map(|chunk| chunk.rsplit_once('>').map(|(_, t)| t.trim()))
}

#[test]
fn a_leak_stays_up_at_the_end_of_the_timeline() {
    // The picture's data: a healthy run comes back to zero entries, a
    // planted session leak (INV-1) does not.
    let s = Scenario::named("standard").unwrap();
    let last = |p: Option<Plant>| {
        (1..6)
            .map(|seed| run_seed(seed, &s, p))
            .find(|o| p.is_none() || !o.passed())
            .and_then(|o| o.samples.last().map(|x| x.buckets.total()))
            .unwrap()
    };
    assert_eq!(last(None), 0);
    assert!(last(Some(Plant::LeakSessionOnDisconnect)) > 0);
}
