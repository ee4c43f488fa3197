//! Harness self-test hooks (feature `harness-hooks`): deliberate damage, so a
//! harness can show that its oracles really fire.

use super::CallCache;

impl<V: Clone> CallCache<V> {
    /// Files the first completed call under a storage key it does not have
    /// (INV-3 must fire). Returns false while there is no completed call.
    #[doc(hidden)]
    pub fn plant_index_corruption(&mut self) -> bool {
        // The first in key order, whatever the map's hash order.
        let Some(id) = super::index::sorted(self.idx.storage_lists())
            .into_iter()
            .find_map(|(_, l)| l.first().copied())
        else {
            return false;
        };
        let foreign = super::key::IndexKey::from_text("planted-foreign-key");
        self.idx.insert(&super::entry::Slot::Storage(foreign), id);
        true
    }

    /// Makes the first in-flight call's resolver wait on itself: a wait-for
    /// cycle (C-4b, INV-11 must fire). Returns false while nothing runs.
    #[doc(hidden)]
    pub fn plant_wait_cycle(&mut self) -> bool {
        let running = self
            .entries
            .iter()
            .find(|(_, e)| e.phase == super::entry::Phase::InFlight)
            .map(|(k, _)| super::types::EntryId(k));
        let Some(id) = running else {
            return false;
        };
        if let Some(e) = self.entries.get_mut(id.0) {
            e.waits_on.push(id);
        }
        true
    }

    /// Changes `entry`'s refcount by `delta` without a ref behind it, through
    /// the arena's logged door, as a faulty event would (INV-10 must fire,
    /// in the check of what the step touched too). Returns false when the
    /// entry is gone.
    #[doc(hidden)]
    pub fn plant_refcount_skew(&mut self, entry: super::types::EntryId, delta: i32) -> bool {
        let Some(e) = self.entries.get_mut(entry.0) else {
            return false;
        };
        e.refcount = e.refcount.wrapping_add_signed(delta);
        true
    }

    /// Forgets what the touch log holds of entries and refs changed so far
    /// in this step, as a change made around its logged doors would: the
    /// step's incremental check would not look at them (a harness that
    /// knows a ref was handed out must notice the gap).
    #[doc(hidden)]
    pub fn plant_touch_log_gap(&mut self) {
        let (mut keys, mut ids) = (Vec::new(), Vec::new());
        self.entries.log.take(&mut keys);
        self.refs.log.take(&mut keys);
        self.idx.log.take(&mut ids);
    }

    /// Miscounts the completed storage listings by one, a total only the
    /// full check recounts (INV-3 must fire there, and only there).
    #[doc(hidden)]
    pub fn plant_bucket_drift(&mut self) {
        *self.idx.storage_lists_mut().1 += 1;
    }
}
