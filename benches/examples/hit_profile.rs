//! Counts what one storage hit and one miss cost in instructions, which
//! unlike time is the same on a busy machine: 100k hits over the 1024 hot
//! keys on the state machine, on the locked-map floor, through the async
//! API, and through moka's future cache (the bench's baseline); then 20k
//! misses (fresh keys, each run, completed and released) through the async
//! API and moka. Each runs in a function of its own (`hits_on_…`,
//! `misses_on_…`).
//!
//! ```sh
//! cargo build --release -p benches --example hit_profile
//! valgrind --tool=callgrind --toggle-collect='hit_profile::hits_on_async_api' \
//!     target/release/examples/hit_profile
//! callgrind_annotate callgrind.out.* | grep 'PROGRAM TOTALS'   # ÷ 100k hits
//! ```
//!
//! Name one function exactly: `--toggle-collect` flips collection at every
//! match, so a wildcard that also matches the function's closures turns
//! it off inside them.
//!
//! As in `benches/benches/hits.rs`, each hit takes a ref and gives it back,
//! and the async loops run on a spawned task (`benches::in_task`).
use std::hint::black_box;
use std::sync::Arc;

use benches::{
    facade_with, hot_ids, ids_named, in_task, machine_with, miss, never, runtime, value, LockedMap,
    Value, HOT_KEYS,
};
use cache_core::facade::{Cache, CallKey, Ctx};
use cache_core::id::CallId;
use cache_core::machine::{CallCache, CallRequest, Caller, Decision};
use tokio::runtime::Runtime;

/// Hits per engine.
const HITS: usize = 100_000;
/// Misses per engine (fresh keys).
const MISSES: usize = 20_000;

type Moka = moka::future::Cache<Arc<str>, Value>;

#[inline(never)]
fn hits_on_machine(machine: &mut CallCache<Value>, ids: &[CallId]) {
    let caller = Caller::default();
    for i in 0..HITS {
        let id = &ids[i % ids.len()];
        let begin = machine.begin_call(&caller, CallRequest::new(id.clone()));
        let Ok(Decision::Hit(served)) = begin.outcome else {
            panic!("a hot key hits")
        };
        black_box(&served.value);
        machine.release(served.handle).expect("a live handle");
    }
}

#[inline(never)]
fn hits_on_locked_map(floor: &LockedMap, keys: &[Arc<str>]) {
    for i in 0..HITS {
        let key = &keys[i % keys.len()];
        black_box(floor.acquire(key).expect("a hot key hits"));
        floor.release(key);
    }
}

#[inline(never)]
fn hits_on_async_api(rt: &Runtime, cache: Cache<Value>, ids: Arc<Vec<CallId>>) {
    in_task(rt, async move {
        let ctx = Ctx::new();
        for i in 0..HITS {
            let id = &ids[i % ids.len()];
            let r = cache
                .get_or_init_call(&ctx, CallKey::new(id.clone()), |_| async { never() })
                .await
                .expect("a hot key hits");
            black_box(r.value());
        }
    });
}

#[inline(never)]
fn hits_on_moka_future(rt: &Runtime, moka: Moka, keys: Arc<Vec<Arc<str>>>) {
    in_task(rt, async move {
        for i in 0..HITS {
            let key = &keys[i % keys.len()];
            black_box(moka.get_with(key.clone(), async { never() }).await);
        }
    });
}

/// Fresh keys, so every call misses, runs its resolver, completes and is
/// released when its result drops (the `miss_complete_release` bench).
#[inline(never)]
fn misses_on_async_api(rt: &Runtime, cache: Cache<Value>, ids: Arc<Vec<CallId>>, v: Value) {
    in_task(rt, async move {
        let ctx = Ctx::new();
        for id in ids.iter() {
            miss(&cache, &ctx, id, &v).await;
        }
    });
}

#[inline(never)]
fn misses_on_moka_future(rt: &Runtime, moka: Moka, keys: Arc<Vec<Arc<str>>>, v: Value) {
    in_task(rt, async move {
        for key in keys.iter() {
            let value = v.clone();
            black_box(moka.get_with(key.clone(), async move { value }).await);
            moka.invalidate(key).await;
        }
    });
}

fn moka_keys(ids: &[CallId]) -> Arc<Vec<Arc<str>>> {
    Arc::new(ids.iter().map(|id| id.call_key().into()).collect())
}

fn main() {
    let ids = hot_ids(HOT_KEYS);
    let v = value();
    let rt = runtime();

    let mut machine = machine_with(&ids, &v);
    hits_on_machine(&mut machine, &ids);
    let keys = moka_keys(&ids);
    let floor = LockedMap::new(ids.iter().map(|id| id.call_key()), v.clone());
    hits_on_locked_map(&floor, &keys);

    let (cache, _holder) = facade_with(&rt, &ids, &v);
    hits_on_async_api(&rt, cache, Arc::new(ids.clone()));

    let moka = Moka::new(HOT_KEYS as u64 * 2);
    rt.block_on(async {
        for k in keys.iter() {
            moka.insert(k.clone(), v.clone()).await;
        }
    });
    hits_on_moka_future(&rt, moka, keys);
    println!(
        "{HITS} hits on each of: the state machine, the locked-map floor, the async API, moka future"
    );

    let fresh = ids_named("miss", MISSES);
    let cache: Cache<Value> = Cache::builder(1).build();
    misses_on_async_api(&rt, cache.clone(), Arc::new(fresh.clone()), v.clone());
    assert_eq!(cache.live_entries(), 0, "INV-1 after the misses");
    let moka = Moka::new(MISSES as u64 * 2);
    misses_on_moka_future(&rt, moka, moka_keys(&fresh), v);
    println!("{MISSES} misses on each of: the async API, moka future");
}
