//! Replays a fuzz corpus through the driver, for profiling what one fuzz
//! execution costs (`valgrind --tool=callgrind`): the same code path
//! `cargo fuzz run <target>` takes per input, minus libFuzzer.
//!
//! ```sh
//! cargo build --release -p cache-core --features driver --example driver_profile
//! valgrind --tool=callgrind target/release/examples/driver_profile core_ops fuzz/corpus/core_ops
//! ```

use std::process::ExitCode;

use cache_core::driver::replay::run_target;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, dir] = args.as_slice() else {
        eprintln!("usage: driver_profile TARGET CORPUS_DIR");
        return ExitCode::from(2);
    };
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            eprintln!("driver_profile: cannot read {dir}: {e}");
            return ExitCode::from(2);
        }
    };
    // A fixed order: the same profile on every run. By file name, taken
    // once per file: comparing `Path`s component by component was a tenth
    // of the instructions of a replay that should count only the driver.
    files.sort_by_cached_key(|p| p.file_name().map(|n| n.to_owned()));
    let (mut ran, mut failed) = (0, 0);
    for path in files {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match run_target(target, &bytes) {
            Ok(Some(_)) => ran += 1,
            Ok(None) => {}
            Err(f) => {
                failed += 1;
                eprintln!("{}: {f}", path.display());
            }
        }
    }
    println!("{ran} inputs ran, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
