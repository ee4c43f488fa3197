//! Releasing refs and removing entries (C-9, C-11, C-12, C-13).

use super::entry::{Phase, Slot};
use super::types::*;
use super::CallCache;
use crate::bugs::Bug;
use crate::error::CallError;

/// How many releases ahead each prefetch stage of a close runs: enough to
/// cover a miss to memory with the work of the releases in between.
const PREFETCH_AHEAD: usize = 4;

impl<V: Clone> CallCache<V> {
    /// C-12: gives back one ref. When the entry has neither refs nor waiters
    /// left, it leaves every index and its hook (plus those of any entries it
    /// owned refs on, C-11) is returned to run outside the lock.
    ///
    /// A stale or foreign handle is an error, never a second decrement.
    pub fn release(&mut self, handle: Handle) -> Result<Vec<PendingRelease>, CallError> {
        if !self.is_live(&handle) {
            return Err(CallError::UnknownHandle(handle.ref_id.to_string()));
        }
        let mut releases = Vec::new();
        self.release_ref(handle.ref_id, &mut releases);
        Ok(releases)
    }

    /// Prefetches, one stage per distance, what releasing the refs of
    /// `upcoming` (the first is released next) will read: a ref's record,
    /// then its entry, then the entry's call IDs. Each stage reads only what
    /// the stage before fetched, so the loop has a few misses in flight
    /// instead of waiting on each in turn: dropping a call ID updates its
    /// count with an atomic instruction, which waits for every load before
    /// it to finish (without the hints, about half the time of closing 100k
    /// handles).
    pub(super) fn prefetch_release(&self, upcoming: &[RefId]) {
        if let Some(r) = upcoming.get(3 * PREFETCH_AHEAD) {
            self.refs.prefetch(r.0, 1);
        }
        if let Some(rec) = upcoming
            .get(2 * PREFETCH_AHEAD)
            .and_then(|r| self.refs.get(r.0))
        {
            self.entries.prefetch(rec.entry.0, usize::MAX);
        }
        let entry = upcoming
            .get(PREFETCH_AHEAD)
            .and_then(|r| self.refs.get(r.0))
            .and_then(|rec| self.entries.get(rec.entry.0));
        if let Some(e) = entry {
            e.prefetch_ids();
        }
    }

    /// Drops one ref and everything that becomes unheld because of it. Iterative,
    /// so a deep chain of nested results cannot overflow the stack; allocates
    /// nothing unless the removed entry owned refs itself (C-11).
    pub(super) fn release_ref(&mut self, ref_id: RefId, releases: &mut Vec<PendingRelease>) {
        let mut work = self.drop_ref(ref_id, releases);
        while let Some(r) = work.pop() {
            let owned = self.drop_ref(r, releases);
            work.extend(owned);
        }
    }

    /// Drops one ref; if that leaves its entry unheld, removes the entry and
    /// returns the refs the entry owned (to be dropped next).
    fn drop_ref(&mut self, r: RefId, releases: &mut Vec<PendingRelease>) -> Vec<RefId> {
        let Some(record) = self.refs.remove(r.0) else {
            return Vec::new();
        };
        self.forget_owner(r, record.owner);
        let Some(e) = self.entries.get_mut(record.entry.0) else {
            return Vec::new();
        };
        e.refcount -= 1;
        if e.refcount == 0 && e.waiters.is_empty() && e.phase == Phase::Completed {
            self.take_entry(record.entry, releases)
        } else {
            Vec::new()
        }
    }

    /// Removes an entry from the arena and every index; queues its hook and
    /// releases the refs it owned (C-11).
    pub(super) fn remove_entry(&mut self, entry: EntryId, releases: &mut Vec<PendingRelease>) {
        let owned = self.take_entry(entry, releases);
        for r in owned {
            self.release_ref(r, releases);
        }
    }

    /// Removes a completed entry nobody holds (S-3 releases, all waiters gone).
    pub(super) fn collect_if_unheld(&mut self, entry: EntryId, releases: &mut Vec<PendingRelease>) {
        let unheld = self.entries.get(entry.0).is_some_and(|e| {
            e.refcount == 0 && e.waiters.is_empty() && e.phase == Phase::Completed
        });
        if unheld {
            self.remove_entry(entry, releases);
        }
    }

    fn take_entry(&mut self, entry: EntryId, releases: &mut Vec<PendingRelease>) -> Vec<RefId> {
        self.unindex(entry);
        // Only the hook (with what its label needs) and the owned refs are
        // kept; the rest of the entry is dropped in its arena slot.
        let taken = self.entries.remove_with(entry.0, |e| {
            let hook = e.hook.take().map(|h| (h, e.mode, e.storage_key.short()));
            (hook, std::mem::take(&mut e.owned_refs))
        });
        let Some((hook, owned)) = taken else {
            return Vec::new();
        };
        if let Some((hook, mode, storage_key)) = hook {
            // The storage key's short form goes into the label, which is
            // only formatted if the hook fails.
            releases.push(PendingRelease {
                entry,
                label: ReleaseLabel::Entry(mode, storage_key),
                hook,
            });
        }
        // Refs this entry held on others now have no owner but us: release them.
        for r in &owned {
            if let Some(rec) = self.refs.get_mut(r.0) {
                rec.owner = Owner::Caller;
            }
        }
        owned
    }

    /// The one unindexing routine (C-9): removes `entry` from every index slot
    /// it occupies, and only `entry` (C-13).
    pub(super) fn unindex(&mut self, entry: EntryId) {
        let Some(e) = self.entries.get_mut(entry.0) else {
            return;
        };
        let slots = std::mem::take(&mut e.slots);
        for slot in slots.iter() {
            let in_flight = matches!(slot, Slot::Ongoing(..));
            if self.bug(Bug::KeyOnlyDelete) && !in_flight {
                // BUG (key-only-delete, breaks C-13): removes whatever sits
                // first under the key, which may be another entry.
                self.idx.remove_first(slot);
            } else {
                self.idx.remove(slot, entry);
            }
        }
    }
}
