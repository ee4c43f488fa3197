//! Seeds that once failed, kept as regression tests: each must pass, and
//! must still exercise what made it fail.

use sim::{run_seed, Scenario};

/// `ttl-heavy` seeds that broke INV-8 at 5,000 seeds: a clock jump back
/// (with a slow TTL store in 2502, the store answered after the jump) made
/// the cache judge an expired row live again. T-7: expiry is judged on the
/// highest clock reading the cache has seen, read when the call arrives and
/// after the store answers.
#[test]
fn t7_backward_clock_jumps_never_revive_an_expired_result() {
    let s = Scenario::named("ttl-heavy").unwrap();
    for seed in [1458, 2212, 2502] {
        let o = run_seed(seed, &s, None);
        assert!(
            o.trace
                .iter()
                .any(|l| l.contains("clock-jump") && l.contains("arg -")),
            "seed {seed} no longer jumps the clock back: pick another regression seed"
        );
        assert!(o.passed(), "seed {seed}: {:?}", o.violations);
    }
}

/// `ttl-heavy` seed 2323, from the standing campaign: a call of k2 finished
/// in session s8, its row persisted s8's fresh key, and in the same step
/// session s7's lookup read that row and ran a resolver under the key. The
/// identity oracle (T-2(a)) learned of rows only at the end of each step,
/// so it reported s8's fresh key handed to s7 before any row persisted it:
/// the harness's error, not the cache's. Rows the store accepted are now
/// judged before a resolver start is.
/// `restart-heavy` seed 6757 failed the same way.
#[test]
fn t2a_a_row_persisted_in_the_same_step_lets_another_session_share_the_key() {
    for (scenario, seed) in [("ttl-heavy", 2323), ("restart-heavy", 6757)] {
        let o = run_seed(seed, &Scenario::named(scenario).unwrap(), None);
        assert!(
            o.counters.get("ttl-row-written").copied().unwrap_or(0) > 0,
            "{scenario} seed {seed} no longer writes TTL rows: pick another regression seed"
        );
        assert!(o.passed(), "{scenario} seed {seed}: {:?}", o.violations);
    }
}
