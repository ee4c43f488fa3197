//! C-4 / C-4a, positively: a call chain that revisits a storage key is
//! refused with the recursive-call error, on every path (cached,
//! do-not-cache, retried). A revisit that is not refused waits on itself,
//! so it is reported under INV-11 (no wait-for cycle) the moment it is
//! seen, not when the run times out.

use crate::protocol::ErrKind;
use crate::world::World;

/// A resolver's nested call answered.
pub(super) fn nested_answered(
    world: &World,
    run: u64,
    key: u64,
    chain: &[u64],
    revisits: bool,
    error: Option<ErrKind>,
) {
    if error == Some(ErrKind::Recursive) {
        // Not a revisit of its own chain: a join that would have closed a
        // wait-for cycle with another call (C-4b).
        world.count(if revisits {
            "recursive-call-refused"
        } else {
            "wait-cycle-refused"
        });
    }
    // The caller's own cancellation is checked before the chain (C-5).
    let refused = matches!(error, Some(ErrKind::Recursive | ErrKind::Cancelled));
    if revisits && !refused {
        let chain: Vec<String> = chain.iter().map(|k| format!("k{k}")).collect();
        world.violate(
            "INV-11",
            format!(
                "C-4: run{run}'s nested call of k{key} revisits its chain [{}] and was {}",
                chain.join(" -> "),
                match error {
                    None => "served".to_string(),
                    Some(k) => format!("answered {}", k.as_str()),
                }
            ),
        );
    }
}
