//! Counts what the read-through loader's hot paths (SPEC §7) cost in
//! instructions, which unlike time is the same on a busy machine. Each path
//! runs in a function of its own, never inlined, so callgrind's
//! `--toggle-collect` can name it:
//!
//! - `misses_on_loader`: 20k misses — `once` on a fresh key loads and writes
//!   it, then `delete` forgets it (the `loader_miss` bench's loop);
//! - `bursts_on_loader`: 200 bursts of 100 callers of one cold key, one load
//!   each (the `loader_burst` bench's loop);
//! - `hits_on_loader`: 100k local-tier hits through `once`;
//! - `batches_on_memory`: 2k `load_many` of 100 keys, local tier skipped,
//!   all found in an in-memory remote (the loader's own cost of a batch);
//! - with a port (`loader_profile 6379`): `batches_on_redis` and
//!   `mgets_on_redis`, the `loader_redis` bench's batch row and its
//!   baseline, a bare `MGET` of the same 100 keys on the same client.
//!
//! ```sh
//! cargo build --release -p cache-core --example loader_profile
//! valgrind --tool=callgrind --toggle-collect='loader_profile::misses_on_loader' \
//!     target/release/examples/loader_profile
//! callgrind_annotate callgrind.out.<pid> | grep 'PROGRAM TOTALS'   # ÷ 20k misses
//! ```
//!
//! Name one function exactly: `--toggle-collect` flips collection at every
//! match, so a wildcard that also matches the function's closures turns it
//! off inside them. The async loops run on a spawned task of a
//! current-thread runtime, as the benches' do.

use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;

use cache_core::error::ResolverError;
use cache_core::facade::ManualClock;
use cache_core::loader::{CallOptions, Key, Loader, LoaderOptions, MemoryRemote, Source};
use futures::future::join_all;
use tokio::runtime::Runtime;

/// Misses (fresh keys, each loaded, written and deleted).
const MISSES: usize = 20_000;
/// Bursts of [`BURST`] callers of one cold key.
const BURSTS: usize = 200;
/// Callers per burst.
const BURST: usize = 100;
/// Local-tier hits.
const HITS: usize = 100_000;
/// Batches of [`BATCH`] keys.
const BATCHES: usize = 2_000;
/// Keys per batch.
const BATCH: usize = 100;

type V = String;

fn value() -> V {
    "v".repeat(32)
}

/// A loader as the `loader` bench builds it: a local tier for every key, an
/// hour's TTL, a clock that never moves.
fn local_loader() -> Loader<V> {
    let mut opts = LoaderOptions::new("bench");
    opts.local_capacity = 16 * 1024;
    opts.ttl_ms = 3_600_000;
    opts.local_ttl_ms = 3_600_000;
    Loader::builder(opts, Arc::new(ManualClock::new(1_000)))
        .build()
        .expect("profile loader options are valid")
}

fn in_task<T: Send + 'static>(rt: &Runtime, body: impl Future<Output = T> + Send + 'static) -> T {
    rt.block_on(async { tokio::spawn(body).await.expect("the profile task panicked") })
}

async fn never_loads(_: Key) -> Result<V, ResolverError> {
    unreachable!("every key is cached")
}

async fn no_batch_load(_: Vec<Key>) -> Result<BTreeMap<Key, V>, ResolverError> {
    unreachable!("every key of the batch is in the remote")
}

#[inline(never)]
fn misses_on_loader(rt: &Runtime, l: &Loader<V>, keys: &Arc<Vec<String>>) {
    let (l, keys) = (l.clone(), keys.clone());
    in_task(rt, async move {
        for key in keys.iter() {
            let got = l
                .once(key.as_str(), CallOptions::default(), |_| async {
                    Ok(value())
                })
                .await
                .expect("a load");
            assert_eq!(got.source, Source::Loader);
            black_box(got);
            l.delete(key.as_str()).await.expect("delete");
        }
    });
}

#[inline(never)]
fn bursts_on_loader(rt: &Runtime, l: &Loader<V>, keys: &Arc<Vec<String>>) {
    let (l, keys) = (l.clone(), keys.clone());
    in_task(rt, async move {
        for key in keys.iter().take(BURSTS) {
            let callers = (0..BURST).map(|_| {
                l.once(key.as_str(), CallOptions::default(), |_| async {
                    Ok(value())
                })
            });
            black_box(join_all(callers).await);
            l.delete(key.as_str()).await.expect("delete");
        }
    });
}

#[inline(never)]
fn hits_on_loader(rt: &Runtime, l: &Loader<V>, keys: &Arc<Vec<String>>) {
    let (l, keys) = (l.clone(), keys.clone());
    in_task(rt, async move {
        for i in 0..HITS {
            let key = keys[i % keys.len()].as_str();
            let got = l.once(key, CallOptions::default(), never_loads).await;
            black_box(got.expect("a local hit"));
        }
    });
}

#[inline(never)]
fn batches_on_memory(rt: &Runtime, l: &Loader<V>, keys: &Arc<Vec<Key>>) {
    batches(rt, l, keys);
}

fn batches(rt: &Runtime, l: &Loader<V>, keys: &Arc<Vec<Key>>) {
    let (l, keys) = (l.clone(), keys.clone());
    in_task(rt, async move {
        let skip = CallOptions::default().skip_local();
        for _ in 0..BATCHES {
            let got = l.load_many(keys.to_vec(), skip, no_batch_load).await;
            assert_eq!(got.values.len(), BATCH, "every key from the remote");
            black_box(got);
        }
    });
}

/// `load_many` of 100 keys on `l`, its remote filled first.
fn fill_batch(rt: &Runtime, l: &Loader<V>) -> Arc<Vec<Key>> {
    let keys: Vec<Key> = (0..BATCH).map(|i| Key::from(format!("k{i}"))).collect();
    rt.block_on(async {
        for k in &keys {
            l.set(k.clone(), format!("value of {k}"), CallOptions::default())
                .await
                .expect("fill the remote");
        }
    });
    Arc::new(keys)
}

#[cfg(feature = "redis")]
mod redis_paths {
    use super::*;
    use cache_core::loader::{RedisOptions, RedisRemote};

    #[inline(never)]
    pub fn batches_on_redis(rt: &Runtime, l: &Loader<V>, keys: &Arc<Vec<Key>>) {
        batches(rt, l, keys);
    }

    #[inline(never)]
    pub fn mgets_on_redis(rt: &Runtime, remote: &RedisRemote, stored: &Arc<Vec<String>>) {
        let (mut conn, stored) = (remote.connection(), stored.clone());
        in_task(rt, async move {
            for _ in 0..BATCHES {
                let (got,): (Vec<Option<Vec<u8>>>,) = redis::pipe()
                    .cmd("MGET")
                    .arg(&stored[..])
                    .query_async(&mut conn)
                    .await
                    .expect("MGET");
                assert_eq!(got.len(), BATCH);
                black_box(got);
            }
        });
    }

    /// The batch on the Redis at `port` against a bare `MGET`.
    pub fn run(rt: &Runtime, port: u16) {
        let url = format!("redis://127.0.0.1:{port}/");
        let remote = rt
            .block_on(RedisRemote::connect(RedisOptions::new(url)))
            .unwrap_or_else(|e| panic!("no Redis on port {port}: {e}"));
        let l: Loader<V> = Loader::builder(
            LoaderOptions::new("profile"),
            Arc::new(cache_core::facade::SystemClock),
        )
        .remote(Arc::new(remote.clone()))
        .build()
        .expect("valid options");
        let keys = fill_batch(rt, &l);
        let stored = Arc::new(keys.iter().map(|k| l.stored_key(k)).collect());
        batches_on_redis(rt, &l, &keys);
        mgets_on_redis(rt, &remote, &stored);
        rt.block_on(l.close());
    }
}

fn main() {
    let port = match std::env::args().nth(1).map(|a| a.parse::<u16>()) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("loader_profile: the argument is a Redis port (1-65535): {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let fresh: Arc<Vec<String>> = Arc::new((0..MISSES).map(|i| format!("miss{i}")).collect());
    let l = local_loader();
    misses_on_loader(&rt, &l, &fresh);
    let c = l.counters();
    assert_eq!((c.loads, c.miss), (MISSES as u64, MISSES as u64));

    let l = local_loader();
    bursts_on_loader(&rt, &l, &fresh);
    let c = l.counters();
    assert_eq!(
        c.flight_joins,
        c.loads * (BURST as u64 - 1),
        "one load per burst (L-1)"
    );

    let hot: Arc<Vec<String>> = Arc::new((0..1024).map(|i| format!("hot{i}")).collect());
    let l = local_loader();
    rt.block_on(async {
        for k in hot.iter() {
            l.set(k.as_str(), value(), CallOptions::default())
                .await
                .expect("set");
        }
    });
    hits_on_loader(&rt, &l, &hot);
    assert_eq!(l.counters().loads, 0, "every hit from the local tier");

    let clock = Arc::new(ManualClock::new(1_000));
    let l: Loader<V> = Loader::builder(LoaderOptions::new("profile"), clock.clone())
        .remote(Arc::new(MemoryRemote::new(clock)))
        .build()
        .expect("valid options");
    let keys = fill_batch(&rt, &l);
    batches_on_memory(&rt, &l, &keys);

    match port {
        #[cfg(feature = "redis")]
        Some(port) => redis_paths::run(&rt, port),
        #[cfg(not(feature = "redis"))]
        Some(_) => {
            eprintln!("loader_profile: built without the `redis` feature; no Redis paths");
            std::process::exit(2);
        }
        None => {}
    }
    println!("loader_profile: done");
}
