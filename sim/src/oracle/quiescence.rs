//! INV-1 (quiescence: nothing left once every session closed and no call
//! runs; every output's release hook ran exactly once) and INV-11
//! (liveness: every call answered, every resolver finished) at the end of a
//! run, after healing and draining.

use crate::world::World;

/// INV-1 and INV-11 at the end of a run, after healing and draining.
pub fn check_end(world: &World) {
    let Some(eng) = world.engine() else {
        world.violate("INV-11", "the engine never started");
        return;
    };
    for (name, cache) in [("calls", &eng.calls), ("changes", &eng.changes)] {
        let b = cache.buckets();
        if cache.entries() != 0 || b.total() != 0 || cache.live_entries() != 0 {
            world.violate(
                "INV-1",
                format!(
                    "{name}: {} index entries, {} live entries at quiescence",
                    cache.entries(),
                    cache.live_entries()
                ),
            );
        }
        if cache.connected_clients() != 0 {
            world.violate(
                "INV-1",
                format!("{name}: {} sessions still open", cache.connected_clients()),
            );
        }
    }
    let shadow = world.shadow();
    for (out, h) in &shadow.hooks {
        if h.inc == eng.inc && h.runs != 1 {
            world.violate(
                "INV-1",
                format!("release hook of output o{out} ran {} times", h.runs),
            );
        }
    }
    let pending = shadow.pending.get(&eng.inc).copied().unwrap_or(0);
    let running: Vec<u64> = shadow
        .runs
        .iter()
        .filter(|(_, r)| r.inc == eng.inc && r.finished_at.is_none())
        .map(|(id, _)| *id)
        .collect();
    drop(shadow);
    super::telemetry::finish(world);
    if pending == 0 && running.is_empty() {
        super::accounting::store_failures(world);
    }
    if pending != 0 {
        world.violate(
            "INV-11",
            format!("{pending} calls never answered after healing"),
        );
    }
    if !running.is_empty() {
        world.violate(
            "INV-11",
            format!("resolver runs {running:?} never finished"),
        );
    }
}
