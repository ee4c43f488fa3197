//! INV-2: refcount conservation. For every entry, the refcount equals the
//! handles the shadow knows are out: per settled session exactly; per entry
//! never below the shadow, and exactly once nothing is in flight.

use std::collections::BTreeMap;

use cache_core::machine::{EntryId, Owner};

use crate::world::{Engine, World};

/// After every step.
pub(super) fn step(world: &World, eng: &Engine) {
    let shadow = world.shadow();
    let mut expected: BTreeMap<EntryId, u32> = BTreeMap::new();
    let mut sessions = Vec::new();
    for ((inc, sid), s) in &shadow.sessions {
        if *inc != eng.inc || !s.open {
            continue;
        }
        for (e, n) in &s.handles {
            *expected.entry(*e).or_default() += n;
        }
        if s.pending == 0 {
            sessions.push((*sid, s.handles.values().sum::<u32>()));
        }
    }
    for ((inc, e), n) in &shadow.nested {
        if *inc == eng.inc {
            *expected.entry(*e).or_default() += n;
        }
    }
    let quiet = shadow.pending.get(&eng.inc).copied().unwrap_or(0) == 0
        && !shadow
            .runs
            .values()
            .any(|r| r.inc == eng.inc && r.finished_at.is_none());
    drop(shadow);
    eng.calls.inspect(|m| {
        for (sid, n) in sessions {
            if !m.session_is_open(sid) {
                continue;
            }
            // What the session records, and the live refs that name it as
            // their owner, whether or not it records them.
            let (recorded, named) = (m.session_refs(sid), m.refs_owned_by(Owner::Session(sid)));
            if recorded != n as usize || named != n as usize {
                world.violate(
                    "INV-2",
                    format!(
                        "session {sid} records {recorded} refs and {named} name it, shadow says {n}"
                    ),
                );
            }
        }
        // Every step: an entry never counts fewer refs than the handles the
        // shadow knows are out (a deficit is a ref released twice, or a
        // payload about to be freed under a holder). Exactly equal once
        // nothing is in flight: until then a waiter may hold a ref the
        // shadow has not been told about yet.
        for (e, n) in &expected {
            let real = m.refcount(*e).unwrap_or(0);
            if real < *n || (quiet && real != *n) {
                world.violate(
                    "INV-2",
                    format!("entry {e} refcount {real}, shadow says {n}"),
                );
            }
        }
    });
}
