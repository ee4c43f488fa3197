//! A TTL store wrapper that counts the errors the cache actually met and
//! records the rows it wrote, for the harnesses that judge them (T-3, T-4):
//! the simulation's oracles and the facade driver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{StoreError, TtlRow, TtlStore};

/// A TTL store that counts the errors it returns, so that a run can show a
/// store fault did reach the cache (a fault that fires but never bites is
/// a harness bug, like one that never fires).
pub struct RecordingStore {
    inner: Arc<dyn TtlStore>,
    errors: AtomicU64,
    writes: Mutex<Vec<StoreWrite>>,
}

/// A compare-and-upsert the store accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreWrite {
    /// The call key the row is under.
    pub call_key: String,
    /// The row written.
    pub row: TtlRow,
    /// The storage key it replaced (`None`: a new row).
    pub compare: Option<String>,
}

impl RecordingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn TtlStore>) -> Self {
        RecordingStore {
            inner,
            errors: AtomicU64::new(0),
            writes: Mutex::new(Vec::new()),
        }
    }

    /// Errors returned so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::SeqCst)
    }

    /// The writes accepted since the last call, in order.
    pub fn take_writes(&self) -> Vec<StoreWrite> {
        std::mem::take(&mut *self.writes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn count<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.errors.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

impl TtlStore for RecordingStore {
    fn select(&self, call_key: &str) -> Result<Option<TtlRow>, StoreError> {
        self.count(self.inner.select(call_key))
    }

    fn compare_and_upsert(
        &self,
        call_key: &str,
        row: &TtlRow,
        compare: Option<&str>,
    ) -> Result<bool, StoreError> {
        let r = self.count(self.inner.compare_and_upsert(call_key, row, compare));
        if let Ok(true) = r {
            self.writes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(StoreWrite {
                    call_key: call_key.to_string(),
                    row: row.clone(),
                    compare: compare.map(str::to_string),
                });
        }
        r
    }

    fn gc_expired(&self, now: i64, batch: usize) -> Result<usize, StoreError> {
        self.count(self.inner.gc_expired(now, batch))
    }

    fn answer_delay_ms(&self) -> u64 {
        self.inner.answer_delay_ms()
    }
}
