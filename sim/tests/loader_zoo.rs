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

#[test]
fn placeholder_in_band() {
    caught(LoaderBug::PlaceholderInBand);
}

#[test]
fn refresh_bypasses_flight() {
    caught(LoaderBug::RefreshBypassesFlight);
}

#[test]
fn refresh_writes_empty() {
    caught(LoaderBug::RefreshWritesEmpty);
}

#[test]
fn delete_keeps_refresh_task() {
    caught(LoaderBug::DeleteKeepsRefreshTask);
}

#[test]
fn placeholder_overwrites_value() {
    caught(LoaderBug::PlaceholderOverwritesValue);
}

#[test]
fn local_write_ahead_of_remote() {
    caught(LoaderBug::LocalWriteAheadOfRemote);
}

#[test]
fn batch_key_text() {
    caught(LoaderBug::BatchKeyText);
}

#[test]
fn refresh_after_close() {
    caught(LoaderBug::RefreshAfterClose);
}

#[test]
fn waiters_not_counted() {
    caught(LoaderBug::WaitersNotCounted);
}

#[test]
fn local_ignores_expiry() {
    caught(LoaderBug::LocalIgnoresExpiry);
}

/// Every switch has its test above (a new switch must get one).
#[test]
fn every_loader_switch_is_hunted() {
    let tested = [
        "placeholder-in-band",
        "refresh-bypasses-flight",
        "refresh-writes-empty",
        "delete-keeps-refresh-task",
        "placeholder-overwrites-value",
        "local-write-ahead-of-remote",
        "batch-key-text",
        "refresh-after-close",
        "waiters-not-counted",
        "local-ignores-expiry",
    ];
    let all: Vec<&str> = LoaderBug::ALL.iter().map(|b| b.name()).collect();
    assert_eq!(all, tested);
}
