//! TTL metadata (T-1, T-4, T-5): SQLite on a file in WAL mode against the
//! in-memory store, through the same `TtlStore` trait.
//!
//! `select_cas`: what a TTL'd call does to the store: select the row for a
//! call key, then compare-and-upsert a new storage key against the one it
//! read (T-4), over 1024 rows, every write winning. `gc_100k`: `gc_all`
//! deleting 100k expired rows in batches (T-5); filling the store is not
//! timed. The in-memory store is the baseline of both.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{criterion, hot_ids, visit};
use cache_core::ttl::{gc_all, MemoryTtlStore, SqliteTtlStore, TtlRow, TtlStore};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

const ROWS: usize = 1024;
const GC_ROWS: usize = 100_000;
const NOW: i64 = 1_700_000_000_000;

fn stores(dir: &Path) -> Vec<(&'static str, Arc<dyn TtlStore>)> {
    let sqlite = SqliteTtlStore::open(dir.join("ttl.db")).expect("a SQLite TTL store");
    vec![
        ("sqlite_wal_file", Arc::new(sqlite)),
        ("memory", Arc::new(MemoryTtlStore::new())),
    ]
}

fn select_cas(c: &mut Criterion) {
    let keys: Vec<String> = hot_ids(ROWS).iter().map(|id| id.call_key()).collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut g = c.benchmark_group("ttl_select_cas");
    g.throughput(Throughput::Elements(1));
    for (name, store) in stores(dir.path()) {
        for (i, key) in keys.iter().enumerate() {
            let row = TtlRow {
                storage_key: format!("{key}@0"),
                expiration: NOW + i as i64,
            };
            assert!(store.compare_and_upsert(key, &row, None).expect("insert"));
        }
        g.bench_function(name, |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let key = &keys[visit(i, keys.len())];
                let old = store.select(key).expect("select").expect("a row");
                let row = TtlRow {
                    storage_key: format!("{key}@{i}"),
                    expiration: NOW + i as i64,
                };
                let won = store
                    .compare_and_upsert(key, &row, Some(&old.storage_key))
                    .expect("compare-and-upsert");
                assert!(black_box(won), "T-4: the only writer wins");
            })
        });
    }
    g.finish();
}

/// Fills `path`'s `calls` table with `n` expired rows in one transaction
/// (a second connection; the store's own API writes a row at a time).
fn fill_sqlite(path: &Path, n: usize) {
    let mut conn = rusqlite::Connection::open(path).expect("open");
    let tx = conn.transaction().expect("transaction");
    {
        let mut insert = tx
            .prepare("INSERT INTO calls (call_key, storage_key, expiration) VALUES (?1, ?2, ?3)")
            .expect("prepare");
        for i in 0..n {
            let key = format!("sha256:{i:064x}");
            insert
                .execute(rusqlite::params![
                    key,
                    format!("{key}@s"),
                    NOW - 1 - i as i64
                ])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn gc(c: &mut Criterion) {
    let mut g = c.benchmark_group("ttl_gc_100k");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_millis(1));
    g.throughput(Throughput::Elements(GC_ROWS as u64));
    g.bench_function(BenchmarkId::new("sqlite_wal_file", GC_ROWS), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let path = dir.path().join("ttl.db");
                let store = SqliteTtlStore::open(&path).expect("a SQLite TTL store");
                fill_sqlite(&path, GC_ROWS);
                let start = Instant::now();
                let deleted = gc_all(&store, NOW).expect("gc");
                total += start.elapsed();
                assert_eq!(deleted, GC_ROWS);
            }
            total
        })
    });
    g.bench_function(BenchmarkId::new("memory", GC_ROWS), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = MemoryTtlStore::new();
                for i in 0..GC_ROWS {
                    let key = format!("sha256:{i:064x}");
                    let row = TtlRow {
                        storage_key: format!("{key}@s"),
                        expiration: NOW - 1 - i as i64,
                    };
                    store.compare_and_upsert(&key, &row, None).expect("insert");
                }
                let start = Instant::now();
                let deleted = gc_all(&store, NOW).expect("gc");
                total += start.elapsed();
                assert_eq!(deleted, GC_ROWS);
            }
            total
        })
    });
    g.finish();
}

criterion_group! {
    name = ttl;
    config = criterion();
    targets = select_cas, gc
}
criterion_main!(ttl);
