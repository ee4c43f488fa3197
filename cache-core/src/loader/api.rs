//! The thin async API over the machine (DESIGN principle 2 for SPEC §7):
//! one lock around [`LoaderMachine`], loaders spawned detached on the
//! current tokio runtime, outcomes sent to waiters, cancellation when the
//! last waiter leaves, refresh tasks driven by tokio timers.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::bus::{EventBus, EventKind};
use super::counters::{encode_prometheus, Counters};
use super::error::LoaderError;
use super::flight_cell::FlightCell;
use super::keys::{lock_key, parse_stored_key, sort_dedup, FlightKey, Key, KeyCoder};
use super::machine::{
    Begin, FlightId, LoadOutcome, LoaderMachine, LocalRead, RemoteKept, RemoteRead, RemoteWrite,
    Violation, WaiterId, WriteMode, WriteOrder,
};
use super::options::{check_ttl, CallOptions, LoaderOptions};
use super::record::{Payload, Record};
use super::remote::{Remote, RemoteError};
use super::rng::SplitMix64;
use crate::error::ResolverError;
use crate::facade::Clock;

/// A loader function for one key.
type LoadFn<V> = Arc<dyn Fn(Key) -> BoxFuture<'static, Result<V, ResolverError>> + Send + Sync>;
/// A loader function for a batch.
type BatchFn<V> =
    Box<dyn FnOnce(Vec<Key>) -> BoxFuture<'static, Result<BTreeMap<Key, V>, ResolverError>> + Send>;

/// What a refresh task re-runs.
struct RefreshJob<V> {
    load: LoadFn<V>,
    ttl_ms: Option<i64>,
}

impl<V> Clone for RefreshJob<V> {
    fn clone(&self) -> Self {
        Self {
            load: self.load.clone(),
            ttl_ms: self.ttl_ms,
        }
    }
}

/// Which tier answered a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The local tier.
    Local,
    /// The remote tier.
    Remote,
    /// The loader.
    Loader,
}

/// A value and how it was obtained.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded<V> {
    /// The value.
    pub value: V,
    /// Which tier answered (for a joined flight: what the flight found).
    pub source: Source,
    /// Whether this caller joined a flight another caller led (L-2).
    pub joined: bool,
    /// A remote write failed: the value is good but was not cached (L-4).
    pub warning: Option<RemoteError>,
    /// The expiry, on the injected clock, of the tier record that answered
    /// (the local copy's own, capped one; the remote record's); `None` when
    /// the loader answered. Lets an oracle judge LINV-3 from outside.
    pub expires_at_ms: Option<i64>,
}

impl<V> Loaded<V> {
    /// The value.
    pub fn into_value(self) -> V {
        self.value
    }
}

/// What `load_many` gives back (L-13).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<V> {
    /// Values found or loaded, sorted by key, each key once: the order
    /// the keys were de-duplicated in, so no map is built per batch.
    /// [`Batch::get`] finds one key.
    pub values: Vec<(Key, V)>,
    /// Keys the tiers or the loader said are not found, sorted.
    pub not_found: Vec<Key>,
    /// The loader's failure, if it failed (the hits are still in `values`).
    pub error: Option<LoaderError>,
    /// A remote write failed (L-4).
    pub warning: Option<RemoteError>,
    /// The de-duplicated keys that missed every tier and went to a batch
    /// flight (led or joined), sorted: what that flight's loader must
    /// have seen (LINV-7). Empty when every key was a hit.
    pub missed: Vec<Key>,
}

impl<V> Batch<V> {
    /// The value of `key`, if it was found or loaded.
    pub fn get(&self, key: &Key) -> Option<&V> {
        self.values
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|at| &self.values[at].1)
    }
}

/// A single-key flight's outcome: value, source, remote write warning,
/// and the expiry of the remote record that answered (if one did).
type SingleOutcome<V> = Result<(V, Source, Option<RemoteError>, Option<i64>), LoaderError>;
/// A batch flight's outcome: each missing key's value, or `None` for not
/// found, in the order the flight was given its keys.
type BatchOutcome<V> = Result<(Vec<(Key, Option<V>)>, Option<RemoteError>), LoaderError>;

/// What one key of a batch got so far.
enum Got<V> {
    /// Nothing yet (or nothing: the loader failed).
    Nothing,
    /// A value.
    Value(V),
    /// A placeholder, or the loader's map lacked it (L-6).
    NotFound,
}

enum Outcome<V> {
    Single(SingleOutcome<V>),
    Batch(BatchOutcome<V>),
    /// The flight ended without an outcome of its own (close).
    Ended(LoaderError),
}

impl<V: Clone> Clone for Outcome<V> {
    fn clone(&self) -> Self {
        match self {
            Self::Single(o) => Self::Single(o.clone()),
            Self::Batch(o) => Self::Batch(o.clone()),
            Self::Ended(e) => Self::Ended(e.clone()),
        }
    }
}

struct State<V> {
    machine: LoaderMachine<RefreshJob<V>>,
    /// One cell per flight in the air, keyed like the machine's flights.
    cells: BTreeMap<FlightId, Arc<FlightCell<Outcome<V>>>>,
    rng: SplitMix64,
    ticker: bool,
}

struct Inner<V> {
    opts: LoaderOptions,
    /// This cache's stored-key encoder (L-5).
    coder: KeyCoder,
    state: Mutex<State<V>>,
    remote: Option<Arc<dyn Remote>>,
    bus: Option<Arc<dyn EventBus>>,
    clock: Arc<dyn Clock>,
    high: AtomicI64,
    /// Cancelled at close; stops the subscriber and the ticker.
    closed: CancellationToken,
    /// Set at close with `closed`: the per-call check reads this flag
    /// rather than the token, whose `is_cancelled` takes a mutex.
    is_closed: AtomicBool,
    live_tasks: AtomicUsize,
    tasks_done: Notify,
}

/// Builds a [`Loader`].
pub struct LoaderBuilder<V> {
    opts: LoaderOptions,
    clock: Arc<dyn Clock>,
    remote: Option<Arc<dyn Remote>>,
    bus: Option<Arc<dyn EventBus>>,
    bugs: crate::bugs::LoaderBugs,
    _v: std::marker::PhantomData<fn() -> V>,
}

impl<V> LoaderBuilder<V>
where
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// With a remote tier.
    pub fn remote(mut self, remote: Arc<dyn Remote>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// With an event bus between nodes (L-11).
    pub fn bus(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// With the loader zoo's `bugs` switched on in its machine (harness
    /// self-tests only: the faulty paths exist only with feature `bug-zoo`).
    #[cfg(feature = "bug-zoo")]
    pub fn bugs(mut self, bugs: crate::bugs::LoaderBugs) -> Self {
        self.bugs = bugs;
        self
    }

    #[cfg(feature = "bug-zoo")]
    fn machine(&self, has_remote: bool) -> LoaderMachine<RefreshJob<V>> {
        LoaderMachine::new(self.opts.machine_config(has_remote)).with_bugs(self.bugs)
    }

    #[cfg(not(feature = "bug-zoo"))]
    fn machine(&self, has_remote: bool) -> LoaderMachine<RefreshJob<V>> {
        let _ = self.bugs;
        LoaderMachine::new(self.opts.machine_config(has_remote))
    }

    /// Builds the loader; the first bad option is named (L-8). Needs a tokio
    /// runtime when a bus is configured (its subscriber runs on it).
    pub fn build(self) -> Result<Loader<V>, LoaderError> {
        let has_remote = self.remote.is_some();
        self.opts.validate(has_remote)?;
        if self.bus.is_some() && tokio::runtime::Handle::try_current().is_err() {
            return Err(LoaderError::InvalidOption {
                field: "bus",
                reason: "an event bus needs a tokio runtime to subscribe on; build inside one"
                    .into(),
            });
        }
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                machine: self.machine(has_remote),
                cells: BTreeMap::new(),
                rng: SplitMix64::new(self.opts.seed),
                ticker: false,
            }),
            coder: KeyCoder::new(&self.opts.name),
            opts: self.opts,
            remote: self.remote,
            bus: self.bus,
            clock: self.clock,
            high: AtomicI64::new(i64::MIN),
            closed: CancellationToken::new(),
            is_closed: AtomicBool::new(false),
            live_tasks: AtomicUsize::new(0),
            tasks_done: Notify::new(),
        });
        if let Some(bus) = &inner.bus {
            let rx = bus.subscribe(&inner.opts.node);
            spawn_tracked(&inner, subscriber(Arc::downgrade(&inner), rx));
        }
        Ok(Loader { inner })
    }
}

/// The read-through loader of SPEC §7: a local tier, an optional remote
/// tier, single flight per key, not-found placeholders, refresh-ahead and
/// invalidation events between nodes. Clones share one loader.
pub struct Loader<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for Loader<V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// Counts a spawned task until it ends, so `close` can wait for quiescence (LINV-8).
fn spawn_tracked<V: Send + Sync + 'static>(
    inner: &Arc<Inner<V>>,
    fut: impl Future<Output = ()> + Send + 'static,
) {
    inner.live_tasks.fetch_add(1, Ordering::SeqCst);
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        fut.await;
        if let Some(inner) = weak.upgrade() {
            inner.live_tasks.fetch_sub(1, Ordering::SeqCst);
            inner.tasks_done.notify_waiters();
        }
    });
}

async fn subscriber<V>(inner: Weak<Inner<V>>, mut rx: super::bus::Subscription)
where
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    let Some(closed) = inner.upgrade().map(|i| i.closed.clone()) else {
        return;
    };
    loop {
        let event = tokio::select! {
            biased;
            _ = closed.cancelled() => return,
            e = rx.recv() => e,
        };
        let (Some(event), Some(inner)) = (event, inner.upgrade()) else {
            return;
        };
        inner.lock().machine.event_received(&event);
    }
}

async fn ticker<V>(inner: Weak<Inner<V>>, period: Duration, closed: CancellationToken)
where
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    loop {
        tokio::select! {
            biased;
            _ = closed.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        Loader { inner }.run_due_refreshes();
    }
}

/// Leaves the flight if the caller stops waiting before its outcome (L-2).
struct LeaveGuard<'a, V: Clone> {
    inner: &'a Inner<V>,
    cell: &'a FlightCell<Outcome<V>>,
    flight: FlightId,
    waiter: WaiterId,
    armed: bool,
}

impl<V: Clone> Drop for LeaveGuard<'_, V> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.inner.lock();
        if state.machine.leave(self.flight, self.waiter) {
            self.cell.cancel();
        }
    }
}

impl<V> Inner<V> {
    fn lock(&self) -> MutexGuard<'_, State<V>> {
        // The machine is only changed by whole method calls, none of which
        // runs user code: a poisoned lock still holds a consistent machine.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Now, as the highest reading the clock has given (T-7 for the loader):
    /// a backwards jump never makes an expired record live again (LINV-3).
    fn now(&self) -> i64 {
        let now = self.clock.now_ms();
        self.high.fetch_max(now, Ordering::SeqCst).max(now)
    }

    fn not_found(&self) -> Option<ResolverError> {
        self.opts.not_found.as_ref().map(|n| n.error.clone())
    }

    fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::SeqCst)
    }
}

impl<V> Loader<V>
where
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A builder with `opts`, judging every lifetime on `clock` (T-6).
    pub fn builder(opts: LoaderOptions, clock: Arc<dyn Clock>) -> LoaderBuilder<V> {
        LoaderBuilder {
            opts,
            clock,
            remote: None,
            bus: None,
            bugs: crate::bugs::LoaderBugs::none(),
            _v: std::marker::PhantomData,
        }
    }

    /// The options.
    pub fn options(&self) -> &LoaderOptions {
        &self.inner.opts
    }

    /// The stored key of `key` in this cache (L-5).
    pub fn stored_key(&self, key: &Key) -> String {
        self.inner.coder.stored_key(key)
    }

    /// The counters (L-15).
    pub fn counters(&self) -> Counters {
        self.inner.lock().machine.counters()
    }

    /// The counters in Prometheus text format (L-15).
    pub fn metrics_text(&self) -> String {
        encode_prometheus(&self.inner.opts.name, &self.counters())
    }

    /// How many refresh tasks exist (L-9).
    pub fn refresh_tasks(&self) -> usize {
        self.inner.lock().machine.tasks()
    }

    /// The stored keys with a refresh task, sorted (L-9; for oracles).
    pub fn refresh_task_keys(&self) -> Vec<String> {
        self.inner.lock().machine.task_keys()
    }

    /// How many refresh-led flights are in the air (L-9; for oracles).
    pub fn refreshing(&self) -> usize {
        self.inner.lock().machine.refreshing()
    }

    /// How many flights are in the air.
    pub fn flights(&self) -> usize {
        self.inner.lock().machine.flights()
    }

    /// How many background tasks (flights, ticker, subscriber) still run (LINV-8).
    pub fn background_tasks(&self) -> usize {
        self.inner.live_tasks.load(Ordering::SeqCst)
    }

    /// The live local record of `key`, if any (for tests and oracles; no counters move).
    pub fn local_record(&self, key: &Key) -> Option<super::record::Record> {
        let stored = self.stored_key(key);
        let now = self.inner.now();
        let state = self.inner.lock();
        state
            .machine
            .local()
            .peek(&stored)
            .filter(|e| e.record.is_live(now))
            .map(|e| e.record.clone())
    }

    /// LINV-1, LINV-4, LINV-6 on the machine, plus: every registered waiter
    /// and cancellation token belongs to a flight in the air.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        let now = self.inner.now();
        let state = self.inner.lock();
        state.machine.check_invariants(now)?;
        if let Some(id) = state
            .cells
            .keys()
            .find(|f| state.machine.flight_key(**f).is_none())
        {
            return Err(Violation {
                rule: "LINV-8",
                detail: format!("flight cell (waiters, cancellation) kept for settled flight {id}"),
            });
        }
        Ok(())
    }

    fn trace(&self, stored: &str, path: &'static str, flight: &'static str, refresh: bool) {
        tracing::debug!(
            target: "cache_core::loader",
            cache = %self.inner.opts.name,
            key = %stored,
            path,
            flight,
            refresh,
            "loader read"
        );
    }

    fn decode(&self, bytes: &[u8]) -> Result<V, LoaderError> {
        self.inner
            .opts
            .codec
            .decode(bytes)
            .map_err(LoaderError::Codec)
    }

    /// Reads `key` through the tiers, calling `loader` on a miss (L-1 … L-4).
    ///
    /// Local tier, then remote tier, then one loader call per key per node
    /// (L-1): concurrent callers join the flight in the air, refreshes
    /// included, and all get the same value or error (L-2). The loader runs
    /// on a spawned task; dropping this future leaves the flight, which is
    /// cancelled only when its last waiter has left.
    pub async fn once<F, Fut>(
        &self,
        key: impl Into<Key>,
        call: CallOptions,
        loader: F,
    ) -> Result<Loaded<V>, LoaderError>
    where
        F: Fn(Key) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, ResolverError>> + Send + 'static,
    {
        let key = key.into();
        if let Some(ttl) = call.ttl_ms {
            check_ttl("ttl_ms", ttl)?;
        }
        if self.inner.is_closed() {
            return Err(LoaderError::Closed);
        }
        let mut start = self.start_once(key, call, Some(loader), None, true);
        let (begin, cell) = loop {
            match start {
                Start::Flight(begin, cell) => break (begin, cell),
                Start::Done(done) => return done,
                Start::Again(again) => {
                    // The flight was cancelled before this caller came
                    // (L-2): once it has settled, no loader call of the key
                    // is left (L-1), and this caller begins a flight again.
                    // The local tier was read (and counted, and the key
                    // marked read for L-9) by the first start.
                    again.cell.outcome().await;
                    start = self.start_once(again.key, call, again.loader, again.load, false);
                }
            }
        };
        let joined = matches!(begin, Begin::Join { .. });
        match self.wait(begin, &cell).await? {
            Outcome::Single(Ok((value, source, warning, expires_at_ms))) => Ok(Loaded {
                value,
                source,
                joined,
                warning,
                expires_at_ms,
            }),
            Outcome::Single(Err(e)) | Outcome::Ended(e) => Err(e),
            Outcome::Batch(_) => Err(LoaderError::Cancelled),
        }
    }

    /// `once` up to its wait, without an await (so the lock it holds
    /// never crosses one): the local tier's answer, or the flight led (its
    /// loader spawned) or joined. The loader comes as the caller's `F`, or
    /// boxed when an earlier start already boxed it for a refresh task;
    /// `first` is false when `once` starts again after a cancelled flight,
    /// which begins a flight without reading the local tier a second time.
    fn start_once<F, Fut>(
        &self,
        key: Key,
        call: CallOptions,
        mut loader: Option<F>,
        mut load: Option<LoadFn<V>>,
        first: bool,
    ) -> Start<V, F>
    where
        F: Fn(Key) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, ResolverError>> + Send + 'static,
    {
        let stored = self.stored_key(&key);
        let now = self.inner.now();
        // A miss reads the local tier and begins its flight under one lock
        // (one of the orders two separate lock round trips allowed).
        let mut state = self.inner.lock();
        if first && !call.skip_local {
            // The entry a hit serves is the one held now (read under this lock).
            let held = state
                .machine
                .local()
                .peek(&stored)
                .map(|e| e.record.expires_at_ms);
            match state.machine.read_local(&stored, now) {
                LocalRead::Value(bytes) => {
                    drop(state);
                    match self.decode(&bytes) {
                        Ok(value) => {
                            self.trace(&stored, "local", "none", false);
                            return Start::Done(Ok(Loaded {
                                value,
                                source: Source::Local,
                                joined: false,
                                warning: None,
                                expires_at_ms: held,
                            }));
                        }
                        Err(_) => {
                            // L-14: drop the bad copy, read on past it once.
                            state = self.inner.lock();
                            state.machine.corrupt(&stored);
                        }
                    }
                }
                LocalRead::Placeholder => {
                    drop(state);
                    self.trace(&stored, "local-placeholder", "none", false);
                    return Start::Done(Err(self.not_found_error()));
                }
                LocalRead::Miss => {}
            }
        } else if first {
            state.machine.touch(&stored, now);
        }
        // Only a call that leads a flight (or keeps a refresh task) needs
        // its loader boxed; a caller joining a flight drops it unboxed.
        let box_loader = |f: F| -> LoadFn<V> { Arc::new(move |k| Box::pin(f(k))) };
        if call.refresh {
            if let Some(job) = loader.take().map(box_loader) {
                drop(state);
                load = Some(job.clone());
                self.add_task(
                    &stored,
                    RefreshJob {
                        load: job,
                        ttl_ms: call.ttl_ms,
                    },
                );
                state = self.inner.lock();
            }
        }
        let Some(begin) = state
            .machine
            .begin(FlightKey::Single(stored.clone()), false)
        else {
            return Start::Done(Err(LoaderError::Closed));
        };
        let (cell, lead) = self.flight_cell(&mut state, begin);
        if lead.is_none() && cell.is_cancelled() {
            // Its last waiter left and it is being dropped: joining it would
            // hand this caller a cancellation it never asked for (L-2).
            if let Some(waiter) = begin.waiter() {
                state.machine.leave(begin.flight(), waiter);
            }
            drop(state);
            return Start::Again(Again {
                cell,
                key,
                loader,
                load,
            });
        }
        drop(state);
        let joined = matches!(begin, Begin::Join { .. });
        self.trace(
            &stored,
            "flight",
            if joined { "joined" } else { "led" },
            call.refresh,
        );
        let load = lead.and_then(|_| load.or_else(|| loader.take().map(box_loader)));
        if let (Some(flight), Some(load)) = (lead, load) {
            let this = self.clone();
            let cell = cell.clone();
            spawn_tracked(&self.inner, async move {
                this.fly_single(flight, key, stored, load, call.ttl_ms, false, cell)
                    .await;
            });
        }
        Start::Flight(begin, cell)
    }

    /// The shared cell of the flight `begin` led or joined (a new one for a
    /// lead, registered under the same lock as the machine's flight, so
    /// the two always agree); with the flight id when the caller leads.
    fn flight_cell(
        &self,
        state: &mut State<V>,
        begin: Begin,
    ) -> (Arc<FlightCell<Outcome<V>>>, Option<FlightId>) {
        match begin {
            Begin::Lead { flight, .. } => {
                let cell = FlightCell::new();
                state.cells.insert(flight, cell.clone());
                (cell, Some(flight))
            }
            Begin::Join { flight, .. } => match state.cells.get(&flight) {
                Some(cell) => (cell.clone(), None),
                // Every flight in the air has its cell; should that ever
                // not hold, this caller gets an answered cell, not a hang.
                None => {
                    let cell = FlightCell::new();
                    cell.answer(Outcome::Ended(LoaderError::Cancelled));
                    (cell, None)
                }
            },
        }
    }

    fn not_found_error(&self) -> LoaderError {
        match self.inner.not_found() {
            Some(e) => LoaderError::NotFound(e),
            None => LoaderError::Miss,
        }
    }

    /// Waits for a flight's outcome, leaving it on drop or wait timeout (L-2).
    async fn wait(
        &self,
        begin: Begin,
        cell: &FlightCell<Outcome<V>>,
    ) -> Result<Outcome<V>, LoaderError> {
        let Some(waiter) = begin.waiter() else {
            return Err(LoaderError::Cancelled);
        };
        let mut guard = LeaveGuard {
            inner: &self.inner,
            cell,
            flight: begin.flight(),
            waiter,
            armed: true,
        };
        let got = match self.inner.opts.wait_timeout_ms {
            Some(ms) => {
                match tokio::time::timeout(Duration::from_millis(ms), cell.outcome()).await {
                    Ok(o) => o,
                    Err(_) => return Err(LoaderError::WaitTimeout { after_ms: ms }),
                }
            }
            None => cell.outcome().await,
        };
        guard.armed = false;
        Ok(got)
    }

    fn add_task(&self, stored: &str, job: RefreshJob<V>) {
        let now = self.inner.now();
        let start_ticker = {
            let mut state = self.inner.lock();
            let added = state.machine.add_task(stored, job, now);
            let start = added && !state.ticker;
            if start {
                state.ticker = true;
            }
            start
        };
        if start_ticker {
            let period = Duration::from_millis(
                u64::try_from(self.inner.opts.refresh_interval_ms)
                    .unwrap_or(1)
                    .max(1),
            );
            let closed = self.inner.closed.clone();
            spawn_tracked(
                &self.inner,
                ticker(Arc::downgrade(&self.inner), period, closed),
            );
        }
    }

    /// Runs the refreshes due now (L-9). The ticker calls this every
    /// refresh interval; a simulation or test may call it directly after
    /// moving its clock. Returns how many refresh flights it started.
    pub fn run_due_refreshes(&self) -> usize {
        let now = self.inner.now();
        let mut started = 0;
        let due = self.inner.lock().machine.due(now);
        for (stored, job) in due {
            let Some((_, key)) = parse_stored_key(&stored) else {
                continue;
            };
            let mut state = self.inner.lock();
            let Some(begin) = state.machine.begin(FlightKey::Single(stored.clone()), true) else {
                return started;
            };
            let Begin::Lead { flight, .. } = begin else {
                continue; // L-1: joined the flight in the air
            };
            let cell = FlightCell::new();
            state.cells.insert(flight, cell.clone());
            drop(state);
            started += 1;
            let this = self.clone();
            spawn_tracked(&self.inner, async move {
                this.fly_single(flight, key, stored, job.load, job.ttl_ms, true, cell)
                    .await;
            });
        }
        started
    }

    /// Answers every waiter of `flight` with `outcome` and ends it.
    fn settle(&self, flight: FlightId, outcome: Outcome<V>) {
        let cell = {
            let mut state = self.inner.lock();
            state.machine.settle(flight);
            state.cells.remove(&flight)
        };
        // Gone when close already answered the flight's waiters.
        if let Some(cell) = cell {
            cell.answer(outcome);
        }
    }

    /// One single-key flight, from the remote read to the answer (L-1 … L-10).
    #[allow(clippy::too_many_arguments)]
    async fn fly_single(
        &self,
        flight: FlightId,
        key: Key,
        stored: String,
        load: LoadFn<V>,
        ttl_ms: Option<i64>,
        refresh: bool,
        cell: Arc<FlightCell<Outcome<V>>>,
    ) {
        let outcome = self
            .single_body(flight, key, &stored, load, ttl_ms, refresh, &cell)
            .await;
        self.settle(flight, Outcome::Single(outcome));
    }

    /// The value in a remote answer, decoded before the machine takes the
    /// bytes (so they move into the local tier uncopied, and no user
    /// `Deserialize` runs under the lock); `None` when it holds no value
    /// envelope.
    fn decode_answer(
        &self,
        answer: &Result<Option<Vec<u8>>, ()>,
    ) -> Option<Result<V, LoaderError>> {
        let bytes = answer.as_ref().ok()?.as_deref()?;
        Record::value_bytes(bytes).map(|body| self.decode(body))
    }

    /// The machine's judgement of a remote answer (L-3, L-4, L-14), with
    /// the value `decode_answer` decoded from it. A value that does not
    /// decode as `V` is corrupt: the local copy goes (the caller deletes
    /// the remote one).
    fn judge(
        state: &mut State<V>,
        stored: &str,
        answer: Result<Option<Vec<u8>>, ()>,
        decoded: Option<Result<V, LoaderError>>,
        now: i64,
        read_seq: u64,
    ) -> Judged<V> {
        match state
            .machine
            .remote_read_kept(stored, answer, now, read_seq)
        {
            RemoteKept::Value => match decoded {
                Some(Ok(v)) => Judged::Value(v),
                Some(Err(_)) | None => {
                    state.machine.corrupt(stored);
                    Judged::Undecodable
                }
            },
            RemoteKept::Placeholder => Judged::Placeholder,
            RemoteKept::Corrupt => Judged::Corrupt,
            RemoteKept::Miss | RemoteKept::Failed => Judged::Miss,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn single_body(
        &self,
        flight: FlightId,
        key: Key,
        stored: &str,
        load: LoadFn<V>,
        ttl_ms: Option<i64>,
        refresh: bool,
        cell: &FlightCell<Outcome<V>>,
    ) -> SingleOutcome<V> {
        if let Some(remote) = self.inner.remote.clone() {
            let read_remote = if refresh {
                // L-10: one node per window refreshes from the loader; the
                // others bring their local copy in line with the remote.
                let window = u64::try_from(self.inner.opts.refresh_interval_ms).unwrap_or(1);
                let got = remote
                    .lock(&lock_key(stored), &self.inner.opts.node, window)
                    .await
                    .unwrap_or(false);
                !got
            } else {
                true
            };
            if read_remote {
                let answer = tokio::select! {
                    biased;
                    _ = cell.cancelled() => return Err(LoaderError::Cancelled),
                    a = remote.get(stored) => a,
                };
                let answer = answer.map_err(|_| ());
                let decoded = self.decode_answer(&answer);
                let expires = answer
                    .as_ref()
                    .ok()
                    .and_then(|b| b.as_deref())
                    .and_then(Record::expires_at);
                let now = self.inner.now();
                let judged = {
                    let mut state = self.inner.lock();
                    // Sent after the flight began (L-12).
                    let read_seq = state.machine.flight_seq(flight);
                    Self::judge(&mut state, stored, answer, decoded, now, read_seq)
                };
                match judged {
                    Judged::Value(v) => return Ok((v, Source::Remote, None, expires)),
                    Judged::Placeholder => return Err(self.not_found_error()),
                    Judged::Undecodable | Judged::Corrupt => {
                        let _ = remote.delete(stored).await;
                    }
                    Judged::Miss => {}
                }
                if refresh && self.inner.lock().machine.waiters(flight) == 0 {
                    // Not the refresher and nobody waits: nothing to load.
                    return Err(LoaderError::Cancelled);
                }
            }
        }
        if !self.inner.lock().machine.load_started(flight) {
            return Err(LoaderError::Closed);
        }
        let result = run_loader(cell, load(key)).await?;
        // From here on the flight is not cancelled: its write completes or
        // is dropped whole, never half-made (L-2).
        let (outcome, answer) = match result {
            Ok(v) => match self.inner.opts.codec.encode(&v) {
                Ok(bytes) => (LoadOutcome::Value(bytes), Ok(v)),
                Err(e) => {
                    return Err(LoaderError::Codec(e));
                }
            },
            Err(e) if self.inner.opts.not_found.as_ref().is_some_and(|n| n.is(&e)) => {
                let err = self
                    .inner
                    .not_found()
                    .map_or(LoaderError::Miss, LoaderError::NotFound);
                (LoadOutcome::NotFound, Err(err))
            }
            Err(e) => (LoadOutcome::Failed, Err(LoaderError::Loader(e))),
        };
        let now = self.inner.now();
        let (order, local_only) = {
            let mut state = self.inner.lock();
            let rand = state.rng.next_u64();
            let order = state
                .machine
                .load_finished(flight, stored, outcome, ttl_ms, now, rand);
            // Without a remote tier nothing stands between the decision and
            // the local write (L-4's remote-first order is empty): both
            // under one lock, as `apply_write` would make them.
            let local_only = match &order {
                Some(order) if self.inner.remote.is_none() => Some(
                    !self.inner.is_closed()
                        && state
                            .machine
                            .write_applied(order, RemoteWrite::NoRemote, now),
                ),
                _ => None,
            };
            (order, local_only)
        };
        let mut warning = None;
        if let Some(order) = order {
            let mutated = match local_only {
                Some(mutated) => mutated,
                None => {
                    let (mutated, w) = self.apply_write(&order).await;
                    warning = w;
                    mutated
                }
            };
            if mutated && self.inner.bus.is_some() {
                let kind = if refresh {
                    EventKind::Refresh
                } else {
                    EventKind::Load
                };
                self.publish(kind, vec![stored.to_string()]).await;
            }
        }
        answer.map(|v| (v, Source::Loader, warning, None))
    }

    /// Writes the remote first, then the local tier if the remote took it (L-4).
    async fn apply_write(&self, order: &WriteOrder) -> (bool, Option<RemoteError>) {
        if self.inner.is_closed() {
            return (false, None);
        }
        let (remote, warning) = match &self.inner.remote {
            None => (RemoteWrite::NoRemote, None),
            Some(r) => {
                let res = match order.mode {
                    WriteMode::Always => r
                        .set(&order.key, order.record.encode(), order.ttl_ms)
                        .await
                        .map(|()| true),
                    WriteMode::IfAbsent => {
                        r.set_if_absent(&order.key, order.record.encode(), order.ttl_ms)
                            .await
                    }
                };
                match res {
                    Ok(b) => (RemoteWrite::Done(b), None),
                    Err(e) => (RemoteWrite::failed(&e), Some(e)),
                }
            }
        };
        let now = self.inner.now();
        let mutated = self.inner.lock().machine.write_applied(order, remote, now);
        (mutated, warning)
    }

    /// Publishes one event for a mutation (L-11). Callers on a hot path
    /// check for a bus first, so a loader without one builds no key list.
    async fn publish(&self, kind: EventKind, keys: Vec<String>) {
        let Some(bus) = self.inner.bus.clone() else {
            return;
        };
        let event = self.inner.lock().machine.emit(kind, keys);
        if bus.publish(event).await.is_err() {
            self.inner.lock().machine.emit_failed();
        }
    }

    /// The value of `key` from the tiers, without a loader: [`LoaderError::Miss`]
    /// when no tier has it, [`LoaderError::NotFound`] for a placeholder.
    pub async fn get(&self, key: impl Into<Key>) -> Result<V, LoaderError> {
        let key = key.into();
        if self.inner.is_closed() {
            return Err(LoaderError::Closed);
        }
        let stored = self.stored_key(&key);
        let now = self.inner.now();
        let (read, read_seq) = {
            let mut state = self.inner.lock();
            (state.machine.read_local(&stored, now), state.machine.seq())
        };
        match read {
            LocalRead::Value(bytes) => match self.decode(&bytes) {
                Ok(v) => return Ok(v),
                Err(_) => self.inner.lock().machine.corrupt(&stored),
            },
            LocalRead::Placeholder => return Err(self.not_found_error()),
            LocalRead::Miss => {}
        }
        let Some(remote) = self.inner.remote.clone() else {
            return Err(LoaderError::Miss);
        };
        let answer = remote.get(&stored).await;
        let failure = answer.as_ref().err().cloned();
        let now = self.inner.now();
        let read =
            self.inner
                .lock()
                .machine
                .remote_read(&stored, answer.map_err(|_| ()), now, read_seq);
        match read {
            RemoteRead::Live(record) => match record.payload {
                Payload::Value(bytes) => match self.decode(&bytes) {
                    Ok(v) => Ok(v),
                    Err(e) => {
                        self.inner.lock().machine.corrupt(&stored);
                        let _ = remote.delete(&stored).await;
                        Err(e)
                    }
                },
                Payload::Placeholder => Err(self.not_found_error()),
            },
            RemoteRead::Corrupt => {
                let _ = remote.delete(&stored).await;
                Err(LoaderError::Miss)
            }
            RemoteRead::Miss => Err(LoaderError::Miss),
            RemoteRead::Failed => Err(LoaderError::RemoteUnavailable(failure.unwrap_or(
                RemoteError::Unavailable {
                    op: "get",
                    detail: "unknown".into(),
                },
            ))),
        }
    }

    /// Whether a live value (not a placeholder, L-6) is in a tier.
    pub async fn exists(&self, key: impl Into<Key>) -> Result<bool, LoaderError> {
        match self.get(key).await {
            Ok(_) => Ok(true),
            Err(LoaderError::Miss | LoaderError::NotFound(_) | LoaderError::Codec(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes `value` under `key` in every tier (L-7: overwrites a
    /// placeholder). The remote first: if it fails, nothing changes locally
    /// and the error is returned (L-4).
    pub async fn set(
        &self,
        key: impl Into<Key>,
        value: V,
        call: CallOptions,
    ) -> Result<(), LoaderError> {
        let key = key.into();
        if let Some(ttl) = call.ttl_ms {
            check_ttl("ttl_ms", ttl)?;
        }
        if self.inner.is_closed() {
            return Err(LoaderError::Closed);
        }
        let stored = self.stored_key(&key);
        let bytes = self
            .inner
            .opts
            .codec
            .encode(&value)
            .map_err(LoaderError::Codec)?;
        let now = self.inner.now();
        let order = {
            let mut state = self.inner.lock();
            let rand = state.rng.next_u64();
            state
                .machine
                .prepare_set(&stored, bytes, call.ttl_ms, now, rand)
        };
        let (mutated, warning) = self.apply_write(&order).await;
        if mutated && self.inner.bus.is_some() {
            self.publish(EventKind::Set, vec![stored]).await;
        }
        match warning {
            Some(e) => Err(LoaderError::RemoteUnavailable(e)),
            None if self.inner.is_closed() => Err(LoaderError::Closed),
            None => Ok(()),
        }
    }

    /// Deletes `key` from every tier and cancels its refresh task (L-9).
    pub async fn delete(&self, key: impl Into<Key>) -> Result<(), LoaderError> {
        let key = key.into();
        if self.inner.is_closed() {
            return Err(LoaderError::Closed);
        }
        let stored = self.stored_key(&key);
        self.inner.lock().machine.delete(&stored);
        if let Some(remote) = &self.inner.remote {
            let deleted = remote.delete(&stored).await;
            // A read that began after the local drop but was answered
            // before the remote row went may have copied it back: touch
            // the key again now the row is gone (L-12).
            self.inner.lock().machine.delete(&stored);
            if let Err(e) = deleted {
                // A delete that may still land is announced all the same:
                // other nodes' copies may no longer match the remote (L-12).
                if e.may_have_applied() && self.inner.bus.is_some() {
                    self.publish(EventKind::Delete, vec![stored]).await;
                }
                return Err(LoaderError::RemoteUnavailable(e));
            }
        }
        if self.inner.bus.is_some() {
            self.publish(EventKind::Delete, vec![stored]).await;
        }
        Ok(())
    }

    /// Loads many keys (L-13): hits from the tiers; one loader call with
    /// exactly the de-duplicated keys that missed every tier; each missed
    /// key becomes a value, or a placeholder when the loader's map lacks it
    /// and not-found caching is on. On failure no tier changes and the hits
    /// are returned with the error. Concurrent batches with the same missing
    /// set share one loader call.
    pub async fn load_many<F, Fut>(&self, keys: Vec<Key>, call: CallOptions, loader: F) -> Batch<V>
    where
        F: FnOnce(Vec<Key>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<BTreeMap<Key, V>, ResolverError>> + Send + 'static,
    {
        let mut out = Batch {
            values: Vec::new(),
            not_found: Vec::new(),
            error: None,
            warning: None,
            missed: Vec::new(),
        };
        if let Some(ttl) = call.ttl_ms {
            if let Err(e) = check_ttl("ttl_ms", ttl) {
                out.error = Some(e);
                return out;
            }
        }
        if self.inner.is_closed() {
            out.error = Some(LoaderError::Closed);
            return out;
        }
        // Sorted and de-duplicated, as a set would give them, without
        // building one.
        let keys = sort_dedup(keys);
        let now = self.inner.now();
        // Every stored key of the batch in one buffer, lent out as `&str`.
        let stored = self.inner.coder.stored_keys(keys.iter());
        // What each key got, by its place in `keys`: the answer is read off
        // in key order at the end, with no map built and no sort.
        let mut got: Vec<Got<V>> = Vec::with_capacity(keys.len());
        // The places of the keys no local copy answered.
        let mut wanted: Vec<usize> = Vec::with_capacity(keys.len());
        // Remote answers are judged against what touched their keys since
        // (L-12): they are all sent after this.
        let read_seq;
        if call.skip_local {
            read_seq = self.inner.lock().machine.seq();
            got.resize_with(keys.len(), || Got::Nothing);
            wanted.extend(0..keys.len());
        } else {
            // One lock for every local read; decoding waits until it is
            // released. Reads of distinct keys commute, so this is the
            // order a key-by-key loop would leave too.
            let reads: Vec<LocalRead> = {
                let mut state = self.inner.lock();
                read_seq = state.machine.seq();
                stored
                    .iter()
                    .map(|s| state.machine.read_local(s, now))
                    .collect()
            };
            for (i, read) in reads.into_iter().enumerate() {
                got.push(match read {
                    LocalRead::Value(bytes) => match self.decode(&bytes) {
                        Ok(v) => Got::Value(v),
                        Err(_) => {
                            self.inner.lock().machine.corrupt(stored.get(i));
                            wanted.push(i);
                            Got::Nothing
                        }
                    },
                    LocalRead::Placeholder => Got::NotFound,
                    LocalRead::Miss => {
                        wanted.push(i);
                        Got::Nothing
                    }
                });
            }
        }
        // The places of the keys that missed every tier.
        let mut missing: Vec<usize> = Vec::new();
        match &self.inner.remote {
            Some(remote) if !wanted.is_empty() => {
                let asked: Vec<&str> = wanted.iter().map(|&i| stored.get(i)).collect();
                // The answers move one by one into the machine (which keeps
                // them as local copies), each value decoded from them first,
                // outside the lock: a batch's values are copied once, by the
                // remote client (the loader_redis bench's batch row).
                let answers: Vec<Result<Option<Vec<u8>>, ()>> = match remote.multi_get(&asked).await
                {
                    Ok(a) => {
                        let mut a = a.into_iter();
                        asked.iter().map(|_| Ok(a.next().flatten())).collect()
                    }
                    Err(_) => asked.iter().map(|_| Err(())).collect(),
                };
                let decoded: Vec<_> = answers.iter().map(|a| self.decode_answer(a)).collect();
                let now = self.inner.now();
                let mut corrupt = Vec::new();
                {
                    let mut state = self.inner.lock();
                    let judged = wanted.into_iter().zip(answers.into_iter().zip(decoded));
                    for (i, (answer, decoded)) in judged {
                        match Self::judge(&mut state, stored.get(i), answer, decoded, now, read_seq)
                        {
                            Judged::Value(v) => got[i] = Got::Value(v),
                            Judged::Placeholder => got[i] = Got::NotFound,
                            Judged::Undecodable | Judged::Corrupt => {
                                corrupt.push(i);
                                missing.push(i);
                            }
                            Judged::Miss => missing.push(i),
                        }
                    }
                }
                for i in corrupt {
                    let _ = remote.delete(stored.get(i)).await;
                }
            }
            _ => missing = wanted,
        }
        if !missing.is_empty() {
            out.missed = missing.iter().map(|&i| keys[i].clone()).collect();
            let flight_keys: Vec<(Key, String)> = missing
                .iter()
                .map(|&i| (keys[i].clone(), stored.get(i).to_string()))
                .collect();
            match self.load_missing(flight_keys, call, loader).await {
                Ok((loaded, warning)) => {
                    out.warning = warning;
                    // The flight answers its keys in the order it was given
                    // them: `missing`'s.
                    for (&i, (_, v)) in missing.iter().zip(loaded) {
                        got[i] = v.map_or(Got::NotFound, Got::Value);
                    }
                }
                Err(e) => out.error = Some(e),
            }
        }
        // Keys in order, so both lists come out sorted.
        for (key, g) in keys.into_iter().zip(got) {
            match g {
                Got::Value(v) => out.values.push((key, v)),
                Got::NotFound => out.not_found.push(key),
                Got::Nothing => {}
            }
        }
        out
    }

    /// The batch flight (L-13) for the keys that missed every tier, led or
    /// joined: each key's loaded value, or `None` for not found, in the
    /// order given.
    async fn load_missing<F, Fut>(
        &self,
        missing: Vec<(Key, String)>,
        call: CallOptions,
        loader: F,
    ) -> BatchOutcome<V>
    where
        F: FnOnce(Vec<Key>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<BTreeMap<Key, V>, ResolverError>> + Send + 'static,
    {
        let fk = FlightKey::batch(missing.iter().map(|(_, s)| s.clone()).collect());
        let loader: BatchFn<V> = Box::new(move |ks| Box::pin(loader(ks)));
        let (begin, cell) = {
            let mut state = self.inner.lock();
            let Some(begin) = state.machine.begin(fk, false) else {
                return Err(LoaderError::Closed);
            };
            let (cell, lead) = self.flight_cell(&mut state, begin);
            drop(state);
            if let Some(flight) = lead {
                let this = self.clone();
                let cell = cell.clone();
                spawn_tracked(&self.inner, async move {
                    let outcome = this
                        .batch_body(flight, missing, loader, call.ttl_ms, &cell)
                        .await;
                    this.settle(flight, Outcome::Batch(outcome));
                });
            }
            (begin, cell)
        };
        match self.wait(begin, &cell).await {
            Ok(Outcome::Batch(outcome)) => outcome,
            Ok(Outcome::Ended(e)) | Err(e) => Err(e),
            Ok(Outcome::Single(_)) => Err(LoaderError::Cancelled),
        }
    }

    async fn batch_body(
        &self,
        flight: FlightId,
        missing: Vec<(Key, String)>,
        loader: BatchFn<V>,
        ttl_ms: Option<i64>,
        cell: &FlightCell<Outcome<V>>,
    ) -> BatchOutcome<V> {
        if !self.inner.lock().machine.load_started(flight) {
            return Err(LoaderError::Closed);
        }
        let keys: Vec<Key> = missing.iter().map(|(k, _)| k.clone()).collect();
        let result = run_loader(cell, loader(keys)).await?;
        let mut loaded = match result {
            Ok(m) => m,
            Err(e) => {
                let now = self.inner.now();
                let stored = missing.first().map(|(_, s)| s.clone()).unwrap_or_default();
                self.inner.lock().machine.load_finished(
                    flight,
                    &stored,
                    LoadOutcome::Failed,
                    ttl_ms,
                    now,
                    0,
                );
                return Err(LoaderError::Loader(e));
            }
        };
        // Encode everything first: a value that cannot be encoded fails the
        // batch before any tier changes (L-13).
        let mut outcomes = Vec::new();
        for (key, stored) in &missing {
            let outcome = match loaded.get(key) {
                Some(v) => LoadOutcome::Value(
                    self.inner
                        .opts
                        .codec
                        .encode(v)
                        .map_err(LoaderError::Codec)?,
                ),
                None => LoadOutcome::NotFound,
            };
            outcomes.push((key.clone(), stored.clone(), outcome));
        }
        let now = self.inner.now();
        let orders: Vec<(Key, Option<WriteOrder>)> = {
            let mut state = self.inner.lock();
            outcomes
                .into_iter()
                .map(|(key, stored, outcome)| {
                    let rand = state.rng.next_u64();
                    let order = state
                        .machine
                        .load_finished(flight, &stored, outcome, ttl_ms, now, rand);
                    (key, order)
                })
                .collect()
        };
        let mut warning = None;
        let mut mutated = Vec::new();
        let values: Vec<&WriteOrder> = orders
            .iter()
            .filter_map(|(_, o)| o.as_ref())
            .filter(|o| o.mode == WriteMode::Always)
            .collect();
        let value_write = match &self.inner.remote {
            None => RemoteWrite::NoRemote,
            Some(_) if values.is_empty() => RemoteWrite::Done(true),
            Some(r) => {
                let items = values
                    .iter()
                    .map(|o| (o.key.clone(), o.record.encode(), o.ttl_ms))
                    .collect();
                match r.multi_set(items).await {
                    Ok(()) => RemoteWrite::Done(true),
                    Err(e) => {
                        let write = RemoteWrite::failed(&e);
                        warning = Some(e);
                        write
                    }
                }
            }
        };
        for (_, order) in &orders {
            let Some(order) = order else { continue };
            let applied = if order.mode == WriteMode::Always {
                let now = self.inner.now();
                self.inner
                    .lock()
                    .machine
                    .write_applied(order, value_write, now)
            } else {
                let (m, w) = self.apply_write(order).await;
                warning = warning.or(w);
                m
            };
            if applied {
                mutated.push(order.key.clone());
            }
        }
        if !mutated.is_empty() {
            self.publish(EventKind::Batch, mutated).await;
        }
        let answer = missing
            .into_iter()
            .map(|(key, _)| {
                let v = loaded.remove(&key);
                (key, v)
            })
            .collect::<Vec<_>>();
        Ok((answer, warning))
    }

    /// Closes the loader (L-9): every refresh task and flight is cancelled,
    /// waiters get [`LoaderError::Closed`], the event subscriber and the
    /// ticker stop; returns once no background task remains (LINV-8).
    /// Idempotent; afterwards every call fails with `Closed`.
    pub async fn close(&self) {
        let cells: Vec<_> = {
            let mut state = self.inner.lock();
            state.machine.close();
            std::mem::take(&mut state.cells).into_values().collect()
        };
        self.inner.is_closed.store(true, Ordering::SeqCst);
        self.inner.closed.cancel();
        for cell in cells {
            cell.cancel();
            cell.answer(Outcome::Ended(LoaderError::Closed));
        }
        loop {
            let done = self.inner.tasks_done.notified();
            if self.inner.live_tasks.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }
}

/// How `once` goes on after its synchronous start.
enum Start<V, F> {
    /// Answered without a flight (the local tier, or closed).
    Done(Result<Loaded<V>, LoaderError>),
    /// Wait on this flight, led or joined.
    Flight(Begin, Arc<FlightCell<Outcome<V>>>),
    /// The key's flight was already cancelled: start again once it settles.
    Again(Again<V, F>),
}

/// What `once` needs to start again after a cancelled flight settles.
struct Again<V, F> {
    cell: Arc<FlightCell<Outcome<V>>>,
    key: Key,
    loader: Option<F>,
    load: Option<LoadFn<V>>,
}

/// A remote answer as [`Loader::judge`] sorts it.
enum Judged<V> {
    /// A live value, decoded.
    Value(V),
    /// A live placeholder (L-6).
    Placeholder,
    /// A live value envelope whose value does not decode as `V` (L-14).
    Undecodable,
    /// Bytes that are no record envelope (L-14).
    Corrupt,
    /// Absent, expired, or the read failed (L-4): load instead.
    Miss,
}

/// Runs a flight's loader until it answers or the flight is cancelled (its
/// last waiter left, L-2); a panic in the loader is its error (C-14's
/// rule, applied to loaders).
async fn run_loader<T, V: Clone>(
    cell: &FlightCell<Outcome<V>>,
    load: impl Future<Output = Result<T, ResolverError>>,
) -> Result<Result<T, ResolverError>, LoaderError> {
    let result = tokio::select! {
        biased;
        _ = cell.cancelled() => return Err(LoaderError::Cancelled),
        r = AssertUnwindSafe(load).catch_unwind() => r,
    };
    Ok(result.unwrap_or_else(|panic| {
        Err(ResolverError::msg(format!(
            "loader panicked: {}",
            panic_text(&panic)
        )))
    }))
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string payload".into()
    }
}
