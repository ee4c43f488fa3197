//! What the cache reports about itself, judged against what the harness
//! saw: an invalid key is refused before anything happens (C-1), a release
//! hook's failure reaches the releaser (C-12), a session close counts the
//! refs it released and the hooks that failed (S-1, S-7), the metrics count
//! every failing hook (O-1, C-12), `entries()` is the sum of the five
//! buckets (C-15), and a leak report names the classes its buckets show
//! (O-3) and prints what it holds so a reader can follow it: one name per
//! entry and class, labels naming each entry's kind and key, index lines
//! listing what the entries record (O-3, C-12).
//!
//! Every check takes plain counts the harness kept itself (how many of its
//! planted failing hooks ran, how many refs a session owned), so the
//! simulation and both drivers judge these rules with the same code.
//!
//! ```
//! use cache_core::checks::accounting::{check_buckets, check_hook_errors};
//! use cache_core::machine::Buckets;
//!
//! let b = Buckets { ongoing_calls: 1, completed_calls: 2, ..Buckets::default() };
//! check_buckets(&b, 3).unwrap();
//! check_buckets(&b, 2).unwrap_err(); // C-15: entries() is not the sum
//! check_hook_errors(1, 2).unwrap_err(); // O-1: a failing hook went uncounted
//! ```

use crate::error::CallError;
use std::collections::BTreeSet;

use crate::machine::{Buckets, EntryId, LeakClass, LeakReport, Owner, RunMode};

/// One violation of a rule these checks judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountingViolation {
    /// The rule broken.
    pub rule: &'static str,
    /// What was seen.
    pub detail: String,
}

impl std::fmt::Display for AccountingViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

fn violation(rule: &'static str, detail: String) -> Result<(), AccountingViolation> {
    Err(AccountingViolation { rule, detail })
}

/// What a call with an invalid key (no call ID, an empty storage or
/// arbitrary key) did, as the harness saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidKeyCall {
    /// Whether the call's resolver started.
    pub resolver_ran: bool,
    /// `entries()` before the call.
    pub entries_before: usize,
    /// `entries()` after the call.
    pub entries_after: usize,
}

/// C-1: a call with an invalid key is refused with the invalid-key error
/// whatever else holds (C-1 comes "before anything else happens": a closed
/// session, S-2, or a cancelled caller does not change the answer), its
/// resolver never runs, and the cache holds no more entries than before
/// (nothing cached, nothing left in flight). `answer` is `None` when the
/// call did not answer at once: the refusal comes before anything that
/// could wait.
pub fn check_invalid_key<T>(
    call: InvalidKeyCall,
    answer: Option<&Result<T, CallError>>,
) -> Result<(), AccountingViolation> {
    let refused = match answer {
        None => return violation("C-1", "an invalid key did not fail at once".into()),
        Some(Ok(_)) => return violation("C-1", "an invalid key was served".into()),
        Some(Err(e)) => e,
    };
    if !matches!(refused, CallError::InvalidKey(_)) {
        return violation(
            "C-1",
            format!("an invalid key failed with {refused}, not the invalid-key error"),
        );
    }
    if call.resolver_ran {
        return violation("C-1", "the resolver of an invalid key ran".into());
    }
    if call.entries_after != call.entries_before {
        return violation(
            "C-1",
            format!(
                "an invalid key changed the entries: {} -> {}",
                call.entries_before, call.entries_after
            ),
        );
    }
    Ok(())
}

/// C-12: a release returns a release-hook error exactly when one of the
/// hooks it ran failed (`failed_hooks`: the harness's failing hooks that ran
/// during it), and fails for no other reason.
pub fn check_release(
    result: &Result<(), CallError>,
    failed_hooks: usize,
) -> Result<(), AccountingViolation> {
    match (result, failed_hooks) {
        (Ok(()), 0) => Ok(()),
        (Err(CallError::ReleaseHook(_)), n) if n > 0 => Ok(()),
        (Ok(()), n) => violation(
            "C-12",
            format!("{n} release hooks failed, and the release said nothing"),
        ),
        (Err(e), n) => violation(
            "C-12",
            format!("a release with {n} failing hooks failed with {e}"),
        ),
    }
}

/// What a session close reported (S-7), and what the harness knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFacts {
    /// Refs the close says it released.
    pub released: usize,
    /// Release hooks the close says failed.
    pub hook_errors: usize,
    /// Refs the harness saw the session own when it closed.
    pub owned: usize,
    /// The session's calls the harness had not yet seen answered: the
    /// cache may have answered each already, with a ref the session owns
    /// that the close then released (an answer racing the close). 0 for a
    /// harness that sees every answer as it is made.
    pub unseen: usize,
    /// The harness's failing hooks that ran during the close.
    pub failed_hooks: usize,
}

/// S-1, S-7, C-12: a close releases every ref its session owned (and at
/// most one more per call whose answer the harness had not seen yet), and
/// its summary counts exactly the hooks that failed while it ran.
pub fn check_close(facts: CloseFacts) -> Result<(), AccountingViolation> {
    if facts.released < facts.owned || facts.released > facts.owned + facts.unseen {
        let unseen = match facts.unseen {
            0 => String::new(),
            n => format!(" and had {n} calls whose answers were not seen yet"),
        };
        return violation(
            "S-1",
            format!(
                "a close released {} refs, the session owned {}{unseen}",
                facts.released, facts.owned
            ),
        );
    }
    if facts.hook_errors != facts.failed_hooks {
        return violation(
            "S-7",
            format!(
                "a close reported {} failing release hooks, {} failed",
                facts.hook_errors, facts.failed_hooks
            ),
        );
    }
    Ok(())
}

/// O-1, C-12: the metrics count every release hook that failed
/// (`counted`: `Metrics::release_hook_errors`; `failed_hooks`: the failing
/// hooks the harness saw run).
pub fn check_hook_errors(counted: u64, failed_hooks: u64) -> Result<(), AccountingViolation> {
    if counted != failed_hooks {
        return violation(
            "O-1",
            format!("the metrics count {counted} failed release hooks, {failed_hooks} failed"),
        );
    }
    Ok(())
}

/// T-2, O-1: the cache absorbs a TTL store failure (goes on with a
/// session-scoped key, or leaves a result session-scoped when its write
/// fails) and counts it only when the store failed it: every lookup or
/// write that returned an error is counted, and nothing beyond those and
/// the lookups whose answer would come after the store deadline
/// (`counted`: `Metrics::ttl_store_failures`; the other two as the
/// harness's store saw them). A late answer is an upper bound, not a
/// count: a caller that gives up while the cache waits out the deadline
/// ends that wait uncounted. A cache that degrades a call the store
/// answered in time loses sharing that no other check notices.
pub fn check_store_failures(
    counted: u64,
    store_errors: u64,
    late_answers: u64,
) -> Result<(), AccountingViolation> {
    if counted < store_errors || counted > store_errors + late_answers {
        return violation(
            "T-2",
            format!(
                "the cache counts {counted} TTL store failures; the store failed {store_errors} \
                 lookups and writes and would have answered {late_answers} lookups past the \
                 deadline"
            ),
        );
    }
    Ok(())
}

/// C-15: `entries()` is the sum of the five buckets, each added once.
pub fn check_buckets(buckets: &Buckets, entries: usize) -> Result<(), AccountingViolation> {
    let sum = [
        buckets.ongoing_calls,
        buckets.completed_calls,
        buckets.completed_calls_by_content,
        buckets.ongoing_arbitrary,
        buckets.completed_arbitrary,
    ]
    .iter()
    .sum::<usize>();
    if entries != sum || buckets.total() != sum {
        return violation(
            "C-15",
            format!(
                "entries() is {entries} and the buckets' total {}, their sum is {sum} ({buckets:?})",
                buckets.total()
            ),
        );
    }
    Ok(())
}

/// O-3: a leak report names the leak classes its buckets show — refs of
/// completed calls, stuck in-flight calls, arbitrary entries — and the
/// unindexed class exactly when a surviving entry sits in no index; its
/// buckets are the cache's (`buckets`) and it lists every live entry
/// (`live_entries`).
pub fn check_leak_report(
    report: &LeakReport,
    buckets: &Buckets,
    live_entries: usize,
) -> Result<(), AccountingViolation> {
    if report.buckets != *buckets || report.entries.len() != live_entries {
        return violation(
            "O-3",
            format!(
                "a leak report shows {:?} and {} entries, the cache {buckets:?} and {live_entries}",
                report.buckets,
                report.entries.len()
            ),
        );
    }
    let nothing_lives = live_entries == 0 && buckets.total() == 0;
    if report.is_clean() != nothing_lives {
        return violation(
            "O-3",
            format!(
                "a leak report calls itself clean: {}, with {live_entries} live entries and \
                 buckets {buckets:?}",
                report.is_clean()
            ),
        );
    }
    let b = buckets;
    let expected: Vec<LeakClass> = [
        (
            b.completed_calls + b.completed_calls_by_content > 0,
            LeakClass::CompletedRefs,
        ),
        (b.ongoing_calls > 0, LeakClass::StuckInFlight),
        (
            b.ongoing_arbitrary + b.completed_arbitrary > 0,
            LeakClass::Arbitrary,
        ),
        (
            report.entries.iter().any(|e| e.slots.is_empty()),
            LeakClass::Unindexed,
        ),
    ]
    .into_iter()
    .filter_map(|(present, class)| present.then_some(class))
    .collect();
    let named = report.classes();
    if named != expected {
        return violation(
            "O-3",
            format!("a leak report names {named:?}, its buckets show {expected:?}"),
        );
    }
    Ok(())
}

/// O-3: asking for one entry's index slots (`slots`, as
/// [`CallCache::slots`](crate::machine::CallCache::slots) does) answers
/// what the leak report lists for that entry. A tool that follows one
/// entry relies on the two agreeing.
pub fn check_entry_slots(
    report: &LeakReport,
    slots: impl Fn(EntryId) -> Vec<String>,
) -> Result<(), AccountingViolation> {
    for e in &report.entries {
        let asked = slots(e.entry);
        if asked != e.slots {
            return violation(
                "O-3",
                format!(
                    "{} sits in {:?} by the leak report, in {asked:?} when asked alone",
                    e.entry, e.slots
                ),
            );
        }
    }
    Ok(())
}

/// The head of a key a label prints: a digest's first 12 hex digits, or a
/// shorter key whole. Stated here apart from the cache's own shortening, so
/// a label that names the wrong key (or none) is seen.
pub fn key_head(key: &str) -> &str {
    let hex = key.strip_prefix("sha256:").unwrap_or(key);
    hex.char_indices().nth(12).map_or(hex, |(i, _)| &hex[..i])
}

/// The label an entry run in this mode under this storage (or arbitrary)
/// key must carry: its kind (`call`, `detached`, `retry`, `arbitrary`,
/// stated here, not read from the cache) and the key's head.
pub fn entry_label(mode: RunMode, storage_key: &str) -> String {
    let kind = match mode {
        RunMode::Cached => "call",
        RunMode::DoNotCache => "detached",
        RunMode::ForcedRetry => "retry",
        RunMode::Arbitrary => "arbitrary",
    };
    format!("{kind} {}", key_head(storage_key))
}

/// C-12, O-3: the label an entry's release hook and leak-report line carry
/// is the one the harness expects (`want`, from [`entry_label`]): an
/// operator reading a failed hook's error or a leak report finds the entry
/// by it.
pub fn check_label(entry: EntryId, label: &str, want: &str) -> Result<(), AccountingViolation> {
    if label != want {
        return violation(
            "O-3",
            format!("{entry} is labelled {label:?}, the harness expects {want:?}"),
        );
    }
    Ok(())
}

/// O-3: the report a person reads names what the typed report holds. Each
/// surviving entry prints as an id of its own, and each leak class shown
/// and each holder of a ref as a name of its own, and the index lines (`index_lines`, as
/// [`CallCache::index_lines`](crate::machine::CallCache::index_lines)
/// prints them: `slot -> e1 e2`) list exactly the slots the entries record.
/// Judge it on a cache whose own invariants hold (`check_invariants`): an
/// index that disagrees with its entries is INV-3's to report, and the
/// lines then rightly show the disagreement.
pub fn check_report_text(
    report: &LeakReport,
    index_lines: &[String],
) -> Result<(), AccountingViolation> {
    let ids: Vec<String> = report.entries.iter().map(|e| e.entry.to_string()).collect();
    one_name_each("surviving entries", ids.iter().map(String::as_str))?;
    let classes: Vec<String> = report.classes().iter().map(ToString::to_string).collect();
    one_name_each("leak classes", classes.iter().map(String::as_str))?;
    let owners: BTreeSet<Owner> = report
        .entries
        .iter()
        .flat_map(|e| e.holders.iter().map(|(_, owner)| *owner))
        .collect();
    let owner_names: Vec<String> = owners.iter().map(ToString::to_string).collect();
    one_name_each("ref holders", owner_names.iter().map(String::as_str))?;
    let mut recorded: Vec<(&str, &str)> = report
        .entries
        .iter()
        .zip(&ids)
        .flat_map(|(e, id)| e.slots.iter().map(move |s| (s.as_str(), id.as_str())))
        .collect();
    let mut listed = Vec::with_capacity(recorded.len());
    for line in index_lines {
        let Some((slot, entries)) = line.rsplit_once(" -> ") else {
            return violation("O-3", format!("the index line {line:?} names no entry"));
        };
        listed.extend(entries.split(' ').map(|e| (slot, e)));
    }
    recorded.sort_unstable();
    listed.sort_unstable();
    if recorded != listed {
        return violation(
            "O-3",
            format!("the index lines list {listed:?}, the entries record {recorded:?}"),
        );
    }
    Ok(())
}

/// O-3: things a report lists print as names that are not empty and not
/// shared, or a reader cannot tell them apart.
fn one_name_each<'a>(
    what: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), AccountingViolation> {
    let printed: Vec<&str> = names.collect();
    let mut sorted = printed.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != printed.len() || sorted.iter().any(|n| n.is_empty()) {
        return violation(
            "O-3",
            format!("the report's {what} print as {printed:?}: not one name each"),
        );
    }
    Ok(())
}

/// C-15 and O-3 on one state of a cache: its `buckets`, `entries()`, leak
/// report and live entries (what the drivers check after every step).
pub fn check_counts(
    buckets: &Buckets,
    entries: usize,
    report: &LeakReport,
    live_entries: usize,
) -> Result<(), AccountingViolation> {
    check_buckets(buckets, entries)?;
    check_leak_report(report, buckets, live_entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(resolver_ran: bool, after: usize) -> InvalidKeyCall {
        InvalidKeyCall {
            resolver_ran,
            entries_before: 2,
            entries_after: after,
        }
    }

    #[test]
    fn invalid_key_must_be_refused_at_once_with_its_error() {
        let refused: Result<(), CallError> = Err(CallError::InvalidKey("no ID".into()));
        check_invalid_key(call(false, 2), Some(&refused)).unwrap();
        let v = check_invalid_key::<()>(call(false, 2), None).unwrap_err();
        assert!(v.detail.contains("at once"), "{v}");
        let v = check_invalid_key(call(false, 2), Some(&Ok(()))).unwrap_err();
        assert!(v.detail.contains("served"), "{v}");
        let v = check_invalid_key(call(true, 2), Some(&refused)).unwrap_err();
        assert!(v.detail.contains("ran"), "{v}");
        let v = check_invalid_key(call(false, 3), Some(&refused)).unwrap_err();
        assert!(v.detail.contains("2 -> 3"), "{v}");
        // C-1 comes first: not the closed-session (S-2) or cancelled answer.
        for first in [CallError::SessionClosed, CallError::Cancelled] {
            let v = check_invalid_key(call(false, 2), Some(&Err::<(), _>(first))).unwrap_err();
            assert_eq!(v.rule, "C-1", "{v}");
        }
    }

    #[test]
    fn a_release_reports_exactly_its_failing_hooks() {
        let failed: Result<(), CallError> = Err(CallError::ReleaseHook("x".into()));
        check_release(&Ok(()), 0).unwrap();
        check_release(&failed, 2).unwrap();
        assert_eq!(check_release(&Ok(()), 1).unwrap_err().rule, "C-12");
        assert_eq!(check_release(&failed, 0).unwrap_err().rule, "C-12");
        let other: Result<(), CallError> = Err(CallError::Cancelled);
        assert_eq!(check_release(&other, 1).unwrap_err().rule, "C-12");
    }

    #[test]
    fn a_close_counts_its_refs_and_failing_hooks() {
        let facts = CloseFacts {
            released: 3,
            hook_errors: 1,
            owned: 3,
            unseen: 0,
            failed_hooks: 1,
        };
        check_close(facts).unwrap();
        for released in [2, 4] {
            let v = check_close(CloseFacts { released, ..facts }).unwrap_err();
            assert_eq!(v.rule, "S-1");
        }
        // Two answers not seen yet: up to two more refs, never fewer.
        let racing = CloseFacts { unseen: 2, ..facts };
        for released in [3, 4, 5] {
            check_close(CloseFacts { released, ..racing }).unwrap();
        }
        for released in [2, 6] {
            let v = check_close(CloseFacts { released, ..racing }).unwrap_err();
            assert_eq!(v.rule, "S-1");
        }
        let v = check_close(CloseFacts {
            hook_errors: 0,
            ..facts
        })
        .unwrap_err();
        assert_eq!(v.rule, "S-7");
    }

    #[test]
    fn metrics_and_buckets_agree_with_what_was_seen() {
        check_hook_errors(3, 3).unwrap();
        assert_eq!(check_hook_errors(2, 3).unwrap_err().rule, "O-1");
        let b = Buckets {
            ongoing_calls: 2,
            completed_calls: 3,
            completed_calls_by_content: 1,
            ongoing_arbitrary: 1,
            completed_arbitrary: 4,
        };
        check_buckets(&b, 11).unwrap();
        let v = check_buckets(&b, 10).unwrap_err();
        assert_eq!(v.rule, "C-15");
        assert!(v.detail.contains("sum is 11"), "{v}");
    }

    #[test]
    fn a_leak_report_names_the_classes_of_its_buckets() {
        let buckets = Buckets {
            ongoing_calls: 1,
            ..Buckets::default()
        };
        let report = LeakReport {
            buckets,
            open_sessions: 0,
            entries: Vec::new(),
        };
        check_leak_report(&report, &buckets, 0).unwrap();
        let v = check_leak_report(&report, &Buckets::default(), 0).unwrap_err();
        assert_eq!(v.rule, "O-3");
        let v = check_leak_report(&report, &buckets, 1).unwrap_err();
        assert!(v.detail.contains("and 1"), "{v}");
        // The classes come from the buckets: with none in flight, a report
        // naming stuck in-flight calls is wrong.
        let completed = Buckets {
            completed_calls: 2,
            ..Buckets::default()
        };
        let wrong = LeakReport {
            buckets: completed,
            ..report
        };
        assert_eq!(wrong.classes(), vec![LeakClass::CompletedRefs]);
        check_leak_report(&wrong, &completed, 0).unwrap();
    }

    #[test]
    fn every_store_error_is_counted_and_nothing_the_store_answered_in_time() {
        check_store_failures(3, 2, 1).unwrap();
        // A caller gave up while the cache waited for the late answer.
        check_store_failures(2, 2, 1).unwrap();
        // Planted: a lookup answered in time counted as a failure.
        let v = check_store_failures(4, 2, 1).unwrap_err();
        assert_eq!(v.rule, "T-2");
        assert!(v.detail.contains("counts 4"), "{v}");
        // And a store error absorbed without being counted.
        check_store_failures(1, 2, 1).unwrap_err();
    }

    #[test]
    fn one_entry_asked_alone_must_sit_where_the_leak_report_lists_it() {
        use crate::machine::arena::Arena;
        use crate::machine::SurvivingEntry;
        let mut arena = Arena::default();
        let entry = EntryId(arena.insert(()));
        let listed = vec!["storage 3f2a9c0b1d4e".to_string()];
        let report = LeakReport {
            buckets: Buckets {
                completed_calls: 1,
                ..Buckets::default()
            },
            open_sessions: 1,
            entries: vec![SurvivingEntry {
                entry,
                label: "call 3f2a9c0b1d4e".to_string(),
                phase: "completed",
                refcount: 1,
                slots: listed.clone(),
                waiters: Vec::new(),
                holders: Vec::new(),
            }],
        };
        check_entry_slots(&report, |_| listed.clone()).unwrap();
        // Planted: the one-entry query forgets the entry's index.
        let v = check_entry_slots(&report, |_| Vec::new()).unwrap_err();
        assert_eq!(v.rule, "O-3");
        assert!(v.detail.contains("when asked alone"), "{v}");
    }

    #[test]
    fn labels_name_the_kind_and_key_the_harness_began() {
        let digest = format!("sha256:3f2a9c0b1d4e{}", "7".repeat(52));
        assert_eq!(key_head(&digest), "3f2a9c0b1d4e");
        assert_eq!(key_head("a3"), "a3");
        let mut arena = crate::machine::arena::Arena::default();
        let entry = EntryId(arena.insert(()));
        let want = entry_label(RunMode::Cached, &digest);
        check_label(entry, "call 3f2a9c0b1d4e", &want).unwrap();
        // Planted: a label that names no key, or another kind.
        for label in ["call xyzzy", "", "retry 3f2a9c0b1d4e"] {
            let v = check_label(entry, label, &want).unwrap_err();
            assert_eq!(v.rule, "O-3");
        }
    }

    #[test]
    fn a_report_prints_one_name_per_entry_and_class_and_lists_what_they_record() {
        use crate::machine::arena::Arena;
        use crate::machine::{RefId, SessionId, SurvivingEntry};
        let mut arena = Arena::default();
        let (a, b) = (EntryId(arena.insert(())), EntryId(arena.insert(())));
        let mut refs = Arena::default();
        let mut entry = |entry, slots: &[&str]| SurvivingEntry {
            entry,
            label: "call 3f2a9c0b1d4e".to_string(),
            phase: "completed",
            refcount: 1,
            slots: slots.iter().map(|s| s.to_string()).collect(),
            waiters: Vec::new(),
            holders: vec![
                (RefId(refs.insert(())), Owner::Caller),
                (RefId(refs.insert(())), Owner::Session(SessionId(1))),
            ],
        };
        let report = LeakReport {
            buckets: Buckets {
                completed_calls: 2,
                completed_calls_by_content: 1,
                ..Buckets::default()
            },
            open_sessions: 1,
            entries: vec![
                entry(a, &["storage 3f2a9c0b1d4e", "content 99aa"]),
                entry(b, &["storage 3f2a9c0b1d4e"]),
            ],
        };
        let lines = |ls: &[String]| ls.to_vec();
        let good = [
            format!("storage 3f2a9c0b1d4e -> {a} {b}"),
            format!("content 99aa -> {a}"),
        ];
        check_report_text(&report, &lines(&good)).unwrap();
        // Planted: index lines that name nothing, forget a listing, or list
        // an entry under a slot it does not record.
        let planted = [
            vec![String::new()],
            vec![good[0].clone()],
            vec![good[0].clone(), format!("content 99aa -> {b}")],
        ];
        for index in planted {
            let v = check_report_text(&report, &index).unwrap_err();
            assert_eq!(v.rule, "O-3", "{index:?}");
        }
        // Planted: names a reader cannot tell apart.
        one_name_each("entries", ["e1", "e2"].into_iter()).unwrap();
        let v = one_name_each("entries", ["e", "e"].into_iter()).unwrap_err();
        assert!(v.detail.contains("not one name each"), "{v}");
        one_name_each("classes", [""].into_iter()).unwrap_err();
    }
}
