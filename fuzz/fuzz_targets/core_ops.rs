//! The shared driver on the pure state machine (DESIGN principle 3).
//! `CACHE_CORE_BUGS` turns bug-zoo switches on (see `bugs_from_env`).
#![no_main]

use cache_core::driver::{bugs_from_env, run_machine_with, MachineInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: MachineInput| {
    if let Err(failure) = run_machine_with(&input, bugs_from_env()) {
        failure.crash();
    }
});
