//! The TTL-store driver: the same operations against the in-memory store and
//! the SQLite store, every answer compared (T-1, T-4, T-5).

use std::collections::BTreeSet;

use arbitrary::Arbitrary;

use super::{Failure, Stats};
use crate::ttl::{gc_all, MemoryTtlStore, SqliteTtlStore, StoreError, TtlRow, TtlStore};

/// The stores' input: operations applied to both stores in order.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct TtlInput {
    /// The operations.
    pub ops: Vec<TtlOp>,
}

/// One store operation.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum TtlOp {
    /// `select`.
    Select {
        /// The call key.
        key: KeyPick,
    },
    /// `compare_and_upsert` (T-4).
    Upsert {
        /// The call key.
        key: KeyPick,
        /// The storage key written.
        storage: KeyPick,
        /// The expiration written: near 0 (`i16`), so live and expired rows mix.
        expiration: i16,
        /// The compare value.
        compare: Option<KeyPick>,
    },
    /// `compare_and_upsert` with an extreme expiration.
    UpsertFar {
        /// The call key.
        key: KeyPick,
        /// The expiration written.
        expiration: i64,
    },
    /// `gc_expired` (T-5).
    Gc {
        /// Now, near 0.
        now: i16,
        /// The batch size.
        batch: u8,
    },
}

/// A key: one of a few short ones (so operations collide), or any string.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum KeyPick {
    /// `k0` … `k3`.
    Small(u8),
    /// Any string, empty and non-ASCII included.
    Raw(String),
}

impl KeyPick {
    fn key(&self) -> String {
        match self {
            KeyPick::Small(n) => format!("k{}", n % 4),
            KeyPick::Raw(s) => s.clone(),
        }
    }
}

struct Pair {
    step: usize,
    op: Option<TtlOp>,
    memory: MemoryTtlStore,
    sqlite: SqliteTtlStore,
    keys: BTreeSet<String>,
}

impl Pair {
    fn fail(&self, invariant: &'static str, detail: String) -> Failure {
        Failure {
            invariant,
            step: self.step,
            detail: format!("{detail}\n  op: {:?}", self.op),
        }
    }

    fn both<T: PartialEq + std::fmt::Debug>(
        &self,
        what: &str,
        f: impl Fn(&dyn TtlStore) -> Result<T, StoreError>,
    ) -> Result<T, Failure> {
        let m = f(&self.memory);
        let s = f(&self.sqlite);
        match (m, s) {
            (Ok(m), Ok(s)) if m == s => Ok(m),
            (m, s) => Err(self.fail(
                "T-1",
                format!("{what}: in-memory store {m:?}, SQLite store {s:?}"),
            )),
        }
    }

    /// Every row either store may hold, compared.
    fn compare_rows(&self) -> Result<(), Failure> {
        for key in &self.keys {
            self.both("select", |s| s.select(key))?;
        }
        let mem: Vec<String> = self.memory.rows().into_iter().map(|(k, _)| k).collect();
        let known: Vec<String> = mem
            .iter()
            .filter(|k| self.keys.contains(*k))
            .cloned()
            .collect();
        if mem != known {
            return Err(self.fail("T-1", format!("rows under keys never written: {mem:?}")));
        }
        Ok(())
    }

    fn apply(&mut self, op: &TtlOp) -> Result<(), Failure> {
        match op {
            TtlOp::Select { key } => {
                let key = key.key();
                self.both("select", |s| s.select(&key))?;
            }
            TtlOp::Upsert {
                key,
                storage,
                expiration,
                compare,
            } => {
                let (key, row) = (
                    key.key(),
                    TtlRow {
                        storage_key: storage.key(),
                        expiration: i64::from(*expiration),
                    },
                );
                let compare = compare.as_ref().map(KeyPick::key);
                self.upsert(key, row, compare)?;
            }
            TtlOp::UpsertFar { key, expiration } => {
                let row = TtlRow {
                    storage_key: "far".into(),
                    expiration: *expiration,
                };
                self.upsert(key.key(), row, None)?;
            }
            TtlOp::Gc { now, batch } => {
                let now = i64::from(*now);
                let batch = usize::from(*batch);
                let before = self.memory.rows();
                let expired = before.iter().filter(|(_, r)| r.expiration < now).count();
                let deleted = self.both("gc_expired", |s| s.gc_expired(now, batch))?;
                if deleted != expired.min(batch) {
                    return Err(self.fail(
                        "T-5",
                        format!(
                            "GC deleted {deleted} of {expired} expired rows with batch {batch}"
                        ),
                    ));
                }
                let after = self.memory.rows();
                for (k, r) in before.iter().filter(|(_, r)| r.expiration >= now) {
                    if !after.iter().any(|(k2, r2)| k2 == k && r2 == r) {
                        return Err(self.fail("T-5", format!("GC deleted live row {k}: {r:?}")));
                    }
                }
                if deleted < expired {
                    // The stores may pick different expired rows for a partial
                    // batch; finish the GC on both so they agree again.
                    self.both("gc_all", |s| gc_all(s, now))?;
                }
            }
        }
        Ok(())
    }

    fn upsert(&mut self, key: String, row: TtlRow, compare: Option<String>) -> Result<(), Failure> {
        let before = self.memory.select(&key).ok().flatten();
        let won = self.both("compare_and_upsert", |s| {
            s.compare_and_upsert(&key, &row, compare.as_deref())
        })?;
        // T-4: insert when absent; replace only on a matching compare value.
        let want = match (&before, &compare) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(b), Some(c)) => b.storage_key == *c,
        };
        if won != want {
            return Err(self.fail(
                "T-4",
                format!(
                    "compare-and-upsert over {before:?} with compare {compare:?} returned {won}"
                ),
            ));
        }
        let after = self.memory.select(&key).ok().flatten();
        let expect = if won { Some(row) } else { before };
        if after != expect {
            return Err(self.fail(
                "T-4",
                format!("row after upsert {after:?}, expected {expect:?}"),
            ));
        }
        self.keys.insert(key);
        Ok(())
    }
}

/// Applies `input` to a fresh [`MemoryTtlStore`] and a fresh in-memory
/// [`SqliteTtlStore`]: every answer must be equal and follow T-4 / T-5, and
/// after each operation both stores hold the same rows.
pub fn run_ttl_stores(input: &TtlInput) -> Result<Stats, Failure> {
    let sqlite = SqliteTtlStore::open_in_memory().map_err(|e| Failure {
        invariant: "T-1",
        step: 0,
        detail: format!("cannot open an in-memory SQLite store: {e}"),
    })?;
    let mut pair = Pair {
        step: 0,
        op: None,
        memory: MemoryTtlStore::new(),
        sqlite,
        keys: BTreeSet::new(),
    };
    let mut stats = Stats::default();
    for (i, op) in input.ops.iter().enumerate() {
        pair.step = i;
        pair.op = Some(op.clone());
        pair.apply(op)?;
        pair.compare_rows()?;
        if matches!(op, TtlOp::Upsert { .. } | TtlOp::UpsertFar { .. }) {
            stats.ttl_writes += 1;
        }
    }
    stats.steps = input.ops.len();
    Ok(stats)
}
