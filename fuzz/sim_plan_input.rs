//! The `sim_plan` fuzz input: fuzz bytes choose a short simulation plan and
//! its faults. Shared, through `#[path]`, by the fuzz target
//! (`fuzz_targets/sim_plan.rs`) and the stable replay test
//! (`cache-core/tests/driver_replay.rs`), so both run the same plan.
//!
//! Plans stay small: at most 3 clients of 6 operations, 4 faults, 4 keys.
//!
//! Pipelined calls and nested calls later in a run are drawn from spare high
//! bits (of `gap` and of the nested key), so every older input still decodes.

use arbitrary::Arbitrary;
use sim::plan::{Behave, Fault, FaultKind, KeyProps, Nest, Op, OpKind, Outcome, Plan, Swarm};
use sim::{run_plan, Scenario};

/// What one sim_plan input chooses.
#[derive(Arbitrary, Debug)]
pub struct SimInput {
    /// turmoil's RNG seed (message latencies).
    seed: u64,
    /// Key properties: shared content (`Some(0|1)`), TTL.
    keys: [(Option<bool>, Ttl); 4],
    /// How many keys are in play (1 + n % 4); the high bits (n / 4, one
    /// per key) make a key's resolvers return the next key's ID (C-6).
    nkeys: u8,
    faults: Vec<SimFault>,
    /// Each client's operations.
    clients: Vec<Vec<SimOp>>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ttl {
    None,
    Short,
    Long,
}

#[derive(Arbitrary, Debug)]
struct SimOp {
    /// Pause before the operation, in 10 ms steps (`gap % 50`); an odd
    /// `gap / 50` sends a call without waiting for its answer (pipelined).
    gap: u8,
    kind: SimKind,
}

#[derive(Arbitrary, Debug)]
enum SimKind {
    Call {
        key: u8,
        ckey: bool,
        dnc: bool,
        behave: SimBehave,
        /// The nested key (`n % keys`); the high bits, when bit 2 is set,
        /// make it a call later in the run, with [`nest`]'s flags.
        nested: Option<u8>,
        cancel: Option<u8>,
        retry: bool,
    },
    Arbitrary {
        key: u8,
        change: bool,
        behave: SimBehave,
    },
    Close,
    Reconnect,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct SimBehave {
    outcome: SimOutcome,
    /// Duration in 10 ms steps.
    dur: u8,
    safe: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum SimOutcome {
    Value,
    NoValue,
    Error,
    Panic,
    Hang,
}

#[derive(Arbitrary, Debug)]
struct SimFault {
    /// When, in 10 ms steps.
    at: u8,
    kind: u8,
    client: u8,
    arg: i16,
}

fn behave(b: SimBehave) -> Behave {
    Behave {
        outcome: match b.outcome {
            SimOutcome::Value => Outcome::Value,
            SimOutcome::NoValue => Outcome::NoValue,
            SimOutcome::Error => Outcome::Error,
            SimOutcome::Panic => Outcome::Panic,
            SimOutcome::Hang => Outcome::Hang,
        },
        dur_ms: 1 + u64::from(b.dur % 40) * 10,
        safe: b.safe,
        // The duration's spare high bits pick a resolver that ignores
        // cancellation (C-5a), keeping the input layout of older seeds.
        deaf: (b.dur / 40) % 2 == 1 && !matches!(b.outcome, SimOutcome::Hang),
    }
}

/// A nested call later in the run, from the nested key byte's high bits
/// (bit 2 set): do-not-cache (bit 3), failing (bit 4), retried (bit 5), and
/// nesting one level deeper into the next key (bit 6); made half-way
/// through the resolver's run.
fn nest(n: u8, b: &Behave, key: impl Fn(u8) -> u64) -> Option<Nest> {
    (n & 4 != 0).then(|| Nest {
        key: key(n),
        after_ms: b.dur_ms / 2,
        dnc: n & 8 != 0,
        fails: n & 16 != 0,
        retry: n & 32 != 0,
        then: (n & 64 != 0).then(|| key(n.wrapping_add(1))),
    })
}

/// The plan the input chooses, every index in range.
pub fn plan(input: &SimInput) -> Option<Plan> {
    let nkeys = 1 + usize::from(input.nkeys % 4);
    let key = |k: u8| u64::from(k) % nkeys as u64;
    let keys = input.keys[..nkeys]
        .iter()
        .enumerate()
        .map(|(i, (content, ttl))| KeyProps {
            content: content.map(u64::from),
            ttl_ms: match ttl {
                Ttl::None => 0,
                Ttl::Short => 200,
                Ttl::Long => 2_000,
            },
            // Spare bits: the input layout (and the committed corpus) stays valid.
            result_key: (nkeys > 1 && (input.nkeys >> (2 + i)) & 1 == 1)
                .then(|| ((i + 1) % nkeys) as u64),
            failing_hooks: false,
        })
        .collect();
    let clients: Vec<Vec<Op>> = input
        .clients
        .iter()
        .take(3)
        .map(|ops| {
            ops.iter()
                .take(6)
                .map(|o| Op {
                    gap_ms: u64::from(o.gap % 50) * 10,
                    kind: match &o.kind {
                        SimKind::Call {
                            key: k,
                            ckey,
                            dnc,
                            behave: b,
                            nested,
                            cancel,
                            retry,
                        } => {
                            let b = behave(*b);
                            let later = nested.and_then(|n| nest(n, &b, key));
                            OpKind::Call {
                                key: key(*k),
                                ckey: *ckey,
                                dnc: *dnc,
                                behave: b,
                                nested: nested.filter(|_| later.is_none()).map(key),
                                cancel_ms: cancel.map(|c| 1 + u64::from(c % 40) * 10),
                                retry: *retry,
                                pipelined: (o.gap / 50) % 2 == 1,
                                nests: later.into_iter().collect(),
                            }
                        }
                        SimKind::Arbitrary {
                            key: k,
                            change,
                            behave: b,
                        } => OpKind::Arbitrary {
                            key: key(*k),
                            change: *change,
                            behave: behave(*b),
                            cancel_ms: None,
                        },
                        SimKind::Close => OpKind::Close,
                        SimKind::Reconnect => OpKind::Reconnect,
                    },
                })
                .collect()
        })
        .collect();
    if clients.is_empty() {
        return None;
    }
    let horizon: u64 = clients
        .iter()
        .map(|ops| ops.iter().map(|o| o.gap_ms + 200).sum::<u64>())
        .max()
        .unwrap_or(0);
    let heal_at_ms = horizon.max(1000);
    let mut faults: Vec<Fault> = input
        .faults
        .iter()
        .take(4)
        .map(|f| {
            let kind = FaultKind::ALL[usize::from(f.kind) % FaultKind::ALL.len()];
            let dur = 50 + i64::from(f.arg.unsigned_abs() % 500);
            Fault {
                at_ms: (10 + u64::from(f.at) * 10).min(heal_at_ms.saturating_sub(10)),
                kind,
                client: usize::from(f.client) % clients.len(),
                arg: match kind {
                    FaultKind::StoreError => 1 + i64::from(f.arg.unsigned_abs() % 4),
                    FaultKind::ClockJump => i64::from(f.arg) % 3_000,
                    _ => dur,
                },
            }
        })
        .collect();
    faults.sort_by_key(|f| (f.at_ms, f.kind, f.client));
    let swarm = Swarm {
        enabled: faults.iter().map(|f| (f.kind, 1.0)).collect(),
    };
    Some(Plan {
        seed: input.seed,
        keys,
        clients,
        faults,
        swarm,
        heal_at_ms,
    })
}

/// Runs the plan the bytes choose; `Err` names the violated invariant with
/// the plan and the last trace lines. `Ok(false)` when the bytes choose no
/// plan.
pub fn run(input: &SimInput) -> Result<bool, String> {
    let Some(plan) = plan(input) else {
        return Ok(false);
    };
    // The mapping above keeps every value within the plan-file ranges (the
    // ranges a replayed plan file is held to); a plan outside them is a bug
    // of this mapping, not of the cache.
    if let Err(e) = plan.check(plan.clients.len(), plan.keys.len() as u64) {
        return Err(format!(
            "the input maps to a plan outside the plan-file ranges: {e}"
        ));
    }
    let outcome = run_plan(plan, &Scenario::default(), None);
    if outcome.passed() {
        return Ok(true);
    }
    let last: Vec<&String> = outcome.trace.iter().rev().take(20).collect();
    Err(format!(
        "{:?} violated: {:?}\nplan:\n{}\nleak: {:?}\nlast trace lines: {last:#?}",
        outcome.first_invariant(),
        outcome.violations.first(),
        outcome.plan,
        outcome.leak
    ))
}
