//! One test per loader rule (SPEC §7, L-1 … L-16), through the async API
//! with a manual clock, paused tokio time and the in-memory remote and bus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::error::ResolverError;
use cache_core::facade::ManualClock;
use cache_core::loader::keys::stored_key;
use cache_core::loader::{
    BusFaults, CallOptions, Codec, FlightKey, Key, Loader, LoaderError, LoaderOptions, MemoryBus,
    MemoryRemote, NotFound, Record, RemoteFaults, Source,
};

const T0: i64 = 1_000_000;

fn opts(name: &str) -> LoaderOptions {
    LoaderOptions::new(name)
}

fn node(
    clock: &ManualClock,
    o: LoaderOptions,
    remote: Option<&MemoryRemote>,
    bus: Option<&MemoryBus>,
) -> Loader<String> {
    let mut b = Loader::builder(o, Arc::new(clock.clone()));
    if let Some(r) = remote {
        b = b.remote(Arc::new(r.clone()));
    }
    if let Some(bus) = bus {
        b = b.bus(Arc::new(bus.clone()));
    }
    b.build().expect("valid options")
}

/// A loader that counts its calls, sleeps `ms` of tokio time, and answers `value`.
fn counting(
    calls: &Arc<AtomicUsize>,
    ms: u64,
    value: &str,
) -> impl Fn(Key) -> futures::future::BoxFuture<'static, Result<String, ResolverError>>
       + Send
       + Sync
       + 'static {
    let calls = calls.clone();
    let value = value.to_string();
    move |_k| {
        calls.fetch_add(1, Ordering::SeqCst);
        let value = value.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(value)
        })
    }
}

fn nf_error() -> ResolverError {
    ResolverError::msg("no such user")
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l1_one_flight_per_key_counting_refreshes() {
    let clock = ManualClock::new(T0);
    let mut o = opts("c");
    o.refresh_interval_ms = 1_000;
    let l = node(&clock, o, None, None);
    let calls = Arc::new(AtomicUsize::new(0));

    // Eight concurrent callers: one loader call.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (l, calls) = (l.clone(), calls.clone());
        handles.push(tokio::spawn(async move {
            l.once(
                "k",
                CallOptions::default().refresh(),
                counting(&calls, 100, "v"),
            )
            .await
        }));
    }
    let mut joined = 0;
    for h in handles {
        let got = h.await.unwrap().unwrap();
        assert_eq!(got.value, "v");
        joined += usize::from(got.joined);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(joined, 7);
    assert_eq!(l.counters().flight_joins, 7);

    // A refresh falling due while a foreground flight is in the air joins it.
    clock.advance(1_500);
    let fg = {
        let (l, calls) = (l.clone(), calls.clone());
        tokio::spawn(async move {
            l.once(
                "k",
                CallOptions::default().skip_local(),
                counting(&calls, 100, "v2"),
            )
            .await
        })
    };
    tokio::task::yield_now().await;
    assert_eq!(l.flights(), 1);
    assert_eq!(
        l.run_due_refreshes(),
        0,
        "the refresh joined the foreground flight"
    );
    assert_eq!(l.counters().refresh_joins, 1);
    assert_eq!(fg.await.unwrap().unwrap().value, "v2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // And vice versa: a foreground read joins a refresh in the air.
    clock.advance(1_500);
    assert_eq!(l.run_due_refreshes(), 1);
    let got = l
        .once(
            "k",
            CallOptions::default().skip_local(),
            counting(&calls, 100, "never"),
        )
        .await
        .unwrap();
    assert!(got.joined);
    assert_eq!(got.value, "v", "the refresh re-ran the task's loader");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(l.counters().loads, 3);
    l.check_invariants().unwrap();
    l.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l2_waiters_share_one_outcome_and_the_last_leaver_cancels() {
    let clock = ManualClock::new(T0);
    let l = node(&clock, opts("c"), None, None);

    // Every waiter gets the very same error.
    let err = ResolverError::msg("db down");
    let mut handles = Vec::new();
    for _ in 0..3 {
        let (l, err) = (l.clone(), err.clone());
        handles.push(tokio::spawn(async move {
            l.once("e", CallOptions::default(), move |_| {
                let err = err.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<String, _>(err)
                }
            })
            .await
        }));
    }
    for h in handles {
        assert_eq!(
            h.await.unwrap().unwrap_err(),
            LoaderError::Loader(err.clone())
        );
    }
    assert_eq!(l.counters().loads, 1);

    // One waiter leaves: the flight goes on for the other.
    let finished = Arc::new(AtomicUsize::new(0));
    let slow = |finished: Arc<AtomicUsize>| {
        move |_k: Key| {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1_000)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ResolverError>("slow".to_string())
            }
        }
    };
    let a = {
        let (l, f) = (l.clone(), finished.clone());
        tokio::spawn(async move { l.once("s", CallOptions::default(), slow(f)).await })
    };
    let b = {
        let (l, f) = (l.clone(), finished.clone());
        tokio::spawn(async move { l.once("s", CallOptions::default(), slow(f)).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    a.abort();
    assert!(a.await.unwrap_err().is_cancelled());
    assert_eq!(b.await.unwrap().unwrap().value, "slow");
    assert_eq!(finished.load(Ordering::SeqCst), 1);

    // Every waiter leaves: the loader is cancelled and nothing is written.
    let c = {
        let (l, f) = (l.clone(), finished.clone());
        tokio::spawn(async move { l.once("t", CallOptions::default(), slow(f)).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    c.abort();
    let _ = c.await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the abandoned loader never finished"
    );
    assert_eq!(l.flights(), 0);
    assert_eq!(l.local_record(&Key::from("t")), None);

    // A caller that comes after the last waiter left, while the cancelled
    // flight is still being dropped, never asked to cancel: it waits for
    // that flight to settle and then loads on its own (L-1 holds).
    let mut first = Box::pin(l.once("u", CallOptions::default(), slow(finished.clone())));
    assert!(
        futures::poll!(first.as_mut()).is_pending(),
        "it leads a flight"
    );
    drop(first);
    assert_eq!(l.flights(), 1, "the cancelled flight has not settled yet");
    let calls = Arc::new(AtomicUsize::new(0));
    let late = l
        .once("u", CallOptions::default(), counting(&calls, 5, "fresh"))
        .await;
    assert_eq!(late.unwrap().value, "fresh");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A wait timeout makes the waiter leave with its own error.
    let mut o = opts("w");
    o.wait_timeout_ms = Some(50);
    let w = node(&clock, o, None, None);
    let got = w
        .once("k", CallOptions::default(), slow(finished.clone()))
        .await;
    assert_eq!(got.unwrap_err(), LoaderError::WaitTimeout { after_ms: 50 });
    w.close().await;
    l.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l3_remote_hit_is_copied_locally_with_its_remaining_lifetime() {
    let clock = ManualClock::new(T0);
    let remote = MemoryRemote::new(Arc::new(clock.clone()));
    let mut o = opts("c");
    o.ttl_ms = 10_000;
    let a = node(&clock, o.clone(), Some(&remote), None);
    let b = node(&clock, o, Some(&remote), None);
    let calls = Arc::new(AtomicUsize::new(0));
    a.once("k", CallOptions::default(), counting(&calls, 0, "v"))
        .await
        .unwrap();
    clock.advance(4_000);
    let got = b
        .once("k", CallOptions::default(), counting(&calls, 0, "x"))
        .await
        .unwrap();
    assert_eq!((got.value.as_str(), got.source), ("v", Source::Remote));
    let local = b.local_record(&Key::from("k")).unwrap();
    assert_eq!(
        local.expires_at_ms,
        T0 + 10_000,
        "remaining remote lifetime, not a fresh one"
    );
    let again = b
        .once("k", CallOptions::default(), counting(&calls, 0, "x"))
        .await
        .unwrap();
    assert_eq!(again.source, Source::Local);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l4_loader_errors_are_never_cached_and_remote_faults_degrade() {
    let clock = ManualClock::new(T0);
    let remote = MemoryRemote::new(Arc::new(clock.clone()));
    let l = node(&clock, opts("c"), Some(&remote), None);
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let calls = calls.clone();
        let got = l
            .once("e", CallOptions::default(), move |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<String, _>(ResolverError::msg("boom")) }
            })
            .await;
        assert!(matches!(got, Err(LoaderError::Loader(_))));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the error was not cached");
    assert!(remote.keys().is_empty());

    // A failing remote read degrades to the loader.
    remote.set_faults(RemoteFaults {
        fail_reads: true,
        ..RemoteFaults::default()
    });
    let got = l
        .once("r", CallOptions::default(), counting(&calls, 0, "v"))
        .await
        .unwrap();
    assert_eq!(
        (got.value.as_str(), got.source, got.warning.clone()),
        ("v", Source::Loader, None)
    );
    assert_eq!(l.counters().remote_read_failures, 1);

    // A failing remote write: a warning, and no local write ahead of the remote.
    remote.set_faults(RemoteFaults {
        fail_writes: true,
        ..RemoteFaults::default()
    });
    let got = l
        .once("w", CallOptions::default(), counting(&calls, 0, "v"))
        .await
        .unwrap();
    assert_eq!(got.value, "v");
    assert!(got.warning.is_some());
    assert_eq!(l.local_record(&Key::from("w")), None);
    assert_eq!(l.counters().remote_write_failures, 1);
    l.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l5_keys_are_injective_and_batch_flights_are_their_own_kind() {
    let a = Key::new(["user", "1:2"]);
    let b = Key::new(["user:1", "2"]);
    assert_ne!(stored_key("c", &a), stored_key("c", &b));
    assert_ne!(
        stored_key("c", &Key::new(["x"])),
        stored_key("c:", &Key::new(["x"]))
    );
    let s = stored_key("c", &a);
    assert_ne!(FlightKey::Single(s.clone()), FlightKey::batch(vec![s]));

    let clock = ManualClock::new(T0);
    let l = node(&clock, opts("c"), None, None);
    let va = l
        .once(a.clone(), CallOptions::default(), |_| async {
            Ok("A".to_string())
        })
        .await
        .unwrap();
    let vb = l
        .once(b.clone(), CallOptions::default(), |_| async {
            Ok("B".to_string())
        })
        .await
        .unwrap();
    assert_eq!((va.value.as_str(), vb.value.as_str()), ("A", "B"));
    assert_eq!(l.get(a).await.unwrap(), "A");
    assert_eq!(l.get(b).await.unwrap(), "B");
    l.close().await;
}

fn nf_opts(name: &str, ttl: i64) -> LoaderOptions {
    let mut o = opts(name);
    o.not_found = Some(NotFound::new(nf_error(), ttl));
    o
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l6_placeholder_is_a_tag_not_a_value() {
    // The envelope: a placeholder and an empty value never read as each other.
    let p = Record::placeholder(5);
    let v = Record::value(Vec::new(), 5);
    assert_ne!(p.encode(), v.encode());
    assert_eq!(Record::decode(&p.encode()).unwrap(), p);
    assert_eq!(Record::decode(&v.encode()).unwrap(), v);

    let clock = ManualClock::new(T0);
    let remote = MemoryRemote::new(Arc::new(clock.clone()));
    let l = node(&clock, nf_opts("c", 5_000), Some(&remote), None);
    let calls = Arc::new(AtomicUsize::new(0));
    let nf = {
        let calls = calls.clone();
        move |_k: Key| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<String, _>(ResolverError::msg("no such user")) }
        }
    };
    for _ in 0..3 {
        let got = l.once("ghost", CallOptions::default(), nf.clone()).await;
        assert_eq!(got.unwrap_err(), LoaderError::NotFound(nf_error()));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the placeholder answered");
    assert!(!l.exists("ghost").await.unwrap());
    assert!(l
        .local_record(&Key::from("ghost"))
        .unwrap()
        .is_placeholder());
    // Two `once` reads and the `exists` read met the placeholder.
    assert_eq!(l.counters().placeholder_hits, 3);

    // An empty string is a value, not a placeholder.
    l.once("empty", CallOptions::default(), |_| async {
        Ok(String::new())
    })
    .await
    .unwrap();
    assert!(l.exists("empty").await.unwrap());
    assert_eq!(l.get("empty").await.unwrap(), "");
    l.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l7_placeholder_lifetime_set_overwrites_and_no_overwrite_of_newer_values() {
    let clock = ManualClock::new(T0);
    let remote = MemoryRemote::new(Arc::new(clock.clone()));
    let l = node(&clock, nf_opts("c", 1_000), Some(&remote), None);
    let calls = Arc::new(AtomicUsize::new(0));
    let nf = {
        let calls = calls.clone();
        move |_k: Key| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err::<String, _>(ResolverError::msg("no such user"))
            }
        }
    };
    assert!(l
        .once("k", CallOptions::default(), nf.clone())
        .await
        .is_err());
    clock.advance(999);
    assert!(l
        .once("k", CallOptions::default(), nf.clone())
        .await
        .is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    clock.advance(2);
    assert!(l
        .once("k", CallOptions::default(), nf.clone())
        .await
        .is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "expired in every tier: exactly one more load"
    );

    // A real set overwrites a placeholder.
    l.set("k", "real".into(), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(
        l.once("k", CallOptions::default(), nf.clone())
            .await
            .unwrap()
            .value,
        "real"
    );

    // A placeholder never overwrites a value written after its load began.
    let flight = {
        let (l, nf) = (l.clone(), nf.clone());
        tokio::spawn(async move { l.once("n", CallOptions::default(), nf).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    l.set("n", "newer".into(), CallOptions::default())
        .await
        .unwrap();
    assert!(
        flight.await.unwrap().is_err(),
        "the flight itself reports not found"
    );
    assert_eq!(l.get("n").await.unwrap(), "newer");
    assert!(
        !Record::decode(&remote.peek(&l.stored_key(&Key::from("n"))).unwrap())
            .unwrap()
            .is_placeholder()
    );
    l.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l8_expiries_from_the_clock_with_seeded_jitter_bounded_local_tier() {
    let clock = ManualClock::new(T0);
    let expiries = |seed: u64| {
        let clock = clock.clone();
        async move {
            let mut o = opts("c");
            o.jitter_ms = 1_000;
            o.seed = seed;
            o.local_ttl_ms = 60_000;
            let l = node(&clock, o, None, None);
            let mut out = Vec::new();
            for i in 0..20 {
                let k = Key::from(format!("k{i}"));
                l.once(k.clone(), CallOptions::default(), |_| async {
                    Ok("v".to_string())
                })
                .await
                .unwrap();
                out.push(l.local_record(&k).unwrap().expires_at_ms);
            }
            l.close().await;
            out
        }
    };
    let a = expiries(7).await;
    assert_eq!(a, expiries(7).await, "same seed, same expiries");
    assert_ne!(a, expiries(8).await);
    let distinct: std::collections::BTreeSet<_> = a.iter().collect();
    assert!(distinct.len() > 10, "jitter spreads expiries: {a:?}");
    assert!(a.iter().all(|e| (T0 + 60_000..=T0 + 61_000).contains(e)));

    // A TTL below the minimum is an error naming the field.
    let l = node(&clock, opts("c"), None, None);
    let got = l
        .once("k", CallOptions::default().ttl_ms(0), |_| async {
            Ok("v".to_string())
        })
        .await;
    assert!(matches!(
        got,
        Err(LoaderError::InvalidOption {
            field: "ttl_ms",
            ..
        })
    ));
    let mut bad = opts("c");
    bad.ttl_ms = -5;
    assert!(matches!(
        Loader::<String>::builder(bad, Arc::new(clock.clone()))
            .build()
            .err(),
        Some(LoaderError::InvalidOption {
            field: "ttl_ms",
            ..
        })
    ));

    // Bounded: capacity 2 evicts; an expired entry is never served.
    let mut o = opts("small");
    o.local_capacity = 2;
    o.ttl_ms = 1_000;
    let small = node(&clock, o, None, None);
    for k in ["a", "b", "c"] {
        small
            .once(k, CallOptions::default(), |_| async { Ok("v".to_string()) })
            .await
            .unwrap();
    }
    assert_eq!(small.local_record(&Key::from("a")), None, "evicted");
    clock.advance(1_000);
    assert_eq!(
        small.local_record(&Key::from("c")),
        None,
        "expired at its expiry"
    );
    let calls = Arc::new(AtomicUsize::new(0));
    small
        .once("c", CallOptions::default(), counting(&calls, 0, "v"))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    small.close().await;
    l.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l9_refresh_tasks_are_bounded_stopped_when_idle_deleted_or_closed() {
    let clock = ManualClock::new(T0);
    let mut o = opts("c");
    o.refresh_interval_ms = 1_000;
    o.refresh_tasks_max = 2;
    o.refresh_concurrency = 1;
    o.refresh_idle_ms = 5_000;
    let l = node(&clock, o, None, None);
    let calls = Arc::new(AtomicUsize::new(0));
    for k in ["a", "b", "c"] {
        l.once(
            k,
            CallOptions::default().refresh(),
            counting(&calls, 100, "v"),
        )
        .await
        .unwrap();
    }
    assert_eq!(l.refresh_tasks(), 2);
    assert_eq!(l.counters().refresh_tasks_rejected, 1);

    clock.advance(1_000);
    assert_eq!(
        l.run_due_refreshes(),
        1,
        "at most refresh_concurrency at once"
    );
    assert_eq!(l.run_due_refreshes(), 0, "the second waits for room");
    l.check_invariants().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(l.run_due_refreshes(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;

    l.delete("a").await.unwrap();
    assert_eq!(l.refresh_tasks(), 1, "delete cancels the key's task");
    clock.advance(5_000);
    l.run_due_refreshes();
    assert_eq!(l.refresh_tasks(), 0, "idle past its window");

    l.once(
        "d",
        CallOptions::default().refresh(),
        counting(&calls, 0, "v"),
    )
    .await
    .unwrap();
    assert_eq!(l.refresh_tasks(), 1);
    l.close().await;
    l.close().await; // idempotent
    assert_eq!(l.refresh_tasks(), 0);
    assert_eq!(
        l.background_tasks(),
        0,
        "no ticker, subscriber or flight left (LINV-8)"
    );
    let before = calls.load(Ordering::SeqCst);
    clock.advance(10_000);
    assert_eq!(l.run_due_refreshes(), 0);
    let got = l
        .once("d", CallOptions::default(), counting(&calls, 0, "v"))
        .await;
    assert_eq!(got.unwrap_err(), LoaderError::Closed);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "nothing runs after close"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l10_failed_refresh_keeps_the_old_value_and_one_node_refreshes_per_window() {
    let clock = ManualClock::new(T0);
    let remote = MemoryRemote::new(Arc::new(clock.clone()));
    let mut o = opts("c");
    o.refresh_interval_ms = 1_000;
    let a = node(&clock, o.clone(), Some(&remote), None);
    let b = node(&clock, o, Some(&remote), None);
    let answers = Arc::new(Mutex::new(vec![
        Err(ResolverError::msg("flaky")),
        Ok("v1".to_string()),
    ]));
    let a_calls = Arc::new(AtomicUsize::new(0));
    let scripted = {
        let (answers, calls) = (answers.clone(), a_calls.clone());
        move |_k: Key| {
            calls.fetch_add(1, Ordering::SeqCst);
            let next = answers
                .lock()
                .unwrap()
                .pop()
                .unwrap_or(Ok("v2".to_string()));
            async move { next }
        }
    };
    assert_eq!(
        a.once("k", CallOptions::default().refresh(), scripted)
            .await
            .unwrap()
            .value,
        "v1"
    );
    clock.advance(1_000);
    assert_eq!(a.run_due_refreshes(), 1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(a.counters().refresh_failures, 1);
    assert_eq!(a.get("k").await.unwrap(), "v1", "the old value stays");
    assert_eq!(a.refresh_tasks(), 1, "the task stays");

    // Next window: b also has a task; only one of the two loads.
    let b_calls = Arc::new(AtomicUsize::new(0));
    b.once(
        "k",
        CallOptions::default().refresh(),
        counting(&b_calls, 0, "from-b"),
    )
    .await
    .unwrap();
    clock.advance(1_000);
    a.run_due_refreshes();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(a.get("k").await.unwrap(), "v2");
    b.run_due_refreshes();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        b_calls.load(Ordering::SeqCst),
        0,
        "b lost the lock and did not load"
    );
    assert_eq!(
        b.local_record(&Key::from("k")).map(|r| r.payload),
        Record::decode(&remote.peek(&b.stored_key(&Key::from("k"))).unwrap())
            .ok()
            .map(|r| r.payload),
        "b's local copy is in line with the remote"
    );
    assert_eq!(b.get("k").await.unwrap(), "v2");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l11_every_mutation_emits_one_event_and_own_events_are_ignored() {
    let clock = ManualClock::new(T0);
    let remote = MemoryRemote::new(Arc::new(clock.clone()));
    let bus = MemoryBus::new(1);
    let mut oa = opts("c");
    oa.node = "a".into();
    let mut ob = opts("c");
    ob.node = "b".into();
    let a = node(&clock, oa, Some(&remote), Some(&bus));
    let b = node(&clock, ob, Some(&remote), Some(&bus));
    a.set("k", "1".into(), CallOptions::default())
        .await
        .unwrap();
    a.once("j", CallOptions::default(), |_| async {
        Ok("2".to_string())
    })
    .await
    .unwrap();
    a.delete("k").await.unwrap();
    let _ = a
        .load_many(
            vec![Key::from("x"), Key::from("y")],
            CallOptions::default(),
            |ks| async move {
                Ok(ks
                    .into_iter()
                    .map(|k| (k, "b".to_string()))
                    .collect::<BTreeMap<_, _>>())
            },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (ca, cb) = (a.counters(), b.counters());
    assert_eq!(ca.events_emitted, 4, "set, load, delete, batch: one each");
    assert_eq!(ca.events_ignored, 4);
    assert_eq!(ca.events_delivered, 0);
    assert_eq!(cb.events_delivered, 4);
    let s = bus.stats();
    assert_eq!(s.copies, s.delivered + s.dropped + s.in_flight);
    assert_eq!(ca.events_emitted, s.published);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l12_nodes_converge_once_events_are_delivered_or_local_lifetimes_end() {
    let clock = ManualClock::new(T0);
    let remote = MemoryRemote::new(Arc::new(clock.clone()));
    let bus = MemoryBus::new(3);
    bus.set_faults(BusFaults {
        duplicate_per_mille: 500,
        max_delay_ms: 300,
        ..BusFaults::default()
    });
    let mk = |name: &str, local_ttl: i64| {
        let mut o = opts("c");
        o.node = name.into();
        o.local_ttl_ms = local_ttl;
        node(&clock, o, Some(&remote), Some(&bus))
    };
    let (a, b) = (mk("a", 60_000), mk("b", 60_000));
    let read = |l: &Loader<String>| {
        let l = l.clone();
        async move {
            l.once("k", CallOptions::default(), |_| async {
                Ok("v0".to_string())
            })
            .await
            .unwrap()
            .value
        }
    };
    assert_eq!(read(&b).await, "v0");
    for i in 1..=5 {
        a.set("k", format!("v{i}"), CallOptions::default())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let remote_value = a.get("k").await.unwrap();
    let b_local = b.local_record(&Key::from("k"));
    assert!(b_local.is_none(), "b dropped its stale copy: {b_local:?}");
    assert_eq!(read(&b).await, remote_value);
    a.close().await;
    b.close().await;

    // Lost events: the stale copy lives at most its local lifetime.
    let lossy = MemoryBus::new(4);
    lossy.set_faults(BusFaults {
        drop_per_mille: 1000,
        ..BusFaults::default()
    });
    let mk = |name: &str| {
        let mut o = opts("d");
        o.node = name.into();
        o.local_ttl_ms = 2_000;
        node(&clock, o, Some(&remote), Some(&lossy))
    };
    let (a, b) = (mk("a"), mk("b"));
    b.once("k", CallOptions::default(), |_| async {
        Ok("old".to_string())
    })
    .await
    .unwrap();
    a.set("k", "new".into(), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(b.get("k").await.unwrap(), "old", "the event was lost");
    clock.advance(2_000);
    assert_eq!(
        b.get("k").await.unwrap(),
        "new",
        "within its local lifetime after the write"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l13_batch_loads_exactly_the_missing_keys_once() {
    let clock = ManualClock::new(T0);
    let remote = MemoryRemote::new(Arc::new(clock.clone()));
    let l = node(&clock, nf_opts("c", 5_000), Some(&remote), None);
    l.set("k1", "one".into(), CallOptions::default())
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<Vec<Key>>>> = Arc::default();
    let loader = |seen: Arc<Mutex<Vec<Vec<Key>>>>| {
        move |ks: Vec<Key>| async move {
            seen.lock().unwrap().push(ks.clone());
            tokio::time::sleep(Duration::from_millis(50)).await;
            // k3 is not found: it is left out of the map.
            Ok(ks
                .into_iter()
                .filter(|k| k.parts()[0] != "k3")
                .map(|k| (k.clone(), format!("loaded {}", k.parts()[0])))
                .collect::<BTreeMap<_, _>>())
        }
    };
    let keys: Vec<Key> = ["k1", "k2", "k3", "k2"]
        .into_iter()
        .map(Key::from)
        .collect();
    // Two concurrent batches with the same missing set share one call.
    let other = {
        let (l, keys, seen) = (l.clone(), keys.clone(), seen.clone());
        tokio::spawn(async move {
            l.load_many(keys, CallOptions::default(), loader(seen))
                .await
        })
    };
    let got = l
        .load_many(keys.clone(), CallOptions::default(), loader(seen.clone()))
        .await;
    let got2 = other.await.unwrap();
    assert_eq!(got, got2);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![vec![Key::from("k2"), Key::from("k3")]]
    );
    assert_eq!(got.get(&Key::from("k1")).map(String::as_str), Some("one"));
    assert_eq!(
        got.get(&Key::from("k2")).map(String::as_str),
        Some("loaded k2")
    );
    assert_eq!(got.get(&Key::from("k3")), None);
    // A hit and a loaded value come back in key order, as one list.
    let order: Vec<&Key> = got.values.iter().map(|(k, _)| k).collect();
    assert_eq!(order, [&Key::from("k1"), &Key::from("k2")]);
    assert_eq!(got.not_found, vec![Key::from("k3")]);
    assert_eq!(got.error, None);
    // Everything is now in the tiers: no further call.
    let again = l
        .load_many(keys, CallOptions::default(), loader(seen.clone()))
        .await;
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(again.not_found, vec![Key::from("k3")]);

    // A failing batch changes no tier and still returns the hits.
    let before = remote.keys();
    let failed = l
        .load_many(
            vec![Key::from("k1"), Key::from("k9")],
            CallOptions::default(),
            |_| async { Err::<BTreeMap<Key, String>, _>(ResolverError::msg("batch down")) },
        )
        .await;
    assert_eq!(failed.values.len(), 1);
    assert!(matches!(failed.error, Some(LoaderError::Loader(_))));
    assert_eq!(remote.keys(), before);
    assert_eq!(l.local_record(&Key::from("k9")), None);
    l.close().await;
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l14_codecs_roundtrip_reject_garbage_and_corrupt_records_reload_once() {
    let u = User {
        id: 7,
        name: "ada".into(),
        tags: vec!["x".into()],
        score: Some(1.5),
    };
    for codec in [Codec::Binary, Codec::Json] {
        let bytes = codec.encode(&u).unwrap();
        assert_eq!(codec.decode::<User>(&bytes).unwrap(), u);
        assert!(codec.decode::<User>(b"\xff\xfe garbage").is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(
            codec.decode::<User>(&long).is_err(),
            "{codec:?}: trailing bytes are an error"
        );
    }
    assert!(Record::decode(b"").is_err());
    assert!(Record::decode(b"L\x01\x07aaaaaaaa").is_err());

    let clock = ManualClock::new(T0);
    let remote = MemoryRemote::new(Arc::new(clock.clone()));
    let l = node(&clock, opts("c"), Some(&remote), None);
    let stored = l.stored_key(&Key::from("k"));
    remote.poke(&stored, b"not a record".to_vec(), 60_000);
    let calls = Arc::new(AtomicUsize::new(0));
    let got = l
        .once("k", CallOptions::default(), counting(&calls, 0, "fresh"))
        .await
        .unwrap();
    assert_eq!(got.value, "fresh");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "reloaded exactly once");
    assert_eq!(l.counters().codec_errors, 1);
    assert!(
        Record::decode(&remote.peek(&stored).unwrap()).is_ok(),
        "the bad record was replaced"
    );

    // A valid envelope whose value is not a String: deleted and reloaded once.
    let bad_value = Record::value(vec![0xff, 0xff, 0xff], T0 + 60_000).encode();
    remote.poke(&l.stored_key(&Key::from("v")), bad_value, 60_000);
    let got = l
        .once("v", CallOptions::default(), counting(&calls, 0, "fresh"))
        .await
        .unwrap();
    assert_eq!((got.value.as_str(), got.source), ("fresh", Source::Loader));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    l.close().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l15_counters_conserve_and_export_with_bounded_labels() {
    let clock = ManualClock::new(T0);
    let remote = MemoryRemote::new(Arc::new(clock.clone()));
    let mut o = nf_opts("users", 1_000);
    o.local_ttl_ms = 500;
    let l = node(&clock, o, Some(&remote), None);
    let calls = Arc::new(AtomicUsize::new(0));
    for i in 0..40u64 {
        let key = Key::from(format!("k{}", i % 7));
        let calls = calls.clone();
        let _ = l
            .once(key, CallOptions::default(), move |k| {
                calls.fetch_add(1, Ordering::SeqCst);
                let n = k.parts()[0].clone();
                async move {
                    match n.as_str() {
                        "k3" => Err(ResolverError::msg("error text must not become a label")),
                        "k5" => Err(ResolverError::msg("no such user")),
                        _ => Ok(n),
                    }
                }
            })
            .await;
        clock.advance(50);
    }
    let c = l.counters();
    c.check().unwrap();
    assert_eq!(c.hit, c.local_hit + c.remote_hit);
    assert!(c.load_failures <= c.loads);
    assert_eq!(
        c.loads,
        calls.load(Ordering::SeqCst) as u64,
        "loads = loader calls"
    );
    assert!(
        c.remote_hit > 0 && c.local_hit > 0 && c.load_failures > 0,
        "{c:?}"
    );
    let text = l.metrics_text();
    assert!(
        text.contains(&format!(
            "loader_loads_total{{cache=\"users\"}} {}\n",
            c.loads
        )),
        "{text}"
    );
    assert!(!text.contains("must not"), "no error text in the export");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            line.contains("{cache=\"users\"}"),
            "one bounded label: {line}"
        );
    }
    l.close().await;
}

#[derive(Debug, thiserror::Error)]
#[error("row {0} is gone")]
struct RowGone(u64);

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn l16_every_error_names_its_cause_and_loader_errors_keep_identity() {
    let clock = ManualClock::new(T0);
    let mut o = opts("c");
    o.local_capacity = 0;
    assert_eq!(
        Loader::<String>::builder(o, Arc::new(clock.clone()))
            .build()
            .err(),
        Some(LoaderError::NoBackend)
    );

    let remote = MemoryRemote::new(Arc::new(clock.clone()));
    let l = node(&clock, opts("c"), Some(&remote), None);
    let err = l
        .once("k", CallOptions::default(), |_| async {
            Err::<String, _>(ResolverError::new(RowGone(9)))
        })
        .await
        .unwrap_err();
    assert_eq!(err.cause(), "loader");
    assert_eq!(
        err.loader_error()
            .and_then(|e| e.downcast_ref::<RowGone>())
            .map(|r| r.0),
        Some(9)
    );
    assert_eq!(l.get("absent").await.unwrap_err().cause(), "miss");
    remote.set_faults(RemoteFaults {
        partitioned: true,
        ..RemoteFaults::default()
    });
    let e = l
        .set("k", "v".into(), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.cause(), "remote_unavailable");
    assert!(e.to_string().contains("partitioned"), "{e}");
    l.close().await;
    assert_eq!(l.get("k").await.unwrap_err().cause(), "closed");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn linv8_close_leaves_no_flight_task_or_handler_and_answers_waiters() {
    let clock = ManualClock::new(T0);
    let bus = MemoryBus::new(9);
    let mut o = opts("c");
    o.refresh_interval_ms = 1_000;
    let l = node(&clock, o, None, Some(&bus));
    let calls = Arc::new(AtomicUsize::new(0));
    l.once(
        "r",
        CallOptions::default().refresh(),
        counting(&calls, 0, "v"),
    )
    .await
    .unwrap();
    let waiter = {
        let (l, calls) = (l.clone(), calls.clone());
        tokio::spawn(async move {
            l.once(
                "slow",
                CallOptions::default(),
                counting(&calls, 10_000, "v"),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(l.background_tasks() >= 3, "subscriber, ticker, flight");
    l.close().await;
    assert_eq!(waiter.await.unwrap().unwrap_err(), LoaderError::Closed);
    assert_eq!(
        (l.flights(), l.refresh_tasks(), l.background_tasks()),
        (0, 0, 0)
    );
    l.check_invariants().unwrap();
}
