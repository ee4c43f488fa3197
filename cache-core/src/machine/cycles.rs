//! C-4b / INV-11: the wait-for graph between running resolvers never has a
//! cycle. `join` refuses any wait that would close one; this is the check
//! that it never happened, whatever the path.

use std::collections::BTreeMap;

use super::types::EntryId;
use super::CallCache;

/// Where a node is in the depth-first walk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    OnPath,
    Done,
}

impl<V: Clone> CallCache<V> {
    /// A cycle in the wait-for graph, if any: entries whose resolvers wait
    /// on each other in a ring, in walk order. Iterative, so a long chain of
    /// nested calls cannot overflow the stack.
    pub fn wait_cycle(&self) -> Option<Vec<EntryId>> {
        // An entry that waits on nothing closes no ring, and a walk that
        // reaches it marks it done at once: starting only from entries with
        // edges finds the same first ring without a mark per entry.
        self.wait_cycle_from(
            self.entries
                .iter()
                .filter(|(_, e)| !e.waits_on.is_empty())
                .map(|(key, _)| EntryId(key)),
        )
    }

    /// The first wait-for cycle reachable from `starts`, walked in their
    /// order (see [`CallCache::wait_cycle`]).
    pub(crate) fn wait_cycle_from(
        &self,
        starts: impl Iterator<Item = EntryId>,
    ) -> Option<Vec<EntryId>> {
        let mut marks: BTreeMap<EntryId, Mark> = BTreeMap::new();
        for start in starts {
            if marks.contains_key(&start) {
                continue;
            }
            marks.insert(start, Mark::OnPath);
            let mut path: Vec<(EntryId, usize)> = vec![(start, 0)];
            while let Some(&(node, next)) = path.last() {
                let child = self
                    .entries
                    .get(node.0)
                    .and_then(|e| e.waits_on.get(next).copied());
                let Some(child) = child else {
                    marks.insert(node, Mark::Done);
                    path.pop();
                    continue;
                };
                if let Some(top) = path.last_mut() {
                    top.1 += 1;
                }
                match marks.get(&child) {
                    Some(Mark::OnPath) => {
                        let from = path.iter().position(|(n, _)| *n == child).unwrap_or(0);
                        return Some(path[from..].iter().map(|(n, _)| *n).collect());
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(child, Mark::OnPath);
                        path.push((child, 0));
                    }
                }
            }
        }
        None
    }
}
