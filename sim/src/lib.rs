//! Deterministic turmoil simulations of the cache (SPEC §9–§10): an engine
//! host serving sessions over simulated TCP, client hosts running seeded
//! plans, swarm faults, oracles for INV-1 … INV-12, shrinking and replay.

pub mod cli;
pub mod client;
pub mod engine;
pub mod oracle;
pub mod plan;
pub mod plan_file;
pub mod protocol;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod shrink;
pub mod sqlite_lock;
pub mod world;
pub mod zoo;

pub use plan::Plan;
pub use run::{run_plan, run_seed, RunOutcome};
pub use scenario::Scenario;
pub use world::Plant;
