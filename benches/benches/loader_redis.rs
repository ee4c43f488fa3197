//! The loader on a real Redis against the bare client (SPEC §7): what the
//! loader adds on top of the commands it sends.
//!
//! - `remote_hit`: `once` with the local tier skipped (`skip_local`), so
//!   every call is a flight that reads Redis (`GET`) and decodes the
//!   record; the baseline is a bare `GET` of the same key on the same
//!   connection.
//! - `batch100`: `load_many` of 100 keys, local tier skipped, all found in
//!   Redis (one `MGET`); the baseline is a bare `MGET` of the same 100 keys.
//! - `loopback_ping`: one `PING`, the round-trip floor under both.
//!
//! Criterion times each; the report's ratios come from paired rounds
//! (`benches::paired`: ours and the baseline back to back, alternating), as
//! the other gated ratios do, since this machine's speed drifts between
//! criterion benches.
//!
//! The bench starts its own `redis-server` (free loopback port, no
//! persistence, killed at the end). Without `redis-server` on PATH it prints
//! why and measures nothing (the report's rows then read "missing").

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::paired::paired;
use benches::{criterion, quick, runtime};
use cache_core::facade::SystemClock;
use cache_core::loader::{
    CallOptions, Key, Loader, LoaderOptions, RedisOptions, RedisRemote, Source,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: usize = 100;

/// A `redis-server` owned by the bench, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "redis-server not found: install it (Debian: apt-get install redis-server)"
                        .to_string()
                }
                _ => format!("could not start redis-server: {e}"),
            })?;
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.answers_ping() {
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {port} did not answer PING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loader_redis(c: &mut Criterion) {
    let server = match Server::start() {
        Ok(s) => s,
        Err(why) => {
            eprintln!("loader_redis: skipped: {why}");
            return;
        }
    };
    let rt = runtime();
    let url = format!("redis://127.0.0.1:{}/", server.port);
    let remote = rt
        .block_on(RedisRemote::connect(RedisOptions::new(url)))
        .expect("connect to the bench's redis-server");
    let loader: Loader<String> = rt.block_on(async {
        Loader::builder(LoaderOptions::new("bench"), Arc::new(SystemClock))
            .remote(Arc::new(remote.clone()))
            .build()
            .expect("valid options")
    });
    let keys: Vec<Key> = (0..BATCH).map(|i| Key::from(format!("k{i}"))).collect();
    let stored: Vec<String> = keys.iter().map(|k| loader.stored_key(k)).collect();
    // Fill Redis through the loader (an hour's TTL: nothing expires mid-run).
    rt.block_on(async {
        for k in &keys {
            loader
                .set(
                    k.clone(),
                    format!("value of {k}"),
                    CallOptions::default().ttl_ms(3_600_000),
                )
                .await
                .expect("fill");
        }
    });
    let skip = CallOptions::default().skip_local();
    let conn = remote.connection();

    // Each side as a loop of `n` iterations returning its time, so criterion
    // and the paired rounds time the very same code.
    let once_hits = |n: u64| {
        rt.block_on(async {
            let start = Instant::now();
            for i in 0..n {
                let k = keys[i as usize % BATCH].clone();
                let got = loader
                    .once(k, skip, |_| async { unreachable!("every key is in Redis") })
                    .await
                    .expect("a remote hit");
                debug_assert_eq!(got.source, Source::Remote);
                black_box(got);
            }
            start.elapsed()
        })
    };
    let bare_gets = |n: u64| {
        let mut conn = conn.clone();
        rt.block_on(async {
            let start = Instant::now();
            for i in 0..n {
                let got: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&stored[i as usize % BATCH])
                    .query_async(&mut conn)
                    .await
                    .expect("GET");
                black_box(got.expect("present"));
            }
            start.elapsed()
        })
    };
    let pings = |n: u64| {
        let mut conn = conn.clone();
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                let pong: String = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .expect("PING");
                black_box(pong);
            }
            start.elapsed()
        })
    };
    let batches = |n: u64| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                let got = loader
                    .load_many(keys.clone(), skip, |_| async {
                        Ok(BTreeMap::<Key, String>::new())
                    })
                    .await;
                assert_eq!(got.values.len(), BATCH, "every key from Redis");
                black_box(got);
            }
            start.elapsed()
        })
    };
    let mgets = |n: u64| {
        let mut conn = conn.clone();
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                let (got,): (Vec<Option<Vec<u8>>>,) = redis::pipe()
                    .cmd("MGET")
                    .arg(&stored)
                    .query_async(&mut conn)
                    .await
                    .expect("MGET");
                assert_eq!(got.len(), BATCH);
                black_box(got);
            }
            start.elapsed()
        })
    };

    let mut g = c.benchmark_group("loader_redis_remote_hit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("once_skip_local", |b| b.iter_custom(once_hits));
    g.bench_function("bare_get", |b| b.iter_custom(bare_gets));
    g.bench_function("loopback_ping", |b| b.iter_custom(pings));
    g.finish();
    let mut g = c.benchmark_group("loader_redis_batch100");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("load_many_skip_local", |b| b.iter_custom(batches));
    g.bench_function("bare_mget", |b| b.iter_custom(mgets));
    g.finish();

    // The ratios the report reads: alternating rounds, so both sides see the
    // same (shared, drifting) machine and the same loopback.
    let rounds = if quick() { 21 } else { 51 };
    let round = Duration::from_millis(20);
    paired(rounds, round, once_hits, bare_gets).report("loader_redis_remote_hit");
    paired(rounds, round, batches, mgets).report("loader_redis_batch100");
    paired(rounds, round, bare_gets, pings).report("loader_redis_get_vs_ping");

    rt.block_on(loader.close());
    drop(server);
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = loader_redis
}

criterion_main!(benches);
