//! What every host of one simulation shares: the plan, simulated time, the
//! trace, the shadow model, counters and the engine's current caches.
//! Hosts run on turmoil's single thread, so the locks never contend; they
//! exist because resolvers and release hooks must be `Send`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cache_core::facade::{Cache, ManualClock};
use cache_core::id::{CallId, Digest, Literal};
use cache_core::machine::SessionId;
use cache_core::ttl::MemoryTtlStore;

use crate::oracle::Shadow;
use crate::plan::Plan;
use cache_core::ttl::RecordingStore;

/// Fixed epoch of every simulation: 2024-01-01T00:00:00Z, in ms.
pub const EPOCH_MS: i64 = 1_704_067_200_000;

/// A violation planted on purpose, to show that an oracle fires. Test-only
/// switches: the default run plants nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// INV-1: a dropped connection leaves its session open (forgotten).
    LeakSessionOnDisconnect,
    /// INV-2: the shadow model records one handle too many.
    ShadowExtraHandle,
    /// INV-4: the resolver bookkeeping claims a second concurrent run.
    DoubleResolver,
    /// INV-5: the engine serves a value of another key.
    WrongValue,
    /// INV-5: a storage hit on a result whose resolver returned another
    /// key's ID reports the requested ID instead of the stored one.
    RequestedIdOnStorageHit,
    /// INV-6: the engine serves a remembered error for a later call.
    CachedError,
    /// INV-7: the engine answers "cancelled" to a waiter that did not cancel.
    SpuriousCancel,
    /// INV-7: a resolver keeps running uncancelled after every waiter left
    /// (the shadow watches a token that never fires).
    ResolverNotCancelled,
    /// INV-8: the engine reports a cross-session TTL hit on an unsafe result.
    TtlCrossSession,
    /// INV-8: a session is served its own TTL'd result made longer than its
    /// TTL before the call arrived (T-7 inside one session).
    TtlExpiredOwnSession,
    /// INV-11 (C-4): a nested call that revisits its chain is reported as
    /// served instead of refused.
    RecursionNotRefused,
    /// INV-8 (T-3): the oracle is told that no output was safe to persist,
    /// so every TTL row written must be reported.
    TtlWriteWithoutSafeResult,
    /// INV-8 (T-2(a)): every TTL'd run reports a session of its own, so a
    /// fresh key a session reuses looks handed to another session.
    FreshKeyOwnerPerRun,
    /// INV-8 (T-3): the shadow records every call result as not safe to
    /// persist, so a row written for a stored entry must be reported.
    TtlStoredEntryUnsafe,
    /// INV-8 (T-4): a written row's expiry is reported one TTL earlier
    /// than the row it replaced.
    TtlExpiryBackwards,
    /// INV-7 (C-5): a miss is answered "closed during execution" although
    /// the caller's session is open.
    ClosedErrorOnOpenSession,
    /// INV-11 (C-4): a top-level miss is answered with the recursive-call
    /// error, which only a resolver's nested call may get.
    TopLevelRefused,
    /// S-5: every telemetry span reaches the oracle saying `cached`.
    SpanSaysCached,
    /// S-5: every telemetry span reaches the oracle twice.
    SpanTwice,
    /// INV-9: a session still reports refs after close.
    RefsAfterClose,
    /// INV-10: a release hook runs twice.
    DoubleHook,
    /// INV-11: the engine never answers one call.
    SwallowResponse,
    /// INV-12: the trace includes a process-global counter.
    Nondeterminism,
    /// INV-11: a running resolver is made to wait on itself (a real wait-for
    /// cycle inside the cache, through the `harness-hooks` feature).
    WaitCycle,
    /// INV-3: a completed call is filed under a key it does not have (a real corruption of the cache's index, through the `harness-hooks` feature).
    IndexCorruption,
    /// O-1: the harness counts one failing release hook more than the
    /// cache's metrics could have (needs a scenario with failing hooks).
    HookErrorUncounted,
    /// S-7: the engine reports every session close as if no release hook
    /// had failed (needs a scenario with failing hooks).
    CloseHidesHookErrors,
    /// INV-7 (C-5): a resolver acts for the session that started it, even
    /// after that session closed, instead of for a session still waiting.
    ActsForStarter,
    /// S-1: the engine reports every session close that released refs as
    /// releasing one ref fewer.
    CloseUndercountsRefs,
    /// T-3: the engine reports every call result with its safe-to-persist
    /// flag turned over.
    SafetyFlagFlipped,
    /// T-2 (O-1): the oracle reads the call cache's count of TTL store
    /// failures as one less than it is (needs a scenario with store errors).
    StoreFailureUncounted,
    /// C-1: the engine answers a call with no call ID through a valid key,
    /// so its resolver runs and its result is cached (needs a scenario with
    /// invalid calls).
    InvalidKeyServed,
}

/// The cached value: where it came from, for the oracles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Val {
    /// Unique output id (release-hook accounting).
    pub out: u64,
    /// The resolver run that produced it.
    pub run: u64,
    /// The key index it was produced for.
    pub key: u64,
    /// The key whose ID the result carries: `key`, or the key whose ID its
    /// resolver returned instead (C-6 result call key).
    pub id_key: u64,
    /// Produced by an arbitrary init.
    pub arbitrary: bool,
    /// The session whose call ran the resolver.
    pub session: Option<SessionId>,
    /// T-3 flag.
    pub safe: bool,
    /// Highest engine clock reading when produced (INV-8 bound).
    pub made_clock: i64,
    /// Simulated ms when produced.
    pub made_ms: u64,
}

/// The engine's caches in one incarnation.
#[derive(Clone)]
pub struct Engine {
    /// Incarnation number (1 = first start).
    pub inc: u64,
    /// The call cache.
    pub calls: Cache<Val>,
    /// The change cache (K-5).
    pub changes: Cache<Val>,
    /// Fired just before a restart: connections drop their sockets in a
    /// fixed order (tokio's shutdown order depends on process-global task
    /// ids, which would break INV-12).
    pub stop: tokio_util::sync::CancellationToken,
}

/// One violated invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// `INV-n`.
    pub inv: &'static str,
    /// What happened.
    pub detail: String,
    /// Simulated ms.
    pub at_ms: u64,
}

/// Shared state of one simulation.
pub struct World {
    /// The plan.
    pub plan: Plan,
    /// Each key's call ID, by key index: built once, since a digest is a
    /// SHA-256 and every request and resolver asks for one (rebuilding them
    /// took 6 % of a seed's instructions).
    key_ids: Vec<CallId>,
    /// A planted violation, if any.
    pub plant: Option<Plant>,
    /// Bug-zoo switches on in the engine's caches (none by default).
    pub bugs: cache_core::bugs::Bugs,
    now_ms: AtomicU64,
    jump_ms: Mutex<i64>,
    clock_hw: std::sync::atomic::AtomicI64,
    /// The engine's clock (epoch + simulated time + jumps).
    pub clock: ManualClock,
    trace: Mutex<Vec<String>>,
    violations: Mutex<Vec<Violation>>,
    counters: Mutex<BTreeMap<String, u64>>,
    /// The shadow model.
    pub shadow: Mutex<Shadow>,
    engine: Mutex<Option<Engine>>,
    incarnation: AtomicU64,
    /// TTL store failures counted by the call caches of the incarnations
    /// that have ended (each incarnation's metrics start at zero).
    ended_store_failures: AtomicU64,
    /// The TTL store (kept across engine restarts).
    pub store: Arc<RecordingStore>,
    /// The same store when it is the in-memory one (faults).
    pub memory: Option<Arc<MemoryTtlStore>>,
    /// Per client: drop the connection at the next chance.
    pub drop_flags: Mutex<Vec<bool>>,
    /// Per client: finished its plan.
    pub client_done: Mutex<Vec<bool>>,
    /// Per client: the operation it is at; a client restarted after a
    /// crash resumes there (the operation in progress is issued again).
    progress: Mutex<Vec<usize>>,
    ids: AtomicU64,
    last_sent_ms: AtomicU64,
    busy_until_ms: AtomicU64,
    quiet: std::sync::atomic::AtomicBool,
}

/// The ID of the plan's key `k`: one recipe per key, and a content digest
/// shared by the keys of its content group (C-3.2).
pub fn build_key_id(plan: &Plan, k: usize) -> CallId {
    let id = CallId::new("build").with_arg("k", Literal::Int(k as i64));
    match plan.keys[k].content {
        Some(g) => id.with_content_digest(Digest::of(format!("content-{g}").as_bytes())),
        None => id,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl World {
    /// A world for `plan`.
    pub fn new(
        plan: Plan,
        plant: Option<Plant>,
        store: Arc<RecordingStore>,
        memory: Option<Arc<MemoryTtlStore>>,
    ) -> Self {
        let n = plan.clients.len();
        let key_ids = (0..plan.keys.len())
            .map(|k| build_key_id(&plan, k))
            .collect();
        Self {
            plan,
            key_ids,
            plant,
            bugs: cache_core::bugs::Bugs::none(),
            now_ms: AtomicU64::new(0),
            jump_ms: Mutex::new(0),
            clock_hw: std::sync::atomic::AtomicI64::new(EPOCH_MS),
            clock: ManualClock::new(EPOCH_MS),
            trace: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            counters: Mutex::new(BTreeMap::new()),
            shadow: Mutex::new(Shadow::default()),
            engine: Mutex::new(None),
            incarnation: AtomicU64::new(0),
            ended_store_failures: AtomicU64::new(0),
            store,
            memory,
            drop_flags: Mutex::new(vec![false; n]),
            client_done: Mutex::new(vec![false; n]),
            progress: Mutex::new(vec![0; n]),
            ids: AtomicU64::new(1),
            last_sent_ms: AtomicU64::new(0),
            busy_until_ms: AtomicU64::new(0),
            quiet: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The ID of key `k` (with its shared content digest, if any).
    pub fn key_id(&self, k: u64) -> CallId {
        self.key_ids[k as usize].clone()
    }

    /// While set, trace lines are dropped: the teardown of a restarted
    /// engine runs in an order tokio does not make deterministic.
    pub fn set_quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::SeqCst);
        // The decision capture (`cache-sim diff`) drops what it sees
        // meanwhile, as the trace does.
        tracing::debug!(target: "sim::world::quiet", quiet);
    }

    /// Simulated ms since the start.
    pub fn now(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    /// Moves simulated time (the outer loop, once per step).
    pub fn set_now(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::SeqCst);
        // Saturating: plan ranges keep this far from the i64 limits, but a
        // harness wrap would show up as a violation the cache did not commit.
        let t = EPOCH_MS
            .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
            .saturating_add(*lock(&self.jump_ms));
        self.clock.set(t);
        self.clock_hw.fetch_max(t, Ordering::SeqCst);
    }

    /// The highest engine clock reading so far (clock jumps go both ways;
    /// a TTL row never expires later than this plus its TTL).
    pub fn clock_high_water(&self) -> i64 {
        self.clock_hw.load(Ordering::SeqCst)
    }

    /// A clock jump (fault).
    pub fn jump(&self, ms: i64) {
        {
            let mut j = lock(&self.jump_ms);
            *j = j.saturating_add(ms);
        }
        self.set_now(self.now());
    }

    /// A fresh id (outputs, runs).
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::SeqCst)
    }

    /// One trace line, stamped with simulated time only.
    pub fn trace(&self, who: &str, what: impl AsRef<str>) {
        if self.quiet.load(Ordering::SeqCst) {
            return;
        }
        let line = format!("{:>7}ms {:<8} {}", self.now(), who, what.as_ref());
        lock(&self.trace).push(line);
    }

    /// The trace so far.
    pub fn trace_lines(&self) -> Vec<String> {
        lock(&self.trace).clone()
    }

    /// Records a violation (and a trace line).
    pub fn violate(&self, inv: &'static str, detail: impl Into<String>) {
        let detail = detail.into();
        self.trace("oracle", format!("VIOLATION {inv}: {detail}"));
        lock(&self.violations).push(Violation {
            inv,
            detail,
            at_ms: self.now(),
        });
    }

    /// Violations so far.
    pub fn violations(&self) -> Vec<Violation> {
        lock(&self.violations).clone()
    }

    /// Counts an event (faults fired, calls, hits …).
    pub fn count(&self, what: &str) {
        self.count_by(what, 1);
    }

    /// Counts `n` events at once.
    pub fn count_by(&self, what: &str, n: u64) {
        *lock(&self.counters).entry(what.to_string()).or_default() += n;
    }

    /// The counters.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        lock(&self.counters).clone()
    }

    /// The shadow model.
    pub fn shadow(&self) -> MutexGuard<'_, Shadow> {
        lock(&self.shadow)
    }

    /// Installs a new engine incarnation; returns its number.
    pub fn start_incarnation(&self, make: impl FnOnce(u64) -> Engine) -> Engine {
        let inc = self.incarnation.fetch_add(1, Ordering::SeqCst) + 1;
        let engine = make(inc);
        // The engine before it stopped with its host, so its count is final.
        if let Some(ended) = lock(&self.engine).replace(engine.clone()) {
            let counted = ended.calls.metrics().ttl_store_failures();
            self.ended_store_failures
                .fetch_add(counted, Ordering::SeqCst);
        }
        engine
    }

    /// TTL store failures the call caches of all incarnations counted, the
    /// current one's so far included.
    pub fn store_failures_counted(&self) -> u64 {
        let current = self
            .engine()
            .map_or(0, |e| e.calls.metrics().ttl_store_failures());
        self.ended_store_failures.load(Ordering::SeqCst) + current
    }

    /// The current engine incarnation, if started.
    pub fn engine(&self) -> Option<Engine> {
        lock(&self.engine).clone()
    }

    /// Takes the engine (at the end of a run, so caches drop with the world).
    pub fn take_engine(&self) -> Option<Engine> {
        lock(&self.engine).take()
    }

    /// Whether client `c` should drop its connection now (clears the flag).
    pub fn take_drop_flag(&self, c: usize) -> bool {
        std::mem::take(&mut lock(&self.drop_flags)[c])
    }

    /// Asks client `c` to drop its connection.
    pub fn set_drop_flag(&self, c: usize) {
        lock(&self.drop_flags)[c] = true;
    }

    /// A client sent a request now (the drain deadline counts from the last one).
    pub fn note_sent(&self) {
        self.last_sent_ms.fetch_max(self.now(), Ordering::SeqCst);
    }

    /// Simulated ms of the last request any client sent.
    pub fn last_sent_ms(&self) -> u64 {
        self.last_sent_ms.load(Ordering::SeqCst)
    }

    /// A client starts a pause of `ms` before its next operation: the run
    /// may not end before the pause does (a long `gap_ms` after healing is
    /// not a hang, INV-11).
    pub fn note_pause(&self, ms: u64) {
        self.busy_until_ms
            .fetch_max(self.now().saturating_add(ms), Ordering::SeqCst);
    }

    /// Simulated ms at which the latest client pause started so far ends.
    pub fn busy_until_ms(&self) -> u64 {
        self.busy_until_ms.load(Ordering::SeqCst)
    }

    /// Marks client `c` finished.
    pub fn set_done(&self, c: usize) {
        lock(&self.client_done)[c] = true;
    }

    /// Whether every client finished.
    pub fn all_done(&self) -> bool {
        lock(&self.client_done).iter().all(|d| *d)
    }

    /// Whether client `c` finished.
    pub fn is_done(&self, c: usize) -> bool {
        lock(&self.client_done)[c]
    }

    /// Client `c` starts operation `op`.
    pub fn set_progress(&self, c: usize, op: usize) {
        lock(&self.progress)[c] = op;
    }

    /// The operation client `c` was at (0 before it started).
    pub fn progress(&self, c: usize) -> usize {
        lock(&self.progress)[c]
    }
}
