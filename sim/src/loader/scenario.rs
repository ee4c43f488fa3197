//! Loader scenario files (TOML, `world = "loader"`): nodes, key space, the
//! operation mix, loader behaviour and the swarm's fault kinds. Unknown or
//! mistyped fields, and values outside their documented range
//! (`sim/scenarios/loader.toml`), are errors that name the field.

use cache_core::bugs::{LoaderBug, LoaderBugs};
use cache_core::driver::{MAX_KEYS, MAX_NODES};
use serde::{Deserialize, Serialize};

use crate::scenario::{valid_name, KeyDist, MAX_CLIENTS, MAX_MS, MAX_NAME_LEN, MAX_OPS_PER_CLIENT};

/// The loader's named scenarios.
pub const LOADER_NAMED: &[&str] = &["loader", "loader-faults"];

/// The `world` a loader scenario file declares.
pub const WORLD: &str = "loader";

/// Most local tier entries per node.
pub const MAX_LOCAL: usize = 4096;

/// Most keys one `load_many` asks for.
pub const MAX_BATCH: usize = 16;

/// Relative weights of client operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderOps {
    /// `once(key)`: local, remote, then the loader (L-1).
    pub once: u32,
    /// `get(key)`: the tiers only.
    pub get: u32,
    /// `exists(key)`.
    pub exists: u32,
    /// `set(key, v)`: the database and the cache get a new version.
    pub set: u32,
    /// `delete(key)`: the database loses the key, the cache drops it.
    pub delete: u32,
    /// `load_many(keys)` (L-13).
    pub load_many: u32,
    /// The database changes behind the cache's back (a new version).
    pub change_source: u32,
    /// A waiting caller cancels (L-2).
    pub cancel: u32,
}

impl LoaderOps {
    /// The weights in declaration order (once, get, exists, set, delete,
    /// load_many, change_source, cancel).
    pub fn weights(&self) -> [u32; 8] {
        [
            self.once,
            self.get,
            self.exists,
            self.set,
            self.delete,
            self.load_many,
            self.change_source,
            self.cancel,
        ]
    }
}

impl Default for LoaderOps {
    fn default() -> Self {
        Self {
            once: 60,
            get: 6,
            exists: 3,
            set: 8,
            delete: 6,
            load_many: 12,
            change_source: 5,
            cancel: 6,
        }
    }
}

/// Per-call knobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderCalls {
    /// Probability that a `once` asks for a refresh task (L-9).
    pub refresh: f64,
    /// Probability that a `once` skips the local tier.
    pub skip_local: f64,
    /// Probability that a `set` carries a short TTL (1..=601 ms) instead of the default.
    pub short_ttl: f64,
    /// Most keys in one `load_many`, 1..=16.
    pub batch_max: usize,
}

impl Default for LoaderCalls {
    fn default() -> Self {
        Self {
            refresh: 0.25,
            skip_local: 0.1,
            short_ttl: 0.2,
            batch_max: 4,
        }
    }
}

/// Loader behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderBehaviour {
    /// Weight: reads the database (a value, or not found once deleted).
    pub value: u32,
    /// Weight: fails (L-4: never cached).
    pub fail: u32,
    /// Weight: says not found (L-6 placeholders).
    pub not_found: u32,
    /// Longest ordinary run, simulated ms (each draws 1..=this).
    pub max_duration_ms: u64,
    /// Probability that a loader runs slow: up to `slow_ms` instead.
    pub slow: f64,
    /// Longest slow run, simulated ms.
    pub slow_ms: u64,
    /// Probability that a loader ignores cancellation and writes after its
    /// last waiter left (L-2).
    pub stubborn: f64,
}

impl Default for LoaderBehaviour {
    fn default() -> Self {
        Self {
            value: 75,
            fail: 10,
            not_found: 10,
            max_duration_ms: 150,
            slow: 0.1,
            slow_ms: 1500,
            stubborn: 0.2,
        }
    }
}

/// The swarm: fault kinds a seed may enable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderFaults {
    /// Probability that a seed gets faults at all (then each kind below is
    /// enabled with probability 1/2).
    pub enable: f64,
    /// Upper bound of events per simulated second of an enabled kind.
    pub rate: f64,
    /// The remote fails reads, writes, or both for a while.
    pub remote_error: bool,
    /// Remote calls are slow for a while (flights wait longer to load).
    pub remote_latency: bool,
    /// A node is cut off from the remote for a while.
    pub partition: bool,
    /// The bus drops copies of events.
    pub bus_drop: bool,
    /// The bus duplicates copies of events.
    pub bus_duplicate: bool,
    /// The bus delays and reorders deliveries.
    pub bus_delay: bool,
    /// Publishing fails.
    pub bus_publish_fail: bool,
    /// A node restarts (its local tier and tasks are lost).
    pub node_restart: bool,
    /// The clock jumps forward or back.
    pub clock_jump: bool,
    /// Longest fault window, simulated ms (50..=10^9).
    pub max_duration_ms: u64,
}

impl Default for LoaderFaults {
    fn default() -> Self {
        Self {
            enable: 0.0,
            rate: 1.0,
            remote_error: true,
            remote_latency: true,
            partition: true,
            bus_drop: true,
            bus_duplicate: true,
            bus_delay: true,
            bus_publish_fail: true,
            node_restart: true,
            clock_jump: true,
            max_duration_ms: 800,
        }
    }
}

/// A loader scenario: everything a seed of the loader world needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderScenario {
    /// Its name (reports, file names).
    pub name: String,
    /// Always `"loader"`: what tells a loader scenario file from a call-cache one.
    pub world: String,
    /// Nodes (each with its own local tier), 1..=8.
    pub nodes: usize,
    /// Client streams, 1..=64 (each picks a node per operation).
    pub clients: usize,
    /// Operations per client, 1..=10000.
    pub ops_per_client: usize,
    /// Distinct keys, 1..=64.
    pub key_space: usize,
    /// Key popularity.
    pub key_dist: KeyDist,
    /// Longest pause between two operations of a client, simulated ms.
    pub max_gap_ms: u64,
    /// A remote tier.
    pub remote: bool,
    /// Probability that a seed runs without its remote tier (local tiers
    /// only: writes land locally at once), 0..=1; needs `local_capacity` > 0.
    pub no_remote: f64,
    /// Not-found caching (placeholders).
    pub not_found: bool,
    /// Local tier entries per node, 0..=4096 (0: none; then `remote` must be true).
    pub local_capacity: usize,
    /// Lifetimes get jitter (L-8).
    pub jitter: bool,
    /// Operation weights.
    pub ops: LoaderOps,
    /// Call knobs.
    pub calls: LoaderCalls,
    /// Loader behaviour.
    pub loader: LoaderBehaviour,
    /// Faults.
    pub faults: LoaderFaults,
    /// Loader zoo switches (`--bug`; never read from a file).
    #[serde(skip)]
    pub bugs: LoaderBugs,
}

impl Default for LoaderScenario {
    fn default() -> Self {
        Self {
            name: "loader".into(),
            world: WORLD.into(),
            nodes: 3,
            clients: 6,
            ops_per_client: 30,
            key_space: 12,
            key_dist: KeyDist::Zipf,
            max_gap_ms: 80,
            remote: true,
            no_remote: 0.15,
            not_found: true,
            local_capacity: 6,
            jitter: true,
            ops: LoaderOps::default(),
            calls: LoaderCalls::default(),
            loader: LoaderBehaviour::default(),
            faults: LoaderFaults::default(),
            bugs: LoaderBugs::none(),
        }
    }
}

impl LoaderScenario {
    /// A named loader scenario (see [`LOADER_NAMED`]).
    pub fn named(name: &str) -> Result<LoaderScenario, String> {
        let text = match name {
            "loader" => include_str!("../../scenarios/loader.toml"),
            "loader-faults" => include_str!("../../scenarios/loader-faults.toml"),
            other => {
                return Err(format!(
                    "unknown loader scenario {other:?}; named: {}",
                    LOADER_NAMED.join(", ")
                ))
            }
        };
        LoaderScenario::parse(text)
    }

    /// Parses and validates; the error names the field.
    pub fn parse(text: &str) -> Result<LoaderScenario, String> {
        let s: LoaderScenario =
            toml::from_str(text).map_err(|e| format!("bad loader scenario: {e}"))?;
        s.validate()?;
        Ok(s)
    }

    /// This scenario with the named loader zoo switches on; an unknown name
    /// is an error listing the loader's switches.
    pub fn with_bugs<S: AsRef<str>>(mut self, names: &[S]) -> Result<LoaderScenario, String> {
        for name in names {
            let bug: LoaderBug = name.as_ref().parse().map_err(|_| {
                let known: Vec<&str> = LoaderBug::ALL.iter().map(|b| b.name()).collect();
                format!(
                    "bad --bug {:?}: not a loader switch; the loader's switches are {}",
                    name.as_ref(),
                    known.join(", ")
                )
            })?;
            self.bugs = self.bugs.with(bug);
        }
        Ok(self)
    }

    /// Checks every field against its documented range; the error names
    /// the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, value: String, range: &str| {
            Err(format!(
                "bad loader scenario: field `{key}` is {value}, must be {range}"
            ))
        };
        if !valid_name(&self.name) {
            return bad(
                "name",
                format!("{:?}", self.name),
                &format!("1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 _ -"),
            );
        }
        if self.world != WORLD {
            return bad("world", format!("{:?}", self.world), "\"loader\"");
        }
        for (key, v, lo, hi) in [
            ("nodes", self.nodes as u64, 1, MAX_NODES as u64),
            ("clients", self.clients as u64, 1, MAX_CLIENTS as u64),
            (
                "ops_per_client",
                self.ops_per_client as u64,
                1,
                MAX_OPS_PER_CLIENT as u64,
            ),
            ("key_space", self.key_space as u64, 1, MAX_KEYS as u64),
            ("max_gap_ms", self.max_gap_ms, 0, MAX_MS),
            (
                "local_capacity",
                self.local_capacity as u64,
                0,
                MAX_LOCAL as u64,
            ),
            (
                "calls.batch_max",
                self.calls.batch_max as u64,
                1,
                MAX_BATCH as u64,
            ),
            (
                "loader.max_duration_ms",
                self.loader.max_duration_ms,
                1,
                MAX_MS,
            ),
            ("loader.slow_ms", self.loader.slow_ms, 1, MAX_MS),
            (
                "faults.max_duration_ms",
                self.faults.max_duration_ms,
                crate::scenario::MIN_FAULT_MS,
                MAX_MS,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                return bad(key, v.to_string(), &format!("in {lo}..={hi}"));
            }
        }
        if self.local_capacity == 0 && (!self.remote || self.no_remote > 0.0) {
            return bad(
                "local_capacity",
                "0".into(),
                "at least 1 when `remote` is false or `no_remote` above 0 (a loader needs one tier)",
            );
        }
        for (key, p) in [
            ("no_remote", self.no_remote),
            ("calls.refresh", self.calls.refresh),
            ("calls.skip_local", self.calls.skip_local),
            ("calls.short_ttl", self.calls.short_ttl),
            ("loader.slow", self.loader.slow),
            ("loader.stubborn", self.loader.stubborn),
            ("faults.enable", self.faults.enable),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(key, p.to_string(), "a finite probability in 0..=1");
            }
        }
        if !(0.0..=crate::scenario::MAX_FAULT_RATE).contains(&self.faults.rate) {
            return bad(
                "faults.rate",
                self.faults.rate.to_string(),
                "a finite rate in 0..=100 events per simulated second",
            );
        }
        if self
            .ops
            .weights()
            .iter()
            .map(|w| u64::from(*w))
            .sum::<u64>()
            == 0
        {
            return Err(
                "bad loader scenario: the weights in `[ops]` (once, get, exists, set, \
                        delete, load_many, change_source, cancel) are all 0; at least one must \
                        be non-zero"
                    .into(),
            );
        }
        let l = &self.loader;
        if [l.value, l.fail, l.not_found]
            .iter()
            .map(|w| u64::from(*w))
            .sum::<u64>()
            == 0
        {
            return Err(
                "bad loader scenario: the weights in `[loader]` (value, fail, \
                        not_found) are all 0; at least one must be non-zero"
                    .into(),
            );
        }
        Ok(())
    }
}
