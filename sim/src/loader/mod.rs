//! The loader's simulation world (SPEC §7, §10): several nodes, each with
//! its own local tier, one shared remote tier and one event bus; clients
//! issuing `once` / `get` / `exists` / `set` / `delete` / `load_many` with
//! Zipf keys against a database model; loaders that succeed, fail, say not
//! found, run slow or ignore cancellation; swarm faults (remote errors and
//! latency, node–remote partitions, bus drops / duplicates / delays /
//! reorders / publish failures, node restarts, clock jumps).
//!
//! Hosts serve, oracles judge: the nodes, remote and bus are cache-core's
//! own (`LoaderMachine`, `MemoryRemote`, `MemoryBus`) inside the driver's
//! [`cache_core::driver::LoaderHarness`], whose shadow model checks
//! LINV-1 … LINV-8 after every step and at the end; this module only
//! plans ([`plan`]), schedules and injects ([`world`]), and shrinks
//! ([`shrink`]). The named scenarios are `loader` and `loader-faults`
//! (`sim/scenarios/loader*.toml`); `cache-sim run|replay|shrink|report|
//! explain|diff` take them like the call cache's (the decisions `explain`
//! and `diff` read are [`LoaderOutcome::decisions`]).
//!
//! ```
//! use sim::loader::{run_loader_seed, LoaderScenario};
//!
//! let s = LoaderScenario::named("loader-faults").unwrap();
//! let o = run_loader_seed(4, &s);
//! assert!(o.passed(), "{:?}", o.violation);
//! // One seed, one trace (INV-12).
//! assert_eq!(run_loader_seed(4, &s).trace, o.trace);
//! ```

pub mod plan;
pub mod plan_file;
pub mod report;
pub mod scenario;
pub mod shrink;
pub mod world;
pub mod zoo;

use std::collections::BTreeMap;

pub use plan::{LoaderPlan, PlanOp};
pub use scenario::{LoaderScenario, LOADER_NAMED};
pub use world::{run_loader_plan, Db, LoaderOutcome, LoaderViolation};

use crate::plan::{Plan, Swarm};
use crate::run::RunOutcome;
use crate::world::Violation;

/// Generates the plan of `seed` and runs it.
pub fn run_loader_seed(seed: u64, s: &LoaderScenario) -> LoaderOutcome {
    run_loader_plan(LoaderPlan::generate(seed, s), s)
}

/// A loader outcome in the call cache's [`RunOutcome`] shape, for the
/// sweep, replay and reports: the call plan is empty but for the seed, the
/// loader's swarm is the trace's third line.
pub fn as_run_outcome(o: LoaderOutcome) -> RunOutcome {
    let plan = Plan {
        seed: o.plan.seed,
        keys: Vec::new(),
        clients: Vec::new(),
        faults: Vec::new(),
        swarm: Swarm {
            enabled: BTreeMap::new(),
        },
        heal_at_ms: 0,
    };
    RunOutcome {
        plan,
        trace: o.trace,
        violations: o
            .violation
            .into_iter()
            .map(|v| Violation {
                inv: v.inv,
                detail: v.detail,
                at_ms: v.at_ms,
            })
            .collect(),
        counters: o.counters,
        sim_ms: o.sim_ms,
        leak: None,
        metrics: o.metrics,
        samples: Vec::new(),
    }
}
