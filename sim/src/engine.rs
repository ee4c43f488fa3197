//! The engine host: owns the caches (one call cache, one change cache) and
//! serves the protocol; one connection is one session, and a dropped
//! connection closes it (S-6). A restart (turmoil bounce) starts a new
//! incarnation: memory lost, TTL store kept.
//!
//! The host is generic over its transport ([`Listener`]) and over what it
//! reports to ([`EngineHost`]): the simulation plugs in the [`World`] (its
//! trace, simulated clock and oracles), the real server (`cache-sim serve`)
//! a logger and the system clock. The protocol, the sessions and the
//! resolvers that follow the plan are this one code in both.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::checks::telemetry::{as_call, current_call, Answer, CallFacts};
use cache_core::error::{CallError, ResolverError};
use cache_core::facade::{Cache, CallKey, CallResult, ResolverCtx, Session, Span, Telemetry};
use cache_core::id::CallId;
use cache_core::machine::{FlightKey, Resolved};
use cache_core::ttl::StoreError;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::failure::{Cause, RunFailure};
use crate::oracle::{self, FlightClass, Observation, RunShadow, Served};
use crate::plan::{Behave, Nest, OpKind, Outcome, Plan};
use crate::protocol::{ErrKind, Request, Response, IDLE_MS, PORT};
use crate::transport::{Listener, Stream};
use crate::world::{Engine, Plant, Val, World};

/// A plan both sides of a connection share, with its keys' IDs.
pub trait PlanView: Clone + Send + Sync + 'static {
    /// The plan.
    fn plan(&self) -> &Plan;
    /// The call ID of the plan's key `k`.
    fn key_id(&self, k: u64) -> CallId;
}

/// What the engine host reports to and reads its time from: the simulation's
/// [`World`], or the real server's logger. Cheap to clone (an `Arc`).
pub trait EngineHost: Clone + Send + Sync + 'static {
    /// The plans connections run.
    type Plan: PlanView;
    /// The plan of a client that said `HELLO client [scenario seed]`;
    /// an error refuses the connection.
    fn plan_for(&self, client: usize, named: Option<&(String, u64)>) -> Result<Self::Plan, String>;
    /// Ms since the start (simulated in a simulation).
    fn now(&self) -> u64;
    /// The engine clock's reading now (the cache's `Clock`).
    fn clock_ms(&self) -> i64;
    /// The highest engine clock reading so far.
    fn clock_high_water(&self) -> i64;
    /// A fresh id (outputs, runs).
    fn next_id(&self) -> u64;
    /// One line of the host's log.
    fn trace(&self, who: &str, what: impl AsRef<str>);
    /// Counts an event; nothing by default.
    fn count(&self, _what: &str) {}
    /// Reports an observation to the oracles; nothing by default.
    fn observe(&self, _obs: Observation<'_>) {}
    /// The simulation's world, where planted violations reach into the
    /// shadow model; none outside a simulation.
    fn world(&self) -> Option<&World> {
        None
    }
    /// A violation planted on purpose (simulation self-tests only).
    fn plant(&self) -> Option<Plant> {
        self.world().and_then(|w| w.plant)
    }
}

impl PlanView for Arc<World> {
    fn plan(&self) -> &Plan {
        &self.plan
    }
    fn key_id(&self, k: u64) -> CallId {
        World::key_id(self, k)
    }
}

impl EngineHost for Arc<World> {
    type Plan = Arc<World>;
    fn plan_for(&self, _: usize, _: Option<&(String, u64)>) -> Result<Self::Plan, String> {
        Ok(self.clone())
    }
    fn now(&self) -> u64 {
        World::now(self)
    }
    fn clock_ms(&self) -> i64 {
        cache_core::facade::Clock::now_ms(&self.clock)
    }
    fn clock_high_water(&self) -> i64 {
        World::clock_high_water(self)
    }
    fn next_id(&self) -> u64 {
        World::next_id(self)
    }
    fn trace(&self, who: &str, what: impl AsRef<str>) {
        World::trace(self, who, what)
    }
    fn count(&self, what: &str) {
        World::count(self, what)
    }
    fn observe(&self, obs: Observation<'_>) {
        oracle::observe(self, obs)
    }
    fn world(&self) -> Option<&World> {
        Some(self)
    }
    fn plant(&self) -> Option<Plant> {
        self.plant
    }
}

/// The simulation's telemetry sink: every span goes to the S-5 judge with
/// the number of the call it was emitted for. It holds the world weakly:
/// the world owns the engine and its caches, which own the sink.
struct SpanSink(std::sync::Weak<World>);

impl Telemetry for SpanSink {
    fn span(&self, span: Span) {
        let Some(world) = self.0.upgrade() else {
            return;
        };
        let Some(call) = current_call() else {
            world.violate("S-5", format!("a span for {} outside any call", span.key));
            return;
        };
        // For `cache-sim diff` and `explain`: inert unless a subscriber
        // listens.
        tracing::debug!(target: "sim::engine::span", cached = span.cached);
        let cached = span.cached || world.plant == Some(Plant::SpanSaysCached);
        let times = if world.plant == Some(Plant::SpanTwice) {
            2
        } else {
            1
        };
        for _ in 0..times {
            oracle::observe(&world, Observation::Span { call, cached });
        }
    }
}

/// The S-5 judge's number for a call with `facts` (none outside a
/// simulation). Sessions are told apart across incarnations and caches.
fn judge_call<H: EngineHost>(host: &H, facts: CallFacts) -> Option<u64> {
    host.world().map(|w| oracle::telemetry_call(w, facts))
}

/// One number per session of one cache of one incarnation.
fn session_number(inc: u64, change: bool, sid: cache_core::machine::SessionId) -> u64 {
    (inc << 33) | (u64::from(change) << 32) | (sid.0 & 0xffff_ffff)
}

/// How long the call cache waits for the TTL store (T-2): the cache's
/// default, stated here so that the store-failure oracle judges by the
/// same figure.
pub const STORE_DEADLINE_MS: u64 = 1000;

/// The engine host's software in a simulation (called again on every
/// restart).
pub async fn serve(world: Arc<World>) -> turmoil::Result {
    let eng = world.start_incarnation(|inc| {
        let clock = Arc::new(world.clock.clone());
        Engine {
            inc,
            calls: Cache::builder()
                .instance_id_for_replay(inc * 2)
                .telemetry(Arc::new(SpanSink(Arc::downgrade(&world))))
                .blocking_executor(Arc::new(cache_core::facade::Inline))
                .ttl_store(world.store.clone())
                .store_deadline_ms(STORE_DEADLINE_MS)
                .clock(clock.clone())
                .bugs(world.bugs)
                .build(),
            changes: Cache::builder()
                .instance_id_for_replay(inc * 2 + 1)
                .telemetry(Arc::new(SpanSink(Arc::downgrade(&world))))
                .blocking_executor(Arc::new(cache_core::facade::Inline))
                .change_cache()
                .clock(clock)
                .bugs(world.bugs)
                .build(),
            stop: CancellationToken::new(),
        }
    });
    world.trace("engine", format!("start incarnation {}", eng.inc));
    tokio::spawn(collect_expired(world.clone(), eng.clone()));
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    accept_loop(world, eng, listener).await?;
    Ok(())
}

/// Accepts connections until the engine stops (then waits forever: the
/// simulation bounces the host), one task per connection. Returns only on
/// an accept error.
pub async fn accept_loop<H: EngineHost, L: Listener>(
    host: H,
    eng: Engine,
    listener: L,
) -> std::io::Result<()> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = eng.stop.cancelled() => None,
            a = listener.accept_stream() => Some(a?),
        };
        match accepted {
            Some(stream) => {
                tokio::spawn(connection(host.clone(), eng.clone(), stream));
            }
            None => std::future::pending::<()>().await,
        }
    }
}

/// Simulated ms between two TTL garbage collections.
const GC_EVERY_MS: u64 = 500;

/// T-5: the engine deletes expired TTL rows now and then, while calls keep
/// reading and upserting them (T-4) — as the real engine's background GC
/// does. Rows are never the cache's memory, so nothing here may change an
/// answer; the trace records what each round deleted.
pub async fn collect_expired<H: EngineHost>(host: H, eng: Engine) {
    loop {
        tokio::select! {
            biased;
            _ = eng.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(GC_EVERY_MS)) => {}
        }
        match eng.calls.gc_ttl() {
            Ok(0) => {}
            Ok(n) => host.trace("engine", format!("gc: {n} expired TTL rows deleted (T-5)")),
            Err(e) => host.trace("engine", format!("gc failed: {}", store_error_text(&e))),
        }
    }
}

/// A store error for the trace: without the store's file path, which is a
/// fresh temporary directory in every run (INV-12).
fn store_error_text(e: &StoreError) -> String {
    match e {
        StoreError::Open { .. } => "cannot open the TTL store".into(),
        StoreError::Corrupt { .. } => "the TTL store is corrupt".into(),
        StoreError::Locked { .. } => "the TTL store is locked by another connection".into(),
        other => other.to_string(),
    }
}

/// What woke a connection task.
enum Event {
    Write(String),
    Read(Result<std::io::Result<Option<String>>, tokio::time::error::Elapsed>),
}

struct Conn<H: EngineHost> {
    host: H,
    plan: H::Plan,
    eng: Engine,
    calls: Arc<Session<Val>>,
    changes: Arc<Session<Val>>,
    client: usize,
    tokens: Arc<Mutex<BTreeMap<u64, CancellationToken>>>,
    tx: mpsc::UnboundedSender<String>,
}

async fn connection<H: EngineHost, S: Stream>(host: H, eng: Engine, stream: S) {
    // This task owns both halves of the socket, so that the order in which
    // sockets close (and send FIN/RST) never depends on tokio's task order.
    let (rd, mut wr) = stream.split();
    let mut lines = BufReader::new(rd).lines();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let idle = Duration::from_millis(IDLE_MS);
    let (client, named) = match tokio::time::timeout(idle, lines.next_line()).await {
        Ok(Ok(Some(l))) => match Request::parse(&l) {
            Some(Request::Hello(c, named)) => (c, named),
            _ => return,
        },
        _ => return,
    };
    let plan = match host.plan_for(client, named.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            host.trace("engine", format!("client{client} refused: {e}"));
            return;
        }
    };
    let conn = Conn {
        calls: Arc::new(eng.calls.open_session()),
        changes: Arc::new(eng.changes.open_session()),
        host: host.clone(),
        plan,
        eng: eng.clone(),
        client,
        tokens: Arc::default(),
        tx,
    };
    let sid = conn.calls.id();
    host.observe(Observation::SessionOpened {
        inc: eng.inc,
        session: sid,
    });
    host.trace("engine", format!("client{client} connected: session {sid}"));
    // tokio's clock inside a turmoil host is the simulated one: deterministic.
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        let event = tokio::select! {
            biased;
            _ = eng.stop.cancelled() => {
                conn.close("engine stopping");
                return;
            }
            Some(out) = rx.recv() => Event::Write(out),
            l = tokio::time::timeout_at(deadline, lines.next_line()) => Event::Read(l),
        };
        let l = match event {
            Event::Write(out) => {
                // Bounded as the client's writes are: a client cut off for
                // long fills the link, and the engine drops it (S-6).
                let write = wr.write_all(out.as_bytes());
                if !matches!(tokio::time::timeout(idle, write).await, Ok(Ok(()))) {
                    host.trace("engine", format!("client{client} write failed ({sid})"));
                    break;
                }
                continue;
            }
            Event::Read(l) => l,
        };
        deadline = tokio::time::Instant::now() + idle;
        let line = match l {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => {
                host.trace("engine", format!("client{client} disconnected ({sid})"));
                break;
            }
            Ok(Err(e)) => {
                host.trace(
                    "engine",
                    format!("client{client} connection error ({sid}): {e}"),
                );
                break;
            }
            Err(_) => {
                host.trace("engine", format!("client{client} idle, dropping {sid}"));
                break;
            }
        };
        match Request::parse(&line) {
            Some(Request::Call(req, op)) => {
                let token = CancellationToken::new();
                conn.tokens.lock().unwrap().insert(req, token.clone());
                tokio::spawn(call(conn.share(), req, op, token));
            }
            Some(Request::Cancel(req)) => {
                if let Some(t) = conn.tokens.lock().unwrap().get(&req) {
                    host.trace("engine", format!("client{client} cancels r{req}"));
                    t.cancel();
                }
            }
            Some(Request::Close) => {
                // The session closes with its pipelined calls still in
                // flight (S-1a, S-3); then, the client being gone, their
                // waiters leave, as on a disconnect.
                conn.close("close");
                for t in conn.tokens.lock().unwrap().values() {
                    t.cancel();
                }
                let line = Response::Closed.line();
                let closed = wr.write_all(line.as_bytes());
                let _ = tokio::time::timeout(idle, closed).await;
                return;
            }
            Some(Request::Ping) | Some(Request::Hello(..)) | None => {}
        }
    }
    // S-6: a dropped connection closes its session; its waiters leave.
    for t in conn.tokens.lock().unwrap().values() {
        t.cancel();
    }
    if host.plant() == Some(Plant::LeakSessionOnDisconnect) {
        std::mem::forget(conn.calls.clone());
        host.trace("engine", format!("PLANTED: session {sid} forgotten"));
        return;
    }
    conn.close("disconnect");
}

impl<H: EngineHost> Conn<H> {
    fn share(&self) -> Conn<H> {
        Conn {
            host: self.host.clone(),
            plan: self.plan.clone(),
            eng: self.eng.clone(),
            calls: self.calls.clone(),
            changes: self.changes.clone(),
            client: self.client,
            tokens: self.tokens.clone(),
            tx: self.tx.clone(),
        }
    }

    fn close(&self, why: &str) {
        let sid = self.calls.id();
        self.host
            .observe(Observation::SessionClosing { inc: self.eng.inc });
        let summary = self.calls.close();
        // What the close reported (S-1, S-7), for the accounting oracle.
        let reported = summary.as_ref().ok().map(|s| {
            let hook_errors = if self.host.plant() == Some(Plant::CloseHidesHookErrors) {
                0
            } else {
                s.hook_errors
            };
            let mut released = s.released;
            if self.host.plant() == Some(Plant::CloseUndercountsRefs) {
                released = released.saturating_sub(1);
            }
            (released, hook_errors)
        });
        let _ = self.changes.close();
        match summary {
            Ok(s) => self.host.trace(
                "engine",
                format!(
                    "{why} {sid}: released {}, entries {} -> {} (S-7)",
                    s.released, s.entries_before, s.entries_after
                ),
            ),
            Err(e) => self.host.trace("engine", format!("{why} {sid}: {e}")),
        }
        // What the close's releases left in the cache's indexes, for
        // `cache-sim diff` (a wrong removal shows here before any lookup
        // meets it); computed only when a subscriber listens.
        index_snapshot(&self.eng, || format!("session {sid} closed"));
        self.host.observe(Observation::SessionClosed {
            cache: &self.eng.calls,
            inc: self.eng.inc,
            session: sid,
            summary: reported,
        });
    }
}

/// C-1: a call with no call ID, made through the session's own call API
/// (`Session::call`: what a user who needs no cancellation token calls).
/// It must be refused at once — polled once, it may not wait on anything —
/// with its resolver never run and the entries unchanged.
async fn invalid_call<H: EngineHost>(conn: &Conn<H>) -> Result<CallResult<Val>, CallError> {
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    let resolver = move |_: ResolverCtx| {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        async { Ok(Resolved::no_value()) }
    };
    let entries_before = conn.eng.calls.entries();
    let answer = if conn.host.plant() == Some(Plant::InvalidKeyServed) {
        // Planted: the key keeps an ID, so the call runs and is cached.
        let key = CallKey::new(conn.plan.key_id(0));
        poll_once(conn.calls.call(key, resolver))
    } else {
        poll_once(conn.calls.call(CallKey::missing(), resolver))
    };
    conn.host.observe(Observation::InvalidKeyAnswered {
        facts: cache_core::checks::accounting::InvalidKeyCall {
            resolver_ran: ran.load(std::sync::atomic::Ordering::SeqCst),
            entries_before,
            entries_after: conn.eng.calls.entries(),
        },
        answer: answer
            .as_ref()
            .map(|r| r.as_ref().map(|_| ()).map_err(Clone::clone)),
    });
    answer.unwrap_or_else(|| {
        Err(CallError::InvalidKey(
            "the call did not answer at once".into(),
        ))
    })
}

/// `fut`'s output if its first poll gives one.
fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

/// The call cache's indexes and O-3 report now, for `cache-sim diff` (a
/// wrong removal shows here before any lookup meets it); computed only
/// when a subscriber listens.
fn index_snapshot(eng: &Engine, after: impl FnOnce() -> String) {
    if !tracing::enabled!(target: "sim::engine::index", tracing::Level::DEBUG) {
        return;
    }
    let after = after();
    tracing::debug!(
        target: "sim::engine::index",
        after = after.as_str(),
        index = format!(
            "{}\n{}",
            eng.calls.inspect(|m| m.index_lines()).join("\n"),
            eng.calls.leak_report()
        )
        .as_str(),
    );
}

fn err_kind(e: &CallError) -> &'static str {
    ErrKind::of(e).as_str()
}

async fn call<H: EngineHost>(conn: Conn<H>, req: u64, op_index: usize, token: CancellationToken) {
    let host = conn.host.clone();
    let plan = conn.plan.clone();
    let inc = conn.eng.inc;
    let sid = conn.calls.id();
    let Some(op) = plan.plan().clients[conn.client].get(op_index).cloned() else {
        return;
    };
    let t0 = host.now();
    let t0_clock = host.clock_ms();
    // The TTL'd call key this request asks for, if any (coverage counts).
    let ttl_key = match op.kind {
        OpKind::Call { key, .. } if plan.plan().keys[key as usize].ttl_ms > 0 => Some(key),
        _ => None,
    };
    host.observe(Observation::CallStarted {
        inc,
        session: sid,
        ttl_key,
        clock: t0_clock,
    });
    let who = format!("client{}", conn.client);
    let on_calls = !matches!(op.kind, OpKind::Arbitrary { change: true, .. });
    // The span names the request for the decision events the cache emits
    // inside it and for the answer event below (`cache-sim explain`,
    // `cache-sim diff`); inert unless a subscriber is installed.
    let span_key = match &op.kind {
        OpKind::Call { key, .. } | OpKind::Arbitrary { key, .. } => *key,
        _ => 0,
    };
    let span = tracing::debug_span!(
        "call",
        client = conn.client,
        req,
        key = span_key,
        op = op_index
    );
    let judged;
    let (res, key, is_call) = match op.kind {
        OpKind::Call {
            key,
            ckey,
            dnc,
            behave,
            nested,
            nests,
            ..
        } => {
            let ttl_ms = plan.plan().keys[key as usize].ttl_ms;
            let ck = CallKey::new(plan.key_id(key))
                .concurrency_key(if ckey { "c" } else { "" })
                .ttl_ms(ttl_ms)
                .do_not_cache(dnc);
            let ctx = conn.calls.ctx().with_cancel(token.clone());
            judged = judge_call(
                &host,
                CallFacts {
                    session: Some(session_number(inc, false, sid)),
                    key,
                    always: dnc,
                    retries: true,
                },
            );
            let r = resolver(
                &Env {
                    host: host.clone(),
                    plan: plan.clone(),
                },
                &conn.eng,
                Job {
                    key,
                    behave,
                    nested,
                    nests,
                    session: Some(sid),
                    kind: Kind::Call,
                    call: judged,
                    // A TTL'd call's storage key is not its call key, so a
                    // nested call of the same key does not revisit it.
                    chain: if ttl_ms == 0 { vec![key] } else { Vec::new() },
                },
            );
            (
                as_call(
                    judged,
                    conn.eng
                        .calls
                        .get_or_init_call(&ctx, ck, r)
                        .instrument(span.clone()),
                )
                .await,
                key,
                true,
            )
        }
        OpKind::Arbitrary {
            key,
            change,
            behave,
            ..
        } => {
            let (cache, session) = if change {
                (&conn.eng.changes, &conn.changes)
            } else {
                (&conn.eng.calls, &conn.calls)
            };
            let ctx = session.ctx().with_cancel(token.clone());
            judged = judge_call(
                &host,
                CallFacts {
                    session: Some(session_number(inc, change, session.id())),
                    // Arbitrary keys are numbered apart from call keys.
                    key: key | 1 << 40,
                    always: false,
                    retries: false,
                },
            );
            let kind = if change {
                Kind::Change
            } else {
                Kind::Arbitrary
            };
            let r = resolver(
                &Env {
                    host: host.clone(),
                    plan: plan.clone(),
                },
                &conn.eng,
                Job {
                    key,
                    behave,
                    nested: None,
                    nests: Vec::new(),
                    session: Some(sid),
                    kind,
                    chain: Vec::new(),
                    call: judged,
                },
            );
            let name = format!("{}{key}", if change { "path/" } else { "a" });
            (
                as_call(
                    judged,
                    cache
                        .get_or_init_arbitrary(&ctx, &name, r)
                        .instrument(span.clone()),
                )
                .await,
                key,
                false,
            )
        }
        OpKind::InvalidCall => {
            judged = None;
            (invalid_call(&conn).await, 0, true)
        }
        _ => return,
    };
    conn.tokens.lock().unwrap().remove(&req);
    if let Some(call) = judged {
        host.observe(Observation::CallDone {
            call,
            answer: Answer::of(&res),
        });
    }
    index_snapshot(&conn.eng, || {
        format!("client{} r{req} answered", conn.client)
    });
    let line = answer(
        &conn,
        &span,
        &who,
        req,
        key,
        (is_call, on_calls),
        res,
        t0,
        t0_clock,
        token.is_cancelled(),
    );
    host.observe(Observation::CallAnswered {
        inc,
        session: sid,
        ttl_key,
    });
    if host.plant() == Some(Plant::SwallowResponse) && req == 3 && conn.client == 0 {
        host.trace("engine", "PLANTED: response swallowed");
        if let Some(world) = host.world() {
            *world.shadow().pending.entry(inc).or_default() += 1;
        }
        return;
    }
    let _ = conn.tx.send(line);
}

/// The answer line for one call's outcome; what was served is reported to
/// the oracles (planted violations alter it first).
#[allow(clippy::too_many_arguments)]
fn answer<H: EngineHost>(
    conn: &Conn<H>,
    span: &tracing::Span,
    who: &str,
    req: u64,
    key: u64,
    (is_call, on_calls): (bool, bool),
    res: Result<CallResult<Val>, CallError>,
    t0: u64,
    t0_clock: i64,
    cancelled: bool,
) -> String {
    let host = &conn.host;
    let plan = &conn.plan;
    let sid = conn.calls.id();
    // Planted: a miss is answered as if its session had closed (it has not).
    let res = match res {
        Ok(r) if host.plant() == Some(Plant::ClosedErrorOnOpenSession) && !r.hit() => {
            Err(CallError::ClosedDuringExecution)
        }
        // Planted: a miss is answered as a refused recursion.
        Ok(r) if host.plant() == Some(Plant::TopLevelRefused) && !r.hit() => {
            Err(CallError::Recursive {
                key: "planted".into(),
            })
        }
        other => other,
    };
    match res {
        Ok(r) => {
            let mut v = r.value().cloned();
            let mut safe_to_persist = r.safe_to_persist();
            if host.plant() == Some(Plant::SafetyFlagFlipped) {
                safe_to_persist = !safe_to_persist;
            }
            if let Some(v) = v.as_mut() {
                if host.plant() == Some(Plant::WrongValue) {
                    v.key = (key + 1) % plan.plan().keys.len() as u64 + 1000;
                }
                if host.plant() == Some(Plant::TtlCrossSession)
                    && is_call
                    && plan.plan().keys[key as usize].ttl_ms > 0
                {
                    v.session = None;
                    v.safe = false;
                    v.made_ms = 0;
                    // The engine reports the result unsafe throughout.
                    safe_to_persist = false;
                }
                let ttl = plan.plan().keys[key as usize].ttl_ms;
                if host.plant() == Some(Plant::TtlExpiredOwnSession) && is_call && ttl > 0 {
                    v.session = Some(sid);
                    v.made_ms = 0;
                    v.made_clock = t0_clock.saturating_sub(ttl as i64 + 1);
                }
            }
            let mut reported = r.id().map(|i| i.call_key());
            if host.plant() == Some(Plant::RequestedIdOnStorageHit)
                && r.hit()
                && !r.content_hit()
                && v.as_ref().is_some_and(|v| v.id_key != key)
            {
                reported = Some(plan.key_id(key).call_key());
            }
            let owned = (!r.holds_ref() && on_calls).then(|| r.entry());
            host.observe(Observation::Served {
                served: Served {
                    cache: &conn.eng.calls,
                    inc: conn.eng.inc,
                    session: sid,
                    req,
                    key,
                    is_call,
                    value: v.as_ref(),
                    reported_call_key: reported,
                    hit: r.hit(),
                    content_hit: r.content_hit(),
                    detached: r.is_detached(),
                    safe_to_persist,
                    t0_ms: t0,
                    t0_clock,
                },
                owned,
            });
            let flags = format!(
                "{}{}{}",
                if r.hit() { "hit" } else { "miss" },
                if r.content_hit() { "+content" } else { "" },
                if r.is_detached() { "+detached" } else { "" }
            );
            let shown = v
                .as_ref()
                .map_or("none".to_string(), |v| format!("o{}", v.out));
            host.trace(
                who,
                format!("r{req} k{key} ok {flags} {shown} entry {}", r.entry()),
            );
            tracing::debug!(
                target: "sim::engine::answer",
                parent: span,
                returned = r
                    .id()
                    .map(|i| i.call_key())
                    .as_deref()
                    .map_or("-", crate::decisions::short),
                outcome = format!("ok {flags} {shown} entry {}", r.entry()).as_str(),
            );
            host.count(if r.hit() { "hits" } else { "misses" });
            if host.plant() == Some(Plant::SpuriousCancel) && r.hit() {
                return Response::Answer {
                    req,
                    result: Err(ErrKind::Cancelled),
                }
                .line();
            }
            drop(r);
            Response::Answer {
                req,
                result: Ok(shown),
            }
            .line()
        }
        Err(e) => {
            let mut e = e;
            if host.plant() == Some(Plant::CachedError) {
                // Serve the error of the first run, long finished.
                let first = host
                    .world()
                    .and_then(|w| w.shadow().runs.keys().next().copied());
                if let (Some(run), Some(world)) = (first, host.world()) {
                    if world.shadow().finished_at(run).is_some_and(|f| f < t0) {
                        e = CallError::Resolver(ResolverError::new(RunFailure {
                            run,
                            cause: Cause::Planned,
                        }));
                    }
                }
            }
            host.observe(Observation::Failed {
                req,
                key,
                error: &e,
                t0_ms: t0,
                caller_cancelled: cancelled,
                session: (conn.eng.inc, sid),
            });
            host.trace(who, format!("r{req} k{key} err {}", err_kind(&e)));
            tracing::debug!(
                target: "sim::engine::answer",
                parent: span,
                returned = "-",
                outcome = format!("err {}", err_kind(&e)).as_str(),
            );
            host.count("errors");
            Response::Answer {
                req,
                result: Err(ErrKind::of(&e)),
            }
            .line()
        }
    }
}

/// The future a resolver returns.
type ResolverFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Resolved<Val>, CallError>> + Send>>;

/// What one resolver run does.
#[derive(Clone, Debug)]
struct Job {
    /// The key it resolves.
    key: u64,
    /// Its behaviour.
    behave: Behave,
    /// It first calls the cache for this key (C-11) and hands the inner
    /// ref to its result.
    nested: Option<u64>,
    /// Nested calls later in its run.
    nests: Vec<Nest>,
    /// The session whose call runs it (none for nested calls).
    session: Option<cache_core::machine::SessionId>,
    /// What it resolves.
    kind: Kind,
    /// The keys of the calls it runs inside whose storage key is their call
    /// key, itself included: calling one again must be refused (C-4).
    chain: Vec<u64>,
    /// The S-5 judge's number for the call that passed this resolver.
    call: Option<u64>,
}

/// The host and the plan a resolver works with.
#[derive(Clone)]
struct Env<H: EngineHost> {
    host: H,
    plan: H::Plan,
}

/// A resolver doing `job`.
fn resolver<H: EngineHost>(
    env: &Env<H>,
    eng: &Engine,
    job: Job,
) -> impl FnOnce(ResolverCtx) -> ResolverFuture + Send + 'static {
    let env = env.clone();
    let eng = eng.clone();
    let change = job.kind == Kind::Change;
    let (key, behave) = (job.key, job.behave);
    move |rctx: ResolverCtx| {
        Box::pin(async move {
            let host = &env.host;
            let run = host.next_id();
            host.observe(Observation::ResolverStarted {
                run,
                shadow: RunShadow {
                    inc: eng.inc,
                    key: flight_class(&eng, &rctx, change),
                    finished_at: None,
                    // Planted: the shadow watches a token nobody cancels.
                    cancel: if host.plant() == Some(Plant::ResolverNotCancelled) {
                        CancellationToken::new()
                    } else {
                        rctx.cancel.clone()
                    },
                    change,
                    entry: rctx.entry,
                },
            });
            if let Some(call) = job.call {
                host.observe(Observation::RanFor { call });
            }
            let ttl_ms = env
                .plan
                .plan()
                .keys
                .get(key as usize)
                .map_or(0, |k| k.ttl_ms);
            if let (Kind::Call, Some(session), true) = (job.kind, job.session, ttl_ms > 0) {
                host.observe(Observation::TtlRunStarted {
                    key,
                    storage_key: &rctx.storage_key,
                    inc: eng.inc,
                    session,
                });
            }
            host.trace(
                "engine",
                format!(
                    "run{run} k{key} starts ({:?}, {} ms{})",
                    behave.outcome,
                    behave.dur_ms,
                    if behave.deaf { ", deaf" } else { "" }
                ),
            );
            let result = body(&env, &eng, run, &job, &rctx).await;
            host.observe(Observation::ResolverEnded { run });
            match &result {
                Ok(_) => host.trace("engine", format!("run{run} k{key} done")),
                Err(e) => host.trace("engine", format!("run{run} k{key} {}", err_kind(e))),
            }
            if behave.outcome == Outcome::Panic && result.is_ok() {
                // The payload keeps the failure's identity (C-14, INV-6).
                std::panic::panic_any(ResolverError::new(RunFailure {
                    run,
                    cause: Cause::Panicked,
                }));
            }
            result
        })
    }
}

/// The singleflight class of a resolver run (INV-4), from the cache's
/// typed answer for its entry: the storage key the resolver sees, and the
/// effective concurrency key its entry is registered under ("" when it is
/// in no in-flight index, so it never deduplicates; "k" for every
/// arbitrary or change-cache init, which always do).
fn flight_class(eng: &Engine, rctx: &ResolverCtx, change: bool) -> FlightClass {
    let (instance, entry) = rctx.entry;
    let cache = if instance == eng.changes.inspect(|m| m.instance()) {
        &eng.changes
    } else {
        &eng.calls
    };
    let concurrency_key = match cache.inspect(|m| m.flight_key(entry)) {
        Some(FlightKey::Call {
            concurrency_key, ..
        }) => concurrency_key,
        Some(FlightKey::Arbitrary { .. }) => "k".to_string(),
        None if change => "k".to_string(),
        None => String::new(),
    };
    FlightClass {
        namespace: if change { "change" } else { "cache" },
        storage_key: rctx.storage_key.clone(),
        concurrency_key,
    }
}

/// A call-cache resolver at the end of its work acts for a client (C-5):
/// it asks the cache which open sessions wait on its call and would use
/// the first. Planted: it acts for the session that started it, as a
/// resolver run "as" its first caller would.
fn acts_for<H: EngineHost>(env: &Env<H>, eng: &Engine, job: &Job, rctx: &ResolverCtx) {
    let listed = match (env.host.plant(), job.session) {
        (Some(Plant::ActsForStarter), Some(s)) => vec![s],
        _ => eng.calls.sessions_waiting_on(rctx.entry.1),
    };
    env.host.observe(Observation::ActsFor {
        inc: eng.inc,
        listed,
        starter: job.session,
    });
}

async fn body<H: EngineHost>(
    env: &Env<H>,
    eng: &Engine,
    run: u64,
    job: &Job,
    rctx: &ResolverCtx,
) -> Result<Resolved<Val>, CallError> {
    let (host, plan) = (&env.host, &env.plan);
    let (key, behave, kind, session) = (job.key, job.behave, job.kind, job.session);
    let change = kind == Kind::Change;
    let nested_failed = |e: &CallError| {
        CallError::Resolver(ResolverError::new(RunFailure {
            run,
            cause: Cause::Nested(err_kind(e)),
        }))
    };
    let mut inner: Option<CallResult<Val>> = None;
    if let Some(nk) = job.nested {
        let quick = Nest {
            key: nk,
            after_ms: 0,
            dnc: false,
            fails: false,
            retry: false,
            then: None,
        };
        match nested_call(env, eng, run, job, &quick, rctx).await {
            Ok(r) => inner = Some(r),
            Err(e) => return Err(nested_failed(&e)),
        }
    }
    // The run's time, with its later nested calls made at their moments.
    let mut elapsed = 0;
    let mut cancelled = false;
    for n in &job.nests {
        let at = n.after_ms.min(behave.dur_ms);
        cancelled = pause(rctx, behave.deaf, Some(at - elapsed.min(at))).await;
        elapsed = elapsed.max(at);
        if cancelled {
            break;
        }
        host.count("nested-later-in-run");
        // Its result is dropped at once: only the first nested call's ref
        // goes into this result (C-11).
        if let Err(e) = nested_call(env, eng, run, job, n, rctx).await {
            return Err(nested_failed(&e));
        }
    }
    if !cancelled {
        let rest = match behave.outcome {
            Outcome::Hang => None,
            _ => Some(behave.dur_ms.saturating_sub(elapsed)),
        };
        cancelled = pause(rctx, behave.deaf, rest).await;
    }
    if !cancelled && !change {
        acts_for(env, eng, job, rctx);
    }
    if cancelled {
        // INV-7: a resolver is cancelled only when every waiter has left.
        host.observe(Observation::ResolverCancelled {
            run,
            cache: if change { &eng.changes } else { &eng.calls },
            entry: rctx.entry.1,
        });
        return Err(CallError::Cancelled);
    }
    let out = host.next_id();
    let mk = |v: Option<Val>| match v {
        Some(v) => Resolved::value(v),
        None => Resolved::no_value(),
    };
    // A call's resolver may return another key's ID (C-6): the entry is
    // then also indexed under that key's call key.
    let result_key = match kind {
        Kind::Call => plan.plan().keys[key as usize].result_key,
        Kind::Arbitrary | Kind::Change => None,
    };
    let val = Val {
        out,
        run,
        key,
        id_key: result_key.unwrap_or(key),
        arbitrary: kind != Kind::Call,
        session,
        safe: behave.safe,
        made_clock: host.clock_high_water(),
        made_ms: host.now(),
    };
    let mut resolved = match behave.outcome {
        Outcome::Value | Outcome::Panic => mk(Some(val)),
        Outcome::NoValue => mk(None),
        Outcome::Error => {
            return Err(CallError::Resolver(ResolverError::new(RunFailure {
                run,
                cause: Cause::Planned,
            })))
        }
        Outcome::Hang => unreachable!("a hanging resolver only ends by cancellation"),
    };
    if let Some(r) = result_key {
        resolved = resolved.with_id(plan.key_id(r));
    }
    if behave.outcome == Outcome::Panic {
        return Ok(resolved);
    }
    let inner_entry = inner.as_ref().map(|r| r.entry());
    let handle = inner.and_then(|r| r.into_nested());
    let inc = eng.inc;
    let nested = handle.as_ref().and(inner_entry);
    let hook_fails = plan.plan().keys[key as usize].failing_hooks;
    host.observe(Observation::OutputMade {
        out,
        inc,
        nested,
        safe_for: (kind == Kind::Call && behave.safe).then_some(key),
        call_entry: (kind == Kind::Call).then_some((
            rctx.entry.1,
            rctx.storage_key.as_str(),
            behave.safe,
        )),
        hook_fails,
        change,
    });
    let hook_host = host.clone();
    let double = host.plant() == Some(Plant::DoubleHook);
    let mut resolved = resolved.safe_to_persist(behave.safe).with_release(move || {
        for _ in 0..if double { 2 } else { 1 } {
            hook_host.observe(Observation::HookRan { out, inc, nested });
        }
        // The release, for `cache-sim diff` (C-7, C-12): inert unless a
        // subscriber is installed.
        tracing::debug!(target: "sim::engine::release", run, key, out);
        if hook_fails {
            return Err(format!("planned release hook failure of o{out}"));
        }
        Ok(())
    });
    if let Some(h) = handle {
        resolved = resolved.with_nested(h);
    }
    Ok(resolved)
}

/// Waits `ms` (forever for `None`) unless cancelled first; `true` when
/// cancelled. A deaf resolver does not look at its cancellation (C-5a).
async fn pause(rctx: &ResolverCtx, deaf: bool, ms: Option<u64>) -> bool {
    let sleep = async {
        match ms {
            None => std::future::pending::<()>().await,
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    };
    if deaf {
        sleep.await;
        return false;
    }
    tokio::select! {
        biased;
        _ = rctx.cancel.cancelled() => true,
        _ = sleep => false,
    }
}

/// One nested call of run `run` (C-11), retried once after a resolver
/// failure when `n` says so. The oracles see each answer: a call of a key
/// in the chain must be refused (C-4, C-4a).
async fn nested_call<H: EngineHost>(
    env: &Env<H>,
    eng: &Engine,
    run: u64,
    job: &Job,
    n: &Nest,
    rctx: &ResolverCtx,
) -> Result<CallResult<Val>, CallError> {
    let (host, plan) = (&env.host, &env.plan);
    let revisits = job.chain.contains(&n.key);
    let mut chain = job.chain.clone();
    chain.push(n.key);
    let inner = Job {
        key: n.key,
        behave: Behave {
            outcome: if n.fails {
                Outcome::Error
            } else {
                Outcome::Value
            },
            dur_ms: 20,
            safe: true,
            deaf: false,
        },
        nested: n.then,
        nests: Vec::new(),
        session: None,
        kind: Kind::Call,
        chain,
        call: None,
    };
    if n.dnc {
        host.count("nested-do-not-cache");
    }
    let mut attempts = if n.retry { 2 } else { 1 };
    loop {
        attempts -= 1;
        let ck = CallKey::new(plan.key_id(n.key))
            .concurrency_key("c")
            .do_not_cache(n.dnc);
        // Without a session: S-5 has it always emit.
        let judged = judge_call(
            host,
            CallFacts {
                session: None,
                key: n.key,
                always: true,
                retries: true,
            },
        );
        let r = resolver(
            env,
            eng,
            Job {
                call: judged,
                ..inner.clone()
            },
        );
        let span = tracing::debug_span!("nested", run, key = n.key);
        let res = as_call(
            judged,
            eng.calls
                .get_or_init_call(&rctx.nested(), ck, r)
                .instrument(span.clone()),
        )
        .await;
        if let Some(call) = judged {
            host.observe(Observation::CallDone {
                call,
                answer: Answer::of(&res),
            });
        }
        tracing::debug!(
            target: "sim::engine::answer",
            parent: &span,
            returned = res
                .as_ref()
                .ok()
                .and_then(|r| r.id())
                .map(|i| i.call_key())
                .as_deref()
                .map_or("-", crate::decisions::short),
            outcome = match &res {
                Ok(r) => format!(
                    "ok {} entry {}",
                    if r.hit() { "hit" } else { "miss" },
                    r.entry()
                ),
                Err(e) => format!("err {}", err_kind(e)),
            }
            .as_str(),
        );
        let mut seen = res.as_ref().err().map(ErrKind::of);
        if host.plant() == Some(Plant::RecursionNotRefused) && revisits {
            seen = None;
        }
        host.observe(Observation::NestedAnswered {
            run,
            key: n.key,
            chain: &job.chain,
            revisits,
            error: seen,
        });
        match res {
            Err(e) if attempts > 0 && ErrKind::of(&e).from_resolver() => {
                host.count("nested-retry");
            }
            other => return other,
        }
    }
}

/// What a resolver resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Call,
    Arbitrary,
    Change,
}
