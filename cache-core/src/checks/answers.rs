//! What a call may be answered, given where it stands: a call that
//! revisits its own chain is refused with the recursive-call error (C-4,
//! C-4a), a refusal needs such a revisit or a join that would close a
//! wait-for cycle (C-4b) and never meets a top-level call, and only a
//! call whose own session is closed fails because a session closed (C-5,
//! S-2, S-3): a resolver's nested call has no session, so it never does.
//!
//! Each harness says what it knows about the call — the simulation knows
//! chains but not the wait-for graph, the machine driver knows both, the
//! facade driver neither — and the judgement uses what it is given.

use crate::CallError;

/// Where a call stands when it is answered, as far as the harness knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// A resolver's nested call (else a caller's own, top-level call).
    pub nested: bool,
    /// Whether its own session is open; `None` for a call with no session
    /// (a resolver's nested call never has one).
    pub session_open: Option<bool>,
    /// Whether its storage key is already in its own call chain (`None`:
    /// the harness does not follow chains).
    pub revisits: Option<bool>,
    /// Whether joining the call it would wait on closes a wait-for cycle
    /// (`None`: the harness does not follow the wait-for graph).
    pub closes_cycle: Option<bool>,
}

/// What the call got, as far as these rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// A value, or no value.
    Served,
    /// The recursive-call error.
    Refused,
    /// Cancelled (its own cancellation is checked before its chain, C-5).
    Cancelled,
    /// Refused because its session is closed (S-2).
    SessionClosed,
    /// Finished after its session closed (S-3).
    ClosedDuringExecution,
    /// Any other error (the resolver's, a panic, …).
    Failed,
}

impl Answered {
    /// The kind of a call's answer.
    pub fn of<T>(result: &Result<T, CallError>) -> Self {
        match result {
            Ok(_) => Self::Served,
            Err(CallError::Recursive { .. }) => Self::Refused,
            Err(CallError::Cancelled) => Self::Cancelled,
            Err(CallError::SessionClosed) => Self::SessionClosed,
            Err(CallError::ClosedDuringExecution) => Self::ClosedDuringExecution,
            Err(_) => Self::Failed,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Served => "served",
            Self::Refused => "refused as recursive",
            Self::Cancelled => "cancelled",
            Self::SessionClosed => "refused: session closed",
            Self::ClosedDuringExecution => "closed during execution",
            Self::Failed => "failed",
        }
    }
}

/// A refusal the judgement accepted, for the harness's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Nothing these rules count.
    Plain,
    /// A revisit of the call's own chain, refused (C-4, C-4a).
    RevisitRefused,
    /// A join that would close a wait-for cycle, refused (C-4b).
    CycleRefused,
}

/// One violation: the rule and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerViolation {
    /// The rule broken (`C-4` or `C-5`).
    pub rule: &'static str,
    /// What was seen.
    pub detail: String,
}

fn violation(rule: &'static str, detail: String) -> Result<Seen, AnswerViolation> {
    Err(AnswerViolation { rule, detail })
}

/// Judges one answer.
///
/// ```
/// use cache_core::checks::answers::{judge, Answered, Seen, Standing};
///
/// let nested = Standing {
///     nested: true,
///     session_open: None,
///     revisits: Some(true),
///     closes_cycle: None,
/// };
/// assert_eq!(judge(nested, Answered::Refused), Ok(Seen::RevisitRefused));
/// // C-4: a revisit that is served would wait on itself.
/// assert_eq!(judge(nested, Answered::Served).unwrap_err().rule, "C-4");
/// // C-5: a nested call has no session to lose.
/// assert_eq!(judge(nested, Answered::SessionClosed).unwrap_err().rule, "C-5");
/// ```
pub fn judge(standing: Standing, answered: Answered) -> Result<Seen, AnswerViolation> {
    let Standing {
        nested,
        session_open,
        revisits,
        closes_cycle,
    } = standing;
    match answered {
        Answered::SessionClosed | Answered::ClosedDuringExecution => match session_open {
            Some(false) => Ok(Seen::Plain),
            Some(true) => violation(
                "C-5",
                format!("{} while its own session is open", answered.name()),
            ),
            None => violation(
                "C-5",
                format!("a call with no session was {}", answered.name()),
            ),
        },
        Answered::Refused if !nested => {
            violation("C-4", "a top-level call was refused as recursive".into())
        }
        Answered::Refused if revisits == Some(true) => Ok(Seen::RevisitRefused),
        Answered::Refused if closes_cycle == Some(false) => violation(
            "C-4",
            "refused as recursive with neither a revisit of its chain nor a wait-for cycle".into(),
        ),
        Answered::Refused => Ok(Seen::CycleRefused),
        Answered::Cancelled => Ok(Seen::Plain),
        Answered::Served | Answered::Failed if revisits == Some(true) => violation(
            "C-4",
            format!(
                "it revisits its own chain and was {}, not refused",
                answered.name()
            ),
        ),
        Answered::Served | Answered::Failed => Ok(Seen::Plain),
    }
}

/// C-5: the sessions a shared call's resolver is told it may act for
/// (`Cache::sessions_waiting_on`), judged by what the harness knows: each
/// is open (a resolver acting for a closed session touches what its close
/// released), listed once and in order. A harness that models waiters
/// (the machine driver) also compares the list with its model.
///
/// ```
/// use cache_core::checks::answers::check_acting_sessions;
///
/// let open = |s: u8| s != 3;
/// check_acting_sessions(&[1, 2], open).unwrap();
/// assert_eq!(check_acting_sessions(&[1, 3], open).unwrap_err().rule, "C-5");
/// assert_eq!(check_acting_sessions(&[2, 1], open).unwrap_err().rule, "C-5");
/// ```
pub fn check_acting_sessions<S: Ord + Copy + std::fmt::Debug>(
    listed: &[S],
    open: impl Fn(S) -> bool,
) -> Result<(), AnswerViolation> {
    let fail = |detail| {
        Err(AnswerViolation {
            rule: "C-5",
            detail,
        })
    };
    if let Some(closed) = listed.iter().find(|s| !open(**s)) {
        return fail(format!(
            "a resolver may act for session {closed:?}, which has closed (listed: {listed:?})"
        ));
    }
    if listed.windows(2).any(|w| w[0] >= w[1]) {
        return fail(format!(
            "the sessions listed are not in order, each once: {listed:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NESTED: Standing = Standing {
        nested: true,
        session_open: None,
        revisits: Some(false),
        closes_cycle: Some(true),
    };
    const TOP_OPEN: Standing = Standing {
        nested: false,
        session_open: Some(true),
        revisits: Some(false),
        closes_cycle: None,
    };

    fn rule(r: Result<Seen, AnswerViolation>) -> &'static str {
        r.expect_err("a violation").rule
    }

    #[test]
    fn c4_revisits_must_be_refused() {
        let revisit = Standing {
            revisits: Some(true),
            ..NESTED
        };
        assert_eq!(judge(revisit, Answered::Refused), Ok(Seen::RevisitRefused));
        assert_eq!(judge(revisit, Answered::Cancelled), Ok(Seen::Plain));
        assert_eq!(rule(judge(revisit, Answered::Served)), "C-4");
        assert_eq!(rule(judge(revisit, Answered::Failed)), "C-4");
        // Without chains the harness cannot tell a revisit: no judgement.
        let unknown = Standing {
            revisits: None,
            closes_cycle: None,
            ..NESTED
        };
        assert_eq!(judge(unknown, Answered::Served), Ok(Seen::Plain));
        assert_eq!(judge(unknown, Answered::Refused), Ok(Seen::CycleRefused));
    }

    #[test]
    fn c4b_a_refusal_needs_a_revisit_or_a_cycle() {
        assert_eq!(judge(NESTED, Answered::Refused), Ok(Seen::CycleRefused));
        let no_cycle = Standing {
            closes_cycle: Some(false),
            ..NESTED
        };
        assert_eq!(rule(judge(no_cycle, Answered::Refused)), "C-4");
        // A cycle the harness cannot see is taken as one.
        let unseen = Standing {
            closes_cycle: None,
            ..NESTED
        };
        assert_eq!(judge(unseen, Answered::Refused), Ok(Seen::CycleRefused));
    }

    #[test]
    fn c4_top_level_calls_are_never_refused() {
        assert_eq!(rule(judge(TOP_OPEN, Answered::Refused)), "C-4");
        let closed = Standing {
            session_open: Some(false),
            ..TOP_OPEN
        };
        assert_eq!(rule(judge(closed, Answered::Refused)), "C-4");
        let sessionless = Standing {
            session_open: None,
            ..TOP_OPEN
        };
        assert_eq!(rule(judge(sessionless, Answered::Refused)), "C-4");
    }

    #[test]
    fn c5_only_a_closed_own_session_fails_a_call() {
        let closed = Standing {
            session_open: Some(false),
            ..TOP_OPEN
        };
        for a in [Answered::SessionClosed, Answered::ClosedDuringExecution] {
            assert_eq!(judge(closed, a), Ok(Seen::Plain));
            assert_eq!(rule(judge(TOP_OPEN, a)), "C-5");
            assert_eq!(rule(judge(NESTED, a)), "C-5");
        }
        assert_eq!(judge(TOP_OPEN, Answered::Served), Ok(Seen::Plain));
        assert_eq!(judge(TOP_OPEN, Answered::Failed), Ok(Seen::Plain));
    }

    #[test]
    fn answers_are_read_from_the_cache_error() {
        let of = |e: CallError| Answered::of::<()>(&Err(e));
        assert_eq!(Answered::of(&Ok::<u8, CallError>(1)), Answered::Served);
        assert_eq!(
            of(CallError::Recursive { key: "k".into() }),
            Answered::Refused
        );
        assert_eq!(of(CallError::Cancelled), Answered::Cancelled);
        assert_eq!(of(CallError::SessionClosed), Answered::SessionClosed);
        assert_eq!(
            of(CallError::ClosedDuringExecution),
            Answered::ClosedDuringExecution
        );
        assert_eq!(of(CallError::InvalidKey("".into())), Answered::Failed);
    }
}
