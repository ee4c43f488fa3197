//! C-4 / C-4a / C-4b and C-5's attribution, judged by the check every
//! harness shares ([`cache_core::checks::answers`]): a call chain that
//! revisits a storage key is refused with the recursive-call error on
//! every path (cached, do-not-cache, retried), a refusal never meets a
//! top-level call, and only a call whose own session closed fails because
//! a session closed — a resolver's nested call, which has no session,
//! never does.
//!
//! A revisit that is not refused waits on itself, so the recursion rules
//! are reported under INV-11 (no wait-for cycle) the moment it is seen,
//! not when the run times out; a wrongly attributed close is an answer the
//! caller did not ask for, INV-7.

use cache_core::checks::answers::{judge, AnswerViolation, Answered, Seen, Standing};
use cache_core::machine::SessionId;
use cache_core::CallError;

use crate::protocol::ErrKind;
use crate::world::World;

/// The sim's invariant for a broken rule.
fn invariant(v: &AnswerViolation) -> &'static str {
    if v.rule == "C-5" {
        "INV-7"
    } else {
        "INV-11"
    }
}

fn answered(error: Option<ErrKind>) -> Answered {
    match error {
        None => Answered::Served,
        Some(ErrKind::Recursive) => Answered::Refused,
        Some(ErrKind::Cancelled) => Answered::Cancelled,
        Some(ErrKind::SessionClosed) => Answered::SessionClosed,
        Some(ErrKind::ClosedDuringExecution) => Answered::ClosedDuringExecution,
        Some(_) => Answered::Failed,
    }
}

/// A resolver's nested call answered.
pub(super) fn nested_answered(
    world: &World,
    run: u64,
    key: u64,
    chain: &[u64],
    revisits: bool,
    error: Option<ErrKind>,
) {
    let standing = Standing {
        nested: true,
        session_open: None,
        revisits: Some(revisits),
        // The sim does not follow the wait-for graph; the cache's own
        // check (INV-11 after every step) does.
        closes_cycle: None,
    };
    match judge(standing, answered(error)) {
        Ok(Seen::RevisitRefused) => world.count("recursive-call-refused"),
        Ok(Seen::CycleRefused) => world.count("wait-cycle-refused"),
        Ok(Seen::Plain) => {}
        Err(v) => {
            let chain: Vec<String> = chain.iter().map(|k| format!("k{k}")).collect();
            world.violate(
                invariant(&v),
                format!(
                    "{}: run{run}'s nested call of k{key} (chain [{}]): {}",
                    v.rule,
                    chain.join(" -> "),
                    v.detail
                ),
            );
        }
    }
}

/// A client's call failed: a top-level call is never refused as
/// recursive, and fails because a session closed only when that session
/// is its own (S-2, S-3) — a shared call never fails because the session
/// that started it closed while this caller's stays open.
pub(super) fn top_level_failed(
    world: &World,
    req: u64,
    key: u64,
    error: &CallError,
    (inc, session): (u64, SessionId),
) {
    let standing = Standing {
        nested: false,
        session_open: Some(world.shadow().session_open(inc, session)),
        revisits: Some(false),
        closes_cycle: None,
    };
    if let Err(v) = judge(standing, Answered::of::<()>(&Err(error.clone()))) {
        world.violate(
            invariant(&v),
            format!("{}: r{req} k{key} in {session}: {}", v.rule, v.detail),
        );
    }
}
