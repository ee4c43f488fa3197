//! The loader zoo through the real async `Loader` over simulated TCP: for
//! each switch the `loader-net` world can reach, a short sweep fails with
//! the invariant the switch breaks named in the typed verdict, and the
//! same seeds pass without it. The switches it cannot reach are listed,
//! with why, in `docs/loader.md` ("The loader zoo over TCP").

use cache_core::bugs::LoaderBug;
use sim::loader_net::scenario::NetOps;
use sim::loader_net::{run_net_seed, NetScenario};
use sim::scenario::KeyDist;

/// Most seeds a switch may take to be caught.
const SEEDS: u64 = 300;

fn default_scenario() -> NetScenario {
    NetScenario::named("loader-net").unwrap()
}

/// Batches only, on one node, keys 0..=12 uniform, two keys at most per
/// batch and slow loaders: batch flights of keys 1 and 2 and of key 12
/// (whose parts read "1", "2" alike) are often in the air together.
fn batch_scenario() -> NetScenario {
    NetScenario {
        nodes: 1,
        streams_per_node: 6,
        key_space: 13,
        key_dist: KeyDist::Uniform,
        batch_max: 2,
        ops: NetOps {
            once: 0,
            set: 0,
            delete: 0,
            load_many: 10,
            change_source: 0,
            once_refresh: 0,
            once_give_up: 0,
        },
        loader: sim::loader_net::scenario::NetLoaderMix {
            max_duration_ms: 400,
            ..default_scenario().loader
        },
        faults: sim::loader_net::scenario::NetFaults {
            enable: 0.0,
            ..default_scenario().faults
        },
        ..default_scenario()
    }
}

/// The first failing seed below [`SEEDS`] and its first verdict's invariant.
fn hunt(s: &NetScenario) -> Option<(u64, &'static str)> {
    (0..SEEDS).find_map(|seed| {
        let o = run_net_seed(seed, s);
        o.verdicts.first().map(|v| (seed, v.inv()))
    })
}

#[test]
fn each_reachable_switch_is_caught_with_the_invariant_it_breaks() {
    let cases = [
        (LoaderBug::RefreshBypassesFlight, default_scenario()),
        (LoaderBug::RefreshWritesEmpty, default_scenario()),
        (LoaderBug::DeleteKeepsRefreshTask, default_scenario()),
        (LoaderBug::LocalWriteAheadOfRemote, default_scenario()),
        (LoaderBug::BatchKeyText, batch_scenario()),
        (LoaderBug::WaitersNotCounted, default_scenario()),
        (LoaderBug::LocalIgnoresExpiry, default_scenario()),
    ];
    for (bug, base) in cases {
        let on = base.clone().with_bugs(&[bug.name()]).unwrap();
        let Some((seed, inv)) = hunt(&on) else {
            panic!("{bug} was not caught in {SEEDS} seeds");
        };
        assert!(
            bug.invariants().contains(&inv),
            "{bug} caught at seed {seed} as {inv}, not as one of {:?}",
            bug.invariants()
        );
        // The same seeds pass without the switch.
        for s in 0..=seed {
            let o = run_net_seed(s, &base);
            assert!(
                o.passed(),
                "{bug}: seed {s} fails without it: {:?}",
                o.violations
            );
        }
    }
}

#[test]
fn the_cli_scenario_takes_a_switch_and_names_it_in_the_trace() {
    let s = sim::Scenario::named("loader-net")
        .unwrap()
        .with_bugs(&["waiters-not-counted"])
        .unwrap();
    let o = sim::run_seed(0, &s, None);
    assert!(o
        .trace
        .iter()
        .any(|l| l.contains("loader zoo switches on: waiters-not-counted")));
    assert_eq!(o.violations.first().map(|v| v.inv), Some("LINV-6"));
    assert!(sim::cli::replay_cmd(0, &s, Some("loader-net")).ends_with("--bug waiters-not-counted"));
}
