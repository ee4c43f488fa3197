//! Shrinking a failing loader plan: remove chunks of its operations
//! (halving, down to single ones) while it still fails the same invariant
//! (the shared loop, [`crate::shrink::reduce`]).

use std::ops::Range;

use super::plan::LoaderPlan;
use super::scenario::LoaderScenario;
use super::world::run_loader_plan;
use crate::shrink::{reduce, Cut};

/// A shrunk loader failure.
#[derive(Clone, Debug)]
pub struct LoaderShrunk {
    /// The invariant it keeps failing.
    pub inv: &'static str,
    /// The smallest plan found.
    pub plan: LoaderPlan,
    /// Operations before shrinking.
    pub original_size: usize,
    /// Simulations run.
    pub runs: usize,
}

/// A loader plan has one list: its operations (faults are operations).
impl Cut for LoaderPlan {
    fn lists(&self) -> usize {
        1
    }

    fn len(&self, _list: usize) -> usize {
        self.ops.len()
    }

    fn cut(&mut self, _list: usize, range: Range<usize>) -> bool {
        self.ops.drain(range);
        true
    }
}

/// Shrinks `plan`; `None` if it passes. At most `budget` simulations.
pub fn shrink_loader(plan: LoaderPlan, s: &LoaderScenario, budget: usize) -> Option<LoaderShrunk> {
    let original_size = plan.size();
    let r = reduce(plan, budget, |p: &LoaderPlan| {
        run_loader_plan(p.clone(), s).violation.map(|v| v.inv)
    })?;
    Some(LoaderShrunk {
        inv: r.verdict,
        plan: r.plan,
        original_size,
        runs: r.runs,
    })
}
