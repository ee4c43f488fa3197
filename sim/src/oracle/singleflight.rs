//! INV-4: at most one resolver running per (call key, non-empty
//! concurrency key), and at most one init per arbitrary key.

use super::shadow::RunShadow;
use super::short;
use crate::world::{Plant, World};

/// A resolver run starts: judged against every live run of its class.
pub(super) fn run_started(world: &World, run: u64, r: RunShadow) {
    let mut shadow = world.shadow();
    let live = |o: &RunShadow| {
        o.inc == r.inc
            && o.key == r.key
            && o.finished_at.is_none()
            && (o.change || !o.cancel.is_cancelled())
    };
    let dedupes = !r.key.concurrency_key.is_empty();
    let dup = dedupes && shadow.runs.values().any(live);
    let planted = world.plant == Some(Plant::DoubleResolver) && dedupes;
    let msg = (dup || planted).then(|| {
        format!(
            "two resolvers running at once for {} {}/{}",
            r.key.namespace,
            short(&r.key.storage_key),
            r.key.concurrency_key
        )
    });
    shadow.runs.insert(run, r);
    drop(shadow);
    if let Some(msg) = msg {
        world.violate("INV-4", msg);
    }
}
