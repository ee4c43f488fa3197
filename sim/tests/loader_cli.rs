//! `cache-sim` on the loader scenarios, end to end through the binary:
//! `run` passes clean and fails (exit 1) with a loader switch, naming its
//! invariant; `replay` prints the same trace twice; `shrink` writes a
//! plan file that `replay --plan` fails the same way; `report` writes an
//! SVG; bad input is exit 2 naming the flag or field.

use std::process::Command;

/// Runs `cache-sim ARGS`, checks its exit code and that its stdout (for
/// exit 2: stderr) holds every one of `wanted`; returns stdout.
fn expect(args: &[&str], code: i32, wanted: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_cache-sim"))
        .args(args)
        .output()
        .expect("cache-sim runs");
    let out = String::from_utf8(o.stdout).expect("UTF-8 stdout");
    let err = String::from_utf8(o.stderr).expect("UTF-8 stderr");
    assert_eq!(o.status.code(), Some(code), "{args:?}\n{out}\n{err}");
    let text = if code == 2 { &err } else { &out };
    for w in wanted {
        assert!(text.contains(w), "{args:?} should print {w:?}:\n{text}");
    }
    out
}

#[test]
fn run_passes_clean_and_fails_with_a_switch_naming_its_invariant() {
    for sc in ["loader", "loader-faults"] {
        expect(
            &["run", "--scenario", sc, "--seeds", "20"],
            0,
            &["seeds 20 failures 0"],
        );
    }
    let bug = ["--bug", "local-ignores-expiry"];
    let args = [
        &[
            "run",
            "--scenario",
            "loader",
            "--seeds",
            "3",
            "--format",
            "json",
        ][..],
        &bug,
    ]
    .concat();
    let out = expect(&args, 1, &[]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["invariant"], "LINV-3", "{first}");
    let replay = first["replay"].as_str().unwrap();
    assert!(
        replay.ends_with("--scenario loader --bug local-ignores-expiry"),
        "{replay}"
    );
}

#[test]
fn replay_prints_one_trace_per_seed() {
    let args = ["replay", "--scenario", "loader-faults", "--seed", "9"];
    let a = expect(&args, 0, &["seed 9 passes", "trace hash "]);
    assert_eq!(a, expect(&args, 0, &[]));
}

#[test]
fn shrink_writes_a_plan_file_that_replays_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shrunk.toml");
    let out = out.to_str().unwrap();
    let shrink = [
        "shrink",
        "--scenario",
        "loader",
        "--seed",
        "0",
        "--out",
        out,
    ];
    let bug = ["--bug", "local-ignores-expiry"];
    expect(
        &[&shrink[..], &bug].concat(),
        1,
        &["seed 0 fails LINV-3: shrunk from"],
    );
    expect(&["replay", "--plan", out], 1, &["violated LINV-3"]);
    // A clean seed has nothing to shrink.
    expect(&shrink, 0, &["nothing to shrink"]);
    // A saved plan file (switches included) shrinks like its seed.
    let saved = dir.path().join("saved.toml");
    let saved = saved.to_str().unwrap();
    expect(
        &[
            &[
                "replay",
                "--scenario",
                "loader",
                "--seed",
                "0",
                "--save-plan",
                saved,
            ][..],
            &bug,
        ]
        .concat(),
        1,
        &["violated LINV-3"],
    );
    let again = dir.path().join("again.toml");
    expect(
        &["shrink", "--plan", saved, "--out", again.to_str().unwrap()],
        1,
        &["seed 0 fails LINV-3: shrunk from", "replay --plan"],
    );
    assert_eq!(
        std::fs::read_to_string(&again).unwrap(),
        std::fs::read_to_string(out).unwrap()
    );
}

#[test]
fn report_writes_a_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("t.svg");
    let svg = svg.to_str().unwrap();
    expect(
        &[
            "report",
            "--scenario",
            "loader-faults",
            "--seed",
            "9",
            "--svg",
            svg,
        ],
        0,
        &["wrote "],
    );
    let text = std::fs::read_to_string(svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains("flights in the air"),
        "{text:.200}"
    );
}

#[test]
fn bad_input_names_the_flag_or_field() {
    // A call-cache switch on a loader scenario.
    let run = ["run", "--seeds", "1", "--scenario"];
    expect(
        &[&run[..], &["loader", "--bug", "key-only-delete"]].concat(),
        2,
        &["--bug", "not a loader switch"],
    );
    // A loader scenario file with a bad field.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\nworld = \"loader\"\n[loader]\nstubborn = 3\n",
    )
    .unwrap();
    expect(
        &[&run[..], &[path.to_str().unwrap()]].concat(),
        2,
        &["`loader.stubborn`"],
    );
    // A loader plan file naming a key the scenario lacks.
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "world = \"loader\"\nbugs = []\n[scenario]\nname = \"p\"\nworld = \"loader\"\nkey_space = 2\n\
         [plan]\nseed = 1\nremote = true\nswarm = { enabled = [] }\nops = [\n\
         { at_ms = 5, op = { op = \"get\", node = 0, key = 5 } },\n]\n",
    )
    .unwrap();
    expect(
        &["replay", "--plan", plan.to_str().unwrap()],
        2,
        &["plan.ops[0]", "key_space"],
    );
}

#[test]
fn loader_net_runs_and_replays_a_seed_or_its_plan_file() {
    expect(
        &["run", "--scenario", "loader-net", "--seeds", "5"],
        0,
        &["seeds 5 failures 0", "(scenario loader-net)"],
    );
    // Seed 902 once found the same-node read/delete race (L-12); its
    // replay passes and is the same twice.
    let args = ["replay", "--scenario", "loader-net", "--seed", "902"];
    let first = expect(&args, 0, &["swarm:"]);
    assert_eq!(expect(&args, 0, &[]), first);
    // Its plan, saved to a file, replays to the same trace.
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("902.toml");
    let plan = plan.to_str().unwrap();
    let saved = expect(&[&args[..], &["--save-plan", plan]].concat(), 0, &[]);
    assert_eq!(saved, first);
    let text = std::fs::read_to_string(plan).unwrap();
    assert!(
        text.starts_with("world = \"loader-net\"\nformat = 1\n"),
        "{text:.80}"
    );
    let hash = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("trace hash "))
            .map(str::to_string)
    };
    let replayed = expect(&["replay", "--plan", plan], 0, &["seed 902 passes"]);
    assert_eq!(hash(&replayed), hash(&first));
    assert!(hash(&first).is_some());
    // A passing seed (or plan file) has nothing to shrink.
    expect(
        &["shrink", "--scenario", "loader-net", "--seed", "902"],
        0,
        &["seed 902 passes: nothing to shrink"],
    );
    expect(&["shrink", "--plan", plan], 0, &["nothing to shrink"]);
    // A bad plan file names the field and its line.
    std::fs::write(
        plan,
        text.replacen("kind = { once = ", "kind = { once = 99, x = ", 1),
    )
    .unwrap();
    expect(&["replay", "--plan", plan], 2, &["line ", "x"]);
    // A call-cache switch is refused, naming the flag and the world.
    expect(
        &[
            "run",
            "--scenario",
            "loader-net",
            "--seeds",
            "1",
            "--bug",
            "key-only-delete",
        ],
        2,
        &["--bug", "loader-net"],
    );
    // The loader's switches run through the world's real loaders.
    expect(
        &[
            "run",
            "--scenario",
            "loader-net",
            "--seeds",
            "3",
            "--bug",
            "waiters-not-counted",
        ],
        1,
        &["LINV-6", "--bug waiters-not-counted"],
    );
}

#[test]
fn loader_net_report_explain_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let svg = path("net.svg");
    let seed = ["--scenario", "loader-net", "--seed", "3"];
    expect(
        &[&["report", "--svg", &svg][..], &seed].concat(),
        0,
        &["wrote ", " samples over "],
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg")
            && text.contains("flights in the air")
            && text.contains("loader-net"),
        "{text:.200}"
    );
    // `explain` lists the decisions of one key, each with its rule.
    let out = expect(
        &[&["explain", "--key", "0"][..], &seed].concat(),
        0,
        &["key k0: "],
    );
    let listed = out
        .lines()
        .filter(|l| l.trim_start().starts_with("rule: "))
        .count();
    let n: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("key k0: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a count of decisions");
    assert!(n > 0 && listed == n, "{out}");
    expect(
        &[&["explain", "--key", "10"][..], &seed].concat(),
        2,
        &["--key 10"],
    );
    // The same run twice: no divergence. Another plan: a divergence.
    let (a, b, c) = (path("a.json"), path("b.json"), path("c.json"));
    expect(
        &[&["replay", "--trace-out", &a][..], &seed].concat(),
        0,
        &[],
    );
    expect(
        &[&["replay", "--trace-out", &b][..], &seed].concat(),
        0,
        &[],
    );
    expect(&["diff", &a, &b], 0, &["no divergence"]);
    let other = ["--scenario", "loader-net", "--seed", "4"];
    expect(
        &[&["replay", "--trace-out", &c][..], &other].concat(),
        0,
        &[],
    );
    expect(
        &["diff", &a, &c],
        1,
        &["first divergence: loader decision #"],
    );
}

#[test]
fn modelled_loader_explain_and_diff_a_switch() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let seed = ["--scenario", "loader", "--seed", "0"];
    let bug = ["--bug", "local-ignores-expiry"];
    let out = expect(
        &[&["explain", "--key", "1"][..], &seed].concat(),
        0,
        &["key k1: "],
    );
    assert!(out.contains("rule: L-"), "{out}");
    let (a, b) = (path("a.json"), path("b.json"));
    expect(
        &[&["replay", "--trace-out", &a][..], &seed].concat(),
        0,
        &[],
    );
    expect(
        &[&["replay", "--trace-out", &b][..], &seed, &bug].concat(),
        1,
        &["violated LINV-3"],
    );
    let out = expect(
        &["diff", &a, &b],
        1,
        &["first divergence: loader decision #"],
    );
    assert!(out.contains(&format!("{b}: violated LINV-3")), "{out}");
}
