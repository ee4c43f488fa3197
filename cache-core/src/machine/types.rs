//! The values that go into and come out of the state machine.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::arena::Key;
use crate::error::CallError;
use crate::id::CallId;
use crate::trace::TraceLine;
use crate::ttl::PreparedWrite;

/// An entry: one cached (or in-flight, or detached) result. Generation-checked.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct EntryId(pub(crate) Key);

/// One ref on an entry. Generation-checked, so a stale ref is an error, never a
/// second decrement (C-12).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RefId(pub(crate) Key);

/// A caller waiting for an in-flight call. Never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct WaiterId(pub u64);

/// A client session. Never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SessionId(pub u64);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}
impl fmt::Display for RefId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}
impl fmt::Display for WaiterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.0)
    }
}
impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Who holds a ref (C-11a: exactly one owner at a time).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Owner {
    /// A session; released when it closes (S-1).
    Session(SessionId),
    /// A parent entry that returned this ref as its result (C-11).
    Entry(EntryId),
    /// Whoever holds the [`Handle`]: a caller without a session, a resolver
    /// that has not yet returned it, or a detached result (C-2).
    Caller,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Session(s) => write!(f, "session {s}"),
            Owner::Entry(e) => write!(f, "entry {e}"),
            Owner::Caller => write!(f, "caller"),
        }
    }
}

/// Proof of one ref on an entry. Not `Clone`: releasing consumes it (C-12).
#[derive(PartialEq, Eq, Debug)]
pub struct Handle {
    pub(crate) ref_id: RefId,
    pub(crate) entry: EntryId,
    /// The cache instance that issued it: arena keys of two caches coincide,
    /// so without it a foreign handle would release a local ref (C-12).
    pub(crate) instance: u64,
}

impl Handle {
    /// The ref this handle stands for.
    pub fn ref_id(&self) -> RefId {
        self.ref_id
    }
    /// The entry the ref is on.
    pub fn entry(&self) -> EntryId {
        self.entry
    }
}

/// Code that must run exactly once when a result leaves the cache.
pub type ReleaseHook = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// What a resolver produced.
pub struct Resolved<V> {
    /// The ID the resolver actually returned; `None` means "the requested ID".
    /// Its recipe digest is the result call key; its content digest the content key (C-6).
    pub id: Option<CallId>,
    /// `None` is a successful "no value" result, cached like any other (C-10).
    pub value: Option<V>,
    /// Runs once when the result leaves the cache (or is discarded, C-5a / C-7).
    pub release: Option<ReleaseHook>,
    /// T-3: only results marked safe are persisted to the TTL store.
    pub safe_to_persist: bool,
    /// Refs from nested cached calls that this result takes over (C-11).
    pub nested: Vec<Handle>,
}

impl<V> Resolved<V> {
    /// A plain value result, reporting the requested ID, not safe to persist.
    pub fn value(value: V) -> Self {
        Self {
            id: None,
            value: Some(value),
            release: None,
            safe_to_persist: false,
            nested: Vec::new(),
        }
    }
    /// A successful result with no value (C-10).
    pub fn no_value() -> Self {
        Self {
            id: None,
            value: None,
            release: None,
            safe_to_persist: false,
            nested: Vec::new(),
        }
    }
    /// Sets the ID the resolver returned.
    pub fn with_id(mut self, id: CallId) -> Self {
        self.id = Some(id);
        self
    }
    /// Sets the release hook.
    pub fn with_release(
        mut self,
        hook: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) -> Self {
        self.release = Some(Box::new(hook));
        self
    }
    /// Marks the result safe (or not) to persist through the TTL store (T-3).
    pub fn safe_to_persist(mut self, safe: bool) -> Self {
        self.safe_to_persist = safe;
        self
    }
    /// Hands a nested call's ref to this result (C-11).
    pub fn with_nested(mut self, handle: Handle) -> Self {
        self.nested.push(handle);
        self
    }
}

impl<V> fmt::Debug for Resolved<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("id", &self.id.as_ref().map(|i| i.call_key()))
            .field("has_value", &self.value.is_some())
            .field("has_release", &self.release.is_some())
            .field("safe_to_persist", &self.safe_to_persist)
            .field("nested", &self.nested)
            .finish()
    }
}

/// Which index namespace a recursion-chain link belongs to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Namespace {
    /// Call storage keys.
    Call,
    /// Arbitrary (keyed singleflight) keys.
    Arbitrary,
}

/// One resolver the caller is running inside (C-4).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChainLink {
    /// The cache instance.
    pub instance: u64,
    /// Which index the key belongs to.
    pub namespace: Namespace,
    /// The storage key (or arbitrary key) being resolved.
    pub key: String,
}

/// Who is calling: the context part the state machine needs.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The caller's session, if any (refs it gets are owned by the session).
    pub session: Option<SessionId>,
    /// The resolvers this call is nested in, outermost first (C-4).
    pub chain: Vec<ChainLink>,
    /// The in-flight entry whose resolver is making this call, with its cache
    /// instance (C-4b wait-for edges).
    pub inside: Option<(u64, EntryId)>,
}

/// A concurrency key (C-3.3): calls with the same storage key and the same
/// non-empty concurrency key are one flight. The text is shared, so a key
/// cloned for every caller of a flight copies nothing, and the empty key
/// holds no allocation at all (no count that every thread would update).
///
/// ```
/// use cache_core::machine::ConcurrencyKey;
///
/// let key = ConcurrencyKey::from("c");
/// assert_eq!(&*key, "c");
/// assert!(ConcurrencyKey::from("").is_empty());
/// assert_eq!(ConcurrencyKey::from(""), ConcurrencyKey::default());
/// // Keys order as their text does: the in-flight index is looked up by a
/// // borrowed `&str` and must find the owned key where the text sorts.
/// for (a, b) in [("", "a"), ("a", "b"), ("b", "ab"), ("c", "c@s1")] {
///     let (ka, kb) = (ConcurrencyKey::from(a), ConcurrencyKey::from(b.to_string()));
///     assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} against {b:?}");
/// }
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConcurrencyKey(Option<Arc<str>>);

// The empty key is always `None`, so the derived order and equality are
// those of the text ("" sorts first, as `None` does).
impl From<&str> for ConcurrencyKey {
    fn from(text: &str) -> Self {
        Self((!text.is_empty()).then(|| Arc::from(text)))
    }
}

impl From<String> for ConcurrencyKey {
    fn from(text: String) -> Self {
        Self((!text.is_empty()).then(|| Arc::from(text)))
    }
}

impl From<Arc<str>> for ConcurrencyKey {
    fn from(text: Arc<str>) -> Self {
        Self((!text.is_empty()).then_some(text))
    }
}

impl Deref for ConcurrencyKey {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }
}

impl fmt::Debug for ConcurrencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for ConcurrencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

/// A call request (`key` in `get_or_init_call`).
#[derive(Clone, Debug, Default)]
pub struct CallRequest {
    /// The requested ID; `None` is rejected (C-1).
    pub id: Option<CallId>,
    /// The storage key chosen by the TTL rules (T-2); `None` means the call key.
    pub storage_key: Option<String>,
    /// Calls with the same (storage key, non-empty concurrency key) are
    /// deduplicated. Shared, not owned: every caller of one key holds the
    /// same text, and a clone of the request is a count update, not a copy.
    pub concurrency_key: ConcurrencyKey,
    /// C-2: run directly, store nothing.
    pub do_not_cache: bool,
    /// T-3: the write to make if the call succeeds, is stored and is safe to persist.
    pub ttl_write: Option<PreparedWrite>,
    /// S-5: emit telemetry on every call, not once per key per session.
    pub repeat_telemetry: bool,
    /// T-2: the storage key came from a live TTL row, so other sessions use
    /// it too. Such a call (as any whose key the TTL rules chose) joins only
    /// calls of its own session, and a result that is not safe to persist is
    /// not stored under the shared key (T-3).
    pub shared_storage: bool,
}

impl CallRequest {
    /// A request for `id` with no concurrency key, no TTL.
    pub fn new(id: CallId) -> Self {
        Self {
            id: Some(id),
            ..Self::default()
        }
    }
    /// Sets the concurrency key.
    pub fn concurrency_key(mut self, key: impl Into<ConcurrencyKey>) -> Self {
        self.concurrency_key = key.into();
        self
    }
    /// Sets `do_not_cache`.
    pub fn do_not_cache(mut self, yes: bool) -> Self {
        self.do_not_cache = yes;
        self
    }

    /// C-1: a key with no call ID or an empty storage key is refused
    /// before anything else happens, so this is checked before the
    /// session (S-2), the caller's cancellation or the TTL store.
    pub fn check_key(&self) -> Result<(), CallError> {
        if self.id.is_none() {
            return Err(CallError::InvalidKey("the key has no call ID".into()));
        }
        if self.storage_key.as_deref() == Some("") {
            return Err(CallError::InvalidKey("the storage key is empty".into()));
        }
        Ok(())
    }
}

/// C-1 for arbitrary entries: an empty key is refused before anything else
/// happens (K-1 keys them by a non-empty string).
pub fn check_arbitrary_key(key: &str) -> Result<(), CallError> {
    if key.is_empty() {
        return Err(CallError::InvalidKey(
            "the arbitrary key is empty (K-1)".into(),
        ));
    }
    Ok(())
}

/// How a resolver run was started; decides what happens when it completes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RunMode {
    /// A normal cached call.
    Cached,
    /// C-2: result is detached, never indexed.
    DoNotCache,
    /// S-4: runs as do-not-cache, then is inserted under the normal key.
    ForcedRetry,
    /// An arbitrary entry or change-cache init (section 4).
    Arbitrary,
}

impl RunMode {
    /// The kind word of an entry's label.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            RunMode::Cached => "call",
            RunMode::DoNotCache => "detached",
            RunMode::ForcedRetry => "retry",
            RunMode::Arbitrary => "arbitrary",
        }
    }
}

/// The decision for one caller, taken atomically (C-3).
#[must_use = "a decision must be carried out: a hit holds a ref, a wait or a run registered a waiter"]
#[derive(Debug)]
pub enum Decision<V> {
    /// A completed entry was found (storage or content hit).
    Hit(Served<V>),
    /// Joined an in-flight call; wait for [`Completion`] to name this waiter.
    Wait {
        /// The in-flight entry.
        entry: EntryId,
        /// This caller's waiter id.
        waiter: WaiterId,
    },
    /// Start the resolver; this caller is its first waiter.
    Run(RunOrder),
    /// K-5: an abandoned change-cache init on this key is still running; try
    /// again once `entry` has settled.
    Blocked {
        /// The abandoned init.
        entry: EntryId,
    },
}

/// What the caller needs to start a resolver.
#[must_use = "a run order names an in-flight entry that must be completed"]
#[derive(Clone, Debug)]
pub struct RunOrder {
    /// The new in-flight entry; pass it to `complete`.
    pub entry: EntryId,
    /// The caller's waiter id.
    pub waiter: WaiterId,
    /// The storage key the resolver sees in its context (a fresh unique one for C-2).
    pub storage_key: String,
    /// The chain the resolver runs inside: the caller's chain plus this call (C-4).
    pub chain: Vec<ChainLink>,
    /// Why it runs.
    pub mode: RunMode,
}

/// The outcome of `begin`: the decision, its trace line (O-2), and whether the
/// call should emit telemetry (S-5).
#[must_use = "a begin carries a decision that must be carried out"]
#[derive(Debug)]
pub struct Begin<V> {
    /// The decision, or the error that stopped the call before anything ran.
    pub outcome: Result<Decision<V>, CallError>,
    /// The O-2 line, when a decision was taken.
    pub trace: Option<TraceLine>,
    /// S-5: whether this call emits telemetry.
    pub telemetry: bool,
}

/// A result handed to one caller.
#[must_use = "a served result holds a ref that must be released"]
#[derive(Debug)]
pub struct Served<V> {
    /// The ref the caller now holds (owned by its session, or by the caller).
    pub handle: Handle,
    /// The value; `None` is "no value" (C-10).
    pub value: Option<V>,
    /// The ID reported to the caller: the stored one for a storage hit, the
    /// requested one for a content hit (C-8). `None` for arbitrary entries.
    pub id: Option<CallId>,
    /// The caller did not cause this result to be computed.
    pub hit: bool,
    /// Served through the content index (C-8).
    pub content_hit: bool,
    /// C-2: the result is not in the cache; releasing it runs its hook.
    pub detached: bool,
    /// The ref is owned by the caller's session (S-1): the session releases it.
    pub session_owned: bool,
    /// T-3: the resolver marked the result safe to persist through the TTL
    /// store (whether or not a TTL write was made for it).
    pub safe_to_persist: bool,
}

/// What `complete` decided, for the caller to carry out outside the lock.
#[must_use = "a completion carries results to deliver and release hooks to run"]
pub struct Completion<V> {
    /// One outcome per waiter that was still waiting, in arrival order.
    pub served: Vec<(WaiterId, Result<Served<V>, CallError>)>,
    /// Release hooks to run now (C-5a, C-7, S-3 releases).
    pub releases: Vec<PendingRelease>,
    /// T-3: the TTL write to make, when this result was stored and is safe.
    pub persist: Option<PreparedWrite>,
    /// The entry settled (left flight); K-5 blocked callers may retry.
    pub settled: EntryId,
}

/// What `leave` did.
#[must_use = "the last waiter leaving must cancel the resolver; a served waiter must release"]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Left {
    /// The waiter was removed; others remain, the resolver keeps running (C-5).
    Removed,
    /// The waiter was the last one: cancel the resolver (C-5, K-4).
    CancelResolver,
    /// The waiter was not waiting (already served, or unknown): if it was
    /// served, the caller must release what it was given.
    NotWaiting,
}

/// A release hook to run outside the lock (C-12).
#[must_use = "a release hook must run exactly once"]
pub struct PendingRelease {
    /// The entry it belonged to.
    pub entry: EntryId,
    /// What to call it in errors and logs; formatted only when needed.
    pub(crate) label: ReleaseLabel,
    /// The hook itself.
    pub hook: ReleaseHook,
}

/// The parts of a [`PendingRelease`]'s label, kept unformatted: a release
/// that succeeds never needs the text.
pub(crate) enum ReleaseLabel {
    /// An entry's kind and the part of its storage key that
    /// `Entry::label` prints: a close queues one per handle, so it is kept
    /// small (a 100k-handle close queues 100k of them).
    Entry(RunMode, super::key::ShortKey),
    /// A fixed label.
    Fixed(&'static str),
}

impl fmt::Display for ReleaseLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseLabel::Entry(mode, key) => write!(f, "{} {key}", mode.kind()),
            ReleaseLabel::Fixed(text) => f.write_str(text),
        }
    }
}

impl PendingRelease {
    /// A short label for errors and logs.
    pub fn label(&self) -> String {
        self.label.to_string()
    }

    /// Runs the hook; a failure names the entry.
    pub fn run(self) -> Result<(), CallError> {
        let Self { entry, label, hook } = self;
        hook().map_err(|e| CallError::ReleaseHook(format!("{label} ({entry}): {e}")))
    }
}

impl fmt::Debug for PendingRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PendingRelease({}, {})", self.entry, self.label)
    }
}

/// Runs every hook, returning the first error (all hooks run regardless).
#[must_use = "a release hook's error is returned to the releaser (C-12)"]
pub fn run_releases(releases: Vec<PendingRelease>) -> Result<(), CallError> {
    let mut first = Ok(());
    for release in releases {
        if let Err(e) = release.run() {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}
