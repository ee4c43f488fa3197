//! The cache's O-2 decisions in a simulation, as typed records: a `tracing`
//! subscriber scoped to one run (the thread's default while the run steps;
//! turmoil runs every host on that thread) reads the typed fields of each
//! `cache_core::decision` event and the engine host's request span it
//! happened in, stamped with simulated time. Nothing here changes the run:
//! with or without the subscriber, the trace is byte-identical.
//!
//! A run's record (its trace and its decisions) is what `cache-sim explain`
//! reads and `cache-sim replay --trace-out FILE` writes for `cache-sim diff`.
//!
//! The loader worlds (`loader`, `loader-faults`, `loader-net`) fill the same
//! record with [`LoaderDecision`]s instead: one per read or write a node
//! made, with the path the read took (local copy, placeholder, remote,
//! a flight led or joined, the loader) and what it returned (L-15 style),
//! plus one per flight the loader answered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use crate::plan::Plan;
use crate::run::{run_plan, RunOutcome};
use crate::scenario::Scenario;

/// One cache decision (O-2) and the request it was made for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Simulated ms.
    pub ms: u64,
    /// The client whose request it served (none for a nested call).
    pub client: Option<u64>,
    /// The client's request number.
    pub req: Option<u64>,
    /// The plan's key index the request (or nested call) named.
    pub key: Option<u64>,
    /// For a nested call: the resolver run that made it.
    pub run: Option<u64>,
    /// The call key, short.
    pub call: String,
    /// The requested ID's content key, short, or `-`.
    pub content: String,
    /// The storage key used, short.
    pub storage: String,
    /// `storage`, `content`, `ongoing`, `miss`, `do-not-cache`,
    /// `recursive` or `blocked`.
    pub path: String,
    /// The returned ID is not the stored entry's (C-8).
    pub overridden: bool,
    /// The caller's session, or `-`.
    pub session: String,
    /// The rule that decided.
    pub rule: String,
    /// The TTL store failed for this call just before (T-2, a
    /// session-scoped key).
    pub store_failed: bool,
    /// What the request got, once answered.
    pub answer: Option<Answer>,
    /// The telemetry span the decision emitted (S-5): `Some(true)` when it
    /// said `cached`, `None` when none was emitted.
    #[serde(default)]
    pub telemetry: Option<bool>,
    /// The request span it was made in (links it to its answer).
    #[serde(skip)]
    span: Option<u64>,
}

/// A result's release hook ran: the cache let go of resolver run `run`'s
/// output (its last ref went, or C-7 discarded a duplicate completion).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Simulated ms.
    pub ms: u64,
    /// The resolver run whose result it was.
    pub run: u64,
    /// The plan key it resolved.
    pub key: u64,
    /// Its output id (`oN`).
    pub out: u64,
}

/// A TTL row the cache wrote (T-3, T-4), as the simulation saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlWrite {
    /// Simulated ms of the step that judged it.
    pub ms: u64,
    /// The plan key the row is for.
    pub key: u64,
    /// The storage key it maps to, short (its first 12 hex digits).
    pub storage: String,
    /// The row's expiry, on the engine clock.
    pub expiration: i64,
    /// It replaced an expired row (T-4) rather than adding one.
    pub replaced: bool,
}

/// The cache's indexes right after a call was answered or a session
/// closed and released its refs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSnapshot {
    /// Simulated ms.
    pub ms: u64,
    /// After what: `client3 r5 answered`, `session s4 closed`.
    pub after: String,
    /// The O-3 report of what survived, entry by entry with its index
    /// membership.
    pub index: String,
}

/// What a request (or nested call) got back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Simulated ms.
    pub ms: u64,
    /// The returned ID's call key, short, or `-` (an error, or no ID).
    pub returned: String,
    /// `ok hit+content o5 entry e3v0` or `err cancelled`, as the trace
    /// shows it.
    pub outcome: String,
}

/// The first 12 hex digits of a key (the form O-2 lines print).
pub fn short(key: &str) -> &str {
    let hex = key.strip_prefix("sha256:").unwrap_or(key);
    let end = hex.char_indices().nth(12).map_or(hex.len(), |(i, _)| i);
    &hex[..end]
}

impl Decision {
    /// Who asked: `client3 r5` or `run7 (nested)`.
    pub fn who(&self) -> String {
        match (self.client, self.req, self.run) {
            (Some(c), Some(r), _) => format!("client{c} r{r}"),
            (_, _, Some(run)) => format!("run{run} (nested)"),
            _ => "-".into(),
        }
    }

    /// The decision's fields, as the O-2 line prints them.
    pub fn line(&self) -> String {
        format!(
            "call={} content={} storage={} path={} overridden={} session={} rule={}",
            self.call,
            self.content,
            self.storage,
            self.path,
            self.overridden,
            self.session,
            self.rule
        )
    }
}

/// One loader-world decision: a node's read or write of some keys, the
/// path it took and what it returned; or a flight the loader answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderDecision {
    /// Simulated ms.
    pub ms: u64,
    /// The node (none: the database changed behind the cache).
    pub node: Option<usize>,
    /// `once`, `get`, `exists`, `load_many`, `set`, `delete`,
    /// `change_source`, `cancel`, or `loaded` (a flight answered).
    pub op: String,
    /// The plan's key indexes it touched.
    pub keys: Vec<u64>,
    /// The path: `local`, `local-placeholder`, `remote`, `lead`, `join`,
    /// `loader`, `joined` (a flight another call led), `not-found`,
    /// `error`, `batch`, `write` (set, delete), `source` (the database
    /// changed behind the cache), `loaded`, or `-` (none the world saw).
    pub path: String,
    /// What the caller got (or the flight loaded), as the trace shows it.
    pub outcome: String,
}

impl LoaderDecision {
    /// Who decided: `n2`, or `db`.
    pub fn who(&self) -> String {
        self.node.map_or("db".into(), |n| format!("n{n}"))
    }

    /// The decision as one line.
    pub fn line(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(|k| format!("k{k}")).collect();
        format!(
            "op={} keys=[{}] path={} outcome={}",
            self.op,
            keys.join(" "),
            self.path,
            self.outcome
        )
    }

    /// The rule that explains the path (SPEC §7).
    pub fn rule(&self) -> &'static str {
        match self.path.as_str() {
            "local" => "L-3: a live local copy is served without the remote or the loader",
            "local-placeholder" => "L-6: a live not-found placeholder answers \"not found\"",
            "remote" => {
                "L-3: local miss; the remote's live copy is served and copied locally \
                 with its remaining lifetime"
            }
            "lead" | "loader" => {
                "L-1: local and remote missed; this call led the node's one loader call"
            }
            "join" | "joined" => "L-2: a flight for the key was in the air; the call joined it",
            "write" => {
                "L-11: a set or delete writes the tiers and emits one event naming its keys; \
                 the other nodes drop their copies when it arrives"
            }
            "source" => {
                "the database changed behind the cache: no event, so copies stay until \
                 they expire (L-8)"
            }
            "loaded" => {
                "L-4/L-6: the loader's answer (values and not-found are kept, failures never)"
            }
            "not-found" => "L-6: not found (a placeholder, or the loader said so)",
            "error" => "L-4: a failure reaches the callers of its flight and is never cached",
            "batch" => "L-13: each key through the tiers, one batch loader call for the misses",
            _ => "no read path: the call was answered without one the world records",
        }
    }
}

/// A run, as `explain` and `diff` read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The simulation trace (`replay` prints it).
    pub trace: Vec<String>,
    /// The decisions, in the order the cache made them.
    pub decisions: Vec<Decision>,
    /// The release hooks that ran (C-7, C-12), in order.
    #[serde(default)]
    pub releases: Vec<Release>,
    /// The cache's indexes after each answer and session close (S-7).
    #[serde(default)]
    pub snapshots: Vec<IndexSnapshot>,
    /// The TTL rows the cache wrote, in order (T-3, T-4).
    #[serde(default)]
    pub ttl_writes: Vec<TtlWrite>,
    /// The first violation: `INV-n at MS ms: detail`, if any.
    pub violation: Option<(String, u64, String)>,
    /// A loader world's decisions (empty for the call cache).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loader: Vec<LoaderDecision>,
    /// When the run ended, simulated ms (set by the loader worlds, whose
    /// trace lines are stamped differently).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
}

#[derive(Default)]
struct SpanInfo {
    name: &'static str,
    fields: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
struct State {
    next: u64,
    spans: BTreeMap<u64, SpanInfo>,
    stack: Vec<u64>,
    decisions: Vec<Decision>,
    releases: Vec<Release>,
    snapshots: Vec<IndexSnapshot>,
    ttl_writes: Vec<TtlWrite>,
    /// The world is quiet (an engine restart's teardown, whose order tokio
    /// does not fix): nothing is recorded, as the trace records nothing.
    quiet: bool,
    /// A `cache_core::ttl` failure event seen in this span, not yet
    /// claimed by a decision.
    store_failed_in: Option<Option<u64>>,
}

/// The scoped subscriber.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<State>>);

impl Capture {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct U64s(BTreeMap<&'static str, u64>);

impl Visit for U64s {
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name(), v);
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name(), v as u64);
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

#[derive(Default)]
struct Fields {
    text: BTreeMap<&'static str, String>,
    overridden: bool,
}

impl Visit for Fields {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.text.insert(f.name(), v.to_string());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        if f.name() == "overridden" {
            self.overridden = v;
        }
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        // `path = %…` arrives as a Display wrapper, through here.
        if f.name() != "message" {
            self.text.insert(f.name(), format!("{v:?}"));
        }
    }
}

const DECISION: &str = "cache_core::decision";
const TTL: &str = "cache_core::ttl";
const ANSWER: &str = "sim::engine::answer";
const RELEASE: &str = "sim::engine::release";
const INDEX: &str = "sim::engine::index";
const COMPLETION: &str = "cache_core::completion";
const QUIET: &str = "sim::world::quiet";
const SPAN: &str = "sim::engine::span";
const TTL_WRITE: &str = "sim::oracle::ttl_write";
const TARGETS: [&str; 9] = [
    DECISION, TTL, ANSWER, RELEASE, INDEX, COMPLETION, QUIET, SPAN, TTL_WRITE,
];

impl Subscriber for Capture {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        if m.is_span() {
            m.target().starts_with("sim::engine")
        } else {
            TARGETS.contains(&m.target())
        }
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut v = U64s::default();
        attrs.record(&mut v);
        let mut st = self.state();
        st.next += 1;
        let id = st.next;
        st.spans.insert(
            id,
            SpanInfo {
                name: attrs.metadata().name(),
                fields: v.0,
            },
        );
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, e: &Event<'_>) {
        let mut f = Fields::default();
        e.record(&mut f);
        let mut st = self.state();
        if e.metadata().target() == QUIET {
            #[derive(Default)]
            struct Flag(bool);
            impl Visit for Flag {
                fn record_bool(&mut self, _: &Field, v: bool) {
                    self.0 = v;
                }
                fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
            }
            let mut q = Flag::default();
            e.record(&mut q);
            st.quiet = q.0;
            return;
        }
        if st.quiet {
            return;
        }
        // The simulation trace's time: the step's start (it stamps lines
        // with the time the outer loop set for the step, one tick long).
        let ms = turmoil::sim_elapsed().map_or(0, |d| {
            let ms = d.as_millis() as u64;
            ms - ms % crate::run::TICK_MS
        });
        if e.metadata().target() == RELEASE {
            // A release outside the simulation's steps is the teardown
            // dropping the caches after the run: not part of the run.
            if turmoil::sim_elapsed().is_none() {
                return;
            }
            let mut v = U64s::default();
            e.record(&mut v);
            let get = |k| v.0.get(k).copied().unwrap_or_default();
            st.releases.push(Release {
                ms,
                run: get("run"),
                key: get("key"),
                out: get("out"),
            });
            return;
        }
        if e.metadata().target() == TTL_WRITE {
            // Judged after a step, outside it: the event carries its time.
            let mut v = U64s::default();
            e.record(&mut v);
            let get = |k| v.0.get(k).copied().unwrap_or_default();
            st.ttl_writes.push(TtlWrite {
                ms: get("ms"),
                key: get("key"),
                storage: f.text.get("storage").cloned().unwrap_or_default(),
                expiration: get("expiration") as i64,
                replaced: get("replaced") != 0,
            });
            return;
        }
        if [INDEX, COMPLETION].contains(&e.metadata().target()) {
            if turmoil::sim_elapsed().is_some() {
                let after = match f.text.get("entry") {
                    Some(entry) => format!("completion of {entry}"),
                    None => f.text.get("after").cloned().unwrap_or_default(),
                };
                st.snapshots.push(IndexSnapshot {
                    ms,
                    after,
                    index: f.text.get("index").cloned().unwrap_or_default(),
                });
            }
            return;
        }
        if e.metadata().target() == ANSWER {
            let span = e.parent().map(|p| p.into_u64());
            let answer = Answer {
                ms,
                returned: f
                    .text
                    .get("returned")
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
                outcome: f.text.get("outcome").cloned().unwrap_or_default(),
            };
            for d in st.decisions.iter_mut().rev() {
                if d.span == span && span.is_some() && d.answer.is_none() {
                    d.answer = Some(answer.clone());
                }
            }
            return;
        }
        let current = st.stack.last().copied();
        if e.metadata().target() == SPAN {
            // Emitted right after the decision, in the same request span.
            #[derive(Default)]
            struct Cached(bool);
            impl Visit for Cached {
                fn record_bool(&mut self, f: &Field, v: bool) {
                    if f.name() == "cached" {
                        self.0 = v;
                    }
                }
                fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
            }
            let mut c = Cached::default();
            e.record(&mut c);
            if let Some(d) = st.decisions.iter_mut().rev().find(|d| d.span == current) {
                d.telemetry = Some(c.0);
            }
            return;
        }
        if e.metadata().target() == TTL {
            st.store_failed_in = Some(current);
            return;
        }
        let span = current.and_then(|id| st.spans.get(&id));
        let get = |k: &str| span.and_then(|s| s.fields.get(k).copied());
        let nested = span.is_some_and(|s| s.name == "nested");
        let store_failed = st.store_failed_in == Some(current);
        let text = |k: &str| f.text.get(k).cloned().unwrap_or_else(|| "-".into());
        let d = Decision {
            ms,
            client: if nested { None } else { get("client") },
            req: if nested { None } else { get("req") },
            key: get("key"),
            run: if nested { get("run") } else { None },
            call: text("call"),
            content: text("content"),
            storage: text("storage"),
            path: text("path"),
            overridden: f.overridden,
            session: text("session"),
            rule: text("rule"),
            store_failed,
            answer: None,
            telemetry: None,
            span: current,
        };
        st.store_failed_in = None;
        st.decisions.push(d);
    }

    fn enter(&self, id: &Id) {
        self.state().stack.push(id.into_u64());
    }

    fn exit(&self, id: &Id) {
        let mut st = self.state();
        if let Some(i) = st.stack.iter().rposition(|s| *s == id.into_u64()) {
            st.stack.remove(i);
        }
    }
}

/// Keeps the capture's callsites "sometimes" interesting (see
/// [`record_run`]); wants nothing itself.
struct Sometimes;

impl Subscriber for Sometimes {
    fn register_callsite(&self, m: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        let ours = if m.is_span() {
            m.target().starts_with("sim::engine")
        } else {
            TARGETS.contains(&m.target())
        };
        if ours {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::DEBUG)
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `plan` with the decision capture installed for this run only.
pub fn record_run(plan: Plan, scenario: &Scenario) -> (RunOutcome, RunRecord) {
    // tracing-core caches per callsite whether any subscriber may want it,
    // and another thread meeting a callsite first (a run without capture,
    // in a test process) can cache "never" while this capture registers.
    // A dispatcher registered once and kept answers "sometimes" for the
    // capture's targets, so each event asks the current thread's
    // subscriber: this run's capture, or nobody.
    static KEEP: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    KEEP.get_or_init(|| tracing::Dispatch::new(Sometimes));
    let capture = Capture::default();
    let outcome = tracing::subscriber::with_default(capture.clone(), || {
        // Callsites first met before this capture listened may have cached
        // "never": ask again, now that it listens.
        tracing::callsite::rebuild_interest_cache();
        run_plan(plan, scenario, None)
    });
    let decisions = std::mem::take(&mut capture.state().decisions);
    let releases = std::mem::take(&mut capture.state().releases);
    let snapshots = std::mem::take(&mut capture.state().snapshots);
    let ttl_writes = std::mem::take(&mut capture.state().ttl_writes);
    let record = RunRecord {
        trace: outcome.trace.clone(),
        decisions,
        releases,
        snapshots,
        ttl_writes,
        violation: outcome
            .violations
            .first()
            .map(|v| (v.inv.to_string(), v.at_ms, v.detail.clone())),
        ..RunRecord::default()
    };
    (outcome, record)
}

/// A loader world's run as a record: its trace, decisions, first violation
/// and end.
pub fn loader_record(o: &RunOutcome, decisions: Vec<LoaderDecision>) -> RunRecord {
    RunRecord {
        trace: o.trace.clone(),
        violation: o
            .violations
            .first()
            .map(|v| (v.inv.to_string(), v.at_ms, v.detail.clone())),
        loader: decisions,
        end_ms: Some(o.sim_ms),
        ..RunRecord::default()
    }
}

impl RunRecord {
    /// The record as a file: JSON (`replay --trace-out`).
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self).map_err(|e| format!("cannot encode the trace: {e}"))
    }

    /// Reads a file written by `replay --trace-out`.
    pub fn load(path: &str) -> Result<RunRecord, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| {
            format!("{path} is not a trace written by `cache-sim replay --trace-out`: {e}")
        })
    }

    /// The answer of the request a decision was made for, as
    /// `(ms, outcome)`.
    pub fn answer_of(&self, d: &Decision) -> Option<(u64, String)> {
        d.answer.as_ref().map(|a| (a.ms, a.outcome.clone()))
    }
}

/// A trace line's `(ms, who, what)`.
pub fn split_line(l: &str) -> Option<(u64, &str, &str)> {
    let (ms, rest) = l.trim_start().split_once("ms ")?;
    let ms = ms.parse().ok()?;
    let (who, what) = rest.split_once(' ')?;
    Some((ms, who, what.trim_start()))
}
