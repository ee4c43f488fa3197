//! The loader's operation-sequence driver (SPEC §7.8): sequences of loader
//! operations applied to one or two pure [`LoaderMachine`]s that share one
//! [`MemoryRemote`] and one [`MemoryBus`], with a shadow model that predicts
//! what every response may be and checks LINV-1 … LINV-8.
//!
//! The driver plays the async layer's part itself (remote first, then the
//! machine; events through the bus), so a flight can stay in the air across
//! steps: `Once` begins or joins it, `Start` reads the remote and calls the
//! loader, `Finish` gives the loader's answer, `Leave` is a waiter's
//! cancellation. A slow loader is one whose `Finish` comes late; a loader
//! that ignores cancellation finishes and writes after its last waiter left.
//! Every field is an index or a small choice taken modulo what exists, so
//! every sequence (and every byte string through [`arbitrary`]) is valid.
//!
//! The shadow model is independent of the machine: it keeps, per node, what
//! the local tier may hold (values the loader or a `set` produced, written
//! only after the remote accepted them, placeholders never over a newer
//! value), the refresh tasks the rules allow, the loader calls in the air
//! and the counts the counters must show. The machine may always forget a
//! local copy (eviction) but never invent or keep one the rules forbid.
//!
//! ```
//! use cache_core::driver::{run_loader_machine, LoadResult, LoaderInput, LoaderOp};
//!
//! let input = LoaderInput {
//!     remote: true,
//!     ops: vec![
//!         LoaderOp::Once { node: 0, key: 0, refresh: false, skip_local: false, stubborn: false },
//!         LoaderOp::Once { node: 0, key: 0, refresh: false, skip_local: false, stubborn: false },
//!         LoaderOp::Finish { which: 0, result: LoadResult::Value(7) },
//!         LoaderOp::Once { node: 0, key: 0, refresh: false, skip_local: false, stubborn: false },
//!     ],
//!     ..LoaderInput::default()
//! };
//! let stats = run_loader_machine(&input).expect("every loader invariant holds");
//! assert_eq!((stats.loads, stats.joins, stats.local_hits), (1, 1, 1));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arbitrary::Arbitrary;
use futures::FutureExt;

use super::Failure;
use crate::bugs::LoaderBugs;
use crate::facade::ManualClock;
use crate::loader::bus::Subscription;
use crate::loader::keys::{lock_key, stored_key};
use crate::loader::machine::{
    Begin, FlightId, LoadOutcome, LoaderMachine, LocalRead, MachineConfig, RemoteRead, RemoteWrite,
    WaiterId, WriteMode, WriteOrder,
};
use crate::loader::record::{Payload, Record};
use crate::loader::rng::SplitMix64;
use crate::loader::{
    BusFaults, Event, EventBus, EventKind, FlightKey, Key, MemoryBus, MemoryRemote, Remote,
    RemoteFaults,
};

/// The driver's configuration, then its operations.
#[derive(Arbitrary, Clone, Debug, Default, PartialEq, Eq)]
pub struct LoaderInput {
    /// Two nodes share the remote and the bus (else one).
    pub two_nodes: bool,
    /// A remote tier (else local tiers only: writes land locally at once).
    pub remote: bool,
    /// Not-found caching is configured (placeholders, L-6).
    pub not_found: bool,
    /// A local tier of two entries (evictions) instead of 64.
    pub small_local: bool,
    /// Lifetimes get up to 50 ms of jitter (L-8).
    pub jitter: bool,
    /// The operations, in order.
    pub ops: Vec<LoaderOp>,
}

/// What a loader call gives.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadResult {
    /// A value (one byte; a batch gives `b + i` for its `i`-th key).
    Value(u8),
    /// The configured not-found error (an ordinary error if none is configured).
    NotFound,
    /// Any other error.
    Fail,
}

/// A remote fault to switch to.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteFault {
    /// Every operation works.
    Healthy,
    /// Reads fail.
    ReadFail,
    /// Writes fail.
    WriteFail,
    /// Everything fails.
    Partition,
}

/// One operation.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum LoaderOp {
    /// `once(key)` on a node: a local read, then the flight (led or joined).
    Once {
        /// Which node (modulo the node count).
        node: u8,
        /// Which key (modulo [`driver_keys`]).
        key: u8,
        /// Ask for a refresh task (L-9).
        refresh: bool,
        /// Skip the local tier.
        skip_local: bool,
        /// If this caller leads, its loader ignores cancellation.
        stubborn: bool,
    },
    /// The `which`-th flight not yet loading reads the remote and calls its loader.
    Start {
        /// Which flight.
        which: u8,
    },
    /// The `which`-th flight's loader answers (started first if need be).
    Finish {
        /// Which flight.
        which: u8,
        /// What the loader gives.
        result: LoadResult,
    },
    /// A waiter of the `which`-th flight with waiters leaves (L-2).
    Leave {
        /// Which flight.
        which: u8,
        /// Which of its waiters.
        waiter: u8,
    },
    /// `get(key)`: the tiers only.
    Get {
        /// Which node.
        node: u8,
        /// Which key.
        key: u8,
    },
    /// `exists(key)`.
    Exists {
        /// Which node.
        node: u8,
        /// Which key.
        key: u8,
    },
    /// `set(key, [value])`.
    Set {
        /// Which node.
        node: u8,
        /// Which key.
        key: u8,
        /// The value's one byte.
        value: u8,
        /// A TTL of `1 + 10·t` ms instead of the default.
        ttl: Option<u8>,
    },
    /// `delete(key)`.
    Delete {
        /// Which node.
        node: u8,
        /// Which key.
        key: u8,
    },
    /// `load_many` of the keys whose bits are set in `mask`.
    LoadMany {
        /// Which node.
        node: u8,
        /// A bit per key.
        mask: u8,
    },
    /// The clock moves forward (at most one refresh interval; each node's
    /// ticker then runs, as the async layer's would).
    Advance {
        /// How far, ms (modulo 101).
        ms: u8,
    },
    /// The clock jumps back (expiry is judged on the highest reading, LINV-3).
    Back {
        /// How far, ms.
        ms: u8,
    },
    /// A node runs its due refreshes.
    Tick {
        /// Which node.
        node: u8,
    },
    /// The remote's faults change.
    Remote {
        /// The new fault.
        fault: RemoteFault,
    },
    /// The bus's faults change: drop or duplicate half the copies, or fail publishing.
    Bus {
        /// Drop copies.
        drop: bool,
        /// Duplicate copies.
        duplicate: bool,
        /// Publishing fails.
        fail_publish: bool,
    },
    /// The `which`-th event waiting for a node is delivered (in any order).
    Deliver {
        /// Which node.
        node: u8,
        /// Which waiting event.
        which: u8,
    },
    /// The `which`-th event waiting for a node is lost.
    Lose {
        /// Which node.
        node: u8,
        /// Which waiting event.
        which: u8,
    },
    /// `close()` on a node.
    Close {
        /// Which node.
        node: u8,
    },
}

/// The keys the driver uses: two that collide as text once joined by commas
/// (`["a","b"]` and `["a,b"]`) and two that collide when parts are joined by
/// a colon (L-5).
pub fn driver_keys() -> [Key; 5] {
    [
        Key::new(["a"]),
        Key::new(["b"]),
        Key::new(["a,b"]),
        Key::new(["user", "1:2"]),
        Key::new(["user:1", "2"]),
    ]
}

const CACHE: &str = "c";
const TTL_MS: i64 = 1_000;
const LOCAL_TTL_MS: i64 = 400;
const NOT_FOUND_TTL_MS: i64 = 300;
const INTERVAL_MS: i64 = 100;
const JITTER_MS: u64 = 50;

/// What a run went through, so tests can show they reached each path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderStats {
    /// Operations applied.
    pub steps: usize,
    /// Local tier hits (values and placeholders).
    pub local_hits: usize,
    /// Remote hits.
    pub remote_hits: usize,
    /// Placeholders served (L-6).
    pub placeholders: usize,
    /// Loader calls (foreground, refresh, batch).
    pub loads: usize,
    /// Callers that joined a flight (L-2).
    pub joins: usize,
    /// Refresh flights led (L-9).
    pub refreshes: usize,
    /// Batch flights led (L-13).
    pub batches: usize,
    /// Flights cancelled by their last waiter leaving.
    pub cancels: usize,
    /// Stubborn loaders that wrote after their last waiter left.
    pub stubborn_writes: usize,
    /// Remote operations that failed.
    pub remote_failures: usize,
    /// Events applied by another node (L-11).
    pub events_applied: usize,
    /// Nodes closed by an operation.
    pub closes: usize,
}

impl LoaderStats {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &LoaderStats) {
        for (mine, theirs) in self.fields_mut().into_iter().zip(o.named()) {
            *mine += theirs.1;
        }
    }

    fn fields_mut(&mut self) -> [&mut usize; 13] {
        [
            &mut self.steps,
            &mut self.local_hits,
            &mut self.remote_hits,
            &mut self.placeholders,
            &mut self.loads,
            &mut self.joins,
            &mut self.refreshes,
            &mut self.batches,
            &mut self.cancels,
            &mut self.stubborn_writes,
            &mut self.remote_failures,
            &mut self.events_applied,
            &mut self.closes,
        ]
    }

    /// The counts by name.
    pub fn named(&self) -> [(&'static str, usize); 13] {
        [
            ("steps", self.steps),
            ("local_hits", self.local_hits),
            ("remote_hits", self.remote_hits),
            ("placeholders", self.placeholders),
            ("loads", self.loads),
            ("joins", self.joins),
            ("refreshes", self.refreshes),
            ("batches", self.batches),
            ("cancels", self.cancels),
            ("stubborn_writes", self.stubborn_writes),
            ("remote_failures", self.remote_failures),
            ("events_applied", self.events_applied),
            ("closes", self.closes),
        ]
    }
}

/// Runs `input` against the loader as specified.
pub fn run_loader_machine(input: &LoaderInput) -> Result<LoaderStats, Failure> {
    run_loader_machine_with(input, LoaderBugs::none())
}

/// Runs `input` with the loader zoo's `bugs` on (they take effect only in a
/// `bug-zoo` build): the harness must then fail naming the broken invariant.
pub fn run_loader_machine_with(
    input: &LoaderInput,
    bugs: LoaderBugs,
) -> Result<LoaderStats, Failure> {
    let mut d = Driver::new(input, bugs);
    for (i, op) in input.ops.iter().enumerate() {
        d.step = i;
        d.apply(op)
            .map_err(|(rule, detail)| d.failure(rule, detail, Some(op)))?;
        d.stats.steps += 1;
        d.check_step()
            .map_err(|(rule, detail)| d.failure(rule, detail, Some(op)))?;
    }
    d.step = input.ops.len();
    d.finish()
        .map_err(|(rule, detail)| d.failure(rule, detail, None))?;
    Ok(d.stats)
}

type Check = Result<(), (&'static str, String)>;

/// The local tier as the rules allow it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Shadow {
    payload: Payload,
    expires: i64,
    seq: u64,
}

struct Node {
    m: LoaderMachine<()>,
    /// Restarts so far: flight ids start again at each one.
    inc: u32,
    name: String,
    rx: Subscription,
    pending: Vec<Event>,
    local: BTreeMap<String, Shadow>,
    /// The last write per key the remote failed, as the local tier would
    /// hold it (payload and local expiry; L-4: it must never be there), so
    /// that a copy written ahead of the remote is named as such rather than
    /// as whatever older copy it replaced.
    refused: BTreeMap<String, Record>,
    /// Keys whose last placeholder write L-7 kept out of the local tier (a
    /// value was written after its load began): a placeholder served there
    /// is that write, named as such.
    guarded: BTreeSet<String>,
    seq: u64,
    tasks: BTreeSet<String>,
    loads: u64,
    joins: u64,
    emitted: u64,
    publish_failed: u64,
    closed: bool,
}

#[derive(Clone, Debug)]
enum FKind {
    Single(String),
    /// The missing keys the leader asked for.
    Batch(Vec<String>),
}

#[derive(Clone, Debug)]
struct DFlight {
    node: usize,
    id: FlightId,
    kind: FKind,
    /// Each waiter, with the missing keys it asked for (batches).
    waiters: Vec<(WaiterId, Vec<String>)>,
    refresh: bool,
    started_seq: u64,
    loading: bool,
    stubborn: bool,
    ttl: Option<i64>,
}

struct Driver {
    nodes: Vec<Node>,
    /// The stored keys, by index.
    keys: Vec<String>,
    /// Per node: its link to the remote is cut (every remote call fails).
    cut: Vec<bool>,
    /// Every node's machine options (the node name aside), for restarts.
    cfg: MachineConfig,
    bugs: LoaderBugs,
    remote: Option<MemoryRemote>,
    bus: MemoryBus,
    clock: ManualClock,
    high: i64,
    went_back: bool,
    /// The furthest the clock has been behind its highest reading, ms: a
    /// remote expires a row by the clock it is given, the local tier by
    /// the highest reading (T-7), so a copy may outlive its remote row by
    /// this much.
    behind_ms: i64,
    flights: Vec<DFlight>,
    /// Every value a loader or a `set` produced, per stored key.
    produced: BTreeMap<String, BTreeSet<Vec<u8>>>,
    /// Keys named by events that were lost (L-12's weaker bound applies).
    lost: BTreeSet<String>,
    rng: SplitMix64,
    not_found: bool,
    jitter: u64,
    step: usize,
    stats: LoaderStats,
}

fn ready<T>(f: impl std::future::Future<Output = T>) -> T {
    // The in-memory remote and bus answer without waiting when they have no
    // latency or delay (the driver never sets either).
    f.now_or_never()
        .expect("in-memory remote and bus answer at once without latency")
}

impl Driver {
    fn new(input: &LoaderInput, bugs: LoaderBugs) -> Self {
        Self::with_config(&HarnessConfig::from(input), bugs)
    }

    fn with_config(h: &HarnessConfig, bugs: LoaderBugs) -> Self {
        let clock = ManualClock::new(10_000);
        let remote = h.remote.then(|| MemoryRemote::new(Arc::new(clock.clone())));
        let bus = MemoryBus::new(h.bus_seed);
        let jitter = if h.jitter { JITTER_MS } else { 0 };
        let count = h.nodes.clamp(1, MAX_NODES);
        let cfg = MachineConfig {
            node: String::new(),
            ttl_ms: TTL_MS,
            local_ttl_ms: LOCAL_TTL_MS,
            jitter_ms: jitter,
            not_found_ttl_ms: h.not_found.then_some(NOT_FOUND_TTL_MS),
            local_capacity: h.local_capacity,
            has_remote: h.remote,
            refresh_interval_ms: INTERVAL_MS,
            refresh_concurrency: 2,
            refresh_tasks_max: 3,
            refresh_idle_ms: 500,
        };
        let nodes = (0..count)
            .map(|i| {
                let name = format!("n{i}");
                Node {
                    m: machine(&cfg, &name, bugs),
                    inc: 0,
                    rx: bus.subscribe(&name),
                    name,
                    pending: Vec::new(),
                    local: BTreeMap::new(),
                    refused: BTreeMap::new(),
                    guarded: BTreeSet::new(),
                    seq: 0,
                    tasks: BTreeSet::new(),
                    loads: 0,
                    joins: 0,
                    emitted: 0,
                    publish_failed: 0,
                    closed: false,
                }
            })
            .collect();
        let mut keys: Vec<String> = driver_keys().iter().map(|k| stored_key(CACHE, k)).collect();
        let wanted = h.keys.clamp(1, MAX_KEYS);
        keys.truncate(wanted);
        // More keys come in pairs that collide as text once parts are
        // joined by commas (`["k", "3"]` and `["k,3"]`), as the first
        // ones do: batches of either must never share a flight (L-5, L-13).
        keys.extend((keys.len()..wanted).map(|i| {
            let j = (i - driver_keys().len()) / 2;
            let key = if i % 2 == 1 {
                Key::new(["k".to_string(), j.to_string()])
            } else {
                Key::new([format!("k,{j}")])
            };
            stored_key(CACHE, &key)
        }));
        Self {
            nodes,
            keys,
            cut: vec![false; count],
            cfg,
            bugs,
            remote,
            bus,
            high: clock_now(&clock),
            clock,
            went_back: false,
            behind_ms: 0,
            flights: Vec::new(),
            produced: BTreeMap::new(),
            lost: BTreeSet::new(),
            rng: SplitMix64::new(h.jitter_seed),
            not_found: h.not_found,
            jitter,
            step: 0,
            stats: LoaderStats::default(),
        }
    }

    fn failure(&self, rule: &'static str, detail: String, op: Option<&LoaderOp>) -> Failure {
        let op = op.map_or_else(|| "end of run".to_string(), |o| format!("{o:?}"));
        self.failure_at(rule, detail, op)
    }

    fn failure_at(&self, rule: &'static str, detail: String, op: String) -> Failure {
        let flights: Vec<String> = self
            .flights
            .iter()
            .map(|f| {
                format!(
                    "n{} #{} {:?} waiters {}",
                    f.node,
                    f.id,
                    f.kind,
                    f.waiters.len()
                )
            })
            .collect();
        Failure {
            invariant: rule,
            step: self.step,
            detail: format!(
                "{detail}\n  op: {op}\n  now {} (clock {}), flights [{}]",
                self.high,
                clock_now(&self.clock),
                flights.join("; ")
            ),
        }
    }

    fn node(&self, n: u8) -> usize {
        usize::from(n) % self.nodes.len()
    }

    fn key(&self, k: u8) -> String {
        self.keys[usize::from(k) % self.keys.len()].clone()
    }

    fn apply(&mut self, op: &LoaderOp) -> Check {
        match *op {
            LoaderOp::Once {
                node,
                key,
                refresh,
                skip_local,
                stubborn,
            } => self.once(
                self.node(node),
                self.key(key),
                refresh,
                skip_local,
                stubborn,
            ),
            LoaderOp::Start { which } => {
                let idle: Vec<usize> = (0..self.flights.len())
                    .filter(|i| !self.flights[*i].loading)
                    .collect();
                if idle.is_empty() {
                    return Ok(());
                }
                let i = idle[usize::from(which) % idle.len()];
                self.start(i).map(|_| ())
            }
            LoaderOp::Finish { which, result } => {
                if self.flights.is_empty() {
                    return Ok(());
                }
                let i = usize::from(which) % self.flights.len();
                self.finish_flight(i, result)
            }
            LoaderOp::Leave { which, waiter } => self.leave(which, waiter),
            LoaderOp::Get { node, key } | LoaderOp::Exists { node, key } => {
                self.get(self.node(node), self.key(key))
            }
            LoaderOp::Set {
                node,
                key,
                value,
                ttl,
            } => self.set(
                self.node(node),
                self.key(key),
                value,
                ttl.map(|t| 1 + 10 * i64::from(t)),
            ),
            LoaderOp::Delete { node, key } => self.delete(self.node(node), self.key(key)),
            LoaderOp::LoadMany { node, mask } => self.load_many(self.node(node), mask),
            LoaderOp::Advance { ms } => {
                let ms = i64::from(ms) % (INTERVAL_MS + 1);
                self.clock.advance(ms);
                self.high = self.high.max(clock_now(&self.clock));
                for n in 0..self.nodes.len() {
                    self.tick(n)?;
                }
                Ok(())
            }
            LoaderOp::Back { ms } => {
                self.clock.advance(-i64::from(ms));
                self.went_back |= ms > 0;
                self.behind_ms = self.behind_ms.max(self.high - clock_now(&self.clock));
                Ok(())
            }
            LoaderOp::Tick { node } => self.tick(self.node(node)),
            LoaderOp::Remote { fault } => {
                if let Some(r) = &self.remote {
                    r.set_faults(RemoteFaults {
                        fail_reads: fault == RemoteFault::ReadFail,
                        fail_writes: fault == RemoteFault::WriteFail,
                        partitioned: fault == RemoteFault::Partition,
                        latency_ms: 0,
                    });
                }
                Ok(())
            }
            LoaderOp::Bus {
                drop,
                duplicate,
                fail_publish,
            } => {
                self.bus.set_faults(BusFaults {
                    drop_per_mille: if drop { 500 } else { 0 },
                    duplicate_per_mille: if duplicate { 500 } else { 0 },
                    max_delay_ms: 0,
                    fail_publish,
                });
                Ok(())
            }
            LoaderOp::Deliver { node, which } => {
                let n = self.node(node);
                if self.nodes[n].pending.is_empty() {
                    return Ok(());
                }
                let i = usize::from(which) % self.nodes[n].pending.len();
                let ev = self.nodes[n].pending.remove(i);
                self.deliver(n, &ev)
            }
            LoaderOp::Lose { node, which } => {
                let n = self.node(node);
                if !self.nodes[n].pending.is_empty() {
                    let i = usize::from(which) % self.nodes[n].pending.len();
                    let ev = self.nodes[n].pending.remove(i);
                    if ev.source != self.nodes[n].name {
                        self.lost.extend(ev.keys);
                    }
                }
                Ok(())
            }
            LoaderOp::Close { node } => {
                let n = self.node(node);
                if !self.nodes[n].closed {
                    self.stats.closes += 1;
                }
                self.close(n)
            }
        }
    }

    // ---- reads ----------------------------------------------------------

    /// A local read, judged against the shadow (LINV-2, LINV-3). Returns
    /// whether the read was answered by the local tier.
    fn local_read(&mut self, n: usize, key: &str) -> Result<bool, (&'static str, String)> {
        let now = self.high;
        let held = self.nodes[n].m.local().peek(key).map(|e| e.record.clone());
        let ahead = held.is_some() && self.nodes[n].refused.get(key) == held.as_ref();
        let read = self.nodes[n].m.read_local(key, now);
        let shadow = self.nodes[n].local.get(key).cloned();
        match read {
            LocalRead::Miss => {
                // Expired or evicted: the machine may always forget a copy.
                self.nodes[n].local.remove(key);
                Ok(false)
            }
            LocalRead::Value(bytes) => {
                self.stats.local_hits += 1;
                self.check_produced(key, &bytes)?;
                let served = Payload::Value(bytes.clone());
                match shadow {
                    Some(s) if s.payload == served && s.expires > now => Ok(true),
                    _ if ahead => Err(ahead_of_remote(key, &served)),
                    Some(s) if s.expires <= now => Err((
                        "LINV-3",
                        format!("{key}: local copy served at {now}, it expired at {}", s.expires),
                    )),
                    Some(s) if s.payload == Payload::Placeholder => Err((
                        "LINV-2",
                        format!("{key}: a placeholder was served as the value {bytes:?}"),
                    )),
                    Some(s) if s.payload == Payload::Value(bytes.clone()) => Ok(true),
                    other => Err((
                        "LINV-5",
                        format!(
                            "{key}: local copy {bytes:?} is not what the tiers accepted ({other:?}): \
                             a local write went ahead of the remote (L-4) and cannot converge (L-12)"
                        ),
                    )),
                }
            }
            LocalRead::Placeholder => {
                self.stats.local_hits += 1;
                self.stats.placeholders += 1;
                match shadow {
                    Some(s) if s.payload == Payload::Placeholder && s.expires > now => Ok(true),
                    _ if ahead => Err(ahead_of_remote(key, &Payload::Placeholder)),
                    _ if self.nodes[n].guarded.contains(key) => Err((
                        "LINV-2",
                        format!(
                            "{key}: a placeholder was served where a value written after its \
                             load began must stand (L-7)"
                        ),
                    )),
                    Some(s) if s.expires <= now => Err((
                        "LINV-3",
                        format!(
                            "{key}: placeholder served at {now}, it expired at {}",
                            s.expires
                        ),
                    )),
                    Some(s) if s.payload == Payload::Placeholder => Ok(true),
                    Some(s) => Err((
                        "LINV-2",
                        format!(
                            "{key}: the value {:?} was served as a placeholder",
                            s.payload
                        ),
                    )),
                    None => Err((
                        "LINV-2",
                        format!("{key}: a placeholder no not-found load wrote was served"),
                    )),
                }
            }
        }
    }

    fn check_produced(&self, key: &str, bytes: &[u8]) -> Check {
        if self.produced.get(key).is_some_and(|p| p.contains(bytes)) {
            return Ok(());
        }
        Err((
            "LINV-2",
            format!("{key}: served the value {bytes:?}, which no loader or set produced"),
        ))
    }

    /// A remote read through the machine; a live record is copied locally
    /// with its remaining lifetime (L-3). Returns the live record, if any.
    fn remote_read(
        &mut self,
        n: usize,
        key: &str,
    ) -> Result<Option<Record>, (&'static str, String)> {
        let Some(remote) = self.remote.clone() else {
            return Ok(None);
        };
        let answer = if self.cut[n] {
            Err(())
        } else {
            ready(remote.get(key)).map_err(|_| ())
        };
        if answer.is_err() {
            self.stats.remote_failures += 1;
        }
        let now = self.high;
        // The harness reads in one step: nothing can touch the key between
        // sending and answering.
        let seq = self.nodes[n].m.seq();
        let read = self.nodes[n].m.remote_read(key, answer, now, seq);
        match read {
            RemoteRead::Live(record) => {
                self.stats.remote_hits += 1;
                if record.expires_at_ms <= now {
                    return Err((
                        "LINV-3",
                        format!(
                            "{key}: remote record served at {now}, it expired at {}",
                            record.expires_at_ms
                        ),
                    ));
                }
                match &record.payload {
                    Payload::Value(bytes) => self.check_produced(key, bytes)?,
                    Payload::Placeholder => self.stats.placeholders += 1,
                }
                let node = &mut self.nodes[n];
                if !node.closed {
                    node.local.insert(
                        key.to_string(),
                        Shadow {
                            payload: record.payload.clone(),
                            expires: record.expires_at_ms.min(now + LOCAL_TTL_MS),
                            seq: node.seq,
                        },
                    );
                }
                Ok(Some(record))
            }
            RemoteRead::Corrupt => Err((
                "L-14",
                format!("{key}: a record the driver wrote does not decode"),
            )),
            RemoteRead::Miss | RemoteRead::Failed => Ok(None),
        }
    }

    fn once(
        &mut self,
        n: usize,
        key: String,
        refresh: bool,
        skip_local: bool,
        stubborn: bool,
    ) -> Check {
        let now = self.high;
        if self.nodes[n].closed {
            // A caller racing close: it passed the async layer's closed
            // check just before close ran, so the machine must refuse alone.
            if refresh && self.nodes[n].m.add_task(&key, (), now) {
                return Err((
                    "LINV-8",
                    format!("{key}: a refresh task was added after close"),
                ));
            }
            if self.nodes[n]
                .m
                .begin(FlightKey::Single(key.clone()), false)
                .is_some()
            {
                return Err(("LINV-8", format!("{key}: a flight began after close")));
            }
            return Ok(());
        }
        if !skip_local {
            if self.local_read(n, &key)? {
                return Ok(());
            }
        } else {
            self.nodes[n].m.touch(&key, now);
        }
        if refresh && self.nodes[n].m.add_task(&key, (), now) {
            self.nodes[n].tasks.insert(key.clone());
        }
        self.begin(
            n,
            FlightKey::Single(key.clone()),
            FKind::Single(key),
            Vec::new(),
            stubborn,
            false,
        )
    }

    fn begin(
        &mut self,
        n: usize,
        fk: FlightKey,
        kind: FKind,
        want: Vec<String>,
        stubborn: bool,
        refresh: bool,
    ) -> Check {
        let Some(begin) = self.nodes[n].m.begin(fk.clone(), refresh) else {
            return Err((
                "LINV-1",
                format!("{fk}: an open node refused to begin a flight"),
            ));
        };
        match begin {
            Begin::Lead { flight, waiter } => {
                if refresh {
                    self.stats.refreshes += 1;
                }
                if matches!(kind, FKind::Batch(_)) {
                    self.stats.batches += 1;
                }
                self.flights.push(DFlight {
                    node: n,
                    id: flight,
                    kind,
                    waiters: waiter.map(|w| (w, want)).into_iter().collect(),
                    refresh,
                    started_seq: self.nodes[n].seq,
                    loading: false,
                    stubborn,
                    ttl: None,
                });
                Ok(())
            }
            Begin::Join { flight, waiter } => {
                let Some(f) = self
                    .flights
                    .iter_mut()
                    .find(|f| f.node == n && f.id == flight)
                else {
                    return Err((
                        "LINV-1",
                        format!("{fk} joined flight {flight}, which is not in the air"),
                    ));
                };
                if let Some(w) = waiter {
                    f.waiters.push((w, want));
                    self.nodes[n].joins += 1;
                    self.stats.joins += 1;
                }
                Ok(())
            }
        }
    }

    fn get(&mut self, n: usize, key: String) -> Check {
        if self.nodes[n].closed {
            return Ok(());
        }
        if self.local_read(n, &key)? {
            return Ok(());
        }
        self.remote_read(n, &key).map(|_| ())
    }

    // ---- flights --------------------------------------------------------

    /// Reads the remote (single-key flights) and calls the loader. Returns
    /// whether the flight is still in the air (a remote hit settles it).
    fn start(&mut self, i: usize) -> Result<bool, (&'static str, String)> {
        let f = self.flights[i].clone();
        if let FKind::Single(key) = &f.kind {
            if let Some(remote) = self.remote.clone() {
                let read = if f.refresh {
                    // L-10: one node refreshes a key per window.
                    let got = !self.cut[f.node]
                        && ready(remote.lock(
                            &lock_key(key),
                            &self.nodes[f.node].name,
                            INTERVAL_MS as u64,
                        ))
                        .unwrap_or(false);
                    !got
                } else {
                    true
                };
                if read {
                    if self.remote_read(f.node, key)?.is_some() {
                        self.settle(i)?;
                        return Ok(false);
                    }
                    if f.refresh && f.waiters.is_empty() {
                        // Not the refresher and nobody waits: nothing to load.
                        self.settle(i)?;
                        return Ok(false);
                    }
                }
            }
        }
        if !self.nodes[f.node].m.load_started(f.id) {
            return Err(("LINV-1", format!("flight {} may not call its loader", f.id)));
        }
        if let FKind::Single(key) = &f.kind {
            if let Some(other) = self.flights.iter().find(|o| {
                o.node == f.node && o.loading && matches!(&o.kind, FKind::Single(k) if k == key)
            }) {
                return Err((
                    "LINV-1",
                    format!(
                        "{key}: a second loader call while flight {} still loads (refresh {}, this one refresh {})",
                        other.id, other.refresh, f.refresh
                    ),
                ));
            }
        }
        check_batch(&f)?;
        self.flights[i].loading = true;
        self.nodes[f.node].loads += 1;
        self.stats.loads += 1;
        Ok(true)
    }

    fn finish_flight(&mut self, i: usize, result: LoadResult) -> Check {
        self.finish_flight_with(i, result, &[])
    }

    /// Finishes flight `i`; a batch's `i`-th key gets `per_key[i]` when
    /// given (a batch loader's answer per key), else what `result` says.
    fn finish_flight_with(
        &mut self,
        i: usize,
        result: LoadResult,
        per_key: &[LoadResult],
    ) -> Check {
        if !self.flights[i].loading && !self.start(i)? {
            return Ok(());
        }
        let f = self.flights[i].clone();
        check_batch(&f)?;
        if f.waiters.is_empty() && !f.refresh {
            self.stats.stubborn_writes += 1;
        }
        match &f.kind {
            FKind::Single(key) => self.finish_single(&f, key, result)?,
            FKind::Batch(keys) => self.finish_batch(&f, keys, result, per_key)?,
        }
        self.settle(i)
    }

    fn outcome(
        &mut self,
        key: &str,
        result: LoadResult,
        offset: u8,
    ) -> (LoadOutcome, Option<Payload>) {
        match result {
            LoadResult::Value(b) => {
                let bytes = vec![b.wrapping_add(offset)];
                self.produced
                    .entry(key.to_string())
                    .or_default()
                    .insert(bytes.clone());
                (
                    LoadOutcome::Value(bytes.clone()),
                    Some(Payload::Value(bytes)),
                )
            }
            LoadResult::NotFound if self.not_found => {
                (LoadOutcome::NotFound, Some(Payload::Placeholder))
            }
            LoadResult::NotFound | LoadResult::Fail => (LoadOutcome::Failed, None),
        }
    }

    fn finish_single(&mut self, f: &DFlight, key: &str, result: LoadResult) -> Check {
        let (outcome, expected) = self.outcome(key, result, 0);
        let now = self.high;
        let rand = self.rng.next_u64();
        let order = self.nodes[f.node]
            .m
            .load_finished(f.id, key, outcome, f.ttl, now, rand);
        let Some(order) = order else {
            return Ok(());
        };
        let ttl = match expected {
            Some(Payload::Placeholder) => NOT_FOUND_TTL_MS,
            _ => f.ttl.unwrap_or(TTL_MS),
        };
        self.check_order(&order, expected.as_ref(), ttl)?;
        let write = self.remote_write(f.node, &order);
        if self.write_applied(f.node, &order, write, f.started_seq) {
            let kind = if f.refresh {
                EventKind::Refresh
            } else {
                EventKind::Load
            };
            self.emit(f.node, kind, vec![key.to_string()]);
        }
        Ok(())
    }

    fn finish_batch(
        &mut self,
        f: &DFlight,
        keys: &[String],
        result: LoadResult,
        per_key: &[LoadResult],
    ) -> Check {
        let now = self.high;
        if matches!(result, LoadResult::Fail) {
            let first = keys.first().cloned().unwrap_or_default();
            if self.nodes[f.node]
                .m
                .load_finished(f.id, &first, LoadOutcome::Failed, f.ttl, now, 0)
                .is_some()
            {
                return Err(("LINV-2", format!("a failed batch load wrote {first}")));
            }
            return Ok(());
        }
        let mut orders = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            // A batch loader's map lacks the keys it did not find.
            let (r, offset) = match (per_key.get(i), result) {
                (Some(LoadResult::Value(b)), _) => (LoadResult::Value(*b), 0),
                (Some(_), _) => (LoadResult::NotFound, 0),
                (None, LoadResult::Value(b)) => (LoadResult::Value(b), i as u8),
                (None, _) => (LoadResult::NotFound, 0),
            };
            let (outcome, expected) = self.outcome(key, r, offset);
            let outcome = match outcome {
                LoadOutcome::Failed => LoadOutcome::NotFound,
                o => o,
            };
            let rand = self.rng.next_u64();
            let order = self.nodes[f.node]
                .m
                .load_finished(f.id, key, outcome, f.ttl, now, rand);
            if let Some(order) = order {
                let ttl = match expected {
                    Some(Payload::Placeholder) => NOT_FOUND_TTL_MS,
                    _ => f.ttl.unwrap_or(TTL_MS),
                };
                self.check_order(&order, expected.as_ref(), ttl)?;
                orders.push(order);
            }
        }
        let values: Vec<&WriteOrder> = orders
            .iter()
            .filter(|o| o.mode == WriteMode::Always)
            .collect();
        let value_write = match &self.remote {
            None => RemoteWrite::NoRemote,
            Some(_) if values.is_empty() => RemoteWrite::Done(true),
            Some(_) if self.cut[f.node] => {
                self.stats.remote_failures += 1;
                RemoteWrite::Failed
            }
            Some(r) => {
                let items = values
                    .iter()
                    .map(|o| (o.key.clone(), o.record.encode(), o.ttl_ms))
                    .collect();
                match ready(r.multi_set(items)) {
                    Ok(()) => RemoteWrite::Done(true),
                    Err(_) => {
                        self.stats.remote_failures += 1;
                        RemoteWrite::Failed
                    }
                }
            }
        };
        let mut mutated = Vec::new();
        for order in &orders {
            let write = if order.mode == WriteMode::Always {
                value_write
            } else {
                self.remote_write(f.node, order)
            };
            if self.write_applied(f.node, order, write, f.started_seq) {
                mutated.push(order.key.clone());
            }
        }
        if !mutated.is_empty() {
            self.emit(f.node, EventKind::Batch, mutated);
        }
        Ok(())
    }

    /// LINV-2 and LINV-3 on a write the machine decided: it carries what the
    /// loader or `set` produced (nothing for a failed load), and a lifetime
    /// within the configured TTL plus jitter.
    fn check_order(&self, order: &WriteOrder, expected: Option<&Payload>, ttl: i64) -> Check {
        let Some(expected) = expected else {
            return Err((
                "LINV-2",
                format!(
                    "{}: a load that produced nothing wrote {:?}",
                    order.key, order.record.payload
                ),
            ));
        };
        if &order.record.payload != expected {
            return Err((
                "LINV-2",
                format!(
                    "{}: the write carries {:?}, the loader produced {expected:?}",
                    order.key, order.record.payload
                ),
            ));
        }
        let now = self.high;
        let max = now + ttl.max(1) + self.jitter as i64;
        let exp = order.record.expires_at_ms;
        if exp <= now || exp > max || order.jitter_ms < 0 || order.jitter_ms > self.jitter as i64 {
            return Err((
                "LINV-3",
                format!(
                    "{}: lifetime to {exp} (jitter {}) outside ({now}, {max}]",
                    order.key, order.jitter_ms
                ),
            ));
        }
        Ok(())
    }

    fn remote_write(&mut self, n: usize, order: &WriteOrder) -> RemoteWrite {
        let Some(r) = &self.remote else {
            return RemoteWrite::NoRemote;
        };
        if self.cut[n] {
            self.stats.remote_failures += 1;
            return RemoteWrite::Failed;
        }
        let res = match order.mode {
            WriteMode::Always => {
                ready(r.set(&order.key, order.record.encode(), order.ttl_ms)).map(|()| true)
            }
            WriteMode::IfAbsent => {
                ready(r.set_if_absent(&order.key, order.record.encode(), order.ttl_ms))
            }
        };
        match res {
            Ok(b) => RemoteWrite::Done(b),
            Err(_) => {
                self.stats.remote_failures += 1;
                RemoteWrite::Failed
            }
        }
    }

    /// The machine applies a write; the shadow applies the rules: only after
    /// the remote accepted it (L-4), a placeholder never over a value
    /// written after its load began (L-7), capped by the local lifetime.
    fn write_applied(
        &mut self,
        n: usize,
        order: &WriteOrder,
        write: RemoteWrite,
        started_seq: u64,
    ) -> bool {
        let now = self.high;
        let node = &mut self.nodes[n];
        // A copy the machine evicted earlier in this step no longer guards
        // a placeholder write there (L-7 looks at what the tier holds).
        if node.m.local().peek(&order.key).is_none() {
            node.local.remove(&order.key);
        }
        let mutated = node.m.write_applied(order, write, now);
        if write == RemoteWrite::Failed {
            let mut local = order.record.clone();
            local.expires_at_ms = local
                .expires_at_ms
                .min(now + LOCAL_TTL_MS + order.jitter_ms);
            node.refused.insert(order.key.clone(), local);
        }
        if matches!(write, RemoteWrite::Failed | RemoteWrite::Done(false)) || node.closed {
            return mutated;
        }
        node.refused.remove(&order.key);
        if order.record.is_placeholder() {
            if let Some(s) = node.local.get(&order.key) {
                if s.payload != Payload::Placeholder && s.seq > started_seq && s.expires > now {
                    node.guarded.insert(order.key.clone());
                    return mutated;
                }
            }
        }
        node.guarded.remove(&order.key);
        node.seq += 1;
        let expires = order
            .record
            .expires_at_ms
            .min(now + LOCAL_TTL_MS + order.jitter_ms);
        if node.m.local().peek(&order.key).is_none() {
            // The write raced a touch of its key since its load or `set`
            // began (L-12: which landed last at the remote is unknown), so
            // the machine kept no copy; a copy may always be dropped.
            node.local.remove(&order.key);
        } else if order.record.expires_at_ms > now {
            node.local.insert(
                order.key.clone(),
                Shadow {
                    payload: order.record.payload.clone(),
                    expires,
                    seq: node.seq,
                },
            );
        }
        mutated
    }

    fn settle(&mut self, i: usize) -> Check {
        let f = self.flights.remove(i);
        let mut answered = self.nodes[f.node].m.settle(f.id);
        answered.sort_unstable();
        let mut expected: Vec<WaiterId> = f.waiters.iter().map(|(w, _)| *w).collect();
        expected.sort_unstable();
        if answered != expected {
            return Err((
                "LINV-1",
                format!(
                    "flight {} answered waiters {answered:?}, its callers are {expected:?}",
                    f.id
                ),
            ));
        }
        Ok(())
    }

    fn leave(&mut self, which: u8, waiter: u8) -> Check {
        let with: Vec<usize> = (0..self.flights.len())
            .filter(|i| !self.flights[*i].waiters.is_empty())
            .collect();
        if with.is_empty() {
            return Ok(());
        }
        let i = with[usize::from(which) % with.len()];
        let f = &mut self.flights[i];
        let (w, _) = f.waiters.remove(usize::from(waiter) % f.waiters.len());
        let last = self.nodes[f.node].m.leave(f.id, w);
        let expected_last = f.waiters.is_empty() && !f.refresh;
        if last != expected_last {
            return Err((
                "LINV-1",
                format!(
                    "flight {}: leave says last={last}, {} waiters remain",
                    f.id,
                    f.waiters.len()
                ),
            ));
        }
        if last && !(f.stubborn && f.loading) {
            // Cancelled: nothing is written (L-2).
            self.stats.cancels += 1;
            self.settle(i)?;
        }
        Ok(())
    }

    // ---- writes ---------------------------------------------------------

    fn set(&mut self, n: usize, key: String, value: u8, ttl: Option<i64>) -> Check {
        if self.nodes[n].closed {
            return Ok(());
        }
        let bytes = vec![value];
        self.produced
            .entry(key.clone())
            .or_default()
            .insert(bytes.clone());
        let now = self.high;
        let rand = self.rng.next_u64();
        let order = self.nodes[n]
            .m
            .prepare_set(&key, bytes.clone(), ttl, now, rand);
        self.check_order(&order, Some(&Payload::Value(bytes)), ttl.unwrap_or(TTL_MS))?;
        let write = self.remote_write(n, &order);
        let started = self.nodes[n].seq;
        if self.write_applied(n, &order, write, started) {
            self.emit(n, EventKind::Set, vec![key]);
        }
        Ok(())
    }

    fn delete(&mut self, n: usize, key: String) -> Check {
        if self.nodes[n].closed {
            return Ok(());
        }
        let node = &mut self.nodes[n];
        node.m.delete(&key);
        node.local.remove(&key);
        node.tasks.remove(&key);
        node.seq += 1;
        let ok = match &self.remote {
            Some(_) if self.cut[n] => false,
            Some(r) => ready(r.delete(&key)).is_ok(),
            None => true,
        };
        if ok {
            self.emit(n, EventKind::Delete, vec![key]);
        } else {
            self.stats.remote_failures += 1;
        }
        Ok(())
    }

    fn load_many(&mut self, n: usize, mask: u8) -> Check {
        if self.nodes[n].closed {
            return Ok(());
        }
        let count = self.keys.len().min(8);
        let keys: BTreeSet<String> = (0..count)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| self.keys[i].clone())
            .collect();
        self.load_set(n, keys)
    }

    /// `load_many` of `keys` (stored keys) on node `n`: hits from the
    /// tiers, then one batch flight for the missing keys (L-13).
    fn load_set(&mut self, n: usize, keys: BTreeSet<String>) -> Check {
        if self.nodes[n].closed {
            return Ok(());
        }
        let mut wanted = Vec::new();
        for key in keys {
            if !self.local_read(n, &key)? {
                wanted.push(key);
            }
        }
        let mut missing = Vec::new();
        for key in wanted {
            if self.remote_read(n, &key)?.is_none() {
                missing.push(key);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort();
        let fk = FlightKey::batch(missing.clone());
        self.begin(n, fk, FKind::Batch(missing.clone()), missing, false, false)
    }

    // ---- refresh, events, close ----------------------------------------

    fn tick(&mut self, n: usize) -> Check {
        let now = self.high;
        let due = self.nodes[n].m.due(now);
        if self.nodes[n].closed {
            if let Some((key, ())) = due.first() {
                return Err(("LINV-8", format!("{key}: a refresh is due after close")));
            }
            return Ok(());
        }
        for (key, ()) in due {
            if !self.nodes[n].tasks.contains(&key) {
                return Err((
                    "LINV-4",
                    format!("{key}: refreshed without a task the rules allow"),
                ));
            }
            self.begin(
                n,
                FlightKey::Single(key.clone()),
                FKind::Single(key),
                Vec::new(),
                false,
                true,
            )?;
        }
        Ok(())
    }

    fn emit(&mut self, n: usize, kind: EventKind, keys: Vec<String>) {
        let event = self.nodes[n].m.emit(kind, keys.clone());
        self.nodes[n].emitted += 1;
        let before = self.bus.stats().dropped;
        if ready(self.bus.publish(event)).is_err() {
            self.nodes[n].m.emit_failed();
            self.nodes[n].publish_failed += 1;
            self.lost.extend(keys);
        } else if self.bus.stats().dropped > before {
            self.lost.extend(keys);
        }
        for node in &mut self.nodes {
            while let Ok(ev) = node.rx.try_recv() {
                node.pending.push(ev);
            }
        }
    }

    fn deliver(&mut self, n: usize, ev: &Event) -> Check {
        let node = &mut self.nodes[n];
        let applied = node.m.event_received(ev);
        let expected = !node.closed && ev.source != node.name;
        if applied != expected {
            return Err((
                "LINV-8",
                format!(
                    "{}: event from {} applied={applied}, closed={}",
                    node.name, ev.source, node.closed
                ),
            ));
        }
        if applied {
            self.stats.events_applied += 1;
            // The machine counts an applied event as a write (it touches
            // its keys, L-12).
            node.seq += 1;
            for key in &ev.keys {
                node.local.remove(key);
            }
        }
        Ok(())
    }

    fn close(&mut self, n: usize) -> Check {
        let mut ended: Vec<FlightId> = self.nodes[n]
            .m
            .close()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        ended.sort_unstable();
        let mut ours: Vec<FlightId> = self
            .flights
            .iter()
            .filter(|f| f.node == n)
            .map(|f| f.id)
            .collect();
        ours.sort_unstable();
        self.flights.retain(|f| f.node != n);
        let node = &mut self.nodes[n];
        node.closed = true;
        node.local.clear();
        node.tasks.clear();
        if ended != ours {
            return Err((
                "LINV-8",
                format!("close ended flights {ended:?}, the node had {ours:?}"),
            ));
        }
        Ok(())
    }

    fn restart(&mut self, n: usize) -> Check {
        if !self.nodes[n].closed {
            self.stats.closes += 1;
        }
        self.close(n)?;
        let node = &mut self.nodes[n];
        node.m = machine(&self.cfg, &node.name, self.bugs);
        node.inc += 1;
        while node.rx.try_recv().is_ok() {}
        node.pending.clear();
        node.local.clear();
        node.refused.clear();
        node.guarded.clear();
        node.tasks.clear();
        node.loads = 0;
        node.joins = 0;
        node.emitted = 0;
        node.publish_failed = 0;
        node.closed = false;
        Ok(())
    }

    // ---- checks ---------------------------------------------------------

    fn check_step(&mut self) -> Check {
        let now = self.high;
        for node in &mut self.nodes {
            node.m
                .check_invariants(now)
                .map_err(|v| (v.rule, format!("{}: {}", node.name, v.detail)))?;
            // The machine may forget copies (eviction, expiry), never keep
            // one the shadow dropped: reconcile the forgetting.
            let m = &node.m;
            node.local.retain(|k, _| m.local().peek(k).is_some());
            if let Some(key) = node
                .m
                .task_keys()
                .into_iter()
                .find(|k| !node.tasks.contains(k))
            {
                return Err((
                    "LINV-4",
                    format!(
                        "{}: a refresh task for {key}, deleted or never asked for",
                        node.name
                    ),
                ));
            }
            let c = node.m.counters();
            if c.loads != node.loads || c.flight_joins != node.joins {
                return Err((
                    "LINV-6",
                    format!(
                        "{}: counters say loads {} joins {}, the callers saw loads {} joins {} (L-15)",
                        node.name, c.loads, c.flight_joins, node.loads, node.joins
                    ),
                ));
            }
            if c.events_emitted != node.emitted || c.events_dropped != node.publish_failed {
                return Err((
                    "LINV-6",
                    format!(
                        "{}: events emitted {} dropped {}, published {} failed {}",
                        node.name,
                        c.events_emitted,
                        c.events_dropped,
                        node.emitted,
                        node.publish_failed
                    ),
                ));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Check {
        // LINV-5: every waiting event delivered, in order.
        self.bus.set_faults(BusFaults::default());
        if let Some(r) = &self.remote {
            r.set_faults(RemoteFaults::default());
        }
        for n in 0..self.nodes.len() {
            while !self.nodes[n].pending.is_empty() {
                let ev = self.nodes[n].pending.remove(0);
                self.deliver(n, &ev)?;
            }
        }
        self.check_step()?;
        self.clock.set(self.high);
        let now = self.high;
        for node in &self.nodes {
            if node.closed {
                continue;
            }
            for (key, entry) in node.m.local().entries() {
                if !entry.record.is_live(now) || self.lost.contains(&key) {
                    continue;
                }
                // Within the clock's lag of its expiry, the remote may
                // have expired the row already, and a later write-if-absent
                // (a placeholder) may have taken its place.
                if entry.record.remaining_ms(now) <= self.behind_ms {
                    continue;
                }
                let remote = match &self.remote {
                    None => continue,
                    Some(r) => r.peek(&key).and_then(|b| Record::decode(&b).ok()),
                };
                match remote {
                    Some(r) if r.payload == entry.record.payload => {}
                    None if self.went_back => {}
                    other => {
                        return Err((
                            "LINV-5",
                            format!(
                            "{}: {key} local {:?} vs remote {:?} after every event was delivered",
                            node.name,
                            entry.record.payload,
                            other.map(|r| r.payload)
                        ),
                        ))
                    }
                }
            }
        }
        // LINV-8: close every node; nothing remains and nothing starts.
        for n in 0..self.nodes.len() {
            self.close(n)?;
            let node = &mut self.nodes[n];
            if node.m.flights() != 0 || node.m.tasks() != 0 {
                return Err((
                    "LINV-8",
                    format!(
                        "{}: {} flights and {} tasks after close",
                        node.name,
                        node.m.flights(),
                        node.m.tasks()
                    ),
                ));
            }
            if node.m.add_task("probe", (), now)
                || node
                    .m
                    .begin(FlightKey::Single("probe".into()), false)
                    .is_some()
            {
                return Err(("LINV-8", format!("{}: work started after close", node.name)));
            }
            if !node.m.due(now + 10 * INTERVAL_MS).is_empty() {
                return Err((
                    "LINV-8",
                    format!("{}: a refresh due after close", node.name),
                ));
            }
        }
        self.check_step()?;
        if !self.flights.is_empty() {
            return Err((
                "LINV-8",
                format!("{} flights outlived close", self.flights.len()),
            ));
        }
        Ok(())
    }
}

/// A local copy the remote refused (L-4): it can never converge (LINV-5).
fn ahead_of_remote(key: &str, payload: &Payload) -> (&'static str, String) {
    (
        "LINV-5",
        format!(
            "{key}: local copy {payload:?} is a write the remote failed: a local write went \
             ahead of the remote (L-4) and cannot converge (L-12)"
        ),
    )
}

/// LINV-7: a batch loader sees its leader's missing keys, once; every
/// caller answered by it must have asked for exactly those.
fn check_batch(f: &DFlight) -> Check {
    if let FKind::Batch(keys) = &f.kind {
        for (w, want) in &f.waiters {
            if want != keys {
                return Err((
                    "LINV-7",
                    format!("batch waiter {w} is missing {want:?} but its loader sees {keys:?}"),
                ));
            }
        }
    }
    Ok(())
}

// ---- the harness: the driver as a library for a simulation --------------

/// Most nodes a [`LoaderHarness`] runs.
pub const MAX_NODES: usize = 8;
/// Most keys a [`LoaderHarness`] uses.
pub const MAX_KEYS: usize = 64;

/// What a [`LoaderHarness`] runs: nodes, keys and tiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HarnessConfig {
    /// Nodes sharing the remote and the bus (1..=[`MAX_NODES`]).
    pub nodes: usize,
    /// Keys (1..=[`MAX_KEYS`]): the five of [`driver_keys`] first (they
    /// collide as text, L-5), then pairs `["k", "<j>"]`, `["k,<j>"]` that
    /// collide the same way.
    pub keys: usize,
    /// A remote tier.
    pub remote: bool,
    /// Not-found caching (placeholders, L-6).
    pub not_found: bool,
    /// Local tier entries per node (0: no local tier).
    pub local_capacity: usize,
    /// Lifetimes get up to 50 ms of jitter (L-8).
    pub jitter: bool,
    /// Seed of the jitter draws.
    pub jitter_seed: u64,
    /// Seed of the bus's drop and duplicate draws.
    pub bus_seed: u64,
}

impl From<&LoaderInput> for HarnessConfig {
    fn from(input: &LoaderInput) -> Self {
        HarnessConfig {
            nodes: if input.two_nodes { 2 } else { 1 },
            keys: driver_keys().len(),
            remote: input.remote,
            not_found: input.not_found,
            local_capacity: if input.small_local { 2 } else { 64 },
            jitter: input.jitter,
            jitter_seed: 11,
            bus_seed: 7,
        }
    }
}

/// A flight in the air, as a [`LoaderHarness`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightInfo {
    /// Its node.
    pub node: usize,
    /// The node's incarnation (restarts so far) when the flight began.
    pub inc: u32,
    /// Its id on that node.
    pub id: FlightId,
    /// The stored keys it loads (one, or a batch's missing keys).
    pub keys: Vec<String>,
    /// A `load_many` flight (else a single key's).
    pub batch: bool,
    /// Led by a refresh.
    pub refresh: bool,
    /// Its loader has been called.
    pub loading: bool,
    /// Callers waiting on it.
    pub waiters: usize,
}

/// The loader driver as a library: the same machines, in-memory remote and
/// bus, shadow model and LINV-1 … LINV-8 checks as [`run_loader_machine`],
/// driven one call at a time by a simulation that decides when flights
/// start and finish, when events arrive and which faults hold. Every call
/// runs the per-step checks; [`LoaderHarness::end`] runs the final ones.
/// A failure is the first violated invariant, typed in [`Failure::invariant`].
///
/// ```
/// use cache_core::bugs::LoaderBugs;
/// use cache_core::driver::{HarnessConfig, LoadResult, LoaderHarness, LoaderOp};
///
/// let cfg = HarnessConfig { nodes: 3, keys: 8, remote: true, not_found: true, local_capacity: 4,
///                           jitter: true, jitter_seed: 1, bus_seed: 2 };
/// let mut h = LoaderHarness::new(&cfg, LoaderBugs::none());
/// h.apply(&LoaderOp::Once { node: 2, key: 6, refresh: true, skip_local: false, stubborn: false }).unwrap();
/// let f = h.flights()[0].clone();
/// assert!(h.finish(f.node, f.inc, f.id, LoadResult::Value(1), &[]).unwrap());
/// h.advance(250).unwrap();
/// assert!(h.stats().refreshes > 0);
/// h.end().unwrap();
/// ```
pub struct LoaderHarness {
    d: Driver,
    steps: usize,
}

impl LoaderHarness {
    /// A harness running `cfg` with the loader zoo's `bugs` (effective only
    /// in a `bug-zoo` build).
    pub fn new(cfg: &HarnessConfig, bugs: LoaderBugs) -> Self {
        Self {
            d: Driver::with_config(cfg, bugs),
            steps: 0,
        }
    }

    /// The stored keys, by index.
    pub fn keys(&self) -> &[String] {
        &self.d.keys
    }

    /// Steps applied so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The highest clock reading so far (expiry is judged on it, T-7).
    pub fn now_ms(&self) -> i64 {
        self.d.high
    }

    /// What the run went through so far.
    pub fn stats(&self) -> LoaderStats {
        self.d.stats
    }

    /// Node `n`'s counters (L-15).
    pub fn counters(&self, n: usize) -> crate::loader::Counters {
        self.d.nodes[n % self.d.nodes.len()].m.counters()
    }

    /// Totals over the open nodes now: flights in the air, refresh tasks,
    /// local tier entries, events waiting to be applied (for timelines).
    pub fn gauges(&self) -> [usize; 4] {
        let open = self.d.nodes.iter().filter(|n| !n.closed);
        open.fold([0; 4], |[f, t, l, p], n| {
            [
                f + n.m.flights(),
                t + n.m.tasks(),
                l + n.m.local().len(),
                p + n.pending.len(),
            ]
        })
    }

    /// Events waiting for node `n` (delivered by the bus, not yet applied).
    pub fn pending(&self, n: usize) -> usize {
        self.d.nodes[n % self.d.nodes.len()].pending.len()
    }

    /// The flights in the air, in the order they began.
    pub fn flights(&self) -> Vec<FlightInfo> {
        self.d
            .flights
            .iter()
            .map(|f| FlightInfo {
                node: f.node,
                inc: self.d.nodes[f.node].inc,
                id: f.id,
                keys: match &f.kind {
                    FKind::Single(k) => vec![k.clone()],
                    FKind::Batch(ks) => ks.clone(),
                },
                batch: matches!(f.kind, FKind::Batch(_)),
                refresh: f.refresh,
                loading: f.loading,
                waiters: f.waiters.len(),
            })
            .collect()
    }

    fn run(
        &mut self,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&mut Driver) -> Check,
    ) -> Result<(), Failure> {
        self.d.step = self.steps;
        let r = f(&mut self.d).and_then(|()| self.d.check_step());
        self.steps += 1;
        self.d.stats.steps += 1;
        r.map_err(|(rule, detail)| self.d.failure_at(rule, detail, what()))
    }

    /// Applies one driver operation, then the per-step checks.
    pub fn apply(&mut self, op: &LoaderOp) -> Result<(), Failure> {
        self.run(|| format!("{op:?}"), |d| d.apply(op))
    }

    /// `load_many` of the keys with these indexes on node `n` (L-13).
    pub fn load_many(&mut self, n: usize, keys: &[usize]) -> Result<(), Failure> {
        let n = n % self.d.nodes.len();
        let set: BTreeSet<String> = keys
            .iter()
            .map(|k| self.d.keys[k % self.d.keys.len()].clone())
            .collect();
        self.run(
            || format!("LoadMany {{ node: {n}, keys: {keys:?} }}"),
            |d| d.load_set(n, set),
        )
    }

    fn find(&self, n: usize, inc: u32, id: FlightId) -> Option<usize> {
        if self.d.nodes.get(n)?.inc != inc {
            return None;
        }
        self.d
            .flights
            .iter()
            .position(|f| f.node == n && f.id == id)
    }

    /// The flight reads the remote and calls its loader (if it has not yet).
    /// `Ok(false)` if no such flight is in the air.
    pub fn start(&mut self, n: usize, inc: u32, id: FlightId) -> Result<bool, Failure> {
        let Some(i) = self.find(n, inc, id) else {
            return Ok(false);
        };
        if self.d.flights[i].loading {
            return Ok(true);
        }
        self.run(
            || format!("Start {{ node: {n}, flight: {id} }}"),
            |d| d.start(i).map(|_| ()),
        )?;
        Ok(true)
    }

    /// The flight's loader answers `result` (a batch: `per_key[i]` for its
    /// `i`-th missing key when given). `Ok(false)` if no such flight is in
    /// the air (it was cancelled, or its node closed or restarted).
    pub fn finish(
        &mut self,
        n: usize,
        inc: u32,
        id: FlightId,
        result: LoadResult,
        per_key: &[LoadResult],
    ) -> Result<bool, Failure> {
        let Some(i) = self.find(n, inc, id) else {
            return Ok(false);
        };
        self.run(
            || format!("Finish {{ node: {n}, flight: {id}, result: {result:?}, per_key: {per_key:?} }}"),
            |d| d.finish_flight_with(i, result, per_key),
        )?;
        Ok(true)
    }

    /// Cuts (or mends) node `n`'s link to the remote: every remote call of
    /// that node fails while it is cut.
    pub fn set_cut(&mut self, n: usize, cut: bool) {
        let len = self.d.cut.len();
        self.d.cut[n % len] = cut;
    }

    /// Node `n` restarts: it closes (LINV-8 is checked on it), then starts
    /// again with an empty local tier, no task and fresh counters; events on
    /// their way to the old process are gone with it.
    pub fn restart(&mut self, n: usize) -> Result<(), Failure> {
        let n = n % self.d.nodes.len();
        self.run(|| format!("Restart {{ node: {n} }}"), |d| d.restart(n))
    }

    /// Simulated time passes: the clock moves `ms` forward, one refresh
    /// interval at a time, and every node's ticker runs after each (L-9).
    pub fn advance(&mut self, ms: u64) -> Result<(), Failure> {
        let mut left = i64::try_from(ms).unwrap_or(i64::MAX);
        while left > 0 {
            let chunk = left.min(INTERVAL_MS);
            left -= chunk;
            self.run(
                || format!("Advance {{ ms: {chunk} }}"),
                |d| {
                    d.clock.advance(chunk);
                    d.high = d.high.max(clock_now(&d.clock));
                    (0..d.nodes.len()).try_for_each(|n| d.tick(n))
                },
            )?;
        }
        Ok(())
    }

    /// The clock jumps by `ms` (back when negative) without time passing;
    /// expiry stays judged on the highest reading (T-7, LINV-3). After a
    /// forward jump every node's ticker runs, as the async layer's next
    /// tick would: it is what stops tasks whose idle window the jump
    /// ended (L-9).
    pub fn jump(&mut self, ms: i64) -> Result<(), Failure> {
        self.run(
            || format!("Jump {{ ms: {ms} }}"),
            |d| {
                d.clock.advance(ms);
                d.went_back |= ms < 0;
                let before = d.high;
                d.high = d.high.max(clock_now(&d.clock));
                d.behind_ms = d.behind_ms.max(d.high - clock_now(&d.clock));
                if d.high > before {
                    (0..d.nodes.len()).try_for_each(|n| d.tick(n))?;
                }
                Ok(())
            },
        )
    }

    /// The end: faults heal, every waiting event is delivered, LINV-5, then
    /// every node closes and LINV-8; gives what the run went through.
    pub fn end(mut self) -> Result<LoaderStats, Failure> {
        self.d.cut.iter_mut().for_each(|c| *c = false);
        self.d.step = self.steps;
        self.d
            .finish()
            .map_err(|(rule, detail)| self.d.failure(rule, detail, None))?;
        Ok(self.d.stats)
    }
}

fn clock_now(clock: &ManualClock) -> i64 {
    use crate::facade::Clock;
    clock.now_ms()
}

/// A fresh machine for node `name` (start-up and restarts).
fn machine(cfg: &MachineConfig, name: &str, bugs: LoaderBugs) -> LoaderMachine<()> {
    let cfg = MachineConfig {
        node: name.to_string(),
        ..cfg.clone()
    };
    with_bugs(LoaderMachine::new(cfg), bugs)
}

#[cfg(feature = "bug-zoo")]
fn with_bugs(m: LoaderMachine<()>, bugs: LoaderBugs) -> LoaderMachine<()> {
    m.with_bugs(bugs)
}

#[cfg(not(feature = "bug-zoo"))]
fn with_bugs(m: LoaderMachine<()>, _bugs: LoaderBugs) -> LoaderMachine<()> {
    m
}

/// A value type with the shapes a cached value has (text, bytes, options,
/// nested lists, signed numbers) for the codec target.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CodecProbe {
    /// Text.
    pub name: String,
    /// Raw bytes.
    pub bytes: Vec<u8>,
    /// An optional number.
    pub id: Option<u64>,
    /// A signed number.
    pub delta: i64,
    /// Nested lists.
    pub tags: Vec<Vec<String>>,
}

/// The `loader_codec` target (L-14): arbitrary bytes decoded as a record
/// envelope and, through both codecs, as values of a few types. Decoding
/// never panics (a panic propagates to the fuzzer); whatever decodes
/// re-encodes to an equal value, and an envelope re-encodes to the very
/// same bytes (its layout has one encoding per record).
pub fn run_loader_codec(bytes: &[u8]) -> Result<(), Failure> {
    use crate::loader::Codec;

    let fail = |detail: String| Failure {
        invariant: "L-14",
        step: 0,
        detail,
    };
    if let Ok(record) = Record::decode(bytes) {
        if record.encode() != bytes {
            return Err(fail(format!(
                "the envelope {bytes:?} decodes to {record:?}, which encodes differently"
            )));
        }
    }
    for codec in [Codec::Binary, Codec::Json] {
        round_trip::<CodecProbe>(codec, bytes).map_err(fail)?;
        round_trip::<String>(codec, bytes).map_err(fail)?;
        round_trip::<Vec<u8>>(codec, bytes).map_err(fail)?;
        round_trip::<(u8, Option<i32>, bool)>(codec, bytes).map_err(fail)?;
        round_trip::<BTreeMap<String, u64>>(codec, bytes).map_err(fail)?;
    }
    // A record around the bytes: its body decodes (or not) the same way.
    let wrapped = Record::value(bytes.to_vec(), i64::MAX).encode();
    match Record::decode(&wrapped) {
        Ok(r) if r.payload == Payload::Value(bytes.to_vec()) => Ok(()),
        other => Err(fail(format!(
            "a value record did not round-trip: {other:?}"
        ))),
    }
}

fn round_trip<V>(codec: crate::loader::Codec, bytes: &[u8]) -> Result<(), String>
where
    V: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(v) = codec.decode::<V>(bytes) else {
        return Ok(());
    };
    let again = codec
        .encode(&v)
        .map_err(|e| format!("{codec:?}: {v:?} decoded but does not encode: {e}"))?;
    match codec.decode::<V>(&again) {
        Ok(w) if w == v => Ok(()),
        other => Err(format!(
            "{codec:?}: {v:?} encodes to {again:?}, which decodes to {other:?}"
        )),
    }
}
