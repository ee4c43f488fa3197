//! O-2 decision trace lines and O-3 leak reports.

use cache_core::id::{CallId, Digest};
use cache_core::machine::{
    run_releases, CallCache, CallRequest, Caller, Decision, FlightKey, LeakClass, Owner, Resolved,
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
    let _ = cache.complete(order.entry, Ok(Resolved::value(1))).unwrap();
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
    let _ = cache
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

/// Each class stands on its own: a report with one kind of survivor names
/// that class only, and a survivor in no index still makes it unclean
/// (INV-1 counts live entries, not just index entries).
#[test]
fn o3_each_leak_class_alone() {
    let caller = Caller::default();
    let mut cache: CallCache<u8> = CallCache::new(1);
    let Ok(Decision::Run(dnc)) = cache
        .begin_call(
            &caller,
            CallRequest::new(CallId::new("dnc")).do_not_cache(true),
        )
        .outcome
    else {
        panic!("a do-not-cache call runs")
    };
    let report = cache.leak_report();
    assert_eq!(report.buckets.total(), 0, "{report}");
    assert!(!report.is_clean(), "{report}");
    assert_eq!(report.classes(), vec![LeakClass::Unindexed]);
    let done = cache.complete(dnc.entry, Ok(Resolved::value(1))).unwrap();
    let served = done.served.into_iter().next().unwrap().1.unwrap();
    run_releases(cache.release(served.handle).unwrap()).unwrap();
    assert!(cache.leak_report().is_clean());

    let mut cache: CallCache<u8> = CallCache::new(1);
    // Joinable (registered in flight) under a concurrency key.
    let _stuck = cache.begin_call(
        &caller,
        CallRequest::new(CallId::new("stuck")).concurrency_key("c"),
    );
    assert_eq!(
        cache.leak_report().classes(),
        vec![LeakClass::StuckInFlight]
    );

    let mut cache: CallCache<u8> = CallCache::new(1);
    let Ok(Decision::Run(arb)) = cache.begin_arbitrary(&caller, "arb").outcome else {
        panic!("a new arbitrary entry runs")
    };
    let done = cache.complete(arb.entry, Ok(Resolved::value(2))).unwrap();
    let _held = done.served.into_iter().next().unwrap().1.unwrap();
    let report = cache.leak_report();
    assert_eq!(report.buckets.completed_arbitrary, 1, "{report}");
    assert_eq!(report.classes(), vec![LeakClass::Arbitrary]);
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

/// O-2: a line's keys read back as the decision had them: the call key,
/// the requested ID's content key, and the storage key when it is not the
/// call key (otherwise the call key); `Debug` prints the same three.
#[test]
fn o2_trace_line_keys_read_back() {
    let mut cache: CallCache<u8> = CallCache::new(1);
    let content = Digest::of(b"bytes");
    let id = CallId::new("keyed").with_content_digest(content);
    let caller = Caller::default();

    let mut req = CallRequest::new(id.clone());
    req.storage_key = Some("ttl-storage-key".into());
    let line = cache.begin_call(&caller, req).trace.unwrap();
    assert_eq!(line.call_key(), id.call_key().to_string());
    assert_eq!(line.content_key(), Some(content.to_string()));
    assert_eq!(line.storage_key(), "ttl-storage-key");
    let debug = format!("{line:?}");
    assert!(
        debug.contains(&format!("call: {:?}", line.call_key())),
        "{debug}"
    );
    assert!(
        debug.contains(&format!("content: Some({:?})", content.to_string())),
        "{debug}"
    );
    assert!(debug.contains("storage: \"ttl-storage-key\""), "{debug}");
    assert!(debug.contains("path: Miss"), "{debug}");

    // Without its own storage key, the storage key is the call key; an ID
    // without a content digest has no content key.
    let plain = CallId::new("plain");
    let line = cache
        .begin_call(&caller, CallRequest::new(plain.clone()))
        .trace
        .unwrap();
    assert_eq!(line.storage_key(), plain.call_key().to_string());
    assert_eq!(line.content_key(), None);
}

/// Records the `tracing` events emitted on this thread.
#[derive(Clone, Default)]
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<(String, tracing::Level, String)>>>);

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let meta = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((meta.target().to_string(), *meta.level(), message.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// O-2: every decision of the async API goes out as one `tracing` event at
/// debug level, target `cache_core::decision`, whose message is the line.
#[test]
fn o2_facade_decisions_are_emitted_as_tracing_events() {
    use cache_core::facade::{Cache, CallKey, Ctx};
    let recorder = Recorder::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tracing::subscriber::with_default(recorder.clone(), || {
        rt.block_on(async {
            let cache: Cache<u8> = Cache::builder().build();
            let key = CallKey::new(CallId::new("traced"));
            let ctx = Ctx::new();
            let first = cache
                .get_or_init_call(&ctx, key.clone(), |_| async { Ok(Resolved::value(1)) })
                .await
                .unwrap();
            let again = cache
                .get_or_init_call(&ctx, key, |_| async { unreachable!("a hit") })
                .await
                .unwrap();
            assert!(again.hit());
            drop((first, again));
        })
    });
    let events = recorder.0.lock().unwrap().clone();
    let decisions: Vec<&(String, tracing::Level, String)> = events
        .iter()
        .filter(|(target, _, _)| target == "cache_core::decision")
        .collect();
    assert_eq!(decisions.len(), 2, "{events:?}");
    assert!(decisions
        .iter()
        .all(|(_, level, _)| *level == tracing::Level::DEBUG));
    assert!(decisions[0].2.contains(" path=miss "), "{decisions:?}");
    assert!(decisions[1].2.contains(" path=storage "), "{decisions:?}");
    assert!(decisions[1].2.contains(" rule=C-3.1"), "{decisions:?}");
}

/// O-3: the whole report, every class, phase and kind of slot at once, as
/// text: what a user reads when a run ends with something alive.
#[test]
fn o3_leak_report_text_covers_every_class_phase_and_slot() {
    let mut cache: CallCache<u8> = CallCache::new(1);
    let session = cache.open_session();
    let caller = Caller {
        session: Some(session),
        ..Caller::default()
    };
    let content = Digest::of(b"bytes");
    // Completed, held by the session, listed by storage and content key.
    let _ = run_to_completion(
        &mut cache,
        &caller,
        CallRequest::new(CallId::new("kept").with_content_digest(content)),
    );
    // In flight with the session waiting, joinable under "c" (waiter w1
    // was the first call's, served and gone).
    let _joinable = cache.begin_call(
        &caller,
        CallRequest::new(CallId::new("stuck")).concurrency_key("c"),
    );
    // In flight and run as do-not-cache: in no index at all (C-2).
    let _detached = cache.begin_call(
        &caller,
        CallRequest::new(CallId::new("dnc")).do_not_cache(true),
    );
    // An arbitrary entry in flight.
    let _arbitrary = cache.begin_arbitrary(&caller, "arb-key");

    let report = cache.leak_report();
    assert_eq!(
        report.classes(),
        vec![
            LeakClass::CompletedRefs,
            LeakClass::StuckInFlight,
            LeakClass::Arbitrary,
            LeakClass::Unindexed
        ]
    );
    let short = |name: &str| CallId::new(name).call_key()["sha256:".len()..][..12].to_string();
    let content_short = &content.to_string()["sha256:".len()..][..12];
    let expected = format!(
        "leak report: 4 index entries (ongoing calls 1, completed calls 1, completed by content 1, ongoing arbitrary 1, completed arbitrary 0); 4 live entries; 1 open sessions
class: completed-call refs not released
class: in-flight calls stuck (a waiter or cancel path)
class: arbitrary entries
class: unindexed entries (detached results or unregistered calls)
  e0v0 call {kept} completed refs=1 in=[storage {kept}, content {content_short}]
    ref r0v0 held by session {session}
  e1v0 call {stuck} in-flight refs=0 in=[ongoing {stuck}/c]
    waiter w2 from session {session}
  e2v0 detached {dnc} in-flight refs=0 in=[]
    waiter w3 from session {session}
  e3v0 arbitrary arb-key in-flight refs=0 in=[arbitrary-ongoing arb-key]
    waiter w4 from session {session}
",
        kept = short("kept"),
        stuck = short("stuck"),
        dnc = short("dnc"),
    );
    assert_eq!(report.to_string(), expected);
    // One entry's slots, asked alone, are the report's for it.
    for e in &report.entries {
        assert_eq!(cache.slots(e.entry), e.slots, "{}", e.entry);
    }
    // The typed flight key of each in-flight entry (what INV-4 oracles
    // read): the ongoing call under its full storage key and concurrency
    // key, the arbitrary init under its key, nothing for the rest.
    let flights: Vec<Option<FlightKey>> = report
        .entries
        .iter()
        .map(|e| cache.flight_key(e.entry))
        .collect();
    assert_eq!(
        flights,
        vec![
            None,
            Some(FlightKey::Call {
                storage_key: CallId::new("stuck").call_key(),
                concurrency_key: "c".into(),
            }),
            None,
            Some(FlightKey::Arbitrary {
                key: "arb-key".into(),
            }),
        ]
    );
    let gone = run_to_completion(
        &mut cache,
        &Caller::default(),
        CallRequest::new(CallId::new("gone")),
    );
    let gone_entry = gone.handle.entry();
    assert_eq!(cache.slots(gone_entry).len(), 1, "listed by storage key");
    run_releases(cache.release(gone.handle).unwrap()).unwrap();
    assert!(cache.slots(gone_entry).is_empty(), "an entry that is gone");
}

/// C-12: a failing release hook's error names the entry it belonged to
/// (kind, short storage key, entry id); `PendingRelease` and `Resolved`
/// print what they hold.
#[test]
fn c12_hook_errors_and_pending_releases_name_their_entry() {
    let mut cache: CallCache<u8> = CallCache::new(1);
    let caller = Caller::default();
    let id = CallId::new("hooked");
    let begin = cache.begin_call(&caller, CallRequest::new(id.clone()));
    let Ok(Decision::Run(order)) = begin.outcome else {
        panic!("a miss")
    };
    let resolved = Resolved::value(5u8).with_release(|| Err("disk on fire".to_string()));
    let debug = format!("{resolved:?}");
    assert_eq!(
        debug,
        "Resolved { id: None, has_value: true, has_release: true, safe_to_persist: false, nested: [] }"
    );
    let done = cache.complete(order.entry, Ok(resolved)).unwrap();
    let served = done.served.into_iter().next().unwrap().1.unwrap();
    let mut releases = cache.release(served.handle).unwrap();
    assert_eq!(releases.len(), 1);
    let short = &id.call_key()["sha256:".len()..][..12];
    let release = releases.pop().unwrap();
    assert_eq!(release.label(), format!("call {short}"));
    assert_eq!(
        format!("{release:?}"),
        format!("PendingRelease({}, call {short})", order.entry)
    );
    let err = release.run().unwrap_err();
    let want = format!("call {short} ({}): disk on fire", order.entry);
    assert!(
        matches!(&err, cache_core::CallError::ReleaseHook(m) if *m == want),
        "{err:?}"
    );
}
