//! Sessions (S-1 … S-7): one client's view of the shared cache.

use std::future::Future;

use super::{run_hook, Cache, CallKey, CallResult, Ctx, ResolverCtx};
use crate::error::CallError;
use crate::machine::{Resolved, SessionId};

/// One client's session. Every non-detached result it returns is owned by
/// it and released, exactly once, when it closes (S-1). Dropping an open
/// session closes it (S-6: a dropped connection closes its session).
pub struct Session<V: Clone + Send + 'static> {
    cache: Cache<V>,
    id: SessionId,
}

/// What closing a session did (S-7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseSummary {
    /// The session.
    pub session: SessionId,
    /// Refs released.
    pub released: usize,
    /// `entries()` before the releases.
    pub entries_before: usize,
    /// `entries()` after the releases.
    pub entries_after: usize,
    /// Calls still in flight for the session; each releases on completion (S-3).
    pub in_flight: usize,
    /// Release hooks that failed (counted in metrics and logged).
    pub hook_errors: usize,
}

impl<V: Clone + Send + 'static> Session<V> {
    pub(crate) fn new(cache: Cache<V>, id: SessionId) -> Self {
        Self { cache, id }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// A context for calls in this session, with a fresh cancellation token.
    pub fn ctx(&self) -> Ctx {
        Ctx {
            session: Some(self.id),
            ..Ctx::default()
        }
    }

    /// `get_or_init_call` in this session.
    pub async fn call<F, Fut>(&self, key: CallKey, resolver: F) -> Result<CallResult<V>, CallError>
    where
        F: FnOnce(ResolverCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resolved<V>, CallError>> + Send + 'static,
    {
        self.cache
            .get_or_init_call(&self.ctx(), key, resolver)
            .await
    }

    /// `get_or_init_arbitrary` in this session.
    pub async fn arbitrary<F, Fut>(&self, key: &str, init: F) -> Result<CallResult<V>, CallError>
    where
        F: FnOnce(ResolverCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resolved<V>, CallError>> + Send + 'static,
    {
        self.cache
            .get_or_init_arbitrary(&self.ctx(), key, init)
            .await
    }

    /// Refs the session holds now.
    pub fn refs(&self) -> usize {
        self.cache.inspect(|m| m.session_refs(self.id))
    }

    /// S-1: releases every recorded ref exactly once (hooks outside the
    /// lock) and closes the session; S-7: logs one line with the entry count
    /// before and after. A second close is a clear error.
    pub fn close(&self) -> Result<CloseSummary, CallError> {
        let shared = self.cache.shared();
        let closed = shared.lock().machine.close_session(self.id)?;
        let mut hook_errors = 0;
        for release in closed.releases {
            if run_hook(shared, release).is_err() {
                hook_errors += 1;
            }
        }
        tracing::info!(
            target: "cache_core::session",
            "session {} closed: entries {} -> {}, {} refs released, {} calls in flight (S-7)",
            self.id,
            closed.entries_before,
            closed.entries_after,
            closed.released,
            closed.in_flight,
        );
        Ok(CloseSummary {
            session: self.id,
            released: closed.released,
            entries_before: closed.entries_before,
            entries_after: closed.entries_after,
            in_flight: closed.in_flight,
            hook_errors,
        })
    }

    /// Whether the session is still open.
    pub fn is_open(&self) -> bool {
        self.cache.inspect(|m| m.session_is_open(self.id))
    }
}

impl<V: Clone + Send + 'static> Drop for Session<V> {
    fn drop(&mut self) {
        if self.is_open() {
            let _ = self.close();
        }
    }
}
