//! `cache-sim explain`: the identity flow of every call of a key, and the
//! checklist step that explains a surprising miss or hit.

use cache_core::bugs::{Bug, Bugs};
use sim::decisions::record_run;
use sim::explain::explain;
use sim::{Plan, Scenario};

fn explained(scenario: &str, seed: u64, bug: Option<Bug>, key: u64) -> String {
    let mut s = Scenario::named(scenario).unwrap();
    if let Some(b) = bug {
        s.bugs = Bugs::none().with(b);
    }
    let (o, rec) = record_run(Plan::generate(seed, &s), &s);
    explain(&o.plan, &rec, key).unwrap()
}

#[test]
fn a_content_hit_reporting_the_stored_id_is_named() {
    // The zoo's first failing run of content-hit-foreign-recipe (C-8).
    let text = explained("standard", 0, Some(Bug::ContentHitForeignRecipe), 0);
    assert!(text.contains("path    content (rule C-3.2)"), "{text}");
    assert!(
        text.contains("HIT WHERE IT SHOULD NOT: 5. content-only match"),
        "{text}"
    );
    assert!(text.contains("run violated INV-5"), "{text}");
    // Without the switch the same hit returns the requested ID.
    let clean = explained("standard", 0, None, 0);
    assert!(!clean.contains("HIT WHERE IT SHOULD NOT"), "{clean}");
    assert!(
        clean.contains("= the requested ID (decision: overridden)"),
        "{clean}"
    );
}

#[test]
fn a_replayed_error_is_named_by_s4() {
    let text = explained("standard", 0, Some(Bug::ErrorsCachedInSession), 0);
    assert!(
        text.contains("HIT WHERE IT SHOULD NOT: 6. no forced no-cache retry"),
        "{text}"
    );
    let clean = explained("standard", 0, None, 0);
    assert!(clean.contains("path    do-not-cache (rule S-4)"), "{clean}");
}

#[test]
fn a_ttl_call_on_its_bare_call_key_is_named() {
    // The zoo's first failing run of ttl-db-fail-open (T-2): at 1460 ms a
    // TTL'd call hits under its bare call key.
    let text = explained("standard", 1, Some(Bug::TtlDbFailOpen), 1);
    assert!(
        text.contains("HIT WHERE IT SHOULD NOT: 4. storage key: a TTL'd call was served under the bare call key"),
        "{text}"
    );
    let clean = explained("standard", 1, None, 1);
    assert!(!clean.contains("HIT WHERE IT SHOULD NOT"), "{clean}");
}

#[test]
fn misses_after_a_completed_call_get_a_checklist_step() {
    let mut steps = std::collections::BTreeSet::new();
    for key in 0..6 {
        let text = explained("ttl-heavy", 1, None, key);
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains("MISSED although") {
                let why = lines.get(i + 1).copied().unwrap_or_default();
                assert!(why.contains("why:"), "a miss without its step:\n{text}");
                steps.insert(
                    why.split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            // Every TTL'd storage key names the T-2 rule that chose it.
            if l.trim_start().starts_with("storage ") {
                assert!(l.contains("T-2"), "{l}");
            }
        }
    }
    // This run meets TTL scoping (step 4) and released results.
    assert!(steps.contains("4."), "{steps:?}");
    assert!(steps.contains("none"), "{steps:?}");
}

#[test]
fn a_key_outside_the_plan_is_a_clear_error() {
    let s = Scenario::named("standard").unwrap();
    let (o, rec) = record_run(Plan::generate(0, &s), &s);
    let e = explain(&o.plan, &rec, 99).unwrap_err();
    assert!(e.contains("bad --key 99"), "{e}");
}
