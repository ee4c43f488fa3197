//! `cache-sim serve`: the simulation's engine host on real tokio TCP, a
//! multi-thread runtime and the system clock, with the SQLite TTL store and
//! Prometheus text at `GET /metrics` (O-1).
//!
//! The same host code as the simulation ([`crate::engine::accept_loop`]):
//! only the socket types and the [`EngineHost`] differ. The real host has no
//! oracles and no shadow model; what the simulation traces goes to the log
//! (stderr), including one S-7 line per closed session. Resolvers follow
//! the plan the client names in its HELLO (a named scenario and a seed; see
//! [`crate::protocol`]): the server generates the same plan and runs the
//! operation the client asks for by index.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::bugs::Bugs;
use cache_core::facade::{Cache, Clock, SystemClock};
use cache_core::id::CallId;
use cache_core::ttl::{SqliteTtlStore, TtlStore};
use tokio_util::sync::CancellationToken;

use crate::engine::{accept_loop, EngineHost, PlanView};
use crate::plan::Plan;
use crate::scenario::Scenario;
use crate::world::{build_key_id, Engine, Val};

/// Plans kept generated at once (one per scenario and seed the clients
/// name); the oldest-named is dropped past this.
const PLANS_KEPT: usize = 64;

/// Simulated ms between TTL garbage collections, as in the simulation.
const GC_EVERY: Duration = Duration::from_millis(500);

/// What `cache-sim serve` was asked for.
#[derive(Clone, Debug)]
pub struct ServeArgs {
    /// `--listen`: the protocol's address.
    pub listen: String,
    /// `--metrics`: the HTTP address of `GET /metrics`.
    pub metrics: String,
    /// `--ttl-db`: the SQLite TTL store's file (default: an in-memory SQLite
    /// store, whose rows die with the process).
    pub ttl_db: Option<String>,
    /// `--bug`: bug-zoo switches on in the caches.
    pub bugs: Vec<String>,
}

/// A plan shared by the connections that named it.
pub struct SharedPlan {
    plan: Plan,
    key_ids: Vec<CallId>,
}

impl PlanView for Arc<SharedPlan> {
    fn plan(&self) -> &Plan {
        &self.plan
    }
    fn key_id(&self, k: u64) -> CallId {
        self.key_ids[k as usize].clone()
    }
}

/// The real engine's host: the system clock, a log on stderr, no oracles.
pub struct RealHost {
    start: Instant,
    clock: SystemClock,
    high_water: AtomicI64,
    ids: AtomicU64,
    plans: Mutex<BTreeMap<(String, u64), Arc<SharedPlan>>>,
}

impl RealHost {
    /// A host started now.
    pub fn new() -> Arc<RealHost> {
        Arc::new(RealHost {
            start: Instant::now(),
            clock: SystemClock,
            high_water: AtomicI64::new(i64::MIN),
            ids: AtomicU64::new(1),
            plans: Mutex::new(BTreeMap::new()),
        })
    }
}

/// The same IDs the simulation gives the plan's keys.
fn key_ids(plan: &Plan) -> Vec<CallId> {
    (0..plan.keys.len())
        .map(|k| build_key_id(plan, k))
        .collect()
}

impl EngineHost for Arc<RealHost> {
    type Plan = Arc<SharedPlan>;

    fn plan_for(&self, client: usize, named: Option<&(String, u64)>) -> Result<Self::Plan, String> {
        let Some((name, seed)) = named else {
            return Err(
                "HELLO names no scenario and seed (HELLO <client> <scenario> <seed>)".into(),
            );
        };
        let key = (name.clone(), *seed);
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let shared = match plans.get(&key) {
            Some(p) => p.clone(),
            None => {
                let scenario = Scenario::named(name)?;
                let plan = Plan::generate(*seed, &scenario);
                let shared = Arc::new(SharedPlan {
                    key_ids: key_ids(&plan),
                    plan,
                });
                if plans.len() >= PLANS_KEPT {
                    plans.pop_first();
                }
                plans.insert(key, shared.clone());
                shared
            }
        };
        if client >= shared.plan.clients.len() {
            return Err(format!(
                "client {client} out of range: scenario {name} seed {seed} has {} clients",
                shared.plan.clients.len()
            ));
        }
        Ok(shared)
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn clock_ms(&self) -> i64 {
        let t = self.clock.now_ms();
        self.high_water.fetch_max(t, Ordering::SeqCst);
        t
    }

    fn clock_high_water(&self) -> i64 {
        let t = self.clock.now_ms();
        self.high_water.fetch_max(t, Ordering::SeqCst).max(t)
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::SeqCst)
    }

    fn trace(&self, who: &str, what: impl AsRef<str>) {
        // The simulation trace's form, with wall ms since the start.
        eprintln!("{:>7}ms {:<8} {}", self.now(), who, what.as_ref());
    }
}

/// A failure of `serve` before it serves: bad flags, an address in use, an
/// unreadable or corrupt TTL database. The binary exits 2.
#[derive(Debug)]
pub struct ServeError(pub String);

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_addr(flag: &str, s: &str) -> Result<SocketAddr, ServeError> {
    s.parse().map_err(|e| {
        ServeError(format!(
            "bad {flag} {s:?}: {e} (expected IP:PORT, e.g. 127.0.0.1:7000)"
        ))
    })
}

/// Opens the TTL store `--ttl-db` names, or an in-memory SQLite store.
fn open_store(ttl_db: Option<&str>) -> Result<(Arc<dyn TtlStore>, String), ServeError> {
    match ttl_db {
        Some(path) => {
            let store = SqliteTtlStore::open(path)
                .map_err(|e| ServeError(format!("bad --ttl-db {path:?}: {e}")))?;
            Ok((Arc::new(store), format!("SQLite file {path}")))
        }
        None => {
            let store = SqliteTtlStore::open_in_memory()
                .map_err(|e| ServeError(format!("cannot open an in-memory TTL store: {e}")))?;
            Ok((
                Arc::new(store),
                "in-memory SQLite (no --ttl-db: rows die with the process)".into(),
            ))
        }
    }
}

/// Runs the real engine until the process is stopped. Errors before it
/// serves are [`ServeError`]s.
pub fn serve(args: &ServeArgs) -> Result<(), ServeError> {
    let listen = parse_addr("--listen", &args.listen)?;
    let metrics = parse_addr("--metrics", &args.metrics)?;
    let mut bugs = Bugs::none();
    for b in &args.bugs {
        bugs = bugs.with(
            b.parse()
                .map_err(|e| ServeError(format!("bad --bug: {e}")))?,
        );
    }
    let (store, store_text) = open_store(args.ttl_db.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| ServeError(format!("cannot listen on --listen {listen}: {e}")))?;
        let http = tokio::net::TcpListener::bind(metrics)
            .await
            .map_err(|e| ServeError(format!("cannot listen on --metrics {metrics}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| ServeError(e.to_string()))?;
        let http_local = http.local_addr().map_err(|e| ServeError(e.to_string()))?;
        // Real time (SystemClock, the builder's default) and the store
        // calls on tokio's blocking pool (the default executor).
        let eng = Engine {
            inc: 1,
            calls: Cache::builder().ttl_store(store).bugs(bugs).build::<Val>(),
            changes: Cache::builder().change_cache().bugs(bugs).build::<Val>(),
            stop: CancellationToken::new(),
        };
        // The bound addresses first, on stdout: a caller that asked for
        // port 0 reads them here.
        println!("listening on {local}");
        println!("metrics on http://{http_local}/metrics");
        let host = RealHost::new();
        host.trace("engine", format!("TTL store: {store_text}"));
        if !bugs.is_empty() {
            host.trace("engine", format!("bug-zoo switches on: {bugs}"));
        }
        tokio::spawn(collect_expired(host.clone(), eng.calls.clone()));
        let calls = eng.calls.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let calls = calls.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        calls.metrics_text(),
                    )
                }
            }),
        );
        let metrics_task = tokio::spawn(async move { axum::serve(http, app).await });
        tokio::select! {
            r = accept_loop(host.clone(), eng, listener) => {
                r.map_err(|e| ServeError(format!("accept failed: {e}")))
            }
            r = metrics_task => Err(ServeError(format!("the metrics server stopped: {r:?}"))),
        }
    })
}

/// T-5: expired TTL rows are deleted now and then, off the runtime's
/// workers (the store is SQLite on a file).
async fn collect_expired(host: Arc<RealHost>, calls: Cache<Val>) {
    loop {
        tokio::time::sleep(GC_EVERY).await;
        match calls.collect_expired_ttl().await {
            Ok(0) => {}
            Ok(n) => host.trace("engine", format!("gc: {n} expired TTL rows deleted (T-5)")),
            Err(e) => host.trace("engine", format!("gc failed: {e}")),
        }
    }
}
