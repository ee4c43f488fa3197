//! The `cache-sim` binary as CI runs it: runs that would test nothing are
//! bad input (exit 2), any seed count starts at once, failures are listed
//! last with their replay commands, `--format json` is JSON lines only,
//! `--scenario all` covers every named scenario, and Ctrl-C prints the
//! summary so far. Each test runs a few seeds at most.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cache_core::bugs::Bug;
use serde_json::Value;

/// A switch that fails every one of the first seeds of `standard`
/// (`cache-sim zoo`: standard seed 0, INV-6).
const QUICK_BUG: &str = "errors-cached-in-session";
/// The first of a run of seeds that each fail with [`QUICK_BUG`] (INV-6).
const QUICK_FIRST: &str = "1";

fn cache_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cache-sim"))
        .args(args)
        .output()
        .expect("cache-sim runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("UTF-8 stderr")
}

/// Runs `run ARGS`, expects exit 2 and an error naming `flag`.
fn bad_input(args: &[&str], flag: &str) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let o = cache_sim(&all);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    assert!(
        stderr(&o).contains(flag),
        "{args:?}: the error should name {flag}: {}",
        stderr(&o)
    );
    assert!(
        !stdout(&o).contains("seeds 0 failures 0"),
        "{args:?}: no summary of an empty run"
    );
}

/// Every stdout line as JSON; the last one is the summary.
fn json_lines(o: &Output) -> (Vec<Value>, Value) {
    let mut lines: Vec<Value> = stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = lines.pop().expect("a summary line");
    assert_eq!(summary["type"], "summary", "{summary}");
    for l in &lines {
        assert_eq!(
            l["type"], "seed",
            "only seed objects before the summary: {l}"
        );
    }
    (lines, summary)
}

#[test]
fn runs_that_would_test_nothing_are_bad_input() {
    bad_input(&["--seeds", "0"], "--seeds");
    bad_input(&["--seeds", "3", "--shard", "5/10"], "--shard");
    bad_input(&["--shard", "2/2"], "--shard");
    bad_input(&["--max-failures", "0"], "--max-failures");
}

#[test]
fn seed_ranges_past_u64_are_bad_input() {
    bad_input(
        &["--first-seed", "18446744073709551615", "--seeds", "10"],
        "--seeds",
    );
    bad_input(
        &["--first-seed", "2", "--seeds", "18446744073709551615"],
        "--first-seed",
    );
    // The largest seed itself is in range.
    let o = cache_sim(&[
        "run",
        "--first-seed",
        "18446744073709551615",
        "--seeds",
        "1",
    ]);
    let out = stdout(&o);
    assert!(
        out.lines()
            .last()
            .unwrap_or("")
            .starts_with("seeds 1 failures "),
        "{out}"
    );
}

#[test]
fn jobs_zero_means_one_per_core() {
    let o = cache_sim(&["run", "--seeds", "2", "--jobs", "0"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let last = stdout(&o).lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("seeds 2 failures 0 "), "{last}");
    assert!(last.contains(&format!(" jobs {cores}")), "{last}");
}

#[test]
fn a_billion_seeds_stop_at_the_first_failure() {
    // Seeds are handed out lazily: no list of a billion seeds is built.
    let start = Instant::now();
    let o = cache_sim(&[
        "run",
        "--first-seed",
        QUICK_FIRST,
        "--seeds",
        "1000000000",
        "--max-failures",
        "1",
        "--bug",
        QUICK_BUG,
    ]);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    let n = lines.len();
    assert!(n >= 4, "{out}");
    assert_eq!(lines[n - 4], "failing seeds: 1");
    assert!(
        lines[n - 3].starts_with(&format!("  standard seed {QUICK_FIRST} INV-6: cargo run"))
            && lines[n - 3].ends_with(&format!("replay --seed {QUICK_FIRST} --bug {QUICK_BUG}")),
        "{}",
        lines[n - 3]
    );
    // What the seeds exercised, every case of sim::oracle::CASES named.
    assert!(lines[n - 2].starts_with("coverage: "), "{}", lines[n - 2]);
    for (case, _) in sim::oracle::CASES {
        assert!(lines[n - 2].contains(&format!("{case} ")), "{case}");
    }
    assert!(
        lines[n - 1].starts_with("seeds 1 failures 1 seeds/s ")
            && lines[n - 1].contains("(scenario standard)")
            && lines[n - 1].contains("stopped early (--max-failures 1)"),
        "{}",
        lines[n - 1]
    );
}

#[test]
fn after_the_first_details_each_failure_gets_one_line() {
    let o = cache_sim(&[
        "run",
        "--first-seed",
        QUICK_FIRST,
        "--seeds",
        "4",
        "--bug",
        QUICK_BUG,
        "--details",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.matches("  last trace lines:").count(), 1, "{out}");
    let one_liners = out
        .lines()
        .filter(|l| l.starts_with("FAIL seed ") && l.contains("): INV-6 at "))
        .count();
    assert_eq!(one_liners, 3, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let n = lines.len();
    assert_eq!(lines[n - 7], "failing seeds: 4");
    // Listed in seed order, whatever order the seeds finished in.
    for (i, seed) in (1..5).enumerate() {
        assert!(
            lines[n - 6 + i].starts_with(&format!("  standard seed {seed} INV-6: ")),
            "{}",
            lines[n - 6 + i]
        );
    }
    assert!(lines[n - 1].starts_with("seeds 4 failures 4 seeds/s "));
}

#[test]
fn json_output_is_one_object_per_seed_and_a_summary() {
    let o = cache_sim(&[
        "run", "--seeds", "3", "--format", "json", "--bug", QUICK_BUG,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (seeds, summary) = json_lines(&o);
    assert_eq!(seeds.len(), 3);
    assert_eq!(summary["seeds"], 3);
    let failed: Vec<&Value> = seeds.iter().filter(|s| s["verdict"] == "fail").collect();
    assert_eq!(summary["failures"], failed.len());
    assert_eq!(
        summary["failing"].as_array().map(Vec::len),
        Some(failed.len())
    );
    for s in &failed {
        assert_eq!(s["scenario"], "standard");
        assert_eq!(s["invariant"], "INV-6");
        assert!(s["detail"].is_string() && s["replay"].is_string(), "{s}");
        assert!(s["sim_ms"].as_u64().is_some() && s["wall_ms"].as_u64().is_some());
    }
    assert_eq!(summary["stopped_early"], false);
    assert_eq!(summary["interrupted"], false);
    assert!(summary["seeds_per_sec"].as_f64().is_some());
    assert!(summary["sim_wall_ratio"].as_f64().is_some());
    // Coverage: every case named, faults fired counted.
    for (case, _) in sim::oracle::CASES {
        assert!(summary["coverage"][case].as_u64().is_some(), "{case}");
    }

    let o = cache_sim(&["run", "--seeds", "2", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (seeds, summary) = json_lines(&o);
    assert_eq!(seeds.len(), 2);
    for s in &seeds {
        assert_eq!(s["verdict"], "pass");
        assert!(s["invariant"].is_null() && s["detail"].is_null() && s["replay"].is_null());
    }
    assert_eq!(summary["failures"], 0);
}

#[test]
fn scenario_all_runs_every_named_scenario() {
    let o = cache_sim(&[
        "run",
        "--scenario",
        "all",
        "--seeds",
        "2",
        "--format",
        "json",
        "--jobs",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (seeds, summary) = json_lines(&o);
    let mut ran: Vec<(String, u64)> = seeds
        .iter()
        .map(|s| {
            (
                s["scenario"].as_str().unwrap().to_string(),
                s["seed"].as_u64().unwrap(),
            )
        })
        .collect();
    ran.sort();
    let mut want: Vec<(String, u64)> = sim::sweep::all_named()
        .flat_map(|n| (0..2).map(move |seed| (n.to_string(), seed)))
        .collect();
    want.sort();
    assert_eq!(ran, want);
    assert_eq!(summary["seeds"], 2 * sim::sweep::all_named().count());
    assert_eq!(summary["scenario"], "all");
}

#[test]
fn help_documents_exit_codes_the_spec_and_the_switches() {
    let o = cache_sim(&["run", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    assert!(help.contains("Exit codes:"), "{help}");
    for code in ["  0 ", "  1 ", "  2 ", "  130 "] {
        assert!(help.contains(code), "exit code {code:?} undocumented");
    }
    for bug in Bug::ALL {
        assert!(help.contains(bug.name()), "--bug help lacks {bug}");
    }
    assert!(
        help.contains("0 means one per core"),
        "--jobs 0 undocumented"
    );
    let top = stdout(&cache_sim(&["--help"]));
    assert!(top.contains("docs/SPEC.md"), "{top}");
    for cmd in ["replay", "shrink", "report", "zoo"] {
        let help = stdout(&cache_sim(&[cmd, "--help"]));
        assert!(
            help.contains(Bug::ALL[0].name()),
            "{cmd} --help lacks the switches"
        );
    }
    let o = cache_sim(&["run", "--bug", "no-such-switch"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(Bug::ALL[0].name()), "{}", stderr(&o));
}

/// `zoo --list` is for scripts (`ci/fuzz-report`): one tab-separated line
/// per switch, the call cache's then the loader's, each naming the rule and
/// invariants the zoo's own types give; it hunts nothing and cannot be
/// combined with a hunt's flags.
#[test]
fn zoo_list_prints_every_switch_with_its_rule_and_invariants() {
    use cache_core::bugs::LoaderBug;
    let o = cache_sim(&["zoo", "--list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed: Vec<Vec<&str>> = std::str::from_utf8(&o.stdout)
        .expect("UTF-8 stdout")
        .lines()
        .map(|l| l.split('\t').collect())
        .collect();
    let calls = Bug::ALL
        .iter()
        .map(|b| ("calls", b.name(), b.rule(), b.invariants()));
    let loader = LoaderBug::ALL
        .iter()
        .map(|b| ("loader", b.name(), b.rule(), b.invariants()));
    let expected: Vec<_> = calls.chain(loader).collect();
    assert_eq!(listed.len(), expected.len(), "{listed:?}");
    for (fields, (world, name, rule, invariants)) in listed.iter().zip(expected) {
        let listed_invariants: Vec<&str> = fields.get(3).map_or(vec![], |f| f.split(',').collect());
        assert_eq!(fields.len(), 4, "{fields:?}");
        assert_eq!(fields[..3], [world, name, rule], "{fields:?}");
        assert_eq!(listed_invariants, invariants, "{fields:?}");
        assert!(
            !invariants.is_empty(),
            "{name}: a switch without invariants"
        );
    }
    for flags in [&["--bug", "key-only-delete"][..], &["--seeds", "3"]] {
        let mut args = vec!["zoo", "--list"];
        args.extend_from_slice(flags);
        let o = cache_sim(&args);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", stdout(&o));
        assert!(stderr(&o).contains(flags[0]), "{flags:?}: {}", stderr(&o));
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_prints_the_summary_so_far() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cache-sim"))
        .args(["run", "--seeds", "1000000000", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cache-sim starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    // A seed finished: the handler is in place (it goes in before the sweep).
    out.read_line(&mut first).unwrap();
    let seed: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(seed["type"], "seed");
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let rest: Vec<String> = out.lines().map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let summary: Value = serde_json::from_str(rest.last().expect("a summary")).unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["interrupted"], true);
    assert_eq!(
        summary["seeds"],
        rest.len(),
        "every finished seed before it"
    );
}

#[test]
fn shrink_refuses_a_seed_its_plan_file_cannot_hold_before_any_work() {
    let out = Command::new(env!("CARGO_BIN_EXE_cache-sim"))
        .args(["shrink", "--seed", "9223372036854775808"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--seed"), "{err}");
}
