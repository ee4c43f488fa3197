//! The facade with a service's defaults (DESIGN "Production defaults"): the
//! system clock, store calls off the async workers within the store
//! deadline (T-2), self-assigned instance ids (C-4), early release (C-11a)
//! and the read-only queries.

mod facade_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_core::facade::{Cache, CallKey, Ctx, ResolverCtx, Span, Telemetry};
use cache_core::machine::Resolved;
use cache_core::ttl::{choose_storage_key, MemoryTtlStore, SqliteTtlStore, StoreError, TtlStore};
use cache_core::CallError;
use facade_common::*;

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Polls `f` (real time) until it is true or `limit` passes.
async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f()
}

/// T-2 / T-6: a cache built without a clock uses the system clock, so a
/// TTL write's expiry is now + TTL, not 0 + TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_cache_with_a_ttl_store_writes_an_expiry_near_now() {
    let store = Arc::new(MemoryTtlStore::new());
    let cache: Cache<V> = Cache::builder().ttl_store(store.clone()).build();
    let session = cache.open_session();
    let ttl = 60_000;
    let before = wall_ms();
    let r = session
        .call(key("tagged").ttl_ms(ttl), |_| async {
            Ok(Resolved::value("v".to_string()).safe_to_persist(true))
        })
        .await
        .unwrap();
    assert!(r.safe_to_persist());
    // The write lands on the blocking pool just after the caller is answered.
    assert!(eventually(Duration::from_secs(5), || !store.rows().is_empty()).await);
    let after = wall_ms();
    let (_, row) = store.rows().remove(0);
    let ttl = ttl as i64;
    assert!(
        row.expiration >= before + ttl && row.expiration <= after + ttl,
        "expiry {} is not now + TTL (now was {before}..{after})",
        row.expiration
    );
    session.close().unwrap();
    assert_quiescent(&cache);
}

/// A service's worker is never blocked by SQLite, and a store slower than
/// the deadline degrades the call to a session-scoped key in about the
/// deadline (T-2), not the store's 5 s busy timeout.
///
/// A second connection holds the write lock (`BEGIN IMMEDIATE`). Session
/// A's TTL write then waits on it (the store's busy timeout is 5 s), holding
/// the store's connection; session B's lookup of the same key waits behind
/// it and is given up at the deadline. One worker thread: had a store call
/// run on it, the ticker task below could not tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn t2_a_locked_sqlite_store_degrades_within_the_deadline_off_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ttl.db");
    let store = Arc::new(SqliteTtlStore::open(&path).unwrap());
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let deadline_ms = 300;
    let cache: Cache<V> = Cache::builder()
        .ttl_store(store.clone())
        .store_deadline_ms(deadline_ms)
        .build();
    let ticks = Arc::new(AtomicU64::new(0));
    let ticking = Arc::new(AtomicBool::new(true));
    let ticker = {
        let (ticks, ticking) = (ticks.clone(), ticking.clone());
        tokio::spawn(async move {
            while ticking.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let ttl = 60_000;
    let (a, b) = (cache.open_session(), cache.open_session());

    // A: the lookup reads (WAL readers pass the write lock), the write waits.
    let started = Instant::now();
    let r = a
        .call(key("slow").ttl_ms(ttl), |_| async {
            Ok(Resolved::value("a".to_string()).safe_to_persist(true))
        })
        .await
        .unwrap();
    assert!(!r.hit());
    assert!(
        started.elapsed() < Duration::from_millis(deadline_ms),
        "the caller waited for the write"
    );
    let metrics = cache.metrics();
    assert!(
        eventually(Duration::from_secs(3), || metrics.ttl_store_failures() == 1).await,
        "the stuck write was not given up"
    );
    let write_gave_up = started.elapsed();
    assert!(
        write_gave_up >= Duration::from_millis(deadline_ms)
            && write_gave_up < Duration::from_millis(2_500),
        "the write was given up after {write_gave_up:?}, not the {deadline_ms} ms deadline"
    );

    // B: its lookup waits behind the stuck write and is given up.
    let ticks_before = ticks.load(Ordering::SeqCst);
    let seen = Log::new();
    let started = Instant::now();
    let r = {
        let seen = seen.clone();
        b.call(
            key("slow").ttl_ms(ttl),
            move |ctx: ResolverCtx| async move {
                seen.push(ctx.storage_key.clone());
                Ok(Resolved::value("b".to_string()))
            },
        )
        .await
        .unwrap()
    };
    let took = started.elapsed();
    assert!(!r.hit(), "a degraded call shares nothing");
    assert!(
        took >= Duration::from_millis(deadline_ms) && took < Duration::from_millis(2_500),
        "degraded after {took:?}, not the {deadline_ms} ms deadline"
    );
    assert_eq!(metrics.ttl_store_failures(), 2);
    let call_key = id("slow").call_key();
    let degraded = |now: i64| {
        let failed = Err(StoreError::Unavailable("late".into()));
        choose_storage_key(&call_key, &cache.ttl_identity(b.id()), now, ttl, failed)
            .storage_key()
            .to_string()
    };
    let used = seen.events().remove(0);
    assert_ne!(used, call_key, "never the bare call key (T-2)");
    assert!(
        [
            degraded(wall_ms() - took.as_millis() as i64),
            degraded(wall_ms())
        ]
        .contains(&used),
        "{used} is not B's session-scoped degraded key"
    );
    // The worker kept running tasks all along.
    assert!(
        ticks.load(Ordering::SeqCst) >= ticks_before + 10,
        "the ticker did not run while the store was stuck"
    );

    blocker.execute_batch("ROLLBACK").unwrap();
    ticking.store(false, Ordering::SeqCst);
    ticker.await.unwrap();
    // Once the lock is free the late write lands (T-4 as any other writer).
    assert!(
        eventually(Duration::from_secs(5), || store
            .select(&call_key)
            .unwrap()
            .is_some())
        .await
    );
    a.close().unwrap();
    b.close().unwrap();
    assert_quiescent(&cache);
}

/// C-4: two default-built caches get different instance ids, so the same
/// key asked on B inside A's resolver is not recursion; on A it is.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c4_default_built_caches_are_distinct_instances() {
    let a: Cache<V> = Cache::builder().build();
    let b: Cache<V> = Cache::builder().build();
    assert_ne!(a.instance_id(), b.instance_id());
    let (inner_hook, outer_hook) = (Hook::new(), Hook::new());
    let r = {
        let (a2, b2, inner_hook, outer_hook) =
            (a.clone(), b.clone(), inner_hook.clone(), outer_hook.clone());
        a.get_or_init_call(
            &Ctx::new(),
            key("same"),
            move |rctx: ResolverCtx| -> BoxFut {
                Box::pin(async move {
                    let on_b = b2
                        .get_or_init_call(&rctx.nested(), key("same"), move |_| -> BoxFut {
                            Box::pin(async move { Ok(inner_hook.value("inner")) })
                        })
                        .await?;
                    assert_eq!(on_b.value().map(String::as_str), Some("inner"));
                    let on_a = a2
                        .get_or_init_call(&rctx.nested(), key("same"), never())
                        .await;
                    assert!(
                        matches!(&on_a, Err(CallError::Recursive { .. })),
                        "{on_a:?}"
                    );
                    // A handle is its own cache's (C-12): B's ref goes back to B.
                    on_b.release()?;
                    Ok(outer_hook.value("outer"))
                })
            },
        )
        .await
        .unwrap()
    };
    assert_eq!(r.value().map(String::as_str), Some("outer"));
    assert_eq!(
        inner_hook.count(),
        1,
        "B's result was released in A's resolver"
    );
    drop(r);
    assert_eq!((outer_hook.count(), inner_hook.count()), (1, 1));
    assert_quiescent(&a);
    assert_quiescent(&b);
}

/// The replay override names the instance, and resolver contexts carry it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn instance_id_for_replay_fixes_the_id() {
    let cache: Cache<V> = Cache::builder().instance_id_for_replay(42).build();
    assert_eq!(cache.instance_id(), 42);
    let auto: Cache<V> = Cache::builder().build();
    assert!(
        auto.instance_id() >= 1 << 63,
        "self-assigned ids are in the upper half"
    );
}

/// C-11a: a session-owned result released early leaves the session's list;
/// an entry nobody else holds goes at once, its hook runs once, and the
/// close releases only what is left.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c11a_a_session_owned_result_can_be_released_early() {
    let cache = cache();
    let session = cache.open_session();
    let (runs, ha, hb) = (Counter::new(), Hook::new(), Hook::new());
    let a = session
        .call(key("a"), ready(&runs, "a", &ha))
        .await
        .unwrap();
    let b = session
        .call(key("b"), ready(&runs, "b", &hb))
        .await
        .unwrap();
    assert!(a.is_session_owned() && !a.holds_ref());
    assert_eq!(session.refs(), 2);
    a.release().unwrap();
    assert_eq!(session.refs(), 1);
    assert_eq!(ha.count(), 1, "the entry went at once");
    assert!(cache.completed(&id("a")).is_none());
    // `into_nested` never takes a session's ref out from under it.
    assert!(b.into_nested().is_none());
    assert_eq!(session.refs(), 1);
    let summary = session.close().unwrap();
    assert_eq!(summary.released, 1);
    assert_eq!((ha.count(), hb.count()), (1, 1));
    assert_quiescent(&cache);
}

/// A session-owned result released after its session closed: the close
/// released the ref; the late release is a no-op, not an error.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn releasing_after_the_session_closed_does_nothing() {
    let cache = cache();
    let session = cache.open_session();
    let hook = Hook::new();
    let r = session
        .call(key("k"), ready(&Counter::new(), "k", &hook))
        .await
        .unwrap();
    session.close().unwrap();
    assert_eq!(hook.count(), 1);
    assert_eq!(r.release(), Ok(()));
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

/// The read-only queries: a completed entry and its refcount, and an
/// in-flight call's waiters.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queries_read_refcounts_and_waiters() {
    let cache = cache();
    let (s1, s2) = (cache.open_session(), cache.open_session());
    let (runs, gate, hook) = (Counter::new(), Gate::new(), Hook::new());
    let ck = key("q").concurrency_key("c");
    let entry = Arc::new(std::sync::Mutex::new(None));
    let first = {
        let (gated, entry) = (gated(&runs, &gate, "q", &hook), entry.clone());
        spawn_call(&cache, s1.ctx(), ck.clone(), move |ctx: ResolverCtx| {
            *entry.lock().unwrap() = Some(ctx.entry.1);
            gated(ctx)
        })
    };
    settle().await;
    let second = spawn_call(&cache, s2.ctx(), ck.clone(), never());
    let third = spawn_call(&cache, Ctx::new(), ck, never());
    settle().await;
    let running = entry.lock().unwrap().expect("the resolver ran");
    assert_eq!(cache.waiters(running), Some(3));
    assert!(cache.completed(&id("q")).is_none(), "still in flight");
    third.abort();
    settle().await;
    assert_eq!(
        cache.waiters(running),
        Some(2),
        "an aborted caller left (C-5)"
    );
    gate.open();
    let (r1, r2) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert_eq!(cache.waiters(running), None, "completed");
    let info = cache.completed(&id("q")).expect("stored");
    assert_eq!(info.entry, r1.entry());
    assert_eq!(info.refcount, 2);
    assert!(!r2.safe_to_persist(), "not marked safe (T-3)");
    let bare = cache
        .get_or_init_call(&Ctx::new(), key("q"), never())
        .await
        .unwrap();
    assert_eq!(cache.completed(&id("q")).unwrap().refcount, 3);
    drop(bare);
    assert_eq!(cache.completed(&id("q")).unwrap().refcount, 2);
    drop((r1, r2));
    s1.close().unwrap();
    s2.close().unwrap();
    assert!(cache.completed(&id("q")).is_none());
    assert_eq!(runs.get(), 1);
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

/// `CallKey::repeat_telemetry` is the S-5 switch: a span on every call.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s5_repeat_telemetry_has_a_builder_method() {
    #[derive(Default)]
    struct Spans(std::sync::Mutex<Vec<Span>>);
    impl Telemetry for Spans {
        fn span(&self, span: Span) {
            self.0.lock().unwrap().push(span);
        }
    }
    let spans = Arc::new(Spans::default());
    let cache: Cache<V> = Cache::builder().telemetry(spans.clone()).build();
    let session = cache.open_session();
    let hook = Hook::new();
    let plain: CallKey = key("t");
    let repeat = key("t").repeat_telemetry(true);
    assert!(repeat.repeat_telemetry && !plain.repeat_telemetry);
    let _ = session
        .call(plain.clone(), ready(&Counter::new(), "t", &hook))
        .await
        .unwrap();
    let _ = session.call(plain, never()).await.unwrap();
    assert_eq!(spans.0.lock().unwrap().len(), 1, "once per key per session");
    let _ = session.call(repeat.clone(), never()).await.unwrap();
    let _ = session.call(repeat, never()).await.unwrap();
    assert_eq!(spans.0.lock().unwrap().len(), 3, "every repeat call");
    session.close().unwrap();
    assert_quiescent(&cache);
}
