//! The timed loops behind the report's gated ratios, each as a function of
//! the iteration count that returns the time taken, so criterion
//! (`iter_custom`), the paired runner ([`crate::paired`]) and the profiling
//! examples all run the very same loop.
//!
//! Every "ours" loop takes a ref and gives it back, as a reader of a
//! refcounted cache does; the baselines do the same work in their own terms
//! (moka's `get_with` hands out a clone of the value, dropped at once; the
//! locked map bumps and drops a refcount). Keys are visited in [`visit`]
//! order.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::facade::{Cache, CallKey, Ctx};
use cache_core::id::CallId;
use cache_core::machine::{CallCache, CallRequest, Caller, Decision};
use tokio::runtime::Runtime;

use cache_core::machine::Resolved;

use crate::{in_task, never, visit, LockedMap, Value};

/// moka's async cache, keyed as the report's baselines are: by call key.
pub type MokaFuture = moka::future::Cache<Arc<str>, Value>;

/// The call keys of `ids`, as the moka baselines key their entries.
pub fn moka_keys(ids: &[CallId]) -> Vec<Arc<str>> {
    ids.iter().map(|id| id.call_key().into()).collect()
}

/// `iters` storage hits on the state machine, each released at once.
pub fn machine_hits(machine: &mut CallCache<Value>, ids: &[CallId], iters: u64) -> Duration {
    let caller = Caller::default();
    let start = Instant::now();
    for i in 0..iters {
        let id = &ids[visit(i, ids.len())];
        let begin = machine.begin_call(&caller, CallRequest::new(id.clone()));
        let Ok(Decision::Hit(served)) = begin.outcome else {
            panic!("a hot key hits")
        };
        black_box(&served.value);
        let releases = machine.release(served.handle).expect("a live handle");
        debug_assert!(releases.is_empty());
    }
    start.elapsed()
}

/// `iters` hits on the locked-map floor, each released at once.
pub fn floor_hits(floor: &LockedMap, keys: &[Arc<str>], iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        let key = &keys[visit(i, keys.len())];
        black_box(floor.acquire(key).expect("a hot key hits"));
        floor.release(key);
    }
    start.elapsed()
}

/// `iters` storage hits through the async API on a spawned task, each
/// result dropped at once (a bare caller's ref goes back on drop).
pub fn async_hits(
    rt: &Runtime,
    cache: &Cache<Value>,
    ids: &Arc<Vec<CallId>>,
    iters: u64,
) -> Duration {
    let (cache, ids) = (cache.clone(), ids.clone());
    in_task(rt, async move {
        let ctx = Ctx::new();
        let start = Instant::now();
        for i in 0..iters {
            let id = &ids[visit(i, ids.len())];
            let r = cache
                .get_or_init_call(&ctx, CallKey::new(id.clone()), |_| async { never() })
                .await
                .expect("a hot key hits");
            black_box(r.value());
        }
        start.elapsed()
    })
}

/// `iters` hits on moka's future cache with `get_with`, on a spawned task.
pub fn moka_hits(
    rt: &Runtime,
    moka: &MokaFuture,
    keys: &Arc<Vec<Arc<str>>>,
    iters: u64,
) -> Duration {
    let (moka, keys) = (moka.clone(), keys.clone());
    in_task(rt, async move {
        let start = Instant::now();
        for i in 0..iters {
            let key = &keys[visit(i, keys.len())];
            black_box(moka.get_with(key.clone(), async { never() }).await);
        }
        start.elapsed()
    })
}

/// `iters` misses through the async API on a spawned task: each call runs
/// its resolver, completes, and its only ref goes back when the result is
/// dropped, so the key is fresh again on its next visit.
pub fn async_misses(
    rt: &Runtime,
    cache: &Cache<Value>,
    ids: &Arc<Vec<CallId>>,
    v: &Value,
    iters: u64,
) -> Duration {
    let (cache, ids, v) = (cache.clone(), ids.clone(), v.clone());
    in_task(rt, async move {
        let ctx = Ctx::new();
        let start = Instant::now();
        for i in 0..iters {
            miss(&cache, &ctx, &ids[visit(i, ids.len())], &v).await;
        }
        start.elapsed()
    })
}

/// `iters` misses on moka's future cache: `get_with` runs the init, then
/// `invalidate` removes the entry, so the key is fresh again.
pub fn moka_misses(
    rt: &Runtime,
    moka: &MokaFuture,
    keys: &Arc<Vec<Arc<str>>>,
    v: &Value,
    iters: u64,
) -> Duration {
    let (moka, keys, v) = (moka.clone(), keys.clone(), v.clone());
    in_task(rt, async move {
        let start = Instant::now();
        for i in 0..iters {
            let key = &keys[visit(i, keys.len())];
            let value = v.clone();
            black_box(moka.get_with(key.clone(), async move { value }).await);
            moka.invalidate(key).await;
        }
        start.elapsed()
    })
}

/// One miss on the async API, as the miss benches count it: `id` is fresh,
/// so the call runs a resolver returning `v`, completes, and its only ref
/// goes back when the result is dropped here.
async fn miss(cache: &Cache<Value>, ctx: &Ctx, id: &CallId, v: &Value) {
    let value = v.clone();
    let r = cache
        .get_or_init_call(ctx, CallKey::new(id.clone()), move |_| async move {
            Ok(Resolved::value(value))
        })
        .await
        .expect("a fresh key resolves");
    debug_assert!(!r.hit(), "a fresh key misses");
    black_box(r.value());
}
