//! Replays raw fuzz inputs through the driver on stable Rust.
//!
//! [`decode`] turns bytes into a typed input exactly as `libfuzzer-sys`'s
//! `fuzz_target!` does (skip inputs shorter than the type's minimum size,
//! then `arbitrary_take_rest`), so a committed corpus file or crash artifact
//! runs the very same operation sequence under `cargo test` as under
//! `cargo fuzz`.

use arbitrary::{Arbitrary, Unstructured};

use super::{
    run_facade, run_id, run_loader_codec, run_loader_machine, run_machine, run_ttl_stores,
    FacadeInput, Failure, LoaderInput, MachineInput, Stats, TtlInput,
};

/// The fuzz targets the driver serves, by name (the `fuzz/` binaries).
/// `sim_plan` runs through the `sim` harness instead (see
/// `fuzz/sim_plan_input.rs`).
pub const TARGETS: &[&str] = &[
    "core_ops",
    "session_ops",
    "id_decode",
    "ttl_store",
    "loader_ops",
    "loader_codec",
];

/// Decodes `bytes` as `libfuzzer-sys` does for a typed target; `None` when
/// the fuzzer would skip the input.
pub fn decode<T: for<'a> Arbitrary<'a>>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < T::size_hint(0).0 {
        return None;
    }
    T::arbitrary_take_rest(Unstructured::new(bytes)).ok()
}

/// Runs one raw input through the named target's driver. `Ok(None)` when the
/// bytes do not decode (the fuzzer skips those too).
pub fn run_target(target: &str, bytes: &[u8]) -> Result<Option<Stats>, Failure> {
    match target {
        "core_ops" => decode::<MachineInput>(bytes)
            .map(|i| run_machine(&i))
            .transpose(),
        "session_ops" => decode::<FacadeInput>(bytes)
            .map(|i| run_facade(&i))
            .transpose(),
        "id_decode" => run_id(bytes).map(Some),
        "ttl_store" => decode::<TtlInput>(bytes)
            .map(|i| run_ttl_stores(&i))
            .transpose(),
        // The loader's counts are not the call cache's: a clean run reports
        // empty call-cache stats.
        "loader_ops" => decode::<LoaderInput>(bytes)
            .map(|i| run_loader_machine(&i).map(|_| Stats::default()))
            .transpose(),
        "loader_codec" => run_loader_codec(bytes).map(|()| Some(Stats::default())),
        other => Err(Failure {
            invariant: "replay",
            step: 0,
            detail: format!("no fuzz target named {other:?} (known: {TARGETS:?})"),
        }),
    }
}

/// The input a target would see, printed (`Debug`), for reports and for
/// turning a crash into a readable regression test.
pub fn describe(target: &str, bytes: &[u8]) -> String {
    match target {
        "core_ops" => format!("{:#?}", decode::<MachineInput>(bytes)),
        "session_ops" => format!("{:#?}", decode::<FacadeInput>(bytes)),
        "ttl_store" => format!("{:#?}", decode::<TtlInput>(bytes)),
        "loader_ops" => format!("{:#?}", decode::<LoaderInput>(bytes)),
        "id_decode" | "loader_codec" => format!("{bytes:?}"),
        other => format!("no fuzz target named {other:?}"),
    }
}
