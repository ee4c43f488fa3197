//! Fuzz bytes choose a short simulation plan and its faults; the `sim`
//! harness runs it in a turmoil world and its oracles judge it (INV-1 …
//! INV-12). The input type lives in `fuzz/sim_plan_input.rs`, shared with
//! the stable replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../sim_plan_input.rs"]
mod sim_plan_input;

fuzz_target!(|input: sim_plan_input::SimInput| {
    if let Err(failure) = sim_plan_input::run(&input) {
        panic!("{failure}");
    }
});
