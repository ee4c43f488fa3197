//! A deterministic in-memory [`TtlStore`] with injectable faults, for the
//! simulation (T-1).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{StoreError, TtlRow, TtlStore};

/// Faults the [`MemoryTtlStore`] injects. The default is a healthy store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreFaults {
    /// The next `fail_next` operations (`select`, `compare_and_upsert`,
    /// `gc_expired`) fail with [`StoreError::Unavailable`]; each failure
    /// counts it down by one.
    pub fail_next: u32,
    /// Every operation fails with [`StoreError::Unavailable`] while set
    /// (takes precedence over `fail_next`, which is then not counted down).
    pub fail_all: bool,
    /// Reported by [`TtlStore::answer_delay_ms`]: how long (simulated
    /// milliseconds) each answer takes.
    pub delay_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    rows: BTreeMap<String, TtlRow>,
    faults: StoreFaults,
    failures_injected: u64,
}

impl Inner {
    /// Consume one operation's worth of faults: `Err` if it must fail.
    /// A failing operation never touches the rows.
    fn check(&mut self, op: &str) -> Result<(), StoreError> {
        let reason = if self.faults.fail_all {
            "fail_all"
        } else if self.faults.fail_next > 0 {
            self.faults.fail_next -= 1;
            "fail_next"
        } else {
            return Ok(());
        };
        self.failures_injected = self.failures_injected.saturating_add(1);
        Err(StoreError::Unavailable(format!(
            "injected fault ({reason}) in {op}"
        )))
    }
}

/// An in-memory [`TtlStore`]: a `BTreeMap` behind a mutex, plus fault
/// settings ([`StoreFaults`]). Fully deterministic: GC deletes expired rows
/// in call-key order.
#[derive(Debug, Default)]
pub struct MemoryTtlStore {
    inner: Mutex<Inner>,
}

impl MemoryTtlStore {
    /// An empty, healthy store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace the fault settings.
    pub fn set_faults(&self, f: StoreFaults) {
        self.lock().faults = f;
    }

    /// The current fault settings (`fail_next` as counted down so far).
    pub fn faults(&self) -> StoreFaults {
        self.lock().faults.clone()
    }

    /// How many operations have failed because of an injected fault.
    pub fn failures_injected(&self) -> u64 {
        self.lock().failures_injected
    }

    /// Every row, sorted by call key, for tests and oracles. Never faults.
    pub fn rows(&self) -> Vec<(String, TtlRow)> {
        self.lock()
            .rows
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held, but never propagate poison.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TtlStore for MemoryTtlStore {
    fn select(&self, call_key: &str) -> Result<Option<TtlRow>, StoreError> {
        let mut inner = self.lock();
        inner.check("select")?;
        Ok(inner.rows.get(call_key).cloned())
    }

    fn compare_and_upsert(
        &self,
        call_key: &str,
        row: &TtlRow,
        compare: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        inner.check("compare_and_upsert")?;
        match inner.rows.get_mut(call_key) {
            None => {
                inner.rows.insert(call_key.to_owned(), row.clone());
                Ok(true)
            }
            Some(existing) => match compare {
                Some(c) if existing.storage_key == c => {
                    *existing = row.clone();
                    Ok(true)
                }
                _ => Ok(false),
            },
        }
    }

    fn gc_expired(&self, now: i64, batch: usize) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        inner.check("gc_expired")?;
        let doomed: Vec<String> = inner
            .rows
            .iter()
            .filter(|(_, r)| r.expiration < now)
            .take(batch)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &doomed {
            inner.rows.remove(key);
        }
        Ok(doomed.len())
    }

    fn answer_delay_ms(&self) -> u64 {
        self.lock().faults.delay_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, expiration: i64) -> TtlRow {
        TtlRow {
            storage_key: key.into(),
            expiration,
        }
    }

    fn is_unavailable<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
        matches!(r, Err(StoreError::Unavailable(_)))
    }

    #[test]
    fn memory_fail_next_counts_down() {
        let store = MemoryTtlStore::new();
        store.set_faults(StoreFaults {
            fail_next: 3,
            ..StoreFaults::default()
        });
        assert!(is_unavailable(store.select("a")));
        assert_eq!(store.faults().fail_next, 2);
        assert!(is_unavailable(store.compare_and_upsert(
            "a",
            &row("k", 5),
            None
        )));
        assert_eq!(store.faults().fail_next, 1);
        assert!(is_unavailable(store.gc_expired(10, 10)));
        assert_eq!(store.faults().fail_next, 0);
        assert_eq!(store.failures_injected(), 3);
        // Healed: operations work again and the failed insert left nothing.
        assert_eq!(store.select("a").unwrap(), None);
        assert!(store.compare_and_upsert("a", &row("k", 5), None).unwrap());
        assert_eq!(store.select("a").unwrap(), Some(row("k", 5)));
        assert_eq!(store.failures_injected(), 3);
    }

    #[test]
    fn memory_fail_all() {
        let store = MemoryTtlStore::new();
        assert!(store.compare_and_upsert("a", &row("k", 5), None).unwrap());
        store.set_faults(StoreFaults {
            fail_all: true,
            fail_next: 2,
            ..StoreFaults::default()
        });
        for _ in 0..5 {
            assert!(is_unavailable(store.select("a")));
            assert!(is_unavailable(store.gc_expired(100, 10)));
        }
        assert_eq!(store.failures_injected(), 10);
        // fail_all takes precedence and does not consume fail_next.
        assert_eq!(store.faults().fail_next, 2);
        store.set_faults(StoreFaults::default());
        assert_eq!(store.select("a").unwrap(), Some(row("k", 5)));
    }

    #[test]
    fn memory_delay_reported() {
        let store = MemoryTtlStore::new();
        assert_eq!(store.answer_delay_ms(), 0);
        store.set_faults(StoreFaults {
            delay_ms: 250,
            ..StoreFaults::default()
        });
        assert_eq!(store.answer_delay_ms(), 250);
        // A slow store still answers, and asking for the delay is not an
        // operation (nothing counted, nothing failed).
        assert!(store.compare_and_upsert("a", &row("k", 5), None).unwrap());
        assert_eq!(store.failures_injected(), 0);
        let dyn_store: &dyn TtlStore = &store;
        assert_eq!(dyn_store.answer_delay_ms(), 250);
    }

    #[test]
    fn memory_faults_never_corrupt_rows() {
        let store = MemoryTtlStore::new();
        assert!(store.compare_and_upsert("a", &row("ka", 5), None).unwrap());
        assert!(store.compare_and_upsert("b", &row("kb", 50), None).unwrap());
        let before = store.rows();
        store.set_faults(StoreFaults {
            fail_next: 3,
            ..StoreFaults::default()
        });
        assert!(is_unavailable(store.compare_and_upsert(
            "a",
            &row("new", 9),
            Some("ka")
        )));
        assert!(is_unavailable(store.compare_and_upsert(
            "c",
            &row("kc", 9),
            None
        )));
        assert!(is_unavailable(store.gc_expired(i64::MAX, usize::MAX)));
        assert_eq!(store.rows(), before);
        assert_eq!(store.failures_injected(), 3);
    }

    #[test]
    fn memory_rows_sorted_and_gc_in_key_order() {
        let store = MemoryTtlStore::new();
        for k in ["c", "a", "b", "d"] {
            assert!(store.compare_and_upsert(k, &row(k, 1), None).unwrap());
        }
        let keys: Vec<String> = store.rows().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "c", "d"]);
        assert_eq!(store.gc_expired(2, 2).unwrap(), 2);
        let keys: Vec<String> = store.rows().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["c", "d"]);
    }
}
