//! One operation-sequence driver for proptest, cargo-fuzz and regression
//! replay (DESIGN principle 3: one driver, three engines).
//!
//! Each engine hands the driver a sequence of operations; the driver applies
//! them to the cache, keeps a shadow model of who holds which ref, which
//! resolver runs and what every response must be (DESIGN principle 4), checks
//! every applicable invariant after each step (on the state machine: on what
//! the step touched, and on the whole cache every few steps and after the
//! last), settles everything at the end and checks INV-1. A violation is never a panic: it comes back as a
//! [`Failure`] naming the invariant and the step, so proptest can shrink on it
//! and a fuzz target can `panic!` with it.
//!
//! Operations are index-based (`Complete { which }` picks the `which`-th
//! running resolver, modulo how many there are), so every sequence of
//! operations — and so every byte string decoded through [`arbitrary`] — is
//! a valid input.
//!
//! | engine | input | runs |
//! | --- | --- | --- |
//! | the pure state machine | [`MachineInput`] | [`run_machine`] |
//! | the async facade and sessions | [`FacadeInput`] | [`run_facade`] |
//! | TTL stores, in-memory vs SQLite | [`TtlInput`] | [`run_ttl_stores`] |
//! | call-ID encoding | raw bytes and an [`IdRecipe`] | [`run_id`] |
//! | the loader's machine, remote and bus (SPEC §7) | [`LoaderInput`] | [`run_loader_machine`] |
//!
//! [`replay`] decodes raw fuzz inputs exactly as `libfuzzer-sys` does, so the
//! committed corpus and crash artifacts run on stable `cargo test`.
//!
//! ```
//! use cache_core::driver::{run_machine, MachineInput, Op, Outcome, Ttl, Who};
//!
//! let input = MachineInput {
//!     change_cache: false,
//!     ops: vec![
//!         Op::Open,
//!         Op::Call { who: Who::Session(0), id: 0, conc: 1, dnc: false, ttl: Ttl::None },
//!         Op::Call { who: Who::Session(0), id: 0, conc: 1, dnc: false, ttl: Ttl::None },
//!         Op::Complete { which: 0, outcome: Outcome::Value(7), returned_id: None, safe: false, stale_nested: false },
//!         Op::Close { which: 0 },
//!     ],
//! };
//! let stats = run_machine(&input).expect("every invariant holds");
//! assert_eq!((stats.runs, stats.joins), (1, 1));
//! ```

use std::fmt;

mod facade;
mod id;
mod loader;
mod machine;
mod ops;
pub mod replay;
mod shadow;
mod ttl;

/// The `arbitrary` crate the inputs derive from, for decoding bytes by hand.
pub use arbitrary;
pub use facade::{run_facade, run_facade_planted, run_facade_with, shuts_down};

/// The bug-zoo switches a fuzz target runs with: the comma-separated names
/// in `CACHE_CORE_BUGS` (none when unset), read once per process —
///
/// ```sh
/// CACHE_CORE_BUGS=key-only-delete cargo fuzz run core_ops
/// ```
///
/// shows whether, and how fast, the fuzzer finds a known failure mode. An
/// unknown name ends the process with exit code 2 and the known names.
pub fn bugs_from_env() -> crate::bugs::Bugs {
    static BUGS: std::sync::OnceLock<crate::bugs::Bugs> = std::sync::OnceLock::new();
    *BUGS.get_or_init(|| {
        let names = std::env::var("CACHE_CORE_BUGS").unwrap_or_default();
        names.parse().unwrap_or_else(|e| {
            eprintln!("CACHE_CORE_BUGS: {e}");
            std::process::exit(2)
        })
    })
}
pub use id::{run_id, run_id_decode, run_id_recipe, IdRecipe, IdStep, LitPick, ScopePick};
pub use loader::{
    driver_keys, run_loader_codec, run_loader_machine, run_loader_machine_with, CodecProbe,
    FlightInfo, HarnessConfig, LoadResult, LoaderHarness, LoaderInput, LoaderOp, LoaderStats,
    RemoteFault, MAX_KEYS, MAX_NODES,
};
pub use machine::{run_machine, run_machine_with};
pub use ops::*;
pub use shadow::quiet_expected_panics;
pub use ttl::{run_ttl_stores, KeyPick, TtlInput, TtlOp};

/// A broken invariant, found at one step of an operation sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The rule or invariant id (`INV-2`, `C-7`, `T-3`, …).
    pub invariant: &'static str,
    /// The index of the operation after which it was found; the number of
    /// operations for the final INV-1 check.
    pub step: usize,
    /// What exactly is wrong, with the cache's leak report where useful.
    pub detail: String,
}

/// The environment variable naming the file [`Failure::crash`] writes the
/// broken invariant's id to.
pub const FAILURE_OUT: &str = "CACHE_CORE_FAILURE_OUT";

impl Failure {
    /// A failure found after `step`, naming the operation being applied
    /// (`None`: the final quiesce) and carrying the cache's leak report.
    pub(crate) fn at(
        invariant: &'static str,
        step: usize,
        detail: String,
        op: Option<&dyn fmt::Debug>,
        report: &crate::machine::LeakReport,
    ) -> Self {
        let op = op.map_or_else(|| "quiesce".to_string(), |o| format!("{o:?}"));
        Failure {
            invariant,
            step,
            detail: format!("{detail}\n  op: {op}\n{report}"),
        }
    }

    /// Ends a fuzz target's input on this failure: writes the invariant's id
    /// and a newline to the file [`FAILURE_OUT`] names, if set, then panics
    /// with the whole failure. libFuzzer turns the panic into an abort, so a
    /// script that times how fast a target finds a bug-zoo switch
    /// (`ci/fuzz-report`) learns which rule broke from that file, never from
    /// the panic's text.
    pub fn crash(self) -> ! {
        let out = std::env::var_os(FAILURE_OUT).map(std::path::PathBuf::from);
        self.crash_to(out.as_deref())
    }

    fn crash_to(self, out: Option<&std::path::Path>) -> ! {
        if let Some(path) = out {
            if let Err(e) = std::fs::write(path, format!("{}\n", self.invariant)) {
                eprintln!("{FAILURE_OUT}: cannot write {}: {e}", path.display());
            }
        }
        panic!("{self}")
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} violated at step {}: {}",
            self.invariant, self.step, self.detail
        )
    }
}

impl std::error::Error for Failure {}

/// Which paths a run took, so a test can prove it exercised them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Operations applied.
    pub steps: usize,
    /// Storage or content hits.
    pub hits: usize,
    /// Content hits (C-8).
    pub content_hits: usize,
    /// Joins of an in-flight call (C-3.3).
    pub joins: usize,
    /// Resolver runs started.
    pub runs: usize,
    /// Resolvers finished while the cache listed open sessions they may act
    /// for (C-5, `sessions_waiting_on`).
    pub acting_sessions: usize,
    /// Resolvers of TTL'd calls whose lookup waited for a slow store (T-2).
    pub slow_lookups: usize,
    /// Recursive-call refusals (C-4, C-4b).
    pub recursive: usize,
    /// K-5 blocked inits.
    pub blocked: usize,
    /// C-7 duplicates discarded.
    pub duplicates: usize,
    /// S-3 late completions.
    pub closed_during: usize,
    /// Results refused for an unknown nested handle.
    pub rejected_nested: usize,
    /// Last waiters leaving (resolver cancelled).
    pub cancels: usize,
    /// C-5a abandoned resolvers settled.
    pub abandoned_settled: usize,
    /// Resolver errors and panics.
    pub errors: usize,
    /// Nested refs handed to a result (C-11).
    pub nested: usize,
    /// Stale handles refused (C-12).
    pub stale_releases: usize,
    /// S-4 forced retries run.
    pub forced_retries: usize,
    /// S-5 telemetry spans judged.
    pub spans: usize,
    /// Do-not-cache runs (C-2).
    pub detached: usize,
    /// Calls that asked for repeated telemetry (S-5).
    pub repeat_telemetry: usize,
    /// TTL calls (T-2).
    pub ttl_calls: usize,
    /// TTL calls that degraded because the store failed (T-2).
    pub ttl_degraded: usize,
    /// TTL rows written (T-3, T-4).
    pub ttl_writes: usize,
    /// GCs that deleted expired TTL rows (T-5).
    pub gc_deletions: usize,
    /// Calls refused on a closed session (S-2).
    pub session_closed: usize,
    /// Sessions closed (S-1).
    pub closes: usize,
    /// Calls with an invalid key (C-1).
    pub invalid_keys: usize,
    /// Of those, calls on a closed session: C-1's refusal must still come
    /// first, not S-2's.
    pub closed_invalid_keys: usize,
    /// Release hooks that failed when they ran (C-12).
    pub failed_hooks: usize,
    /// Completions of an entry already settled, refused (C-6).
    pub late_completions: usize,
    /// Cancels issued in the instant a resolution lands (C-5).
    pub crossed_cancels: usize,
    /// Calls that named their storage key as their call key's text (C-3.1).
    pub explicit_storage_keys: usize,
    /// Calls made from another instance's resolver (C-4, C-4b per instance).
    pub foreign_calls: usize,
    /// Session closes that released [`LARGE_CLOSE_REFS`] refs or more (S-1).
    pub large_closes: usize,
    /// Session closes that released at least [`BATCHED_CLOSE_REFS`] refs
    /// and fewer than [`LARGE_CLOSE_REFS`] (S-1).
    pub batched_closes: usize,
    /// Runs that ended with the runtime shut down while calls were in
    /// flight, the cache outliving it (C-5, INV-1, INV-11).
    pub shutdowns: usize,
}

/// A close of this many refs or more is a large one: the cache removes a
/// batch that size by another method (a sweep over its indexes rather than
/// a queue), which only a close this large reaches.
pub const LARGE_CLOSE_REFS: usize = 16_384;

/// A close of this many refs or more (and fewer than [`LARGE_CLOSE_REFS`])
/// on as many entries queues its index removals and orders them by bucket
/// with a radix sort before applying them; a smaller batch is ordered by a
/// comparison sort. Only a close this large reaches the radix sort.
pub const BATCHED_CLOSE_REFS: usize = 1024;

impl Stats {
    /// Adds another run's counts to these.
    pub fn add(&mut self, o: &Stats) {
        let fields = [
            (&mut self.steps, o.steps),
            (&mut self.hits, o.hits),
            (&mut self.content_hits, o.content_hits),
            (&mut self.joins, o.joins),
            (&mut self.runs, o.runs),
            (&mut self.acting_sessions, o.acting_sessions),
            (&mut self.slow_lookups, o.slow_lookups),
            (&mut self.recursive, o.recursive),
            (&mut self.blocked, o.blocked),
            (&mut self.duplicates, o.duplicates),
            (&mut self.closed_during, o.closed_during),
            (&mut self.rejected_nested, o.rejected_nested),
            (&mut self.cancels, o.cancels),
            (&mut self.abandoned_settled, o.abandoned_settled),
            (&mut self.errors, o.errors),
            (&mut self.nested, o.nested),
            (&mut self.stale_releases, o.stale_releases),
            (&mut self.forced_retries, o.forced_retries),
            (&mut self.spans, o.spans),
            (&mut self.detached, o.detached),
            (&mut self.repeat_telemetry, o.repeat_telemetry),
            (&mut self.ttl_calls, o.ttl_calls),
            (&mut self.ttl_degraded, o.ttl_degraded),
            (&mut self.ttl_writes, o.ttl_writes),
            (&mut self.gc_deletions, o.gc_deletions),
            (&mut self.session_closed, o.session_closed),
            (&mut self.closes, o.closes),
            (&mut self.invalid_keys, o.invalid_keys),
            (&mut self.closed_invalid_keys, o.closed_invalid_keys),
            (&mut self.failed_hooks, o.failed_hooks),
            (&mut self.late_completions, o.late_completions),
            (&mut self.crossed_cancels, o.crossed_cancels),
            (&mut self.explicit_storage_keys, o.explicit_storage_keys),
            (&mut self.foreign_calls, o.foreign_calls),
            (&mut self.large_closes, o.large_closes),
            (&mut self.batched_closes, o.batched_closes),
            (&mut self.shutdowns, o.shutdowns),
        ];
        for (mine, theirs) in fields {
            *mine += theirs;
        }
    }

    /// The counters by name, for reports and coverage assertions.
    pub fn named(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("steps", self.steps),
            ("hits", self.hits),
            ("content_hits", self.content_hits),
            ("joins", self.joins),
            ("runs", self.runs),
            ("acting_sessions", self.acting_sessions),
            ("slow_lookups", self.slow_lookups),
            ("recursive", self.recursive),
            ("blocked", self.blocked),
            ("duplicates", self.duplicates),
            ("closed_during", self.closed_during),
            ("rejected_nested", self.rejected_nested),
            ("cancels", self.cancels),
            ("abandoned_settled", self.abandoned_settled),
            ("errors", self.errors),
            ("nested", self.nested),
            ("stale_releases", self.stale_releases),
            ("forced_retries", self.forced_retries),
            ("spans", self.spans),
            ("detached", self.detached),
            ("repeat_telemetry", self.repeat_telemetry),
            ("ttl_calls", self.ttl_calls),
            ("ttl_degraded", self.ttl_degraded),
            ("ttl_writes", self.ttl_writes),
            ("gc_deletions", self.gc_deletions),
            ("session_closed", self.session_closed),
            ("closes", self.closes),
            ("invalid_keys", self.invalid_keys),
            ("closed_invalid_keys", self.closed_invalid_keys),
            ("failed_hooks", self.failed_hooks),
            ("late_completions", self.late_completions),
            ("crossed_cancels", self.crossed_cancels),
            ("explicit_storage_keys", self.explicit_storage_keys),
            ("foreign_calls", self.foreign_calls),
            ("large_closes", self.large_closes),
            ("batched_closes", self.batched_closes),
            ("shutdowns", self.shutdowns),
        ]
    }
}

/// `Err(Failure)` unless `cond` holds. `$self` must have a `fail` method.
macro_rules! ensure {
    ($self:ident, $cond:expr, $rule:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($self.fail($rule, format!($($fmt)+)));
        }
    };
}
pub(crate) use ensure;

#[cfg(test)]
mod tests {
    use super::Failure;

    fn failure() -> Failure {
        Failure {
            invariant: "INV-3",
            step: 7,
            detail: "a release removed another call's entry".into(),
        }
    }

    /// A fuzz target's crash names its rule in the file, as the id alone,
    /// and still panics with the whole failure for libFuzzer's log.
    #[test]
    fn a_crash_writes_the_invariant_id_then_panics_with_the_failure() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let out = dir.path().join("failure");
        let panic =
            std::panic::catch_unwind(|| failure().crash_to(Some(&out))).expect_err("crash panics");
        let message = panic
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert_eq!(message, &failure().to_string());
        assert_eq!(
            std::fs::read_to_string(&out).expect("the file is written"),
            "INV-3\n"
        );
    }

    /// A file that cannot be written does not hide the failure: the panic
    /// still carries it.
    #[test]
    fn an_unwritable_failure_file_still_panics_with_the_failure() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let out = dir.path().join("missing-dir").join("failure");
        let panic =
            std::panic::catch_unwind(|| failure().crash_to(Some(&out))).expect_err("crash panics");
        let message = panic
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(message.starts_with("INV-3 violated at step 7"), "{message}");
        assert!(!out.exists());
    }
}
