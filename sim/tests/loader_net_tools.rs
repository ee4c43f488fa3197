//! The `loader-net` debugging loop as library functions: plan files round
//! trip and reject bad input naming the field and line; shrinking removes
//! nodes, streams, faults and operations while the same typed verdict
//! fails (a failure planted by judging the real run further); the loader
//! worlds' decision records diverge where the runs do.

use sim::decisions::{loader_record, LoaderDecision};
use sim::diff::first_divergence;
use sim::loader_net::oracle::Verdict;
use sim::loader_net::plan::{NetOpKind, NetPlan};
use sim::loader_net::tools::{self, Failing, NetPlanFile};
use sim::loader_net::{as_run_outcome, run_net_plan, NetScenario};

fn scenario() -> NetScenario {
    NetScenario::named("loader-net").unwrap()
}

#[test]
fn a_plan_file_round_trips_and_replays_the_same_trace() {
    let s = scenario();
    for seed in [1, 3, 902] {
        let plan = NetPlan::generate(seed, &s);
        let text = NetPlanFile::new(plan.clone(), &s, Some("LINV-5"))
            .to_toml()
            .unwrap();
        assert!(NetPlanFile::is_one(&text));
        let back = NetPlanFile::parse(&text).unwrap();
        assert_eq!(back.plan, plan, "seed {seed}");
        assert_eq!(back.scenario, s);
        assert_eq!(back.fails.as_deref(), Some("LINV-5"));
    }
    // Replaying the file is replaying the seed.
    let plan = NetPlan::generate(3, &s);
    let text = NetPlanFile::new(plan.clone(), &s, None).to_toml().unwrap();
    let f = NetPlanFile::parse(&text).unwrap();
    assert_eq!(
        run_net_plan(f.plan, &f.scenario).trace,
        run_net_plan(plan, &s).trace
    );
}

/// `text` with the first line containing `from` changed to contain `to`.
fn edit(text: &str, from: &str, to: &str) -> String {
    let at = text.find(from).expect("the text to edit");
    format!("{}{to}{}", &text[..at], &text[at + from.len()..])
}

#[test]
fn a_bad_plan_file_is_an_error_naming_the_field_and_line() {
    let s = scenario();
    // Seed 3 has faults (checked below) and a `once` in its first stream.
    let plan = NetPlan::generate(3, &s);
    assert!(!plan.faults.is_empty());
    let text = NetPlanFile::new(plan, &s, None).to_toml().unwrap();
    let line_of = |needle: &str| text[..text.find(needle).unwrap()].matches('\n').count() + 1;
    let fault = ", node = ";
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            edit(&text, fault, ", node = 7, x = "),
            vec!["unknown field `x`".into()],
        ),
        (
            edit(&text, "kind = { once = ", "kind = { twice = "),
            vec!["unknown variant `twice`".into()],
        ),
        (
            edit(&text, "format = 1", "format = 9"),
            vec!["`format`".into()],
        ),
        (
            edit(
                &text,
                "world = \"loader-net\"\nformat",
                "world = \"loader\"\nformat",
            ),
            vec!["`world`".into()],
        ),
        (
            edit(&text, "streams_per_node = 2", "streams_per_node = 1"),
            vec!["`plan.streams`".into()],
        ),
    ];
    for (bad, wanted) in cases {
        let e = NetPlanFile::parse(&bad).unwrap_err();
        for w in wanted {
            assert!(e.contains(&w), "{e}\nshould name {w:?}");
        }
    }
    // Range checks name the field path and the line of the item.
    let first_fault_node = text[text.find("faults = [").unwrap()..]
        .find(fault)
        .unwrap()
        + text.find("faults = [").unwrap();
    let bad = format!(
        "{}, node = 7{}",
        &text[..first_fault_node],
        &text[first_fault_node + fault.len() + 1..]
    );
    let e = NetPlanFile::parse(&bad).unwrap_err();
    let line = text[..first_fault_node].matches('\n').count() + 1;
    assert!(
        e.contains("`plan.faults[0].node`") && e.contains(&format!("(line {line})")),
        "{e}"
    );
    let once = "kind = { once = ";
    let at = text.find(once).unwrap() + once.len();
    let end = at + text[at..].find(' ').unwrap();
    let bad = format!("{}99{}", &text[..at], &text[end..]);
    let e = NetPlanFile::parse(&bad).unwrap_err();
    assert!(
        e.contains("ops[")
            && e.contains("key_space")
            && e.contains(&format!("(line {})", line_of(once))),
        "{e}"
    );
}

/// The planted failure: a stream that deletes a key and later reads it
/// (LINV-2, as a wrong value) — whatever the real oracles say.
fn planted(p: &NetPlan) -> Option<(usize, u64)> {
    p.streams.iter().enumerate().find_map(|(i, ops)| {
        ops.iter().enumerate().find_map(|(j, a)| match a.kind {
            NetOpKind::Delete(k) => ops[j + 1..]
                .iter()
                .any(|b| b.kind == NetOpKind::Once(k))
                .then_some((i, k)),
            _ => None,
        })
    })
}

#[test]
fn shrinking_keeps_the_planted_verdict_and_removes_the_rest() {
    let mut s = scenario();
    // A smaller world keeps the test quick in a debug build.
    s.ops_per_stream = 8;
    s.max_gap_ms = 40;
    let (seed, plan) = (0..200)
        .map(|seed| (seed, NetPlan::generate(seed, &s)))
        .find(|(_, p)| planted(p).is_some() && !p.faults.is_empty())
        .expect("a seed with the planted pattern and faults");
    let mut runs = 0;
    let judge = |p: NetPlan, s: &NetScenario| {
        let hit = planted(&p);
        let mut o = run_net_plan(p, s);
        if let Some((stream, key)) = hit {
            o.verdicts.insert(
                0,
                Verdict::PlaceholderWithoutNotFound {
                    node: stream / s.streams_per_node,
                    key,
                },
            );
        }
        o
    };
    let r = tools::shrink_net_with(plan.clone(), &s, 200, |p, s| {
        runs += 1;
        judge(p, s)
    })
    .expect("the planted failure fails");
    assert_eq!(r.failing.inv, "LINV-2", "seed {seed}");
    assert_eq!(r.runs, runs);
    assert!(tools::size(&r.case.plan) < r.original_size);
    assert_eq!(r.original_size, tools::size(&plan));
    // Nothing but the delete and the read is left: one node, one stream.
    assert_eq!(r.case.scenario.nodes, 1, "{:?}", r.case);
    assert_eq!(r.case.scenario.streams_per_node, 1);
    assert!(r.case.plan.faults.is_empty());
    assert_eq!(tools::size(&r.case.plan), 2, "{:?}", r.case.plan);
    // The shrunk plan file replays to the same typed failure.
    let text = NetPlanFile::new(r.case.plan.clone(), &r.case.scenario, Some(r.failing.inv))
        .to_toml()
        .unwrap();
    let f = NetPlanFile::parse(&text).unwrap();
    assert_eq!(Failing::of(&judge(f.plan, &f.scenario)), Some(r.failing));
    // A plan without the pattern (and without a real failure) passes: none.
    let mut clean = plan;
    for ops in &mut clean.streams {
        ops.retain(|o| !matches!(o.kind, NetOpKind::Delete(_)));
    }
    assert!(tools::shrink_net_with(clean, &s, 50, judge).is_none());
}

#[test]
fn loader_net_decisions_come_from_the_answers_and_diverge_where_the_plans_do() {
    let s = scenario();
    let plan = NetPlan::generate(3, &s);
    let o = as_run_outcome(run_net_plan(plan.clone(), &s));
    let d = tools::decisions(&o.trace);
    let ops: usize = plan.streams.iter().map(Vec::len).sum();
    // One decision per client operation (each stream ran to its end).
    assert_eq!(d.len(), ops, "{d:?}");
    assert!(d.iter().any(|x| x.path == "local") && d.iter().any(|x| x.path == "write"));
    let a = loader_record(&o, d.clone());
    assert_eq!(first_divergence(&a, &a.clone()), None);
    // Drop the first stream's first operation: the first decision that
    // differs is at or after the time the two runs first differ.
    let mut cut = plan;
    cut.streams[0].remove(0);
    let ob = as_run_outcome(run_net_plan(cut, &s));
    let b = loader_record(&ob, tools::decisions(&ob.trace));
    let div = first_divergence(&a, &b).expect("the runs diverge");
    let (x, y) = div.loader.clone().expect("a loader divergence");
    assert_ne!(x, y);
    assert_eq!(a.loader[..div.common], b.loader[..div.common]);
    let _: Option<LoaderDecision> = x;
}
