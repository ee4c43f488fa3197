//! Harness self-test hooks (feature `harness-hooks`): deliberate damage, so a
//! harness can show that its INV-3 oracle really fires.

use super::CallCache;

impl<V: Clone> CallCache<V> {
    /// Files the first completed call under a storage key it does not have
    /// (INV-3 must fire). Returns false while there is no completed call.
    #[doc(hidden)]
    pub fn plant_index_corruption(&mut self) -> bool {
        let Some(id) = self
            .idx
            .by_storage
            .values()
            .find_map(|l| l.first().copied())
        else {
            return false;
        };
        self.idx
            .by_storage
            .entry("planted-foreign-key".into())
            .or_default()
            .push(id);
        true
    }
}
