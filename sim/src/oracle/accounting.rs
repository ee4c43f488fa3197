//! What the cache reports about itself against what the simulation saw,
//! judged by the checks the drivers share (`cache_core::checks::accounting`):
//! an invalid key is refused at once, runs nothing and caches nothing
//! (C-1); a close counts the refs its session owned and the failing hooks
//! it ran (S-1, S-7); each cache's metrics count every failing hook that
//! ran (O-1, C-12); `entries()` is the sum of the buckets (C-15); a leak
//! report names the classes its buckets show, each entry and class by a
//! name of its own, and its index lines list what the entries record (O-3).
//! Reported under the rule's own id.

use cache_core::checks::accounting::{
    check_buckets, check_close, check_hook_errors, check_invalid_key, check_leak_report,
    check_report_text, check_store_failures, AccountingViolation, CloseFacts, InvalidKeyCall,
};
use cache_core::facade::Cache;
use cache_core::machine::SessionId;
use cache_core::CallError;

use crate::world::{Engine, Plant, Val, World};

fn report(world: &World, what: &str, v: AccountingViolation) {
    world.violate(v.rule, format!("{what}: {}", v.detail));
}

/// A call with an invalid key answered (`None`: not at once).
pub(super) fn invalid_key(
    world: &World,
    facts: InvalidKeyCall,
    answer: Option<&Result<(), CallError>>,
) {
    world.count("invalid-key-refused");
    if let Err(v) = check_invalid_key(facts, answer) {
        report(world, "an invalid key", v);
    }
}

/// Session `sid` of incarnation `inc` began to close: the failing hooks
/// its close runs are those counted from now.
pub(super) fn closing(world: &World, inc: u64) {
    let mut sh = world.shadow();
    sh.failed_at_close = sh.failed_hooks.get(&(inc, false)).copied().unwrap_or(0);
}

/// Session `sid` closed, its close reporting `released` refs and
/// `hook_errors` failing hooks; `owned`: the refs the shadow saw it own;
/// `unseen`: its calls in flight, whose answers may have been made (each
/// with a ref the close released) before the engine reported them.
/// The call cache's leak report then names what its buckets show (O-3):
/// checked at closes, which are rare, since a report lists every entry.
pub(super) fn closed(
    world: &World,
    cache: &Cache<Val>,
    (inc, sid): (u64, SessionId),
    (released, hook_errors): (usize, usize),
    (owned, unseen): (usize, usize),
) {
    let failed = {
        let sh = world.shadow();
        let now = sh.failed_hooks.get(&(inc, false)).copied().unwrap_or(0);
        usize::try_from(now - sh.failed_at_close).unwrap_or(usize::MAX)
    };
    if failed > 0 {
        world.count("close-with-failing-hooks");
    }
    let facts = CloseFacts {
        released,
        hook_errors,
        owned,
        unseen,
        failed_hooks: failed,
    };
    if let Err(v) = check_close(facts) {
        report(world, &format!("closing {sid}"), v);
    }
    let leaks = cache.leak_report();
    // The text is judged on an intact cache only: an index that disagrees
    // with its entries is the invariant check's to report, under its own
    // rule (INV-3, C-13), at the end of this step.
    let checked = check_leak_report(&leaks, &cache.buckets(), cache.live_entries()).and_then(
        |()| match cache.check_invariants() {
            Ok(()) => check_report_text(&leaks, &cache.inspect(|m| m.index_lines())),
            Err(_) => Ok(()),
        },
    );
    if let Err(v) = checked {
        report(world, &format!("after closing {sid}"), v);
    }
}

/// At the end of a run, every call answered: the call caches of all
/// incarnations counted every TTL store failure they met and nothing the
/// store answered in time (T-2, O-1). A restart cannot split a failure from
/// its count: the simulation's store answers in the caller's own poll.
pub(super) fn store_failures(world: &World) {
    let mut counted = world.store_failures_counted();
    if world.plant == Some(Plant::StoreFailureUncounted) {
        counted = counted.saturating_sub(1);
    }
    let errors = world.store.lookup_and_write_errors();
    if errors > 0 {
        world.count("ttl-store-failures-met");
    }
    let late = world
        .store
        .answers_later_than(crate::engine::STORE_DEADLINE_MS);
    if let Err(v) = check_store_failures(counted, errors, late) {
        report(world, "at the end of the run", v);
    }
}

/// After every step: each cache's buckets and failing-hook count.
pub(super) fn step(world: &World, eng: &Engine) {
    for (change, name, cache) in [
        (false, "calls", &eng.calls),
        (true, "changes", &eng.changes),
    ] {
        if let Err(v) = check_buckets(&cache.buckets(), cache.entries()) {
            report(world, name, v);
        }
        let mut seen = world
            .shadow()
            .failed_hooks
            .get(&(eng.inc, change))
            .copied()
            .unwrap_or(0);
        if world.plant == Some(Plant::HookErrorUncounted) && seen > 0 {
            // Planted: the harness sees one failing hook more than the
            // cache could have counted.
            seen += 1;
        }
        if let Err(v) = check_hook_errors(cache.metrics().release_hook_errors(), seen) {
            report(world, name, v);
        }
    }
}
