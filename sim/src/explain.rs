//! `cache-sim explain`: the identity flow of every call of one key in a
//! run, from the cache's typed O-2 decisions ([`crate::decisions`]) and the
//! simulation trace — and, where a call missed although an earlier related
//! call had completed (or hit where it should not), the first step of the
//! checklist that explains it.
//!
//! The checklist, in order (docs/debugging.md):
//! 1. ID rewritten — the earlier result is related only through the ID its
//!    resolver returned (C-6), not the ID requested;
//! 2. arguments differ — another recipe's arguments, so another call key;
//! 3. recipe digest changed — same arguments, another call key;
//! 4. storage key differs — a TTL'd key (T-2) is scoped to a session and a
//!    TTL window, or the store failed;
//! 5. content-only match — only the content digest is shared (C-3.2);
//! 6. forced no-cache retry after an error (S-4).
//!
//! When none applies, the earlier result was no longer held when the call
//! came (its refs were released, S-1/C-13).

use std::fmt::Write as _;

use crate::decisions::{Decision, RunRecord};
use crate::plan::Plan;

/// How the storage key was chosen (T-2), as far as the decisions show it.
fn storage_rule(plan: &Plan, rec: &RunRecord, i: usize, d: &Decision) -> String {
    if d.storage == d.call {
        if ttl_bypassed(plan, d) {
            return "the bare call key although the key has a TTL: T-2 never lets a TTL'd call use it".into();
        }
        return "the call key itself (no TTL on this call: T-2 does not apply)".into();
    }
    if d.store_failed {
        return "T-2, the TTL store failed: a session-scoped key, nothing persisted".into();
    }
    // The first session that used a TTL'd storage key made it (a fresh,
    // session-scoped key); another session using it found it in a live row.
    let first = rec.decisions[..i]
        .iter()
        .find(|e| e.storage == d.storage && e.session != "-");
    match first {
        Some(f) if f.session != d.session && d.session != "-" => format!(
            "T-2, a live TTL row: the key session {} made, shared across sessions",
            f.session
        ),
        Some(_) => format!(
            "T-2, a fresh key scoped to session {} in this TTL window (reused)",
            d.session
        ),
        None => format!(
            "T-2, a fresh key scoped to session {} in this TTL window (new)",
            d.session
        ),
    }
}

/// A client's call of a TTL'd key under its bare call key (T-2 forbids it:
/// a store failure gives a session-scoped key). Nested calls carry no TTL.
fn ttl_bypassed(plan: &Plan, d: &Decision) -> bool {
    let ttl = d
        .key
        .and_then(|k| plan.keys.get(k as usize))
        .map_or(0, |p| p.ttl_ms);
    ttl > 0 && d.storage == d.call && d.client.is_some() && d.path != "do-not-cache"
}

/// The plan key's requested ID, as the simulation builds it.
fn requested_id(plan: &Plan, k: u64) -> String {
    match plan.keys.get(k as usize).and_then(|p| p.content) {
        Some(g) => format!("build(k: {k}) with content digest of content-{g}"),
        None => format!("build(k: {k})"),
    }
}

/// What the caller got back: the returned ID's call key, compared with the
/// requested one, and whether the decision said it was overridden.
fn returned_id(plan: &Plan, d: &Decision) -> String {
    let k = d.key.unwrap_or_default();
    let Some(a) = &d.answer else {
        return "- (no answer recorded)".into();
    };
    if a.returned == "-" {
        return "- (no ID: an error or an arbitrary entry)".into();
    }
    let rewritten = plan.keys.get(k as usize).and_then(|p| p.result_key);
    let same = a.returned == d.call;
    let whose = match (same, d.path.as_str(), rewritten) {
        (true, _, _) => "the requested ID".to_string(),
        (false, "miss" | "do-not-cache", Some(r)) => {
            format!("k{r}'s ID: the resolver rewrote it (C-6)")
        }
        (false, _, _) => "the stored entry's ID, not the requested one".to_string(),
    };
    format!(
        "{} = {whose}{}",
        a.returned,
        if d.overridden {
            " (decision: overridden)"
        } else {
            ""
        }
    )
}

/// Whether the request of `d` was answered `ok` before `at` ms.
fn completed_before(rec: &RunRecord, d: &Decision, at: u64) -> Option<u64> {
    let (ms, what) = rec.answer_of(d)?;
    (ms <= at && what.starts_with("ok ")).then_some(ms)
}

/// The checklist against `earlier` (the last related call that completed):
/// the first step that explains `d`'s miss.
fn checklist(plan: &Plan, earlier: &Decision, d: &Decision) -> String {
    let k = d.key.unwrap_or_default();
    let ek = earlier.key.unwrap_or_default();
    let result_key = plan.keys.get(ek as usize).and_then(|p| p.result_key);
    if ek != k && result_key == Some(k) {
        return format!(
            "1. ID rewritten: k{ek}'s resolver returned k{k}'s ID (C-6); the request named k{ek}"
        );
    }
    if earlier.call != d.call && ek != k {
        let why = if earlier.content == d.content && d.content != "-" {
            " (they share a content digest: only a content match, step 5, could serve it)"
        } else {
            ""
        };
        return format!(
            "2. arguments differ: k{ek} vs k{k}, call keys {} vs {}{why}",
            earlier.call, d.call
        );
    }
    if earlier.call != d.call {
        return format!("3. recipe digest changed: {} vs {}", earlier.call, d.call);
    }
    if earlier.storage != d.storage {
        return format!(
            "4. storage key differs: {} (session {}) vs {} (session {}) — a TTL'd key is scoped to a session and a TTL window until a safe result is persisted (T-2, T-3)",
            earlier.storage, earlier.session, d.storage, d.session
        );
    }
    if earlier.path == "content" {
        return "5. content-only match: the earlier call was itself served by content (C-3.2)"
            .into();
    }
    if d.path == "do-not-cache" && d.rule == "S-4" {
        return "6. forced no-cache retry after an error (S-4)".into();
    }
    if earlier.path == "do-not-cache" {
        return "the earlier call ran without the cache (do-not-cache, C-2): nothing was stored"
            .into();
    }
    "none of the six: the earlier result was no longer held (its refs were released when its sessions closed, S-1, C-13)".into()
}

/// A hit that should not have happened, if this one is.
fn suspicious_hit(plan: &Plan, d: &Decision) -> Option<String> {
    let a = d.answer.as_ref()?;
    if ttl_bypassed(plan, d) && matches!(d.path.as_str(), "storage" | "ongoing") {
        return Some(format!(
            "4. storage key: a TTL'd call was served under the bare call key {} (T-2: a session-scoped key when the store fails, never the bare one)",
            d.storage
        ));
    }
    let returned_other = a.returned != "-" && a.returned != d.call;
    if d.path == "content" && (returned_other || !d.overridden) {
        return Some(format!(
            "5. content-only match: a content hit must report the requested ID {} (C-8), it returned {}",
            d.call, a.returned
        ));
    }
    if d.rule == "S-4" && d.path != "do-not-cache" {
        return Some(format!(
            "6. no forced no-cache retry after an error: S-4 runs the call again without the cache, this one took path {} and got `{}`",
            d.path, a.outcome
        ));
    }
    if matches!(d.path.as_str(), "storage" | "ongoing") && a.outcome.starts_with("err resolver") {
        return Some(
            "6. an error was replayed from the cache: a failed call must run again (S-4, C-9)"
                .into(),
        );
    }
    None
}

/// The explanation of every call of key `key` in `rec` (the run of `plan`).
pub fn explain(plan: &Plan, rec: &RunRecord, key: u64) -> Result<String, String> {
    if key as usize >= plan.keys.len() {
        return Err(format!(
            "bad --key {key}: the plan has keys 0..{}",
            plan.keys.len()
        ));
    }
    let props = &plan.keys[key as usize];
    let mut out = String::new();
    let _ = writeln!(out, "key k{key}: requested ID {}", requested_id(plan, key));
    let _ = writeln!(
        out,
        "  ttl {} ms{}",
        props.ttl_ms,
        props.result_key.map_or(String::new(), |r| format!(
            ", resolvers return k{r}'s ID (C-6)"
        ))
    );
    // The cached calls of key K: arbitrary entries (`aK`) and change-cache
    // inits (`path/K`) share the key index but not the key space.
    let (arbitrary, change) = (format!("a{key}"), format!("path/{key}"));
    let mine: Vec<usize> = (0..rec.decisions.len())
        .filter(|&i| {
            let d = &rec.decisions[i];
            d.key == Some(key) && d.call != arbitrary && d.call != change
        })
        .collect();
    if mine.is_empty() {
        let _ = writeln!(out, "  no call of k{key} in this run");
        return Ok(out);
    }
    if let Some(d) = mine.first().map(|&i| &rec.decisions[i]) {
        let _ = writeln!(out, "  call key {}", d.call);
    }
    let mut explained = 0;
    for (n, &i) in mine.iter().enumerate() {
        let d = &rec.decisions[i];
        let answer = rec.answer_of(d);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "#{} {:>6}ms {} session {}",
            n + 1,
            d.ms,
            d.who(),
            d.session
        );
        let _ = writeln!(out, "   O-2     {}", d.line());
        let _ = writeln!(
            out,
            "   storage {} = {}",
            d.storage,
            storage_rule(plan, rec, i, d)
        );
        let _ = writeln!(out, "   path    {} (rule {})", d.path, d.rule);
        match &answer {
            Some((ms, what)) => {
                let entry = what.split_once(" entry ").map_or("-", |(_, e)| e.trim());
                let _ = writeln!(out, "   entry   {entry}");
                let _ = writeln!(out, "   answer  {ms}ms: {what}");
            }
            None if d.run.is_some() => {
                let _ = writeln!(out, "   answer  to the resolver run (a nested call, C-11)");
            }
            None => {
                let _ = writeln!(
                    out,
                    "   answer  none recorded (the run ended first, or the connection or session was lost)"
                );
            }
        }
        let _ = writeln!(out, "   returns {}", returned_id(plan, d));
        if let Some(why) = suspicious_hit(plan, d) {
            explained += 1;
            let _ = writeln!(out, "   HIT WHERE IT SHOULD NOT: {why}");
            continue;
        }
        // A planned do-not-cache call (C-2) is no surprise; a miss is, and
        // so is a forced no-cache retry (S-4).
        if !(d.path == "miss" || (d.path == "do-not-cache" && d.rule == "S-4")) {
            continue;
        }
        // The last earlier call of the same recipe (or sharing its content
        // or returned ID) whose answer came before this decision.
        let related = |e: &Decision| {
            e.call == d.call
                || (e.content == d.content && d.content != "-")
                || e.key.and_then(|k| plan.keys.get(k as usize)?.result_key) == Some(key)
        };
        let done =
            |e: &&Decision| e.path != "recursive" && completed_before(rec, e, d.ms).is_some();
        // The same recipe first; a relative by content or returned ID
        // only when no call of the same recipe completed.
        let before = &rec.decisions[..i];
        let earlier = before
            .iter()
            .rev()
            .filter(done)
            .find(|e| e.call == d.call)
            .or_else(|| before.iter().rev().filter(done).find(|e| related(e)));
        if earlier.is_none() {
            // A run of the same recipe still in flight: not joined.
            let alongside = before.iter().rev().find(|e| {
                e.call == d.call
                    && e.storage == d.storage
                    && e.path == "miss"
                    && e.answer.as_ref().is_none_or(|a| a.ms >= d.ms)
            });
            if let Some(e) = alongside {
                explained += 1;
                let _ = writeln!(
                    out,
                    "   MISSED while {} (session {}, since {}ms) ran the same recipe under the same storage key",
                    e.who(),
                    e.session,
                    e.ms
                );
                let _ = writeln!(
                    out,
                    "   why:    not joined: only calls with a concurrency key join one in flight (C-3.3); the later of the two completions meets the other's entry (C-7)"
                );
            }
        }
        if let Some(e) = earlier {
            explained += 1;
            let at = completed_before(rec, e, d.ms).unwrap_or_default();
            let _ = writeln!(
                out,
                "   MISSED although {} (k{}, session {}) completed at {at}ms",
                e.who(),
                e.key.unwrap_or_default(),
                e.session
            );
            let _ = writeln!(out, "   why:    {}", checklist(plan, e, d));
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} call(s) of k{key}; {explained} explained against an earlier call",
        mine.len()
    );
    if let Some((inv, ms, detail)) = &rec.violation {
        let _ = writeln!(out, "run violated {inv} at {ms} ms: {detail}");
    }
    Ok(out)
}

/// `cache-sim explain` in a loader world (`loader`, `loader-faults`,
/// `loader-net`): every decision that touched key `key` (reads, writes,
/// flights answered, database changes), each with the rule its path
/// follows and, for a read, the last write of the key before it — where a
/// stale or surprising answer starts to make sense.
pub fn explain_loader(rec: &RunRecord, key: u64, key_space: usize) -> Result<String, String> {
    if key as usize >= key_space {
        return Err(format!(
            "bad --key {key}: the scenario has keys 0..{key_space}"
        ));
    }
    let mine: Vec<&crate::decisions::LoaderDecision> = rec
        .loader
        .iter()
        .filter(|d| d.keys.contains(&key))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "key k{key}: {} decisions touched it (of {} in the run)",
        mine.len(),
        rec.loader.len()
    );
    if mine.is_empty() {
        let _ = writeln!(out, "  no call touched k{key} in this run");
    }
    let writes = ["set", "delete", "change_source"];
    for (i, d) in mine.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>7}ms {:<4} {:<13} path={:<17} -> {}",
            d.ms,
            d.who(),
            d.op,
            d.path,
            d.outcome
        );
        let _ = writeln!(out, "      rule: {}", d.rule());
        if writes.contains(&d.op.as_str()) || d.op == "loaded" {
            continue;
        }
        match mine[..i]
            .iter()
            .rev()
            .find(|e| writes.contains(&e.op.as_str()))
        {
            Some(w) => {
                let _ = writeln!(
                    out,
                    "      last write before it: {} {} at {}ms -> {}{}",
                    w.who(),
                    w.op,
                    w.ms,
                    w.outcome,
                    if w.node.is_some() && w.node != d.node {
                        " (another node: this node's copy is dropped when that write's event arrives, L-11)"
                    } else {
                        ""
                    }
                );
            }
            None => {
                let _ = writeln!(out, "      no write of k{key} before it");
            }
        }
    }
    match &rec.violation {
        Some((inv, ms, detail)) => {
            let _ = writeln!(out, "run violated {inv} at {ms} ms: {detail}");
        }
        None => {
            let _ = writeln!(out, "run passed");
        }
    }
    Ok(out)
}
