//! `cache-sim diff`: for every bug-zoo switch, on its first failing seed,
//! the run with the switch diverges from the run without it at a cache
//! decision (or its answer) at or before the violation — the diff points at
//! what the switch changed. Also: capturing decisions does not change a run.

use cache_core::bugs::{Bug, Bugs};
use sim::decisions::record_run;
use sim::diff::{first_divergence, report};
use sim::zoo::hunt;
use sim::{run_seed, Plan, Scenario};

#[test]
fn every_switch_diverges_at_or_before_its_violation() {
    for bug in Bug::ALL {
        let found = hunt(bug, 40).unwrap_or_else(|| panic!("{bug}: the sweep catches it"));
        let clean = Scenario::named(&found.scenario).unwrap();
        let mut buggy = clean.clone();
        buggy.bugs = Bugs::none().with(bug);
        let plan = Plan::generate(found.seed, &clean);
        let (o_a, a) = record_run(plan.clone(), &clean);
        let (o_b, b) = record_run(plan, &buggy);
        assert!(
            o_a.passed(),
            "{bug}: seed {} passes without the switch",
            found.seed
        );
        let (inv, at_ms, _) = b.violation.clone().expect("the switch's run fails");
        assert_eq!(inv, found.invariant, "{bug}");
        assert!(!o_b.passed());
        let div = first_divergence(&a, &b)
            .unwrap_or_else(|| panic!("{bug}: no divergence before {inv} at {at_ms} ms"));
        assert!(
            div.ms <= at_ms,
            "{bug}: first divergence at {} ms, after {inv} at {at_ms} ms\n{}",
            div.ms,
            report("without", &a, "with", &b, 3)
        );
        // The decisions before it are common to both runs.
        let lines = |r: &sim::decisions::RunRecord| -> Vec<String> {
            r.decisions[..div.common]
                .iter()
                .map(|d| format!("{} {} {}", d.ms, d.who(), d.line()))
                .collect()
        };
        assert_eq!(lines(&a), lines(&b), "{bug}");
        let text = report("without", &a, "with", &b, 3);
        assert!(text.contains("first divergence: "), "{text}");
        assert!(text.contains(&format!("violated {inv}")), "{text}");
    }
}

#[test]
fn capturing_decisions_leaves_the_run_unchanged() {
    let s = Scenario::named("nested-heavy").unwrap();
    let plain = run_seed(3, &s, None);
    let (o, rec) = record_run(Plan::generate(3, &s), &s);
    assert_eq!(o.trace, plain.trace, "INV-12: the capture is invisible");
    assert_eq!(rec.trace, plain.trace);
    assert!(!rec.decisions.is_empty());
    // Nested calls are named by their resolver run, client calls by their request.
    assert!(rec
        .decisions
        .iter()
        .any(|d| d.run.is_some() && d.client.is_none()));
    assert!(rec
        .decisions
        .iter()
        .all(|d| d.run.is_some() || d.req.is_some()));
    // Every answered request's answer matches its trace line.
    for d in rec.decisions.iter().filter(|d| d.client.is_some()) {
        if let Some(a) = &d.answer {
            let line = format!("client{:<2}", d.client.unwrap());
            let want = format!("r{} k{} {}", d.req.unwrap(), d.key.unwrap(), a.outcome);
            assert!(
                rec.trace
                    .iter()
                    .any(|l| l.contains(line.trim()) && l.ends_with(&want)),
                "no trace line for {want}"
            );
        }
    }
    // A run without divergence; the capture is deterministic (INV-12).
    assert!(first_divergence(&rec, &rec.clone()).is_none());
    let (_, again) = record_run(Plan::generate(3, &s), &s);
    assert_eq!(again, rec);
}
