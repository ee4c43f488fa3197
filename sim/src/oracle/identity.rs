//! INV-5: a storage hit returns the stored ID, a content hit the requested
//! ID, and a value is only ever served for a key whose recipe or content
//! digest matches.

use super::Served;
use crate::world::{Val, World};

/// Judges one served call value.
pub(super) fn call_served(world: &World, s: &Served<'_>, v: &Val) {
    let key = s.key;
    let keys = &world.plan.keys;
    let same_content = keys[key as usize].content.is_some()
        && keys[key as usize].content == keys[v.id_key as usize].content;
    // C-8: a content hit reports the requested ID; otherwise the ID the
    // result carries. A detached result (C-2) reports what its resolver saw.
    let expected = if s.content_hit { key } else { v.id_key };
    let id_ok = s.detached || s.reported_call_key == Some(world.key_id(expected).call_key());
    if v.arbitrary {
        world.violate(
            "INV-5",
            format!("call k{key} served an arbitrary value o{}", v.out),
        );
    } else if v.key != key && v.id_key != key && !(s.content_hit && same_content) {
        world.violate(
            "INV-5",
            format!(
                "call k{key} served o{} produced for k{} with k{}'s ID (content hit {})",
                v.out, v.key, v.id_key, s.content_hit
            ),
        );
    } else if !id_ok {
        world.violate(
            "INV-5",
            format!(
                "k{key}: a {} hit reported the wrong ID",
                if s.content_hit { "content" } else { "storage" }
            ),
        );
    }
    if v.key != key && v.id_key == key {
        world.count("result-id-hits");
    }
    // C-3.1: a storage hit on a key without a TTL (its storage key is its
    // call key) comes from the completed call indexed under that key.
    if s.hit && !s.content_hit && !s.detached && keys[key as usize].ttl_ms == 0 {
        let id = world.key_id(key);
        if s.cache.inspect(|m| m.completed_call(&id)).is_none() {
            world.violate(
                "INV-5",
                format!(
                    "k{key}: a storage hit, but no completed call is indexed under its call key"
                ),
            );
        }
    }
}

/// Judges one served arbitrary value: it must be this key's init's.
pub(super) fn arbitrary_served(world: &World, key: u64, v: &Val) {
    if !v.arbitrary || v.key != key {
        world.violate("INV-5", format!("arbitrary a{key} served o{}", v.out));
    }
}
