//! Harness self-test hooks (feature `harness-hooks`): deliberate damage, so a
//! harness can show that its INV-3 oracle really fires.

use super::CallCache;

impl<V: Clone> CallCache<V> {
    /// Files the first completed call under a storage key it does not have
    /// (INV-3 must fire). Returns false while there is no completed call.
    #[doc(hidden)]
    pub fn plant_index_corruption(&mut self) -> bool {
        // The first in key order, whatever the map's hash order.
        let Some(id) = super::index::sorted(&self.idx.by_storage)
            .into_iter()
            .find_map(|(_, l)| l.first().copied())
        else {
            return false;
        };
        self.idx
            .by_storage
            .entry("planted-foreign-key".into())
            .or_default()
            .push_unique(id);
        true
    }
}
