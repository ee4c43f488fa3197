//! The async facade (DESIGN principle 2): one lock around the state machine,
//! resolvers spawned detached on the current tokio runtime, completion
//! signalled to waiters, cancellation through per-caller tokens.
//!
//! ```
//! use cache_core::facade::{Cache, CallKey, Ctx};
//! use cache_core::id::CallId;
//! use cache_core::machine::Resolved;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache: Cache<String> = Cache::builder().build();
//! let session = cache.open_session();
//! let key = CallKey::new(CallId::new("greeting"));
//!
//! let first = session
//!     .call(key.clone(), |_ctx| async { Ok(Resolved::value("hello".to_string())) })
//!     .await
//!     .unwrap();
//! assert!(!first.hit());
//! let second = session.call(key, |_ctx| async { unreachable!("cached") }).await.unwrap();
//! assert!(second.hit());
//! assert_eq!(second.value(), Some(&"hello".to_string()));
//!
//! session.close().unwrap(); // releases both refs (S-1)
//! assert_eq!(cache.entries(), 0);
//! # });
//! ```

mod clock;
mod ctx;
mod executor;
#[cfg(test)]
mod protocol_shuttle;
mod result;
mod session;
mod telemetry;
mod wait;

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use clock::HighWaterClock;
pub use clock::{Clock, ManualClock, SystemClock};
pub use ctx::{Ctx, ResolverCtx};
pub use executor::{BlockingExecutor, BlockingJob, Inline, TokioBlocking};
pub use result::CallResult;
pub use session::{CloseSummary, Session};
pub use telemetry::{Span, Telemetry};

use crate::bugs::Bug;
#[cfg(feature = "bug-zoo")]
use crate::bugs::Bugs;
use crate::error::CallError;
use crate::id::CallId;
use crate::machine::{
    self, Begin, CallCache, CallRequest, ConcurrencyKey, Decision, EntryId, LeakReport, Resolved,
    Violation,
};
use crate::metrics::Metrics;
use crate::ttl::{choose_storage_key, StorageKeyChoice, StoreError, TtlStore};
use wait::Waits;

/// `key` of `get_or_init_call`.
#[derive(Clone, Debug)]
pub struct CallKey {
    /// The requested ID; `None` is rejected (C-1).
    pub id: Option<CallId>,
    /// Deduplicates concurrent calls when non-empty (C-3.3).
    pub concurrency_key: ConcurrencyKey,
    /// TTL in milliseconds; 0 means none (T-2).
    pub ttl_ms: u64,
    /// C-2: run directly, store nothing.
    pub do_not_cache: bool,
    /// S-5: emit telemetry on every call.
    pub repeat_telemetry: bool,
}

impl CallKey {
    /// A key for `id`: no concurrency key, no TTL.
    pub fn new(id: CallId) -> Self {
        Self {
            id: Some(id),
            concurrency_key: ConcurrencyKey::default(),
            ttl_ms: 0,
            do_not_cache: false,
            repeat_telemetry: false,
        }
    }
    /// A key with no ID (rejected, C-1); for tests of bad input.
    pub fn missing() -> Self {
        Self {
            id: None,
            ..Self::new(CallId::new("-"))
        }
    }
    /// Sets the concurrency key.
    pub fn concurrency_key(mut self, key: impl Into<ConcurrencyKey>) -> Self {
        self.concurrency_key = key.into();
        self
    }
    /// Sets the TTL.
    pub fn ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = ttl_ms;
        self
    }
    /// Sets `do_not_cache`.
    pub fn do_not_cache(mut self, yes: bool) -> Self {
        self.do_not_cache = yes;
        self
    }
    /// Sets `repeat_telemetry` (S-5: a span on every call, not once per key
    /// per session).
    pub fn repeat_telemetry(mut self, yes: bool) -> Self {
        self.repeat_telemetry = yes;
        self
    }
}

/// A completed entry and its refcount, as [`Cache::completed`] reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The entry.
    pub entry: EntryId,
    /// Refs held on it now (sessions, callers, parent entries).
    pub refcount: u32,
}

/// Instance ids the cache assigns itself have this bit set; ids chosen with
/// [`CacheBuilder::instance_id_for_replay`] below 2^63 never meet them.
const ASSIGNED_INSTANCE: u64 = 1 << 63;

/// The next self-assigned instance id (process-wide, C-4).
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// Builds a [`Cache`].
pub struct CacheBuilder {
    /// Chosen for replay; `None`: the cache assigns one.
    instance: Option<u64>,
    executor: Arc<dyn BlockingExecutor>,
    change_mode: bool,
    store: Option<Arc<dyn TtlStore>>,
    clock: Arc<dyn Clock>,
    telemetry: Option<Arc<dyn Telemetry>>,
    metrics: Arc<Metrics>,
    store_deadline_ms: u64,
    #[cfg(feature = "bug-zoo")]
    bugs: Bugs,
}

impl CacheBuilder {
    /// Turns on bug-zoo switches (feature `bug-zoo`): harness self-tests only.
    #[cfg(feature = "bug-zoo")]
    pub fn bugs(mut self, bugs: Bugs) -> Self {
        self.bugs = bugs;
        self
    }
    /// A TTL store (T-1); without one, TTLs are ignored.
    pub fn ttl_store(mut self, store: Arc<dyn TtlStore>) -> Self {
        self.store = Some(store);
        self
    }
    /// The clock (T-6). Default: the [`SystemClock`]; a simulation
    /// injects its own (a [`ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Where TTL store calls run. Default: [`TokioBlocking`] (the blocking
    /// pool, so SQLite never stalls an async worker); a simulation passes
    /// [`Inline`] so that no thread is involved and its runs repeat exactly.
    pub fn blocking_executor(mut self, executor: Arc<dyn BlockingExecutor>) -> Self {
        self.executor = executor;
        self
    }
    /// Fixes this cache's instance id instead of letting the cache assign
    /// one, so a replayed run names its instances the same way every time
    /// (they appear in resolver contexts, recursion chains and do-not-cache
    /// storage keys). For simulations and replay only: two caches given the
    /// same id treat each other's keys as recursion (C-4). Self-assigned ids
    /// have the top bit set, so an id below 2^63 never collides with one.
    pub fn instance_id_for_replay(mut self, id: u64) -> Self {
        self.instance = Some(id);
        self
    }
    /// The telemetry sink (S-5).
    pub fn telemetry(mut self, telemetry: Arc<dyn Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }
    /// Shares a metrics registry (O-1).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
    /// Arbitrary entries behave as a change cache (K-5).
    pub fn change_cache(mut self) -> Self {
        self.change_mode = true;
        self
    }
    /// A store answer slower than this counts as a failure (T-2), measured
    /// on tokio time from when the store call is handed to the executor (a
    /// simulated store's `answer_delay_ms` counts against it too). Default
    /// 1000 ms.
    pub fn store_deadline_ms(mut self, ms: u64) -> Self {
        self.store_deadline_ms = ms;
        self
    }
    /// The cache.
    pub fn build<V: Clone + Send + 'static>(self) -> Cache<V> {
        let instance = self
            .instance
            .unwrap_or_else(|| ASSIGNED_INSTANCE | NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed));
        let machine = if self.change_mode {
            CallCache::new_change_cache(instance)
        } else {
            CallCache::new(instance)
        };
        #[cfg(feature = "bug-zoo")]
        let machine = machine.with_bugs(self.bugs);
        let clock = HighWaterClock::new(self.clock);
        // T-2(a): session ids restart with every cache, but the TTL store
        // outlives it; the instance id and the clock's reading at build
        // make a session's identity in fresh keys unique across restarts.
        let incarnation = format!("{instance}.{}", clock.now_ms());
        Cache {
            shared: Arc::new(Shared {
                bugs: machine.bugs(),
                state: Mutex::new(State {
                    machine,
                    waits: Waits::default(),
                    generation: 0,
                }),
                checked: AtomicU64::new(UNCHECKED),
                store: self.store,
                executor: self.executor,
                clock,
                incarnation,
                telemetry: self.telemetry,
                metrics: self.metrics,
                store_deadline_ms: self.store_deadline_ms,
                #[cfg(feature = "harness-hooks")]
                strand: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }
}

pub(crate) struct State<V> {
    pub(crate) machine: CallCache<V>,
    pub(crate) waits: Waits<V>,
    /// Bumped by every mutable access (see [`Locked`]): equal generations
    /// mean an unchanged state.
    generation: u64,
}

/// `Shared::checked` before the first passing check.
const UNCHECKED: u64 = u64::MAX;

/// The lock's guard. Any change to the state goes through `DerefMut`,
/// which bumps the generation, so `check_invariants` can skip a state it
/// has already found sound (the sim checks after every step, and most
/// steps leave the cache untouched, so most checks are skipped).
pub(crate) struct Locked<'a, V> {
    guard: MutexGuard<'a, State<V>>,
}

impl<V> Deref for Locked<'_, V> {
    type Target = State<V>;
    fn deref(&self) -> &State<V> {
        &self.guard
    }
}

impl<V> DerefMut for Locked<'_, V> {
    fn deref_mut(&mut self) -> &mut State<V> {
        self.guard.generation = self.guard.generation.wrapping_add(1);
        &mut self.guard
    }
}

pub(crate) struct Shared<V> {
    state: Mutex<State<V>>,
    /// The generation whose state last passed `check_invariants`.
    checked: AtomicU64,
    /// The machine's bug-zoo switches, fixed at build: read without the lock.
    bugs: crate::bugs::Bugs,
    store: Option<Arc<dyn TtlStore>>,
    /// Where store calls run.
    executor: Arc<dyn BlockingExecutor>,
    /// This cache's incarnation: instance id and clock reading at build,
    /// part of every session's identity in fresh TTL keys (T-2(a)).
    incarnation: String,
    /// TTL decisions read the highest time seen (T-7).
    clock: HighWaterClock,
    telemetry: Option<Arc<dyn Telemetry>>,
    metrics: Arc<Metrics>,
    store_deadline_ms: u64,
    /// Harness self-tests only: resolvers dropped unfinished leave their
    /// calls in flight (see [`Cache::plant_stranded_resolvers`]).
    #[cfg(feature = "harness-hooks")]
    strand: std::sync::atomic::AtomicBool,
}

impl<V> Shared<V> {
    /// Whether a resolver dropped unfinished must leave its call in flight
    /// (a planted fault; never without the `harness-hooks` feature).
    pub(crate) fn strands_resolvers(&self) -> bool {
        #[cfg(feature = "harness-hooks")]
        return self.strand.load(Ordering::Relaxed);
        #[cfg(not(feature = "harness-hooks"))]
        false
    }

    /// The lock. A panic while holding it cannot leave the machine half
    /// updated in a way we could repair, but poisoning must not turn into
    /// panics in every later caller either: the machine's own invariant
    /// checks report any damage.
    pub(crate) fn lock(&self) -> Locked<'_, V> {
        Locked {
            guard: self.state.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

/// The shared call cache: cheap to clone, one per engine.
pub struct Cache<V> {
    shared: Arc<Shared<V>>,
}

impl<V> Clone for Cache<V> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Cache<()> {
    /// Starts building a cache with a service's defaults: the
    /// [`SystemClock`], store calls on tokio's blocking pool
    /// ([`TokioBlocking`]) and an instance id of its own (C-4: the same key
    /// on two caches is not recursion).
    pub fn builder() -> CacheBuilder {
        CacheBuilder {
            instance: None,
            executor: Arc::new(TokioBlocking),
            change_mode: false,
            store: None,
            clock: Arc::new(SystemClock),
            telemetry: None,
            metrics: Arc::new(Metrics::new()),
            store_deadline_ms: 1000,
            #[cfg(feature = "bug-zoo")]
            bugs: Bugs::none(),
        }
    }
}

impl<V: Clone + Send + 'static> Cache<V> {
    /// `get_or_init_call` (section 3): a hit, a join, or a new resolver run.
    ///
    /// The resolver runs on a spawned task, detached from this caller (C-5);
    /// it should observe `ResolverCtx::cancel`, which fires when every waiter
    /// has left. A panic in it becomes [`CallError::Panicked`] for every
    /// waiter (C-14).
    pub async fn get_or_init_call<F, Fut>(
        &self,
        ctx: &Ctx,
        key: CallKey,
        resolver: F,
    ) -> Result<CallResult<V>, CallError>
    where
        F: FnOnce(ResolverCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resolved<V>, CallError>> + Send + 'static,
    {
        let CallKey {
            id,
            concurrency_key,
            ttl_ms,
            do_not_cache,
            repeat_telemetry,
        } = key;
        let req = CallRequest {
            id,
            storage_key: None,
            concurrency_key,
            do_not_cache,
            ttl_write: None,
            repeat_telemetry,
            shared_storage: false,
        };
        // C-1 before anything else: neither the session (S-2), the caller's
        // cancellation nor the TTL store is looked at for an invalid key.
        req.check_key()?;
        // S-2: a closed session fails at once, before the TTL store is asked.
        // Without a TTL nothing is asked before the decision, and the
        // decision checks the session under its own lock (the same error,
        // no trace). Checked here still for a cancelled caller (the
        // decision loop would say `Cancelled`).
        // The token is read once per call: `is_cancelled` takes the token's
        // own lock, which costs as much as a hit's lookup.
        let cancelled = ctx.cancel.is_cancelled();
        let asks_first = ttl_ms > 0 || cancelled;
        if let Some(session) = ctx.session.filter(|_| asks_first) {
            if !self.shared.lock().machine.session_is_open(session) {
                return Err(CallError::SessionClosed);
            }
        }
        if cancelled {
            return Err(CallError::Cancelled);
        }
        if ttl_ms > 0 {
            // Boxed, and the whole call with it: the TTL store's state (and
            // the request kept across it) would otherwise be part of every
            // call's future, which a hit builds and moves too.
            return Box::pin(self.call_with_ttl(ctx, req, ttl_ms, resolver)).await;
        }
        // The decision is scoped to this block: whatever is still in scope
        // at the join's `await` below is kept in the call's future, even
        // once moved out. A call is decided once (only arbitrary entries
        // wait and decide again, K-5): the request moves into its one
        // decision, taken in line.
        let (entry, waiter, wait) = {
            let caller = ctx.caller();
            let (decision, wait) =
                self.decide(ctx, move |m: &mut CallCache<V>| m.begin_call(&caller, req))?;
            match decision {
                // A hit (the common case) returns from here, without
                // building the larger state of a wait or a run.
                Decision::Hit(served) => return Ok(CallResult::new(self.shared.clone(), served)),
                Decision::Wait { entry, waiter } => (entry, waiter, wait),
                // Boxed: the run state is large, and in line it would make
                // every call's future that large to build and move.
                decision => return Box::pin(self.run_call(ctx, (decision, wait), resolver)).await,
            }
        };
        // A join (C-3.3) waits in line: its state is small (the waiter's
        // registration and its cancellation), and boxing it cost every
        // joined caller an allocation as large as a run's.
        drop(resolver);
        wait::outcome(&self.shared, entry, waiter, wait, &ctx.cancel, false).await
    }

    /// A TTL'd call: its storage key chosen (T-2), then decided and waited
    /// for as any other call.
    async fn call_with_ttl<F, Fut>(
        &self,
        ctx: &Ctx,
        mut req: CallRequest,
        ttl_ms: u64,
        resolver: F,
    ) -> Result<CallResult<V>, CallError>
    where
        F: FnOnce(ResolverCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resolved<V>, CallError>> + Send + 'static,
    {
        self.choose_storage(ctx, &mut req, ttl_ms).await;
        let caller = ctx.caller();
        let (decision, wait) =
            self.decide(ctx, move |m: &mut CallCache<V>| m.begin_call(&caller, req))?;
        match decision {
            Decision::Hit(served) => Ok(CallResult::new(self.shared.clone(), served)),
            Decision::Wait { entry, waiter } => {
                wait::outcome(&self.shared, entry, waiter, wait, &ctx.cancel, false).await
            }
            decision => self.run_call(ctx, (decision, wait), resolver).await,
        }
    }

    /// Runs the resolver of a call decided to run, and waits for it.
    async fn run_call<F, Fut>(
        &self,
        ctx: &Ctx,
        first: (Decision<V>, wait::Wait),
        resolver: F,
    ) -> Result<CallResult<V>, CallError>
    where
        F: FnOnce(ResolverCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resolved<V>, CallError>> + Send + 'static,
    {
        let again = |_: &mut CallCache<V>| -> Begin<V> {
            unreachable!("begin_call never blocks, so a call decides once")
        };
        self.drive(ctx, first, again, resolver).await
    }

    /// Keyed singleflight for arbitrary entries (section 4; K-5 on a change cache).
    pub async fn get_or_init_arbitrary<F, Fut>(
        &self,
        ctx: &Ctx,
        key: &str,
        init: F,
    ) -> Result<CallResult<V>, CallError>
    where
        F: FnOnce(ResolverCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resolved<V>, CallError>> + Send + 'static,
    {
        // C-1 before the caller's cancellation is looked at.
        crate::machine::check_arbitrary_key(key)?;
        let caller = ctx.caller();
        let key = key.to_string();
        let mut begin = move |m: &mut CallCache<V>| m.begin_arbitrary(&caller, &key);
        if ctx.cancel.is_cancelled() {
            return Err(CallError::Cancelled);
        }
        let first = self.decide(ctx, &mut begin)?;
        self.drive(ctx, first, begin, init).await
    }

    /// Opens a session (S-1, S-6).
    pub fn open_session(&self) -> Session<V> {
        let id = self.shared.lock().machine.open_session();
        Session::new(self.clone(), id)
    }

    /// C-15: index entries.
    pub fn entries(&self) -> usize {
        self.shared.lock().machine.entries()
    }

    /// The C-15 buckets.
    pub fn buckets(&self) -> machine::Buckets {
        self.shared.lock().machine.buckets()
    }

    /// This cache's instance id (C-4): self-assigned, or the one given to
    /// [`CacheBuilder::instance_id_for_replay`].
    pub fn instance_id(&self) -> u64 {
        self.shared.lock().machine.instance()
    }

    /// The completed call stored under `id`'s call key, with its refcount;
    /// `None` if there is none (never stored, released, or stored only under
    /// a session-scoped TTL key, T-2). Read-only: it takes no ref.
    pub fn completed(&self, id: &CallId) -> Option<EntryInfo> {
        let state = self.shared.lock();
        let entry = state.machine.completed_call(id)?;
        let refcount = state.machine.refcount(entry)?;
        Some(EntryInfo { entry, refcount })
    }

    /// How many callers wait on the in-flight call `entry` (a resolver finds
    /// its own in `ResolverCtx::entry`); `None` once it has completed or is
    /// gone. 0 means every waiter left and the resolver was told to stop (C-5).
    pub fn waiters(&self, entry: EntryId) -> Option<usize> {
        self.shared.lock().machine.waiter_count(entry)
    }

    /// The open sessions the resolver of the in-flight call `entry` may act
    /// for (C-5), in id order: those with a caller still waiting on it,
    /// directly or through the resolvers whose nested calls wait on it. A
    /// resolver that needs a client (to ask it for something, or to charge
    /// it) uses one of these rather than the session that started it, which
    /// may have closed while others wait. Never a closed session; empty
    /// once the call completed, every waiter left, or only bare callers wait.
    ///
    /// ```
    /// use cache_core::facade::{Cache, CallKey};
    /// use cache_core::id::CallId;
    /// use cache_core::machine::Resolved;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache: Cache<u32> = Cache::builder().build();
    /// let session = cache.open_session();
    /// let observer = cache.clone();
    /// let me = session.id();
    /// let result = session
    ///     .call(CallKey::new(CallId::new("build")), move |ctx| async move {
    ///         // The caller's session waits on this call: it may act for it.
    ///         assert_eq!(observer.sessions_waiting_on(ctx.entry.1), vec![me]);
    ///         Ok(Resolved::value(7))
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(result.value(), Some(&7));
    /// # });
    /// ```
    pub fn sessions_waiting_on(&self, entry: EntryId) -> Vec<crate::machine::SessionId> {
        self.shared.lock().machine.sessions_waiting_on(entry)
    }

    /// Entries alive in any state (0 at quiescence, INV-1).
    pub fn live_entries(&self) -> usize {
        self.shared.lock().machine.live_entries()
    }

    /// S-6: open sessions.
    pub fn connected_clients(&self) -> usize {
        self.shared.lock().machine.open_sessions()
    }

    /// Checks the machine's invariants (INV-3, INV-10, C-11a) and that the
    /// facade's own bookkeeping matches it. A state that already passed and
    /// has not changed since is not walked again.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        let state = self.shared.lock();
        if self.shared.checked.load(Ordering::Relaxed) == state.generation {
            return Ok(());
        }
        state.machine.check_invariants()?;
        state.waits.check(&state.machine)?;
        self.shared
            .checked
            .store(state.generation, Ordering::Relaxed);
        Ok(())
    }

    /// The O-3 leak report.
    pub fn leak_report(&self) -> LeakReport {
        self.shared.lock().machine.leak_report()
    }

    /// Runs `f` on the state machine under the lock (for harnesses and oracles).
    pub fn inspect<R>(&self, f: impl FnOnce(&CallCache<V>) -> R) -> R {
        f(&self.shared.lock().machine)
    }

    /// Harness self-tests only (feature `harness-hooks`): corrupts an index
    /// so INV-3 must fire. Returns false while there is nothing to corrupt.
    #[cfg(feature = "harness-hooks")]
    #[doc(hidden)]
    pub fn plant_index_corruption(&self) -> bool {
        self.shared.lock().machine.plant_index_corruption()
    }

    /// Harness self-tests only (feature `harness-hooks`): makes a running
    /// resolver wait on itself so the C-4b / INV-11 check must fire.
    #[cfg(feature = "harness-hooks")]
    #[doc(hidden)]
    pub fn plant_wait_cycle(&self) -> bool {
        self.shared.lock().machine.plant_wait_cycle()
    }

    /// Harness self-tests only (feature `harness-hooks`): from now on a
    /// resolver task dropped before it finished (its runtime shut down)
    /// leaves its call in flight, unanswered, so the checks after a
    /// shutdown (INV-1, INV-11) must fire.
    #[cfg(feature = "harness-hooks")]
    #[doc(hidden)]
    pub fn plant_stranded_resolvers(&self) {
        self.shared.strand.store(true, Ordering::Relaxed);
    }

    /// The metrics (O-1), with the gauges brought up to date.
    pub fn metrics(&self) -> Arc<Metrics> {
        let (buckets, clients) = {
            let state = self.shared.lock();
            (state.machine.buckets(), state.machine.open_sessions())
        };
        self.shared.metrics.observe(&buckets, clients);
        self.shared.metrics.clone()
    }

    /// The Prometheus text exposition of [`Cache::metrics`].
    pub fn metrics_text(&self) -> String {
        self.metrics().encode()
    }

    /// The identity of `session` that its fresh and degraded TTL storage
    /// keys are derived from (T-2): the session id with this cache's
    /// incarnation (its instance id and the clock's reading when it was
    /// built), so that a restarted engine, whose session ids start again,
    /// never derives another incarnation's keys (T-2(a)).
    pub fn ttl_identity(&self, session: crate::machine::SessionId) -> String {
        format!("{session}@{}", self.shared.incarnation)
    }

    /// T-5: deletes expired TTL rows in batches; a no-op without a store.
    /// "Expired" is judged on the highest clock reading seen (T-7), as
    /// lookups judge it.
    ///
    /// This calls the store on the calling thread, which a simulation wants
    /// (and a synchronous caller may); an async service calls
    /// [`Cache::collect_expired_ttl`] instead, which does not block its worker.
    pub fn gc_ttl(&self) -> Result<usize, StoreError> {
        match &self.shared.store {
            Some(store) => crate::ttl::gc_all(store.as_ref(), self.shared.clock.now_ms()),
            None => Ok(0),
        }
    }

    /// T-5 as [`Cache::gc_ttl`], run on the cache's [`BlockingExecutor`] and
    /// given up (as a store failure) after the store deadline. A GC that
    /// outlives the deadline still finishes on its thread; the rows it
    /// deletes stay deleted.
    pub async fn collect_expired_ttl(&self) -> Result<usize, StoreError> {
        let Some(store) = self.shared.store.clone() else {
            return Ok(0);
        };
        let now = self.shared.clock.now_ms();
        executor::run_store(
            self.shared.executor.as_ref(),
            self.shared.store_deadline(),
            move || crate::ttl::gc_all(store.as_ref(), now),
        )
        .await
    }

    /// T-2: sets the storage key of a TTL'd call (and what it must write),
    /// as [`Cache::ttl_choice`] picks it.
    async fn choose_storage(&self, ctx: &Ctx, req: &mut CallRequest, ttl_ms: u64) {
        let Some(id) = req.id.as_ref() else { return };
        let Some(choice) = self.ttl_choice(ctx, id, ttl_ms).await else {
            return;
        };
        req.storage_key = Some(choice.storage_key().to_string());
        match choice {
            StorageKeyChoice::Fresh { mut write, .. } if self.bug(Bug::TtlKeyOutlivesWindow) => {
                // BUG (ttl-key-outlives-window, breaks T-7 / INV-8): the
                // fresh key of the first window, in every window.
                let sid = ctx
                    .session
                    .map_or_else(|| "-".to_string(), |s| self.ttl_identity(s));
                let first =
                    crate::ttl::choose_storage_key(&write.call_key, &sid, 0, ttl_ms, Ok(None));
                write.row.storage_key = first.storage_key().to_string();
                req.storage_key = Some(write.row.storage_key.clone());
                req.ttl_write = Some(write);
            }
            StorageKeyChoice::Fresh { write, .. } => req.ttl_write = Some(write),
            StorageKeyChoice::Live { .. } => req.shared_storage = true,
            StorageKeyChoice::Degraded { .. } if self.bug(Bug::TtlDbFailOpen) => {
                // BUG (ttl-db-fail-open, breaks T-2 / INV-8): the
                // bare call key, shared with every session.
                req.storage_key = None;
            }
            StorageKeyChoice::Degraded { .. } => {}
        }
    }

    /// T-2: picks the storage key for a TTL'd call; never fails the call.
    ///
    /// T-7: expiry is judged on the highest clock reading seen, and the
    /// clock is read both when the call arrives and after the store has
    /// answered. A call that arrived after a row expired is never served
    /// that row's result, even if the clock jumps back while the store is
    /// slow to answer.
    async fn ttl_choice(&self, ctx: &Ctx, id: &CallId, ttl_ms: u64) -> Option<StorageKeyChoice> {
        let store = self.shared.store.clone()?;
        let _arrived = self.shared.clock.now_ms();
        let call_key = id.call_key();
        // A simulated store reports its injected slowness instead of taking
        // it: it is waited out on the (simulated) clock and counts against
        // the deadline. What remains of the deadline bounds the real call.
        let delay = store.answer_delay_ms();
        let deadline = self.shared.store_deadline_ms;
        let answer = if delay > deadline {
            tokio::time::sleep(std::time::Duration::from_millis(deadline)).await;
            Err(StoreError::Unavailable(format!(
                "no answer within {deadline} ms"
            )))
        } else {
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            let key = call_key.clone();
            executor::run_store(
                self.shared.executor.as_ref(),
                std::time::Duration::from_millis(deadline - delay),
                move || store.select(&key),
            )
            .await
        };
        let session = ctx
            .session
            .map_or_else(|| "-".to_string(), |s| self.ttl_identity(s));
        let choice = choose_storage_key(
            &call_key,
            &session,
            self.shared.clock.now_ms(),
            ttl_ms,
            answer,
        );
        if let StorageKeyChoice::Degraded { error, .. } = &choice {
            self.shared.metrics.ttl_store_failure();
            tracing::warn!(target: "cache_core::ttl", call = %crate::machine::entry::short(&call_key), "TTL store failed, using a session-scoped key (T-2): {error}");
        }
        Some(choice)
    }

    /// One decision under the lock (C-3: every lookup step at once): the
    /// decision with its trace line emitted, its span sent after the lock
    /// is released, and what to wait on. The caller has checked its
    /// cancellation first (C-5).
    fn decide(
        &self,
        ctx: &Ctx,
        begin: impl FnOnce(&mut CallCache<V>) -> Begin<V>,
    ) -> Result<(Decision<V>, wait::Wait), CallError> {
        let mut state = self.shared.lock();
        // Fields are used in place, not moved: a `Begin` is a few hundred
        // bytes, most of them its trace line, and each move is a copy a hit
        // would pay.
        let begin = begin(&mut state.machine);
        if let Some(trace) = &begin.trace {
            trace.emit();
        }
        let decision = begin.outcome?;
        let wait = state.waits.register(&decision);
        drop(state);
        // S-5: spans go out after the lock is released, as `Telemetry`
        // promises: a sink may look at the cache without deadlocking.
        if begin.telemetry {
            self.span(&begin.trace, ctx, !matches!(decision, Decision::Run(_)));
        }
        Ok((decision, wait))
    }

    /// The loop shared by calls and arbitrary entries, from a first
    /// decision: hit, wait or run; a K-5 block waits for the abandoned init
    /// and decides again.
    async fn drive<F, Fut>(
        &self,
        ctx: &Ctx,
        first: (Decision<V>, wait::Wait),
        mut begin: impl FnMut(&mut CallCache<V>) -> Begin<V>,
        resolver: F,
    ) -> Result<CallResult<V>, CallError>
    where
        F: FnOnce(ResolverCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resolved<V>, CallError>> + Send + 'static,
    {
        let mut resolver = Some(resolver);
        let mut next = Some(first);
        loop {
            let (decision, wait) = match next.take() {
                Some(first) => first,
                // After a K-5 block: the caller may have been cancelled since.
                None if ctx.cancel.is_cancelled() => return Err(CallError::Cancelled),
                None => self.decide(ctx, &mut begin)?,
            };
            match decision {
                Decision::Hit(served) => return Ok(CallResult::new(self.shared.clone(), served)),
                Decision::Blocked { .. } => {
                    wait::settled(&self.shared, wait, &ctx.cancel).await?;
                }
                Decision::Wait { entry, waiter } => {
                    return wait::outcome(&self.shared, entry, waiter, wait, &ctx.cancel, false)
                        .await;
                }
                Decision::Run(order) => {
                    let resolver = resolver.take().expect("a caller runs at most one resolver");
                    let (entry, waiter) = (order.entry, order.waiter);
                    let (token, instance) = {
                        let mut state = self.shared.lock();
                        (state.waits.call_token(entry), state.machine.instance())
                    };
                    let rctx = ResolverCtx {
                        cancel: token,
                        storage_key: order.storage_key,
                        chain: order.chain,
                        entry: (instance, entry),
                    };
                    wait::spawn_resolver(self.shared.clone(), entry, rctx, resolver);
                    return wait::outcome(&self.shared, entry, waiter, wait, &ctx.cancel, true)
                        .await;
                }
            }
        }
    }

    fn span(&self, trace: &Option<crate::trace::TraceLine>, ctx: &Ctx, cached: bool) {
        if let (Some(t), Some(trace)) = (&self.shared.telemetry, trace) {
            t.span(Span {
                key: trace.call_key(),
                session: ctx.session,
                cached,
            });
        }
    }

    fn bug(&self, bug: Bug) -> bool {
        self.shared.bugs.on(bug)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<V>> {
        &self.shared
    }
}

impl<V> Shared<V> {
    /// Whether the faulty path of `bug` is taken (never without `bug-zoo`).
    pub(crate) fn bug(&self, bug: Bug) -> bool {
        self.bugs.on(bug)
    }
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    pub(crate) fn store(&self) -> Option<&Arc<dyn TtlStore>> {
        self.store.as_ref()
    }
    pub(crate) fn executor(&self) -> &dyn BlockingExecutor {
        self.executor.as_ref()
    }
    pub(crate) fn store_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.store_deadline_ms)
    }
}

/// Runs release hooks outside the lock; failures are counted and logged, and
/// the first is returned to the releaser (C-12).
#[inline]
pub(crate) fn run_hooks<V>(
    shared: &Shared<V>,
    releases: Vec<machine::PendingRelease>,
) -> Result<(), CallError> {
    // Most releases free no entry: in line, this check (and dropping the
    // empty list) is all a hit's release pays; the walk is a call of its own.
    if releases.is_empty() {
        return Ok(());
    }
    run_each_hook(shared, releases)
}

/// [`run_hooks`] for a list that has hooks to run.
#[inline(never)]
fn run_each_hook<V>(
    shared: &Shared<V>,
    releases: Vec<machine::PendingRelease>,
) -> Result<(), CallError> {
    let mut first = Ok(());
    for r in releases {
        if let Err(e) = run_hook(shared, r) {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// Runs one release hook outside the lock; a failure is counted and logged.
pub(crate) fn run_hook<V>(
    shared: &Shared<V>,
    release: machine::PendingRelease,
) -> Result<(), CallError> {
    release.run().inspect_err(|e| {
        shared.metrics().release_hook_error();
        tracing::warn!(target: "cache_core::release", "{e}");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache holding one completed call, and the caller's result.
    async fn held_value() -> (Cache<u32>, CallResult<u32>) {
        let cache: Cache<u32> = Cache::builder().build();
        let key = CallKey::new(CallId::new("k"));
        let held = cache
            .get_or_init_call(&Ctx::new(), key, |_| async { Ok(Resolved::value(7)) })
            .await
            .unwrap();
        (cache, held)
    }

    /// The memo in `check_invariants` never hides damage: a change after a
    /// passing check is walked again (INV-3 fires on a planted corruption).
    #[tokio::test]
    async fn check_invariants_walks_again_after_any_change() {
        let (cache, held) = held_value().await;
        cache.check_invariants().unwrap();
        cache.check_invariants().unwrap();
        assert!(cache.shared.lock().machine.plant_index_corruption());
        let err = cache.check_invariants().unwrap_err();
        assert_eq!(err.invariant(), "INV-3", "{err}");
        drop(held);
    }

    /// The facade's own bookkeeping is checked against the machine (INV-7):
    /// a resolver token kept for an entry that is gone is reported.
    #[tokio::test]
    async fn check_invariants_reports_bookkeeping_the_machine_does_not_have() {
        let (cache, held) = held_value().await;
        let entry = held.entry();
        drop(held);
        assert!(
            !cache.inspect(|m| m.contains(entry)),
            "released and removed"
        );
        cache.check_invariants().unwrap();
        let _stale = cache.shared.lock().waits.call_token(entry);
        let err = cache.check_invariants().unwrap_err();
        assert_eq!(err.invariant(), "INV-7", "{err}");
        assert!(
            err.to_string().contains("token kept for settled entry"),
            "{err}"
        );
    }

    /// Reading the state does not count as a change; mutating it does.
    #[test]
    fn only_mutable_access_bumps_the_generation() {
        let cache: Cache<u32> = Cache::builder().build();
        let before = cache.shared.lock().generation;
        assert_eq!(cache.entries(), 0);
        assert_eq!(cache.shared.lock().generation, before);
        let _session = cache.open_session();
        assert_ne!(cache.shared.lock().generation, before);
    }
}
