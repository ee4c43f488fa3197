//! A TTL store wrapper that counts the errors the cache actually met and
//! the delays it was told of, and records the rows it wrote, for the
//! harnesses that judge them (T-2, T-3, T-4): the simulation's oracles and
//! the facade driver.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{StoreError, TtlRow, TtlStore};

/// A TTL store that counts the errors it returns, so that a run can show a
/// store fault did reach the cache (a fault that fires but never bites is
/// a harness bug, like one that never fires).
pub struct RecordingStore {
    inner: Arc<dyn TtlStore>,
    errors: AtomicU64,
    lookup_and_write_errors: AtomicU64,
    /// How often each answer delay was reported, by delay in ms.
    delays: Mutex<BTreeMap<u64, u64>>,
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
            lookup_and_write_errors: AtomicU64::new(0),
            delays: Mutex::new(BTreeMap::new()),
            writes: Mutex::new(Vec::new()),
        }
    }

    /// Errors returned so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::SeqCst)
    }

    /// Errors returned by `select` and `compare_and_upsert` so far (GC
    /// rounds left out): the failures a cache absorbs for its calls (T-2).
    pub fn lookup_and_write_errors(&self) -> u64 {
        self.lookup_and_write_errors.load(Ordering::SeqCst)
    }

    /// How many answer delays reported so far exceeded `deadline_ms`: the
    /// lookups a cache with that deadline must give up on (T-2).
    pub fn answers_later_than(&self, deadline_ms: u64) -> u64 {
        let delays = self.delays.lock().unwrap_or_else(|p| p.into_inner());
        delays
            .range(deadline_ms.saturating_add(1)..)
            .map(|(_, n)| n)
            .sum()
    }

    /// The writes accepted since the last call, in order.
    pub fn take_writes(&self) -> Vec<StoreWrite> {
        std::mem::take(&mut *self.writes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Counts an error; `for_calls` when a cache absorbs it for a call (a
    /// lookup or a write, not a GC round).
    fn count<T>(&self, r: Result<T, StoreError>, for_calls: bool) -> Result<T, StoreError> {
        if r.is_err() {
            self.errors.fetch_add(1, Ordering::SeqCst);
            if for_calls {
                self.lookup_and_write_errors.fetch_add(1, Ordering::SeqCst);
            }
        }
        r
    }
}

impl TtlStore for RecordingStore {
    fn select(&self, call_key: &str) -> Result<Option<TtlRow>, StoreError> {
        self.count(self.inner.select(call_key), true)
    }

    fn compare_and_upsert(
        &self,
        call_key: &str,
        row: &TtlRow,
        compare: Option<&str>,
    ) -> Result<bool, StoreError> {
        let r = self.count(self.inner.compare_and_upsert(call_key, row, compare), true);
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
        self.count(self.inner.gc_expired(now, batch), false)
    }

    fn answer_delay_ms(&self) -> u64 {
        let delay = self.inner.answer_delay_ms();
        *self
            .delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(delay)
            .or_insert(0) += 1;
        delay
    }
}
