//! The `loader-net` scenario file (TOML, `world = "loader-net"`): nodes,
//! client streams, key space, the operation mix, loader behaviour, the
//! loader's lifetimes and the swarm's fault kinds. Unknown or mistyped
//! fields and values outside their documented range
//! (`sim/scenarios/loader-net.toml`) are errors naming the field.

use cache_core::bugs::LoaderBugs;
use serde::{Deserialize, Serialize};

use crate::scenario::{valid_name, KeyDist, MAX_FAULT_RATE, MAX_MS, MAX_NAME_LEN, MIN_FAULT_MS};

/// The named `loader-net` scenarios.
pub const NET_NAMED: &[&str] = &["loader-net"];

/// The `world` a `loader-net` scenario file declares.
pub const WORLD: &str = "loader-net";

/// Most nodes (each a turmoil host with its own loader).
pub const MAX_NODES: usize = 8;
/// Most client streams per node.
pub const MAX_STREAMS: usize = 16;
/// Most operations per stream.
pub const MAX_OPS: usize = 10_000;
/// Most distinct keys.
pub const MAX_KEYS: usize = 64;
/// Most local tier entries per node.
pub const MAX_LOCAL: usize = 4096;
/// Most keys one `load_many` asks for.
pub const MAX_BATCH: usize = 16;
/// Shortest remote/bus call timeout, ms (below it a healthy link at the
/// highest latency fault could not answer).
pub const MIN_TIMEOUT_MS: u64 = 100;
/// Longest remote/bus call timeout, ms.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Most refresh loads at once per node.
pub const MAX_REFRESH_CONCURRENCY: usize = 64;
/// Most refresh tasks per node.
pub const MAX_REFRESH_TASKS: usize = 4096;

/// Relative weights of client operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetOps {
    /// `once(key)`: local, remote, then the loader.
    pub once: u32,
    /// `set(key, v)`: the database and the cache get a new version.
    pub set: u32,
    /// `delete(key)`: the database loses the key, the cache drops it.
    pub delete: u32,
    /// `load_many(keys)` (L-13).
    pub load_many: u32,
    /// The database changes behind the cache's back (a new version).
    pub change_source: u32,
    /// `once(key)` with refresh-ahead on (L-9, L-10): the key gets a
    /// refresh task.
    pub once_refresh: u32,
    /// `once(key)` whose caller gives up after up to `give_up_ms` (L-2:
    /// it leaves the flight, which is cancelled when nobody else waits).
    pub once_give_up: u32,
}

impl NetOps {
    /// The weights in declaration order.
    pub fn weights(&self) -> [u32; 7] {
        [
            self.once,
            self.set,
            self.delete,
            self.load_many,
            self.change_source,
            self.once_refresh,
            self.once_give_up,
        ]
    }
}

impl Default for NetOps {
    fn default() -> Self {
        Self {
            once: 65,
            set: 10,
            delete: 6,
            load_many: 12,
            change_source: 7,
            once_refresh: 10,
            once_give_up: 6,
        }
    }
}

/// Loader behaviour, drawn per loader call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetLoaderMix {
    /// Weight: reads the database (a value, or not found once deleted).
    pub value: u32,
    /// Weight: fails (never cached, L-4).
    pub fail: u32,
    /// Weight: says not found (L-6 placeholders).
    pub not_found: u32,
    /// Longest ordinary run, simulated ms (each draws 1..=this), 1..=10^9.
    pub max_duration_ms: u64,
    /// Probability that a call runs slow (up to `slow_ms`), 0..=1.
    pub slow: f64,
    /// Longest slow run, simulated ms, 1..=10^9.
    pub slow_ms: u64,
    /// Probability that a call ignores cancellation, 0..=1: its work runs
    /// on after the loader dropped it (a caller gave up, close), and its
    /// late result goes nowhere.
    pub ignore_cancel: f64,
}

impl Default for NetLoaderMix {
    fn default() -> Self {
        Self {
            value: 80,
            fail: 10,
            not_found: 10,
            max_duration_ms: 120,
            slow: 0.1,
            slow_ms: 1_500,
            ignore_cancel: 0.3,
        }
    }
}

/// Refresh-ahead (L-9, L-10): the loader's refresh options on every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetRefresh {
    /// Refresh period (and remote lock window), ms, 1..=10^9.
    pub interval_ms: u64,
    /// Most refresh loads at once per node, 1..=64.
    pub concurrency: usize,
    /// Most refresh tasks per node, 1..=4096.
    pub tasks_max: usize,
    /// A task stops once its key is unread this long, ms, 1..=10^9.
    pub idle_ms: u64,
}

impl Default for NetRefresh {
    fn default() -> Self {
        Self {
            interval_ms: 300,
            concurrency: 2,
            tasks_max: 4,
            idle_ms: 700,
        }
    }
}

/// The swarm: fault kinds a seed may enable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetFaults {
    /// Probability that a seed gets faults at all (then each kind below
    /// is enabled with probability 1/2), 0..=1.
    pub enable: f64,
    /// Upper bound of events per simulated second of an enabled kind, 0..=100.
    pub rate: f64,
    /// A node is cut off from the remote host (turmoil `partition`).
    pub partition_remote: bool,
    /// A node is cut off from the bus host.
    pub partition_bus: bool,
    /// The link between a node and the remote host holds its messages
    /// (turmoil `hold`), released at the window's end.
    pub hold_remote: bool,
    /// Every message is slow (turmoil's max message latency).
    pub latency: bool,
    /// The remote fails reads, writes, or both.
    pub remote_error: bool,
    /// The remote answers slowly.
    pub remote_slow: bool,
    /// The bus host drops copies of events.
    pub bus_drop: bool,
    /// The bus host writes copies twice.
    pub bus_duplicate: bool,
    /// The bus host delays copies (and so reorders them).
    pub bus_delay: bool,
    /// A node restarts (turmoil `bounce`: its local tier and tasks are lost).
    pub node_restart: bool,
    /// The clock every host reads jumps forward or back.
    pub clock_jump: bool,
    /// Longest fault window, simulated ms, 50..=10^9.
    pub max_duration_ms: u64,
}

impl Default for NetFaults {
    fn default() -> Self {
        Self {
            enable: 0.0,
            rate: 1.0,
            partition_remote: true,
            partition_bus: true,
            hold_remote: true,
            latency: true,
            remote_error: true,
            remote_slow: true,
            bus_drop: true,
            bus_duplicate: true,
            bus_delay: true,
            node_restart: true,
            clock_jump: true,
            max_duration_ms: 800,
        }
    }
}

/// A `loader-net` scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetScenario {
    /// Its name (reports, file names).
    pub name: String,
    /// Always `"loader-net"`.
    pub world: String,
    /// Node hosts, 1..=8.
    pub nodes: usize,
    /// Client streams per node, 1..=16.
    pub streams_per_node: usize,
    /// Operations per stream, 1..=10000.
    pub ops_per_stream: usize,
    /// Distinct keys, 1..=64.
    pub key_space: usize,
    /// Key popularity.
    pub key_dist: KeyDist,
    /// Longest pause between two operations of a stream, simulated ms, 0..=10^9.
    pub max_gap_ms: u64,
    /// Local tier entries per node, 1..=4096.
    pub local_capacity: usize,
    /// Value lifetime, ms, 1..=10^9.
    pub ttl_ms: u64,
    /// Longest local copy lifetime, ms, 1..=10^9.
    pub local_ttl_ms: u64,
    /// Placeholder lifetime, ms, 1..=10^9.
    pub not_found_ttl_ms: u64,
    /// Lifetime jitter, ms, 0..=10^9.
    pub jitter_ms: u64,
    /// Probability that a read or write asks a short lifetime of its own
    /// (`CallOptions::ttl_ms`), 0..=1: such records expire within a run.
    pub short_ttl: f64,
    /// Longest such lifetime, ms (each draws 1..=this), 1..=10^9.
    pub short_ttl_ms: u64,
    /// Longest a giving-up caller waits, ms (each draws 1..=this), 1..=10^9.
    pub give_up_ms: u64,
    /// Remote and bus call timeout, ms, 100..=60000.
    pub timeout_ms: u64,
    /// Most keys in one `load_many`, 1..=16.
    pub batch_max: usize,
    /// Operation weights.
    pub ops: NetOps,
    /// Loader behaviour.
    pub loader: NetLoaderMix,
    /// Refresh-ahead.
    pub refresh: NetRefresh,
    /// Faults.
    pub faults: NetFaults,
    /// The loader zoo's switches on in every node's loader (`--bug NAME`;
    /// never read from a file).
    #[serde(skip)]
    pub bugs: LoaderBugs,
}

impl Default for NetScenario {
    fn default() -> Self {
        Self {
            name: "loader-net".into(),
            world: WORLD.into(),
            nodes: 3,
            streams_per_node: 2,
            ops_per_stream: 25,
            key_space: 10,
            key_dist: KeyDist::Zipf,
            max_gap_ms: 120,
            local_capacity: 8,
            ttl_ms: 4_000,
            local_ttl_ms: 2_000,
            not_found_ttl_ms: 1_000,
            jitter_ms: 200,
            short_ttl: 0.3,
            short_ttl_ms: 800,
            give_up_ms: 300,
            timeout_ms: 600,
            batch_max: 4,
            ops: NetOps::default(),
            loader: NetLoaderMix::default(),
            refresh: NetRefresh::default(),
            faults: NetFaults::default(),
            bugs: LoaderBugs::none(),
        }
    }
}

impl NetScenario {
    /// A named scenario (see [`NET_NAMED`]).
    pub fn named(name: &str) -> Result<NetScenario, String> {
        match name {
            "loader-net" => NetScenario::parse(include_str!("../../scenarios/loader-net.toml")),
            other => Err(format!(
                "unknown loader-net scenario {other:?}; named: {}",
                NET_NAMED.join(", ")
            )),
        }
    }

    /// This scenario with the named loader zoo switches on; an unknown
    /// name is an error naming `--bug`, this world and the known ones.
    pub fn with_bugs<S: AsRef<str>>(mut self, names: &[S]) -> Result<NetScenario, String> {
        // One parser of the loader's switch names: the modelled world's.
        let parsed = crate::loader::LoaderScenario::default()
            .with_bugs(names)
            .map_err(|e| format!("{e} (scenario world loader-net)"))?;
        for bug in parsed.bugs.iter() {
            self.bugs = self.bugs.with(bug);
        }
        Ok(self)
    }

    /// Parses and validates; the error names the field.
    pub fn parse(text: &str) -> Result<NetScenario, String> {
        let s: NetScenario =
            toml::from_str(text).map_err(|e| format!("bad loader-net scenario: {e}"))?;
        s.validate()?;
        Ok(s)
    }

    /// Checks every field against its documented range; the error names
    /// the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, value: String, range: &str| {
            Err(format!(
                "bad loader-net scenario: field `{key}` is {value}, must be {range}"
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
            return bad("world", format!("{:?}", self.world), "\"loader-net\"");
        }
        for (key, v, lo, hi) in [
            ("nodes", self.nodes as u64, 1, MAX_NODES as u64),
            (
                "streams_per_node",
                self.streams_per_node as u64,
                1,
                MAX_STREAMS as u64,
            ),
            (
                "ops_per_stream",
                self.ops_per_stream as u64,
                1,
                MAX_OPS as u64,
            ),
            ("key_space", self.key_space as u64, 1, MAX_KEYS as u64),
            ("max_gap_ms", self.max_gap_ms, 0, MAX_MS),
            (
                "local_capacity",
                self.local_capacity as u64,
                1,
                MAX_LOCAL as u64,
            ),
            ("ttl_ms", self.ttl_ms, 1, MAX_MS),
            ("local_ttl_ms", self.local_ttl_ms, 1, MAX_MS),
            ("not_found_ttl_ms", self.not_found_ttl_ms, 1, MAX_MS),
            ("jitter_ms", self.jitter_ms, 0, MAX_MS),
            ("short_ttl_ms", self.short_ttl_ms, 1, MAX_MS),
            ("give_up_ms", self.give_up_ms, 1, MAX_MS),
            ("refresh.interval_ms", self.refresh.interval_ms, 1, MAX_MS),
            (
                "refresh.concurrency",
                self.refresh.concurrency as u64,
                1,
                MAX_REFRESH_CONCURRENCY as u64,
            ),
            (
                "refresh.tasks_max",
                self.refresh.tasks_max as u64,
                1,
                MAX_REFRESH_TASKS as u64,
            ),
            ("refresh.idle_ms", self.refresh.idle_ms, 1, MAX_MS),
            (
                "timeout_ms",
                self.timeout_ms,
                MIN_TIMEOUT_MS,
                MAX_TIMEOUT_MS,
            ),
            ("batch_max", self.batch_max as u64, 1, MAX_BATCH as u64),
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
                MIN_FAULT_MS,
                MAX_MS,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                return bad(key, v.to_string(), &format!("in {lo}..={hi}"));
            }
        }
        for (key, p) in [
            ("loader.slow", self.loader.slow),
            ("loader.ignore_cancel", self.loader.ignore_cancel),
            ("short_ttl", self.short_ttl),
            ("faults.enable", self.faults.enable),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(key, p.to_string(), "a finite probability in 0..=1");
            }
        }
        if !(0.0..=MAX_FAULT_RATE).contains(&self.faults.rate) {
            return bad(
                "faults.rate",
                self.faults.rate.to_string(),
                "a finite rate in 0..=100 events per simulated second",
            );
        }
        if self.ops.weights().iter().all(|w| *w == 0) {
            return Err(
                "bad loader-net scenario: the weights in `[ops]` (once, set, delete, \
                        load_many, change_source, once_refresh, once_give_up) are all 0; at \
                        least one must be non-zero"
                    .into(),
            );
        }
        let l = &self.loader;
        if [l.value, l.fail, l.not_found].iter().all(|w| *w == 0) {
            return Err(
                "bad loader-net scenario: the weights in `[loader]` (value, fail, \
                        not_found) are all 0; at least one must be non-zero"
                    .into(),
            );
        }
        Ok(())
    }
}
