//! A seed's plan for the `loader-net` world: each client stream's
//! operations (Zipf keys) and the swarm's timed faults. Everything is drawn
//! here, from the seed, before the simulation starts; what the hosts draw
//! while running (loader behaviour, bus copy fates) comes from generators
//! seeded from it too.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::scenario::{KeyDist, MIN_FAULT_MS};

use super::scenario::NetScenario;

/// One client operation (in plan files: `{ once = 3 }`, `{ load_many = [1, 2] }`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetOpKind {
    /// `once(key)`.
    Once(u64),
    /// The database gets a new version of the key; then `set(key, it)`.
    Set(u64),
    /// The database loses the key; then `delete(key)`.
    Delete(u64),
    /// `load_many(keys)` (duplicates allowed: the loader de-duplicates).
    LoadMany(Vec<u64>),
    /// The database gets a new version of the key; the cache is not told.
    ChangeSource(u64),
    /// `once(key)` with refresh-ahead on (L-9): the key gets a refresh task.
    OnceRefresh(u64),
    /// `once(key)` whose caller gives up after the given ms (L-2).
    OnceGiveUp(u64, u64),
}

impl NetOpKind {
    /// The key indexes it touches.
    pub fn keys(&self) -> Vec<u64> {
        match self {
            Self::Once(k)
            | Self::Set(k)
            | Self::Delete(k)
            | Self::ChangeSource(k)
            | Self::OnceRefresh(k)
            | Self::OnceGiveUp(k, _) => vec![*k],
            Self::LoadMany(ks) => ks.clone(),
        }
    }
}

/// An operation after a pause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetOp {
    /// Pause before it, simulated ms.
    pub gap_ms: u64,
    /// What it does.
    pub kind: NetOpKind,
}

/// A fault kind of the swarm (in plan files by its [`name`](Self::name)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetFaultKind {
    /// Node ↔ remote partition for a window.
    PartitionRemote,
    /// Node ↔ bus partition for a window.
    PartitionBus,
    /// Node ↔ remote link holds messages for a window.
    HoldRemote,
    /// Every message up to `arg` ms late for a window.
    Latency,
    /// The remote fails reads (`arg` 0), writes (1) or both (2) for a window.
    RemoteError,
    /// The remote answers `arg` ms late for a window.
    RemoteSlow,
    /// The bus host drops `arg` per mille of copies for a window.
    BusDrop,
    /// The bus host writes `arg` per mille of copies twice for a window.
    BusDuplicate,
    /// The bus host delays copies by up to `arg` ms for a window.
    BusDelay,
    /// A node restarts.
    NodeRestart,
    /// The clock jumps by `arg` ms.
    ClockJump,
}

impl NetFaultKind {
    /// Every kind.
    pub const ALL: [NetFaultKind; 11] = [
        Self::PartitionRemote,
        Self::PartitionBus,
        Self::HoldRemote,
        Self::Latency,
        Self::RemoteError,
        Self::RemoteSlow,
        Self::BusDrop,
        Self::BusDuplicate,
        Self::BusDelay,
        Self::NodeRestart,
        Self::ClockJump,
    ];

    /// Its name in traces and in the scenario's `[faults]` table.
    pub fn name(self) -> &'static str {
        match self {
            Self::PartitionRemote => "partition_remote",
            Self::PartitionBus => "partition_bus",
            Self::HoldRemote => "hold_remote",
            Self::Latency => "latency",
            Self::RemoteError => "remote_error",
            Self::RemoteSlow => "remote_slow",
            Self::BusDrop => "bus_drop",
            Self::BusDuplicate => "bus_duplicate",
            Self::BusDelay => "bus_delay",
            Self::NodeRestart => "node_restart",
            Self::ClockJump => "clock_jump",
        }
    }

    fn enabled_in(self, s: &NetScenario) -> bool {
        let f = &s.faults;
        match self {
            Self::PartitionRemote => f.partition_remote,
            Self::PartitionBus => f.partition_bus,
            Self::HoldRemote => f.hold_remote,
            Self::Latency => f.latency,
            Self::RemoteError => f.remote_error,
            Self::RemoteSlow => f.remote_slow,
            Self::BusDrop => f.bus_drop,
            Self::BusDuplicate => f.bus_duplicate,
            Self::BusDelay => f.bus_delay,
            Self::NodeRestart => f.node_restart,
            Self::ClockJump => f.clock_jump,
        }
    }

    /// Whether it lasts a window (else it is one instant).
    pub fn has_window(self) -> bool {
        !matches!(self, Self::NodeRestart | Self::ClockJump)
    }
}

/// One timed fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetFault {
    /// When, simulated ms.
    pub at_ms: u64,
    /// What.
    pub kind: NetFaultKind,
    /// Which node (for the per-node kinds).
    pub node: usize,
    /// The kind's argument (see [`NetFaultKind`]).
    pub arg: i64,
    /// How long its window lasts, simulated ms (0 for instants).
    pub dur_ms: u64,
}

/// A seed's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetPlan {
    /// The seed.
    pub seed: u64,
    /// Operations of stream `s` of node `n` at index `n * streams_per_node + s`.
    pub streams: Vec<Vec<NetOp>>,
    /// The enabled fault kinds.
    pub swarm: Vec<NetFaultKind>,
    /// Faults by time.
    pub faults: Vec<NetFault>,
    /// When every fault is repaired, simulated ms.
    pub heal_at_ms: u64,
}

impl fmt::Display for NetPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.swarm.iter().map(|k| k.name()).collect();
        write!(
            f,
            "swarm: [{}], {} faults, heal at {} ms",
            names.join(", "),
            self.faults.len(),
            self.heal_at_ms
        )
    }
}

fn key(rng: &mut Rng, s: &NetScenario) -> u64 {
    let n = s.key_space as u64;
    match s.key_dist {
        KeyDist::Uniform => rng.below(n),
        KeyDist::Zipf => rng.zipf(n),
    }
}

impl NetPlan {
    /// The plan of `seed` under `s`.
    pub fn generate(seed: u64, s: &NetScenario) -> NetPlan {
        let mut rng = Rng::new(seed, "loader-net-ops");
        let n_streams = s.nodes * s.streams_per_node;
        let streams: Vec<Vec<NetOp>> = (0..n_streams)
            .map(|_| {
                (0..s.ops_per_stream)
                    .map(|_| {
                        let gap_ms = rng.range(0, s.max_gap_ms);
                        let kind = match rng.weighted(&s.ops.weights()) {
                            0 => NetOpKind::Once(key(&mut rng, s)),
                            1 => NetOpKind::Set(key(&mut rng, s)),
                            2 => NetOpKind::Delete(key(&mut rng, s)),
                            3 => {
                                let n = rng.range(1, s.batch_max as u64);
                                NetOpKind::LoadMany((0..n).map(|_| key(&mut rng, s)).collect())
                            }
                            4 => NetOpKind::ChangeSource(key(&mut rng, s)),
                            5 => NetOpKind::OnceRefresh(key(&mut rng, s)),
                            _ => {
                                let k = key(&mut rng, s);
                                NetOpKind::OnceGiveUp(k, rng.range(1, s.give_up_ms))
                            }
                        };
                        NetOp { gap_ms, kind }
                    })
                    .collect()
            })
            .collect();
        // The faults fall within the time the streams' pauses alone take.
        let horizon = (s.ops_per_stream as u64)
            .saturating_mul(s.max_gap_ms / 2 + 30)
            .max(1_000);
        let mut rng = Rng::new(seed, "loader-net-swarm");
        let mut swarm = Vec::new();
        let mut faults = Vec::new();
        if s.faults.rate > 0.0 && rng.chance(s.faults.enable) {
            for kind in NetFaultKind::ALL {
                if !kind.enabled_in(s) || !rng.chance(0.5) {
                    continue;
                }
                swarm.push(kind);
                let rate = s.faults.rate * (0.25 + 0.75 * rng.below(1000) as f64 / 1000.0);
                let count = ((horizon as f64 / 1000.0) * rate).ceil() as u64;
                for _ in 0..count.min(10_000) {
                    let at_ms = rng.range(0, horizon);
                    let node = rng.below(s.nodes as u64) as usize;
                    let arg = match kind {
                        NetFaultKind::Latency => rng.range(40, 400) as i64,
                        NetFaultKind::RemoteError => rng.below(3) as i64,
                        NetFaultKind::RemoteSlow => rng.range(5, 400) as i64,
                        NetFaultKind::BusDrop => rng.range(100, 1000) as i64,
                        NetFaultKind::BusDuplicate => rng.range(100, 1000) as i64,
                        NetFaultKind::BusDelay => rng.range(10, 1500) as i64,
                        NetFaultKind::ClockJump => {
                            let ms = rng.range(1, 3_000) as i64;
                            if rng.chance(0.5) {
                                -ms
                            } else {
                                ms
                            }
                        }
                        _ => 0,
                    };
                    let dur_ms = if kind.has_window() {
                        rng.range(MIN_FAULT_MS, s.faults.max_duration_ms)
                    } else {
                        0
                    };
                    faults.push(NetFault {
                        at_ms,
                        kind,
                        node,
                        arg,
                        dur_ms,
                    });
                }
            }
        }
        // Stable: equal times keep their generation order.
        faults.sort_by_key(|f| f.at_ms);
        NetPlan {
            seed,
            streams,
            swarm,
            faults,
            heal_at_ms: horizon.saturating_add(s.faults.max_duration_ms),
        }
    }
}
