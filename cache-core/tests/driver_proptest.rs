//! Model-based properties through the shared driver (`cache_core::driver`):
//! proptest generates operation sequences, the driver applies them and checks
//! every invariant after every step, and a failure shrinks to a minimal
//! sequence. Failing seeds persist in `cache-core/proptest-regressions/`
//! and are replayed first on every run.
//!
//! `PROPTEST_CASES=N cargo test -p cache-core --test driver_proptest`
//! raises the case count (the defaults keep this file well under a minute).
//!
//! The deterministic long runs at the end replace the old LCG-driven
//! `machine_random` test: long sequences drawn from the same strategies with
//! fixed seeds, with an assertion that every path the driver checks was
//! exercised.

use cache_core::driver::{
    self, FacadeInput, IdRecipe, IdStep, KeyPick, LitPick, MachineInput, Op, Outcome, ScopePick,
    SessionOp, StoreDelay, Ttl, TtlInput, TtlOp, Who, EXPLICIT_STORAGE_KEY, INVALID_KEY,
};
use proptest::option;
use proptest::prelude::*;
use proptest::strategy::{NewTree, ValueTree};
use proptest::test_runner::{FileFailurePersistence, TestRunner};

/// Operation sequences that shrink to a minimal sequence: proptest's own
/// `vec` deletes elements in one pass and then only shrinks them, so a
/// failing sequence keeps operations that became removable once its other
/// elements were simplified. This tree alternates the two until neither
/// makes progress (a small delta-debugging loop).
#[derive(Debug)]
struct Seq<S> {
    element: S,
    max: usize,
}

fn seq<S: Strategy>(element: S, max: usize) -> Seq<S> {
    Seq { element, max }
}

impl<S: Strategy> Strategy for Seq<S> {
    type Tree = SeqTree<S::Tree>;
    type Value = Vec<S::Value>;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let len = (0..=self.max).new_tree(runner)?.current();
        let elements = (0..len)
            .map(|_| self.element.new_tree(runner))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SeqTree {
            included: vec![true; elements.len()],
            elements,
            phase: Phase::Delete(0),
            last: None,
            progress: false,
            cycles: 0,
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Delete(usize),
    Shrink(usize),
}

struct SeqTree<T> {
    elements: Vec<T>,
    included: Vec<bool>,
    phase: Phase,
    /// The change last proposed, undone by `complicate`.
    last: Option<Phase>,
    /// A change was accepted during this delete-then-shrink cycle.
    progress: bool,
    cycles: usize,
}

impl<T: ValueTree> ValueTree for SeqTree<T> {
    type Value = Vec<T::Value>;

    fn current(&self) -> Self::Value {
        self.elements
            .iter()
            .zip(&self.included)
            .filter(|(_, inc)| **inc)
            .map(|(e, _)| e.current())
            .collect()
    }

    fn simplify(&mut self) -> bool {
        // Called again without `complicate`: the last change was kept.
        if self.last.take().is_some() {
            self.progress = true;
        }
        loop {
            match self.phase {
                Phase::Delete(ix) if ix >= self.elements.len() => self.phase = Phase::Shrink(0),
                Phase::Delete(ix) => {
                    self.phase = Phase::Delete(ix + 1);
                    if self.included[ix] {
                        self.included[ix] = false;
                        self.last = Some(Phase::Delete(ix));
                        return true;
                    }
                }
                Phase::Shrink(ix) if ix >= self.elements.len() => {
                    if !self.progress || self.cycles >= 64 {
                        return false;
                    }
                    self.progress = false;
                    self.cycles += 1;
                    self.phase = Phase::Delete(0);
                }
                Phase::Shrink(ix) => {
                    if self.included[ix] && self.elements[ix].simplify() {
                        self.last = Some(Phase::Shrink(ix));
                        return true;
                    }
                    self.phase = Phase::Shrink(ix + 1);
                }
            }
        }
    }

    fn complicate(&mut self) -> bool {
        match self.last.take() {
            None => false,
            Some(Phase::Delete(ix)) => {
                self.included[ix] = true;
                true
            }
            Some(Phase::Shrink(ix)) if self.elements[ix].complicate() => {
                self.last = Some(Phase::Shrink(ix));
                true
            }
            Some(Phase::Shrink(_)) => false,
        }
    }
}

/// Cases per property: `PROPTEST_CASES` if set, else `default`.
fn config(default: u32, file: &'static str) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..ProptestConfig::default()
    }
}

/// Small indices shrink better than full bytes; the driver takes them modulo.
fn idx() -> impl Strategy<Value = u8> {
    0u8..6
}

/// A call's concurrency key pick (modulo 3); one call in eight also asks
/// for repeated telemetry (S-5, `driver::repeats_telemetry`).
fn conc() -> impl Strategy<Value = u8> {
    prop_oneof![7 => idx(), 1 => idx().prop_map(|c| 21 + c % 3)]
}

/// A call's ID pick: now and then the invalid key (C-1), refused at once,
/// or (on the machine) a storage key named as the call key's text.
fn call_id() -> impl Strategy<Value = u8> {
    prop_oneof![
        14 => idx(),
        1 => Just(INVALID_KEY),
        2 => idx().prop_map(|i| i | EXPLICIT_STORAGE_KEY),
    ]
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        2 => Just(Who::Anon),
        5 => idx().prop_map(Who::Session),
        1 => idx().prop_map(Who::Closed),
        3 => idx().prop_map(Who::Inner),
        1 => idx().prop_map(Who::Foreign),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        // One value in eight (7) has a release hook that fails (C-12).
        8 => (0u16..8).prop_map(Outcome::Value),
        2 => Just(Outcome::NoValue),
        2 => Just(Outcome::Error),
        1 => Just(Outcome::Panic),
        1 => Just(Outcome::Cancelled),
    ]
}

fn ttl() -> impl Strategy<Value = Ttl> {
    prop_oneof![6 => Just(Ttl::None), 1 => Just(Ttl::Short), 1 => Just(Ttl::Long)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (who(), call_id(), conc(), prop::bool::weighted(0.1), ttl())
            .prop_map(|(who, id, conc, dnc, ttl)| Op::Call { who, id, conc, dnc, ttl }),
        2 => (who(), idx()).prop_map(|(who, key)| Op::Arbitrary { who, key }),
        6 => (idx(), outcome(), option::weighted(0.2, idx()), any::<bool>(), prop::bool::weighted(0.05))
            .prop_map(|(which, outcome, returned_id, safe, stale_nested)| Op::Complete {
                which, outcome, returned_id, safe, stale_nested,
            }),
        2 => (idx(), idx()).prop_map(|(which, waiter)| Op::Leave { which, waiter }),
        1 => idx().prop_map(|which| Op::LeaveUnknown { which }),
        4 => idx().prop_map(|which| Op::Release { which }),
        1 => Just(Op::ReleaseStale),
        1 => idx().prop_map(|which| Op::ReleaseInner { which }),
        2 => Just(Op::Open),
        1 => idx().prop_map(|which| Op::Close { which }),
        1 => prop_oneof![Just(1u16), Just(99), Just(500), Just(1500)].prop_map(|ms| Op::Advance { ms }),
        1 => (0u8..4, prop::bool::weighted(0.3))
            .prop_map(|(fail_next, fail_all)| Op::StoreFaults { fail_next, fail_all }),
        1 => Just(Op::Gc),
    ]
}

/// Swarm weighting for TTL keys (T-2, T-3): most calls TTL'd, from
/// sessions, with a concurrency key, so that rows outlive the results they
/// were written for and sessions meet on a live row's shared key while its
/// result is being computed again, which the even weighting of `op` seldom
/// arranges. 512 cases (the property): at 128 a run met the T-3 leak that
/// `ttl_sharing.rs` keeps as a rule test only now and then.
fn ttl_heavy_op() -> impl Strategy<Value = Op> {
    let ttl = prop_oneof![1 => Just(Ttl::None), 2 => Just(Ttl::Short), 5 => Just(Ttl::Long)];
    prop_oneof![
        10 => (idx(), 0u8..3, prop_oneof![1 => Just(0u8), 4 => Just(1u8)], ttl)
            .prop_map(|(s, id, conc, ttl)| Op::Call { who: Who::Session(s), id, conc, dnc: false, ttl }),
        4 => (idx(), any::<u16>(), prop::bool::weighted(0.7))
            .prop_map(|(which, v, safe)| Op::Complete {
                which, outcome: Outcome::Value(v), returned_id: None, safe, stale_nested: false,
            }),
        4 => op(),
        3 => idx().prop_map(|which| Op::Release { which }),
        2 => Just(Op::Open),
        1 => idx().prop_map(|which| Op::Close { which }),
    ]
}

fn machine_input() -> impl Strategy<Value = MachineInput> {
    (any::<bool>(), seq(op(), 150))
        .prop_map(|(change_cache, ops)| MachineInput { change_cache, ops })
}

fn session_op() -> impl Strategy<Value = SessionOp> {
    let delay = prop_oneof![
        4 => Just(StoreDelay::None),
        1 => Just(StoreDelay::Slow),
        1 => Just(StoreDelay::Timeout)
    ];
    prop_oneof![
        2 => Just(SessionOp::Open),
        1 => idx().prop_map(|session| SessionOp::Close { session }),
        1 => idx().prop_map(|session| SessionOp::Drop { session }),
        8 => (option::weighted(0.8, idx()), call_id(), conc(), prop::bool::weighted(0.1), ttl(), any::<bool>())
            .prop_map(|(session, id, conc, dnc, ttl, obey_cancel)| SessionOp::Call {
                session, id, conc, dnc, ttl, obey_cancel,
            }),
        2 => (option::weighted(0.8, idx()), idx(), any::<bool>())
            .prop_map(|(session, key, obey_cancel)| SessionOp::Arbitrary { session, key, obey_cancel }),
        3 => (idx(), idx(), idx(), prop::bool::weighted(0.1), any::<bool>())
            .prop_map(|(parent, id, conc, dnc, obey_cancel)| SessionOp::Nested {
                parent, id, conc, dnc, obey_cancel,
            }),
        6 => (idx(), outcome(), option::weighted(0.2, idx()), any::<bool>())
            .prop_map(|(which, outcome, returned_id, safe)| SessionOp::Resolve {
                which, outcome, returned_id, safe,
            }),
        2 => (idx(), any::<bool>()).prop_map(|(which, abort)| SessionOp::Cancel { which, abort }),
        3 => (idx(), any::<bool>()).prop_map(|(which, drop)| SessionOp::Release { which, drop }),
        1 => prop_oneof![Just(1u16), Just(99), Just(500), Just(1500)].prop_map(|ms| SessionOp::Advance { ms }),
        1 => (0u8..4, prop::bool::weighted(0.3), delay)
            .prop_map(|(fail_next, fail_all, delay)| SessionOp::StoreFaults { fail_next, fail_all, delay }),
        1 => Just(SessionOp::Gc),
    ]
}

fn facade_input() -> impl Strategy<Value = FacadeInput> {
    (any::<bool>(), seq(session_op(), 80))
        .prop_map(|(change_cache, ops)| FacadeInput { change_cache, ops })
}

/// The facade's swarm weighting for TTL keys, as `ttl_heavy_op` is the
/// machine's: TTL'd calls from sessions with a concurrency key, resolved
/// with values that are mostly safe to persist, so that sessions meet on a
/// live row's shared key (T-2, T-3) through the async API, its waiters and
/// its store lookups.
fn ttl_heavy_session_op() -> impl Strategy<Value = SessionOp> {
    let ttl = prop_oneof![1 => Just(Ttl::None), 2 => Just(Ttl::Short), 5 => Just(Ttl::Long)];
    prop_oneof![
        10 => (option::weighted(0.8, idx()), 0u8..2, 0u8..2, ttl, any::<bool>())
            .prop_map(|(session, id, conc, ttl, obey_cancel)| SessionOp::Call {
                session, id, conc, dnc: false, ttl, obey_cancel,
            }),
        4 => (idx(), any::<u16>(), prop::bool::weighted(0.7))
            .prop_map(|(which, v, safe)| SessionOp::Resolve {
                which, outcome: Outcome::Value(v % 8), returned_id: None, safe,
            }),
        4 => session_op(),
        3 => (idx(), any::<bool>()).prop_map(|(which, drop)| SessionOp::Release { which, drop }),
        2 => Just(SessionOp::Open),
        1 => idx().prop_map(|session| SessionOp::Close { session }),
    ]
}

fn key_pick() -> impl Strategy<Value = KeyPick> {
    prop_oneof![4 => idx().prop_map(KeyPick::Small), 1 => ".{0,6}".prop_map(KeyPick::Raw)]
}

fn ttl_op() -> impl Strategy<Value = TtlOp> {
    prop_oneof![
        2 => key_pick().prop_map(|key| TtlOp::Select { key }),
        5 => (key_pick(), key_pick(), -20i16..20, option::of(key_pick()))
            .prop_map(|(key, storage, expiration, compare)| TtlOp::Upsert { key, storage, expiration, compare }),
        1 => (key_pick(), any::<i64>()).prop_map(|(key, expiration)| TtlOp::UpsertFar { key, expiration }),
        2 => (-20i16..20, 0u8..4).prop_map(|(now, batch)| TtlOp::Gc { now, batch }),
    ]
}

fn lit() -> impl Strategy<Value = LitPick> {
    prop_oneof![
        Just(LitPick::Null),
        any::<bool>().prop_map(LitPick::Bool),
        any::<i64>().prop_map(LitPick::Int),
        ".{0,4}".prop_map(LitPick::Str),
        prop::collection::vec(any::<i64>(), 0..3).prop_map(LitPick::Ints),
        prop::collection::vec(prop::collection::vec(".{0,2}", 0..2), 0..2)
            .prop_map(LitPick::Nested),
        idx().prop_map(LitPick::Previous),
    ]
}

fn id_step() -> impl Strategy<Value = IdStep> {
    let s = || ".{0,4}";
    prop_oneof![
        1 => s().prop_map(IdStep::New),
        1 => s().prop_map(IdStep::Select),
        3 => (s(), lit(), prop::bool::weighted(0.2))
            .prop_map(|(name, value, sensitive)| IdStep::Arg { name, value, sensitive }),
        1 => s().prop_map(IdStep::Module),
        1 => s().prop_map(IdStep::View),
        1 => any::<u64>().prop_map(IdStep::Nth),
        1 => prop::collection::vec(any::<u8>(), 0..4).prop_map(IdStep::Custom),
        1 => prop::collection::vec(any::<u8>(), 0..4).prop_map(IdStep::Content),
        1 => prop_oneof![
            s().prop_map(ScopePick::Client),
            s().prop_map(ScopePick::Session),
            any::<u64>().prop_map(ScopePick::Call),
            s().prop_map(ScopePick::Schema),
            (s(), s()).prop_map(|(c, x)| ScopePick::ClientSchema(c, x)),
        ]
        .prop_map(IdStep::Scope),
    ]
}

proptest! {
    #![proptest_config(config(256, "proptest-regressions/driver_machine.txt"))]
    #[test]
    fn machine_keeps_every_invariant(input in machine_input()) {
        if let Err(f) = driver::run_machine(&input) {
            return Err(TestCaseError::fail(f.to_string()));
        }
    }
}

proptest! {
    #![proptest_config(config(512, "proptest-regressions/driver_machine_ttl.txt"))]
    #[test]
    fn machine_ttl_heavy_inputs_keep_every_invariant(ops in seq(ttl_heavy_op(), 150)) {
        let input = MachineInput { change_cache: false, ops };
        if let Err(f) = driver::run_machine(&input) {
            return Err(TestCaseError::fail(f.to_string()));
        }
    }
}

proptest! {
    #![proptest_config(config(64, "proptest-regressions/driver_facade.txt"))]
    #[test]
    fn facade_keeps_every_invariant(input in facade_input()) {
        if let Err(f) = driver::run_facade(&input) {
            return Err(TestCaseError::fail(f.to_string()));
        }
    }
}

proptest! {
    #![proptest_config(config(128, "proptest-regressions/driver_facade_ttl.txt"))]
    #[test]
    fn facade_ttl_heavy_inputs_keep_every_invariant(ops in seq(ttl_heavy_session_op(), 80)) {
        let input = FacadeInput { change_cache: false, ops };
        if let Err(f) = driver::run_facade(&input) {
            return Err(TestCaseError::fail(f.to_string()));
        }
    }
}

proptest! {
    #![proptest_config(config(128, "proptest-regressions/driver_ttl.txt"))]
    #[test]
    fn ttl_stores_agree(ops in seq(ttl_op(), 40)) {
        if let Err(f) = driver::run_ttl_stores(&TtlInput { ops }) {
            return Err(TestCaseError::fail(f.to_string()));
        }
    }
}

proptest! {
    #![proptest_config(config(256, "proptest-regressions/driver_id.txt"))]
    #[test]
    fn ids_round_trip(steps in seq(id_step(), 12), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Err(f) = driver::run_id_recipe(&IdRecipe { steps }) {
            return Err(TestCaseError::fail(f.to_string()));
        }
        if let Err(f) = driver::run_id_decode(&bytes) {
            return Err(TestCaseError::fail(f.to_string()));
        }
    }
}

/// One long input drawn from `strategy` with a fixed seed: deterministic,
/// and weighted like the properties' inputs.
fn sample<T: std::fmt::Debug>(strategy: impl Strategy<Value = T>, seed: u8) -> T {
    use proptest::test_runner::{RngAlgorithm, TestRng};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut runner = TestRunner::new_with_rng(ProptestConfig::default(), rng);
    strategy
        .new_tree(&mut runner)
        .expect("a value tree")
        .current()
}

#[track_caller]
fn assert_covered(stats: &driver::Stats, names: &[&str]) {
    for (name, n) in stats.named() {
        if names.contains(&name) {
            assert!(n > 0, "the long runs never exercised {name}: {stats:?}");
        }
    }
}

#[test]
fn long_machine_runs_cover_every_path() {
    let mut total = driver::Stats::default();
    for seed in 1..=12u8 {
        let input = MachineInput {
            change_cache: seed % 2 == 1,
            ops: sample(prop::collection::vec(op(), 2_000), seed),
        };
        let stats = driver::run_machine(&input).unwrap_or_else(|f| panic!("seed {seed}: {f}"));
        total.add(&stats);
    }
    assert_covered(
        &total,
        &[
            "hits",
            "content_hits",
            "joins",
            "runs",
            "recursive",
            "blocked",
            "duplicates",
            "closed_during",
            "rejected_nested",
            "cancels",
            "abandoned_settled",
            "errors",
            "nested",
            "stale_releases",
            "forced_retries",
            "spans",
            "detached",
            "repeat_telemetry",
            "ttl_calls",
            "ttl_degraded",
            "ttl_writes",
            "session_closed",
            "closes",
            "invalid_keys",
            "closed_invalid_keys",
            "failed_hooks",
            "late_completions",
            "explicit_storage_keys",
            "foreign_calls",
            "acting_sessions",
        ],
    );
}

#[test]
fn long_facade_runs_cover_every_path() {
    let mut total = driver::Stats::default();
    for seed in 1..=6u8 {
        // Two of the six end with the runtime shut down (4k + 3 operations).
        let len = if seed > 4 { 399 } else { 400 };
        let input = FacadeInput {
            change_cache: seed % 2 == 1,
            ops: sample(prop::collection::vec(session_op(), len), seed),
        };
        let stats = driver::run_facade(&input).unwrap_or_else(|f| panic!("seed {seed}: {f}"));
        total.add(&stats);
    }
    assert_covered(
        &total,
        &[
            "hits",
            "runs",
            "recursive",
            "closed_during",
            "cancels",
            "abandoned_settled",
            "errors",
            "nested",
            "forced_retries",
            "spans",
            "detached",
            "repeat_telemetry",
            "ttl_calls",
            "gc_deletions",
            "session_closed",
            "closes",
            "invalid_keys",
            "closed_invalid_keys",
            "failed_hooks",
            "crossed_cancels",
            "slow_lookups",
            "shutdowns",
        ],
    );
}

/// A session that holds 16,384 refs or more when it closes: the cache
/// removes a batch that large another way (a sweep over its indexes), and
/// no random input of the properties above gets there. Its calls hit the
/// driver's few IDs again and again, two of them on results another
/// session still holds, with random operations after them.
#[test]
fn machine_large_session_closes_keep_every_invariant() {
    let bulk = prop_oneof![
        19 => (idx(), idx()).prop_map(|(id, conc)| Op::Call {
            who: Who::Session(0),
            id,
            conc,
            dnc: false,
            ttl: Ttl::None,
        }),
        1 => (idx(), any::<u16>()).prop_map(|(which, v)| Op::Complete {
            which,
            outcome: Outcome::Value(v),
            returned_id: None,
            safe: true,
            stale_nested: false,
        }),
    ];
    let mut total = driver::Stats::default();
    for seed in 1..=2u8 {
        // A second session first holds two results the first then hits:
        // the close must leave them, and their listings, alone.
        let mut ops = vec![Op::Open, Op::Open];
        for id in [0, 1] {
            ops.push(Op::Call {
                who: Who::Session(1),
                id,
                conc: 0,
                dnc: false,
                ttl: Ttl::None,
            });
            ops.push(Op::Complete {
                which: 0,
                outcome: Outcome::Value(u16::from(id)),
                returned_id: None,
                safe: true,
                stale_nested: false,
            });
        }
        ops.extend(sample(prop::collection::vec(bulk.clone(), 18_000), seed));
        total.add(&close_first_session_and_run(ops, seed));
    }
    assert_covered(&total, &["large_closes", "hits", "closes"]);
}

/// A session that holds between 1,024 and 16,383 refs, each on an entry of
/// its own, when it closes: the cache queues that many index removals and
/// orders them with a radix sort, a path the small random inputs above
/// never reach (their few IDs give a session few entries). Distinct entries
/// come from TTL'd calls (T-2): each TTL window gives a session a fresh
/// storage key per call key, so the workload calls every ID once per window
/// and moves the clock a window on. Two plain calls with content digests
/// come last, so the batch removes content listings too (a TTL'd result is
/// listed only under its storage key, C-6); random operations follow the
/// close.
#[test]
fn machine_batched_session_closes_keep_every_invariant() {
    const WINDOWS: usize = 240;
    let ids = driver::call_ids().len() as u8;
    let complete = |v| Op::Complete {
        which: 0,
        outcome: Outcome::Value(v),
        returned_id: None,
        safe: true,
        stale_nested: false,
    };
    let call = |id, ttl| Op::Call {
        who: Who::Session(0),
        id,
        conc: 0,
        dnc: false,
        ttl,
    };
    let window = || {
        (0..ids, any::<u16>()).prop_map(move |(first, v)| {
            let mut ops = Vec::new();
            for i in 0..ids {
                ops.push(call((first + i) % ids, Ttl::Short));
                ops.push(complete(v));
            }
            // Past the row's expiry (still live at exactly it, T-4).
            ops.push(Op::Advance {
                ms: Ttl::Short.ms() as u16 + 1,
            });
            ops
        })
    };
    let mut total = driver::Stats::default();
    for seed in 1..=2u8 {
        let mut ops = vec![Op::Open];
        let windows = sample(prop::collection::vec(window(), WINDOWS), seed);
        ops.extend(windows.into_iter().flatten());
        // `a` and `d`, each with a content digest.
        for id in [0, 3] {
            ops.extend([call(id, Ttl::None), complete(u16::from(seed))]);
        }
        total.add(&close_first_session_and_run(ops, seed));
    }
    assert_covered(&total, &["batched_closes", "hits", "closes", "ttl_writes"]);
}

/// Closes the first open session after `ops`, adds 200 random operations
/// drawn with `seed`, and runs it all on the machine driver.
fn close_first_session_and_run(mut ops: Vec<Op>, seed: u8) -> driver::Stats {
    ops.push(Op::Close { which: 0 });
    ops.extend(sample(prop::collection::vec(op(), 200), seed));
    let input = MachineInput {
        change_cache: false,
        ops,
    };
    driver::run_machine(&input).unwrap_or_else(|f| panic!("seed {seed}: {f}"))
}

#[test]
fn runs_are_deterministic() {
    // Same input, same path counts: neither engine has a hidden source of order.
    let m = sample(machine_input(), 99);
    assert_eq!(driver::run_machine(&m), driver::run_machine(&m));
    let f = sample(facade_input(), 99);
    assert_eq!(driver::run_facade(&f), driver::run_facade(&f));
}

/// The failures of `runs` machine runs of `steps` steps with `bugs` on
/// (seeds 1, 2, …; odd seeds on a change cache).
fn machine_failures(bugs: cache_core::bugs::Bugs, runs: u8, steps: usize) -> Vec<driver::Failure> {
    (1..=runs)
        .filter_map(|seed| {
            let input = MachineInput {
                change_cache: seed % 2 == 1,
                ops: sample(prop::collection::vec(op(), steps), seed),
            };
            driver::run_machine_with(&input, bugs).err()
        })
        .collect()
}

/// [`machine_failures`] for the facade driver.
fn facade_failures(bugs: cache_core::bugs::Bugs, runs: u8, steps: usize) -> Vec<driver::Failure> {
    (1..=runs)
        .filter_map(|seed| {
            let input = FacadeInput {
                change_cache: seed % 2 == 1,
                ops: sample(prop::collection::vec(session_op(), steps), seed),
            };
            driver::run_facade_with(&input, bugs).err()
        })
        .collect()
}

/// The drivers' S-5 check fires on a real fault of the cache, not only on
/// its own unit tests: with `forced-retry-silent` on (a forced retry's run
/// emits no span), the long machine runs fail with S-5, and the facade's
/// too; with it off they pass (`long_*_runs_cover_every_path`).
#[test]
fn s5_forced_retry_silent_is_caught_by_both_drivers() {
    use cache_core::bugs::{Bug, Bugs};
    let bugs = Bugs::none().with(Bug::ForcedRetrySilent);
    let machine = machine_failures(bugs, 12, 2_000);
    assert_eq!(machine.first().map(|f| f.invariant), Some("S-5"));
    let facade = facade_failures(bugs, 6, 400);
    assert_eq!(facade.first().map(|f| f.invariant), Some("S-5"));
}

/// INV-6 through both drivers: with `errors-cached-in-session` on (a
/// session replays its call's last error instead of running it again), the
/// long runs fail with INV-6, not with a rule the fault does not touch. The
/// machine driver sees a call's begin answer with a resolver's error
/// although no resolver ran for it; the facade driver sees a failed run's
/// error reach a call issued after another caller already had it.
#[test]
fn inv6_errors_cached_in_session_is_caught_by_both_drivers() {
    use cache_core::bugs::{Bug, Bugs};
    let bugs = Bugs::none().with(Bug::ErrorsCachedInSession);
    let caught = |failures: Vec<driver::Failure>, driver: &str, says: &str| {
        let found = failures
            .first()
            .unwrap_or_else(|| panic!("12 {driver} runs catch errors-cached-in-session"));
        assert_eq!(found.invariant, "INV-6", "{driver}: {}", found.detail);
        assert!(found.detail.contains(says), "{driver}: {}", found.detail);
    };
    caught(
        machine_failures(bugs, 12, 2_000),
        "machine",
        "an error served without a run",
    );
    caught(
        facade_failures(bugs, 12, 1_000),
        "facade",
        "an error served from the cache",
    );
}

/// A facade call of ID `id` with no concurrency key, cached, ignoring
/// cancellation.
fn plain_call(session: Option<u8>, id: u8, ttl: Ttl) -> SessionOp {
    SessionOp::Call {
        session,
        id,
        conc: 0,
        dnc: false,
        ttl,
        obey_cancel: false,
    }
}

/// INV-6 for a panic's error too: a session's call whose resolver panics
/// (the driver's first failed run, whose panic carries its typed error),
/// then the same call again in that session. With
/// `errors-cached-in-session` on, the second call gets the first one's
/// error without a run, and the facade driver fails INV-6; with the switch
/// off the same input passes (the second call runs again, S-4).
#[test]
fn inv6_a_panics_error_served_again_is_caught_by_the_facade_driver() {
    use cache_core::bugs::{Bug, Bugs};
    driver::quiet_expected_panics();
    let call = plain_call(Some(0), 1, Ttl::None);
    let input = FacadeInput {
        change_cache: false,
        ops: vec![
            SessionOp::Open,
            call.clone(),
            SessionOp::Resolve {
                which: 0,
                outcome: Outcome::Panic,
                returned_id: None,
                safe: true,
            },
            call,
        ],
    };
    if let Err(f) = driver::run_facade_with(&input, Bugs::none()) {
        panic!("{f}");
    }
    let found = driver::run_facade_with(&input, Bugs::none().with(Bug::ErrorsCachedInSession))
        .expect_err("the replayed panic is caught");
    assert_eq!(found.invariant, "INV-6", "{}", found.detail);
    assert_eq!(found.step, 3, "{}", found.detail);
}

/// The shared serve check (T-7 inside one session) fires on a real fault of
/// the cache: with `ttl-key-outlives-window` on (a session's fresh TTL key is
/// the same in every window), the facade driver's long runs fail with T-7.
/// The fault is in the facade, which the machine driver does not run.
#[test]
fn t7_ttl_key_outlives_window_is_caught_by_the_facade_driver() {
    use cache_core::bugs::{Bug, Bugs};
    // A repeat in one session after its TTL, with the first result still
    // held, is rare in these runs: about one in twenty finds it.
    let facade = facade_failures(Bugs::none().with(Bug::TtlKeyOutlivesWindow), 24, 1_000);
    let found = facade
        .first()
        .expect("24 runs of 1,000 steps catch ttl-key-outlives-window");
    assert_eq!(found.invariant, "T-7", "{}", found.detail);
    assert!(found.detail.contains("its own session"), "{}", found.detail);
}

/// The TTL write checks (T-3 at write time) fire on a real fault of the
/// cache: with `ttl-write-ignores-safety` on (a prepared write goes ahead
/// for a result not safe to persist), the machine driver's runs fail with
/// T-3, and so do the facade driver's, from the rows its store recorded:
/// both of its judgements fire (no safe result of the key at all; the
/// stored entry itself unsafe).
#[test]
fn t3_ttl_write_ignores_safety_is_caught_by_both_drivers() {
    use cache_core::bugs::{Bug, Bugs};
    let bugs = Bugs::none().with(Bug::TtlWriteIgnoresSafety);
    let machine = machine_failures(bugs, 12, 2_000);
    let machine = machine
        .first()
        .expect("12 machine runs catch ttl-write-ignores-safety");
    assert_eq!(machine.invariant, "T-3", "{}", machine.detail);
    let facade = facade_failures(bugs, 24, 1_000);
    assert!(
        !facade.is_empty(),
        "24 facade runs catch ttl-write-ignores-safety"
    );
    for f in &facade {
        assert_eq!(f.invariant, "T-3", "{}", f.detail);
    }
    let said = |what: &str| facade.iter().any(|f| f.detail.contains(what));
    assert!(said("but no result of it was safe"), "{facade:?}");
    assert!(said("whose result was not safe"), "{facade:?}");
}

/// T-2, T-7: a row written by a call with a long TTL stays live past the
/// TTL of a later call of the same key with a short one, and the later
/// result, stored under the row's key, is served through the row until
/// the row expires. The facade driver once bounded every result by its
/// own call's TTL and reported this as T-7 (the TTL-heavy property found
/// it); the cache is right: what expires is the mapping.
#[test]
fn facade_a_result_under_a_longer_lived_row_is_served_until_the_row_expires() {
    let call = |ttl| plain_call(None, 1, ttl);
    let resolve = SessionOp::Resolve {
        which: 0,
        outcome: Outcome::Value(0),
        returned_id: None,
        safe: true,
    };
    let ops = vec![
        call(Ttl::Long),
        resolve.clone(),
        SessionOp::Release {
            which: 0,
            drop: false,
        },
        call(Ttl::Short),
        resolve,
        SessionOp::Advance { ms: 500 },
        call(Ttl::Short),
    ];
    let input = FacadeInput {
        change_cache: false,
        ops,
    };
    if let Err(f) = driver::run_facade(&input) {
        panic!("{f}");
    }
}

/// An input of 4k + 3 operations ends with its runtime shut down while two
/// resolvers run and their callers wait (no concurrency key: two runs),
/// the cache outliving them: the dropped resolvers' calls settle and
/// nothing is left (INV-1, INV-11).
/// With the planted fault (a resolver dropped unfinished leaves its call in
/// flight) the checks after the shutdown fire.
#[cfg(feature = "harness-hooks")]
#[test]
fn a_runtime_shut_down_mid_call_leaves_nothing_behind() {
    let call = plain_call(None, 0, Ttl::None);
    let input = FacadeInput {
        change_cache: false,
        ops: vec![call.clone(), call, SessionOp::Open],
    };
    assert!(driver::shuts_down(&input));
    let stats = driver::run_facade(&input).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!((stats.shutdowns, stats.runs), (1, 2), "{stats:?}");
    let f = driver::run_facade_planted(&input, cache_core::bugs::Bugs::none(), |c| {
        c.plant_stranded_resolvers()
    })
    .unwrap_err();
    assert!(matches!(f.invariant, "INV-1" | "INV-11"), "{f}");
    assert_eq!(f.step, input.ops.len(), "{f}");
}
