//! The `loader-net` world's hosts and what they share: the database model,
//! simulated time and clock jumps, the observation log, the nodes' current
//! loaders, the bus faults in force, the trace.
//!
//! Hosts serve, oracles judge: node hosts run client streams on their
//! real [`Loader`] and *record* what happened (loader calls starting and
//! ending, what each call was served, what the bus host dropped); the
//! [`super::oracle`] reads that log between simulation steps and decides.
//! Client streams run as tasks inside their node rather than as hosts
//! behind another socket: the loader is a library a service calls in
//! process, so a client↔node hop would add no loader behaviour, and in
//! process a call's start and end are observed exactly (the oracle's
//! "did this caller start before that failure?" needs that).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cache_core::error::ResolverError;
use cache_core::facade::{Clock, ManualClock};
use cache_core::loader::bus::{BusError, Subscription};
use cache_core::loader::{
    CallOptions, Event, EventBus, Key, Loaded, Loader, LoaderError, LoaderOptions, MemoryRemote,
    NotFound, RemoteError,
};
use serde::{Deserialize, Serialize};

use super::bus::{BusPolicy, CopyFate, NetBus, NetBusStats, WireEvent};
use super::plan::{NetOpKind, NetPlan};
use super::remote::{NetRemote, RemoteReply, RemoteReq};
use super::scenario::NetScenario;
use super::BoxFuture;
use crate::rng::Rng;
use crate::world::EPOCH_MS;

/// The cache's name (the first field of every stored key).
pub const CACHE: &str = "net";
/// The error a loader returns for "not found" (the configured one, L-6).
pub const NOT_FOUND: &str = "not found";

/// A value the database model hands out: which key, which version. Typed,
/// so the oracle compares fields, never display text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DbValue {
    /// The key index.
    pub key: u64,
    /// The database's version of it.
    pub version: u64,
}

/// A planned loader failure, with an id no other failure has: a served
/// loader error names the one loader call it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimLoadFailure {
    /// Its id.
    pub id: u64,
}

impl std::fmt::Display for SimLoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "planned loader failure #{}", self.id)
    }
}

impl std::error::Error for SimLoadFailure {}

/// The database model: a version per key and whether it is present now,
/// and every version each key ever had (what LINV-2 accepts).
#[derive(Clone, Debug, Default)]
pub struct Db {
    rows: Vec<(u64, bool)>,
    history: Vec<BTreeSet<u64>>,
}

impl Db {
    /// `n` keys, each present at version 0.
    pub fn new(n: usize) -> Self {
        Self {
            rows: vec![(0, true); n],
            history: vec![BTreeSet::from([0]); n],
        }
    }

    /// The value of `key` now, `None` when absent (or no such key).
    pub fn read(&self, key: u64) -> Option<DbValue> {
        let (version, present) = *self.rows.get(key as usize)?;
        present.then_some(DbValue { key, version })
    }

    /// A new version of `key`, present.
    pub fn bump(&mut self, key: u64) -> DbValue {
        let i = key as usize;
        let version = self.rows[i].0 + 1;
        self.rows[i] = (version, true);
        self.history[i].insert(version);
        DbValue { key, version }
    }

    /// `key` is gone.
    pub fn remove(&mut self, key: u64) {
        self.rows[key as usize].1 = false;
    }

    /// Whether the database ever held `v` under `v.key`.
    pub fn ever_had(&self, v: &DbValue) -> bool {
        self.history
            .get(v.key as usize)
            .is_some_and(|h| h.contains(&v.version))
    }
}

/// What a loader call was for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flight {
    /// One key.
    Single(u64),
    /// A batch (its keys, sorted): its own kind of flight (L-5).
    Batch(Vec<u64>),
}

/// One observation, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Obs {
    /// A loader call started on node `node`'s incarnation `inc`.
    LoadStart {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
        /// What for.
        flight: Flight,
    },
    /// That call ended (returned, or was dropped: cancelled or its node stopped).
    LoadEnd {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
        /// What for.
        flight: Flight,
    },
    /// A loader call failed with failure `id`.
    LoadFailed {
        /// The failure's id.
        id: u64,
    },
    /// A loader call said `key` is not found.
    SaidNotFound {
        /// Key index.
        key: u64,
    },
    /// A caller that started at `started` (a [`NetWorld::next_seq`]) was served a value.
    Served {
        /// Node.
        node: usize,
        /// The key asked for.
        key: u64,
        /// What it got.
        value: DbValue,
        /// When the call started.
        started: u64,
    },
    /// A caller was told "not found" (from a loader or a placeholder).
    ServedNotFound {
        /// Node.
        node: usize,
        /// The key asked for.
        key: u64,
    },
    /// A caller that started at `started` got loader failure `id`.
    ServedFailure {
        /// Node.
        node: usize,
        /// The key asked for (the first of a batch).
        key: u64,
        /// The failure's id.
        id: u64,
        /// When the call started.
        started: u64,
    },
    /// A caller got a loader error that is no planned failure.
    ServedForeignError {
        /// Node.
        node: usize,
        /// What it was.
        detail: String,
    },
    /// The bus host dropped a copy of an event for `node` (a silent loss:
    /// L-12 then bounds staleness by the local lifetime only).
    CopyDropped {
        /// The subscriber node's name.
        node: String,
        /// The event's stored keys.
        keys: Vec<String>,
    },
    /// A node's publish failed: the event may have reached nobody.
    PublishLost {
        /// The event's stored keys.
        keys: Vec<String>,
    },
    /// The remote host applied a write: `key` now holds `bytes` (`None`:
    /// deleted or found absent).
    RemoteWrote {
        /// The stored key.
        key: String,
        /// What it holds.
        bytes: Option<Vec<u8>>,
    },
    /// A node restarted while its streams were in these operations: a
    /// remote write may have landed without its event (the node died
    /// between the two), a loss no node can know of.
    CrashedMidOp {
        /// The key indexes of the operations cut short.
        keys: Vec<u64>,
    },
    /// A remote write timed out: it may have been applied, and no event
    /// follows (L-4 reports it as failed).
    AmbiguousWrite {
        /// The key index.
        key: u64,
    },
    /// A read (`once`, `load_many`) of `keys` starts on a node incarnation:
    /// it marks its keys read (L-9's idle window) and the loader reads the
    /// clock, which reads `clock_ms` now (LINV-3 judges on it).
    Read {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
        /// The key indexes read.
        keys: Vec<u64>,
        /// Whether refresh-ahead was asked (the key gets a refresh task).
        refresh: bool,
        /// The call's start (a [`NetWorld::next_seq`]).
        started: u64,
        /// The injected clock when it started, ms.
        clock_ms: i64,
    },
    /// A `delete(key)` starts on a node incarnation (L-9: its refresh task goes).
    DeleteStarted {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
        /// The key index.
        key: u64,
    },
    /// A `once` that started at `started` was served a tier record that
    /// expires at `expires_at_ms` on the injected clock (LINV-3).
    ServedRecord {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
        /// The key index.
        key: u64,
        /// The record's expiry, as the loader reports it.
        expires_at_ms: i64,
        /// When the call started.
        started: u64,
    },
    /// A `once` caller joined a flight another caller led (L-15 counts it).
    Joined {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
    },
    /// A `load_many` call `call` of the key indexes `asked` starts.
    BatchCall {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
        /// The call (its start, a [`NetWorld::next_seq`]).
        call: u64,
        /// The key indexes asked for, as given (duplicates too).
        asked: Vec<u64>,
    },
    /// The batch loader `call` handed to `load_many` was called with `keys`
    /// (as given: order and repeats kept).
    BatchLoaderSaw {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
        /// The `load_many` call whose loader it is.
        call: u64,
        /// The key indexes it was given.
        keys: Vec<u64>,
    },
    /// A `load_many` call returned: the keys it says missed every tier.
    BatchDone {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
        /// The call.
        call: u64,
        /// The key indexes that missed every tier (the batch flight's keys).
        missed: Vec<u64>,
        /// Whether a flight answered them (no `Closed` or cancelled error).
        answered: bool,
        /// The values the call got for its missed keys.
        loaded: Vec<(u64, DbValue)>,
    },
    /// A loader call that ignores cancellation finished after the loader
    /// had dropped it: its result went nowhere.
    LateResult {
        /// Node.
        node: usize,
        /// What it was for.
        flight: Flight,
    },
}

/// What a node reported after `close()` (LINV-8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Closed {
    /// The loader's background tasks still counted.
    pub background_tasks: usize,
    /// Flights in the air.
    pub flights: usize,
    /// Refresh tasks.
    pub refresh_tasks: usize,
}

/// One node's current incarnation.
#[derive(Clone, Default)]
pub struct NodeSlot {
    /// Incarnation number (1 = first start; 0 = not started).
    pub inc: u64,
    /// Its loader.
    pub loader: Option<Loader<DbValue>>,
    /// Its bus client's counters.
    pub bus: Option<Arc<NetBusStats>>,
    /// Its report after close, once closed.
    pub closed: Option<Closed>,
    /// Fired before its host is torn down (a restart): its sockets close
    /// in the order its tasks run, which the seed decides.
    pub stop: tokio_util::sync::CancellationToken,
}

/// The bus faults in force (per mille, ms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusFaultState {
    /// Per mille of copies dropped.
    pub drop: u64,
    /// Per mille of copies written twice.
    pub duplicate: u64,
    /// Longest delay of a copy, ms.
    pub max_delay_ms: u64,
}

/// Shared state of one `loader-net` simulation.
pub struct NetWorld {
    /// The scenario.
    pub scenario: NetScenario,
    /// The plan.
    pub plan: NetPlan,
    now_ms: AtomicU64,
    jump_ms: Mutex<i64>,
    /// The clock every loader and the remote judge lifetimes on
    /// (epoch + simulated time + jumps); no OS time.
    pub clock: ManualClock,
    /// The remote host's backend (the convergence oracle peeks it).
    pub remote: MemoryRemote,
    db: Mutex<Db>,
    log: Mutex<Vec<Obs>>,
    seq: AtomicU64,
    nodes: Mutex<Vec<NodeSlot>>,
    progress: Mutex<Vec<usize>>,
    /// Per stream: the keys of the operation under way, if any.
    under_way: Mutex<Vec<Vec<u64>>>,
    done: Mutex<Vec<bool>>,
    rng: Mutex<Rng>,
    bus_faults: Mutex<BusFaultState>,
    close: AtomicBool,
    trace: Mutex<Vec<String>>,
    quiet: AtomicBool,
    counters: Mutex<BTreeMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The turmoil name of node `n`.
pub fn node_name(n: usize) -> String {
    format!("node{n}")
}

/// The loader key of key index `k`: one part below 10, else one part per
/// decimal digit (`12` is `["1", "2"]`), as services key by several
/// fields: a batch of keys 1 and 2 and a batch of key 12 then have the
/// same parts in the same order, which only an injective batch flight key
/// tells apart (L-5, L-13).
pub fn key_of(k: u64) -> Key {
    if k < 10 {
        Key::new([k.to_string()])
    } else {
        Key::new(k.to_string().chars().map(String::from).collect::<Vec<_>>())
    }
}

/// The key index of a loader key made by [`key_of`].
pub fn index_of(key: &Key) -> u64 {
    key.parts()
        .iter()
        .try_fold(0u64, |acc, p| {
            let d: u64 = p.parse().ok()?;
            acc.checked_mul(10)?.checked_add(d)
        })
        .unwrap_or(u64::MAX)
}

impl NetWorld {
    /// A world for `plan` under `scenario`.
    pub fn new(scenario: NetScenario, plan: NetPlan) -> Self {
        let clock = ManualClock::new(EPOCH_MS);
        let streams = plan.streams.len();
        Self {
            remote: MemoryRemote::new(Arc::new(clock.clone())),
            db: Mutex::new(Db::new(scenario.key_space)),
            nodes: Mutex::new(vec![NodeSlot::default(); scenario.nodes]),
            rng: Mutex::new(Rng::new(plan.seed, "loader-net-run")),
            scenario,
            plan,
            now_ms: AtomicU64::new(0),
            jump_ms: Mutex::new(0),
            clock,
            log: Mutex::new(Vec::new()),
            seq: AtomicU64::new(1),
            progress: Mutex::new(vec![0; streams]),
            under_way: Mutex::new(vec![Vec::new(); streams]),
            done: Mutex::new(vec![false; streams]),
            bus_faults: Mutex::new(BusFaultState::default()),
            close: AtomicBool::new(false),
            trace: Mutex::new(Vec::new()),
            quiet: AtomicBool::new(false),
            counters: Mutex::new(BTreeMap::new()),
        }
    }

    /// Simulated ms since the start.
    pub fn now(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    /// Moves simulated time (once per step) and the clock with it.
    pub fn set_now(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::SeqCst);
        let t = EPOCH_MS
            .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
            .saturating_add(*lock(&self.jump_ms));
        self.clock.set(t);
    }

    /// A clock jump (fault).
    pub fn jump(&self, ms: i64) {
        {
            let mut j = lock(&self.jump_ms);
            *j = j.saturating_add(ms);
        }
        self.set_now(self.now());
    }

    /// A number that orders observations (call starts, failures).
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    /// Records an observation.
    pub fn observe(&self, o: Obs) {
        lock(&self.log).push(o);
    }

    /// Takes the observations recorded since the last call.
    pub fn drain_log(&self) -> Vec<Obs> {
        std::mem::take(&mut *lock(&self.log))
    }

    /// The database model.
    pub fn db(&self) -> MutexGuard<'_, Db> {
        lock(&self.db)
    }

    /// While set, trace lines are dropped (a bounced host's teardown runs
    /// in an order tokio does not make deterministic).
    pub fn set_quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::SeqCst);
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

    /// Counts an event.
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

    /// The nodes' current incarnations.
    pub fn nodes(&self) -> Vec<NodeSlot> {
        lock(&self.nodes).clone()
    }

    /// Sets the bus faults in force.
    pub fn set_bus_faults(&self, f: BusFaultState) {
        *lock(&self.bus_faults) = f;
    }

    /// The bus faults in force.
    pub fn bus_faults(&self) -> BusFaultState {
        *lock(&self.bus_faults)
    }

    /// Node `n` is about to restart: its network clients stop (their
    /// sockets close now, in an order the seed decides, before the host's
    /// teardown), and the operations its streams are in are cut short
    /// (recorded as [`Obs::CrashedMidOp`]).
    pub fn crashing(&self, n: usize) {
        lock(&self.nodes)[n].stop.cancel();
        let per = self.scenario.streams_per_node;
        let keys: Vec<u64> = lock(&self.under_way)[n * per..(n + 1) * per]
            .iter_mut()
            .flat_map(std::mem::take)
            .collect();
        if !keys.is_empty() {
            self.observe(Obs::CrashedMidOp { keys });
        }
    }

    /// Asks every node to close its loader.
    pub fn request_close(&self) {
        self.close.store(true, Ordering::SeqCst);
    }

    /// Whether every stream finished its plan.
    pub fn all_done(&self) -> bool {
        lock(&self.done).iter().all(|d| *d)
    }

    /// Whether every node reported its close.
    pub fn all_closed(&self) -> bool {
        lock(&self.nodes).iter().all(|s| s.closed.is_some())
    }

    /// A loader call's behaviour: 0 value, 1 fail, 2 not found; its
    /// duration; whether it ignores cancellation.
    fn behaviour(&self) -> (usize, u64, bool) {
        let l = &self.scenario.loader;
        let mut rng = lock(&self.rng);
        let kind = rng.weighted(&[l.value, l.fail, l.not_found]);
        let ms = if rng.chance(l.slow) {
            rng.range(1, l.slow_ms)
        } else {
            rng.range(1, l.max_duration_ms)
        };
        (kind, ms, rng.chance(l.ignore_cancel))
    }

    /// A read's or write's own lifetime, if it asks one (short, so it
    /// expires within the run).
    fn call_options(&self) -> CallOptions {
        let s = &self.scenario;
        let mut rng = lock(&self.rng);
        if rng.chance(s.short_ttl) {
            CallOptions::default().ttl_ms(rng.range(1, s.short_ttl_ms) as i64)
        } else {
            CallOptions::default()
        }
    }

    /// The injected clock now, ms.
    pub fn clock_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A loader call's work, run after its drawn duration. A call that
    /// ignores cancellation runs on a detached task (a loader that does not
    /// watch its context): when the loader drops the call (its caller gave
    /// up, close), the work runs on, and its late result is recorded as
    /// such and goes nowhere. `None`: the detached task was lost (its
    /// host stopped).
    async fn work<T: Send + 'static>(
        self: &Arc<Self>,
        node: usize,
        flight: Flight,
        (ms, ignore): (u64, bool),
        work: impl FnOnce(&NetWorld) -> T + Send + 'static,
    ) -> Option<T> {
        if !ignore {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return Some(work(self));
        }
        let abandoned = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        let w = self.clone();
        let (gone, done) = (abandoned.clone(), finished.clone());
        let handle = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            done.store(true, Ordering::SeqCst);
            if gone.load(Ordering::SeqCst) {
                w.count("late-results");
                w.observe(Obs::LateResult { node, flight });
                return false;
            }
            true
        });
        let mut mark = Abandon {
            world: self.clone(),
            abandoned,
            finished,
            armed: true,
        };
        let answer = handle.await.unwrap_or(false);
        mark.armed = false;
        // The work is done (its outcome observed) in the loader's own
        // future, as the loader returns: done in the detached task, a
        // failure would be observed before the flight settles, and a
        // caller joining in between would look served a failure from
        // before its start (LINV-2) though it joined the flight in the air.
        answer.then(|| work(self))
    }

    /// What the remote host applied, as observations.
    pub fn remote_applied(&self, req: &RemoteReq, reply: &RemoteReply) {
        let wrote = |key: &String, bytes: Option<&Vec<u8>>| {
            self.observe(Obs::RemoteWrote {
                key: key.clone(),
                bytes: bytes.cloned(),
            })
        };
        match (req, reply) {
            (RemoteReq::Set(k, v, _), RemoteReply::Done)
            | (RemoteReq::SetIfAbsent(k, v, _), RemoteReply::Flag(true))
            | (RemoteReq::SetIfPresent(k, v, _), RemoteReply::Flag(true)) => wrote(k, Some(v)),
            (RemoteReq::Delete(k), RemoteReply::Flag(_)) => wrote(k, None),
            (RemoteReq::MultiSet(items), RemoteReply::Done) => {
                for (k, v, _) in items {
                    wrote(k, Some(v));
                }
            }
            _ => {}
        }
    }

    fn failure(&self) -> ResolverError {
        let id = self.next_seq();
        self.observe(Obs::LoadFailed { id });
        ResolverError::new(SimLoadFailure { id })
    }

    fn said_not_found(&self, key: u64) -> ResolverError {
        self.observe(Obs::SaidNotFound { key });
        ResolverError::msg(NOT_FOUND)
    }

    fn load_started(self: &Arc<Self>, node: usize, inc: u64, flight: Flight) -> LoadGuard {
        self.observe(Obs::LoadStart {
            node,
            inc,
            flight: flight.clone(),
        });
        LoadGuard {
            world: self.clone(),
            node,
            inc,
            flight,
        }
    }
}

/// Records a loader call's end when dropped: returned, cancelled (the
/// loader drops a cancelled call's future, L-2) or lost with its node.
struct LoadGuard {
    world: Arc<NetWorld>,
    node: usize,
    inc: u64,
    flight: Flight,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.world.observe(Obs::LoadEnd {
            node: self.node,
            inc: self.inc,
            flight: std::mem::replace(&mut self.flight, Flight::Single(0)),
        });
    }
}

/// Marks a cancellation-ignoring call's work abandoned when the loader
/// drops the call before it answered.
struct Abandon {
    world: Arc<NetWorld>,
    abandoned: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if self.armed {
            self.abandoned.store(true, Ordering::SeqCst);
            if !self.finished.load(Ordering::SeqCst) {
                self.world.count("loader-ignored-cancel");
            }
        }
    }
}

/// The bus host's faults, drawn from the world's seeded generator; every
/// dropped copy is recorded.
pub struct WorldBus(pub Arc<NetWorld>);

impl BusPolicy for WorldBus {
    fn fate(&self, node: &str, event: &WireEvent) -> CopyFate {
        let f = self.0.bus_faults();
        if f == BusFaultState::default() {
            return CopyFate::Now;
        }
        let (roll_drop, roll_dup, delay) = {
            let mut rng = lock(&self.0.rng);
            (
                rng.below(1000),
                rng.below(1000),
                rng.range(0, f.max_delay_ms),
            )
        };
        if roll_drop < f.drop {
            self.0.count("bus-copies-dropped");
            self.0.observe(Obs::CopyDropped {
                node: node.to_string(),
                keys: event.keys.clone(),
            });
            CopyFate::Drop
        } else if roll_dup < f.duplicate {
            self.0.count("bus-copies-duplicated");
            CopyFate::Twice
        } else if delay > 0 {
            self.0.count("bus-copies-delayed");
            CopyFate::Delay(delay)
        } else {
            CopyFate::Now
        }
    }
}

/// A node's bus: the [`NetBus`], with failed publishes recorded (their
/// events may have reached nobody).
struct LoggedBus {
    inner: Arc<NetBus>,
    world: Arc<NetWorld>,
}

impl EventBus for LoggedBus {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let keys = event.keys.clone();
            let r = self.inner.publish(event).await;
            if r.is_err() {
                self.world.count("publish-failed");
                self.world.observe(Obs::PublishLost { keys });
            }
            r
        })
    }

    fn subscribe(&self, node: &str) -> Subscription {
        self.inner.subscribe(node)
    }
}

/// A node host: starts a new incarnation with a fresh loader (its local
/// tier empty), waits until its bus subscription is up, runs its client
/// streams, and on request closes the loader and reports what remains.
pub async fn node_host(w: Arc<NetWorld>, n: usize) -> turmoil::Result {
    let inc = {
        let mut nodes = lock(&w.nodes);
        nodes[n].inc += 1;
        nodes[n].inc
    };
    let s = &w.scenario;
    let timeout = Duration::from_millis(s.timeout_ms);
    let stop = tokio_util::sync::CancellationToken::new();
    let remote = Arc::new(NetRemote::new("remote", timeout).stopping_on(stop.clone()));
    let bus = Arc::new(NetBus::new("bus", timeout).stopping_on(stop.clone()));
    let opts = LoaderOptions {
        node: node_name(n),
        ttl_ms: s.ttl_ms as i64,
        local_ttl_ms: s.local_ttl_ms as i64,
        jitter_ms: s.jitter_ms,
        seed: w.plan.seed ^ ((n as u64) << 40) ^ inc,
        local_capacity: s.local_capacity,
        not_found: Some(NotFound::new(
            ResolverError::msg(NOT_FOUND),
            s.not_found_ttl_ms as i64,
        )),
        refresh_interval_ms: s.refresh.interval_ms as i64,
        refresh_concurrency: s.refresh.concurrency,
        refresh_tasks_max: s.refresh.tasks_max,
        refresh_idle_ms: s.refresh.idle_ms as i64,
        ..LoaderOptions::new(CACHE)
    };
    let loader: Loader<DbValue> = Loader::builder(opts, Arc::new(w.clock.clone()))
        .bugs(s.bugs)
        .remote(remote)
        .bus(Arc::new(LoggedBus {
            inner: bus.clone(),
            world: w.clone(),
        }))
        .build()
        .map_err(|e| format!("node{n}: {e}"))?;
    {
        let mut nodes = lock(&w.nodes);
        nodes[n].loader = Some(loader.clone());
        nodes[n].bus = Some(bus.stats());
        nodes[n].closed = None;
        nodes[n].stop = stop;
    }
    bus.ready().await;
    w.trace(
        &node_name(n),
        format!("incarnation {inc} subscribed, serving"),
    );
    for st in 0..s.streams_per_node {
        tokio::spawn(stream(w.clone(), n, inc, st, loader.clone()));
    }
    while !w.close.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(crate::run::TICK_MS)).await;
    }
    w.count_by("refresh-loads", loader.counters().refreshes);
    loader.close().await;
    let closed = Closed {
        background_tasks: loader.background_tasks(),
        flights: loader.flights(),
        refresh_tasks: loader.refresh_tasks(),
    };
    lock(&w.nodes)[n].closed = Some(closed);
    w.trace(&node_name(n), "closed");
    std::future::pending::<()>().await;
    Ok(())
}

/// One client stream: its plan's operations in order, resuming after a
/// restart at the operation in progress.
async fn stream(w: Arc<NetWorld>, n: usize, inc: u64, st: usize, loader: Loader<DbValue>) {
    let idx = n * w.scenario.streams_per_node + st;
    loop {
        let i = lock(&w.progress)[idx];
        let Some(op) = w.plan.streams[idx].get(i).cloned() else {
            lock(&w.done)[idx] = true;
            return;
        };
        tokio::time::sleep(Duration::from_millis(op.gap_ms)).await;
        lock(&w.under_way)[idx] = op.kind.keys();
        run_op(&w, n, inc, &loader, &op.kind).await;
        lock(&w.under_way)[idx].clear();
        lock(&w.progress)[idx] = i + 1;
    }
}

fn single_loader(
    w: &Arc<NetWorld>,
    n: usize,
    inc: u64,
) -> impl Fn(Key) -> BoxFuture<'static, Result<DbValue, ResolverError>> + Send + Sync + 'static {
    let w = w.clone();
    move |key: Key| {
        let k = index_of(&key);
        let guard = w.load_started(n, inc, Flight::Single(k));
        let w = w.clone();
        Box::pin(async move {
            let _guard = guard;
            let (kind, ms, ignore) = w.behaviour();
            let got = w
                .work(n, Flight::Single(k), (ms, ignore), move |w| match kind {
                    0 => w.db().read(k).ok_or_else(|| w.said_not_found(k)),
                    1 => Err(w.failure()),
                    _ => Err(w.said_not_found(k)),
                })
                .await;
            got.unwrap_or_else(|| Err(ResolverError::msg("loader work lost with its host")))
        })
    }
}

fn batch_loader(
    w: &Arc<NetWorld>,
    n: usize,
    inc: u64,
    call: u64,
) -> impl FnOnce(Vec<Key>) -> BoxFuture<'static, Result<BTreeMap<Key, DbValue>, ResolverError>>
       + Send
       + 'static {
    let w = w.clone();
    move |keys: Vec<Key>| {
        let given: Vec<u64> = keys.iter().map(index_of).collect();
        w.observe(Obs::BatchLoaderSaw {
            node: n,
            inc,
            call,
            keys: given.clone(),
        });
        let mut ks = given;
        ks.sort_unstable();
        let guard = w.load_started(n, inc, Flight::Batch(ks.clone()));
        Box::pin(async move {
            let _guard = guard;
            let (kind, ms, ignore) = w.behaviour();
            let got = w
                .work(n, Flight::Batch(ks), (ms, ignore), move |w| {
                    let mut out = BTreeMap::new();
                    match kind {
                        0 => {
                            for key in keys {
                                let k = index_of(&key);
                                match w.db().read(k) {
                                    Some(v) => {
                                        out.insert(key, v);
                                    }
                                    None => {
                                        w.said_not_found(k);
                                    }
                                }
                            }
                        }
                        1 => return Err(w.failure()),
                        _ => {
                            for key in &keys {
                                w.said_not_found(index_of(key));
                            }
                        }
                    }
                    Ok(out)
                })
                .await;
            got.unwrap_or_else(|| Err(ResolverError::msg("loader work lost with its host")))
        })
    }
}

/// A served loader error, as an observation.
fn served_error(w: &NetWorld, n: usize, key: u64, e: &LoaderError, started: u64) {
    match e {
        LoaderError::Loader(r) => match r.downcast_ref::<SimLoadFailure>() {
            Some(f) => w.observe(Obs::ServedFailure {
                node: n,
                key,
                id: f.id,
                started,
            }),
            None => w.observe(Obs::ServedForeignError {
                node: n,
                detail: r.to_string(),
            }),
        },
        LoaderError::NotFound(_) => w.observe(Obs::ServedNotFound { node: n, key }),
        other => w.count(&format!("error:{}", other.cause())),
    }
}

fn note_warning(w: &NetWorld, key: u64, warning: &Option<RemoteError>) {
    if let Some(RemoteError::Timeout { .. }) = warning {
        w.observe(Obs::AmbiguousWrite { key });
    }
}

/// What a `once` caller got, as observations and a trace line.
#[allow(clippy::too_many_arguments)]
fn served_once(
    w: &NetWorld,
    (n, inc): (usize, u64),
    k: u64,
    started: u64,
    what: &str,
    r: &Result<Loaded<DbValue>, LoaderError>,
) {
    let who = node_name(n);
    match r {
        Ok(l) => {
            note_warning(w, k, &l.warning);
            if l.joined {
                w.observe(Obs::Joined { node: n, inc });
            }
            if let Some(expires_at_ms) = l.expires_at_ms {
                w.observe(Obs::ServedRecord {
                    node: n,
                    inc,
                    key: k,
                    expires_at_ms,
                    started,
                });
            }
            w.observe(Obs::Served {
                node: n,
                key: k,
                value: l.value,
                started,
            });
            w.trace(
                &who,
                format!(
                    "{what} k{k} -> v{} from {:?}{}",
                    l.value.version,
                    l.source,
                    if l.joined { " (joined)" } else { "" }
                ),
            );
        }
        Err(e) => {
            served_error(w, n, k, e, started);
            w.trace(&who, format!("{what} k{k} -> {}", e.cause()));
        }
    }
}

async fn run_op(w: &Arc<NetWorld>, n: usize, inc: u64, loader: &Loader<DbValue>, op: &NetOpKind) {
    let who = node_name(n);
    let started = w.next_seq();
    let read = |keys: Vec<u64>, refresh: bool| {
        w.observe(Obs::Read {
            node: n,
            inc,
            keys,
            refresh,
            started,
            clock_ms: w.clock_ms(),
        })
    };
    match op {
        NetOpKind::Once(k) | NetOpKind::OnceRefresh(k) => {
            let refresh = matches!(op, NetOpKind::OnceRefresh(_));
            let mut call = w.call_options();
            call.refresh = refresh;
            read(vec![*k], refresh);
            let r = loader
                .once(key_of(*k), call, single_loader(w, n, inc))
                .await;
            let what = if refresh { "once+refresh" } else { "once" };
            served_once(w, (n, inc), *k, started, what, &r);
        }
        NetOpKind::OnceGiveUp(k, ms) => {
            let call = w.call_options();
            read(vec![*k], false);
            let once = loader.once(key_of(*k), call, single_loader(w, n, inc));
            match tokio::time::timeout(Duration::from_millis(*ms), once).await {
                Ok(r) => served_once(w, (n, inc), *k, started, "once", &r),
                Err(_) => {
                    w.count("callers-gave-up");
                    w.trace(&who, format!("once k{k} -> gave up after {ms} ms"));
                }
            }
        }
        NetOpKind::Set(k) => {
            let v = w.db().bump(*k);
            let r = loader.set(key_of(*k), v, w.call_options()).await;
            if let Err(LoaderError::RemoteUnavailable(e)) = &r {
                note_warning(w, *k, &Some(e.clone()));
            }
            let what = r.as_ref().map_or_else(|e| e.cause(), |()| "ok");
            w.trace(&who, format!("set k{k} v{} -> {what}", v.version));
        }
        NetOpKind::Delete(k) => {
            w.db().remove(*k);
            w.observe(Obs::DeleteStarted {
                node: n,
                inc,
                key: *k,
            });
            let r = loader.delete(key_of(*k)).await;
            if let Err(LoaderError::RemoteUnavailable(e)) = &r {
                note_warning(w, *k, &Some(e.clone()));
            }
            let what = r.as_ref().map_or_else(|e| e.cause(), |()| "ok");
            w.trace(&who, format!("delete k{k} -> {what}"));
        }
        NetOpKind::ChangeSource(k) => {
            let v = w.db().bump(*k);
            w.trace("db", format!("k{k} changed to v{}", v.version));
        }
        NetOpKind::LoadMany(ks) => {
            let keys = ks.iter().map(|k| key_of(*k)).collect();
            let call = w.call_options();
            read(ks.clone(), false);
            w.observe(Obs::BatchCall {
                node: n,
                inc,
                call: started,
                asked: ks.clone(),
            });
            let b = loader
                .load_many(keys, call, batch_loader(w, n, inc, started))
                .await;
            let answered = !matches!(b.error, Some(LoaderError::Closed | LoaderError::Cancelled));
            let loaded = b
                .values
                .iter()
                .filter(|(k, _)| b.missed.contains(k))
                .map(|(k, v)| (index_of(k), *v))
                .collect();
            w.observe(Obs::BatchDone {
                node: n,
                inc,
                call: started,
                missed: b.missed.iter().map(index_of).collect(),
                answered,
                loaded,
            });
            for k in ks {
                note_warning(w, *k, &b.warning);
            }
            for (key, v) in &b.values {
                w.observe(Obs::Served {
                    node: n,
                    key: index_of(key),
                    value: *v,
                    started,
                });
            }
            for key in &b.not_found {
                w.observe(Obs::ServedNotFound {
                    node: n,
                    key: index_of(key),
                });
            }
            if let Some(e) = &b.error {
                served_error(w, n, ks.first().copied().unwrap_or(0), e, started);
            }
            let vals: Vec<String> = b
                .values
                .iter()
                .map(|(k, v)| format!("k{}=v{}", index_of(k), v.version))
                .collect();
            w.trace(
                &who,
                format!(
                    "load_many {:?} -> [{}] not found {} error {}",
                    ks,
                    vals.join(" "),
                    b.not_found.len(),
                    b.error.as_ref().map_or("none", |e| e.cause())
                ),
            );
        }
    }
}
