//! A TTL store wrapper that counts the errors the cache actually met.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cache_core::ttl::{StoreError, TtlRow, TtlStore};

/// A TTL store that counts the errors it returns, so that a run can show a
/// store fault did reach the cache (a fault that fires but never bites is
/// a harness bug, like one that never fires).
pub struct CountingStore {
    inner: Arc<dyn TtlStore>,
    errors: AtomicU64,
}

impl CountingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn TtlStore>) -> Self {
        CountingStore {
            inner,
            errors: AtomicU64::new(0),
        }
    }

    /// Errors returned so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::SeqCst)
    }

    fn count<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.errors.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

impl TtlStore for CountingStore {
    fn select(&self, call_key: &str) -> Result<Option<TtlRow>, StoreError> {
        self.count(self.inner.select(call_key))
    }

    fn compare_and_upsert(
        &self,
        call_key: &str,
        row: &TtlRow,
        compare: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.count(self.inner.compare_and_upsert(call_key, row, compare))
    }

    fn gc_expired(&self, now: i64, batch: usize) -> Result<usize, StoreError> {
        self.count(self.inner.gc_expired(now, batch))
    }

    fn answer_delay_ms(&self) -> u64 {
        self.inner.answer_delay_ms()
    }
}
