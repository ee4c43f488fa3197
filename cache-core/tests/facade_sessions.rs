//! Facade scenarios for sessions (SPEC section 6: S-1 … S-7) and O-1.

mod facade_common;

use std::sync::Arc;

use cache_core::facade::{Cache, CallKey, Ctx, ResolverCtx};
use cache_core::machine::Resolved;
use cache_core::CallError;
use facade_common::*;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s1_close_releases_every_recorded_ref_once() {
    let cache = cache();
    let session = cache.open_session();
    let (runs, h1, h2) = (Counter::new(), Hook::new(), Hook::new());
    let a = session
        .call(key("a"), ready(&runs, "a", &h1))
        .await
        .unwrap();
    let a2 = session.call(key("a"), never()).await.unwrap();
    let b = session
        .call(key("b"), ready(&runs, "b", &h2))
        .await
        .unwrap();
    assert!(a2.hit());
    assert!(!a.holds_ref() && !b.holds_ref(), "the session owns them");
    assert_eq!(session.refs(), 3);
    // Dropping a session-owned result leaves its ref with the session;
    // releasing it early gives the ref back and takes it off the session's
    // list (C-11a), so the close does not release it again.
    drop(a);
    assert_eq!(session.refs(), 3);
    a2.release().unwrap();
    assert_eq!(session.refs(), 2);
    assert_eq!(cache.entries(), 2);
    assert_eq!((h1.count(), h2.count()), (0, 0));
    let summary = session.close().unwrap();
    assert_eq!(summary.released, 2);
    assert_eq!(summary.in_flight, 0);
    assert_eq!(summary.hook_errors, 0);
    assert!(!session.is_open());
    assert_eq!(session.refs(), 0);
    assert_eq!((h1.count(), h2.count()), (1, 1));
    drop(b);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s2_call_on_closed_session_fails_and_nothing_runs() {
    let cache = cache();
    let session = cache.open_session();
    session.close().unwrap();
    let (runs, hook) = (Counter::new(), Hook::new());
    let err = session
        .call(key("a"), ready(&runs, "a", &hook))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::SessionClosed);
    let err = session
        .call(key("a").do_not_cache(true), ready(&runs, "a", &hook))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::SessionClosed);
    let err = session
        .arbitrary("x", ready(&runs, "x", &hook))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::SessionClosed);
    assert_eq!(runs.get(), 0);
    assert_eq!(
        session.close().unwrap_err(),
        CallError::SessionClosed,
        "a second close is a clear error"
    );
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s3_close_while_running_releases_the_late_result() {
    let plain = key("k");
    let deduped = key("k").concurrency_key("c");
    let detached = key("k").do_not_cache(true);
    for k in [plain, deduped, detached] {
        let cache = cache();
        let session = Arc::new(cache.open_session());
        let (runs, gate, hook) = (Counter::new(), Gate::new(), Hook::new());
        let task = {
            let (session, resolver) = (session.clone(), gated(&runs, &gate, "late", &hook));
            tokio::spawn(async move { session.call(k, resolver).await })
        };
        settle().await;
        let summary = session.close().unwrap();
        assert_eq!(
            summary.in_flight, 1,
            "the close accounts for the running call (S-1a)"
        );
        assert_eq!(summary.released, 0);
        // Closing does not cancel the call: it finishes and releases (S-3).
        gate.open();
        assert_eq!(
            task.await.unwrap().unwrap_err(),
            CallError::ClosedDuringExecution
        );
        assert_eq!(hook.count(), 1, "the late result was released");
        assert_quiescent(&cache);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s3_forced_retry_finishing_after_close_releases_its_result() {
    let cache = cache();
    let session = Arc::new(cache.open_session());
    let (runs, gate, hook) = (Counter::new(), Gate::new(), Hook::new());
    session
        .call(key("k"), failing(&runs, "boom"))
        .await
        .unwrap_err();
    let task = {
        let (session, resolver) = (session.clone(), gated(&runs, &gate, "late", &hook));
        tokio::spawn(async move { session.call(key("k"), resolver).await })
    };
    settle().await;
    session.close().unwrap();
    gate.open();
    assert_eq!(
        task.await.unwrap().unwrap_err(),
        CallError::ClosedDuringExecution
    );
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s3_shared_call_survives_its_starter_session_closing() {
    // C-5: the resolver never runs "as" one waiter.
    let cache = cache();
    let s1 = Arc::new(cache.open_session());
    let s2 = Arc::new(cache.open_session());
    let (runs, cancelled, gate, hook) = (Counter::new(), Counter::new(), Gate::new(), Hook::new());
    let k = key("k").concurrency_key("c");
    let t1 = {
        let (s1, k) = (s1.clone(), k.clone());
        let resolver = cooperative(&runs, &cancelled, &gate, "v", &hook);
        tokio::spawn(async move { s1.call(k, resolver).await })
    };
    settle().await;
    let t2 = {
        let (s2, k) = (s2.clone(), k.clone());
        tokio::spawn(async move { s2.call(k, never()).await })
    };
    settle().await;
    s1.close().unwrap();
    settle().await;
    assert_eq!(cancelled.get(), 0);
    gate.open();
    assert_eq!(
        t1.await.unwrap().unwrap_err(),
        CallError::ClosedDuringExecution
    );
    let r = t2.await.unwrap().unwrap();
    assert_eq!(r.value().map(String::as_str), Some("v"));
    assert_invariants(&cache);
    assert_eq!(
        cache.inspect(|m| m.refcount(r.entry())),
        Some(1),
        "s2's ref is live"
    );
    assert_eq!(s2.refs(), 1);
    assert_eq!(hook.count(), 0, "s2 still holds it");
    s2.close().unwrap();
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s4_error_then_success_is_cached_and_later_calls_hit() {
    let cache = cache();
    let session = cache.open_session();
    let (runs, hook) = (Counter::new(), Hook::new());
    let err = session
        .call(key("k"), failing(&runs, "boom"))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::Resolver("boom".into()));
    // The forced retry runs as do-not-cache, then is inserted under the key.
    let retry = session
        .call(key("k"), ready(&runs, "v", &hook))
        .await
        .unwrap();
    assert!(!retry.hit());
    assert!(
        !retry.is_detached(),
        "the session records the inserted handle"
    );
    assert_eq!(session.refs(), 1);
    assert_eq!(cache.entries(), 1);
    let hit = session.call(key("k"), never()).await.unwrap();
    assert!(hit.hit(), "the flag was cleared: later calls hit");
    assert_eq!(hit.entry(), retry.entry());
    let other = cache.open_session();
    let other_hit = other.call(key("k"), never()).await.unwrap();
    assert!(other_hit.hit());
    assert_eq!(runs.get(), 2);
    session.close().unwrap();
    assert_eq!(hook.count(), 0);
    other.close().unwrap();
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s4_forced_retry_finding_an_entry_takes_it_and_releases_its_own() {
    let cache = cache();
    let s1 = cache.open_session();
    let s2 = cache.open_session();
    let runs = Counter::new();
    let (h_s2, h_retry) = (Hook::new(), Hook::new());
    s1.call(key("k"), failing(&runs, "boom")).await.unwrap_err();
    // Meanwhile another session caches the key.
    let cached = s2.call(key("k"), ready(&runs, "s2", &h_s2)).await.unwrap();
    // s1's next call is a forced retry: it runs (no hit), finds the entry,
    // takes it and releases its own result.
    let retry = s1
        .call(key("k"), ready(&runs, "retry", &h_retry))
        .await
        .unwrap();
    assert_eq!(runs.get(), 3, "the retry bypasses the cache");
    assert_eq!(retry.entry(), cached.entry());
    assert_eq!(retry.value().map(String::as_str), Some("s2"));
    assert_eq!(
        h_retry.count(),
        1,
        "the retry's own result is released once"
    );
    assert_eq!(s1.refs(), 1);
    // The flag is cleared.
    assert!(s1.call(key("k"), never()).await.unwrap().hit());
    s1.close().unwrap();
    s2.close().unwrap();
    assert_eq!((h_s2.count(), h_retry.count()), (1, 1));
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s4_cancellation_and_recursion_do_not_force_a_retry() {
    let cache = cache();
    let s1 = cache.open_session();
    let runs = Counter::new();
    // A cancelled call...
    let token = tokio_util::sync::CancellationToken::new();
    let mut ctx = s1.ctx();
    ctx.cancel = token.clone();
    let gate = Gate::new();
    let h_abandoned = Hook::new();
    let call = cache.get_or_init_call(&ctx, key("k"), gated(&runs, &gate, "x", &h_abandoned));
    tokio::pin!(call);
    tokio::select! {
        _ = &mut call => panic!("gated"),
        _ = settle() => {}
    }
    token.cancel();
    assert_eq!(call.await.unwrap_err(), CallError::Cancelled);
    // ...and a resolver that returned the recursive-call error.
    let resolver = |_ctx: ResolverCtx| -> BoxFut {
        Box::pin(async { Err(CallError::Recursive { key: "x".into() }) })
    };
    s1.call(key("r"), resolver).await.unwrap_err();
    // Another session caches both keys; s1's next calls are plain hits.
    let s2 = cache.open_session();
    let h = Hook::new();
    let _ = s2.call(key("k"), ready(&runs, "k", &h)).await.unwrap();
    let _ = s2.call(key("r"), ready(&runs, "r", &h)).await.unwrap();
    let before = runs.get();
    assert!(s1.call(key("k"), never()).await.unwrap().hit());
    assert!(s1.call(key("r"), never()).await.unwrap().hit());
    assert_eq!(runs.get(), before);
    gate.open();
    settle().await;
    assert_eq!(h_abandoned.count(), 1);
    s1.close().unwrap();
    s2.close().unwrap();
    assert_eq!(h.count(), 2);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s4_error_then_no_value_stays_no_value() {
    let cache = cache();
    let session = cache.open_session();
    let (runs, hook) = (Counter::new(), Hook::new());
    session
        .call(key("k"), failing(&runs, "boom"))
        .await
        .unwrap_err();
    let resolver = {
        let (runs, hook) = (runs.clone(), hook.clone());
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                runs.inc();
                Ok(Resolved::no_value().with_release(hook.hook()))
            })
        }
    };
    let retry = session.call(key("k"), resolver).await.unwrap();
    assert_eq!(retry.value(), None);
    let hit = session.call(key("k"), never()).await.unwrap();
    assert!(hit.hit());
    assert_eq!(hit.value(), None, "no value is cached as no value (C-10)");
    assert_eq!(runs.get(), 2);
    session.close().unwrap();
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s5_telemetry_once_per_key_per_session() {
    let telemetry = Recording::new();
    let cache: Cache<V> = Cache::builder().telemetry(telemetry.clone()).build();
    let (s1, s2) = (cache.open_session(), cache.open_session());
    let (runs, hook) = (Counter::new(), Hook::new());
    let (a, b, d, e, r) = (id("a"), id("b"), id("d"), id("e"), id("r"));

    let _ = s1.call(key("a"), ready(&runs, "a", &hook)).await.unwrap();
    let _ = s1.call(key("a"), never()).await.unwrap();
    let _ = s1.call(key("a"), never()).await.unwrap();
    let _ = s2.call(key("a"), never()).await.unwrap();
    let spans = telemetry.for_key(&a.call_key());
    assert_eq!(spans.len(), 2, "once per key per session: {spans:?}");
    assert_eq!((spans[0].session, spans[0].cached), (Some(s1.id()), false));
    assert_eq!((spans[1].session, spans[1].cached), (Some(s2.id()), true));

    let _ = s1.call(key("b"), ready(&runs, "b", &hook)).await.unwrap();
    assert_eq!(telemetry.for_key(&b.call_key()).len(), 1);

    // Do-not-cache calls are always emitted, and never cached.
    for _ in 0..3 {
        drop(
            s1.call(key("d").do_not_cache(true), ready(&runs, "d", &hook))
                .await
                .unwrap(),
        );
    }
    let spans = telemetry.for_key(&d.call_key());
    assert_eq!(spans.len(), 3);
    assert!(spans.iter().all(|s| !s.cached));

    // A scope that asks for repeated telemetry.
    let mut repeat = key("r");
    repeat.repeat_telemetry = true;
    let _ = s1
        .call(repeat.clone(), ready(&runs, "r", &hook))
        .await
        .unwrap();
    let _ = s1.call(repeat.clone(), never()).await.unwrap();
    let spans = telemetry.for_key(&r.call_key());
    assert_eq!(
        spans.iter().map(|s| s.cached).collect::<Vec<_>>(),
        vec![false, true]
    );

    // An error, then the forced retry: every resolver run emits one span,
    // the retry included, with cached=false; the later hit emits none.
    s1.call(key("e"), failing(&runs, "boom")).await.unwrap_err();
    let _ = s1.call(key("e"), ready(&runs, "e", &hook)).await.unwrap();
    let _ = s1.call(key("e"), never()).await.unwrap();
    let spans = telemetry.for_key(&e.call_key());
    assert_eq!(
        spans.iter().map(|s| s.cached).collect::<Vec<_>>(),
        vec![false, false],
        "{spans:?}"
    );

    s1.close().unwrap();
    s2.close().unwrap();
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s1_c2_do_not_cache_results_are_not_tracked_by_the_session() {
    let cache = cache();
    let session = cache.open_session();
    let (runs, hook) = (Counter::new(), Hook::new());
    let d = session
        .call(key("d").do_not_cache(true), ready(&runs, "d", &hook))
        .await
        .unwrap();
    assert!(d.is_detached());
    assert!(d.holds_ref(), "the caller holds a detached result (C-11a)");
    assert_eq!(session.refs(), 0);
    assert_eq!(cache.entries(), 0);
    let summary = session.close().unwrap();
    assert_eq!(summary.released, 0);
    assert_eq!(hook.count(), 0, "the caller still holds it");
    drop(d);
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s1_c10_no_value_results_are_tracked_and_released() {
    let cache = cache();
    let session = cache.open_session();
    let hook = Hook::new();
    let resolver = {
        let hook = hook.clone();
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move { Ok(Resolved::no_value().with_release(hook.hook())) })
        }
    };
    let r = session.call(key("k"), resolver).await.unwrap();
    assert_eq!(r.value(), None);
    assert_eq!(session.refs(), 1);
    assert!(session.call(key("k"), never()).await.unwrap().hit());
    assert_eq!(session.refs(), 2);
    session.close().unwrap();
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s2_c1_missing_id_in_a_session_is_rejected() {
    let cache = cache();
    let session = cache.open_session();
    let (runs, hook) = (Counter::new(), Hook::new());
    let err = session
        .call(CallKey::missing(), ready(&runs, "v", &hook))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::InvalidKey(_)), "{err:?}");
    assert_eq!(runs.get(), 0);
    assert_eq!(session.refs(), 0);
    // Not a resolver error: no forced retry, nothing recorded.
    session.close().unwrap();
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s3_arbitrary_close_while_running_releases_the_late_result() {
    let cache = cache();
    let session = Arc::new(cache.open_session());
    let (runs, gate, hook) = (Counter::new(), Gate::new(), Hook::new());
    let task = {
        let (session, init) = (session.clone(), gated(&runs, &gate, "late", &hook));
        tokio::spawn(async move { session.arbitrary("x", init).await })
    };
    settle().await;
    assert_eq!(cache.buckets().ongoing_arbitrary, 1);
    let summary = session.close().unwrap();
    assert_eq!(summary.in_flight, 1);
    gate.open();
    assert_eq!(
        task.await.unwrap().unwrap_err(),
        CallError::ClosedDuringExecution
    );
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s6_connected_clients_counts_open_sessions_and_drop_closes() {
    let cache = cache();
    assert_eq!(cache.connected_clients(), 0);
    let s1 = cache.open_session();
    let s2 = cache.open_session();
    assert_eq!(cache.connected_clients(), 2);
    let hook = Hook::new();
    let _ = s1
        .call(key("k"), ready(&Counter::new(), "v", &hook))
        .await
        .unwrap();
    // A dropped connection closes its session and releases its refs.
    drop(s1);
    assert_eq!(cache.connected_clients(), 1);
    assert_eq!(hook.count(), 1);
    assert_eq!(
        metric(&cache.metrics_text(), "dagger_connected_clients"),
        Some(1)
    );
    s2.close().unwrap();
    assert_eq!(cache.connected_clients(), 0);
    drop(s2); // dropping a closed session is fine
    assert_eq!(
        metric(&cache.metrics_text(), "dagger_connected_clients"),
        Some(0)
    );
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s7_close_summary_reports_entries_before_and_after() {
    let cache = cache();
    let (s1, s2) = (cache.open_session(), cache.open_session());
    let (runs, hook) = (Counter::new(), Hook::new());
    let _ = s1
        .call(key("mine"), ready(&runs, "m", &hook))
        .await
        .unwrap();
    let _ = s1
        .call(key("shared"), ready(&runs, "s", &hook))
        .await
        .unwrap();
    let _ = s2.call(key("shared"), never()).await.unwrap();
    assert_eq!(cache.entries(), 2);
    let summary = s1.close().unwrap();
    assert_eq!(summary.session, s1.id());
    assert_eq!((summary.entries_before, summary.entries_after), (2, 1));
    assert_eq!(summary.released, 2);
    let summary = s2.close().unwrap();
    assert_eq!((summary.entries_before, summary.entries_after), (1, 0));
    assert_eq!(hook.count(), 2);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn o1_metrics_text_reports_the_current_entries() {
    let cache = cache();
    let session = cache.open_session();
    let hook = Hook::new();
    let text = cache.metrics_text();
    assert_eq!(
        metric(&text, "dagger_dagql_cache_entries"),
        Some(0),
        "{text}"
    );
    let returned = id("canonical").with_content_digest(digest("c"));
    let resolver = {
        let (hook, returned) = (hook.clone(), returned.clone());
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move { Ok(hook.value("v").with_id(returned)) })
        }
    };
    let _ = session.call(key("alias"), resolver).await.unwrap();
    assert_eq!(cache.entries(), 3);
    let text = cache.metrics_text();
    assert_eq!(
        metric(&text, "dagger_dagql_cache_entries"),
        Some(3),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dagger_dagql_cache_completed_calls_entries"),
        Some(2)
    );
    assert_eq!(
        metric(
            &text,
            "dagger_dagql_cache_completed_calls_by_content_entries"
        ),
        Some(1)
    );
    assert_eq!(metric(&text, "dagger_connected_clients"), Some(1));
    session.close().unwrap();
    let text = cache.metrics_text();
    assert_eq!(
        metric(&text, "dagger_dagql_cache_entries"),
        Some(0),
        "{text}"
    );
    assert_quiescent(&cache);
}

/// The value of an unlabelled sample `<name> <value>` in a text exposition.
fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let (n, v) = line.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s1_bare_ctx_from_session_ctx_owns_nothing_after_close() {
    // Session::ctx() carries the session: results are session-owned.
    let cache = cache();
    let session = cache.open_session();
    let hook = Hook::new();
    let ctx: Ctx = session.ctx();
    let r = cache
        .get_or_init_call(&ctx, key("k"), ready(&Counter::new(), "v", &hook))
        .await
        .unwrap();
    assert!(!r.holds_ref());
    assert_eq!(session.refs(), 1);
    drop(session);
    assert_eq!(hook.count(), 1);
    drop(r);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s2_a_closed_session_answers_session_closed_before_anything_but_c1() {
    // S-2 in the facade: a closed session fails with SessionClosed even
    // when the caller is already cancelled (C-5) or the call has a TTL (the
    // store is not asked). Only C-1 comes before it ("before anything else
    // happens"): a key with no ID, with or without a TTL or a cancelled
    // caller, is an invalid key there too, as on the state machine (see
    // c1_missing_id_rejected_before_anything).
    let cache = cache();
    let session = cache.open_session();
    session.close().unwrap();
    let (runs, hook) = (Counter::new(), Hook::new());
    let err = session
        .call(CallKey::missing(), ready(&runs, "v", &hook))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::InvalidKey(_)), "{err:?}");
    let err = session
        .call(CallKey::missing().ttl_ms(100), ready(&runs, "v", &hook))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::InvalidKey(_)), "{err:?}");
    let err = session
        .arbitrary("", ready(&runs, "v", &hook))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::InvalidKey(_)), "{err:?}");
    let err = session
        .call(key("k").ttl_ms(100), ready(&runs, "v", &hook))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::SessionClosed), "{err:?}");
    let cancelled = tokio_util::sync::CancellationToken::new();
    cancelled.cancel();
    let ctx = session.ctx().with_cancel(cancelled);
    let err = cache
        .get_or_init_call(&ctx, key("k"), ready(&runs, "v", &hook))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::SessionClosed), "{err:?}");
    assert_eq!(runs.get(), 0);
    assert_quiescent(&cache);
}

/// S-1 with C-12: a close runs every hook even when some fail, counts the
/// failures in its summary and in the metrics (O-1), and still releases
/// everything.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn s1_close_counts_failing_release_hooks_and_runs_the_rest() {
    let cache = cache();
    let session = cache.open_session();
    let (bad1, bad2, good) = (Hook::new(), Hook::new(), Hook::new());
    for (name, resolved) in [
        (
            "a",
            Resolved::value("a".to_string()).with_release(bad1.failing("a: disk on fire")),
        ),
        ("b", good.value("b")),
        (
            "c",
            Resolved::value("c".to_string()).with_release(bad2.failing("c: disk on fire")),
        ),
    ] {
        let _ = session
            .call(key(name), move |_| async move { Ok(resolved) })
            .await
            .unwrap();
    }
    let summary = session.close().unwrap();
    assert_eq!((summary.released, summary.hook_errors), (3, 2));
    assert_eq!((bad1.count(), bad2.count(), good.count()), (1, 1, 1));
    assert_eq!(cache.metrics().release_hook_errors(), 2);
    assert_quiescent(&cache);
}
