//! `complete` and `leave`: how an in-flight call settles (C-5 … C-10, C-14, S-3, S-4, K-4, K-5).

use super::entry::{Phase, Slot, Slots, Waiter};
use super::key::IndexKey;
use super::types::*;
use super::CallCache;
use crate::bugs::Bug;
use crate::error::CallError;

impl<V: Clone> CallCache<V> {
    /// A resolver finished. Distributes the outcome to every remaining waiter
    /// and says which hooks to run and which TTL write to make.
    ///
    /// Panics in the resolver must be passed in as `Err(CallError::Panicked)` (C-14).
    pub fn complete(
        &mut self,
        entry: EntryId,
        outcome: Result<Resolved<V>, CallError>,
    ) -> Result<Completion<V>, CallError> {
        let phase = match self.entries.get(entry.0) {
            Some(e) if e.phase != Phase::Completed => e.phase,
            _ => {
                return Err(CallError::Unknown {
                    what: "in-flight entry",
                    id: entry.to_string(),
                })
            }
        };
        let mut done = Completion {
            served: Vec::new(),
            releases: Vec::new(),
            persist: None,
            settled: entry,
        };
        if self.bug(Bug::OngoingDeleteNoIdentity) {
            // BUG (ongoing-delete-no-identity, breaks C-13): clears the
            // in-flight registration under this call's keys without checking
            // it is this call's: a newer call registered there is dropped.
            let e = self.entries.get(entry.0).expect("checked above");
            let key = (e.storage_key.clone(), e.concurrency_key.clone());
            if let Some(gone) = self.idx.ongoing.remove(&key) {
                self.idx.note(gone);
            }
        }
        let resolved = match self.adopt_nested(entry, outcome, &mut done) {
            Ok(resolved) => resolved,
            Err(error) => {
                self.fail(entry, error, &mut done);
                return Ok(done);
            }
        };
        if phase == Phase::Abandoned {
            // C-5a: nobody will ever hold it; release at once, index nowhere.
            self.fill(entry, resolved);
            self.remove_entry(entry, &mut done.releases);
            return Ok(done);
        }
        let mode = self
            .entries
            .get(entry.0)
            .map(|e| e.mode)
            .unwrap_or(RunMode::Cached);
        self.fill(entry, resolved);
        let held = match mode {
            RunMode::DoNotCache => {
                self.settle_detached(entry);
                entry
            }
            RunMode::Cached | RunMode::ForcedRetry | RunMode::Arbitrary => {
                self.store(entry, &mut done)
            }
        };
        self.serve_waiters(entry, held, mode == RunMode::DoNotCache, &mut done);
        Ok(done)
    }

    /// A waiter leaves (its cancellation fired, or it gave up). C-5 / K-4: the
    /// resolver is cancelled only when the last waiter has gone.
    pub fn leave(&mut self, entry: EntryId, waiter: WaiterId) -> Left {
        let Some(e) = self.entries.get_mut(entry.0) else {
            return Left::NotWaiting;
        };
        let Some(pos) = e.waiters.iter().position(|w| w.id == waiter) else {
            return Left::NotWaiting;
        };
        let w = e.waiters.remove(pos);
        let last = e.waiters.is_empty() && e.refcount == 0;
        let unheld = e.refcount == 0;
        self.forget_waiter(&w, entry);
        if !last {
            if unheld && self.bug(Bug::ErrorPathIgnoresWaiters) {
                // BUG (error-path-ignores-waiters, breaks C-9 / INV-4): the
                // call leaves the in-flight index while waiters remain, so
                // the next caller starts a second resolver.
                self.unindex(entry);
            }
            return Left::Removed;
        }
        let change_mode = self.change_mode;
        let e = self.entries.get_mut(entry.0).expect("checked above");
        e.phase = Phase::Abandoned;
        if !(change_mode && e.mode == RunMode::Arbitrary) {
            // The call leaves every index now: the next caller starts afresh.
            self.unindex(entry);
        }
        Left::CancelResolver
    }

    /// Takes over the refs a result hands in (C-11, C-11a). An unknown nested
    /// handle turns the outcome into an error; the valid ones are then released.
    fn adopt_nested(
        &mut self,
        entry: EntryId,
        outcome: Result<Resolved<V>, CallError>,
        done: &mut Completion<V>,
    ) -> Result<Resolved<V>, CallError> {
        let mut resolved = outcome?;
        let nested = std::mem::take(&mut resolved.nested);
        let unknown = nested.iter().find(|h| !self.is_live(h)).map(|h| h.ref_id);
        if let Some(bad) = unknown {
            for h in nested {
                if self.is_live(&h) {
                    self.release_ref(h.ref_id, &mut done.releases);
                }
            }
            if let Some(hook) = resolved.release.take() {
                done.releases.push(PendingRelease {
                    entry,
                    label: ReleaseLabel::Fixed("rejected result"),
                    hook,
                });
            }
            return Err(CallError::Resolver(
                format!("resolver returned an unknown nested handle {bad}").into(),
            ));
        }
        for h in nested {
            self.transfer(h.ref_id, Owner::Entry(entry));
        }
        Ok(resolved)
    }

    /// Moves a resolver's output onto its entry.
    fn fill(&mut self, entry: EntryId, resolved: Resolved<V>) {
        let e = self.entries.get_mut(entry.0).expect("caller checked");
        let result_id = resolved.id.or_else(|| e.requested.clone());
        e.result_call_key = result_id
            .as_ref()
            .map(|id| IndexKey::digest(id.recipe_digest()));
        e.content_key = result_id
            .as_ref()
            .and_then(|id| id.content_digest().map(IndexKey::digest));
        e.result_id = result_id;
        e.value = resolved.value;
        e.hook = resolved.release;
        e.safe_to_persist = resolved.safe_to_persist;
        // The resolver has returned: whatever it still waits on no longer
        // makes it wait (C-4b edges belong to running resolvers only).
        e.waits_on.clear();
    }

    /// C-9 / C-14 / K-3: every waiter gets the error; nothing is cached.
    fn fail(&mut self, entry: EntryId, error: CallError, done: &mut Completion<V>) {
        let waiters = self.take_waiters(entry);
        let sets_retry_flag = matches!(error, CallError::Resolver(_) | CallError::Panicked(_));
        // S-4 flags are for calls only, not arbitrary entries.
        let call_key = self
            .entries
            .get(entry.0)
            .filter(|e| e.mode != RunMode::Arbitrary)
            .map(|e| e.call_key.clone());
        for w in waiters {
            if let Some(call_key) = call_key.as_ref().filter(|_| sets_retry_flag) {
                // S-4: only errors the resolver produced set the flag.
                if let Some(state) = w.session.and_then(|s| self.sessions.get_mut(&s)) {
                    state.retry_uncached.insert(call_key.clone(), error.clone());
                }
            }
            done.served.push((w.id, Err(error.clone())));
        }
        self.remove_entry(entry, &mut done.releases);
    }

    /// Stores a cached result (C-6), or hands over the existing one and
    /// discards the newcomer (C-7). Returns the entry the waiters will hold.
    fn store(&mut self, entry: EntryId, done: &mut Completion<V>) -> EntryId {
        let e = self.entries.get(entry.0).expect("caller checked");
        let existing = if e.mode == RunMode::Arbitrary {
            self.idx
                .arbitrary_completed
                .get(&*e.storage_key.text())
                .copied()
        } else {
            // T-3: through a shared key, a result this run's session may
            // not be served is no duplicate of this one (C-7); both stay
            // listed.
            self.stored_for(&e.storage_key, e.shared_storage, e.starter)
        };
        let (mode, starter, call_key) = (e.mode, e.starter, e.call_key.clone());
        if mode == RunMode::ForcedRetry {
            // S-4: the retry succeeded: clear the flag.
            if let Some(state) = starter.and_then(|s| self.sessions.get_mut(&s)) {
                state.retry_uncached.remove(&call_key);
            }
        }
        if let Some(existing) = existing.filter(|x| *x != entry) {
            // C-7: the newcomer is discarded with its hook run once, indexed nowhere.
            self.unindex(entry);
            return existing;
        }
        self.unindex(entry);
        // BUG (ttl-write-ignores-safety, breaks T-3): the prepared write
        // goes ahead whatever the result's safety flag says.
        let persist_unsafe = self.bug(Bug::TtlWriteIgnoresSafety);
        let e = self.entries.get_mut(entry.0).expect("caller checked");
        e.phase = Phase::Completed;
        if e.shared_storage && !e.safe_to_persist && e.mode != RunMode::Arbitrary {
            // T-3: an unsafe result under a key other sessions share stays
            // with its own callers, indexed nowhere.
            return entry;
        }
        let mut slots = Slots::default();
        if e.mode == RunMode::Arbitrary {
            slots.push(Slot::ArbitraryCompleted(e.storage_key.to_text()));
        } else {
            slots.push(Slot::Storage(e.storage_key.clone()));
            // A TTL-chosen storage key is session-scoped (T-2); indexing the
            // result under its bare call key or its content key would share
            // it engine-wide: unsafe results with other sessions (T-3), and
            // anyone's results after their TTL expired (T-7, INV-8).
            let ttl_scoped = e.storage_key != e.call_key;
            if let Some(rk) = e
                .result_call_key
                .clone()
                .filter(|rk| *rk != e.storage_key && !ttl_scoped)
            {
                slots.push(Slot::Storage(rk));
            }
            if let Some(ck) = e.content_key.clone().filter(|_| !ttl_scoped) {
                slots.push(Slot::Content(ck));
            }
            if e.safe_to_persist || persist_unsafe {
                done.persist = e.ttl_write.clone();
            }
        }
        for slot in slots.iter() {
            self.idx.insert(slot, entry);
        }
        self.entries.get_mut(entry.0).expect("caller checked").slots = slots;
        entry
    }

    /// C-2: a do-not-cache result lives detached, indexed nowhere.
    fn settle_detached(&mut self, entry: EntryId) {
        let e = self.entries.get_mut(entry.0).expect("caller checked");
        e.phase = Phase::Completed;
    }

    /// C-6: every waiter gets a ref on `held`; S-3: a waiter whose session has
    /// closed gets a clear error, and the ref it would hold is never taken.
    fn serve_waiters(
        &mut self,
        entry: EntryId,
        held: EntryId,
        detached: bool,
        done: &mut Completion<V>,
    ) {
        let waiters = self.take_waiters(entry);
        // One answer per waiter: sized once, not doubled as 512 joiners arrive.
        done.served.reserve(waiters.len());
        let (value, id, safe_to_persist) = {
            let h = self.entries.get(held.0).expect("held entry is alive");
            (h.value.clone(), h.result_id.clone(), h.safe_to_persist)
        };
        for w in waiters {
            let session_open = w.session.is_none_or(|s| self.sessions.contains_key(&s));
            let late_append = !session_open && self.bug(Bug::SessionLateAppendLeak);
            if !session_open && !late_append {
                // S-3: this waiter's ref would be released at once. Taking and
                // releasing it here could drop `held` to zero refs and remove
                // it while later waiters are still to be served (C-5); not
                // taking it is the same, and `collect_if_unheld` below removes
                // the entry if no waiter ends up holding it.
                done.served
                    .push((w.id, Err(CallError::ClosedDuringExecution)));
                continue;
            }
            // The waiter's session owns its ref (S-1), unless the result is
            // detached (C-2). BUG (session-late-append-leak, breaks S-3):
            // so does a closed session, which never releases it. One guard
            // rather than an arm of its own: with the switch off, such an arm
            // is dead code that no test can tell from its absence.
            let owner = match w.session {
                Some(s) if !detached || late_append => Owner::Session(s),
                _ => Owner::Caller,
            };
            let handle = self.add_ref(held, owner);
            let served = Served {
                handle,
                value: value.clone(),
                id: id.clone(),
                hit: false,
                content_hit: false,
                detached,
                session_owned: owner != Owner::Caller,
                safe_to_persist,
            };
            done.served.push((w.id, Ok(served)));
        }
        if held != entry {
            if self.bug(Bug::DupCompletionDiscard) {
                // BUG (dup-completion-discard, breaks C-7): the newcomer is
                // dropped without its hook; refs it owned are orphaned.
                self.entries.remove(entry.0);
            } else {
                // C-7: the newcomer's result goes, hook and nested refs
                // included.
                self.remove_entry(entry, &mut done.releases);
            }
        }
        self.collect_if_unheld(held, &mut done.releases);
    }

    fn take_waiters(&mut self, entry: EntryId) -> Vec<Waiter> {
        let waiters = self
            .entries
            .get_mut(entry.0)
            .map(|e| std::mem::take(&mut e.waiters))
            .unwrap_or_default();
        for w in &waiters {
            self.forget_waiter(w, entry);
        }
        waiters
    }

    /// Accounts for a waiter taken off `entry` (served, failed or gone):
    /// its session waits on one call fewer, and its C-4b edge goes
    /// (`w.from`'s resolver no longer waits on `entry`).
    fn forget_waiter(&mut self, w: &Waiter, entry: EntryId) {
        if let Some(state) = w.session.and_then(|s| self.sessions.get_mut(&s)) {
            state.waiting -= 1;
        }
        if let Some(parent) = w.from.and_then(|f| self.entries.get_mut(f.0)) {
            if let Some(pos) = parent.waits_on.iter().position(|e| *e == entry) {
                parent.waits_on.remove(pos);
            }
        }
    }
}
