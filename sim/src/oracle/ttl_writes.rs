//! INV-8 at write time: what the cache writes to the TTL store (T-3, T-4).
//! Every accepted write is judged after the step that made it:
//!
//! - T-3: a row is written only for a key some resolver produced a result
//!   safe to persist for; and when the entry stored under the row's
//!   storage key is still in the cache, that entry's own result was marked
//!   safe (the flag and the write belong to the entry actually stored);
//! - T-2, T-4 / T-7: judged by [`cache_core::checks::ttl_rows::RowCheck`],
//!   the check the machine driver runs too: an expiry at most the highest
//!   clock reading plus the key's TTL, and a replacing row expiring later
//!   than the row it replaced.

use cache_core::checks::ttl_rows::RowWrite;
use cache_core::machine::EntryId;

use crate::world::{Plant, World};

/// A call resolver produced a result of key `k` safe to persist.
pub(super) fn safe_output(world: &World, k: u64) {
    if world.plant != Some(Plant::TtlWriteWithoutSafeResult) {
        world.shadow().ttl.safe_keys.insert(k);
    }
}

/// A call resolver running under `storage_key` produced entry `entry`'s
/// result, `safe` to persist or not.
pub(super) fn call_output(world: &World, inc: u64, entry: EntryId, storage_key: &str, safe: bool) {
    let safe = safe && world.plant != Some(Plant::TtlStoredEntryUnsafe);
    world
        .shadow()
        .ttl
        .outputs
        .insert((inc, entry), (storage_key.to_string(), safe));
}

/// The result stored under `storage_key` now, if the cache holds one whose
/// making the shadow saw: (entry, safe to persist).
fn stored_under(world: &World, storage_key: &str) -> Option<(EntryId, bool)> {
    let eng = world.engine()?;
    let entry = eng.calls.inspect(|m| m.completed_under(storage_key))?;
    let shadow = world.shadow();
    let (made_under, safe) = shadow.ttl.outputs.get(&(eng.inc, entry))?;
    (made_under == storage_key).then_some((entry, *safe))
}

/// Judges the writes the store accepted since the last step.
pub(super) fn step(world: &World) {
    let writes = world.store.take_writes();
    if writes.is_empty() {
        return;
    }
    let high = world.clock_high_water();
    for mut w in writes {
        let Some(k) =
            (0..world.plan.keys.len() as u64).find(|&k| world.key_id(k).call_key() == w.call_key)
        else {
            world.violate(
                "INV-8",
                format!(
                    "a TTL row was written for an unknown call key {}",
                    w.call_key
                ),
            );
            continue;
        };
        let ttl = i64::try_from(world.plan.keys[k as usize].ttl_ms).unwrap_or(i64::MAX);
        let stored = stored_under(world, &w.row.storage_key);
        let mut shadow = world.shadow();
        if world.plant == Some(Plant::TtlExpiryBackwards) {
            // The replaced row's expiry, as the judge remembers it.
            if let Some(old) = w
                .compare
                .as_ref()
                .and_then(|c| shadow.ttl.rows.expiry(&w.call_key, c))
            {
                w.row.expiration = old.saturating_sub(ttl);
            }
        }
        let safe = shadow.ttl.safe_keys.contains(&k);
        // The write, for `cache-sim diff` (inert unless a subscriber is
        // installed): a fault that only changes what is persisted shows
        // there before any lookup differs.
        let storage = w.row.storage_key.trim_start_matches("sha256:");
        tracing::debug!(
            target: "sim::oracle::ttl_write",
            ms = world.now(),
            key = k,
            storage = &storage[..storage.len().min(12)],
            expiration = w.row.expiration,
            replaced = u64::from(w.compare.is_some()),
        );
        let label = format!("k{k}");
        let rows = shadow.ttl.rows.written(RowWrite {
            call_key: &w.call_key,
            label: &label,
            storage_key: &w.row.storage_key,
            expiration: w.row.expiration,
            compare: w.compare.as_deref(),
            ttl_ms: ttl,
            high_water: high,
        });
        drop(shadow);
        world.count(if w.compare.is_some() {
            "ttl-row-replaced"
        } else {
            "ttl-row-written"
        });
        if let Some((entry, false)) = stored {
            world.violate(
                "INV-8",
                format!(
                    "T-3: a TTL row for k{k} names {}, stored as {entry}, whose result was not safe to persist",
                    w.row.storage_key
                ),
            );
        } else if !safe {
            world.violate(
                "INV-8",
                format!("T-3: a TTL row for k{k} was written, but no result of k{k} was safe to persist"),
            );
        } else if let Err(v) = rows {
            world.violate("INV-8", format!("{}: {}", v.rule, v.detail));
        }
    }
}
