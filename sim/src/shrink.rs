//! Shrinking (DESIGN principle 5): remove faults and operations from a
//! failing plan while it still fails the same invariant.
//!
//! The loop ([`reduce`]) is shared by every world: a plan says which lists
//! of removable items it has ([`Cut`]: the call cache's faults and each
//! client's operations; the loader's operations; `loader-net`'s nodes,
//! streams, faults and each stream's operations) and the world says how a
//! candidate fails (a typed verdict, compared with `==`, never its text).

use std::ops::Range;

use crate::plan::Plan;
use crate::run::run_plan;
use crate::scenario::Scenario;
use crate::world::Plant;

/// A plan the shrinking loop can cut: numbered lists of removable items.
///
/// The number of lists and their lengths are read again after every kept
/// cut (removing a node removes its streams' lists).
pub trait Cut: Clone {
    /// How many lists.
    fn lists(&self) -> usize;
    /// How many items list `list` holds.
    fn len(&self, list: usize) -> usize;
    /// Removes the items `range` of list `list`; `false` when the result
    /// would not be a plan (or would not differ), so it is not run.
    fn cut(&mut self, list: usize, range: Range<usize>) -> bool;
    /// Whether list `list` is tried one item at a time (the call cache's
    /// faults: each is usually needed or not on its own) rather than by
    /// halving chunks.
    fn one_by_one(&self, _list: usize) -> bool {
        false
    }
}

/// What [`reduce`] found.
pub struct Reduced<P, V> {
    /// The failure every kept cut still showed.
    pub verdict: V,
    /// The smallest plan found.
    pub plan: P,
    /// Simulations run (the first, unshrunk one included).
    pub runs: usize,
}

/// Shrinks `plan` while `fails` gives the verdict it gave for `plan`
/// itself; `None` if `plan` passes. At most `budget` calls of `fails`.
///
/// For each list in order, chunks of items are removed, halving the chunk
/// down to single items; the whole pass repeats while a pass removed
/// something.
pub fn reduce<P: Cut, V: PartialEq>(
    plan: P,
    budget: usize,
    mut fails: impl FnMut(&P) -> Option<V>,
) -> Option<Reduced<P, V>> {
    let verdict = fails(&plan)?;
    let mut best = plan;
    let mut runs = 1;
    let mut progress = true;
    while progress && runs < budget {
        progress = false;
        let mut list = 0;
        while list < best.lists() && runs < budget {
            let mut chunk = if best.one_by_one(list) {
                1
            } else {
                best.len(list).max(1)
            };
            loop {
                let mut start = 0;
                while start < best.len(list) && runs < budget {
                    let mut cand = best.clone();
                    let end = (start + chunk).min(cand.len(list));
                    let kept = cand.cut(list, start..end) && {
                        runs += 1;
                        fails(&cand).as_ref() == Some(&verdict)
                    };
                    if kept {
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
            list += 1;
        }
    }
    Some(Reduced {
        verdict,
        plan: best,
        runs,
    })
}

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

/// The call cache's plan: list 0 is the faults (one by one), list `1 + c`
/// client `c`'s operations.
impl Cut for Plan {
    fn lists(&self) -> usize {
        1 + self.clients.len()
    }

    fn len(&self, list: usize) -> usize {
        match list {
            0 => self.faults.len(),
            c => self.clients.get(c - 1).map_or(0, Vec::len),
        }
    }

    fn cut(&mut self, list: usize, range: Range<usize>) -> bool {
        let items = match list {
            0 => self.faults.len(),
            c => self.clients[c - 1].len(),
        };
        if range.start >= range.end || range.end > items {
            return false;
        }
        if list == 0 {
            self.faults.drain(range);
        } else {
            self.clients[list - 1].drain(range);
        }
        true
    }

    fn one_by_one(&self, list: usize) -> bool {
        list == 0
    }
}

/// Shrinks `plan` (which must fail); `None` if it passes. At most
/// `budget` simulations.
pub fn shrink(plan: Plan, s: &Scenario, plant: Option<Plant>, budget: usize) -> Option<Shrunk> {
    let original_size = plan.size();
    let r = reduce(plan, budget, |p: &Plan| {
        run_plan(p.clone(), s, plant).first_invariant()
    })?;
    Some(Shrunk {
        inv: r.verdict,
        plan: r.plan,
        original_size,
        runs: r.runs,
    })
}
