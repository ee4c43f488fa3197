//! `check_invariants`: INV-3 (index consistency), INV-10 (no dangling or
//! negative counter), C-11a (one owner per ref), and INV-2 given the handle
//! counts a shadow model passes in.

use std::collections::BTreeMap;
use std::fmt;

use super::entry::{Phase, Slot};
use super::index::sorted;
use super::types::*;
use super::CallCache;

/// A broken invariant, naming the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule id (`INV-3`, `C-11a`, …).
    pub rule: &'static str,
    /// What exactly is wrong.
    pub detail: String,
}

impl Violation {
    /// The numbered invariant (section 8) the broken rule protects, so a
    /// harness can report every internal check under an `INV-n` id.
    pub fn invariant(&self) -> &'static str {
        match self.rule {
            inv if inv.starts_with("INV-") => inv,
            // A ref whose named owner does not hold it: no handle accounts for it.
            "C-11a" => "INV-2",
            // In-flight with nobody waiting, or abandoned with waiters.
            "C-5" => "INV-7",
            // A completed entry nobody holds that was never removed: a leak.
            "C-12" => "INV-1",
            // An abandoned call still indexed.
            "C-9" => "INV-3",
            // Resolvers waiting on each other: nobody ever finishes.
            "C-4b" => "INV-11",
            // A ref kept for a session that has closed.
            "S-3" => "INV-9",
            _ => "INV-3",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated: {}", self.rule, self.detail)
    }
}

impl std::error::Error for Violation {}

fn fail<T>(rule: &'static str, detail: String) -> Result<T, Violation> {
    Err(Violation { rule, detail })
}

impl<V: Clone> CallCache<V> {
    /// Checks every internal invariant; the first violation found is returned.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        self.check_lists()?;
        self.check_maps()?;
        self.check_entries()?;
        self.check_refs()?;
        match self.wait_cycle() {
            Some(ring) => fail(
                "C-4b",
                format!("resolvers wait on each other in a cycle: {ring:?}"),
            ),
            None => Ok(()),
        }
    }

    /// INV-2: each entry's refcount equals the handles a shadow model counts
    /// for it (entries missing from `expected` must have no refs).
    pub fn check_refcounts(&self, expected: &BTreeMap<EntryId, u32>) -> Result<(), Violation> {
        for (key, e) in self.entries.iter() {
            let id = EntryId(key);
            let want = expected.get(&id).copied().unwrap_or(0);
            if e.refcount != want {
                return fail(
                    "INV-2",
                    format!(
                        "entry {id} ({}) has refcount {} but {want} handles are outstanding",
                        e.label(),
                        e.refcount
                    ),
                );
            }
        }
        for (id, n) in expected {
            if *n > 0 && !self.entries.contains(id.0) {
                return fail(
                    "INV-2",
                    format!("{n} handles outstanding on entry {id}, which is gone"),
                );
            }
        }
        Ok(())
    }

    fn check_lists(&self) -> Result<(), Violation> {
        let lists = [
            ("storage", self.idx.storage_lists()),
            ("content", self.idx.content_lists()),
        ];
        let counted = self.buckets();
        let listed = self.idx.recount();
        if (counted.completed_calls, counted.completed_calls_by_content) != listed {
            return fail(
                "INV-3",
                format!(
                    "the completed buckets count {} storage and {} content memberships but the lists hold {} and {}",
                    counted.completed_calls, counted.completed_calls_by_content, listed.0, listed.1
                ),
            );
        }
        for (name, map) in lists {
            // Key order, not hash order: the first violation reported must
            // be the same in every run.
            for (key, list) in sorted(map) {
                if list.is_empty() {
                    return fail("INV-3", format!("empty {name} list under {key}"));
                }
                for (i, id) in list.iter().enumerate() {
                    if list[..i].contains(id) {
                        return fail(
                            "INV-3",
                            format!("entry {id} twice in the {name} list under {key}"),
                        );
                    }
                    let Some(e) = self.entries.get(id.0) else {
                        return fail(
                            "INV-3",
                            format!("{name} index under {key} points at dead entry {id}"),
                        );
                    };
                    if e.phase != Phase::Completed
                        || matches!(e.mode, RunMode::Arbitrary | RunMode::DoNotCache)
                    {
                        return fail("INV-3", format!("{name} index under {key} holds {id} ({}), which is not a completed call", e.label()));
                    }
                    let matches = if name == "storage" {
                        e.storage_key == *key || e.result_call_key.as_ref() == Some(key)
                    } else {
                        e.content_key.as_ref() == Some(key)
                    };
                    let slot = if name == "storage" {
                        Slot::Storage(key.clone())
                    } else {
                        Slot::Content(key.clone())
                    };
                    if !matches || !e.slots.contains(&slot) {
                        return fail(
                            "INV-3",
                            format!(
                                "{name} index under {key} holds {id} whose own keys do not match"
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn check_maps(&self) -> Result<(), Violation> {
        for ((key, conc), id) in &self.idx.ongoing {
            let Some(e) = self.entries.get(id.0) else {
                return fail(
                    "INV-3",
                    format!("ongoing index ({key}, {conc}) points at dead entry {id}"),
                );
            };
            if e.phase != Phase::InFlight {
                return fail(
                    "INV-3",
                    format!("entry {id} is {:?} but still in the ongoing index", e.phase),
                );
            }
            if e.storage_key != *key
                || e.concurrency_key != *conc
                || !e.slots.contains(&Slot::Ongoing(key.clone(), conc.clone()))
            {
                return fail(
                    "INV-3",
                    format!("ongoing index ({key}, {conc}) holds {id} whose own keys do not match"),
                );
            }
        }
        let arb = [
            ("ongoing", &self.idx.arbitrary_ongoing),
            ("completed", &self.idx.arbitrary_completed),
        ];
        for (name, map) in arb {
            for (key, id) in map {
                let Some(e) = self.entries.get(id.0) else {
                    return fail(
                        "INV-3",
                        format!("arbitrary {name} index under {key} points at dead entry {id}"),
                    );
                };
                let phase_ok = match name {
                    "ongoing" => {
                        e.phase == Phase::InFlight
                            || (self.change_mode && e.phase == Phase::Abandoned)
                    }
                    _ => e.phase == Phase::Completed,
                };
                let slot = if name == "ongoing" {
                    Slot::ArbitraryOngoing(key.clone())
                } else {
                    Slot::ArbitraryCompleted(key.clone())
                };
                if !phase_ok
                    || e.mode != RunMode::Arbitrary
                    || e.storage_key != **key
                    || !e.slots.contains(&slot)
                {
                    return fail("INV-3", format!("arbitrary {name} index under {key} holds {id} ({:?}) whose state or keys do not match", e.phase));
                }
            }
        }
        Ok(())
    }

    fn check_entries(&self) -> Result<(), Violation> {
        let mut counted: BTreeMap<EntryId, u32> = BTreeMap::new();
        for (_, r) in self.refs.iter() {
            *counted.entry(r.entry).or_default() += 1;
        }
        for (key, e) in self.entries.iter() {
            let id = EntryId(key);
            for slot in &e.slots {
                let present = match slot {
                    Slot::Storage(k) => self
                        .idx
                        .storage_lists()
                        .get(k)
                        .is_some_and(|l| l.contains(&id)),
                    Slot::Content(k) => self
                        .idx
                        .content_lists()
                        .get(k)
                        .is_some_and(|l| l.contains(&id)),
                    Slot::Ongoing(k, c) => {
                        self.idx.ongoing.get(&(k.clone(), c.clone())) == Some(&id)
                    }
                    Slot::ArbitraryOngoing(k) => self.idx.arbitrary_ongoing.get(k) == Some(&id),
                    Slot::ArbitraryCompleted(k) => self.idx.arbitrary_completed.get(k) == Some(&id),
                };
                if !present {
                    return fail(
                        "INV-3",
                        format!("entry {id} records slot {slot:?} but is not in that index"),
                    );
                }
            }
            let refs = counted.get(&id).copied().unwrap_or(0);
            if e.refcount != refs {
                return fail(
                    "INV-10",
                    format!(
                        "entry {id} ({}) counts {} refs but {refs} are live",
                        e.label(),
                        e.refcount
                    ),
                );
            }
            match e.phase {
                Phase::InFlight if e.waiters.is_empty() => {
                    return fail(
                        "C-5",
                        format!(
                            "entry {id} ({}) is in flight with no waiter; it should be abandoned",
                            e.label()
                        ),
                    );
                }
                Phase::Completed if !e.waiters.is_empty() => {
                    return fail("INV-3", format!("completed entry {id} still has waiters"));
                }
                Phase::Completed if e.refcount == 0 => {
                    return fail("C-12", format!("completed entry {id} ({}) has no ref and no waiter but was not removed", e.label()));
                }
                Phase::Abandoned if !e.waiters.is_empty() || e.refcount != 0 => {
                    return fail(
                        "C-5",
                        format!("abandoned entry {id} still has waiters or refs"),
                    );
                }
                // Only a change-cache init stays indexed once abandoned (K-5).
                Phase::Abandoned
                    if !e.slots.is_empty()
                        && (!self.change_mode || e.mode != RunMode::Arbitrary) =>
                {
                    return fail(
                        "C-9",
                        format!("abandoned entry {id} ({}) is still indexed", e.label()),
                    );
                }
                _ => {}
            }
        }
        if let Some(r) = counted.keys().find(|r| !self.entries.contains(r.0)) {
            return fail("INV-10", format!("refs remain on dead entry {r}"));
        }
        Ok(())
    }

    /// C-11a: each ref is recorded with exactly the owner it names.
    fn check_refs(&self) -> Result<(), Violation> {
        for (key, r) in self.refs.iter() {
            let id = RefId(key);
            let recorded = match r.owner {
                Owner::Session(s) if !self.sessions.contains_key(&s) => {
                    return fail(
                        "S-3",
                        format!("ref {id} on {} belongs to closed session {s}: a late completion was kept instead of released", r.entry),
                    );
                }
                Owner::Session(s) => self
                    .sessions
                    .get(&s)
                    .is_some_and(|st| st.refs.contains(&id)),
                Owner::Entry(p) => self
                    .entries
                    .get(p.0)
                    .is_some_and(|e| e.owned_refs.iter().filter(|x| **x == id).count() == 1),
                Owner::Caller => true,
            };
            if !recorded {
                return fail(
                    "C-11a",
                    format!("ref {id} names owner {} which does not record it", r.owner),
                );
            }
            if r.owner == Owner::Entry(r.entry) {
                return fail(
                    "C-11a",
                    format!(
                        "entry {} owns a ref on itself and can never be released",
                        r.entry
                    ),
                );
            }
        }
        let mut waiting: BTreeMap<SessionId, usize> = BTreeMap::new();
        for w in self.entries.iter().flat_map(|(_, e)| &e.waiters) {
            if let Some(s) = w.session {
                *waiting.entry(s).or_default() += 1;
            }
        }
        for (s, st) in &self.sessions {
            let waiting = waiting.get(s).copied().unwrap_or(0);
            if st.waiting != waiting {
                return fail(
                    "INV-3",
                    format!(
                        "session {s} counts {} waits on calls in flight but {waiting} waiters are its",
                        st.waiting
                    ),
                );
            }
            for id in &st.refs {
                if self.refs.get(id.0).map(|r| r.owner) != Some(Owner::Session(*s)) {
                    return fail(
                        "C-11a",
                        format!("session {s} records ref {id} it does not own"),
                    );
                }
            }
        }
        for (key, e) in self.entries.iter() {
            for id in &e.owned_refs {
                if self.refs.get(id.0).map(|r| r.owner) != Some(Owner::Entry(EntryId(key))) {
                    return fail(
                        "C-11a",
                        format!("entry {} records ref {id} it does not own", EntryId(key)),
                    );
                }
            }
        }
        Ok(())
    }
}
