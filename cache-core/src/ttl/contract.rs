//! The shared contract suite every [`TtlStore`] must pass (T-1).
//!
//! Written once against `&dyn TtlStore` so that the SQLite store, the
//! in-memory store, and later the simulator and fuzzers run the very same
//! checks. Each check expects an **empty, healthy** store (no faults) and
//! returns a [`ContractViolation`] naming the check instead of panicking, so
//! callers decide how to report it. [`run_all`] runs every check, each on a
//! new store from a factory.

use std::fmt;

use super::{gc_all, StoreError, TtlRow, TtlStore, GC_BATCH};

/// A store broke the contract: which check, and what it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractViolation {
    /// The name of the failed check (the function name).
    pub check: &'static str,
    /// What went wrong.
    pub detail: String,
}

impl fmt::Display for ContractViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TTL store contract violated in {}: {}",
            self.check, self.detail
        )
    }
}

impl std::error::Error for ContractViolation {}

/// The outcome of one contract check.
pub type ContractResult = Result<(), ContractViolation>;

/// A check that runs on one empty store.
pub type Check = fn(&dyn TtlStore) -> ContractResult;

/// Every single-store check, by name. [`compare_and_upsert_has_one_winner`]
/// takes two views of one store and is run separately by [`run_all`].
pub const CHECKS: &[(&str, Check)] = &[
    ("select_missing_is_none", select_missing_is_none),
    ("insert_when_absent_wins", insert_when_absent_wins),
    ("second_insert_loses", second_insert_loses),
    (
        "update_with_matching_compare_wins",
        update_with_matching_compare_wins,
    ),
    (
        "update_with_stale_compare_loses",
        update_with_stale_compare_loses,
    ),
    (
        "compare_on_absent_row_inserts",
        compare_on_absent_row_inserts,
    ),
    ("rows_roundtrip_exactly", rows_roundtrip_exactly),
    (
        "gc_deletes_only_expired_in_batches",
        gc_deletes_only_expired_in_batches,
    ),
];

/// Run every check, each on a fresh empty store from `make_empty`, stopping
/// at the first violation. [`compare_and_upsert_has_one_winner`] runs with the
/// same store passed as both writers.
pub fn run_all(make_empty: &mut dyn FnMut() -> Box<dyn TtlStore>) -> ContractResult {
    for (_, check) in CHECKS {
        let store = make_empty();
        check(store.as_ref())?;
    }
    let store = make_empty();
    compare_and_upsert_has_one_winner(store.as_ref(), store.as_ref())
}

fn violation(check: &'static str, detail: String) -> ContractViolation {
    ContractViolation { check, detail }
}

/// Unwrap a store answer, turning a store error into a violation.
fn op<T>(
    check: &'static str,
    what: &str,
    r: Result<T, StoreError>,
) -> Result<T, ContractViolation> {
    r.map_err(|e| violation(check, format!("{what}: unexpected store error: {e}")))
}

fn ensure_eq<T: PartialEq + fmt::Debug>(
    check: &'static str,
    what: &str,
    got: T,
    want: T,
) -> ContractResult {
    if got == want {
        Ok(())
    } else {
        Err(violation(
            check,
            format!("{what}: got {got:?}, want {want:?}"),
        ))
    }
}

fn row(storage_key: &str, expiration: i64) -> TtlRow {
    TtlRow {
        storage_key: storage_key.to_owned(),
        expiration,
    }
}

/// `select` of a call key that was never written answers `None`.
pub fn select_missing_is_none(store: &dyn TtlStore) -> ContractResult {
    const C: &str = "select_missing_is_none";
    for key in ["missing", "", "sha256:00"] {
        let got = op(C, "select", store.select(key))?;
        ensure_eq(C, &format!("select({key:?})"), got, None)?;
    }
    Ok(())
}

/// Inserting with compare `None` into an empty slot wins and stores exactly
/// the row written.
pub fn insert_when_absent_wins(store: &dyn TtlStore) -> ContractResult {
    const C: &str = "insert_when_absent_wins";
    let r = row("sk-1", 1_000);
    let won = op(C, "insert", store.compare_and_upsert("ck", &r, None))?;
    ensure_eq(C, "insert into empty slot won", won, true)?;
    ensure_eq(
        C,
        "select after insert",
        op(C, "select", store.select("ck"))?,
        Some(r),
    )?;
    ensure_eq(
        C,
        "other key untouched",
        op(C, "select", store.select("ck2"))?,
        None,
    )
}

/// A second insert with compare `None` loses and leaves the first row.
pub fn second_insert_loses(store: &dyn TtlStore) -> ContractResult {
    const C: &str = "second_insert_loses";
    let first = row("sk-first", 1_000);
    let second = row("sk-second", 2_000);
    ensure_eq(
        C,
        "first insert won",
        op(C, "insert", store.compare_and_upsert("ck", &first, None))?,
        true,
    )?;
    ensure_eq(
        C,
        "second insert won",
        op(C, "insert", store.compare_and_upsert("ck", &second, None))?,
        false,
    )?;
    ensure_eq(
        C,
        "row after losing insert",
        op(C, "select", store.select("ck"))?,
        Some(first),
    )
}

/// An update whose compare value equals the stored storage key wins and
/// replaces the whole row (storage key and expiration, even an earlier one).
pub fn update_with_matching_compare_wins(store: &dyn TtlStore) -> ContractResult {
    const C: &str = "update_with_matching_compare_wins";
    let old = row("sk-old", 5_000);
    let new = row("sk-new", 4_000);
    op(C, "insert", store.compare_and_upsert("ck", &old, None))?;
    ensure_eq(
        C,
        "update with matching compare won",
        op(
            C,
            "update",
            store.compare_and_upsert("ck", &new, Some("sk-old")),
        )?,
        true,
    )?;
    ensure_eq(
        C,
        "row after update",
        op(C, "select", store.select("ck"))?,
        Some(new),
    )
}

/// An update whose compare value is stale (differs from the stored key)
/// loses and changes nothing.
pub fn update_with_stale_compare_loses(store: &dyn TtlStore) -> ContractResult {
    const C: &str = "update_with_stale_compare_loses";
    let current = row("sk-current", 5_000);
    op(C, "insert", store.compare_and_upsert("ck", &current, None))?;
    for stale in ["sk-old", "", "sk-current ", "SK-CURRENT"] {
        ensure_eq(
            C,
            &format!("update with stale compare {stale:?} won"),
            op(
                C,
                "update",
                store.compare_and_upsert("ck", &row("sk-intruder", 9_000), Some(stale)),
            )?,
            false,
        )?;
    }
    ensure_eq(
        C,
        "row after stale updates",
        op(C, "select", store.select("ck"))?,
        Some(current),
    )
}

/// A write with a `Some` compare value whose row has meanwhile disappeared
/// (removed by GC) inserts: nobody else holds a mapping.
pub fn compare_on_absent_row_inserts(store: &dyn TtlStore) -> ContractResult {
    const C: &str = "compare_on_absent_row_inserts";
    let r = row("sk-fresh", 3_000);
    ensure_eq(
        C,
        "compare write on absent row won",
        op(
            C,
            "write",
            store.compare_and_upsert("ck", &r, Some("sk-expired")),
        )?,
        true,
    )?;
    ensure_eq(
        C,
        "row after write",
        op(C, "select", store.select("ck"))?,
        Some(r),
    )
}

/// T-4: two writers racing from the same compare value (none, or the same
/// expired key) never both win; exactly one does and its row is stored.
/// `a` and `b` are two views of the same data (the same store twice, or two
/// connections to one database).
pub fn compare_and_upsert_has_one_winner(a: &dyn TtlStore, b: &dyn TtlStore) -> ContractResult {
    const C: &str = "compare_and_upsert_has_one_winner";
    let writers: [(&str, &dyn TtlStore); 2] = [("a", a), ("b", b)];
    for (case, first_is_a) in [(0, true), (1, false), (2, true), (3, false), (4, true)] {
        let ck = format!("race-{case}");
        let compare = match case {
            // Both saw no row.
            0 | 1 => None,
            // Both saw the same expired row.
            2 | 3 => {
                op(
                    C,
                    "seed",
                    a.compare_and_upsert(&ck, &row("sk-expired", 10), None),
                )?;
                Some("sk-expired")
            }
            // Both saw an expired row that GC has since removed.
            _ => Some("sk-gone"),
        };
        let (first, second) = if first_is_a {
            (writers[0], writers[1])
        } else {
            (writers[1], writers[0])
        };
        let r1 = row(&format!("sk-{}-{case}", first.0), 100);
        let r2 = row(&format!("sk-{}-{case}", second.0), 200);
        let w1 = op(
            C,
            "first write",
            first.1.compare_and_upsert(&ck, &r1, compare),
        )?;
        let w2 = op(
            C,
            "second write",
            second.1.compare_and_upsert(&ck, &r2, compare),
        )?;
        ensure_eq(
            C,
            &format!("case {case}: (first, second) won"),
            (w1, w2),
            (true, false),
        )?;
        for (name, view) in writers {
            ensure_eq(
                C,
                &format!("case {case}: row seen by {name}"),
                op(C, "select", view.select(&ck))?,
                Some(r1.clone()),
            )?;
        }
    }
    // A writer holding the compare value wins over one that saw no row.
    op(
        C,
        "seed",
        a.compare_and_upsert("mixed", &row("sk-k", 1), None),
    )?;
    let none_won = op(
        C,
        "none",
        b.compare_and_upsert("mixed", &row("sk-b", 5), None),
    )?;
    let cmp_won = op(
        C,
        "cmp",
        a.compare_and_upsert("mixed", &row("sk-a", 5), Some("sk-k")),
    )?;
    ensure_eq(
        C,
        "mixed: (none, compare) won",
        (none_won, cmp_won),
        (false, true),
    )?;
    ensure_eq(
        C,
        "mixed row",
        op(C, "select", b.select("mixed"))?,
        Some(row("sk-a", 5)),
    )
}

/// Rows read back exactly as written, whatever the keys (empty, unicode,
/// quotes, long) and expirations (`i64::MIN`..`i64::MAX`); writes to one call
/// key never touch another.
pub fn rows_roundtrip_exactly(store: &dyn TtlStore) -> ContractResult {
    const C: &str = "rows_roundtrip_exactly";
    let long = "k".repeat(10_000);
    let cases: Vec<(String, TtlRow)> = vec![
        (String::new(), row("", i64::MIN)),
        ("ü-ключ-🔑".into(), row("sk-🔑", -1)),
        ("a'b\"c;-- DROP TABLE calls".into(), row("'; --", 0)),
        ("  spaced  ".into(), row("  spaced sk  ", 1)),
        (long.clone(), row(&long, i64::MAX)),
        (
            "sha256:0123456789abcdef".into(),
            row("sha256:fedcba9876543210", 1_700_000_000_000),
        ),
    ];
    for (ck, r) in &cases {
        let won = op(C, "insert", store.compare_and_upsert(ck, r, None))?;
        ensure_eq(C, &format!("insert {:.40?} won", ck), won, true)?;
    }
    for (ck, r) in &cases {
        let got = op(C, "select", store.select(ck))?;
        ensure_eq(C, &format!("select {:.40?}", ck), got, Some(r.clone()))?;
    }
    // Overwrite one; the rest stay exactly as they were.
    let (ck0, r0) = &cases[1];
    let replaced = row("sk-replaced", i64::MAX - 1);
    let won = op(
        C,
        "update",
        store.compare_and_upsert(ck0, &replaced, Some(&r0.storage_key)),
    )?;
    ensure_eq(C, "update won", won, true)?;
    for (i, (ck, r)) in cases.iter().enumerate() {
        let want = if i == 1 { replaced.clone() } else { r.clone() };
        let got = op(C, "select", store.select(ck))?;
        ensure_eq(
            C,
            &format!("select {:.40?} after update", ck),
            got,
            Some(want),
        )?;
    }
    Ok(())
}

/// T-5: GC deletes only rows with `expiration < now` (a row expiring exactly
/// at `now` is live), at most `batch` per call, never a live row; `batch`
/// 0 deletes nothing; [`gc_all`] finishes the job. Uses more than
/// `2 * GC_BATCH` expired rows.
pub fn gc_deletes_only_expired_in_batches(store: &dyn TtlStore) -> ContractResult {
    const C: &str = "gc_deletes_only_expired_in_batches";
    let now: i64 = 1_000_000;
    let extra = 42usize;
    let n_expired = 2 * GC_BATCH + extra;
    let expired_at = |i: usize| -> i64 {
        if i % 500 == 0 {
            i64::MIN
        } else {
            now - 1 - (i % 97) as i64
        }
    };
    // Live rows: at the boundary (== now), just after, far future.
    let live_at = |i: usize| -> i64 {
        match i % 3 {
            0 => now,
            1 => now + 1 + i as i64,
            _ => i64::MAX,
        }
    };
    let n_live = 60usize;
    // Interleave inserts so expired and live rows are mixed in key order.
    for i in 0..n_expired {
        let ck = format!("gc-{i:05}-x");
        op(
            C,
            "insert",
            store.compare_and_upsert(&ck, &row(&format!("sk-x{i}"), expired_at(i)), None),
        )?;
        if i < n_live {
            let ck = format!("gc-{i:05}-l");
            op(
                C,
                "insert",
                store.compare_and_upsert(&ck, &row(&format!("sk-l{i}"), live_at(i)), None),
            )?;
        }
    }

    ensure_eq(
        C,
        "gc with batch 0",
        op(C, "gc", store.gc_expired(now, 0))?,
        0,
    )?;
    ensure_eq(
        C,
        "gc at i64::MIN",
        op(C, "gc", store.gc_expired(i64::MIN, GC_BATCH))?,
        0,
    )?;
    ensure_eq(
        C,
        "gc batch of 5",
        op(C, "gc", store.gc_expired(now, 5))?,
        5,
    )?;
    let mut remaining = n_expired - 5;
    let mut rounds = 0;
    while remaining > 0 {
        let want = remaining.min(GC_BATCH);
        let got = op(C, "gc", store.gc_expired(now, GC_BATCH))?;
        ensure_eq(C, &format!("gc round {rounds} deleted"), got, want)?;
        remaining -= want;
        rounds += 1;
    }
    ensure_eq(C, "gc rounds of GC_BATCH", rounds, 3)?;
    ensure_eq(
        C,
        "gc after all expired gone",
        op(C, "gc", store.gc_expired(now, GC_BATCH))?,
        0,
    )?;

    for i in 0..n_expired {
        let ck = format!("gc-{i:05}-x");
        ensure_eq(
            C,
            &format!("expired row {ck}"),
            op(C, "select", store.select(&ck))?,
            None,
        )?;
    }
    for i in 0..n_live {
        let ck = format!("gc-{i:05}-l");
        let want = row(&format!("sk-l{i}"), live_at(i));
        ensure_eq(
            C,
            &format!("live row {ck}"),
            op(C, "select", store.select(&ck))?,
            Some(want),
        )?;
    }

    // One millisecond later the boundary rows have expired, nothing else.
    let boundary = (0..n_live).filter(|i| live_at(*i) == now).count();
    ensure_eq(
        C,
        "gc_all at now + 1",
        op(C, "gc_all", gc_all(store, now + 1))?,
        boundary,
    )?;
    for i in 0..n_live {
        let ck = format!("gc-{i:05}-l");
        let got = op(C, "select", store.select(&ck))?;
        let want = (live_at(i) > now).then(|| row(&format!("sk-l{i}"), live_at(i)));
        ensure_eq(C, &format!("row {ck} after gc_all"), got, want)?;
    }
    // A row expiring at i64::MAX is never collected.
    let forever = (0..n_live).filter(|i| live_at(*i) == i64::MAX).count();
    let rest = n_live - boundary - forever;
    ensure_eq(
        C,
        "gc_all at i64::MAX",
        op(C, "gc_all", gc_all(store, i64::MAX))?,
        rest,
    )?;
    let survivors = (0..n_live)
        .filter(|i| matches!(store.select(&format!("gc-{i:05}-l")), Ok(Some(_))))
        .count();
    ensure_eq(C, "rows expiring at i64::MAX survive", survivors, forever)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ttl::{MemoryTtlStore, SqliteTtlStore};

    fn sqlite_file_factory(dir: &tempfile::TempDir) -> impl FnMut() -> Box<dyn TtlStore> + '_ {
        let mut n = 0u32;
        move || {
            n += 1;
            let path = dir.path().join(format!("contract-{n}.db"));
            Box::new(SqliteTtlStore::open(path).unwrap())
        }
    }

    fn sqlite_memory() -> Box<dyn TtlStore> {
        Box::new(SqliteTtlStore::open_in_memory().unwrap())
    }

    fn memory() -> Box<dyn TtlStore> {
        Box::new(MemoryTtlStore::new())
    }

    #[test]
    fn t1_contract_sqlite_file() {
        let dir = tempfile::tempdir().unwrap();
        run_all(&mut sqlite_file_factory(&dir)).unwrap();
    }

    #[test]
    fn t1_contract_sqlite_memory() {
        run_all(&mut sqlite_memory).unwrap();
    }

    #[test]
    fn t1_contract_memory() {
        run_all(&mut memory).unwrap();
    }

    #[test]
    fn t4_compare_and_upsert_has_one_winner() {
        let m = MemoryTtlStore::new();
        compare_and_upsert_has_one_winner(&m, &m).unwrap();
        let s = SqliteTtlStore::open_in_memory().unwrap();
        compare_and_upsert_has_one_winner(&s, &s).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.db");
        let a = SqliteTtlStore::open(&path).unwrap();
        let b = SqliteTtlStore::open(&path).unwrap();
        compare_and_upsert_has_one_winner(&a, &b).unwrap();
    }

    #[test]
    fn t5_gc_deletes_only_expired_in_batches() {
        gc_deletes_only_expired_in_batches(&MemoryTtlStore::new()).unwrap();
        gc_deletes_only_expired_in_batches(&SqliteTtlStore::open_in_memory().unwrap()).unwrap();
    }

    /// A store that breaks one rule, to show the suite notices.
    struct Broken {
        inner: MemoryTtlStore,
        ignore_compare: bool,
        gc_live: bool,
    }

    impl TtlStore for Broken {
        fn select(&self, call_key: &str) -> Result<Option<TtlRow>, StoreError> {
            self.inner.select(call_key)
        }
        fn compare_and_upsert(
            &self,
            call_key: &str,
            row: &TtlRow,
            compare: Option<&str>,
        ) -> Result<bool, StoreError> {
            if self.ignore_compare {
                let current = self.inner.select(call_key)?;
                let compare = current.as_ref().map(|r| r.storage_key.as_str());
                self.inner.compare_and_upsert(call_key, row, compare)
            } else {
                self.inner.compare_and_upsert(call_key, row, compare)
            }
        }
        fn gc_expired(&self, now: i64, batch: usize) -> Result<usize, StoreError> {
            let now = if self.gc_live {
                now.saturating_add(1)
            } else {
                now
            };
            self.inner.gc_expired(now, batch)
        }
    }

    #[test]
    fn contract_detects_broken_stores() {
        let mut last_write_wins = || -> Box<dyn TtlStore> {
            Box::new(Broken {
                inner: MemoryTtlStore::new(),
                ignore_compare: true,
                gc_live: false,
            })
        };
        let err = run_all(&mut last_write_wins).unwrap_err();
        assert_eq!(err.check, "second_insert_loses", "{err}");

        let store = Broken {
            inner: MemoryTtlStore::new(),
            ignore_compare: true,
            gc_live: false,
        };
        let err = compare_and_upsert_has_one_winner(&store, &store).unwrap_err();
        assert_eq!(err.check, "compare_and_upsert_has_one_winner");

        let store = Broken {
            inner: MemoryTtlStore::new(),
            ignore_compare: false,
            gc_live: true,
        };
        let err = gc_deletes_only_expired_in_batches(&store).unwrap_err();
        assert_eq!(err.check, "gc_deletes_only_expired_in_batches");
        assert!(err.to_string().contains("contract violated"), "{err}");
    }

    #[test]
    fn contract_reports_store_errors_as_violations() {
        let store = MemoryTtlStore::new();
        store.set_faults(crate::ttl::StoreFaults {
            fail_all: true,
            ..Default::default()
        });
        let err = select_missing_is_none(&store).unwrap_err();
        assert!(err.detail.contains("unexpected store error"), "{err}");
    }
}
