//! INV-10: no release hook runs twice (INV-1 checks "exactly once" at the
//! end).

use crate::world::World;

/// Output `out`'s release hook ran.
pub(super) fn hook_ran(world: &World, out: u64) {
    let msg = {
        let mut shadow = world.shadow();
        let Some(h) = shadow.hooks.get_mut(&out) else {
            return;
        };
        h.runs += 1;
        (h.runs > 1).then(|| format!("release hook of output o{out} ran {} times", h.runs))
    };
    if let Some(msg) = msg {
        world.violate("INV-10", msg);
    }
}
