//! Rule tests for sessions in the state machine: S-1 … S-5.

mod common;

use cache_core::id::CallId;
use cache_core::machine::{CallRequest, Left, Owner, Resolved, RunMode, SessionId};
use cache_core::trace::Path;
use cache_core::CallError;
use common::*;

#[test]
fn s1_close_releases_each_once() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let other = cache.open_session();
    assert_eq!(cache.open_sessions(), 2);

    // s holds two refs on a, one on b, one on an arbitrary entry; `other`
    // shares a.
    let (ha, hb, hx) = (HookCounter::new(), HookCounter::new(), HookCounter::new());
    let a = expect_run(cache.begin_call(&in_session(s), CallRequest::new(id("a"))));
    let a1 = complete(&mut cache, a.entry, Ok(value(1, &ha))).ok(a.waiter);
    let a2 = expect_hit(cache.begin_call(&in_session(s), CallRequest::new(id("a"))));
    let a_other = expect_hit(cache.begin_call(&in_session(other), CallRequest::new(id("a"))));
    let b = expect_run(cache.begin_call(&in_session(s), CallRequest::new(id("b"))));
    let b1 = complete(&mut cache, b.entry, Ok(value(2, &hb))).ok(b.waiter);
    let x = expect_run(cache.begin_arbitrary(&in_session(s), "x"));
    let x1 = complete(&mut cache, x.entry, Ok(value(3, &hx))).ok(x.waiter);
    for h in [&a1, &a2, &b1, &x1] {
        assert!(h.session_owned);
        assert_eq!(
            cache.owner(h.handle.ref_id()),
            Some(Owner::Session(s)),
            "the session records every non-detached handle"
        );
    }
    assert_eq!(cache.session_refs(s), 4);
    // And one call still in flight for s.
    let pending = expect_run(cache.begin_call(&in_session(s), CallRequest::new(id("p"))));

    let closed = cache.close_session(s).unwrap();
    assert_eq!(closed.session, s);
    assert_eq!(closed.released, 4);
    assert_eq!(closed.entries_before, 3, "a, b, x");
    assert_eq!(
        closed.entries_after, 1,
        "a, still held by the other session"
    );
    assert_eq!(closed.in_flight, 1);
    // Hooks are handed out, to run outside the lock.
    assert_eq!(closed.releases.len(), 2);
    hb.assert_not_run("b before its hooks are run");
    run_hooks(closed.releases);
    hb.assert_once("b");
    hx.assert_once("x");
    ha.assert_not_run("a, still held by the other session");
    assert!(!cache.session_is_open(s));
    assert_eq!(cache.open_sessions(), 1);
    assert_eq!(cache.refcount(a.entry), Some(1));
    cache.check_invariants().unwrap();

    // The late completion releases what it gets (S-1a, S-3).
    let hp = HookCounter::new();
    let mut done = complete(&mut cache, pending.entry, Ok(value(4, &hp)));
    assert_eq!(done.err(pending.waiter), CallError::ClosedDuringExecution);
    hp.assert_once("late result");

    // The caller's copies of the session's handles are stale now.
    for h in [a1, a2, b1, x1] {
        assert!(matches!(
            cache.release(h.handle),
            Err(CallError::UnknownHandle(_))
        ));
    }
    assert_eq!(close(&mut cache, other), 1);
    assert!(a_other.session_owned, "the other session released it");
    ha.assert_once("a");
    hb.assert_once("b");
    hx.assert_once("x");
    finish(&cache);
}

#[test]
fn s2_closed_session_rejects() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    close(&mut cache, s);
    let never_opened = SessionId(999);
    for session in [s, never_opened] {
        let caller = in_session(session);
        for req in [
            CallRequest::new(id("k")),
            CallRequest::new(id("k")).concurrency_key("c"),
            CallRequest::new(id("k")).do_not_cache(true),
        ] {
            let b = cache.begin_call(&caller, req);
            assert!(b.trace.is_none(), "nothing ran, no decision");
            assert!(!b.telemetry);
            assert_eq!(expect_err(b), CallError::SessionClosed);
        }
        let b = cache.begin_arbitrary(&caller, "x");
        assert!(!b.telemetry);
        assert_eq!(expect_err(b), CallError::SessionClosed);
    }
    assert_eq!(cache.live_entries(), 0);
    assert!(matches!(
        cache.close_session(s),
        Err(CallError::SessionClosed)
    ));

    // A closed session does not stop anyone else.
    let run = expect_run(cache.begin_call(&anon(), CallRequest::new(id("k"))));
    let held = complete(&mut cache, run.entry, Ok(Resolved::value(1))).ok(run.waiter);
    assert_eq!(
        expect_err(cache.begin_call(&in_session(s), CallRequest::new(id("k")))),
        CallError::SessionClosed,
        "not even a hit"
    );
    assert_eq!(cache.refcount(run.entry), Some(1));
    release(&mut cache, held.handle);
    finish(&cache);
}

#[test]
fn s3_late_completion_released_with_error() {
    let mut cache = Cache::new(1);

    // Alone: the result is released at once, hook and nested refs included.
    let s = cache.open_session();
    let run = expect_run(cache.begin_call(&in_session(s), CallRequest::new(id("k"))));
    let inner = expect_run(cache.begin_call(&inside(1, &run), CallRequest::new(id("inner"))));
    let inner_hook = HookCounter::new();
    let inner_held = complete(&mut cache, inner.entry, Ok(value(1, &inner_hook))).ok(inner.waiter);
    let closed = cache.close_session(s).unwrap();
    assert_eq!(closed.in_flight, 1);
    run_hooks(closed.releases);
    let hook = HookCounter::new();
    let mut done = complete(
        &mut cache,
        run.entry,
        Ok(value(2, &hook).with_nested(inner_held.handle)),
    );
    assert_eq!(done.err(run.waiter), CallError::ClosedDuringExecution);
    hook.assert_once("late result");
    inner_hook.assert_once("nested ref of the late result");
    assert_eq!(cache.entries(), 0);
    assert_eq!(cache.live_entries(), 0);

    // Shared: the closed session's waiter comes first, the others still hold
    // the result afterwards.
    let s1 = cache.open_session();
    let s2 = cache.open_session();
    let req = || CallRequest::new(id("shared")).concurrency_key("c");
    let run = expect_run(cache.begin_call(&in_session(s1), req()));
    let (_, w2) = expect_wait(cache.begin_call(&in_session(s2), req()));
    let (_, w3) = expect_wait(cache.begin_call(&anon(), req()));
    close(&mut cache, s1);
    let hook = HookCounter::new();
    let mut done = complete(&mut cache, run.entry, Ok(value(3, &hook)));
    assert_eq!(done.err(run.waiter), CallError::ClosedDuringExecution);
    let h2 = done.ok(w2);
    let h3 = done.ok(w3);
    hook.assert_not_run("shared result, still held");
    assert_eq!(cache.refcount(run.entry), Some(2));
    assert_eq!(cache.owner(h2.handle.ref_id()), Some(Owner::Session(s2)));
    release(&mut cache, h3.handle);
    close(&mut cache, s2);
    hook.assert_once("shared result");

    // A forced retry and a do-not-cache call finishing late: same.
    let s = cache.open_session();
    let first = expect_run(cache.begin_call(&in_session(s), CallRequest::new(id("r"))));
    complete(
        &mut cache,
        first.entry,
        Err(CallError::Resolver("x".into())),
    )
    .err(first.waiter);
    let retry = expect_run(cache.begin_call(&in_session(s), CallRequest::new(id("r"))));
    assert_eq!(retry.mode, RunMode::ForcedRetry);
    let dnc =
        expect_run(cache.begin_call(&in_session(s), CallRequest::new(id("d")).do_not_cache(true)));
    close(&mut cache, s);
    let (hr, hd) = (HookCounter::new(), HookCounter::new());
    let mut done = complete(&mut cache, retry.entry, Ok(value(4, &hr)));
    assert_eq!(done.err(retry.waiter), CallError::ClosedDuringExecution);
    let mut done2 = complete(&mut cache, dnc.entry, Ok(value(5, &hd)));
    assert_eq!(done2.err(dnc.waiter), CallError::ClosedDuringExecution);
    hr.assert_once("late forced retry");
    hd.assert_once("late detached result");
    finish(&cache);
}

#[test]
fn s4_error_then_forced_retry_inserted_and_recorded() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let k = id("k");

    let first = expect_run(cache.begin_call(&in_session(s), CallRequest::new(k.clone())));
    assert_eq!(first.mode, RunMode::Cached);
    let boom = CallError::Resolver("boom".into());
    assert_eq!(
        complete(&mut cache, first.entry, Err(boom.clone())).err(first.waiter),
        boom
    );

    // The next call for k in s runs as do-not-cache...
    let b = cache.begin_call(
        &in_session(s),
        CallRequest::new(k.clone()).concurrency_key("c"),
    );
    let trace = b.trace.clone().unwrap();
    assert_eq!((trace.path, trace.rule), (Path::DoNotCache, "S-4"));
    let retry = expect_run(b);
    assert_eq!(retry.mode, RunMode::ForcedRetry);
    assert_ne!(retry.storage_key, k.call_key());
    assert_eq!(cache.entries(), 0, "not registered for deduplication");
    // ...while other sessions are unaffected.
    let other = expect_run(cache.begin_call(&anon(), CallRequest::new(k.clone())));
    assert_eq!(other.mode, RunMode::Cached);

    // On success the value is inserted under the normal key and the session
    // records the inserted handle.
    let hook = HookCounter::new();
    let retried = complete(&mut cache, retry.entry, Ok(value(1, &hook))).ok(retry.waiter);
    assert!(!retried.detached && !retried.hit);
    assert!(retried.session_owned);
    assert_eq!(
        cache.owner(retried.handle.ref_id()),
        Some(Owner::Session(s))
    );
    assert_eq!(cache.session_refs(s), 1);
    assert_eq!(cache.entries(), 1);
    // The flag is cleared: the session hits now, and so do others.
    let again = expect_hit(cache.begin_call(&in_session(s), CallRequest::new(k.clone())));
    assert_eq!(again.handle.entry(), retry.entry);
    let anon_hit = expect_hit(cache.begin_call(&anon(), CallRequest::new(k.clone())));
    assert_eq!(anon_hit.handle.entry(), retry.entry);
    // The side-by-side call finds it stored (C-7).
    let side = complete(&mut cache, other.entry, Ok(Resolved::value(9))).ok(other.waiter);
    assert_eq!(side.handle.entry(), retry.entry);

    // The insert finds an entry already there: the session gets that entry,
    // the retried result is released once.
    let k2 = id("k2");
    let fail = expect_run(cache.begin_call(&in_session(s), CallRequest::new(k2.clone())));
    complete(&mut cache, fail.entry, Err(CallError::Panicked("p".into()))).err(fail.waiter);
    let stored = expect_run(cache.begin_call(&anon(), CallRequest::new(k2.clone())));
    let stored_hook = HookCounter::new();
    let stored_held =
        complete(&mut cache, stored.entry, Ok(value(2, &stored_hook))).ok(stored.waiter);
    // The stale entry is bypassed: the flagged session runs anyway.
    let retry = expect_run(cache.begin_call(&in_session(s), CallRequest::new(k2.clone())));
    assert_eq!(retry.mode, RunMode::ForcedRetry);
    let dup_hook = HookCounter::new();
    let got = complete(&mut cache, retry.entry, Ok(value(3, &dup_hook))).ok(retry.waiter);
    assert_eq!(got.handle.entry(), stored.entry);
    assert_eq!(got.value, Some(2));
    assert_eq!(cache.owner(got.handle.ref_id()), Some(Owner::Session(s)));
    dup_hook.assert_once("retried result that lost to an existing entry");
    let hit = expect_hit(cache.begin_call(&in_session(s), CallRequest::new(k2.clone())));
    assert_eq!(hit.handle.entry(), stored.entry, "flag cleared");

    assert_eq!(close(&mut cache, s), 4);
    for h in [anon_hit, side, stored_held] {
        release(&mut cache, h.handle);
    }
    hook.assert_once("retried result");
    stored_hook.assert_once("stored k2");
    finish(&cache);
}

#[test]
fn s4_cancel_and_recursive_do_not_set_retry_flag() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let k = id("k");

    // The caller's own cancellation.
    let run = expect_run(cache.begin_call(&in_session(s), CallRequest::new(k.clone())));
    assert_eq!(cache.leave(run.entry, run.waiter), Left::CancelResolver);
    assert!(complete(&mut cache, run.entry, Err(CallError::Cancelled))
        .served
        .is_empty());
    let run = expect_run(cache.begin_call(&in_session(s), CallRequest::new(k.clone())));
    assert_eq!(run.mode, RunMode::Cached, "cancellation set no flag");

    // A recursive call refused at begin, from the same session...
    let mut caller = inside(1, &run);
    caller.session = Some(s);
    let err = expect_err(cache.begin_call(&caller, CallRequest::new(k.clone())));
    assert!(matches!(err, CallError::Recursive { .. }));
    // ...and the resolver passing that recursion error on to its waiters.
    let mut done = complete(&mut cache, run.entry, Err(err.clone()));
    assert_eq!(done.err(run.waiter), err);
    let run = expect_run(cache.begin_call(&in_session(s), CallRequest::new(k.clone())));
    assert_eq!(run.mode, RunMode::Cached, "recursion set no flag");
    let held = complete(&mut cache, run.entry, Ok(Resolved::value(1))).ok(run.waiter);

    // A waiter that left before the resolver failed is not flagged; one
    // that stayed is.
    let (s1, s2) = (cache.open_session(), cache.open_session());
    let req = || CallRequest::new(id("k2")).concurrency_key("c");
    let run = expect_run(cache.begin_call(&in_session(s1), req()));
    let (_, w2) = expect_wait(cache.begin_call(&in_session(s2), req()));
    assert_eq!(cache.leave(run.entry, run.waiter), Left::Removed);
    complete(&mut cache, run.entry, Err(CallError::Resolver("x".into()))).err(w2);
    let r1 = expect_run(cache.begin_call(&in_session(s1), req()));
    let r2 = expect_run(cache.begin_call(&in_session(s2), req()));
    assert_eq!(r1.mode, RunMode::Cached);
    assert_eq!(r2.mode, RunMode::ForcedRetry);
    let h1 = complete(&mut cache, r1.entry, Ok(Resolved::value(2))).ok(r1.waiter);
    let h2 = complete(&mut cache, r2.entry, Ok(Resolved::value(3))).ok(r2.waiter);
    assert_eq!(h2.handle.entry(), r1.entry, "C-7 on insert");
    assert!(held.session_owned && h1.session_owned && h2.session_owned);
    for session in [s, s1, s2] {
        close(&mut cache, session);
    }
    finish(&cache);
}

#[test]
fn s5_telemetry_once_per_key_except_do_not_cache() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let s2 = cache.open_session();
    let k = id("k");
    // Every decision is kept and settled at the end.
    let mut begins = Vec::new();
    let mut emits = |cache: &mut Cache, caller: &cache_core::machine::Caller, req| {
        let b = cache.begin_call(caller, req);
        let t = b.telemetry;
        begins.push(b);
        t
    };

    let b = cache.begin_call(&in_session(s), CallRequest::new(k.clone()));
    assert!(b.telemetry, "first call for k in s");
    let run = expect_run(b);
    let held = complete(&mut cache, run.entry, Ok(Resolved::value(1))).ok(run.waiter);
    assert!(
        !emits(&mut cache, &in_session(s), CallRequest::new(k.clone())),
        "a repeat is a hit"
    );

    // do-not-cache calls always emit; so do scopes asking for repeats.
    for _ in 0..2 {
        let dnc = CallRequest::new(k.clone()).do_not_cache(true);
        assert!(emits(&mut cache, &in_session(s), dnc));
        let repeat = CallRequest {
            repeat_telemetry: true,
            ..CallRequest::new(k.clone())
        };
        assert!(emits(&mut cache, &in_session(s), repeat));
    }
    assert!(!emits(
        &mut cache,
        &in_session(s),
        CallRequest::new(k.clone())
    ));

    // Once per key, per session, whatever the path (join included).
    let k2 = || CallRequest::new(id("k2")).concurrency_key("c");
    assert!(emits(&mut cache, &in_session(s), k2()));
    assert!(!emits(&mut cache, &in_session(s), k2()));
    assert!(emits(
        &mut cache,
        &in_session(s2),
        CallRequest::new(k.clone())
    ));
    assert!(!emits(
        &mut cache,
        &in_session(s2),
        CallRequest::new(k.clone())
    ));
    // Without a session there is nothing to remember.
    assert!(emits(&mut cache, &anon(), CallRequest::new(k.clone())));
    assert!(emits(&mut cache, &anon(), CallRequest::new(k.clone())));
    // Refused calls emit nothing.
    let mut rec = inside(1, &run);
    rec.session = Some(s2);
    assert!(!emits(&mut cache, &rec, CallRequest::new(k.clone())));
    // Arbitrary keys, likewise once per session.
    let x = cache.begin_arbitrary(&in_session(s), "x");
    assert!(x.telemetry);
    let y = cache.begin_arbitrary(&in_session(s), "x");
    assert!(!y.telemetry);
    begins.extend([x, y]);

    settle(&mut cache, begins);
    release(&mut cache, held.handle);
    close(&mut cache, s);
    close(&mut cache, s2);
    finish(&cache);
}

/// Calls `x(n)` for each `n` in `ns` in session `s`, each resolver returning
/// `r` as its ID (so every entry shares `r`'s result-call-key list).
fn session_results_returning(
    cache: &mut Cache,
    s: SessionId,
    r: &CallId,
    ns: std::ops::Range<i64>,
    hook: &HookCounter,
) {
    for n in ns {
        let run = expect_run(cache.begin_call(&in_session(s), CallRequest::new(id_n("x", n))));
        let _ = complete(
            cache,
            run.entry,
            Ok(value(n as u32, hook).with_id(r.clone())),
        )
        .ok(run.waiter);
    }
}

/// S-1, C-13: a close that removes many entries applies their index
/// removals as one batch (applied in bucket order for speed); each still removes only its own entry,
/// so an entry of another holder listed under the same result call key and
/// content key stays there.
#[test]
fn s1_batched_close_removes_only_its_own_entries() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let r = with_content(id("r"), "R");
    let hook = HookCounter::new();
    // The session's entries all return r, so they share r's and R's lists.
    session_results_returning(&mut cache, s, &r, 0..50, &hook);
    // One more, held by a bare caller, in the middle of those lists.
    let kept = expect_run(cache.begin_call(&anon(), CallRequest::new(id("kept"))));
    let kept_hook = HookCounter::new();
    let held = complete(
        &mut cache,
        kept.entry,
        Ok(value(99, &kept_hook).with_id(r.clone())),
    )
    .ok(kept.waiter);
    session_results_returning(&mut cache, s, &r, 50..60, &hook);
    assert_eq!(cache.buckets().completed_calls, 2 * 61);
    assert_eq!(cache.buckets().completed_calls_by_content, 61);

    let closed = cache.close_session(s).unwrap();
    assert_eq!(closed.released, 60);
    assert_eq!((closed.entries_before, closed.entries_after), (3 * 61, 3));
    run_hooks(closed.releases);
    assert_eq!(hook.runs(), 60, "each hook once (C-7, INV-1)");
    kept_hook.assert_not_run("the other holder's entry");
    cache.check_invariants().unwrap();

    // The kept entry is still found under r and under R.
    let by_r = expect_hit(cache.begin_call(&anon(), CallRequest::new(r.clone())));
    assert_eq!(by_r.handle.entry(), kept.entry);
    let by_content =
        expect_hit(cache.begin_call(&anon(), CallRequest::new(with_content(id("y"), "R"))));
    assert_eq!(by_content.handle.entry(), kept.entry);
    for h in [held, by_r, by_content] {
        release(&mut cache, h.handle);
    }
    kept_hook.assert_once("the other holder's entry, once released");
    finish(&cache);
}
