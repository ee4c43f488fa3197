//! The shared driver through sessions and the async facade, on a
//! current-thread runtime with paused time.
#![no_main]

use cache_core::driver::{quiet_expected_panics, run_facade, FacadeInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: FacadeInput| {
    // libFuzzer's panic hook aborts on every panic; resolver panics the
    // driver plans (C-14) must unwind into the facade instead.
    quiet_expected_panics();
    if let Err(failure) = run_facade(&input) {
        panic!("{failure}");
    }
});
