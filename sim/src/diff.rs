//! `cache-sim diff A B`: the first cache decision (O-2) where two runs
//! diverge, with the common decisions before it and both identity flows
//! side by side. A and B are files written by `cache-sim replay
//! --trace-out`; typically the same seed with and without a bug-zoo switch,
//! or before and after a change.
//!
//! Four streams are compared, each up to the end of the shorter run (a run
//! stops at its first violation): the lookups with their answers; the
//! releases (a result's hook running when the cache lets go of it: its last
//! ref went, or a duplicate completion was discarded, C-7); the indexes
//! after each completion and session close; and the TTL rows written (T-3,
//! T-4), where a fault that changes only what is persisted shows first.
//! The earliest divergence in simulated time is the one reported.
//!
//! The loader worlds' records hold loader decisions instead (a node's read
//! or write with its path and answer, a flight answered): the first one
//! that differs, up to the end of the shorter run, is the divergence.

use std::fmt::Write as _;

use crate::decisions::{Decision, IndexSnapshot, LoaderDecision, Release, RunRecord, TtlWrite};

/// Where two runs first diverge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The index of the differing decision (for a release divergence: the
    /// first decision after it).
    pub index: usize,
    /// Decisions both runs made, in the same order, before the divergence.
    pub common: usize,
    /// A release differs (not a lookup): A's and B's at that place.
    pub release: Option<(Option<Release>, Option<Release>)>,
    /// The indexes after a session close differ: A's and B's snapshots.
    pub close: Option<(Option<IndexSnapshot>, Option<IndexSnapshot>)>,
    /// The TTL rows written differ: A's and B's at that place.
    pub ttl_write: Option<(Option<TtlWrite>, Option<TtlWrite>)>,
    /// Simulated ms at which they diverge: the decision's time, or its
    /// answer's when only the answer differs.
    pub ms: u64,
    /// A's decision there (none: A made fewer decisions).
    pub a: Option<Decision>,
    /// B's decision there.
    pub b: Option<Decision>,
    /// In a loader world: A's and B's loader decisions there (one may be
    /// missing: that run made fewer).
    pub loader: Option<(Option<LoaderDecision>, Option<LoaderDecision>)>,
}

/// Simulated ms of a run's last trace line: a run stops at its first
/// violation, so what the other run did later is not a divergence.
fn end_ms(r: &RunRecord) -> u64 {
    if let Some(ms) = r.end_ms {
        return ms;
    }
    r.trace
        .last()
        .and_then(|l| crate::decisions::split_line(l))
        .map_or(0, |(ms, _, _)| ms)
}

/// A decision as compared: its answer only if it came before `horizon`.
fn view(d: Option<&Decision>, horizon: u64) -> Option<Decision> {
    let d = d.filter(|d| d.ms <= horizon)?;
    let mut d = d.clone();
    if d.answer.as_ref().is_some_and(|a| a.ms > horizon) {
        d.answer = None;
    }
    Some(d)
}

/// The first place where `xs` and `ys`, cut at `horizon` ms, differ: the
/// two items there (one may be missing) and the earlier of their times.
fn first_difference<T: Clone + PartialEq>(
    xs: &[T],
    ys: &[T],
    horizon: u64,
    ms: impl Fn(&T) -> u64,
) -> Option<(Option<T>, Option<T>, u64)> {
    let cut = |v: &[T]| -> Vec<T> { v.iter().filter(|x| ms(x) <= horizon).cloned().collect() };
    let (xs, ys) = (cut(xs), cut(ys));
    let i = (0..xs.len().max(ys.len())).find(|&i| xs.get(i) != ys.get(i))?;
    let (x, y) = (xs.get(i).cloned(), ys.get(i).cloned());
    let at = [&x, &y]
        .iter()
        .filter_map(|v| v.as_ref().map(&ms))
        .min()
        .unwrap_or(0);
    Some((x, y, at))
}

/// The earliest (in simulated time) decision where `a` and `b` differ,
/// up to the end of the shorter run; `None` if they made the same
/// decisions with the same answers.
pub fn first_divergence(a: &RunRecord, b: &RunRecord) -> Option<Divergence> {
    let horizon = end_ms(a).min(end_ms(b));
    if !a.loader.is_empty() || !b.loader.is_empty() {
        return first_loader_divergence(a, b, horizon);
    }
    let n = a.decisions.len().max(b.decisions.len());
    let mut best: Option<Divergence> = None;
    for i in 0..n {
        let (x, y) = (
            view(a.decisions.get(i), horizon),
            view(b.decisions.get(i), horizon),
        );
        if x == y {
            continue;
        }
        let mut answers_only = x.clone().zip(y.clone());
        let ms = match answers_only.as_mut() {
            Some((p, q)) => {
                let (pa, qa) = (p.answer.take(), q.answer.take());
                if p == q {
                    // Same decision, different answers: diverged when the
                    // first of them came.
                    [pa, qa]
                        .iter()
                        .flatten()
                        .map(|a| a.ms)
                        .min()
                        .unwrap_or(p.ms)
                } else {
                    p.ms.min(q.ms)
                }
            }
            None => x.as_ref().or(y.as_ref()).map_or(0, |d| d.ms),
        };
        if best.as_ref().is_none_or(|b| ms < b.ms) {
            best = Some(Divergence {
                index: i,
                common: i,
                release: None,
                close: None,
                ttl_write: None,
                ms,
                a: a.decisions.get(i).cloned(),
                b: b.decisions.get(i).cloned(),
                loader: None,
            });
        }
    }
    // A release, or the indexes after a completion or a close, that
    // differ before the first differing decision.
    let releases = first_difference(&a.releases, &b.releases, horizon, |r| r.ms)
        .map(|(x, y, ms)| (ms, Some((x, y)), None));
    let snapshots = first_difference(&a.snapshots, &b.snapshots, horizon, |c| c.ms)
        .map(|(x, y, ms)| (ms, None, Some((x, y)), None));
    let writes = first_difference(&a.ttl_writes, &b.ttl_writes, horizon, |w| w.ms)
        .map(|(x, y, ms)| (ms, None, None, Some((x, y))));
    let releases = releases.map(|(ms, release, close)| (ms, release, close, None));
    for (ms, release, close, ttl_write) in [releases, snapshots, writes].into_iter().flatten() {
        if best.as_ref().is_none_or(|b| ms < b.ms) {
            let common = common_before(a, b, ms);
            best = Some(Divergence {
                index: common,
                common,
                ms,
                release,
                close,
                ttl_write,
                a: None,
                b: None,
                loader: None,
            });
        }
    }
    best
}

/// The first loader decision where `a` and `b` differ, both cut at
/// `horizon` ms.
fn first_loader_divergence(a: &RunRecord, b: &RunRecord, horizon: u64) -> Option<Divergence> {
    let cut = |r: &RunRecord| -> Vec<LoaderDecision> {
        r.loader
            .iter()
            .filter(|d| d.ms <= horizon)
            .cloned()
            .collect()
    };
    let (xs, ys) = (cut(a), cut(b));
    let i = (0..xs.len().max(ys.len())).find(|&i| xs.get(i) != ys.get(i))?;
    let (x, y) = (xs.get(i).cloned(), ys.get(i).cloned());
    let ms = [&x, &y]
        .iter()
        .filter_map(|d| d.as_ref().map(|d| d.ms))
        .min()
        .unwrap_or(0);
    Some(Divergence {
        index: i,
        common: i,
        release: None,
        close: None,
        ttl_write: None,
        ms,
        a: None,
        b: None,
        loader: Some((x, y)),
    })
}

/// A loader decision's fields, side by side in the report.
fn loader_flow(d: Option<&LoaderDecision>) -> Vec<(&'static str, String)> {
    let Some(d) = d else {
        return vec![("decision", "(none: the run made no more decisions)".into())];
    };
    let keys: Vec<String> = d.keys.iter().map(|k| format!("k{k}")).collect();
    vec![
        ("decided", format!("{}ms", d.ms)),
        ("who", d.who()),
        ("op", d.op.clone()),
        ("keys", keys.join(" ")),
        ("path", d.path.clone()),
        ("outcome", d.outcome.clone()),
    ]
}

/// How many leading decisions both runs made alike up to `ms`.
fn common_before(a: &RunRecord, b: &RunRecord, ms: u64) -> usize {
    a.decisions
        .iter()
        .zip(&b.decisions)
        .take_while(|(p, q)| p.ms <= ms && view(Some(p), ms) == view(Some(q), ms))
        .count()
}

/// The last decision for `key` at or before `ms`.
fn last_of(rec: &RunRecord, key: u64, ms: u64) -> Option<&Decision> {
    last_where(rec, ms, |d| d.key == Some(key))
}

/// The last decision at or before `ms` that `pick` accepts.
fn last_where(rec: &RunRecord, ms: u64, pick: impl Fn(&Decision) -> bool) -> Option<&Decision> {
    rec.decisions.iter().rev().find(|d| d.ms <= ms && pick(d))
}

fn release_text(r: &Option<Release>) -> String {
    r.as_ref().map_or("(no release)".into(), |r| {
        format!("{}ms run{} k{} o{} released", r.ms, r.run, r.key, r.out)
    })
}

fn write_text(w: &Option<TtlWrite>) -> String {
    w.as_ref().map_or("(no TTL row written)".into(), |w| {
        format!(
            "{}ms k{} -> {} until {}{}",
            w.ms,
            w.key,
            w.storage,
            w.expiration,
            if w.replaced {
                " (replaced an expired row)"
            } else {
                ""
            }
        )
    })
}

fn flow(rec: &RunRecord, d: Option<&Decision>) -> Vec<(&'static str, String)> {
    let Some(d) = d else {
        return vec![("decision", "(none: the run made no more decisions)".into())];
    };
    let answer = rec
        .answer_of(d)
        .map_or_else(|| "-".to_string(), |(ms, w)| format!("{ms}ms {w}"));
    vec![
        ("decided", format!("{}ms", d.ms)),
        ("who", d.who()),
        ("key", d.key.map_or("-".into(), |k| format!("k{k}"))),
        ("session", d.session.clone()),
        ("call", d.call.clone()),
        ("content", d.content.clone()),
        ("storage", d.storage.clone()),
        ("path", d.path.clone()),
        ("rule", d.rule.clone()),
        ("overridden", d.overridden.to_string()),
        (
            "span",
            match d.telemetry {
                Some(true) => "cached".into(),
                Some(false) => "run".into(),
                None => "-".into(),
            },
        ),
        (
            "returned",
            d.answer.as_ref().map_or("-".into(), |a| a.returned.clone()),
        ),
        ("answer", answer),
    ]
}

/// The report `cache-sim diff` prints; `context` common decisions are
/// shown before the divergence.
pub fn report(a_name: &str, a: &RunRecord, b_name: &str, b: &RunRecord, context: usize) -> String {
    let mut out = String::new();
    let Some(div) = first_divergence(a, b) else {
        let _ = writeln!(
            out,
            "no divergence: both runs made the same {} decisions",
            a.decisions.len() + a.loader.len()
        );
        return out;
    };
    if let Some((x, y)) = &div.loader {
        let _ = writeln!(
            out,
            "first divergence: loader decision #{} at {}ms ({} common decisions before it)",
            div.index + 1,
            div.ms,
            div.common
        );
        let from = div.common.saturating_sub(context);
        if from > 0 {
            let _ = writeln!(out, "  … {from} earlier common decisions");
        }
        for d in &a.loader[from..div.common] {
            let _ = writeln!(out, "  = {:>6}ms {:<4} {}", d.ms, d.who(), d.line());
        }
        side_by_side(
            &mut out,
            a_name,
            b_name,
            loader_flow(x.as_ref()),
            loader_flow(y.as_ref()),
        );
        verdicts(&mut out, a_name, a, b_name, b);
        return out;
    }
    match (&div.release, &div.close) {
        _ if div.ttl_write.is_some() => {
            let _ = writeln!(
                out,
                "first divergence: a TTL row written at {}ms, after {} common decisions (what the cache persisted, T-3, T-4)",
                div.ms, div.common
            );
        }
        (None, Some((x, y))) => {
            let after = x
                .as_ref()
                .or(y.as_ref())
                .map_or("-".into(), |c| c.after.clone());
            let _ = writeln!(
                out,
                "first divergence: the cache's indexes at {}ms, after {after} (what the completion or the releases changed), after {} common decisions",
                div.ms, div.common
            );
        }
        (None, None) => {
            let _ = writeln!(
                out,
                "first divergence: decision #{} at {}ms ({} common decisions before it)",
                div.index + 1,
                div.ms,
                div.common
            );
        }
        (Some(_), _) => {
            let _ = writeln!(
                out,
                "first divergence: a release at {}ms, after {} common decisions (a result the cache let go of: last ref, or a duplicate completion discarded, C-7)",
                div.ms, div.common
            );
        }
    }
    let from = div.common.saturating_sub(context);
    if from > 0 {
        let _ = writeln!(out, "  … {from} earlier common decisions");
    }
    for d in &a.decisions[from..div.common] {
        let _ = writeln!(out, "  = {:>6}ms {:<18} {}", d.ms, d.who(), d.line());
    }
    if let Some((x, y)) = &div.close {
        let lines = |c: &Option<IndexSnapshot>| -> Vec<String> {
            c.as_ref().map_or(Vec::new(), |c| {
                c.index.lines().map(str::to_string).collect()
            })
        };
        let (la, lb) = (lines(x), lines(y));
        let _ = writeln!(out, "  index lines only in {a_name}:");
        for l in la.iter().filter(|l| !lb.contains(l)) {
            let _ = writeln!(out, "    - {l}");
        }
        let _ = writeln!(out, "  index lines only in {b_name}:");
        for l in lb.iter().filter(|l| !la.contains(l)) {
            let _ = writeln!(out, "    + {l}");
        }
    }
    let (da, db) = match (&div.release, &div.ttl_write) {
        (None, Some((x, y))) => {
            let w = x.as_ref().or(y.as_ref());
            let key = w.map_or(0, |w| w.key);
            let storage = w.map_or("", |w| w.storage.as_str());
            let _ = writeln!(out, "  {a_name}: {}", write_text(x));
            let _ = writeln!(out, "  {b_name}: {}", write_text(y));
            let _ = writeln!(
                out,
                "  the last lookup of k{key} under storage {storage} before it, in each run:"
            );
            // The lookup that chose the row's storage key, else the key's last.
            let pick = |rec| {
                last_where(rec, div.ms, |d| d.key == Some(key) && d.storage == storage)
                    .or_else(|| last_of(rec, key, div.ms))
                    .cloned()
            };
            (pick(a), pick(b))
        }
        (None, None) if div.close.is_some() => (None, None),
        (None, None) => (div.a.clone(), div.b.clone()),
        (Some((x, y)), _) => {
            let key = x.as_ref().or(y.as_ref()).map_or(0, |r| r.key);
            let _ = writeln!(out, "  {a_name}: {}", release_text(x));
            let _ = writeln!(out, "  {b_name}: {}", release_text(y));
            let _ = writeln!(out, "  the last lookup of k{key} before it, in each run:");
            (
                last_of(a, key, div.ms).cloned(),
                last_of(b, key, div.ms).cloned(),
            )
        }
    };
    let (fa, fb) = if div.close.is_some() {
        (Vec::new(), Vec::new())
    } else {
        (flow(a, da.as_ref()), flow(b, db.as_ref()))
    };
    side_by_side(&mut out, a_name, b_name, fa, fb);
    verdicts(&mut out, a_name, a, b_name, b);
    out
}

/// Two decisions' fields in two columns, `*` where they differ.
fn side_by_side(
    out: &mut String,
    a_name: &str,
    b_name: &str,
    fa: Vec<(&'static str, String)>,
    fb: Vec<(&'static str, String)>,
) {
    let width = fa
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(0)
        .clamp(8, 48);
    let _ = writeln!(out, "  {:<10} | {:<width$} | {}", "", a_name, b_name);
    let rows = fa.len().max(fb.len());
    for i in 0..rows {
        let (name, va) = fa.get(i).cloned().unwrap_or(("", String::new()));
        let vb = fb.get(i).map(|(_, v)| v.clone()).unwrap_or_default();
        let mark = if va != vb { '*' } else { ' ' };
        let _ = writeln!(out, "{mark} {name:<10} | {va:<width$} | {vb}");
    }
}

/// Each run's verdict, one line each.
fn verdicts(out: &mut String, a_name: &str, a: &RunRecord, b_name: &str, b: &RunRecord) {
    for (name, rec) in [(a_name, a), (b_name, b)] {
        match &rec.violation {
            Some((inv, ms, detail)) => {
                let _ = writeln!(out, "{name}: violated {inv} at {ms} ms: {detail}");
            }
            None => {
                let _ = writeln!(out, "{name}: passed");
            }
        }
    }
}
