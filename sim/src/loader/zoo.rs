//! Hunting the loader's bug zoo through the loader world: with one
//! `LoaderBug` on, walk the loader scenarios' seeds in a fixed order
//! (seed 0 of each, then seed 1 of each, …) until one fails, and say which
//! invariant named it (typed: the driver's `Failure::invariant`).

use cache_core::bugs::{LoaderBug, LoaderBugs};

use super::scenario::{LoaderScenario, LOADER_NAMED};
use super::world::run_loader_plan;
use super::LoaderPlan;

/// The first failing run of a loader hunt.
#[derive(Clone, Debug)]
pub struct LoaderFound {
    /// The scenario of the failing run.
    pub scenario: &'static str,
    /// Its seed.
    pub seed: u64,
    /// Runs made, the failing one included.
    pub runs: u64,
    /// The first violated invariant.
    pub invariant: &'static str,
    /// What the oracle said.
    pub detail: String,
}

/// The loader sweep's runs with `seeds` seeds per loader scenario, in
/// hunting order.
pub fn loader_sweep_order(seeds: u64) -> impl Iterator<Item = (&'static str, u64)> {
    (0..seeds).flat_map(|seed| LOADER_NAMED.iter().map(move |s| (*s, seed)))
}

/// Runs the loader sweep (`seeds` per scenario) with `bugs` on until a run
/// fails; `None` if every run passed.
pub fn hunt_loader_bugs(bugs: LoaderBugs, seeds: u64) -> Option<LoaderFound> {
    let scenarios: Vec<LoaderScenario> = LOADER_NAMED
        .iter()
        .map(|name| LoaderScenario {
            bugs,
            ..LoaderScenario::named(name).expect("named loader scenarios parse")
        })
        .collect();
    for (runs, (name, seed)) in (1..).zip(loader_sweep_order(seeds)) {
        let s = scenarios
            .iter()
            .find(|s| s.name == name)
            .expect("one per name");
        let o = run_loader_plan(LoaderPlan::generate(seed, s), s);
        if let Some(v) = o.violation {
            return Some(LoaderFound {
                scenario: name,
                seed,
                runs,
                invariant: v.inv,
                detail: v.detail,
            });
        }
    }
    None
}

/// [`hunt_loader_bugs`] with the one switch `bug` on.
pub fn hunt_loader(bug: LoaderBug, seeds: u64) -> Option<LoaderFound> {
    hunt_loader_bugs(LoaderBugs::none().with(bug), seeds)
}
