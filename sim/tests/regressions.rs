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
