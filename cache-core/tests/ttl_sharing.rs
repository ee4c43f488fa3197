//! T-3 on a live, shared TTL key: an unsafe result never crosses sessions,
//! neither by a storage hit nor by joining the call that computes it.

use cache_core::id::CallId;
use cache_core::machine::{
    run_releases, CallCache, CallRequest, Caller, Decision, Resolved, SessionId,
};

fn two_sessions() -> (CallCache<u8>, SessionId, SessionId) {
    let mut cache = CallCache::new(1);
    let (a, b) = (cache.open_session(), cache.open_session());
    (cache, a, b)
}

fn caller(s: SessionId) -> Caller {
    Caller {
        session: Some(s),
        ..Caller::default()
    }
}

fn shared_request(id: &CallId) -> CallRequest {
    CallRequest {
        storage_key: Some("ttl-live-key".into()),
        shared_storage: true,
        ..CallRequest::new(id.clone()).concurrency_key("c")
    }
}

#[test]
fn t3_unsafe_result_under_shared_key_is_not_served_to_other_sessions() {
    let mut cache: CallCache<u8> = CallCache::new(1);
    let (a, b) = (cache.open_session(), cache.open_session());
    let ca = Caller {
        session: Some(a),
        ..Caller::default()
    };
    let cb = Caller {
        session: Some(b),
        ..Caller::default()
    };
    let id = CallId::new("resolve").with_arg("tag", "v1".into());

    let Ok(Decision::Run(run_a)) = cache.begin_call(&ca, shared_request(&id)).outcome else {
        panic!()
    };
    // Another session does not join: the result's safety is not known yet.
    let Ok(Decision::Run(run_b)) = cache.begin_call(&cb, shared_request(&id)).outcome else {
        panic!("a second session must not join a call on a shared TTL key")
    };
    // The same session does join.
    let Ok(Decision::Wait { .. }) = cache.begin_call(&ca, shared_request(&id)).outcome else {
        panic!()
    };

    // A's result is unsafe: it stays with A's callers, indexed nowhere.
    let done = cache.complete(run_a.entry, Ok(Resolved::value(1))).unwrap();
    assert_eq!(done.served.len(), 2);
    assert!(done.persist.is_none());
    let buckets = cache.buckets();
    assert_eq!(
        buckets.completed_calls, 0,
        "an unsafe result is not indexed under the shared key"
    );
    assert_eq!(buckets.ongoing_calls, 1, "only B's call is still in flight");

    // B's result is safe: stored under the shared key, and others hit it.
    let done = cache
        .complete(run_b.entry, Ok(Resolved::value(2).safe_to_persist(true)))
        .unwrap();
    assert_eq!(done.served.len(), 1);
    let Ok(Decision::Hit(hit)) = cache.begin_call(&ca, shared_request(&id)).outcome else {
        panic!()
    };
    assert_eq!(hit.value, Some(2));

    for s in [a, b] {
        run_releases(cache.close_session(s).unwrap().releases).unwrap();
    }
    assert_eq!(cache.entries(), 0);
    assert_eq!(cache.live_entries(), 0);
    cache.check_invariants().unwrap();
}

/// Found by the TTL-heavy driver property: one session calls a TTL'd key
/// twice at once (no concurrency key, so two runs under its one fresh key).
/// The first result is safe and becomes the row's key; the session lets it
/// go before the second, unsafe result lands under the same fresh key.
/// Another session following the row must not be served that unsafe
/// result, and its own safe result is then listed beside it (not a C-7
/// duplicate of a result it may not see), while the first session still
/// hits its own.
#[test]
fn t3_an_unsafe_result_under_a_fresh_key_the_row_points_to_stays_with_its_session() {
    let (mut cache, a, b) = two_sessions();
    let id = CallId::new("resolve").with_arg("tag", "v1".into());
    let key = "fresh-key-of-a";
    let fresh = || CallRequest {
        storage_key: Some(key.into()),
        ..CallRequest::new(id.clone())
    };
    let shared = || CallRequest {
        storage_key: Some(key.into()),
        shared_storage: true,
        ..CallRequest::new(id.clone())
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let Ok(Decision::Run(run)) = cache.begin_call(&caller(a), fresh()).outcome else {
            panic!("no concurrency key: each call runs")
        };
        runs.push(run.entry);
    }
    let mut done = cache
        .complete(runs[0], Ok(Resolved::value(1).safe_to_persist(true)))
        .unwrap();
    let Some((_, Ok(first))) = done.served.pop() else {
        panic!("the first run's caller is served")
    };
    run_releases(cache.release(first.handle).unwrap()).unwrap();
    let done = cache.complete(runs[1], Ok(Resolved::value(2))).unwrap();
    assert_eq!(done.served.len(), 1);

    // B reaches A's fresh key through the row: A's unsafe result is not
    // for B, so B runs.
    let Ok(Decision::Run(run_b)) = cache.begin_call(&caller(b), shared()).outcome else {
        panic!("B must not be served another session's unsafe result")
    };
    let done = cache
        .complete(run_b.entry, Ok(Resolved::value(3).safe_to_persist(true)))
        .unwrap();
    assert_eq!(done.served.len(), 1);
    let hit = |cache: &mut CallCache<u8>, s, req| match cache.begin_call(&caller(s), req).outcome {
        Ok(Decision::Hit(hit)) => hit.value,
        other => panic!("a hit, got {other:?}"),
    };
    assert_eq!(hit(&mut cache, b, shared()), Some(3), "B's own, beside A's");
    assert_eq!(hit(&mut cache, a, fresh()), Some(2), "A still hits its own");
    assert_eq!(
        hit(&mut cache, a, shared()),
        Some(2),
        "also through the row"
    );

    for s in [a, b] {
        run_releases(cache.close_session(s).unwrap().releases).unwrap();
    }
    assert_eq!(cache.live_entries(), 0);
    cache.check_invariants().unwrap();
}

/// C-3.3 within one session: a run under the session's fresh key, and a
/// later call of the same session that reaches that key through the row a
/// sibling run wrote, are one flight: the later call joins (one resolver
/// per deduplicated key, INV-4). Another session reaching the key through
/// the row still does not join (T-3). The facade driver's TTL-heavy
/// property found the second run.
#[test]
fn c3_3_a_call_through_the_row_joins_its_own_sessions_run_under_the_fresh_key() {
    use cache_core::ttl::{PreparedWrite, TtlRow};
    let (mut cache, a, b) = two_sessions();
    let id = CallId::new("resolve").with_arg("tag", "v1".into());
    let key = "fresh-key-of-a";
    let fresh = CallRequest {
        storage_key: Some(key.into()),
        ttl_write: Some(PreparedWrite {
            call_key: id.call_key(),
            row: TtlRow {
                storage_key: key.into(),
                expiration: 1_000,
            },
            compare: None,
        }),
        ..CallRequest::new(id.clone()).concurrency_key("c")
    };
    let shared = || CallRequest {
        storage_key: Some(key.into()),
        shared_storage: true,
        ..CallRequest::new(id.clone()).concurrency_key("c")
    };
    let Ok(Decision::Run(run)) = cache.begin_call(&caller(a), fresh).outcome else {
        panic!("the first call runs")
    };
    let Ok(Decision::Wait { entry, .. }) = cache.begin_call(&caller(a), shared()).outcome else {
        panic!("A's call through the row must join A's run under the same key")
    };
    assert_eq!(entry, run.entry);
    let Ok(Decision::Run(other)) = cache.begin_call(&caller(b), shared()).outcome else {
        panic!("B must not join A's run: its safety is not known yet")
    };
    for (e, waiters) in [(run.entry, 2), (other.entry, 1)] {
        let done = cache.complete(e, Ok(Resolved::value(1))).unwrap();
        assert_eq!(done.served.len(), waiters);
    }
    for s in [a, b] {
        run_releases(cache.close_session(s).unwrap().releases).unwrap();
    }
    assert_eq!(cache.live_entries(), 0);
    cache.check_invariants().unwrap();
}
