//! Shrinking (DESIGN principle 5): remove faults and operations from a
//! failing plan while it still fails the same invariant.

use crate::plan::Plan;
use crate::run::run_plan;
use crate::scenario::Scenario;
use crate::world::Plant;

/// A shrunk failure.
pub struct Shrunk {
    /// The invariant it keeps failing.
    pub inv: &'static str,
    /// The minimal plan found.
    pub plan: Plan,
    /// Size before shrinking.
    pub original_size: usize,
    /// Simulations run.
    pub runs: usize,
}

/// Shrinks `plan` (which must fail); `None` if it passes. At most
/// `budget` simulations.
pub fn shrink(plan: Plan, s: &Scenario, plant: Option<Plant>, budget: usize) -> Option<Shrunk> {
    let inv = run_plan(plan.clone(), s, plant).first_invariant()?;
    let original_size = plan.size();
    let mut best = plan;
    let mut runs = 1;
    let fails = |p: &Plan, runs: &mut usize| {
        *runs += 1;
        run_plan(p.clone(), s, plant).first_invariant() == Some(inv)
    };
    // Faults first, then chunks of each client's operations, halving.
    let mut progress = true;
    while progress && runs < budget {
        progress = false;
        let mut i = 0;
        while i < best.faults.len() && runs < budget {
            let mut cand = best.clone();
            cand.faults.remove(i);
            if fails(&cand, &mut runs) {
                best = cand;
                progress = true;
            } else {
                i += 1;
            }
        }
        for c in 0..best.clients.len() {
            let mut chunk = best.clients[c].len().max(1);
            while chunk >= 1 && runs < budget {
                let mut start = 0;
                while start < best.clients[c].len() && runs < budget {
                    let mut cand = best.clone();
                    let end = (start + chunk).min(cand.clients[c].len());
                    cand.clients[c].drain(start..end);
                    if fails(&cand, &mut runs) {
                        best = cand;
                        progress = true;
                    } else {
                        start += chunk;
                    }
                }
                if chunk == 1 {
                    break;
                }
                chunk /= 2;
            }
        }
    }
    Some(Shrunk {
        inv,
        plan: best,
        original_size,
        runs,
    })
}
