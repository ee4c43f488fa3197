//! Scenario files (TOML): clients, key space, op mix, fault rates and
//! durations. Unknown or mistyped fields are errors that name the field.

use serde::{Deserialize, Serialize};

/// Which TTL store the engine uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The in-memory store with injectable faults.
    Memory,
    /// SQLite on a temporary file (faults: another connection holds the
    /// write lock; no slow answers).
    Sqlite,
}

/// Key popularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Zipf (exponent 1): a few hot keys.
    Zipf,
}

/// Relative weights of client operations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpMix {
    /// A cached call.
    pub call: u32,
    /// A call whose resolver makes a nested cached call.
    pub nested: u32,
    /// An arbitrary entry (keyed singleflight).
    pub arbitrary: u32,
    /// A change-cache init (K-5).
    pub change: u32,
    /// Close the session and open a new one.
    pub close: u32,
    /// Drop the connection abruptly and reconnect.
    pub reconnect: u32,
}

impl Default for OpMix {
    fn default() -> Self {
        Self {
            call: 60,
            nested: 10,
            arbitrary: 8,
            change: 4,
            close: 4,
            reconnect: 3,
        }
    }
}

/// Resolver behaviour weights and knobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverMix {
    /// Succeeds with a value.
    pub value: u32,
    /// Succeeds with no value (C-10).
    pub no_value: u32,
    /// Fails (C-9).
    pub error: u32,
    /// Panics (C-14).
    pub panic: u32,
    /// Hangs until cancelled (C-5).
    pub hang: u32,
    /// Longest resolver run, simulated ms.
    pub max_duration_ms: u64,
    /// Probability that a (non-hanging) resolver ignores cancellation and
    /// runs to the end (C-5a).
    pub deaf: f64,
}

impl Default for ResolverMix {
    fn default() -> Self {
        Self {
            value: 70,
            no_value: 8,
            error: 10,
            panic: 4,
            hang: 4,
            max_duration_ms: 300,
            deaf: 0.2,
        }
    }
}

/// Per-call probabilities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallMix {
    /// A non-empty concurrency key.
    pub concurrency_key: f64,
    /// `do_not_cache`.
    pub do_not_cache: f64,
    /// A key has a TTL.
    pub ttl_key: f64,
    /// A result is safe to persist.
    pub safe_to_persist: f64,
    /// A key carries a content digest shared with other recipes.
    pub shared_content: f64,
    /// The client cancels the call after a while.
    pub cancel: f64,
    /// The client retries a call that failed.
    pub retry: f64,
    /// A key's resolvers return another key's ID (result call key ≠ call
    /// key, C-6).
    pub result_id: f64,
    /// TTL bounds, simulated ms.
    pub ttl_min_ms: u64,
    /// TTL bounds, simulated ms.
    pub ttl_max_ms: u64,
}

impl Default for CallMix {
    fn default() -> Self {
        Self {
            concurrency_key: 0.6,
            do_not_cache: 0.08,
            ttl_key: 0.3,
            safe_to_persist: 0.6,
            shared_content: 0.3,
            cancel: 0.08,
            retry: 0.5,
            result_id: 0.1,
            ttl_min_ms: 100,
            ttl_max_ms: 2000,
        }
    }
}

/// Fault rates: each kind is enabled per seed with `enable` probability
/// (swarm testing), then fires about `rate` times per simulated second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultRates {
    /// Probability that a fault kind is enabled for a seed.
    pub enable: f64,
    /// Events per simulated second of an enabled kind (upper bound; each
    /// seed draws its own rate below it).
    pub rate: f64,
    /// Partitions between a client and the engine.
    pub partition: bool,
    /// Message latency spikes.
    pub latency: bool,
    /// Dropped connections.
    pub drop_connection: bool,
    /// Client crashes.
    pub client_crash: bool,
    /// Engine restarts.
    pub engine_restart: bool,
    /// TTL store errors.
    pub store_error: bool,
    /// Slow TTL store answers.
    pub store_slow: bool,
    /// Clock jumps.
    pub clock_jump: bool,
    /// Longest partition / latency spike / slow-store window, simulated ms.
    pub max_duration_ms: u64,
}

impl Default for FaultRates {
    fn default() -> Self {
        Self {
            enable: 0.5,
            rate: 1.0,
            partition: true,
            latency: true,
            drop_connection: true,
            client_crash: true,
            engine_restart: true,
            store_error: true,
            store_slow: true,
            clock_jump: true,
            max_duration_ms: 800,
        }
    }
}

/// A scenario: everything a seed needs besides the seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Its name (shown in reports).
    pub name: String,
    /// Client hosts.
    pub clients: usize,
    /// Operations per client.
    pub ops_per_client: usize,
    /// Distinct call keys.
    pub key_space: u64,
    /// Key popularity.
    pub key_dist: KeyDist,
    /// Longest pause between two operations of a client, simulated ms.
    pub max_gap_ms: u64,
    /// The TTL store.
    pub store: StoreKind,
    /// Operation weights.
    pub ops: OpMix,
    /// Resolver behaviour.
    pub resolver: ResolverMix,
    /// Call knobs.
    pub calls: CallMix,
    /// Faults.
    pub faults: FaultRates,
    /// Bug-zoo switches turned on in the engine's caches (`--bug`; never
    /// read from a scenario file).
    #[serde(skip)]
    pub bugs: cache_core::bugs::Bugs,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "standard".into(),
            clients: 8,
            ops_per_client: 16,
            key_space: 8,
            key_dist: KeyDist::Zipf,
            max_gap_ms: 150,
            store: StoreKind::Memory,
            ops: OpMix::default(),
            resolver: ResolverMix::default(),
            calls: CallMix::default(),
            faults: FaultRates::default(),
            bugs: cache_core::bugs::Bugs::none(),
        }
    }
}

/// The named scenarios shipped with the crate.
pub const NAMED: &[&str] = &[
    "standard",
    "ttl-heavy",
    "cancel-storm",
    "restart-heavy",
    "nested-heavy",
];

impl Scenario {
    /// A named scenario (see [`NAMED`]).
    pub fn named(name: &str) -> Result<Scenario, String> {
        let text = match name {
            "standard" => include_str!("../scenarios/standard.toml"),
            "ttl-heavy" => include_str!("../scenarios/ttl-heavy.toml"),
            "cancel-storm" => include_str!("../scenarios/cancel-storm.toml"),
            "restart-heavy" => include_str!("../scenarios/restart-heavy.toml"),
            "nested-heavy" => include_str!("../scenarios/nested-heavy.toml"),
            other => {
                return Err(format!(
                    "unknown scenario {other:?}; named scenarios: {}",
                    NAMED.join(", ")
                ))
            }
        };
        Scenario::parse(text)
    }

    /// This scenario with the named bug-zoo switches on; an unknown name is
    /// an error listing the known ones.
    pub fn with_bugs<S: AsRef<str>>(mut self, names: &[S]) -> Result<Scenario, String> {
        for name in names {
            let bug: cache_core::bugs::Bug = name.as_ref().parse().map_err(|e| format!("{e}"))?;
            self.bugs = self.bugs.with(bug);
        }
        Ok(self)
    }

    /// Parses and validates a TOML scenario; the error names the field.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| format!("bad scenario: {e}"))?;
        s.validate()?;
        Ok(s)
    }

    /// A named scenario, or a TOML file if `arg` names an existing path.
    pub fn load(arg: Option<&str>) -> Result<Scenario, String> {
        match arg {
            None => Scenario::named("standard"),
            Some(a) if NAMED.contains(&a) => Scenario::named(a),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read scenario file {path}: {e}"))?;
                Scenario::parse(&text).map_err(|e| format!("{path}: {e}"))
            }
        }
    }

    /// Checks every field; the error names the first bad one.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let bad = |field: &str, why: &str| Err(format!("bad scenario: field `{field}` {why}"));
        if self.clients == 0 || self.clients > 64 {
            return bad("clients", "must be in 1..=64");
        }
        if self.key_space == 0 || self.key_space > 1000 {
            return bad("key_space", "must be in 1..=1000");
        }
        if self.ops_per_client > 10_000 {
            return bad("ops_per_client", "must be at most 10000");
        }
        for (field, p) in [
            ("calls.concurrency_key", self.calls.concurrency_key),
            ("calls.do_not_cache", self.calls.do_not_cache),
            ("calls.ttl_key", self.calls.ttl_key),
            ("calls.safe_to_persist", self.calls.safe_to_persist),
            ("calls.shared_content", self.calls.shared_content),
            ("calls.cancel", self.calls.cancel),
            ("calls.retry", self.calls.retry),
            ("calls.result_id", self.calls.result_id),
            ("faults.enable", self.faults.enable),
            ("resolver.deaf", self.resolver.deaf),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, "must be a probability in 0..=1");
            }
        }
        if self.calls.ttl_min_ms == 0 || self.calls.ttl_min_ms > self.calls.ttl_max_ms {
            return bad("calls.ttl_min_ms", "must be > 0 and <= calls.ttl_max_ms");
        }
        if self.faults.rate < 0.0 || self.faults.rate > 100.0 {
            return bad("faults.rate", "must be in 0..=100");
        }
        let o = &self.ops;
        if o.call + o.nested + o.arbitrary + o.change + o.close + o.reconnect == 0 {
            return bad("ops", "needs at least one non-zero weight");
        }
        let r = &self.resolver;
        if r.value + r.no_value + r.error + r.panic + r.hang == 0 {
            return bad("resolver", "needs at least one non-zero weight");
        }
        Ok(())
    }
}
