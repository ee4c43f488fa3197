//! S-5 judged from outside the cache: which calls emitted a span, which of
//! them ran their own resolver, and how often a session's key was emitted.
//!
//! The check is told four things — a call starts, a span is emitted for a
//! call, a call's own resolver starts, a call answers — and judges:
//!
//! - a call emits at most one span;
//! - a span says `cached` only when the call's resolver did not run, and a
//!   call that answered with a value after a span saying "not cached" ran
//!   its resolver;
//! - a call that must always emit (do-not-cache, repeated telemetry, no
//!   session) and ran its resolver emitted its span, and one that asked
//!   for it (do-not-cache, repeated telemetry, a forced retry the caller
//!   knows of) and got a value emitted one even when it was a hit;
//! - a session call that got a value without a span finds an earlier span
//!   for its key in its session ("repeats are hits" needs a first one);
//! - a forced retry (S-4) that got a value emitted its span. From outside,
//!   a call is known to be forced when it is alone from start to answer and
//!   follows a call of the same key in the same session that failed with a
//!   resolver error, also alone (with calls overlapping, another call may
//!   have retried and cleared the flag first: the cache decides a call only
//!   after its TTL store lookup, which may take long);
//! - at most one span per key per session from calls that need not always
//!   emit ([`SpanCheck::finish`]). Keys whose session saw an error or a
//!   cancellation are left out: some forced retries cannot be told apart.
//!
//! Calls, sessions and keys are numbers the caller chooses; the check keeps
//! everything in ordered maps, so its messages are deterministic.

use std::collections::BTreeMap;
use std::future::Future;

use crate::error::CallError;

tokio::task_local! {
    /// The check's number for the call being decided: the cache emits a
    /// call's span in the caller's task, so a span sink finds its call here.
    static CALL: u64;
}

/// Runs `fut` as call `call` (nothing is tagged for `None`): a span the
/// cache emits while deciding it reads the number back with
/// [`current_call`].
pub async fn as_call<T>(call: Option<u64>, fut: impl Future<Output = T>) -> T {
    match call {
        Some(c) => CALL.scope(c, fut).await,
        None => fut.await,
    }
}

/// The number of the call whose span is being emitted, inside [`as_call`].
pub fn current_call() -> Option<u64> {
    CALL.try_with(|c| *c).ok()
}

/// One S-5 violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanViolation {
    /// What was seen, naming the call, session and key.
    pub detail: String,
}

impl SpanViolation {
    /// The rule broken.
    pub const RULE: &'static str = "S-5";
}

impl std::fmt::Display for SpanViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", Self::RULE, self.detail)
    }
}

/// What the check knows of a call when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallFacts {
    /// The caller's session; `None` for calls made without one (nested
    /// calls), which always emit.
    pub session: Option<u64>,
    /// The call's key, as the caller numbers keys (one number per call key).
    pub key: u64,
    /// The call always emits: do-not-cache, or repeated telemetry asked for.
    pub always: bool,
    /// S-4 applies: a resolver error for this key makes the session's next
    /// call of it a forced retry (calls, not arbitrary entries).
    pub retries: bool,
}

/// How a call answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// With a value (a handle).
    Value,
    /// With an error the resolver produced (or its panic): S-4's flag.
    ResolverError,
    /// With any other error, or cancelled.
    Other,
}

impl Answer {
    /// How a call's result answered it.
    pub fn of<T>(result: &Result<T, CallError>) -> Self {
        match result {
            Ok(_) => Answer::Value,
            Err(CallError::Resolver(_) | CallError::Panicked(_)) => Answer::ResolverError,
            Err(_) => Answer::Other,
        }
    }
}

#[derive(Debug)]
struct Call {
    facts: CallFacts,
    /// The `cached` flag of each span emitted for it.
    spans: Vec<bool>,
    ran: bool,
    /// No other call of its key and session was in flight when it started.
    alone: bool,
    /// The pair's start count when it started.
    start: u64,
    /// Known to be a forced retry (S-4).
    forced: bool,
}

#[derive(Debug, Default)]
struct Pair {
    /// Spans of any call of this key in this session.
    all: u32,
    /// Spans of calls that need not always emit.
    once: u32,
    /// An error or cancellation was answered for this key in this session.
    unclean: bool,
    /// Calls in flight.
    in_flight: u32,
    /// Calls started.
    starts: u64,
    /// The last call answered was alone from start to answer and got a
    /// resolver error: the next call, if alone, is a forced retry.
    flagged: bool,
}

/// The S-5 judge (see the module docs).
#[derive(Debug, Default)]
pub struct SpanCheck {
    calls: BTreeMap<u64, Call>,
    pairs: BTreeMap<(u64, u64), Pair>,
    spans: u64,
    forced: u64,
}

type Verdict = Result<(), SpanViolation>;

fn violation(detail: String) -> Verdict {
    Err(SpanViolation { detail })
}

impl SpanCheck {
    /// A new check with nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Call `call` starts.
    pub fn call_started(&mut self, call: u64, facts: CallFacts) {
        let (mut alone, mut start, mut forced) = (false, 0, false);
        if let Some(s) = facts.session {
            let pair = self.pairs.entry((s, facts.key)).or_default();
            pair.in_flight += 1;
            pair.starts += 1;
            alone = pair.in_flight == 1;
            start = pair.starts;
            forced = alone && pair.flagged && facts.retries;
        }
        self.calls.insert(
            call,
            Call {
                facts,
                spans: Vec::new(),
                ran: false,
                alone,
                start,
                forced,
            },
        );
    }

    /// A span was emitted while the cache decided call `call`.
    pub fn span(&mut self, call: u64, cached: bool) -> Verdict {
        self.spans += 1;
        let Some(c) = self.calls.get_mut(&call) else {
            return violation(format!("a span for c{call}, which is no call in flight"));
        };
        c.spans.push(cached);
        if let Some(s) = c.facts.session {
            let pair = self.pairs.entry((s, c.facts.key)).or_default();
            pair.all += 1;
            if !c.facts.always {
                pair.once += 1;
            }
        }
        if c.spans.len() > 1 {
            return violation(format!("c{call} emitted {} spans", c.spans.len()));
        }
        if cached && c.ran {
            return violation(format!("c{call} ran its resolver but its span says cached"));
        }
        Ok(())
    }

    /// The resolver that call `call` passed started: it ran for that call.
    pub fn resolver_ran(&mut self, call: u64) -> Verdict {
        let Some(c) = self.calls.get_mut(&call) else {
            return Ok(());
        };
        c.ran = true;
        if c.spans.first() == Some(&true) {
            return violation(format!("c{call}'s span said cached, then its resolver ran"));
        }
        Ok(())
    }

    /// Call `call` answered.
    pub fn call_answered(&mut self, call: u64, answer: Answer) -> Verdict {
        let ok = answer == Answer::Value;
        let Some(c) = self.calls.remove(&call) else {
            return Ok(());
        };
        let CallFacts {
            session,
            key,
            always,
            ..
        } = c.facts;
        let mut alone = false;
        if let Some(s) = session {
            let pair = self.pairs.entry((s, key)).or_default();
            pair.unclean |= !ok;
            pair.in_flight -= 1;
            alone = c.alone && pair.in_flight == 0 && pair.starts == c.start;
            pair.flagged = alone && answer == Answer::ResolverError;
        }
        let forced = c.forced && alone;
        let span = c.spans.first().copied();
        if ok && span == Some(false) && !c.ran {
            return violation(format!(
                "c{call} got a value and its span says its resolver ran, but it did not"
            ));
        }
        self.forced += u64::from(ok && forced);
        if ok && forced && span.is_none() {
            return violation(format!(
                "c{call} on k{key} is a forced retry (S-4) and emitted no span"
            ));
        }
        if ok && always && span.is_none() {
            return violation(format!(
                "c{call} on k{key} must always emit (do-not-cache, repeated telemetry or a forced retry) and got a value without a span"
            ));
        }
        if c.ran && span.is_none() && (always || session.is_none()) {
            return violation(format!(
                "c{call} on k{key} must always emit, ran its resolver and emitted no span"
            ));
        }
        if let (true, None, Some(s)) = (ok, span, session) {
            if self.pairs.get(&(s, key)).is_none_or(|p| p.all == 0) {
                return violation(format!(
                    "c{call} got k{key} in session {s} without a span, and none was emitted for k{key} in that session before"
                ));
            }
        }
        Ok(())
    }

    /// How many spans were seen (a run that saw none tested nothing).
    pub fn spans_seen(&self) -> u64 {
        self.spans
    }

    /// How many forced retries (S-4) that got a value were judged.
    pub fn forced_retries_judged(&self) -> u64 {
        self.forced
    }

    /// At the end: no key of a session emitted twice from calls that need
    /// not always emit (repeats are hits).
    pub fn finish(&self) -> Verdict {
        for ((s, key), pair) in &self.pairs {
            if pair.once > 1 && !pair.unclean {
                return violation(format!(
                    "k{key} emitted {} spans in session {s}; repeats are hits",
                    pair.once
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Call `call` of key 7 in session 1: its span, whether its resolver
    /// ran, and how it answered, each step required to pass.
    fn run_call(c: &mut SpanCheck, call: u64, span: Option<bool>, ran: bool, answer: Answer) {
        c.call_started(call, facts(Some(1), 7, false));
        if let Some(cached) = span {
            c.span(call, cached).unwrap();
        }
        if ran {
            c.resolver_ran(call).unwrap();
        }
        c.call_answered(call, answer).unwrap();
    }

    fn facts(session: Option<u64>, key: u64, always: bool) -> CallFacts {
        CallFacts {
            session,
            key,
            always,
            retries: true,
        }
    }

    #[test]
    fn s5_first_call_runs_second_hits() {
        let mut c = SpanCheck::new();
        run_call(&mut c, 1, Some(false), true, Answer::Value);
        run_call(&mut c, 2, None, false, Answer::Value);
        c.finish().unwrap();
        assert_eq!(c.spans_seen(), 1);
    }

    #[test]
    fn s5_each_judgement_fires() {
        // A cached span for a call that ran.
        let mut c = SpanCheck::new();
        c.call_started(1, facts(Some(1), 7, false));
        c.resolver_ran(1).unwrap();
        assert!(c.span(1, true).is_err());

        // Two spans for one call.
        let mut c = SpanCheck::new();
        c.call_started(1, facts(Some(1), 7, true));
        c.span(1, false).unwrap();
        assert!(c.span(1, false).is_err());

        // A do-not-cache run without its span.
        let mut c = SpanCheck::new();
        c.call_started(1, facts(Some(1), 7, true));
        c.resolver_ran(1).unwrap();
        assert!(c.call_answered(1, Answer::Value).is_err());

        // A hit asking for repeated telemetry without its span.
        let mut c = SpanCheck::new();
        run_call(&mut c, 1, Some(false), true, Answer::Value);
        c.call_started(2, facts(Some(1), 7, true));
        let v = c.call_answered(2, Answer::Value).unwrap_err();
        assert!(v.detail.contains("must always emit"), "{v}");

        // A first call of a key in a session without a span.
        let mut c = SpanCheck::new();
        c.call_started(1, facts(Some(1), 7, false));
        assert!(c.call_answered(1, Answer::Value).is_err());

        // "Not cached" said for a call that got a value without running.
        let mut c = SpanCheck::new();
        c.call_started(1, facts(Some(1), 7, false));
        c.span(1, false).unwrap();
        assert!(c.call_answered(1, Answer::Value).is_err());

        // A forced retry without its span.
        let mut c = SpanCheck::new();
        run_call(&mut c, 1, Some(false), true, Answer::ResolverError);
        c.call_started(2, facts(Some(1), 7, false));
        c.resolver_ran(2).unwrap();
        assert!(c.call_answered(2, Answer::Value).is_err());

        // A repeat emitted again.
        let mut c = SpanCheck::new();
        run_call(&mut c, 1, Some(false), true, Answer::Value);
        run_call(&mut c, 2, Some(true), false, Answer::Value);
        assert!(c.finish().is_err());
    }

    #[test]
    fn s5_a_call_overtaken_by_a_later_one_is_not_judged_forced() {
        // The later call may decide first (the first waits on its TTL
        // store lookup), run as the forced retry and clear the flag.
        let mut c = SpanCheck::new();
        run_call(&mut c, 1, Some(false), true, Answer::ResolverError);
        c.call_started(2, facts(Some(1), 7, false));
        c.call_started(3, facts(Some(1), 7, false));
        c.span(3, false).unwrap();
        c.resolver_ran(3).unwrap();
        c.call_answered(3, Answer::Value).unwrap();
        c.call_answered(2, Answer::Value).unwrap();
        assert_eq!(c.forced_retries_judged(), 0);
    }

    #[test]
    fn s5_repeats_after_an_error_are_not_judged() {
        let mut c = SpanCheck::new();
        run_call(&mut c, 1, Some(false), false, Answer::ResolverError);
        run_call(&mut c, 2, Some(false), true, Answer::Value);
        c.finish().unwrap();
    }
}
