//! The bounded local tier (L-8): one per node, an LRU of records.
//!
//! Eviction order comes from the `lru` crate (deterministic: it is a linked
//! list, and the hasher is fixed, so no hasher seed can matter). Expiry is
//! not the crate's business: every entry carries its expiry on the injected
//! clock and the machine never serves an entry at or past it; reads remove
//! expired entries as they meet them.

use std::hash::BuildHasherDefault;
use std::num::NonZeroUsize;

use lru::LruCache;
use rustc_hash::FxHasher;

use super::record::Record;

/// One local entry: the record (its expiry is the *local* expiry, never
/// later than the remote's, L-3) and the machine's write sequence number
/// when it was written (L-7: a placeholder never overwrites a newer value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEntry {
    /// The record, with its local expiry.
    pub record: Record,
    /// The machine's write sequence number at the write.
    pub written_seq: u64,
}

/// A bounded map of stored key to record; capacity 0 means "no local tier".
pub struct LocalTier {
    lru: Option<LruCache<String, LocalEntry, BuildHasherDefault<FxHasher>>>,
}

impl LocalTier {
    /// A tier holding at most `capacity` entries (0: no local tier).
    pub fn new(capacity: usize) -> Self {
        Self {
            lru: NonZeroUsize::new(capacity)
                .map(|cap| LruCache::with_hasher(cap, BuildHasherDefault::default())),
        }
    }

    /// Whether this node has a local tier at all.
    pub fn enabled(&self) -> bool {
        self.lru.is_some()
    }

    /// The live entry for `key` at `now_ms` (marking it recently used);
    /// an expired one is removed and reads as absent (L-8).
    pub fn get(&mut self, key: &str, now_ms: i64) -> Option<LocalEntry> {
        let lru = self.lru.as_mut()?;
        match lru.get(key) {
            Some(entry) if entry.record.is_live(now_ms) => Some(entry.clone()),
            Some(_) => {
                lru.pop(key);
                None
            }
            None => None,
        }
    }

    /// The entry for `key` without touching recency or expiry (for checks).
    pub fn peek(&self, key: &str) -> Option<&LocalEntry> {
        self.lru.as_ref()?.peek(key)
    }

    /// Writes `entry`, evicting the least recently used one when full.
    pub fn put(&mut self, key: String, entry: LocalEntry) {
        if let Some(lru) = self.lru.as_mut() {
            lru.put(key, entry);
        }
    }

    /// [`LocalTier::put`] of a borrowed key: a key already held is
    /// overwritten in place (and made most recently used, as `put` does),
    /// so only a new key costs a copy of its text.
    pub fn put_str(&mut self, key: &str, entry: LocalEntry) {
        if let Some(lru) = self.lru.as_mut() {
            match lru.get_mut(key) {
                Some(held) => *held = entry,
                None => {
                    lru.put(key.to_string(), entry);
                }
            }
        }
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        self.lru.as_mut().and_then(|lru| lru.pop(key)).is_some()
    }

    /// How many entries it holds (expired ones not yet met included).
    pub fn len(&self) -> usize {
        self.lru.as_ref().map_or(0, LruCache::len)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its capacity (0: no local tier).
    pub fn capacity(&self) -> usize {
        self.lru.as_ref().map_or(0, |l| l.cap().get())
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        if let Some(lru) = self.lru.as_mut() {
            lru.clear();
        }
    }

    /// Every (key, entry), in key order (not recency order), so that
    /// anything built on it is independent of recency.
    pub fn entries(&self) -> Vec<(String, LocalEntry)> {
        let mut all: Vec<_> = self
            .lru
            .iter()
            .flat_map(|l| l.iter())
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}
