//! S-1: closing a session releases every handle it holds, exactly once.
//! The cost per handle must stay flat as the session grows.
//!
//! Each measured close is of a session that holds N refs, one on each of N
//! distinct completed entries that nobody else holds, each with a release
//! hook: closing it removes every entry from every index (C-9, C-12) and
//! runs every hook outside the lock. Building the session is not timed.
//! Each close is the first on a brand-new cache; at 100k a second bench
//! opens and closes its sessions on one long-lived cache, as a service does.
//! The baseline is a `Vec` of N `Arc`s, each with a drop hook, dropped at
//! once: the floor of "give back N refcounted things".

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{criterion, fill, ids_named, runtime, value, Value};
use cache_core::facade::Cache;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

/// A payload with a drop hook, like a cached result with a release hook.
struct Hooked {
    _payload: Value,
    hook: Box<dyn FnMut() + Send + Sync>,
}

impl Drop for Hooked {
    fn drop(&mut self) {
        (self.hook)();
    }
}

/// Opens a session on `cache` holding one ref on each of `ids` (fresh
/// entries with hooks), then times its close alone.
fn timed_close(
    rt: &tokio::runtime::Runtime,
    cache: &Cache<Value>,
    ids: &[cache_core::id::CallId],
    v: &Value,
) -> Duration {
    let session = cache.open_session();
    rt.block_on(fill(&session, ids, v, true));
    assert_eq!(session.refs(), ids.len());
    let start = Instant::now();
    let summary = session.close().expect("an open session closes");
    let took = start.elapsed();
    assert_eq!((summary.released, cache.live_entries()), (ids.len(), 0));
    took
}

fn session_close(c: &mut Criterion) {
    let rt = runtime();
    let v = value();
    let all = ids_named("held", 100_000);
    let mut g = c.benchmark_group("session_close");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        let ids = &all[..n];
        g.throughput(Throughput::Elements(n as u64));
        // One close per sample: building a 100k session takes far longer
        // than closing it, so let criterion ask for as few as it can.
        g.warm_up_time(Duration::from_millis(1));
        g.measurement_time(Duration::from_millis(if n >= 10_000 { 1 } else { 100 }));
        // Each close is the first on a brand-new cache, as since the bench
        // was written; the one below measures a long-lived cache.
        g.bench_with_input(BenchmarkId::new("facade", n), &n, |b, _| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| timed_close(&rt, &Cache::builder().build(), ids, &v))
                    .sum()
            })
        });
        if n == 100_000 {
            // One cache kept across samples, as a service keeps it: each
            // sample opens, fills and closes a session on it.
            let cache: Cache<Value> = Cache::builder().build();
            g.bench_with_input(BenchmarkId::new("facade_long_lived", n), &n, |b, _| {
                b.iter_custom(|iters| (0..iters).map(|_| timed_close(&rt, &cache, ids, &v)).sum())
            });
        }
        g.bench_with_input(BenchmarkId::new("vec_of_arcs_floor", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let held: Vec<Arc<Hooked>> = (0..n)
                        .map(|_| {
                            Arc::new(Hooked {
                                _payload: v.clone(),
                                hook: Box::new(|| {}),
                            })
                        })
                        .collect();
                    let start = Instant::now();
                    drop(black_box(held));
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = sessions;
    config = criterion();
    targets = session_close
}
criterion_main!(sessions);
