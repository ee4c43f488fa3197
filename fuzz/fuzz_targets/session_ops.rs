//! The shared driver through sessions and the async facade, on a
//! current-thread runtime with paused time. `CACHE_CORE_BUGS` turns bug-zoo
//! switches on (see `bugs_from_env`).
#![no_main]

use cache_core::driver::{bugs_from_env, quiet_expected_panics, run_facade_with, FacadeInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: FacadeInput| {
    // libFuzzer's panic hook aborts on every panic; resolver panics the
    // driver plans (C-14) must unwind into the facade instead.
    quiet_expected_panics();
    if let Err(failure) = run_facade_with(&input, bugs_from_env()) {
        failure.crash();
    }
});
