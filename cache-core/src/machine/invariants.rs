//! `check_invariants`: INV-3 (index consistency), INV-10 (no dangling or
//! negative counter), C-11a (one owner per ref), and INV-2 given the handle
//! counts a shadow model passes in.
//!
//! `check_touched` runs the same checks on what one step changed (the
//! entries, refs and sessions a [`Touched`] names, and every index list
//! that names a changed entry), so a harness can check every step without
//! walking the whole cache; it must still run the full check every so often
//! and at the end, for the counts only the full walk recomputes (the C-15
//! bucket totals) and for damage no step recorded.

use std::collections::BTreeMap;
use std::fmt;

use super::entry::{Entry, Phase, Slot};
use super::index::{sorted, Ids};
use super::key::IndexKey;
use super::types::*;
use super::{CallCache, RefRecord, SessionState, Touched};

/// A broken invariant, naming the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule id (`INV-3`, `C-11a`, …).
    pub rule: &'static str,
    /// What exactly is wrong.
    pub detail: String,
}

impl Violation {
    /// The numbered invariant (SPEC §9) the broken rule protects, so a
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
            // Resolvers waiting on each other: nobody ever finishes.
            "C-4b" => "INV-11",
            // A ref kept for a session that has closed.
            "S-3" => "INV-9",
            // The rest is index bookkeeping: an abandoned call still
            // indexed (C-9), another entry's slot removed (C-13), …
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

/// Which list map a storage or content list belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ListKind {
    Storage,
    Content,
}

impl ListKind {
    fn name(self) -> &'static str {
        match self {
            ListKind::Storage => "storage",
            ListKind::Content => "content",
        }
    }
}

impl<V: Clone> CallCache<V> {
    /// Checks every internal invariant; the first violation found is returned.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        self.check_lists()?;
        self.check_maps()?;
        self.check_entries()?;
        self.check_refs()?;
        if let Some(ring) = self.wait_cycle() {
            return fail(
                "C-4b",
                format!("resolvers wait on each other in a cycle: {ring:?}"),
            );
        }
        self.check_wait_edges()
    }

    /// The checks of [`CallCache::check_invariants`] restricted to what
    /// `touched` names (take it with [`CallCache::take_touched`] right after
    /// the step): each changed entry (its index slots, refcount, phase,
    /// owned refs and wait-for edges, or, once gone, that nothing still
    /// names it), every index list or map slot that lists a changed entry,
    /// each changed ref and session, and a wait-for cycle through a changed
    /// entry (a new cycle needs a new edge, and an edge is added on the
    /// waiting entry). Walks the index and the refs once without allocating,
    /// instead of building maps of the whole cache.
    ///
    /// Not covered: the C-15 bucket totals (only [`CallCache::check_invariants`]
    /// recounts them; a wrong total stays wrong, so the next full check finds
    /// it) and damage done without going through the tracked doors.
    pub fn check_touched(&self, touched: &Touched) -> Result<(), Violation> {
        let changed = |id: &EntryId| touched.entries.binary_search(id).is_ok();
        if !touched.entries.is_empty() {
            for kind in [ListKind::Storage, ListKind::Content] {
                for (key, list) in self.lists(kind) {
                    if list.iter().any(changed) {
                        self.check_list(kind, key, list)?;
                    }
                }
            }
            for ((key, conc), id) in &self.idx.ongoing {
                if changed(id) {
                    self.check_ongoing(key, conc, *id)?;
                }
            }
            for (name, map) in self.arbitrary_maps() {
                for (key, id) in map {
                    if changed(id) {
                        self.check_arbitrary(name, key, *id)?;
                    }
                }
            }
        }
        for &id in &touched.entries {
            let refs = self.refs.iter().filter(|(_, r)| r.entry == id).count();
            let Some(e) = self.entries.get(id.0) else {
                if refs > 0 {
                    return fail("INV-10", format!("refs remain on dead entry {id}"));
                }
                // A gone resolver's wait-for edges went with it; edges
                // onto it must have gone with its waiters.
                for (key, p) in self.entries.iter() {
                    if p.waits_on.contains(&id) {
                        self.check_edge(EntryId(key), id)?;
                    }
                }
                continue;
            };
            self.check_entry(id, e, refs as u32)?;
            self.check_owned_refs(id, e)?;
            for on in &e.waits_on {
                self.check_edge(id, *on)?;
            }
            for from in e.waiters.iter().filter_map(|w| w.from) {
                self.check_edge(from, id)?;
            }
        }
        for &id in &touched.refs {
            match self.refs.get(id.0) {
                Some(r) => self.check_ref(id, r)?,
                None => {
                    // A gone ref is recorded by no owner any more.
                    for (s, st) in self.sessions.iter() {
                        if st.refs.contains(id) {
                            return fail(
                                "C-11a",
                                format!("session {s} records ref {id} it does not own"),
                            );
                        }
                    }
                    for (key, e) in self.entries.iter() {
                        self.check_owned_refs(EntryId(key), e)?;
                    }
                }
            }
        }
        for &s in &touched.sessions {
            match self.sessions.get(&s) {
                Some(st) => {
                    let waiting = self
                        .entries
                        .iter()
                        .flat_map(|(_, e)| &e.waiters)
                        .filter(|w| w.session == Some(s))
                        .count();
                    self.check_session_state(s, st, waiting)?;
                }
                None => {
                    // Closed: no ref may still name it (S-3).
                    for (key, r) in self.refs.iter() {
                        if r.owner == Owner::Session(s) {
                            self.check_ref(RefId(key), r)?;
                        }
                    }
                }
            }
        }
        let starts = touched.entries.iter().copied().filter(|id| {
            self.entries
                .get(id.0)
                .is_some_and(|e| !e.waits_on.is_empty())
        });
        if let Some(ring) = self.wait_cycle_from(starts) {
            return fail(
                "C-4b",
                format!("resolvers wait on each other in a cycle: {ring:?}"),
            );
        }
        Ok(())
    }

    /// C-4b's bookkeeping: the wait-for graph the cycle check walks is
    /// exactly the nested calls still waiting. A resolver's entry lists a
    /// call it waits on once per waiter it has on that call, and a running
    /// (or abandoned, still running) resolver's waiter is listed. A stale
    /// edge could refuse a later call as recursive, a missing one let a
    /// real cycle through.
    fn check_wait_edges(&self) -> Result<(), Violation> {
        let mut waiting: BTreeMap<(EntryId, EntryId), usize> = BTreeMap::new();
        let mut edges: BTreeMap<(EntryId, EntryId), usize> = BTreeMap::new();
        for (key, e) in self.entries.iter() {
            let id = EntryId(key);
            for from in e.waiters.iter().filter_map(|w| w.from) {
                *waiting.entry((from, id)).or_default() += 1;
            }
            for on in &e.waits_on {
                *edges.entry((id, *on)).or_default() += 1;
            }
        }
        for (&(from, on), &listed) in &edges {
            let waiters = waiting.get(&(from, on)).copied().unwrap_or(0);
            edge_counts_agree(from, on, listed, waiters)?;
        }
        for (&(from, on), &waiters) in &waiting {
            if self.is_running(from) && !edges.contains_key(&(from, on)) {
                return fail("C-4b", unlisted_edge(from, on, waiters));
            }
        }
        Ok(())
    }

    /// [`CallCache::check_wait_edges`] for the one pair `from` → `on`.
    fn check_edge(&self, from: EntryId, on: EntryId) -> Result<(), Violation> {
        let listed = self
            .entries
            .get(from.0)
            .map_or(0, |e| e.waits_on.iter().filter(|x| **x == on).count());
        let waiters = self.entries.get(on.0).map_or(0, |e| {
            e.waiters.iter().filter(|w| w.from == Some(from)).count()
        });
        if listed > 0 {
            edge_counts_agree(from, on, listed, waiters)
        } else if waiters > 0 && self.is_running(from) {
            fail("C-4b", unlisted_edge(from, on, waiters))
        } else {
            Ok(())
        }
    }

    /// Whether `entry`'s resolver still runs (in flight or abandoned).
    fn is_running(&self, entry: EntryId) -> bool {
        self.entries
            .get(entry.0)
            .is_some_and(|e| e.phase != Phase::Completed)
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

    /// INV-2 for one entry: its refcount equals the `want` handles a shadow
    /// model counts for it (a gone entry must have none).
    pub fn check_refcount(&self, id: EntryId, want: u32) -> Result<(), Violation> {
        match self.entries.get(id.0) {
            Some(e) if e.refcount != want => fail(
                "INV-2",
                format!(
                    "entry {id} ({}) has refcount {} but {want} handles are outstanding",
                    e.label(),
                    e.refcount
                ),
            ),
            None if want > 0 => fail(
                "INV-2",
                format!("{want} handles outstanding on entry {id}, which is gone"),
            ),
            _ => Ok(()),
        }
    }

    fn lists(&self, kind: ListKind) -> &super::index::KeyMap<Ids> {
        match kind {
            ListKind::Storage => self.idx.storage_lists(),
            ListKind::Content => self.idx.content_lists(),
        }
    }

    fn arbitrary_maps(&self) -> [(&'static str, &BTreeMap<String, EntryId>); 2] {
        [
            ("ongoing", &self.idx.arbitrary_ongoing),
            ("completed", &self.idx.arbitrary_completed),
        ]
    }

    fn check_lists(&self) -> Result<(), Violation> {
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
        let kinds = [ListKind::Storage, ListKind::Content];
        // Hash order first, which needs no sorted copy of the keys; only
        // when something is wrong, key order, so that the first violation
        // reported is the same in every run.
        let clean = kinds.iter().all(|&kind| {
            self.lists(kind)
                .iter()
                .all(|(key, list)| self.check_list(kind, key, list).is_ok())
        });
        if clean {
            return Ok(());
        }
        for kind in kinds {
            for (key, list) in sorted(self.lists(kind)) {
                self.check_list(kind, key, list)?;
            }
        }
        Ok(())
    }

    /// INV-3 for the list under one storage or content key.
    fn check_list(&self, kind: ListKind, key: &IndexKey, list: &Ids) -> Result<(), Violation> {
        let name = kind.name();
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
                return fail(
                    "INV-3",
                    format!(
                        "{name} index under {key} holds {id} ({}), which is not a completed call",
                        e.label()
                    ),
                );
            }
            let (matches, recorded) = match kind {
                ListKind::Storage => (
                    e.storage_key == *key || e.result_call_key.as_ref() == Some(key),
                    e.slots
                        .iter()
                        .any(|s| matches!(s, Slot::Storage(k) if k == key)),
                ),
                ListKind::Content => (
                    e.content_key.as_ref() == Some(key),
                    e.slots
                        .iter()
                        .any(|s| matches!(s, Slot::Content(k) if k == key)),
                ),
            };
            if !matches || !recorded {
                return fail(
                    "INV-3",
                    format!("{name} index under {key} holds {id} whose own keys do not match"),
                );
            }
        }
        Ok(())
    }

    fn check_maps(&self) -> Result<(), Violation> {
        for ((key, conc), id) in &self.idx.ongoing {
            self.check_ongoing(key, conc, *id)?;
        }
        for (name, map) in self.arbitrary_maps() {
            for (key, id) in map {
                self.check_arbitrary(name, key, *id)?;
            }
        }
        Ok(())
    }

    /// INV-3 for one in-flight registration.
    fn check_ongoing(&self, key: &IndexKey, conc: &str, id: EntryId) -> Result<(), Violation> {
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
        let recorded = e
            .slots
            .iter()
            .any(|s| matches!(s, Slot::Ongoing(k, c) if k == key && **c == *conc));
        if e.storage_key != *key || *e.concurrency_key != *conc || !recorded {
            return fail(
                "INV-3",
                format!("ongoing index ({key}, {conc}) holds {id} whose own keys do not match"),
            );
        }
        Ok(())
    }

    /// INV-3 for one arbitrary registration (`name`: `ongoing` or `completed`).
    fn check_arbitrary(&self, name: &str, key: &str, id: EntryId) -> Result<(), Violation> {
        let Some(e) = self.entries.get(id.0) else {
            return fail(
                "INV-3",
                format!("arbitrary {name} index under {key} points at dead entry {id}"),
            );
        };
        let ongoing = name == "ongoing";
        let phase_ok = if ongoing {
            e.phase == Phase::InFlight || (self.change_mode && e.phase == Phase::Abandoned)
        } else {
            e.phase == Phase::Completed
        };
        let recorded = e.slots.iter().any(|s| match s {
            Slot::ArbitraryOngoing(k) => ongoing && k == key,
            Slot::ArbitraryCompleted(k) => !ongoing && k == key,
            _ => false,
        });
        if !phase_ok || e.mode != RunMode::Arbitrary || e.storage_key != *key || !recorded {
            return fail("INV-3", format!("arbitrary {name} index under {key} holds {id} ({:?}) whose state or keys do not match", e.phase));
        }
        Ok(())
    }

    fn check_entries(&self) -> Result<(), Violation> {
        // The entry of every live ref, sorted: one allocation, where a map
        // of counts allocated a node per entry on every check.
        let mut on: Vec<EntryId> = self.refs.iter().map(|(_, r)| r.entry).collect();
        on.sort_unstable();
        for (key, e) in self.entries.iter() {
            let id = EntryId(key);
            let from = on.partition_point(|x| *x < id);
            let refs = on[from..].partition_point(|x| *x == id);
            self.check_entry(id, e, refs as u32)?;
        }
        on.dedup();
        if let Some(r) = on.iter().find(|r| !self.entries.contains(r.0)) {
            return fail("INV-10", format!("refs remain on dead entry {r}"));
        }
        Ok(())
    }

    /// Whether the index slot `slot` lists `id`.
    fn slot_present(&self, slot: &Slot, id: EntryId) -> bool {
        match slot {
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
            Slot::Ongoing(k, c) => self.idx.ongoing_call(k, c) == Some(id),
            Slot::ArbitraryOngoing(k) => self.idx.arbitrary_ongoing.get(k) == Some(&id),
            Slot::ArbitraryCompleted(k) => self.idx.arbitrary_completed.get(k) == Some(&id),
        }
    }

    /// INV-3, INV-10, C-5, C-12 for one live entry, `refs` live refs on it.
    fn check_entry(&self, id: EntryId, e: &Entry<V>, refs: u32) -> Result<(), Violation> {
        for slot in &e.slots {
            if !self.slot_present(slot, id) {
                return fail(
                    "INV-3",
                    format!("entry {id} records slot {slot:?} but is not in that index"),
                );
            }
        }
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
            Phase::InFlight if e.waiters.is_empty() => fail(
                "C-5",
                format!(
                    "entry {id} ({}) is in flight with no waiter; it should be abandoned",
                    e.label()
                ),
            ),
            Phase::Completed if !e.waiters.is_empty() => {
                fail("INV-3", format!("completed entry {id} still has waiters"))
            }
            Phase::Completed if e.refcount == 0 => fail(
                "C-12",
                format!(
                    "completed entry {id} ({}) has no ref and no waiter but was not removed",
                    e.label()
                ),
            ),
            Phase::Abandoned if !e.waiters.is_empty() || e.refcount != 0 => fail(
                "C-5",
                format!("abandoned entry {id} still has waiters or refs"),
            ),
            // An abandoned entry still indexed (C-9) is found above: every
            // index accepts only its own phases, and only a change-cache
            // init stays indexed once abandoned (K-5).
            _ => Ok(()),
        }
    }

    /// C-11a: each ref is recorded with exactly the owner it names.
    fn check_refs(&self) -> Result<(), Violation> {
        for (key, r) in self.refs.iter() {
            self.check_ref(RefId(key), r)?;
        }
        let mut waiting: BTreeMap<SessionId, usize> = BTreeMap::new();
        for w in self.entries.iter().flat_map(|(_, e)| &e.waiters) {
            if let Some(s) = w.session {
                *waiting.entry(s).or_default() += 1;
            }
        }
        for (s, st) in self.sessions.iter() {
            self.check_session_state(*s, st, waiting.get(s).copied().unwrap_or(0))?;
        }
        for (key, e) in self.entries.iter() {
            self.check_owned_refs(EntryId(key), e)?;
        }
        Ok(())
    }

    /// C-11a (and S-3) for one live ref.
    fn check_ref(&self, id: RefId, r: &RefRecord) -> Result<(), Violation> {
        let recorded = match r.owner {
            Owner::Session(s) if !self.sessions.contains_key(&s) => {
                return fail(
                    "S-3",
                    format!("ref {id} on {} belongs to closed session {s}: a late completion was kept instead of released", r.entry),
                );
            }
            Owner::Session(s) => self.sessions.get(&s).is_some_and(|st| st.refs.contains(id)),
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
        Ok(())
    }

    /// INV-3 and C-11a for one open session, `waiting` waiters of it found
    /// on in-flight entries.
    fn check_session_state(
        &self,
        s: SessionId,
        st: &SessionState,
        waiting: usize,
    ) -> Result<(), Violation> {
        if st.waiting != waiting {
            return fail(
                "INV-3",
                format!(
                    "session {s} counts {} waits on calls in flight but {waiting} waiters are its",
                    st.waiting
                ),
            );
        }
        if !st.refs.is_consistent() {
            return fail(
                "INV-3",
                format!("session {s}'s ref list and its positions disagree"),
            );
        }
        for id in st.refs.iter() {
            if self.refs.get(id.0).map(|r| r.owner) != Some(Owner::Session(s)) {
                return fail(
                    "C-11a",
                    format!("session {s} records ref {id} it does not own"),
                );
            }
        }
        Ok(())
    }

    /// C-11a: every ref `e` records as its own names it as owner.
    fn check_owned_refs(&self, id: EntryId, e: &Entry<V>) -> Result<(), Violation> {
        for r in &e.owned_refs {
            if self.refs.get(r.0).map(|x| x.owner) != Some(Owner::Entry(id)) {
                return fail(
                    "C-11a",
                    format!("entry {id} records ref {r} it does not own"),
                );
            }
        }
        Ok(())
    }
}

/// C-4b for one pair with `listed` edges: one per waiter.
fn edge_counts_agree(
    from: EntryId,
    on: EntryId,
    listed: usize,
    waiters: usize,
) -> Result<(), Violation> {
    if listed != waiters {
        return fail(
            "C-4b",
            format!(
                "entry {from}'s resolver is listed as waiting on entry {on} {listed} time(s) but has {waiters} waiter(s) there"
            ),
        );
    }
    Ok(())
}

fn unlisted_edge(from: EntryId, on: EntryId, waiters: usize) -> String {
    format!(
        "entry {from}'s resolver has {waiters} waiter(s) on entry {on} but is not listed as waiting on it"
    )
}

/// Every check above fires on the damage it looks for: each test builds
/// the same healthy cache (which passes), breaks one thing by hand, and
/// expects that check's rule, invariant and message.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{CallId, Digest};
    use crate::machine::entry::{Entry, Slots, Waiter};
    use crate::machine::index::Ids;
    use crate::machine::key::IndexKey;
    use crate::machine::{arena, RefRecord};

    /// A cache with something of every kind in it.
    struct World {
        cache: CallCache<u8>,
        session: SessionId,
        /// Completed, held by the session; listed by storage and content key.
        held: EntryId,
        /// Completed, held only by a ref owned by `outer` (C-11).
        inner: EntryId,
        /// Completed, held by a bare caller; owns the ref on `inner`.
        outer: EntryId,
        /// In flight with the session waiting, joinable (ongoing index).
        running: EntryId,
        /// A completed arbitrary entry, held by the session.
        arbitrary: EntryId,
    }

    fn run(cache: &mut CallCache<u8>, caller: &Caller, req: CallRequest) -> RunOrder {
        match cache.begin_call(caller, req).outcome {
            Ok(Decision::Run(order)) => order,
            _ => panic!("a miss"),
        }
    }

    fn complete(cache: &mut CallCache<u8>, order: &RunOrder, resolved: Resolved<u8>) -> Handle {
        let done = cache.complete(order.entry, Ok(resolved)).unwrap();
        let (_, served) = done.served.into_iter().next().unwrap();
        served.unwrap().handle
    }

    fn world() -> World {
        let mut cache = CallCache::new(1);
        let session = cache.open_session();
        let in_session = Caller {
            session: Some(session),
            ..Caller::default()
        };
        let bare = Caller::default();
        let id = CallId::new("held").with_content_digest(Digest::of(b"content"));
        let held = run(&mut cache, &in_session, CallRequest::new(id));
        complete(&mut cache, &held, Resolved::value(1));
        let inner = run(&mut cache, &bare, CallRequest::new(CallId::new("inner")));
        let inner_handle = complete(&mut cache, &inner, Resolved::value(2));
        let outer = run(&mut cache, &bare, CallRequest::new(CallId::new("outer")));
        complete(
            &mut cache,
            &outer,
            Resolved::value(3).with_nested(inner_handle),
        );
        let running = run(
            &mut cache,
            &in_session,
            CallRequest::new(CallId::new("running")).concurrency_key("c"),
        );
        let arbitrary = match cache.begin_arbitrary(&in_session, "arb").outcome {
            Ok(Decision::Run(order)) => order,
            _ => panic!("a miss"),
        };
        complete(&mut cache, &arbitrary, Resolved::value(4));
        let w = World {
            cache,
            session,
            held: held.entry,
            inner: inner.entry,
            outer: outer.entry,
            running: running.entry,
            arbitrary: arbitrary.entry,
        };
        w.cache.check_invariants().expect("the world is healthy");
        w
    }

    /// Breaks the world with `damage`; the check must report `rule`
    /// (reported as `invariant`) with `detail` in its message, and so must
    /// the check of what the damage touched (`check_touched`).
    fn fires(rule: &str, invariant: &str, detail: &str, damage: impl FnOnce(&mut World)) {
        let (w, touched) = damaged(rule, invariant, detail, damage);
        match w.cache.check_touched(&touched) {
            Err(t) => assert_eq!(t.rule, rule, "{t} (touched: {touched:?})"),
            Ok(()) => panic!("check_touched missed {detail:?} (touched: {touched:?})"),
        }
    }

    /// [`fires`] for damage only the full check can see: made on an index
    /// map directly, around the doors the touch log watches (no entry, ref
    /// or session changed), or a count only the full check recounts. A
    /// harness that checks steps incrementally finds it at its next full
    /// check.
    fn fires_full_only(rule: &str, invariant: &str, detail: &str, damage: impl FnOnce(&mut World)) {
        let (w, touched) = damaged(rule, invariant, detail, damage);
        assert!(touched.is_empty(), "{touched:?}");
        w.cache.check_touched(&touched).expect("nothing touched");
    }

    /// The world after `damage`, which the full check must report as
    /// `rule`, with what the damage touched.
    fn damaged(
        rule: &str,
        invariant: &str,
        detail: &str,
        damage: impl FnOnce(&mut World),
    ) -> (World, Touched) {
        let mut w = world();
        let mut touched = Touched::default();
        w.cache.track_touched();
        damage(&mut w);
        w.cache.take_touched(&mut touched);
        let v = w.cache.check_invariants().expect_err("the damage is found");
        assert_eq!((v.rule, v.invariant()), (rule, invariant), "{v}");
        assert!(v.to_string().contains(detail), "{v}");
        (w, touched)
    }

    fn entry(w: &mut World, id: EntryId) -> &mut Entry<u8> {
        w.cache.entries.get_mut(id.0).unwrap()
    }

    /// The (first) live ref on `entry`.
    fn ref_on(w: &World, entry: EntryId) -> arena::Key {
        w.cache
            .refs
            .iter()
            .find(|(_, r)| r.entry == entry)
            .unwrap()
            .0
    }

    /// An entry put straight into the arena, in no index, in `phase`.
    fn stray(w: &mut World, phase: Phase) -> EntryId {
        let mut e = Entry::in_flight(
            RunMode::Cached,
            None,
            IndexKey::from_text("x"),
            IndexKey::from_text("x"),
        );
        e.phase = phase;
        EntryId(w.cache.entries.insert(e))
    }

    fn dead(w: &mut World) -> EntryId {
        let id = stray(w, Phase::InFlight);
        w.cache.entries.remove(id.0);
        id
    }

    fn storage_key(w: &mut World, id: EntryId) -> IndexKey {
        entry(w, id).storage_key.clone()
    }

    /// `running`'s resolver starts a nested call: the nested entry, with
    /// the C-4b edge from `running` to it.
    fn nested_in_running(w: &mut World) -> RunOrder {
        let inside = Caller {
            inside: Some((w.cache.instance(), w.running)),
            ..Caller::default()
        };
        run(
            &mut w.cache,
            &inside,
            CallRequest::new(CallId::new("nested")),
        )
    }

    #[test]
    fn c4b_a_nested_call_is_an_edge_until_it_finishes() {
        let mut w = world();
        let nested = nested_in_running(&mut w);
        let running = w.running;
        assert_eq!(entry(&mut w, running).waits_on, vec![nested.entry]);
        w.cache
            .check_invariants()
            .expect("a live edge with its waiter");
        // Served, the nested call's waiter is gone and so is the edge
        // (a stale edge here is what the check below reports).
        complete(&mut w.cache, &nested, Resolved::value(5));
        w.cache.check_invariants().expect("no edge, no waiter");
        assert!(entry(&mut w, running).waits_on.is_empty());
    }

    #[test]
    fn c4b_wait_edges_match_the_nested_waiters() {
        fires("C-4b", "INV-11", "1 waiter(s) there", |w| {
            let nested = nested_in_running(w).entry;
            let running = w.running;
            entry(w, running).waits_on.push(nested);
        });
        fires("C-4b", "INV-11", "but is not listed as waiting", |w| {
            let _ = nested_in_running(w);
            let running = w.running;
            entry(w, running).waits_on.clear();
        });
        fires("C-4b", "INV-11", "0 waiter(s) there", |w| {
            let (held, running) = (w.held, w.running);
            entry(w, running).waits_on.push(held);
        });
    }

    #[test]
    fn c4b_the_reported_cycle_is_the_ring_without_the_path_into_it() {
        let mut w = world();
        // Resolvers still running with no caller left: abandoned entries.
        let (a, b) = (
            stray(&mut w, Phase::Abandoned),
            stray(&mut w, Phase::Abandoned),
        );
        // `running` (walked first) leads into the ring a -> b -> a.
        let running = w.running;
        entry(&mut w, running).waits_on.push(a);
        entry(&mut w, a).waits_on.push(b);
        entry(&mut w, b).waits_on.push(a);
        assert_eq!(w.cache.wait_cycle(), Some(vec![a, b]));
        let v = w.cache.check_invariants().unwrap_err();
        assert_eq!(v.rule, "C-4b", "{v}");
        assert!(v.detail.contains("in a cycle"), "{v}");
    }

    #[test]
    fn inv3_a_listing_without_a_live_completed_call_is_found() {
        fires("INV-3", "INV-3", "points at dead entry", |w| {
            let gone = dead(w);
            let k = storage_key(w, w.held);
            w.cache.idx.insert(&Slot::Storage(k), gone);
        });
        fires("INV-3", "INV-3", "which is not a completed call", |w| {
            let k = storage_key(w, w.held);
            let running = w.running;
            w.cache.idx.insert(&Slot::Storage(k), running);
        });
        fires("INV-3", "INV-3", "whose own keys do not match", |w| {
            let (k, inner) = (storage_key(w, w.held), w.inner);
            w.cache.idx.insert(&Slot::Storage(k), inner);
        });
        fires("INV-3", "INV-3", "content index", |w| {
            let k = entry(w, w.held).content_key.clone().unwrap();
            let inner = w.inner;
            w.cache.idx.insert(&Slot::Content(k), inner);
        });
        // Each half of "its own keys": the entry's key, and its record of
        // the slot, each missing alone.
        fires("INV-3", "INV-3", "whose own keys do not match", |w| {
            let held = w.held;
            let e = entry(w, held);
            e.storage_key = IndexKey::from_text("elsewhere");
            e.result_call_key = None;
        });
        fires("INV-3", "INV-3", "whose own keys do not match", |w| {
            let held = w.held;
            let content = entry(w, held).content_key.clone().unwrap();
            let mut slots = Slots::default();
            slots.push(Slot::Content(content));
            entry(w, held).slots = slots;
        });
    }

    #[test]
    fn inv3_lists_and_their_counts_agree() {
        fires_full_only("INV-3", "INV-3", "the completed buckets count", |w| {
            *w.cache.idx.storage_lists_mut().1 += 1;
        });
        fires_full_only("INV-3", "INV-3", "empty storage list under", |w| {
            let lists = w.cache.idx.storage_lists_mut().0;
            lists.insert(IndexKey::from_text("empty"), Ids::Empty);
        });
        fires("INV-3", "INV-3", "twice in the storage list", |w| {
            let (k, held) = (storage_key(w, w.held), w.held);
            let (lists, count) = w.cache.idx.storage_lists_mut();
            lists.insert(k, Ids::Many(Box::new(vec![held, held])));
            *count += 1;
        });
    }

    #[test]
    fn inv3_an_entry_missing_from_an_index_it_records_is_found() {
        fires("INV-3", "INV-3", "records slot", |w| {
            // Through the index's own routine, so its counts stay right.
            let (k, held) = (storage_key(w, w.held), w.held);
            w.cache.idx.remove(&Slot::Storage(k), held);
        });
    }

    #[test]
    fn inv3_the_in_flight_and_arbitrary_indexes_are_checked() {
        fires("INV-3", "INV-3", "ongoing index (", |w| {
            let gone = dead(w);
            w.cache
                .idx
                .ongoing
                .insert((IndexKey::from_text("elsewhere"), "c".into()), gone);
        });
        fires("INV-3", "INV-3", "but still in the ongoing index", |w| {
            let k = storage_key(w, w.running);
            let held = w.held;
            w.cache.idx.ongoing.insert((k, "c".into()), held);
        });
        fires("INV-3", "INV-3", "whose own keys do not match", |w| {
            let k = storage_key(w, w.running);
            let running = w.running;
            w.cache.idx.ongoing.insert((k, "other".into()), running);
        });
        // Each of the three alone: storage key, concurrency key, slot record.
        fires("INV-3", "INV-3", "whose own keys do not match", |w| {
            let running = w.running;
            entry(w, running).storage_key = IndexKey::from_text("elsewhere");
        });
        fires("INV-3", "INV-3", "whose own keys do not match", |w| {
            let running = w.running;
            entry(w, running).concurrency_key = "d".into();
        });
        fires("INV-3", "INV-3", "whose own keys do not match", |w| {
            let running = w.running;
            entry(w, running).slots = Slots::default();
        });
        fires("INV-3", "INV-3", "arbitrary completed index under", |w| {
            let gone = dead(w);
            w.cache.idx.arbitrary_completed.insert("arb2".into(), gone);
        });
        fires_full_only("INV-3", "INV-3", "whose state or keys do not match", |w| {
            let arbitrary = w.arbitrary;
            w.cache
                .idx
                .arbitrary_ongoing
                .insert("arb".into(), arbitrary);
        });
        // Each of the four alone on the completed arbitrary entry: its
        // phase, mode, key and slot record.
        let alone: [fn(&mut Entry<u8>); 4] = [
            |e| e.phase = Phase::Abandoned,
            |e| e.mode = RunMode::Cached,
            |e| e.storage_key = IndexKey::from_text("elsewhere"),
            |e| e.slots = Slots::default(),
        ];
        for damage in alone {
            fires("INV-3", "INV-3", "whose state or keys do not match", |w| {
                let arbitrary = w.arbitrary;
                damage(entry(w, arbitrary));
            });
        }
        // Only a change cache keeps an abandoned init indexed (K-5).
        fires("INV-3", "INV-3", "arbitrary ongoing index under", |w| {
            let arbitrary = w.arbitrary;
            w.cache.idx.arbitrary_completed.remove("arb");
            w.cache
                .idx
                .arbitrary_ongoing
                .insert("arb".into(), arbitrary);
            let e = entry(w, arbitrary);
            e.phase = Phase::Abandoned;
            e.slots = Slots::default();
            e.slots.push(Slot::ArbitraryOngoing("arb".into()));
        });
    }

    #[test]
    fn inv10_refcounts_match_the_live_refs() {
        fires("INV-10", "INV-10", "counts 2 refs but 1 are live", |w| {
            entry(w, w.held).refcount += 1;
        });
        fires("INV-10", "INV-10", "refs remain on dead entry", |w| {
            let gone = dead(w);
            w.cache.refs.insert(RefRecord {
                entry: gone,
                owner: Owner::Caller,
            });
        });
    }

    #[test]
    fn phases_agree_with_waiters_refs_and_indexes() {
        fires("C-5", "INV-7", "in flight with no waiter", |w| {
            entry(w, w.running).waiters.clear();
            w.cache.sessions.get_mut(&w.session).unwrap().waiting = 0;
        });
        fires("INV-3", "INV-3", "still has waiters", |w| {
            let waiter = Waiter {
                id: WaiterId(99),
                session: None,
                from: None,
            };
            entry(w, w.held).waiters.push(waiter);
        });
        fires("C-12", "INV-1", "was not removed", |w| {
            let outer = w.outer;
            let r = ref_on(w, outer);
            w.cache.refs.remove(r);
            entry(w, outer).refcount = 0;
        });
        fires("C-5", "INV-7", "abandoned entry", |w| {
            // Unindexed first, so only its remaining ref is wrong.
            let inner = w.inner;
            let k = storage_key(w, inner);
            w.cache.idx.remove(&Slot::Storage(k), inner);
            let e = entry(w, inner);
            e.slots = Default::default();
            e.phase = Phase::Abandoned;
        });
        fires("C-5", "INV-7", "abandoned entry", |w| {
            // Unindexed, no refs, but its waiter is still there.
            let running = w.running;
            let k = storage_key(w, running);
            w.cache.idx.remove(&Slot::Ongoing(k, "c".into()), running);
            let e = entry(w, running);
            e.slots = Default::default();
            e.phase = Phase::Abandoned;
        });
        fires(
            "INV-3",
            "INV-3",
            "is Abandoned but still in the ongoing index",
            |w| {
                // C-9: abandoned, unheld and unwaited, but still indexed.
                let running = w.running;
                entry(w, running).waiters.clear();
                w.cache.sessions.get_mut(&w.session).unwrap().waiting -= 1;
                entry(w, running).phase = Phase::Abandoned;
            },
        );
    }

    #[test]
    fn c11a_every_ref_is_recorded_by_exactly_the_owner_it_names() {
        fires("S-3", "INV-9", "belongs to closed session", |w| {
            let closed = SessionId(77);
            let held = w.held;
            w.cache.refs.insert(RefRecord {
                entry: held,
                owner: Owner::Session(closed),
            });
            entry(w, held).refcount += 1;
        });
        fires("C-11a", "INV-2", "which does not record it", |w| {
            let (held, session) = (w.held, w.session);
            w.cache.refs.insert(RefRecord {
                entry: held,
                owner: Owner::Session(session),
            });
            entry(w, held).refcount += 1;
        });
        fires("C-11a", "INV-2", "owns a ref on itself", |w| {
            let outer = w.outer;
            let r = RefId(w.cache.refs.insert(RefRecord {
                entry: outer,
                owner: Owner::Entry(outer),
            }));
            entry(w, outer).owned_refs.push(r);
            entry(w, outer).refcount += 1;
        });
        fires("INV-3", "INV-3", "waits on calls in flight", |w| {
            w.cache.sessions.get_mut(&w.session).unwrap().waiting += 1;
        });
        fires("C-11a", "INV-2", "records ref", |w| {
            let outer = w.outer;
            let bare = ref_on(w, outer);
            w.cache
                .sessions
                .get_mut(&w.session)
                .unwrap()
                .refs
                .insert(RefId(bare));
        });
        fires("INV-3", "INV-3", "positions disagree", |w| {
            let bare = RefId(ref_on(w, w.outer));
            w.cache
                .sessions
                .get_mut(&w.session)
                .unwrap()
                .refs
                .plant_stray_position(bare);
        });
        fires("C-11a", "INV-2", "records ref", |w| {
            let (held, outer) = (w.held, w.outer);
            let r = ref_on(w, held);
            entry(w, outer).owned_refs.push(RefId(r));
        });
    }

    #[test]
    fn inv2_refcounts_equal_the_handles_a_shadow_counts() {
        let mut w = world();
        let mut expected: BTreeMap<EntryId, u32> = w
            .cache
            .entries
            .iter()
            .map(|(k, e)| (EntryId(k), e.refcount))
            .collect();
        w.cache.check_refcounts(&expected).unwrap();
        *expected.get_mut(&w.held).unwrap() += 1;
        let v = w.cache.check_refcounts(&expected).unwrap_err();
        assert_eq!(v.rule, "INV-2");
        assert!(v.detail.contains("has refcount 1 but 2 handles"), "{v}");
        *expected.get_mut(&w.held).unwrap() -= 1;
        let gone = dead(&mut w);
        // A shadow may remember a gone entry with no handles left on it.
        expected.insert(gone, 0);
        w.cache.check_refcounts(&expected).unwrap();
        expected.insert(gone, 1);
        let v = w.cache.check_refcounts(&expected).unwrap_err();
        assert!(v.detail.contains("which is gone"), "{v}");
    }

    #[test]
    fn violations_name_their_rule_and_the_invariant_it_protects() {
        let v = |rule| Violation {
            rule,
            detail: "d".into(),
        };
        for (rule, inv) in [
            ("INV-4", "INV-4"),
            ("C-11a", "INV-2"),
            ("C-5", "INV-7"),
            ("C-12", "INV-1"),
            ("C-9", "INV-3"),
            ("C-4b", "INV-11"),
            ("S-3", "INV-9"),
            ("C-13", "INV-3"),
        ] {
            assert_eq!(v(rule).invariant(), inv, "{rule}");
        }
        assert_eq!(v("C-9").to_string(), "C-9 violated: d");
    }
}
