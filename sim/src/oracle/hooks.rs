//! INV-10: no release hook runs twice (INV-1 checks "exactly once" at the
//! end). Runs of failing hooks are counted per cache for the accounting
//! oracle (O-1, S-7).

use crate::world::World;

/// Output `out`'s release hook ran.
pub(super) fn hook_ran(world: &World, out: u64) {
    let msg = {
        let mut shadow = world.shadow();
        let Some(h) = shadow.hooks.get_mut(&out) else {
            return;
        };
        h.runs += 1;
        let (runs, fails, cache) = (h.runs, h.fails, (h.inc, h.change));
        if fails {
            *shadow.failed_hooks.entry(cache).or_default() += 1;
        }
        (runs > 1).then(|| format!("release hook of output o{out} ran {runs} times"))
    };
    if let Some(msg) = msg {
        world.violate("INV-10", msg);
    }
}
