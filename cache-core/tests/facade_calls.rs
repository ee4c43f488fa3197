//! Facade scenarios for the call cache (SPEC section 3: C-1 … C-14).

mod facade_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::facade::{Cache, Ctx, ResolverCtx};
use cache_core::id::Literal;
use cache_core::machine::Resolved;
use cache_core::CallError;
use facade_common::*;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c3_concurrent_callers_share_one_run() {
    let cache = cache();
    let (runs, gate, hook) = (Counter::new(), Gate::new(), Hook::new());
    let k = key("shared").concurrency_key("c");
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            spawn_call(
                &cache,
                Ctx::new(),
                k.clone(),
                gated(&runs, &gate, "v", &hook),
            )
        })
        .collect();
    settle().await;
    assert_eq!(
        runs.get(),
        1,
        "one resolver run for one (key, concurrency key)"
    );
    assert_eq!(cache.buckets().ongoing_calls, 1);
    assert_invariants(&cache);

    gate.open();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert_eq!(runs.get(), 1);
    let entry = results[0].entry();
    for r in &results {
        assert_eq!(r.entry(), entry, "every waiter holds the same entry (C-6)");
        assert_eq!(r.value().map(String::as_str), Some("v"));
        assert!(!r.hit(), "joiners report hit=false (design note)");
        assert!(r.holds_ref());
    }
    assert_eq!(cache.inspect(|m| m.refcount(entry)), Some(3));
    // A caller arriving after completion is a storage hit.
    let late = cache
        .get_or_init_call(&Ctx::new(), k.clone(), never())
        .await
        .unwrap();
    assert!(late.hit());
    drop(late);
    for r in results {
        assert_eq!(hook.count(), 0, "hook waits for the last ref (C-12)");
        r.release().unwrap();
    }
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c3_no_dedupe_without_concurrency_key() {
    let cache = cache();
    let (runs, gate) = (Counter::new(), Gate::new());
    let (h1, h2) = (Hook::new(), Hook::new());
    let a = spawn_call(&cache, Ctx::new(), key("k"), gated(&runs, &gate, "a", &h1));
    let b = spawn_call(&cache, Ctx::new(), key("k"), gated(&runs, &gate, "b", &h2));
    settle().await;
    assert_eq!(runs.get(), 2, "an empty concurrency key never deduplicates");
    assert_eq!(cache.buckets().ongoing_calls, 0, "not registered in flight");
    assert_eq!(cache.live_entries(), 2);
    gate.open();
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!(
        a.entry(),
        b.entry(),
        "the duplicate completion joins the first (C-7)"
    );
    assert_eq!(
        h1.count() + h2.count(),
        1,
        "the discarded duplicate's hook ran"
    );
    drop((a, b));
    assert_eq!((h1.count(), h2.count()), (1, 1));
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c3_different_concurrency_keys_do_not_dedupe() {
    let cache = cache();
    let (runs, gate) = (Counter::new(), Gate::new());
    let (h1, h2) = (Hook::new(), Hook::new());
    let a = spawn_call(
        &cache,
        Ctx::new(),
        key("k").concurrency_key("one"),
        gated(&runs, &gate, "a", &h1),
    );
    let b = spawn_call(
        &cache,
        Ctx::new(),
        key("k").concurrency_key("two"),
        gated(&runs, &gate, "b", &h2),
    );
    settle().await;
    assert_eq!(runs.get(), 2);
    assert_eq!(cache.buckets().ongoing_calls, 2);
    assert_invariants(&cache);
    gate.open();
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!(a.entry(), b.entry());
    drop((a, b));
    assert_eq!((h1.count(), h2.count()), (1, 1));
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c7_duplicate_completion_keeps_first_entry() {
    let cache = cache();
    let runs = Counter::new();
    let (g1, g2) = (Gate::new(), Gate::new());
    let (h1, h2) = (Hook::new(), Hook::new());
    let first = spawn_call(
        &cache,
        Ctx::new(),
        key("k"),
        gated(&runs, &g1, "first", &h1),
    );
    let second = spawn_call(
        &cache,
        Ctx::new(),
        key("k"),
        gated(&runs, &g2, "second", &h2),
    );
    settle().await;
    assert_eq!(runs.get(), 2, "side by side without a concurrency key");

    g1.open();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.value().map(String::as_str), Some("first"));
    assert_eq!(cache.buckets().completed_calls, 1);

    g2.open();
    let second = second.await.unwrap().unwrap();
    assert_eq!(
        h2.count(),
        1,
        "the newcomer's hook ran at once, exactly once"
    );
    assert_eq!(
        second.entry(),
        first.entry(),
        "both callers hold the first entry"
    );
    assert_eq!(second.value().map(String::as_str), Some("first"));
    assert_eq!(cache.inspect(|m| m.refcount(first.entry())), Some(2));
    assert_eq!(cache.entries(), 1, "the newcomer is indexed nowhere");
    assert_eq!(cache.live_entries(), 1);
    assert_invariants(&cache);

    drop(first);
    assert_eq!(h1.count(), 0);
    drop(second);
    assert_eq!((h1.count(), h2.count()), (1, 1));
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c9_errors_are_not_cached() {
    let cache = cache();
    let runs = Counter::new();
    let hook = Hook::new();
    for _ in 0..2 {
        let err = cache
            .get_or_init_call(&Ctx::new(), key("k"), failing(&runs, "boom"))
            .await
            .unwrap_err();
        assert_eq!(err, CallError::Resolver("boom".into()));
        assert_eq!(cache.entries(), 0, "a failed call leaves every index");
        assert_eq!(cache.live_entries(), 0);
    }
    let ok = cache
        .get_or_init_call(&Ctx::new(), key("k"), ready(&runs, "v", &hook))
        .await
        .unwrap();
    assert!(!ok.hit());
    let hit = cache
        .get_or_init_call(&Ctx::new(), key("k"), never())
        .await
        .unwrap();
    assert!(hit.hit());
    assert_eq!(hit.value().map(String::as_str), Some("v"));
    assert_eq!(runs.get(), 3, "error, error, success, then a hit");
    drop((ok, hit));
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c9_every_waiter_gets_the_error() {
    let cache = cache();
    let (runs, gate) = (Counter::new(), Gate::new());
    let k = key("k").concurrency_key("c");
    let resolver = {
        let (runs, gate) = (runs.clone(), gate.clone());
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                runs.inc();
                gate.wait().await;
                Err(CallError::Resolver("boom".into()))
            })
        }
    };
    let a = spawn_call(&cache, Ctx::new(), k.clone(), resolver);
    let b = spawn_call(&cache, Ctx::new(), k.clone(), never());
    settle().await;
    gate.open();
    assert_eq!(
        a.await.unwrap().unwrap_err(),
        CallError::Resolver("boom".into())
    );
    assert_eq!(
        b.await.unwrap().unwrap_err(),
        CallError::Resolver("boom".into())
    );
    assert_eq!(runs.get(), 1);
    assert_quiescent(&cache);
    // The next call runs the resolver again (nothing stale in flight).
    let hook = Hook::new();
    let ok = cache
        .get_or_init_call(&Ctx::new(), k, ready(&runs, "v", &hook))
        .await
        .unwrap();
    assert!(!ok.hit());
    assert_eq!(runs.get(), 2);
    drop(ok);
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c4_recursive_call_detected_other_keys_and_instances_allowed() {
    let cache = cache();
    let other: Cache<V> = Cache::builder().build();
    let outcomes = Log::new();
    let (h_outer, h_b, h_other) = (Hook::new(), Hook::new(), Hook::new());
    let inner_runs = Counter::new();
    let resolver = {
        let (cache, other, outcomes) = (cache.clone(), other.clone(), outcomes.clone());
        let (h_outer, h_b, h_other, inner_runs) = (
            h_outer.clone(),
            h_b.clone(),
            h_other.clone(),
            inner_runs.clone(),
        );
        move |rctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                // Same key, same instance: would wait on itself.
                let same = cache
                    .get_or_init_call(&rctx.nested(), key("a"), never())
                    .await;
                outcomes.push(format!("same: {:?}", same.as_ref().err()));
                assert!(matches!(same, Err(CallError::Recursive { .. })));
                // C-4a: the do-not-cache path checks too.
                let dnc = cache
                    .get_or_init_call(&rctx.nested(), key("a").do_not_cache(true), never())
                    .await;
                assert!(matches!(dnc, Err(CallError::Recursive { .. })));
                // A different key on the same instance is fine.
                let b = cache
                    .get_or_init_call(&rctx.nested(), key("b"), ready(&inner_runs, "b", &h_b))
                    .await
                    .unwrap();
                // The same key on another instance is fine.
                let same_key_other = other
                    .get_or_init_call(&rctx.nested(), key("a"), ready(&inner_runs, "o", &h_other))
                    .await
                    .unwrap();
                assert!(!same_key_other.hit());
                drop(same_key_other);
                Ok(h_outer.value("a").with_nested(b.into_nested().unwrap()))
            })
        }
    };
    let a = cache
        .get_or_init_call(&Ctx::new(), key("a"), resolver)
        .await
        .unwrap();
    assert_eq!(inner_runs.get(), 2);
    assert_eq!(outcomes.events().len(), 1);
    assert_eq!(
        h_other.count(),
        1,
        "the other instance's result was dropped"
    );
    assert_quiescent_other(&other);
    drop(a);
    assert_eq!((h_outer.count(), h_b.count()), (1, 1));
    assert_quiescent(&cache);
}

fn assert_quiescent_other(other: &Cache<V>) {
    assert_quiescent(other);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c4_recursion_through_a_chain_is_detected() {
    // a -> b -> a: the grandchild revisits a's storage key.
    let cache = cache();
    let seen = Log::new();
    let resolver = {
        let (cache, seen) = (cache.clone(), seen.clone());
        move |rctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                let inner = {
                    let (cache, seen) = (cache.clone(), seen.clone());
                    move |rctx: ResolverCtx| -> BoxFut {
                        Box::pin(async move {
                            let r = cache
                                .get_or_init_call(&rctx.nested(), key("a"), never())
                                .await;
                            seen.push(format!("{:?}", r.as_ref().err()));
                            r.map(|_| Resolved::value("unreachable".to_string()))
                        })
                    }
                };
                let b = cache
                    .get_or_init_call(&rctx.nested(), key("b"), inner)
                    .await?;
                Ok(Resolved::value("a".to_string()).with_nested(b.into_nested().unwrap()))
            })
        }
    };
    let err = cache
        .get_or_init_call(&Ctx::new(), key("a"), resolver)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Recursive { .. }), "{err:?}");
    assert_eq!(seen.events().len(), 1);
    assert!(seen.events()[0].contains("Recursive"));
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c4b_sibling_calls_waiting_on_each_other_fail_instead_of_hanging() {
    let cache = cache();
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    // A's resolver calls B and B's resolver calls A, both joining the
    // sibling's in-flight run (same concurrency key).
    let make = |me: &'static str, other: &'static str| {
        let (cache, barrier) = (cache.clone(), barrier.clone());
        move |rctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                barrier.wait().await;
                let sibling = cache
                    .get_or_init_call(&rctx.nested(), key(other).concurrency_key("c"), never())
                    .await?;
                Ok(Resolved::value(me.to_string()).with_nested(sibling.into_nested().unwrap()))
            })
        }
    };
    let a = spawn_call(
        &cache,
        Ctx::new(),
        key("A").concurrency_key("c"),
        make("A", "B"),
    );
    let b = spawn_call(
        &cache,
        Ctx::new(),
        key("B").concurrency_key("c"),
        make("B", "A"),
    );
    let both = tokio::time::timeout(Duration::from_secs(3600), async {
        (a.await.unwrap(), b.await.unwrap())
    })
    .await
    .expect("a wait cycle must fail, not hang (C-4b, INV-11)");
    assert!(
        matches!(both.0, Err(CallError::Recursive { .. })),
        "{:?}",
        both.0
    );
    assert!(
        matches!(both.1, Err(CallError::Recursive { .. })),
        "{:?}",
        both.1
    );
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c5_resolver_cancelled_only_after_all_waiters_leave() {
    let cache = cache();
    let (runs, cancelled, gate, hook) = (Counter::new(), Counter::new(), Gate::new(), Hook::new());
    let token_seen: Arc<Mutex<Option<CancellationToken>>> = Arc::default();
    let k = key("k").concurrency_key("c");
    let resolver = {
        let inner = cooperative(&runs, &cancelled, &gate, "v", &hook);
        let token_seen = token_seen.clone();
        move |rctx: ResolverCtx| -> BoxFut {
            *token_seen.lock().unwrap() = Some(rctx.cancel.clone());
            inner(rctx)
        }
    };
    let tokens: Vec<_> = (0..3).map(|_| CancellationToken::new()).collect();
    let first = spawn_call(
        &cache,
        Ctx::new().with_cancel(tokens[0].clone()),
        k.clone(),
        resolver,
    );
    settle().await;
    let second = spawn_call(
        &cache,
        Ctx::new().with_cancel(tokens[1].clone()),
        k.clone(),
        never(),
    );
    let third = spawn_call(
        &cache,
        Ctx::new().with_cancel(tokens[2].clone()),
        k.clone(),
        never(),
    );
    settle().await;
    let resolver_token = token_seen.lock().unwrap().clone().unwrap();
    assert_eq!(cache.inspect(|m| m.waiters(first_entry(m))).len(), 3);

    // The starter leaves first: the resolver does not run "as" it (C-5).
    tokens[0].cancel();
    assert_eq!(first.await.unwrap().unwrap_err(), CallError::Cancelled);
    tokens[1].cancel();
    assert_eq!(second.await.unwrap().unwrap_err(), CallError::Cancelled);
    settle().await;
    assert!(!resolver_token.is_cancelled(), "a waiter remains (INV-7)");
    assert_eq!(cancelled.get(), 0);
    assert_eq!(cache.buckets().ongoing_calls, 1);
    assert_invariants(&cache);

    gate.open();
    let r = third.await.unwrap().unwrap();
    assert_eq!(r.value().map(String::as_str), Some("v"));
    assert_eq!(runs.get(), 1);
    drop(r);
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

/// The one live entry of a machine (for tests with a single call in flight).
fn first_entry(m: &cache_core::machine::CallCache<V>) -> cache_core::machine::EntryId {
    m.leak_report().entries[0].entry
}

/// C-5: a caller already cancelled when it calls leaves at once with the
/// cancellation: it takes no ref on a stored result and starts no resolver,
/// for calls and arbitrary entries alike.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c5_an_already_cancelled_caller_gets_no_hit_and_runs_nothing() {
    let cache = cache();
    let (runs, hook) = (Counter::new(), Hook::new());
    let held = cache
        .get_or_init_call(&Ctx::new(), key("stored"), ready(&runs, "v", &hook))
        .await
        .unwrap();
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let ctx = Ctx::new().with_cancel(cancelled);
    for k in ["stored", "fresh"] {
        let err = cache
            .get_or_init_call(&ctx, key(k), ready(&runs, "v", &hook))
            .await
            .unwrap_err();
        assert_eq!(err, CallError::Cancelled, "{k}");
    }
    let err = cache
        .get_or_init_arbitrary(&ctx, "/path", ready(&runs, "v", &hook))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::Cancelled);
    assert_eq!(runs.get(), 1, "only the first call ran");
    assert_eq!(
        cache.inspect(|m| m.refcount(held.entry())),
        Some(1),
        "no ref taken for a cancelled caller"
    );
    drop(held);
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c5_last_waiter_leaving_cancels_the_resolver() {
    let cache = cache();
    let (runs, cancelled, gate, hook) = (Counter::new(), Counter::new(), Gate::new(), Hook::new());
    let k = key("k").concurrency_key("c");
    let (t1, t2) = (CancellationToken::new(), CancellationToken::new());
    let a = spawn_call(
        &cache,
        Ctx::new().with_cancel(t1.clone()),
        k.clone(),
        cooperative(&runs, &cancelled, &gate, "v", &hook),
    );
    let b = spawn_call(
        &cache,
        Ctx::new().with_cancel(t2.clone()),
        k.clone(),
        never(),
    );
    settle().await;
    t2.cancel();
    assert_eq!(b.await.unwrap().unwrap_err(), CallError::Cancelled);
    settle().await;
    assert_eq!(cancelled.get(), 0);
    t1.cancel();
    assert_eq!(a.await.unwrap().unwrap_err(), CallError::Cancelled);
    settle().await;
    assert_eq!(
        cancelled.get(),
        1,
        "the last waiter's leaving cancels the resolver"
    );
    assert_eq!(hook.count(), 0, "it never produced a result");
    assert_quiescent(&cache);
    // Nothing was cached: the next call runs again.
    let h2 = Hook::new();
    let r = cache
        .get_or_init_call(&Ctx::new(), k, ready(&runs, "w", &h2))
        .await
        .unwrap();
    assert!(!r.hit());
    drop(r);
    assert_eq!(runs.get(), 2);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c5_dropped_caller_future_leaves_like_a_cancel() {
    let cache = cache();
    let (runs, cancelled, gate, hook) = (Counter::new(), Counter::new(), Gate::new(), Hook::new());
    let k = key("k").concurrency_key("c");
    let timed_out = tokio::time::timeout(
        Duration::from_secs(1),
        cache.get_or_init_call(
            &Ctx::new(),
            k.clone(),
            cooperative(&runs, &cancelled, &gate, "v", &hook),
        ),
    )
    .await;
    assert!(timed_out.is_err());
    settle().await;
    assert_eq!(cancelled.get(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c5a_abandoned_success_runs_hook_once() {
    let cache = cache();
    let (runs, gate, hook) = (Counter::new(), Gate::new(), Hook::new());
    let k = key("k").concurrency_key("c");
    let token = CancellationToken::new();
    // This resolver ignores its cancellation and succeeds anyway.
    let a = spawn_call(
        &cache,
        Ctx::new().with_cancel(token.clone()),
        k.clone(),
        gated(&runs, &gate, "late", &hook),
    );
    settle().await;
    token.cancel();
    assert_eq!(a.await.unwrap().unwrap_err(), CallError::Cancelled);
    assert_eq!(cache.entries(), 0, "an abandoned call is indexed nowhere");
    assert_eq!(cache.live_entries(), 1, "its resolver still runs");

    // A new caller starts afresh instead of joining the abandoned run.
    let h2 = Hook::new();
    let b = cache
        .get_or_init_call(&Ctx::new(), k.clone(), ready(&runs, "fresh", &h2))
        .await
        .unwrap();
    assert_eq!(b.value().map(String::as_str), Some("fresh"));
    assert_eq!(runs.get(), 2);

    gate.open();
    settle().await;
    assert_eq!(
        hook.count(),
        1,
        "abandoned success: hook at once, exactly once (C-5a)"
    );
    assert_eq!(cache.live_entries(), 1, "only the fresh entry remains");
    let hit = cache
        .get_or_init_call(&Ctx::new(), k, never())
        .await
        .unwrap();
    assert_eq!(hit.value().map(String::as_str), Some("fresh"));
    drop((b, hit));
    assert_eq!((hook.count(), h2.count()), (1, 1));
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c12_release_hook_runs_after_last_ref_and_its_error_is_returned() {
    let cache = cache();
    let hook = Hook::new();
    let resolver = {
        let hook = hook.clone();
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                Ok(Resolved::value("v".to_string()).with_release(hook.failing("disk on fire")))
            })
        }
    };
    let a = cache
        .get_or_init_call(&Ctx::new(), key("k"), resolver)
        .await
        .unwrap();
    let b = cache
        .get_or_init_call(&Ctx::new(), key("k"), never())
        .await
        .unwrap();
    assert!(b.hit());
    assert_eq!(a.release(), Ok(()), "not the last ref: no hook");
    assert_eq!(hook.count(), 0);
    let err = b.release().unwrap_err();
    assert!(
        matches!(&err, CallError::ReleaseHook(m) if m.contains("disk on fire")),
        "{err:?}"
    );
    assert_eq!(hook.count(), 1);
    assert_eq!(cache.metrics().release_hook_errors(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c1_missing_id_is_rejected_and_resolver_not_run() {
    let cache = cache();
    let runs = Counter::new();
    let hook = Hook::new();
    let err = cache
        .get_or_init_call(
            &Ctx::new(),
            cache_core::facade::CallKey::missing(),
            ready(&runs, "v", &hook),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::InvalidKey(_)), "{err:?}");
    // With a TTL, a concurrency key and do-not-cache too: still rejected first.
    let err = cache
        .get_or_init_call(
            &Ctx::new(),
            cache_core::facade::CallKey::missing()
                .concurrency_key("c")
                .ttl_ms(100)
                .do_not_cache(true),
            ready(&runs, "v", &hook),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::InvalidKey(_)), "{err:?}");
    assert_eq!(runs.get(), 0);
    assert_eq!(hook.count(), 0);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c10_no_value_result_is_cached() {
    let cache = cache();
    let (runs, hook) = (Counter::new(), Hook::new());
    let resolver = {
        let (runs, hook) = (runs.clone(), hook.clone());
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                runs.inc();
                Ok(Resolved::no_value().with_release(hook.hook()))
            })
        }
    };
    let a = cache
        .get_or_init_call(&Ctx::new(), key("k"), resolver)
        .await
        .unwrap();
    assert_eq!(a.value(), None);
    assert!(!a.hit());
    assert!(a.holds_ref(), "no value still holds a ref");
    let b = cache
        .get_or_init_call(&Ctx::new(), key("k"), never())
        .await
        .unwrap();
    assert!(b.hit());
    assert_eq!(b.value(), None);
    assert_eq!(runs.get(), 1);
    assert_eq!(cache.entries(), 1);
    drop((a, b));
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c2_do_not_cache_stores_nothing_and_hook_runs_once() {
    let cache = cache();
    let (runs, h1, h2) = (Counter::new(), Hook::new(), Hook::new());
    let keys_seen = Log::new();
    let resolver = |hook: &Hook| {
        let (runs, hook, keys_seen) = (runs.clone(), hook.clone(), keys_seen.clone());
        move |rctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                runs.inc();
                keys_seen.push(rctx.storage_key.clone());
                Ok(hook.value("v"))
            })
        }
    };
    let k = key("k").do_not_cache(true).concurrency_key("c");
    let a = cache
        .get_or_init_call(&Ctx::new(), k.clone(), resolver(&h1))
        .await
        .unwrap();
    assert!(a.is_detached());
    assert!(!a.hit() && !a.content_hit());
    assert_eq!(cache.entries(), 0, "nothing stored");
    let b = cache
        .get_or_init_call(&Ctx::new(), k.clone(), resolver(&h2))
        .await
        .unwrap();
    assert!(b.is_detached() && !b.hit());
    assert_ne!(a.entry(), b.entry());
    assert_eq!(runs.get(), 2, "never deduplicated, never a hit");
    let keys = keys_seen.events();
    assert_ne!(keys[0], keys[1], "each run sees a fresh unique storage key");
    assert_ne!(keys[0], id("k").call_key());
    // A normal call for the same key is not served from a detached result.
    let h3 = Hook::new();
    let c = cache
        .get_or_init_call(&Ctx::new(), key("k"), ready(&runs, "cached", &h3))
        .await
        .unwrap();
    assert!(!c.hit());
    drop(c);
    assert_eq!(h1.count(), 0);
    drop(a);
    assert_eq!(h1.count(), 1);
    b.release().unwrap();
    assert_eq!((h1.count(), h2.count(), h3.count()), (1, 1, 1));
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c2_detached_result_takes_over_a_nested_ref() {
    let cache = cache();
    let (h_outer, h_inner) = (Hook::new(), Hook::new());
    let runs = Counter::new();
    let resolver = {
        let (cache, h_outer, h_inner, runs) = (
            cache.clone(),
            h_outer.clone(),
            h_inner.clone(),
            runs.clone(),
        );
        move |rctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                let inner = cache
                    .get_or_init_call(&rctx.nested(), key("inner"), ready(&runs, "i", &h_inner))
                    .await?;
                Ok(h_outer
                    .value("outer")
                    .with_nested(inner.into_nested().unwrap()))
            })
        }
    };
    let d = cache
        .get_or_init_call(&Ctx::new(), key("outer").do_not_cache(true), resolver)
        .await
        .unwrap();
    assert!(d.is_detached());
    assert_eq!(cache.entries(), 1, "the nested call is cached");
    assert_eq!(h_inner.count(), 0);
    drop(d);
    assert_eq!((h_outer.count(), h_inner.count()), (1, 1));
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c8_content_hit_reports_requested_id() {
    let cache = cache();
    let (runs, hook) = (Counter::new(), Hook::new());
    let d = digest("same bytes");
    let stored_id = id("fetch")
        .with_arg("url", Literal::from("https://a.example/x"))
        .with_content_digest(d);
    let requested = id("fetch")
        .with_arg("url", Literal::from("https://mirror.example/x"))
        .with_content_digest(d);
    assert_ne!(stored_id.call_key(), requested.call_key());

    let first = cache
        .get_or_init_call(
            &Ctx::new(),
            cache_core::facade::CallKey::new(stored_id.clone()),
            ready(&runs, "bytes", &hook),
        )
        .await
        .unwrap();
    assert_eq!(cache.buckets().completed_calls_by_content, 1);
    let second = cache
        .get_or_init_call(
            &Ctx::new(),
            cache_core::facade::CallKey::new(requested.clone()),
            never(),
        )
        .await
        .unwrap();
    assert!(second.hit() && second.content_hit());
    assert_eq!(
        second.id(),
        Some(&requested),
        "reports the requested ID (C-8, INV-5)"
    );
    assert_eq!(second.entry(), first.entry());
    assert_eq!(second.value().map(String::as_str), Some("bytes"));
    // The stored holder keeps its own ID, for every other holder.
    assert_eq!(first.id(), Some(&stored_id));
    let third = cache
        .get_or_init_call(
            &Ctx::new(),
            cache_core::facade::CallKey::new(stored_id.clone()),
            never(),
        )
        .await
        .unwrap();
    assert!(third.hit() && !third.content_hit());
    assert_eq!(third.id(), Some(&stored_id));
    assert_eq!(runs.get(), 1);
    drop((first, second, third));
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c11_nested_return_transfers_the_inner_ref() {
    let cache = cache();
    let (h_outer, h_inner, runs) = (Hook::new(), Hook::new(), Counter::new());
    let inner_entry = Arc::new(Mutex::new(None));
    let resolver = {
        let (cache, h_outer, h_inner, runs, inner_entry) = (
            cache.clone(),
            h_outer.clone(),
            h_inner.clone(),
            runs.clone(),
            inner_entry.clone(),
        );
        move |rctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                let inner = cache
                    .get_or_init_call(&rctx.nested(), key("inner"), ready(&runs, "i", &h_inner))
                    .await?;
                assert!(
                    inner.holds_ref(),
                    "a nested ref is caller-owned until handed in"
                );
                *inner_entry.lock().unwrap() = Some(inner.entry());
                Ok(h_outer.value("o").with_nested(inner.into_nested().unwrap()))
            })
        }
    };
    let outer = cache
        .get_or_init_call(&Ctx::new(), key("outer"), resolver)
        .await
        .unwrap();
    let inner_entry = inner_entry.lock().unwrap().unwrap();
    assert_eq!(
        cache.inspect(|m| m.refcount(inner_entry)),
        Some(1),
        "owned by the outer entry"
    );
    // Another holder of the inner entry comes and goes: the outer's ref stays.
    let other = cache
        .get_or_init_call(&Ctx::new(), key("inner"), never())
        .await
        .unwrap();
    assert!(other.hit());
    drop(other);
    assert_eq!(h_inner.count(), 0, "still held by the outer entry");
    assert_invariants(&cache);
    outer.release().unwrap();
    assert_eq!(h_outer.count(), 1);
    assert_eq!(
        h_inner.count(),
        1,
        "released exactly once, when the outer went"
    );
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c9_c12_secondary_indexes_are_cleaned_on_release() {
    let cache = cache();
    let (runs, hook) = (Counter::new(), Hook::new());
    let returned = id("canonical").with_content_digest(digest("payload"));
    let resolver = {
        let (runs, hook, returned) = (runs.clone(), hook.clone(), returned.clone());
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                runs.inc();
                Ok(hook.value("p").with_id(returned))
            })
        }
    };
    let a = cache
        .get_or_init_call(&Ctx::new(), key("alias"), resolver)
        .await
        .unwrap();
    assert_eq!(a.id(), Some(&returned));
    let b = cache.buckets();
    assert_eq!(
        (b.completed_calls, b.completed_calls_by_content),
        (2, 1),
        "indexed under storage key, result call key and content key (C-6)"
    );
    // The result call key serves hits too.
    let by_result_key = cache
        .get_or_init_call(
            &Ctx::new(),
            cache_core::facade::CallKey::new(returned.clone()),
            never(),
        )
        .await
        .unwrap();
    assert!(by_result_key.hit());
    assert_eq!(by_result_key.entry(), a.entry());
    drop((a, by_result_key));
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
    // Every index is clean: each key runs again.
    let h2 = Hook::new();
    let again = cache
        .get_or_init_call(
            &Ctx::new(),
            cache_core::facade::CallKey::new(returned),
            ready(&runs, "q", &h2),
        )
        .await
        .unwrap();
    assert!(!again.hit());
    drop(again);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c14_panicking_resolver_is_an_error_for_every_waiter() {
    let cache = cache();
    let gate = Gate::new();
    let k = key("k").concurrency_key("c");
    let resolver = {
        let gate = gate.clone();
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                gate.wait().await;
                panic!("resolver exploded");
            })
        }
    };
    let a = spawn_call(&cache, Ctx::new(), k.clone(), resolver);
    let b = spawn_call(&cache, Ctx::new(), k.clone(), never());
    settle().await;
    gate.open();
    for r in [a.await.unwrap(), b.await.unwrap()] {
        assert!(
            matches!(&r, Err(CallError::Panicked(m)) if m.to_string().contains("resolver exploded")),
            "{r:?}"
        );
    }
    assert_quiescent(&cache);
    // A panic while building the future counts too.
    let r = cache
        .get_or_init_call(&Ctx::new(), k.clone(), |_ctx| -> BoxFut { panic!("eager") })
        .await;
    assert!(
        matches!(&r, Err(CallError::Panicked(m)) if m.to_string().contains("eager")),
        "{r:?}"
    );
    assert_quiescent(&cache);
    let (runs, hook) = (Counter::new(), Hook::new());
    let ok = cache
        .get_or_init_call(&Ctx::new(), k, ready(&runs, "v", &hook))
        .await
        .unwrap();
    drop(ok);
    assert_eq!(hook.count(), 1);
    assert_quiescent(&cache);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c12_s5_hooks_and_telemetry_run_outside_the_lock() {
    // A release hook or a telemetry sink that looks at the cache must not
    // deadlock (C-12: hooks outside the lock; S-5: spans outside the lock).
    let telemetry = Arc::new(LockProbe::default());
    let cache: Cache<V> = Cache::builder().telemetry(telemetry.clone()).build();
    *telemetry.cache.lock().unwrap() = Some(cache.clone());
    let hook_saw_free_lock = Arc::new(Mutex::new(None));
    let resolver = {
        let (cache, seen) = (cache.clone(), hook_saw_free_lock.clone());
        move |_ctx: ResolverCtx| -> BoxFut {
            Box::pin(async move {
                Ok(Resolved::value("v".to_string()).with_release(move || {
                    *seen.lock().unwrap() = Some(lock_is_free(&cache));
                    Ok(())
                }))
            })
        }
    };
    let session = cache.open_session();
    let r = session.call(key("k"), resolver).await.unwrap();
    drop(r);
    session.close().unwrap();
    assert_eq!(*hook_saw_free_lock.lock().unwrap(), Some(true));
    let probes = telemetry.free.lock().unwrap().clone();
    assert_eq!(
        probes,
        vec![true],
        "spans are emitted outside the cache's lock"
    );
    *telemetry.cache.lock().unwrap() = None;
    assert_quiescent(&cache);
}

/// Telemetry that checks, at every span, whether the cache's lock is free.
#[derive(Default)]
struct LockProbe {
    cache: Mutex<Option<Cache<V>>>,
    free: Mutex<Vec<bool>>,
}

impl cache_core::facade::Telemetry for LockProbe {
    fn span(&self, _span: cache_core::facade::Span) {
        let cache = self.cache.lock().unwrap().clone();
        if let Some(cache) = cache {
            let free = lock_is_free(&cache);
            self.free.lock().unwrap().push(free);
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c4_a_resolver_context_names_its_own_cache_instance() {
    // C-4 and C-4b tell "the same key on this cache" from "on another one"
    // by the instance a resolver context names: it must be the cache's own.
    let cache: Cache<V> = Cache::builder().instance_id_for_replay(7).build();
    let seen = Arc::new(Mutex::new(None));
    let (seen2, hook) = (seen.clone(), Hook::new());
    let r = cache
        .get_or_init_call(&Ctx::new(), key("who"), move |ctx: ResolverCtx| {
            *seen2.lock().unwrap() = Some(ctx.entry);
            let v = hook.value("v");
            Box::pin(async move { Ok(v) }) as BoxFut
        })
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some((7, r.entry())));
    assert_eq!(cache.inspect(|m| m.instance()), 7);
}

/// `CallResult`'s `Debug` shows the value, how it was served and its entry.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn call_result_debug_shows_value_hit_and_entry() {
    let cache = cache();
    let (runs, hook) = (Counter::new(), Hook::new());
    let first = cache
        .get_or_init_call(&Ctx::new(), key("k"), ready(&runs, "v", &hook))
        .await
        .unwrap();
    let again = cache
        .get_or_init_call(&Ctx::new(), key("k"), never())
        .await
        .unwrap();
    let (text, hit) = (format!("{first:?}"), format!("{again:?}"));
    assert!(text.starts_with("CallResult {"), "{text}");
    assert!(text.contains("value: Some(\"v\")"), "{text}");
    assert!(
        text.contains("hit: false, content_hit: false, detached: false"),
        "{text}"
    );
    assert!(
        text.contains(&format!("entry: {:?}", first.entry())),
        "{text}"
    );
    assert!(hit.contains("hit: true"), "{hit}");
    drop((first, again));
    assert_quiescent(&cache);
}

/// C-5 / C-12: a caller dropped after its answer was sent but before it
/// read it has left too late to be taken off the call: the ref it was
/// served is given straight back, so nothing leaks (INV-1).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn c5_a_caller_dropped_with_its_answer_unread_gives_the_ref_back() {
    let cache = cache();
    let (runs, gate, hook) = (Counter::new(), Gate::new(), Hook::new());
    let ctx = Ctx::new();
    let mut call =
        Box::pin(cache.get_or_init_call(&ctx, key("k"), gated(&runs, &gate, "v", &hook)));
    assert!(
        futures::poll!(call.as_mut()).is_pending(),
        "the resolver runs"
    );
    gate.open();
    // The resolver task finishes and answers; the caller never looks.
    while runs.get() == 0 || cache.inspect(|m| m.live_refs()) == 0 {
        tokio::task::yield_now().await;
    }
    drop(call);
    assert_eq!(hook.count(), 1, "the last ref went back and the hook ran");
    assert_quiescent(&cache);
}

/// C-5: a resolver task dropped unfinished (its runtime shut down) still
/// answers its waiters, with `Cancelled`, instead of leaving them hanging,
/// and its entry goes away (INV-1).
#[test]
fn c5_a_resolver_dropped_with_its_runtime_answers_its_waiters() {
    let cache = cache();
    let (runs, gate, hook) = (Counter::new(), Gate::new(), Hook::new());
    let ctx = Ctx::new();
    let mut call =
        Box::pin(cache.get_or_init_call(&ctx, key("k"), gated(&runs, &gate, "v", &hook)));
    let doomed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    doomed.block_on(async {
        assert!(futures::poll!(call.as_mut()).is_pending());
        while runs.get() == 0 {
            tokio::task::yield_now().await;
        }
    });
    drop(doomed);
    // Paused time: a caller left hanging fails the timeout at once.
    let after = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let answer =
        after.block_on(async { tokio::time::timeout(Duration::from_secs(60), call).await });
    assert!(
        matches!(answer, Ok(Err(CallError::Cancelled))),
        "{answer:?}"
    );
    assert_eq!(hook.count(), 0, "no value was ever made");
    assert_quiescent(&cache);
}
