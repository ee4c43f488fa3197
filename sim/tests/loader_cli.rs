//! `cache-sim` on the loader scenarios, end to end through the binary:
//! `run` passes clean and fails (exit 1) with a loader switch, naming its
//! invariant; `replay` prints the same trace twice; `shrink` writes a
//! plan file that `replay --plan` fails the same way; `report` writes an
//! SVG; bad input is exit 2 naming the flag or field.

use std::process::{Command, Output};

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

#[test]
fn run_passes_clean_and_fails_with_a_switch_naming_its_invariant() {
    for sc in ["loader", "loader-faults"] {
        let o = cache_sim(&["run", "--scenario", sc, "--seeds", "20"]);
        assert_eq!(o.status.code(), Some(0), "{sc}: {}", stdout(&o));
        assert!(stdout(&o).contains("seeds 20 failures 0"), "{}", stdout(&o));
    }
    let o = cache_sim(&[
        "run",
        "--scenario",
        "loader",
        "--seeds",
        "3",
        "--bug",
        "local-ignores-expiry",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["invariant"], "LINV-3", "{first}");
    assert!(
        first["replay"]
            .as_str()
            .unwrap()
            .ends_with("--scenario loader --bug local-ignores-expiry"),
        "{first}"
    );
}

#[test]
fn replay_prints_one_trace_per_seed() {
    let args = ["replay", "--scenario", "loader-faults", "--seed", "9"];
    let (a, b) = (cache_sim(&args), cache_sim(&args));
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
    assert!(stdout(&a).contains("seed 9 passes"), "{}", stdout(&a));
    assert!(stdout(&a).contains("trace hash "), "{}", stdout(&a));
}

#[test]
fn shrink_writes_a_plan_file_that_replays_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shrunk.toml");
    let out = out.to_str().unwrap();
    let o = cache_sim(&[
        "shrink",
        "--scenario",
        "loader",
        "--seed",
        "0",
        "--bug",
        "local-ignores-expiry",
        "--out",
        out,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("seed 0 fails LINV-3: shrunk from"),
        "{}",
        stdout(&o)
    );
    let r = cache_sim(&["replay", "--plan", out]);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert!(stdout(&r).contains("violated LINV-3"), "{}", stdout(&r));
    // A clean seed has nothing to shrink.
    let o = cache_sim(&[
        "shrink",
        "--scenario",
        "loader",
        "--seed",
        "0",
        "--out",
        out,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("nothing to shrink"), "{}", stdout(&o));
}

#[test]
fn report_writes_a_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("t.svg");
    let svg = svg.to_str().unwrap();
    let o = cache_sim(&[
        "report",
        "--scenario",
        "loader-faults",
        "--seed",
        "9",
        "--svg",
        svg,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains("flights in the air"),
        "{}",
        &text[..200.min(text.len())]
    );
}

#[test]
fn bad_input_names_the_flag_or_field() {
    // A call-cache switch on a loader scenario.
    let o = cache_sim(&[
        "run",
        "--scenario",
        "loader",
        "--seeds",
        "1",
        "--bug",
        "key-only-delete",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("--bug") && stderr(&o).contains("not a loader switch"),
        "{}",
        stderr(&o)
    );
    // A loader scenario file with a bad field.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\nworld = \"loader\"\n[loader]\nstubborn = 3\n",
    )
    .unwrap();
    let o = cache_sim(&["run", "--scenario", path.to_str().unwrap(), "--seeds", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("`loader.stubborn`"), "{}", stderr(&o));
    // A loader plan file naming a key the scenario lacks.
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "world = \"loader\"\nbugs = []\n[scenario]\nname = \"p\"\nworld = \"loader\"\nkey_space = 2\n\
         [plan]\nseed = 1\nremote = true\nswarm = { enabled = [] }\nops = [\n\
         { at_ms = 5, op = { op = \"get\", node = 0, key = 5 } },\n]\n",
    )
    .unwrap();
    let o = cache_sim(&["replay", "--plan", plan.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("plan.ops[0]") && stderr(&o).contains("key_space"),
        "{}",
        stderr(&o)
    );
}
