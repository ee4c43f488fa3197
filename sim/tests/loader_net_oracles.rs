//! Each `loader-net` oracle fires on a planted violation and stays quiet
//! on the same situation done right (typed verdicts, never display text).

use std::sync::Arc;

use cache_core::facade::ManualClock;
use cache_core::loader::keys::KeyCoder;
use cache_core::loader::record::{Payload, Record};
use cache_core::loader::{CallOptions, Loader, LoaderOptions, MemoryBus, MemoryRemote};
use sim::loader_net::oracle::{Oracle, Verdict};
use sim::loader_net::scenario::NetRefresh;
use sim::loader_net::world::{key_of, Closed, Db, DbValue, Flight, NodeSlot, Obs};

fn start(node: usize, flight: Flight) -> Obs {
    Obs::LoadStart {
        node,
        inc: 1,
        flight,
    }
}

fn end(node: usize, flight: Flight) -> Obs {
    Obs::LoadEnd {
        node,
        inc: 1,
        flight,
    }
}

#[test]
fn linv1_fires_on_a_second_call_in_flight_for_one_key_on_one_node() {
    let db = Db::new(4);
    let mut ok = Oracle::default();
    // One after the other, on two nodes, or a batch beside a single: fine.
    let fine = [
        start(0, Flight::Single(1)),
        start(1, Flight::Single(1)),
        start(0, Flight::Batch(vec![1, 2])),
        end(0, Flight::Single(1)),
        start(0, Flight::Single(1)),
    ];
    assert_eq!(ok.observe(&fine, &db), vec![]);
    let mut o = Oracle::default();
    let planted = [start(0, Flight::Single(1)), start(0, Flight::Single(1))];
    assert_eq!(
        o.observe(&planted, &db),
        vec![Verdict::SecondFlight {
            node: 0,
            inc: 1,
            flight: Flight::Single(1)
        }]
    );
    assert_eq!(o.observe(&planted[..1], &db)[0].inv(), "LINV-1");
}

#[test]
fn linv2_fires_on_a_wrong_value_an_unsaid_not_found_and_a_cached_failure() {
    let mut db = Db::new(4);
    let v1 = db.bump(2);
    let mut o = Oracle::default();
    let fine = [
        Obs::Served {
            node: 0,
            key: 2,
            value: v1,
            started: 1,
        },
        Obs::SaidNotFound { key: 3 },
        Obs::ServedNotFound { node: 1, key: 3 },
        Obs::LoadFailed { id: 9 },
        Obs::ServedFailure {
            node: 0,
            key: 1,
            id: 9,
            started: 5,
        },
    ];
    assert_eq!(o.observe(&fine, &db), vec![]);
    let never = DbValue { key: 2, version: 7 };
    let other_key = DbValue { key: 1, version: 0 };
    let planted = [
        Obs::Served {
            node: 0,
            key: 2,
            value: never,
            started: 10,
        },
        Obs::Served {
            node: 0,
            key: 2,
            value: other_key,
            started: 10,
        },
        Obs::ServedNotFound { node: 1, key: 0 },
        // Failure 9 ended before this caller started: it came from a tier.
        Obs::ServedFailure {
            node: 2,
            key: 1,
            id: 9,
            started: 12,
        },
    ];
    let got = o.observe(&planted, &db);
    assert_eq!(
        got,
        vec![
            Verdict::WrongValue {
                node: 0,
                key: 2,
                value: never
            },
            Verdict::WrongValue {
                node: 0,
                key: 2,
                value: other_key
            },
            Verdict::PlaceholderWithoutNotFound { node: 1, key: 0 },
            Verdict::CachedFailure {
                node: 2,
                key: 1,
                id: 9,
                started: 12
            },
        ]
    );
    assert!(got.iter().all(|v| v.inv() == "LINV-2"));
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn node(loader: &Loader<DbValue>) -> NodeSlot {
    NodeSlot {
        inc: 1,
        loader: Some(loader.clone()),
        ..NodeSlot::default()
    }
}

fn loader(clock: &ManualClock, remote: &MemoryRemote) -> Loader<DbValue> {
    Loader::builder(LoaderOptions::new("net"), Arc::new(clock.clone()))
        .remote(Arc::new(remote.clone()))
        .build()
        .unwrap()
}

#[test]
fn linv5_fires_when_a_local_copy_differs_from_the_remote() {
    rt().block_on(async {
        let clock = ManualClock::new(1_000_000);
        let remote = MemoryRemote::new(Arc::new(clock.clone()));
        let l = loader(&clock, &remote);
        let v = DbValue { key: 3, version: 1 };
        l.once(key_of(3), CallOptions::default(), move |_| async move { Ok(v) })
            .await
            .unwrap();
        let o = Oracle::default();
        let (found, tally) = o.check_convergence(&[node(&l)], &remote, 4);
        assert_eq!((found, tally.judged), (vec![], 1));
        // Plant: the remote moves on, and no event tells the node.
        let stored = l.stored_key(&key_of(3));
        let newer = DbValue { key: 3, version: 2 };
        let body = cache_core::loader::Codec::Binary.encode(&newer).unwrap();
        remote.poke(
            &stored,
            Record::value(body.clone(), 2_000_000).encode(),
            60_000,
        );
        let (found, _) = o.check_convergence(&[node(&l)], &remote, 4);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].inv(), "LINV-5");
        assert!(
            matches!(&found[0], Verdict::Diverged { node: 0, key: 3, remote: Some(Payload::Value(b)), .. } if *b == body),
            "{found:?}"
        );
        l.close().await;
    });
}

#[test]
fn linv6_fires_when_loads_differ_from_the_loader_calls_observed() {
    rt().block_on(async {
        let clock = ManualClock::new(1_000_000);
        let remote = MemoryRemote::new(Arc::new(clock.clone()));
        let l = loader(&clock, &remote);
        let v = DbValue { key: 0, version: 0 };
        l.once(
            key_of(0),
            CallOptions::default(),
            move |_| async move { Ok(v) },
        )
        .await
        .unwrap();
        // Observed: the same one call.
        let mut o = Oracle::default();
        o.observe(
            &[start(0, Flight::Single(0)), end(0, Flight::Single(0))],
            &Db::new(1),
        );
        assert_eq!(o.check_counters(&[node(&l)]), vec![]);
        // Plant: a loader call the node never recorded.
        let fresh = Oracle::default();
        assert_eq!(
            fresh.check_counters(&[node(&l)]),
            vec![Verdict::LoadsMiscounted {
                node: 0,
                inc: 1,
                loads: 1,
                calls: 0
            }]
        );
        l.close().await;
    });
}

#[test]
fn linv8_fires_when_a_loader_still_runs_tasks() {
    rt().block_on(async {
        let clock = ManualClock::new(1_000_000);
        let remote = MemoryRemote::new(Arc::new(clock.clone()));
        let l: Loader<DbValue> = Loader::builder(LoaderOptions::new("net"), Arc::new(clock))
            .remote(Arc::new(remote))
            .bus(Arc::new(MemoryBus::new(1)))
            .build()
            .unwrap();
        let report = |l: &Loader<DbValue>| Closed {
            background_tasks: l.background_tasks(),
            flights: l.flights(),
            refresh_tasks: l.refresh_tasks(),
        };
        // Plant: reported before close, its bus subscriber still running.
        let open = NodeSlot {
            closed: Some(report(&l)),
            ..node(&l)
        };
        let found = Oracle::check_closed(&[open]);
        assert!(
            matches!(found.as_slice(), [Verdict::Remains { node: 0, closed, .. }] if closed.background_tasks > 0),
            "{found:?}"
        );
        assert_eq!(found[0].inv(), "LINV-8");
        // A node that never reported its close is a hung close.
        assert_eq!(
            Oracle::check_closed(&[node(&l)]),
            vec![Verdict::CloseHung { node: 0 }]
        );
        l.close().await;
        let closed = NodeSlot {
            closed: Some(report(&l)),
            ..node(&l)
        };
        assert_eq!(Oracle::check_closed(&[closed]), vec![]);
    });
}

fn read(started: u64, key: u64, clock_ms: i64, refresh: bool) -> Obs {
    Obs::Read {
        node: 0,
        inc: 1,
        keys: vec![key],
        refresh,
        started,
        clock_ms,
    }
}

fn served_record(started: u64, key: u64, expires_at_ms: i64) -> Obs {
    Obs::ServedRecord {
        node: 0,
        inc: 1,
        key,
        expires_at_ms,
        started,
    }
}

#[test]
fn linv3_fires_on_a_record_served_at_or_past_its_expiry() {
    let db = Db::new(4);
    let mut o = Oracle::default();
    // Live when the call started: fine.
    let fine = [read(5, 2, 1_000, false), served_record(5, 2, 1_500)];
    assert_eq!(o.observe(&fine, &db), vec![]);
    assert_eq!(o.tally.linv3_judged, 1);
    // Plant: served at its expiry.
    let at_expiry = [read(6, 2, 1_500, false), served_record(6, 2, 1_500)];
    let got = o.observe(&at_expiry, &db);
    assert_eq!(
        got,
        vec![Verdict::ServedExpired {
            node: 0,
            key: 2,
            expires_at_ms: 1_500,
            clock_ms: 1_500
        }]
    );
    assert_eq!(got[0].inv(), "LINV-3");
    // The read came after the record served before had expired: a case.
    assert_eq!(o.tally.linv3_expired, 1);
    // After a backward clock jump the loader's clock stays at its highest
    // reading (T-7): a record that expired by then is expired still.
    let back = [
        read(7, 1, 3_000, false),
        read(8, 3, 1_200, false),
        served_record(8, 3, 2_500),
    ];
    assert_eq!(
        o.observe(&back, &db),
        vec![Verdict::ServedExpired {
            node: 0,
            key: 3,
            expires_at_ms: 2_500,
            clock_ms: 3_000
        }]
    );
    // Another incarnation has its own clock floor.
    let mut fresh = Oracle::default();
    fresh.observe(&back[..1], &db);
    let other_inc = [
        Obs::Read {
            node: 0,
            inc: 2,
            keys: vec![3],
            refresh: false,
            started: 9,
            clock_ms: 1_200,
        },
        Obs::ServedRecord {
            node: 0,
            inc: 2,
            key: 3,
            expires_at_ms: 2_500,
            started: 9,
        },
    ];
    assert_eq!(fresh.observe(&other_inc, &db), vec![]);
}

fn refreshing_loader(clock: &ManualClock, remote: &MemoryRemote) -> Loader<DbValue> {
    let opts = LoaderOptions {
        refresh_interval_ms: 100,
        refresh_idle_ms: 500,
        ..LoaderOptions::new("net")
    };
    Loader::builder(opts, Arc::new(clock.clone()))
        .remote(Arc::new(remote.clone()))
        .build()
        .unwrap()
}

fn refresh_opts() -> NetRefresh {
    NetRefresh {
        interval_ms: 100,
        concurrency: 1,
        tasks_max: 4,
        idle_ms: 500,
    }
}

#[test]
fn linv4_fires_on_a_task_after_delete_an_idle_task_too_many_and_a_load_after_close() {
    rt().block_on(async {
        let clock = ManualClock::new(1_000_000);
        let remote = MemoryRemote::new(Arc::new(clock.clone()));
        let l = refreshing_loader(&clock, &remote);
        let v = DbValue { key: 1, version: 0 };
        l.once(
            key_of(1),
            CallOptions::default().refresh(),
            move |_| async move { Ok(v) },
        )
        .await
        .unwrap();
        assert_eq!(l.refresh_task_keys().len(), 1);
        let db = Db::new(4);
        let r = refresh_opts();
        let nodes = [node(&l)];
        // Read with refresh at 0 ms; a task is fine while the key is read.
        let mut o = Oracle::default();
        o.set_time(0, 1_000_000);
        o.observe(&[read(1, 1, 1_000_000, true)], &db);
        assert_eq!(o.check_refresh(&nodes, &r, 4), vec![]);
        assert_eq!(o.tally.linv4_tasks, 1);
        // Plant: a delete that leaves the task (no real delete runs).
        o.set_time(20, 1_000_020);
        let del = Obs::DeleteStarted {
            node: 0,
            inc: 1,
            key: 1,
        };
        o.observe(std::slice::from_ref(&del), &db);
        assert_eq!(o.tally.linv4_deleted_with_task, 1);
        o.set_time(100, 1_000_100);
        assert_eq!(o.check_refresh(&nodes, &r, 4), vec![], "within the window");
        o.set_time(140, 1_000_140);
        let got = o.check_refresh(&nodes, &r, 4);
        assert_eq!(
            got,
            vec![Verdict::TaskAfterDelete {
                node: 0,
                key: 1,
                since_ms: 120
            }]
        );
        assert_eq!(got[0].inv(), "LINV-4");
        // A read with refresh after the delete makes a task legitimate again.
        o.observe(&[read(2, 1, 1_000_140, true)], &db);
        assert_eq!(o.check_refresh(&nodes, &r, 4), vec![]);
        // Plant: idle by the clock (500 ms), still there an interval later.
        o.set_time(700, 1_000_700);
        assert_eq!(o.check_refresh(&nodes, &r, 4), vec![], "just went idle");
        o.set_time(
            700 + 100 + sim::loader_net::oracle::TICKER_SLACK_MS + 20,
            1_000_900,
        );
        assert!(
            matches!(
                o.check_refresh(&nodes, &r, 4).as_slice(),
                [Verdict::IdleTask {
                    node: 0,
                    key: 1,
                    ..
                }]
            ),
            "idle task not reported"
        );
        // Plant: a bound lower than the tasks there are.
        let mut strict = Oracle::default();
        let none = NetRefresh {
            tasks_max: 0,
            ..refresh_opts()
        };
        assert_eq!(
            strict.check_refresh(&nodes, &none, 4),
            vec![Verdict::TooManyTasks {
                node: 0,
                tasks: 1,
                max: 0
            }]
        );
        // A refresh load in the air against a concurrency of 0.
        clock.set(1_000_000 + 150);
        assert_eq!(l.run_due_refreshes(), 1);
        assert_eq!(l.refreshing(), 1);
        let zero = NetRefresh {
            concurrency: 0,
            ..refresh_opts()
        };
        assert!(Oracle::default().check_refresh(&nodes, &zero, 4).contains(
            &Verdict::TooManyRefreshes {
                node: 0,
                refreshing: 1,
                max: 0
            }
        ));
        // Plant: a loader call on an incarnation whose close returned.
        let mut c = Oracle::default();
        let closed = NodeSlot {
            closed: Some(Closed::default()),
            ..node(&l)
        };
        c.check_refresh(&[closed], &r, 4);
        let got = c.observe(&[start(0, Flight::Single(1))], &db);
        assert_eq!(
            got,
            vec![Verdict::LoadAfterClose {
                node: 0,
                flight: Flight::Single(1)
            }]
        );
        l.close().await;
    });
}

fn batch_call(call: u64, asked: &[u64]) -> Obs {
    Obs::BatchCall {
        node: 0,
        inc: 1,
        call,
        asked: asked.to_vec(),
    }
}

fn saw(call: u64, keys: &[u64]) -> Obs {
    Obs::BatchLoaderSaw {
        node: 0,
        inc: 1,
        call,
        keys: keys.to_vec(),
    }
}

fn done(call: u64, missed: &[u64]) -> Obs {
    Obs::BatchDone {
        node: 0,
        inc: 1,
        call,
        missed: missed.to_vec(),
        answered: true,
        loaded: missed
            .iter()
            .map(|&key| (key, DbValue { key, version: 0 }))
            .collect(),
    }
}

#[test]
fn linv7_fires_when_a_batch_loader_sees_other_keys_than_the_missed_ones() {
    let db = Db::new(16);
    let mut o = Oracle::default();
    // Call 1 leads with keys 1 and 2 (2 asked twice); call 2 joins its
    // flight with the same missed keys; call 3 hits every tier.
    let fine = [
        batch_call(1, &[2, 1, 2]),
        saw(1, &[1, 2]),
        start(0, Flight::Batch(vec![1, 2])),
        batch_call(2, &[1, 2]),
        end(0, Flight::Batch(vec![1, 2])),
        done(1, &[1, 2]),
        done(2, &[1, 2]),
        batch_call(3, &[3]),
        done(3, &[]),
    ];
    assert_eq!(o.observe(&fine, &db), vec![]);
    assert_eq!(o.tally.linv7_batches, 2);
    // Plant: a loader given a key twice.
    let twice = [batch_call(4, &[5]), saw(4, &[5, 5])];
    let got = o.observe(&twice, &db);
    assert_eq!(
        got,
        vec![Verdict::BatchKeysRepeated {
            node: 0,
            keys: vec![5, 5]
        }]
    );
    assert_eq!(got[0].inv(), "LINV-7");
    // Plant: a loader that saw fewer keys than missed.
    let fewer = [batch_call(5, &[1, 2]), saw(5, &[1]), done(5, &[1, 2])];
    assert_eq!(
        o.observe(&fewer, &db),
        vec![Verdict::BatchLoaderSawOther {
            node: 0,
            saw: vec![1],
            missed: vec![1, 2]
        }]
    );
    // Plant: key 12 answered by the flight of keys 1 and 2 (their parts
    // read alike, the zoo's batch-key-text), with key 1's value.
    let one = DbValue { key: 1, version: 0 };
    let collided = [
        batch_call(6, &[1, 2]),
        saw(6, &[1, 2]),
        start(0, Flight::Batch(vec![1, 2])),
        batch_call(7, &[12]),
        end(0, Flight::Batch(vec![1, 2])),
        done(6, &[1, 2]),
        Obs::BatchDone {
            node: 0,
            inc: 1,
            call: 7,
            missed: vec![12],
            answered: true,
            loaded: vec![(12, one)],
        },
    ];
    assert_eq!(
        o.observe(&collided, &db),
        vec![
            Verdict::BatchAnsweredUnseen {
                node: 0,
                missed: vec![12]
            },
            Verdict::BatchAnswerMismatch {
                node: 0,
                key: 12,
                value: one
            }
        ]
    );
    // A joined batch whose key set a loader saw before (its flight was
    // still writing when the call joined) is fine.
    let late_join = [batch_call(8, &[2, 1]), done(8, &[1, 2])];
    assert_eq!(o.observe(&late_join, &db), vec![]);
}

#[test]
fn linv2_fires_on_a_remote_write_no_loader_produced() {
    let mut db = Db::new(4);
    let v = db.bump(2);
    let stored = KeyCoder::new("net").stored_key(&key_of(2));
    let wrote = |bytes: Vec<u8>| Obs::RemoteWrote {
        key: stored.clone(),
        bytes: Some(bytes),
    };
    let body = cache_core::loader::Codec::Binary.encode(&v).unwrap();
    let mut o = Oracle::default();
    let fine = [
        wrote(Record::value(body, 5_000).encode()),
        wrote(Record::placeholder(5_000).encode()),
    ];
    assert_eq!(o.observe(&fine, &db), vec![]);
    // Plant: an empty value (the zoo's refresh-writes-empty), and a value
    // of another key.
    let other = cache_core::loader::Codec::Binary
        .encode(&DbValue { key: 1, version: 0 })
        .unwrap();
    let got = o.observe(
        &[
            wrote(Record::value(Vec::new(), 5_000).encode()),
            wrote(Record::value(other, 5_000).encode()),
        ],
        &db,
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got
        .iter()
        .all(|v| matches!(v, Verdict::UnproducedWrite { key, .. } if *key == stored)));
    assert_eq!(got[0].inv(), "LINV-2");
}

#[test]
fn linv6_fires_when_joined_callers_are_not_counted() {
    rt().block_on(async {
        let clock = ManualClock::new(1_000_000);
        let remote = MemoryRemote::new(Arc::new(clock.clone()));
        let l = loader(&clock, &remote);
        let db = Db::new(1);
        let mut o = Oracle::default();
        assert_eq!(o.check_counters(&[node(&l)]), vec![]);
        // Plant: a caller joined, but the loader counted no join.
        o.observe(&[Obs::Joined { node: 0, inc: 1 }], &db);
        let got = o.check_counters(&[node(&l)]);
        assert_eq!(
            got,
            vec![Verdict::JoinsMiscounted {
                node: 0,
                inc: 1,
                flight_joins: 0,
                joined: 1
            }]
        );
        assert_eq!(got[0].inv(), "LINV-6");
        l.close().await;
    });
}
