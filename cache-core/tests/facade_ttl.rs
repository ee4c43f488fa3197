//! Facade scenarios for TTL metadata (SPEC section 5: T-2, T-3, T-4, T-7),
//! on a real SQLite file and on the in-memory store with faults.

mod facade_common;

use std::sync::Arc;
use std::time::Duration;

use cache_core::facade::{
    BlockingExecutor, BlockingJob, Cache, CallKey, Inline, ManualClock, ResolverCtx, Session,
};
use cache_core::id::CallId;
use cache_core::ttl::{MemoryTtlStore, SqliteTtlStore, StoreFaults, TtlStore};
use facade_common::*;

const T0: i64 = 1_700_000_000_000;
const TTL: u64 = 10_000;

struct Env<S> {
    cache: Cache<V>,
    clock: ManualClock,
    store: Arc<S>,
}

fn with_store<S: TtlStore + 'static>(store: Arc<S>) -> Env<S> {
    let clock = ManualClock::new(T0);
    let cache = Cache::builder()
        .blocking_executor(Arc::new(Inline))
        .ttl_store(store.clone())
        .clock(Arc::new(clock.clone()))
        .build();
    Env {
        cache,
        clock,
        store,
    }
}

fn sqlite(dir: &tempfile::TempDir) -> Env<SqliteTtlStore> {
    with_store(Arc::new(
        SqliteTtlStore::open(dir.path().join("ttl.db")).unwrap(),
    ))
}

fn ttl_key(id: &CallId) -> CallKey {
    CallKey::new(id.clone()).ttl_ms(TTL)
}

/// A resolver that records the storage key it sees, then returns `v`.
fn keyed(
    runs: &Counter,
    keys: &Log,
    v: &str,
    hook: &Hook,
    safe: bool,
) -> impl FnOnce(ResolverCtx) -> BoxFut + Send + 'static {
    let (runs, keys, v, hook) = (runs.clone(), keys.clone(), v.to_string(), hook.clone());
    move |ctx| {
        Box::pin(async move {
            runs.inc();
            keys.push(ctx.storage_key.clone());
            Ok(hook.value(&v).safe_to_persist(safe))
        })
    }
}

fn last(keys: &Log) -> String {
    keys.events().last().cloned().unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t2_second_session_reuses_the_persisted_storage_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = sqlite(&dir);
    let k = id("fetch-latest");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());

    let a = env.cache.open_session();
    let _ = a
        .call(ttl_key(&k), keyed(&runs, &keys, "v1", &hook, true))
        .await
        .unwrap();
    let sk_a = last(&keys);
    assert_ne!(sk_a, k.call_key(), "a TTL'd call uses its own storage key");
    let row = env.store.select(&k.call_key()).unwrap().unwrap();
    assert_eq!(
        row.storage_key, sk_a,
        "the safe result's mapping was persisted (T-3)"
    );
    assert_eq!(row.expiration, T0 + TTL as i64);

    // A second session shares it while the row is live.
    env.clock.advance(1_000);
    let b = env.cache.open_session();
    let hit = b.call(ttl_key(&k), never()).await.unwrap();
    assert!(hit.hit());
    assert_eq!(hit.value().map(String::as_str), Some("v1"));
    a.close().unwrap();
    b.close().unwrap();
    assert_eq!(hook.count(), 1);
    assert_quiescent(&env.cache);

    // Memory is gone, the mapping is not: a third session resolves again
    // under the same persisted storage key.
    let c = env.cache.open_session();
    let _ = c
        .call(ttl_key(&k), keyed(&runs, &keys, "v2", &hook, true))
        .await
        .unwrap();
    assert_eq!(last(&keys), sk_a);
    assert_eq!(runs.get(), 2);
    assert_eq!(
        env.store.select(&k.call_key()).unwrap().unwrap(),
        row,
        "a live row is not rewritten"
    );
    c.close().unwrap();
    assert_quiescent(&env.cache);
}

/// T-2(a): session ids start again in a restarted engine, the TTL store
/// does not: the same session id of two incarnations, in one TTL window,
/// never gets the same fresh key, even with the same instance id.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t2_a_restart_never_hands_a_session_another_incarnations_fresh_key() {
    let store = Arc::new(MemoryTtlStore::new());
    let k = id("fetch-latest");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    let mut fresh = Vec::new();
    for built_at in [T0, T0 + 1] {
        let cache: Cache<V> = Cache::builder()
            .instance_id_for_replay(7)
            .ttl_store(store.clone())
            .clock(Arc::new(ManualClock::new(built_at)))
            .build();
        let s = cache.open_session();
        // Unsafe to persist: no row is written, so each call picks a fresh
        // key from its own session's identity.
        let _ = s
            .call(ttl_key(&k), keyed(&runs, &keys, "v", &hook, false))
            .await
            .unwrap();
        fresh.push((s.id(), last(&keys)));
        s.close().unwrap();
        assert_quiescent(&cache);
    }
    assert_eq!(fresh[0].0, fresh[1].0, "the same session id in both");
    assert_ne!(fresh[0].1, fresh[1].1, "but not the same fresh key");
    assert!(store.rows().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t2_persisted_mapping_survives_an_engine_restart() {
    let dir = tempfile::tempdir().unwrap();
    let k = id("fetch-latest");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    {
        let env = sqlite(&dir);
        let s = env.cache.open_session();
        let _ = s
            .call(ttl_key(&k), keyed(&runs, &keys, "v", &hook, true))
            .await
            .unwrap();
        s.close().unwrap();
        assert_quiescent(&env.cache);
    }
    let env = sqlite(&dir);
    env.clock.advance(TTL as i64 / 2);
    let s = env.cache.open_session();
    let _ = s
        .call(ttl_key(&k), keyed(&runs, &keys, "v", &hook, true))
        .await
        .unwrap();
    let seen = keys.events();
    assert_eq!(seen[0], seen[1]);
    s.close().unwrap();
    assert_eq!(hook.count(), 2);
    assert_quiescent(&env.cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t7_expiry_forces_a_fresh_storage_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = sqlite(&dir);
    let k = id("fetch-latest");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    let a = env.cache.open_session();
    let _ = a
        .call(ttl_key(&k), keyed(&runs, &keys, "old", &hook, true))
        .await
        .unwrap();
    let sk_a = last(&keys);

    // Still live at exactly the expiration instant.
    env.clock.set(T0 + TTL as i64);
    let b = env.cache.open_session();
    assert!(b.call(ttl_key(&k), never()).await.unwrap().hit());

    env.clock.advance(1);
    let new = b
        .call(ttl_key(&k), keyed(&runs, &keys, "new", &hook, true))
        .await
        .unwrap();
    assert!(!new.hit(), "an expired mapping is never served (T-7)");
    assert_eq!(new.value().map(String::as_str), Some("new"));
    let sk_b = last(&keys);
    assert_ne!(sk_b, sk_a);
    assert_eq!(
        env.store
            .select(&k.call_key())
            .unwrap()
            .unwrap()
            .storage_key,
        sk_b
    );
    // The session holding the expired result follows the new mapping.
    let a_again = a.call(ttl_key(&k), never()).await.unwrap();
    assert!(a_again.hit());
    assert_eq!(a_again.value().map(String::as_str), Some("new"));
    a.close().unwrap();
    b.close().unwrap();
    assert_eq!(hook.count(), 2);
    assert_quiescent(&env.cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t7_expiry_is_honoured_inside_one_session() {
    let dir = tempfile::tempdir().unwrap();
    let env = sqlite(&dir);
    let s = env.cache.open_session();
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    // Each round starts later than the last: the clock only moves forward
    // here (a backwards step would be judged on the highest reading, T-7).
    for (round, (name, safe)) in [("safe", true), ("unsafe", false)].into_iter().enumerate() {
        let start = T0 + 10 * TTL as i64 * round as i64;
        env.clock.set(start);
        let k = id(name);
        let _ = s
            .call(ttl_key(&k), keyed(&runs, &keys, "old", &hook, safe))
            .await
            .unwrap();
        let first = last(&keys);
        env.clock.advance(TTL as i64 / 2);
        assert!(
            s.call(ttl_key(&k), never()).await.unwrap().hit(),
            "{name}: stable in its session"
        );
        env.clock.set(start + TTL as i64 + 1);
        let again = s
            .call(ttl_key(&k), keyed(&runs, &keys, "new", &hook, safe))
            .await
            .unwrap();
        assert!(
            !again.hit(),
            "{name}: expired, even in the session that made it"
        );
        assert_eq!(again.value().map(String::as_str), Some("new"));
        assert_ne!(last(&keys), first);
    }
    assert_eq!(runs.get(), 4);
    s.close().unwrap();
    assert_eq!(hook.count(), 4);
    assert_quiescent(&env.cache);
}

/// T-7: once the cache has seen a reading past a row's expiry, a clock that
/// jumps back does not make the row, or the result under it, live again.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t7_a_backwards_clock_never_revives_an_expired_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let env = sqlite(&dir);
    let k = id("fetch-latest");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    let a = env.cache.open_session();
    let _ = a
        .call(ttl_key(&k), keyed(&runs, &keys, "old", &hook, true))
        .await
        .unwrap();
    let sk_old = last(&keys);

    // The cache reads a time past the expiry (a call on another key)...
    env.clock.set(T0 + TTL as i64 + 1);
    let _ = a
        .call(ttl_key(&id("other")), keyed(&runs, &keys, "x", &hook, true))
        .await
        .unwrap();
    // ...then the clock steps back to well inside the old TTL.
    env.clock.set(T0 + 1);
    let b = env.cache.open_session();
    let r = b
        .call(ttl_key(&k), keyed(&runs, &keys, "new", &hook, true))
        .await
        .unwrap();
    assert!(!r.hit(), "an expired mapping stays expired (T-7)");
    assert_eq!(r.value().map(String::as_str), Some("new"));
    assert_ne!(last(&keys), sk_old);
    a.close().unwrap();
    b.close().unwrap();
    assert_quiescent(&env.cache);
}

/// T-7: a call that arrives after a row expired is judged at its arrival,
/// even when the clock steps back while the store is slow to answer.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t7_a_clock_stepping_back_during_a_slow_store_answer_serves_nothing_expired() {
    let env = with_store(Arc::new(MemoryTtlStore::new()));
    let k = id("fetch-latest");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    let a = env.cache.open_session();
    let _ = a
        .call(ttl_key(&k), keyed(&runs, &keys, "old", &hook, true))
        .await
        .unwrap();
    let sk_old = last(&keys);

    env.clock.set(T0 + TTL as i64 + 1);
    env.store.set_faults(StoreFaults {
        delay_ms: 50,
        ..StoreFaults::default()
    });
    let clock = env.clock.clone();
    let step_back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        clock.set(T0 + 1);
    });
    let b = env.cache.open_session();
    let r = b
        .call(ttl_key(&k), keyed(&runs, &keys, "new", &hook, true))
        .await
        .unwrap();
    step_back.await.unwrap();
    assert!(!r.hit(), "expired when the call arrived (T-7)");
    assert_eq!(r.value().map(String::as_str), Some("new"));
    assert_ne!(last(&keys), sk_old);
    a.close().unwrap();
    b.close().unwrap();
    assert_quiescent(&env.cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t3_unsafe_results_are_never_shared_across_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let env = sqlite(&dir);
    let k = id("whoami");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    let (a, b) = (env.cache.open_session(), env.cache.open_session());
    // An error persists nothing either.
    a.call(ttl_key(&k), failing(&runs, "boom"))
        .await
        .unwrap_err();
    assert_eq!(env.store.select(&k.call_key()).unwrap(), None);
    let ra = a
        .call(ttl_key(&k), keyed(&runs, &keys, "alice", &hook, false))
        .await
        .unwrap();
    assert_eq!(ra.value().map(String::as_str), Some("alice"));
    assert_eq!(
        env.store.select(&k.call_key()).unwrap(),
        None,
        "unsafe: nothing persisted (T-3)"
    );
    let rb = b
        .call(ttl_key(&k), keyed(&runs, &keys, "bob", &hook, false))
        .await
        .unwrap();
    assert!(!rb.hit(), "never reachable from another session");
    assert_eq!(rb.value().map(String::as_str), Some("bob"));
    let seen = keys.events();
    assert_ne!(seen[0], seen[1]);
    // Each session still hits its own result.
    assert_eq!(
        a.call(ttl_key(&k), never())
            .await
            .unwrap()
            .value()
            .map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        b.call(ttl_key(&k), never())
            .await
            .unwrap()
            .value()
            .map(String::as_str),
        Some("bob")
    );
    assert_eq!(runs.get(), 3);
    a.close().unwrap();
    b.close().unwrap();
    assert_eq!(hook.count(), 2);
    assert_quiescent(&env.cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t3_t7_session_scoped_results_are_not_reachable_through_the_content_key() {
    // A TTL-scoped result must not leak engine-wide through a side door:
    // neither an unsafe one to another session, nor an expired one to
    // anybody (INV-8).
    let dir = tempfile::tempdir().unwrap();
    let env = sqlite(&dir);
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    let unsafe_id = id("whoami").with_content_digest(digest("same bytes"));
    let (a, b) = (env.cache.open_session(), env.cache.open_session());
    let _ = a
        .call(
            ttl_key(&unsafe_id),
            keyed(&runs, &keys, "alice", &hook, false),
        )
        .await
        .unwrap();
    let rb = b
        .call(
            ttl_key(&unsafe_id),
            keyed(&runs, &keys, "bob", &hook, false),
        )
        .await
        .unwrap();
    assert!(
        !rb.hit(),
        "an unsafe result reached another session via its content key"
    );
    assert_eq!(rb.value().map(String::as_str), Some("bob"));

    let safe_id = id("latest").with_content_digest(digest("other bytes"));
    let _ = a
        .call(ttl_key(&safe_id), keyed(&runs, &keys, "old", &hook, true))
        .await
        .unwrap();
    env.clock.advance(TTL as i64 + 1);
    let again = a
        .call(ttl_key(&safe_id), keyed(&runs, &keys, "new", &hook, true))
        .await
        .unwrap();
    assert!(
        !again.hit(),
        "an expired result was served via its content key"
    );
    assert_eq!(runs.get(), 4);
    a.close().unwrap();
    b.close().unwrap();
    assert_eq!(hook.count(), 4);
    assert_quiescent(&env.cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t2_store_failure_degrades_to_a_session_scoped_key() {
    let env = with_store(Arc::new(MemoryTtlStore::new()));
    let k = id("fetch");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    env.store.set_faults(StoreFaults {
        fail_all: true,
        ..StoreFaults::default()
    });
    let (a, b) = (env.cache.open_session(), env.cache.open_session());
    let ra = a
        .call(ttl_key(&k), keyed(&runs, &keys, "a", &hook, true))
        .await
        .unwrap();
    assert_eq!(
        ra.value().map(String::as_str),
        Some("a"),
        "a store failure never fails the call"
    );
    let sk_a = last(&keys);
    assert_ne!(sk_a, k.call_key(), "never the bare call key");
    assert_eq!(env.cache.metrics().ttl_store_failures(), 1);
    assert!(env.store.rows().is_empty(), "nothing persisted");
    // Stable within the session, never shared with another.
    assert!(a.call(ttl_key(&k), never()).await.unwrap().hit());
    let rb = b
        .call(ttl_key(&k), keyed(&runs, &keys, "b", &hook, true))
        .await
        .unwrap();
    assert!(!rb.hit());
    assert_ne!(last(&keys), sk_a);
    assert_eq!(env.cache.metrics().ttl_store_failures(), 3);
    assert!(env.store.rows().is_empty());
    // A bare (non-TTL) call of the same ID is not served the degraded result.
    let bare = a
        .call(
            CallKey::new(k.clone()),
            keyed(&runs, &keys, "bare", &hook, true),
        )
        .await
        .unwrap();
    assert!(!bare.hit());
    a.close().unwrap();
    b.close().unwrap();
    assert_eq!(hook.count(), 3);
    assert_quiescent(&env.cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t2_one_failed_select_degrades_one_call() {
    let env = with_store(Arc::new(MemoryTtlStore::new()));
    let k = id("fetch");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    env.store.set_faults(StoreFaults {
        fail_next: 1,
        ..StoreFaults::default()
    });
    let s = env.cache.open_session();
    let _ = s
        .call(ttl_key(&k), keyed(&runs, &keys, "a", &hook, true))
        .await
        .unwrap();
    assert_eq!(env.cache.metrics().ttl_store_failures(), 1);
    assert!(env.store.rows().is_empty());
    // Healed: the next call gets a fresh, persistable key.
    let _ = s
        .call(ttl_key(&k), keyed(&runs, &keys, "b", &hook, true))
        .await
        .unwrap();
    assert_eq!(env.store.rows().len(), 1);
    assert_eq!(env.store.rows()[0].1.storage_key, last(&keys));
    assert_eq!(env.cache.metrics().ttl_store_failures(), 1);
    s.close().unwrap();
    assert_eq!(hook.count(), 2);
    assert_quiescent(&env.cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t2_slow_store_answer_beyond_the_deadline_degrades() {
    let store = Arc::new(MemoryTtlStore::new());
    let clock = ManualClock::new(T0);
    let cache: Cache<V> = Cache::builder()
        .blocking_executor(Arc::new(Inline))
        .ttl_store(store.clone())
        .clock(Arc::new(clock))
        .store_deadline_ms(100)
        .build();
    let k = id("fetch");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    let s = cache.open_session();

    store.set_faults(StoreFaults {
        delay_ms: 5_000,
        ..StoreFaults::default()
    });
    let started = tokio::time::Instant::now();
    let r = s
        .call(ttl_key(&k), keyed(&runs, &keys, "slow", &hook, true))
        .await
        .unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(100),
        "gave up at the deadline"
    );
    assert_eq!(r.value().map(String::as_str), Some("slow"));
    assert_eq!(cache.metrics().ttl_store_failures(), 1);
    assert!(store.rows().is_empty());
    assert_ne!(last(&keys), k.call_key());

    // An answer within the deadline is used.
    store.set_faults(StoreFaults {
        delay_ms: 50,
        ..StoreFaults::default()
    });
    let k2 = id("fetch-2");
    let started = tokio::time::Instant::now();
    let _ = s
        .call(ttl_key(&k2), keyed(&runs, &keys, "ok", &hook, true))
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!(cache.metrics().ttl_store_failures(), 1);
    assert_eq!(store.rows().len(), 1);

    // The boundary: an answer arriving exactly at the deadline is in time.
    store.set_faults(StoreFaults {
        delay_ms: 100,
        ..StoreFaults::default()
    });
    let k3 = id("fetch-3");
    let _ = s
        .call(ttl_key(&k3), keyed(&runs, &keys, "edge", &hook, true))
        .await
        .unwrap();
    assert_eq!(cache.metrics().ttl_store_failures(), 1, "not degraded");
    assert_eq!(store.rows().len(), 2);
    s.close().unwrap();
    assert_eq!(hook.count(), 3);
    assert_quiescent(&cache);
}

/// A blocking pool that waits its milliseconds (tokio time) before it runs
/// each job: a store call's own slowness, on top of what the store reports.
struct SlowPool(u64);

impl BlockingExecutor for SlowPool {
    fn spawn(&self, job: BlockingJob) {
        let wait = Duration::from_millis(self.0);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            job();
        });
    }
}

/// T-2: the store deadline bounds the whole lookup. The delay the store
/// reports is waited out first and counts against the deadline, so a slow
/// pool gets only what is left of it: 60 ms reported and 60 ms in the pool
/// is past a 100 ms deadline, 30 and 60 is not.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t2_reported_delay_and_a_slow_pool_share_one_deadline() {
    let store = Arc::new(MemoryTtlStore::new());
    let cache: Cache<V> = Cache::builder()
        .blocking_executor(Arc::new(SlowPool(60)))
        .ttl_store(store.clone())
        .clock(Arc::new(ManualClock::new(T0)))
        .store_deadline_ms(100)
        .build();
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    let s = cache.open_session();

    store.set_faults(StoreFaults {
        delay_ms: 60,
        ..StoreFaults::default()
    });
    let started = tokio::time::Instant::now();
    let r = s
        .call(
            ttl_key(&id("late")),
            keyed(&runs, &keys, "late", &hook, true),
        )
        .await
        .unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(100),
        "the lookup gave up at the deadline, not after its own share of it"
    );
    assert_eq!(r.value().map(String::as_str), Some("late"));
    assert_eq!(cache.metrics().ttl_store_failures(), 1, "degraded (T-2)");

    store.set_faults(StoreFaults {
        delay_ms: 30,
        ..StoreFaults::default()
    });
    let started = tokio::time::Instant::now();
    let _ = s
        .call(
            ttl_key(&id("in-time")),
            keyed(&runs, &keys, "ok", &hook, true),
        )
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(90));
    assert_eq!(cache.metrics().ttl_store_failures(), 1, "not degraded");
    // The row is written on the slow pool once the caller has its answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.rows().len(), 1);
    s.close().unwrap();
    assert_eq!(hook.count(), 2);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t3_failed_ttl_write_keeps_the_result_session_scoped() {
    let env = with_store(Arc::new(MemoryTtlStore::new()));
    let k = id("fetch");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    // The store breaks while the resolver runs: the select worked, the
    // write after success fails.
    let resolver = {
        let (store, inner) = (env.store.clone(), keyed(&runs, &keys, "a", &hook, true));
        move |ctx: ResolverCtx| -> BoxFut {
            store.set_faults(StoreFaults {
                fail_next: 1,
                ..StoreFaults::default()
            });
            inner(ctx)
        }
    };
    let (a, b) = (env.cache.open_session(), env.cache.open_session());
    let _ = a.call(ttl_key(&k), resolver).await.unwrap();
    assert_eq!(
        env.cache.metrics().ttl_store_failures(),
        1,
        "counted, never fails the call"
    );
    assert!(env.store.rows().is_empty());
    let rb = b
        .call(ttl_key(&k), keyed(&runs, &keys, "b", &hook, true))
        .await
        .unwrap();
    assert!(!rb.hit());
    a.close().unwrap();
    b.close().unwrap();
    assert_eq!(hook.count(), 2);
    assert_quiescent(&env.cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t4_racing_fresh_writes_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let env = sqlite(&dir);
    let k = id("fetch-latest");
    let (runs, keys) = (Counter::new(), Log::new());
    let (ga, gb) = (Gate::new(), Gate::new());
    let (ha, hb) = (Hook::new(), Hook::new());
    let racer = |gate: &Gate, v: &str, hook: &Hook| {
        let (gate, inner) = (gate.clone(), keyed(&runs, &keys, v, hook, true));
        move |ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                gate.wait().await;
                inner(ctx).await
            })
        }
    };
    let a = Arc::new(env.cache.open_session());
    let b = Arc::new(env.cache.open_session());
    let spawn = |s: &Arc<Session<V>>, resolver: _| {
        let (s, key) = (s.clone(), ttl_key(&k));
        tokio::spawn(async move { s.call(key, resolver).await })
    };
    let ta = spawn(&a, racer(&ga, "a", &ha));
    let tb = spawn(&b, racer(&gb, "b", &hb));
    settle().await;
    // Both saw no row and prepared a fresh write with no compare value.
    ga.open();
    let ra = ta.await.unwrap().unwrap();
    gb.open();
    let rb = tb.await.unwrap().unwrap();
    assert_eq!(
        (ra.value().unwrap().as_str(), rb.value().unwrap().as_str()),
        ("a", "b")
    );
    let seen = keys.events();
    let (sk_a, sk_b) = (seen[0].clone(), seen[1].clone());
    assert_ne!(sk_a, sk_b, "two sessions never get the same fresh key");
    let row = env.store.select(&k.call_key()).unwrap().unwrap();
    assert_eq!(
        row.storage_key, sk_a,
        "the first write won and was not overwritten"
    );
    assert_eq!(
        env.cache.metrics().ttl_writes_lost(),
        1,
        "the loser is counted"
    );
    // Later sessions share the winner's result.
    let c = env.cache.open_session();
    let rc = c.call(ttl_key(&k), never()).await.unwrap();
    assert!(rc.hit());
    assert_eq!(rc.value().map(String::as_str), Some("a"));
    for s in [&a, &b] {
        s.close().unwrap();
    }
    c.close().unwrap();
    assert_eq!((ha.count(), hb.count()), (1, 1));
    assert_quiescent(&env.cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t2_ttl_without_a_store_is_ignored() {
    let cache = cache();
    let k = id("fetch");
    let (runs, keys, hook) = (Counter::new(), Log::new(), Hook::new());
    let (a, b) = (cache.open_session(), cache.open_session());
    let _ = a
        .call(ttl_key(&k), keyed(&runs, &keys, "v", &hook, false))
        .await
        .unwrap();
    assert_eq!(last(&keys), k.call_key());
    assert!(b.call(ttl_key(&k), never()).await.unwrap().hit());
    a.close().unwrap();
    b.close().unwrap();
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s2_a_closed_session_fails_before_the_store_is_asked() {
    // S-2: "fails at once" — a TTL call on a closed session must not reach
    // the TTL store (with a failing store, asking it would count a failure).
    let env = with_store(Arc::new(MemoryTtlStore::new()));
    env.store.set_faults(StoreFaults {
        fail_all: true,
        ..StoreFaults::default()
    });
    let s = env.cache.open_session();
    s.close().unwrap();
    let err = s.call(ttl_key(&id("fetch")), never()).await.unwrap_err();
    assert!(
        matches!(err, cache_core::CallError::SessionClosed),
        "{err:?}"
    );
    assert_eq!(env.store.failures_injected(), 0, "the store was asked");
    assert_eq!(env.cache.metrics().ttl_store_failures(), 0);
    assert_quiescent(&env.cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t5_gc_ttl_deletes_only_expired_rows_on_the_cache_clock() {
    let env = with_store(Arc::new(MemoryTtlStore::new()));
    let row = |sk: &str, expiration: i64| cache_core::ttl::TtlRow {
        storage_key: sk.into(),
        expiration,
    };
    for (k, exp) in [("a", T0 - 1), ("b", T0 - 5), ("c", T0), ("d", T0 + 9)] {
        assert!(env.store.compare_and_upsert(k, &row(k, exp), None).unwrap());
    }
    // On the cache's clock (T0): two rows are expired, `c` (== now) is not.
    assert_eq!(env.cache.gc_ttl(), Ok(2));
    let left: Vec<String> = env.store.rows().into_iter().map(|(k, _)| k).collect();
    assert_eq!(left, ["c", "d"]);
    assert_eq!(env.cache.gc_ttl(), Ok(0));
    env.clock.advance(10);
    assert_eq!(env.cache.gc_ttl(), Ok(2));
    // A failing store is an error, not a silent zero.
    env.store.set_faults(StoreFaults {
        fail_all: true,
        ..StoreFaults::default()
    });
    assert!(env.cache.gc_ttl().is_err());
    // Without a store there is nothing to collect.
    let bare: Cache<V> = Cache::builder().build();
    assert_eq!(bare.gc_ttl(), Ok(0));
}
