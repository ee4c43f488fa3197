//! What a caller gets back.

use std::fmt;
use std::sync::Arc;

use super::{run_hooks, Shared};
use crate::error::CallError;
use crate::id::CallId;
use crate::machine::{EntryId, Handle, Served};

/// A successful call's result.
///
/// A result owned by a session is released when the session closes (S-1).
/// Any other result (no session, or a detached C-2 result) holds its ref
/// itself: dropping it or calling [`CallResult::release`] gives it back.
pub struct CallResult<V: Clone> {
    value: Option<V>,
    id: Option<CallId>,
    hit: bool,
    content_hit: bool,
    detached: bool,
    entry: EntryId,
    held: Option<Held<V>>,
}

struct Held<V: Clone> {
    shared: Arc<Shared<V>>,
    handle: Option<Handle>,
}

impl<V: Clone> Held<V> {
    fn release(&mut self) -> Result<(), CallError> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        let releases = self.shared.lock().machine.release(handle)?;
        run_hooks(&self.shared, releases)
    }
}

impl<V: Clone> Drop for Held<V> {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(target: "cache_core::release", "release on drop: {e}");
        }
    }
}

impl<V: Clone> CallResult<V> {
    pub(crate) fn new(shared: Arc<Shared<V>>, served: Served<V>) -> Self {
        let entry = served.handle.entry();
        let held = (!served.session_owned).then(|| Held {
            shared,
            handle: Some(served.handle),
        });
        Self {
            value: served.value,
            id: served.id,
            hit: served.hit,
            content_hit: served.content_hit,
            detached: served.detached,
            entry,
            held,
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
    /// Whether this result holds its own ref (not owned by a session).
    pub fn holds_ref(&self) -> bool {
        self.held.as_ref().is_some_and(|h| h.handle.is_some())
    }

    /// Gives the ref back now, returning a release hook's error (C-12).
    /// Session-owned results are released by the session; this is a no-op.
    pub fn release(mut self) -> Result<(), CallError> {
        match self.held.as_mut() {
            Some(held) => held.release(),
            None => Ok(()),
        }
    }

    /// Takes the ref out, to hand it to an outer result with
    /// `Resolved::with_nested` (C-11). The handle must be handed over or
    /// released; `None` for session-owned results.
    pub fn into_nested(mut self) -> Option<Handle> {
        self.held.as_mut().and_then(|h| h.handle.take())
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
