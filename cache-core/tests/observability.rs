//! O-2 decision trace lines and O-3 leak reports.

use cache_core::id::{CallId, Digest};
use cache_core::machine::{
    run_releases, CallCache, CallRequest, Caller, Decision, LeakClass, Owner, Resolved,
};
use cache_core::trace::Path;

fn run_to_completion(
    cache: &mut CallCache<u8>,
    caller: &Caller,
    req: CallRequest,
) -> cache_core::machine::Served<u8> {
    let begin = cache.begin_call(caller, req);
    let Ok(Decision::Run(order)) = begin.outcome else {
        panic!("expected a miss")
    };
    let done = cache.complete(order.entry, Ok(Resolved::value(7))).unwrap();
    done.served.into_iter().next().unwrap().1.unwrap()
}

#[test]
fn o2_trace_lines_name_path_keys_and_session() {
    let mut cache: CallCache<u8> = CallCache::new(1);
    let session = cache.open_session();
    let caller = Caller {
        session: Some(session),
        ..Caller::default()
    };
    let content = Digest::of(b"same bytes");
    let a = CallId::new("a").with_content_digest(content);
    let b = CallId::new("b").with_content_digest(content);

    let miss = cache.begin_call(&caller, CallRequest::new(a.clone()));
    let line = miss.trace.clone().unwrap();
    assert_eq!(line.path, Path::Miss);
    let Ok(Decision::Run(order)) = miss.outcome else {
        panic!()
    };
    cache.complete(order.entry, Ok(Resolved::value(1))).unwrap();
    let text = line.to_string();
    let short = &a.call_key()["sha256:".len()..][..12];
    assert!(text.starts_with(&format!("call={short} ")), "{text}");
    assert!(text.contains(" path=miss "), "{text}");
    assert!(text.contains(&format!(" session={session} ")), "{text}");
    assert!(text.contains(" rule=C-3.4"), "{text}");

    let storage = cache
        .begin_call(&caller, CallRequest::new(a))
        .trace
        .unwrap();
    assert_eq!((storage.path, storage.overridden), (Path::Storage, false));
    let content_hit = cache
        .begin_call(&caller, CallRequest::new(b.clone()))
        .trace
        .unwrap();
    assert_eq!(
        (content_hit.path, content_hit.overridden),
        (Path::Content, true)
    );
    assert!(content_hit.to_string().contains(" overridden=true "));
    let dnc = cache.begin_call(&caller, CallRequest::new(b).do_not_cache(true));
    assert_eq!(dnc.trace.as_ref().unwrap().path, Path::DoNotCache);
    let Ok(Decision::Run(order)) = dnc.outcome else {
        panic!()
    };
    cache
        .complete(
            order.entry,
            Err(cache_core::CallError::Resolver("boom".into())),
        )
        .unwrap();

    let closed = cache.close_session(session).unwrap();
    run_releases(closed.releases).unwrap();
    assert_eq!(cache.entries(), 0);
    cache.check_invariants().unwrap();
}

#[test]
fn o2_recursive_decision_is_traced() {
    let mut cache: CallCache<u8> = CallCache::new(1);
    let id = CallId::new("loop");
    let outer = cache.begin_call(&Caller::default(), CallRequest::new(id.clone()));
    let Ok(Decision::Run(order)) = outer.outcome else {
        panic!()
    };
    let inner_caller = Caller {
        session: None,
        chain: order.chain.clone(),
        inside: Some((1, order.entry)),
    };
    let inner = cache.begin_call(&inner_caller, CallRequest::new(id));
    assert_eq!(inner.trace.unwrap().path, Path::Recursive);
    assert!(matches!(
        inner.outcome,
        Err(cache_core::CallError::Recursive { .. })
    ));
    let done = cache.complete(order.entry, Ok(Resolved::value(1))).unwrap();
    let served = done.served.into_iter().next().unwrap().1.unwrap();
    run_releases(cache.release(served.handle).unwrap()).unwrap();
    assert_eq!(cache.entries(), 0);
}

#[test]
fn o3_leak_report_names_class_and_holders() {
    let mut cache: CallCache<u8> = CallCache::new(1);
    let session = cache.open_session();
    let caller = Caller {
        session: Some(session),
        ..Caller::default()
    };
    let held = run_to_completion(&mut cache, &caller, CallRequest::new(CallId::new("kept")));
    // An in-flight call with a concurrency key, never completed: stuck.
    let stuck = cache.begin_call(
        &Caller::default(),
        CallRequest::new(CallId::new("stuck")).concurrency_key("c"),
    );
    let Ok(Decision::Run(stuck)) = stuck.outcome else {
        panic!()
    };

    let report = cache.leak_report();
    assert!(!report.is_clean());
    assert_eq!(
        report.classes(),
        vec![LeakClass::CompletedRefs, LeakClass::StuckInFlight]
    );
    let kept = report
        .entries
        .iter()
        .find(|e| e.entry == held.handle.entry())
        .unwrap();
    assert_eq!(
        kept.holders,
        vec![(held.handle.ref_id(), Owner::Session(session))]
    );
    let text = report.to_string();
    assert!(
        text.contains("class: completed-call refs not released"),
        "{text}"
    );
    assert!(text.contains("class: in-flight calls stuck"), "{text}");
    assert!(
        text.contains(&format!("held by session {session}")),
        "{text}"
    );
    assert!(text.contains("waiter w"), "{text}");

    // Settle everything: the report comes back clean (INV-1).
    let done = cache.complete(stuck.entry, Ok(Resolved::value(2))).unwrap();
    for (_, served) in done.served {
        run_releases(cache.release(served.unwrap().handle).unwrap()).unwrap();
    }
    run_releases(cache.close_session(session).unwrap().releases).unwrap();
    let report = cache.leak_report();
    assert!(report.is_clean(), "{report}");
    assert!(report.to_string().contains("no leak"));
}
