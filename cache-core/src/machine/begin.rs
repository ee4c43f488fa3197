//! `begin`: the lookup order of C-3, taken as one atomic step.

use super::entry::{Entry, Phase, Slot, Waiter};
use super::key::IndexKey;
use super::types::*;
use super::CallCache;
use crate::bugs::Bug;
use crate::error::CallError;
use crate::trace::{Path, TraceLine};

impl<V: Clone> CallCache<V> {
    /// `get_or_init_call`'s decision for one caller (C-1 … C-4b, C-2, S-2, S-4, S-5).
    pub fn begin_call(&mut self, caller: &Caller, mut req: CallRequest) -> Begin<V> {
        // C-1: reject before anything else happens.
        if let Err(e) = req.check_key() {
            return rejected(e);
        }
        let Some(id) = req.id.take() else {
            unreachable!("check_key refuses a key with no call ID");
        };
        // The keys are held as digests (see `key`): a hit formats no text
        // and allocates nothing for its lookup. A call key is a digest's
        // text, so it is never empty (C-1's empty-key case is the storage key's).
        let call_key = IndexKey::digest(id.recipe_digest());
        let own_storage = req.storage_key.take();
        let storage_key = own_storage
            .as_deref()
            .map_or_else(|| call_key.clone(), IndexKey::from_text);
        if let Err(e) = self.check_session(caller) {
            return rejected(e);
        }
        // The storage key goes into the line only when it is not the call key.
        let trace_storage = own_storage.filter(|s| call_key != *s.as_str());
        let mut trace = TraceLine::call(&id, trace_storage, caller.session);

        // C-4 / C-4a: revisiting a storage key of this instance, on any path.
        if self.in_chain(caller, Namespace::Call, |k| storage_key == *k) {
            trace.path = Path::Recursive;
            trace.rule = "C-4";
            return Begin {
                outcome: Err(CallError::Recursive {
                    key: storage_key.to_text(),
                }),
                trace: Some(trace),
                telemetry: false,
            };
        }

        let failed_before = caller
            .session
            .and_then(|s| self.sessions.get(&s))
            .and_then(|s| s.retry_uncached.get(&call_key));
        if let Some(error) = failed_before.filter(|_| self.bug(Bug::ErrorsCachedInSession)) {
            // BUG (errors-cached-in-session, breaks C-9 / S-4): the session
            // replays the last error instead of running the call again.
            trace.rule = "S-4";
            return Begin {
                outcome: Err(error.clone()),
                trace: Some(trace),
                telemetry: false,
            };
        }
        let forced = failed_before.is_some();
        // S-5: a forced retry runs as do-not-cache, and do-not-cache runs are
        // always emitted, so the retry's run gets its span too.
        // BUG (forced-retry-silent, breaks S-5): the retry is not "always".
        let forced_emits = forced && !self.bug(Bug::ForcedRetrySilent);
        let always = req.do_not_cache || req.repeat_telemetry || forced_emits;
        let telemetry = self.telemetry(caller, &call_key, always);

        if req.do_not_cache || forced {
            let mode = if req.do_not_cache {
                RunMode::DoNotCache
            } else {
                RunMode::ForcedRetry
            };
            trace.path = Path::DoNotCache;
            trace.rule = if req.do_not_cache { "C-2" } else { "S-4" };
            let fresh = format!("do-not-cache:{}:{}", self.instance, self.next_detached);
            self.next_detached += 1;
            let chain_key = storage_key.to_text();
            let mut entry = Entry::in_flight(mode, Some(id), call_key, storage_key);
            entry.starter = caller.session;
            entry.ttl_write = req.ttl_write;
            entry.shared_storage = req.shared_storage;
            let order = self.start(caller, entry, fresh, Namespace::Call, chain_key);
            return Begin {
                outcome: Ok(Decision::Run(order)),
                trace: Some(trace),
                telemetry,
            };
        }

        // C-3.1: storage hit (through a shared key, T-3: see `stored_for`).
        let hit = self.stored_for(&storage_key, req.shared_storage, caller.session);
        if let Some(hit) = hit {
            trace.path = Path::Storage;
            trace.rule = "C-3.1";
            let served = self.serve_hit(caller, hit, None);
            return Begin {
                outcome: Ok(Decision::Hit(served)),
                trace: Some(trace),
                telemetry,
            };
        }
        // C-3.2: content hit, reporting the requested ID (C-8).
        let content_key = id.content_digest().map(IndexKey::digest);
        if let Some(hit) = content_key.and_then(|k| self.idx.content(&k)) {
            trace.path = Path::Content;
            trace.rule = "C-3.2";
            trace.overridden = true;
            let mut served = self.serve_hit(caller, hit, Some(id));
            if self.bug(Bug::ContentHitForeignRecipe) {
                // BUG (content-hit-foreign-recipe, breaks C-8 / INV-5): the
                // hit reports the stored entry's ID, not the requested one.
                served.id = self.entries.get(hit.0).and_then(|e| e.result_id.clone());
            }
            return Begin {
                outcome: Ok(Decision::Hit(served)),
                trace: Some(trace),
                telemetry,
            };
        }
        // A TTL key dedupes only within the session: through a shared key,
        // whether the result may cross sessions is known only once it is
        // safe to persist (T-3). A fresh key is scoped the same way, so that
        // a run under it and a later call of its session that reaches it
        // through the row its sibling wrote meet as one flight (C-3.3).
        let ttl_chosen = req.shared_storage || req.ttl_write.is_some();
        let concurrency_key = match caller.session {
            Some(s) if ttl_chosen && !req.concurrency_key.is_empty() => {
                ConcurrencyKey::from(format!("{}@{s}", req.concurrency_key))
            }
            _ => req.concurrency_key,
        };
        // C-3.3: join an in-flight call with the same (storage key, concurrency key).
        if !concurrency_key.is_empty() {
            if let Some(entry) = self.idx.ongoing_call(&storage_key, &concurrency_key) {
                trace.rule = "C-3.3";
                return self.join_traced(caller, entry, trace, telemetry);
            }
        }
        // C-3.4: miss.
        let text = storage_key.to_text();
        let mut entry = Entry::in_flight(RunMode::Cached, Some(id), call_key, storage_key.clone());
        entry.starter = caller.session;
        entry.ttl_write = req.ttl_write;
        entry.shared_storage = req.shared_storage;
        entry.concurrency_key = concurrency_key.clone();
        if !concurrency_key.is_empty() {
            entry
                .slots
                .push(Slot::Ongoing(storage_key.clone(), concurrency_key));
        }
        let order = self.start(caller, entry, text.clone(), Namespace::Call, text);
        Begin {
            outcome: Ok(Decision::Run(order)),
            trace: Some(trace),
            telemetry,
        }
    }

    /// Keyed singleflight for arbitrary entries and the change cache (K-1 … K-5).
    pub fn begin_arbitrary(&mut self, caller: &Caller, key: &str) -> Begin<V> {
        if let Err(e) = check_arbitrary_key(key) {
            return rejected(e);
        }
        if let Err(e) = self.check_session(caller) {
            return rejected(e);
        }
        let mut trace = TraceLine::arbitrary(key, caller.session);
        if self.in_chain(caller, Namespace::Arbitrary, |k| k == key) {
            trace.path = Path::Recursive;
            trace.rule = "K-3";
            return Begin {
                outcome: Err(CallError::Recursive {
                    key: key.to_string(),
                }),
                trace: Some(trace),
                telemetry: false,
            };
        }
        let blocked = !self.idx.arbitrary_completed.contains_key(key)
            && self
                .idx
                .arbitrary_ongoing
                .get(key)
                .and_then(|e| self.entries.get(e.0))
                .is_some_and(|e| e.phase == Phase::Abandoned);
        // S-5: a K-5 block is not the call yet; the decision taken after it
        // emits the one span (saying `cached` only if no init ran for it).
        // Without a session the key is not remembered, so not converted.
        let telemetry = !blocked
            && (caller.session.is_none()
                || self.telemetry(caller, &IndexKey::from_text(key), false));
        if let Some(&hit) = self.idx.arbitrary_completed.get(key) {
            trace.path = Path::Storage;
            let served = self.serve_hit(caller, hit, None);
            return Begin {
                outcome: Ok(Decision::Hit(served)),
                trace: Some(trace),
                telemetry,
            };
        }
        if let Some(&entry) = self.idx.arbitrary_ongoing.get(key) {
            if blocked {
                // K-5: never overlap two inits of one key.
                trace.path = Path::Blocked;
                trace.rule = "K-5";
                return Begin {
                    outcome: Ok(Decision::Blocked { entry }),
                    trace: Some(trace),
                    telemetry,
                };
            }
            return self.join_traced(caller, entry, trace, telemetry);
        }
        let index_key = IndexKey::from_text(key);
        let mut entry = Entry::in_flight(RunMode::Arbitrary, None, index_key.clone(), index_key);
        entry.starter = caller.session;
        entry.slots.push(Slot::ArbitraryOngoing(key.to_string()));
        let order = self.start(
            caller,
            entry,
            key.to_string(),
            Namespace::Arbitrary,
            key.to_string(),
        );
        Begin {
            outcome: Ok(Decision::Run(order)),
            trace: Some(trace),
            telemetry,
        }
    }

    /// S-2: a call on a closed (or never opened) session fails at once.
    fn check_session(&self, caller: &Caller) -> Result<(), CallError> {
        match caller.session {
            Some(s) if !self.sessions.contains_key(&s) => Err(CallError::SessionClosed),
            _ => Ok(()),
        }
    }

    /// Whether the caller runs inside a resolver of this instance for a key
    /// `is_key` accepts (C-4).
    fn in_chain(
        &self,
        caller: &Caller,
        namespace: Namespace,
        is_key: impl Fn(&str) -> bool,
    ) -> bool {
        caller
            .chain
            .iter()
            .any(|l| l.instance == self.instance && l.namespace == namespace && is_key(&l.key))
    }

    /// S-5: once per key per session, unless asked to repeat; always without a session.
    fn telemetry(&mut self, caller: &Caller, key: &IndexKey, always: bool) -> bool {
        match caller.session.and_then(|s| self.sessions.get_mut(&s)) {
            // The key is copied only the first time it is seen.
            Some(state) if state.telemetry_seen.contains(key) => always,
            Some(state) => state.telemetry_seen.insert(key.clone()) || always,
            None => true,
        }
    }

    /// Hands `caller` a new ref on the completed entry `hit`.
    fn serve_hit(
        &mut self,
        caller: &Caller,
        hit: EntryId,
        requested: Option<crate::id::CallId>,
    ) -> Served<V> {
        let owner = caller.session.map_or(Owner::Caller, Owner::Session);
        let handle = self.add_ref(hit, owner);
        let entry = self
            .entries
            .get(hit.0)
            .expect("indexed entries are alive (INV-3)");
        let content_hit = requested.is_some();
        Served {
            handle,
            value: entry.value.clone(),
            id: requested.or_else(|| entry.result_id.clone()),
            hit: true,
            content_hit,
            detached: false,
            session_owned: owner != Owner::Caller,
            safe_to_persist: entry.safe_to_persist,
        }
    }

    /// Registers a new in-flight entry with `caller` as its first waiter.
    fn start(
        &mut self,
        caller: &Caller,
        entry: Entry<V>,
        resolver_key: String,
        namespace: Namespace,
        chain_key: String,
    ) -> RunOrder {
        let mode = entry.mode;
        let id = EntryId(self.entries.insert(entry));
        let entry = self.entries.get(id.0).expect("just inserted");
        for slot in entry.slots.iter() {
            self.idx.insert(slot, id);
        }
        let waiter = self.add_waiter(caller, id);
        // Sized once: a clone then a push would allocate twice on every miss.
        let mut chain = Vec::with_capacity(caller.chain.len() + 1);
        chain.extend_from_slice(&caller.chain);
        chain.push(ChainLink {
            instance: self.instance,
            namespace,
            key: chain_key,
        });
        RunOrder {
            entry: id,
            waiter,
            storage_key: resolver_key,
            chain,
            mode,
        }
    }

    /// Joins `entry`, tracing the path taken: `ongoing`, or `recursive` when
    /// the join would close a wait cycle (C-4b).
    fn join_traced(
        &mut self,
        caller: &Caller,
        entry: EntryId,
        mut trace: TraceLine,
        telemetry: bool,
    ) -> Begin<V> {
        trace.path = Path::Ongoing;
        let outcome = self.join(caller, entry).inspect_err(|_| {
            trace.path = Path::Recursive;
            trace.rule = "C-4b";
        });
        Begin {
            outcome,
            trace: Some(trace),
            telemetry,
        }
    }

    /// C-3.3 / K-2: joins an in-flight entry unless that closes a wait cycle (C-4b).
    fn join(&mut self, caller: &Caller, entry: EntryId) -> Result<Decision<V>, CallError> {
        if let Some(from) = self.inside(caller) {
            if self.reaches(entry, from) {
                let key = self
                    .entries
                    .get(entry.0)
                    .map(|e| e.storage_key.to_text())
                    .unwrap_or_default();
                return Err(CallError::Recursive { key });
            }
        }
        let waiter = self.add_waiter(caller, entry);
        Ok(Decision::Wait { entry, waiter })
    }

    /// The in-flight entry of this instance whose resolver is the caller.
    fn inside(&self, caller: &Caller) -> Option<EntryId> {
        caller
            .inside
            .filter(|(instance, e)| *instance == self.instance && self.entries.contains(e.0))
            .map(|(_, e)| e)
    }

    /// Whether `from`'s resolver, transitively, waits on `to` (C-4b). `from == to` counts.
    fn reaches(&self, from: EntryId, to: EntryId) -> bool {
        let mut stack = vec![from];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(e) = stack.pop() {
            if e == to {
                return true;
            }
            if !seen.insert(e) {
                continue;
            }
            if let Some(entry) = self.entries.get(e.0) {
                stack.extend(entry.waits_on.iter().copied());
            }
        }
        false
    }

    fn add_waiter(&mut self, caller: &Caller, entry: EntryId) -> WaiterId {
        let id = self.new_waiter_id();
        let from = self.inside(caller);
        if let Some(from) = from {
            if let Some(parent) = self.entries.get_mut(from.0) {
                parent.waits_on.push(entry);
            }
        }
        if let Some(e) = self.entries.get_mut(entry.0) {
            e.waiters.push(Waiter {
                id,
                session: caller.session,
                from,
            });
            if let Some(state) = caller.session.and_then(|s| self.sessions.get_mut(&s)) {
                state.waiting += 1;
            }
        }
        id
    }
}

fn rejected<V>(error: CallError) -> Begin<V> {
    Begin {
        outcome: Err(error),
        trace: None,
        telemetry: false,
    }
}
