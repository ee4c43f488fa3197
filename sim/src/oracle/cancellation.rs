//! INV-7: a call's resolver is cancelled iff all its waiters left; a waiter
//! that did not cancel gets the outcome.

use cache_core::facade::Cache;
use cache_core::machine::EntryId;
use cache_core::CallError;

use crate::protocol::ErrKind;
use crate::world::{Engine, Val, World};

/// An error answer: "cancelled" only for a caller that cancelled.
pub(super) fn failed(world: &World, req: u64, key: u64, error: &CallError, caller_cancelled: bool) {
    if matches!(error, CallError::Cancelled) && !caller_cancelled {
        world.violate(
            "INV-7",
            format!("r{req} k{key}: cancelled without cancelling"),
        );
    }
}

/// A client got an answer: "cancelled" only if it sent a cancel (the
/// engine-side check above sees the cache's error; this one sees what
/// crossed the wire).
pub(super) fn client_answered(
    world: &World,
    client: &str,
    req: u64,
    result: &Result<String, ErrKind>,
    cancelled: bool,
) {
    if *result == Err(ErrKind::Cancelled) && !cancelled {
        world.violate(
            "INV-7",
            format!("{client} r{req}: cancelled without cancelling"),
        );
    }
}

/// A resolver observed its cancellation: every waiter must have left, as
/// the public query reports it (`None`: the call has completed meanwhile).
pub(super) fn resolver_cancelled(world: &World, run: u64, cache: &Cache<Val>, entry: EntryId) {
    if let Some(n) = cache.waiters(entry).filter(|n| *n > 0) {
        world.violate("INV-7", format!("run{run} cancelled with {n} waiters"));
    }
}

/// After every step, the "only if" half the answers cannot show: once every
/// waiter of a running call has left (and nobody holds it), its resolver's
/// cancellation has fired.
pub(super) fn step(world: &World, eng: &Engine) {
    let running: Vec<(u64, (u64, EntryId), bool)> = world
        .shadow()
        .running(eng.inc)
        .map(|(id, r)| (*id, r.entry, r.cancel.is_cancelled()))
        .collect();
    for (run, (instance, entry), cancelled) in running {
        let cache = super::cache_of(eng, instance);
        let deserted = cache.waiters(entry) == Some(0)
            && cache.inspect(|m| m.contains(entry) && m.refcount(entry) == Some(0));
        if deserted && !cancelled {
            world.violate(
                "INV-7",
                format!(
                    "run{run}: every waiter of {entry} left but its resolver was not cancelled"
                ),
            );
        }
    }
}
