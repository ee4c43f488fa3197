//! Model-based properties of the read-through loader (SPEC §7.8) through
//! the shared loader driver (`cache_core::driver::run_loader_machine`):
//! proptest generates operation sequences over one or two nodes sharing a
//! remote and a bus, the driver checks LINV-1 … LINV-8 after every step and
//! at the end, and a failure shrinks to a short sequence.
//!
//! `PROPTEST_CASES=N cargo test -p cache-core --test loader_proptest`
//! raises the case count (the default keeps this file to a few seconds).
//!
//! A smaller set of properties runs through the async `Loader` itself on a
//! paused current-thread runtime with a manual clock (`async_*` below).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cache_core::driver::{run_loader_machine, LoadResult, LoaderInput, LoaderOp, LoaderStats};
use cache_core::error::ResolverError;
use cache_core::facade::ManualClock;
use cache_core::loader::{
    CallOptions, Loader, LoaderError, LoaderOptions, MemoryBus, MemoryRemote, NotFound,
    RemoteFaults, Source,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[path = "loader_common/mod.rs"]
mod loader_common;
use loader_common::{input, result, value};

proptest! {
    #![proptest_config(Config { cases: cases(256), ..Config::default() })]

    /// Every loader invariant holds after every step of any sequence.
    #[test]
    fn loader_machine_holds_every_invariant(input in input(60)) {
        if let Err(f) = run_loader_machine(&input) {
            return Err(TestCaseError::fail(format!("{f}")));
        }
    }
}

/// Long sequences from fixed seeds: every path the driver judges is
/// reached, so the properties above are not vacuous.
#[test]
fn long_runs_reach_every_path() {
    let mut runner = TestRunner::deterministic();
    let strategy = input(200);
    let mut total = LoaderStats::default();
    for _ in 0..cases(64).max(16) {
        let input = strategy.new_tree(&mut runner).unwrap().current();
        match run_loader_machine(&input) {
            Ok(stats) => total.add(&stats),
            Err(f) => panic!("{f}\ninput: {input:#?}"),
        }
    }
    for (name, count) in total.named() {
        assert!(count > 0, "no run reached {name}: {total:?}");
    }
}

/// A hand-made sequence per rule, so a reader sees what each check means.
#[test]
fn driver_examples_pass_and_count_what_they_did() {
    let once = |node, key, refresh| LoaderOp::Once {
        node,
        key,
        refresh,
        skip_local: false,
        stubborn: false,
    };
    // Two nodes: a load on n0, a remote hit on n1, a set on n1 whose event
    // drops n0's copy, then n0 reads the new value from the remote.
    let input = LoaderInput {
        two_nodes: true,
        remote: true,
        not_found: true,
        ops: vec![
            once(0, 0, true),
            LoaderOp::Finish {
                which: 0,
                result: LoadResult::Value(1),
            },
            once(1, 0, false),
            LoaderOp::Start { which: 0 },
            LoaderOp::Set {
                node: 1,
                key: 0,
                value: 2,
                ttl: None,
            },
            LoaderOp::Deliver { node: 0, which: 0 },
            LoaderOp::Deliver { node: 0, which: 0 },
            once(0, 0, false),
            LoaderOp::Start { which: 0 },
            once(0, 1, false),
            LoaderOp::Finish {
                which: 0,
                result: LoadResult::NotFound,
            },
            once(0, 1, false),
            LoaderOp::Advance { ms: 100 },
            LoaderOp::Finish {
                which: 0,
                result: LoadResult::Value(3),
            },
        ],
        ..LoaderInput::default()
    };
    let stats = run_loader_machine(&input).unwrap();
    assert_eq!(stats.remote_hits, 2, "{stats:?}");
    assert_eq!(stats.placeholders, 1, "{stats:?}");
    assert_eq!(stats.refreshes, 1, "{stats:?}");
    assert!(stats.events_applied >= 1, "{stats:?}");
}

// ---- through the async Loader ------------------------------------------

/// Async operations: a small set on two loaders sharing one remote and bus.
#[derive(Clone, Debug)]
enum AsyncOp {
    /// `n` callers of `once(key)` at once; the loader gives `result`.
    Burst {
        node: usize,
        key: u8,
        callers: usize,
        result: LoadResult,
        refresh: bool,
    },
    Set {
        node: usize,
        key: u8,
        value: u8,
    },
    Delete {
        node: usize,
        key: u8,
    },
    Get {
        node: usize,
        key: u8,
    },
    Advance {
        ms: u64,
    },
    Back {
        ms: u64,
    },
    Refresh {
        node: usize,
    },
    Remote {
        fail_writes: bool,
        fail_reads: bool,
    },
}

fn async_op() -> impl Strategy<Value = AsyncOp> {
    let node = 0usize..2;
    let key = 0u8..3;
    prop_oneof![
        4 => (node.clone(), key.clone(), 1usize..5, result(), any::<bool>())
            .prop_map(|(node, key, callers, result, refresh)| AsyncOp::Burst { node, key, callers, result, refresh }),
        2 => (node.clone(), key.clone(), value()).prop_map(|(node, key, value)| AsyncOp::Set { node, key, value }),
        1 => (node.clone(), key.clone()).prop_map(|(node, key)| AsyncOp::Delete { node, key }),
        2 => (node.clone(), key.clone()).prop_map(|(node, key)| AsyncOp::Get { node, key }),
        2 => (0u64..400).prop_map(|ms| AsyncOp::Advance { ms }),
        1 => (0u64..200).prop_map(|ms| AsyncOp::Back { ms }),
        1 => node.prop_map(|node| AsyncOp::Refresh { node }),
        1 => (prop::bool::weighted(0.3), prop::bool::weighted(0.3))
            .prop_map(|(fail_writes, fail_reads)| AsyncOp::Remote { fail_writes, fail_reads }),
    ]
}

fn not_found_error() -> ResolverError {
    ResolverError::msg("no such row")
}

/// Runs `ops` through two async loaders; checks LINV-1 (one loader call per
/// burst, and none in flight twice per key), LINV-2 (every value served is
/// one a loader or `set` produced; a loader error is never served twice from
/// a tier), LINV-3 (expiry judged on the highest clock reading: nothing
/// served past it), LINV-6 (counters) and LINV-8 (quiescence after close).
fn run_async(ops: &[AsyncOp]) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let clock = ManualClock::new(50_000);
        let remote = MemoryRemote::new(Arc::new(clock.clone()));
        let bus = MemoryBus::new(3);
        let mut loaders = Vec::new();
        for node in ["n0", "n1"] {
            let mut opts = LoaderOptions::new("c");
            opts.node = node.into();
            opts.ttl_ms = 1_000;
            opts.local_ttl_ms = 300;
            opts.refresh_interval_ms = 100;
            opts.not_found = Some(NotFound::new(not_found_error(), 200));
            let l: Loader<u8> = Loader::builder(opts, Arc::new(clock.clone()))
                .remote(Arc::new(remote.clone()))
                .bus(Arc::new(bus.clone()))
                .build()
                .map_err(|e| e.to_string())?;
            loaders.push(l);
        }
        // Every value produced per key, and per key the loader calls in the air.
        let produced: Arc<Mutex<BTreeMap<u8, BTreeSet<u8>>>> = Arc::default();
        let in_air: Arc<Mutex<BTreeMap<(usize, u8), u64>>> = Arc::default();
        let calls = Arc::new(AtomicU64::new(0));
        // Loader calls started per (node, key), and what the loaders saw go
        // wrong: a panic inside a loader would be caught by the Loader and
        // turned into a loader error (L-16), so violations are recorded.
        let started: Arc<Mutex<BTreeMap<(usize, u8), u64>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut high = 50_000i64;
        for op in ops {
            match *op {
                AsyncOp::Burst { node, key, callers, result, refresh } => {
                    let before = started.lock().unwrap().get(&(node, key)).copied().unwrap_or(0);
                    // A refresh of this key may be in the air from before the
                    // burst: the burst may then join it (L-1), and its answer
                    // is that refresh's.
                    let busy = in_air.lock().unwrap().get(&(node, key)).is_some_and(|n| *n > 0);
                    let mut futs = Vec::new();
                    for _ in 0..callers {
                        let (produced, in_air, calls) = (produced.clone(), in_air.clone(), calls.clone());
                        let (started, seen) = (started.clone(), seen.clone());
                        let call = if refresh { CallOptions::default().refresh() } else { CallOptions::default() };
                        futs.push(loaders[node].once(key.to_string(), call, move |_k| {
                            let (produced, in_air, calls) = (produced.clone(), in_air.clone(), calls.clone());
                            let (started, seen) = (started.clone(), seen.clone());
                            async move {
                                calls.fetch_add(1, Ordering::SeqCst);
                                *started.lock().unwrap().entry((node, key)).or_default() += 1;
                                {
                                    let mut air = in_air.lock().unwrap();
                                    let n = air.entry((node, key)).or_default();
                                    *n += 1;
                                    if *n > 1 {
                                        seen.lock().unwrap().push(format!(
                                            "LINV-1: {n} loader calls at once for key {key} on node {node}"
                                        ));
                                    }
                                }
                                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                                *in_air.lock().unwrap().get_mut(&(node, key)).unwrap() -= 1;
                                match result {
                                    LoadResult::Value(v) => {
                                        produced.lock().unwrap().entry(key).or_default().insert(v);
                                        Ok(v)
                                    }
                                    LoadResult::NotFound => Err(not_found_error()),
                                    LoadResult::Fail => Err(ResolverError::msg("boom")),
                                }
                            }
                        }));
                    }
                    let answers = futures::future::join_all(futs).await;
                    let made = started.lock().unwrap().get(&(node, key)).copied().unwrap_or(0) - before;
                    if made > 1 {
                        return Err(format!("LINV-1: {callers} callers of key {key} made {made} loader calls"));
                    }
                    let first = format!("{:?}", answers[0].as_ref().map(|l| l.value));
                    for a in &answers {
                        match a {
                            Ok(l) => {
                                if !produced.lock().unwrap().get(&key).is_some_and(|p| p.contains(&l.value)) {
                                    return Err(format!("LINV-2: key {key} served {} no loader or set produced", l.value));
                                }
                                if l.source != Source::Loader && made == 1 && !busy {
                                    return Err(format!("LINV-1: a loader ran but a caller was answered from {:?}", l.source));
                                }
                            }
                            Err(LoaderError::Loader(_)) if made == 0 && !busy => {
                                return Err(format!("LINV-2: key {key}: a loader error served without a loader call"));
                            }
                            Err(_) => {}
                        }
                        // L-2: every caller of one flight gets the same answer.
                        if made == 1 && format!("{:?}", a.as_ref().map(|l| l.value)) != first {
                            return Err(format!("L-2: callers of key {key} got different answers: {answers:?}"));
                        }
                    }
                }
                AsyncOp::Set { node, key, value } => {
                    produced.lock().unwrap().entry(key).or_default().insert(value);
                    let _ = loaders[node].set(key.to_string(), value, CallOptions::default()).await;
                }
                AsyncOp::Delete { node, key } => {
                    let _ = loaders[node].delete(key.to_string()).await;
                }
                AsyncOp::Get { node, key } => {
                    if let Ok(v) = loaders[node].get(key.to_string()).await {
                        if !produced.lock().unwrap().get(&key).is_some_and(|p| p.contains(&v)) {
                            return Err(format!("LINV-2: get({key}) served {v}, which nothing produced"));
                        }
                    }
                    // LINV-3: a live local record is never past its expiry.
                    if let Some(r) = loaders[node].local_record(&key.to_string().into()) {
                        if r.expires_at_ms <= high {
                            return Err(format!("LINV-3: key {key} live locally at {high}, expires {}", r.expires_at_ms));
                        }
                    }
                }
                AsyncOp::Advance { ms } => {
                    clock.advance(ms as i64);
                    high = high.max(cache_core::facade::Clock::now_ms(&clock));
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                AsyncOp::Back { ms } => clock.advance(-(ms as i64)),
                AsyncOp::Refresh { node } => {
                    loaders[node].run_due_refreshes();
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                AsyncOp::Remote { fail_writes, fail_reads } => remote.set_faults(RemoteFaults {
                    fail_writes,
                    fail_reads,
                    ..RemoteFaults::default()
                }),
            }
            for l in &loaders {
                l.check_invariants().map_err(|v| v.to_string())?;
            }
            if let Some(v) = seen.lock().unwrap().first() {
                return Err(v.clone());
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for l in &loaders {
            let c = l.counters();
            c.check().map_err(|e| format!("LINV-6: {e}"))?;
            l.close().await;
            if l.background_tasks() != 0 || l.flights() != 0 || l.refresh_tasks() != 0 {
                return Err(format!(
                    "LINV-8: after close {} background tasks, {} flights, {} refresh tasks",
                    l.background_tasks(),
                    l.flights(),
                    l.refresh_tasks()
                ));
            }
        }
        let loads: u64 = loaders.iter().map(|l| l.counters().loads).sum();
        let made = calls.load(Ordering::SeqCst);
        if loads != made {
            return Err(format!("LINV-6: counters say {loads} loads, the loaders were called {made} times"));
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(Config { cases: cases(48), ..Config::default() })]

    /// The async Loader keeps LINV-1/2/3/6/8 through bursts, writes, clock
    /// jumps, refreshes and remote faults.
    #[test]
    fn async_loader_holds_its_invariants(ops in prop::collection::vec(async_op(), 0..24)) {
        if let Err(e) = run_async(&ops) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// The async check can fail: a burst's answers are compared, so a loader
/// that is called twice for one burst is reported (sanity of `run_async`).
#[test]
fn async_burst_makes_one_loader_call() {
    let ops = vec![
        AsyncOp::Burst {
            node: 0,
            key: 0,
            callers: 4,
            result: LoadResult::Value(1),
            refresh: true,
        },
        AsyncOp::Burst {
            node: 0,
            key: 0,
            callers: 4,
            result: LoadResult::Value(2),
            refresh: false,
        },
        AsyncOp::Advance { ms: 350 },
        AsyncOp::Refresh { node: 0 },
        AsyncOp::Get { node: 1, key: 0 },
    ];
    run_async(&ops).unwrap();
}
