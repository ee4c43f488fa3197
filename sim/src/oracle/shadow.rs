//! The shadow model (DESIGN principle 4): the harness's own record of who
//! holds which ref, which resolver runs, and which release hooks ran. The
//! hosts feed it through [`super::observe`]; the judges compare the real
//! cache against it.

use std::collections::BTreeMap;

use cache_core::machine::{EntryId, SessionId};
use tokio_util::sync::CancellationToken;

/// What the shadow knows about one session.
#[derive(Default, Debug)]
pub struct SessionShadow {
    /// Handles the session was given, by entry.
    pub handles: BTreeMap<EntryId, u32>,
    /// Calls of the session not yet answered.
    pub pending: u32,
    /// Of those, calls of TTL'd keys, by key.
    pub ttl_keys: BTreeMap<u64, u32>,
    /// For each TTL'd key, the engine clock at which the TTL of the last
    /// result the session was served of it ends (T-7 coverage).
    pub ttl_served_until: BTreeMap<u64, i64>,
    /// Still open.
    pub open: bool,
}

/// The singleflight class a resolver run belongs to (INV-4): at most one
/// live run per key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlightClass {
    /// `cache` or `change`.
    pub namespace: &'static str,
    /// The storage key the resolver sees.
    pub storage_key: String,
    /// The effective concurrency key, empty when the entry is registered in
    /// no in-flight index (such runs never deduplicate).
    pub concurrency_key: String,
}

/// One resolver run.
#[derive(Debug)]
pub struct RunShadow {
    /// Incarnation.
    pub inc: u64,
    /// Its singleflight class.
    pub key: FlightClass,
    /// Finished (simulated ms).
    pub finished_at: Option<u64>,
    /// Its cancellation token.
    pub cancel: CancellationToken,
    /// K-5: an abandoned change-cache init still counts as running.
    pub change: bool,
    /// The cache instance and in-flight entry the run resolves.
    pub entry: (u64, EntryId),
}

/// One successful resolver output and its release hook.
#[derive(Debug)]
pub struct HookShadow {
    /// Incarnation.
    pub inc: u64,
    /// Times the hook ran.
    pub runs: u32,
    /// The hook fails when it runs (C-12).
    pub fails: bool,
    /// It belongs to a change-cache result (else a call-cache one).
    pub change: bool,
}

/// The shadow model.
#[derive(Default, Debug)]
pub struct Shadow {
    /// Sessions by (incarnation, id).
    pub sessions: BTreeMap<(u64, SessionId), SessionShadow>,
    /// Refs owned by parent entries (C-11), by (incarnation, inner entry).
    pub nested: BTreeMap<(u64, EntryId), u32>,
    /// Resolver runs.
    pub runs: BTreeMap<u64, RunShadow>,
    /// Release hooks by output id.
    pub hooks: BTreeMap<u64, HookShadow>,
    /// Calls in flight on the engine, by incarnation.
    pub pending: BTreeMap<u64, u32>,
    /// What the TTL store was given (T-3, T-4).
    pub ttl: TtlShadow,
    /// The S-5 judge's record of calls and spans.
    pub spans: cache_core::checks::telemetry::SpanCheck,
    /// The last call number handed out for the S-5 judge.
    pub next_call: u64,
    /// Runs of failing release hooks, by (incarnation, change cache): what
    /// that cache's metrics must count (O-1, C-12).
    pub failed_hooks: BTreeMap<(u64, bool), u64>,
    /// The call cache's failing-hook runs when the session closing now
    /// began its close (S-7).
    pub failed_at_close: u64,
}

/// The TTL writes the shadow has seen.
#[derive(Default, Debug)]
pub struct TtlShadow {
    /// Keys some call resolver produced a result safe to persist for.
    pub safe_keys: std::collections::BTreeSet<u64>,
    /// The rows written, judged as they come (T-2, T-4).
    pub rows: cache_core::checks::ttl_rows::RowCheck,
    /// The first (incarnation, session) that ran under each TTL storage
    /// key (T-2(a)).
    pub fresh_owner: BTreeMap<String, (u64, SessionId)>,
    /// Call results by (incarnation, entry): the storage key their
    /// resolver ran under and whether they were safe to persist.
    pub outputs: BTreeMap<(u64, EntryId), (String, bool)>,
}

impl Shadow {
    /// When a run finished, if it has.
    pub fn finished_at(&self, run: u64) -> Option<u64> {
        self.runs.get(&run).and_then(|r| r.finished_at)
    }

    /// Whether session `sid` of incarnation `inc` is open.
    pub fn session_open(&self, inc: u64, sid: SessionId) -> bool {
        self.sessions.get(&(inc, sid)).is_some_and(|s| s.open)
    }

    /// Runs of incarnation `inc` still running.
    pub fn running(&self, inc: u64) -> impl Iterator<Item = (&u64, &RunShadow)> {
        self.runs
            .iter()
            .filter(move |(_, r)| r.inc == inc && r.finished_at.is_none())
    }
}
