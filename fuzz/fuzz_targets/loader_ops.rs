//! The loader driver on the pure loader machine: one or two nodes on one
//! in-memory remote and bus, flights across steps, clock jumps and faults,
//! LINV-1 … LINV-8 checked against the shadow model (SPEC §7.8).
#![no_main]

use cache_core::driver::{run_loader_machine, LoaderInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: LoaderInput| {
    if let Err(failure) = run_loader_machine(&input) {
        failure.crash();
    }
});
