//! Schedule exploration of the facade's wake-up protocol with `shuttle`.
//!
//! The facade's real code is driven here: `Cache::decide` (the decision and
//! the waiter's slot registered under one lock), `wait::finish` (the
//! completion, the deliveries to the slots and the releases of undelivered results),
//! `Waiting::leave` (a caller leaving, or dropped, with the served-just-
//! before-leaving case) and `Session::close`. Only the resolver task and the
//! caller's `select!` are left out: they are tokio futures, which shuttle
//! cannot schedule. That loses nothing the protocol depends on: every step
//! of it is one critical section under the facade's single lock, and the
//! futures only decide *which* step runs next. So each shuttle thread runs
//! the steps of one party, with a yield point between steps, and
//! `check_dfs` tries every order of those critical sections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use shuttle::thread;

use super::wait::{self, Wait, Waiting};
use super::{Cache, CallKey, CallResult, Ctx, Inline, Session};
use crate::id::CallId;
use crate::machine::{CallCache, CallRequest, Decision, EntryId, Resolved};

type V = u32;

fn cache() -> Cache<V> {
    Cache::builder()
        .instance_id_for_replay(1)
        .blocking_executor(Arc::new(Inline))
        .build()
}

/// A value whose release hook counts in `hooks`.
fn output(v: V, hooks: &Arc<AtomicUsize>) -> Resolved<V> {
    let hooks = hooks.clone();
    Resolved::value(v).with_release(move || {
        hooks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
}

/// One caller's decision on `key`, as `get_or_init_call` takes it.
fn decide(cache: &Cache<V>, ctx: &Ctx, key: &CallKey) -> (Decision<V>, Wait) {
    let req = CallRequest::new(key.id.clone().expect("an id"))
        .concurrency_key(key.concurrency_key.clone());
    let caller = ctx.caller();
    cache
        .decide(ctx, move |m: &mut CallCache<V>| m.begin_call(&caller, req))
        .expect("a decision")
}

/// The entry and the registered waiter of a wait or run decision.
fn waiting(cache: &Cache<V>, decision: Decision<V>, wait: Wait) -> (EntryId, Waiting<V>) {
    let (entry, waiter) = match decision {
        Decision::Wait { entry, waiter } => (entry, waiter),
        Decision::Run(order) => (order.entry, order.waiter),
        other => panic!("expected a wait or a run, got {other:?}"),
    };
    let Wait::Outcome = wait else {
        panic!("a waiter registers a slot")
    };
    let w = Waiting {
        shared: cache.shared.clone(),
        entry,
        waiter,
        armed: true,
        value: std::marker::PhantomData,
    };
    (entry, w)
}

/// What a waiter that stayed got: its result, taken out of its slot as
/// `wait::outcome` does, or `None` if it was answered with an error.
fn received(cache: &Cache<V>, mut w: Waiting<V>) -> Option<CallResult<V>> {
    let outcome = w
        .take_delivered()
        .expect("answered once the call completed");
    outcome
        .ok()
        .map(|served| CallResult::new(cache.shared.clone(), served))
}

/// Nothing is left, every hook ran once, the books agree (INV-1, INV-7).
fn assert_quiescent(cache: &Cache<V>, hooks: &AtomicUsize, expected: usize) {
    assert_eq!(hooks.load(Ordering::SeqCst), expected, "hooks run");
    assert_eq!(cache.live_entries(), 0, "{}", cache.leak_report());
    assert!(cache.leak_report().is_clean(), "{}", cache.leak_report());
    cache.check_invariants().unwrap();
    let state = cache.shared.lock();
    state.waits.check(&state.machine).unwrap();
}

fn explore(scenario: impl Fn() + Send + Sync + 'static) {
    shuttle::check_dfs(scenario, None);
}

/// C-5: a joined waiter leaves while the resolver completes. Whichever goes
/// first, the result is released once, after the staying caller lets go.
#[test]
fn a_waiter_leaving_while_the_resolver_completes() {
    explore(|| {
        let cache = cache();
        let hooks = Arc::new(AtomicUsize::new(0));
        let key = CallKey::new(CallId::new("k")).concurrency_key("c");
        let (d, w) = decide(&cache, &Ctx::new(), &key);
        let (entry, first) = waiting(&cache, d, w);
        let (d, w) = decide(&cache, &Ctx::new(), &key);
        let (joined, mut second) = waiting(&cache, d, w);
        assert_eq!(joined, entry, "the second caller joins (C-3.3)");
        let completing = {
            let (cache, hooks) = (cache.clone(), hooks.clone());
            thread::spawn(move || {
                let write = wait::finish(&cache.shared, entry, Ok(output(1, &hooks)));
                assert!(write.is_none(), "no TTL, nothing to persist");
            })
        };
        let leaving = thread::spawn(move || {
            thread::yield_now();
            second.leave();
        });
        completing.join().unwrap();
        leaving.join().unwrap();
        let result = received(&cache, first).expect("the staying caller is served");
        assert_eq!(result.value(), Some(&1));
        assert_eq!(hooks.load(Ordering::SeqCst), 0, "still held");
        drop(result);
        assert_quiescent(&cache, &hooks, 1);
    });
}

/// S-3: a session closes while its call completes. Closed first: the waiter
/// gets an error and the result goes at once. Completed first: the session
/// owns the ref and its close releases it.
#[test]
fn a_session_closing_while_its_call_completes() {
    explore(|| {
        let cache = cache();
        let hooks = Arc::new(AtomicUsize::new(0));
        let session = cache.open_session();
        let key = CallKey::new(CallId::new("k"));
        let (d, w) = decide(&cache, &session.ctx(), &key);
        let (entry, caller) = waiting(&cache, d, w);
        let completing = {
            let (cache, hooks) = (cache.clone(), hooks.clone());
            thread::spawn(move || {
                let _ = wait::finish(&cache.shared, entry, Ok(output(1, &hooks)));
            })
        };
        let closing = thread::spawn(move || {
            let summary = session.close().unwrap();
            assert!(summary.released + summary.in_flight == 1, "{summary:?}");
            session
        });
        completing.join().unwrap();
        let session: Session<V> = closing.join().unwrap();
        assert!(!session.is_open());
        if let Some(result) = received(&cache, caller) {
            // Served before the close: the close released the ref.
            assert!(result.is_session_owned());
            drop(result);
        }
        assert_quiescent(&cache, &hooks, 1);
    });
}

/// C-5 / K-4: the last waiter leaves while a new caller arrives. The new
/// caller either joined in time (and keeps the run alive) or starts a run
/// of its own; the abandoned run's result is released when it finishes
/// (C-5a). Every result is released exactly once.
#[test]
fn the_last_waiter_leaving_while_a_new_one_joins() {
    explore(|| {
        let cache = cache();
        let hooks = Arc::new(AtomicUsize::new(0));
        let key = CallKey::new(CallId::new("k")).concurrency_key("c");
        let (d, w) = decide(&cache, &Ctx::new(), &key);
        let (first_entry, mut first) = waiting(&cache, d, w);
        let leaving = thread::spawn(move || first.leave());
        let joining = {
            let (cache, key) = (cache.clone(), key.clone());
            thread::spawn(move || {
                let (d, w) = decide(&cache, &Ctx::new(), &key);
                waiting(&cache, d, w)
            })
        };
        leaving.join().unwrap();
        let (entry, newcomer) = joining.join().unwrap();
        let joined = entry == first_entry;
        // The first run finishes either way (its resolver does not stop).
        let _ = wait::finish(&cache.shared, first_entry, Ok(output(1, &hooks)));
        if !joined {
            assert_eq!(
                hooks.load(Ordering::SeqCst),
                1,
                "abandoned: released (C-5a)"
            );
            let _ = wait::finish(&cache.shared, entry, Ok(output(2, &hooks)));
        }
        let result = received(&cache, newcomer).expect("the newcomer is served");
        assert_eq!(result.value(), Some(&if joined { 1 } else { 2 }));
        drop(result);
        assert_quiescent(&cache, &hooks, if joined { 1 } else { 2 });
    });
}
