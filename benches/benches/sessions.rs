//! S-1: closing a session releases every handle it holds, exactly once.
//! The cost per handle must stay flat as the session grows.
//!
//! Each measured close is of a session that holds N refs, one on each of N
//! distinct completed entries that nobody else holds, each with a release
//! hook: closing it removes every entry from every index (C-9, C-12) and
//! runs every hook outside the lock. Building the session is not timed.
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
        g.bench_with_input(BenchmarkId::new("facade", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let cache: Cache<Value> = Cache::builder(1).build();
                    let session = cache.open_session();
                    rt.block_on(fill(&session, ids, &v, true));
                    assert_eq!(session.refs(), n);
                    let start = Instant::now();
                    let summary = session.close().expect("an open session closes");
                    total += start.elapsed();
                    assert_eq!((summary.released, cache.live_entries()), (n, 0));
                }
                total
            })
        });
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
