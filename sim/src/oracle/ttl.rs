//! INV-8: no TTL'd result is served after its TTL expired — to another
//! session or to the session that made it (T-7) — and none is reused by
//! another session unless it was safe to persist (T-3). Judged by
//! [`cache_core::checks::ttl_served`], the check both drivers run.

use cache_core::checks::ttl_served::{self, ServedCall, TtlResult};

use super::Served;
use crate::world::{Val, World};

/// T-3: a call result is served with the safety its resolver gave it,
/// whichever path served it.
pub(super) fn safety(world: &World, s: &Served<'_>, v: &Val) {
    if let Err(e) = ttl_served::check_safety(s.safe_to_persist, v.safe) {
        world.violate(
            "INV-8",
            format!("k{}: result o{}: {} ({})", s.key, v.out, e.detail, e.rule),
        );
    }
}

/// Judges one served, non-detached storage-path value.
pub(super) fn served(world: &World, s: &Served<'_>, v: &Val) {
    let key = s.key;
    // One produced for another key reached this one through its result
    // call key (C-6): its TTL record is that key's, judged when served there.
    if v.key != key {
        return;
    }
    let ttl = i64::try_from(world.plan.keys[key as usize].ttl_ms).unwrap_or(i64::MAX);
    let call = ServedCall {
        ttl: ttl > 0,
        session: Some(s.session),
        arrived_at: s.t0_ms,
        clock: s.t0_clock,
    };
    // Every call of a key has the key's TTL, so a result of this key is
    // TTL'd exactly when the call is. Saturating: the cache's expiry
    // saturates too (T-2), so a TTL near the type's limit never expires on
    // either side.
    let stored = (ttl > 0).then(|| TtlResult {
        session: v.session,
        safe: v.safe,
        valid_until: v.made_clock.saturating_add(ttl),
        made_at: v.made_ms,
    });
    if let Err(e) = ttl_served::judge(call, stored) {
        world.violate(
            "INV-8",
            format!("k{key}: result o{}: {} ({})", v.out, e.detail, e.rule),
        );
    }
    if let Some(t) = stored {
        // What a later call of the key in this session must not get back
        // once the clock is past it (counted as `ttl-expired-in-session`).
        let mut sh = world.shadow();
        if let Some(sess) = sh.sessions.get_mut(&(s.inc, s.session)) {
            sess.ttl_served_until.insert(key, t.valid_until);
        }
    }
}
