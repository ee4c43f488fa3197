//! The shadow model (DESIGN principle 4) and the oracles that compare the
//! real cache against it: INV-2, INV-4 … INV-10 during the run, INV-1 and
//! INV-11 at the end, plus the cache's own `check_invariants()` (INV-3).

use std::collections::BTreeMap;

use cache_core::machine::{EntryId, SessionId};
use tokio_util::sync::CancellationToken;

use crate::world::{Engine, Plant, Val, World};

/// What the shadow knows about one session.
#[derive(Default, Debug)]
pub struct SessionShadow {
    /// Handles the session was given, by entry.
    pub handles: BTreeMap<EntryId, u32>,
    /// Calls of the session not yet answered.
    pub pending: u32,
    /// Still open.
    pub open: bool,
}

/// One resolver run.
#[derive(Debug)]
pub struct RunShadow {
    /// Incarnation.
    pub inc: u64,
    /// Singleflight key: (namespace, storage key, concurrency key).
    pub key: (String, String, String),
    /// Finished (simulated ms).
    pub finished_at: Option<u64>,
    /// Its cancellation token.
    pub cancel: CancellationToken,
    /// K-5: an abandoned change-cache init still counts as running.
    pub change: bool,
    /// The cache instance and in-flight entry the run resolves.
    pub entry: (u64, EntryId),
}

/// One successful resolver output and its release hook.
#[derive(Debug)]
pub struct HookShadow {
    /// Incarnation.
    pub inc: u64,
    /// Times the hook ran.
    pub runs: u32,
}

/// The shadow model.
#[derive(Default, Debug)]
pub struct Shadow {
    /// Sessions by (incarnation, id).
    pub sessions: BTreeMap<(u64, SessionId), SessionShadow>,
    /// Refs owned by parent entries (C-11), by (incarnation, inner entry).
    pub nested: BTreeMap<(u64, EntryId), u32>,
    /// Resolver runs.
    pub runs: BTreeMap<u64, RunShadow>,
    /// Release hooks by output id.
    pub hooks: BTreeMap<u64, HookShadow>,
    /// Calls in flight on the engine, by incarnation.
    pub pending: BTreeMap<u64, u32>,
}

impl Shadow {
    /// A resolver starts: INV-4 (at most one per singleflight key).
    pub fn run_start(&mut self, run: u64, r: RunShadow, plant: Option<Plant>) -> Option<String> {
        let live = |o: &RunShadow| {
            o.inc == r.inc
                && o.key == r.key
                && o.finished_at.is_none()
                && (o.change || !o.cancel.is_cancelled())
        };
        let dup = !r.key.2.is_empty() && self.runs.values().any(live);
        let planted = plant == Some(Plant::DoubleResolver) && !r.key.2.is_empty();
        let msg = (dup || planted).then(|| {
            format!(
                "two resolvers running at once for {} {}/{}",
                r.key.0,
                short(&r.key.1),
                r.key.2
            )
        });
        self.runs.insert(run, r);
        msg
    }

    /// A resolver finished.
    pub fn run_end(&mut self, run: u64, now: u64) {
        if let Some(r) = self.runs.get_mut(&run) {
            r.finished_at = Some(now);
        }
    }

    /// Finished runs are kept only as long as INV-6 may ask about them.
    pub fn finished_at(&self, run: u64) -> Option<u64> {
        self.runs.get(&run).and_then(|r| r.finished_at)
    }

    /// A release hook ran: INV-10 (never twice).
    pub fn hook_ran(&mut self, out: u64) -> Option<String> {
        let h = self.hooks.get_mut(&out)?;
        h.runs += 1;
        (h.runs > 1).then(|| format!("release hook of output o{out} ran {} times", h.runs))
    }
}

/// Short form of a key for messages.
pub fn short(k: &str) -> &str {
    &k[..k.len().min(10)]
}

/// INV-5 for a call answer: the value was produced for the requested key,
/// or carries the requested key's ID (its resolver returned that ID, C-6),
/// or — on a content hit — carries an ID with the requested key's content
/// digest. `id_ok`: the reported ID is the requested one on a content hit
/// (C-8) and the stored one otherwise.
pub fn check_identity(world: &World, key: u64, v: &Val, content_hit: bool, id_ok: bool) {
    let keys = &world.plan.keys;
    let same_content = keys[key as usize].content.is_some()
        && keys[key as usize].content == keys[v.id_key as usize].content;
    if v.arbitrary {
        world.violate(
            "INV-5",
            format!("call k{key} served an arbitrary value o{}", v.out),
        );
    } else if v.key != key && v.id_key != key && !(content_hit && same_content) {
        world.violate(
            "INV-5",
            format!(
                "call k{key} served o{} produced for k{} with k{}'s ID (content hit {content_hit})",
                v.out, v.key, v.id_key
            ),
        );
    } else if !id_ok {
        world.violate(
            "INV-5",
            format!(
                "k{key}: a {} hit reported the wrong ID",
                if content_hit { "content" } else { "storage" }
            ),
        );
    }
}

/// INV-8: a TTL'd result reused by another session must have been safe to
/// persist and not expired.
pub fn check_ttl(world: &World, key: u64, v: &Val, session: SessionId, t0_ms: u64, t0_clock: i64) {
    let ttl = world.plan.keys[key as usize].ttl_ms as i64;
    if ttl == 0 || v.session == Some(session) || v.made_ms >= t0_ms || v.key != key {
        return;
    }
    if !v.safe {
        world.violate(
            "INV-8",
            format!(
                "k{key}: unsafe result o{} of session {:?} reused by {session}",
                v.out, v.session
            ),
        );
    } else if t0_clock > v.made_clock + ttl {
        world.violate(
            "INV-8",
            format!(
                "k{key}: result o{} reused by {session} after its TTL expired",
                v.out
            ),
        );
    }
}

/// Checks after every step: the cache's own checks (INV-3 and the rules
/// each protects, reported under its invariant), INV-2 (shadow refcounts:
/// per settled session exactly; per entry never below the shadow, and
/// exactly when nothing is in flight).
pub fn check_step(world: &World) {
    let Some(eng) = world.engine() else { return };
    if world.plant == Some(Plant::IndexCorruption) && world.now() > 200 {
        // Real damage inside the cache: the oracle below must notice it.
        eng.calls.plant_index_corruption();
    }
    if world.plant == Some(Plant::WaitCycle) && world.now() > 200 {
        eng.calls.plant_wait_cycle();
    }
    for (name, cache) in [("calls", &eng.calls), ("changes", &eng.changes)] {
        if let Err(v) = cache.check_invariants() {
            world.violate(v.invariant(), format!("{name}: {v}"));
        }
    }
    check_refcounts(world, &eng);
    check_cancellation(world, &eng);
}

/// INV-7, the "only if" half the answers cannot show: once every waiter of
/// a running call has left (and nobody holds it), its resolver's
/// cancellation has fired. The other half — never cancelled while a waiter
/// remains — is checked where the resolver observes its cancellation.
fn check_cancellation(world: &World, eng: &Engine) {
    let running: Vec<(u64, (u64, EntryId), bool)> = world
        .shadow()
        .runs
        .iter()
        .filter(|(_, r)| r.inc == eng.inc && r.finished_at.is_none())
        .map(|(id, r)| (*id, r.entry, r.cancel.is_cancelled()))
        .collect();
    for (run, (instance, entry), cancelled) in running {
        let cache = if eng.calls.inspect(|m| m.instance()) == instance {
            &eng.calls
        } else {
            &eng.changes
        };
        let deserted = cache.inspect(|m| {
            m.contains(entry) && m.waiters(entry).is_empty() && m.refcount(entry) == Some(0)
        });
        if deserted && !cancelled {
            world.violate(
                "INV-7",
                format!(
                    "run{run}: every waiter of {entry} left but its resolver was not cancelled"
                ),
            );
        }
    }
}

fn check_refcounts(world: &World, eng: &Engine) {
    let shadow = world.shadow();
    let mut expected: BTreeMap<EntryId, u32> = BTreeMap::new();
    let mut sessions = Vec::new();
    for ((inc, sid), s) in &shadow.sessions {
        if *inc != eng.inc || !s.open {
            continue;
        }
        for (e, n) in &s.handles {
            *expected.entry(*e).or_default() += n;
        }
        if s.pending == 0 {
            sessions.push((*sid, s.handles.values().sum::<u32>()));
        }
    }
    for ((inc, e), n) in &shadow.nested {
        if *inc == eng.inc {
            *expected.entry(*e).or_default() += n;
        }
    }
    let quiet = shadow.pending.get(&eng.inc).copied().unwrap_or(0) == 0
        && !shadow
            .runs
            .values()
            .any(|r| r.inc == eng.inc && r.finished_at.is_none());
    drop(shadow);
    eng.calls.inspect(|m| {
        for (sid, n) in sessions {
            let real = m.session_refs(sid);
            if m.session_is_open(sid) && real != n as usize {
                world.violate(
                    "INV-2",
                    format!("session {sid} holds {real} refs, shadow says {n}"),
                );
            }
        }
        // Every step: an entry never counts fewer refs than the handles the
        // shadow knows are out (a deficit is a ref released twice, or a
        // payload about to be freed under a holder). Exactly equal once
        // nothing is in flight: until then a waiter may hold a ref the
        // shadow has not been told about yet.
        for (e, n) in &expected {
            let real = m.refcount(*e).unwrap_or(0);
            if real < *n || (quiet && real != *n) {
                world.violate(
                    "INV-2",
                    format!("entry {e} refcount {real}, shadow says {n}"),
                );
            }
        }
    });
}

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
