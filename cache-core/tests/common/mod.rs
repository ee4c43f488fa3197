//! Shared helpers for the state-machine rule tests.
//!
//! Every test ends with [`finish`]: everything released, every index empty,
//! every invariant holding, a clean leak report (INV-1).

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cache_core::id::{CallId, Digest, Literal};
use cache_core::machine::{
    run_releases, Begin, Buckets, CallCache, Caller, Completion, Decision, EntryId, Handle,
    PendingRelease, Resolved, RunOrder, Served, SessionId, WaiterId,
};
use cache_core::ttl::{PreparedWrite, TtlRow};
use cache_core::CallError;

/// The cache under test: values are plain numbers.
pub type Cache = CallCache<u32>;

/// Counts the runs of one payload's release hook, so a test can assert it ran
/// exactly once: never twice (INV-10), never zero (INV-1).
#[derive(Clone, Default, Debug)]
pub struct HookCounter(Arc<AtomicUsize>);

impl HookCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A hook that counts its runs.
    pub fn hook(&self) -> impl FnOnce() -> Result<(), String> + Send + 'static {
        let runs = self.0.clone();
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    pub fn runs(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    #[track_caller]
    pub fn assert_once(&self, what: &str) {
        assert_eq!(
            self.runs(),
            1,
            "release hook of {what} must run exactly once"
        );
    }

    #[track_caller]
    pub fn assert_not_run(&self, what: &str) {
        assert_eq!(
            self.runs(),
            0,
            "release hook of {what} ran while still held"
        );
    }
}

/// A value whose release hook bumps `counter`.
pub fn value(v: u32, counter: &HookCounter) -> Resolved<u32> {
    Resolved::value(v).with_release(counter.hook())
}

/// A plain ID.
pub fn id(field: &str) -> CallId {
    CallId::new(field)
}

/// An ID with one integer argument.
pub fn id_n(field: &str, n: i64) -> CallId {
    CallId::new(field).with_arg("n", Literal::Int(n))
}

/// `id` with a content digest over `content`.
pub fn with_content(id: CallId, content: &str) -> CallId {
    id.with_content_digest(Digest::of(content.as_bytes()))
}

/// A caller with no session and no chain.
pub fn anon() -> Caller {
    Caller::default()
}

/// A top-level caller in session `s`.
pub fn in_session(s: SessionId) -> Caller {
    Caller {
        session: Some(s),
        ..Caller::default()
    }
}

/// A caller running inside the resolver started by `order` on cache
/// `instance`. Resolver contexts have no session (design note).
pub fn inside(instance: u64, order: &RunOrder) -> Caller {
    Caller {
        session: None,
        chain: order.chain.clone(),
        inside: Some((instance, order.entry)),
    }
}

#[track_caller]
pub fn expect_run(b: Begin<u32>) -> RunOrder {
    match b.outcome {
        Ok(Decision::Run(order)) => order,
        other => panic!("expected Run, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_hit(b: Begin<u32>) -> Served<u32> {
    match b.outcome {
        Ok(Decision::Hit(served)) => served,
        other => panic!("expected Hit, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_wait(b: Begin<u32>) -> (EntryId, WaiterId) {
    match b.outcome {
        Ok(Decision::Wait { entry, waiter }) => (entry, waiter),
        other => panic!("expected Wait, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_blocked(b: Begin<u32>) -> EntryId {
    match b.outcome {
        Ok(Decision::Blocked { entry }) => entry,
        other => panic!("expected Blocked, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_err(b: Begin<u32>) -> CallError {
    match b.outcome {
        Err(e) => e,
        Ok(d) => panic!("expected an error, got {d:?}"),
    }
}

/// What a completion did, its release hooks already run.
pub struct Done {
    pub served: Vec<(WaiterId, Result<Served<u32>, CallError>)>,
    pub persist: Option<PreparedWrite>,
    pub settled: EntryId,
}

impl Done {
    /// The waiters served, in order.
    pub fn waiters(&self) -> Vec<WaiterId> {
        self.served.iter().map(|(w, _)| *w).collect()
    }

    /// The successful outcome of waiter `w`.
    #[track_caller]
    pub fn ok(&mut self, w: WaiterId) -> Served<u32> {
        let pos = self
            .served
            .iter()
            .position(|(x, _)| *x == w)
            .unwrap_or_else(|| panic!("waiter {w} was not served"));
        match self.served.remove(pos).1 {
            Ok(s) => s,
            Err(e) => panic!("waiter {w} got error {e}"),
        }
    }

    /// The error outcome of waiter `w`.
    #[track_caller]
    pub fn err(&mut self, w: WaiterId) -> CallError {
        let pos = self
            .served
            .iter()
            .position(|(x, _)| *x == w)
            .unwrap_or_else(|| panic!("waiter {w} was not served"));
        match self.served.remove(pos).1 {
            Ok(s) => panic!("waiter {w} was served {s:?}, expected an error"),
            Err(e) => e,
        }
    }
}

/// A TTL write prepared for `call_key` (T-3), to see whether it is handed back.
pub fn write_for(call_key: &str) -> PreparedWrite {
    PreparedWrite {
        call_key: call_key.to_string(),
        row: TtlRow {
            storage_key: format!("ttl:{call_key}"),
            expiration: 1_000,
        },
        compare: None,
    }
}

/// Runs release hooks the machine handed out, failing on a hook error.
#[track_caller]
pub fn run_hooks(releases: Vec<PendingRelease>) {
    run_releases(releases).expect("release hooks succeed");
}

/// Completes `entry` and runs the release hooks it returns.
#[track_caller]
pub fn complete(
    cache: &mut Cache,
    entry: EntryId,
    outcome: Result<Resolved<u32>, CallError>,
) -> Done {
    let Completion {
        served,
        releases,
        persist,
        settled,
    } = cache.complete(entry, outcome).expect("entry is in flight");
    run_hooks(releases);
    cache.check_invariants().expect("invariants after complete");
    Done {
        served,
        persist,
        settled,
    }
}

/// Releases a handle and runs the hooks it frees.
#[track_caller]
pub fn release(cache: &mut Cache, handle: Handle) {
    let releases = cache.release(handle).expect("live handle");
    run_hooks(releases);
    cache.check_invariants().expect("invariants after release");
}

/// Closes a session and runs the hooks it frees; returns how many refs it released.
#[track_caller]
pub fn close(cache: &mut Cache, s: SessionId) -> usize {
    let closed = cache.close_session(s).expect("open session");
    let released = closed.released;
    run_hooks(closed.releases);
    cache.check_invariants().expect("invariants after close");
    released
}

/// Settles a batch of decisions: every started call completes with a value,
/// then every handle (from hits and completions) is released.
#[track_caller]
pub fn settle(cache: &mut Cache, begins: Vec<Begin<u32>>) {
    let mut handles = Vec::new();
    let mut runs = Vec::new();
    for b in begins {
        match b.outcome {
            Ok(Decision::Hit(served)) => handles.push(served.handle),
            Ok(Decision::Run(order)) => runs.push(order),
            Ok(Decision::Wait { .. }) | Ok(Decision::Blocked { .. }) | Err(_) => {}
        }
    }
    for order in runs {
        let done = complete(cache, order.entry, Ok(Resolved::value(0)));
        for (_, served) in done.served {
            if let Ok(served) = served {
                handles.push(served.handle);
            }
        }
    }
    for h in handles {
        release(cache, h);
    }
}

/// INV-1: nothing survives. Every test ends here.
#[track_caller]
pub fn finish(cache: &Cache) {
    let report = cache.leak_report();
    assert_eq!(cache.entries(), 0, "entries() at quiescence\n{report}");
    assert_eq!(
        cache.live_entries(),
        0,
        "live entries at quiescence\n{report}"
    );
    assert_eq!(cache.live_refs(), 0, "live refs at quiescence\n{report}");
    assert_eq!(cache.buckets(), Buckets::default(), "buckets\n{report}");
    cache.check_invariants().expect("invariants at quiescence");
    assert!(report.is_clean(), "leak report is not clean:\n{report}");
}
