//! T-6 and the determinism rules: the core reads no OS clock or entropy,
//! spawns no threads, and keeps no hash-ordered state; time only moves when
//! the injected clock says so.

use std::path::Path;
use std::sync::Arc;

use cache_core::facade::{Cache, CallKey, Inline, ManualClock};
use cache_core::id::CallId;
use cache_core::machine::Resolved;
use cache_core::ttl::MemoryTtlStore;

/// Tokens that would make the core read the OS clock or entropy, run
/// threads, or iterate in a hasher-seeded order.
const FORBIDDEN: &[&str] = &[
    "SystemTime",
    "Instant::now",
    "thread_rng",
    "OsRng",
    "from_entropy",
    "rand::random",
    "getrandom",
    "std::thread::spawn",
    "spawn_blocking",
    "HashMap",
    "HashSet",
];

/// The only places the core may touch OS time or threads: the service's
/// defaults, which a simulation never uses (it injects a `ManualClock` and
/// the `Inline` executor; `sim_builds_its_caches_with_injected_time_and_inline_store_calls`
/// checks that it does). Each must still be found, so a stale entry fails.
const SERVICE_DEFAULTS: &[(&str, &str)] = &[
    ("facade/clock.rs", "SystemTime"),
    ("facade/executor.rs", "spawn_blocking"),
];

/// Reads of tokio's clock where only a runtime with paused time runs: the
/// facade driver measures durations on it (a slow store's delay, T-2),
/// which its own sleeps alone move.
const PAUSED_CLOCK: &[(&str, &str)] = &[("driver/facade.rs", "Instant::now")];

fn scan(dir: &Path, hits: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, hits);
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Unit tests at the bottom of a file may use threads (to race two
        // SQLite connections); only the code above them is the core.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for token in FORBIDDEN {
                // A hash map is deterministic with a fixed hasher (DESIGN's
                // checklist: "ordered maps or fixed hashers"): allowed only
                // on a line that names a `BuildHasherDefault`, never with
                // std's randomly seeded default.
                let fixed_hasher = line.contains("BuildHasherDefault<");
                if fixed_hasher && (*token == "HashMap" || *token == "HashSet") {
                    continue;
                }
                if line.contains(token) {
                    hits.push(format!("{}:{}: {token}", path.display(), n + 1));
                }
            }
        }
    }
}

#[test]
fn t6_core_source_reads_no_os_time_entropy_or_threads() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut hits = Vec::new();
    scan(&src, &mut hits);
    for (file, token) in SERVICE_DEFAULTS.iter().chain(PAUSED_CLOCK) {
        let before = hits.len();
        hits.retain(|h| {
            !(h.contains(&format!("src/{file}:")) && h.ends_with(&format!(": {token}")))
        });
        assert!(
            hits.len() < before,
            "{file} no longer uses {token}: drop it from SERVICE_DEFAULTS or PAUSED_CLOCK"
        );
    }
    assert!(
        hits.is_empty(),
        "non-deterministic constructs in cache-core/src:\n{}",
        hits.join("\n")
    );
}

/// The simulation reaches the service defaults only if it builds a cache
/// without choosing its clock and executor: every cache it builds names
/// both, and it never names the system clock or the blocking pool.
#[test]
fn sim_builds_its_caches_with_injected_time_and_inline_store_calls() {
    let engine = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/src/engine.rs");
    let text = std::fs::read_to_string(&engine).unwrap();
    let builds: Vec<&str> = text.split("Cache::builder()").skip(1).collect();
    assert!(
        !builds.is_empty(),
        "no Cache::builder() in {}",
        engine.display()
    );
    for (n, rest) in builds.iter().enumerate() {
        let chain = &rest[..rest
            .find(".build()")
            .expect("a builder chain ends in build()")];
        for needed in [
            ".clock(",
            ".blocking_executor(",
            "Inline",
            ".instance_id_for_replay(",
        ] {
            assert!(
                chain.contains(needed),
                "sim cache {n} is built without {needed}: {chain}"
            );
        }
    }
    let sim = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/src");
    let mut named = Vec::new();
    for token in ["SystemClock", "TokioBlocking"] {
        let mut hits = Vec::new();
        grep(&sim, token, &mut hits);
        // The real engine (`cache-sim serve`) runs on real time and the
        // blocking pool by design; no simulation reaches it.
        hits.retain(|h| !h.ends_with("serve.rs"));
        named.extend(hits);
    }
    assert!(
        named.is_empty(),
        "the sim names a service default: {named:?}"
    );
}

fn grep(dir: &Path, token: &str, hits: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            grep(&path, token, hits);
        } else if std::fs::read_to_string(&path).unwrap().contains(token) {
            hits.push(path.display().to_string());
        }
    }
}

#[test]
fn t6_scanner_flags_a_planted_hazard() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.rs"),
        "fn f() { let _ = std::time::SystemTime::now(); }\n",
    )
    .unwrap();
    let mut hits = Vec::new();
    scan(dir.path(), &mut hits);
    assert_eq!(hits.len(), 1, "{hits:?}");
}

#[test]
fn t6_scanner_allows_only_fixed_hasher_maps() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("maps.rs"),
        "type A = std::collections::HashMap<String, u8>;\n\
         type B = std::collections::HashMap<String, u8, BuildHasherDefault<Fixed>>;\n\
         type C = std::collections::HashSet<u8>;\n",
    )
    .unwrap();
    let mut hits = Vec::new();
    scan(dir.path(), &mut hits);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| !h.contains(":2:")), "{hits:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn t6_ttl_expiry_follows_the_injected_clock_only() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cache: Cache<u32> = Cache::builder()
        .blocking_executor(Arc::new(Inline))
        .ttl_store(Arc::new(MemoryTtlStore::new()))
        .clock(clock.clone())
        .build();
    let session = cache.open_session();
    let key = CallKey::new(CallId::new("tagged")).ttl_ms(1_000);
    let first = session
        .call(key.clone(), |_| async {
            Ok(Resolved::value(1).safe_to_persist(true))
        })
        .await
        .unwrap();
    assert!(!first.hit());

    // Virtual tokio time passes, the injected clock does not: still a hit.
    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    let again = session
        .call(key.clone(), |_| async { Ok(Resolved::value(2)) })
        .await
        .unwrap();
    assert!(
        again.hit(),
        "the cache must not read any clock but the injected one"
    );

    // The injected clock passes the TTL: a fresh key, the resolver runs (T-7).
    clock.advance(1_001);
    let expired = session
        .call(key, |_| async { Ok(Resolved::value(3)) })
        .await
        .unwrap();
    assert!(!expired.hit());
    assert_eq!(expired.value(), Some(&3));

    session.close().unwrap();
    assert_eq!(cache.entries(), 0);
    assert_eq!(cache.live_entries(), 0);
    cache.check_invariants().unwrap();
}
