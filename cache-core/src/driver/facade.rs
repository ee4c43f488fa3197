//! The driver through sessions and the async facade, on a current-thread
//! tokio runtime with paused time. Resolvers are controlled by the driver
//! through oneshot channels, so every interleaving comes from the operation
//! sequence: after each operation every task runs until it blocks.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::time::Duration;

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::machine::FULL_CHECK_EVERY;
use super::ops::*;
use super::shadow::{expect_panic, hook_fails, quiet_expected_panics, ref_counts, HookLedger};
use super::{ensure, Failure, Stats};
use crate::bugs::Bugs;
use crate::checks::accounting::{
    check_close, check_counts, check_hook_errors, check_invalid_key, check_release,
    check_report_text, check_store_failures, CloseFacts, InvalidKeyCall,
};
use crate::checks::answers::{self, check_acting_sessions, Answered, Standing};
use crate::checks::telemetry::{as_call, current_call, Answer, CallFacts, SpanCheck};
use crate::checks::ttl_rows::{check_gc, RowCheck, RowWrite};
use crate::checks::ttl_served::{self, ServedCall, TtlResult};
use crate::error::{CallError, ResolverError};
use crate::facade::{
    Cache, CallKey, CallResult, Clock, CloseSummary, Ctx, ManualClock, ResolverCtx, Session, Span,
    Telemetry,
};
use crate::id::CallId;
use crate::machine::{Buckets, EntryId, Resolved, SessionId};
use crate::ttl::{MemoryTtlStore, RecordingStore, StoreFaults};

/// The cache instance the driver uses.
const INSTANCE: u64 = 11;
/// The cache's TTL store deadline: between [`StoreDelay::Slow`] and
/// [`StoreDelay::Timeout`], so one answers in time and the other does not.
const STORE_DEADLINE_MS: u64 = 1000;
/// At most this many sessions open at once.
const MAX_OPEN: usize = 4;
/// At most this many session values kept (open, closed, not dropped).
const MAX_SESSIONS: usize = 6;
/// Rounds of resolving everything at quiescence before a caller counts as hung.
const QUIESCE_ROUNDS: usize = 64;

/// Applies `input` to a fresh facade [`Cache`] (with an in-memory TTL store
/// with faults and a manual clock) on a current-thread runtime with paused
/// time. After every operation, once every task has run until it blocks:
/// `check_invariants()` (INV-3, INV-10, C-11a, and the facade's own wake-up
/// bookkeeping, INV-7), refcounts against the shadow model (INV-2), hooks
/// (INV-10, C-12), every result and error each caller got (INV-5, INV-6,
/// INV-7, INV-8, S-2, S-3, C-8), at most one resolver per deduplicated key
/// (INV-4, K-5), and session closes (S-1, INV-9). At the end: every session
/// closed, every resolver finished, every result released; no caller may
/// still be waiting (INV-11) and INV-1 must hold. The C-15 totals and the O-3
/// leak report are checked every 16 steps (`FULL_CHECK_EVERY`), after the last
/// step and once everything is released. An input that [`shuts_down`] ends
/// instead by dropping the runtime with its callers and resolvers in
/// flight, the cache outliving it: nothing may be left in flight (INV-11),
/// and once the driver lets go of its results and sessions, nothing at all
/// (INV-1).
pub fn run_facade(input: &FacadeInput) -> Result<Stats, Failure> {
    run_facade_with(input, Bugs::none())
}

/// [`run_facade`] on a cache with the bug-zoo switches `bugs` on (inert
/// without the `bug-zoo` feature).
pub fn run_facade_with(input: &FacadeInput, bugs: Bugs) -> Result<Stats, Failure> {
    run_facade_planted(input, bugs, |_| {})
}

/// [`run_facade_with`] after `plant` has been given the cache, before the
/// first operation: the harness's self-tests plant faults through it.
#[doc(hidden)]
pub fn run_facade_planted(
    input: &FacadeInput,
    bugs: Bugs,
    plant: impl FnOnce(&Cache<u32>),
) -> Result<Stats, Failure> {
    quiet_expected_panics();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| Failure {
            invariant: "setup",
            step: 0,
            detail: format!("cannot build a runtime: {e}"),
        })?;
    let shut_down = shuts_down(input);
    let d = rt.block_on(async {
        let mut d = Driver::new(input.change_cache, bugs);
        plant(&d.cache);
        for (i, op) in input.ops.iter().enumerate() {
            d.step = i;
            d.op = Some(op.clone());
            d.apply(op)?;
            if answer_meets_cancel(op, input.ops.get(i + 1)) {
                d.stats.crossed_cancels += 1;
                continue;
            }
            d.settle(1).await;
            d.collect()?;
            d.check()?;
        }
        d.step = input.ops.len();
        d.op = None;
        d.stats.steps = input.ops.len();
        if !shut_down {
            d.quiesce().await?;
            d.stats.failed_hooks = d.hooks.failed_runs();
        }
        Ok(d)
    })?;
    if !shut_down {
        return Ok(d.stats);
    }
    // Every task still on the runtime is dropped with it: callers waiting,
    // resolvers running, store calls in flight.
    drop(rt);
    d.after_shutdown()
}

/// An input of 4k + 3 operations ends with its runtime shut down instead
/// of settling, as a service's runtime may stop while the cache outlives
/// it (kept by another runtime that shares it): one input in four of any
/// length distribution, with no field of its own, so existing corpora
/// decode as before.
pub fn shuts_down(input: &FacadeInput) -> bool {
    input.ops.len() % 4 == 3
}

/// A resolution followed at once by a cancel land in the same instant: the
/// answer reaches a waiter before its caller is polled again, so the cancel
/// meets an answer already served (C-5: the ref served to a waiter that
/// leaves goes back). Between any other two operations the runtime settles.
fn answer_meets_cancel(op: &SessionOp, next: Option<&SessionOp>) -> bool {
    matches!(op, SessionOp::Resolve { .. }) && matches!(next, Some(SessionOp::Cancel { .. }))
}

/// What a resolver is told to do.
enum Command {
    Finish(Result<Resolved<u32>, CallError>),
    /// Panic, as the given failed run.
    Panic(u64),
}

/// The error of a run the driver fails, numbered: every caller of that run
/// gets it, and [`Driver::judge`] asks it (`ResolverError::downcast_ref`)
/// which run it came from (INV-6).
#[derive(Debug, thiserror::Error)]
#[error("planned failure of run {0}")]
struct RunFailed(u64);

/// What the driver knows about a call when it issues it.
#[derive(Clone, Debug)]
struct RunInfo {
    session: Option<SessionId>,
    /// Call key, or arbitrary key.
    key: String,
    conc: String,
    dnc: bool,
    /// S-5: asks for repeated telemetry.
    repeat: bool,
    /// The call's TTL, ms (0: none).
    ttl_ms: i64,
    arbitrary: bool,
    requested: Option<CallId>,
    obey_cancel: bool,
    /// The S-5 judge's number for the call (set when it is spawned).
    call: u64,
    /// The step it was issued at and the clock then (T-7).
    issued: (u64, i64),
    /// When it was issued, on the runtime's (paused) clock.
    issued_at: tokio::time::Instant,
    /// How long its TTL lookup must wait for the store before the call can
    /// go on: the store's injected delay, at most the deadline (T-2).
    store_wait_ms: u64,
}

/// The runtime's clock, which the driver's paused current-thread runtime
/// moves only by its own sleeps: durations between two points of one run,
/// the same on every replay (its origin is never read).
fn paused_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// The driver's blocking executor: each store call runs on a task of its
/// own after the caller has yielded once, as a blocking pool answers a
/// moment later, so the cache waits for it under its store deadline (T-2)
/// and other tasks run in between; deterministic on the driver's
/// current-thread runtime. (`Inline` answers inside the caller's poll, and
/// a cache whose deadline were zero would never notice.)
struct Deferred;

impl crate::facade::BlockingExecutor for Deferred {
    fn spawn(&self, job: crate::facade::BlockingJob) {
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            job();
        });
    }
}

/// The driver's telemetry sink: every span goes to the S-5 judge, and
/// what the judge finds waits in `found` for the next collect.
struct DriverSpans {
    check: Arc<Mutex<SpanCheck>>,
    found: Arc<Mutex<Vec<String>>>,
}

impl Telemetry for DriverSpans {
    fn span(&self, span: Span) {
        let Some(call) = current_call() else {
            let outside = format!("a span for {} outside any call", span.key);
            self.found.lock().expect("spans").push(outside);
            return;
        };
        let verdict = self.check.lock().expect("spans").span(call, span.cached);
        if let Err(v) = verdict {
            self.found.lock().expect("spans").push(v.detail);
        }
    }
}

/// A resolver that has started, as it registers itself.
struct Started {
    /// When the resolver was first polled, on the runtime's clock.
    started_at: tokio::time::Instant,
    rctx: ResolverCtx,
    tx: oneshot::Sender<Command>,
    info: RunInfo,
    done: Arc<AtomicBool>,
}

#[derive(Default)]
struct Registry {
    started: Vec<Started>,
}

/// Sets its flag when the resolver's future finishes or is dropped.
struct DoneGuard(Arc<AtomicBool>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A running resolver the driver controls.
struct Running {
    entry: EntryId,
    rctx: ResolverCtx,
    tx: oneshot::Sender<Command>,
    info: RunInfo,
    done: Arc<AtomicBool>,
    /// Results its nested calls gave it: handed over on success (C-11).
    inner: Vec<CallResult<u32>>,
}

impl Running {
    fn detached(&self) -> bool {
        self.rctx.storage_key.starts_with("do-not-cache:")
    }
}

/// Who a caller is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Origin {
    Top(Option<SessionId>),
    Inner(EntryId),
}

/// A caller task.
struct CallerTask {
    handle: JoinHandle<Timed>,
    token: CancellationToken,
    origin: Origin,
    info: RunInfo,
    closed_at_issue: bool,
    cancelled: bool,
}

impl CallerTask {
    /// A caller just spawned, not yet cancelled.
    fn new(
        handle: JoinHandle<Timed>,
        token: CancellationToken,
        origin: Origin,
        info: RunInfo,
        closed_at_issue: bool,
    ) -> Self {
        Self {
            handle,
            token,
            origin,
            info,
            closed_at_issue,
            cancelled: false,
        }
    }
}

/// A caller's answer and the simulated time it waited for it, from its
/// task's first poll.
struct Timed {
    result: Result<CallResult<u32>, CallError>,
    waited: Duration,
}

/// Runs one caller's call in its task, timing it on the paused clock.
async fn timed(call: impl Future<Output = Result<CallResult<u32>, CallError>>) -> Timed {
    let start = paused_now();
    let result = call.await;
    Timed {
        result,
        waited: paused_now() - start,
    }
}

/// A successful result, by entry.
struct Stored {
    value: Option<u32>,
    id: Option<CallId>,
    content_key: Option<String>,
    /// Whether its resolver marked it safe to persist (T-3).
    safe: bool,
    /// Made by a TTL'd call: its session, safety and TTL window.
    ttl: Option<TtlResult<Option<SessionId>>>,
}

struct Driver {
    step: usize,
    op: Option<SessionOp>,
    cache: Cache<u32>,
    change: bool,
    clock: ManualClock,
    store: Arc<MemoryTtlStore>,
    /// The store as the cache sees it: the rows it wrote, to judge.
    recorder: Arc<RecordingStore>,
    /// T-2, T-4 judge of every row written.
    rows: RowCheck,
    /// The longest TTL any call of each call key had (the bound of its rows).
    ttl_of: BTreeMap<String, i64>,
    /// Call keys a TTL'd resolver produced a result safe to persist for (T-3).
    safe_keys: BTreeSet<String>,
    registry: Arc<Mutex<Registry>>,
    ids: Vec<CallId>,
    sessions: Vec<Session<u32>>,
    callers: Vec<CallerTask>,
    running: Vec<Running>,
    results: BTreeMap<EntryId, Stored>,
    /// Results that hold their own ref.
    held: Vec<CallResult<u32>>,
    /// Refs owned by open sessions: (session, entry).
    owned: Vec<(SessionId, EntryId)>,
    /// (entry the ref is on, parent entry owning it) (C-11).
    nested: Vec<(EntryId, EntryId)>,
    /// Keys whose resolver was told to return a cancellation error.
    cancelled_keys: BTreeSet<String>,
    /// Failed runs by number: the step at which a caller first got the
    /// run's error (INV-6).
    failures_delivered: BTreeMap<u64, usize>,
    hooks: HookLedger,
    next_value: u32,
    stats: Stats,
    /// The S-5 judge, fed by the telemetry sink and by `collect`.
    spans: Arc<Mutex<SpanCheck>>,
    span_found: Arc<Mutex<Vec<String>>>,
    /// The judge's number for each key, in the order first seen.
    key_numbers: BTreeMap<(bool, String), u64>,
    next_call: u64,
    /// Checks since the C-15 totals and the leak report were last checked.
    since_full: usize,
    /// The next check includes them.
    full_next: bool,
}

impl Driver {
    fn new(change: bool, bugs: Bugs) -> Self {
        let clock = ManualClock::new(1_000_000);
        let store = Arc::new(MemoryTtlStore::new());
        let recorder = Arc::new(RecordingStore::new(store.clone()));
        let spans = Arc::new(Mutex::new(SpanCheck::new()));
        let span_found = Arc::new(Mutex::new(Vec::new()));
        let mut builder = Cache::builder()
            .telemetry(Arc::new(DriverSpans {
                check: spans.clone(),
                found: span_found.clone(),
            }))
            .instance_id_for_replay(INSTANCE)
            .blocking_executor(Arc::new(Deferred))
            .store_deadline_ms(STORE_DEADLINE_MS)
            .clock(Arc::new(clock.clone()))
            .ttl_store(recorder.clone())
            .bugs(bugs);
        if change {
            builder = builder.change_cache();
        }
        Driver {
            step: 0,
            op: None,
            cache: builder.build(),
            change,
            clock,
            store,
            recorder,
            rows: RowCheck::new(),
            ttl_of: BTreeMap::new(),
            safe_keys: BTreeSet::new(),
            registry: Arc::new(Mutex::new(Registry::default())),
            ids: call_ids(),
            sessions: Vec::new(),
            callers: Vec::new(),
            running: Vec::new(),
            results: BTreeMap::new(),
            held: Vec::new(),
            owned: Vec::new(),
            nested: Vec::new(),
            cancelled_keys: BTreeSet::new(),
            failures_delivered: BTreeMap::new(),
            hooks: HookLedger::default(),
            next_value: 1,
            stats: Stats::default(),
            spans,
            span_found,
            key_numbers: BTreeMap::new(),
            next_call: 0,
            since_full: 0,
            full_next: false,
        }
    }

    /// Until when a TTL'd result of `call_key` made now may be served
    /// (T-2, T-7): to the end of its own TTL, by which its fresh key's
    /// window and any row it writes end; or to the end of the live row it
    /// was stored under, which an earlier call of the key with a longer TTL
    /// wrote. A bound, never tighter than the truth: the row read now is
    /// the one the call found, or one written since.
    fn valid_until(&self, call_key: &str, ttl_ms: i64) -> i64 {
        let now = self.clock.now_ms();
        let row = self
            .store
            .rows()
            .into_iter()
            .find(|(k, r)| k == call_key && r.expiration >= now)
            .map(|(_, r)| r.expiration);
        now.saturating_add(ttl_ms).max(row.unwrap_or(i64::MIN))
    }

    fn fail(&self, invariant: &'static str, detail: String) -> Failure {
        let op = self.op.as_ref().map(|o| o as &dyn std::fmt::Debug);
        Failure::at(invariant, self.step, detail, op, &self.cache.leak_report())
    }

    /// The step a call is issued at and the clock then: the driver's
    /// clock only moves forward, so its reading is the cache's highest.
    fn issued(&self) -> (u64, i64) {
        (self.step as u64, self.clock.now_ms())
    }

    /// How long a TTL'd call issued now waits for the store (T-2): the
    /// injected delay, at most the deadline.
    fn store_wait_ms(&self, ttl_ms: u64) -> u64 {
        if ttl_ms == 0 {
            return 0;
        }
        self.store.faults().delay_ms.min(STORE_DEADLINE_MS)
    }

    fn is_open(&self, s: SessionId) -> bool {
        self.cache.inspect(|m| m.session_is_open(s))
    }

    /// Runs every task until all are blocked: sleeps `ms` of paused time
    /// (auto-advancing past store delays), then yields until nothing the
    /// driver can see changes any more.
    async fn settle(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let mut last = None;
        for _ in 0..256 {
            tokio::task::yield_now().await;
            let now = (
                self.callers
                    .iter()
                    .filter(|c| c.handle.is_finished())
                    .count(),
                self.registry.lock().expect("registry").started.len(),
                self.running
                    .iter()
                    .filter(|r| r.done.load(Ordering::SeqCst))
                    .count(),
                self.cache
                    .inspect(|m| (m.live_refs(), m.live_entries(), m.entries())),
            );
            if last.as_ref() == Some(&now) {
                return;
            }
            last = Some(now);
        }
    }

    // ---- operations ----

    fn apply(&mut self, op: &SessionOp) -> Result<(), Failure> {
        match *op {
            SessionOp::Open => {
                let open = self.sessions.iter().filter(|s| s.is_open()).count();
                if open < MAX_OPEN && self.sessions.len() < MAX_SESSIONS {
                    self.sessions.push(self.cache.open_session());
                } else if let Some(i) = self.sessions.iter().position(|s| !s.is_open()) {
                    // Make room: forget a closed session.
                    self.sessions.remove(i);
                }
            }
            SessionOp::Close { session } => {
                if self.sessions.is_empty() {
                    return Ok(());
                }
                let i = usize::from(session) % self.sessions.len();
                let s = self.sessions[i].id();
                let was_open = self.is_open(s);
                let failed_before = self.hooks.failed_runs();
                let r = self.sessions[i].close();
                match r {
                    Ok(summary) => {
                        ensure!(self, was_open, "S-1", "a closed session closed again");
                        self.judge_close(s, &summary, failed_before)?;
                        self.closed(s)?;
                    }
                    Err(e) => {
                        ensure!(
                            self,
                            !was_open && e == CallError::SessionClosed,
                            "S-1",
                            "closing {s} (open {was_open}) failed: {e}"
                        );
                    }
                }
            }
            SessionOp::Drop { session } => {
                if self.sessions.is_empty() {
                    return Ok(());
                }
                let i = usize::from(session) % self.sessions.len();
                let s = self.sessions.remove(i);
                let id = s.id();
                let was_open = s.is_open();
                drop(s);
                if was_open {
                    self.closed(id)?;
                }
            }
            SessionOp::Call {
                session,
                id,
                conc,
                dnc,
                ttl,
                obey_cancel,
            } => {
                if id == INVALID_KEY {
                    return self.invalid_call(session, ttl, !obey_cancel);
                }
                let (ctx, origin) = self.top_ctx(session);
                let id = self.ids[usize::from(id) % self.ids.len()].clone();
                let repeat = repeats_telemetry(conc);
                self.stats.repeat_telemetry += usize::from(repeat);
                let conc = CONCURRENCY_KEYS[usize::from(conc) % CONCURRENCY_KEYS.len()].to_string();
                if ttl.ms() > 0 {
                    self.stats.ttl_calls += 1;
                    let ms = i64::try_from(ttl.ms()).unwrap_or(i64::MAX);
                    let longest = self.ttl_of.entry(id.call_key()).or_insert(0);
                    *longest = (*longest).max(ms);
                }
                let info = RunInfo {
                    session: ctx.session,
                    key: id.call_key(),
                    conc: conc.clone(),
                    dnc,
                    repeat,
                    ttl_ms: i64::try_from(ttl.ms()).unwrap_or(i64::MAX),
                    arbitrary: false,
                    requested: Some(id.clone()),
                    obey_cancel,
                    call: 0,
                    issued: self.issued(),
                    issued_at: paused_now(),
                    store_wait_ms: self.store_wait_ms(ttl.ms()),
                };
                let key = CallKey::new(id)
                    .concurrency_key(conc)
                    .do_not_cache(dnc)
                    .repeat_telemetry(repeat)
                    .ttl_ms(ttl.ms());
                self.spawn_call(ctx, origin, key, info);
            }
            SessionOp::Arbitrary {
                session,
                key,
                obey_cancel,
            } => {
                let (ctx, origin) = self.top_ctx(session);
                let key = ARBITRARY_KEYS[usize::from(key) % ARBITRARY_KEYS.len()].to_string();
                let info = RunInfo {
                    session: ctx.session,
                    key: key.clone(),
                    conc: String::new(),
                    dnc: false,
                    repeat: false,
                    ttl_ms: 0,
                    arbitrary: true,
                    requested: None,
                    obey_cancel,
                    call: 0,
                    issued: self.issued(),
                    issued_at: paused_now(),
                    store_wait_ms: 0,
                };
                self.spawn_arbitrary(ctx, origin, key, info);
            }
            SessionOp::Nested {
                parent,
                id,
                conc,
                dnc,
                obey_cancel,
            } => {
                let live: Vec<usize> = (0..self.running.len())
                    .filter(|i| !self.running[*i].done.load(Ordering::SeqCst))
                    .collect();
                if live.is_empty() {
                    return Ok(());
                }
                let p = &self.running[live[usize::from(parent) % live.len()]];
                let ctx = p.rctx.nested();
                let origin = Origin::Inner(p.entry);
                let id = self.ids[usize::from(id) % self.ids.len()].clone();
                let conc = CONCURRENCY_KEYS[usize::from(conc) % CONCURRENCY_KEYS.len()].to_string();
                let info = RunInfo {
                    session: None,
                    key: id.call_key(),
                    conc: conc.clone(),
                    dnc,
                    repeat: false,
                    ttl_ms: 0,
                    arbitrary: false,
                    requested: Some(id.clone()),
                    obey_cancel,
                    call: 0,
                    issued: self.issued(),
                    issued_at: paused_now(),
                    store_wait_ms: 0,
                };
                let key = CallKey::new(id).concurrency_key(conc).do_not_cache(dnc);
                self.spawn_call(ctx, origin, key, info);
            }
            SessionOp::Resolve {
                which,
                outcome,
                returned_id,
                safe,
            } => self.resolve(which, outcome, returned_id, safe)?,
            SessionOp::Cancel { which, abort } => {
                let waiting: Vec<usize> = (0..self.callers.len())
                    .filter(|i| {
                        !self.callers[*i].cancelled && !self.callers[*i].handle.is_finished()
                    })
                    .collect();
                if waiting.is_empty() {
                    return Ok(());
                }
                let c = &mut self.callers[waiting[usize::from(which) % waiting.len()]];
                c.cancelled = true;
                if abort {
                    c.handle.abort();
                } else {
                    c.token.cancel();
                }
                self.stats.cancels += 1;
            }
            SessionOp::Release { which, drop } => {
                if self.held.is_empty() {
                    return Ok(());
                }
                let r = self.held.swap_remove(usize::from(which) % self.held.len());
                if drop {
                    std::mem::drop(r);
                } else {
                    self.release(r)?;
                }
            }
            SessionOp::Advance { ms } => self.clock.advance(i64::from(ms)),
            SessionOp::StoreFaults {
                fail_next,
                fail_all,
                delay,
            } => self.store.set_faults(StoreFaults {
                fail_next: u32::from(fail_next % 4),
                fail_all,
                delay_ms: delay.ms(),
            }),
            SessionOp::Gc => {
                // An injected store fault may fail it; that is allowed, but
                // a live row is kept either way (T-5). The clock only moves
                // forward here, so its reading is the highest seen.
                let before = self.store.rows();
                let answer = self.cache.gc_ttl();
                check_gc(
                    &before,
                    &self.store.rows(),
                    self.clock.now_ms(),
                    answer.as_ref().copied(),
                )
                .map_err(|v| self.fail(v.rule, v.detail))?;
                if answer.is_ok_and(|n| n > 0) {
                    self.stats.gc_deletions += 1;
                }
            }
        }
        Ok(())
    }

    /// A context for a top-level call: the n-th session (open or closed),
    /// or no session.
    fn top_ctx(&self, session: Option<u8>) -> (Ctx, Origin) {
        let token = CancellationToken::new();
        match session {
            Some(n) if !self.sessions.is_empty() => {
                let s = &self.sessions[usize::from(n) % self.sessions.len()];
                (s.ctx().with_cancel(token), Origin::Top(Some(s.id())))
            }
            _ => (Ctx::new().with_cancel(token), Origin::Top(None)),
        }
    }

    /// A resolver the driver controls: it registers itself, then waits for
    /// its command (or, if it obeys cancellation, for its token).
    fn resolver(
        &self,
        info: RunInfo,
    ) -> impl FnOnce(
        ResolverCtx,
    ) -> futures::future::BoxFuture<'static, Result<Resolved<u32>, CallError>>
           + Send
           + 'static {
        let registry = self.registry.clone();
        move |rctx: ResolverCtx| {
            async move {
                let (tx, rx) = oneshot::channel();
                let done = Arc::new(AtomicBool::new(false));
                let _guard = DoneGuard(done.clone());
                let cancel = rctx.cancel.clone();
                let obey = info.obey_cancel;
                registry.lock().expect("registry").started.push(Started {
                    started_at: paused_now(),
                    rctx,
                    tx,
                    info,
                    done,
                });
                let command = if obey {
                    tokio::select! {
                        biased;
                        c = rx => c.ok(),
                        _ = cancel.cancelled() => None,
                    }
                } else {
                    rx.await.ok()
                };
                match command {
                    Some(Command::Finish(r)) => r,
                    Some(Command::Panic(run)) => {
                        expect_panic();
                        // Every other planned panic carries its run's typed
                        // error, which the facade keeps (C-14), so INV-6 is
                        // judged for panics too; the rest carry text, the
                        // other way C-14 takes.
                        if run % 2 == 1 {
                            std::panic::panic_any(ResolverError::new(RunFailed(run)));
                        }
                        panic!("driver: a planned resolver panic (C-14)");
                    }
                    None => Err(CallError::Cancelled),
                }
            }
            .boxed()
        }
    }

    /// Numbers a call for the S-5 judge and tells it the call starts.
    fn judge_call(&mut self, info: &mut RunInfo) -> Option<u64> {
        let next = self.key_numbers.len() as u64;
        let key = *self
            .key_numbers
            .entry((info.arbitrary, info.key.clone()))
            .or_insert(next);
        let mut spans = self.spans.lock().expect("spans");
        info.call = self.next_call;
        self.next_call += 1;
        spans.call_started(
            info.call,
            CallFacts {
                session: info.session.map(|s| s.0),
                key,
                always: info.dnc || info.repeat,
                retries: !info.arbitrary,
            },
        );
        Some(info.call)
    }

    fn spawn_call(&mut self, ctx: Ctx, origin: Origin, key: CallKey, mut info: RunInfo) {
        let call = self.judge_call(&mut info);
        let cache = self.cache.clone();
        let resolver = self.resolver(info.clone());
        let token = ctx.cancel.clone();
        let closed_at_issue = matches!(origin, Origin::Top(Some(s)) if !self.is_open(s));
        let handle = tokio::spawn(async move {
            timed(as_call(
                call,
                repolled(cache.get_or_init_call(&ctx, key, resolver)),
            ))
            .await
        });
        self.callers.push(CallerTask::new(
            handle,
            token,
            origin,
            info,
            closed_at_issue,
        ));
    }

    fn spawn_arbitrary(&mut self, ctx: Ctx, origin: Origin, key: String, mut info: RunInfo) {
        let call = self.judge_call(&mut info);
        let cache = self.cache.clone();
        let init = self.resolver(info.clone());
        let token = ctx.cancel.clone();
        let closed_at_issue = matches!(origin, Origin::Top(Some(s)) if !self.is_open(s));
        let handle = tokio::spawn(async move {
            timed(as_call(
                call,
                repolled(cache.get_or_init_arbitrary(&ctx, &key, init)),
            ))
            .await
        });
        self.callers.push(CallerTask::new(
            handle,
            token,
            origin,
            info,
            closed_at_issue,
        ));
    }

    /// The model's side of a session close (S-1, INV-9).
    fn closed(&mut self, s: SessionId) -> Result<(), Failure> {
        self.stats.closes += 1;
        self.owned.retain(|(x, _)| *x != s);
        let (open, refs) = self
            .cache
            .inspect(|m| (m.session_is_open(s), m.session_refs(s)));
        ensure!(
            self,
            !open && refs == 0,
            "INV-9",
            "session {s} after close: open {open}, {refs} refs"
        );
        Ok(())
    }

    fn resolve(
        &mut self,
        which: u8,
        outcome: Outcome,
        returned_id: Option<u8>,
        safe: bool,
    ) -> Result<(), Failure> {
        let live: Vec<usize> = (0..self.running.len())
            .filter(|i| !self.running[*i].done.load(Ordering::SeqCst))
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let r = self.running.remove(live[usize::from(which) % live.len()]);
        if self.cache.inspect(|m| m.waiters(r.entry).is_empty()) {
            self.stats.abandoned_settled += 1;
        }
        // C-5: the resolver acts for an open session, never a closed one
        // (the check the simulation and the machine driver share; this
        // driver does not follow which caller waits on which entry).
        let listed = self.cache.sessions_waiting_on(r.entry);
        check_acting_sessions(&listed, |s| self.is_open(s))
            .map_err(|v| self.fail(v.rule, format!("{}: {}", r.entry, v.detail)))?;
        if !listed.is_empty() {
            self.stats.acting_sessions += 1;
        }
        let command = match outcome {
            Outcome::Value(_) | Outcome::NoValue => {
                let value = matches!(outcome, Outcome::Value(_)).then(|| {
                    self.next_value += 1;
                    self.next_value
                });
                let fails = matches!(outcome, Outcome::Value(v) if hook_fails(v));
                let counter = self.hooks.counter(r.entry, fails);
                let mut resolved = match value {
                    Some(v) => Resolved::value(v),
                    None => Resolved::no_value(),
                }
                .with_release(counter.hook())
                .safe_to_persist(safe);
                if safe && r.info.ttl_ms > 0 {
                    self.safe_keys.insert(r.info.key.clone());
                }
                if let Some(i) = returned_id.filter(|_| !r.info.arbitrary) {
                    resolved.id = Some(self.ids[usize::from(i) % self.ids.len()].clone());
                }
                for inner in r.inner {
                    if let Some(h) = inner.into_nested() {
                        self.stats.nested += 1;
                        self.nested.push((h.entry(), r.entry));
                        resolved = resolved.with_nested(h);
                    }
                }
                let id = if r.info.arbitrary {
                    None
                } else {
                    resolved.id.clone().or_else(|| r.info.requested.clone())
                };
                self.results.insert(
                    r.entry,
                    Stored {
                        value,
                        content_key: id.as_ref().and_then(|i| i.content_key()),
                        id,
                        safe,
                        ttl: (r.info.ttl_ms > 0).then(|| TtlResult {
                            session: r.info.session,
                            safe,
                            valid_until: self.valid_until(&r.info.key, r.info.ttl_ms),
                            made_at: self.step as u64,
                        }),
                    },
                );
                Command::Finish(Ok(resolved))
            }
            Outcome::Error | Outcome::Panic | Outcome::Cancelled => {
                self.stats.errors += 1;
                // The resolver failed: the refs its nested calls gave it go.
                drop(r.inner);
                let run = self.stats.errors as u64;
                match outcome {
                    Outcome::Error => Command::Finish(Err(CallError::Resolver(
                        ResolverError::new(RunFailed(run)),
                    ))),
                    Outcome::Panic => Command::Panic(run),
                    _ => {
                        self.cancelled_keys.insert(r.info.key.clone());
                        Command::Finish(Err(CallError::Cancelled))
                    }
                }
            }
        };
        if r.tx.send(command).is_err() {
            return Err(self.fail(
                "INV-7",
                format!("resolver of {} vanished before it was resolved", r.entry),
            ));
        }
        Ok(())
    }

    // ---- after each settle ----

    /// Takes in new resolvers and finished callers, judging each.
    fn collect(&mut self) -> Result<(), Failure> {
        let started = std::mem::take(&mut self.registry.lock().expect("registry").started);
        for s in started {
            self.stats.runs += 1;
            // T-2: a slow store's delay bites. The call's lookup waits for
            // the store's answer (or the deadline) before the cache decides,
            // so its resolver cannot start sooner: an injected delay that
            // never delays anything leaves slow stores untested.
            let waited = s.started_at.duration_since(s.info.issued_at);
            ensure!(
                self,
                waited >= Duration::from_millis(s.info.store_wait_ms),
                "T-2",
                "a resolver of {} started {} ms after its call, whose TTL lookup had to wait \
                 {} ms for the store",
                s.info.key,
                waited.as_millis(),
                s.info.store_wait_ms
            );
            if s.info.store_wait_ms > 0 {
                self.stats.slow_lookups += 1;
            }
            let ran = self.spans.lock().expect("spans").resolver_ran(s.info.call);
            ran.map_err(|v| self.fail("S-5", v.detail))?;
            let r = Running {
                entry: s.rctx.entry.1,
                rctx: s.rctx,
                tx: s.tx,
                info: s.info,
                done: s.done,
                inner: Vec::new(),
            };
            if r.detached() {
                if r.info.dnc {
                    self.stats.detached += 1;
                } else {
                    self.stats.forced_retries += 1;
                }
            }
            self.check_singleflight(&r)?;
            self.running.push(r);
        }
        // Resolvers that returned on their own (cancelled): their nested
        // results are dropped with them.
        let (gone, live): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| r.done.load(Ordering::SeqCst));
        self.running = live;
        drop(gone);
        let mut i = 0;
        while i < self.callers.len() {
            if !self.callers[i].handle.is_finished() {
                i += 1;
                continue;
            }
            let mut c = self.callers.remove(i);
            let out = (&mut c.handle).now_or_never();
            let answer = match &out {
                Some(Ok(timed)) => Answer::of(&timed.result),
                _ => Answer::Other,
            };
            let answered = self
                .spans
                .lock()
                .expect("spans")
                .call_answered(c.info.call, answer);
            answered.map_err(|v| self.fail("S-5", v.detail))?;
            match out {
                None => return Err(self.fail("INV-7", "a finished caller has no output".into())),
                Some(Err(e)) if e.is_cancelled() && c.cancelled => {}
                Some(Err(e)) => {
                    return Err(self.fail("INV-10", format!("a caller task failed: {e}")))
                }
                Some(Ok(Timed { result, waited })) => self.judge(c, result, waited)?,
            }
        }
        let found = std::mem::take(&mut *self.span_found.lock().expect("spans"));
        if let Some(detail) = found.into_iter().next() {
            return Err(self.fail("S-5", detail));
        }
        self.check_ttl_writes()
    }

    /// The rows the cache wrote since the last settle (T-2, T-3, T-4): each
    /// for a call key some TTL'd resolver produced a safe result for, naming
    /// a storage key whose stored entry (if still there) was itself safe,
    /// and judged by the row check the simulation and the machine driver
    /// share.
    fn check_ttl_writes(&mut self) -> Result<(), Failure> {
        for w in self.recorder.take_writes() {
            self.stats.ttl_writes += 1;
            ensure!(
                self,
                self.safe_keys.contains(&w.call_key),
                "T-3",
                "a TTL row for {} was written, but no result of it was safe to persist",
                w.call_key
            );
            let stored = self
                .cache
                .inspect(|m| m.completed_under(&w.row.storage_key));
            if let Some(entry) = stored {
                let safe = self.results.get(&entry).and_then(|r| r.ttl).map(|t| t.safe);
                ensure!(
                    self,
                    safe != Some(false),
                    "T-3",
                    "a TTL row for {} names {}, stored as {entry}, whose result was not safe to persist",
                    w.call_key,
                    w.row.storage_key
                );
            }
            let ttl_ms = self.ttl_of.get(&w.call_key).copied().unwrap_or(0);
            let judged = self.rows.written(RowWrite {
                call_key: &w.call_key,
                label: &w.call_key,
                storage_key: &w.row.storage_key,
                expiration: w.row.expiration,
                compare: w.compare.as_deref(),
                ttl_ms,
                // The driver's clock only moves forward.
                high_water: self.clock.now_ms(),
            });
            judged.map_err(|v| self.fail(v.rule, v.detail))?;
        }
        Ok(())
    }

    /// INV-4 / K-5: a new resolver never runs beside another one for the
    /// same deduplicated key.
    fn check_singleflight(&self, r: &Running) -> Result<(), Failure> {
        if r.detached() {
            return Ok(());
        }
        for o in &self.running {
            if o.done.load(Ordering::SeqCst) || o.detached() || o.info.arbitrary != r.info.arbitrary
            {
                continue;
            }
            let abandoned = self.cache.inspect(|m| m.waiters(o.entry).is_empty());
            let clash = if r.info.arbitrary {
                // K-5: on a change cache an abandoned init still holds its key.
                o.info.key == r.info.key && (!abandoned || self.change)
            } else {
                o.rctx.storage_key == r.rctx.storage_key
                    && !r.info.conc.is_empty()
                    && o.info.conc == r.info.conc
                    && !abandoned
                    && (r.info.ttl_ms == 0 || o.info.session == r.info.session)
            };
            ensure!(
                self,
                !clash,
                "INV-4",
                "resolver of {} started beside {} for the same key {}",
                r.entry,
                o.entry,
                r.info.key
            );
        }
        Ok(())
    }

    /// INV-6 (C-9): a failed run's error goes to the callers of that run
    /// only. Once one caller has it the run has failed, and every later
    /// call of its key runs the resolver again (C-9), so a call issued at a
    /// later step that gets it was served it from the cache. (A run whose
    /// error nobody got, every caller having left, is not judged here.)
    fn judge_failed_run(&mut self, run: u64, info: &RunInfo) -> Result<(), Failure> {
        let issued = info.issued.0 as usize;
        let first = *self.failures_delivered.entry(run).or_insert(self.step);
        ensure!(
            self,
            issued <= first,
            "INV-6",
            "an error served from the cache: run {run} failed and a caller had its error at step {first}, \
             then a call of {} issued at step {issued} got it too",
            info.key
        );
        Ok(())
    }

    /// Judges what one caller got.
    fn judge(
        &mut self,
        c: CallerTask,
        result: Result<CallResult<u32>, CallError>,
        waited: Duration,
    ) -> Result<(), Failure> {
        let session = match c.origin {
            Origin::Top(s) => s,
            Origin::Inner(_) => None,
        };
        let closed_now = session.is_some_and(|s| !self.is_open(s));
        // C-4 / C-5, judged by the check the simulation shares; this driver
        // follows neither chains nor the wait-for graph.
        let standing = Standing {
            nested: matches!(c.origin, Origin::Inner(_)),
            session_open: session.map(|_| !closed_now),
            revisits: None,
            closes_cycle: None,
        };
        if let Err(v) = answers::judge(standing, Answered::of(&result)) {
            return Err(self.fail(v.rule, format!("{} ({})", v.detail, c.info.key)));
        }
        let result = match result {
            Err(e) => {
                match &e {
                    CallError::SessionClosed => {
                        self.stats.session_closed += 1;
                        ensure!(self, closed_now, "S-2", "an open session was refused");
                        // At once: a closed session's call waits for
                        // nothing (no store lookup, no resolver) first.
                        ensure!(
                            self,
                            !c.closed_at_issue || waited.is_zero(),
                            "S-2",
                            "a call on a closed session waited {waited:?} for its refusal"
                        );
                    }
                    CallError::ClosedDuringExecution => {
                        self.stats.closed_during += 1;
                        ensure!(
                            self,
                            closed_now && !c.closed_at_issue,
                            "S-3",
                            "closed during execution, session closed now {closed_now}"
                        );
                    }
                    CallError::Cancelled => {
                        ensure!(
                            self,
                            c.token.is_cancelled() || self.cancelled_keys.contains(&c.info.key),
                            "INV-7",
                            "a caller that did not cancel got a cancellation"
                        );
                    }
                    CallError::Recursive { .. } => self.stats.recursive += 1,
                    CallError::Resolver(error) | CallError::Panicked(error) => {
                        if let Some(RunFailed(run)) = error.downcast_ref() {
                            self.judge_failed_run(*run, &c.info)?;
                        }
                    }
                    other => {
                        return Err(self.fail("C-1", format!("unexpected error {other}")));
                    }
                }
                ensure!(
                    self,
                    !c.closed_at_issue || e == CallError::SessionClosed,
                    "S-2",
                    "a call on a closed session gave {e}"
                );
                return Ok(());
            }
            Ok(r) => r,
        };
        ensure!(
            self,
            !c.closed_at_issue,
            "S-2",
            "a call on a closed session was served"
        );
        let entry = result.entry();
        let Some(stored) = self.results.get(&entry) else {
            return Err(self.fail(
                "INV-6",
                format!("served {entry}, which never produced a result"),
            ));
        };
        ensure!(
            self,
            result.value() == stored.value.as_ref(),
            "INV-5",
            "served {:?} from {entry}, which holds {:?}",
            result.value(),
            stored.value
        );
        if result.content_hit() {
            self.stats.content_hits += 1;
            let want = c.info.requested.as_ref().and_then(|i| i.content_key());
            ensure!(
                self,
                want.is_some() && stored.content_key == want,
                "INV-5",
                "content hit on {entry} (content {:?}) for content {want:?}",
                stored.content_key
            );
            ensure!(
                self,
                result.id() == c.info.requested.as_ref(),
                "C-8",
                "a content hit must report the requested ID"
            );
        } else {
            ensure!(
                self,
                result.id() == stored.id.as_ref(),
                "INV-5",
                "served {:?}, {entry} stores {:?}",
                result.id().map(|i| i.call_key()),
                stored.id.as_ref().map(|i| i.call_key())
            );
        }
        ttl_served::check_safety(result.safe_to_persist(), stored.safe)
            .map_err(|v| self.fail(v.rule, format!("{entry}: {}", v.detail)))?;
        if result.hit() {
            self.stats.hits += 1;
            ensure!(
                self,
                !c.info.dnc,
                "C-2",
                "a do-not-cache call was served a hit"
            );
            if !result.content_hit() && !c.info.arbitrary {
                let call = ServedCall {
                    ttl: c.info.ttl_ms > 0,
                    session: c.info.session,
                    arrived_at: c.info.issued.0,
                    clock: c.info.issued.1,
                };
                if let Err(v) = ttl_served::judge(call, stored.ttl) {
                    return Err(self.fail(v.rule, format!("{entry}: {}", v.detail)));
                }
            }
        }
        if result.is_detached() {
            ensure!(
                self,
                c.info.dnc || !result.hit(),
                "C-2",
                "a detached result for a cached call"
            );
        }
        if result.holds_ref() {
            ensure!(
                self,
                session.is_none() || result.is_detached(),
                "S-1",
                "a result in session {session:?} holds its own ref"
            );
            match c.origin {
                Origin::Inner(parent) => {
                    match self
                        .running
                        .iter_mut()
                        .find(|r| r.entry == parent && !r.done.load(Ordering::SeqCst))
                    {
                        Some(p) => p.inner.push(result),
                        None => drop(result),
                    }
                }
                Origin::Top(_) => self.held.push(result),
            }
        } else {
            let Some(s) = session.filter(|_| !result.is_detached()) else {
                return Err(self.fail(
                    "S-1",
                    format!("result of {entry} holds no ref and no session owns it"),
                ));
            };
            ensure!(
                self,
                !closed_now,
                "S-3",
                "a closed session {s} was handed {entry}"
            );
            self.owned.push((s, entry));
        }
        Ok(())
    }

    /// S-1, S-7, C-12: a close released the refs its session owned and
    /// counted the failing hooks that ran since `failed_before`.
    fn judge_close(
        &self,
        s: SessionId,
        summary: &CloseSummary,
        failed_before: usize,
    ) -> Result<(), Failure> {
        let facts = CloseFacts {
            released: summary.released,
            hook_errors: summary.hook_errors,
            owned: self.owned.iter().filter(|(x, _)| *x == s).count(),
            // Every task runs until blocked before the next operation, so
            // each answer is seen before a close can be issued.
            unseen: 0,
            failed_hooks: self.hooks.failed_runs() - failed_before,
        };
        check_close(facts).map_err(|v| self.fail(v.rule, format!("closing {s}: {}", v.detail)))
    }

    /// Releases a held result: an error exactly when a failing hook ran (C-12).
    fn release(&self, r: CallResult<u32>) -> Result<(), Failure> {
        let entry = r.entry();
        let failed_before = self.hooks.failed_runs();
        let result = r.release();
        check_release(&result, self.hooks.failed_runs() - failed_before)
            .map_err(|v| self.fail(v.rule, format!("release of {entry}: {}", v.detail)))
    }

    /// C-1: a call with no call ID is refused at once, runs nothing and
    /// caches nothing, with a TTL (the store is not asked) or a caller
    /// already cancelled too. Polled once in line: the refusal needs no
    /// other task.
    fn invalid_call(
        &mut self,
        session: Option<u8>,
        ttl: Ttl,
        cancelled: bool,
    ) -> Result<(), Failure> {
        self.stats.invalid_keys += 1;
        let (ctx, _) = self.top_ctx(session);
        if cancelled {
            ctx.cancel.cancel();
        }
        if ctx.session.is_some_and(|s| !self.is_open(s)) {
            self.stats.closed_invalid_keys += 1;
        }
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let resolver = move |_: ResolverCtx| {
            flag.store(true, Ordering::SeqCst);
            async { Ok(Resolved::value(0)) }
        };
        let entries_before = self.cache.entries();
        let answer = self
            .cache
            .get_or_init_call(&ctx, CallKey::missing().ttl_ms(ttl.ms()), resolver)
            .now_or_never();
        let facts = InvalidKeyCall {
            resolver_ran: ran.load(Ordering::SeqCst),
            entries_before,
            entries_after: self.cache.entries(),
        };
        check_invalid_key(facts, answer.as_ref()).map_err(|v| self.fail(v.rule, v.detail))
    }

    fn check(&mut self) -> Result<(), Failure> {
        self.cache
            .check_invariants()
            .map_err(|v| self.fail(v.rule, v.detail))?;
        // The C-15 totals and the O-3 leak report every FULL_CHECK_EVERY
        // checks and when asked (after the last step, and once all is
        // released): building the report (a label per entry) was a tenth
        // of an execution, and a wrong report is still found, at most that
        // many steps late.
        self.since_full += 1;
        if std::mem::take(&mut self.full_next) || self.since_full >= FULL_CHECK_EVERY {
            self.since_full = 0;
            let c = &self.cache;
            let report = c.leak_report();
            check_counts(&c.buckets(), c.entries(), &report, c.live_entries())
                .and_then(|()| check_report_text(&report, &c.inspect(|m| m.index_lines())))
                .map_err(|v| self.fail(v.rule, v.detail))?;
        }
        let open = self.sessions.iter().filter(|s| s.is_open()).count();
        ensure!(
            self,
            self.cache.connected_clients() == open,
            "S-6",
            "the cache counts {} connected clients, {open} sessions are open",
            self.cache.connected_clients()
        );
        check_hook_errors(
            self.cache.metrics().release_hook_errors(),
            self.hooks.failed_runs() as u64,
        )
        .map_err(|v| self.fail(v.rule, v.detail))?;
        let direct: Vec<EntryId> = self
            .held
            .iter()
            .map(|r| r.entry())
            .chain(self.owned.iter().map(|(_, e)| *e))
            .chain(
                self.running
                    .iter()
                    .flat_map(|r| r.inner.iter().map(|x| x.entry())),
            )
            .collect();
        let shadow = ref_counts(direct.iter().copied(), &mut self.nested);
        self.cache
            .inspect(|m| m.check_refcounts(&shadow))
            .map_err(|v| self.fail(v.rule, v.detail))?;
        let cache = self.cache.clone();
        self.hooks
            .check(|e| cache.inspect(|m| m.contains(e)))
            .map_err(|(rule, detail)| self.fail(rule, detail))?;
        for r in &self.running {
            ensure!(
                self,
                self.cache.inspect(|m| m.contains(r.entry)),
                "INV-7",
                "the entry {} of a running resolver is gone",
                r.entry
            );
            if r.done.load(Ordering::SeqCst) {
                continue;
            }
            // C-5 / INV-7, through the public query: a resolver still
            // running is told to stop exactly when no waiter is left.
            let waiters = self.cache.waiters(r.entry);
            let cancelled = r.rctx.cancel.is_cancelled();
            ensure!(
                self,
                waiters.is_some() && (waiters == Some(0)) == cancelled,
                "INV-7",
                "running {} reports {waiters:?} waiters, its resolver cancelled: {cancelled}",
                r.entry
            );
        }
        Ok(())
    }

    /// Closes every session, finishes every resolver, releases every result;
    /// then INV-11 (nobody waits) and INV-1.
    async fn quiesce(&mut self) -> Result<(), Failure> {
        for i in 0..self.sessions.len() {
            let s = self.sessions[i].id();
            if self.is_open(s) {
                let failed_before = self.hooks.failed_runs();
                let summary = self.sessions[i]
                    .close()
                    .map_err(|e| self.fail("S-1", format!("close {s}: {e}")))?;
                self.judge_close(s, &summary, failed_before)?;
                self.closed(s)?;
            }
        }
        self.settle(1).await;
        self.collect()?;
        // Everything once after the last step (and its closes) ...
        self.full_next = true;
        self.check()?;
        for _ in 0..QUIESCE_ROUNDS {
            if self.running.is_empty() && self.callers.is_empty() {
                break;
            }
            while self.running.iter().any(|r| !r.done.load(Ordering::SeqCst)) {
                self.resolve(0, Outcome::Value(0), None, false)?;
            }
            // Long enough for any store delay.
            self.settle(3_000).await;
            self.collect()?;
            self.check()?;
        }
        ensure!(
            self,
            self.running.is_empty() && self.callers.is_empty(),
            "INV-11",
            "{} callers still wait and {} resolvers still run after {QUIESCE_ROUNDS} rounds",
            self.callers.len(),
            self.running.len()
        );
        while let Some(r) = self.held.pop() {
            self.release(r)?;
            self.check()?;
        }
        // ... and once when everything is released.
        self.full_next = true;
        self.check()?;
        ensure!(
            self,
            self.nested.is_empty(),
            "C-11",
            "nested refs outlived their parents: {:?}",
            self.nested
        );
        self.check_quiescent()?;
        // Every call has settled, so every lookup it made and every write
        // has been answered and counted (checked only here: a call waiting
        // out a late answer counts it when the deadline passes).
        check_store_failures(
            self.cache.metrics().ttl_store_failures(),
            self.recorder.lookup_and_write_errors(),
            self.recorder.answers_later_than(STORE_DEADLINE_MS),
        )
        .map_err(|v| self.fail(v.rule, v.detail))?;
        let spans = self.spans.lock().expect("spans").finish();
        spans.map_err(|v| self.fail("S-5", v.detail))?;
        self.stats.spans = self.spans.lock().expect("spans").spans_seen() as usize;
        self.hooks
            .check_final()
            .map_err(|(rule, detail)| self.fail(rule, detail))
    }

    /// INV-1: nothing is left, by every count the cache keeps, and its
    /// invariants hold.
    fn check_quiescent(&self) -> Result<(), Failure> {
        let report = self.cache.leak_report();
        ensure!(
            self,
            self.cache.entries() == 0
                && self.cache.live_entries() == 0
                && self.cache.inspect(|m| m.live_refs()) == 0
                && self.cache.buckets() == Buckets::default()
                && self.cache.connected_clients() == 0
                && report.is_clean(),
            "INV-1",
            "not quiescent: entries {}, live entries {}",
            self.cache.entries(),
            self.cache.live_entries()
        );
        self.cache
            .check_invariants()
            .map_err(|v| self.fail(v.rule, v.detail))
    }

    /// After the runtime was shut down with callers waiting and resolvers
    /// running: every call a dropped resolver ran has settled (its waiters
    /// answered or gone, C-5, INV-11; nothing waits and nothing runs), and
    /// once the driver lets go of its results and sessions nothing is left
    /// and every release hook ran once (INV-1, INV-10).
    fn after_shutdown(mut self) -> Result<Stats, Failure> {
        self.stats.shutdowns += 1;
        self.cache
            .check_invariants()
            .map_err(|v| self.fail(v.rule, v.detail))?;
        let buckets = self.cache.buckets();
        ensure!(
            self,
            buckets.ongoing_calls == 0 && buckets.ongoing_arbitrary == 0,
            "INV-11",
            "the runtime is gone but {} calls and {} arbitrary inits are still in flight",
            buckets.ongoing_calls,
            buckets.ongoing_arbitrary
        );
        // What the driver still holds: results, the answers of callers it
        // has not collected yet (kept by their tasks' handles), and the
        // nested results it keeps for its resolvers.
        self.held.clear();
        self.callers.clear();
        self.running.clear();
        for s in std::mem::take(&mut self.sessions) {
            if self.is_open(s.id()) {
                s.close()
                    .map_err(|e| self.fail("S-1", format!("close {}: {e}", s.id())))?;
            }
        }
        self.check_quiescent()?;
        self.stats.failed_hooks = self.hooks.failed_runs();
        self.hooks
            .check_final()
            .map_err(|(rule, detail)| self.fail(rule, detail))?;
        Ok(self.stats)
    }
}

/// Polls `fut` once with a waker that wakes nothing, then awaits it in its
/// task: every waiting call is polled again with a different waker, as a
/// call moved between tasks or raced in a `select!` is, and must wake the
/// newest one (a waiter that kept the first would sleep forever, INV-11).
async fn repolled<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(out) = fut
        .as_mut()
        .poll(&mut Context::from_waker(std::task::Waker::noop()))
    {
        return out;
    }
    fut.await
}
