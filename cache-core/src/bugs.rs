//! The bug zoo: named switches that each put back one failure mode the
//! engine this cache is modelled on shipped or still carries.
//!
//! They exist to prove the harness: with a switch on, the simulation (or the
//! driver) must fail and name the broken invariant. The names and the
//! [`Bugs`] set are always compiled, so tools can parse and list them; the
//! faulty code paths are not. Without the cargo feature `bug-zoo`,
//! [`Bugs::on`] is the constant `false`, the faulty branches are dead code
//! the compiler drops, and nothing can switch one on: the builder methods
//! that take a [`Bugs`] exist only with the feature.
//!
//! ```
//! use cache_core::bugs::{Bug, Bugs};
//!
//! let bug: Bug = "key-only-delete".parse().unwrap();
//! assert_eq!(bug.rule(), "C-13");
//! let set = Bugs::none().with(bug);
//! assert_eq!(set.to_string(), "key-only-delete");
//! // Only a `bug-zoo` build ever takes a faulty branch.
//! assert_eq!(set.on(bug), cfg!(feature = "bug-zoo"));
//! assert!("no-such-bug".parse::<Bug>().unwrap_err().to_string().contains("dup-completion-discard"));
//! ```

use std::fmt;
use std::str::FromStr;

/// One switch of the zoo. Each names the spec rule it breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// A finished call meeting a completed entry under its storage key is
    /// dropped without its release hook (breaks C-7).
    DupCompletionDiscard,
    /// A call finishing after its session closed is recorded in the closed
    /// session instead of being released (breaks S-3).
    SessionLateAppendLeak,
    /// A leaving waiter takes the call out of the in-flight index while
    /// other waiters remain (breaks C-9 / INV-4).
    ErrorPathIgnoresWaiters,
    /// The resolver runs under the first caller's cancellation; joined
    /// waiters cannot cancel on their own (breaks C-5 / INV-7).
    FirstCtxCancelsAll,
    /// The session replays a call's error instead of running it again
    /// (breaks C-9 / S-4).
    ErrorsCachedInSession,
    /// Release and error paths remove whatever entry sits at the key
    /// (breaks C-13).
    KeyOnlyDelete,
    /// A finished call removes whatever is registered in flight under its
    /// keys, even a newer call (breaks C-13 / INV-4).
    OngoingDeleteNoIdentity,
    /// A content hit reports the stored entry's ID (breaks C-8 / INV-5).
    ContentHitForeignRecipe,
    /// A failing TTL store makes the call use its bare call key (breaks
    /// T-2 / INV-8).
    TtlDbFailOpen,
    /// A forced retry (S-4) emits telemetry only if its key was not seen in
    /// the session yet, so the retry's resolver run has no span (breaks S-5).
    ForcedRetrySilent,
    /// A session's fresh TTL key ignores the TTL window (the same key in
    /// every window), so once its TTL expired the session is served its
    /// own expired result (breaks T-7 / INV-8).
    TtlKeyOutlivesWindow,
    /// A completed call's prepared TTL write goes ahead whether or not its
    /// result was marked safe to persist, so other sessions reach an unsafe
    /// result through the row (breaks T-3 / INV-8).
    TtlWriteIgnoresSafety,
}

impl Bug {
    /// Every switch, in a fixed order (the order `cache-sim zoo` hunts and
    /// lists them in).
    pub const ALL: [Bug; 12] = [
        Bug::DupCompletionDiscard,
        Bug::SessionLateAppendLeak,
        Bug::ErrorPathIgnoresWaiters,
        Bug::FirstCtxCancelsAll,
        Bug::ErrorsCachedInSession,
        Bug::KeyOnlyDelete,
        Bug::OngoingDeleteNoIdentity,
        Bug::ContentHitForeignRecipe,
        Bug::TtlDbFailOpen,
        Bug::ForcedRetrySilent,
        Bug::TtlKeyOutlivesWindow,
        Bug::TtlWriteIgnoresSafety,
    ];

    /// The switch's id, as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Bug::DupCompletionDiscard => "dup-completion-discard",
            Bug::SessionLateAppendLeak => "session-late-append-leak",
            Bug::ErrorPathIgnoresWaiters => "error-path-ignores-waiters",
            Bug::FirstCtxCancelsAll => "first-ctx-cancels-all",
            Bug::ErrorsCachedInSession => "errors-cached-in-session",
            Bug::KeyOnlyDelete => "key-only-delete",
            Bug::OngoingDeleteNoIdentity => "ongoing-delete-no-identity",
            Bug::ContentHitForeignRecipe => "content-hit-foreign-recipe",
            Bug::TtlDbFailOpen => "ttl-db-fail-open",
            Bug::ForcedRetrySilent => "forced-retry-silent",
            Bug::TtlKeyOutlivesWindow => "ttl-key-outlives-window",
            Bug::TtlWriteIgnoresSafety => "ttl-write-ignores-safety",
        }
    }

    /// The spec rule the switch breaks.
    pub fn rule(self) -> &'static str {
        match self {
            Bug::DupCompletionDiscard => "C-7",
            Bug::SessionLateAppendLeak => "S-3",
            Bug::ErrorPathIgnoresWaiters => "C-9",
            Bug::FirstCtxCancelsAll => "C-5",
            Bug::ErrorsCachedInSession => "S-4",
            Bug::KeyOnlyDelete | Bug::OngoingDeleteNoIdentity => "C-13",
            Bug::ContentHitForeignRecipe => "C-8",
            Bug::TtlDbFailOpen => "T-2",
            Bug::ForcedRetrySilent => "S-5",
            Bug::TtlKeyOutlivesWindow => "T-7",
            Bug::TtlWriteIgnoresSafety => "T-3",
        }
    }

    /// The invariants whose oracles may report the switch, the one the
    /// spec pairs with the broken rule first. A harness run with the switch
    /// on must fail with one of these as its first violation.
    pub fn invariants(self) -> &'static [&'static str] {
        match self {
            // The discarded output's hook never runs; its orphaned nested
            // ref is one no owner accounts for.
            Bug::DupCompletionDiscard => &["INV-1", "INV-2"],
            Bug::SessionLateAppendLeak => &["INV-9", "INV-1"],
            Bug::ErrorPathIgnoresWaiters => &["INV-4"],
            Bug::FirstCtxCancelsAll => &["INV-7"],
            Bug::ErrorsCachedInSession => &["INV-6"],
            // The wrong removal leaves a dead entry indexed (INV-3); the
            // in-flight variant also lets a second resolver start (INV-4).
            Bug::KeyOnlyDelete => &["INV-3"],
            Bug::OngoingDeleteNoIdentity => &["INV-3", "INV-4"],
            Bug::ContentHitForeignRecipe => &["INV-5"],
            Bug::TtlDbFailOpen => &["INV-8"],
            // No §9 invariant covers telemetry: the check reports the rule.
            Bug::ForcedRetrySilent => &["S-5"],
            // The drivers report the rule the shared serve check names.
            Bug::TtlKeyOutlivesWindow => &["INV-8", "T-7"],
            // The drivers report the rule their write checks name; an
            // unsafe result reaching another session is INV-8 in all three.
            Bug::TtlWriteIgnoresSafety => &["INV-8", "T-3"],
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a switch of the zoo.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown bug {name:?}; the known ones are: {}", known())]
pub struct UnknownBug {
    /// The name given.
    pub name: String,
}

fn known() -> String {
    let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
    names.join(", ")
}

impl FromStr for Bug {
    type Err = UnknownBug;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bug::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBug { name: s.into() })
    }
}

/// A set of switches; the default is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bugs(u16);

impl Bugs {
    /// No switch on: the cache as specified.
    pub fn none() -> Self {
        Self(0)
    }

    /// This set plus `bug`.
    pub fn with(self, bug: Bug) -> Self {
        Self(self.0 | bug.bit())
    }

    /// Whether the faulty path of `bug` is taken: always `false` without the
    /// feature `bug-zoo`, so the compiler removes those paths.
    #[inline(always)]
    pub fn on(self, bug: Bug) -> bool {
        cfg!(feature = "bug-zoo") && self.0 & bug.bit() != 0
    }

    /// Whether no switch is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The switches set, in [`Bug::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Bug> {
        Bug::ALL.into_iter().filter(move |b| self.0 & b.bit() != 0)
    }
}

impl FromStr for Bugs {
    type Err = UnknownBug;

    /// A comma-separated list of switch names (`""` is none), as the fuzz
    /// targets read `CACHE_CORE_BUGS`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .try_fold(Bugs::none(), |set, n| Ok(set.with(n.parse()?)))
    }
}

impl fmt::Display for Bugs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Bug::name).collect();
        f.write_str(&names.join(","))
    }
}

/// One switch of the loader's zoo (SPEC §7): each puts back a failure mode
/// jetcache-go users reported. They live apart from [`Bug`] because they
/// break the read-through loader, not the call cache: `cache-sim zoo` hunts
/// [`Bug::ALL`] through the call-cache simulation, while the loader driver
/// (`cache_core::driver::run_loader_machine_with`) hunts these.
///
/// ```
/// use cache_core::bugs::{LoaderBug, LoaderBugs};
///
/// let bug: LoaderBug = "delete-keeps-refresh-task".parse().unwrap();
/// assert_eq!(bug.rule(), "L-9");
/// assert_eq!(bug.invariants(), &["LINV-4"]);
/// assert_eq!(LoaderBugs::none().with(bug).on(bug), cfg!(feature = "bug-zoo"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoaderBug {
    /// The placeholder is the in-band byte string [`IN_BAND_PLACEHOLDER`]:
    /// a real value equal to it reads back as "not found" (breaks L-6).
    PlaceholderInBand,
    /// A refresh starts its own flight even while a foreground load of the
    /// key is in the air (breaks L-1).
    RefreshBypassesFlight,
    /// A refresh whose loader gave no value writes an empty value (breaks L-10).
    RefreshWritesEmpty,
    /// `delete` leaves the key's refresh task running (breaks L-9).
    DeleteKeepsRefreshTask,
    /// A not-found placeholder overwrites a real value written after its
    /// load began (breaks L-7).
    PlaceholderOverwritesValue,
    /// A write lands in the local tier even when the remote refused it
    /// (breaks L-4).
    LocalWriteAheadOfRemote,
    /// Batch flights are keyed by the text of their id list (parts joined
    /// by commas), so different batches collide (breaks L-5, L-13).
    BatchKeyText,
    /// Refresh tasks are still added after `close` (breaks L-9).
    RefreshAfterClose,
    /// Callers joining a flight are not counted (breaks L-15).
    WaitersNotCounted,
    /// The local tier judges no expiry: an entry is served until it is
    /// evicted, however long ago its record (value or placeholder) expired
    /// (breaks L-8, and L-3/L-7 through it).
    LocalIgnoresExpiry,
}

/// What [`LoaderBug::PlaceholderInBand`] takes for a placeholder: one `*`,
/// as a loader cache that marks "not found" in band would store it.
pub const IN_BAND_PLACEHOLDER: &[u8] = b"*";

impl LoaderBug {
    /// Every loader switch, in a fixed order.
    pub const ALL: [LoaderBug; 10] = [
        LoaderBug::PlaceholderInBand,
        LoaderBug::RefreshBypassesFlight,
        LoaderBug::RefreshWritesEmpty,
        LoaderBug::DeleteKeepsRefreshTask,
        LoaderBug::PlaceholderOverwritesValue,
        LoaderBug::LocalWriteAheadOfRemote,
        LoaderBug::BatchKeyText,
        LoaderBug::RefreshAfterClose,
        LoaderBug::WaitersNotCounted,
        LoaderBug::LocalIgnoresExpiry,
    ];

    /// The switch's id.
    pub fn name(self) -> &'static str {
        match self {
            LoaderBug::PlaceholderInBand => "placeholder-in-band",
            LoaderBug::RefreshBypassesFlight => "refresh-bypasses-flight",
            LoaderBug::RefreshWritesEmpty => "refresh-writes-empty",
            LoaderBug::DeleteKeepsRefreshTask => "delete-keeps-refresh-task",
            LoaderBug::PlaceholderOverwritesValue => "placeholder-overwrites-value",
            LoaderBug::LocalWriteAheadOfRemote => "local-write-ahead-of-remote",
            LoaderBug::BatchKeyText => "batch-key-text",
            LoaderBug::RefreshAfterClose => "refresh-after-close",
            LoaderBug::WaitersNotCounted => "waiters-not-counted",
            LoaderBug::LocalIgnoresExpiry => "local-ignores-expiry",
        }
    }

    /// The spec rule the switch breaks.
    pub fn rule(self) -> &'static str {
        match self {
            LoaderBug::PlaceholderInBand => "L-6",
            LoaderBug::RefreshBypassesFlight => "L-1",
            LoaderBug::RefreshWritesEmpty => "L-10",
            LoaderBug::DeleteKeepsRefreshTask | LoaderBug::RefreshAfterClose => "L-9",
            LoaderBug::PlaceholderOverwritesValue => "L-7",
            LoaderBug::LocalWriteAheadOfRemote => "L-4",
            LoaderBug::BatchKeyText => "L-13",
            LoaderBug::WaitersNotCounted => "L-15",
            LoaderBug::LocalIgnoresExpiry => "L-8",
        }
    }

    /// The loader invariants (SPEC §7.8) whose checks may report the switch;
    /// a driver run with it on must fail with one of these.
    pub fn invariants(self) -> &'static [&'static str] {
        match self {
            // A value read back as a placeholder.
            LoaderBug::PlaceholderInBand => &["LINV-2"],
            LoaderBug::RefreshBypassesFlight => &["LINV-1"],
            // A value no loader produced is served.
            LoaderBug::RefreshWritesEmpty => &["LINV-2"],
            LoaderBug::DeleteKeepsRefreshTask => &["LINV-4"],
            // The newer value is served as "not found".
            LoaderBug::PlaceholderOverwritesValue => &["LINV-2"],
            // The local copy is one the remote never accepted: it cannot converge.
            LoaderBug::LocalWriteAheadOfRemote => &["LINV-5"],
            LoaderBug::BatchKeyText => &["LINV-7"],
            // The task outlives close: not quiescent (the machine's own
            // check calls the same state a refresh bound, LINV-4).
            LoaderBug::RefreshAfterClose => &["LINV-8", "LINV-4"],
            LoaderBug::WaitersNotCounted => &["LINV-6"],
            // An expired local copy (value or placeholder) is served.
            LoaderBug::LocalIgnoresExpiry => &["LINV-3"],
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for LoaderBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LoaderBug {
    type Err = UnknownBug;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LoaderBug::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBug { name: s.into() })
    }
}

/// A set of loader switches; the default is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LoaderBugs(u16);

impl LoaderBugs {
    /// No switch on: the loader as specified.
    pub fn none() -> Self {
        Self(0)
    }

    /// This set plus `bug`.
    pub fn with(self, bug: LoaderBug) -> Self {
        Self(self.0 | bug.bit())
    }

    /// Whether the faulty path of `bug` is taken: always `false` without the
    /// feature `bug-zoo`, so the compiler removes those paths.
    #[inline(always)]
    pub fn on(self, bug: LoaderBug) -> bool {
        cfg!(feature = "bug-zoo") && self.0 & bug.bit() != 0
    }

    /// Whether no switch is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The switches set, in [`LoaderBug::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = LoaderBug> {
        LoaderBug::ALL
            .into_iter()
            .filter(move |b| self.0 & b.bit() != 0)
    }
}

impl fmt::Display for LoaderBugs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(LoaderBug::name).collect();
        f.write_str(&names.join(","))
    }
}

/// [`LoaderBug::BatchKeyText`]'s flight key: the key parts of every stored
/// key in the batch, joined by commas, as one text. Keys whose parts
/// contain commas collide with other batches.
pub fn batch_text_key(key: &crate::loader::FlightKey) -> crate::loader::FlightKey {
    use crate::loader::FlightKey;
    match key {
        FlightKey::Batch(stored) => {
            let parts: Vec<String> = stored
                .iter()
                .flat_map(|s| {
                    crate::loader::keys::parse_stored_key(s)
                        .map(|(_, k)| k.parts().to_vec())
                        .unwrap_or_else(|| vec![s.clone()])
                })
                .collect();
            FlightKey::Batch(vec![parts.join(",")])
        }
        FlightKey::Single(_) => key.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for b in Bug::ALL {
            assert_eq!(b.name().parse::<Bug>(), Ok(b));
            assert!(!b.invariants().is_empty());
        }
        let all = Bug::ALL.iter().fold(Bugs::none(), |s, b| s.with(*b));
        assert_eq!(all.iter().count(), Bug::ALL.len());
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let e = "key-only".parse::<Bug>().unwrap_err();
        let text = e.to_string();
        assert!(text.contains("\"key-only\""), "{text}");
        for b in Bug::ALL {
            assert!(text.contains(b.name()), "{text}");
        }
    }

    #[test]
    fn loader_names_round_trip_apart_from_the_call_cache_ones() {
        for b in LoaderBug::ALL {
            assert_eq!(b.name().parse::<LoaderBug>(), Ok(b));
            assert!(
                b.name().parse::<Bug>().is_err(),
                "{b} is not a call-cache switch"
            );
            assert!(b.invariants().iter().all(|i| i.starts_with("LINV-")));
        }
        let all = LoaderBug::ALL
            .iter()
            .fold(LoaderBugs::none(), |s, b| s.with(*b));
        assert_eq!(all.iter().count(), LoaderBug::ALL.len());
        assert!(LoaderBug::ALL.iter().all(|b| !LoaderBugs::default().on(*b)));
    }

    #[test]
    fn a_list_of_names_parses_to_a_set() {
        let set: Bugs = "key-only-delete, forced-retry-silent,".parse().unwrap();
        let names: Vec<&str> = set.iter().map(Bug::name).collect();
        assert_eq!(names, ["key-only-delete", "forced-retry-silent"]);
        assert_eq!("".parse::<Bugs>(), Ok(Bugs::none()));
        let e = "key-only-delete,nope".parse::<Bugs>().unwrap_err();
        assert_eq!(e.name, "nope");
    }

    #[test]
    fn switches_are_off_by_default() {
        assert!(Bugs::default().is_empty());
        assert!(Bug::ALL.iter().all(|b| !Bugs::default().on(*b)));
    }
}
