//! Replays every committed fuzz input through the shared driver on stable
//! Rust, so `cargo test` keeps them as regressions without nightly:
//!
//! - `fuzz/seeds/<target>/*`: the seed corpus;
//! - `fuzz/regressions/<target>/*`: crash artifacts turned into regressions
//!   (copy `fuzz/artifacts/<target>/crash-*` there once the bug is fixed).
//!
//! Each file is decoded exactly as `libfuzzer-sys` decodes it
//! (`driver::replay::decode`), so the same operation sequence runs here.
//! `sim_plan` inputs run through the `sim` harness (`fuzz/sim_plan_input.rs`).

use std::fs;
use std::path::{Path, PathBuf};

use cache_core::driver::replay::{decode, describe, run_target, TARGETS};

/// The sim_plan input, shared with the fuzz target.
#[path = "../../fuzz/sim_plan_input.rs"]
mod sim_plan_input;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file under `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let mut ran = 0;
    let mut failures = Vec::new();
    for target in TARGETS {
        for path in inputs(kind, target) {
            let bytes = fs::read(&path).expect("readable corpus file");
            ran += 1;
            if let Err(f) = run_target(target, &bytes) {
                failures.push(format!(
                    "{}: {f}\ninput: {}",
                    path.display(),
                    describe(target, &bytes)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} {kind} inputs fail:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    ran
}

#[test]
fn seed_corpus_replays_clean() {
    let ran = replay("seeds");
    // Every target has a committed seed corpus.
    for target in TARGETS {
        assert!(
            !inputs("seeds", target).is_empty(),
            "no seed corpus for {target} in fuzz/seeds/{target}"
        );
    }
    println!("replayed {ran} seed inputs");
}

#[test]
fn crash_regressions_replay_clean() {
    let ran = replay("regressions");
    println!("replayed {ran} crash regressions");
}

#[test]
fn unknown_target_is_a_clear_error() {
    let err = run_target("no_such_target", b"").unwrap_err();
    assert!(err.detail.contains("no_such_target"), "{err}");
}

/// `sim_plan`: the plan the bytes choose runs through the sim harness.
#[test]
fn sim_plan_inputs_replay_clean() {
    let mut ran = 0;
    // (pipelined calls, nested calls later in a run) the inputs draw.
    let mut drawn = (0, 0);
    let mut failures = Vec::new();
    for kind in ["seeds", "regressions"] {
        for path in inputs(kind, "sim_plan") {
            let bytes = fs::read(&path).expect("readable corpus file");
            let Some(input) = decode::<sim_plan_input::SimInput>(&bytes) else {
                continue;
            };
            ran += 1;
            if let Some(plan) = sim_plan_input::plan(&input) {
                for op in plan.clients.iter().flatten() {
                    if let sim::plan::OpKind::Call {
                        pipelined, nests, ..
                    } = &op.kind
                    {
                        drawn.0 += usize::from(*pipelined);
                        drawn.1 += nests.len();
                    }
                }
            }
            if let Err(f) = sim_plan_input::run(&input) {
                failures.push(format!("{}: {f}\ninput: {input:#?}", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} sim_plan inputs fail:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(
        !inputs("seeds", "sim_plan").is_empty(),
        "no seed corpus in fuzz/seeds/sim_plan"
    );
    assert!(
        drawn.0 > 0 && drawn.1 > 0,
        "the sim_plan corpus draws no pipelined calls or no later nested calls: {drawn:?}"
    );
    println!("replayed {ran} sim_plan inputs; {drawn:?} pipelined calls and later nests");
}

/// The loader_ops seeds are real operation sequences, not inputs the
/// fuzzer would skip or decode to nothing.
#[test]
fn loader_ops_seeds_decode_to_operation_sequences() {
    use cache_core::driver::LoaderInput;
    let seeds = inputs("seeds", "loader_ops");
    assert!(!seeds.is_empty(), "no seed corpus in fuzz/seeds/loader_ops");
    for path in seeds {
        let bytes = fs::read(&path).expect("readable corpus file");
        let input = decode::<LoaderInput>(&bytes)
            .unwrap_or_else(|| panic!("{} does not decode", path.display()));
        assert!(
            !input.ops.is_empty(),
            "{} decodes to no operation",
            path.display()
        );
    }
}
