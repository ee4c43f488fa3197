//! The loader against a real `redis-server` that fails: killed mid-run and
//! restarted on the same port, paused past the client's timeout, out of
//! memory. Through every fault the loader keeps serving (local tier,
//! loader), counts every failure (L-4, L-15), never serves a value past its
//! expiry (LINV-3), and recovers once the server is back.
//!
//! Real time (SystemClock, unpaused tokio): the I/O is real. Timeouts are
//! short so each test stays within a few seconds.

#![cfg(feature = "redis")]

mod redis_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::facade::SystemClock;
use cache_core::loader::{
    CallOptions, Key, Loader, LoaderError, LoaderOptions, RedisOptions, RedisRemote, RemoteError,
    Source,
};
use redis_common::RedisServer;

/// The operation timeout every test's client uses, ms.
const OP_TIMEOUT_MS: u64 = 300;

async fn node(server: &RedisServer) -> (Loader<String>, RedisRemote) {
    let remote = RedisRemote::connect(RedisOptions::new(server.url()).op_timeout_ms(OP_TIMEOUT_MS))
        .await
        .expect("connect");
    let l = Loader::builder(LoaderOptions::new("f"), Arc::new(SystemClock))
        .remote(Arc::new(remote.clone()))
        .build()
        .expect("valid options");
    (l, remote)
}

/// A loader function answering `<key>#<call number>` and counting its calls.
fn numbered(
    calls: &Arc<AtomicUsize>,
) -> impl Fn(
    Key,
) -> futures::future::BoxFuture<'static, Result<String, cache_core::error::ResolverError>>
       + Send
       + Sync
       + 'static {
    let calls = calls.clone();
    move |k: Key| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move { Ok(format!("{}#{n}", k.parts()[0])) })
    }
}

/// Whether the key's value is in Redis (read with the test's own connection).
fn in_redis(server: &RedisServer, l: &Loader<String>, key: &str) -> bool {
    let stored = l.stored_key(&Key::from(key));
    let n: i64 = server.cmd(&["EXISTS", &stored]);
    n == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_degrades_to_local_and_loader_and_recovers_after_restart() {
    let mut server = RedisServer::start();
    let (l, _remote) = node(&server).await;
    let calls = Arc::new(AtomicUsize::new(0));

    // Before the fault: "a" for an hour, "short" for 600 ms.
    let a = l
        .once("a", CallOptions::default(), numbered(&calls))
        .await
        .unwrap();
    assert_eq!((a.value.as_str(), a.warning.as_ref()), ("a#1", None));
    let short = l
        .once(
            "short",
            CallOptions::default().ttl_ms(600),
            numbered(&calls),
        )
        .await
        .unwrap();
    assert_eq!(short.value, "short#2");

    server.kill();
    let before = l.counters();

    // The local tier still serves what it holds.
    let started = Instant::now();
    let a = l
        .once("a", CallOptions::default(), numbered(&calls))
        .await
        .unwrap();
    assert_eq!((a.value.as_str(), a.source), ("a#1", Source::Local));
    // A new key: the failed remote read degrades to the loader; the failed
    // remote write is reported as a warning and leaves no local copy (L-4).
    let b = l
        .once("b", CallOptions::default(), numbered(&calls))
        .await
        .unwrap();
    assert_eq!((b.value.as_str(), b.source), ("b#3", Source::Loader));
    assert!(
        matches!(
            b.warning,
            Some(RemoteError::Unavailable { .. } | RemoteError::Timeout { .. })
        ),
        "{:?}",
        b.warning
    );
    assert_eq!(l.local_record(&Key::from("b")), None);
    // `set` and `delete` are the write itself: they fail, typed.
    let err = l
        .set("c", "x".into(), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.cause(), "remote_unavailable", "{err}");
    assert!(matches!(
        l.delete("a").await.unwrap_err(),
        LoaderError::RemoteUnavailable(_)
    ));
    // Each failing call took at most about one operation timeout per
    // remote call it made.
    assert!(
        started.elapsed() < Duration::from_millis(8 * OP_TIMEOUT_MS),
        "{:?}",
        started.elapsed()
    );

    // Never past its expiry: "short" lapses while Redis is down; the next
    // read calls the loader rather than serving the old copy (LINV-3).
    tokio::time::sleep(Duration::from_millis(650)).await;
    let short = l
        .once("short", CallOptions::default(), numbered(&calls))
        .await
        .unwrap();
    assert_eq!(
        (short.value.as_str(), short.source),
        ("short#4", Source::Loader)
    );

    let during = l.counters();
    assert!(during.remote_read_failures >= before.remote_read_failures + 2);
    assert!(during.remote_write_failures >= before.remote_write_failures + 3);
    during.check().unwrap();

    // Back on the same port (empty): the manager reconnects and writes land.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut n = 0;
    loop {
        n += 1;
        let key = format!("after{n}");
        let got = l
            .once(key.as_str(), CallOptions::default(), numbered(&calls))
            .await
            .unwrap();
        if got.warning.is_none() {
            assert!(
                in_redis(&server, &l, &key),
                "{key} written to the restarted server"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 5 s: {:?}",
            got.warning
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    l.set("c", "x".into(), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(l.get("c").await.unwrap(), "x");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        l.counters().loads as usize,
        "L-15"
    );
    l.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_times_out_each_call_and_recovers() {
    let server = RedisServer::start();
    let (l, _remote) = node(&server).await;
    let calls = Arc::new(AtomicUsize::new(0));
    l.once("a", CallOptions::default(), numbered(&calls))
        .await
        .unwrap();

    // Paused for 2.5 s, over eight times the client's timeout: room for
    // every check below (four remote calls, each cut at the timeout).
    let pause_ms = 2_500;
    let () = server.cmd(&["CLIENT", "PAUSE", &pause_ms.to_string(), "ALL"]);
    let paused_at = Instant::now();
    let before = l.counters();

    let a = l
        .once("a", CallOptions::default(), numbered(&calls))
        .await
        .unwrap();
    assert_eq!(a.source, Source::Local, "the local tier does not wait");
    let started = Instant::now();
    let p = l
        .once("p", CallOptions::default(), numbered(&calls))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!((p.value.as_str(), p.source), ("p#2", Source::Loader));
    assert!(
        matches!(p.warning, Some(RemoteError::Timeout { .. })),
        "{:?}",
        p.warning
    );
    // One read and one write, each cut at the timeout.
    assert!(took >= Duration::from_millis(2 * OP_TIMEOUT_MS) - Duration::from_millis(20));
    assert!(took < Duration::from_millis(4 * OP_TIMEOUT_MS), "{took:?}");
    assert_eq!(
        l.local_record(&Key::from("p")),
        None,
        "L-4: no local write ahead"
    );
    let batch = l
        .load_many(
            vec![Key::from("m1"), Key::from("m2")],
            CallOptions::default(),
            |ks| async move {
                Ok(ks
                    .into_iter()
                    .map(|k| (k, "m".to_string()))
                    .collect::<BTreeMap<_, _>>())
            },
        )
        .await;
    assert_eq!(batch.values.len(), 2);
    assert!(
        matches!(batch.warning, Some(RemoteError::Timeout { .. })),
        "{:?}",
        batch.warning
    );
    let during = l.counters();
    // "p", then the batch's MGET (counted once per key it asked for).
    assert_eq!(
        during.remote_read_failures,
        before.remote_read_failures + 1 + 2
    );
    // "p"'s SET, the batch's pipeline (once per key it carried).
    assert_eq!(
        during.remote_write_failures,
        before.remote_write_failures + 1 + 2
    );
    assert!(
        paused_at.elapsed() < Duration::from_millis(pause_ms),
        "the checks ran while the server was paused ({:?})",
        paused_at.elapsed()
    );

    // After the pause: calls answer again, with no warning.
    tokio::time::sleep(
        Duration::from_millis(pause_ms).saturating_sub(paused_at.elapsed())
            + Duration::from_millis(100),
    )
    .await;
    let q = l
        .once("q", CallOptions::default(), numbered(&calls))
        .await
        .unwrap();
    assert_eq!(q.warning, None);
    assert!(in_redis(&server, &l, "q"));
    l.counters().check().unwrap();
    l.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_memory_server_rejects_writes_reads_still_serve_and_recovery_follows() {
    let server = RedisServer::start();
    let (l, _remote) = node(&server).await;
    let calls = Arc::new(AtomicUsize::new(0));
    l.once("a", CallOptions::default(), numbered(&calls))
        .await
        .unwrap();

    let () = server.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let () = server.cmd(&["CONFIG", "SET", "maxmemory", "1mb"]);
    // Fill until Redis refuses a write.
    let mut conn = server.conn();
    let filler = vec![b'x'; 64 * 1024];
    let mut oom = None;
    for i in 0..200 {
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&filler)
            .query(&mut conn);
        if let Err(e) = r {
            oom = Some(e.to_string());
            break;
        }
    }
    let oom = oom.expect("the server ran out of memory");
    assert!(oom.contains("OOM"), "{oom}");
    let before = l.counters();

    // A new key: loaded and served, its write rejected and counted.
    let b = l
        .once("b", CallOptions::default(), numbered(&calls))
        .await
        .unwrap();
    assert_eq!(b.value, "b#2");
    match &b.warning {
        Some(RemoteError::Rejected { op, detail }) => {
            assert_eq!(*op, "set");
            assert!(detail.contains("OOM"), "{detail}");
        }
        other => panic!("want a rejected write, got {other:?}"),
    }
    assert_eq!(l.local_record(&Key::from("b")), None);
    // Reads still work: "a" from Redis once its local copy is skipped.
    let a = l
        .once("a", CallOptions::default().skip_local(), numbered(&calls))
        .await
        .unwrap();
    assert_eq!((a.value.as_str(), a.source), ("a#1", Source::Remote));
    let err = l
        .set("c", "x".into(), CallOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoaderError::RemoteUnavailable(RemoteError::Rejected { .. })
        ),
        "{err:?}"
    );
    let batch = l
        .load_many(
            vec![Key::from("m1")],
            CallOptions::default(),
            |ks| async move {
                Ok(ks
                    .into_iter()
                    .map(|k| (k, "m".to_string()))
                    .collect::<BTreeMap<_, _>>())
            },
        )
        .await;
    assert!(
        matches!(
            batch.warning,
            Some(RemoteError::Rejected {
                op: "multi_set",
                ..
            })
        ),
        "{:?}",
        batch.warning
    );
    let during = l.counters();
    assert_eq!(
        during.remote_write_failures,
        before.remote_write_failures + 3
    );
    assert_eq!(during.remote_read_failures, before.remote_read_failures);

    // Memory back: writes land again.
    let () = server.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    let d = l
        .once("d", CallOptions::default(), numbered(&calls))
        .await
        .unwrap();
    assert_eq!(d.warning, None);
    assert!(in_redis(&server, &l, "d"));
    l.set("c", "x".into(), CallOptions::default())
        .await
        .unwrap();
    l.counters().check().unwrap();
    l.close().await;
}
