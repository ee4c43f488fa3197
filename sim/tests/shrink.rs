//! Shrinking and plan files (SPEC §10 outputs: "the shortest trace that
//! still fails, and the one command that replays it").

use sim::plan::{Fault, FaultKind};
use sim::plan_file::PlanFile;
use sim::shrink::shrink;
use sim::{run_plan, Plan, Scenario};

/// A failing setup that needs no planted hook: a bug-zoo switch that the
/// standard scenario's seed 1 trips (S-4 / INV-6).
fn failing() -> (Plan, Scenario) {
    let s = Scenario::named("standard")
        .unwrap()
        .with_bugs(&["errors-cached-in-session"])
        .unwrap();
    (Plan::generate(1, &s), s)
}

#[test]
fn shrinking_keeps_the_invariant_and_the_plan_file_replays_it() {
    let (plan, s) = failing();
    let original = plan.size();
    let shrunk = shrink(plan, &s, None, 300).expect("seed 1 fails with the switch on");
    assert_eq!(shrunk.inv, "INV-6");
    assert_eq!(shrunk.original_size, original);
    assert!(
        shrunk.plan.size() * 4 < original,
        "shrunk only from {original} to {} steps",
        shrunk.plan.size()
    );

    // The file round-trips exactly, switches included.
    let file = PlanFile::new(shrunk.plan.clone(), &s, Some(shrunk.inv));
    let text = file.to_toml().unwrap();
    let back = PlanFile::parse(&text).unwrap();
    assert_eq!(back, file);
    assert_eq!(back.bugs, vec!["errors-cached-in-session".to_string()]);

    // Replaying the file fails the same invariant with the same trace as
    // running the shrunk plan directly (INV-12).
    let direct = run_plan(shrunk.plan, &s, None);
    let replayed = run_plan(
        back.plan.clone(),
        &back.scenario_with_bugs(&[]).unwrap(),
        None,
    );
    assert_eq!(replayed.first_invariant(), Some("INV-6"));
    assert_eq!(replayed.trace_hash(), direct.trace_hash());

    // Without the switch the same file passes: the failure is the bug's.
    let clean = run_plan(back.plan, &back.scenario, None);
    assert!(clean.passed(), "{:?}", clean.violations);
}

#[test]
fn a_passing_plan_does_not_shrink() {
    let s = Scenario::named("standard").unwrap();
    assert!(shrink(Plan::generate(0, &s), &s, None, 50).is_none());
}

fn file_text() -> String {
    let (plan, s) = failing();
    PlanFile::new(plan, &s, None).to_toml().unwrap()
}

#[test]
fn malformed_plan_files_get_errors_naming_the_field() {
    let err = PlanFile::parse("format = 1\n[scenario\n").unwrap_err();
    assert!(err.starts_with("bad plan file"), "{err}");

    let err = PlanFile::parse(&file_text().replace("format = 2", "format = 9")).unwrap_err();
    assert!(err.contains("`format`"), "{err}");

    let err = PlanFile::parse(&format!("surprise = true\n{}", file_text())).unwrap_err();
    assert!(err.contains("surprise"), "{err}");

    let err = PlanFile::parse(&file_text().replace("clients = 8", "clients = 3")).unwrap_err();
    assert!(err.contains("`plan.clients`"), "{err}");

    let err = PlanFile::parse(&file_text().replace("key_space = 8", "key_space = 0")).unwrap_err();
    assert!(err.contains("key_space"), "{err}");

    let err = PlanFile::parse(&file_text().replace("bugs = [", "bugs = [\"no-such-bug\", "))
        .and_then(|f| f.scenario_with_bugs(&[]))
        .unwrap_err();
    assert!(err.contains("no-such-bug"), "{err}");
}

#[test]
fn a_plan_pointing_outside_its_scenario_is_refused() {
    let (mut plan, s) = failing();
    plan.faults.push(Fault {
        at_ms: 10,
        kind: FaultKind::Partition,
        client: 99,
        arg: 100,
    });
    let text = PlanFile::new(plan, &s, None).to_toml().unwrap();
    let err = PlanFile::parse(&text).unwrap_err();
    assert!(err.contains("client") && err.contains("99"), "{err}");
}
