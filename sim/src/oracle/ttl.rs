//! INV-8: a TTL'd result reused by another session must have been safe to
//! persist and not expired when the call arrived (T-3, T-7).

use cache_core::machine::SessionId;

use super::Served;
use crate::world::{Val, World};

/// Judges one served, non-detached storage-path value.
pub(super) fn served(world: &World, s: &Served<'_>, v: &Val) {
    let key = s.key;
    let ttl = i64::try_from(world.plan.keys[key as usize].ttl_ms).unwrap_or(i64::MAX);
    if ttl == 0 || v.session == Some(s.session) || v.made_ms >= s.t0_ms || v.key != key {
        return;
    }
    let session: SessionId = s.session;
    if !v.safe {
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
                "k{key}: result o{} reused by {session} after its TTL expired",
                v.out
            ),
        );
    }
}
