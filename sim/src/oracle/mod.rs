//! The oracles (SPEC §9), apart from the hosts that serve (DESIGN: as
//! TigerBeetle's VOPR keeps its checkers apart from the replica).
//!
//! The engine host serves requests and reports what happened as
//! [`Observation`]s through [`observe`]; it judges nothing itself. Each
//! invariant's judge lives in its own module and reads the cache only
//! through typed queries (refcounts, waiters, owners, flight keys) and
//! typed errors ([`crate::failure::RunFailure`]), never through display
//! text. [`check_step`] runs after every step, [`check_end`] once at the end.
//!
//! | module | judges |
//! | --- | --- |
//! | `shadow` | nothing: the shadow model the judges compare against |
//! | `refcounts` | INV-2 |
//! | `singleflight` | INV-4 |
//! | `identity` | INV-5 |
//! | `errors` | INV-6 |
//! | `cancellation` | INV-7 |
//! | `ttl` | INV-8 (what is served) |
//! | `ttl_writes` | INV-8 (what is written to the TTL store: T-3, T-4) |
//! | `ttl_identity` | INV-8 (a fresh TTL key stays its session's, across restarts: T-2(a)) |
//! | `sessions` | INV-9 |
//! | `hooks` | INV-10 |
//! | `quiescence` | INV-1, INV-11 |
//! | `recursion` | C-4 / C-4a, reported under INV-11 |
//! | `telemetry` | S-5, reported under its rule id |
//! | `accounting` | C-1, S-7, O-1, O-3 and C-15, reported under their rule ids |
//!
//! INV-3 is the cache's own `check_invariants()`, run in [`check_step`];
//! INV-12 is checked by replaying a seed (`run::check_determinism`).

mod accounting;
mod cancellation;
mod errors;
mod hooks;
mod identity;
mod quiescence;
mod recursion;
mod refcounts;
mod sessions;
pub mod shadow;
mod singleflight;
mod telemetry;
mod ttl;
mod ttl_identity;
mod ttl_writes;

use cache_core::facade::Cache;
use cache_core::machine::{EntryId, SessionId};
use cache_core::CallError;

pub use quiescence::check_end;
pub use shadow::{FlightClass, HookShadow, RunShadow, SessionShadow, Shadow};
pub use telemetry::call_started as telemetry_call;

use crate::protocol::ErrKind;
use crate::world::{Engine, Plant, Val, World};

/// A call answered with a result, as the host saw it.
pub struct Served<'a> {
    /// The call cache of the serving incarnation (typed queries).
    pub cache: &'a Cache<Val>,
    /// The serving incarnation.
    pub inc: u64,
    /// The caller's session (of the call cache).
    pub session: SessionId,
    /// The request id.
    pub req: u64,
    /// The requested key index.
    pub key: u64,
    /// A call (`false`: an arbitrary or change-cache init).
    pub is_call: bool,
    /// The value, if the result has one (C-10).
    pub value: Option<&'a Val>,
    /// The call key of the ID the result reports.
    pub reported_call_key: Option<String>,
    /// Hit flags and shape.
    pub hit: bool,
    /// C-8 content hit.
    pub content_hit: bool,
    /// C-2 detached result.
    pub detached: bool,
    /// T-3: whether the result says it may be persisted.
    pub safe_to_persist: bool,
    /// Simulated ms when the call reached the engine.
    pub t0_ms: u64,
    /// The engine clock when the call reached the engine (INV-8).
    pub t0_clock: i64,
}

/// What a host reports. Each variant is a fact; [`observe`] records it in
/// the shadow model and has the judges check it.
pub enum Observation<'a> {
    /// A call-cache resolver acts for a client: the cache listed the open
    /// sessions waiting on its call (C-5), and it uses the first.
    ActsFor {
        /// Incarnation.
        inc: u64,
        /// The sessions the cache listed (`Cache::sessions_waiting_on`).
        listed: Vec<SessionId>,
        /// The session whose call started the run (none for a nested run).
        starter: Option<SessionId>,
    },
    /// A connection opened session `session` in incarnation `inc`.
    SessionOpened {
        /// Incarnation.
        inc: u64,
        /// The session (of the call cache).
        session: SessionId,
    },
    /// A request reached the engine (before the cache is asked).
    CallStarted {
        /// Incarnation.
        inc: u64,
        /// The caller's session.
        session: SessionId,
        /// The key, when it is a call of a TTL'd key.
        ttl_key: Option<u64>,
        /// The engine clock when the call reached the engine.
        clock: i64,
    },
    /// The cache answered with a result whose ref the session owns
    /// (`owned`: a session-owned call-cache result).
    Served {
        /// The result.
        served: Served<'a>,
        /// The session records a handle to `entry`.
        owned: Option<EntryId>,
    },
    /// The cache answered with an error.
    Failed {
        /// Request id.
        req: u64,
        /// Requested key index.
        key: u64,
        /// The error.
        error: &'a CallError,
        /// Simulated ms when the call reached the engine.
        t0_ms: u64,
        /// The caller's own cancellation had fired.
        caller_cancelled: bool,
        /// The caller's session: (incarnation, id).
        session: (u64, SessionId),
    },
    /// The answer left the engine (or, planted, was swallowed).
    CallAnswered {
        /// Incarnation.
        inc: u64,
        /// The caller's session.
        session: SessionId,
        /// The key, when it is a call of a TTL'd key.
        ttl_key: Option<u64>,
    },
    /// A resolver run started.
    ResolverStarted {
        /// Run id.
        run: u64,
        /// What the shadow records of it.
        shadow: RunShadow,
    },
    /// A resolver observed its cancellation.
    ResolverCancelled {
        /// Run id.
        run: u64,
        /// The cache whose entry it resolves.
        cache: &'a Cache<Val>,
        /// The in-flight entry.
        entry: EntryId,
    },
    /// A resolver run returned.
    ResolverEnded {
        /// Run id.
        run: u64,
    },
    /// A resolver produced output `out` with a release hook; with `nested`,
    /// its entry owns a ref on that inner entry (C-11).
    OutputMade {
        /// Output id.
        out: u64,
        /// Incarnation.
        inc: u64,
        /// The inner entry whose ref the output owns.
        nested: Option<EntryId>,
        /// The key, when this is a call's result marked safe to persist
        /// (T-3).
        safe_for: Option<u64>,
        /// For a call's result: its entry, the storage key its resolver
        /// ran under, and whether it was marked safe to persist (T-3: the
        /// flag and the TTL write belong to the entry actually stored).
        call_entry: Option<(EntryId, &'a str, bool)>,
        /// Its release hook fails when it runs (C-12).
        hook_fails: bool,
        /// It is a change-cache result (else a call-cache one).
        change: bool,
    },
    /// Output `out`'s release hook ran (releasing its nested ref, if any).
    HookRan {
        /// Output id.
        out: u64,
        /// Incarnation.
        inc: u64,
        /// The inner entry whose ref the output owned.
        nested: Option<EntryId>,
    },
    /// A resolver's nested call answered (C-11).
    NestedAnswered {
        /// The resolver run that made it.
        run: u64,
        /// The key it called.
        key: u64,
        /// The keys of the run's chain whose storage key is their call key.
        chain: &'a [u64],
        /// `key` is in the chain: the call revisits a storage key (C-4).
        revisits: bool,
        /// Its error, if it failed.
        error: Option<ErrKind>,
    },
    /// A client got the answer to its request `req`.
    ClientAnswered {
        /// The client's name.
        client: &'a str,
        /// The request.
        req: u64,
        /// What it got.
        result: &'a Result<String, ErrKind>,
        /// The client had sent a cancel for it.
        cancelled: bool,
    },
    /// The cache emitted a telemetry span while deciding call `call` (the
    /// number [`telemetry_call`] gave it).
    Span {
        /// The call.
        call: u64,
        /// The span's `cached` flag.
        cached: bool,
    },
    /// The resolver that call `call` passed started (S-5: it ran for that
    /// call).
    RanFor {
        /// The call.
        call: u64,
    },
    /// A call resolver of TTL'd key `key` started under `storage_key` for
    /// a session's call (T-2(a)).
    TtlRunStarted {
        /// The plan's key.
        key: u64,
        /// The storage key it runs under.
        storage_key: &'a str,
        /// Incarnation.
        inc: u64,
        /// The session whose call started it.
        session: SessionId,
    },
    /// Call `call` answered.
    CallDone {
        /// The call.
        call: u64,
        /// How.
        answer: cache_core::checks::telemetry::Answer,
    },
    /// A session of incarnation `inc`'s call cache begins to close.
    SessionClosing {
        /// Incarnation.
        inc: u64,
    },
    /// A session closed.
    SessionClosed {
        /// Its call cache.
        cache: &'a Cache<Val>,
        /// Incarnation.
        inc: u64,
        /// The session.
        session: SessionId,
        /// What its close reported (S-7): refs released and failing
        /// hooks; `None` when the close failed (closed already).
        summary: Option<(usize, usize)>,
    },
    /// A call with an invalid key (C-1) answered.
    InvalidKeyAnswered {
        /// What the engine saw around the call.
        facts: cache_core::checks::accounting::InvalidKeyCall,
        /// Its answer; `None` when it did not answer at once.
        answer: Option<Result<(), CallError>>,
    },
}

/// Records an observation in the shadow model and judges it.
pub fn observe(world: &World, obs: Observation<'_>) {
    match obs {
        Observation::SessionOpened { inc, session } => {
            world.shadow().sessions.insert(
                (inc, session),
                SessionShadow {
                    open: true,
                    ..Default::default()
                },
            );
        }
        Observation::CallStarted {
            inc,
            session,
            ttl_key,
            clock,
        } => {
            let mut coverage = Vec::new();
            let mut sh = world.shadow();
            if let Some(s) = sh.sessions.get_mut(&(inc, session)) {
                s.pending += 1;
                if s.pending >= 2 {
                    coverage.push("session-calls-overlapping");
                }
                if let Some(k) = ttl_key {
                    let n = s.ttl_keys.entry(k).or_default();
                    *n += 1;
                    if *n >= 2 {
                        coverage.push("ttl-key-twice-in-one-session");
                    }
                    if s.ttl_served_until
                        .get(&k)
                        .is_some_and(|&until| clock > until)
                    {
                        coverage.push("ttl-expired-in-session");
                    }
                }
            }
            *sh.pending.entry(inc).or_default() += 1;
            drop(sh);
            for what in coverage {
                world.count(what);
            }
        }
        Observation::Served { served, owned } => {
            if let Some(entry) = owned {
                let open = {
                    let mut sh = world.shadow();
                    let open = sh.session_open(served.inc, served.session);
                    // An answer that reaches us after its session closed:
                    // the close released its ref (judged below).
                    if let Some(s) = sh
                        .sessions
                        .get_mut(&(served.inc, served.session))
                        .filter(|s| s.open)
                    {
                        let extra = u32::from(world.plant == Some(Plant::ShadowExtraHandle));
                        *s.handles.entry(entry).or_default() += 1 + extra;
                    }
                    open
                };
                sessions::served(world, served.cache, served.session, open);
            }
            if let Some(v) = served.value {
                if served.is_call {
                    identity::call_served(world, &served, v);
                    ttl::safety(world, &served, v);
                    if !served.content_hit && !served.detached {
                        ttl::served(world, &served, v);
                    }
                } else {
                    identity::arbitrary_served(world, served.key, v);
                }
            }
        }
        Observation::Failed {
            req,
            key,
            error,
            t0_ms,
            caller_cancelled,
            session,
        } => {
            if ErrKind::of(error) == ErrKind::ClosedDuringExecution {
                world.count("closed-during-execution");
            }
            errors::failed(world, req, key, error, t0_ms);
            cancellation::failed(world, req, key, error, caller_cancelled);
            recursion::top_level_failed(world, req, key, error, session);
        }
        Observation::CallAnswered {
            inc,
            session,
            ttl_key,
        } => {
            let mut sh = world.shadow();
            if let Some(s) = sh.sessions.get_mut(&(inc, session)) {
                s.pending -= 1;
                if let Some(k) = ttl_key {
                    if let Some(n) = s.ttl_keys.get_mut(&k) {
                        *n -= 1;
                        if *n == 0 {
                            s.ttl_keys.remove(&k);
                        }
                    }
                }
            }
            *sh.pending.entry(inc).or_default() -= 1;
        }
        Observation::ResolverStarted { run, shadow } => {
            singleflight::run_started(world, run, shadow)
        }
        Observation::ResolverCancelled { run, cache, entry } => {
            cancellation::resolver_cancelled(world, run, cache, entry)
        }
        Observation::ActsFor {
            inc,
            listed,
            starter,
        } => sessions::acts_for(world, inc, &listed, starter),
        Observation::ResolverEnded { run } => {
            let now = world.now();
            if let Some(r) = world.shadow().runs.get_mut(&run) {
                r.finished_at = Some(now);
            }
        }
        Observation::OutputMade {
            out,
            inc,
            nested,
            safe_for,
            call_entry,
            hook_fails,
            change,
        } => {
            if let Some(k) = safe_for {
                ttl_writes::safe_output(world, k);
            }
            if let Some((entry, storage_key, safe)) = call_entry {
                ttl_writes::call_output(world, inc, entry, storage_key, safe);
            }
            let mut sh = world.shadow();
            sh.hooks.insert(
                out,
                HookShadow {
                    inc,
                    runs: 0,
                    fails: hook_fails,
                    change,
                },
            );
            if let Some(e) = nested {
                *sh.nested.entry((inc, e)).or_default() += 1;
            }
        }
        Observation::HookRan { out, inc, nested } => {
            if let Some(e) = nested {
                if let Some(n) = world.shadow().nested.get_mut(&(inc, e)) {
                    *n = n.saturating_sub(1);
                }
            }
            hooks::hook_ran(world, out);
        }
        Observation::NestedAnswered {
            run,
            key,
            chain,
            revisits,
            error,
        } => recursion::nested_answered(world, run, key, chain, revisits, error),
        Observation::ClientAnswered {
            client,
            req,
            result,
            cancelled,
        } => cancellation::client_answered(world, client, req, result, cancelled),
        Observation::Span { call, cached } => telemetry::span(world, call, cached),
        Observation::RanFor { call } => telemetry::resolver_ran(world, call),
        Observation::TtlRunStarted {
            key,
            storage_key,
            inc,
            session,
        } => {
            // Rows the store accepted earlier in this step are judged first:
            // the lookup that chose this storage key may already have read
            // one (a row persisted the key, T-2), and the identity check
            // must know of it.
            ttl_writes::step(world);
            ttl_identity::run_started(world, key, storage_key, inc, session)
        }
        Observation::CallDone { call, answer } => telemetry::answered(world, call, answer),
        Observation::SessionClosing { inc } => accounting::closing(world, inc),
        Observation::InvalidKeyAnswered { facts, answer } => {
            accounting::invalid_key(world, facts, answer.as_ref())
        }
        Observation::SessionClosed {
            cache,
            inc,
            session,
            summary,
        } => {
            let (in_flight, owned) = match world.shadow().sessions.get_mut(&(inc, session)) {
                Some(s) => {
                    s.open = false;
                    let owned: u32 = s.handles.values().sum();
                    s.handles.clear();
                    (s.pending, owned as usize)
                }
                None => (0, 0),
            };
            if let Some(reported) = summary {
                let unseen = in_flight as usize;
                accounting::closed(world, cache, (inc, session), reported, (owned, unseen));
            }
            if in_flight > 0 {
                world.count("close-with-calls-in-flight");
            }
            sessions::closed(world, cache, session);
        }
    }
}

/// The interesting cases of the rules that the workload must reach, as
/// counted in a run's counters (faults count as `fault:<kind>`). A sweep
/// reports each, zeros included: a case never met is a gap in the search.
pub const CASES: &[(&str, &str)] = &[
    (
        "session-calls-overlapping",
        "a session has two or more calls in flight (S-1a)",
    ),
    (
        "ttl-key-twice-in-one-session",
        "one TTL'd key called twice at once in one session (T-2)",
    ),
    (
        "ttl-expired-in-session",
        "a session calls a TTL'd key again after the result it was served expired (T-7)",
    ),
    (
        "close-with-calls-in-flight",
        "a session closes while its calls run (S-1a, S-3)",
    ),
    (
        "closed-during-execution",
        "a call finishes after its session closed (S-3)",
    ),
    ("cancel:call", "a client cancels a call (C-5)"),
    (
        "cancel:init",
        "a client cancels an arbitrary or change-cache init (K-4, K-5)",
    ),
    ("result-id-hits", "a hit through a result call key (C-6)"),
    (
        "recursive-call-refused",
        "a call chain revisiting a storage key is refused (C-4)",
    ),
    (
        "ttl-row-written",
        "a TTL row is written where none was (T-3)",
    ),
    (
        "ttl-row-replaced",
        "an expired TTL row is replaced (T-4, T-7)",
    ),
    (
        "wait-cycle-refused",
        "a join that would close a wait-for cycle is refused (C-4b)",
    ),
    (
        "span-run",
        "a telemetry span for a call that runs its resolver (S-5)",
    ),
    (
        "span-cached",
        "a telemetry span for a call served without a run (S-5)",
    ),
    (
        "span-forced-retry",
        "a forced retry's span judged (S-4, S-5)",
    ),
    (
        "nested-later-in-run",
        "a resolver calls the cache later in its run (C-11)",
    ),
    (
        "nested-do-not-cache",
        "a resolver makes a do-not-cache call (C-2, C-4a)",
    ),
    (
        "nested-retry",
        "a resolver calls again after a nested failure (C-9, C-4a)",
    ),
    (
        "invalid-key-refused",
        "a call with no call ID is refused at once (C-1)",
    ),
    (
        "close-with-failing-hooks",
        "a session close runs release hooks that fail (C-12, S-7)",
    ),
    (
        "acts-for-another-after-its-starter-closed",
        "a shared call acts for a waiting session after the one that started it closed (C-5)",
    ),
];

/// Short form of a key for messages.
pub fn short(k: &str) -> &str {
    &k[..k.len().min(10)]
}

/// The engine cache with this instance id.
fn cache_of(eng: &Engine, instance: u64) -> &Cache<Val> {
    if eng.calls.inspect(|m| m.instance()) == instance {
        &eng.calls
    } else {
        &eng.changes
    }
}

/// Checks after every step: the cache's own checks (INV-3 and the rules
/// each protects, reported under its invariant), INV-2 and INV-7's "only
/// if" half.
pub fn check_step(world: &World) {
    let Some(eng) = world.engine() else { return };
    plant_damage(world, &eng);
    for (name, cache) in [("calls", &eng.calls), ("changes", &eng.changes)] {
        if let Err(v) = cache.check_invariants() {
            world.violate(v.invariant(), format!("{name}: {v}"));
        }
    }
    refcounts::step(world, &eng);
    accounting::step(world, &eng);
    ttl_writes::step(world);
    cancellation::step(world, &eng);
}

/// Planted violations that damage the cache itself (through the
/// `harness-hooks` feature), for the oracles' self-tests.
fn plant_damage(world: &World, eng: &Engine) {
    if world.plant == Some(Plant::IndexCorruption) && world.now() > 200 {
        eng.calls.plant_index_corruption();
    }
    if world.plant == Some(Plant::WaitCycle) && world.now() > 200 {
        eng.calls.plant_wait_cycle();
    }
}
