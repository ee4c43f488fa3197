//! ID-6: the call-ID decoder never panics, and what it accepts re-encodes
//! to the same bytes; the bytes also build IDs that must round-trip.
#![no_main]

use cache_core::driver::run_id;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = run_id(data) {
        failure.crash();
    }
});
