//! The loader world (sim/src/loader/): the named scenarios pass a sweep,
//! one seed gives one trace (INV-12), scenario files name bad fields,
//! plan files replay byte for byte, shrinking keeps the failure, and the
//! sweep and replay commands reach the loader through `Scenario`.

use cache_core::bugs::{LoaderBug, LoaderBugs};
use sim::loader::plan_file::LoaderPlanFile;
use sim::loader::shrink::shrink_loader;
use sim::loader::{run_loader_plan, run_loader_seed, LoaderPlan, LoaderScenario, LOADER_NAMED};
use sim::{run_seed, Scenario};

#[test]
fn named_loader_scenarios_pass_a_sweep() {
    for name in LOADER_NAMED {
        let s = LoaderScenario::named(name).unwrap();
        let mut faults = 0;
        for seed in 0..60 {
            let o = run_loader_seed(seed, &s);
            assert!(o.passed(), "{name} seed {seed}: {:?}", o.violation);
            assert!(
                o.stats.loads > 0 && o.stats.local_hits > 0,
                "{name} seed {seed}: {:?}",
                o.stats
            );
            faults += o
                .counters
                .keys()
                .filter(|k| k.starts_with("fault:"))
                .count();
        }
        // Only the faults scenario turns the swarm on.
        assert_eq!(
            faults > 0,
            *name == "loader-faults",
            "{name}: {faults} fault kinds fired"
        );
    }
}

#[test]
fn one_seed_gives_one_trace() {
    for name in LOADER_NAMED {
        let s = LoaderScenario::named(name).unwrap();
        for seed in [0, 7, 12_345] {
            let a = run_loader_seed(seed, &s);
            let b = run_loader_seed(seed, &s);
            assert_eq!(a.trace, b.trace, "{name} seed {seed}");
            assert_eq!(a.samples, b.samples, "{name} seed {seed}");
        }
        // Different seeds differ (the trace is not constant).
        assert_ne!(run_loader_seed(1, &s).trace, run_loader_seed(2, &s).trace);
    }
}

#[test]
fn the_sweep_and_replay_reach_the_loader_through_scenario() {
    let s = Scenario::load(Some("loader-faults")).unwrap();
    assert!(s.loader.is_some());
    let o = run_seed(3, &s, None);
    assert!(o.passed(), "{:?}", o.violations);
    let direct = run_loader_seed(3, &LoaderScenario::named("loader-faults").unwrap());
    assert_eq!(o.trace, direct.trace);
    // --bug takes the loader's switches on a loader scenario, not the call cache's.
    let s = s.with_bugs(&["local-ignores-expiry"]).unwrap();
    assert!(s
        .loader
        .as_ref()
        .unwrap()
        .bugs
        .on(LoaderBug::LocalIgnoresExpiry));
    let e = Scenario::named("loader")
        .unwrap()
        .with_bugs(&["key-only-delete"])
        .unwrap_err();
    assert!(
        e.contains("not a loader switch") && e.contains("local-ignores-expiry"),
        "{e}"
    );
}

#[test]
fn the_scenario_file_documents_the_defaults() {
    // sim/scenarios/loader.toml lists every field with its default.
    assert_eq!(
        LoaderScenario::named("loader").unwrap(),
        LoaderScenario::default()
    );
}

#[test]
fn bad_scenario_values_name_the_field() {
    let cases = [
        ("nodes = 0", "`nodes`"),
        ("nodes = 9", "`nodes`"),
        ("key_space = 65", "`key_space`"),
        ("world = \"calls\"", "`world`"),
        ("no_remote = 1.5", "`no_remote`"),
        ("remote = false\nlocal_capacity = 0", "`local_capacity`"),
        ("[calls]\nrefresh = nan", "`calls.refresh`"),
        ("[calls]\nbatch_max = 0", "`calls.batch_max`"),
        ("[loader]\nvalue = 0\nfail = 0\nnot_found = 0", "`[loader]`"),
        ("[faults]\nmax_duration_ms = 10", "`faults.max_duration_ms`"),
        ("[faults]\nrate = 101", "`faults.rate`"),
        ("colour = 1", "colour"),
        ("nodes = \"three\"", "nodes"),
    ];
    for (text, field) in cases {
        let e = LoaderScenario::parse(&format!("name = \"t\"\nworld = \"loader\"\n{text}"))
            .unwrap_err();
        assert!(
            e.contains(field),
            "{text:?} gave {e:?}, which does not name {field}"
        );
    }
    // A file with `world` is a loader scenario; errors carry its path.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.toml");
    std::fs::write(&path, "name = \"mine\"\nworld = \"loader\"\nnodes = 2\n").unwrap();
    let s = Scenario::load(Some(path.to_str().unwrap())).unwrap();
    assert_eq!(
        (s.name.as_str(), s.loader.as_ref().unwrap().nodes),
        ("mine", 2)
    );
    std::fs::write(&path, "name = \"mine\"\nworld = \"loader\"\nnodes = 0\n").unwrap();
    let e = Scenario::load(Some(path.to_str().unwrap())).unwrap_err();
    assert!(e.contains("l.toml") && e.contains("`nodes`"), "{e}");
}

#[test]
fn a_plan_file_replays_the_same_trace() {
    let s = LoaderScenario::named("loader-faults").unwrap();
    let plan = LoaderPlan::generate(9, &s);
    let text = LoaderPlanFile::new(plan.clone(), &s, None)
        .to_toml()
        .unwrap();
    let f = LoaderPlanFile::parse(&text).unwrap();
    assert_eq!(f.plan, plan);
    let scenario = f.scenario_with_bugs(&[]).unwrap();
    let again = run_loader_plan(f.plan, &scenario);
    assert_eq!(again.trace, run_loader_seed(9, &s).trace);
    // A plan naming a node the scenario lacks is an error naming the entry.
    let bad = text.replacen("node = 0", "node = 7", 1);
    assert_ne!(bad, text);
    let e = LoaderPlanFile::parse(&bad).unwrap_err();
    assert!(
        e.contains("plan.ops[") && e.contains("scenario.nodes"),
        "{e}"
    );
}

#[test]
fn shrinking_keeps_the_failure_and_the_plan_file_replays_it() {
    let bug = LoaderBug::LocalIgnoresExpiry;
    let s = LoaderScenario {
        bugs: LoaderBugs::none().with(bug),
        ..LoaderScenario::named("loader").unwrap()
    };
    let found = sim::loader::zoo::hunt_loader(bug, 20).expect("the sweep catches the switch");
    let plan = LoaderPlan::generate(found.seed, &s);
    let r = shrink_loader(plan.clone(), &s, 300).expect("it fails");
    assert_eq!(r.inv, "LINV-3");
    assert!(
        r.plan.size() < plan.size() && r.plan.size() <= 6,
        "{} ops left",
        r.plan.size()
    );
    let text = LoaderPlanFile::new(r.plan, &s, Some(r.inv))
        .to_toml()
        .unwrap();
    let f = LoaderPlanFile::parse(&text).unwrap();
    assert_eq!(f.bugs, ["local-ignores-expiry"]);
    let o = run_loader_plan(f.plan.clone(), &f.scenario_with_bugs(&[]).unwrap());
    assert_eq!(o.violation.map(|v| v.inv), Some("LINV-3"));
    // Without the switch the shrunk plan passes: the switch is the cause.
    assert!(run_loader_plan(f.plan, &f.scenario).passed());
}
