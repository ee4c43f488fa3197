//! The indexes and the one routine that adds and removes entries from them.
//!
//! C-9 asks for exactly one unindexing routine, whichever path removes an
//! entry; C-13 asks that a removal only ever removes the entry itself, never
//! whatever newer entry now sits at the same key. Both live here.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::ops::Deref;

use rustc_hash::FxHasher;

use super::entry::Slot;
use super::key::IndexKey;
use super::touch::TouchLog;
use super::types::{ConcurrencyKey, EntryId};

/// A map keyed by [`IndexKey`] with rustc's Fx hasher: fixed and unseeded,
/// so the same keys hash the same in every run and process (DESIGN:
/// "ordered maps or fixed hashers"). Never iterated for output without
/// sorting first (see `sorted`).
pub type KeyMap<V> = std::collections::HashMap<IndexKey, V, BuildHasherDefault<FxHasher>>;

/// A set of [`IndexKey`]s with the same fixed hasher as [`KeyMap`]; never
/// iterated for output.
pub type KeySet = std::collections::HashSet<IndexKey, BuildHasherDefault<FxHasher>>;

/// The entries listed under one key: almost always exactly one, kept inline
/// so indexing a result allocates nothing beyond its key. 16 bytes, so a
/// table slot (key and list) is 56: a hit's probe reads one cache line
/// more often than with an inline vector (72-byte slots), about 3 % of a
/// state-machine hit.
#[derive(Clone, Debug, Default)]
pub enum Ids {
    /// None (transiently, while a removal decides whether the key stays).
    #[default]
    Empty,
    /// One entry.
    One(EntryId),
    /// Several entries, in insertion order. Boxed: a vector inline would
    /// make every list 32 bytes for a case that is rare.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<EntryId>>),
}

impl Deref for Ids {
    type Target = [EntryId];
    fn deref(&self) -> &[EntryId] {
        match self {
            Ids::Empty => &[],
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(v) => v,
        }
    }
}

impl Ids {
    /// Appends `entry` unless it is already listed; whether it was added.
    pub fn push_unique(&mut self, entry: EntryId) -> bool {
        match self {
            Ids::Empty => *self = Ids::One(entry),
            Ids::Many(v) if v.is_empty() => *self = Ids::One(entry),
            Ids::One(id) if *id == entry => return false,
            Ids::One(id) => *self = Ids::Many(Box::new(vec![*id, entry])),
            Ids::Many(v) if v.contains(&entry) => return false,
            Ids::Many(v) => v.push(entry),
        }
        true
    }

    /// Removes every entry marked in `gone` (and only those); how many.
    fn remove_marked(&mut self, gone: &Marks) -> usize {
        match self {
            Ids::One(id) if gone.has(*id) => {
                *self = Ids::Empty;
                1
            }
            Ids::One(_) | Ids::Empty => 0,
            Ids::Many(v) => {
                let before = v.len();
                v.retain(|e| !gone.has(*e));
                before - v.len()
            }
        }
    }

    /// Removes `entry` (and only it) from the list; whether it was listed.
    fn remove(&mut self, entry: EntryId) -> bool {
        match self {
            Ids::One(id) if *id == entry => *self = Ids::Empty,
            Ids::One(_) | Ids::Empty => return false,
            Ids::Many(v) => {
                let before = v.len();
                v.retain(|e| *e != entry);
                return v.len() != before;
            }
        }
        true
    }
}

/// A map's entries in key order: how every observable walk over a
/// [`KeyMap`] sees it (reports, invariant messages).
pub fn sorted<V>(map: &KeyMap<V>) -> Vec<(&IndexKey, &V)> {
    let mut all: Vec<_> = map.iter().collect();
    all.sort_unstable_by(|a, b| a.0.cmp(b.0));
    all
}

/// Every index of one cache instance. The storage and content maps use a
/// fixed hasher (lookups are the hit path); the others are ordered maps.
/// Wherever a map's order could be observed (reports, metrics, invariant
/// messages) it is walked in key order, never in hash order.
#[derive(Default)]
pub struct Indexes {
    /// Completed calls by storage key and by result call key (lists: C-15).
    /// Changed only through `insert` and `remove`, which keep the count.
    by_storage: KeyMap<Ids>,
    /// Completed calls by content key; changed as `by_storage` is.
    by_content: KeyMap<Ids>,
    /// Entries listed in `by_storage` and `by_content`, counted as they are
    /// added and removed: `entries()` (C-15, S-7) is then O(1), not a walk
    /// over every list, however large the cache (a session close asks for it
    /// before and after its releases, S-7).
    listed_storage: usize,
    listed_content: usize,
    /// In-flight calls by (storage key, concurrency key).
    pub ongoing: BTreeMap<(IndexKey, ConcurrencyKey), EntryId>,
    /// Arbitrary entries in flight.
    pub arbitrary_ongoing: BTreeMap<String, EntryId>,
    /// Arbitrary entries completed.
    pub arbitrary_completed: BTreeMap<String, EntryId>,
    /// During a batch (see [`Indexes::start_batch`]): the storage and
    /// content removals not yet applied.
    queued: Option<Vec<Queued>>,
    /// During a batch as large as the lists themselves: the entries whose
    /// storage and content listings go, applied in one pass over each map.
    sweep: Option<Sweep>,
    /// Entries added to or removed from any index (see `touch`). A removal
    /// by key alone (`remove_first`) logs the entry it actually removed,
    /// which may be another entry than the caller meant (C-13): that entry
    /// is the one a check of what the step touched must look at.
    pub(crate) log: TouchLog<EntryId>,
}

/// A key of [`Indexes::ongoing`], owned or borrowed: the map is looked up
/// through `dyn OngoingKey`, so a lookup needs no owned copy of either key.
/// Both forms order as the owned pair does (storage key, then concurrency
/// key), so the map's order, and every walk of it, is unchanged.
pub trait OngoingKey {
    /// The storage key and the concurrency key.
    fn parts(&self) -> (&IndexKey, &str);
}

impl OngoingKey for (IndexKey, ConcurrencyKey) {
    fn parts(&self) -> (&IndexKey, &str) {
        (&self.0, &self.1)
    }
}

impl OngoingKey for (&IndexKey, &str) {
    fn parts(&self) -> (&IndexKey, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn OngoingKey + 'a> for (IndexKey, ConcurrencyKey) {
    fn borrow(&self) -> &(dyn OngoingKey + 'a) {
        self
    }
}

impl PartialEq for dyn OngoingKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn OngoingKey + '_ {}

impl PartialOrd for dyn OngoingKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn OngoingKey + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// How many removals ahead of the one applied a batch prefetches its queue.
const QUEUE_AHEAD: usize = 8;

/// A batch of at least this many removals, and at least half as many as
/// the storage lists hold, is swept (see [`Sweep`]) rather than queued.
const SWEEP_MIN: usize = 16_384;

/// The removals of a large batch, as marks on the entries removed: one
/// bit per arena slot, kept apart for storage and content listings. A
/// 100k-handle close queued 64 bytes per removal (6.4 MB), then sorted
/// them by bucket (2.4 MB more): fresh memory, whose first touch is a page
/// fault each 4 KiB, and on a virtual machine a fault costs microseconds.
/// The marks take 12.5 KB for 100k entries, and applying them is one
/// sequential pass over each map, which is what the bucket order was for.
///
/// A mark names the entry, not the key: the sweep takes a marked entry out
/// of every list that holds it. That is the same as removing it from the
/// lists of its own slots, the removals queued for it, as long as an entry
/// is listed only under its slots' keys (INV-3); the full check reports
/// any listing that is not.
#[derive(Default)]
struct Sweep {
    storage: Marks,
    content: Marks,
    /// Removals marked: none means nothing is pending.
    marked: usize,
}

/// A set of entries by arena slot.
#[derive(Default)]
struct Marks(Vec<u64>);

impl Marks {
    fn mark(&mut self, entry: EntryId) {
        let i = entry.0.index();
        if i / 64 >= self.0.len() {
            self.0.resize(i / 64 + 1, 0);
        }
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn has(&self, entry: EntryId) -> bool {
        let i = entry.0.index();
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// A storage or content list removal queued by a batch.
struct Queued {
    /// The key's hash under the map's hasher: where its bucket is.
    hash: u64,
    content: bool,
    key: IndexKey,
    entry: EntryId,
}

impl Indexes {
    /// Puts `entry` under `slot`. The caller records the slot on the entry.
    pub fn insert(&mut self, slot: &Slot, entry: EntryId) {
        self.note(entry);
        match slot {
            Slot::Storage(k) => {
                self.listed_storage += usize::from(push_unique(&mut self.by_storage, k, entry));
            }
            Slot::Content(k) => {
                self.listed_content += usize::from(push_unique(&mut self.by_content, k, entry));
            }
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

    /// Logs that `entry`'s listing changed, for a change made on the map
    /// itself rather than through `insert` or `remove`.
    #[inline]
    pub fn note(&mut self, entry: EntryId) {
        self.log.note(entry);
    }

    /// The in-flight call under (`storage`, `concurrency`), looked up
    /// without building an owned pair: every caller that joins a call
    /// (C-3.3) asks, and copying the concurrency key allocated each time.
    pub fn ongoing_call(&self, storage: &IndexKey, concurrency: &str) -> Option<EntryId> {
        self.ongoing
            .get(&(storage, concurrency) as &dyn OngoingKey)
            .copied()
    }

    /// Removes `entry` from `slot`, and only `entry` (C-13).
    pub fn remove(&mut self, slot: &Slot, entry: EntryId) {
        self.note(entry);
        match slot {
            Slot::Storage(k) => self.remove_listed(false, k, entry),
            Slot::Content(k) => self.remove_listed(true, k, entry),
            Slot::Ongoing(k, c) => {
                if self.ongoing_call(k, c) == Some(entry) {
                    self.ongoing.remove(&(k, &**c) as &dyn OngoingKey);
                }
            }
            Slot::ArbitraryOngoing(k) => remove_if_same(&mut self.arbitrary_ongoing, k, entry),
            Slot::ArbitraryCompleted(k) => remove_if_same(&mut self.arbitrary_completed, k, entry),
        }
    }

    /// Removes `entry` from the storage (or content) list under `key`, or
    /// queues the removal during a batch.
    fn remove_listed(&mut self, content: bool, key: &IndexKey, entry: EntryId) {
        if let Some(sweep) = &mut self.sweep {
            let marks = if content {
                &mut sweep.content
            } else {
                &mut sweep.storage
            };
            marks.mark(entry);
            sweep.marked += 1;
            return;
        }
        match &mut self.queued {
            Some(queue) => {
                let map = if content {
                    &self.by_content
                } else {
                    &self.by_storage
                };
                queue.push(Queued {
                    hash: map.hasher().hash_one(key),
                    content,
                    key: key.clone(),
                    entry,
                })
            }
            None => self.unlist(content, key, entry),
        }
    }

    /// Removes `entry` from a list now, keeping the count.
    fn unlist(&mut self, content: bool, key: &IndexKey, entry: EntryId) {
        if content {
            self.listed_content -= usize::from(remove_from_list(&mut self.by_content, key, entry));
        } else {
            self.listed_storage -= usize::from(remove_from_list(&mut self.by_storage, key, entry));
        }
    }

    /// The storage lists and their running count, for tests that damage
    /// them on purpose (the invariant checks must notice).
    #[cfg(any(test, feature = "harness-hooks"))]
    pub(crate) fn storage_lists_mut(&mut self) -> (&mut KeyMap<Ids>, &mut usize) {
        (&mut self.by_storage, &mut self.listed_storage)
    }

    /// The storage lists (completed calls by storage and result call key).
    pub fn storage_lists(&self) -> &KeyMap<Ids> {
        &self.by_storage
    }

    /// The content lists.
    pub fn content_lists(&self) -> &KeyMap<Ids> {
        &self.by_content
    }

    /// The storage and content list memberships, counted afresh: the
    /// running counts must always equal these (checked with INV-3).
    pub fn recount(&self) -> (usize, usize) {
        let count = |map: &KeyMap<Ids>| map.values().map(|l| l.len()).sum();
        (count(&self.by_storage), count(&self.by_content))
    }

    /// Starts a batch of removals (a session close releasing many entries):
    /// storage and content list removals are queued, `capacity` of them
    /// expected, until [`Indexes::finish_batch`]. Nothing may look keys up
    /// in between.
    pub fn start_batch(&mut self, capacity: usize) {
        if self.queued.is_some() || self.sweep.is_some() {
            return;
        }
        if capacity >= SWEEP_MIN && capacity * 2 >= self.by_storage.len() {
            self.sweep = Some(Sweep::default());
        } else {
            self.queued = Some(Vec::with_capacity(capacity));
        }
    }

    /// Applies the removals queued since [`Indexes::start_batch`] and ends
    /// the batch.
    ///
    /// They are the same removals, each still of its own entry only (C-13),
    /// applied in the order of their keys' buckets rather than of the
    /// entries: removals of distinct entries commute, and in bucket order
    /// the walk over a large table is sequential instead of a cache and TLB
    /// miss per key (which dominated closing a session of 100k handles).
    pub fn finish_batch(&mut self) {
        if let Some(sweep) = self.sweep.take() {
            self.apply_sweep(&sweep);
        }
        let Some(queue) = self.queued.take() else {
            return;
        };
        self.apply(queue);
    }

    /// Takes every marked entry out of the lists, one pass over each map.
    fn apply_sweep(&mut self, sweep: &Sweep) {
        let mut gone = 0;
        self.by_storage.retain(|_, list| {
            gone += list.remove_marked(&sweep.storage);
            !list.is_empty()
        });
        self.listed_storage -= gone;
        let mut gone = 0;
        self.by_content.retain(|_, list| {
            gone += list.remove_marked(&sweep.content);
            !list.is_empty()
        });
        self.listed_content -= gone;
    }

    fn apply(&mut self, queue: Vec<Queued>) {
        let order = self.removal_order(&queue);
        for (n, &i) in order.iter().enumerate() {
            // The queue is read in bucket order, not in the order it was
            // written: without a hint each read is a miss of its own.
            if let Some(&ahead) = order.get(n + QUEUE_AHEAD) {
                crate::prefetch::lines(&queue[ahead], 2);
            }
            let q = &queue[i];
            self.unlist(q.content, &q.key, q.entry);
        }
    }

    /// The order a batch is applied in, as positions in `queue`: storage
    /// removals, then content removals, each group in ascending bucket
    /// order of its map, ties in queue order.
    fn removal_order(&self, queue: &[Queued]) -> Vec<usize> {
        // A map's bucket is the low bits of the hash, as many as its bucket
        // count (a power of two, of which the capacity is 7/8) needs.
        let mask = |capacity: usize| (capacity / 7 * 8).next_power_of_two() as u64 - 1;
        let storage_mask = mask(self.by_storage.capacity());
        let content_mask = mask(self.by_content.capacity());
        // Sort words: (content, bucket) in the high half, above every
        // bucket bit either map uses, and the position in the low half.
        let bucket_bits = u64::BITS - (storage_mask | content_mask).leading_zeros();
        let words: Vec<u64> = queue
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let bucket = q.hash
                    & if q.content {
                        content_mask
                    } else {
                        storage_mask
                    };
                let key = (u64::from(q.content) << bucket_bits) | bucket;
                (key << 32) | i as u64
            })
            .collect();
        sort_by_high_half(words, bucket_bits + 1)
            .into_iter()
            .map(|word| (word & u64::from(u32::MAX)) as usize)
            .collect()
    }

    /// Whether no removal waits in a batch (lookups and counts would see
    /// entries that are already gone).
    fn nothing_queued(&self) -> bool {
        self.queued.as_ref().is_none_or(|q| q.is_empty())
            && self.sweep.as_ref().is_none_or(|s| s.marked == 0)
    }

    /// Removes whatever entry sits first under `slot`'s key, without asking
    /// which: only the `key-only-delete` switch of the bug zoo calls this.
    pub fn remove_first(&mut self, slot: &Slot) {
        // It looks the key up: removals queued so far must be applied first.
        if let Some(queue) = self.queued.as_mut().map(std::mem::take) {
            self.apply(queue);
        }
        if let Some(sweep) = self.sweep.as_mut().map(std::mem::take) {
            self.apply_sweep(&sweep);
        }
        let first = match slot {
            Slot::Storage(k) => self.storage(k),
            Slot::Content(k) => self.content(k),
            Slot::Ongoing(k, c) => self.ongoing_call(k, c),
            Slot::ArbitraryOngoing(k) => self.arbitrary_ongoing.get(k).copied(),
            Slot::ArbitraryCompleted(k) => self.arbitrary_completed.get(k).copied(),
        };
        if let Some(first) = first {
            self.remove(slot, first);
        }
    }

    /// The first completed entry under a storage key.
    #[inline]
    pub fn storage(&self, key: &IndexKey) -> Option<EntryId> {
        debug_assert!(self.nothing_queued(), "no lookup while removals are queued");
        self.by_storage.get(key).and_then(|l| l.first().copied())
    }

    /// The first completed entry under a storage key for which `visible`
    /// holds.
    pub fn storage_visible(
        &self,
        key: &IndexKey,
        visible: impl Fn(EntryId) -> bool,
    ) -> Option<EntryId> {
        debug_assert!(self.nothing_queued(), "no lookup while removals are queued");
        self.by_storage
            .get(key)
            .and_then(|l| l.iter().copied().find(|e| visible(*e)))
    }

    /// The first completed entry under a content key.
    #[inline]
    pub fn content(&self, key: &IndexKey) -> Option<EntryId> {
        debug_assert!(self.nothing_queued(), "no lookup while removals are queued");
        self.by_content.get(key).and_then(|l| l.first().copied())
    }

    /// Sizes of the five buckets of C-15.
    pub fn buckets(&self) -> Buckets {
        debug_assert!(self.nothing_queued(), "no count while removals are queued");
        Buckets {
            ongoing_calls: self.ongoing.len(),
            completed_calls: self.listed_storage,
            completed_calls_by_content: self.listed_content,
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

/// Lists `entry` under `key`; whether it was not listed there yet.
fn push_unique(map: &mut KeyMap<Ids>, key: &IndexKey, entry: EntryId) -> bool {
    match map.get_mut(key) {
        Some(list) => list.push_unique(entry),
        None => {
            map.insert(key.clone(), Ids::One(entry));
            true
        }
    }
}

/// One hash lookup in the common case (the entry is alone under its key):
/// the list is taken out, and put back only if others remain (C-13).
/// Whether `entry` was listed (and so removed).
fn remove_from_list(map: &mut KeyMap<Ids>, key: &IndexKey, entry: EntryId) -> bool {
    let Some((k, mut list)) = map.remove_entry(key) else {
        return false;
    };
    let removed = list.remove(entry);
    if !list.is_empty() {
        map.insert(k, list);
    }
    removed
}

fn remove_if_same(map: &mut BTreeMap<String, EntryId>, key: &str, entry: EntryId) {
    if map.get(key) == Some(&entry) {
        map.remove(key);
    }
}

/// Below this many words a comparison sort beats the radix sort's fixed
/// cost (its digit counts are cleared and summed on every pass).
const RADIX_MIN_WORDS: usize = 1024;

/// Bits in one radix digit: 2048 counts, 16 KiB, stay in L1.
const RADIX_DIGIT_BITS: u32 = 11;

/// `words`, whose low halves ascend (positions in a queue) and whose high
/// halves use only their low `key_bits` bits, in ascending order: by high
/// half, ties in their given order. For a large batch this is an LSD radix
/// sort of the high halves, two or three sequential passes, rather than a
/// comparison sort (at 100k handles a comparison sort was an eighth of a
/// session close's instructions).
fn sort_by_high_half(mut words: Vec<u64>, key_bits: u32) -> Vec<u64> {
    if words.len() < RADIX_MIN_WORDS {
        // Whole words: ties on the high half fall to the ascending low half.
        words.sort_unstable();
        return words;
    }
    let digits = key_bits.div_ceil(RADIX_DIGIT_BITS);
    let radix_mask = (1u64 << RADIX_DIGIT_BITS) - 1;
    let mut out = vec![0u64; words.len()];
    let mut counts = vec![0usize; 1 << RADIX_DIGIT_BITS];
    for d in 0..digits {
        let shift = 32 + d * RADIX_DIGIT_BITS;
        let digit = |w: u64| ((w >> shift) & radix_mask) as usize;
        counts.fill(0);
        for &w in &words {
            counts[digit(w)] += 1;
        }
        // Counts become each digit's first place in `out`.
        let mut next = 0;
        for c in counts.iter_mut() {
            next += std::mem::replace(c, next);
        }
        for &w in &words {
            let at = &mut counts[digit(w)];
            out[*at] = w;
            *at += 1;
        }
        std::mem::swap(&mut words, &mut out);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::arena::Arena;

    /// A list holds each entry once (an entry is never listed twice under
    /// one key), keeps one entry inline, and a removal takes out only the
    /// entry asked for (C-13), saying whether it was there.
    #[test]
    fn a_list_holds_each_entry_once_and_removes_only_the_one_asked() {
        let mut arena = Arena::default();
        let [a, b, c] = [1, 2, 3].map(|i| EntryId(arena.insert(i)));
        let mut list = Ids::default();
        assert!(list.push_unique(a));
        assert!(matches!(list, Ids::One(_)), "{list:?}");
        assert!(!list.push_unique(a), "already listed");
        assert_eq!(&*list, &[a]);
        assert!(!list.remove(b), "not listed");
        assert_eq!(&*list, &[a]);
        assert!(list.push_unique(b));
        assert!(!list.push_unique(b), "already listed");
        assert!(!list.push_unique(a), "already listed");
        assert!(list.push_unique(c));
        assert_eq!(&*list, &[a, b, c]);
        assert!(list.remove(b));
        assert!(!list.remove(b), "removed already");
        assert_eq!(&*list, &[a, c]);
        assert!(list.remove(a) && list.remove(c));
        assert!(list.is_empty());
        assert!(list.push_unique(c));
        assert!(matches!(list, Ids::One(_)), "{list:?}");
    }

    /// The radix order is the comparison sort's, on either side of the
    /// switch between them and over one, two and three digits: by high
    /// half, ties in position order.
    #[test]
    fn sort_by_high_half_orders_as_sorting_whole_words() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [0, 1, 2, RADIX_MIN_WORDS - 1, RADIX_MIN_WORDS, 5000, 70_000] {
            for key_bits in [1, 7, RADIX_DIGIT_BITS, 18, 2 * RADIX_DIGIT_BITS + 1] {
                let words: Vec<u64> = (0..len as u64)
                    .map(|i| ((next() & ((1 << key_bits) - 1)) << 32) | i)
                    .collect();
                let mut expected = words.clone();
                expected.sort_unstable();
                assert_eq!(
                    sort_by_high_half(words, key_bits),
                    expected,
                    "{len} words, {key_bits} key bits"
                );
            }
        }
    }

    /// A batch queues its removals until it is finished, then applies them
    /// storage first, content second, each in its map's bucket order.
    #[test]
    fn a_batch_is_queued_then_applied_in_bucket_order() {
        let mut arena = Arena::default();
        let ids: Vec<EntryId> = (0..3000).map(|i| EntryId(arena.insert(i))).collect();
        let key = |i: usize| IndexKey::from_text(&format!("key-{i}"));
        let mut idx = Indexes::default();
        for (i, &e) in ids.iter().enumerate() {
            idx.insert(&Slot::Storage(key(i)), e);
            idx.insert(&Slot::Content(key(i)), e);
        }
        idx.start_batch(2 * ids.len());
        // Queued in reverse, content and storage interleaved.
        for (i, &e) in ids.iter().enumerate().rev() {
            idx.remove(&Slot::Content(key(i)), e);
            idx.remove(&Slot::Storage(key(i)), e);
        }
        assert!(!idx.nothing_queued());
        assert_eq!(idx.storage_lists().len(), ids.len(), "nothing applied yet");
        let queue = idx.queued.as_deref().expect("a batch is open");
        assert_eq!(queue.len(), 2 * ids.len());
        let order = idx.removal_order(queue);
        let mut seen = order.clone();
        seen.sort_unstable();
        assert!(seen.into_iter().eq(0..queue.len()), "a permutation");
        // Buckets as hashbrown sizes its table: the capacity is 7/8 of a
        // power of two.
        let buckets = |cap: usize| (cap * 8 / 7).next_power_of_two() as u64;
        let storage = buckets(idx.by_storage.capacity());
        let content = buckets(idx.by_content.capacity());
        let sort_key = |i: usize| {
            let q = &queue[i];
            let n = if q.content { content } else { storage };
            (q.content, q.hash % n, i)
        };
        let keys: Vec<_> = order.iter().map(|&i| sort_key(i)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "in bucket order");
        assert!(!queue[order[0]].content && queue[order[order.len() - 1]].content);
        idx.finish_batch();
        assert!(idx.nothing_queued());
        assert_eq!(idx.recount(), (0, 0));
        assert!(idx.storage_lists().is_empty() && idx.content_lists().is_empty());
    }

    /// The `key-only-delete` switch's removal takes the first entry under
    /// the key, whichever it is (during a batch too).
    #[test]
    fn remove_first_takes_whatever_entry_is_listed_first() {
        let mut arena = Arena::default();
        let [a, b, c] = [1, 2, 3].map(|i| EntryId(arena.insert(i)));
        let (k, other) = (IndexKey::from_text("k"), IndexKey::from_text("other"));
        let mut idx = Indexes::default();
        idx.insert(&Slot::Storage(k.clone()), a);
        idx.insert(&Slot::Storage(k.clone()), b);
        idx.insert(&Slot::Storage(other.clone()), c);
        idx.start_batch(1);
        idx.remove(&Slot::Storage(other.clone()), c);
        idx.remove_first(&Slot::Storage(k.clone()));
        idx.finish_batch();
        assert_eq!(idx.storage(&k), Some(b));
        assert_eq!(idx.storage(&other), None);
        assert_eq!(idx.recount(), (1, 0));
    }

    /// A large batch, applied in bucket order, removes exactly the queued
    /// (key, entry) pairs: an entry sharing a list with a kept one takes
    /// only itself out (C-13), and the counts follow (C-15).
    #[test]
    fn a_large_batch_removes_exactly_what_was_queued() {
        removes_exactly_what_was_queued(5000, false);
    }

    /// The same removals in a batch large enough to be swept (marks on the
    /// entries, one pass over each map) rather than queued.
    #[test]
    fn a_swept_batch_removes_exactly_what_was_queued() {
        removes_exactly_what_was_queued(SWEEP_MIN * 2, true);
    }

    /// `keys` keys; the first fifth of them list two entries (i and i +
    /// keys). Removes every even entry below `keys` and every entry above.
    fn removes_exactly_what_was_queued(keys: usize, swept: bool) {
        let mut arena = Arena::default();
        let ids: Vec<EntryId> = (0..keys + keys / 5)
            .map(|i| EntryId(arena.insert(i)))
            .collect();
        let key = |i: usize| IndexKey::from_text(&format!("key-{}", i % keys));
        let mut idx = Indexes::default();
        for (i, &e) in ids.iter().enumerate() {
            idx.insert(&Slot::Storage(key(i)), e);
            if i % 3 == 0 {
                idx.insert(&Slot::Content(key(i)), e);
            }
        }
        let (storage_before, content_before) = idx.recount();
        let gone = |i: usize| i >= keys || i % 2 == 0;
        let removed: Vec<usize> = (0..ids.len()).filter(|&i| gone(i)).collect();
        idx.start_batch(removed.len());
        assert_eq!(idx.sweep.is_some(), swept, "swept or queued");
        for &i in &removed {
            idx.remove(&Slot::Storage(key(i)), ids[i]);
            if i % 3 == 0 {
                idx.remove(&Slot::Content(key(i)), ids[i]);
            }
        }
        assert!(!idx.nothing_queued());
        idx.finish_batch();
        assert!(idx.queued.is_none() && idx.sweep.is_none());
        for (i, &e) in ids.iter().enumerate() {
            let listed = idx
                .storage_lists()
                .get(&key(i))
                .is_some_and(|l| l.contains(&e));
            assert_eq!(listed, !gone(i), "storage listing of entry {i}");
            let by_content = idx
                .content_lists()
                .get(&key(i))
                .is_some_and(|l| l.contains(&e));
            assert_eq!(
                by_content,
                !gone(i) && i % 3 == 0,
                "content listing of entry {i}"
            );
        }
        let content_gone = removed.iter().filter(|&&i| i % 3 == 0).count();
        assert_eq!(
            idx.recount(),
            (
                storage_before - removed.len(),
                content_before - content_gone
            )
        );
        assert_eq!(
            (idx.listed_storage, idx.listed_content),
            idx.recount(),
            "running counts"
        );
    }
}
