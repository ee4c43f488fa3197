//! One `loader-net` simulation: the remote, bus and node hosts on turmoil,
//! the plan's faults injected and repaired, the oracles after every step;
//! then heal, let every event arrive, judge convergence, close every
//! loader and judge quiescence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cache_core::loader::RemoteFaults;

use super::bus::{serve_bus, PING_MS};
use super::oracle::{Oracle, Verdict};
use super::plan::{NetFault, NetFaultKind, NetPlan};
use super::remote::serve_remote;
use super::scenario::NetScenario;
use super::world::{node_host, node_name, BusFaultState, NetWorld, WorldBus};
use crate::plan::{Plan, Swarm};
use crate::run::{RunOutcome, TICK_MS};
use crate::world::{Violation, EPOCH_MS};

/// Normal message latency bounds, simulated ms (as the call-cache world's).
const LATENCY_MS: (u64, u64) = (1, 40);
/// After healing, how long the streams may take to finish (a hang beyond
/// it is reported: every call answers, INV-11).
pub const DRAIN_MS: u64 = 30_000;
/// After the streams finish (and healing), how long until every event is
/// delivered: the longest bus delay fault, a lost subscription noticed
/// (three pings) and made again, plus slack.
pub const SETTLE_MS: u64 = 1_500 + 4 * PING_MS + 700;
/// How long every node's `close()` may take.
pub const CLOSE_MS: u64 = 10_000;
/// Steps after the last close before quiescence is judged (a bus
/// subscription task notices its loader is gone on its next poll).
const QUIET_STEPS: u32 = 5;

/// What one `loader-net` simulation gave.
#[derive(Debug)]
pub struct NetOutcome {
    /// The plan that ran.
    pub plan: NetPlan,
    /// The trace (simulated time only).
    pub trace: Vec<String>,
    /// Verdicts, in order; empty when the seed passes.
    pub verdicts: Vec<Verdict>,
    /// The verdicts as violations, stamped with simulated time.
    pub violations: Vec<Violation>,
    /// Faults fired, errors seen, oracle tallies.
    pub counters: BTreeMap<String, u64>,
    /// Simulated ms the run took.
    pub sim_ms: u64,
    /// The gauges over time, for `cache-sim report` ([`super::tools::Gauges`]).
    pub samples: Vec<(u64, super::tools::Gauges)>,
}

impl NetOutcome {
    /// Passed every oracle.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Generates the plan of `seed` and runs it.
pub fn run_net_seed(seed: u64, s: &NetScenario) -> NetOutcome {
    run_net_plan(NetPlan::generate(seed, s), s)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Settling { until: u64, deadline: u64 },
    Closing { deadline: u64, quiet: u32 },
}

/// Runs `plan` under `s`.
pub fn run_net_plan(plan: NetPlan, s: &NetScenario) -> NetOutcome {
    let world = Arc::new(NetWorld::new(s.clone(), plan.clone()));
    world.trace(
        "sim",
        format!("seed {} scenario {} (loader-net)", plan.seed, s.name),
    );
    world.trace("sim", plan.to_string());
    if !s.bugs.is_empty() {
        world.trace("sim", format!("loader zoo switches on: {}", s.bugs));
    }
    let mut sim = turmoil::Builder::new()
        .rng_seed(plan.seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS as u64))
        .simulation_duration(Duration::from_secs(24 * 3600))
        .tick_duration(Duration::from_millis(TICK_MS))
        .min_message_latency(Duration::from_millis(LATENCY_MS.0))
        .max_message_latency(Duration::from_millis(LATENCY_MS.1))
        .build();
    let (backend, w) = (world.remote.clone(), world.clone());
    sim.host("remote", move || {
        let w = w.clone();
        serve_remote(backend.clone(), move |req, reply| {
            w.remote_applied(req, reply)
        })
    });
    let w = world.clone();
    sim.host("bus", move || serve_bus(Arc::new(WorldBus(w.clone()))));
    for n in 0..s.nodes {
        let w = world.clone();
        sim.host(node_name(n).as_str(), move || node_host(w.clone(), n));
    }
    let mut oracle = Oracle::default();
    let mut verdicts = Vec::new();
    let mut faults = plan.faults.iter().peekable();
    let mut windows: Vec<(u64, NetFault)> = Vec::new();
    let mut healed = false;
    let mut phase = Phase::Running;
    let mut now;
    let mut samples = Vec::new();
    // Nodes whose clients stopped last step, bounced now.
    let mut bounce: Vec<usize> = Vec::new();
    loop {
        now = sim.elapsed().as_millis() as u64;
        world.set_now(now);
        for n in std::mem::take(&mut bounce) {
            // The rest of the host's tasks drop in an order tokio does not
            // make deterministic: nothing they do may reach the trace.
            world.set_quiet(true);
            sim.bounce(node_name(n).as_str());
            world.set_quiet(false);
        }
        if !healed {
            let mut stopped = Vec::new();
            while let Some(f) = faults.next_if(|f| f.at_ms <= now) {
                if f.kind == NetFaultKind::NodeRestart && stopped.contains(&f.node) {
                    continue;
                }
                inject(&mut sim, &world, f, &mut stopped);
                if f.kind.has_window() {
                    windows.push((now.saturating_add(f.dur_ms), f.clone()));
                }
            }
            let heal = now >= plan.heal_at_ms;
            let (due, later): (Vec<_>, Vec<_>) =
                windows.drain(..).partition(|(end, _)| heal || *end <= now);
            windows = later;
            for (_, f) in due {
                repair(&sim, &world, &f);
            }
            bounce = stopped;
            if heal {
                heal_all(&sim, &world, s.nodes);
                healed = true;
            }
        }
        if let Err(e) = sim.step() {
            verdicts.push(Verdict::Stuck {
                detail: format!("a host failed: {e}"),
            });
            break;
        }
        let log = world.drain_log();
        let nodes = world.nodes();
        super::tools::sample(&mut samples, now, &nodes);
        oracle.set_time(now, world.clock_ms());
        let mut found = oracle.observe(&log, &world.db());
        found.extend(oracle.check_counters(&nodes));
        found.extend(oracle.check_refresh(&nodes, &s.refresh, s.key_space as u64));
        if !found.is_empty() {
            verdicts.extend(found);
            break;
        }
        match phase {
            Phase::Running if healed && world.all_done() => {
                phase = Phase::Settling {
                    until: now + SETTLE_MS,
                    deadline: now + DRAIN_MS,
                };
            }
            Phase::Running if now > plan.heal_at_ms.saturating_add(DRAIN_MS) => {
                verdicts.push(Verdict::Stuck {
                    detail: "client streams still running after healing and draining".into(),
                });
                break;
            }
            // Refresh tasks run until their keys go idle, and each refresh
            // may write and publish: convergence waits until none is left
            // and their last events can have arrived (bounded: a task
            // outliving its idle window is LINV-4's).
            Phase::Settling { deadline, .. } if now > deadline => {
                verdicts.push(Verdict::Stuck {
                    detail: "refresh tasks or flights still running long after the streams ended"
                        .into(),
                });
                break;
            }
            Phase::Settling { until, deadline } if now >= until && refresh_active(&nodes) => {
                phase = Phase::Settling {
                    until: now + SETTLE_MS,
                    deadline,
                };
            }
            Phase::Settling { until, .. } if now >= until => {
                let (found, tally) =
                    oracle.check_convergence(&nodes, &world.remote, s.key_space as u64);
                world.count_by("linv5-judged", tally.judged);
                world.count_by("linv5-exempt", tally.exempt);
                world.count_by("linv5-remote-expired", tally.expired_remote);
                world.trace(
                    "oracle",
                    format!(
                        "convergence: {} local copies judged, {} exempt (silent loss)",
                        tally.judged, tally.exempt
                    ),
                );
                if !found.is_empty() {
                    verdicts.extend(found);
                    break;
                }
                world.request_close();
                phase = Phase::Closing {
                    deadline: now + CLOSE_MS,
                    quiet: 0,
                };
            }
            Phase::Closing { deadline, quiet } => {
                if world.all_closed() {
                    if quiet >= QUIET_STEPS {
                        verdicts.extend(Oracle::check_closed(&nodes));
                        break;
                    }
                    phase = Phase::Closing {
                        deadline,
                        quiet: quiet + 1,
                    };
                } else if now > deadline {
                    verdicts.extend(Oracle::check_closed(&nodes));
                    break;
                }
            }
            _ => {}
        }
    }
    let violations: Vec<Violation> = verdicts
        .iter()
        .map(|v| {
            let (inv, detail) = (v.inv(), v.detail());
            world.trace("oracle", format!("VIOLATION {inv}: {detail}"));
            Violation {
                inv,
                detail,
                at_ms: now,
            }
        })
        .collect();
    let t = oracle.tally;
    for (name, n) in [
        ("linv3-judged", t.linv3_judged),
        ("linv3-expired", t.linv3_expired),
        ("linv4-tasks", t.linv4_tasks),
        ("linv4-deleted-with-task", t.linv4_deleted_with_task),
        ("linv7-batches", t.linv7_batches),
    ] {
        world.count_by(name, n);
    }
    world.trace("sim", format!("end at {now} ms"));
    let outcome = NetOutcome {
        plan,
        trace: world.trace_lines(),
        verdicts,
        violations,
        counters: world.counters(),
        sim_ms: now,
        samples,
    };
    drop(sim);
    outcome
}

/// Whether some node still has a refresh task or a flight in the air.
fn refresh_active(nodes: &[super::world::NodeSlot]) -> bool {
    nodes.iter().any(|slot| {
        slot.loader
            .as_ref()
            .is_some_and(|l| l.refresh_tasks() > 0 || l.flights() > 0)
    })
}

fn inject(sim: &mut turmoil::Sim<'_>, w: &NetWorld, f: &NetFault, bounce: &mut Vec<usize>) {
    let node = node_name(f.node);
    let node = node.as_str();
    match f.kind {
        NetFaultKind::PartitionRemote => sim.partition(node, "remote"),
        NetFaultKind::PartitionBus => sim.partition(node, "bus"),
        NetFaultKind::HoldRemote => sim.hold(node, "remote"),
        NetFaultKind::Latency => {
            sim.set_max_message_latency(Duration::from_millis(f.arg.max(1) as u64))
        }
        NetFaultKind::RemoteError => w.remote.set_faults(RemoteFaults {
            fail_reads: f.arg != 1,
            fail_writes: f.arg != 0,
            ..RemoteFaults::default()
        }),
        NetFaultKind::RemoteSlow => w.remote.set_faults(RemoteFaults {
            latency_ms: f.arg.max(0) as u64,
            ..RemoteFaults::default()
        }),
        NetFaultKind::BusDrop => w.set_bus_faults(BusFaultState {
            drop: f.arg.max(0) as u64,
            ..w.bus_faults()
        }),
        NetFaultKind::BusDuplicate => w.set_bus_faults(BusFaultState {
            duplicate: f.arg.max(0) as u64,
            ..w.bus_faults()
        }),
        NetFaultKind::BusDelay => w.set_bus_faults(BusFaultState {
            max_delay_ms: f.arg.max(0) as u64,
            ..w.bus_faults()
        }),
        NetFaultKind::NodeRestart => {
            // Two phases, as the call-cache world's engine restart: the
            // node's clients stop now (their sockets close during the next
            // step, in task order), the bounce follows after that step.
            w.crashing(f.node);
            bounce.push(f.node);
        }
        NetFaultKind::ClockJump => w.jump(f.arg),
    }
    w.count(&format!("fault:{}", f.kind.name()));
    w.trace(
        "fault",
        format!("{} node{} arg {}", f.kind.name(), f.node, f.arg),
    );
}

fn repair(sim: &turmoil::Sim<'_>, w: &NetWorld, f: &NetFault) {
    let node = node_name(f.node);
    let node = node.as_str();
    match f.kind {
        NetFaultKind::PartitionRemote => sim.repair(node, "remote"),
        NetFaultKind::PartitionBus => sim.repair(node, "bus"),
        NetFaultKind::HoldRemote => sim.release(node, "remote"),
        NetFaultKind::Latency => sim.set_max_message_latency(Duration::from_millis(LATENCY_MS.1)),
        NetFaultKind::RemoteError | NetFaultKind::RemoteSlow => {
            w.remote.set_faults(RemoteFaults::default())
        }
        NetFaultKind::BusDrop => w.set_bus_faults(BusFaultState {
            drop: 0,
            ..w.bus_faults()
        }),
        NetFaultKind::BusDuplicate => w.set_bus_faults(BusFaultState {
            duplicate: 0,
            ..w.bus_faults()
        }),
        NetFaultKind::BusDelay => w.set_bus_faults(BusFaultState {
            max_delay_ms: 0,
            ..w.bus_faults()
        }),
        NetFaultKind::NodeRestart | NetFaultKind::ClockJump => return,
    }
    w.trace(
        "fault",
        format!("{} node{} repaired", f.kind.name(), f.node),
    );
}

fn heal_all(sim: &turmoil::Sim<'_>, w: &NetWorld, nodes: usize) {
    for n in 0..nodes {
        let node = node_name(n);
        for peer in ["remote", "bus"] {
            sim.release(node.as_str(), peer);
            sim.repair(node.as_str(), peer);
        }
    }
    sim.set_max_message_latency(Duration::from_millis(LATENCY_MS.1));
    w.remote.set_faults(RemoteFaults::default());
    w.set_bus_faults(BusFaultState::default());
    w.trace("sim", "heal: faults repaired");
}

/// A `loader-net` outcome in the call cache's [`RunOutcome`] shape, for
/// the sweep, replay and reports (the call plan is empty but for the seed;
/// the swarm is the trace's second line).
pub fn as_run_outcome(o: NetOutcome) -> RunOutcome {
    RunOutcome {
        plan: Plan {
            seed: o.plan.seed,
            keys: Vec::new(),
            clients: Vec::new(),
            faults: Vec::new(),
            swarm: Swarm {
                enabled: BTreeMap::new(),
            },
            heal_at_ms: o.plan.heal_at_ms,
        },
        trace: o.trace,
        violations: o.violations,
        counters: o.counters,
        sim_ms: o.sim_ms,
        leak: None,
        metrics: String::new(),
        samples: Vec::new(),
    }
}
