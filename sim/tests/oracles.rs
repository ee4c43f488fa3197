//! Every oracle fires: each test plants the violation it guards against and
//! asserts that the harness reports that invariant.

use sim::run::check_determinism;
use sim::{run_seed, Plant, Scenario};

fn first_inv(plant: Plant) -> String {
    first_inv_in("standard", plant)
}

/// The first invariant a run of `scenario` with `plant` reports, over its
/// first seeds.
fn first_inv_in(scenario: &str, plant: Plant) -> String {
    let s = Scenario::named(scenario).unwrap();
    for seed in 1..40 {
        let o = run_seed(seed, &s, Some(plant));
        if let Some(inv) = o.first_invariant() {
            return inv.to_string();
        }
    }
    "none".into()
}

#[test]
fn inv1_leaked_session_is_reported() {
    assert_eq!(first_inv(Plant::LeakSessionOnDisconnect), "INV-1");
}

#[test]
fn inv2_refcount_mismatch_is_reported() {
    assert_eq!(first_inv(Plant::ShadowExtraHandle), "INV-2");
}

#[test]
fn inv3_index_corruption_is_reported() {
    assert_eq!(first_inv(Plant::IndexCorruption), "INV-3");
}

#[test]
fn inv4_second_resolver_is_reported() {
    assert_eq!(first_inv(Plant::DoubleResolver), "INV-4");
}

#[test]
fn inv5_wrong_value_is_reported() {
    assert_eq!(first_inv(Plant::WrongValue), "INV-5");
}

#[test]
fn inv5_requested_id_on_a_storage_hit_is_reported() {
    // C-6 / INV-5: a storage hit reports the stored ID, which differs from
    // the requested one when the resolver returned another key's ID.
    assert_eq!(first_inv(Plant::RequestedIdOnStorageHit), "INV-5");
}

#[test]
fn inv6_cached_error_is_reported() {
    assert_eq!(first_inv(Plant::CachedError), "INV-6");
}

#[test]
fn inv7_spurious_cancel_is_reported() {
    assert_eq!(first_inv(Plant::SpuriousCancel), "INV-7");
}

#[test]
fn inv7_resolver_left_running_is_reported() {
    assert_eq!(first_inv(Plant::ResolverNotCancelled), "INV-7");
}

#[test]
fn inv11_wait_for_cycle_is_reported() {
    assert_eq!(first_inv(Plant::WaitCycle), "INV-11");
}

#[test]
fn inv8_ttl_cross_session_is_reported() {
    assert_eq!(first_inv(Plant::TtlCrossSession), "INV-8");
}

#[test]
fn inv8_own_session_result_past_its_ttl_is_reported() {
    // T-7 holds inside the session that made a result, too.
    assert_eq!(first_inv(Plant::TtlExpiredOwnSession), "INV-8");
}

/// The first invariant a planted violation breaks on the TTL-heavy
/// scenario, where TTL rows are written in most seeds.
fn first_ttl_inv(plant: Plant) -> Option<String> {
    let s = Scenario::named("ttl-heavy").unwrap();
    (1..30).find_map(|seed| {
        run_seed(seed, &s, Some(plant))
            .first_invariant()
            .map(str::to_string)
    })
}

#[test]
fn inv8_a_ttl_write_without_a_safe_result_is_reported() {
    assert_eq!(
        first_ttl_inv(Plant::TtlWriteWithoutSafeResult).as_deref(),
        Some("INV-8")
    );
}

#[test]
fn inv8_a_ttl_expiry_moving_backwards_is_reported() {
    assert_eq!(
        first_ttl_inv(Plant::TtlExpiryBackwards).as_deref(),
        Some("INV-8")
    );
}

#[test]
fn inv9_refs_after_close_are_reported() {
    assert_eq!(first_inv(Plant::RefsAfterClose), "INV-9");
}

#[test]
fn inv10_double_hook_is_reported() {
    assert_eq!(first_inv(Plant::DoubleHook), "INV-10");
}

#[test]
fn inv11_swallowed_response_is_reported() {
    assert_eq!(first_inv(Plant::SwallowResponse), "INV-11");
}

#[test]
fn c4_a_revisit_that_is_not_refused_is_reported() {
    let s = Scenario::named("nested-heavy").unwrap();
    let inv = (0..40)
        .find_map(|seed| {
            run_seed(seed, &s, Some(Plant::RecursionNotRefused))
                .violations
                .into_iter()
                .find(|v| v.detail.starts_with("C-4:"))
        })
        .map(|v| v.inv);
    assert_eq!(inv, Some("INV-11"));
}

#[test]
fn inv12_nondeterminism_is_reported() {
    let s = Scenario::named("standard").unwrap();
    let err = check_determinism(1, &s, Some(Plant::Nondeterminism)).unwrap_err();
    assert!(err.starts_with("INV-12"), "{err}");
}

#[test]
fn s5_span_saying_cached_for_a_run_is_reported() {
    assert_eq!(first_inv(Plant::SpanSaysCached), "S-5");
}

#[test]
fn s5_span_emitted_twice_is_reported() {
    assert_eq!(first_inv(Plant::SpanTwice), "S-5");
}

#[test]
fn inv7_closed_error_for_an_open_session_is_reported() {
    // C-5: a shared call must not fail because a session closed, unless
    // the session is the waiter's own.
    assert_eq!(first_inv(Plant::ClosedErrorOnOpenSession), "INV-7");
}

#[test]
fn inv11_top_level_call_refused_as_recursive_is_reported() {
    // C-4: only a resolver's nested call can revisit a chain or close a
    // wait-for cycle; a client's own call is never refused as recursive.
    assert_eq!(first_inv(Plant::TopLevelRefused), "INV-11");
}

#[test]
fn inv8_ttl_row_for_an_unsafe_stored_entry_is_reported() {
    // T-3 per entry: the row belongs to the entry actually stored, whose
    // own result must be safe to persist. The plant leaves the per-key
    // record alone, so only the per-entry check can report it.
    assert_eq!(
        first_inv_in("ttl-heavy", Plant::TtlStoredEntryUnsafe),
        "INV-8"
    );
}

#[test]
fn inv8_fresh_key_handed_to_another_session_is_reported() {
    // T-2(a): the plant makes a session's reuse of its own fresh key look
    // like a second session getting it.
    assert_eq!(
        first_inv_in("ttl-heavy", Plant::FreshKeyOwnerPerRun),
        "INV-8"
    );
}

#[test]
fn t3_a_safety_flag_changed_on_the_way_is_reported() {
    // T-3: a result reaches its caller with its resolver's safe-to-persist
    // flag; the plant turns the flag over as the engine reports it.
    assert_eq!(first_inv(Plant::SafetyFlagFlipped), "INV-8");
}

#[test]
fn t2_a_store_failure_left_uncounted_is_reported() {
    // T-2, O-1: every TTL store failure the cache met is counted, across
    // restarts; the plant reads the count as one less.
    assert_eq!(
        first_inv_in("ttl-heavy", Plant::StoreFailureUncounted),
        "T-2"
    );
}

#[test]
fn c1_invalid_key_served_is_reported() {
    // C-1: a call with no call ID is refused at once; the plant sends it
    // with an ID, so it runs (or waits) and is cached. Its span, of a call
    // the S-5 judge was never told of, may be reported first.
    let s = Scenario::named("nested-heavy").unwrap();
    let found = (1..40).any(|seed| {
        let o = run_seed(seed, &s, Some(Plant::InvalidKeyServed));
        o.violations.iter().any(|v| v.inv == "C-1")
    });
    assert!(found, "no seed of nested-heavy reported C-1");
}

#[test]
fn s1_a_close_releasing_fewer_refs_than_its_session_owned_is_reported() {
    // S-1: a close releases every ref its session owned; answers racing
    // the close may add to that, never take from it.
    assert_eq!(first_inv(Plant::CloseUndercountsRefs), "S-1");
}

#[test]
fn c5_a_resolver_acting_for_a_closed_session_is_reported() {
    // C-5: a shared call acts for a session still waiting on it, never for
    // the one that started it once that one closed.
    assert_eq!(first_inv(Plant::ActsForStarter), "INV-7");
}

#[test]
fn s7_close_hiding_failed_hooks_is_reported() {
    // S-7, C-12: a close counts the release hooks that failed while it ran.
    assert_eq!(
        first_inv_in("cancel-storm", Plant::CloseHidesHookErrors),
        "S-7"
    );
}

#[test]
fn o1_failed_hook_missing_from_metrics_is_reported() {
    // O-1, C-12: the metrics count every release hook that failed.
    assert_eq!(
        first_inv_in("cancel-storm", Plant::HookErrorUncounted),
        "O-1"
    );
}

#[test]
fn accounting_oracles_stay_quiet_without_a_plant() {
    // The checks above fire for their plants, not for the workloads that
    // feed them: the same seeds pass without one.
    for name in ["nested-heavy", "cancel-storm"] {
        let s = Scenario::named(name).unwrap();
        for seed in 1..6 {
            let o = run_seed(seed, &s, None);
            assert!(o.passed(), "{name} seed {seed}: {:?}", o.violations);
        }
    }
}
