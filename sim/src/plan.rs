//! The explicit plan of a seed (DESIGN principle 5): every client's timed
//! operations, every fault, the key space and the swarm configuration. A
//! failing plan shrinks by removing operations and faults.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::scenario::{
    KeyDist, Scenario, StoreKind, MAX_FAULT_RATE, MAX_KEY_SPACE, MAX_MS, MAX_OPS_PER_CLIENT,
};

/// Most faults of one kind in a generated plan. The generator draws about
/// `rate × heal_at_ms / 1000` of each enabled kind; without a cap a long
/// plan (`max_gap_ms` near its bound) would ask for billions of them and
/// abort allocating. Every plan of the named scenarios stays far below it,
/// so their plans (and the golden traces) are unchanged.
pub const MAX_FAULTS_PER_KIND: u64 = 10_000;
/// Most faults in a plan (file): the cap of every kind.
pub const MAX_FAULTS: usize = MAX_FAULTS_PER_KIND as usize * FaultKind::ALL.len();
/// Latest healing time: the longest horizon the generator can reach
/// ([`MAX_OPS_PER_CLIENT`] operations of `max_gap_ms + max_duration_ms / 2`,
/// both at [`MAX_MS`]).
pub const MAX_HEAL_MS: u64 = MAX_OPS_PER_CLIENT as u64 * (MAX_MS + MAX_MS / 2);
/// Most later nested calls of one resolver in a plan (file).
pub const MAX_NESTS: usize = 16;
/// Most store failures one `store-error` fault injects (in memory: the next
/// `arg` operations fail; SQLite: the write lock is held `arg` × 100 ms).
pub const MAX_STORE_ERRORS: i64 = 1000;

/// What a resolver does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Succeeds with a value.
    Value,
    /// Succeeds with no value (C-10).
    NoValue,
    /// Returns an error (C-9).
    Error,
    /// Panics (C-14).
    Panic,
    /// Waits until cancelled (C-5).
    Hang,
}

/// A resolver's behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behave {
    /// Its outcome.
    pub outcome: Outcome,
    /// How long it runs, simulated ms.
    pub dur_ms: u64,
    /// T-3: safe to persist.
    pub safe: bool,
    /// Does not observe its cancellation token: runs to the end even after
    /// every waiter left (C-5a), as resolvers doing uncancellable work do.
    pub deaf: bool,
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum OpKind {
    /// A cached call; `nested` makes the resolver call key `nested` first.
    Call {
        /// Key index.
        key: u64,
        /// Non-empty concurrency key.
        ckey: bool,
        /// C-2.
        dnc: bool,
        /// Resolver behaviour.
        behave: Behave,
        /// The nested key, if the resolver makes a nested call.
        nested: Option<u64>,
        /// The client cancels after this many ms.
        cancel_ms: Option<u64>,
        /// Retry once after an error.
        retry: bool,
        /// Sent without waiting for the answer before the next operation:
        /// the session has several calls in flight at once.
        #[serde(default, skip_serializing_if = "is_false")]
        pipelined: bool,
        /// Nested calls the resolver makes later in its run.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        nests: Vec<Nest>,
    },
    /// An arbitrary entry (`change`: on the change cache, K-5).
    Arbitrary {
        /// Key index.
        key: u64,
        /// On the change cache.
        change: bool,
        /// Init behaviour.
        behave: Behave,
        /// The client cancels after this many ms (K-4, K-5).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cancel_ms: Option<u64>,
    },
    /// Close the session (S-1) and open a new one.
    Close,
    /// Drop the connection without closing (S-6) and reconnect.
    Reconnect,
    /// A call whose key has no call ID: refused at once with the
    /// invalid-key error, its resolver never run, nothing cached (C-1).
    InvalidCall,
}

/// A nested call a resolver makes during its run (C-11). Its key may
/// revisit the chain it runs in (then it must be refused, C-4 / C-4a), or
/// close a cycle with another client's calls (C-4b).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nest {
    /// The key it calls.
    pub key: u64,
    /// When: this many ms into the resolver's run.
    pub after_ms: u64,
    /// C-2: a do-not-cache nested call.
    pub dnc: bool,
    /// The nested resolver fails (C-9).
    pub fails: bool,
    /// Calls once more after a resolver failure.
    pub retry: bool,
    /// The nested resolver itself first calls this key (a second level).
    pub then: Option<u64>,
}

/// One timed client operation: wait `gap_ms`, then act.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Op {
    /// Pause before the operation, simulated ms.
    pub gap_ms: u64,
    /// The operation.
    pub kind: OpKind,
}

/// A fault kind (swarm testing enables a subset per seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Partition a client from the engine for a while.
    Partition,
    /// Raise message latency for a while.
    Latency,
    /// Drop a client's connection.
    DropConnection,
    /// Crash a client; it restarts `arg` ms later (at the latest when
    /// faults heal) and resumes its plan with a new session.
    ClientCrash,
    /// Restart the engine: memory lost, TTL store kept.
    EngineRestart,
    /// The TTL store fails its next `arg` operations (in memory), or another
    /// connection holds the SQLite write lock for `arg` × 100 ms.
    StoreError,
    /// The TTL store answers slowly for a while.
    StoreSlow,
    /// The engine's clock jumps.
    ClockJump,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Partition,
        FaultKind::Latency,
        FaultKind::DropConnection,
        FaultKind::ClientCrash,
        FaultKind::EngineRestart,
        FaultKind::StoreError,
        FaultKind::StoreSlow,
        FaultKind::ClockJump,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Latency => "latency",
            FaultKind::DropConnection => "drop-connection",
            FaultKind::ClientCrash => "client-crash",
            FaultKind::EngineRestart => "engine-restart",
            FaultKind::StoreError => "store-error",
            FaultKind::StoreSlow => "store-slow",
            FaultKind::ClockJump => "clock-jump",
        }
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// When, simulated ms.
    pub at_ms: u64,
    /// What.
    pub kind: FaultKind,
    /// Which client (partition, drop, crash).
    pub client: usize,
    /// How long (partition, latency, slow store), or how many failures
    /// (store error), or the jump in ms (clock jump, may be negative).
    pub arg: i64,
}

/// Per-key properties, fixed for a seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyProps {
    /// Shared content digest group, if any.
    pub content: Option<u64>,
    /// TTL in ms (0: none).
    pub ttl_ms: u64,
    /// Its resolvers return the ID of this other key instead of the
    /// requested one (the result call key differs from the call key, C-6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_key: Option<u64>,
    /// Its results' release hooks fail (C-12).
    #[serde(default, skip_serializing_if = "is_false")]
    pub failing_hooks: bool,
}

/// The swarm configuration of a seed: enabled fault kinds and their rates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    /// Enabled kinds with their events per simulated second.
    pub enabled: BTreeMap<FaultKind, f64>,
}

impl fmt::Display for Swarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_swarm(f, self.enabled.iter().map(|(k, r)| (k.name(), *r)))
    }
}

/// Writes a swarm line: `swarm: no faults`, or `swarm:` and each enabled
/// kind as ` name@rate/s` (the call cache's and the loader world's).
pub fn write_swarm<'a>(
    f: &mut fmt::Formatter<'_>,
    enabled: impl Iterator<Item = (&'a str, f64)>,
) -> fmt::Result {
    let mut enabled = enabled.peekable();
    if enabled.peek().is_none() {
        return write!(f, "swarm: no faults");
    }
    write!(f, "swarm:")?;
    for (k, r) in enabled {
        write!(f, " {k}@{r:.2}/s")?;
    }
    Ok(())
}

/// Everything one simulation runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// Key properties, by key index.
    pub keys: Vec<KeyProps>,
    /// Each client's operations. In a plan file: one `[[plan.clients]]`
    /// table per client (`client = <index>`, `ops = [ …one per line… ]`);
    /// the one-line nested array of format 1 is still read.
    #[serde(with = "client_tables")]
    pub clients: Vec<Vec<Op>>,
    /// Faults, by time.
    pub faults: Vec<Fault>,
    /// The swarm configuration.
    pub swarm: Swarm,
    /// Simulated ms after which every fault heals.
    pub heal_at_ms: u64,
}

fn behave(rng: &mut Rng, s: &Scenario) -> Behave {
    let r = &s.resolver;
    let outcome = match rng.weighted(&[r.value, r.no_value, r.error, r.panic, r.hang]) {
        0 => Outcome::Value,
        1 => Outcome::NoValue,
        2 => Outcome::Error,
        3 => Outcome::Panic,
        _ => Outcome::Hang,
    };
    Behave {
        outcome,
        dur_ms: rng.range(1, r.max_duration_ms.max(1)),
        safe: rng.chance(s.calls.safe_to_persist),
        // A hanging resolver ends only by cancellation, so it always listens.
        deaf: outcome != Outcome::Hang && rng.chance(r.deaf),
    }
}

/// The later nested calls of a nesting resolver: none to two, at any time
/// of its run, some do-not-cache, some failing and retried, some nesting a
/// level deeper.
fn nests(rng: &mut Rng, s: &Scenario) -> Vec<Nest> {
    let n = rng.below(3);
    let mut nests: Vec<Nest> = (0..n)
        .map(|_| Nest {
            key: key(rng, s),
            after_ms: rng.below(s.resolver.max_duration_ms.max(1)),
            dnc: rng.chance(s.calls.do_not_cache * 2.0),
            fails: rng.chance(0.2),
            retry: rng.chance(s.calls.retry),
            then: rng.chance(0.3).then(|| key(rng, s)),
        })
        .collect();
    nests.sort_by_key(|n| n.after_ms);
    nests
}

/// The crossed pair of a plan, if it draws one (`calls.cross`): two
/// clients and their first calls, on keys `x` and `y`, each resolver
/// calling the other key once both are running (C-4b). Drawn from a stream
/// of its own, so plans that draw none are as before.
///
/// Both keys are plain: a TTL'd key is stored per session (T-2) and a
/// result call key indexes elsewhere (C-6), so a resolver's nested call
/// (which has no session) would not join the other client's call.
fn crossed(seed: u64, s: &Scenario, keys: &[KeyProps]) -> Option<(usize, usize, [OpKind; 2])> {
    let mut rng = Rng::new(seed, "cross");
    if s.clients < 2 || s.ops_per_client == 0 || !rng.chance(s.calls.cross) {
        return None;
    }
    let plain: Vec<u64> = (0..keys.len() as u64)
        .filter(|&k| keys[k as usize].ttl_ms == 0 && keys[k as usize].result_key.is_none())
        .collect();
    if plain.len() < 2 {
        return None;
    }
    let clients = s.clients as u64;
    let a = rng.below(clients);
    let b = (a + 1 + rng.below(clients - 1)) % clients;
    let n = plain.len() as u64;
    let i = rng.below(n);
    let (x, y) = (
        plain[i as usize],
        plain[((i + 1 + rng.below(n - 1)) % n) as usize],
    );
    let max_ms = s.resolver.max_duration_ms.max(2);
    // Late enough for both calls to have begun, and each resolver runs
    // past it (within the scenario's longest run), so the second nested
    // call meets the first still waiting.
    let after_ms = rng.range(1, max_ms / 2 + 1);
    let mut call = |key: u64, other: u64| OpKind::Call {
        key,
        ckey: true,
        dnc: false,
        behave: Behave {
            outcome: Outcome::Value,
            dur_ms: rng.range(after_ms + 1, max_ms),
            safe: rng.chance(s.calls.safe_to_persist),
            deaf: false,
        },
        nested: None,
        cancel_ms: None,
        retry: false,
        pipelined: false,
        nests: vec![Nest {
            key: other,
            after_ms,
            dnc: false,
            fails: false,
            retry: false,
            then: None,
        }],
    };
    let pair = [call(x, y), call(y, x)];
    Some((a as usize, b as usize, pair))
}

/// Serde: a flag left out when false.
fn is_false(b: &bool) -> bool {
    !*b
}

fn key(rng: &mut Rng, s: &Scenario) -> u64 {
    match s.key_dist {
        KeyDist::Uniform => rng.below(s.key_space),
        KeyDist::Zipf => rng.zipf(s.key_space),
    }
}

impl Plan {
    /// The plan of `seed` under `scenario`.
    pub fn generate(seed: u64, s: &Scenario) -> Plan {
        let swarm = Swarm::generate(seed, s);
        let mut rng = Rng::new(seed, "plan");
        // Result IDs come from their own stream, so that adding them left
        // every other draw (and so every older plan) as it was.
        let mut id_rng = Rng::new(seed, "result-ids");
        // Pipelining and cancelled inits likewise: their own stream.
        let mut wrng = Rng::new(seed, "workload");
        // Failing release hooks: their own stream too.
        let mut hrng = Rng::new(seed, "hooks");
        let keys: Vec<KeyProps> = (0..s.key_space)
            .map(|k| KeyProps {
                content: rng.chance(s.calls.shared_content).then(|| rng.below(2)),
                ttl_ms: if rng.chance(s.calls.ttl_key) {
                    rng.range(s.calls.ttl_min_ms, s.calls.ttl_max_ms)
                } else {
                    0
                },
                result_key: (s.key_space > 1 && id_rng.chance(s.calls.result_id))
                    .then(|| (k + id_rng.range(1, s.key_space - 1)) % s.key_space),
                failing_hooks: hrng.chance(s.calls.failing_hooks),
            })
            .collect();
        // How long an operation may keep its client busy: its pause, then
        // about half the longest resolver run.
        let busy_ms = |gap_ms: u64| gap_ms + s.resolver.max_duration_ms / 2;
        let mut horizon = 0;
        let mut clients: Vec<Vec<Op>> = (0..s.clients)
            .map(|_| {
                let mut t = 0;
                let ops: Vec<Op> = (0..s.ops_per_client)
                    .map(|_| {
                        let gap_ms = rng.below(s.max_gap_ms + 1);
                        // Saturating: cannot wrap within the documented
                        // ranges (at most MAX_HEAL_MS), nor outside them.
                        t = u64::saturating_add(t, busy_ms(gap_ms));
                        let o = &s.ops;
                        let kind = match rng.weighted(&[
                            o.call,
                            o.nested,
                            o.arbitrary,
                            o.change,
                            o.close,
                            o.reconnect,
                            // Last, so a weight of 0 leaves every draw as it was.
                            o.invalid_call,
                        ]) {
                            k @ (0 | 1) => OpKind::Call {
                                key: key(&mut rng, s),
                                ckey: rng.chance(s.calls.concurrency_key),
                                dnc: rng.chance(s.calls.do_not_cache),
                                behave: behave(&mut rng, s),
                                nested: (k == 1).then(|| key(&mut rng, s)),
                                cancel_ms: rng
                                    .chance(s.calls.cancel)
                                    .then(|| rng.range(1, s.resolver.max_duration_ms.max(1))),
                                retry: rng.chance(s.calls.retry),
                                pipelined: wrng.chance(s.calls.pipeline),
                                nests: if k == 1 {
                                    nests(&mut wrng, s)
                                } else {
                                    Vec::new()
                                },
                            },
                            k @ (2 | 3) => OpKind::Arbitrary {
                                key: key(&mut rng, s),
                                change: k == 3,
                                behave: behave(&mut rng, s),
                                cancel_ms: wrng
                                    .chance(s.calls.cancel_init)
                                    .then(|| wrng.range(1, s.resolver.max_duration_ms.max(1))),
                            },
                            4 => OpKind::Close,
                            5 => OpKind::Reconnect,
                            _ => OpKind::InvalidCall,
                        };
                        Op { gap_ms, kind }
                    })
                    .collect();
                horizon = horizon.max(t);
                ops
            })
            .collect();
        if let Some((a, b, pair)) = crossed(seed, s, &keys) {
            // Both first operations, at the first one's instant: neither
            // client has waited on an answer yet, so both calls are in
            // flight when their resolvers call each other.
            let gap_ms = clients[a][0].gap_ms;
            for (client, op) in [a, b].into_iter().zip(pair) {
                clients[client][0] = Op { gap_ms, kind: op };
            }
            // `b` now waits as long as `a` first: the horizon must still
            // cover its pauses, or the faults heal before it is done.
            let span = clients[b]
                .iter()
                .fold(0u64, |t, op| t.saturating_add(busy_ms(op.gap_ms)));
            horizon = horizon.max(span);
        }
        let heal_at_ms = horizon.max(1000);
        let mut frng = Rng::new(seed, "faults");
        let mut faults = Vec::new();
        for (&kind, &rate) in &swarm.enabled {
            // The float-to-int cast saturates; the cap bounds the allocation.
            let n =
                ((rate * heal_at_ms as f64 / 1000.0).round() as u64).clamp(1, MAX_FAULTS_PER_KIND);
            for _ in 0..n {
                let dur = frng.range(50, s.faults.max_duration_ms.max(50)) as i64;
                let arg = match kind {
                    FaultKind::StoreError => frng.range(1, 5) as i64,
                    FaultKind::ClockJump => {
                        let j = frng.range(100, 3000) as i64;
                        if frng.chance(0.3) {
                            -j / 4
                        } else {
                            j
                        }
                    }
                    _ => dur,
                };
                faults.push(Fault {
                    at_ms: frng.range(10, heal_at_ms.saturating_sub(10).max(10)),
                    kind,
                    client: frng.below(s.clients as u64) as usize,
                    arg,
                });
            }
        }
        faults.sort_by_key(|f| (f.at_ms, f.kind, f.client));
        Plan {
            seed,
            keys,
            clients,
            faults,
            swarm,
            heal_at_ms,
        }
    }

    /// Operations plus faults: the size shrinking reduces.
    pub fn size(&self) -> usize {
        self.clients.iter().map(Vec::len).sum::<usize>() + self.faults.len()
    }

    /// The longest run of any resolver in the plan, simulated ms (0 without
    /// calls; hanging resolvers end by cancellation and do not count).
    pub fn longest_resolver_ms(&self) -> u64 {
        self.clients
            .iter()
            .flatten()
            .filter_map(|op| match &op.kind {
                OpKind::Call { behave, .. } | OpKind::Arbitrary { behave, .. } => {
                    (behave.outcome != Outcome::Hang).then_some(behave.dur_ms)
                }
                OpKind::Close | OpKind::Reconnect | OpKind::InvalidCall => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The highest message latency a `latency` fault of the plan sets,
    /// simulated ms (0 without one): a message sent under it may arrive
    /// that much later, even after healing.
    pub fn longest_latency_ms(&self) -> u64 {
        self.faults
            .iter()
            .filter(|f| f.kind == FaultKind::Latency)
            .map(|f| latency_ms(f.arg))
            .max()
            .unwrap_or(0)
    }

    /// Checks every field against its documented range (module docs of
    /// `plan_file`, `docs/plan-files.md`) for a scenario of `clients` client
    /// hosts and `key_space` keys. The error names the field by its path in
    /// a plan file (`plan.clients[2].ops[5].gap_ms`) and its range.
    pub fn check(&self, clients: usize, key_space: u64) -> Result<(), String> {
        let bad = |field: String, why: String| Err(format!("`{field}` {why}"));
        let in_range = |field: String, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                bad(field, format!("is {v}, must be in {lo}..={hi}"))
            }
        };
        in_range("plan.heal_at_ms".into(), self.heal_at_ms, 1, MAX_HEAL_MS)?;
        if self.clients.len() != clients {
            return bad(
                "plan.clients".into(),
                format!(
                    "has {} clients, scenario.clients is {clients}",
                    self.clients.len()
                ),
            );
        }
        if self.keys.len() as u64 != key_space {
            return bad(
                "plan.keys".into(),
                format!(
                    "has {} keys, scenario.key_space is {key_space}",
                    self.keys.len()
                ),
            );
        }
        let nkeys = key_space.min(MAX_KEY_SPACE);
        let key_in = |field: String, k: u64| {
            if k < nkeys {
                Ok(())
            } else {
                bad(field, format!("is {k}, the plan has keys 0..{nkeys}"))
            }
        };
        for (k, p) in self.keys.iter().enumerate() {
            if p.ttl_ms > MAX_MS {
                return bad(
                    format!("plan.keys[{k}].ttl_ms"),
                    format!("is {}, must be 0 (no TTL) or in 1..={MAX_MS}", p.ttl_ms),
                );
            }
            if let Some(r) = p.result_key {
                key_in(format!("plan.keys[{k}].result_key"), r)?;
                if r == k as u64 {
                    return bad(
                        format!("plan.keys[{k}].result_key"),
                        "is the key itself; leave it out instead".into(),
                    );
                }
            }
        }
        for (c, ops) in self.clients.iter().enumerate() {
            if ops.len() > MAX_OPS_PER_CLIENT {
                return bad(
                    format!("plan.clients[{c}].ops"),
                    format!("has {} operations, at most {MAX_OPS_PER_CLIENT}", ops.len()),
                );
            }
            for (i, op) in ops.iter().enumerate() {
                let at = format!("plan.clients[{c}].ops[{i}]");
                in_range(format!("{at}.gap_ms"), op.gap_ms, 0, MAX_MS)?;
                let (key, nested, behave, cancel) = match &op.kind {
                    OpKind::Call {
                        key,
                        nested,
                        behave,
                        cancel_ms,
                        ..
                    } => (*key, *nested, behave, *cancel_ms),
                    OpKind::Arbitrary {
                        key,
                        behave,
                        cancel_ms,
                        ..
                    } => (*key, None, behave, *cancel_ms),
                    OpKind::Close | OpKind::Reconnect | OpKind::InvalidCall => continue,
                };
                let kind = match &op.kind {
                    OpKind::Call { .. } => "call",
                    _ => "arbitrary",
                };
                key_in(format!("{at}.kind.{kind}.key"), key)?;
                if let Some(n) = nested {
                    key_in(format!("{at}.kind.{kind}.nested"), n)?;
                }
                in_range(
                    format!("{at}.kind.{kind}.behave.dur_ms"),
                    behave.dur_ms,
                    0,
                    MAX_MS,
                )?;
                if let Some(ms) = cancel {
                    in_range(format!("{at}.kind.{kind}.cancel_ms"), ms, 0, MAX_MS)?;
                }
                if let OpKind::Call { nests, .. } = &op.kind {
                    if nests.len() > MAX_NESTS {
                        return bad(
                            format!("{at}.kind.call.nests"),
                            format!("has {} nested calls, at most {MAX_NESTS}", nests.len()),
                        );
                    }
                    for (j, n) in nests.iter().enumerate() {
                        let nat = format!("{at}.kind.call.nests[{j}]");
                        key_in(format!("{nat}.key"), n.key)?;
                        in_range(format!("{nat}.after_ms"), n.after_ms, 0, MAX_MS)?;
                        if let Some(t) = n.then {
                            key_in(format!("{nat}.then"), t)?;
                        }
                    }
                }
            }
        }
        if self.faults.len() > MAX_FAULTS {
            return bad(
                "plan.faults".into(),
                format!("has {} faults, at most {MAX_FAULTS}", self.faults.len()),
            );
        }
        for (i, f) in self.faults.iter().enumerate() {
            in_range(format!("plan.faults[{i}].at_ms"), f.at_ms, 0, MAX_HEAL_MS)?;
            if f.client >= clients {
                return bad(
                    format!("plan.faults[{i}].client"),
                    format!("is {}, the scenario has clients 0..{clients}", f.client),
                );
            }
            let (lo, hi) = f.kind.arg_range();
            if !(lo..=hi).contains(&f.arg) {
                return bad(
                    format!("plan.faults[{i}].arg"),
                    format!(
                        "is {}, a {} fault's arg ({}) must be in {lo}..={hi}",
                        f.arg,
                        f.kind.name(),
                        f.kind.arg_meaning()
                    ),
                );
            }
        }
        for (kind, rate) in &self.swarm.enabled {
            if !(0.0..=MAX_FAULT_RATE).contains(rate) {
                return bad(
                    format!("plan.swarm.enabled.{}", kind.name()),
                    format!(
                        "is {rate}, must be a finite rate in 0..={MAX_FAULT_RATE} events per \
                         simulated second"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// The message latency bound a `latency` fault with `arg` sets, ms.
pub fn latency_ms(arg: i64) -> u64 {
    u64::try_from(arg).unwrap_or(0) / 4 + 5
}

impl FaultKind {
    /// The range of a fault's `arg` (checked on load).
    pub fn arg_range(self) -> (i64, i64) {
        let max = MAX_MS as i64;
        match self {
            FaultKind::Partition
            | FaultKind::Latency
            | FaultKind::ClientCrash
            | FaultKind::StoreSlow => (1, max),
            FaultKind::StoreError => (1, MAX_STORE_ERRORS),
            FaultKind::ClockJump => (-max, max),
            // Not read; the generator writes a duration there.
            FaultKind::DropConnection | FaultKind::EngineRestart => (0, max),
        }
    }

    /// What a fault's `arg` means, for errors and docs.
    pub fn arg_meaning(self) -> &'static str {
        match self {
            FaultKind::Partition => "how long the client is cut off, ms",
            FaultKind::Latency => "how long latency is raised, ms (to arg / 4 + 5 ms)",
            FaultKind::ClientCrash => "how long the client stays down, ms",
            FaultKind::StoreSlow => "how long the store is slow, ms (answers take 2 × arg ms)",
            FaultKind::StoreError => {
                "how many store operations fail (SQLite: the lock is held arg × 100 ms)"
            }
            FaultKind::ClockJump => "the jump of the engine's clock, ms, negative: backwards",
            FaultKind::DropConnection | FaultKind::EngineRestart => "not used",
        }
    }
}

/// The file shape of [`Plan::clients`]: one table per client
/// (`[[plan.clients]]`, `client = <index>`, `ops = [ … ]`), so that a plan
/// file has one operation per line. Format 1 wrote a nested array on one
/// line; it is still read.
mod client_tables {
    use std::fmt;

    use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
    use serde::de::{Error, MapAccess, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Op;

    #[derive(Serialize)]
    struct ClientRef<'a> {
        client: usize,
        ops: &'a [Op],
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ClientTable {
        client: usize,
        ops: Vec<Op>,
    }

    pub fn serialize<S: Serializer>(clients: &[Vec<Op>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            clients
                .iter()
                .enumerate()
                .map(|(client, ops)| ClientRef { client, ops }),
        )
    }

    /// One client: a table (format 2) or a bare array of operations (format 1).
    struct OneClient(Option<usize>, Vec<Op>);

    impl<'de> Deserialize<'de> for OneClient {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = OneClient;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a [[plan.clients]] table with `client` and `ops`")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneClient, A::Error> {
                    let t = ClientTable::deserialize(MapAccessDeserializer::new(map))?;
                    Ok(OneClient(Some(t.client), t.ops))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<OneClient, A::Error> {
                    let ops = Vec::<Op>::deserialize(SeqAccessDeserializer::new(seq))?;
                    Ok(OneClient(None, ops))
                }
            }
            d.deserialize_any(V)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<Op>>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<Vec<Op>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[[plan.clients]] tables, one per client")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Vec<Op>>, A::Error> {
                let mut out = Vec::new();
                while let Some(OneClient(client, ops)) = seq.next_element()? {
                    let i = out.len();
                    if client.is_some_and(|c| c != i) {
                        return Err(A::Error::custom(format!(
                            "`plan.clients[{i}].client` is {}, must be {i}: clients are listed \
                             in order",
                            client.unwrap_or_default()
                        )));
                    }
                    out.push(ops);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

impl Swarm {
    /// The swarm configuration of `seed`: each fault kind allowed by the
    /// scenario is enabled with probability `faults.enable`, at a random
    /// rate up to `faults.rate` per simulated second.
    pub fn generate(seed: u64, s: &Scenario) -> Swarm {
        let mut rng = Rng::new(seed, "swarm");
        let f = &s.faults;
        // Both stores can fail (SQLite: a lock held by another connection);
        // only the in-memory one can be made slow.
        let slow_store = s.store == StoreKind::Memory;
        let mut enabled = BTreeMap::new();
        for kind in FaultKind::ALL {
            let allowed = match kind {
                FaultKind::Partition => f.partition,
                FaultKind::Latency => f.latency,
                FaultKind::DropConnection => f.drop_connection,
                FaultKind::ClientCrash => f.client_crash,
                FaultKind::EngineRestart => f.engine_restart,
                FaultKind::StoreError => f.store_error,
                FaultKind::StoreSlow => f.store_slow && slow_store,
                FaultKind::ClockJump => f.clock_jump,
            };
            let on = rng.chance(f.enable);
            let rate = f.rate * (0.2 + 0.8 * (rng.below(1000) as f64 / 1000.0));
            if allowed && on && f.rate > 0.0 {
                enabled.insert(kind, (rate * 100.0).round() / 100.0);
            }
        }
        Swarm { enabled }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan of seed {} ({} steps)", self.seed, self.size())?;
        writeln!(f, "  {}", self.swarm)?;
        for (k, p) in self.keys.iter().enumerate() {
            write!(f, "  key k{k}: content {:?} ttl {} ms", p.content, p.ttl_ms)?;
            match p.result_key {
                Some(r) => writeln!(f, ", returns k{r}'s ID")?,
                None => writeln!(f)?,
            }
        }
        for (c, ops) in self.clients.iter().enumerate() {
            for op in ops {
                writeln!(f, "  client{c} +{}ms {:?}", op.gap_ms, op.kind)?;
            }
        }
        for fault in &self.faults {
            writeln!(
                f,
                "  fault @{}ms {} client{} arg {}",
                fault.at_ms,
                fault.kind.name(),
                fault.client,
                fault.arg
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C-4b: with `calls.cross` at 1, every plan with two plain keys starts
    /// two clients at one instant on calls whose resolvers call each
    /// other's key; at 0 the plans are those drawn without it.
    #[test]
    fn crossed_pairs_start_together_and_nest_into_each_other() {
        let mut s = Scenario::named("nested-heavy").unwrap();
        let mut drawn = 0;
        for seed in 0..50 {
            s.calls.cross = 0.0;
            let plain = Plan::generate(seed, &s);
            s.calls.cross = 1.0;
            let plan = Plan::generate(seed, &s);
            let changed: Vec<usize> = (0..s.clients)
                .filter(|&c| plan.clients[c] != plain.clients[c])
                .collect();
            if changed.is_empty() {
                continue;
            }
            drawn += 1;
            let [a, b] = changed[..] else {
                panic!("seed {seed}: a pair changes two clients, not {changed:?}");
            };
            // Only their first operations, at the same instant.
            assert_eq!(plan.clients[a][1..], plain.clients[a][1..]);
            assert_eq!(plan.clients[b][1..], plain.clients[b][1..]);
            assert_eq!(plan.clients[a][0].gap_ms, plan.clients[b][0].gap_ms);
            let call = |c: usize| match &plan.clients[c][0].kind {
                OpKind::Call {
                    key, nests, ckey, ..
                } => (*key, nests.clone(), *ckey),
                other => panic!("seed {seed}: not a call: {other:?}"),
            };
            let ((x, nx, cx), (y, ny, cy)) = (call(a), call(b));
            assert!(x != y && cx && cy, "seed {seed}");
            assert_eq!((nx.len(), ny.len()), (1, 1), "seed {seed}");
            assert_eq!((nx[0].key, ny[0].key), (y, x), "seed {seed}");
            for k in [x, y] {
                let props = &plan.keys[k as usize];
                assert!(
                    props.ttl_ms == 0 && props.result_key.is_none(),
                    "seed {seed}"
                );
            }
            plan.check(s.clients, s.key_space).unwrap();
        }
        assert!(drawn > 30, "only {drawn} of 50 plans drew a pair");
    }

    /// A crossed pair gives its second client the first one's opening
    /// pause, which may be the longer: the healing time still covers every
    /// client's pauses (a proptest of `input_ranges` found a plan where it
    /// did not).
    #[test]
    fn the_healing_time_covers_a_crossed_pair_s_pauses() {
        let mut s = Scenario::named("nested-heavy").unwrap();
        s.calls.cross = 1.0;
        s.clients = 2;
        s.max_gap_ms = 24_000;
        s.resolver.max_duration_ms = 1;
        let mut grown = 0;
        for seed in 0..400 {
            let plan = Plan::generate(seed, &s);
            let longest = plan
                .clients
                .iter()
                .map(|ops| ops.iter().map(|o| o.gap_ms).sum::<u64>())
                .max()
                .unwrap_or(0);
            assert!(
                plan.heal_at_ms >= longest,
                "seed {seed}: heals at {} before {longest}",
                plan.heal_at_ms
            );
            s.calls.cross = 0.0;
            grown += usize::from(longest > Plan::generate(seed, &s).heal_at_ms);
            s.calls.cross = 1.0;
        }
        // The case the fix is for occurs here.
        assert!(grown > 0, "no crossed pair outgrew the plain horizon");
    }
}
