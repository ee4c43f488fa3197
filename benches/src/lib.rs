//! Shared helpers for the criterion benchmarks in `benches/benches/`.
//!
//! Every bench measures this project and a baseline in the same run, so the
//! report (`ci/bench-report`) can print ratios rather than absolute numbers
//! from different machines. This crate holds what the bench targets share:
//! the hot key set (1024 call IDs whose call keys are 71-byte digests,
//! `sha256:` + 64 hex digits), the locked-map floor, prefilled caches, the
//! timed loops behind the gated ratios ([`workloads`]), the paired runner
//! that measures ours and a baseline in alternating rounds ([`paired`]),
//! the quick-mode criterion configuration, and the little JSON summary
//! writer for figures criterion does not measure.
//!
//! ```
//! use benches::{hot_ids, LockedMap, value};
//!
//! let ids = hot_ids(4);
//! assert_eq!(ids[0].call_key().len(), 71);
//!
//! // The floor: a mutex-guarded hash map whose entries carry a refcount.
//! let floor = LockedMap::new(ids.iter().map(|id| id.call_key()), value());
//! let key = ids[1].call_key();
//! assert!(floor.acquire(&key).is_some()); // refcount +1, value cloned
//! floor.release(&key); // refcount -1
//! assert_eq!(floor.refcount(&key), Some(0));
//! ```

pub mod paired;
pub mod workloads;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::facade::{Cache, CallKey, Session};
use cache_core::id::{CallId, Digest, Literal};
use cache_core::machine::{CallCache, CallRequest, Caller, Decision, Resolved};
use criterion::Criterion;

/// The cached value type every bench uses: a shared 64-byte payload, cloned
/// by a refcount bump (as `moka` hands out clones of its values).
pub type Value = Arc<[u8]>;

/// Number of hot keys in the hit benches.
pub const HOT_KEYS: usize = 1024;

/// A 64-byte value.
pub fn value() -> Value {
    Arc::from(vec![7u8; 64])
}

/// `n` distinct call IDs (`bench(i: n)`); each call key is a 71-byte digest.
pub fn hot_ids(n: usize) -> Vec<CallId> {
    ids_named("bench", n)
}

/// `n` distinct call IDs of the field `field`, `field(i: 0..n)`.
pub fn ids_named(field: &str, n: usize) -> Vec<CallId> {
    (0..n)
        .map(|i| CallId::new(field).with_arg("i", Literal::Int(i as i64)))
        .collect()
}

/// Pairs for content hits: `(stored, requested)` have different recipes
/// (so the storage lookup misses) but share one content digest (C-3.2).
pub fn content_pairs(n: usize) -> Vec<(CallId, CallId)> {
    (0..n)
        .map(|i| {
            let content = Digest::of(format!("content {i}").as_bytes());
            let stored = CallId::new("stored")
                .with_arg("i", Literal::Int(i as i64))
                .with_content_digest(content);
            let requested = CallId::new("requested")
                .with_arg("i", Literal::Int(i as i64))
                .with_content_digest(content);
            (stored, requested)
        })
        .collect()
}

/// The `i`-th key to visit among `len` keys: a fixed stride permutation
/// (stride 7919, coprime with any power of two), so consecutive accesses do
/// not walk memory in order and every bench visits keys in the same order.
pub fn visit(i: u64, len: usize) -> usize {
    ((i.wrapping_mul(7919)) % len as u64) as usize
}

/// Runs `step` once per iteration on the next of `len` keys, in
/// [`visit`] order, so a bench walks its hot keys the same way every time.
pub fn round_robin(b: &mut criterion::Bencher<'_>, len: usize, mut step: impl FnMut(usize)) {
    let mut i = 0u64;
    b.iter(|| {
        i += 1;
        step(visit(i, len))
    })
}

/// For resolvers and moka inits that a hit never runs.
pub fn never<T>() -> T {
    unreachable!("a hit never runs the resolver")
}

/// The floor of a refcounted cache hit: a `Mutex<HashMap>` (std's default
/// hasher) from key to value and refcount. A hit locks, looks the key up,
/// bumps the refcount and clones the value; a release locks, looks up and
/// decrements.
pub struct LockedMap {
    map: Mutex<HashMap<Arc<str>, (Value, u64)>>,
}

impl LockedMap {
    /// A map holding `value` under every key, refcounts at 0.
    pub fn new(keys: impl IntoIterator<Item = String>, value: Value) -> Self {
        let map = keys
            .into_iter()
            .map(|k| (Arc::from(k), (value.clone(), 0)))
            .collect();
        Self {
            map: Mutex::new(map),
        }
    }

    /// A hit: refcount +1, the value cloned.
    pub fn acquire(&self, key: &str) -> Option<Value> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (value, refs) = map.get_mut(key)?;
        *refs += 1;
        Some(value.clone())
    }

    /// Gives a ref back: refcount -1.
    pub fn release(&self, key: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, refs)) = map.get_mut(key) {
            *refs -= 1;
        }
    }

    /// The refcount of `key`.
    pub fn refcount(&self, key: &str) -> Option<u64> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map(|(_, refs)| *refs)
    }
}

/// A state machine holding one completed entry per ID, each kept alive by
/// one ref of a session that stays open (so bare callers' hits and releases
/// never remove it).
pub fn machine_with(ids: &[CallId], value: &Value) -> CallCache<Value> {
    let mut cache = CallCache::new(1);
    let session = cache.open_session();
    let caller = Caller {
        session: Some(session),
        ..Caller::default()
    };
    for id in ids {
        let Ok(Decision::Run(order)) = cache
            .begin_call(&caller, CallRequest::new(id.clone()))
            .outcome
        else {
            panic!("a fresh key is a miss");
        };
        // The session owns the served ref and keeps the entry: nothing to
        // deliver, no hook to run.
        let _ = cache
            .complete(order.entry, Ok(Resolved::value(value.clone())))
            .expect("completion");
    }
    cache
}

/// Runs `body` on a task spawned on `rt`, as a service runs its request
/// handlers, and returns its output. The async benches time their loops
/// this way. Directly inside `block_on`, every wake-up of the blocked-on
/// future by another task (a resolver finishing) makes the runtime poll its
/// timer and I/O drivers once before polling the future again: a system
/// call per miss that no caller running on a task pays.
pub fn in_task<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    body: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    rt.block_on(async { tokio::spawn(body).await.expect("the bench task panicked") })
}

/// A current-thread tokio runtime, as the sim's hosts and most tests use.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// An async cache holding one completed entry per ID, each held by the
/// returned session (keep it open while benchmarking hits).
pub fn facade_with(
    rt: &tokio::runtime::Runtime,
    ids: &[CallId],
    value: &Value,
) -> (Cache<Value>, Session<Value>) {
    let cache: Cache<Value> = Cache::builder().build();
    let session = cache.open_session();
    rt.block_on(fill(&session, ids, value, false));
    (cache, session)
}

/// Makes `session` call every ID once (each a miss), so it holds one ref on
/// each new entry; `hooks` gives every result a release hook.
pub async fn fill(session: &Session<Value>, ids: &[CallId], value: &Value, hooks: bool) {
    for id in ids {
        let v = value.clone();
        let result = session
            .call(CallKey::new(id.clone()), move |_| async move {
                let resolved = Resolved::value(v);
                Ok(if hooks {
                    resolved.with_release(|| Ok(()))
                } else {
                    resolved
                })
            })
            .await
            .expect("a fresh call succeeds");
        assert!(!result.hit());
    }
}

/// The criterion configuration of every bench: the defaults, or with
/// `BENCH_QUICK=1` a quick mode (0.3 s warm-up, 1 s measurement, 10
/// samples) that `ci/bench-report` uses. Flags given on the command line
/// (`--warm-up-time`, `--measurement-time`, …) still override it.
pub fn criterion() -> Criterion {
    let c = Criterion::default().without_plots();
    if quick() {
        c.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10)
    } else {
        c
    }
}

/// Whether `BENCH_QUICK` asks for the quick mode.
pub fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Where criterion writes its results: `$CARGO_TARGET_DIR/criterion`, or
/// `target/criterion` of the workspace.
pub fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// Writes `fields` as a flat JSON object to `criterion_dir()/name.json`
/// (figures criterion does not measure itself, for `ci/bench-report`).
pub fn write_summary(name: &str, fields: &[(&str, f64)]) -> std::io::Result<PathBuf> {
    let dir = criterion_dir();
    std::fs::create_dir_all(&dir)?;
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("  \"{k}\": {}", if v.is_finite() { *v } else { -1.0 }))
        .collect();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, format!("{{\n{}\n}}\n", body.join(",\n")))?;
    Ok(path)
}
