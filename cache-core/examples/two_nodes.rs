//! Two loader nodes sharing one Redis (SPEC §7, L-11, L-12): each node has
//! its own local tier and its own connections; a write on one reaches the
//! other as a pub/sub event and drops its local copy, so both end up
//! agreeing with Redis.
//!
//! Needs a running Redis. Start a throwaway one and point the example at it:
//!
//! ```text
//! redis-server --port 6390 --save '' --appendonly no &
//! cargo run -p cache-core --example two_nodes -- 6390      # or REDIS_PORT=6390
//! ```
//!
//! The port comes from the first argument, else `REDIS_PORT`, else 6379.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::facade::SystemClock;
use cache_core::loader::{
    CallOptions, Key, Loader, LoaderOptions, RedisBus, RedisOptions, RedisRemote, Source,
};

const CACHE: &str = "two_nodes_demo";

fn port() -> Result<u16, String> {
    let (text, from) = match std::env::args().nth(1) {
        Some(a) => (a, "the first argument"),
        None => match std::env::var("REDIS_PORT") {
            Ok(v) => (v, "REDIS_PORT"),
            Err(_) => return Ok(6379),
        },
    };
    text.parse()
        .map_err(|_| format!("{from} must be a TCP port (1-65535), got {text:?}"))
}

async fn node(name: &str, url: &str) -> Result<(Loader<String>, RedisBus), String> {
    let opts = RedisOptions::new(url);
    let remote = RedisRemote::connect(opts.clone())
        .await
        .map_err(|e| e.to_string())?;
    let bus = RedisBus::connect(CACHE, opts)
        .await
        .map_err(|e| e.to_string())?;
    let mut o = LoaderOptions::new(CACHE);
    o.node = name.into();
    let loader = Loader::builder(o, Arc::new(SystemClock))
        .remote(Arc::new(remote))
        .bus(Arc::new(bus.clone()))
        .build()
        .map_err(|e| e.to_string())?;
    // Pub/sub only reaches subscribers already there: wait before serving.
    if !bus.ready(Duration::from_secs(2)).await {
        return Err(format!(
            "{name}: not subscribed to {} within 2 s",
            bus.channel()
        ));
    }
    Ok((loader, bus))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("two_nodes: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let port = port()?;
    let url = format!("redis://127.0.0.1:{port}/");
    let (a, bus_a) = node("node-a", &url).await.map_err(|e| {
        format!(
            "cannot use Redis at {url}: {e}\n  start one with: redis-server --port {port} --save '' --appendonly no"
        )
    })?;
    let (b, _bus_b) = node("node-b", &url).await?;
    println!(
        "two nodes on {url}, cache {CACHE:?}, channel {:?}",
        bus_a.channel()
    );

    // Both nodes read the same keys, each in its own task.
    let keys: Vec<Key> = (0..5).map(|i| Key::new(["item", &i.to_string()])).collect();
    let mut tasks = Vec::new();
    for l in [a.clone(), b.clone()] {
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            for k in keys {
                l.once(k, CallOptions::default(), |k| async move {
                    Ok(format!("price of {} = 10", k.parts()[1]))
                })
                .await
                .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    // Read again on b so it holds every key locally.
    for k in &keys {
        b.once(k.clone(), CallOptions::default(), |_| async {
            Ok("unused: Redis has it".to_string())
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    let held = keys.iter().filter(|k| b.local_record(k).is_some()).count();
    println!("node-b holds {held} of {} keys locally", keys.len());

    // node-a changes two prices and deletes one key.
    a.set(
        keys[0].clone(),
        "price of 0 = 12".into(),
        CallOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    a.set(
        keys[1].clone(),
        "price of 1 = 7".into(),
        CallOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    a.delete(keys[2].clone()).await.map_err(|e| e.to_string())?;
    println!("node-a set item 0 and 1, deleted item 2");

    // The events reach node-b, which drops its copies (L-11).
    let deadline = Instant::now() + Duration::from_secs(2);
    while keys[..3].iter().any(|k| b.local_record(k).is_some()) {
        if Instant::now() > deadline {
            return Err("node-b still holds a changed key after 2 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("node-b dropped its copies of items 0, 1 and 2");

    // Both agree with Redis (L-12).
    for k in &keys {
        let va = a.get(k.clone()).await.ok();
        let got = b
            .once(k.clone(), CallOptions::default(), |k| async move {
                Ok(format!("price of {} = 10 (reloaded)", k.parts()[1]))
            })
            .await
            .map_err(|e| e.to_string())?;
        let where_from = match got.source {
            Source::Local => "its local tier",
            Source::Remote => "Redis",
            Source::Loader => "its loader",
        };
        println!(
            "{k}: node-a {:?}, node-b {:?} (from {where_from})",
            va.unwrap_or_else(|| "-".into()),
            got.value
        );
        if let Ok(va) = a.get(k.clone()).await {
            if va != got.value {
                return Err(format!(
                    "{k}: the nodes disagree: {va:?} vs {:?}",
                    got.value
                ));
            }
        }
    }
    let (ca, cb) = (a.counters(), b.counters());
    println!(
        "events: node-a emitted {}, node-b emitted {}; node-a applied {}, node-b applied {}",
        ca.events_emitted, cb.events_emitted, ca.events_delivered, cb.events_delivered
    );
    println!();
    println!("look at it in Redis:");
    println!("  redis-cli -p {port} INFO stats");
    println!("  redis-cli -p {port} --scan --pattern '{CACHE}:*'");
    println!("  redis-cli -p {port} PUBSUB NUMSUB {}", bus_a.channel());
    a.close().await;
    b.close().await;
    Ok(())
}
