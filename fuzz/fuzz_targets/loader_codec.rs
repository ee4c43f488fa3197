//! The loader's decoders on arbitrary bytes (L-14): the record envelope and
//! both value codecs never panic, and whatever decodes round-trips.
#![no_main]

use cache_core::driver::run_loader_codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Err(failure) = run_loader_codec(bytes) {
        failure.crash();
    }
});
