//! INV-9: after `close()` a session holds no refs, and a call that
//! finishes after its session closed leaks nothing (S-1, S-3).

use cache_core::checks::answers::check_acting_sessions;
use cache_core::facade::Cache;
use cache_core::machine::{Owner, SessionId};

use crate::world::{Plant, Val, World};

/// A session closed; `cache` is its call cache.
pub(super) fn closed(world: &World, cache: &Cache<Val>, sid: SessionId) {
    let refs_after = cache.inspect(|m| m.refs_owned_by(Owner::Session(sid)));
    if refs_after != 0 || world.plant == Some(Plant::RefsAfterClose) {
        world.violate(
            "INV-9",
            format!("session {sid} holds {refs_after} refs after close"),
        );
    }
}

/// A resolver acts for a client (C-5): every session the cache listed is
/// open. Counted: a run that acts for a client, and one that does after
/// the session that started it closed (the case C-5 is about).
pub(super) fn acts_for(world: &World, inc: u64, listed: &[SessionId], starter: Option<SessionId>) {
    let (verdict, starter_closed) = {
        let sh = world.shadow();
        let open = |s: SessionId| sh.session_open(inc, s);
        let verdict = check_acting_sessions(listed, open);
        (verdict, starter.is_some_and(|s| !open(s)))
    };
    if let Err(v) = verdict {
        world.violate("INV-7", format!("{} ({})", v.detail, v.rule));
    }
    if !listed.is_empty() {
        world.count("resolver-acts-for-a-session");
        if starter_closed {
            world.count("acts-for-another-after-its-starter-closed");
        }
    }
}

/// A session-owned result was served. One served while the session was
/// open may reach us after it closed (the close released it); what S-3
/// forbids is a ref that the closed session still owns.
pub(super) fn served(world: &World, cache: &Cache<Val>, sid: SessionId, open: bool) {
    if open {
        return;
    }
    let kept = cache.inspect(|m| m.refs_owned_by(Owner::Session(sid)));
    if kept != 0 {
        world.violate(
            "INV-9",
            format!("closed session {sid} got a result and still owns {kept} refs"),
        );
    }
}
