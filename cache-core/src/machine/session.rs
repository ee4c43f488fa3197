//! Sessions inside the state machine (S-1 … S-7): refs owned per session,
//! the forced-retry flags of S-4, and the telemetry-once set of S-5.

use super::types::*;
use super::{CallCache, SessionState};
use crate::error::CallError;

/// What closing a session did (S-1, S-1a, S-7).
#[derive(Debug)]
pub struct SessionClose {
    /// The session that closed.
    pub session: SessionId,
    /// Refs the session released.
    pub released: usize,
    /// `entries()` before the releases (S-7).
    pub entries_before: usize,
    /// `entries()` after the releases (S-7).
    pub entries_after: usize,
    /// Calls still in flight with a waiter from this session: each releases
    /// what it gets when it finishes (S-3), with no further step.
    pub in_flight: usize,
    /// Hooks to run outside the lock.
    pub releases: Vec<PendingRelease>,
}

/// From how many refs a close prefetches ahead: about where its records
/// (some 500 bytes a handle) outgrow a 2 MiB L2 cache (issue 6: at 1k
/// handles the hints cost more than they save).
const PREFETCH_MIN_REFS: usize = 4096;

impl<V: Clone> CallCache<V> {
    /// Opens a session (S-6 counts it).
    pub fn open_session(&mut self) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        self.sessions.insert(id, SessionState::default());
        id
    }

    /// Whether the session is open.
    pub fn session_is_open(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// S-6: open sessions.
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Refs a session holds now.
    pub fn session_refs(&self, session: SessionId) -> usize {
        self.sessions.get(&session).map_or(0, |s| s.refs.len())
    }

    /// S-1: releases every ref the session holds, exactly once, and marks it
    /// closed. Calls still in flight for it release on completion (S-3).
    pub fn close_session(&mut self, session: SessionId) -> Result<SessionClose, CallError> {
        let Some(state) = self.sessions.remove(&session) else {
            return Err(CallError::SessionClosed);
        };
        let entries_before = self.entries();
        let released = state.refs.len();
        // Sized up front: growing a vector of 100k releases would free
        // ever-larger buffers mid-close, and each large free makes the
        // allocator consolidate every small chunk freed so far.
        let mut releases = Vec::with_capacity(released);
        // Index removals are batched: applied together, in bucket order.
        self.idx.start_batch(released);
        // In a vector, so each release can prefetch those a few places on;
        // a small close finds what it reads in the caches, and the hints
        // would only cost it instructions.
        let refs: Vec<RefId> = state.refs.into_iter().collect();
        let prefetch = refs.len() >= PREFETCH_MIN_REFS;
        for (i, &r) in refs.iter().enumerate() {
            if prefetch {
                self.prefetch_release(&refs[i..]);
            }
            self.release_ref(r, &mut releases);
        }
        self.idx.finish_batch();
        let in_flight = if state.waiting == 0 {
            0
        } else {
            self.entries
                .iter()
                .filter(|(_, e)| e.waiters.iter().any(|w| w.session == Some(session)))
                .count()
        };
        Ok(SessionClose {
            session,
            released,
            entries_before,
            entries_after: self.entries(),
            in_flight,
            releases,
        })
    }
}
