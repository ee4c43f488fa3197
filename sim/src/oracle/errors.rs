//! INV-6: no error is ever served from the cache (C-9). An error names the
//! run that produced it (a typed [`RunFailure`]); a call that started after
//! that run had finished cannot have waited on it.

use cache_core::CallError;

use crate::failure::RunFailure;
use crate::world::World;

/// Judges one error answer.
pub(super) fn failed(world: &World, req: u64, key: u64, error: &CallError, t0_ms: u64) {
    let Some(failure) = RunFailure::of(error) else {
        return;
    };
    let finished = world.shadow().finished_at(failure.run);
    if finished.is_some_and(|f| f < t0_ms) {
        world.violate(
            "INV-6",
            format!("r{req} k{key} got the cached error of run{}", failure.run),
        );
    }
}
