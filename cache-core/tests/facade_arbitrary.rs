//! Facade scenarios for keyed singleflight (SPEC section 4: K-1 … K-5):
//! arbitrary entries and the change cache.

mod facade_common;

use std::time::Duration;

use cache_core::facade::{Cache, Ctx, ResolverCtx};
use cache_core::machine::Resolved;
use cache_core::CallError;
use facade_common::*;
use tokio_util::sync::CancellationToken;

fn change_cache() -> Cache<V> {
    Cache::builder().change_cache().build()
}

// ---- arbitrary entries -------------------------------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k1_empty_key_is_rejected() {
    for cache in [cache(), change_cache()] {
        let (runs, hook) = (Counter::new(), Hook::new());
        let err = cache
            .get_or_init_arbitrary(&Ctx::new(), "", ready(&runs, "v", &hook))
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::InvalidKey(_)), "{err:?}");
        assert_eq!(runs.get(), 0);
        assert_quiescent(&cache);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k2_round_trip() {
    let cache = cache();
    let (runs, hook) = (Counter::new(), Hook::new());
    let a = cache
        .get_or_init_arbitrary(&Ctx::new(), "cfg", ready(&runs, "v", &hook))
        .await
        .unwrap();
    assert!(!a.hit());
    assert_eq!(a.value().map(String::as_str), Some("v"));
    assert_eq!(a.id(), None, "arbitrary entries carry no call ID");
    assert_eq!(cache.buckets().completed_arbitrary, 1);
    let b = cache
        .get_or_init_arbitrary(&Ctx::new(), "cfg", never())
        .await
        .unwrap();
    assert!(b.hit());
    assert_eq!(b.entry(), a.entry());
    // A call whose call key equals the arbitrary key is another namespace.
    assert_eq!(runs.get(), 1);
    drop(a);
    assert_eq!(hook.count(), 0);
    b.release().unwrap();
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k2_concurrent_callers_share_one_init() {
    for cache in [cache(), change_cache()] {
        let (runs, gate, hook) = (Counter::new(), Gate::new(), Hook::new());
        let tasks: Vec<_> = (0..3)
            .map(|_| spawn_arbitrary(&cache, Ctx::new(), "p", gated(&runs, &gate, "v", &hook)))
            .collect();
        settle().await;
        assert_eq!(runs.get(), 1, "no concurrency key needed (K-2)");
        assert_eq!(cache.buckets().ongoing_arbitrary, 1);
        assert_invariants(&cache);
        gate.open();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap().unwrap());
        }
        assert!(results.iter().all(|r| r.entry() == results[0].entry()));
        assert_eq!(cache.buckets().completed_arbitrary, 1);
        drop(results);
        assert_eq!(hook.count(), 1);
        assert_quiescent(&cache);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k3_recursion_is_detected() {
    let cache = cache();
    // An arbitrary key that is textually a call key: the namespaces differ.
    let a_key = id("a").call_key();
    let (h_outer, h_other, h_call) = (Hook::new(), Hook::new(), Hook::new());
    let init = {
        let (cache, a_key) = (cache.clone(), a_key.clone());
        let (h_outer, h_other, h_call) = (h_outer.clone(), h_other.clone(), h_call.clone());
        move |rctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                let same = cache
                    .get_or_init_arbitrary(&rctx.nested(), &a_key, never())
                    .await;
                assert!(matches!(same, Err(CallError::Recursive { .. })), "{same:?}");
                let other = cache
                    .get_or_init_arbitrary(
                        &rctx.nested(),
                        "b",
                        ready(&Counter::new(), "b", &h_other),
                    )
                    .await?;
                let call = cache
                    .get_or_init_call(
                        &rctx.nested(),
                        key("a"),
                        ready(&Counter::new(), "c", &h_call),
                    )
                    .await?;
                Ok(h_outer
                    .value("a")
                    .with_nested(other.into_nested().unwrap())
                    .with_nested(call.into_nested().unwrap()))
            })
        }
    };
    let a = cache
        .get_or_init_arbitrary(&Ctx::new(), &a_key, init)
        .await
        .unwrap();
    assert_eq!(cache.buckets().completed_arbitrary, 2);
    assert_eq!(cache.buckets().completed_calls, 1);
    drop(a);
    assert_eq!(
        (h_outer.count(), h_other.count(), h_call.count()),
        (1, 1, 1)
    );
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k3_errors_and_panics_are_not_cached() {
    for cache in [cache(), change_cache()] {
        let runs = Counter::new();
        let err = cache
            .get_or_init_arbitrary(&Ctx::new(), "p", failing(&runs, "boom"))
            .await
            .unwrap_err();
        assert_eq!(err, CallError::Resolver("boom".into()));
        assert_quiescent(&cache);
        let r = cache
            .get_or_init_arbitrary(&Ctx::new(), "p", |_ctx| -> BoxFut {
                Box::pin(async { panic!("init exploded") })
            })
            .await;
        assert!(matches!(r, Err(CallError::Panicked(_))), "{r:?}");
        assert_quiescent(&cache);
        let hook = Hook::new();
        let ok = cache
            .get_or_init_arbitrary(&Ctx::new(), "p", ready(&runs, "v", &hook))
            .await
            .unwrap();
        assert!(!ok.hit());
        let hit = cache
            .get_or_init_arbitrary(&Ctx::new(), "p", never())
            .await
            .unwrap();
        assert!(hit.hit());
        assert_eq!(runs.get(), 2);
        drop((ok, hit));
        assert_eq!(hook.count(), 1);
        assert_quiescent(&cache);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k3_abandoned_arbitrary_init_does_not_block_a_plain_cache() {
    // Outside the change cache an abandoned init leaves its key at once
    // (C-5 via K-3); only the change cache keeps it busy (K-5).
    let cache = cache();
    let (runs, gate, h1, h2) = (Counter::new(), Gate::new(), Hook::new(), Hook::new());
    let token = CancellationToken::new();
    let first = spawn_arbitrary(
        &cache,
        Ctx::new().with_cancel(token.clone()),
        "p",
        gated(&runs, &gate, "old", &h1),
    );
    settle().await;
    token.cancel();
    assert_eq!(first.await.unwrap().unwrap_err(), CallError::Cancelled);
    assert_eq!(cache.entries(), 0);
    let second = cache
        .get_or_init_arbitrary(&Ctx::new(), "p", ready(&runs, "new", &h2))
        .await
        .unwrap();
    assert_eq!(second.value().map(String::as_str), Some("new"));
    gate.open();
    settle().await;
    assert_eq!(h1.count(), 1, "the abandoned success is released (C-5a)");
    drop(second);
    assert_eq!(h2.count(), 1);
    assert_quiescent(&cache);
}

// ---- change cache --------------------------------------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k4_change_cache_waiter_cancel_keeps_the_init_running() {
    let cache = change_cache();
    let (runs, cancelled, gate, hook) = (Counter::new(), Counter::new(), Gate::new(), Hook::new());
    let (t1, t2) = (CancellationToken::new(), CancellationToken::new());
    let a = spawn_arbitrary(
        &cache,
        Ctx::new().with_cancel(t1.clone()),
        "/etc/x",
        cooperative(&runs, &cancelled, &gate, "v", &hook),
    );
    let b = spawn_arbitrary(
        &cache,
        Ctx::new().with_cancel(t2.clone()),
        "/etc/x",
        never(),
    );
    settle().await;
    t1.cancel();
    assert_eq!(a.await.unwrap().unwrap_err(), CallError::Cancelled);
    settle().await;
    assert_eq!(cancelled.get(), 0, "another waiter remains (K-4)");
    gate.open();
    let r = b.await.unwrap().unwrap();
    assert_eq!(r.value().map(String::as_str), Some("v"));
    assert_eq!(runs.get(), 1);
    drop(r);
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k4_change_cache_last_cancel_cancels_the_init_and_caches_nothing() {
    let cache = change_cache();
    let (runs, cancelled, gate, hook) = (Counter::new(), Counter::new(), Gate::new(), Hook::new());
    let token = CancellationToken::new();
    let a = spawn_arbitrary(
        &cache,
        Ctx::new().with_cancel(token.clone()),
        "/etc/x",
        cooperative(&runs, &cancelled, &gate, "v", &hook),
    );
    settle().await;
    token.cancel();
    assert_eq!(a.await.unwrap().unwrap_err(), CallError::Cancelled);
    settle().await;
    assert_eq!(cancelled.get(), 1);
    assert_eq!(hook.count(), 0);
    assert_quiescent(&cache);
    let h2 = Hook::new();
    let r = cache
        .get_or_init_arbitrary(&Ctx::new(), "/etc/x", ready(&runs, "w", &h2))
        .await
        .unwrap();
    assert!(!r.hit(), "the cancelled init's error was not cached");
    assert_eq!(runs.get(), 2);
    drop(r);
    assert_eq!(h2.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k3_change_cache_release_runs_hook_after_last_ref() {
    let cache = change_cache();
    let session = cache.open_session();
    let hook = Hook::new();
    let init = {
        let hook = hook.clone();
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                Ok(Resolved::value("v".to_string()).with_release(hook.failing("unlink failed")))
            })
        }
    };
    let _ = session.arbitrary("/p", init).await.unwrap();
    let bare = cache
        .get_or_init_arbitrary(&Ctx::new(), "/p", never())
        .await
        .unwrap();
    assert!(bare.hit());
    let summary = session.close().unwrap();
    assert_eq!((summary.released, summary.hook_errors), (1, 0));
    assert_eq!(hook.count(), 0);
    let err = bare.release().unwrap_err();
    assert!(
        matches!(&err, CallError::ReleaseHook(m) if m.contains("unlink failed")),
        "{err:?}"
    );
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k5_abandoned_init_blocks_a_new_one_until_it_finishes() {
    let cache = change_cache();
    let log = Log::new();
    let (gate, h_old, h_new) = (Gate::new(), Hook::new(), Hook::new());
    // The first init ignores cancellation for a while (it is mid-mutation).
    let old = {
        let (log, gate, h_old) = (log.clone(), gate.clone(), h_old.clone());
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                log.push("old start");
                gate.wait().await;
                log.push("old end");
                Ok(h_old.value("old"))
            })
        }
    };
    let new = {
        let (log, h_new) = (log.clone(), h_new.clone());
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                log.push("new start");
                Ok(h_new.value("new"))
            })
        }
    };
    let token = CancellationToken::new();
    let first = spawn_arbitrary(&cache, Ctx::new().with_cancel(token.clone()), "/path", old);
    settle().await;
    token.cancel();
    assert_eq!(first.await.unwrap().unwrap_err(), CallError::Cancelled);
    assert_eq!(
        cache.buckets().ongoing_arbitrary,
        1,
        "an abandoned init still counts as in flight"
    );
    assert_invariants(&cache);

    let second = spawn_arbitrary(&cache, Ctx::new(), "/path", new);
    // Plenty of (virtual) time: the second init must not start.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(log.events(), vec!["old start"]);
    assert!(!second.is_finished());

    gate.open();
    let r = second.await.unwrap().unwrap();
    assert_eq!(
        log.events(),
        vec!["old start", "old end", "new start"],
        "never overlapping (K-5)"
    );
    assert_eq!(r.value().map(String::as_str), Some("new"));
    assert!(!r.hit());
    assert_eq!(
        h_old.count(),
        1,
        "the abandoned success is released once (C-5a)"
    );
    drop(r);
    assert_eq!(h_new.count(), 1);
    assert_quiescent(&cache);
}

/// K-5's starting point: an init of "/path" whose only caller left, still
/// running until `gate` opens (it then succeeds with "old").
async fn abandon_gated_init(cache: &Cache<V>, runs: &Counter, gate: &Gate, hook: &Hook) {
    let token = CancellationToken::new();
    let first = spawn_arbitrary(
        cache,
        Ctx::new().with_cancel(token.clone()),
        "/path",
        gated(runs, gate, "old", hook),
    );
    settle().await;
    token.cancel();
    assert_eq!(first.await.unwrap().unwrap_err(), CallError::Cancelled);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k5_blocked_caller_can_cancel_while_waiting() {
    let cache = change_cache();
    let (runs, gate, hook) = (Counter::new(), Gate::new(), Hook::new());
    abandon_gated_init(&cache, &runs, &gate, &hook).await;
    let t2 = CancellationToken::new();
    let blocked = spawn_arbitrary(&cache, Ctx::new().with_cancel(t2.clone()), "/path", never());
    settle().await;
    t2.cancel();
    assert_eq!(blocked.await.unwrap().unwrap_err(), CallError::Cancelled);
    gate.open();
    settle().await;
    assert_eq!(hook.count(), 1);
    assert_eq!(runs.get(), 1);
    assert_quiescent(&cache);
}

/// C-5 with K-5: a caller whose block settles in the same instant as its
/// cancellation fires leaves with the cancellation; it does not go on to
/// start an init of its own.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k5_blocked_caller_cancelled_as_the_block_settles_starts_nothing() {
    let cache = change_cache();
    let (runs, gate, hook) = (Counter::new(), Gate::new(), Hook::new());
    abandon_gated_init(&cache, &runs, &gate, &hook).await;
    let t2 = CancellationToken::new();
    let (h2, runs2) = (Hook::new(), Counter::new());
    let blocked = spawn_arbitrary(
        &cache,
        Ctx::new().with_cancel(t2.clone()),
        "/path",
        ready(&runs2, "new", &h2),
    );
    settle().await;
    // Both before the blocked caller is polled again: the abandoned init
    // (woken first) settles the block, then the caller sees both at once.
    gate.open();
    t2.cancel();
    assert_eq!(blocked.await.unwrap().unwrap_err(), CallError::Cancelled);
    settle().await;
    assert_eq!(runs2.get(), 0, "a cancelled caller starts no init");
    assert_eq!((runs.get(), hook.count()), (1, 1));
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn k5_s5_blocked_then_run_emits_one_uncached_span() {
    let telemetry = Recording::new();
    let cache: Cache<V> = Cache::builder()
        .change_cache()
        .telemetry(telemetry.clone())
        .build();
    let (s1, s2) = (cache.open_session(), cache.open_session());
    let (runs, gate, h_old, h_new) = (Counter::new(), Gate::new(), Hook::new(), Hook::new());
    let token = CancellationToken::new();
    let first = spawn_arbitrary(
        &cache,
        s1.ctx().with_cancel(token.clone()),
        "/path",
        gated(&runs, &gate, "old", &h_old),
    );
    settle().await;
    token.cancel();
    first.await.unwrap().unwrap_err();
    let second = spawn_arbitrary(&cache, s2.ctx(), "/path", ready(&runs, "new", &h_new));
    settle().await;
    gate.open();
    let r = second.await.unwrap().unwrap();
    assert!(!r.hit());
    let spans: Vec<_> = telemetry
        .for_key("/path")
        .into_iter()
        .filter(|s| s.session == Some(s2.id()))
        .collect();
    assert_eq!(
        spans.iter().map(|s| s.cached).collect::<Vec<_>>(),
        vec![false],
        "the init ran for s2's call: one span, not cached (S-5)"
    );
    drop(r);
    s1.close().unwrap();
    s2.close().unwrap();
    assert_eq!((h_old.count(), h_new.count()), (1, 1));
    assert_quiescent(&cache);
}
