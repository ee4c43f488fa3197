//! The bug zoo, the harness's claim to power (DESIGN principle 6): with
//! each switch on, the default sweep (the first 40 of the seeds of every
//! named scenario that `sweep.rs` runs clean) must fail, and its first
//! violation must name an invariant the broken rule protects. The failing
//! seed must fail the same way on replay (INV-12).
//!
//! No switch is special-cased anywhere in the harness: the oracles and the
//! workload are the ones every sweep uses.

use cache_core::bugs::{Bug, Bugs};
use sim::zoo::hunt;
use sim::{run_seed, Scenario};

/// The default sweep's size. Deliberately not `SIM_SEEDS`: that one is
/// lowered to keep mutation runs quick, while every switch must stay
/// caught within what `cargo test` sweeps by default. A hunt stops at the
/// first failing run, so this costs a few runs per switch, not 200.
fn seeds_per_scenario() -> u64 {
    std::env::var("ZOO_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

fn caught(bug: Bug) {
    let seeds = seeds_per_scenario();
    let found = hunt(bug, seeds).unwrap_or_else(|| {
        panic!(
            "{bug} ({}) went unnoticed by {seeds} seeds of every scenario",
            bug.rule()
        )
    });
    assert!(
        bug.invariants().contains(&found.invariant),
        "{bug} breaks {} but the first violation was {}: {}",
        bug.rule(),
        found.invariant,
        found.detail
    );
    // The failure is a property of the seed: a replay fails identically.
    let mut s = Scenario::named(&found.scenario).unwrap();
    s.bugs = Bugs::none().with(bug);
    let again = run_seed(found.seed, &s, None);
    let first = again.violations.first().expect("the replay fails too");
    assert_eq!(
        (first.inv, &first.detail, first.at_ms),
        (found.invariant, &found.detail, found.at_ms)
    );
    // And without the switch the same seed passes: the switch is the cause.
    s.bugs = Bugs::none();
    let clean = run_seed(found.seed, &s, None);
    assert!(
        clean.passed(),
        "seed {} of {} fails without {bug}: {:?}",
        found.seed,
        found.scenario,
        clean.violations
    );
}

#[test]
fn dup_completion_discard_is_caught() {
    caught(Bug::DupCompletionDiscard);
}

#[test]
fn session_late_append_leak_is_caught() {
    caught(Bug::SessionLateAppendLeak);
}

#[test]
fn error_path_ignores_waiters_is_caught() {
    caught(Bug::ErrorPathIgnoresWaiters);
}

#[test]
fn first_ctx_cancels_all_is_caught() {
    caught(Bug::FirstCtxCancelsAll);
}

#[test]
fn errors_cached_in_session_is_caught() {
    caught(Bug::ErrorsCachedInSession);
}

#[test]
fn key_only_delete_is_caught() {
    caught(Bug::KeyOnlyDelete);
}

#[test]
fn ongoing_delete_no_identity_is_caught() {
    caught(Bug::OngoingDeleteNoIdentity);
}

#[test]
fn content_hit_foreign_recipe_is_caught() {
    caught(Bug::ContentHitForeignRecipe);
}

#[test]
fn ttl_db_fail_open_is_caught() {
    caught(Bug::TtlDbFailOpen);
}

#[test]
fn forced_retry_silent_is_caught() {
    caught(Bug::ForcedRetrySilent);
}

#[test]
fn ttl_key_outlives_window_is_caught() {
    caught(Bug::TtlKeyOutlivesWindow);
}

#[test]
fn ttl_write_ignores_safety_is_caught() {
    caught(Bug::TtlWriteIgnoresSafety);
}

#[test]
fn unknown_bug_name_is_a_clear_error() {
    let err = Scenario::named("standard")
        .unwrap()
        .with_bugs(&["no-such-bug"])
        .unwrap_err();
    assert!(err.contains("unknown bug \"no-such-bug\""), "{err}");
    for b in Bug::ALL {
        assert!(err.contains(b.name()), "{err}");
    }
}
