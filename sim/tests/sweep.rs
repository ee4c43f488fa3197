//! The default sweep: a few hundred seeds over every named scenario must
//! pass, every enabled fault kind must fire somewhere, and replays must be
//! byte-identical (INV-12). `SIM_SEEDS` raises the seed count per scenario.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use sim::cli::{failure_text, replay_cmd};
use sim::plan::FaultKind;
use sim::run::check_determinism;
use sim::scenario::NAMED;
use sim::{run_seed, Scenario};

fn seeds_per_scenario() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

#[test]
fn default_sweep_passes_and_every_enabled_fault_fires() {
    let n = seeds_per_scenario();
    let work: Vec<(String, u64)> = NAMED
        .iter()
        .flat_map(|s| (0..n).map(move |seed| (s.to_string(), seed)))
        .collect();
    let next = Mutex::new(0usize);
    let failures = Mutex::new(Vec::new());
    let enabled = Mutex::new(BTreeSet::new());
    let fired: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    // Store errors the cache actually met, by store, in runs where the
    // store-error fault fired: a fault that fires but never bites is a
    // harness bug too.
    let bitten: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = {
                    let mut g = next.lock().unwrap();
                    *g += 1;
                    *g - 1
                };
                let Some((name, seed)) = work.get(i) else {
                    break;
                };
                let s = Scenario::named(name).unwrap();
                let o = run_seed(*seed, &s, None);
                enabled
                    .lock()
                    .unwrap()
                    .extend(o.plan.swarm.enabled.keys().copied());
                for (k, v) in &o.counters {
                    *fired.lock().unwrap().entry(k.clone()).or_default() += v;
                }
                if o.counters.contains_key("fault:store-error") {
                    let seen = o.counters.get("store-errors-seen").copied().unwrap_or(0);
                    *bitten
                        .lock()
                        .unwrap()
                        .entry(format!("{:?}", s.store))
                        .or_default() += seen;
                }
                if !o.passed() {
                    failures.lock().unwrap().push(failure_text(
                        &o,
                        &s,
                        &replay_cmd(*seed, &s, Some(name)),
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let fired = fired.into_inner().unwrap();
    let enabled: BTreeSet<FaultKind> = enabled.into_inner().unwrap();
    assert_eq!(
        enabled.len(),
        FaultKind::ALL.len(),
        "every kind is enabled by some seed"
    );
    for kind in enabled {
        let key = format!("fault:{}", kind.name());
        assert!(
            fired.get(&key).copied().unwrap_or(0) > 0,
            "{key} never fired: {fired:?}"
        );
    }
    // Results indexed under a result call key that differs from their call
    // key (C-6) are served to callers of that key.
    assert!(
        fired.get("result-id-hits").copied().unwrap_or(0) > 0,
        "no call was served through a result call key: {fired:?}"
    );
    // The workload reaches the cases its rules are about.
    for case in [
        "session-calls-overlapping",
        "ttl-key-twice-in-one-session",
        "ttl-expired-in-session",
        "close-with-calls-in-flight",
        "closed-during-execution",
        "cancel:call",
        "cancel:init",
        "recursive-call-refused",
        "nested-later-in-run",
        "nested-do-not-cache",
        "nested-retry",
        "ttl-row-written",
        "ttl-row-replaced",
        "wait-cycle-refused",
        "invalid-key-refused",
        "close-with-failing-hooks",
    ] {
        assert!(
            fired.get(case).copied().unwrap_or(0) > 0,
            "the default sweep never met {case}: {fired:?}"
        );
    }
    // Crashed clients come back and resume their plans.
    assert!(
        fired.get("client-restarts").copied().unwrap_or(0) > 0,
        "no crashed client restarted: {fired:?}"
    );
    let bitten = bitten.into_inner().unwrap();
    for store in ["Memory", "Sqlite"] {
        assert!(
            bitten.get(store).copied().unwrap_or(0) > 0,
            "store-error fired but the {store} store never failed an operation: {bitten:?}"
        );
    }
}

#[test]
fn same_seed_same_trace() {
    for name in ["standard", "restart-heavy"] {
        let s = Scenario::named(name).unwrap();
        for seed in [1, 7, 42] {
            check_determinism(seed, &s, None).unwrap();
        }
    }
}

#[test]
fn the_reference_scenario_file_lists_the_defaults() {
    // sim/scenarios/reference.toml documents every field with its default.
    let text = include_str!("../scenarios/reference.toml");
    assert_eq!(Scenario::parse(text).unwrap(), Scenario::default());
    // Parsing alone would pass with a field left out (it takes its default):
    // every field the defaults serialize must be written out.
    let all = toml::to_string(&Scenario::default()).unwrap();
    for line in all.lines().filter(|l| l.contains(" = ")) {
        let field = line.split(" = ").next().unwrap();
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{field} = "))),
            "reference.toml lacks `{field}`"
        );
    }
}

#[test]
fn bad_scenario_names_the_field() {
    let e = Scenario::parse("clients = \"many\"").unwrap_err();
    assert!(e.contains("clients"), "{e}");
    let e = Scenario::parse("[calls]\ncancel = 2.0").unwrap_err();
    assert!(e.contains("calls.cancel"), "{e}");
    let e = Scenario::parse("clientz = 3").unwrap_err();
    assert!(e.contains("clientz"), "{e}");
    for name in NAMED {
        Scenario::named(name).unwrap();
    }
}
