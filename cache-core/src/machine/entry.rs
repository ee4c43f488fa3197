//! One entry's state: what it is, where it is indexed, who waits, who holds it.

use std::ops::Deref;

use super::key::IndexKey;
use super::types::{ConcurrencyKey, EntryId, RefId, ReleaseHook, RunMode, SessionId, WaiterId};
use crate::id::CallId;
use crate::ttl::PreparedWrite;

/// Where an entry is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    /// The resolver is running and someone is waiting.
    InFlight,
    /// Every waiter left while the resolver still runs (C-5, C-5a, K-5).
    Abandoned,
    /// The result is held (indexed, or detached).
    Completed,
}

/// One caller waiting for an in-flight entry.
#[derive(Clone, Debug)]
pub struct Waiter {
    pub id: WaiterId,
    pub session: Option<SessionId>,
    /// The in-flight entry (same instance) whose resolver is this caller (C-4b).
    pub from: Option<EntryId>,
}

/// One index slot an entry occupies; the single unindexing routine walks these (C-9).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Slot {
    /// Completed, under a storage key or a result call key.
    Storage(IndexKey),
    /// Completed, under a content key.
    Content(IndexKey),
    /// In flight, under (storage key, concurrency key).
    Ongoing(IndexKey, ConcurrencyKey),
    /// Arbitrary entry in flight.
    ArbitraryOngoing(String),
    /// Arbitrary entry completed.
    ArbitraryCompleted(String),
}

/// The index slots of one entry: almost always exactly one (its storage
/// key, or its in-flight registration), kept inline so that indexing an
/// entry allocates nothing and removing it frees nothing (a miss indexes
/// one entry, a close unindexes thousands).
#[derive(Clone, Debug)]
pub enum Slots {
    /// One slot.
    One(Slot),
    /// Any other number, in insertion order.
    Many(Vec<Slot>),
}

impl Default for Slots {
    fn default() -> Self {
        Slots::Many(Vec::new())
    }
}

impl Deref for Slots {
    type Target = [Slot];
    fn deref(&self) -> &[Slot] {
        match self {
            Slots::One(slot) => std::slice::from_ref(slot),
            Slots::Many(v) => v,
        }
    }
}

impl<'a> IntoIterator for &'a Slots {
    type Item = &'a Slot;
    type IntoIter = std::slice::Iter<'a, Slot>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Slots {
    /// Appends `slot`.
    pub fn push(&mut self, slot: Slot) {
        match self {
            Slots::Many(v) if v.is_empty() => *self = Slots::One(slot),
            Slots::Many(v) => v.push(slot),
            Slots::One(_) => {
                let Slots::One(first) = std::mem::take(self) else {
                    unreachable!("matched One above")
                };
                *self = Slots::Many(vec![first, slot]);
            }
        }
    }
}

/// An entry in the arena.
// `repr(C)`, hot fields first: a hit and its release read the refcount,
// phase, waiters, value, result ID and whether the result is safe to
// persist, and an entry is 7 cache lines long; in declaration order these
// share one or two lines, so a hit misses in the cache fewer times.
#[repr(C)]
pub struct Entry<V> {
    pub refcount: u32,
    pub mode: RunMode,
    pub phase: Phase,
    /// T-3: set on completion. Here, in the padding after `phase`, because
    /// every hit reports it: at its old place, after the hook, it cost a
    /// hit one more cache line.
    pub safe_to_persist: bool,
    pub waiters: Vec<Waiter>,
    pub value: Option<V>,
    pub result_id: Option<CallId>,
    /// Every index slot this entry is in.
    pub slots: Slots,
    /// The requested ID (None for arbitrary entries).
    pub requested: Option<CallId>,
    /// The call key (or the arbitrary key).
    pub call_key: IndexKey,
    /// The storage key the entry is (or will be) stored under.
    pub storage_key: IndexKey,
    pub concurrency_key: ConcurrencyKey,
    /// In-flight entries this entry's resolver waits on, once per waiting call (C-4b).
    pub waits_on: Vec<EntryId>,
    /// The session that started the call (for S-4 flag bookkeeping).
    pub starter: Option<SessionId>,
    /// T-3: the write prepared by the first caller.
    pub ttl_write: Option<PreparedWrite>,
    /// T-2: the storage key is shared across sessions through a live TTL row.
    pub shared_storage: bool,
    // Filled on completion (with `value`, `result_id` and
    // `safe_to_persist` above).
    pub hook: Option<ReleaseHook>,
    pub result_call_key: Option<IndexKey>,
    pub content_key: Option<IndexKey>,
    /// Refs this entry owns (C-11).
    pub owned_refs: Vec<RefId>,
}

impl<V> Entry<V> {
    /// A fresh in-flight entry.
    pub fn in_flight(
        mode: RunMode,
        requested: Option<CallId>,
        call_key: IndexKey,
        storage_key: IndexKey,
    ) -> Self {
        Self {
            mode,
            phase: Phase::InFlight,
            requested,
            call_key,
            storage_key,
            concurrency_key: ConcurrencyKey::default(),
            waiters: Vec::new(),
            refcount: 0,
            slots: Slots::default(),
            waits_on: Vec::new(),
            starter: None,
            ttl_write: None,
            shared_storage: false,
            result_id: None,
            value: None,
            hook: None,
            safe_to_persist: false,
            result_call_key: None,
            content_key: None,
            owned_refs: Vec::new(),
        }
    }

    /// Prefetches the counts of the call IDs this entry holds, which
    /// removing it will update (see `CallCache::prefetch_release`).
    pub fn prefetch_ids(&self) {
        for id in [&self.requested, &self.result_id].into_iter().flatten() {
            id.prefetch();
        }
    }

    /// Short label for logs and reports.
    pub fn label(&self) -> String {
        format!("{} {}", self.mode.kind(), short(&self.storage_key.text()))
    }
}

/// The first 12 characters of a digest's hex (or the whole key when shorter),
/// enough to tell keys apart in a trace.
pub fn short(key: &str) -> &str {
    let hex = key.strip_prefix("sha256:").unwrap_or(key);
    let end = hex.char_indices().nth(12).map_or(hex.len(), |(i, _)| i);
    &hex[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(key: &str) -> Slot {
        Slot::Storage(IndexKey::from_text(key))
    }

    /// The common single slot is held inline (no allocation to index or
    /// unindex an entry); more keep their insertion order.
    #[test]
    fn one_slot_is_inline_and_more_keep_their_order() {
        let mut slots = Slots::default();
        assert!(slots.is_empty());
        slots.push(storage("a"));
        assert!(matches!(slots, Slots::One(_)), "{slots:?}");
        slots.push(storage("b"));
        slots.push(storage("c"));
        assert!(matches!(slots, Slots::Many(_)), "{slots:?}");
        let keys: Vec<String> = slots
            .iter()
            .map(|s| match s {
                Slot::Storage(k) => k.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }
}
