//! The driver on the pure state machine, with its shadow model: who holds
//! which ref, which resolvers run and who waits on them, what every response
//! must be.

use std::collections::{BTreeMap, BTreeSet};

use super::ops::*;
use super::shadow::{check_query_answers, hook_fails, ref_counts, HookLedger, ShadowIndex};
use super::{ensure, Failure, Stats};
use crate::bugs::Bugs;
use crate::checks::accounting::{
    check_counts, check_entry_slots, check_invalid_key, check_label, check_release,
    check_report_text, entry_label, InvalidKeyCall,
};
use crate::checks::answers::{check_acting_sessions, judge, Answered, Standing};
use crate::checks::telemetry::{Answer, CallFacts, SpanCheck};
use crate::checks::ttl_rows::{RowCheck, RowWrite};
use crate::checks::ttl_served::{self, ServedCall, TtlResult};
use crate::error::CallError;
use crate::id::CallId;
use crate::machine::{
    run_releases, Begin, Buckets, CallCache, CallRequest, Caller, ChainLink, Decision, EntryId,
    FlightKey, Handle, Left, Namespace, PendingRelease, RefId, Resolved, RunMode, SessionId,
    Touched, Violation, WaiterId,
};
use crate::ttl::{
    choose_storage_key, gc_all, MemoryTtlStore, PreparedWrite, StorageKeyChoice, StoreFaults,
    TtlStore,
};

/// Every how many full checks the leak report's text is checked too (and
/// after the last step): printing the index and comparing it with the
/// report was a fifth of a driver run's instructions when done at every
/// full check, and a wrong text is still found, a few checks late.
const TEXT_CHECK_EVERY: usize = 4;

/// How the cache labels the hook of a result it rejected (C-12).
const REJECTED_LABEL: &str = "rejected result";

/// The cache instance the driver uses (recursion chains name it, C-4).
const INSTANCE: u64 = 7;

/// Another cache instance whose resolvers call this one (`Who::Foreign`).
const OTHER_INSTANCE: u64 = 8;
/// At most this many sessions open at once.
const MAX_OPEN: usize = 4;
/// Every this many steps the driver runs the full check (the whole cache
/// against the whole model) instead of the check of what the step touched;
/// it also runs after the last step. The full check finds what no step
/// recorded (the C-15 bucket totals, damage made around the cache's tracked
/// doors) at most this many steps late, and still as a failure of the input.
pub(crate) const FULL_CHECK_EVERY: usize = 16;

/// Applies `input` to a fresh [`CallCache`], checking after every operation:
/// the cache's invariants (INV-3, INV-10, C-11a, C-4b) and refcounts against
/// the shadow model (INV-2) for every entry, ref and session the operation
/// touched (`check_touched`), with the full `check_invariants()` and every
/// refcount every 16 steps (`FULL_CHECK_EVERY`) and at the end; every release
/// hook ran at most once and exactly when its entry went (INV-10, C-12),
/// every decision and served value against the model (C-3, C-4, INV-4,
/// INV-5, INV-6, S-2, S-4, K-5), TTL hits (INV-8, T-3, T-7), session
/// closes (S-1, S-1a, INV-9) and, at each full check, the read-only
/// queries oracles judge through (`flight_key`, `completed_under`). At the
/// end every session is closed, every resolver completed and every handle
/// released, and INV-1 must hold.
pub fn run_machine(input: &MachineInput) -> Result<Stats, Failure> {
    run_machine_with(input, Bugs::none())
}

/// [`run_machine`] on a cache with the bug-zoo switches `bugs` on (inert
/// without the `bug-zoo` feature): how the fuzz targets show what they
/// catch.
pub fn run_machine_with(input: &MachineInput, bugs: Bugs) -> Result<Stats, Failure> {
    run_checked(input, bugs, Checks::default(), &mut |_, _| {})
}

/// Which checks run after each step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checks {
    /// The full check every this many steps (and after the last).
    pub full_every: usize,
    /// The check of what each step touched, on the other steps.
    pub incremental: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            full_every: FULL_CHECK_EVERY,
            incremental: true,
        }
    }
}

/// [`run_machine_with`] with the given `checks`, and `plant` called on the
/// cache after each step's operation, before its check (with the step's
/// index): how the tests show which check catches what.
pub(crate) fn run_checked(
    input: &MachineInput,
    bugs: Bugs,
    checks: Checks,
    plant: &mut dyn FnMut(usize, &mut CallCache<u32>),
) -> Result<Stats, Failure> {
    let mut d = Driver::new(input.change_cache, bugs);
    d.full_every = checks.full_every.max(1);
    d.incremental = checks.incremental;
    for (i, op) in input.ops.iter().enumerate() {
        d.step = i;
        d.op = Some(op.clone());
        d.apply(op)?;
        plant(i, &mut d.cache);
        d.check_step()?;
    }
    d.step = input.ops.len();
    d.op = None;
    d.quiesce()?;
    d.stats.steps = input.ops.len();
    d.stats.failed_hooks = d.hooks.failed_runs();
    Ok(d.stats)
}

/// Who a waiter is: a top-level caller (with its session, if any) or a
/// resolver making a nested call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Origin {
    Top(Option<SessionId>),
    Inner(EntryId),
}

/// What the model knows about a TTL'd run (T-2).
#[derive(Clone, Debug)]
struct TtlRun {
    /// The storage key came from a live row, shared by every session.
    shared: bool,
    /// Until when the chosen key may serve results (T-7).
    valid_until: i64,
    /// The write prepared for a fresh key.
    write: Option<PreparedWrite>,
    /// The key's TTL, ms.
    ttl_ms: i64,
}

/// A resolver the model is running (in flight, or abandoned: no waiters).
struct Running {
    chain: Vec<ChainLink>,
    waiters: Vec<(WaiterId, Origin)>,
    /// Refs the resolver took from nested calls: handed in on success.
    inner: Vec<Handle>,
    mode: RunMode,
    /// Storage key (or arbitrary key).
    key: String,
    call_key: String,
    /// The concurrency key the machine dedupes on.
    conc: String,
    starter: Origin,
    /// The requested ID's index in [`call_ids`] (see `IdKeys`).
    requested_ix: Option<usize>,
    ttl: Option<TtlRun>,
}

impl Running {
    fn arbitrary(&self) -> bool {
        self.mode == RunMode::Arbitrary
    }
    fn abandoned(&self) -> bool {
        self.waiters.is_empty()
    }
    /// The singleflight key the cache must have this run under while it is
    /// in flight (C-3.3, K-2): an arbitrary init under its key, a cached
    /// call with a concurrency key under its storage and concurrency keys;
    /// nothing when nobody may join it, or once abandoned (C-9), except a
    /// change-cache init, which counts as in flight until it finishes (K-5).
    fn flight_key(&self, change: bool) -> Option<FlightKey> {
        match self.mode {
            RunMode::Arbitrary if change || !self.abandoned() => Some(FlightKey::Arbitrary {
                key: self.key.clone(),
            }),
            RunMode::Cached if !self.conc.is_empty() && !self.abandoned() => {
                Some(FlightKey::Call {
                    storage_key: self.key.clone(),
                    concurrency_key: self.conc.clone(),
                })
            }
            _ => None,
        }
    }
}

/// A successful result, by entry.
struct Stored {
    value: Option<u32>,
    /// The ID it reports on a storage hit (INV-5).
    id: Option<CallId>,
    /// Keys a storage hit may come through: storage key and result call key.
    keys: Vec<String>,
    content_key: Option<String>,
    /// Made by a TTL'd call: (its caller's session, valid until, safe).
    ttl: Option<(Option<SessionId>, i64, bool)>,
    /// The step it was made at (T-7: only what existed before a call is
    /// reused by it).
    made_at: u64,
}

/// A handle a top-level caller holds; `session` is set when the session owns it.
struct Held {
    handle: Handle,
    session: Option<SessionId>,
}

/// One call's request, as the model needs it to judge the decision.
struct Req {
    origin: Origin,
    caller: Caller,
    key: String,
    call_key: String,
    conc: String,
    dnc: bool,
    /// S-5: asks for repeated telemetry.
    repeat: bool,
    arbitrary: bool,
    requested: Option<CallId>,
    requested_ix: Option<usize>,
    ttl: Option<TtlRun>,
}

/// The call key and content key of each of [`call_ids`], as text: made
/// once per process, so that no step formats a digest (a call key is 64 hex
/// digits through the formatter; it was 3 % of a corpus replay).
struct IdKeys(Vec<(String, Option<String>)>);

impl IdKeys {
    fn get() -> &'static IdKeys {
        static KEYS: std::sync::OnceLock<IdKeys> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            IdKeys(
                call_ids()
                    .iter()
                    .map(|id| (id.call_key(), id.content_key()))
                    .collect(),
            )
        })
    }

    fn call_key(&self, ix: usize) -> &str {
        &self.0[ix].0
    }

    fn content_key(&self, ix: usize) -> Option<&str> {
        self.0[ix].1.as_deref()
    }
}

struct Driver {
    step: usize,
    op: Option<Op>,
    cache: CallCache<u32>,
    change: bool,
    ids: Vec<CallId>,
    held: Vec<Held>,
    /// Handles whose session released them: releasing them is an error.
    stale: Vec<Handle>,
    /// (entry the ref is on, parent entry owning it) (C-11).
    nested: Vec<(EntryId, EntryId)>,
    running: BTreeMap<EntryId, Running>,
    results: BTreeMap<EntryId, Stored>,
    open: Vec<SessionId>,
    closed: Vec<SessionId>,
    /// S-4: (session, call key) whose next call must run as a forced retry.
    retry: BTreeSet<(SessionId, String)>,
    hooks: HookLedger,
    /// Where each completed, cached result is indexed (C-6).
    index: ShadowIndex,
    /// The label each live entry must carry (C-12, O-3): its run mode and
    /// storage (or arbitrary) key as begun.
    labels: BTreeMap<EntryId, String>,
    /// Entries whose result the cache rejected: their hook runs labelled
    /// as a rejected result.
    rejected: BTreeSet<EntryId>,
    store: MemoryTtlStore,
    now: i64,
    /// Latest expiration ever written for a storage key (T-7).
    row_expiry: BTreeMap<String, i64>,
    /// The rows written, judged as they come (T-2, T-4).
    rows: RowCheck,
    stats: Stats,
    /// The S-5 judge. The machine says whether a decision emits telemetry;
    /// a span's `cached` is "no run", as the facade sends it.
    spans: SpanCheck,
    /// The judge's call number of each waiter, until it is served.
    span_calls: BTreeMap<WaiterId, u64>,
    /// The judge's number for each key, in the order first seen.
    span_keys: BTreeMap<(bool, String), u64>,
    next_call: u64,
    /// What the cache changed in the step being checked (reused buffers).
    touched: Touched,
    /// The handles the step handed to the model (entry, ref): checked with
    /// the entries the cache touched, so a handle without a ref is seen too,
    /// and each must be in the touch log (see `check_log_complete`).
    moved: Vec<(EntryId, RefId)>,
    /// Steps since the last full check.
    since_full: usize,
    /// Full checks until the next one reads the leak report's text
    /// (`TEXT_CHECK_EVERY`; the last check always does).
    until_text: usize,
    full_every: usize,
    incremental: bool,
}

impl Driver {
    fn new(change: bool, bugs: Bugs) -> Self {
        Driver {
            step: 0,
            op: None,
            cache: if change {
                CallCache::new_change_cache(INSTANCE)
            } else {
                CallCache::new(INSTANCE)
            }
            .with_bugs(bugs),
            change,
            ids: call_ids(),
            held: Vec::new(),
            stale: Vec::new(),
            nested: Vec::new(),
            running: BTreeMap::new(),
            results: BTreeMap::new(),
            open: Vec::new(),
            closed: Vec::new(),
            retry: BTreeSet::new(),
            hooks: HookLedger::default(),
            index: ShadowIndex::default(),
            labels: BTreeMap::new(),
            rejected: BTreeSet::new(),
            store: MemoryTtlStore::new(),
            now: 1_000_000,
            row_expiry: BTreeMap::new(),
            rows: RowCheck::new(),
            stats: Stats::default(),
            spans: SpanCheck::new(),
            span_calls: BTreeMap::new(),
            span_keys: BTreeMap::new(),
            next_call: 0,
            touched: Touched::default(),
            moved: Vec::new(),
            since_full: 0,
            until_text: 0,
            full_every: FULL_CHECK_EVERY,
            incremental: true,
        }
        .tracking()
    }

    /// The cache logs what each step changes (see `check_step`).
    fn tracking(mut self) -> Self {
        self.cache.track_touched();
        self
    }

    fn fail(&self, invariant: &'static str, detail: String) -> Failure {
        let op = self.op.as_ref().map(|o| o as &dyn std::fmt::Debug);
        Failure::at(invariant, self.step, detail, op, &self.cache.leak_report())
    }

    /// Runs the hooks a release handed back, as the facade does: every one,
    /// the first error returned. It must be an error exactly when one of the
    /// driver's failing hooks ran (C-12).
    fn run_hooks(&mut self, releases: Vec<PendingRelease>) -> Result<(), Failure> {
        // A hook runs when its entry leaves the cache (INV-10), named by
        // the label an error would carry (C-12).
        for r in &releases {
            self.index.remove(r.entry);
            let want = if self.rejected.remove(&r.entry) {
                Some(REJECTED_LABEL.to_string())
            } else {
                self.labels.remove(&r.entry)
            };
            if let Some(want) = want {
                check_label(r.entry, &r.label(), &want).map_err(|v| self.fail(v.rule, v.detail))?;
            }
        }
        let before = self.hooks.failed_runs();
        let result = run_releases(releases);
        let failed = self.hooks.failed_runs() - before;
        check_release(&result, failed).map_err(|v| self.fail(v.rule, v.detail))
    }

    // ---- the shadow model ----

    /// The check after one step: what it touched, or everything every
    /// `full_every` steps.
    fn check_step(&mut self) -> Result<(), Failure> {
        self.since_full += 1;
        if self.since_full >= self.full_every {
            return self.check();
        }
        self.cache.take_touched(&mut self.touched);
        if !self.incremental {
            self.moved.clear();
            return Ok(());
        }
        self.cache
            .check_touched(&self.touched)
            .map_err(|v| self.fail(v.rule, v.detail))?;
        let moved = std::mem::take(&mut self.moved);
        let logged = self.check_log_complete(&moved);
        let mut entries = self
            .touched
            .entries
            .iter()
            .chain(moved.iter().map(|(e, _)| e));
        let checked = entries.try_for_each(|&e| {
            let want = self.model_refs(e, 0);
            self.cache.check_refcount(e, want)?;
            match self.running.get(&e) {
                Some(_) if !self.cache.contains(e) => Err(Violation {
                    rule: "INV-7",
                    detail: format!("running {e} is gone"),
                }),
                Some(r)
                    if !self
                        .cache
                        .waiters(e)
                        .iter()
                        .eq(r.waiters.iter().map(|(w, _)| w)) =>
                {
                    Err(Violation {
                        rule: "INV-7",
                        detail: format!(
                            "waiters of {e}: machine {:?}, model {:?}",
                            self.cache.waiters(e),
                            r.waiters.iter().map(|(w, _)| *w).collect::<Vec<_>>()
                        ),
                    })
                }
                _ => Ok(()),
            }
        });
        self.moved = moved;
        self.moved.clear();
        logged
            .and(checked)
            .map_err(|v| self.fail(v.rule, v.detail))?;
        // INV-7 for every resolver the model runs, touched or not, by count
        // (an untouched entry's waiters cannot have changed order). Cheap,
        // and each step keeps a walk as long as the number of resolvers
        // running: coverage the fuzzer steers by. Without it the fuzzer
        // needed about twice as many executions to find
        // `ongoing-delete-no-identity` (an abandoned run beside a newer one).
        for (e, r) in &self.running {
            let count = self.cache.waiter_count(*e);
            ensure!(
                self,
                count == Some(r.waiters.len()),
                "INV-7",
                "running {e}: the machine counts {count:?} waiters, the model {}",
                r.waiters.len()
            );
        }
        self.hooks
            .check(|e| self.cache.contains(e))
            .map_err(|(rule, detail)| self.fail(rule, detail))
    }

    /// The touch log is complete for what the model saw change: a handle
    /// the step handed out is a new ref on its entry (INV-2), so both must
    /// be logged, or the step's incremental check never looks at them and
    /// damage there waits for the next full check (or, undone within the
    /// step, is never seen).
    fn check_log_complete(&self, moved: &[(EntryId, RefId)]) -> Result<(), Violation> {
        let logged = |e: &EntryId, r: &RefId| {
            self.touched.entries.binary_search(e).is_ok()
                && self.touched.refs.binary_search(r).is_ok()
        };
        match moved.iter().find(|(e, r)| !logged(e, r)) {
            None => Ok(()),
            Some((e, r)) => Err(Violation {
                rule: "INV-2",
                detail: format!(
                    "the step handed out {r} on {e}, but the touch log lists entries {:?} \
                     and refs {:?}: the incremental check would not look at them",
                    self.touched.entries, self.touched.refs
                ),
            }),
        }
    }

    /// The refs the model holds on `e` (INV-2), as `ref_counts` counts them:
    /// direct handles, plus nested refs whose parent the model still holds.
    fn model_refs(&self, e: EntryId, depth: usize) -> u32 {
        let direct = self.held.iter().filter(|h| h.handle.entry() == e).count()
            + self
                .running
                .values()
                .flat_map(|r| &r.inner)
                .filter(|h| h.entry() == e)
                .count();
        // Nested refs form a forest (an entry cannot own a ref on itself or
        // an ancestor, C-11a), so the depth is bounded; the guard only keeps
        // a broken model from recursing forever.
        let nested = self
            .nested
            .iter()
            .filter(|(on, parent)| {
                *on == e && depth < 64 && self.model_refs(*parent, depth + 1) > 0
            })
            .count();
        (direct + nested) as u32
    }

    /// The full check: the whole cache against the whole model.
    fn check(&mut self) -> Result<(), Failure> {
        self.since_full = 0;
        // What the steps since the last check touched is covered by this one.
        self.cache.take_touched(&mut self.touched);
        self.moved.clear();
        self.cache
            .check_invariants()
            .map_err(|v| self.fail(v.rule, v.detail))?;
        let direct = self
            .held
            .iter()
            .map(|h| h.handle.entry())
            .chain(
                self.running
                    .values()
                    .flat_map(|r| r.inner.iter().map(|h| h.entry())),
            )
            .collect::<Vec<_>>();
        ensure!(
            self,
            self.cache.open_sessions() == self.open.len(),
            "S-6",
            "the cache counts {} open sessions, {} are open",
            self.cache.open_sessions(),
            self.open.len()
        );
        // Entries whose run failed leave without a hook: their labels go
        // here.
        let cache = &self.cache;
        self.labels.retain(|e, _| cache.contains(*e));
        self.rejected.retain(|e| cache.contains(*e));
        let text_due = self.until_text == 0;
        self.until_text = match text_due {
            true => TEXT_CHECK_EVERY - 1,
            false => self.until_text - 1,
        };
        let c = &self.cache;
        let report = c.leak_report();
        check_counts(&c.buckets(), c.entries(), &report, c.live_entries())
            .and_then(|()| check_entry_slots(&report, |e| c.slots(e)))
            .and_then(|()| match text_due {
                true => check_report_text(&report, &c.index_lines()),
                false => Ok(()),
            })
            .and_then(|()| {
                report
                    .entries
                    .iter()
                    .try_for_each(|e| match self.labels.get(&e.entry) {
                        Some(want) => check_label(e.entry, &e.label, want),
                        None => Ok(()),
                    })
            })
            .map_err(|v| self.fail(v.rule, v.detail))?;
        let shadow = ref_counts(direct.iter().copied(), &mut self.nested);
        self.cache
            .check_refcounts(&shadow)
            .map_err(|v| self.fail(v.rule, v.detail))?;
        check_query_answers(
            self.running
                .iter()
                .map(|(e, r)| (*e, r.flight_key(self.change))),
            &self.index,
            |e| self.cache.flight_key(e),
            |k| self.cache.completed_under(k),
        )
        .map_err(|(rule, detail)| self.fail(rule, detail))?;
        self.hooks
            .check(|e| self.cache.contains(e))
            .map_err(|(rule, detail)| self.fail(rule, detail))?;
        for (e, r) in &self.running {
            ensure!(
                self,
                self.cache.contains(*e),
                "INV-7",
                "running {e} is gone"
            );
            let want: Vec<WaiterId> = r.waiters.iter().map(|(w, _)| *w).collect();
            ensure!(
                self,
                self.cache.waiters(*e) == want,
                "INV-7",
                "waiters of {e}: machine {:?}, model {want:?}",
                self.cache.waiters(*e)
            );
        }
        Ok(())
    }

    /// Whether `from`'s resolver, through the model's wait edges, waits on
    /// `to` (C-4b). An edge P → R exists while R has a waiter from inside P.
    fn reaches(&self, from: EntryId, to: EntryId) -> bool {
        let mut stack = vec![from];
        let mut seen = BTreeSet::new();
        while let Some(e) = stack.pop() {
            if e == to {
                return true;
            }
            if !seen.insert(e) {
                continue;
            }
            for (r, run) in &self.running {
                if run.waiters.iter().any(|(_, o)| *o == Origin::Inner(e)) {
                    stack.push(*r);
                }
            }
        }
        false
    }

    /// The in-flight call a request would join, if any (C-3.3, K-2): a run
    /// registered under the request's singleflight key, not abandoned (an
    /// abandoned change-cache init blocks instead, K-5).
    fn joinable(&self, key: &str, conc: &str, arbitrary: bool) -> Option<EntryId> {
        let wanted = match arbitrary {
            true => FlightKey::Arbitrary { key: key.into() },
            false => FlightKey::Call {
                storage_key: key.into(),
                concurrency_key: conc.into(),
            },
        };
        self.running
            .iter()
            .find(|(_, r)| r.flight_key(false).as_ref() == Some(&wanted))
            .map(|(e, _)| *e)
    }

    fn route(&mut self, origin: Origin, handle: Handle, session_owned: bool) {
        self.moved.push((handle.entry(), handle.ref_id()));
        match origin {
            Origin::Top(session) => self.held.push(Held {
                handle,
                session: if session_owned { session } else { None },
            }),
            Origin::Inner(parent) => match self.running.get_mut(&parent) {
                Some(r) => r.inner.push(handle),
                None => self.held.push(Held {
                    handle,
                    session: None,
                }),
            },
        }
    }

    fn is_open(&self, origin: Origin) -> bool {
        match origin {
            Origin::Top(Some(s)) => self.open.contains(&s),
            _ => true,
        }
    }

    // ---- operations ----

    fn apply(&mut self, op: &Op) -> Result<(), Failure> {
        match *op {
            Op::Call {
                who,
                id,
                conc,
                dnc,
                ttl,
            } => self.call(who, id, conc, dnc, ttl),
            Op::Arbitrary { who, key } => self.arbitrary(who, key),
            Op::Complete {
                which,
                outcome,
                returned_id,
                safe,
                stale_nested,
            } => {
                if self.running.is_empty() {
                    return self.complete_settled(which);
                }
                let i = usize::from(which) % self.running.len();
                let e = *self.running.keys().nth(i).expect("in range");
                self.complete(e, outcome, returned_id, safe, stale_nested)
            }
            Op::Leave { which, waiter } => self.leave(which, waiter),
            Op::LeaveUnknown { which } => {
                if self.running.is_empty() {
                    return Ok(());
                }
                let i = usize::from(which) % self.running.len();
                let e = *self.running.keys().nth(i).expect("in range");
                let left = self.cache.leave(e, WaiterId(u64::MAX));
                ensure!(
                    self,
                    left == Left::NotWaiting,
                    "C-5",
                    "an unknown waiter left {e}: {left:?}"
                );
                Ok(())
            }
            Op::Release { which } => {
                if self.held.is_empty() {
                    return Ok(());
                }
                let h = self.held.swap_remove(usize::from(which) % self.held.len());
                let releases = self
                    .cache
                    .release(h.handle)
                    .map_err(|e| self.fail("C-12", format!("release of a live handle: {e}")))?;
                self.run_hooks(releases)
            }
            Op::ReleaseStale => {
                if let Some(h) = self.stale.pop() {
                    self.stats.stale_releases += 1;
                    let r = self.cache.release(h);
                    ensure!(
                        self,
                        matches!(r, Err(CallError::UnknownHandle(_))),
                        "C-12",
                        "a handle its session released was released again: {:?}",
                        r.map(|v| v.len())
                    );
                }
                Ok(())
            }
            Op::ReleaseInner { which } => {
                let with_inner: Vec<EntryId> = self
                    .running
                    .iter()
                    .filter(|(_, r)| !r.inner.is_empty())
                    .map(|(e, _)| *e)
                    .collect();
                if with_inner.is_empty() {
                    return Ok(());
                }
                let e = with_inner[usize::from(which) % with_inner.len()];
                let h = self
                    .running
                    .get_mut(&e)
                    .and_then(|r| r.inner.pop())
                    .expect("has inner");
                let releases = self
                    .cache
                    .release(h)
                    .map_err(|e| self.fail("C-12", format!("inner release: {e}")))?;
                self.run_hooks(releases)
            }
            Op::Open => {
                if self.open.len() < MAX_OPEN {
                    let s = self.cache.open_session();
                    self.open.push(s);
                }
                Ok(())
            }
            Op::Close { which } => {
                if self.open.is_empty() {
                    return Ok(());
                }
                let s = self.open[usize::from(which) % self.open.len()];
                self.close(s)
            }
            Op::Advance { ms } => {
                self.now += i64::from(ms);
                Ok(())
            }
            Op::StoreFaults {
                fail_next,
                fail_all,
            } => {
                self.store.set_faults(StoreFaults {
                    fail_next: u32::from(fail_next % 4),
                    fail_all,
                    delay_ms: 0,
                });
                Ok(())
            }
            Op::Gc => {
                // A failure is an injected fault; GC is retried by the next op.
                let _ = gc_all(&self.store, self.now);
                Ok(())
            }
        }
    }

    /// With nothing in flight, a completion for an entry that already
    /// settled (held or gone) is refused and changes nothing: a resolver
    /// completes once, and a late or repeated completion must not overwrite
    /// a stored result (C-6, INV-5).
    fn complete_settled(&mut self, which: u8) -> Result<(), Failure> {
        if self.results.is_empty() {
            return Ok(());
        }
        let i = usize::from(which) % self.results.len();
        let e = *self.results.keys().nth(i).expect("in range");
        self.stats.late_completions += 1;
        let entries = self.cache.entries();
        let done = self.cache.complete(e, Ok(Resolved::value(u32::MAX)));
        ensure!(
            self,
            matches!(done, Err(CallError::Unknown { .. })) && self.cache.entries() == entries,
            "C-6",
            "a second completion of {e} was taken: {:?}",
            done.map(|d| d.served.len())
        );
        Ok(())
    }

    /// C-1: a call with no call ID (even `conc`) or an empty storage key
    /// (odd) is refused before anything happens.
    fn invalid_call(&mut self, caller: &Caller, conc: u8) -> Result<(), Failure> {
        self.stats.invalid_keys += 1;
        let mut req = CallRequest::new(self.ids[0].clone());
        if conc % 2 == 0 {
            req.id = None;
        } else {
            req.storage_key = Some(String::new());
        }
        let entries_before = self.cache.entries();
        let begin = self.cache.begin_call(caller, req);
        let answer: Result<(), CallError> = begin.outcome.map(|_| ());
        if caller.session.is_some_and(|s| self.closed.contains(&s)) {
            self.stats.closed_invalid_keys += 1;
        }
        let facts = InvalidKeyCall {
            resolver_ran: false,
            entries_before,
            entries_after: self.cache.entries(),
        };
        check_invalid_key(facts, Some(&answer)).map_err(|v| self.fail(v.rule, v.detail))
    }

    fn pick_caller(&mut self, who: Who) -> (Caller, Origin) {
        let top = |session: Option<SessionId>| {
            (
                Caller {
                    session,
                    ..Caller::default()
                },
                Origin::Top(session),
            )
        };
        match who {
            Who::Session(n) if !self.open.is_empty() => {
                top(Some(self.open[usize::from(n) % self.open.len()]))
            }
            Who::Closed(n) if !self.closed.is_empty() => {
                top(Some(self.closed[usize::from(n) % self.closed.len()]))
            }
            Who::Inner(n) if !self.running.is_empty() => {
                let i = usize::from(n) % self.running.len();
                let (e, r) = self.running.iter().nth(i).expect("in range");
                let caller = Caller {
                    session: None,
                    chain: r.chain.clone(),
                    inside: Some((INSTANCE, *e)),
                };
                (caller, Origin::Inner(*e))
            }
            Who::Foreign(n) if !self.running.is_empty() => {
                let i = usize::from(n) % self.running.len();
                let (e, r) = self.running.iter().nth(i).expect("in range");
                let mut chain = r.chain.clone();
                for link in &mut chain {
                    link.instance = OTHER_INSTANCE;
                }
                let caller = Caller {
                    session: None,
                    chain,
                    inside: Some((OTHER_INSTANCE, *e)),
                };
                self.stats.foreign_calls += 1;
                (caller, Origin::Top(None))
            }
            _ => top(None),
        }
    }

    fn call(&mut self, who: Who, id: u8, conc: u8, dnc: bool, ttl: Ttl) -> Result<(), Failure> {
        let (caller, origin) = self.pick_caller(who);
        if id == INVALID_KEY {
            return self.invalid_call(&caller, conc);
        }
        let explicit = id & EXPLICIT_STORAGE_KEY != 0;
        let ix = usize::from(id & !EXPLICIT_STORAGE_KEY) % self.ids.len();
        let id = self.ids[ix].clone();
        let repeat = repeats_telemetry(conc);
        self.stats.repeat_telemetry += usize::from(repeat);
        let conc = CONCURRENCY_KEYS[usize::from(conc) % CONCURRENCY_KEYS.len()].to_string();
        let call_key = IdKeys::get().call_key(ix).to_string();
        let mut req = CallRequest::new(id.clone())
            .concurrency_key(conc.clone())
            .do_not_cache(dnc);
        req.repeat_telemetry = repeat;
        if explicit {
            self.stats.explicit_storage_keys += 1;
            req.storage_key = Some(call_key.clone());
        }
        let mut ttl_run = None;
        if ttl.ms() > 0 {
            // T-2, as the facade does it: ask the store, then choose.
            self.stats.ttl_calls += 1;
            let session = caller
                .session
                .map_or_else(|| "-".to_string(), |s| s.to_string());
            let answer = self.store.select(&call_key);
            let live = answer
                .as_ref()
                .ok()
                .and_then(|r| r.as_ref())
                .filter(|r| r.expiration >= self.now)
                .map(|r| r.expiration);
            let choice = choose_storage_key(&call_key, &session, self.now, ttl.ms(), answer);
            req.storage_key = Some(choice.storage_key().to_string());
            let own = self.now + ttl.ms() as i64;
            let run = match choice {
                StorageKeyChoice::Fresh { write, .. } => {
                    req.ttl_write = Some(write.clone());
                    TtlRun {
                        shared: false,
                        valid_until: own,
                        write: Some(write),
                        ttl_ms: ttl.ms() as i64,
                    }
                }
                StorageKeyChoice::Live { .. } => {
                    req.shared_storage = true;
                    TtlRun {
                        shared: true,
                        valid_until: live.unwrap_or(own),
                        write: None,
                        ttl_ms: ttl.ms() as i64,
                    }
                }
                StorageKeyChoice::Degraded { .. } => {
                    self.stats.ttl_degraded += 1;
                    TtlRun {
                        shared: false,
                        valid_until: own,
                        write: None,
                        ttl_ms: ttl.ms() as i64,
                    }
                }
            };
            ttl_run = Some(run);
        }
        let key = req.storage_key.clone().unwrap_or_else(|| call_key.clone());
        // A TTL key, fresh or live, dedupes only within its session (T-3).
        let ttl_chosen = req.shared_storage || req.ttl_write.is_some();
        let eff_conc = match caller.session {
            Some(s) if ttl_chosen && !conc.is_empty() => format!("{conc}@{s}"),
            _ => conc,
        };
        let b = self.cache.begin_call(&caller, req);
        let r = Req {
            origin,
            caller,
            key,
            call_key,
            conc: eff_conc,
            dnc,
            repeat,
            arbitrary: false,
            requested: Some(id),
            requested_ix: Some(ix),
            ttl: ttl_run,
        };
        self.apply_begin(b, r)
    }

    fn arbitrary(&mut self, who: Who, key: u8) -> Result<(), Failure> {
        let (caller, origin) = self.pick_caller(who);
        let key = ARBITRARY_KEYS[usize::from(key) % ARBITRARY_KEYS.len()].to_string();
        let b = self.cache.begin_arbitrary(&caller, &key);
        let r = Req {
            origin,
            caller,
            call_key: key.clone(),
            key,
            conc: String::new(),
            dnc: false,
            repeat: false,
            arbitrary: true,
            requested: None,
            requested_ix: None,
            ttl: None,
        };
        self.apply_begin(b, r)
    }

    fn apply_begin(&mut self, b: Begin<u32>, r: Req) -> Result<(), Failure> {
        let closed_session = !self.is_open(r.origin);
        let namespace = if r.arbitrary {
            Namespace::Arbitrary
        } else {
            Namespace::Call
        };
        let in_chain = r
            .caller
            .chain
            .iter()
            .any(|l| l.instance == INSTANCE && l.namespace == namespace && l.key == r.key);
        let forced = match r.origin {
            Origin::Top(Some(s)) => !r.arbitrary && self.retry.contains(&(s, r.call_key.clone())),
            _ => false,
        };
        self.judge_begin(&b, &r, forced)?;
        // C-4 / C-4b / C-5, judged by the check the simulation shares.
        let answered = Answered::of(&b.outcome);
        let standing = Standing {
            nested: matches!(r.origin, Origin::Inner(_)),
            session_open: match r.origin {
                Origin::Top(Some(_)) => Some(!closed_session),
                Origin::Top(None) | Origin::Inner(_) => None,
            },
            revisits: Some(in_chain),
            closes_cycle: match r.origin {
                Origin::Inner(parent) if answered == Answered::Refused => Some(
                    !r.dnc
                        && self
                            .joinable(&r.key, &r.conc, r.arbitrary)
                            .is_some_and(|e| self.reaches(e, parent)),
                ),
                _ => None,
            },
        };
        if let Err(v) = judge(standing, answered) {
            return Err(self.fail(v.rule, format!("{} ({}: {:?})", v.detail, r.key, b.outcome)));
        }
        match b.outcome {
            Err(CallError::SessionClosed) => {
                self.stats.session_closed += 1;
                ensure!(self, closed_session, "S-2", "an open session was refused");
            }
            Err(CallError::Recursive { .. }) => self.stats.recursive += 1,
            // A resolver's error before any resolver ran for this call: an
            // earlier run's error served again.
            Err(e @ (CallError::Resolver(_) | CallError::Panicked(_))) => {
                return Err(self.fail("INV-6", format!("an error served without a run: {e}")))
            }
            Err(e) => return Err(self.fail("C-1", format!("unexpected error {e}"))),
            Ok(d) if closed_session => {
                return Err(self.fail("S-2", format!("a closed session was served {d:?}")))
            }
            Ok(Decision::Hit(served)) => {
                self.stats.hits += 1;
                ensure!(
                    self,
                    served.hit && !served.detached,
                    "C-6",
                    "a hit reported hit={} detached={}",
                    served.hit,
                    served.detached
                );
                ensure!(self, !r.dnc, "C-2", "a do-not-cache call was served a hit");
                ensure!(self, !forced, "S-4", "a forced retry was served a hit");
                ensure!(
                    self,
                    served.session_owned == matches!(r.origin, Origin::Top(Some(_))),
                    "S-1",
                    "session_owned {} for {:?}",
                    served.session_owned,
                    r.origin
                );
                self.check_hit(&r, &served)?;
                self.route(r.origin, served.handle, served.session_owned);
            }
            Ok(Decision::Wait { entry, waiter }) => {
                self.stats.joins += 1;
                self.check_miss(&r)?;
                ensure!(self, !r.dnc, "C-2", "a do-not-cache call joined");
                ensure!(self, !forced, "S-4", "a forced retry joined");
                let want = self.joinable(&r.key, &r.conc, r.arbitrary);
                ensure!(
                    self,
                    want == Some(entry),
                    "C-3",
                    "joined {entry}, the model expected {want:?}"
                );
                if let Some(run) = self.running.get_mut(&entry) {
                    run.waiters.push((waiter, r.origin));
                }
            }
            Ok(Decision::Run(order)) => {
                self.stats.runs += 1;
                if order.mode == RunMode::Cached {
                    self.check_miss(&r)?;
                }
                let want = if r.arbitrary {
                    RunMode::Arbitrary
                } else if r.dnc {
                    RunMode::DoNotCache
                } else if forced {
                    RunMode::ForcedRetry
                } else {
                    RunMode::Cached
                };
                ensure!(
                    self,
                    order.mode == want,
                    "S-4",
                    "run mode {:?}, the model expected {want:?}",
                    order.mode
                );
                match order.mode {
                    RunMode::DoNotCache => self.stats.detached += 1,
                    RunMode::ForcedRetry => self.stats.forced_retries += 1,
                    _ => {}
                }
                // INV-4 / K-5: never two resolvers for one deduplicated key.
                if matches!(order.mode, RunMode::Cached | RunMode::Arbitrary) {
                    let other = self.joinable(&r.key, &r.conc, r.arbitrary);
                    ensure!(
                        self,
                        other.is_none(),
                        "INV-4",
                        "a second resolver for {} while {other:?} runs",
                        r.key
                    );
                }
                if r.arbitrary && self.change {
                    let overlap = self
                        .running
                        .iter()
                        .find(|(_, x)| x.arbitrary() && x.key == r.key)
                        .map(|(e, _)| *e);
                    ensure!(
                        self,
                        overlap.is_none(),
                        "K-5",
                        "two inits of {} overlap (with {overlap:?})",
                        r.key
                    );
                }
                self.labels
                    .insert(order.entry, entry_label(order.mode, &r.key));
                self.running.insert(
                    order.entry,
                    Running {
                        chain: order.chain,
                        waiters: vec![(order.waiter, r.origin)],
                        inner: Vec::new(),
                        mode: order.mode,
                        key: r.key,
                        call_key: r.call_key,
                        conc: r.conc,
                        starter: r.origin,
                        requested_ix: r.requested_ix,
                        ttl: r.ttl,
                    },
                );
            }
            Ok(Decision::Blocked { entry }) => {
                self.stats.blocked += 1;
                let ok = self.running.get(&entry).is_some_and(|x| {
                    self.change && x.arbitrary() && x.abandoned() && x.key == r.key
                });
                ensure!(
                    self,
                    ok,
                    "K-5",
                    "blocked on {entry}, which is not an abandoned init of {}",
                    r.key
                );
            }
        }
        Ok(())
    }

    /// S-5: tells the judge a call starts and what its decision emitted
    /// and started. The machine knows which calls it forces (S-4), so here
    /// a forced retry is one that must always emit. A call that neither
    /// waits nor runs is answered at once.
    fn judge_begin(&mut self, b: &Begin<u32>, r: &Req, forced: bool) -> Result<(), Failure> {
        let call = self.next_call;
        self.next_call += 1;
        let next = self.span_keys.len() as u64;
        let key = *self
            .span_keys
            .entry((r.arbitrary, r.call_key.clone()))
            .or_insert(next);
        let session = match r.origin {
            Origin::Top(s) => s.map(|s| s.0),
            Origin::Inner(_) => None,
        };
        self.spans.call_started(
            call,
            CallFacts {
                session,
                key,
                always: r.dnc || r.repeat || forced,
                retries: !r.arbitrary,
            },
        );
        let mut verdict = Ok(());
        if let (true, Ok(d)) = (b.telemetry, &b.outcome) {
            verdict = self.spans.span(call, !matches!(d, Decision::Run(_)));
        }
        verdict = verdict.and_then(|()| match &b.outcome {
            Ok(Decision::Run(order)) => {
                self.span_calls.insert(order.waiter, call);
                self.spans.resolver_ran(call)
            }
            Ok(Decision::Wait { waiter, .. }) => {
                self.span_calls.insert(*waiter, call);
                Ok(())
            }
            Ok(Decision::Hit(_)) => self.spans.call_answered(call, Answer::Value),
            // A K-5 block: this caller gets no value from this decision.
            Ok(Decision::Blocked { .. }) => self.spans.call_answered(call, Answer::Other),
            Err(_) => self.spans.call_answered(call, Answer::Other),
        });
        verdict.map_err(|v| self.fail("S-5", v.detail))
    }

    /// C-3.1 / C-3.2: a call that joins or runs found no result the model
    /// has indexed under its storage key or its content key.
    fn check_miss(&self, r: &Req) -> Result<(), Failure> {
        if r.arbitrary {
            return Ok(());
        }
        let content = r.requested_ix.and_then(|i| IdKeys::get().content_key(i));
        let shared = r.ttl.as_ref().is_some_and(|t| t.shared);
        self.index
            .check_miss(&r.key, content, |e| {
                !shared || self.visible(e, r.caller.session)
            })
            .map_err(|(rule, detail)| self.fail(rule, detail))
    }

    /// T-3: whether a caller of `session` may be served `e` through a
    /// shared TTL key: a result not safe to persist only in the session
    /// that made it.
    fn visible(&self, e: EntryId, session: Option<SessionId>) -> bool {
        self.results
            .get(&e)
            .and_then(|s| s.ttl)
            .is_none_or(|(made_by, _, safe)| safe || made_by == session)
    }

    /// INV-5 / INV-6 / INV-8 for a hit.
    fn check_hit(&mut self, r: &Req, served: &crate::machine::Served<u32>) -> Result<(), Failure> {
        let entry = served.handle.entry();
        let Some(stored) = self.results.get(&entry) else {
            return Err(self.fail(
                "INV-6",
                format!("hit on {entry}, which never produced a result"),
            ));
        };
        ensure!(
            self,
            served.value == stored.value,
            "INV-5",
            "hit on {entry} served {:?}, it holds {:?}",
            served.value,
            stored.value
        );
        if served.content_hit {
            self.stats.content_hits += 1;
            let want = r.requested_ix.and_then(|i| IdKeys::get().content_key(i));
            ensure!(
                self,
                want.is_some() && stored.content_key.as_deref() == want,
                "INV-5",
                "content hit on {entry} (content {:?}) for content {want:?}",
                stored.content_key
            );
            ensure!(
                self,
                served.id == r.requested,
                "C-8",
                "a content hit must report the requested ID"
            );
            return Ok(());
        }
        ensure!(
            self,
            stored.keys.contains(&r.key),
            "INV-5",
            "storage hit on {entry} under {}, which it is not stored under",
            r.key
        );
        ensure!(
            self,
            served.id == stored.id,
            "INV-5",
            "a storage hit must report the stored ID"
        );
        if r.arbitrary {
            return Ok(());
        }
        // The row a later session shares can outlive the window the result
        // was made in: the result stays servable while either lasts.
        let mapped = self.row_expiry.get(&r.key).copied().unwrap_or(i64::MIN);
        let made = stored.ttl.map(|(session, valid_until, safe)| TtlResult {
            session,
            safe,
            valid_until: valid_until.max(mapped),
            made_at: stored.made_at,
        });
        let call = ServedCall {
            ttl: r.ttl.is_some(),
            session: r.caller.session,
            arrived_at: self.step as u64,
            clock: self.now,
        };
        if let Err(v) = ttl_served::judge(call, made) {
            return Err(self.fail(v.rule, format!("{entry} through {}: {}", r.key, v.detail)));
        }
        // This model also knows which keys are shared: another session
        // reaches a TTL'd result only through a live row's key (T-2).
        if let (Some(run), Some((session, _, _))) = (&r.ttl, stored.ttl) {
            ensure!(
                self,
                session == r.caller.session || run.shared,
                "INV-8",
                "{entry} from {session:?} reached {:?} through a fresh key",
                r.caller.session
            );
        }
        Ok(())
    }

    /// The open sessions the model says wait on the running `entry`,
    /// directly or through the resolvers whose nested calls wait on it.
    fn sessions_waiting_on(&self, entry: EntryId) -> Vec<SessionId> {
        let mut found = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![entry];
        while let Some(e) = todo.pop() {
            if !seen.insert(e) {
                continue;
            }
            for (_, origin) in self.running.get(&e).map_or(&[][..], |r| &r.waiters) {
                match *origin {
                    Origin::Top(Some(s)) if self.open.contains(&s) => {
                        found.insert(s);
                    }
                    Origin::Inner(parent) => todo.push(parent),
                    Origin::Top(_) => {}
                }
            }
        }
        found.into_iter().collect()
    }

    /// C-5: the sessions the cache says a resolver may act for are the
    /// open ones the model has waiting on it, judged by the check the
    /// simulation and the facade driver share, then exactly.
    fn check_acting(&mut self, entry: EntryId) -> Result<(), Failure> {
        let listed = self.cache.sessions_waiting_on(entry);
        let model = self.sessions_waiting_on(entry);
        check_acting_sessions(&listed, |s| self.open.contains(&s))
            .map_err(|v| self.fail(v.rule, format!("{entry}: {}", v.detail)))?;
        ensure!(
            self,
            listed == model,
            "C-5",
            "{entry}: the cache lists sessions {listed:?} to act for, the model {model:?}"
        );
        if !listed.is_empty() {
            self.stats.acting_sessions += 1;
        }
        Ok(())
    }

    fn complete(
        &mut self,
        entry: EntryId,
        outcome: Outcome,
        returned_id: Option<u8>,
        safe: bool,
        stale_nested: bool,
    ) -> Result<(), Failure> {
        self.check_acting(entry)?;
        let mut r = self
            .running
            .remove(&entry)
            .expect("caller picked a running entry");
        let value = match outcome {
            Outcome::Value(v) => Some(u32::from(v)),
            _ => None,
        };
        let mut rejected = false;
        let returned_ix = returned_id
            .filter(|_| !r.arbitrary())
            .map(|i| usize::from(i) % self.ids.len());
        let result: Result<Resolved<u32>, CallError> = match outcome {
            Outcome::Value(_) | Outcome::NoValue => {
                let fails = matches!(outcome, Outcome::Value(v) if hook_fails(v));
                let counter = self.hooks.counter(entry, fails);
                let mut resolved = match value {
                    Some(v) => Resolved::value(v),
                    None => Resolved::no_value(),
                }
                .with_release(counter.hook())
                .safe_to_persist(safe);
                if let Some(i) = returned_ix {
                    resolved.id = Some(self.ids[i].clone());
                }
                self.stats.nested += r.inner.len();
                resolved.nested = std::mem::take(&mut r.inner);
                if stale_nested && !self.stale.is_empty() {
                    resolved
                        .nested
                        .push(self.stale.pop().expect("checked non-empty"));
                    rejected = true;
                    self.rejected.insert(entry);
                    self.stats.rejected_nested += 1;
                } else {
                    // The result now owns these refs (C-11).
                    let on = resolved.nested.iter().map(|h| (h.entry(), entry));
                    self.nested.extend(on);
                }
                Ok(resolved)
            }
            Outcome::Error | Outcome::Panic | Outcome::Cancelled => {
                self.stats.errors += 1;
                // The resolver failed: the shell drops the refs it took.
                for h in std::mem::take(&mut r.inner) {
                    let releases = self
                        .cache
                        .release(h)
                        .map_err(|e| self.fail("C-12", format!("inner release: {e}")))?;
                    self.run_hooks(releases)?;
                }
                Err(match outcome {
                    Outcome::Error => CallError::Resolver("boom".into()),
                    Outcome::Panic => CallError::Panicked("oops".into()),
                    _ => CallError::Cancelled,
                })
            }
        };
        let success = result.is_ok() && !rejected;
        let error = result.as_ref().err().cloned();
        // C-7: a result already indexed under the storage key wins.
        // Through a shared TTL key, only one this run's session may be
        // served (T-3).
        let shared = r.ttl.as_ref().is_some_and(|t| t.shared);
        let starter = match r.starter {
            Origin::Top(s) => s,
            Origin::Inner(_) => None,
        };
        let superseded = self
            .index
            .under(&r.key, |e| !shared || self.visible(e, starter))
            .is_some();
        if success {
            // The ID the result reports: the one it returned, else the one
            // requested (by index, for its keys).
            let ix = returned_ix.or(r.requested_ix);
            let id = ix.map(|i| self.ids[i].clone());
            let mut keys = vec![r.key.clone()];
            let ttl_scoped = r.key != r.call_key;
            if let Some(i) = ix {
                if !ttl_scoped && !r.arbitrary() {
                    keys.push(IdKeys::get().call_key(i).to_string());
                }
            }
            let stored = Stored {
                value,
                content_key: ix.and_then(|i| IdKeys::get().content_key(i).map(str::to_string)),
                id: if r.arbitrary() { None } else { id },
                keys,
                ttl: r.ttl.as_ref().map(|t| {
                    let session = match r.starter {
                        Origin::Top(s) => s,
                        Origin::Inner(_) => None,
                    };
                    (session, t.valid_until, safe)
                }),
                made_at: self.step as u64,
            };
            // C-6: a cached result is indexed under its storage key, its
            // result call key and its content key, a TTL-scoped one under
            // its storage key only; not a duplicate (C-7), not an unsafe
            // result under a key other sessions share (T-3).
            let cached = matches!(r.mode, RunMode::Cached | RunMode::ForcedRetry);
            let unsafe_shared = r.ttl.as_ref().is_some_and(|t| t.shared) && !safe;
            if cached && !r.abandoned() && !superseded && !unsafe_shared {
                let ttl_scoped = r.key != r.call_key;
                let content = stored.content_key.as_deref().filter(|_| !ttl_scoped);
                let keys = stored.keys.iter().map(String::as_str);
                self.index.insert(entry, keys, content);
            }
            self.results.insert(entry, stored);
        }
        let done = self
            .cache
            .complete(entry, result)
            .map_err(|e| self.fail("C-6", format!("complete refused: {e}")))?;
        self.run_hooks(done.releases)?;
        if r.abandoned() {
            self.stats.abandoned_settled += 1;
        }
        let served: Vec<WaiterId> = done.served.iter().map(|(w, _)| *w).collect();
        let want: Vec<WaiterId> = r.waiters.iter().map(|(w, _)| *w).collect();
        ensure!(
            self,
            served == want,
            "INV-7",
            "served waiters {served:?}, the model expected {want:?}"
        );
        let duplicate = done
            .served
            .iter()
            .any(|(_, s)| s.as_ref().is_ok_and(|s| s.handle.entry() != entry));
        // T-3: the write belongs to the stored entry, made only on success,
        // only when safe, never for a duplicate or an abandoned call.
        if let Some(write) = &done.persist {
            let expected = r.ttl.as_ref().and_then(|t| t.write.as_ref());
            ensure!(
                self,
                success && safe && !duplicate && !r.abandoned() && expected == Some(write),
                "T-3",
                "persisted {write:?} (success {success}, safe {safe}, duplicate {duplicate}, abandoned {})",
                r.abandoned()
            );
            if let Ok(true) =
                self.store
                    .compare_and_upsert(&write.call_key, &write.row, write.compare.as_deref())
            {
                self.stats.ttl_writes += 1;
                let ttl_ms = r.ttl.as_ref().map_or(0, |t| t.ttl_ms);
                let judged = self.rows.written(RowWrite {
                    call_key: &write.call_key,
                    label: &write.call_key,
                    storage_key: &write.row.storage_key,
                    expiration: write.row.expiration,
                    compare: write.compare.as_deref(),
                    ttl_ms,
                    // The driver's clock only moves forward.
                    high_water: self.now,
                });
                judged.map_err(|v| self.fail(v.rule, v.detail))?;
                let e = self
                    .row_expiry
                    .entry(write.row.storage_key.clone())
                    .or_insert(i64::MIN);
                *e = (*e).max(write.row.expiration);
            }
        }
        // S-4: a successful forced retry that was stored clears the flag.
        if success && r.mode == RunMode::ForcedRetry && !r.abandoned() {
            if let Origin::Top(Some(s)) = r.starter {
                self.retry.remove(&(s, r.call_key.clone()));
            }
        }
        for ((waiter, result), (_, origin)) in done.served.into_iter().zip(r.waiters.clone()) {
            if let Some(call) = self.span_calls.remove(&waiter) {
                let answered = self.spans.call_answered(call, Answer::of(&result));
                answered.map_err(|v| self.fail("S-5", v.detail))?;
            }
            let closed = !self.is_open(origin);
            match result {
                Ok(s) => {
                    ensure!(
                        self,
                        success && !closed,
                        "S-3",
                        "served a result (success {success}, session closed {closed})"
                    );
                    ensure!(
                        self,
                        !s.hit && !s.content_hit,
                        "C-6",
                        "a waiter of the run reported a hit"
                    );
                    let detached = r.mode == RunMode::DoNotCache;
                    ensure!(
                        self,
                        s.detached == detached,
                        "C-2",
                        "detached {} for mode {:?}",
                        s.detached,
                        r.mode
                    );
                    ensure!(
                        self,
                        s.session_owned == (matches!(origin, Origin::Top(Some(_))) && !detached),
                        "S-1",
                        "session_owned {} for {origin:?}",
                        s.session_owned
                    );
                    let held = s.handle.entry();
                    if held != entry {
                        self.stats.duplicates += 1;
                        ensure!(self, !detached, "C-2", "a detached result was deduplicated");
                    }
                    let stored = self.results.get(&held);
                    ensure!(
                        self,
                        stored.is_some_and(|x| x.value == s.value && x.id == s.id),
                        "INV-5",
                        "waiter served {:?} from {held}, which holds {:?}",
                        s.value,
                        stored.map(|x| x.value)
                    );
                    self.route(origin, s.handle, s.session_owned);
                }
                Err(CallError::ClosedDuringExecution) => {
                    self.stats.closed_during += 1;
                    ensure!(
                        self,
                        success && closed,
                        "S-3",
                        "closed-during-execution for an open session or a failure"
                    );
                }
                Err(e) => {
                    if rejected {
                        ensure!(
                            self,
                            matches!(e, CallError::Resolver(_)),
                            "C-12",
                            "a result with a stale nested handle gave {e}"
                        );
                    } else {
                        ensure!(
                            self,
                            Some(&e) == error.as_ref(),
                            "C-9",
                            "waiter got {e}, the resolver returned {error:?}"
                        );
                    }
                    // S-4: only errors the resolver produced set the flag.
                    let resolver_error =
                        matches!(e, CallError::Resolver(_) | CallError::Panicked(_));
                    if let Origin::Top(Some(s)) = origin {
                        if resolver_error && !r.arbitrary() && !closed {
                            self.retry.insert((s, r.call_key.clone()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn leave(&mut self, which: u8, waiter: u8) -> Result<(), Failure> {
        let candidates: Vec<EntryId> = self
            .running
            .iter()
            .filter(|(_, r)| !r.waiters.is_empty())
            .map(|(e, _)| *e)
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let entry = candidates[usize::from(which) % candidates.len()];
        let r = self.running.get_mut(&entry).expect("candidate");
        let (w, _) = r.waiters.remove(usize::from(waiter) % r.waiters.len());
        let want = if r.waiters.is_empty() {
            self.stats.cancels += 1;
            Left::CancelResolver
        } else {
            Left::Removed
        };
        let left = self.cache.leave(entry, w);
        ensure!(
            self,
            left == want,
            "C-5",
            "waiter {w} left {entry}: {left:?}, expected {want:?}"
        );
        let again = self.cache.leave(entry, w);
        ensure!(
            self,
            again == Left::NotWaiting,
            "C-5",
            "waiter {w} left twice: {again:?}"
        );
        Ok(())
    }

    fn close(&mut self, s: SessionId) -> Result<(), Failure> {
        let closed = self
            .cache
            .close_session(s)
            .map_err(|e| self.fail("S-1", format!("close of open session {s}: {e}")))?;
        self.stats.closes += 1;
        if closed.released >= super::LARGE_CLOSE_REFS {
            self.stats.large_closes += 1;
        } else if closed.released >= super::BATCHED_CLOSE_REFS {
            self.stats.batched_closes += 1;
        }
        let (mine, rest): (Vec<Held>, Vec<Held>) =
            self.held.drain(..).partition(|h| h.session == Some(s));
        self.held = rest;
        ensure!(
            self,
            closed.released == mine.len(),
            "S-1",
            "closing {s} released {} refs, it held {}",
            closed.released,
            mine.len()
        );
        let in_flight = self
            .running
            .values()
            .filter(|r| r.waiters.iter().any(|(_, o)| *o == Origin::Top(Some(s))))
            .count();
        ensure!(
            self,
            closed.in_flight == in_flight,
            "S-1a",
            "closing {s}: {} calls in flight, the model counts {in_flight}",
            closed.in_flight
        );
        self.stale.extend(mine.into_iter().map(|h| h.handle));
        self.open.retain(|x| *x != s);
        self.closed.push(s);
        self.retry.retain(|(x, _)| *x != s);
        self.run_hooks(closed.releases)?;
        ensure!(
            self,
            self.cache.session_refs(s) == 0 && !self.cache.session_is_open(s),
            "INV-9",
            "session {s} still holds {} refs after close",
            self.cache.session_refs(s)
        );
        Ok(())
    }

    /// Closes every session, completes every resolver, releases every
    /// handle; then INV-1.
    fn quiesce(&mut self) -> Result<(), Failure> {
        for s in self.open.clone() {
            self.close(s)?;
            self.check_step()?;
        }
        while let Some(&e) = self.running.keys().next() {
            self.complete(e, Outcome::Value(0), None, false, false)?;
            self.check_step()?;
        }
        while let Some(h) = self.held.pop() {
            let releases = self
                .cache
                .release(h.handle)
                .map_err(|e| self.fail("C-12", format!("release at quiescence: {e}")))?;
            self.run_hooks(releases)?;
            self.check_step()?;
        }
        while let Some(h) = self.stale.pop() {
            ensure!(
                self,
                self.cache.release(h).is_err(),
                "C-12",
                "a stale handle was released at quiescence"
            );
        }
        // The full check after the last step: whatever the incremental
        // checks could not see fails this input here at the latest.
        self.until_text = 0;
        self.check()?;
        ensure!(
            self,
            self.nested.is_empty(),
            "C-11",
            "nested refs outlived their parents: {:?}",
            self.nested
        );
        let report = self.cache.leak_report();
        ensure!(
            self,
            self.cache.entries() == 0
                && self.cache.live_entries() == 0
                && self.cache.live_refs() == 0
                && self.cache.buckets() == Buckets::default()
                && report.is_clean(),
            "INV-1",
            "not quiescent: entries {}, live entries {}, live refs {}",
            self.cache.entries(),
            self.cache.live_entries(),
            self.cache.live_refs()
        );
        self.cache
            .check_invariants()
            .map_err(|v| self.fail(v.rule, v.detail))?;
        let spans = self.spans.finish();
        spans.map_err(|v| self.fail("S-5", v.detail))?;
        self.stats.spans = self.spans.spans_seen() as usize;
        self.hooks
            .check_final()
            .map_err(|(rule, detail)| self.fail(rule, detail))
    }
}

/// The incremental check and the full one each catch what they must: a
/// fault a step makes and undoes before the next full check is seen only
/// by the check of what the step touched, at that step; damage no step
/// records is seen by the full check, after the last step at the latest.
/// Either way the input fails.
#[cfg(test)]
mod tests {
    use super::*;

    /// Stores one result (call ID 2) in a session, then idles three steps.
    fn stored_then_idle() -> MachineInput {
        let mut ops = vec![
            Op::Open,
            Op::Call {
                who: Who::Session(0),
                id: 2,
                conc: 0,
                dnc: false,
                ttl: Ttl::None,
            },
            Op::Complete {
                which: 0,
                outcome: Outcome::Value(1),
                returned_id: None,
                safe: false,
                stale_nested: false,
            },
        ];
        ops.extend(std::iter::repeat_n(Op::Advance { ms: 1 }, 3));
        MachineInput {
            change_cache: false,
            ops,
        }
    }

    fn stored(cache: &CallCache<u32>) -> EntryId {
        cache
            .completed_call(&call_ids()[2])
            .expect("the result is stored")
    }

    /// Skews the stored entry's refcount after step 2 and puts it back
    /// after step 3: a fault visible for one step only.
    fn transient(step: usize, cache: &mut CallCache<u32>) {
        match step {
            2 => assert!(cache.plant_refcount_skew(stored(cache), 1)),
            3 => assert!(cache.plant_refcount_skew(stored(cache), -1)),
            _ => {}
        }
    }

    #[test]
    fn the_incremental_check_sees_a_transient_fault_at_its_step() {
        let input = stored_then_idle();
        run_machine(&input).expect("healthy without the fault");
        let rare = Checks {
            full_every: 100,
            incremental: true,
        };
        let f = run_checked(&input, Bugs::none(), rare, &mut transient).unwrap_err();
        assert_eq!((f.invariant, f.step), ("INV-10", 2), "{f}");
        assert!(f.detail.contains("counts 2 refs but 1 are live"), "{f}");
        // Without it no full check ever sees the fault: healed by step 3.
        let full_only = Checks {
            full_every: 2,
            incremental: false,
        };
        run_checked(&input, Bugs::none(), full_only, &mut transient)
            .expect("the full checks at steps 1, 3 and the end see a healthy cache");
    }

    /// A ref the step handed out that the touch log does not list is
    /// reported at that step: the incremental check relies on the log.
    #[test]
    fn a_touch_log_gap_is_reported_at_its_step() {
        let input = stored_then_idle();
        let mut gap = |_: usize, cache: &mut CallCache<u32>| cache.plant_touch_log_gap();
        let f = run_checked(&input, Bugs::none(), Checks::default(), &mut gap).unwrap_err();
        assert_eq!(f.invariant, "INV-2", "{f}");
        assert!(f.detail.contains("touch log"), "{f}");
        // The step that hands out the first handle: the completion.
        assert!(matches!(input.ops[f.step], Op::Complete { .. }), "{f}");
    }

    #[test]
    fn the_full_check_sees_what_no_step_recorded_at_the_end_at_the_latest() {
        let input = stored_then_idle();
        let mut drift = |step: usize, cache: &mut CallCache<u32>| {
            if step == 2 {
                cache.plant_bucket_drift();
            }
        };
        // The default: no full check between the fault and the end.
        assert!(FULL_CHECK_EVERY > input.ops.len());
        let f = run_checked(&input, Bugs::none(), Checks::default(), &mut drift).unwrap_err();
        assert_eq!((f.invariant, f.step), ("INV-3", input.ops.len()), "{f}");
        assert!(f.detail.contains("the completed buckets count"), "{f}");
        // A full check every 4 steps finds it after step 3.
        let often = Checks {
            full_every: 4,
            incremental: true,
        };
        let f = run_checked(&input, Bugs::none(), often, &mut drift).unwrap_err();
        assert_eq!((f.invariant, f.step), ("INV-3", 3), "{f}");
    }
}
