//! Replays every committed fuzz input through the shared driver on stable
//! Rust, so `cargo test` keeps them as regressions without nightly:
//!
//! - `fuzz/seeds/<target>/*`: the seed corpus;
//! - `fuzz/regressions/<target>/*`: crash artifacts turned into regressions
//!   (copy `fuzz/artifacts/<target>/crash-*` there once the bug is fixed).
//!
//! Each file is decoded exactly as `libfuzzer-sys` decodes it
//! (`driver::replay::decode`), so the same operation sequence runs here.

use std::fs;
use std::path::{Path, PathBuf};

use cache_core::driver::replay::{describe, run_target, TARGETS};

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
