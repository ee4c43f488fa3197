//! TTL metadata (SPEC section 5, rules T-1..T-7).
//!
//! Results themselves live only in memory. A small table remembers, across
//! sessions and engine restarts, which *storage key* a TTL'd *call key* maps
//! to and until when. This module provides:
//!
//! - [`TtlStore`], the one trait every store implements (T-1), with
//!   compare-and-upsert (T-4) and bounded-batch GC (T-5);
//! - [`SqliteTtlStore`], the embedded default (SQLite, WAL, relaxed sync);
//! - [`MemoryTtlStore`], a deterministic in-memory store with injectable
//!   faults ([`StoreFaults`]) for the simulation;
//! - [`choose_storage_key`], the pure T-2 / T-7 decision of which storage key
//!   a call uses, given the store's answer;
//! - [`contract`], the shared contract suite both stores pass;
//! - [`RecordingStore`], a wrapper that counts the errors a store returned
//!   and records the rows it accepted, for the harnesses that judge them.
//!
//! Time is always an `i64` of milliseconds since the Unix epoch, passed in by
//! the caller; TTLs are `u64` milliseconds. Nothing here reads a clock or
//! draws randomness (T-6).
//!
//! # Example
//!
//! ```
//! use cache_core::ttl::{choose_storage_key, MemoryTtlStore, StorageKeyChoice, TtlStore};
//!
//! let store = MemoryTtlStore::new();
//! let (now, ttl) = (10_000_i64, 1_000_u64);
//!
//! // Session A: no row yet, so a fresh session-scoped key and a prepared write.
//! let a = choose_storage_key("call", "session-a", now, ttl, store.select("call"));
//! let StorageKeyChoice::Fresh { storage_key, write } = a else { panic!("expected Fresh") };
//! assert_eq!(write.compare, None);
//! // ... the call succeeds and is safe to persist (T-3): make the write (T-4).
//! assert!(store.compare_and_upsert(&write.call_key, &write.row, write.compare.as_deref()).unwrap());
//!
//! // Session B, while the row is live: shares A's storage key.
//! let b = choose_storage_key("call", "session-b", now + 500, ttl, store.select("call"));
//! assert_eq!(b, StorageKeyChoice::Live { storage_key: storage_key.clone() });
//!
//! // After expiry (T-7) even session A gets a different key.
//! let later = now + 2_000;
//! match choose_storage_key("call", "session-a", later, ttl, store.select("call")) {
//!     StorageKeyChoice::Fresh { storage_key: fresh, write } => {
//!         assert_ne!(fresh, storage_key);
//!         assert_eq!(write.compare.as_deref(), Some(storage_key.as_str()));
//!     }
//!     other => panic!("expected Fresh, got {other:?}"),
//! }
//!
//! // GC removes the expired row (T-5).
//! assert_eq!(cache_core::ttl::gc_all(&store, later).unwrap(), 1);
//! assert_eq!(store.select("call").unwrap(), None);
//! ```

use std::path::PathBuf;

pub mod contract;
mod key;
mod memory;
mod recording;
mod sqlite;

pub use key::{choose_storage_key, PreparedWrite, StorageKeyChoice};
pub use memory::{MemoryTtlStore, StoreFaults};
pub use recording::{RecordingStore, StoreWrite};
pub use sqlite::SqliteTtlStore;

/// One row of the `calls` table: where a call key's result is stored, and
/// until when (milliseconds since the Unix epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtlRow {
    /// The storage key the call key currently maps to.
    pub storage_key: String,
    /// Expiration time in milliseconds since the Unix epoch. The row is
    /// expired when `expiration < now` (T-2); a row with `expiration == now`
    /// is still live.
    pub expiration: i64,
}

/// Errors a [`TtlStore`] can return. Callers never fail a call because of
/// one: T-2 degrades to a session-scoped key instead.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store could not be opened at `path` (missing or unreadable
    /// directory, a path that is a directory, an incompatible `calls` table).
    #[error("cannot open TTL store at {}: {reason}", path.display())]
    Open {
        /// The path that was being opened.
        path: PathBuf,
        /// SQLite's (or our) explanation.
        reason: String,
    },
    /// The file at `path` is not a valid database (or is damaged). The file
    /// is left untouched: it is never deleted or recreated.
    #[error("TTL store at {} is not a valid database (corrupt): {reason}", path.display())]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// SQLite's explanation.
        reason: String,
    },
    /// The database at `path` is locked by another connection and the busy
    /// timeout ran out.
    #[error("TTL store at {} is locked by another connection", path.display())]
    Locked {
        /// The locked file.
        path: PathBuf,
    },
    /// The store is unavailable: an injected fault, or an I/O failure.
    #[error("TTL store unavailable: {0}")]
    Unavailable(String),
    /// Any other SQL error.
    #[error("TTL store SQL error: {0}")]
    Sql(String),
}

/// Where TTL metadata lives (T-1). Implementations must be safe to share
/// between threads and must pass the [`contract`] suite.
pub trait TtlStore: Send + Sync {
    /// The row for `call_key`, expired or not (the caller decides what
    /// expired means).
    fn select(&self, call_key: &str) -> Result<Option<TtlRow>, StoreError>;

    /// T-4 compare-and-upsert, atomically:
    ///
    /// - no row for `call_key`: insert `row` (whatever `compare` is: a
    ///   `Some` compare value whose row was meanwhile removed by GC still
    ///   inserts, as nobody else holds a mapping);
    /// - a row exists and `compare` is `None`: nothing changes, the write
    ///   loses;
    /// - a row exists and `compare` is `Some(c)`: replace it with `row` only
    ///   if its stored storage key equals `c`.
    ///
    /// Returns `Ok(true)` if this write took effect, `Ok(false)` if it lost.
    /// Two writers racing from the same compare value never both win.
    fn compare_and_upsert(
        &self,
        call_key: &str,
        row: &TtlRow,
        compare: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// T-5: delete at most `batch` rows with `expiration < now`; returns how
    /// many were deleted. Never deletes a live row. `batch == 0` deletes
    /// nothing.
    fn gc_expired(&self, now: i64, batch: usize) -> Result<usize, StoreError>;

    /// How long (simulated milliseconds) an answer from this store currently
    /// takes. Real stores answer 0; the in-memory store's slow fault returns
    /// its delay. The async layer waits this long on the simulated clock
    /// before using an answer.
    fn answer_delay_ms(&self) -> u64 {
        0
    }
}

/// The batch size [`gc_all`] uses for each [`TtlStore::gc_expired`] round.
pub const GC_BATCH: usize = 1000;

/// Delete every row with `expiration < now`, in batches of [`GC_BATCH`],
/// stopping after the first batch that deletes fewer than [`GC_BATCH`] rows.
/// Returns the total deleted. Stops at the first error (rows deleted by
/// earlier batches stay deleted).
pub fn gc_all(store: &dyn TtlStore, now: i64) -> Result<usize, StoreError> {
    let mut total = 0usize;
    loop {
        let deleted = store.gc_expired(now, GC_BATCH)?;
        total = total.saturating_add(deleted);
        if deleted < GC_BATCH {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts `gc_expired` rounds and the batch sizes asked for.
    struct Counting {
        inner: MemoryTtlStore,
        rounds: AtomicUsize,
    }

    impl TtlStore for Counting {
        fn select(&self, call_key: &str) -> Result<Option<TtlRow>, StoreError> {
            self.inner.select(call_key)
        }
        fn compare_and_upsert(
            &self,
            call_key: &str,
            row: &TtlRow,
            compare: Option<&str>,
        ) -> Result<bool, StoreError> {
            self.inner.compare_and_upsert(call_key, row, compare)
        }
        fn gc_expired(&self, now: i64, batch: usize) -> Result<usize, StoreError> {
            assert_eq!(batch, GC_BATCH);
            self.rounds.fetch_add(1, Ordering::Relaxed);
            self.inner.gc_expired(now, batch)
        }
    }

    fn fill(store: &dyn TtlStore, n: usize, expiration: i64) {
        for i in 0..n {
            let row = TtlRow {
                storage_key: format!("sk-{i}"),
                expiration,
            };
            assert!(store
                .compare_and_upsert(&format!("ck-{expiration}-{i}"), &row, None)
                .unwrap());
        }
    }

    #[test]
    fn t5_gc_all_loops_until_a_short_batch() {
        let store = Counting {
            inner: MemoryTtlStore::new(),
            rounds: AtomicUsize::new(0),
        };
        // Exactly 2 * GC_BATCH expired: two full batches, then an empty one.
        fill(&store, 2 * GC_BATCH, 5);
        fill(&store, 7, 100);
        assert_eq!(gc_all(&store, 100).unwrap(), 2 * GC_BATCH);
        assert_eq!(store.rounds.load(Ordering::Relaxed), 3);
        assert_eq!(store.inner.rows().len(), 7);
        // Nothing expired: one round, nothing deleted.
        store.rounds.store(0, Ordering::Relaxed);
        assert_eq!(gc_all(&store, 100).unwrap(), 0);
        assert_eq!(store.rounds.load(Ordering::Relaxed), 1);
        // A short batch ends it.
        fill(&store, GC_BATCH + 1, 50);
        store.rounds.store(0, Ordering::Relaxed);
        assert_eq!(gc_all(&store, 100).unwrap(), GC_BATCH + 1);
        assert_eq!(store.rounds.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn t5_gc_all_stops_at_first_error() {
        let store = MemoryTtlStore::new();
        fill(&store, GC_BATCH + 10, 5);
        store.set_faults(StoreFaults {
            fail_next: 1,
            ..StoreFaults::default()
        });
        assert!(matches!(
            gc_all(&store, 100),
            Err(StoreError::Unavailable(_))
        ));
        assert_eq!(store.rows().len(), GC_BATCH + 10);
        assert_eq!(gc_all(&store, 100).unwrap(), GC_BATCH + 10);
    }

    #[test]
    fn stores_are_send_sync_trait_objects() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn TtlStore>();
        assert_send_sync::<SqliteTtlStore>();
        assert_send_sync::<MemoryTtlStore>();
        let stores: Vec<Box<dyn TtlStore>> = vec![
            Box::new(MemoryTtlStore::new()),
            Box::new(SqliteTtlStore::open_in_memory().unwrap()),
        ];
        for s in &stores {
            assert_eq!(s.answer_delay_ms(), 0);
        }
    }

    #[test]
    fn store_errors_name_the_path() {
        let e = StoreError::Locked {
            path: PathBuf::from("/tmp/x/ttl.db"),
        };
        assert!(e.to_string().contains("/tmp/x/ttl.db"), "{e}");
        let e = StoreError::Corrupt {
            path: PathBuf::from("/tmp/x/ttl.db"),
            reason: "file is not a database".into(),
        };
        assert!(e.to_string().contains("/tmp/x/ttl.db"), "{e}");
        assert!(e.to_string().contains("not a database"), "{e}");
    }
}
