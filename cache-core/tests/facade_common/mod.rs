//! Shared helpers for the facade scenario tests (`tests/facade_*.rs`).
//!
//! Every test runs on a paused current-thread runtime: sleeps are virtual,
//! interleavings are driven with gates and [`settle`], nothing depends on
//! wall time.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::facade::{Cache, CallKey, CallResult, Ctx, ResolverCtx, Span, Telemetry};
use cache_core::id::{CallId, Digest};
use cache_core::machine::Resolved;
use cache_core::CallError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The value type every facade test caches.
pub type V = String;

/// What a resolver returns.
pub type Out = Result<Resolved<V>, CallError>;

/// A boxed resolver future.
pub type BoxFut = Pin<Box<dyn Future<Output = Out> + Send + 'static>>;

/// What a call returns.
pub type Call = Result<CallResult<V>, CallError>;

/// A plain cache, instance 1.
pub fn cache() -> Cache<V> {
    Cache::builder().build()
}

/// A call ID for `name`.
pub fn id(name: &str) -> CallId {
    CallId::new(name)
}

/// A key for `name`: no concurrency key, no TTL.
pub fn key(name: &str) -> CallKey {
    CallKey::new(id(name))
}

/// A content digest made from `text`.
pub fn digest(text: &str) -> Digest {
    Digest::of(text.as_bytes())
}

/// Lets every other task run until all of them wait on something (the
/// runtime only advances paused time when it is idle).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Counts how often a payload's release hook ran (INV-1: exactly once).
#[derive(Clone, Default)]
pub struct Hook(Arc<AtomicUsize>);

impl Hook {
    pub fn new() -> Self {
        Self::default()
    }
    /// Runs so far.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    /// A hook that counts and succeeds.
    pub fn hook(&self) -> impl FnOnce() -> Result<(), String> + Send + 'static {
        let n = self.0.clone();
        move || {
            n.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    /// A hook that counts and fails with `msg` (C-12).
    pub fn failing(&self, msg: &str) -> impl FnOnce() -> Result<(), String> + Send + 'static {
        let n = self.0.clone();
        let msg = msg.to_string();
        move || {
            n.fetch_add(1, Ordering::SeqCst);
            Err(msg)
        }
    }
    /// `Resolved::value(v)` carrying this hook.
    pub fn value(&self, v: &str) -> Resolved<V> {
        Resolved::value(v.to_string()).with_release(self.hook())
    }
}

/// A plain counter (resolver runs, inits).
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn inc(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A gate resolvers wait on until the test opens it.
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }
    pub fn open(&self) {
        self.0.send_replace(true);
    }
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// An ordered log of events, to assert interleavings.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&self, event: impl Into<String>) {
        self.0.lock().unwrap().push(event.into());
    }
    pub fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A resolver that counts its run, waits for `gate`, then returns `v` with
/// `hook`. It does not observe cancellation (see [`cooperative`]).
pub fn gated(
    runs: &Counter,
    gate: &Gate,
    v: &str,
    hook: &Hook,
) -> impl FnOnce(ResolverCtx) -> BoxFut + Send + 'static {
    let (runs, gate, v, hook) = (runs.clone(), gate.clone(), v.to_string(), hook.clone());
    move |_ctx| {
        Box::pin(async move {
            runs.inc();
            gate.wait().await;
            Ok(hook.value(&v))
        })
    }
}

/// A cooperative resolver: counts its run, then either `gate` opens (returns
/// `v` with `hook`) or its cancellation fires (returns `Cancelled` and
/// counts in `cancelled`).
pub fn cooperative(
    runs: &Counter,
    cancelled: &Counter,
    gate: &Gate,
    v: &str,
    hook: &Hook,
) -> impl FnOnce(ResolverCtx) -> BoxFut + Send + 'static {
    let (runs, cancelled, gate, v, hook) = (
        runs.clone(),
        cancelled.clone(),
        gate.clone(),
        v.to_string(),
        hook.clone(),
    );
    move |ctx| {
        Box::pin(async move {
            runs.inc();
            tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    cancelled.inc();
                    Err(CallError::Cancelled)
                }
                _ = gate.wait() => Ok(hook.value(&v)),
            }
        })
    }
}

/// A resolver that counts its run and returns `v` with `hook` at once.
pub fn ready(runs: &Counter, v: &str, hook: &Hook) -> impl FnOnce(ResolverCtx) -> BoxFut + Send {
    let (runs, v, hook) = (runs.clone(), v.to_string(), hook.clone());
    move |_ctx| {
        Box::pin(async move {
            runs.inc();
            Ok(hook.value(&v))
        })
    }
}

/// A resolver that counts its run and fails.
pub fn failing(runs: &Counter, msg: &str) -> impl FnOnce(ResolverCtx) -> BoxFut + Send {
    let (runs, msg) = (runs.clone(), msg.to_string());
    move |_ctx| {
        Box::pin(async move {
            runs.inc();
            Err(CallError::Resolver(msg.into()))
        })
    }
}

/// A resolver that must never run.
pub fn never() -> impl FnOnce(ResolverCtx) -> BoxFut + Send {
    |_ctx| Box::pin(async { panic!("this resolver must not run") })
}

/// Spawns `get_or_init_call` as its own task.
pub fn spawn_call<F>(cache: &Cache<V>, ctx: Ctx, key: CallKey, resolver: F) -> JoinHandle<Call>
where
    F: FnOnce(ResolverCtx) -> BoxFut + Send + 'static,
{
    let cache = cache.clone();
    tokio::spawn(async move { cache.get_or_init_call(&ctx, key, resolver).await })
}

/// Spawns `get_or_init_arbitrary` as its own task.
pub fn spawn_arbitrary<F>(cache: &Cache<V>, ctx: Ctx, key: &str, init: F) -> JoinHandle<Call>
where
    F: FnOnce(ResolverCtx) -> BoxFut + Send + 'static,
{
    let cache = cache.clone();
    let key = key.to_string();
    tokio::spawn(async move { cache.get_or_init_arbitrary(&ctx, &key, init).await })
}

/// INV-1: nothing is left: no index entry, no live entry, no leak, and the
/// machine and facade invariants hold.
#[track_caller]
pub fn assert_quiescent(cache: &Cache<V>) {
    let report = cache.leak_report();
    assert_eq!(cache.entries(), 0, "entries left (INV-1):\n{report}");
    assert_eq!(
        cache.live_entries(),
        0,
        "live entries left (INV-1):\n{report}"
    );
    if let Err(v) = cache.check_invariants() {
        panic!("invariant broken: {v}\n{report}");
    }
    assert!(report.is_clean(), "{report}");
}

/// Checks the invariants mid-test.
#[track_caller]
pub fn assert_invariants(cache: &Cache<V>) {
    if let Err(v) = cache.check_invariants() {
        panic!("invariant broken: {v}\n{}", cache.leak_report());
    }
}

/// A telemetry sink that records every span (S-5).
#[derive(Default)]
pub struct Recording {
    spans: Mutex<Vec<Span>>,
}

impl Recording {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
    /// Spans for `key` (a call key or arbitrary key).
    pub fn for_key(&self, key: &str) -> Vec<Span> {
        self.spans().into_iter().filter(|s| s.key == key).collect()
    }
}

impl Telemetry for Recording {
    fn span(&self, span: Span) {
        self.spans.lock().unwrap().push(span);
    }
}

/// Whether another thread can take the cache's lock right now, i.e. the
/// current thread does not hold it. Waits on a real thread with a generous
/// guard so that a regression fails instead of deadlocking the test; in the
/// passing case the answer comes at once.
pub fn lock_is_free(cache: &Cache<V>) -> bool {
    let cache = cache.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = cache.entries();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(20)).is_ok()
}
