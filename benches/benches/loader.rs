//! The read-through loader (SPEC §7) against moka 0.12, in the same run.
//!
//! - a local-tier hit through `once` vs moka `sync::Cache::get`;
//! - a miss: `once` loads and writes a fresh key, vs moka
//!   `future::Cache::get_with` on a fresh key (each side then forgets the
//!   key — `delete` / `invalidate` — so its next visit misses again);
//! - a hundred callers of one cold key (one load) vs the same burst on
//!   moka `get_with`.
//!
//! Values are 32-byte strings on both sides (the loader's local tier holds
//! them encoded, so a hit decodes; moka's hands out a clone). The loader
//! has no remote and no bus: the local tier alone, as an in-process cache.
//! Criterion's medians are info rows; the ratios `ci/bench-report` gates
//! come from paired runs (`benches::paired`), written as
//! `paired_loader_<name>.json`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::paired::paired;
use benches::{criterion, in_task, quick, runtime, visit};
use cache_core::facade::ManualClock;
use cache_core::loader::{CallOptions, Loader, LoaderOptions, Source};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use tokio::runtime::Runtime;

type V = String;
type MokaSync = moka::sync::Cache<String, V>;
type MokaFuture = moka::future::Cache<String, V>;

const HOT: usize = 1024;
const BURST: usize = 100;

fn value() -> V {
    "v".repeat(32)
}

fn keys(prefix: &str, n: usize) -> Arc<Vec<String>> {
    Arc::new((0..n).map(|i| format!("{prefix}{i}")).collect())
}

/// A loader with a local tier big enough for every key, a long TTL and a
/// clock that never moves (nothing expires during a bench).
fn loader() -> Loader<V> {
    let mut opts = LoaderOptions::new("bench");
    opts.local_capacity = 16 * 1024;
    opts.ttl_ms = 3_600_000;
    opts.local_ttl_ms = 3_600_000;
    Loader::builder(opts, Arc::new(ManualClock::new(1_000)))
        .build()
        .expect("bench loader options are valid")
}

fn hot_loader(rt: &Runtime, keys: &[String]) -> Loader<V> {
    let l = loader();
    rt.block_on(async {
        for k in keys {
            l.set(k.as_str(), value(), CallOptions::default())
                .await
                .expect("set");
        }
    });
    l
}

fn hot_moka(keys: &[String]) -> MokaSync {
    let m = MokaSync::new(HOT as u64 * 2);
    for k in keys {
        m.insert(k.clone(), value());
    }
    m
}

async fn never_loads(_: cache_core::loader::Key) -> Result<V, cache_core::error::ResolverError> {
    unreachable!("a local hit never calls the loader")
}

fn loader_hits(rt: &Runtime, l: &Loader<V>, keys: &Arc<Vec<String>>, iters: u64) -> Duration {
    let (l, keys) = (l.clone(), keys.clone());
    in_task(rt, async move {
        let start = Instant::now();
        for i in 0..iters {
            let key = keys[visit(i, keys.len())].as_str();
            let got = l.once(key, CallOptions::default(), never_loads).await;
            debug_assert_eq!(got.as_ref().map(|g| g.source).ok(), Some(Source::Local));
            black_box(got.ok());
        }
        start.elapsed()
    })
}

fn moka_gets(m: &MokaSync, keys: &[String], iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        black_box(m.get(&keys[visit(i, keys.len())]));
    }
    start.elapsed()
}

fn loader_misses(rt: &Runtime, l: &Loader<V>, keys: &Arc<Vec<String>>, iters: u64) -> Duration {
    let (l, keys) = (l.clone(), keys.clone());
    in_task(rt, async move {
        let start = Instant::now();
        for i in 0..iters {
            let key = keys[visit(i, keys.len())].as_str();
            let got = l
                .once(key, CallOptions::default(), |_| async { Ok(value()) })
                .await;
            debug_assert_eq!(got.as_ref().map(|g| g.source).ok(), Some(Source::Loader));
            black_box(got.ok());
            l.delete(key).await.expect("delete");
        }
        start.elapsed()
    })
}

fn moka_misses(rt: &Runtime, m: &MokaFuture, keys: &Arc<Vec<String>>, iters: u64) -> Duration {
    let (m, keys) = (m.clone(), keys.clone());
    in_task(rt, async move {
        let start = Instant::now();
        for i in 0..iters {
            let key = &keys[visit(i, keys.len())];
            black_box(m.get_with(key.clone(), async { value() }).await);
            m.invalidate(key).await;
        }
        start.elapsed()
    })
}

fn loader_bursts(rt: &Runtime, l: &Loader<V>, keys: &Arc<Vec<String>>, iters: u64) -> Duration {
    let (l, keys) = (l.clone(), keys.clone());
    in_task(rt, async move {
        let start = Instant::now();
        for i in 0..iters {
            let key = keys[visit(i, keys.len())].as_str();
            let callers =
                (0..BURST).map(|_| l.once(key, CallOptions::default(), |_| async { Ok(value()) }));
            let got = join_all(callers).await;
            debug_assert_eq!(
                got.iter().filter(|g| !g.as_ref().unwrap().joined).count(),
                1
            );
            black_box(&got);
            l.delete(key).await.expect("delete");
        }
        start.elapsed()
    })
}

fn moka_bursts(rt: &Runtime, m: &MokaFuture, keys: &Arc<Vec<String>>, iters: u64) -> Duration {
    let (m, keys) = (m.clone(), keys.clone());
    in_task(rt, async move {
        let start = Instant::now();
        for i in 0..iters {
            let key = &keys[visit(i, keys.len())];
            let callers = (0..BURST).map(|_| m.get_with(key.clone(), async { value() }));
            black_box(join_all(callers).await);
            m.invalidate(key).await;
        }
        start.elapsed()
    })
}

/// Criterion's own medians (info rows in the report).
fn loader_benches(c: &mut Criterion) {
    let rt = runtime();
    let hot = keys("hot", HOT);

    let mut g = c.benchmark_group("loader_local_hit");
    g.throughput(Throughput::Elements(1));
    let l = hot_loader(&rt, &hot);
    g.bench_function("once", |b| b.iter_custom(|n| loader_hits(&rt, &l, &hot, n)));
    let m = hot_moka(&hot);
    g.bench_function("moka_sync_get", |b| {
        b.iter_custom(|n| moka_gets(&m, &hot, n))
    });
    g.finish();

    let fresh = keys("miss", 4096);
    let mut g = c.benchmark_group("loader_miss");
    g.throughput(Throughput::Elements(1));
    let l = loader();
    g.bench_function("once_load_write", |b| {
        b.iter_custom(|n| loader_misses(&rt, &l, &fresh, n))
    });
    let m = MokaFuture::new(8192);
    g.bench_function("moka_future_get_with", |b| {
        b.iter_custom(|n| moka_misses(&rt, &m, &fresh, n))
    });
    g.finish();

    let mut g = c.benchmark_group("loader_burst");
    g.throughput(Throughput::Elements(BURST as u64));
    let l = loader();
    g.bench_with_input(BenchmarkId::new("once", BURST), &BURST, |b, _| {
        b.iter_custom(|n| loader_bursts(&rt, &l, &fresh, n))
    });
    let c = l.counters();
    assert_eq!(
        c.flight_joins,
        c.loads * (BURST as u64 - 1),
        "one load per burst (L-1)"
    );
    let m = MokaFuture::new(8192);
    g.bench_with_input(
        BenchmarkId::new("moka_future_get_with", BURST),
        &BURST,
        |b, _| b.iter_custom(|n| moka_bursts(&rt, &m, &fresh, n)),
    );
    g.finish();
}

/// The gated ratios, each ours and its baseline in alternating rounds.
fn paired_ratios() {
    let rounds = if quick() { 51 } else { 201 };
    let round = Duration::from_millis(3);
    let rt = runtime();

    let hot = keys("hot", HOT);
    let l = hot_loader(&rt, &hot);
    let m = hot_moka(&hot);
    paired(
        rounds,
        round,
        |n| loader_hits(&rt, &l, &hot, n),
        |n| moka_gets(&m, &hot, n),
    )
    .report("loader_local_hit");
    let c = l.counters();
    assert_eq!(
        (c.loads, c.miss),
        (0, 0),
        "every hit came from the local tier"
    );

    let fresh = keys("miss", 4096);
    let l = loader();
    let m = MokaFuture::new(8192);
    paired(
        rounds,
        round,
        |n| loader_misses(&rt, &l, &fresh, n),
        |n| moka_misses(&rt, &m, &fresh, n),
    )
    .report("loader_miss");

    let l = loader();
    let m = MokaFuture::new(8192);
    paired(
        rounds,
        Duration::from_millis(5),
        |n| loader_bursts(&rt, &l, &fresh, n),
        |n| moka_bursts(&rt, &m, &fresh, n),
    )
    .report("loader_burst");
    let c = l.counters();
    assert_eq!(
        c.flight_joins,
        c.loads * (BURST as u64 - 1),
        "one load per burst (L-1)"
    );
}

criterion_group! {
    name = loader_group;
    config = criterion();
    targets = loader_benches
}

fn main() {
    let listing = std::env::args().any(|a| a == "--list");
    loader_group();
    Criterion::default().configure_from_args().final_summary();
    // `BENCH_PAIRS=0` skips the pairs (a run of the criterion group only).
    let pairs = std::env::var("BENCH_PAIRS").map_or(true, |v| v != "0");
    if !listing && pairs {
        paired_ratios();
    }
}
