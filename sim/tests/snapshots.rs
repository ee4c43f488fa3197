//! Golden outputs under the top-level `snapshots/` folder: traces of golden
//! seeds, the leak report of a planted leak, the metrics exposition at the
//! end of a run, and the printed swarm configuration.

use sim::plan::Swarm;
use sim::{run_seed, Plant, Scenario};

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({ snapshot_path => "../../snapshots", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

#[test]
fn golden_traces() {
    let s = Scenario::named("standard").unwrap();
    for seed in [1u64, 2] {
        let o = run_seed(seed, &s, None);
        assert!(o.passed(), "{:?}", o.violations);
        snap!(format!("trace_seed_{seed}"), o.trace.join("\n"));
    }
}

#[test]
fn planted_leak_report() {
    let s = Scenario::named("standard").unwrap();
    let o = run_seed(1, &s, Some(Plant::LeakSessionOnDisconnect));
    assert_eq!(o.first_invariant(), Some("INV-1"));
    let leak = o.leak.expect("a leak report");
    let classes: Vec<String> = leak.classes().iter().map(|c| c.to_string()).collect();
    snap!(
        "planted_leak_report",
        format!("classes: {classes:?}\n{leak}")
    );
}

#[test]
fn metrics_at_end_of_run() {
    let s = Scenario::named("standard").unwrap();
    let o = run_seed(3, &s, None);
    assert!(o.passed(), "{:?}", o.violations);
    snap!("metrics_end_of_run", o.metrics);
}

#[test]
fn swarm_configurations() {
    let s = Scenario::named("standard").unwrap();
    let text: Vec<String> = (0..8)
        .map(|seed| format!("seed {seed}: {}", Swarm::generate(seed, &s)))
        .collect();
    snap!("swarm_configurations", text.join("\n"));
}

#[test]
fn loader_golden_traces() {
    // A seed of each loader scenario; loader-faults seed 9 enables six
    // fault kinds (its swarm is the trace's second line).
    for (name, seed) in [("loader", 1u64), ("loader-faults", 9)] {
        let s = sim::loader::LoaderScenario::named(name).unwrap();
        let o = sim::loader::run_loader_seed(seed, &s);
        assert!(o.passed(), "{:?}", o.violation);
        snap!(
            format!("trace_{}_seed_{seed}", name.replace('-', "_")),
            o.trace.join("\n")
        );
    }
}

#[test]
fn loader_net_golden_trace() {
    // Seed 1 enables remote errors and slowness, bus delays, node restarts
    // and clock jumps (the swarm is the trace's second line); the trace
    // ends with the convergence tally and every node closed.
    let s = sim::loader_net::NetScenario::named("loader-net").unwrap();
    let o = sim::loader_net::run_net_seed(1, &s);
    assert!(o.passed(), "{:?}", o.violations);
    snap!("trace_loader_net_seed_1", o.trace.join("\n"));
}
