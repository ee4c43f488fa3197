//! The pure state machine at the heart of the cache (DESIGN principle 1).
//!
//! Calls go in as events — [`CallCache::begin_call`], [`CallCache::leave`],
//! [`CallCache::complete`], [`CallCache::release`], [`CallCache::close_session`] —
//! and decisions come out as values: a hit, a join, an order to run a resolver,
//! release hooks to run. The machine owns no clock, no randomness, no task, no
//! lock and no socket, so one sequence of events always gives the same
//! decisions, byte for byte.
//!
//! ```
//! use cache_core::id::CallId;
//! use cache_core::machine::{CallCache, Caller, CallRequest, Decision, Resolved};
//!
//! let mut cache: CallCache<u32> = CallCache::new(1);
//! let id = CallId::new("answer");
//! let caller = Caller::default();
//!
//! // First call: a miss, so we are told to run the resolver.
//! let Ok(Decision::Run(order)) = cache.begin_call(&caller, CallRequest::new(id.clone())).outcome else { panic!() };
//! let done = cache.complete(order.entry, Ok(Resolved::value(42))).unwrap();
//! let (_, served) = done.served.into_iter().next().unwrap();
//! let first = served.unwrap();
//! assert!(!first.hit);
//!
//! // Second call: a storage hit on the same entry.
//! let Ok(Decision::Hit(second)) = cache.begin_call(&caller, CallRequest::new(id)).outcome else { panic!() };
//! assert!(second.hit);
//! assert_eq!(second.value, Some(42));
//!
//! // Release both refs: the entry leaves every index (C-12, INV-1).
//! cache.release(first.handle).unwrap();
//! cache.release(second.handle).unwrap();
//! assert_eq!(cache.entries(), 0);
//! cache.check_invariants().unwrap();
//! ```

pub(crate) mod arena;
mod begin;
mod complete;
mod cycles;
pub(crate) mod entry;
#[cfg(any(test, feature = "harness-hooks"))]
mod hooks;
mod index;
mod invariants;
mod key;
mod release;
mod report;
mod session;
mod touch;
mod types;

use std::collections::BTreeMap;

pub use index::Buckets;
pub use invariants::Violation;
pub use report::{FlightKey, LeakClass, LeakReport, SurvivingEntry};
pub use session::SessionClose;
pub use touch::Touched;
pub use types::*;

use crate::bugs::{Bug, Bugs};
use arena::Arena;
use entry::Entry;
use index::Indexes;
use key::IndexKey;

/// One ref and its owner (C-11a).
#[derive(Clone, Copy, Debug)]
struct RefRecord {
    entry: EntryId,
    owner: Owner,
}

/// What the machine remembers about an open session.
#[derive(Default)]
struct SessionState {
    /// Refs owned by the session (S-1).
    refs: session::SessionRefs,
    /// Waiter records of this session on in-flight calls: while it is 0,
    /// a close need not look through every entry for its calls in flight
    /// (S-1a), so closing stays O(its refs) however large the cache.
    waiting: usize,
    /// Call keys whose last call failed, with the error: the next call runs
    /// uncached (S-4). The error itself is only read by the
    /// `errors-cached-in-session` switch of the bug zoo.
    retry_uncached: BTreeMap<IndexKey, crate::error::CallError>,
    /// Call keys that already emitted telemetry (S-5). Only asked whether
    /// it holds a key, never walked, so a fixed-hasher set: dropping it when
    /// the session closes is one free, not one per key and node.
    telemetry_seen: index::KeySet,
}

/// The open sessions. Reads go through `Deref`; every change goes through
/// `get_mut`, `insert` or `remove`, which log the session while a harness
/// asks for a log of what changed (see [`CallCache::track_touched`]).
#[derive(Default)]
struct Sessions {
    map: BTreeMap<SessionId, SessionState>,
    log: touch::TouchLog<SessionId>,
}

impl std::ops::Deref for Sessions {
    type Target = BTreeMap<SessionId, SessionState>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Sessions {
    fn get_mut(&mut self, s: &SessionId) -> Option<&mut SessionState> {
        self.log.note(*s);
        self.map.get_mut(s)
    }

    fn insert(&mut self, s: SessionId, state: SessionState) {
        self.log.note(s);
        self.map.insert(s, state);
    }

    fn remove(&mut self, s: &SessionId) -> Option<SessionState> {
        self.log.note(*s);
        self.map.remove(s)
    }
}

/// The call cache's state machine, generic over the cached value type.
pub struct CallCache<V> {
    instance: u64,
    /// K-5: abandoned arbitrary inits keep their key busy until they finish.
    change_mode: bool,
    entries: Arena<Entry<V>>,
    refs: Arena<RefRecord>,
    idx: Indexes,
    sessions: Sessions,
    next_session: u64,
    next_waiter: u64,
    next_detached: u64,
    /// Bug-zoo switches; always empty without the feature `bug-zoo`.
    bugs: Bugs,
}

impl<V: Clone> CallCache<V> {
    /// A call cache. `instance` tells cache instances apart in recursion
    /// chains (C-4: the same key on another instance is not recursion).
    pub fn new(instance: u64) -> Self {
        Self {
            instance,
            change_mode: false,
            entries: Arena::default(),
            refs: Arena::default(),
            idx: Indexes::default(),
            sessions: Sessions::default(),
            next_session: 1,
            next_waiter: 1,
            next_detached: 1,
            bugs: Bugs::none(),
        }
    }

    /// A change cache: arbitrary entries whose abandoned inits still block
    /// their key until they finish (K-5).
    pub fn new_change_cache(instance: u64) -> Self {
        Self {
            change_mode: true,
            ..Self::new(instance)
        }
    }

    /// Turns on bug-zoo switches (feature `bug-zoo`; harness self-tests only).
    #[cfg(feature = "bug-zoo")]
    pub fn with_bugs(mut self, bugs: Bugs) -> Self {
        self.bugs = bugs;
        self
    }

    /// The bug-zoo switches that are on (none in a normal build).
    pub fn bugs(&self) -> Bugs {
        self.bugs
    }

    /// Whether the faulty path of `bug` is taken (never without `bug-zoo`).
    fn bug(&self, bug: Bug) -> bool {
        self.bugs.on(bug)
    }

    /// This instance's id.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// C-15: index entries (the same entry may count once per index).
    pub fn entries(&self) -> usize {
        self.idx.buckets().total()
    }

    /// The C-15 buckets.
    pub fn buckets(&self) -> Buckets {
        self.idx.buckets()
    }

    /// Entries alive in any state, indexed or not (in flight without a
    /// concurrency key, abandoned, detached). Zero at quiescence (INV-1).
    pub fn live_entries(&self) -> usize {
        self.entries.len()
    }

    /// Refs outstanding, whoever holds them.
    pub fn live_refs(&self) -> usize {
        self.refs.len()
    }

    /// The refcount of an entry, if it is alive.
    pub fn refcount(&self, entry: EntryId) -> Option<u32> {
        self.entries.get(entry.0).map(|e| e.refcount)
    }

    /// The completed call stored under `id`'s call key (C-3.1: the entry a
    /// storage hit on `id` would serve, when no TTL picked another storage
    /// key), if any. A read-only query: it takes no ref.
    pub fn completed_call(&self, id: &crate::id::CallId) -> Option<EntryId> {
        self.idx.storage(&IndexKey::digest(id.recipe_digest()))
    }

    /// The completed call stored under the storage key `storage_key` (a
    /// call key's text, or a session-scoped key a TTL picked, T-2), if any.
    pub fn completed_under(&self, storage_key: &str) -> Option<EntryId> {
        self.idx.storage(&IndexKey::from_text(storage_key))
    }

    /// The completed entry a lookup under `key` meets (C-3.1). Through a
    /// live TTL row's key (`shared`), only a result safe to persist or made
    /// by `session` (T-3): the row's key is a session's fresh key, under
    /// which that session may also hold a result it may not share.
    fn stored_for(
        &self,
        key: &IndexKey,
        shared: bool,
        session: Option<SessionId>,
    ) -> Option<EntryId> {
        if !shared {
            return self.idx.storage(key);
        }
        self.idx.storage_visible(key, |e| {
            self.entries
                .get(e.0)
                .is_some_and(|x| x.safe_to_persist || x.starter == session)
        })
    }

    /// How many callers wait on the in-flight `entry` (0 once abandoned);
    /// `None` when it is not in flight (completed, or gone). Unlike
    /// [`CallCache::waiters`] it allocates nothing.
    pub fn waiter_count(&self, entry: EntryId) -> Option<usize> {
        self.entries
            .get(entry.0)
            .filter(|e| e.phase != entry::Phase::Completed)
            .map(|e| e.waiters.len())
    }

    /// Whether an entry is still alive (in flight, abandoned, or held).
    pub fn contains(&self, entry: EntryId) -> bool {
        self.entries.contains(entry.0)
    }

    /// The owner of a ref, if it is live.
    pub fn owner(&self, ref_id: RefId) -> Option<Owner> {
        self.refs.get(ref_id.0).map(|r| r.owner)
    }

    /// Live refs naming `owner`, whether or not the owner records them: a
    /// closed session must have none (INV-9), however they got there.
    pub fn refs_owned_by(&self, owner: Owner) -> usize {
        self.refs.iter().filter(|(_, r)| r.owner == owner).count()
    }

    /// The waiters of an in-flight entry, in arrival order.
    pub fn waiters(&self, entry: EntryId) -> Vec<WaiterId> {
        self.entries
            .get(entry.0)
            .map(|e| e.waiters.iter().map(|w| w.id).collect())
            .unwrap_or_default()
    }

    /// The open sessions a call's resolver may act for (C-5): those with a
    /// caller waiting on the in-flight `entry`, directly or through the
    /// resolvers whose nested calls wait on it, in id order, each once.
    /// Never a closed session: a shared call that needs a client (to ask it
    /// for something, or to charge it) uses one of these, so the session
    /// that started it may close while the others go on being served.
    /// Empty once every waiter has left, or when only bare callers wait.
    pub fn sessions_waiting_on(&self, entry: EntryId) -> Vec<SessionId> {
        let mut found = std::collections::BTreeSet::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = vec![entry];
        while let Some(e) = todo.pop() {
            if !seen.insert(e) {
                continue;
            }
            let Some(x) = self.entries.get(e.0) else {
                continue;
            };
            if x.phase == entry::Phase::Completed {
                continue;
            }
            for w in &x.waiters {
                match (w.session, w.from) {
                    (Some(s), _) if self.session_is_open(s) => {
                        found.insert(s);
                    }
                    (None, Some(parent)) => todo.push(parent),
                    _ => {}
                }
            }
        }
        found.into_iter().collect()
    }

    fn new_waiter_id(&mut self) -> WaiterId {
        let id = WaiterId(self.next_waiter);
        self.next_waiter += 1;
        id
    }

    /// Adds a ref on `entry` owned by `owner`, recording it with the owner.
    fn add_ref(&mut self, entry: EntryId, owner: Owner) -> Handle {
        let ref_id = RefId(self.refs.insert(RefRecord { entry, owner }));
        if let Some(e) = self.entries.get_mut(entry.0) {
            e.refcount += 1;
        }
        self.record_owner(ref_id, owner);
        Handle {
            ref_id,
            entry,
            instance: self.instance,
        }
    }

    fn record_owner(&mut self, ref_id: RefId, owner: Owner) {
        match owner {
            Owner::Session(s) => {
                if let Some(state) = self.sessions.get_mut(&s) {
                    state.refs.insert(ref_id);
                }
            }
            Owner::Entry(parent) => {
                if let Some(p) = self.entries.get_mut(parent.0) {
                    p.owned_refs.push(ref_id);
                }
            }
            Owner::Caller => {}
        }
    }

    fn forget_owner(&mut self, ref_id: RefId, owner: Owner) {
        match owner {
            Owner::Session(s) => {
                if let Some(state) = self.sessions.get_mut(&s) {
                    state.refs.remove(ref_id);
                }
            }
            Owner::Entry(parent) => {
                if let Some(p) = self.entries.get_mut(parent.0) {
                    p.owned_refs.retain(|r| *r != ref_id);
                }
            }
            Owner::Caller => {}
        }
    }

    /// Whether `handle` names a live ref of this cache instance (C-12).
    fn is_live(&self, handle: &Handle) -> bool {
        handle.instance == self.instance
            && self
                .refs
                .get(handle.ref_id.0)
                .is_some_and(|r| r.entry == handle.entry)
    }

    /// C-11a: hands a ref to a new owner, removing it from the old one.
    fn transfer(&mut self, ref_id: RefId, new_owner: Owner) {
        let Some(old) = self.refs.get(ref_id.0).map(|r| r.owner) else {
            return;
        };
        self.forget_owner(ref_id, old);
        if let Some(r) = self.refs.get_mut(ref_id.0) {
            r.owner = new_owner;
        }
        self.record_owner(ref_id, new_owner);
    }
}
