//! Deterministic turmoil simulations of the cache (SPEC §9–§10): an engine
//! host serving sessions over simulated TCP, client hosts running seeded
//! plans, swarm faults, oracles for INV-1 … INV-12, shrinking and replay.
//!
//! One seed, run and replayed (the `cache-sim` binary wraps the same calls):
//!
//! ```
//! use sim::plan_file::PlanFile;
//! use sim::{run_plan, run_seed, Plan, Scenario};
//!
//! let s = Scenario::named("standard").unwrap();
//! let o = run_seed(3, &s, None);
//! assert!(o.passed(), "{:?}", o.violations);
//! // INV-12: the same seed gives the same trace.
//! assert_eq!(run_seed(3, &s, None).trace_hash(), o.trace_hash());
//! // A plan file replays the same run.
//! let text = PlanFile::new(Plan::generate(3, &s), &s, None).to_toml().unwrap();
//! let f = PlanFile::parse(&text).unwrap();
//! let scenario = f.scenario_with_bugs(&[]).unwrap();
//! let again = run_plan(f.plan, &scenario, None);
//! assert_eq!(again.trace_hash(), o.trace_hash());
//! ```

pub mod cli;
pub mod client;
pub mod decisions;
pub mod diff;
pub mod engine;
pub mod explain;
pub mod failure;
pub mod load;
pub mod loader;
pub mod loader_net;
pub mod oracle;
pub mod plan;
pub mod plan_file;
pub mod protocol;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod serve;
pub mod shrink;
pub mod sqlite_lock;
pub mod sweep;
pub mod transport;
pub mod world;
pub mod zoo;

pub use plan::Plan;
pub use run::{run_plan, run_seed, RunOutcome};
pub use scenario::Scenario;
pub use world::Plant;
