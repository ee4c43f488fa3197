//! Each `loader-net` oracle fires on a planted violation and stays quiet
//! on the same situation done right (typed verdicts, never display text).

use std::sync::Arc;

use cache_core::facade::ManualClock;
use cache_core::loader::record::{Payload, Record};
use cache_core::loader::{CallOptions, Loader, LoaderOptions, MemoryBus, MemoryRemote};
use sim::loader_net::oracle::{Oracle, Verdict};
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
