//! INV-8: no TTL'd result is served after its TTL expired — to another
//! session or to the session that made it (T-7) — and none is reused by
//! another session unless it was safe to persist (T-3).

use super::Served;
use crate::world::{Val, World};

/// Judges one served, non-detached storage-path value.
pub(super) fn served(world: &World, s: &Served<'_>, v: &Val) {
    let key = s.key;
    let ttl = i64::try_from(world.plan.keys[key as usize].ttl_ms).unwrap_or(i64::MAX);
    // A result made after the call arrived is fresh; one produced for
    // another key reached this one through its result call key (C-6).
    if ttl == 0 || v.made_ms >= s.t0_ms || v.key != key {
        return;
    }
    let session = s.session;
    let own = v.session == Some(session);
    if !own && !v.safe {
        world.violate(
            "INV-8",
            format!(
                "k{key}: unsafe result o{} of session {:?} reused by {session}",
                v.out, v.session
            ),
        );
    } else if s.t0_clock > v.made_clock.saturating_add(ttl) {
        // Saturating: the cache's expiry saturates too (T-2), so a TTL near
        // the type's limit never expires on either side.
        world.violate(
            "INV-8",
            format!(
                "k{key}: result o{} reused by {session}{} after its TTL expired",
                v.out,
                if own { " (its own session)" } else { "" }
            ),
        );
    }
}
