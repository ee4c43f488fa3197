//! The shared driver on the pure state machine (DESIGN principle 3).
#![no_main]

use cache_core::driver::{run_machine, MachineInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: MachineInput| {
    if let Err(failure) = run_machine(&input) {
        panic!("{failure}");
    }
});
