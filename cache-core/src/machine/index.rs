//! The indexes and the one routine that adds and removes entries from them.
//!
//! C-9 asks for exactly one unindexing routine, whichever path removes an
//! entry; C-13 asks that a removal only ever removes the entry itself, never
//! whatever newer entry now sits at the same key. Both live here.

use std::collections::BTreeMap;

use super::entry::Slot;
use super::types::EntryId;

/// Every index of one cache instance. Ordered maps: iteration order is part of
/// observable output (reports, metrics), so it must not depend on a hasher seed.
#[derive(Default)]
pub struct Indexes {
    /// Completed calls by storage key and by result call key (lists: C-15).
    pub by_storage: BTreeMap<String, Vec<EntryId>>,
    /// Completed calls by content key.
    pub by_content: BTreeMap<String, Vec<EntryId>>,
    /// In-flight calls by (storage key, concurrency key).
    pub ongoing: BTreeMap<(String, String), EntryId>,
    /// Arbitrary entries in flight.
    pub arbitrary_ongoing: BTreeMap<String, EntryId>,
    /// Arbitrary entries completed.
    pub arbitrary_completed: BTreeMap<String, EntryId>,
}

impl Indexes {
    /// Puts `entry` under `slot`. The caller records the slot on the entry.
    pub fn insert(&mut self, slot: &Slot, entry: EntryId) {
        match slot {
            Slot::Storage(k) => push_unique(self.by_storage.entry(k.clone()).or_default(), entry),
            Slot::Content(k) => push_unique(self.by_content.entry(k.clone()).or_default(), entry),
            Slot::Ongoing(k, c) => {
                self.ongoing.insert((k.clone(), c.clone()), entry);
            }
            Slot::ArbitraryOngoing(k) => {
                self.arbitrary_ongoing.insert(k.clone(), entry);
            }
            Slot::ArbitraryCompleted(k) => {
                self.arbitrary_completed.insert(k.clone(), entry);
            }
        }
    }

    /// Removes `entry` from `slot`, and only `entry` (C-13).
    pub fn remove(&mut self, slot: &Slot, entry: EntryId) {
        match slot {
            Slot::Storage(k) => remove_from_list(&mut self.by_storage, k, entry),
            Slot::Content(k) => remove_from_list(&mut self.by_content, k, entry),
            Slot::Ongoing(k, c) => {
                let key = (k.clone(), c.clone());
                if self.ongoing.get(&key) == Some(&entry) {
                    self.ongoing.remove(&key);
                }
            }
            Slot::ArbitraryOngoing(k) => remove_if_same(&mut self.arbitrary_ongoing, k, entry),
            Slot::ArbitraryCompleted(k) => remove_if_same(&mut self.arbitrary_completed, k, entry),
        }
    }

    /// Removes whatever entry sits first under `slot`'s key, without asking
    /// which: only the `key-only-delete` switch of the bug zoo calls this.
    pub fn remove_first(&mut self, slot: &Slot) {
        let first = match slot {
            Slot::Storage(k) => self.storage(k),
            Slot::Content(k) => self.content(k),
            Slot::Ongoing(k, c) => self.ongoing.get(&(k.clone(), c.clone())).copied(),
            Slot::ArbitraryOngoing(k) => self.arbitrary_ongoing.get(k).copied(),
            Slot::ArbitraryCompleted(k) => self.arbitrary_completed.get(k).copied(),
        };
        if let Some(first) = first {
            self.remove(slot, first);
        }
    }

    /// The first completed entry under a storage key.
    pub fn storage(&self, key: &str) -> Option<EntryId> {
        self.by_storage.get(key).and_then(|l| l.first().copied())
    }

    /// The first completed entry under a content key.
    pub fn content(&self, key: &str) -> Option<EntryId> {
        self.by_content.get(key).and_then(|l| l.first().copied())
    }

    /// Sizes of the five buckets of C-15.
    pub fn buckets(&self) -> Buckets {
        Buckets {
            ongoing_calls: self.ongoing.len(),
            completed_calls: self.by_storage.values().map(Vec::len).sum(),
            completed_calls_by_content: self.by_content.values().map(Vec::len).sum(),
            ongoing_arbitrary: self.arbitrary_ongoing.len(),
            completed_arbitrary: self.arbitrary_completed.len(),
        }
    }
}

/// The C-15 buckets; `entries()` is their sum. The figure a leak shows up in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    /// In-flight calls registered for deduplication.
    pub ongoing_calls: usize,
    /// Completed calls, counted once per storage-key list membership.
    pub completed_calls: usize,
    /// Completed calls, counted once per content-key list membership.
    pub completed_calls_by_content: usize,
    /// Arbitrary entries in flight.
    pub ongoing_arbitrary: usize,
    /// Arbitrary entries completed.
    pub completed_arbitrary: usize,
}

impl Buckets {
    /// `entries()`: the sum of every bucket (C-15).
    pub fn total(&self) -> usize {
        self.ongoing_calls
            + self.completed_calls
            + self.completed_calls_by_content
            + self.ongoing_arbitrary
            + self.completed_arbitrary
    }
}

fn push_unique(list: &mut Vec<EntryId>, entry: EntryId) {
    if !list.contains(&entry) {
        list.push(entry);
    }
}

fn remove_from_list(map: &mut BTreeMap<String, Vec<EntryId>>, key: &str, entry: EntryId) {
    if let Some(list) = map.get_mut(key) {
        list.retain(|e| *e != entry);
        if list.is_empty() {
            map.remove(key);
        }
    }
}

fn remove_if_same(map: &mut BTreeMap<String, EntryId>, key: &str, entry: EntryId) {
    if map.get(key) == Some(&entry) {
        map.remove(key);
    }
}
