//! INV-8 (T-2(a), T-3): a fresh TTL key belongs to the session that chose
//! it, and sessions are told apart across engine restarts (their ids start
//! again at `s1` while the TTL store survives). A resolver runs under a TTL
//! storage key in a session other than the first one that ran under it
//! only when that key was persisted first — learned from the store, the
//! way T-2 shares a safe result — never because two sessions were handed
//! the same fresh key.

use cache_core::machine::SessionId;

use crate::world::{Plant, World};

/// A call resolver of TTL'd key `k` started under `storage_key`, for
/// session `session` of incarnation `inc`.
pub(super) fn run_started(world: &World, k: u64, storage_key: &str, inc: u64, session: SessionId) {
    let call_key = world.key_id(k).call_key();
    // Planted: every run reports a session of its own.
    let owner = if world.plant == Some(Plant::FreshKeyOwnerPerRun) {
        let mut sh = world.shadow();
        sh.next_call += 1;
        (inc, SessionId(u64::MAX - sh.next_call))
    } else {
        (inc, session)
    };
    let mut sh = world.shadow();
    let first = *sh
        .ttl
        .fresh_owner
        .entry(storage_key.to_string())
        .or_insert(owner);
    let persisted = sh.ttl.rows.expiry(&call_key, storage_key).is_some();
    drop(sh);
    if first != owner && !persisted {
        world.violate(
            "INV-8",
            format!(
                "T-2(a): k{k}'s fresh key {storage_key} of session {} (incarnation {}) was handed to session {} (incarnation {}) before any row persisted it",
                first.1, first.0, owner.1, owner.0
            ),
        );
    }
}
