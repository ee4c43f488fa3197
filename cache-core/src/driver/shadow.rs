//! The parts of the shadow model both cache drivers share: who holds which
//! ref (INV-2), and how often each release hook ran (INV-1, INV-10).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use crate::machine::EntryId;

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
