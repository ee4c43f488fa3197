//! What a caller may be served through a TTL key (T-3, T-7, INV-8), judged
//! for every result that existed before the call arrived:
//!
//! - a call without a TTL never reaches a TTL-scoped result, and a TTL'd
//!   call never reaches a result no TTL'd call stored (C-6, T-3);
//! - another session reaches a TTL'd result only when it was safe to
//!   persist (T-3);
//! - nobody — the session that made it included — gets it once its TTL has
//!   expired on the highest clock reading the cache had seen when the call
//!   arrived (T-7).
//!
//! The harness says until when a result may be served (`valid_until`): the
//! simulation and the facade driver bound it by the clock it was made at
//! plus its TTL (a row's expiry and a fresh key's window both end by then,
//! T-2), the machine driver by its own model of rows and windows.

use std::fmt::Debug;

/// A TTL'd result as the harness recorded it when it was stored.
#[derive(Clone, Copy, Debug)]
pub struct TtlResult<S> {
    /// The session whose call made it (`None`: a nested call's).
    pub session: S,
    /// Whether it was marked safe to persist.
    pub safe: bool,
    /// The last clock reading at which it may still be served.
    pub valid_until: i64,
    /// When it was made, in the harness's own order of events.
    pub made_at: u64,
}

/// The call that was served, as the harness issued it.
#[derive(Clone, Copy, Debug)]
pub struct ServedCall<S> {
    /// Whether the call had a TTL.
    pub ttl: bool,
    /// Its session.
    pub session: S,
    /// When it arrived, in the same order as [`TtlResult::made_at`].
    pub arrived_at: u64,
    /// The highest clock reading the cache had seen when it arrived.
    pub clock: i64,
}

/// One violation: the rule and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeViolation {
    /// The rule broken (`T-3`, `T-7` or `INV-8`).
    pub rule: &'static str,
    /// What was seen.
    pub detail: String,
}

/// Judges one result served to `call` from storage; `stored` is the
/// result's TTL record (`None`: stored by a call without a TTL).
pub fn judge<S: PartialEq + Debug>(
    call: ServedCall<S>,
    stored: Option<TtlResult<S>>,
) -> Result<(), ServeViolation> {
    let fail = |rule, detail| Err(ServeViolation { rule, detail });
    let stored = match (call.ttl, stored) {
        (false, None) => return Ok(()),
        (false, Some(s)) => {
            return fail(
                "T-3",
                format!(
                    "a call without a TTL reached a TTL-scoped result of {:?}",
                    s.session
                ),
            )
        }
        (true, None) => {
            return fail(
                "INV-8",
                "a TTL key served a result no TTL'd call stored".to_string(),
            )
        }
        (true, Some(s)) => s,
    };
    // A result made after the call arrived was made for it (it joined the
    // flight): nothing was reused.
    if stored.made_at >= call.arrived_at {
        return Ok(());
    }
    let own = stored.session == call.session;
    if !own && !stored.safe {
        return fail(
            "INV-8",
            format!(
                "an unsafe result of session {:?} reached {:?} through a TTL key (T-3)",
                stored.session, call.session
            ),
        );
    }
    if call.clock > stored.valid_until {
        return fail(
            "T-7",
            format!(
                "a result of {:?} served to {:?}{} at clock {}, its TTL ended at {}",
                stored.session,
                call.session,
                if own { " (its own session)" } else { "" },
                call.clock,
                stored.valid_until
            ),
        );
    }
    Ok(())
}

/// T-3: a result reaches every caller with the safety its resolver gave it
/// (`made`); `served` is what the caller's result says. A flag that turns
/// safe on the way lets a later write share what the resolver kept
/// private; one that turns unsafe loses sharing no other check notices.
pub fn check_safety(served: bool, made: bool) -> Result<(), ServeViolation> {
    if served == made {
        return Ok(());
    }
    Err(ServeViolation {
        rule: "T-3",
        detail: format!(
            "a result was served as safe to persist: {served}, its resolver said {made}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(session: u8, clock: i64) -> ServedCall<u8> {
        ServedCall {
            ttl: true,
            session,
            arrived_at: 10,
            clock,
        }
    }

    fn stored(session: u8, safe: bool) -> TtlResult<u8> {
        TtlResult {
            session,
            safe,
            valid_until: 100,
            made_at: 5,
        }
    }

    fn rule(r: Result<(), ServeViolation>) -> Option<&'static str> {
        r.err().map(|v| v.rule)
    }

    #[test]
    fn t3_a_safety_flag_changed_on_the_way_is_reported() {
        assert_eq!(rule(check_safety(true, true)), None);
        assert_eq!(rule(check_safety(false, false)), None);
        assert_eq!(rule(check_safety(true, false)), Some("T-3"));
        assert_eq!(rule(check_safety(false, true)), Some("T-3"));
    }

    #[test]
    fn t7_an_expired_result_is_refused_to_its_own_session_too() {
        assert_eq!(rule(judge(call(1, 100), Some(stored(1, false)))), None);
        assert_eq!(
            rule(judge(call(1, 101), Some(stored(1, false)))),
            Some("T-7")
        );
        assert_eq!(
            rule(judge(call(2, 101), Some(stored(1, true)))),
            Some("T-7")
        );
    }

    #[test]
    fn t3_an_unsafe_result_stays_in_its_session() {
        assert_eq!(rule(judge(call(1, 50), Some(stored(1, false)))), None);
        assert_eq!(rule(judge(call(2, 50), Some(stored(1, true)))), None);
        assert_eq!(
            rule(judge(call(2, 50), Some(stored(1, false)))),
            Some("INV-8")
        );
    }

    #[test]
    fn c6_ttl_scoped_and_plain_results_never_cross() {
        let plain = ServedCall {
            ttl: false,
            ..call(1, 50)
        };
        assert_eq!(rule(judge(plain, None)), None);
        assert_eq!(rule(judge(plain, Some(stored(1, true)))), Some("T-3"));
        assert_eq!(rule(judge(call(1, 50), None)), Some("INV-8"));
    }

    #[test]
    fn a_result_made_after_the_call_arrived_was_not_reused() {
        let late = TtlResult {
            made_at: 10,
            ..stored(1, false)
        };
        assert_eq!(rule(judge(call(2, 500), Some(late))), None);
    }
}
