//! The parts of the shadow model both cache drivers share: who holds which
//! ref (INV-2), and how often each release hook ran (INV-1, INV-10).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use crate::machine::{EntryId, FlightKey};

/// Counts the runs of one payload's release hook; a failing hook returns an
/// error every time it runs (C-12: the error goes to the releaser).
#[derive(Clone, Default, Debug)]
pub(crate) struct HookCounter {
    runs: Arc<AtomicUsize>,
    fails: bool,
}

impl HookCounter {
    /// A hook that counts its runs (and fails if this counter's hook fails).
    pub(crate) fn hook(&self) -> impl FnOnce() -> Result<(), String> + Send + 'static {
        let runs = self.runs.clone();
        let fails = self.fails;
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            if fails {
                Err("planned release hook failure".into())
            } else {
                Ok(())
            }
        }
    }

    pub(crate) fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

/// Whether the release hook of a resolver output with value `v` fails: one
/// value in eight, so the operation inputs keep their layout (old corpora
/// decode as before) while failing hooks meet every release path.
pub(crate) fn hook_fails(v: u16) -> bool {
    v % 8 == 7
}

/// Every successful resolver output's hook, with the entry it belongs to.
#[derive(Default)]
pub(crate) struct HookLedger {
    hooks: Vec<(HookCounter, EntryId)>,
}

impl HookLedger {
    /// A new counted hook for a result of `entry`; `fails`: the hook
    /// returns an error when it runs.
    pub(crate) fn counter(&mut self, entry: EntryId, fails: bool) -> HookCounter {
        let c = HookCounter {
            runs: Arc::default(),
            fails,
        };
        self.hooks.push((c.clone(), entry));
        c
    }

    /// How many times a failing hook ran: what a release, a close or the
    /// metrics must report (C-12, S-7, O-1).
    pub(crate) fn failed_runs(&self) -> usize {
        self.hooks
            .iter()
            .filter(|(c, _)| c.fails)
            .map(|(c, _)| c.runs())
            .sum()
    }

    /// INV-10 (and C-12): each hook ran at most once, and exactly once iff
    /// its entry is gone: never while a holder can still reach it.
    pub(crate) fn check(
        &self,
        alive: impl Fn(EntryId) -> bool,
    ) -> Result<(), (&'static str, String)> {
        for (counter, entry) in &self.hooks {
            let runs = counter.runs();
            if runs > 1 {
                return Err(("INV-10", format!("hook of {entry} ran {runs} times")));
            }
            let live = alive(*entry);
            if live && runs == 1 {
                return Err((
                    "C-12",
                    format!("hook of {entry} ran while the entry is alive"),
                ));
            }
            if !live && runs == 0 {
                return Err((
                    "INV-1",
                    format!("entry {entry} is gone but its hook never ran"),
                ));
            }
        }
        Ok(())
    }

    /// INV-1: every hook ran exactly once.
    pub(crate) fn check_final(&self) -> Result<(), (&'static str, String)> {
        for (counter, entry) in &self.hooks {
            let runs = counter.runs();
            if runs != 1 {
                return Err((
                    "INV-1",
                    format!("hook of {entry} ran {runs} times at quiescence"),
                ));
            }
        }
        Ok(())
    }
}

/// Where the model expects each completed, cached result to be indexed
/// (C-6), so that a call the cache lets run or join while such a result is
/// reachable under its storage or content key is a missed hit (C-3.1,
/// C-3.2). Negative checks (no wrong hit) cannot see a result indexed under
/// too few keys; this can.
#[derive(Default)]
pub(crate) struct ShadowIndex {
    storage: BTreeMap<String, Vec<EntryId>>,
    content: BTreeMap<String, Vec<EntryId>>,
}

impl ShadowIndex {
    /// `entry` is now indexed under `storage_keys` and, when given, its
    /// content key.
    pub(crate) fn insert<'k>(
        &mut self,
        entry: EntryId,
        storage_keys: impl IntoIterator<Item = &'k str>,
        content_key: Option<&str>,
    ) {
        // A result call key equal to the storage key is one slot, not two.
        let list = |map: &mut BTreeMap<String, Vec<EntryId>>, k: &str| {
            let ids = map.entry(k.to_string()).or_default();
            if !ids.contains(&entry) {
                ids.push(entry);
            }
        };
        for k in storage_keys {
            list(&mut self.storage, k);
        }
        if let Some(k) = content_key {
            list(&mut self.content, k);
        }
    }

    /// `entry` left the cache (its release hook ran): it is indexed nowhere.
    pub(crate) fn remove(&mut self, entry: EntryId) {
        for map in [&mut self.storage, &mut self.content] {
            map.retain(|_, ids| {
                ids.retain(|e| *e != entry);
                !ids.is_empty()
            });
        }
    }

    /// A completed result indexed under the storage key `key` for which
    /// `visible` holds (through a shared TTL key, T-3), if any.
    pub(crate) fn under(&self, key: &str, visible: impl Fn(EntryId) -> bool) -> Option<EntryId> {
        self.storage
            .get(key)
            .and_then(|ids| ids.iter().copied().find(|e| visible(*e)))
    }

    /// A completed result indexed under the content key `key`, if any.
    pub(crate) fn by_content(&self, key: &str) -> Option<EntryId> {
        self.content.get(key).and_then(|ids| ids.first().copied())
    }

    /// C-3.1 / C-3.2: a call on `storage_key` (and `content_key`) that the
    /// cache let run or join must have found no indexed result first that
    /// it may be served (`visible`).
    pub(crate) fn check_miss(
        &self,
        storage_key: &str,
        content_key: Option<&str>,
        visible: impl Fn(EntryId) -> bool,
    ) -> Result<(), (&'static str, String)> {
        if let Some(e) = self.under(storage_key, visible) {
            return Err((
                "C-3.1",
                format!("a miss under {storage_key}, where {e} is indexed (C-6)"),
            ));
        }
        if let Some(e) = content_key.and_then(|k| self.by_content(k)) {
            return Err((
                "C-3.2",
                format!("a miss on content {content_key:?}, under which {e} is indexed (C-6)"),
            ));
        }
        Ok(())
    }
}

/// The cache's read-only answers agree with the model: every run the
/// model has in flight is registered under the singleflight key it expects
/// (`runs`: entry and expected key, `None` for a run nothing may join),
/// as [`crate::machine::CallCache::flight_key`] tells it, and under every
/// storage key the model has results indexed, `stored` (the cache's
/// `completed_under`) names one of them. Oracles judge through these
/// queries (the simulation classes runs by the first for INV-4 and finds a
/// TTL row's stored result, T-3, by the second), so a wrong answer would
/// not fail them but blind them: a missed answer is reported here.
pub(crate) fn check_query_answers(
    runs: impl IntoIterator<Item = (EntryId, Option<FlightKey>)>,
    index: &ShadowIndex,
    flight: impl Fn(EntryId) -> Option<FlightKey>,
    stored: impl Fn(&str) -> Option<EntryId>,
) -> Result<(), (&'static str, String)> {
    for (entry, want) in runs {
        let got = flight(entry);
        if got != want {
            return Err((
                "INV-4",
                format!(
                    "in-flight {entry} is registered under {got:?}, the model expects {want:?}"
                ),
            ));
        }
    }
    for (key, ids) in &index.storage {
        let got = stored(key);
        if !got.is_some_and(|e| ids.contains(&e)) {
            return Err((
                "C-3.1",
                format!(
                    "the cache answers {got:?} for storage key {key}, where {ids:?} are indexed"
                ),
            ));
        }
    }
    Ok(())
}

/// Refs per entry as the model sees them (INV-2): one per directly held ref,
/// plus one per nested ref `(on, parent)` while its parent is held. A parent
/// nobody holds is gone, and its nested refs with it (C-11), so those pairs
/// are dropped for good.
pub(crate) fn ref_counts(
    direct: impl Iterator<Item = EntryId> + Clone,
    nested: &mut Vec<(EntryId, EntryId)>,
) -> BTreeMap<EntryId, u32> {
    loop {
        let mut counts: BTreeMap<EntryId, u32> = BTreeMap::new();
        for e in direct.clone().chain(nested.iter().map(|(on, _)| *on)) {
            *counts.entry(e).or_default() += 1;
        }
        let before = nested.len();
        nested.retain(|(_, parent)| counts.get(parent).copied().unwrap_or(0) > 0);
        if nested.len() == before {
            return counts;
        }
    }
}

thread_local! {
    static EXPECTED_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// Marks the next panic on this thread as planned by the driver (a resolver
/// told to panic, C-14), so [`quiet_expected_panics`] lets it unwind quietly.
pub(crate) fn expect_panic() {
    EXPECTED_PANIC.with(|p| p.set(true));
}

/// Installs (once) a panic hook that stays silent for the resolver panics the
/// driver plans, and hands every other panic to the hook installed before.
///
/// libFuzzer's hook aborts on any panic, even one the facade catches (C-14);
/// a fuzz target calls this after libFuzzer's set-up, so planned resolver
/// panics unwind into the facade's `catch_unwind` while a real bug still
/// aborts. Under `cargo test` it keeps planned panics out of the output.
pub fn quiet_expected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if EXPECTED_PANIC.with(|p| p.replace(false)) {
                return;
            }
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{CallCache, CallRequest, Caller, Decision};

    fn some_entry() -> EntryId {
        two_entries().0
    }

    /// The entries of two first calls (of different IDs) in one cache.
    fn two_entries() -> (EntryId, EntryId) {
        let mut cache = CallCache::<u32>::new(1);
        let mut run = |i: usize| {
            let id = crate::driver::call_ids()[i].clone();
            match cache
                .begin_call(&Caller::default(), CallRequest::new(id))
                .outcome
            {
                Ok(Decision::Run(order)) => order.entry,
                other => panic!("a first call runs: {other:?}"),
            }
        };
        (run(0), run(1))
    }

    /// The planted violation: a result the model indexed under a storage
    /// key, a result call key and a content key, and a call under each that
    /// the cache let run.
    #[test]
    fn c6_a_miss_where_a_result_is_indexed_is_reported_until_it_leaves() {
        let mut index = ShadowIndex::default();
        let e = some_entry();
        index.insert(e, ["s", "r", "s"], Some("c"));
        assert_eq!(index.storage["s"], vec![e], "one slot per key");
        for key in ["s", "r"] {
            let (rule, detail) = index.check_miss(key, None, |_| true).unwrap_err();
            assert_eq!(rule, "C-3.1");
            assert!(detail.contains(&e.to_string()), "{detail}");
        }
        assert_eq!(
            index.check_miss("x", Some("c"), |_| true).unwrap_err().0,
            "C-3.2"
        );
        assert_eq!(index.check_miss("x", Some("d"), |_| true), Ok(()));
        // A result the caller may not be served (T-3) is no missed hit.
        assert_eq!(index.check_miss("s", None, |_| false), Ok(()));
        index.remove(e);
        assert_eq!(index.check_miss("s", Some("c"), |_| true), Ok(()));
        assert_eq!(index.under("r", |_| true), None);
    }

    /// The planted violations: a cache whose queries answer nothing, or
    /// another entry, while the model has a run in flight and a result
    /// stored.
    #[test]
    fn inv4_c3_1_query_answers_that_miss_the_model_are_reported() {
        let mut index = ShadowIndex::default();
        let (e, other) = two_entries();
        index.insert(e, ["s"], None);
        let key = FlightKey::Arbitrary { key: "a".into() };
        let runs = || [(e, Some(key.clone()))];
        let right = |_: EntryId| Some(key.clone());
        let found = |k: &str| (k == "s").then_some(e);
        assert_eq!(check_query_answers(runs(), &index, right, found), Ok(()));
        let (rule, detail) = check_query_answers(runs(), &index, |_| None, found).unwrap_err();
        assert_eq!(rule, "INV-4");
        assert!(detail.contains(&e.to_string()), "{detail}");
        let (rule, detail) = check_query_answers(runs(), &index, right, |_| None).unwrap_err();
        assert_eq!(
            (rule, detail.contains("storage key s")),
            ("C-3.1", true),
            "{detail}"
        );
        let wrong = |_: &str| Some(other);
        assert_eq!(
            check_query_answers(runs(), &index, right, wrong)
                .unwrap_err()
                .0,
            "C-3.1"
        );
        // A run nothing may join is registered nowhere.
        assert_eq!(
            check_query_answers([(e, None)], &index, right, found)
                .unwrap_err()
                .0,
            "INV-4"
        );
    }
}
