//! A loader seed's plan: the swarm (which fault kinds this seed enables)
//! and one timed list of client operations and fault windows, every draw
//! from the seed. The list is flat so that shrinking can drop any entry:
//! a fault's end without its start is a no-op, a start without its end
//! lasts until the heal.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::scenario::LoaderScenario;
use crate::rng::Rng;
use crate::scenario::{KeyDist, MIN_FAULT_MS};

/// What a loader call answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// Reads the database: its version, or not found once deleted.
    Read,
    /// Fails.
    Fail,
    /// Not found.
    NotFound,
}

/// How one loader call behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behave {
    /// Its answer.
    pub answer: Answer,
    /// How long it runs, simulated ms.
    pub dur_ms: u64,
    /// It ignores cancellation (finishes and writes after its last waiter left).
    pub stubborn: bool,
}

impl Behave {
    /// A draw from the scenario's loader mix.
    pub fn draw(rng: &mut Rng, s: &LoaderScenario) -> Behave {
        let l = &s.loader;
        let answer = match rng.weighted(&[l.value, l.fail, l.not_found]) {
            0 => Answer::Read,
            1 => Answer::Fail,
            _ => Answer::NotFound,
        };
        let max = if rng.chance(l.slow) {
            l.slow_ms
        } else {
            l.max_duration_ms
        };
        Behave {
            answer,
            dur_ms: rng.range(1, max.max(1)),
            stubborn: rng.chance(l.stubborn),
        }
    }
}

/// A fault kind of the loader swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoaderFault {
    /// The remote fails reads (arg 0), writes (1) or everything (2).
    RemoteError,
    /// Remote calls take `arg` ms.
    RemoteLatency,
    /// A node is cut off from the remote.
    Partition,
    /// The bus drops half the copies.
    BusDrop,
    /// The bus duplicates half the copies.
    BusDuplicate,
    /// The bus delays and reorders deliveries.
    BusDelay,
    /// Publishing fails.
    BusPublishFail,
    /// A node restarts (no window: `off` is a no-op).
    NodeRestart,
    /// The clock jumps by `arg` ms (back when negative; no window).
    ClockJump,
}

impl LoaderFault {
    /// Every kind, in a fixed order.
    pub const ALL: [LoaderFault; 9] = [
        LoaderFault::RemoteError,
        LoaderFault::RemoteLatency,
        LoaderFault::Partition,
        LoaderFault::BusDrop,
        LoaderFault::BusDuplicate,
        LoaderFault::BusDelay,
        LoaderFault::BusPublishFail,
        LoaderFault::NodeRestart,
        LoaderFault::ClockJump,
    ];

    /// Its name in traces and counters.
    pub fn name(self) -> &'static str {
        match self {
            LoaderFault::RemoteError => "remote-error",
            LoaderFault::RemoteLatency => "remote-latency",
            LoaderFault::Partition => "partition",
            LoaderFault::BusDrop => "bus-drop",
            LoaderFault::BusDuplicate => "bus-duplicate",
            LoaderFault::BusDelay => "bus-delay",
            LoaderFault::BusPublishFail => "bus-publish-fail",
            LoaderFault::NodeRestart => "node-restart",
            LoaderFault::ClockJump => "clock-jump",
        }
    }

    fn enabled_in(self, s: &LoaderScenario, remote: bool) -> bool {
        let f = &s.faults;
        match self {
            LoaderFault::RemoteError => f.remote_error && remote,
            LoaderFault::RemoteLatency => f.remote_latency && remote,
            LoaderFault::Partition => f.partition && remote,
            LoaderFault::BusDrop => f.bus_drop,
            LoaderFault::BusDuplicate => f.bus_duplicate,
            LoaderFault::BusDelay => f.bus_delay,
            LoaderFault::BusPublishFail => f.bus_publish_fail,
            LoaderFault::NodeRestart => f.node_restart,
            LoaderFault::ClockJump => f.clock_jump,
        }
    }

    /// Whether the fault holds for a window (else it happens at once).
    pub fn has_window(self) -> bool {
        !matches!(self, LoaderFault::NodeRestart | LoaderFault::ClockJump)
    }
}

/// One planned operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PlanOp {
    /// `once(key)` on a node; `loader` is its loader if it leads the flight.
    Once {
        /// Node.
        node: usize,
        /// Key index.
        key: usize,
        /// Ask for a refresh task.
        refresh: bool,
        /// Skip the local tier.
        skip_local: bool,
        /// The loader's behaviour.
        loader: Behave,
    },
    /// `get(key)`.
    Get {
        /// Node.
        node: usize,
        /// Key index.
        key: usize,
    },
    /// `exists(key)`.
    Exists {
        /// Node.
        node: usize,
        /// Key index.
        key: usize,
    },
    /// `set(key)`: the database gets a new version, the cache that value.
    Set {
        /// Node.
        node: usize,
        /// Key index.
        key: usize,
        /// A TTL of `1 + 10·t` ms instead of the default.
        ttl: Option<u8>,
    },
    /// `delete(key)`: the database loses the key, the cache drops it.
    Delete {
        /// Node.
        node: usize,
        /// Key index.
        key: usize,
    },
    /// `load_many(keys)`.
    LoadMany {
        /// Node.
        node: usize,
        /// Key indexes.
        keys: Vec<usize>,
        /// The batch loader's behaviour.
        loader: Behave,
    },
    /// The database changes behind the cache's back.
    ChangeSource {
        /// Key index.
        key: usize,
    },
    /// A waiter leaves: the `waiter`-th of the `which`-th flight with waiters.
    Cancel {
        /// Which flight (modulo those with waiters).
        which: u8,
        /// Which waiter.
        waiter: u8,
    },
    /// A fault starts (`on`) or ends.
    Fault {
        /// Its kind.
        kind: LoaderFault,
        /// The node it concerns (partition, restart).
        node: usize,
        /// Its argument (see [`LoaderFault`]).
        arg: i64,
        /// Starts or ends.
        on: bool,
    },
}

/// A planned operation and its time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timed {
    /// Simulated ms.
    pub at_ms: u64,
    /// What happens.
    pub op: PlanOp,
}

/// The fault kinds a seed enables, with their rates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderSwarm {
    /// Enabled kinds with their events per simulated second.
    pub enabled: Vec<(LoaderFault, f64)>,
}

impl fmt::Display for LoaderSwarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::plan::write_swarm(f, self.enabled.iter().map(|(k, r)| (k.name(), *r)))
    }
}

/// Everything one loader simulation runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderPlan {
    /// The seed (it also seeds jitter, bus draws, refresh loaders and the
    /// database's first versions).
    pub seed: u64,
    /// This seed has the remote tier (see `no_remote`).
    pub remote: bool,
    /// The swarm.
    pub swarm: LoaderSwarm,
    /// Operations and faults, by time.
    pub ops: Vec<Timed>,
}

impl LoaderPlan {
    /// The plan of `seed` under `s`.
    pub fn generate(seed: u64, s: &LoaderScenario) -> LoaderPlan {
        let remote = s.remote && !Rng::new(seed, "loader-remote").chance(s.no_remote);
        let swarm = swarm(seed, s, remote);
        let mut ops = Vec::new();
        let mut end = 0u64;
        for c in 0..s.clients {
            let mut rng = Rng::new(seed, &format!("loader-client-{c}"));
            let mut t = rng.range(0, s.max_gap_ms);
            for _ in 0..s.ops_per_client {
                ops.push(Timed {
                    at_ms: t,
                    op: client_op(&mut rng, s),
                });
                end = end.max(t);
                t = t.saturating_add(rng.range(0, s.max_gap_ms));
            }
        }
        let mut rng = Rng::new(seed, "loader-faults");
        let span_s = (end as f64 / 1000.0).max(0.5);
        for &(kind, rate) in &swarm.enabled {
            let count = (rate * span_s).round() as u64 + u64::from(rng.chance(0.5));
            for _ in 0..count {
                let at = rng.range(0, end);
                let node = rng.below(s.nodes as u64) as usize;
                let arg = match kind {
                    LoaderFault::RemoteError => rng.below(3) as i64,
                    LoaderFault::RemoteLatency => rng.range(5, 300) as i64,
                    LoaderFault::ClockJump => {
                        let ms = rng.range(1, 2_000) as i64;
                        if rng.chance(0.5) {
                            -ms
                        } else {
                            ms
                        }
                    }
                    _ => 0,
                };
                ops.push(Timed {
                    at_ms: at,
                    op: PlanOp::Fault {
                        kind,
                        node,
                        arg,
                        on: true,
                    },
                });
                if kind.has_window() {
                    let dur = rng.range(MIN_FAULT_MS, s.faults.max_duration_ms);
                    ops.push(Timed {
                        at_ms: at.saturating_add(dur),
                        op: PlanOp::Fault {
                            kind,
                            node,
                            arg,
                            on: false,
                        },
                    });
                }
            }
        }
        // Stable: equal times keep their generation order.
        ops.sort_by_key(|t| t.at_ms);
        LoaderPlan {
            seed,
            remote,
            swarm,
            ops,
        }
    }

    /// How many operations the plan has (what shrinking reduces).
    pub fn size(&self) -> usize {
        self.ops.len()
    }
}

fn swarm(seed: u64, s: &LoaderScenario, remote: bool) -> LoaderSwarm {
    let mut rng = Rng::new(seed, "loader-swarm");
    if s.faults.rate <= 0.0 || !rng.chance(s.faults.enable) {
        return LoaderSwarm::default();
    }
    let enabled = LoaderFault::ALL
        .into_iter()
        .filter(|k| k.enabled_in(s, remote))
        .filter_map(|k| {
            let on = rng.chance(0.5);
            let rate = s.faults.rate * (0.25 + 0.75 * rng.below(1000) as f64 / 1000.0);
            on.then_some((k, rate))
        })
        .collect();
    LoaderSwarm { enabled }
}

fn key(rng: &mut Rng, s: &LoaderScenario) -> usize {
    let n = s.key_space as u64;
    (match s.key_dist {
        KeyDist::Uniform => rng.below(n),
        KeyDist::Zipf => rng.zipf(n),
    }) as usize
}

fn client_op(rng: &mut Rng, s: &LoaderScenario) -> PlanOp {
    let node = rng.below(s.nodes as u64) as usize;
    match rng.weighted(&s.ops.weights()) {
        0 => PlanOp::Once {
            node,
            key: key(rng, s),
            refresh: rng.chance(s.calls.refresh),
            skip_local: rng.chance(s.calls.skip_local),
            loader: Behave::draw(rng, s),
        },
        1 => PlanOp::Get {
            node,
            key: key(rng, s),
        },
        2 => PlanOp::Exists {
            node,
            key: key(rng, s),
        },
        3 => PlanOp::Set {
            node,
            key: key(rng, s),
            ttl: rng.chance(s.calls.short_ttl).then(|| rng.below(61) as u8),
        },
        4 => PlanOp::Delete {
            node,
            key: key(rng, s),
        },
        5 => {
            let n = rng.range(1, s.calls.batch_max as u64);
            let mut keys: Vec<usize> = (0..n).map(|_| key(rng, s)).collect();
            keys.sort_unstable();
            keys.dedup();
            PlanOp::LoadMany {
                node,
                keys,
                loader: Behave::draw(rng, s),
            }
        }
        6 => PlanOp::ChangeSource { key: key(rng, s) },
        _ => PlanOp::Cancel {
            which: rng.below(256) as u8,
            waiter: rng.below(256) as u8,
        },
    }
}
