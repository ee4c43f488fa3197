//! Rule tests for keyed singleflight (arbitrary entries, change cache): K-1 … K-5.

mod common;

use cache_core::machine::{Buckets, Left, Owner, Resolved, RunMode};
use cache_core::trace::Path;
use cache_core::CallError;
use common::*;

#[test]
fn k1_empty_key_rejected() {
    for mut cache in [Cache::new(1), Cache::new_change_cache(1)] {
        let s = cache.open_session();
        for caller in [anon(), in_session(s)] {
            let b = cache.begin_arbitrary(&caller, "");
            assert!(b.trace.is_none());
            assert!(!b.telemetry);
            assert!(matches!(expect_err(b), CallError::InvalidKey(_)));
        }
        assert_eq!(cache.live_entries(), 0);
        // The rejection consumed nothing: a real key still emits telemetry.
        let b = cache.begin_arbitrary(&in_session(s), "x");
        assert!(b.telemetry);
        let run = expect_run(b);
        let held = complete(&mut cache, run.entry, Ok(Resolved::value(1))).ok(run.waiter);
        assert!(held.session_owned, "the session releases it");
        close(&mut cache, s);
        finish(&cache);
    }
}

#[test]
fn k2_concurrent_callers_share_one_init() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    let run = expect_run(cache.begin_arbitrary(&anon(), "x"));
    assert_eq!(run.mode, RunMode::Arbitrary);
    assert_eq!(run.storage_key, "x");
    // No concurrency key needed to share.
    let b = cache.begin_arbitrary(&in_session(s), "x");
    assert_eq!(b.trace.as_ref().unwrap().path, Path::Ongoing);
    let (e2, w2) = expect_wait(b);
    let (e3, w3) = expect_wait(cache.begin_arbitrary(&anon(), "x"));
    assert_eq!((e2, e3), (run.entry, run.entry));
    assert_eq!(
        cache.buckets(),
        Buckets {
            ongoing_arbitrary: 1,
            ..Buckets::default()
        }
    );
    // Another key is another init.
    let other = expect_run(cache.begin_arbitrary(&anon(), "y"));
    assert_ne!(other.entry, run.entry);

    let hook = HookCounter::new();
    let mut done = complete(&mut cache, run.entry, Ok(value(5, &hook)));
    assert_eq!(done.waiters(), vec![run.waiter, w2, w3]);
    let served = [run.waiter, w2, w3].map(|w| done.ok(w));
    for h in &served {
        assert_eq!(h.handle.entry(), run.entry);
        assert_eq!(h.value, Some(5));
        assert_eq!(h.id, None, "arbitrary entries have no call ID");
        assert!(!h.hit);
    }
    assert_eq!(
        cache.owner(served[1].handle.ref_id()),
        Some(Owner::Session(s))
    );
    assert_eq!(
        cache.buckets(),
        Buckets {
            ongoing_arbitrary: 1,
            completed_arbitrary: 1,
            ..Buckets::default()
        }
    );
    let hit = expect_hit(cache.begin_arbitrary(&anon(), "x"));
    assert!(hit.hit);
    assert_eq!(hit.handle.entry(), run.entry);

    let y = complete(&mut cache, other.entry, Ok(Resolved::value(6))).ok(other.waiter);
    let [a, _in_s, c] = served;
    for h in [a, c, hit, y] {
        release(&mut cache, h.handle);
    }
    hook.assert_not_run("x, still held by s");
    close(&mut cache, s);
    hook.assert_once("x");
    finish(&cache);
}

#[test]
fn k3_error_not_cached() {
    let mut cache = Cache::new(1);
    let s = cache.open_session();
    for error in [
        CallError::Resolver("boom".into()),
        CallError::Panicked("oops".into()),
    ] {
        let run = expect_run(cache.begin_arbitrary(&in_session(s), "x"));
        assert_eq!(
            run.mode,
            RunMode::Arbitrary,
            "no S-4 forced retry for arbitrary keys"
        );
        let (_, w2) = expect_wait(cache.begin_arbitrary(&anon(), "x"));
        let mut done = complete(&mut cache, run.entry, Err(error.clone()));
        assert_eq!(done.err(run.waiter), error);
        assert_eq!(done.err(w2), error);
        assert_eq!(cache.entries(), 0);
        assert_eq!(cache.live_entries(), 0);
    }
    // The next init runs again.
    let run = expect_run(cache.begin_arbitrary(&in_session(s), "x"));
    let held = complete(&mut cache, run.entry, Ok(Resolved::value(1))).ok(run.waiter);
    assert!(held.session_owned, "the session releases it");
    close(&mut cache, s);
    finish(&cache);
}

#[test]
fn k3_recursion_and_wait_cycles_detected() {
    let mut cache = Cache::new(1);
    let x = expect_run(cache.begin_arbitrary(&anon(), "x"));
    let b = cache.begin_arbitrary(&inside(1, &x), "x");
    assert_eq!(b.trace.as_ref().unwrap().path, Path::Recursive);
    assert_eq!(
        expect_err(b),
        CallError::Recursive {
            key: "x".to_string()
        }
    );

    // Siblings x and y: x's init waits on y, y's init joining x is a cycle.
    let y = expect_run(cache.begin_arbitrary(&anon(), "y"));
    let (_, x_on_y) = expect_wait(cache.begin_arbitrary(&inside(1, &x), "y"));
    let b = cache.begin_arbitrary(&inside(1, &y), "x");
    assert_eq!(b.trace.as_ref().unwrap().rule, "C-4b");
    assert!(matches!(expect_err(b), CallError::Recursive { .. }));

    let mut done = complete(&mut cache, y.entry, Ok(Resolved::value(2)));
    let x_holds_y = done.ok(x_on_y);
    let y_held = done.ok(y.waiter);
    let x_held = complete(
        &mut cache,
        x.entry,
        Ok(Resolved::value(1).with_nested(x_holds_y.handle)),
    )
    .ok(x.waiter);
    release(&mut cache, y_held.handle);
    release(&mut cache, x_held.handle);
    finish(&cache);
}

#[test]
fn k3_removal_never_removes_newer_init() {
    let mut cache = Cache::new(1);
    let old = expect_run(cache.begin_arbitrary(&anon(), "x"));
    assert_eq!(cache.leave(old.entry, old.waiter), Left::CancelResolver);
    let new = expect_run(cache.begin_arbitrary(&anon(), "x"));
    let hook = HookCounter::new();
    complete(&mut cache, old.entry, Ok(value(1, &hook)));
    hook.assert_once("abandoned init");
    assert_eq!(cache.buckets().ongoing_arbitrary, 1);
    let (joined, w) = expect_wait(cache.begin_arbitrary(&anon(), "x"));
    assert_eq!(joined, new.entry);
    let mut done = complete(&mut cache, new.entry, Ok(Resolved::value(2)));
    let (a, b) = (done.ok(new.waiter), done.ok(w));
    release(&mut cache, a.handle);
    release(&mut cache, b.handle);
    finish(&cache);
}

#[test]
fn k4_waiter_cancel_keeps_init_last_cancels() {
    let mut cache = Cache::new(1);
    let run = expect_run(cache.begin_arbitrary(&anon(), "x"));
    let (_, w2) = expect_wait(cache.begin_arbitrary(&anon(), "x"));
    let (_, w3) = expect_wait(cache.begin_arbitrary(&anon(), "x"));

    // Waiters leaving never cancel the init while others remain.
    assert_eq!(cache.leave(run.entry, run.waiter), Left::Removed);
    assert_eq!(cache.leave(run.entry, w3), Left::Removed);
    assert_eq!(cache.buckets().ongoing_arbitrary, 1, "still joinable");
    let (_, w4) = expect_wait(cache.begin_arbitrary(&anon(), "x"));
    let hook = HookCounter::new();
    let mut done = complete(&mut cache, run.entry, Ok(value(1, &hook)));
    assert_eq!(done.waiters(), vec![w2, w4]);
    let (a, b) = (done.ok(w2), done.ok(w4));
    release(&mut cache, a.handle);
    release(&mut cache, b.handle);
    hook.assert_once("x");

    // The last waiter's cancellation cancels it; its error is not cached.
    let run = expect_run(cache.begin_arbitrary(&anon(), "x"));
    let (_, w2) = expect_wait(cache.begin_arbitrary(&anon(), "x"));
    assert_eq!(cache.leave(run.entry, w2), Left::Removed);
    assert_eq!(cache.leave(run.entry, run.waiter), Left::CancelResolver);
    assert_eq!(cache.entries(), 0);
    assert!(complete(&mut cache, run.entry, Err(CallError::Cancelled))
        .served
        .is_empty());
    let again = expect_run(cache.begin_arbitrary(&anon(), "x"));
    assert_ne!(again.entry, run.entry);
    let held = complete(&mut cache, again.entry, Ok(Resolved::value(2))).ok(again.waiter);
    release(&mut cache, held.handle);
    finish(&cache);
}

#[test]
fn k5_abandoned_change_init_blocks_new_one_until_finished() {
    for success in [true, false] {
        let mut cache = Cache::new_change_cache(1);
        let old = expect_run(cache.begin_arbitrary(&anon(), "/path"));
        assert_eq!(cache.leave(old.entry, old.waiter), Left::CancelResolver);
        // Still counted in flight: the mutation may still be running.
        assert_eq!(cache.buckets().ongoing_arbitrary, 1);
        cache.check_invariants().unwrap();

        for _ in 0..2 {
            let b = cache.begin_arbitrary(&anon(), "/path");
            let trace = b.trace.clone().unwrap();
            assert_eq!((trace.path, trace.rule), (Path::Blocked, "K-5"));
            assert_eq!(expect_blocked(b), old.entry);
        }
        assert_eq!(cache.live_entries(), 1, "no second init started");
        // Other keys are not blocked.
        let other = expect_run(cache.begin_arbitrary(&anon(), "/other"));

        let hook = HookCounter::new();
        let outcome = if success {
            Ok(value(1, &hook))
        } else {
            Err(CallError::Resolver("x".into()))
        };
        let done = complete(&mut cache, old.entry, outcome);
        assert_eq!(done.settled, old.entry);
        assert!(done.served.is_empty());
        if success {
            hook.assert_once("abandoned change init");
        }
        assert_eq!(cache.buckets().ongoing_arbitrary, 1, "only /other");

        // Settled: a new init may start.
        let new = expect_run(cache.begin_arbitrary(&anon(), "/path"));
        assert_ne!(new.entry, old.entry);
        let a = complete(&mut cache, new.entry, Ok(Resolved::value(2))).ok(new.waiter);
        let b = complete(&mut cache, other.entry, Ok(Resolved::value(3))).ok(other.waiter);
        release(&mut cache, a.handle);
        release(&mut cache, b.handle);
        finish(&cache);
    }

    // In a plain cache an abandoned init does not block its key.
    let mut cache = Cache::new(1);
    let old = expect_run(cache.begin_arbitrary(&anon(), "/path"));
    assert_eq!(cache.leave(old.entry, old.waiter), Left::CancelResolver);
    assert_eq!(cache.entries(), 0);
    let new = expect_run(cache.begin_arbitrary(&anon(), "/path"));
    complete(&mut cache, old.entry, Err(CallError::Cancelled));
    let held = complete(&mut cache, new.entry, Ok(Resolved::value(1))).ok(new.waiter);
    release(&mut cache, held.handle);
    finish(&cache);
}
