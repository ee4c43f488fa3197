//! The loader's bug zoo through the loader world: with each `LoaderBug`
//! on, the loader sweep (seeds of `loader` and `loader-faults`,
//! interleaved) must fail, its first violation must name (typed, not
//! parsed from text) an invariant the broken rule protects, and every run
//! of the same sweep up to that one must pass with the switch off.

use cache_core::bugs::LoaderBug;
use sim::loader::zoo::{hunt_loader, loader_sweep_order};
use sim::loader::{run_loader_seed, LoaderScenario};

/// Seeds per loader scenario a hunt may try (a hunt stops at the first failure).
const SEEDS: u64 = 400;

fn caught(bug: LoaderBug) {
    let found = hunt_loader(bug, SEEDS).unwrap_or_else(|| {
        panic!(
            "{bug} ({}) went unnoticed by {SEEDS} seeds of each loader scenario",
            bug.rule()
        )
    });
    assert!(
        bug.invariants().contains(&found.invariant),
        "{bug} breaks {} but the first violation was {} ({} seed {}): {}",
        bug.rule(),
        found.invariant,
        found.scenario,
        found.seed,
        found.detail
    );
    // The same sweep, switch off, passes up to and including that run.
    let clean: Vec<LoaderScenario> = ["loader", "loader-faults"]
        .iter()
        .map(|n| LoaderScenario::named(n).unwrap())
        .collect();
    for (name, seed) in loader_sweep_order(found.seed + 1).take(found.runs as usize) {
        let s = clean.iter().find(|s| s.name == name).unwrap();
        let o = run_loader_seed(seed, s);
        assert!(
            o.passed(),
            "{name} seed {seed} fails without {bug}: {:?}",
            o.violation
        );
    }
    println!(
        "{bug}: caught as {} by {} seed {} after {} runs",
        found.invariant, found.scenario, found.seed, found.runs
    );
}

/// One test per switch, named after it, and a check that every switch
/// has one (a new switch must be added here).
macro_rules! zoo_tests {
    ($($name:ident => $bug:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                caught(LoaderBug::$bug);
            }
        )*

        #[test]
        fn every_loader_switch_is_hunted() {
            assert_eq!([$(LoaderBug::$bug),*].to_vec(), LoaderBug::ALL.to_vec());
        }
    };
}

zoo_tests! {
    placeholder_in_band => PlaceholderInBand,
    refresh_bypasses_flight => RefreshBypassesFlight,
    refresh_writes_empty => RefreshWritesEmpty,
    delete_keeps_refresh_task => DeleteKeepsRefreshTask,
    placeholder_overwrites_value => PlaceholderOverwritesValue,
    local_write_ahead_of_remote => LocalWriteAheadOfRemote,
    batch_key_text => BatchKeyText,
    refresh_after_close => RefreshAfterClose,
    waiters_not_counted => WaitersNotCounted,
    local_ignores_expiry => LocalIgnoresExpiry,
}
