//! The loader against a real `redis-server` (started by each test on its
//! own loopback port): the backend contract suites of `loader::contract`
//! run on `RedisRemote` and `RedisBus` exactly as on the in-memory ones;
//! the key layout an operator scans for (L-5); a dropped subscription
//! (resync, L-12); two nodes converging through one Redis (L-11, L-12).
//!
//! Real time throughout (SystemClock, unpaused tokio): Redis expires keys on
//! its own clock, so the TTL checks sleep for real; each test takes a few
//! seconds at most.

#![cfg(feature = "redis")]

mod redis_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::facade::{Clock, SystemClock};
use cache_core::loader::contract::{run_bus, run_remote};
use cache_core::loader::{
    CallOptions, Event, EventBus, EventKind, Key, Loader, LoaderOptions, Record, RedisBus,
    RedisOptions, RedisRemote, Remote, Source,
};
use futures::future::BoxFuture;
use redis_common::RedisServer;

fn real_sleep(ms: u64) -> BoxFuture<'static, ()> {
    Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
}

/// Polls `cond` every 10 ms until it holds or `within` passes; whether it held.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_remote_passes_the_remote_contract() {
    let server = RedisServer::start();
    let remote = RedisRemote::connect(RedisOptions::new(server.url()))
        .await
        .expect("connect");
    let mut make = {
        let remote = remote.clone();
        let mut conn = server.conn();
        move || -> Box<dyn Remote> {
            // Each check starts on an empty database.
            let () = redis::cmd("FLUSHDB").query(&mut conn).expect("FLUSHDB");
            Box::new(remote.clone())
        }
    };
    run_remote(&mut make, &real_sleep).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bus_passes_the_bus_contract() {
    let server = RedisServer::start();
    let bus = RedisBus::connect("c", RedisOptions::new(server.url()))
        .await
        .expect("connect");
    run_bus(&bus, &real_sleep).await.unwrap();
    let s = bus.stats();
    assert_eq!((s.published, s.publish_failures), (4, 0));
    assert_eq!(s.received, 8, "4 events, 2 subscribers");
    assert_eq!(s.gaps, 0, "no subscription dropped");
}

/// A bad option or an unreachable server is a typed error naming it, never
/// a hang or a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_redis_options_and_unreachable_servers_are_typed_errors() {
    let err = RedisRemote::connect(RedisOptions::new("http://nope"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("url"), "{err}");
    let err = RedisRemote::connect(RedisOptions::new("redis://127.0.0.1:1/").op_timeout_ms(0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("op_timeout_ms"), "{err}");
    // A port nobody listens on (taken from a server that was stopped).
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let started = Instant::now();
    let err = RedisRemote::connect(RedisOptions::new(url))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            cache_core::loader::RemoteError::Unavailable { .. }
                | cache_core::loader::RemoteError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

fn loader(name: &str, node: &str, remote: &RedisRemote, bus: Option<&RedisBus>) -> Loader<String> {
    let mut o = LoaderOptions::new(name);
    o.node = node.into();
    let mut b = Loader::builder(o, Arc::new(SystemClock)).remote(Arc::new(remote.clone()));
    if let Some(bus) = bus {
        b = b.bus(Arc::new(bus.clone()));
    }
    b.build().expect("valid options")
}

/// L-5 as an operator sees it: every key of a cache (values and refresh
/// locks) starts with `<name>:`, a prefix scan finds exactly them, and keys
/// that differ only in where a `:` sits stay apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l5_stored_keys_start_with_the_cache_name_and_stay_apart() {
    let server = RedisServer::start();
    let remote = RedisRemote::connect(RedisOptions::new(server.url()))
        .await
        .unwrap();
    let users = loader("users", "n1", &remote, None);
    let other = loader("users:x", "n1", &remote, None);
    for (k, v) in [(["user", "1:2"], "A"), (["user:1", "2"], "B")] {
        users
            .set(Key::new(k), v.to_string(), CallOptions::default())
            .await
            .unwrap();
    }
    other
        .set("k", "C".to_string(), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(
        users.get(Key::new(["user", "1:2"])).await.unwrap(),
        "A",
        "distinct keys keep distinct values"
    );
    assert_eq!(users.get(Key::new(["user:1", "2"])).await.unwrap(), "B");
    let scanned = server.scan("users:*");
    assert!(
        scanned.contains(&"users:4:user3:1:2#5".to_string()),
        "{scanned:?}"
    );
    assert!(
        scanned.contains(&"users:6:user:11:2#5".to_string()),
        "{scanned:?}"
    );
    // A prefix pattern also matches caches whose names extend it
    // (`users:x`): their keys end in their own name length.
    assert_eq!(server.scan("users:*#5").len(), 2);
    assert_eq!(server.scan("users:x:*").len(), 1);
    // The refresh lock lives under the same prefix (L-10: taken for one
    // refresh interval when the refresh runs, so look for it while it lives).
    let mut o = LoaderOptions::new("users");
    o.refresh_interval_ms = 300;
    let refreshing: Loader<String> = Loader::builder(o, Arc::new(SystemClock))
        .remote(Arc::new(remote.clone()))
        .build()
        .unwrap();
    let refreshed = refreshing
        .once("r", CallOptions::default().refresh(), |_| async {
            Ok("R".to_string())
        })
        .await
        .unwrap();
    assert_eq!(refreshed.value, "R");
    let lock = format!("{}:lock", refreshing.stored_key(&Key::from("r")));
    assert_eq!(lock, "users:1:r#5:lock");
    assert!(
        eventually(Duration::from_secs(3), || server
            .scan("users:*")
            .contains(&lock))
        .await,
        "the refresh lock {lock} under users:*"
    );
    refreshing.close().await;
    users.close().await;
    other.close().await;
}

/// A dropped subscription comes back and says events may have been missed
/// (how many is unknown); the node drops its local copies (L-12) and
/// reads the remote again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l12_a_dropped_subscription_resubscribes_and_drops_local_copies() {
    let server = RedisServer::start();
    let opts = RedisOptions::new(server.url());
    let bus = RedisBus::connect("c", opts.clone()).await.unwrap();

    // At the bus level: the marker arrives, then events flow again.
    let mut rx = bus.subscribe("probe");
    assert!(bus.ready(Duration::from_secs(2)).await);
    let killed: i64 = server.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed >= 1, "the subscriber's connection was killed");
    assert!(eventually(Duration::from_secs(3), || bus.stats().gaps >= 1).await);
    let marker = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("a resync marker")
        .expect("subscription open");
    assert!(marker.is_resync(), "{marker:?}");
    let event = Event {
        source: "other".into(),
        kind: EventKind::Set,
        keys: vec!["c:1:k#1".into()],
    };
    bus.publish(event.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("events flow after the resubscribe");
    assert_eq!(got, Some(event));
    drop(rx);

    // Through a loader: its local copies go, its next read is the remote's.
    let remote = RedisRemote::connect(opts.clone()).await.unwrap();
    let node_bus = RedisBus::connect("c", opts).await.unwrap();
    let b = loader("c", "b", &remote, Some(&node_bus));
    assert!(node_bus.ready(Duration::from_secs(2)).await);
    let first = b
        .once("k", CallOptions::default(), |_| async {
            Ok("v1".to_string())
        })
        .await
        .unwrap();
    assert_eq!(first.value, "v1");
    assert!(b.local_record(&Key::from("k")).is_some());
    // A write b will never hear of: straight into Redis, no event.
    let stored = b.stored_key(&Key::from("k"));
    let rec = Record::value(
        cache_core::loader::Codec::default()
            .encode(&"v2".to_string())
            .unwrap(),
        SystemClock.now_ms() + 60_000,
    );
    remote.set(&stored, rec.encode(), 60_000).await.unwrap();
    let gaps = node_bus.stats().gaps;
    let _: i64 = server.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(eventually(Duration::from_secs(3), || node_bus.stats().gaps > gaps).await);
    assert!(
        eventually(Duration::from_secs(1), || b
            .local_record(&Key::from("k"))
            .is_none())
        .await,
        "the resync dropped b's local copy"
    );
    let again = b
        .once("k", CallOptions::default(), |_| async {
            Ok("loader must not run".to_string())
        })
        .await
        .unwrap();
    assert_eq!(again.value, "v2", "read from the remote after the resync");
    let c = b.counters();
    assert_eq!(c.events_delivered, 0, "a resync is not an event (L-11)");
    b.close().await;
}

/// Two loaders (two nodes, each with its own connections) share one Redis
/// and its pub/sub: writes on one invalidate the other's local copy, and
/// once the events are delivered both agree with Redis (L-11, L-12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l12_two_nodes_on_one_redis_converge() {
    let server = RedisServer::start();
    let opts = RedisOptions::new(server.url());
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let remote = RedisRemote::connect(opts.clone()).await.unwrap();
        let bus = RedisBus::connect("shop", opts.clone()).await.unwrap();
        let l = loader("shop", name, &remote, Some(&bus));
        assert!(bus.ready(Duration::from_secs(2)).await, "{name} subscribed");
        nodes.push((l, bus));
    }
    let (n1, n2) = (nodes[0].0.clone(), nodes[1].0.clone());
    let loads = Arc::new(AtomicUsize::new(0));
    let keys: Vec<Key> = (0..20).map(|i| Key::from(format!("item{i}"))).collect();

    // Both nodes read every key, in their own tasks: one loader call per
    // key in all (the second node finds the first's value in Redis, or
    // loads it itself if it got there first — never more than once per node).
    let reader = |l: Loader<String>, keys: Vec<Key>, loads: Arc<AtomicUsize>| {
        tokio::spawn(async move {
            for k in keys {
                let loads = loads.clone();
                l.once(k, CallOptions::default(), move |k| {
                    loads.fetch_add(1, Ordering::SeqCst);
                    async move { Ok(format!("{}@0", k.parts()[0])) }
                })
                .await
                .unwrap();
            }
        })
    };
    let t1 = reader(n1.clone(), keys.clone(), loads.clone());
    let t2 = reader(n2.clone(), keys.clone(), loads.clone());
    t1.await.unwrap();
    t2.await.unwrap();
    let n = loads.load(Ordering::SeqCst);
    assert!((20..=40).contains(&n), "loader calls: {n}");
    // Each node's load invalidated the other's copy (L-11); once the events
    // are in, n2 reads every key again and keeps it locally.
    assert!(
        eventually(Duration::from_secs(3), || {
            n2.counters().events_delivered == n1.counters().events_emitted
        })
        .await
    );
    for k in &keys {
        let got = n2
            .once(k.clone(), CallOptions::default(), |_| async {
                Ok("loader must not run: Redis has it".to_string())
            })
            .await
            .unwrap();
        assert_ne!(got.source, Source::Loader, "{k}");
        assert!(n2.local_record(k).is_some(), "n2 holds {k} locally");
    }

    // n1 rewrites half the keys (set) and deletes a few; n2 hears of it.
    let writer = {
        let n1 = n1.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            for (i, k) in keys.iter().enumerate() {
                if i % 2 == 0 {
                    n1.set(
                        k.clone(),
                        format!("{}@1", k.parts()[0]),
                        CallOptions::default(),
                    )
                    .await
                    .unwrap();
                } else if i % 5 == 0 {
                    n1.delete(k.clone()).await.unwrap();
                }
            }
        })
    };
    writer.await.unwrap();
    let changed: Vec<Key> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0 || i % 5 == 0)
        .map(|(_, k)| k.clone())
        .collect();
    assert!(
        eventually(Duration::from_secs(3), || changed
            .iter()
            .all(|k| n2.local_record(k).is_none()))
        .await,
        "n2 dropped every copy n1 changed"
    );

    // Convergence: every local copy on either node is absent or equal to
    // what Redis holds.
    let codec = cache_core::loader::Codec::default();
    let mut conn = server.conn();
    for k in &keys {
        let stored = n1.stored_key(k);
        let in_redis: Option<Vec<u8>> = redis::cmd("GET").arg(&stored).query(&mut conn).unwrap();
        let remote_value = in_redis.map(|b| {
            let rec = Record::decode(&b).unwrap();
            match rec.payload {
                cache_core::loader::record::Payload::Value(v) => {
                    codec.decode::<String>(&v).unwrap()
                }
                other => panic!("placeholder for {k}: {other:?}"),
            }
        });
        for (name, l) in [("n1", &n1), ("n2", &n2)] {
            if let Some(local) = l.local_record(k) {
                let cache_core::loader::record::Payload::Value(v) = local.payload else {
                    panic!("{name} holds a placeholder for {k}");
                };
                let local_value = codec.decode::<String>(&v).unwrap();
                assert_eq!(
                    Some(local_value),
                    remote_value,
                    "{name}'s copy of {k} differs from Redis"
                );
            }
        }
        // And reading through n2 gives what Redis has (or reloads a deleted key).
        let read = n2
            .once(k.clone(), CallOptions::default(), |k| async move {
                Ok(format!("{}@2", k.parts()[0]))
            })
            .await
            .unwrap()
            .value;
        match remote_value {
            Some(v) => assert_eq!(read, v),
            None => assert!(read.ends_with("@2"), "{k} was deleted: reloaded"),
        }
    }

    // L-11: every event n1 emitted reached n2, and each node ignored its own.
    let (c1, c2) = (n1.counters(), n2.counters());
    assert!(c1.events_emitted >= 10 + 2);
    assert_eq!(c1.events_dropped + c2.events_dropped, 0);
    assert!(
        eventually(Duration::from_secs(2), || {
            let (c1, c2) = (n1.counters(), n2.counters());
            c2.events_delivered == c1.events_emitted && c1.events_delivered == c2.events_emitted
        })
        .await,
        "emitted = delivered across the two nodes: {:?} / {:?}",
        n1.counters(),
        n2.counters()
    );
    c1.check().unwrap();
    c2.check().unwrap();
    n1.close().await;
    n2.close().await;
    assert_eq!(n1.background_tasks() + n2.background_tasks(), 0);
}
