//! The loader world: runs a [`LoaderPlan`] as a discrete-event simulation
//! over cache-core's [`LoaderHarness`] (several nodes' pure loader machines
//! sharing one in-memory remote tier and one event bus, under the driver's
//! shadow model). The world plays the parts the rules leave to time and
//! the network: when a flight reads the remote and when its loader answers
//! (remote latency, slow loaders), which answer (the [`Db`] model), when
//! and in which order bus events arrive (delays, reorders), and which
//! faults hold. It judges nothing itself: every call into the harness runs
//! the LINV-1 … LINV-8 checks of `cache_core::driver`, and the first
//! failure ends the run.

use std::collections::{BTreeMap, BTreeSet};

use cache_core::driver::{
    Failure, FlightInfo, HarnessConfig, LoadResult, LoaderHarness, LoaderOp, LoaderStats,
    RemoteFault,
};

use super::plan::{Answer, Behave, LoaderFault, LoaderPlan, PlanOp};
use super::scenario::LoaderScenario;
use crate::decisions::LoaderDecision;
use crate::rng::Rng;

/// Simulated ms after the last planned operation until the run ends: every
/// flight's loader has answered by then (slow loaders included, up to
/// `[loader] slow_ms` plus the longest latency) and idle refresh tasks have
/// stopped (L-9's idle window is 500 ms).
pub const SETTLE_MS: u64 = 5_000;

/// A violated invariant of a loader run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderViolation {
    /// `LINV-n` (or the L-rule the driver names).
    pub inv: &'static str,
    /// Simulated ms.
    pub at_ms: u64,
    /// What happened (the driver's detail: the operation, the clock, the flights).
    pub detail: String,
}

/// What one loader simulation gave.
#[derive(Clone, Debug)]
pub struct LoaderOutcome {
    /// The plan that ran.
    pub plan: LoaderPlan,
    /// The trace (simulated time only).
    pub trace: Vec<String>,
    /// The first violation, if any.
    pub violation: Option<LoaderViolation>,
    /// What the run went through (the harness's counts).
    pub stats: LoaderStats,
    /// Faults fired and the harness's counts, by name.
    pub counters: BTreeMap<String, u64>,
    /// Simulated ms the run took.
    pub sim_ms: u64,
    /// Each node's L-15 counters at the end, one line per node.
    pub metrics: String,
    /// The timeline: after each simulated ms with events, the totals over
    /// the nodes of flights, refresh tasks, local entries and waiting events.
    pub samples: Vec<(u64, [usize; 4])>,
    /// Each operation's decision and each flight's answer, typed, in trace
    /// order (`cache-sim explain`, `replay --trace-out`).
    pub decisions: Vec<LoaderDecision>,
}

impl LoaderOutcome {
    /// Passed every oracle.
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }
}

/// The database the loaders read: a version per key (`None`: deleted).
/// `set` and `change-source` give a key a new version, `delete` removes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Db {
    rows: Vec<Option<u8>>,
    next: Vec<u8>,
}

impl Db {
    /// `keys` rows, each at a first version drawn from `seed` (values are
    /// bytes: any of them, the placeholder-like `*` included, may occur).
    pub fn new(keys: usize, seed: u64) -> Db {
        let mut rng = Rng::new(seed, "loader-db");
        let rows: Vec<Option<u8>> = (0..keys).map(|_| Some(rng.below(256) as u8)).collect();
        let next = rows
            .iter()
            .map(|v| v.unwrap_or(0).wrapping_add(1))
            .collect();
        Db { rows, next }
    }

    /// What a loader reading `key` now gets.
    pub fn read(&self, key: usize) -> LoadResult {
        match self.rows[key] {
            Some(v) => LoadResult::Value(v),
            None => LoadResult::NotFound,
        }
    }

    /// A new version of `key` (the value a `set` writes).
    pub fn bump(&mut self, key: usize) -> u8 {
        let v = self.next[key];
        self.next[key] = v.wrapping_add(1);
        self.rows[key] = Some(v);
        v
    }

    /// `key` is deleted.
    pub fn delete(&mut self, key: usize) {
        self.rows[key] = None;
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Plan(usize),
    Start(FlightInfo),
    Finish(FlightInfo, Behave),
}

#[derive(Default)]
struct Faults {
    latency_ms: u64,
    bus_delay: bool,
    drop: bool,
    duplicate: bool,
    fail_publish: bool,
}

struct Sim<'a> {
    s: &'a LoaderScenario,
    plan: &'a LoaderPlan,
    h: LoaderHarness,
    db: Db,
    index: BTreeMap<String, usize>,
    queue: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    now: u64,
    known: BTreeSet<(usize, u32, u64)>,
    faults: Faults,
    refresh_rng: Rng,
    bus_rng: Rng,
    trace: Vec<String>,
    counters: BTreeMap<String, u64>,
    samples: Vec<(u64, [usize; 4])>,
    decisions: Vec<LoaderDecision>,
}

/// Runs `plan` under `s` (its loader zoo switches included).
pub fn run_loader_plan(plan: LoaderPlan, s: &LoaderScenario) -> LoaderOutcome {
    let cfg = HarnessConfig {
        nodes: s.nodes,
        keys: s.key_space,
        remote: plan.remote,
        not_found: s.not_found,
        local_capacity: s.local_capacity,
        jitter: s.jitter,
        jitter_seed: plan.seed ^ 0x6a09_e667_f3bc_c908,
        bus_seed: plan.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 1,
    };
    let h = LoaderHarness::new(&cfg, s.bugs);
    let index = h
        .keys()
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i))
        .collect();
    let mut sim = Sim {
        s,
        plan: &plan,
        h,
        db: Db::new(s.key_space, plan.seed),
        index,
        queue: BTreeMap::new(),
        seq: 0,
        now: 0,
        known: BTreeSet::new(),
        faults: Faults::default(),
        refresh_rng: Rng::new(plan.seed, "loader-refresh"),
        bus_rng: Rng::new(plan.seed, "loader-bus"),
        trace: Vec::new(),
        counters: BTreeMap::new(),
        samples: Vec::new(),
        decisions: Vec::new(),
    };
    sim.line(format!("seed {} scenario {}", plan.seed, s.name));
    if !s.bugs.is_empty() {
        sim.line(format!("loader zoo switches on: {}", s.bugs));
    }
    sim.line(plan.swarm.to_string());
    sim.line(format!(
        "nodes {} keys {} remote {} not-found {} local {} jitter {}",
        s.nodes, s.key_space, plan.remote, s.not_found, s.local_capacity, s.jitter
    ));
    let result = sim.run();
    let sim_ms = sim.now;
    let metrics = (0..s.nodes)
        .map(|n| format!("n{n} {:?}", sim.h.counters(n)))
        .collect::<Vec<_>>()
        .join("\n");
    let mut stats = sim.h.stats();
    let Sim {
        h,
        mut trace,
        mut counters,
        samples,
        decisions,
        ..
    } = sim;
    let violation = match result {
        Ok(()) => match h.end() {
            Ok(s) => {
                stats = s;
                None
            }
            Err(f) => Some(violation(f, sim_ms)),
        },
        Err(f) => Some(violation(f, sim_ms)),
    };
    match &violation {
        None => trace.push(format!("{sim_ms:>7} end: every loader invariant holds")),
        Some(v) => trace.push(format!(
            "{sim_ms:>7} VIOLATION {}: {}",
            v.inv,
            first_line(&v.detail)
        )),
    }
    for (name, v) in stats.named() {
        counters.insert(format!("loader:{name}"), v as u64);
    }
    LoaderOutcome {
        plan,
        trace,
        violation,
        stats,
        counters,
        sim_ms,
        metrics,
        samples,
        decisions,
    }
}

fn violation(f: Failure, at_ms: u64) -> LoaderViolation {
    LoaderViolation {
        inv: f.invariant,
        at_ms,
        detail: f.detail,
    }
}

/// An operation's node, name and keys, for its decision record (keys as
/// the world uses them: a write's key is taken modulo the key space).
fn op_parts(op: &PlanOp, key_space: usize) -> (Option<usize>, &'static str, Vec<u64>) {
    let k = |key: usize| vec![(key % key_space.max(1)) as u64];
    match op {
        PlanOp::Once { node, key, .. } => (Some(*node), "once", k(*key)),
        PlanOp::Get { node, key } => (Some(*node), "get", k(*key)),
        PlanOp::Exists { node, key } => (Some(*node), "exists", k(*key)),
        PlanOp::Set { node, key, .. } => (Some(*node), "set", k(*key)),
        PlanOp::Delete { node, key } => (Some(*node), "delete", k(*key)),
        PlanOp::LoadMany { node, keys, .. } => (
            Some(*node),
            "load_many",
            keys.iter().map(|key| *key as u64).collect(),
        ),
        PlanOp::ChangeSource { key } => (None, "change_source", k(*key)),
        PlanOp::Cancel { .. } => (None, "cancel", Vec::new()),
        PlanOp::Fault { node, .. } => (Some(*node), "fault", Vec::new()),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

impl Sim<'_> {
    fn line(&mut self, text: String) {
        self.trace.push(text);
    }

    fn at(&mut self, text: String) {
        let now = self.now;
        self.trace.push(format!("{now:>7} {text}"));
    }

    fn count(&mut self, name: String) {
        *self.counters.entry(name).or_default() += 1;
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.queue.insert((at, self.seq), ev);
        self.seq += 1;
    }

    fn key_name(&self, stored: &str) -> String {
        self.index
            .get(stored)
            .map_or_else(|| stored.to_string(), |k| format!("k{k}"))
    }

    fn run(&mut self) -> Result<(), Failure> {
        for (i, t) in self.plan.ops.iter().enumerate() {
            self.queue.insert((t.at_ms, self.seq), Ev::Plan(i));
            self.seq += 1;
        }
        let heal_at = self.plan.ops.last().map_or(0, |t| t.at_ms);
        let limit = heal_at.saturating_add(SETTLE_MS);
        let mut healed = false;
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            if at > limit {
                self.at(format!(
                    "settle limit reached; {} events left",
                    self.queue.len() + 1
                ));
                break;
            }
            if !healed && at > heal_at {
                healed = true;
                self.heal()?;
            }
            if at > self.now {
                self.h.advance(at - self.now)?;
                self.now = at;
                // Refresh flights the tickers began while time passed.
                self.discover(None);
            }
            match ev {
                Ev::Plan(i) => {
                    let op = self.plan.ops[i].op.clone();
                    self.plan_op(&op)?;
                }
                Ev::Start(f) => {
                    self.h.start(f.node, f.inc, f.id)?;
                }
                Ev::Finish(f, b) => self.finish(&f, b)?,
            }
            self.pump()?;
            let g = self.h.gauges();
            match self.samples.last_mut() {
                Some((t, last)) if *t == self.now => *last = g,
                _ => self.samples.push((self.now, g)),
            }
        }
        if !healed {
            self.heal()?;
        }
        Ok(())
    }

    /// Flights the harness shows that the world has not scheduled yet: a
    /// flight the last operation led gets that operation's loader, others
    /// (refreshes) one drawn from the refresh stream.
    fn discover(&mut self, led: Option<Behave>) {
        let latency = self.faults.latency_ms;
        for f in self.h.flights() {
            if !self.known.insert((f.node, f.inc, f.id)) {
                continue;
            }
            let b = match led {
                Some(b) if !f.refresh => b,
                _ => Behave::draw(&mut self.refresh_rng, self.s),
            };
            let start = self.now.saturating_add(latency);
            self.push(start, Ev::Start(f.clone()));
            self.push(start.saturating_add(b.dur_ms), Ev::Finish(f, b));
        }
    }

    fn plan_op(&mut self, op: &PlanOp) -> Result<(), Failure> {
        let before = self.h.stats();
        let flights_before = self.h.flights().len();
        let (text, led) = match *op {
            PlanOp::Once {
                node,
                key,
                refresh,
                skip_local,
                loader,
            } => {
                self.h.apply(&LoaderOp::Once {
                    node: node as u8,
                    key: key as u8,
                    refresh,
                    skip_local,
                    stubborn: loader.stubborn,
                })?;
                (
                    format!(
                        "n{node} once k{key}{}{}",
                        if refresh { " refresh" } else { "" },
                        if skip_local { " skip-local" } else { "" }
                    ),
                    Some(loader),
                )
            }
            PlanOp::Get { node, key } => {
                self.h.apply(&LoaderOp::Get {
                    node: node as u8,
                    key: key as u8,
                })?;
                (format!("n{node} get k{key}"), None)
            }
            PlanOp::Exists { node, key } => {
                self.h.apply(&LoaderOp::Exists {
                    node: node as u8,
                    key: key as u8,
                })?;
                (format!("n{node} exists k{key}"), None)
            }
            PlanOp::Set { node, key, ttl } => {
                let key = key % self.s.key_space;
                let v = self.db.bump(key);
                self.h.apply(&LoaderOp::Set {
                    node: node as u8,
                    key: key as u8,
                    value: v,
                    ttl,
                })?;
                let ttl = ttl.map_or(String::new(), |t| {
                    format!(" ttl {}ms", 1 + 10 * u32::from(t))
                });
                (format!("n{node} set k{key} = {v}{ttl}"), None)
            }
            PlanOp::Delete { node, key } => {
                let key = key % self.s.key_space;
                self.db.delete(key);
                self.h.apply(&LoaderOp::Delete {
                    node: node as u8,
                    key: key as u8,
                })?;
                (format!("n{node} delete k{key}"), None)
            }
            PlanOp::LoadMany {
                node,
                ref keys,
                loader,
            } => {
                self.h.load_many(node, keys)?;
                let names: Vec<String> = keys.iter().map(|k| format!("k{k}")).collect();
                (
                    format!("n{node} load_many [{}]", names.join(" ")),
                    Some(loader),
                )
            }
            PlanOp::ChangeSource { key } => {
                let key = key % self.s.key_space;
                let v = self.db.bump(key);
                (format!("source k{key} = {v}"), None)
            }
            PlanOp::Cancel { which, waiter } => {
                self.h.apply(&LoaderOp::Leave { which, waiter })?;
                (format!("cancel flight#{which} waiter#{waiter}"), None)
            }
            PlanOp::Fault {
                kind,
                node,
                arg,
                on,
            } => return self.fault(kind, node % self.s.nodes, arg, on),
        };
        let after = self.h.stats();
        let flights = self.h.flights();
        let outcome = if after.local_hits > before.local_hits {
            if after.placeholders > before.placeholders {
                "local placeholder".to_string()
            } else {
                format!("local x{}", after.local_hits - before.local_hits)
            }
        } else if after.remote_hits > before.remote_hits {
            "remote".to_string()
        } else if flights.len() > flights_before {
            let f = &flights[flights.len() - 1];
            format!("lead f{}.{}", f.inc, f.id)
        } else if after.joins > before.joins {
            "join".to_string()
        } else {
            "-".to_string()
        };
        self.at(format!("{text} -> {outcome}"));
        let (node, name, keys) = op_parts(op, self.s.key_space);
        let path = match outcome.split(' ').next().unwrap_or("-") {
            "local" if outcome == "local placeholder" => "local-placeholder",
            "-" if matches!(name, "set" | "delete") => "write",
            "-" if name == "change_source" => "source",
            p => p,
        };
        self.decisions.push(LoaderDecision {
            ms: self.now,
            node,
            op: name.into(),
            keys,
            path: path.into(),
            outcome,
        });
        self.discover(led);
        Ok(())
    }

    fn finish(&mut self, f: &FlightInfo, b: Behave) -> Result<(), Failure> {
        let keys: Vec<usize> = f
            .keys
            .iter()
            .filter_map(|k| self.index.get(k).copied())
            .collect();
        let (result, per_key) = match b.answer {
            Answer::Fail => (LoadResult::Fail, Vec::new()),
            Answer::NotFound => (LoadResult::NotFound, vec![LoadResult::NotFound; keys.len()]),
            Answer::Read if !f.batch => (
                keys.first()
                    .map_or(LoadResult::NotFound, |k| self.db.read(*k)),
                Vec::new(),
            ),
            Answer::Read => (
                LoadResult::Value(0),
                keys.iter().map(|k| self.db.read(*k)).collect(),
            ),
        };
        let per: &[LoadResult] = if f.batch { &per_key } else { &[] };
        if self.h.finish(f.node, f.inc, f.id, result, per)? {
            let names: Vec<String> = f.keys.iter().map(|k| self.key_name(k)).collect();
            // A batch's answer is per key (a failed batch has none).
            let what = if per.is_empty() {
                format!("{result:?}")
            } else {
                format!("{per:?}")
            };
            self.decisions.push(LoaderDecision {
                ms: self.now,
                node: Some(f.node),
                op: "loaded".into(),
                keys: f
                    .keys
                    .iter()
                    .filter_map(|k| self.index.get(k).map(|i| *i as u64))
                    .collect(),
                path: "loaded".into(),
                outcome: format!(
                    "f{}.{}{} {what}",
                    f.inc,
                    f.id,
                    if f.refresh { " refresh" } else { "" }
                ),
            });
            self.at(format!(
                "n{} f{}.{} [{}]{} loaded {what}",
                f.node,
                f.inc,
                f.id,
                names.join(" "),
                if f.refresh { " refresh" } else { "" }
            ));
        }
        Ok(())
    }

    fn fault(&mut self, kind: LoaderFault, node: usize, arg: i64, on: bool) -> Result<(), Failure> {
        let name = kind.name();
        match kind {
            LoaderFault::RemoteError => {
                let fault = match (on, arg) {
                    (false, _) => RemoteFault::Healthy,
                    (true, 0) => RemoteFault::ReadFail,
                    (true, 1) => RemoteFault::WriteFail,
                    (true, _) => RemoteFault::Partition,
                };
                self.h.apply(&LoaderOp::Remote { fault })?;
                self.at(format!("fault {name} {fault:?}"));
            }
            LoaderFault::RemoteLatency => {
                self.faults.latency_ms = if on {
                    u64::try_from(arg).unwrap_or(0)
                } else {
                    0
                };
                self.at(format!("fault {name} {}ms", self.faults.latency_ms));
            }
            LoaderFault::Partition => {
                self.h.set_cut(node, on);
                self.at(format!(
                    "fault {name} n{node} {}",
                    if on { "cut" } else { "mended" }
                ));
            }
            LoaderFault::BusDrop | LoaderFault::BusDuplicate | LoaderFault::BusPublishFail => {
                match kind {
                    LoaderFault::BusDrop => self.faults.drop = on,
                    LoaderFault::BusDuplicate => self.faults.duplicate = on,
                    _ => self.faults.fail_publish = on,
                }
                self.bus()?;
                self.at(format!("fault {name} {}", if on { "on" } else { "off" }));
            }
            LoaderFault::BusDelay => {
                self.faults.bus_delay = on;
                self.at(format!("fault {name} {}", if on { "on" } else { "off" }));
            }
            LoaderFault::NodeRestart => {
                if !on {
                    return Ok(());
                }
                self.h.restart(node)?;
                self.at(format!("fault {name} n{node}: local tier and tasks lost"));
            }
            LoaderFault::ClockJump => {
                if !on {
                    return Ok(());
                }
                self.h.jump(arg)?;
                self.at(format!("fault {name} {arg:+}ms"));
            }
        }
        if on {
            self.count(format!("fault:{name}"));
        }
        Ok(())
    }

    fn bus(&mut self) -> Result<(), Failure> {
        self.h.apply(&LoaderOp::Bus {
            drop: self.faults.drop,
            duplicate: self.faults.duplicate,
            fail_publish: self.faults.fail_publish,
        })
    }

    /// Every fault ends (the plan's last operation has run).
    fn heal(&mut self) -> Result<(), Failure> {
        self.h.apply(&LoaderOp::Remote {
            fault: RemoteFault::Healthy,
        })?;
        for n in 0..self.s.nodes {
            self.h.set_cut(n, false);
        }
        self.faults = Faults::default();
        self.bus()?;
        self.at("heal: every fault ends".into());
        Ok(())
    }

    /// The bus delivers: in order at once, or (delay fault) a random subset
    /// in random order, the rest later.
    fn pump(&mut self) -> Result<(), Failure> {
        for n in 0..self.s.nodes {
            while self.h.pending(n) > 0 {
                let which = if self.faults.bus_delay {
                    if !self.bus_rng.chance(0.5) {
                        break;
                    }
                    self.bus_rng.below(self.h.pending(n) as u64) as u8
                } else {
                    0
                };
                self.h.apply(&LoaderOp::Deliver {
                    node: n as u8,
                    which,
                })?;
            }
        }
        Ok(())
    }
}
