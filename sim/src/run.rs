//! One simulation: build the turmoil world from a plan, step it while
//! injecting the plan's faults, check the oracles after every step, heal,
//! drain, and check quiescence (INV-1, INV-11).

use std::collections::BTreeMap;
use std::sync::{Arc, Once};
use std::time::{Duration, UNIX_EPOCH};

use cache_core::machine::{Buckets, LeakReport};
use cache_core::ttl::{MemoryTtlStore, SqliteTtlStore, StoreFaults, TtlStore};

use crate::plan::{latency_ms, FaultKind, Plan};
use crate::rng::fnv64;
use crate::scenario::{Scenario, StoreKind};
use crate::sqlite_lock::SqliteLock;
use crate::world::{Plant, Violation, World, EPOCH_MS};
use crate::{client, engine, oracle};
use cache_core::ttl::RecordingStore;

/// Simulated ms after healing by which everything must have drained (INV-11).
pub const DRAIN_MS: u64 = 20_000;
/// Simulated ms after a client's last request by which it must be done: it
/// waits at most `ANSWER_MS` for the answer, then at most as long again to
/// close, plus slack. Clients whose plans were stretched by faults still
/// issue requests after healing; each one extends the deadline by this
/// bound, never more, so a call that hangs is still reported (INV-11).
pub const LAST_REQUEST_MS: u64 = 2 * crate::protocol::ANSWER_MS + 2_000;
/// Slack after the longest resolver a request may still start or join:
/// the answer travels back, the entry completes and its session settles.
/// With the named scenarios' resolvers (at most a few hundred ms) the bound
/// it gives stays below [`LAST_REQUEST_MS`], so only plans with long
/// resolvers (up to `MAX_MS`) get a later end.
pub const RESOLVER_SLACK_MS: u64 = 2_000;
/// Metrics timeline cadence, simulated ms (ticks are 20 ms, so every fifth).
const SAMPLE_MS: u64 = 100;
/// Most samples kept: a long run halves its timeline's resolution rather
/// than growing it without bound (10 samples per simulated second of a run
/// of up to 10^13 ms would not fit in memory).
const MAX_SAMPLES: usize = 4096;
/// Turmoil tick, simulated ms. Every tick polls every host's runtime (about
/// 1 µs each, mostly inside turmoil and tokio), so the tick sets the sim's
/// speed: 10 ms ran about 3× faster than 2 ms, 20 ms about 1.7×
/// faster than 10 ms. Detection did not suffer either time: with every
/// bug-zoo switch on, the first 40 seeds of each scenario fail 616 times at
/// 20 ms against 572 at 10 ms (docs/bug-zoo.md).
pub const TICK_MS: u64 = 20;
/// Normal message latency bounds, simulated ms: two ticks wide, so that
/// messages still overtake each other across ticks.
const LATENCY_MS: (u64, u64) = (1, 40);

/// One sample of the metrics timeline (for `report`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Simulated ms.
    pub at_ms: u64,
    /// C-15 buckets of the call cache.
    pub buckets: Buckets,
    /// Open sessions.
    pub clients: usize,
}

/// What one simulation gave.
#[derive(Debug)]
pub struct RunOutcome {
    /// The plan that ran.
    pub plan: Plan,
    /// The trace (simulated time only).
    pub trace: Vec<String>,
    /// Violations, in order; empty when the seed passes.
    pub violations: Vec<Violation>,
    /// Faults fired and other counters.
    pub counters: BTreeMap<String, u64>,
    /// Simulated ms the run took.
    pub sim_ms: u64,
    /// The O-3 leak report of the call cache at the end.
    pub leak: Option<LeakReport>,
    /// The metrics exposition at the end.
    pub metrics: String,
    /// Metrics timeline.
    pub samples: Vec<Sample>,
}

impl RunOutcome {
    /// Passed every oracle.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
    /// The first violated invariant.
    pub fn first_invariant(&self) -> Option<&'static str> {
        self.violations.first().map(|v| v.inv)
    }
    /// INV-12: the hash of the trace.
    pub fn trace_hash(&self) -> u64 {
        fnv64(self.trace.join("\n").as_bytes())
    }
}

static PANIC_HOOK: Once = Once::new();

/// Planned resolver panics are expected: keep them off stderr.
fn quiet_planned_panics() {
    PANIC_HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let planned = info
                .payload()
                .downcast_ref::<cache_core::ResolverError>()
                .is_some_and(|e| e.downcast_ref::<crate::failure::RunFailure>().is_some());
            if !planned {
                default(info);
            }
        }));
    });
}

static NONDETERMINISM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs `plan` under `scenario`, with an optional planted violation.
pub fn run_plan(plan: Plan, scenario: &Scenario, plant: Option<Plant>) -> RunOutcome {
    if let Some(l) = &scenario.loader {
        // The loader world has its own plans (and no planted call-cache leaks).
        return crate::loader::as_run_outcome(crate::loader::run_loader_seed(plan.seed, l));
    }
    if let Some(l) = &scenario.loader_net {
        return crate::loader_net::as_run_outcome(crate::loader_net::run_net_seed(plan.seed, l));
    }
    quiet_planned_panics();
    let mut sqlite_lock = None;
    let (store, memory, _dir): (Arc<dyn TtlStore>, _, _) = match scenario.store {
        StoreKind::Memory => {
            let m = Arc::new(MemoryTtlStore::new());
            (m.clone(), Some(m), None)
        }
        StoreKind::Sqlite => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().join("ttl.db");
            // No busy timeout: a locked write fails at once (see sqlite_lock).
            let s = SqliteTtlStore::open_with_busy_timeout(&path, 0).expect("a SQLite TTL store");
            sqlite_lock = Some(SqliteLock::new(&path));
            (Arc::new(s), None, Some(dir))
        }
    };
    let store = Arc::new(RecordingStore::new(store));
    let mut world = World::new(plan.clone(), plant, store.clone(), memory);
    world.bugs = scenario.bugs;
    let world = Arc::new(world);
    world.trace(
        "sim",
        format!("seed {} scenario {}", plan.seed, scenario.name),
    );
    if !scenario.bugs.is_empty() {
        world.trace("sim", format!("bug-zoo switches on: {}", scenario.bugs));
    }
    world.trace("sim", plan.swarm.to_string());
    if plant == Some(Plant::Nondeterminism) {
        let n = NONDETERMINISM.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        world.trace("sim", format!("process-global counter {n}"));
    }
    let mut sim = turmoil::Builder::new()
        .rng_seed(plan.seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS as u64))
        .simulation_duration(Duration::from_secs(24 * 3600))
        .tick_duration(Duration::from_millis(TICK_MS))
        .min_message_latency(Duration::from_millis(LATENCY_MS.0))
        .max_message_latency(Duration::from_millis(LATENCY_MS.1))
        .build();
    let w = world.clone();
    sim.host("engine", move || engine::serve(w.clone()));
    let names: Vec<String> = (0..plan.clients.len())
        .map(|c| format!("client{c}"))
        .collect();
    for (c, name) in names.iter().enumerate() {
        // Hosts rather than turmoil clients, so that they can crash; the
        // run ends when the world says every client is done.
        let w = world.clone();
        sim.host(name.as_str(), move || client::run(w.clone(), c));
    }

    let mut faults = plan.faults.iter().peekable();
    let mut repairs: Vec<(u64, FaultKind, usize)> = Vec::new();
    let mut crashed = vec![false; names.len()];
    let mut healed = false;
    let mut samples = Vec::new();
    // When the run gives up waiting (and reports INV-11 if a client is still
    // running): all in saturating arithmetic, from the plan's own longest
    // times, so that no legitimate plan ends while a resolver, a message or
    // a client pause is still under way.
    let drain_until = plan.heal_at_ms.saturating_add(DRAIN_MS);
    // A resolver starts at most one message latency after the last request;
    // a deaf one runs to its end, after waiting for a nested call that may
    // have joined another long run.
    let after_request = LAST_REQUEST_MS.max(
        plan.longest_resolver_ms()
            .saturating_mul(2)
            .saturating_add(plan.longest_latency_ms())
            .saturating_add(RESOLVER_SLACK_MS),
    );
    let mut sample_every = SAMPLE_MS;
    let mut now;
    let mut restart_pending = false;
    loop {
        now = sim.elapsed().as_millis() as u64;
        world.set_now(now);
        if restart_pending {
            restart_pending = false;
            world.set_quiet(true);
            sim.bounce("engine");
            world.set_quiet(false);
            world.trace("fault", "engine restarted (memory lost, TTL store kept)");
        }
        while let Some(f) = faults.next_if(|f| f.at_ms <= now && !healed) {
            let name = &names[f.client];
            let fired = match f.kind {
                FaultKind::Partition if !crashed[f.client] => {
                    sim.partition("engine", name.as_str());
                    repairs.push((now.saturating_add(dur(f.arg)), f.kind, f.client));
                    true
                }
                FaultKind::Latency => {
                    sim.set_max_message_latency(Duration::from_millis(latency_ms(f.arg)));
                    repairs.push((now.saturating_add(dur(f.arg)), f.kind, 0));
                    true
                }
                FaultKind::DropConnection if !crashed[f.client] => {
                    world.set_drop_flag(f.client);
                    true
                }
                FaultKind::ClientCrash if !crashed[f.client] && !world.is_done(f.client) => {
                    // Down for `arg` ms (at most until healing), then
                    // restarted: it resumes its plan with a new session.
                    sim.crash(name.as_str());
                    crashed[f.client] = true;
                    repairs.push((now.saturating_add(dur(f.arg)), f.kind, f.client));
                    true
                }
                FaultKind::EngineRestart if !restart_pending => {
                    // Two phases: connections close in a fixed order now;
                    // the bounce follows after one step.
                    if let Some(eng) = world.engine() {
                        eng.stop.cancel();
                    }
                    restart_pending = true;
                    true
                }
                FaultKind::StoreError => match (&world.memory, &mut sqlite_lock) {
                    (Some(m), _) => {
                        let mut faults = m.faults();
                        let n = u32::try_from(f.arg.max(0)).unwrap_or(u32::MAX);
                        faults.fail_next = faults.fail_next.saturating_add(n);
                        m.set_faults(faults);
                        true
                    }
                    // SQLite: another connection holds the write lock for
                    // `arg` × 100 ms.
                    (None, Some(lock)) if !lock.is_held() => match lock.hold() {
                        Ok(()) => {
                            let held = dur(f.arg).saturating_mul(100);
                            repairs.push((now.saturating_add(held), f.kind, 0));
                            true
                        }
                        Err(e) => {
                            world.trace("fault", format!("store-error not injected: {e}"));
                            false
                        }
                    },
                    _ => false,
                },
                FaultKind::StoreSlow => world.memory.as_ref().is_some_and(|m| {
                    let mut faults = m.faults();
                    faults.delay_ms = dur(f.arg).saturating_mul(2);
                    m.set_faults(faults);
                    repairs.push((now.saturating_add(dur(f.arg)), f.kind, 0));
                    true
                }),
                FaultKind::ClockJump => {
                    world.jump(f.arg);
                    true
                }
                _ => false,
            };
            if fired {
                world.count(&format!("fault:{}", f.kind.name()));
                world.trace(
                    "fault",
                    format!("{} client{} arg {}", f.kind.name(), f.client, f.arg),
                );
            }
        }
        let heal_now = !healed && now >= plan.heal_at_ms;
        let (due, later): (Vec<_>, Vec<_>) = repairs
            .drain(..)
            .partition(|(at, _, _)| *at <= now || heal_now);
        repairs = later;
        for (_, kind, c) in due {
            if kind == FaultKind::ClientCrash {
                crashed[c] = false;
            }
            repair(&mut sim, &world, &mut sqlite_lock, kind, &names[c]);
        }
        if heal_now {
            healed = true;
            if let Some(m) = &world.memory {
                m.set_faults(StoreFaults::default());
            }
            world.trace("sim", "heal: faults repaired");
        }
        if now % sample_every == 0 {
            samples.extend(sample(&world, now));
            if samples.len() >= MAX_SAMPLES {
                // Keep the samples on the coarser grid.
                sample_every = sample_every.saturating_mul(2);
                samples.retain(|s: &Sample| s.at_ms % sample_every == 0);
            }
        }
        if let Err(e) = sim.step() {
            world.violate("INV-10", format!("a host failed: {e}"));
            break;
        }
        oracle::check_step(&world);
        if !world.violations().is_empty() {
            break;
        }
        if world.all_done() && quiescent(&world) {
            break;
        }
        let end = drain_until
            .max(world.last_sent_ms().saturating_add(after_request))
            .max(world.busy_until_ms().saturating_add(LAST_REQUEST_MS));
        if now > end {
            break;
        }
    }
    if world.violations().is_empty() {
        if !world.all_done() {
            world.violate("INV-11", "clients still running after healing and draining");
        }
        oracle::check_end(&world);
    }
    // The end state closes the timeline: a leak is a line that stays up.
    samples.extend(sample(&world, now));
    if store.errors() > 0 {
        world.count_by("store-errors-seen", store.errors());
    }
    let eng = world.take_engine();
    let leak = eng.as_ref().map(|e| e.calls.leak_report());
    let metrics = eng
        .as_ref()
        .map(|e| e.calls.metrics_text())
        .unwrap_or_default();
    world.trace("sim", format!("end at {now} ms"));
    let outcome = RunOutcome {
        plan,
        trace: world.trace_lines(),
        violations: world.violations(),
        counters: world.counters(),
        sim_ms: now,
        leak,
        metrics,
        samples,
    };
    drop(sim);
    drop(eng);
    outcome
}

/// A fault's `arg` as a duration, ms (checked plans never have a negative
/// one; a negative one would be 0, never a wrapped huge value).
fn dur(arg: i64) -> u64 {
    u64::try_from(arg).unwrap_or(0)
}

/// The metrics of the running engine's call cache now (for `report`).
fn sample(world: &World, now: u64) -> Option<Sample> {
    world.engine().map(|eng| Sample {
        at_ms: now,
        buckets: eng.calls.buckets(),
        clients: eng.calls.connected_clients(),
    })
}

fn repair(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    sqlite_lock: &mut Option<SqliteLock>,
    kind: FaultKind,
    name: &str,
) {
    match kind {
        FaultKind::StoreError => {
            if let Some(lock) = sqlite_lock {
                lock.release();
                world.trace("fault", "store-error repaired: SQLite write lock released");
            }
        }
        FaultKind::Partition => sim.repair("engine", name),
        FaultKind::ClientCrash => {
            sim.bounce(name);
            world.count("client-restarts");
            world.trace("fault", format!("client-crash repaired: {name} restarted"));
        }
        FaultKind::Latency => sim.set_max_message_latency(Duration::from_millis(LATENCY_MS.1)),
        FaultKind::StoreSlow => {
            if let Some(m) = &world.memory {
                let mut f = m.faults();
                f.delay_ms = 0;
                m.set_faults(f);
            }
        }
        _ => {}
    }
}

/// Nothing left to drain: no call in flight, no resolver running, no session open.
fn quiescent(world: &World) -> bool {
    let Some(eng) = world.engine() else {
        return true;
    };
    let sh = world.shadow();
    let idle = sh.pending.get(&eng.inc).copied().unwrap_or(0) == 0
        && !sh
            .runs
            .values()
            .any(|r| r.inc == eng.inc && r.finished_at.is_none());
    drop(sh);
    idle && eng.calls.connected_clients() == 0
        && eng.changes.connected_clients() == 0
        && eng.calls.live_entries() == 0
}

/// Generates the plan of `seed` and runs it.
pub fn run_seed(seed: u64, scenario: &Scenario, plant: Option<Plant>) -> RunOutcome {
    if let Some(l) = &scenario.loader {
        return crate::loader::as_run_outcome(crate::loader::run_loader_seed(seed, l));
    }
    if let Some(l) = &scenario.loader_net {
        return crate::loader_net::as_run_outcome(crate::loader_net::run_net_seed(seed, l));
    }
    run_plan(Plan::generate(seed, scenario), scenario, plant)
}

/// INV-12: runs `seed` twice and compares trace hashes; `Err` names the
/// first differing line.
pub fn check_determinism(
    seed: u64,
    scenario: &Scenario,
    plant: Option<Plant>,
) -> Result<u64, String> {
    let a = run_seed(seed, scenario, plant);
    let b = run_seed(seed, scenario, plant);
    if a.trace_hash() == b.trace_hash() {
        return Ok(a.trace_hash());
    }
    let line = a
        .trace
        .iter()
        .zip(&b.trace)
        .position(|(x, y)| x != y)
        .unwrap_or(a.trace.len().min(b.trace.len()));
    Err(format!(
        "INV-12: seed {seed} gave two traces ({:016x} vs {:016x}); first difference at line {line}: {:?} vs {:?}",
        a.trace_hash(),
        b.trace_hash(),
        a.trace.get(line),
        b.trace.get(line)
    ))
}
