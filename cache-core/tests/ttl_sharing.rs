//! T-3 on a live, shared TTL key: an unsafe result never crosses sessions,
//! neither by a storage hit nor by joining the call that computes it.

use cache_core::id::CallId;
use cache_core::machine::{run_releases, CallCache, CallRequest, Caller, Decision, Resolved};

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
