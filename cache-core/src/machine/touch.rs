//! What each event changed, for a harness that checks only that
//! ([`CallCache::take_touched`], [`CallCache::check_touched`]).
//!
//! The arena of entries, the arena of refs, the indexes and the sessions
//! each keep a [`TouchLog`] of the ids they change, written at the few doors
//! every change goes through (insert, mutable borrow, removal), so a change
//! cannot escape the log by taking another path through the machine. No log
//! is kept unless a harness asks: then each door costs one untaken branch.

use super::types::{EntryId, RefId, SessionId};
use super::CallCache;

/// The ids one structure changed since the log was last taken; off (`None`)
/// by default.
#[derive(Debug)]
pub(crate) struct TouchLog<K>(Option<Vec<K>>);

impl<K> Default for TouchLog<K> {
    fn default() -> Self {
        TouchLog(None)
    }
}

impl<K> TouchLog<K> {
    /// Starts logging.
    pub(crate) fn keep(&mut self) {
        self.0.get_or_insert_with(Vec::new);
    }

    /// Logs `id`, if logging.
    #[inline]
    pub(crate) fn note(&mut self, id: K) {
        if let Some(log) = &mut self.0 {
            log.push(id);
        }
    }

    /// Moves the ids logged since the last call into `into` (cleared
    /// first), in the order they changed, repeats included. The two buffers
    /// swap, so neither is allocated again from one step to the next.
    pub(crate) fn take(&mut self, into: &mut Vec<K>) {
        into.clear();
        if let Some(log) = &mut self.0 {
            std::mem::swap(log, into);
        }
    }
}

/// What changed in a [`CallCache`] since the last [`CallCache::take_touched`]:
/// the entries, refs and sessions written, each sorted and without repeats.
/// [`CallCache::check_touched`] checks exactly these. The buffers are reused
/// from one step to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Entries created, changed, removed, or added to or removed from an index.
    pub entries: Vec<EntryId>,
    /// Refs created, changed (owner) or removed.
    pub refs: Vec<RefId>,
    /// Sessions opened, changed (refs, waits, retry flags) or closed.
    pub sessions: Vec<SessionId>,
    keys: Vec<super::arena::Key>,
}

impl Touched {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.refs.is_empty() && self.sessions.is_empty()
    }
}

impl<V: Clone> CallCache<V> {
    /// Starts keeping a log of what every event changes, for a harness that
    /// checks each step incrementally ([`CallCache::take_touched`],
    /// [`CallCache::check_touched`]). Off by default: a cache that is not
    /// asked keeps no log (one untaken branch per change).
    pub fn track_touched(&mut self) {
        self.entries.log.keep();
        self.refs.log.keep();
        self.idx.log.keep();
        self.sessions.log.keep();
    }

    /// Moves what changed since the last call (or since
    /// [`CallCache::track_touched`]) into `into`, sorted and deduplicated.
    /// Empty unless tracking is on.
    pub fn take_touched(&mut self, into: &mut Touched) {
        self.entries.log.take(&mut into.keys);
        self.idx.log.take(&mut into.entries);
        into.entries.extend(into.keys.iter().map(|k| EntryId(*k)));
        into.entries.sort_unstable();
        into.entries.dedup();
        self.refs.log.take(&mut into.keys);
        into.refs.clear();
        into.refs.extend(into.keys.iter().map(|k| RefId(*k)));
        into.refs.sort_unstable();
        into.refs.dedup();
        self.sessions.log.take(&mut into.sessions);
        into.sessions.sort_unstable();
        into.sessions.dedup();
    }
}
