//! `cache-sim report`: the SVG leak picture (O-1 metrics over simulated time).

use sim::report::svg;
use sim::{run_seed, Plant, Scenario};

#[test]
fn the_timeline_names_both_metrics_and_is_the_same_every_time() {
    let s = Scenario::named("standard").unwrap();
    let a = svg(&run_seed(3, &s, None)).unwrap();
    let b = svg(&run_seed(3, &s, None)).unwrap();
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
    assert!(a.contains("seed 3"));
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
