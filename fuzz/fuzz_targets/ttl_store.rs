//! The same operations against the in-memory and SQLite TTL stores, every
//! answer compared (T-1, T-4, T-5).
#![no_main]

use cache_core::driver::{run_ttl_stores, TtlInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: TtlInput| {
    if let Err(failure) = run_ttl_stores(&input) {
        failure.crash();
    }
});
