//! Sessions inside the state machine (S-1 … S-7): refs owned per session,
//! the forced-retry flags of S-4, and the telemetry-once set of S-5.

use std::hash::BuildHasherDefault;

use rustc_hash::FxHasher;

use super::types::*;
use super::{CallCache, SessionState};
use crate::error::CallError;

/// The refs a session owns (S-1), in the order it took them. A close walks
/// the plain vector: an ordered tree would cost a node walk and a free per
/// handle. A ref given back before the close (a transfer, C-11a,
/// or a release) leaves in O(1) through its position; the last ref moves
/// into its place, so the order stays a function of the operations alone.
#[derive(Default)]
pub(super) struct SessionRefs {
    order: Vec<RefId>,
    /// Where each ref is in `order`. Only looked up, never walked.
    position: std::collections::HashMap<RefId, usize, BuildHasherDefault<FxHasher>>,
}

impl SessionRefs {
    /// Records `r`; a ref already held is not recorded twice.
    pub(super) fn insert(&mut self, r: RefId) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.position.entry(r) {
            slot.insert(self.order.len());
            self.order.push(r);
        }
    }

    /// Forgets `r`; whether it was held.
    pub(super) fn remove(&mut self, r: RefId) -> bool {
        let Some(pos) = self.position.remove(&r) else {
            return false;
        };
        self.order.swap_remove(pos);
        if let Some(&moved) = self.order.get(pos) {
            self.position.insert(moved, pos);
        }
        true
    }

    /// Whether `r` is held.
    pub(super) fn contains(&self, r: RefId) -> bool {
        self.position.contains_key(&r)
    }

    /// How many refs are held.
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// The refs, in order.
    pub(super) fn iter(&self) -> std::slice::Iter<'_, RefId> {
        self.order.iter()
    }

    /// Test damage: a position for a ref the vector does not hold.
    #[cfg(test)]
    pub(super) fn plant_stray_position(&mut self, r: RefId) {
        self.position.insert(r, self.order.len());
    }

    /// Whether the positions name exactly the refs in the vector, each
    /// where it is (checked with the machine's invariants, INV-3).
    pub(super) fn is_consistent(&self) -> bool {
        self.position.len() == self.order.len()
            && self
                .order
                .iter()
                .enumerate()
                .all(|(i, r)| self.position.get(r) == Some(&i))
    }
}

/// What closing a session did (S-1, S-1a, S-7).
#[must_use = "a session close carries release hooks to run"]
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
/// (some 500 bytes a handle) outgrow a 2 MiB L2 cache (at 1k handles the
/// hints cost more than they save).
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
        // Each release can prefetch those a few places on; a small close
        // finds what it reads in the caches, and the hints would only cost
        // it instructions.
        let refs = state.refs.order;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::arena::Arena;

    fn ref_ids(n: usize) -> Vec<RefId> {
        let mut arena = Arena::default();
        (0..n).map(|i| RefId(arena.insert(i))).collect()
    }

    /// Refs keep the order they were taken in; one given back is replaced
    /// by the last, every position stays right, and a ref is held once.
    #[test]
    fn session_refs_keep_order_and_positions() {
        let ids = ref_ids(5);
        let mut refs = SessionRefs::default();
        for &r in &ids {
            refs.insert(r);
        }
        refs.insert(ids[2]);
        assert_eq!(refs.len(), 5, "a ref is held once");
        assert!(refs.remove(ids[1]));
        assert!(!refs.remove(ids[1]), "gone already");
        assert_eq!(
            refs.iter().copied().collect::<Vec<_>>(),
            vec![ids[0], ids[4], ids[2], ids[3]]
        );
        assert!(refs.is_consistent());
        assert!(refs.remove(ids[3]), "the last one");
        assert!(refs.remove(ids[0]));
        assert_eq!(
            refs.iter().copied().collect::<Vec<_>>(),
            vec![ids[2], ids[4]]
        );
        assert!(refs.is_consistent());
        assert!(refs.contains(ids[4]) && !refs.contains(ids[0]));
        refs.plant_stray_position(ids[0]);
        assert!(!refs.is_consistent(), "a stray position is caught");
    }
}
