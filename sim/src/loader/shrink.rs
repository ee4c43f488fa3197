//! Shrinking a failing loader plan: remove chunks of its operations
//! (halving, down to single ones) while it still fails the same invariant.

use super::plan::LoaderPlan;
use super::scenario::LoaderScenario;
use super::world::run_loader_plan;

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

fn fails_with(plan: &LoaderPlan, s: &LoaderScenario) -> Option<&'static str> {
    run_loader_plan(plan.clone(), s).violation.map(|v| v.inv)
}

/// Shrinks `plan`; `None` if it passes. At most `budget` simulations.
pub fn shrink_loader(plan: LoaderPlan, s: &LoaderScenario, budget: usize) -> Option<LoaderShrunk> {
    let inv = fails_with(&plan, s)?;
    let original_size = plan.size();
    let mut best = plan;
    let mut runs = 1;
    let mut progress = true;
    while progress && runs < budget {
        progress = false;
        let mut chunk = best.ops.len().max(1);
        loop {
            let mut start = 0;
            while start < best.ops.len() && runs < budget {
                let mut cand = best.clone();
                let end = (start + chunk).min(cand.ops.len());
                cand.ops.drain(start..end);
                runs += 1;
                if fails_with(&cand, s) == Some(inv) {
                    best = cand;
                    progress = true;
                } else {
                    start += chunk;
                }
            }
            if chunk == 1 || runs >= budget {
                break;
            }
            chunk /= 2;
        }
    }
    Some(LoaderShrunk {
        inv,
        plan: best,
        original_size,
        runs,
    })
}
