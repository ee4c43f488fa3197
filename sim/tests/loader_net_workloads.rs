//! The default `loader-net` sweep reaches each workload its rules are
//! about — refresh tasks, a refresh task cancelled by `delete`, a loader
//! that ignores cancellation, an expiry LINV-3 judged, a batch LINV-7
//! judged — each counted in the run outcome, and passes.

use std::collections::BTreeMap;

use sim::loader_net::{run_net_seed, NetScenario};

#[test]
fn the_default_sweep_exercises_every_new_workload_kind() {
    let s = NetScenario::named("loader-net").unwrap();
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for seed in 0..100 {
        let o = run_net_seed(seed, &s);
        assert!(o.passed(), "seed {seed}: {:?}", o.violations);
        for (k, v) in o.counters {
            *total.entry(k).or_default() += v;
        }
    }
    for case in [
        // Refresh tasks started, and refresh loads run by them.
        "linv4-tasks",
        "refresh-loads",
        // A delete of a key with a refresh task (the task must go).
        "linv4-deleted-with-task",
        // Callers that gave up, and loaders that ran on after it.
        "callers-gave-up",
        "loader-ignored-cancel",
        "late-results",
        // Tier records judged against the clock, and reads after a
        // record served on the node had expired.
        "linv3-judged",
        "linv3-expired",
        // Batches whose missed keys LINV-7 judged.
        "linv7-batches",
    ] {
        assert!(
            total.get(case).copied().unwrap_or(0) > 0,
            "{case} never happened in 100 seeds: {total:?}"
        );
    }
    eprintln!("{total:?}");
}
