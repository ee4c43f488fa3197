//! Rule tests for the call cache's state machine, part two: C-6 … C-15.

mod common;

use cache_core::machine::{Buckets, CallRequest, Left, Owner, Resolved, RunMode};
use cache_core::trace::Path;
use cache_core::CallError;
use common::*;

#[test]
fn c6_all_waiters_share_one_entry_and_indexes() {
    let mut cache = Cache::new(1);
    let s1 = cache.open_session();
    let s2 = cache.open_session();
    let q = id("q");
    let r = with_content(id("r"), "C");
    let req = || CallRequest::new(q.clone()).concurrency_key("c");
    // The first caller's prepared write is the one made (T-3). Joiners from
    // sessions carry none: a request with one has a key the TTL rules chose
    // and dedupes only within its session.
    let first = CallRequest {
        ttl_write: Some(write_for(&q.call_key())),
        ..req()
    };
    let run = expect_run(cache.begin_call(&anon(), first));
    let (_, w1) = expect_wait(cache.begin_call(&in_session(s1), req()));
    let (_, w2) = expect_wait(cache.begin_call(&in_session(s2), req()));

    let hook = HookCounter::new();
    let mut done = complete(
        &mut cache,
        run.entry,
        Ok(value(5, &hook).with_id(r.clone()).safe_to_persist(true)),
    );
    assert_eq!(
        done.persist,
        Some(write_for(&q.call_key())),
        "T-3: stored and safe"
    );
    assert_eq!(done.waiters(), vec![run.waiter, w1, w2]);
    let served: Vec<_> = [run.waiter, w1, w2].map(|w| done.ok(w)).into();
    for s in &served {
        assert_eq!(s.handle.entry(), run.entry, "one entry for every waiter");
        assert_eq!(s.value, Some(5));
        assert_eq!(s.id.as_ref(), Some(&r), "the ID the resolver returned");
        assert!(!s.hit, "the first caller and joiners report no hit");
        assert!(!s.content_hit && !s.detached);
    }
    assert!(!served[0].session_owned);
    assert!(served[1].session_owned && served[2].session_owned);
    assert_eq!(cache.refcount(run.entry), Some(3));

    // Indexed under the storage key, the result call key and the content key.
    assert_eq!(
        cache.buckets(),
        Buckets {
            completed_calls: 2,
            completed_calls_by_content: 1,
            ..Buckets::default()
        }
    );
    let late = [
        CallRequest::new(q.clone()),
        CallRequest::new(r.clone()),
        CallRequest::new(with_content(id("other"), "C")),
    ]
    .map(|req| expect_hit(cache.begin_call(&anon(), req)));
    for h in &late {
        assert_eq!(h.handle.entry(), run.entry);
        assert!(h.hit, "a caller arriving after completion reports a hit");
    }
    assert!(!late[0].content_hit && !late[1].content_hit && late[2].content_hit);

    for h in late {
        release(&mut cache, h.handle);
    }
    let mut served = served.into_iter();
    release(&mut cache, served.next().unwrap().handle);
    close(&mut cache, s1);
    hook.assert_not_run("result held by s2");
    close(&mut cache, s2);
    hook.assert_once("shared result");
    finish(&cache);
}

/// Design note: a TTL-scoped entry (storage key != call key) is indexed under
/// its storage key (and content key), never under its bare result call key.
#[test]
fn c6_ttl_scoped_entry_not_indexed_under_bare_call_keys() {
    let mut cache = Cache::new(1);
    let t = id("t");
    let r = id("t-result");
    let req = CallRequest {
        storage_key: Some("ttl-session-key".into()),
        ..CallRequest::new(t.clone())
    };
    let run = expect_run(cache.begin_call(&anon(), req.clone()));
    assert_eq!(run.storage_key, "ttl-session-key");
    let held = complete(
        &mut cache,
        run.entry,
        Ok(Resolved::value(1).with_id(r.clone())),
    )
    .ok(run.waiter);
    assert_eq!(cache.buckets().completed_calls, 1, "storage key only");

    let hit = expect_hit(cache.begin_call(&anon(), req));
    for plain in [t, r] {
        let miss = expect_run(cache.begin_call(&anon(), CallRequest::new(plain)));
        assert_eq!(cache.leave(miss.entry, miss.waiter), Left::CancelResolver);
        complete(&mut cache, miss.entry, Err(CallError::Cancelled));
    }
    release(&mut cache, hit.handle);
    release(&mut cache, held.handle);
    finish(&cache);
}

#[test]
fn c7_duplicate_completion_releases_newcomer() {
    let mut cache = Cache::new(1);
    let k = id("k");
    let req = || CallRequest {
        ttl_write: Some(write_for(&k.call_key())),
        ..CallRequest::new(k.clone())
    };
    // No concurrency key: the two calls run side by side.
    let first = expect_run(cache.begin_call(&anon(), req()));
    let second = expect_run(cache.begin_call(&anon(), req()));
    assert_ne!(first.entry, second.entry);
    assert_eq!(
        cache.entries(),
        0,
        "neither is registered for deduplication"
    );

    let hook1 = HookCounter::new();
    let h1 = complete(&mut cache, first.entry, Ok(value(1, &hook1))).ok(first.waiter);

    // The newcomer took a nested ref that only it holds.
    let inner_hook = HookCounter::new();
    let inner = expect_run(cache.begin_call(&inside(1, &second), CallRequest::new(id("inner"))));
    let inner_served =
        complete(&mut cache, inner.entry, Ok(value(3, &inner_hook))).ok(inner.waiter);

    let hook2 = HookCounter::new();
    let mut done = complete(
        &mut cache,
        second.entry,
        Ok(value(2, &hook2)
            .safe_to_persist(true)
            .with_nested(inner_served.handle)),
    );
    assert!(
        done.persist.is_none(),
        "T-3: only the stored entry persists"
    );
    let h2 = done.ok(second.waiter);
    assert_eq!(
        h2.handle.entry(),
        first.entry,
        "the caller gets the existing entry"
    );
    assert_eq!(h2.value, Some(1));
    hook2.assert_once("discarded duplicate");
    inner_hook.assert_once("nested ref of the discarded duplicate");
    hook1.assert_not_run("stored entry");
    assert!(!cache.contains(second.entry));
    assert_eq!(cache.refcount(first.entry), Some(2));
    assert_eq!(cache.entries(), 1, "the newcomer is indexed nowhere");

    release(&mut cache, h1.handle);
    release(&mut cache, h2.handle);
    hook1.assert_once("stored entry");
    hook2.assert_once("discarded duplicate");
    finish(&cache);
}

#[test]
fn c8_content_hit_reports_requested_id_stored_keeps_own() {
    let mut cache = Cache::new(1);
    let a = with_content(id("a"), "X");
    let b = with_content(id("b"), "X");
    let run = expect_run(cache.begin_call(&anon(), CallRequest::new(a.clone())));
    let stored = complete(&mut cache, run.entry, Ok(Resolved::value(1))).ok(run.waiter);
    assert_eq!(stored.id.as_ref(), Some(&a));

    let out = cache.begin_call(&anon(), CallRequest::new(b.clone()));
    let trace = out.trace.clone().unwrap();
    assert_eq!(trace.path, Path::Content);
    assert!(trace.overridden);
    let content = expect_hit(out);
    assert_eq!(content.handle.entry(), run.entry);
    assert_eq!(content.id.as_ref(), Some(&b), "reports the requested ID");
    assert!(content.hit && content.content_hit);
    assert_eq!(content.value, Some(1), "reuses the stored value");

    // Every other holder still sees the stored ID.
    let out = cache.begin_call(&anon(), CallRequest::new(a.clone()));
    assert!(!out.trace.as_ref().unwrap().overridden);
    let storage = expect_hit(out);
    assert_eq!(storage.id.as_ref(), Some(&a));
    assert!(storage.hit && !storage.content_hit);
    // b was not stored under its own key: still only a and X.
    assert_eq!(cache.entries(), 2);

    for h in [stored, content, storage] {
        release(&mut cache, h.handle);
    }
    finish(&cache);
}

#[test]
fn c9_errors_not_cached_then_rerun() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let req = || CallRequest::new(id("k")).concurrency_key("c");
    let run = expect_run(cache.begin_call(&anon(), req()));
    let (_, w2) = expect_wait(cache.begin_call(&anon(), req()));
    let (_, w3) = expect_wait(cache.begin_call(&in_session(s), req()));

    let boom = CallError::Resolver("boom".into());
    let mut done = complete(&mut cache, run.entry, Err(boom.clone()));
    for w in [run.waiter, w2, w3] {
        assert_eq!(done.err(w), boom, "every waiter gets the error");
    }
    assert!(!cache.contains(run.entry));
    assert_eq!(cache.entries(), 0, "gone from every index");
    assert_eq!(cache.session_refs(s), 0);

    // The next call runs the resolver again, with or without a concurrency key.
    let again = expect_run(cache.begin_call(&anon(), req()));
    assert_ne!(again.entry, run.entry);
    assert_eq!(again.mode, RunMode::Cached);
    let plain = expect_run(cache.begin_call(&anon(), CallRequest::new(id("k"))));
    let ok = complete(&mut cache, again.entry, Ok(Resolved::value(1))).ok(again.waiter);
    complete(&mut cache, plain.entry, Err(boom.clone())).err(plain.waiter);
    // The stored success is untouched by the later failure.
    let hit = expect_hit(cache.begin_call(&anon(), req()));
    assert_eq!(hit.handle.entry(), again.entry);
    release(&mut cache, ok.handle);
    release(&mut cache, hit.handle);
    close(&mut cache, s);
    finish(&cache);
}

#[test]
fn c10_no_value_is_cached() {
    let mut cache = Cache::new(1);
    let run = expect_run(cache.begin_call(&anon(), CallRequest::new(id("k"))));
    let hook = HookCounter::new();
    let first = complete(
        &mut cache,
        run.entry,
        Ok(Resolved::no_value().with_release(hook.hook())),
    )
    .ok(run.waiter);
    assert_eq!(first.value, None);
    assert!(!first.hit);

    let second = expect_hit(cache.begin_call(&anon(), CallRequest::new(id("k"))));
    assert_eq!(second.value, None, "later callers hit and get no value");
    assert!(second.hit);
    assert_eq!(
        cache.refcount(run.entry),
        Some(2),
        "it holds refs like a value"
    );

    release(&mut cache, first.handle);
    hook.assert_not_run("no-value result");
    release(&mut cache, second.handle);
    hook.assert_once("no-value result");
    finish(&cache);
}

#[test]
fn c11_nested_ref_released_with_outer() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let s2 = cache.open_session();

    let outer = expect_run(cache.begin_call(&in_session(s), CallRequest::new(id("outer"))));
    let inner = expect_run(cache.begin_call(&inside(1, &outer), CallRequest::new(id("inner"))));
    let inner_hook = HookCounter::new();
    let inner_served =
        complete(&mut cache, inner.entry, Ok(value(1, &inner_hook))).ok(inner.waiter);
    let inner_ref = inner_served.handle.ref_id();
    assert_eq!(cache.owner(inner_ref), Some(Owner::Caller));
    // Another session holds the inner result too.
    let other = expect_hit(cache.begin_call(&in_session(s2), CallRequest::new(id("inner"))));
    assert!(other.session_owned);

    let outer_hook = HookCounter::new();
    let held = complete(
        &mut cache,
        outer.entry,
        Ok(value(2, &outer_hook).with_nested(inner_served.handle)),
    )
    .ok(outer.waiter);
    assert_eq!(cache.owner(inner_ref), Some(Owner::Entry(outer.entry)));
    assert_eq!(cache.refcount(inner.entry), Some(2));

    // Releasing the outer entry releases its inner ref, once.
    assert_eq!(close(&mut cache, s), 1);
    assert!(held.session_owned, "s released it");
    outer_hook.assert_once("outer");
    inner_hook.assert_not_run("inner, still held by s2");
    assert_eq!(cache.refcount(inner.entry), Some(1));
    assert_eq!(cache.owner(inner_ref), None);
    assert_eq!(close(&mut cache, s2), 1);
    inner_hook.assert_once("inner");

    // A chain of three, released from the top.
    let top = expect_run(cache.begin_call(&anon(), CallRequest::new(id("l0"))));
    let mid = expect_run(cache.begin_call(&inside(1, &top), CallRequest::new(id("l1"))));
    let low = expect_run(cache.begin_call(&inside(1, &mid), CallRequest::new(id("l2"))));
    let hooks = [HookCounter::new(), HookCounter::new(), HookCounter::new()];
    let low_h = complete(&mut cache, low.entry, Ok(value(0, &hooks[2]))).ok(low.waiter);
    let mid_h = complete(
        &mut cache,
        mid.entry,
        Ok(value(0, &hooks[1]).with_nested(low_h.handle)),
    )
    .ok(mid.waiter);
    let top_h = complete(
        &mut cache,
        top.entry,
        Ok(value(0, &hooks[0]).with_nested(mid_h.handle)),
    )
    .ok(top.waiter);
    assert_eq!(cache.live_entries(), 3);
    release(&mut cache, top_h.handle);
    for h in &hooks {
        h.assert_once("chained result");
    }
    finish(&cache);
}

#[test]
fn c11a_transfer_removes_from_old_owner() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let x = expect_run(cache.begin_call(&anon(), CallRequest::new(id("x"))));
    let x_hook = HookCounter::new();
    let x_first = complete(&mut cache, x.entry, Ok(value(1, &x_hook))).ok(x.waiter);

    // The session holds a ref on x, then hands it to an outer result.
    let x_in_s = expect_hit(cache.begin_call(&in_session(s), CallRequest::new(id("x"))));
    let moved = x_in_s.handle.ref_id();
    assert_eq!(cache.session_refs(s), 1);
    let outer = expect_run(cache.begin_call(&anon(), CallRequest::new(id("outer"))));
    let outer_hook = HookCounter::new();
    let outer_held = complete(
        &mut cache,
        outer.entry,
        Ok(value(2, &outer_hook).with_nested(x_in_s.handle)),
    )
    .ok(outer.waiter);
    assert_eq!(cache.owner(moved), Some(Owner::Entry(outer.entry)));
    assert_eq!(
        cache.session_refs(s),
        0,
        "the old owner no longer records it"
    );

    // Closing the old owner releases nothing; the entry releases it once.
    assert_eq!(close(&mut cache, s), 0);
    assert_eq!(cache.refcount(x.entry), Some(2));
    release(&mut cache, x_first.handle);
    x_hook.assert_not_run("x, still owned by outer");
    release(&mut cache, outer_held.handle);
    outer_hook.assert_once("outer");
    x_hook.assert_once("x");

    // A handle whose owner already released it cannot be handed over: the
    // result is rejected, its hook runs once, and its valid nested refs go.
    let s2 = cache.open_session();
    let y = expect_run(cache.begin_call(&in_session(s2), CallRequest::new(id("y"))));
    let y_hook = HookCounter::new();
    let stale = complete(&mut cache, y.entry, Ok(value(3, &y_hook))).ok(y.waiter);
    close(&mut cache, s2);
    y_hook.assert_once("y");
    let z = expect_run(cache.begin_call(&anon(), CallRequest::new(id("z"))));
    let z_hook = HookCounter::new();
    let z_held = complete(&mut cache, z.entry, Ok(value(4, &z_hook))).ok(z.waiter);
    let outer2 = expect_run(cache.begin_call(&anon(), CallRequest::new(id("outer2"))));
    let rejected_hook = HookCounter::new();
    let mut done = complete(
        &mut cache,
        outer2.entry,
        Ok(value(5, &rejected_hook)
            .with_nested(z_held.handle)
            .with_nested(stale.handle)),
    );
    assert!(matches!(done.err(outer2.waiter), CallError::Resolver(_)));
    rejected_hook.assert_once("rejected result");
    z_hook.assert_once("valid nested ref of a rejected result");
    y_hook.assert_once("y");
    finish(&cache);
}

#[test]
fn c12_release_hook_after_last_ref_and_stale_handle_is_error() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let run = expect_run(cache.begin_call(&in_session(s), CallRequest::new(id("k"))));
    let hook = HookCounter::new();
    let in_s = complete(&mut cache, run.entry, Ok(value(1, &hook))).ok(run.waiter);
    assert!(in_s.session_owned);
    let anon_hit = expect_hit(cache.begin_call(&anon(), CallRequest::new(id("k"))));

    release(&mut cache, anon_hit.handle);
    hook.assert_not_run("k, still held by s");
    assert_eq!(cache.refcount(run.entry), Some(1));
    assert_eq!(cache.entries(), 1);

    // The session releases its ref; the caller's copy of the handle is stale.
    close(&mut cache, s);
    hook.assert_once("k");
    assert_eq!(cache.entries(), 0, "left every index with its last ref");
    let err = cache.release(in_s.handle).unwrap_err();
    assert!(matches!(err, CallError::UnknownHandle(_)));
    hook.assert_once("k");
    cache.check_invariants().unwrap();

    // A failing hook is reported to the releaser.
    let run = expect_run(cache.begin_call(&anon(), CallRequest::new(id("k2"))));
    let held = complete(
        &mut cache,
        run.entry,
        Ok(Resolved::value(2).with_release(|| Err("disk full".into()))),
    )
    .ok(run.waiter);
    let releases = cache.release(held.handle).unwrap();
    assert_eq!(releases.len(), 1);
    let err = cache_core::machine::run_releases(releases).unwrap_err();
    assert!(matches!(&err, CallError::ReleaseHook(m) if m.contains("disk full")));
    finish(&cache);
}

/// `release` promises a foreign handle is an error, never a decrement of
/// whatever entry happens to sit in the same slot of this cache; the same goes
/// for a foreign handle handed in as a nested ref (C-11a).
#[test]
fn c12_foreign_handle_is_error_never_a_decrement() {
    let mut one = Cache::new(1);
    let mut two = Cache::new(2);
    let s1 = one.open_session();
    let s2 = two.open_session();
    let (hook1, hook2) = (HookCounter::new(), HookCounter::new());
    let run1 = expect_run(one.begin_call(&in_session(s1), CallRequest::new(id("k"))));
    let held1 = complete(&mut one, run1.entry, Ok(value(1, &hook1))).ok(run1.waiter);
    let run2 = expect_run(two.begin_call(&in_session(s2), CallRequest::new(id("k"))));
    let held2 = complete(&mut two, run2.entry, Ok(value(2, &hook2))).ok(run2.waiter);
    // Same slots, same generations: only the cache tells the two apart.
    assert_eq!(
        format!("{:?}", held1.handle.ref_id()),
        format!("{:?}", held2.handle.ref_id())
    );

    let err = one.release(held2.handle).unwrap_err();
    assert!(matches!(err, CallError::UnknownHandle(_)));
    assert_eq!(
        one.refcount(run1.entry),
        Some(1),
        "no decrement in cache one"
    );
    assert_eq!(one.session_refs(s1), 1);
    one.check_invariants().unwrap();

    // A resolver of cache one cannot adopt a ref of cache two either.
    let foreign = expect_hit(two.begin_call(&in_session(s2), CallRequest::new(id("k"))));
    let outer = expect_run(one.begin_call(&anon(), CallRequest::new(id("outer"))));
    let rejected = HookCounter::new();
    let mut done = complete(
        &mut one,
        outer.entry,
        Ok(value(3, &rejected).with_nested(foreign.handle)),
    );
    assert!(matches!(done.err(outer.waiter), CallError::Resolver(_)));
    rejected.assert_once("rejected result");
    assert_eq!(one.refcount(run1.entry), Some(1));
    assert_eq!(one.session_refs(s1), 1, "s1's ref was not taken over");
    assert_eq!(two.refcount(run2.entry), Some(2));

    hook1.assert_not_run("entry of cache one");
    hook2.assert_not_run("entry of cache two");
    assert_eq!(close(&mut one, s1), 1);
    assert_eq!(close(&mut two, s2), 2);
    hook1.assert_once("entry of cache one");
    hook2.assert_once("entry of cache two");
    assert!(held1.session_owned, "s1 released it");
    finish(&one);
    finish(&two);
}

#[test]
fn c13_removal_never_removes_newer_entry() {
    let mut cache = Cache::new(1);

    // In flight: a cancelled call settling late must not unregister its successor.
    let req = || CallRequest::new(id("k")).concurrency_key("c");
    let old = expect_run(cache.begin_call(&anon(), req()));
    assert_eq!(cache.leave(old.entry, old.waiter), Left::CancelResolver);
    let new = expect_run(cache.begin_call(&anon(), req()));
    let hook = HookCounter::new();
    complete(&mut cache, old.entry, Ok(value(1, &hook)));
    hook.assert_once("late abandoned result");
    assert_eq!(cache.buckets().ongoing_calls, 1);
    let (joined, w) = expect_wait(cache.begin_call(&anon(), req()));
    assert_eq!(joined, new.entry, "the newer call is still deduplicated");
    let mut done = complete(&mut cache, new.entry, Ok(Resolved::value(2)));
    let h_new = done.ok(new.waiter);
    let h_w = done.ok(w);

    // Storage lists: x1 and x2 both return r, so both sit under r's key.
    let r = with_content(id("r"), "R");
    let x1 = expect_run(cache.begin_call(&anon(), CallRequest::new(id("x1"))));
    let h_x1 = complete(
        &mut cache,
        x1.entry,
        Ok(Resolved::value(3).with_id(r.clone())),
    )
    .ok(x1.waiter);
    let x2 = expect_run(cache.begin_call(&anon(), CallRequest::new(id("x2"))));
    let h_x2 = complete(
        &mut cache,
        x2.entry,
        Ok(Resolved::value(4).with_id(r.clone())),
    )
    .ok(x2.waiter);
    let before = cache.buckets();
    assert_eq!(before.completed_calls, 2 + 2 + 1, "k, x1, r, x2, r");
    assert_eq!(before.completed_calls_by_content, 2, "both under R");

    // Removing x1 leaves x2 under r and under R.
    release(&mut cache, h_x1.handle);
    let by_r = expect_hit(cache.begin_call(&anon(), CallRequest::new(r.clone())));
    assert_eq!(by_r.handle.entry(), x2.entry);
    let by_content =
        expect_hit(cache.begin_call(&anon(), CallRequest::new(with_content(id("y"), "R"))));
    assert_eq!(by_content.handle.entry(), x2.entry);
    assert_eq!(cache.buckets().completed_calls, 1 + 2);
    assert_eq!(cache.buckets().completed_calls_by_content, 1);

    for h in [h_new, h_w, h_x2, by_r, by_content] {
        release(&mut cache, h.handle);
    }
    finish(&cache);
}

#[test]
fn c14_panic_is_error_for_all_waiters() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let req = || CallRequest::new(id("k")).concurrency_key("c");
    let run = expect_run(cache.begin_call(&anon(), req()));
    let (_, w2) = expect_wait(cache.begin_call(&in_session(s), req()));
    let (_, w3) = expect_wait(cache.begin_call(&anon(), req()));
    // The resolver also took a nested ref before panicking; the shell drops it.
    let inner = expect_run(cache.begin_call(&inside(1, &run), CallRequest::new(id("inner"))));
    let inner_hook = HookCounter::new();
    let inner_held = complete(&mut cache, inner.entry, Ok(value(1, &inner_hook))).ok(inner.waiter);
    release(&mut cache, inner_held.handle);
    inner_hook.assert_once("inner");

    let panic = CallError::Panicked("index out of bounds".into());
    let mut done = complete(&mut cache, run.entry, Err(panic.clone()));
    assert_eq!(done.waiters(), vec![run.waiter, w2, w3], "no waiter hangs");
    for w in [run.waiter, w2, w3] {
        assert_eq!(done.err(w), panic);
    }
    assert_eq!(cache.entries(), 0);
    let again = expect_run(cache.begin_call(&anon(), req()));
    let held = complete(&mut cache, again.entry, Ok(Resolved::value(2))).ok(again.waiter);
    release(&mut cache, held.handle);
    close(&mut cache, s);
    finish(&cache);
}

#[test]
fn c15_entries_counts_every_index() {
    let mut cache = Cache::new(1);
    assert_eq!(cache.entries(), 0);

    // A completed call under storage key, result call key and content key: 3.
    let run = expect_run(cache.begin_call(&anon(), CallRequest::new(id("q"))));
    let held = complete(
        &mut cache,
        run.entry,
        Ok(Resolved::value(1).with_id(with_content(id("r"), "C"))),
    )
    .ok(run.waiter);
    assert_eq!(cache.entries(), 3);

    // In flight with a concurrency key: 1. Without: 0 (alive, not indexed).
    let ongoing =
        expect_run(cache.begin_call(&anon(), CallRequest::new(id("o")).concurrency_key("c")));
    let unregistered = expect_run(cache.begin_call(&anon(), CallRequest::new(id("u"))));
    // Arbitrary in flight and completed: 1 each.
    let arb_ongoing = expect_run(cache.begin_arbitrary(&anon(), "a1"));
    let arb = expect_run(cache.begin_arbitrary(&anon(), "a2"));
    let arb_held = complete(&mut cache, arb.entry, Ok(Resolved::value(2))).ok(arb.waiter);
    // A detached result: 0.
    let dnc = expect_run(cache.begin_call(&anon(), CallRequest::new(id("d")).do_not_cache(true)));
    let detached = complete(&mut cache, dnc.entry, Ok(Resolved::value(3))).ok(dnc.waiter);

    let want = Buckets {
        ongoing_calls: 1,
        completed_calls: 2,
        completed_calls_by_content: 1,
        ongoing_arbitrary: 1,
        completed_arbitrary: 1,
    };
    assert_eq!(cache.buckets(), want);
    assert_eq!(cache.entries(), 6);
    assert_eq!(cache.entries(), want.total());
    assert_eq!(cache.live_entries(), 6, "q, o, u, a1, a2, d");

    // A second ref adds no index entry.
    let hit = expect_hit(cache.begin_call(&anon(), CallRequest::new(id("q"))));
    assert_eq!(cache.entries(), 6);

    let o = complete(&mut cache, ongoing.entry, Ok(Resolved::value(4))).ok(ongoing.waiter);
    let u =
        complete(&mut cache, unregistered.entry, Ok(Resolved::value(5))).ok(unregistered.waiter);
    let a1 = complete(&mut cache, arb_ongoing.entry, Ok(Resolved::value(6))).ok(arb_ongoing.waiter);
    assert_eq!(cache.buckets().ongoing_calls, 0);
    assert_eq!(cache.buckets().completed_calls, 4);
    assert_eq!(cache.buckets().completed_arbitrary, 2);
    for h in [held, hit, arb_held, detached, o, u, a1] {
        release(&mut cache, h.handle);
    }
    finish(&cache);
}
