//! What a caller gets back.

use std::fmt;
use std::sync::Arc;

use super::{run_hooks, Shared};
use crate::error::CallError;
use crate::id::CallId;
use crate::machine::{EntryId, Handle, Served};

/// A successful call's result.
///
/// Who gives its ref back:
///
/// - a result owned by a session ([`CallResult::is_session_owned`]) is
///   released when the session closes (S-1); dropping the result leaves the
///   ref with the session;
/// - any other result (no session, or a detached C-2 result) holds its ref
///   itself: dropping it gives the ref back.
///
/// Either kind can be given back early with [`CallResult::release`]: a
/// session-owned ref then leaves the session's list at once (C-11a), so the
/// session's close no longer releases it, and an entry nobody else holds
/// goes (C-12) without waiting for the close.
#[must_use = "a result holds a ref: keep it while the value is used"]
pub struct CallResult<V: Clone> {
    value: Option<V>,
    id: Option<CallId>,
    hit: bool,
    content_hit: bool,
    detached: bool,
    safe_to_persist: bool,
    entry: EntryId,
    held: Held<V>,
}

struct Held<V: Clone> {
    shared: Arc<Shared<V>>,
    /// `None` once released or handed over.
    handle: Option<Handle>,
    /// The session owns the ref: a drop leaves it to the session (S-1).
    session_owned: bool,
}

impl<V: Clone> Held<V> {
    fn release(&mut self) -> Result<(), CallError> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        let releases = {
            let mut state = self.shared.lock();
            // The session may have closed since, releasing this ref itself
            // (S-1): nothing is left to give back. Refs are
            // generation-checked, so this never releases someone else's.
            if self.session_owned && state.machine.owner(handle.ref_id()).is_none() {
                return Ok(());
            }
            state.machine.release(handle)?
        };
        run_hooks(&self.shared, releases)
    }
}

impl<V: Clone> Drop for Held<V> {
    fn drop(&mut self) {
        if self.session_owned {
            return;
        }
        if let Err(e) = self.release() {
            tracing::warn!(target: "cache_core::release", "release on drop: {e}");
        }
    }
}

impl<V: Clone> CallResult<V> {
    pub(crate) fn new(shared: Arc<Shared<V>>, served: Served<V>) -> Self {
        let entry = served.handle.entry();
        Self {
            value: served.value,
            id: served.id,
            hit: served.hit,
            content_hit: served.content_hit,
            detached: served.detached,
            safe_to_persist: served.safe_to_persist,
            entry,
            held: Held {
                shared,
                handle: Some(served.handle),
                session_owned: served.session_owned,
            },
        }
    }

    /// The value; `None` is a successful "no value" result (C-10).
    pub fn value(&self) -> Option<&V> {
        self.value.as_ref()
    }
    /// The ID reported to the caller (C-8: the requested one on a content hit).
    pub fn id(&self) -> Option<&CallId> {
        self.id.as_ref()
    }
    /// Whether the caller did not cause this result to be computed.
    pub fn hit(&self) -> bool {
        self.hit
    }
    /// Served through the content index (C-8).
    pub fn content_hit(&self) -> bool {
        self.content_hit
    }
    /// A C-2 result: not in the cache; its hook runs when it is released.
    pub fn is_detached(&self) -> bool {
        self.detached
    }
    /// The entry holding the result.
    pub fn entry(&self) -> EntryId {
        self.entry
    }
    /// T-3: whether the resolver marked this result safe to persist.
    pub fn safe_to_persist(&self) -> bool {
        self.safe_to_persist
    }
    /// Whether this result holds its own ref (not owned by a session):
    /// dropping it gives the ref back.
    pub fn holds_ref(&self) -> bool {
        !self.held.session_owned && self.held.handle.is_some()
    }
    /// Whether the ref belongs to the caller's session (S-1): the session's
    /// close releases it, unless [`CallResult::release`] did first.
    pub fn is_session_owned(&self) -> bool {
        self.held.session_owned
    }

    /// Gives the ref back now, whoever owns it, returning a release hook's
    /// error (C-12). A session-owned ref leaves the session's list (C-11a),
    /// so the session's close will not release it again; if the session has
    /// already closed, its close released the ref and this does nothing.
    pub fn release(mut self) -> Result<(), CallError> {
        self.held.release()
    }

    /// Takes the ref out, to hand it to an outer result with
    /// `Resolved::with_nested` (C-11). The handle must be handed over or
    /// released.
    ///
    /// `None` for a session-owned result: its session could close (and
    /// release the ref) before the outer result completes, which would turn
    /// that result into an error. Make nested calls with
    /// `ResolverCtx::nested()`, whose results are the resolver's own.
    pub fn into_nested(mut self) -> Option<Handle> {
        if self.held.session_owned {
            return None;
        }
        self.held.handle.take()
    }
}

impl<V: Clone + fmt::Debug> fmt::Debug for CallResult<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallResult")
            .field("value", &self.value)
            .field("hit", &self.hit)
            .field("content_hit", &self.content_hit)
            .field("detached", &self.detached)
            .field("entry", &self.entry)
            .finish()
    }
}
