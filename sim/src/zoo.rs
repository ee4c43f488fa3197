//! Hunting the bug zoo, a measure of the harness's power: with one switch
//! on, walk the default sweep's runs in a fixed order until a seed fails,
//! and say which invariant named it.
//!
//! The order interleaves the named scenarios — seed 0 of each, then seed 1
//! of each, … — so "runs needed" counts simulations of the same set the
//! default `cargo test` sweep runs (`SIM_SEEDS` seeds of every scenario).
//!
//! ```no_run
//! use cache_core::bugs::Bug;
//! use sim::zoo::hunt;
//!
//! let found = hunt(Bug::ContentHitForeignRecipe, 40).expect("the sweep catches it");
//! assert!(Bug::ContentHitForeignRecipe.invariants().contains(&found.invariant));
//! println!("{} seed {}: {}", found.scenario, found.seed, found.detail);
//! ```

use cache_core::bugs::{Bug, Bugs};

use crate::run::run_seed;
use crate::scenario::{Scenario, NAMED};

/// The first failing run of a hunt.
#[derive(Clone, Debug)]
pub struct Found {
    /// The scenario of the failing run.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// Runs made, the failing one included.
    pub runs: u64,
    /// The first violated invariant.
    pub invariant: &'static str,
    /// What the oracle said.
    pub detail: String,
    /// Simulated ms at which it fired.
    pub at_ms: u64,
}

/// The runs of the default sweep with `seeds` seeds per named scenario, in
/// hunting order.
pub fn sweep_order(seeds: u64) -> impl Iterator<Item = (&'static str, u64)> {
    (0..seeds).flat_map(|seed| NAMED.iter().map(move |s| (*s, seed)))
}

/// Runs the default sweep (`seeds` per scenario) with `bug` on until a run
/// fails; `None` if every run passed.
pub fn hunt(bug: Bug, seeds: u64) -> Option<Found> {
    let bugs = Bugs::none().with(bug);
    let scenarios: Vec<Scenario> = NAMED
        .iter()
        .map(|name| {
            let mut s = Scenario::named(name).expect("named scenarios parse");
            s.bugs = bugs;
            s
        })
        .collect();
    for (runs, (name, seed)) in (1..).zip(sweep_order(seeds)) {
        let s = scenarios
            .iter()
            .find(|s| s.name == name)
            .expect("one per name");
        let o = run_seed(seed, s, None);
        if let Some(v) = o.violations.first() {
            return Some(Found {
                scenario: name.to_string(),
                seed,
                runs,
                invariant: v.inv,
                detail: v.detail.clone(),
                at_ms: v.at_ms,
            });
        }
    }
    None
}
