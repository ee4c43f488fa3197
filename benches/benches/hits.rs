//! Hits, misses and joins: the cache against moka 0.12 and a locked map.
//!
//! Every "ours" measurement takes a ref and gives it back, as a reader of a
//! refcounted cache does: on the state machine `begin_call` then `release`,
//! on the async API `get_or_init_call` then dropping the result (a caller
//! without a session holds its own ref, released on drop). The baselines do
//! the same work in their own terms: moka's `get_with` hands out a clone of
//! the value (dropped at once); the locked map bumps and drops a refcount.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::paired::paired;
use benches::workloads::{
    async_hits, async_misses, floor_hits, machine_hits, moka_hits, moka_keys, moka_misses,
    MokaFuture,
};
use benches::{
    content_pairs, criterion, facade_with, hot_ids, ids_named, in_task, machine_with, never, quick,
    round_robin, runtime, value, visit, LockedMap, Value, HOT_KEYS,
};
use cache_core::facade::{Cache, CallKey, Ctx};
use cache_core::id::CallId;
use cache_core::machine::{run_releases, CallCache, CallRequest, Caller, Decision, Resolved};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use tokio::runtime::Runtime;

type MokaSync = moka::sync::Cache<Arc<str>, Value>;

/// C-3.1 storage hits over 1024 hot keys.
fn storage_hit(c: &mut Criterion) {
    let ids = hot_ids(HOT_KEYS);
    let keys = moka_keys(&ids);
    let v = value();
    let mut g = c.benchmark_group("storage_hit");
    g.throughput(Throughput::Elements(1));

    let mut machine = machine_with(&ids, &v);
    g.bench_function("machine", |b| {
        b.iter_custom(|iters| machine_hits(&mut machine, &ids, iters))
    });

    let floor = LockedMap::new(ids.iter().map(|id| id.call_key()), v.clone());
    g.bench_function("locked_map_floor", |b| {
        b.iter_custom(|iters| floor_hits(&floor, &keys, iters))
    });

    let rt = runtime();
    let (cache, _holder) = facade_with(&rt, &ids, &v);
    let shared_ids = Arc::new(ids.clone());
    g.bench_function("async_api", |b| {
        b.iter_custom(|iters| async_hits(&rt, &cache, &shared_ids, iters))
    });

    let moka_f = moka_future_with(&rt, &keys, &v);
    let moka_s: MokaSync = MokaSync::new(HOT_KEYS as u64 * 2);
    for k in &keys {
        moka_s.insert(k.clone(), v.clone());
    }
    let shared_keys = Arc::new(keys.clone());
    g.bench_function("moka_future_get_with", |b| {
        b.iter_custom(|iters| moka_hits(&rt, &moka_f, &shared_keys, iters))
    });
    g.bench_function("moka_sync_get_with", |b| {
        round_robin(b, keys.len(), |n| {
            let key = &keys[n];
            black_box(moka_s.get_with(key.clone(), never));
        })
    });
    g.finish();
}

/// moka's future cache holding `v` under every key.
fn moka_future_with(rt: &Runtime, keys: &[Arc<str>], v: &Value) -> MokaFuture {
    let moka: MokaFuture = MokaFuture::new(keys.len() as u64 * 2);
    rt.block_on(async {
        for k in keys {
            moka.insert(k.clone(), v.clone()).await;
        }
    });
    moka
}

/// C-3.2 content hits: a different recipe with a stored content digest.
fn content_hit(c: &mut Criterion) {
    let pairs = content_pairs(HOT_KEYS);
    let stored: Vec<CallId> = pairs.iter().map(|(s, _)| s.clone()).collect();
    let v = value();
    let mut g = c.benchmark_group("content_hit");
    g.throughput(Throughput::Elements(1));

    let mut machine = machine_with(&stored, &v);
    let caller = Caller::default();
    g.bench_function("machine", |b| {
        round_robin(b, pairs.len(), |n| {
            let id = &pairs[n].1;
            let begin = machine.begin_call(&caller, CallRequest::new(id.clone()));
            let Ok(Decision::Hit(served)) = begin.outcome else {
                panic!("a content hit")
            };
            debug_assert!(served.content_hit);
            black_box(&served.value);
            machine.release(served.handle).expect("a live handle");
        })
    });

    let rt = runtime();
    let (cache, _holder) = facade_with(&rt, &stored, &v);
    let shared_pairs = Arc::new(pairs.clone());
    g.bench_function("async_api", |b| {
        b.iter_custom(|iters| {
            let (cache, pairs) = (cache.clone(), shared_pairs.clone());
            in_task(&rt, async move {
                let ctx = Ctx::new();
                let start = Instant::now();
                for i in 0..iters {
                    let id = &pairs[visit(i, pairs.len())].1;
                    let r = cache
                        .get_or_init_call(&ctx, CallKey::new(id.clone()), |_| async { never() })
                        .await
                        .expect("a content hit");
                    debug_assert!(r.content_hit());
                    black_box(r.value());
                }
                start.elapsed()
            })
        })
    });

    // The baseline: the same lookup a plain map would do for a hit.
    let keys = moka_keys(&stored);
    let floor = LockedMap::new(stored.iter().map(|id| id.call_key()), v.clone());
    g.bench_function("locked_map_floor", |b| {
        round_robin(b, keys.len(), |n| {
            let key = &keys[n];
            black_box(floor.acquire(key).expect("a hit"));
            floor.release(key);
        })
    });
    g.finish();
}

/// C-3.4 then C-6 and C-12: a miss runs the resolver, completes, and the
/// only ref is released, so the entry leaves every index (the key is fresh
/// again for the next visit).
fn miss_complete_release(c: &mut Criterion) {
    let ids = ids_named("miss", 4096);
    let keys = moka_keys(&ids);
    let v = value();
    let mut g = c.benchmark_group("miss_complete_release");
    g.throughput(Throughput::Elements(1));

    let mut machine: CallCache<Value> = CallCache::new(1);
    let caller = Caller::default();
    g.bench_function("machine", |b| {
        round_robin(b, ids.len(), |n| {
            let id = &ids[n];
            let Ok(Decision::Run(order)) = machine
                .begin_call(&caller, CallRequest::new(id.clone()))
                .outcome
            else {
                panic!("a fresh key misses")
            };
            let done = machine
                .complete(order.entry, Ok(Resolved::value(v.clone())))
                .expect("completion");
            for (_, served) in done.served {
                let served = served.expect("success");
                black_box(&served.value);
                run_releases(machine.release(served.handle).expect("live")).expect("no hook");
            }
        })
    });

    let rt = runtime();
    let cache: Cache<Value> = Cache::builder().build();
    let (shared_ids, shared_keys) = (Arc::new(ids.clone()), Arc::new(keys.clone()));
    g.bench_function("async_api", |b| {
        b.iter_custom(|iters| async_misses(&rt, &cache, &shared_ids, &v, iters))
    });
    assert_eq!(cache.live_entries(), 0, "INV-1 after the bench");

    let moka_f: MokaFuture = MokaFuture::new(8192);
    g.bench_function("moka_future_get_with_invalidate", |b| {
        b.iter_custom(|iters| moka_misses(&rt, &moka_f, &shared_keys, &v, iters))
    });
    let moka_s: MokaSync = MokaSync::new(8192);
    g.bench_function("moka_sync_get_with_invalidate", |b| {
        round_robin(b, keys.len(), |n| {
            let key = &keys[n];
            black_box(moka_s.get_with(key.clone(), || v.clone()));
            moka_s.invalidate(key);
        })
    });
    g.finish();
}

/// The numbers of callers the join benches put on one call.
const JOINERS: [usize; 4] = [1, 8, 64, 512];

/// `iters` rounds of `n` concurrent callers of one fresh key (C-3.3): one
/// runs the resolver, the others join it; every result is dropped (a bare
/// caller's ref goes back on drop). Polled together on one spawned task.
fn async_joins(
    rt: &Runtime,
    cache: &Cache<Value>,
    ids: &Arc<Vec<CallId>>,
    v: &Value,
    n: usize,
    iters: u64,
) -> Duration {
    let (cache, ids, v) = (cache.clone(), ids.clone(), v.clone());
    in_task(rt, async move {
        let ctx = Ctx::new();
        let start = Instant::now();
        for i in 0..iters {
            let key = CallKey::new(ids[visit(i, ids.len())].clone()).concurrency_key("c");
            let callers = (0..n).map(|_| {
                let value = v.clone();
                cache.get_or_init_call(&ctx, key.clone(), move |_| async move {
                    Ok(Resolved::value(value))
                })
            });
            let results = join_all(callers).await;
            // Joined callers are served the call's own result: not hits,
            // but every one is served.
            debug_assert!(results.iter().all(|r| r.is_ok()));
            black_box(&results);
        }
        start.elapsed()
    })
}

/// The same rounds on moka's future cache: `n` callers of `get_with` on
/// one key, then `invalidate`, so the key is fresh again.
///
/// With `in_flight`, the init yields once before returning the value, as
/// every real init does that waits on anything: it is still in flight when
/// the other callers are polled, so they wait on moka's waiter map, as ours
/// join the running call (C-3.3). Without, the init completes within the
/// first caller's first poll and the others find the value inserted: they
/// are hits, not joins.
fn moka_joins(
    rt: &Runtime,
    moka: &MokaFuture,
    keys: &Arc<Vec<Arc<str>>>,
    v: &Value,
    (n, in_flight): (usize, bool),
    iters: u64,
) -> Duration {
    let (moka, keys, v) = (moka.clone(), keys.clone(), v.clone());
    in_task(rt, async move {
        let start = Instant::now();
        for i in 0..iters {
            let key = &keys[visit(i, keys.len())];
            let callers = (0..n).map(|_| {
                let value = v.clone();
                moka.get_with(key.clone(), async move {
                    if in_flight {
                        tokio::task::yield_now().await;
                    }
                    value
                })
            });
            black_box(join_all(callers).await);
            moka.invalidate(key).await;
        }
        start.elapsed()
    })
}

/// The join benches' keys: fresh IDs and their moka keys.
fn join_keys() -> (Arc<Vec<CallId>>, Arc<Vec<Arc<str>>>) {
    let ids = ids_named("join", 4096);
    let keys = moka_keys(&ids);
    (Arc::new(ids), Arc::new(keys))
}

/// C-3.3: N concurrent callers of one fresh key join one in-flight call.
fn waiters(c: &mut Criterion) {
    let (ids, keys) = join_keys();
    let v = value();
    let rt = runtime();
    let mut g = c.benchmark_group("waiters");
    g.warm_up_time(Duration::from_millis(300));
    for n in JOINERS {
        g.throughput(Throughput::Elements(n as u64));
        let cache: Cache<Value> = Cache::builder().build();
        g.bench_with_input(BenchmarkId::new("async_api", n), &n, |b, &n| {
            b.iter_custom(|iters| async_joins(&rt, &cache, &ids, &v, n, iters))
        });
        assert_eq!(cache.live_entries(), 0, "INV-1 after the bench");

        let moka_f: MokaFuture = MokaFuture::new(8192);
        g.bench_with_input(BenchmarkId::new("moka_future_get_with", n), &n, |b, &n| {
            b.iter_custom(|iters| moka_joins(&rt, &moka_f, &keys, &v, (n, false), iters))
        });
        g.bench_with_input(
            BenchmarkId::new("moka_future_get_with_inflight", n),
            &n,
            |b, &n| b.iter_custom(|iters| moka_joins(&rt, &moka_f, &keys, &v, (n, true), iters)),
        );
    }
    g.finish();
}

/// The report's gated ratios (hits, misses, and N callers joining one
/// call), each measured as a pair in alternating rounds ([`paired`]): ours
/// and its baseline see the same machine, however its speed drifts during
/// the run. Written for `ci/bench-report` as `paired_<name>.json`.
fn paired_ratios() {
    let rounds = if quick() { 51 } else { 201 };
    let round = Duration::from_millis(3);
    let v = value();
    let rt = runtime();

    let ids = hot_ids(HOT_KEYS);
    let keys = moka_keys(&ids);
    let mut machine = machine_with(&ids, &v);
    let floor = LockedMap::new(ids.iter().map(|id| id.call_key()), v.clone());
    paired(
        rounds,
        round,
        |n| machine_hits(&mut machine, &ids, n),
        |n| floor_hits(&floor, &keys, n),
    )
    .report("storage_hit_machine");

    let (cache, _holder) = facade_with(&rt, &ids, &v);
    let moka_f = moka_future_with(&rt, &keys, &v);
    let (ids, keys) = (Arc::new(ids), Arc::new(keys));
    paired(
        rounds,
        round,
        |n| async_hits(&rt, &cache, &ids, n),
        |n| moka_hits(&rt, &moka_f, &keys, n),
    )
    .report("storage_hit_async");

    let fresh = ids_named("miss", 4096);
    let fresh_keys = Arc::new(moka_keys(&fresh));
    let fresh = Arc::new(fresh);
    let cache: Cache<Value> = Cache::builder().build();
    let moka_f: MokaFuture = MokaFuture::new(8192);
    paired(
        rounds,
        round,
        |n| async_misses(&rt, &cache, &fresh, &v, n),
        |n| moka_misses(&rt, &moka_f, &fresh_keys, &v, n),
    )
    .report("miss_async");
    assert_eq!(cache.live_entries(), 0, "INV-1 after the misses");

    let (ids, keys) = join_keys();
    for n in JOINERS {
        let cache: Cache<Value> = Cache::builder().build();
        let moka_f: MokaFuture = MokaFuture::new(8192);
        // Against moka's init in flight (the gated rows), then done in its
        // first poll (its other callers hit: information only).
        for (in_flight, name) in [(true, "joins_inflight"), (false, "joins")] {
            paired(
                rounds,
                round,
                |i| async_joins(&rt, &cache, &ids, &v, n, i),
                |i| moka_joins(&rt, &moka_f, &keys, &v, (n, in_flight), i),
            )
            .report(&format!("{name}_{n}"));
        }
        assert_eq!(cache.live_entries(), 0, "INV-1 after the joins");
    }
}

criterion_group! {
    name = hits;
    config = criterion();
    targets = storage_hit, content_hit, miss_complete_release, waiters
}

fn main() {
    let listing = std::env::args().any(|a| a == "--list");
    hits();
    Criterion::default().configure_from_args().final_summary();
    // `BENCH_PAIRS=0` skips the pairs (a run of one criterion group).
    let pairs = std::env::var("BENCH_PAIRS").map_or(true, |v| v != "0");
    if !listing && pairs {
        paired_ratios();
    }
}
