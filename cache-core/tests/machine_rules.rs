//! Rule tests for the call cache's state machine, part one: C-1 … C-5a,
//! INV-2, INV-3. C-6 … C-15 live in `machine_calls.rs`, sessions (S-*) in
//! `machine_sessions.rs`, keyed singleflight (K-*) in `machine_arbitrary.rs`,
//! the randomized run in `machine_random.rs`.

mod common;

use std::collections::BTreeMap;

use cache_core::machine::{CallRequest, EntryId, Left, Owner, Resolved, RunMode};
use cache_core::trace::Path;
use cache_core::CallError;
use common::*;

#[test]
fn c1_missing_id_rejected_before_anything() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();

    let b = cache.begin_call(&in_session(s), CallRequest::default());
    assert!(b.trace.is_none(), "no decision was taken");
    assert!(!b.telemetry, "a rejected call emits no telemetry");
    assert!(matches!(b.outcome, Err(CallError::InvalidKey(_))));

    // Also on the do-not-cache path, and before the session check (S-2).
    let b = cache.begin_call(&in_session(s), CallRequest::default().do_not_cache(true));
    assert!(matches!(b.outcome, Err(CallError::InvalidKey(_))));
    let gone = cache.open_session();
    close(&mut cache, gone);
    let b = cache.begin_call(&in_session(gone), CallRequest::default());
    assert!(matches!(b.outcome, Err(CallError::InvalidKey(_))));

    // An empty storage key is an empty key too.
    let req = CallRequest {
        storage_key: Some(String::new()),
        ..CallRequest::new(id("f"))
    };
    let b = cache.begin_call(&in_session(s), req);
    assert!(b.trace.is_none());
    assert!(matches!(b.outcome, Err(CallError::InvalidKey(_))));

    // Nothing ran, nothing was recorded.
    assert_eq!(cache.live_entries(), 0);
    assert_eq!(cache.entries(), 0);
    assert_eq!(cache.session_refs(s), 0);

    // The rejected call did not consume the session's telemetry for "f" (S-5),
    // nor start anything: the first real call is a miss that emits.
    let b = cache.begin_call(&in_session(s), CallRequest::new(id("f")));
    assert!(b.telemetry);
    let order = expect_run(b);
    assert_eq!(order.mode, RunMode::Cached);
    let mut done = complete(&mut cache, order.entry, Ok(Resolved::value(1)));
    let served = done.ok(order.waiter);
    assert!(!served.hit);
    release(&mut cache, served.handle);
    close(&mut cache, s);
    finish(&cache);
}

#[test]
fn c2_do_not_cache_is_detached_and_releases_nested() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let k = id("dnc");

    let outer = expect_run(
        cache.begin_call(
            &in_session(s),
            CallRequest::new(k.clone())
                .do_not_cache(true)
                .concurrency_key("c"),
        ),
    );
    assert_eq!(outer.mode, RunMode::DoNotCache);
    assert_ne!(
        outer.storage_key,
        k.call_key(),
        "the resolver sees a fresh key"
    );

    // Same key, same concurrency key: still not deduplicated, another fresh key.
    let other = expect_run(
        cache.begin_call(
            &anon(),
            CallRequest::new(k.clone())
                .do_not_cache(true)
                .concurrency_key("c"),
        ),
    );
    assert_ne!(other.entry, outer.entry);
    assert_ne!(other.storage_key, outer.storage_key);
    assert_ne!(other.storage_key, k.call_key());
    assert_eq!(cache.entries(), 0, "do-not-cache calls are indexed nowhere");

    // The outer resolver makes a nested cached call and hands its ref over.
    let inner_hook = HookCounter::new();
    let inner = expect_run(cache.begin_call(&inside(1, &outer), CallRequest::new(id("inner"))));
    let mut done = complete(&mut cache, inner.entry, Ok(value(7, &inner_hook)));
    let inner_served = done.ok(inner.waiter);
    assert!(
        !inner_served.session_owned,
        "resolver contexts have no session"
    );
    let inner_entry = inner_served.handle.entry();

    let outer_hook = HookCounter::new();
    let mut done = complete(
        &mut cache,
        outer.entry,
        Ok(value(1, &outer_hook).with_nested(inner_served.handle)),
    );
    let detached = done.ok(outer.waiter);
    assert!(detached.detached);
    assert!(
        !detached.hit && !detached.content_hit,
        "hit flags are false"
    );
    assert!(
        !detached.session_owned,
        "the caller holds a detached result"
    );
    assert_eq!(detached.value, Some(1));
    assert_eq!(cache.owner(detached.handle.ref_id()), Some(Owner::Caller));
    assert_eq!(
        cache.session_refs(s),
        0,
        "the session records no detached handle"
    );
    assert_eq!(cache.entries(), 1, "only the nested cached call is indexed");
    assert_eq!(cache.refcount(inner_entry), Some(1));

    // Nothing was stored under the do-not-cache key: a cached call misses.
    let normal = expect_run(cache.begin_call(&anon(), CallRequest::new(k.clone())));
    assert_eq!(normal.mode, RunMode::Cached);
    assert_eq!(
        cache.leave(normal.entry, normal.waiter),
        Left::CancelResolver
    );
    let done = complete(&mut cache, normal.entry, Err(CallError::Cancelled));
    assert!(done.served.is_empty());

    let other_hook = HookCounter::new();
    let mut done = complete(&mut cache, other.entry, Ok(value(2, &other_hook)));
    let other_served = done.ok(other.waiter);
    assert!(other_served.detached);

    // Closing the session does not touch the detached result.
    close(&mut cache, s);
    outer_hook.assert_not_run("detached result");
    inner_hook.assert_not_run("nested ref of a detached result");

    // Releasing the detached result runs its hook and releases the nested ref.
    release(&mut cache, detached.handle);
    outer_hook.assert_once("detached result");
    inner_hook.assert_once("nested ref of a detached result");
    release(&mut cache, other_served.handle);
    other_hook.assert_once("second detached result");
    finish(&cache);
}

#[test]
fn c3_lookup_order_storage_then_content_then_join_then_miss() {
    let mut cache = Cache::new(1);
    let mut handles = Vec::new();

    // A: requested `a`, content X.
    let a = with_content(id("a"), "X");
    let run_a = expect_run(cache.begin_call(&anon(), CallRequest::new(a.clone())));
    handles.push(
        complete(&mut cache, run_a.entry, Ok(Resolved::value(1)))
            .ok(run_a.waiter)
            .handle,
    );

    // R: requested `r0`, returns `r` which also has content X: stored under
    // r0, r and X (content list [A, R]).
    let r = with_content(id("r"), "X");
    let run_r = expect_run(cache.begin_call(&anon(), CallRequest::new(id("r0"))));
    handles.push(
        complete(
            &mut cache,
            run_r.entry,
            Ok(Resolved::value(2).with_id(r.clone())),
        )
        .ok(run_r.waiter)
        .handle,
    );

    // 1. Storage before content: `r` has an entry under its own key (R), and
    //    content X would give A first.
    let b = cache.begin_call(&anon(), CallRequest::new(r.clone()));
    assert_eq!(b.trace.as_ref().unwrap().path, Path::Storage);
    let hit = expect_hit(b);
    assert_eq!(hit.handle.entry(), run_r.entry);
    assert!(hit.hit && !hit.content_hit);
    assert_eq!(hit.value, Some(2));
    handles.push(hit.handle);

    // 2. Content: `b` has no entry under its own key, content X is stored.
    let bid = with_content(id("b"), "X");
    let b = cache.begin_call(&anon(), CallRequest::new(bid.clone()).concurrency_key("c"));
    assert_eq!(b.trace.as_ref().unwrap().path, Path::Content);
    let hit = expect_hit(b);
    assert_eq!(hit.handle.entry(), run_a.entry, "first of the content list");
    assert!(hit.hit && hit.content_hit);
    handles.push(hit.handle);

    // 3. Content before join: `q` is in flight under (q, c), but its content
    //    Z gets stored meanwhile by another recipe.
    let q = with_content(id("q"), "Z");
    let run_q =
        expect_run(cache.begin_call(&anon(), CallRequest::new(q.clone()).concurrency_key("c")));
    let run_z = expect_run(cache.begin_call(&anon(), CallRequest::new(with_content(id("z"), "Z"))));
    handles.push(
        complete(&mut cache, run_z.entry, Ok(Resolved::value(3)))
            .ok(run_z.waiter)
            .handle,
    );
    let b = cache.begin_call(&anon(), CallRequest::new(q.clone()).concurrency_key("c"));
    assert_eq!(b.trace.as_ref().unwrap().path, Path::Content);
    let hit = expect_hit(b);
    assert_eq!(hit.handle.entry(), run_z.entry);
    handles.push(hit.handle);

    // 4. Join: same (storage key, concurrency key), nothing completed.
    let j = id("j");
    let run_j =
        expect_run(cache.begin_call(&anon(), CallRequest::new(j.clone()).concurrency_key("c")));
    let b = cache.begin_call(&anon(), CallRequest::new(j.clone()).concurrency_key("c"));
    assert_eq!(b.trace.as_ref().unwrap().path, Path::Ongoing);
    let (joined, waiter) = expect_wait(b);
    assert_eq!(joined, run_j.entry);

    // 5. Miss: another concurrency key, or none at all, never joins.
    let b = cache.begin_call(&anon(), CallRequest::new(j.clone()).concurrency_key("d"));
    assert_eq!(b.trace.as_ref().unwrap().path, Path::Miss);
    let run_jd = expect_run(b);
    let run_j0 = expect_run(cache.begin_call(&anon(), CallRequest::new(j.clone())));
    assert_ne!(run_jd.entry, run_j.entry);
    assert_ne!(run_j0.entry, run_j.entry);
    assert_ne!(run_j0.entry, run_jd.entry);
    assert_eq!(
        cache.buckets().ongoing_calls,
        3,
        "q/c, j/c, j/d; j without key is unregistered"
    );

    // Settle everything.
    let mut done = complete(&mut cache, run_j.entry, Ok(Resolved::value(4)));
    let first = done.ok(run_j.waiter);
    let second = done.ok(waiter);
    assert_eq!(first.handle.entry(), second.handle.entry());
    handles.extend([first.handle, second.handle]);
    // Both later runs find j stored: C-7 hands them the stored entry.
    for run in [run_jd, run_j0, run_q] {
        let served = complete(&mut cache, run.entry, Ok(Resolved::value(5))).ok(run.waiter);
        handles.push(served.handle);
    }
    for h in handles {
        release(&mut cache, h);
    }
    finish(&cache);
}

/// Design note: the in-flight index is keyed by (storage key, concurrency
/// key), so TTL calls in different sessions (different fresh storage keys)
/// never join each other, while the same storage key does.
#[test]
fn c3_join_is_keyed_by_storage_key_and_concurrency_key() {
    let mut cache = Cache::new(1);
    let k = id("k");
    let req = |storage: &str| CallRequest {
        storage_key: Some(storage.to_string()),
        ..CallRequest::new(k.clone()).concurrency_key("c")
    };
    let s1 = expect_run(cache.begin_call(&anon(), req("fresh-s1")));
    let s2 = expect_run(cache.begin_call(&anon(), req("fresh-s2")));
    assert_ne!(s1.entry, s2.entry);
    let (joined, w) = expect_wait(cache.begin_call(&anon(), req("fresh-s1")));
    assert_eq!(joined, s1.entry);
    // The bare call key is yet another storage key.
    let bare =
        expect_run(cache.begin_call(&anon(), CallRequest::new(k.clone()).concurrency_key("c")));
    assert_eq!(cache.buckets().ongoing_calls, 3);

    let mut done = complete(&mut cache, s1.entry, Ok(Resolved::value(1)));
    let (a, b) = (done.ok(s1.waiter), done.ok(w));
    let c = complete(&mut cache, s2.entry, Ok(Resolved::value(2))).ok(s2.waiter);
    let d = complete(&mut cache, bare.entry, Ok(Resolved::value(3))).ok(bare.waiter);
    assert_eq!(c.handle.entry(), s2.entry, "no C-7 across storage keys");
    assert_eq!(d.handle.entry(), bare.entry);
    for h in [a, b, c, d] {
        release(&mut cache, h.handle);
    }
    finish(&cache);
}

#[test]
fn c4_recursive_same_key_same_instance() {
    let mut cache = Cache::new(1);
    let k = id("k");
    let outer = expect_run(cache.begin_call(&anon(), CallRequest::new(k.clone())));

    // Directly inside its own resolver.
    let b = cache.begin_call(&inside(1, &outer), CallRequest::new(k.clone()));
    let trace = b.trace.clone().expect("recursion is a decision");
    assert_eq!(trace.path, Path::Recursive);
    assert_eq!(trace.rule, "C-4");
    assert!(!b.telemetry);
    assert_eq!(expect_err(b), CallError::Recursive { key: k.call_key() });

    // Two levels down, with a concurrency key: still recursive.
    let mid = expect_run(cache.begin_call(&inside(1, &outer), CallRequest::new(id("m"))));
    let err = expect_err(cache.begin_call(
        &inside(1, &mid),
        CallRequest::new(k.clone()).concurrency_key("c"),
    ));
    assert_eq!(err, CallError::Recursive { key: k.call_key() });
    assert_eq!(cache.live_entries(), 2, "refused calls start nothing");

    let mid_served = complete(&mut cache, mid.entry, Ok(Resolved::value(1))).ok(mid.waiter);
    let outer_served = complete(
        &mut cache,
        outer.entry,
        Ok(Resolved::value(2).with_nested(mid_served.handle)),
    )
    .ok(outer.waiter);
    release(&mut cache, outer_served.handle);
    finish(&cache);
}

#[test]
fn c4_other_instance_and_other_key_allowed() {
    let mut one = Cache::new(1);
    let mut two = Cache::new(2);
    let k = id("k");
    let outer = expect_run(one.begin_call(&anon(), CallRequest::new(k.clone())));

    // Same key on another cache instance: fine.
    let caller = inside(1, &outer);
    let on_two = expect_run(two.begin_call(&caller, CallRequest::new(k.clone())));
    assert_eq!(on_two.chain.len(), 2);
    // Another key on the same instance: fine.
    let other = expect_run(one.begin_call(&caller, CallRequest::new(id("other"))));
    // The same text as an arbitrary key is another namespace: fine.
    let arb = expect_run(one.begin_arbitrary(&caller, &k.call_key()));

    let h_two = complete(&mut two, on_two.entry, Ok(Resolved::value(1))).ok(on_two.waiter);
    let h_other = complete(&mut one, other.entry, Ok(Resolved::value(2))).ok(other.waiter);
    let h_arb = complete(&mut one, arb.entry, Ok(Resolved::value(3))).ok(arb.waiter);
    let h_outer = complete(
        &mut one,
        outer.entry,
        Ok(Resolved::value(4).with_nested(h_other.handle)),
    )
    .ok(outer.waiter);
    release(&mut two, h_two.handle);
    release(&mut one, h_arb.handle);
    release(&mut one, h_outer.handle);
    finish(&one);
    finish(&two);
}

#[test]
fn c4a_do_not_cache_and_forced_retry_still_detect_recursion() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let k = id("k");

    // The session sees an error for k: its next call for k is a forced retry.
    let first = expect_run(cache.begin_call(&in_session(s), CallRequest::new(k.clone())));
    complete(
        &mut cache,
        first.entry,
        Err(CallError::Resolver("boom".into())),
    )
    .err(first.waiter);
    let retry = expect_run(cache.begin_call(&in_session(s), CallRequest::new(k.clone())));
    assert_eq!(retry.mode, RunMode::ForcedRetry);

    // Inside the forced retry, k again (even from the flagged session, even
    // as do-not-cache) is recursive, not another forced retry.
    let mut caller = inside(1, &retry);
    caller.session = Some(s);
    for req in [
        CallRequest::new(k.clone()),
        CallRequest::new(k.clone()).do_not_cache(true),
    ] {
        let b = cache.begin_call(&caller, req);
        assert_eq!(b.trace.as_ref().unwrap().path, Path::Recursive);
        assert_eq!(expect_err(b), CallError::Recursive { key: k.call_key() });
    }
    let hook = HookCounter::new();
    let retried = complete(&mut cache, retry.entry, Ok(value(1, &hook))).ok(retry.waiter);

    // Inside a do-not-cache resolver the chain names the real storage key.
    let dnc = expect_run(cache.begin_call(&anon(), CallRequest::new(k.clone()).do_not_cache(true)));
    assert_eq!(dnc.chain.last().unwrap().key, k.call_key());
    for req in [
        CallRequest::new(k.clone()),
        CallRequest::new(k.clone()).do_not_cache(true),
        CallRequest::new(k.clone()).concurrency_key("c"),
    ] {
        let err = expect_err(cache.begin_call(&inside(1, &dnc), req));
        assert_eq!(err, CallError::Recursive { key: k.call_key() });
    }
    let detached = complete(&mut cache, dnc.entry, Ok(Resolved::value(2))).ok(dnc.waiter);
    assert!(detached.detached);

    release(&mut cache, detached.handle);
    release(&mut cache, retried.handle);
    hook.assert_once("forced retry result");
    close(&mut cache, s);
    finish(&cache);
}

/// C-4b counts wait-for edges within one instance only: a resolver of
/// instance 1 joining a call on instance 2 is no cycle, even when the two
/// entries have the same id in their own arenas.
#[test]
fn c4b_a_resolver_of_another_instance_joins_without_a_cycle() {
    let mut one = Cache::new(1);
    let mut two = Cache::new(2);
    let req = |name: &str| CallRequest::new(id(name)).concurrency_key("c");
    let outer = expect_run(one.begin_call(&anon(), req("outer")));
    let running = expect_run(two.begin_call(&anon(), req("shared")));
    assert_eq!(outer.entry, running.entry, "the same id, in two arenas");

    let (joined, outer_on_two) = expect_wait(two.begin_call(&inside(1, &outer), req("shared")));
    assert_eq!(joined, running.entry);
    two.check_invariants().unwrap();

    let mut done = complete(&mut two, running.entry, Ok(Resolved::value(1)));
    let starter = done.ok(running.waiter);
    let nested = done.ok(outer_on_two);
    release(&mut two, starter.handle);
    release(&mut two, nested.handle);
    let h = complete(&mut one, outer.entry, Ok(Resolved::value(2))).ok(outer.waiter);
    release(&mut one, h.handle);
    finish(&one);
    finish(&two);
}

#[test]
fn c4b_sibling_wait_cycle_is_recursive_error() {
    let mut cache = Cache::new(1);
    let req = |name: &str| CallRequest::new(id(name)).concurrency_key("c");
    let a = expect_run(cache.begin_call(&anon(), req("a")));
    let b = expect_run(cache.begin_call(&anon(), req("b")));
    let c = expect_run(cache.begin_call(&anon(), req("c")));

    // A waits on B, B waits on C.
    let (eb, a_on_b) = expect_wait(cache.begin_call(&inside(1, &a), req("b")));
    assert_eq!(eb, b.entry);
    let (ec, b_on_c) = expect_wait(cache.begin_call(&inside(1, &b), req("c")));
    assert_eq!(ec, c.entry);

    // B joining A closes a 2-cycle; C joining A a 3-cycle.
    for from in [&b, &c] {
        let out = cache.begin_call(&inside(1, from), req("a"));
        let trace = out.trace.clone().unwrap();
        assert_eq!(trace.path, Path::Recursive);
        assert_eq!(trace.rule, "C-4b");
        assert!(matches!(expect_err(out), CallError::Recursive { .. }));
    }
    // Joining without a cycle still works.
    let (ea, top_on_a) = expect_wait(cache.begin_call(&anon(), req("a")));
    assert_eq!(ea, a.entry);
    cache.check_invariants().unwrap();

    // Once C's resolver returned, nobody waits on anything through it: C's
    // waiter (B's resolver) is served, and the edge B→C is gone.
    let mut done = complete(&mut cache, c.entry, Ok(Resolved::value(3)));
    let b_holds_c = done.ok(b_on_c);
    let c_holder = done.ok(c.waiter);
    let mut done = complete(
        &mut cache,
        b.entry,
        Ok(Resolved::value(2).with_nested(b_holds_c.handle)),
    );
    let a_holds_b = done.ok(a_on_b);
    let b_holder = done.ok(b.waiter);
    // A new sibling may now join A from inside a resolver: no cycle remains.
    let d = expect_run(cache.begin_call(&anon(), req("d")));
    let (_, d_on_a) = expect_wait(cache.begin_call(&inside(1, &d), req("a")));
    let mut done = complete(
        &mut cache,
        a.entry,
        Ok(Resolved::value(1).with_nested(a_holds_b.handle)),
    );
    let a_holder = done.ok(a.waiter);
    let top = done.ok(top_on_a);
    let d_holds_a = done.ok(d_on_a);
    let d_holder = complete(
        &mut cache,
        d.entry,
        Ok(Resolved::value(4).with_nested(d_holds_a.handle)),
    )
    .ok(d.waiter);
    for h in [c_holder, b_holder, a_holder, top, d_holder] {
        release(&mut cache, h.handle);
    }
    finish(&cache);
}

#[test]
fn c5_cancel_one_waiter_others_still_served() {
    let mut cache = Cache::new(1);
    let (s1, s2, s3) = (
        cache.open_session(),
        cache.open_session(),
        cache.open_session(),
    );
    let req = || CallRequest::new(id("shared")).concurrency_key("c");
    let run = expect_run(cache.begin_call(&in_session(s1), req()));
    let (_, w2) = expect_wait(cache.begin_call(&in_session(s2), req()));
    let (_, w3) = expect_wait(cache.begin_call(&in_session(s3), req()));

    // The starter's cancellation fires: it leaves, the resolver keeps running.
    assert_eq!(cache.leave(run.entry, run.waiter), Left::Removed);
    assert_eq!(cache.leave(run.entry, run.waiter), Left::NotWaiting);
    assert_eq!(cache.waiters(run.entry), vec![w2, w3]);
    assert_eq!(cache.buckets().ongoing_calls, 1, "still joinable");

    let hook = HookCounter::new();
    let mut done = complete(&mut cache, run.entry, Ok(value(9, &hook)));
    assert_eq!(done.waiters(), vec![w2, w3], "only the remaining waiters");
    let h2 = done.ok(w2);
    let h3 = done.ok(w3);
    assert_eq!(h2.handle.entry(), h3.handle.entry());
    assert_eq!((h2.value, h3.value), (Some(9), Some(9)));
    assert_eq!(cache.refcount(run.entry), Some(2));
    assert_eq!(
        cache.leave(run.entry, w2),
        Left::NotWaiting,
        "already served"
    );
    assert_eq!(cache.session_refs(s1), 0);

    close(&mut cache, s2);
    hook.assert_not_run("shared result");
    close(&mut cache, s3);
    hook.assert_once("shared result");

    // The session that started a shared call closes while others wait: the
    // call still serves them, and nothing they hold is released under them.
    let run = expect_run(cache.begin_call(&in_session(s1), req()));
    let s4 = cache.open_session();
    let (_, w4) = expect_wait(cache.begin_call(&in_session(s4), req()));
    let (_, w5) = expect_wait(cache.begin_call(&anon(), req()));
    close(&mut cache, s1);
    let hook = HookCounter::new();
    let mut done = complete(&mut cache, run.entry, Ok(value(10, &hook)));
    assert_eq!(done.err(run.waiter), CallError::ClosedDuringExecution);
    let h4 = done.ok(w4);
    let h5 = done.ok(w5);
    hook.assert_not_run("result still held by other waiters");
    assert_eq!(cache.refcount(run.entry), Some(2));
    assert_eq!(h4.handle.entry(), run.entry);
    assert_eq!(h5.handle.entry(), run.entry);
    release(&mut cache, h5.handle);
    hook.assert_not_run("result still held by s4");
    assert_eq!(close(&mut cache, s4), 1);
    hook.assert_once("shared result");
    finish(&cache);
}

#[test]
fn c5_last_waiter_leaving_cancels() {
    let mut cache = Cache::new(1);
    let req = || CallRequest::new(id("k")).concurrency_key("c");
    let run = expect_run(cache.begin_call(&anon(), req()));
    let (_, w2) = expect_wait(cache.begin_call(&anon(), req()));
    let (_, w3) = expect_wait(cache.begin_call(&anon(), req()));

    assert_eq!(cache.leave(run.entry, w3), Left::Removed);
    assert_eq!(cache.leave(run.entry, run.waiter), Left::Removed);
    assert_eq!(
        cache.leave(run.entry, w2),
        Left::CancelResolver,
        "the last one cancels"
    );
    assert_eq!(cache.entries(), 0, "the cancelled call left every index");
    assert_eq!(cache.live_entries(), 1, "its resolver is still running");
    cache.check_invariants().unwrap();

    // The next caller starts afresh instead of joining the cancelled call.
    let again = expect_run(cache.begin_call(&anon(), req()));
    assert_ne!(again.entry, run.entry);

    let done = complete(&mut cache, run.entry, Err(CallError::Cancelled));
    assert!(done.served.is_empty());
    assert_eq!(
        cache.buckets().ongoing_calls,
        1,
        "the new call is untouched (C-13)"
    );
    let served = complete(&mut cache, again.entry, Ok(Resolved::value(1))).ok(again.waiter);
    release(&mut cache, served.handle);
    finish(&cache);
}

#[test]
fn c5a_abandoned_success_runs_hook_once_indexes_nothing() {
    let mut cache = Cache::new(1);
    let k = with_content(id("k"), "K");
    let req = CallRequest {
        ttl_write: Some(write_for(&k.call_key())),
        ..CallRequest::new(k.clone()).concurrency_key("c")
    };
    let run = expect_run(cache.begin_call(&anon(), req));

    // Its resolver took a nested ref before being abandoned.
    let inner_hook = HookCounter::new();
    let inner = expect_run(cache.begin_call(&inside(1, &run), CallRequest::new(id("inner"))));
    let inner_served =
        complete(&mut cache, inner.entry, Ok(value(1, &inner_hook))).ok(inner.waiter);

    assert_eq!(cache.leave(run.entry, run.waiter), Left::CancelResolver);
    let hook = HookCounter::new();
    let done = complete(
        &mut cache,
        run.entry,
        Ok(value(2, &hook)
            .safe_to_persist(true)
            .with_nested(inner_served.handle)),
    );
    assert!(done.served.is_empty(), "nobody is left to serve");
    assert!(
        done.persist.is_none(),
        "an abandoned result is never persisted"
    );
    hook.assert_once("abandoned result");
    inner_hook.assert_once("nested ref of an abandoned result");
    assert!(!cache.contains(run.entry));

    // Indexed nowhere: neither storage nor content hits it.
    let again = expect_run(cache.begin_call(&anon(), CallRequest::new(k.clone())));
    assert_eq!(again.mode, RunMode::Cached);
    assert_eq!(cache.leave(again.entry, again.waiter), Left::CancelResolver);
    complete(&mut cache, again.entry, Err(CallError::Cancelled));
    hook.assert_once("abandoned result");
    finish(&cache);
}

#[test]
fn inv3_check_invariants_catches_nothing_on_valid_states() {
    for change in [false, true] {
        let mut cache = if change {
            Cache::new_change_cache(7)
        } else {
            Cache::new(7)
        };
        let s = cache.open_session();
        let ok = |cache: &Cache| cache.check_invariants().expect("valid state");
        ok(&cache);
        let a = expect_run(cache.begin_call(
            &in_session(s),
            CallRequest::new(with_content(id("a"), "A")).concurrency_key("c"),
        ));
        ok(&cache);
        let (_, wa) = expect_wait(cache.begin_call(
            &anon(),
            CallRequest::new(with_content(id("a"), "A")).concurrency_key("c"),
        ));
        ok(&cache);
        let p = expect_run(cache.begin_arbitrary(&in_session(s), "p"));
        ok(&cache);
        assert_eq!(cache.leave(p.entry, p.waiter), Left::CancelResolver);
        ok(&cache);
        let dnc =
            expect_run(cache.begin_call(&anon(), CallRequest::new(id("d")).do_not_cache(true)));
        ok(&cache);
        let mut done = complete(
            &mut cache,
            a.entry,
            Ok(Resolved::value(1).with_id(with_content(id("a2"), "A"))),
        );
        let ha = done.ok(a.waiter);
        let hwa = done.ok(wa);
        ok(&cache);
        let hit = expect_hit(
            cache.begin_call(&in_session(s), CallRequest::new(with_content(id("b"), "A"))),
        );
        ok(&cache);
        let det = complete(
            &mut cache,
            dnc.entry,
            Ok(Resolved::value(2).with_nested(hwa.handle)),
        )
        .ok(dnc.waiter);
        ok(&cache);
        complete(&mut cache, p.entry, Ok(Resolved::value(3)));
        release(&mut cache, det.handle);
        assert!(ha.session_owned && hit.session_owned, "s releases them");
        close(&mut cache, s);
        finish(&cache);
    }
}

#[test]
fn inv2_check_refcounts_detects_mismatch() {
    let mut cache = Cache::new(1);
    let run = expect_run(cache.begin_call(&anon(), CallRequest::new(id("k"))));
    let h1 = complete(&mut cache, run.entry, Ok(Resolved::value(1))).ok(run.waiter);
    let h2 = expect_hit(cache.begin_call(&anon(), CallRequest::new(id("k"))));
    let e = run.entry;

    let mut expected: BTreeMap<EntryId, u32> = BTreeMap::from([(e, 2)]);
    cache
        .check_refcounts(&expected)
        .expect("two handles, refcount two");

    for wrong in [1, 3] {
        expected.insert(e, wrong);
        let v = cache.check_refcounts(&expected).unwrap_err();
        assert_eq!(v.rule, "INV-2");
    }
    let v = cache.check_refcounts(&BTreeMap::new()).unwrap_err();
    assert_eq!(v.rule, "INV-2", "an entry the model does not know about");

    release(&mut cache, h1.handle);
    release(&mut cache, h2.handle);
    cache.check_refcounts(&BTreeMap::new()).unwrap();
    // Handles outstanding on an entry that is gone.
    let v = cache
        .check_refcounts(&BTreeMap::from([(e, 1)]))
        .unwrap_err();
    assert_eq!(v.rule, "INV-2");
    finish(&cache);
}

#[test]
fn a_second_completion_of_a_settled_call_is_refused() {
    // Found by cargo-mutants: `complete` on an entry that already
    // completed — still alive because a caller holds it — must be refused,
    // not applied again (C-6: one result per run; INV-10: one hook run).
    let mut cache = Cache::new(1);
    let hooks = HookCounter::new();
    let order = expect_run(cache.begin_call(&anon(), CallRequest::new(id("once"))));
    let done = complete(&mut cache, order.entry, Ok(value(7, &hooks)));
    let held = done.served.into_iter().next().unwrap().1.unwrap();

    let again = cache.complete(order.entry, Ok(value(8, &hooks)));
    assert!(
        matches!(again, Err(CallError::Unknown { .. })),
        "second completion accepted: {:?}",
        again.map(|c| c.served.len())
    );
    cache.check_invariants().unwrap();
    assert_eq!(
        cache.refcount(order.entry),
        Some(1),
        "the holder's ref is intact"
    );
    let hit = expect_hit(cache.begin_call(&anon(), CallRequest::new(id("once"))));
    assert_eq!(hit.value, Some(7), "the first result stays cached");

    release(&mut cache, held.handle);
    release(&mut cache, hit.handle);
    assert_eq!(cache.entries(), 0);
    assert_eq!(
        hooks.runs(),
        1,
        "only the first output's hook, exactly once"
    );
}

#[test]
fn inv1_live_refs_count_every_outstanding_ref() {
    // live_refs() is what quiescence checks compare with zero (INV-1): it
    // must count refs while they are out, not only be zero at the end.
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let hooks = HookCounter::default();
    let order = expect_run(cache.begin_call(&in_session(s), CallRequest::new(id("k"))));
    assert_eq!(cache.live_refs(), 0, "a waiter holds no ref yet");
    let _ = complete(&mut cache, order.entry, Ok(value(1, &hooks))).ok(order.waiter);
    assert_eq!(cache.live_refs(), 1);
    let _ = expect_hit(cache.begin_call(&in_session(s), CallRequest::new(id("k"))));
    assert_eq!(cache.live_refs(), 2);
    assert_eq!(close(&mut cache, s), 2);
    assert_eq!(cache.live_refs(), 0);
    finish(&cache);
}

#[test]
fn inv9_refs_owned_by_counts_refs_per_owner() {
    // refs_owned_by() is how a harness asks whether a closed session still
    // owns refs (INV-9): it must count, per owner, the refs out now.
    let mut cache = Cache::new(1);
    let (a, b) = (cache.open_session(), cache.open_session());
    let hooks = HookCounter::default();
    let order = expect_run(cache.begin_call(&in_session(a), CallRequest::new(id("k"))));
    let _ = complete(&mut cache, order.entry, Ok(value(1, &hooks))).ok(order.waiter);
    let _ = expect_hit(cache.begin_call(&in_session(a), CallRequest::new(id("k"))));
    let _ = expect_hit(cache.begin_call(&in_session(b), CallRequest::new(id("k"))));
    assert_eq!(cache.refs_owned_by(Owner::Session(a)), 2);
    assert_eq!(cache.refs_owned_by(Owner::Session(b)), 1);
    assert_eq!(cache.refs_owned_by(Owner::Caller), 0);
    close(&mut cache, a);
    assert_eq!(cache.refs_owned_by(Owner::Session(a)), 0);
    assert_eq!(cache.refs_owned_by(Owner::Session(b)), 1);
    close(&mut cache, b);
    finish(&cache);
}
