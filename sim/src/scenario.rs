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
    /// A call with an invalid key (no call ID), which must be refused at
    /// once (C-1). 0 by default: the scenarios with golden traces keep
    /// their plans.
    pub invalid_call: u32,
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
            invalid_call: 0,
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
    /// The client does not wait for a call's answer before its next
    /// operation: a session has several calls in flight at once, and a
    /// close may race them (S-1a, S-3).
    pub pipeline: f64,
    /// The client cancels an arbitrary or change-cache init after a while
    /// (K-4, K-5).
    pub cancel_init: f64,
    /// Per plan: two clients start crossed calls at the same instant, each
    /// resolver calling the other's key later in its run: a wait-for cycle
    /// the cache must refuse (C-4b). Left to chance, two calls nesting into
    /// each other almost never overlap.
    pub cross: f64,
    /// A key's results have release hooks that fail (C-12: the error goes
    /// to the releaser, the close and the metrics count it). Drawn per key
    /// from its own stream, so it changes no other draw of a plan.
    pub failing_hooks: f64,
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
            pipeline: 0.2,
            cancel_init: 0.08,
            cross: 0.0,
            failing_hooks: 0.0,
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
    /// The loader world's scenario when this is one (`world = "loader"`,
    /// `crate::loader`); the call-cache fields are then unused.
    #[serde(skip)]
    pub loader: Option<Box<crate::loader::LoaderScenario>>,
    /// The `loader-net` world's scenario when this is one (`world =
    /// "loader-net"`, `crate::loader_net`); the call-cache fields are then unused.
    #[serde(skip)]
    pub loader_net: Option<Box<crate::loader_net::NetScenario>>,
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
            loader: None,
            loader_net: None,
        }
    }
}

/// Upper bound of every time field, simulated ms: 10^9 ms is about 11.6
/// days. A run may get slow near it, but nothing the harness computes from
/// such values can overflow: sums of up to [`MAX_OPS_PER_CLIENT`] of them
/// stay far below `u64::MAX` and `i64::MAX`.
pub const MAX_MS: u64 = 1_000_000_000;
/// Most client hosts.
pub const MAX_CLIENTS: usize = 64;
/// Most operations per client.
pub const MAX_OPS_PER_CLIENT: usize = 10_000;
/// Most distinct call keys.
pub const MAX_KEY_SPACE: u64 = 1000;
/// Highest fault rate, events per simulated second.
pub const MAX_FAULT_RATE: f64 = 100.0;
/// Shortest fault window the generator draws (`[faults] max_duration_ms`
/// may not go below it).
pub const MIN_FAULT_MS: u64 = 50;
/// Longest scenario name: it goes into file names (`shrunk-<name>-<seed>.toml`).
pub const MAX_NAME_LEN: usize = 64;

/// The named scenarios shipped with the crate.
pub const NAMED: &[&str] = &[
    "standard",
    "ttl-heavy",
    "cancel-storm",
    "restart-heavy",
    "nested-heavy",
];

/// How a scenario field is named in errors: its TOML table and key, both as
/// a table header (`[resolver] max_duration_ms`, to find it in a file) and
/// as a dotted key (`resolver.max_duration_ms`). `prefix` is the table the
/// scenario itself sits in (`scenario` inside a plan file).
fn field(prefix: &str, table: &str, key: &str) -> String {
    let t = match (prefix.is_empty(), table.is_empty()) {
        (true, true) => String::new(),
        (true, false) => table.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{table}"),
    };
    if t.is_empty() {
        format!("`{key}`")
    } else {
        format!("`[{t}] {key}` ({t}.{key})")
    }
}

/// Whether `name` is a valid scenario name: 1 to [`MAX_NAME_LEN`] of
/// `[A-Za-z0-9_-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Scenario {
    /// A scenario running the loader world `l` (named after it).
    pub fn from_loader(l: crate::loader::LoaderScenario) -> Scenario {
        Scenario {
            name: l.name.clone(),
            loader: Some(Box::new(l)),
            ..Scenario::default()
        }
    }

    /// A scenario running the `loader-net` world `l` (named after it).
    pub fn from_loader_net(l: crate::loader_net::NetScenario) -> Scenario {
        Scenario {
            name: l.name.clone(),
            loader_net: Some(Box::new(l)),
            ..Scenario::default()
        }
    }

    /// Whether `name` is a named scenario of any world.
    pub fn is_named(name: &str) -> bool {
        NAMED.contains(&name)
            || crate::loader::LOADER_NAMED.contains(&name)
            || crate::loader_net::NET_NAMED.contains(&name)
    }

    /// A named scenario (see [`NAMED`], the loader's
    /// [`LOADER_NAMED`](crate::loader::LOADER_NAMED) and
    /// [`NET_NAMED`](crate::loader_net::NET_NAMED)).
    pub fn named(name: &str) -> Result<Scenario, String> {
        if crate::loader::LOADER_NAMED.contains(&name) {
            return crate::loader::LoaderScenario::named(name).map(Scenario::from_loader);
        }
        if crate::loader_net::NET_NAMED.contains(&name) {
            return crate::loader_net::NetScenario::named(name).map(Scenario::from_loader_net);
        }
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
        if let Some(l) = self.loader_net.take() {
            self.loader_net = Some(Box::new(l.with_bugs(names)?));
            return Ok(self);
        }
        if let Some(l) = self.loader.take() {
            self.loader = Some(Box::new(l.with_bugs(names)?));
            return Ok(self);
        }
        for name in names {
            let bug: cache_core::bugs::Bug = name.as_ref().parse().map_err(|e| format!("{e}"))?;
            self.bugs = self.bugs.with(bug);
        }
        Ok(self)
    }

    /// Parses and validates a TOML scenario; the error names the field.
    /// Fields left out take their defaults (`sim/scenarios/reference.toml`).
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| format!("bad scenario: {e}"))?;
        s.validate()?;
        Ok(s)
    }

    /// Parses a scenario *file*: like [`Scenario::parse`], but a file that
    /// sets no field, or does not set `name`, is an error — it would run as
    /// the defaults while reports call it `standard`.
    pub fn parse_file(text: &str, path: &str) -> Result<Scenario, String> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| format!("{path}: bad scenario: {e}"))?;
        if table.is_empty() {
            return Err(format!(
                "empty scenario file {path}: it sets no field; give a named scenario ({}) or \
                 a file that sets at least `name` (every field is listed with its default \
                 in sim/scenarios/reference.toml)",
                NAMED.join(", ")
            ));
        }
        if !table.contains_key("name") {
            return Err(format!(
                "{path}: bad scenario: field `name` is missing: a scenario file names itself \
                 (1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ -; it labels reports and shrunk plan files)"
            ));
        }
        if table.get("world").and_then(|w| w.as_str()) == Some(crate::loader_net::scenario::WORLD) {
            return crate::loader_net::NetScenario::parse(text)
                .map(Scenario::from_loader_net)
                .map_err(|e| format!("{path}: {e}"));
        }
        if table.contains_key("world") {
            return crate::loader::LoaderScenario::parse(text)
                .map(Scenario::from_loader)
                .map_err(|e| format!("{path}: {e}"));
        }
        Scenario::parse(text).map_err(|e| format!("{path}: {e}"))
    }

    /// A named scenario, or a TOML file if `arg` names an existing path;
    /// anything else is an error listing the named scenarios.
    pub fn load(arg: Option<&str>) -> Result<Scenario, String> {
        match arg {
            None => Scenario::named("standard"),
            Some(a) if Scenario::is_named(a) => Scenario::named(a),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        format!(
                            "unknown scenario {path:?}: neither a named scenario ({}) nor an \
                             existing file",
                            NAMED.join(", ")
                        )
                    } else {
                        format!("cannot read scenario file {path}: {e}")
                    }
                })?;
                Scenario::parse_file(&text, path)
            }
        }
    }

    /// Checks every field against its documented range
    /// (`sim/scenarios/reference.toml`); the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_in("")
    }

    /// [`Scenario::validate`] for a scenario that sits in table `prefix` of
    /// a bigger file (`scenario` in a plan file), so that errors name the
    /// field by its full path there.
    pub fn validate_in(&self, prefix: &str) -> Result<(), String> {
        let bad = |table: &str, key: &str, value: String, range: &str| {
            Err(format!(
                "bad scenario: field {} is {value}, must be {range}",
                field(prefix, table, key)
            ))
        };
        if !valid_name(&self.name) {
            return bad(
                "",
                "name",
                format!("{:?}", self.name),
                &format!(
                    "1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 _ - (it goes into file names)"
                ),
            );
        }
        for (key, v, lo, hi) in [
            ("clients", self.clients as u64, 1, MAX_CLIENTS as u64),
            (
                "ops_per_client",
                self.ops_per_client as u64,
                1,
                MAX_OPS_PER_CLIENT as u64,
            ),
            ("key_space", self.key_space, 1, MAX_KEY_SPACE),
            ("max_gap_ms", self.max_gap_ms, 0, MAX_MS),
        ] {
            if !(lo..=hi).contains(&v) {
                return bad("", key, v.to_string(), &format!("in {lo}..={hi}"));
            }
        }
        let c = &self.calls;
        let r = &self.resolver;
        let f = &self.faults;
        for (table, key, p) in [
            ("calls", "concurrency_key", c.concurrency_key),
            ("calls", "do_not_cache", c.do_not_cache),
            ("calls", "ttl_key", c.ttl_key),
            ("calls", "safe_to_persist", c.safe_to_persist),
            ("calls", "shared_content", c.shared_content),
            ("calls", "cancel", c.cancel),
            ("calls", "retry", c.retry),
            ("calls", "result_id", c.result_id),
            ("calls", "pipeline", c.pipeline),
            ("calls", "cancel_init", c.cancel_init),
            ("calls", "cross", c.cross),
            ("calls", "failing_hooks", c.failing_hooks),
            ("faults", "enable", f.enable),
            ("resolver", "deaf", r.deaf),
        ] {
            // NaN fails `contains` too.
            if !(0.0..=1.0).contains(&p) {
                return bad(table, key, p.to_string(), "a finite probability in 0..=1");
            }
        }
        if !(0.0..=MAX_FAULT_RATE).contains(&f.rate) {
            return bad(
                "faults",
                "rate",
                f.rate.to_string(),
                &format!("a finite rate in 0..={MAX_FAULT_RATE} events per simulated second"),
            );
        }
        for (table, key, v, lo, hi) in [
            ("resolver", "max_duration_ms", r.max_duration_ms, 1, MAX_MS),
            ("calls", "ttl_max_ms", c.ttl_max_ms, 1, MAX_MS),
            (
                "calls",
                "ttl_min_ms",
                c.ttl_min_ms,
                1,
                c.ttl_max_ms.min(MAX_MS),
            ),
            (
                "faults",
                "max_duration_ms",
                f.max_duration_ms,
                MIN_FAULT_MS,
                MAX_MS,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                let range = if key == "ttl_min_ms" {
                    format!("in 1..=[calls] ttl_max_ms ({})", c.ttl_max_ms)
                } else {
                    format!("in {lo}..={hi}")
                };
                return bad(table, key, v.to_string(), &range);
            }
        }
        let o = &self.ops;
        let weights = [
            (
                "ops",
                [
                    o.call,
                    o.nested,
                    o.arbitrary,
                    o.change,
                    o.close,
                    o.reconnect,
                    o.invalid_call,
                ]
                .to_vec(),
            ),
            (
                "resolver",
                [r.value, r.no_value, r.error, r.panic, r.hang].to_vec(),
            ),
        ];
        for (table, w) in weights {
            // In u64: seven u32 weights cannot wrap it.
            if w.iter().map(|w| u64::from(*w)).sum::<u64>() == 0 {
                let names = if table == "ops" {
                    "call, nested, arbitrary, change, close, reconnect, invalid_call"
                } else {
                    "value, no_value, error, panic, hang"
                };
                let t = if prefix.is_empty() {
                    table.to_string()
                } else {
                    format!("{prefix}.{table}")
                };
                return Err(format!(
                    "bad scenario: the weights in `[{t}]` ({names}) are all 0; each is in \
                     0..={}, and at least one must be non-zero",
                    u32::MAX
                ));
            }
        }
        Ok(())
    }
}
