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
//! The loops are the benches' own (`benches::workloads`): each hit takes a
//! ref and gives it back, and the async loops run on a spawned task.
use std::sync::Arc;

use benches::workloads::{
    async_hits, async_misses, floor_hits, machine_hits, moka_hits, moka_keys, moka_misses,
    MokaFuture,
};
use benches::{
    facade_with, hot_ids, ids_named, machine_with, runtime, value, LockedMap, Value, HOT_KEYS,
};
use cache_core::facade::Cache;
use cache_core::id::CallId;
use cache_core::machine::CallCache;
use tokio::runtime::Runtime;

/// Hits per engine.
const HITS: u64 = 100_000;
/// Misses per engine (fresh keys).
const MISSES: usize = 20_000;

// One function per engine, never inlined, so `--toggle-collect` can name
// it; each runs the loop the benches time (`benches::workloads`).

#[inline(never)]
fn hits_on_machine(machine: &mut CallCache<Value>, ids: &[CallId]) {
    machine_hits(machine, ids, HITS);
}

#[inline(never)]
fn hits_on_locked_map(floor: &LockedMap, keys: &[Arc<str>]) {
    floor_hits(floor, keys, HITS);
}

#[inline(never)]
fn hits_on_async_api(rt: &Runtime, cache: &Cache<Value>, ids: &Arc<Vec<CallId>>) {
    async_hits(rt, cache, ids, HITS);
}

#[inline(never)]
fn hits_on_moka_future(rt: &Runtime, moka: &MokaFuture, keys: &Arc<Vec<Arc<str>>>) {
    moka_hits(rt, moka, keys, HITS);
}

/// Fresh keys, so every call misses, runs its resolver, completes and is
/// released when its result drops (the `miss_complete_release` bench).
#[inline(never)]
fn misses_on_async_api(rt: &Runtime, cache: &Cache<Value>, ids: &Arc<Vec<CallId>>, v: &Value) {
    async_misses(rt, cache, ids, v, ids.len() as u64);
}

#[inline(never)]
fn misses_on_moka_future(rt: &Runtime, moka: &MokaFuture, keys: &Arc<Vec<Arc<str>>>, v: &Value) {
    moka_misses(rt, moka, keys, v, keys.len() as u64);
}

fn main() {
    let ids = hot_ids(HOT_KEYS);
    let keys = moka_keys(&ids);
    let v = value();
    let rt = runtime();

    let mut machine = machine_with(&ids, &v);
    hits_on_machine(&mut machine, &ids);
    let floor = LockedMap::new(ids.iter().map(|id| id.call_key()), v.clone());
    hits_on_locked_map(&floor, &keys);

    let (cache, _holder) = facade_with(&rt, &ids, &v);
    hits_on_async_api(&rt, &cache, &Arc::new(ids.clone()));

    let moka = MokaFuture::new(HOT_KEYS as u64 * 2);
    rt.block_on(async {
        for k in keys.iter() {
            moka.insert(k.clone(), v.clone()).await;
        }
    });
    hits_on_moka_future(&rt, &moka, &Arc::new(keys));
    println!(
        "{HITS} hits on each of: the state machine, the locked-map floor, the async API, moka future"
    );

    let fresh = ids_named("miss", MISSES);
    let fresh_keys = Arc::new(moka_keys(&fresh));
    let cache: Cache<Value> = Cache::builder().build();
    misses_on_async_api(&rt, &cache, &Arc::new(fresh), &v);
    assert_eq!(cache.live_entries(), 0, "INV-1 after the misses");
    let moka = MokaFuture::new(MISSES as u64 * 2);
    misses_on_moka_future(&rt, &moka, &fresh_keys, &v);
    println!("{MISSES} misses on each of: the async API, moka future");
}
