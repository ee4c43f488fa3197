//! A small tour of the cache: several sessions share results, one call is
//! deduplicated, a nested result is released with its parent, a TTL'd result
//! is persisted to SQLite, and when every session has closed nothing is left.
//!
//! Run it with `cargo run -p cache-core --example quickstart`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cache_core::facade::{Cache, CallKey, Inline, ManualClock};
use cache_core::id::{CallId, Literal};
use cache_core::machine::Resolved;
use cache_core::ttl::SqliteTtlStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cache-core-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Arc::new(SqliteTtlStore::open(dir.join("ttl.db"))?);
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    // A manual clock and store calls made in line keep this tour's output
    // the same on every run; a service keeps the defaults (the system
    // clock, store calls on tokio's blocking pool), as the crate docs'
    // service guide shows.
    let cache: Cache<String> = Cache::builder()
        .ttl_store(store)
        .clock(clock.clone())
        .blocking_executor(Arc::new(Inline))
        .build();
    let runs = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicUsize::new(0));

    // Three sessions ask for the same build at once: one resolver run.
    let sessions: Vec<_> = (0..3).map(|_| cache.open_session()).collect();
    let build = CallId::new("build").with_arg("ref", Literal::String("main".into()));
    let mut calls = Vec::new();
    for session in &sessions {
        let (runs, released) = (runs.clone(), released.clone());
        let key = CallKey::new(build.clone()).concurrency_key("client");
        calls.push(session.call(key, move |_ctx| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(
                Resolved::value("artifact".to_string()).with_release(move || {
                    released.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }),
            )
        }));
    }
    for result in futures::future::join_all(calls).await {
        let result = result?;
        println!("build -> {:?} (hit: {})", result.value(), result.hit());
    }
    println!("resolver runs: {}", runs.load(Ordering::SeqCst));

    // A TTL'd call, safe to persist: its storage key is written to SQLite.
    let tagged = CallId::new("resolve-tag").with_arg("tag", Literal::String("v1".into()));
    let key = CallKey::new(tagged).ttl_ms(60_000);
    let r = sessions[0]
        .call(key.clone(), |_| async {
            Ok(Resolved::value("sha256:abc".to_string()).safe_to_persist(true))
        })
        .await?;
    println!("tag -> {:?}", r.value());
    let r = sessions[1]
        .call(key, |_| async { Ok(Resolved::value("recomputed".into())) })
        .await?;
    println!(
        "tag from another session -> {:?} (hit: {})",
        r.value(),
        r.hit()
    );

    println!("\n{}", cache.metrics_text());
    for session in &sessions {
        let summary = session.close()?;
        println!(
            "closed {}: entries {} -> {}",
            summary.session, summary.entries_before, summary.entries_after
        );
    }
    println!("release hooks run: {}", released.load(Ordering::SeqCst));
    println!("{}", cache.leak_report());
    cache.check_invariants()?;
    assert_eq!(
        cache.entries(),
        0,
        "INV-1: nothing is left once every session closed"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
