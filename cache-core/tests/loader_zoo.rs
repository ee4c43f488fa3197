//! The loader's bug zoo (`cache_core::bugs::LoaderBug`): with a switch on,
//! a deterministic sweep of driver inputs must fail naming the invariant the
//! switch breaks; with it off, the very same inputs pass. One test per
//! switch, named after it.

#[path = "loader_common/mod.rs"]
mod loader_common;

use cache_core::bugs::{LoaderBug, LoaderBugs};
use cache_core::driver::{run_loader_machine, run_loader_machine_with, Failure, LoaderInput};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

/// How many inputs a sweep tries before giving up on a switch.
const SWEEP: usize = 3_000;

/// Sweeps deterministic inputs until `bug` makes the driver fail; returns
/// the failure and how many inputs it took. Every input tried must pass
/// with the switch off.
fn hunt(bug: LoaderBug) -> (Failure, usize, LoaderInput) {
    const {
        assert!(
            cfg!(feature = "bug-zoo"),
            "the zoo needs cache-core's bug-zoo feature"
        )
    };
    let mut runner = TestRunner::deterministic();
    let strategy = loader_common::input(80);
    for tried in 1..=SWEEP {
        let input = strategy.new_tree(&mut runner).unwrap().current();
        if let Err(f) = run_loader_machine(&input) {
            panic!("switch off, the input fails: {f}\n{input:#?}");
        }
        if let Err(f) = run_loader_machine_with(&input, LoaderBugs::none().with(bug)) {
            return (f, tried, input);
        }
    }
    panic!("{bug}: {SWEEP} inputs and the harness never noticed");
}

fn caught(bug: LoaderBug) {
    let (failure, tried, input) = hunt(bug);
    assert!(
        bug.invariants().contains(&failure.invariant),
        "{bug} (breaks {}) was reported as {}, expected one of {:?}:\n{failure}\n{input:#?}",
        bug.rule(),
        failure.invariant,
        bug.invariants()
    );
    // The same input, switch off: clean.
    run_loader_machine(&input).unwrap();
    println!(
        "{bug}: caught as {} after {tried} inputs",
        failure.invariant
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
fn every_switch_is_hunted() {
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

/// Proptest shrinks a zoo failure to a short sequence a reader can follow.
#[test]
fn a_zoo_failure_shrinks_to_a_short_sequence() {
    let bugs = LoaderBugs::none().with(LoaderBug::PlaceholderOverwritesValue);
    // A fixed RNG: where shrinking ends depends on where it starts, and a
    // test of how short it gets must not depend on a random start.
    let mut runner = TestRunner::new_with_rng(
        proptest::test_runner::Config {
            cases: SWEEP as u32,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let result = runner.run(
        &loader_common::input(80),
        |input| match run_loader_machine_with(&input, bugs) {
            Ok(_) => Ok(()),
            Err(f) => Err(proptest::test_runner::TestCaseError::fail(f.invariant)),
        },
    );
    match result {
        Err(proptest::test_runner::TestError::Fail(why, minimal)) => {
            assert!(why.message().contains("LINV-2"), "{why}");
            assert!(
                minimal.ops.len() <= 8,
                "shrunk to {} ops: {minimal:#?}",
                minimal.ops.len()
            );
            println!("minimal: {minimal:#?}");
        }
        other => panic!("expected a shrunk failure, got {other:?}"),
    }
}
