//! The `loader-net` oracles: LINV-1 … LINV-8, judged from the hosts'
//! observation log ([`Obs`]) and the loaders' own accessors, between
//! simulation steps and at the end — never inside a host. Every verdict is
//! typed ([`Verdict`]); its text is for people.

use std::collections::{BTreeMap, BTreeSet};

use cache_core::loader::keys::parse_stored_key;
use cache_core::loader::record::{Payload, Record};
use cache_core::loader::{Codec, Loader, MemoryRemote};

use super::scenario::NetRefresh;
use super::world::{index_of, key_of, node_name, Closed, Db, DbValue, Flight, NodeSlot, Obs};

/// Sim ms a refresh ticker may lag behind the moment its task became due
/// to stop, beyond one refresh interval: simulated time moves a tick
/// (`crate::run::TICK_MS`) per step, so a timer fires up to a step late.
pub const TICKER_SLACK_MS: u64 = 3 * crate::run::TICK_MS;

/// One violated invariant, with what the oracle saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// LINV-1: a second loader call for `flight` started on one node
    /// incarnation while one was in flight.
    SecondFlight {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
        /// The flight.
        flight: Flight,
    },
    /// LINV-2: a value the database never had for the key asked for.
    WrongValue {
        /// Node.
        node: usize,
        /// The key asked for.
        key: u64,
        /// What was served.
        value: DbValue,
    },
    /// LINV-2: "not found" served although no loader ever said so for the key.
    PlaceholderWithoutNotFound {
        /// Node.
        node: usize,
        /// The key.
        key: u64,
    },
    /// LINV-2: a loader failure served to a caller that started after it
    /// ended (so it came from a tier: a cached error), or one no loader made.
    CachedFailure {
        /// Node.
        node: usize,
        /// The key.
        key: u64,
        /// The failure's id (the sequence number it ended at).
        id: u64,
        /// When the caller started.
        started: u64,
    },
    /// LINV-2: a loader error that no planned loader call produced.
    ForeignError {
        /// Node.
        node: usize,
        /// What it was.
        detail: String,
    },
    /// LINV-2 (L-10): the remote took a value no loader or `set` produced
    /// for that key (not a value the database ever had, or no value).
    UnproducedWrite {
        /// The stored key.
        key: String,
        /// What the write held, for people.
        detail: String,
    },
    /// LINV-3: a `once` was served a tier record at or past its expiry on
    /// the injected clock (the loader's clock was at least `clock_ms`).
    ServedExpired {
        /// Node.
        node: usize,
        /// Key index.
        key: u64,
        /// The record's expiry.
        expires_at_ms: i64,
        /// The clock reading the loader had reached when the call started.
        clock_ms: i64,
    },
    /// LINV-4: more refresh tasks than `refresh_tasks_max`.
    TooManyTasks {
        /// Node.
        node: usize,
        /// Tasks.
        tasks: usize,
        /// The bound.
        max: usize,
    },
    /// LINV-4: more refresh loads at once than `refresh_concurrency`.
    TooManyRefreshes {
        /// Node.
        node: usize,
        /// Refresh flights in the air.
        refreshing: usize,
        /// The bound.
        max: usize,
    },
    /// LINV-4: a key deleted on the node (and not read with refresh since)
    /// still has a refresh task a window later.
    TaskAfterDelete {
        /// Node.
        node: usize,
        /// Key index.
        key: u64,
        /// Sim ms since the delete started.
        since_ms: u64,
    },
    /// LINV-4: a key unread for its idle window still has a refresh task a
    /// refresh interval later.
    IdleTask {
        /// Node.
        node: usize,
        /// Key index.
        key: u64,
        /// Sim ms since the key was idle by the loader's clock.
        idle_for_ms: u64,
    },
    /// LINV-4: a loader call started on a node incarnation after its
    /// `close()` returned.
    LoadAfterClose {
        /// Node.
        node: usize,
        /// What for.
        flight: Flight,
    },
    /// LINV-6 (L-15): fewer flight joins counted than `once` callers that
    /// joined a flight.
    JoinsMiscounted {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
        /// The counter.
        flight_joins: u64,
        /// `once` callers observed joining.
        joined: u64,
    },
    /// LINV-7: a batch loader was given a key twice, or a key its call
    /// did not ask for.
    BatchKeysRepeated {
        /// Node.
        node: usize,
        /// The keys it was given.
        keys: Vec<u64>,
    },
    /// LINV-7: a `load_many`'s own loader saw other keys than the ones
    /// that missed every tier.
    BatchLoaderSawOther {
        /// Node.
        node: usize,
        /// What the loader saw (sorted).
        saw: Vec<u64>,
        /// What missed (sorted).
        missed: Vec<u64>,
    },
    /// LINV-7: a `load_many`'s missed keys were answered by a shared
    /// flight, yet no batch loader on the node incarnation ever saw
    /// exactly them.
    BatchAnsweredUnseen {
        /// Node.
        node: usize,
        /// What missed (sorted).
        missed: Vec<u64>,
    },
    /// LINV-7: a missed key of a `load_many` was answered with another
    /// key's value: the flight that answered it loaded other keys.
    BatchAnswerMismatch {
        /// Node.
        node: usize,
        /// The missed key.
        key: u64,
        /// What it was answered with.
        value: DbValue,
    },
    /// LINV-5: after every event was delivered, a node's local copy differs
    /// from the remote's.
    Diverged {
        /// Node.
        node: usize,
        /// Key index.
        key: u64,
        /// The local copy.
        local: Payload,
        /// The remote's, if any.
        remote: Option<Payload>,
    },
    /// LINV-6: the counters break an L-15 equation.
    Counters {
        /// Node.
        node: usize,
        /// Which one, as `Counters::check` says.
        detail: String,
    },
    /// LINV-6: `loads` is not the number of loader calls the node made.
    LoadsMiscounted {
        /// Node.
        node: usize,
        /// Its incarnation.
        inc: u64,
        /// The counter.
        loads: u64,
        /// Loader calls observed.
        calls: u64,
    },
    /// LINV-8: something remained after `close()` returned.
    Remains {
        /// Node.
        node: usize,
        /// What the node reported.
        closed: Closed,
        /// Its bus subscriptions still running.
        subscriptions: usize,
    },
    /// LINV-8: a node's `close()` never returned.
    CloseHung {
        /// Node.
        node: usize,
    },
    /// INV-11: the run could not finish — a host failed, or streams were
    /// still running long after healing (a call that never answers).
    Stuck {
        /// What was seen.
        detail: String,
    },
}

impl Verdict {
    /// The invariant's id.
    pub fn inv(&self) -> &'static str {
        match self {
            Self::SecondFlight { .. } => "LINV-1",
            Self::WrongValue { .. }
            | Self::PlaceholderWithoutNotFound { .. }
            | Self::CachedFailure { .. }
            | Self::ForeignError { .. }
            | Self::UnproducedWrite { .. } => "LINV-2",
            Self::ServedExpired { .. } => "LINV-3",
            Self::TooManyTasks { .. }
            | Self::TooManyRefreshes { .. }
            | Self::TaskAfterDelete { .. }
            | Self::IdleTask { .. }
            | Self::LoadAfterClose { .. } => "LINV-4",
            Self::Diverged { .. } => "LINV-5",
            Self::Counters { .. } | Self::LoadsMiscounted { .. } | Self::JoinsMiscounted { .. } => {
                "LINV-6"
            }
            Self::BatchKeysRepeated { .. }
            | Self::BatchLoaderSawOther { .. }
            | Self::BatchAnsweredUnseen { .. }
            | Self::BatchAnswerMismatch { .. } => "LINV-7",
            Self::Remains { .. } | Self::CloseHung { .. } => "LINV-8",
            Self::Stuck { .. } => "INV-11",
        }
    }

    /// What happened, for people.
    pub fn detail(&self) -> String {
        match self {
            Self::SecondFlight { node, inc, flight } => format!(
                "node{node} (incarnation {inc}) started a second loader call for {flight:?} \
                 while one was in flight"
            ),
            Self::WrongValue { node, key, value } => {
                format!("node{node} served {value:?} for k{key}: the database never had it")
            }
            Self::PlaceholderWithoutNotFound { node, key } => {
                format!("node{node} said k{key} is not found, but no loader ever said so")
            }
            Self::CachedFailure {
                node,
                key,
                id,
                started,
            } => format!(
                "node{node} served loader failure #{id} for k{key} to a call that started at \
                 #{started}, after that failure (an error served from a tier)"
            ),
            Self::ForeignError { node, detail } => {
                format!("node{node} served a loader error no loader made: {detail}")
            }
            Self::UnproducedWrite { key, detail } => {
                format!("the remote took {detail} under {key}: no loader or set produced it")
            }
            Self::ServedExpired {
                node,
                key,
                expires_at_ms,
                clock_ms,
            } => format!(
                "node{node} served k{key} from a record that expired at {expires_at_ms} ms; \
                 its clock was at least {clock_ms} ms"
            ),
            Self::TooManyTasks { node, tasks, max } => {
                format!("node{node} has {tasks} refresh tasks > refresh_tasks_max {max}")
            }
            Self::TooManyRefreshes {
                node,
                refreshing,
                max,
            } => format!("node{node} runs {refreshing} refresh loads > refresh_concurrency {max}"),
            Self::TaskAfterDelete {
                node,
                key,
                since_ms,
            } => format!(
                "node{node} still has a refresh task for k{key} {since_ms} ms after deleting it"
            ),
            Self::IdleTask {
                node,
                key,
                idle_for_ms,
            } => format!(
                "node{node} still has a refresh task for k{key}, idle for {idle_for_ms} ms past \
                 its window"
            ),
            Self::LoadAfterClose { node, flight } => {
                format!("node{node} started a loader call for {flight:?} after close() returned")
            }
            Self::JoinsMiscounted {
                node,
                inc,
                flight_joins,
                joined,
            } => format!(
                "node{node} (incarnation {inc}) counts {flight_joins} flight joins, but \
                 {joined} once callers joined a flight"
            ),
            Self::BatchKeysRepeated { node, keys } => format!(
                "node{node}'s batch loader was given {keys:?}: a key twice, or one not asked for"
            ),
            Self::BatchLoaderSawOther { node, saw, missed } => format!(
                "node{node}'s batch loader saw {saw:?}, but the keys that missed were {missed:?}"
            ),
            Self::BatchAnsweredUnseen { node, missed } => format!(
                "node{node} answered the missed keys {missed:?} from a shared flight, but no \
                 batch loader there ever saw exactly them"
            ),
            Self::BatchAnswerMismatch { node, key, value } => format!(
                "node{node} answered the missed key k{key} of a batch with {value:?}: the \
                 flight that answered it loaded other keys"
            ),
            Self::Diverged {
                node,
                key,
                local,
                remote,
            } => format!(
                "node{node}'s local copy of k{key} is {local:?}, the remote's {remote:?}, \
                 after every event was delivered"
            ),
            Self::Counters { node, detail } => format!("node{node}: {detail}"),
            Self::LoadsMiscounted {
                node,
                inc,
                loads,
                calls,
            } => format!(
                "node{node} (incarnation {inc}) counts {loads} loads, but made {calls} loader calls"
            ),
            Self::Remains {
                node,
                closed,
                subscriptions,
            } => format!(
                "node{node} after close: {} background tasks, {} flights, {} refresh tasks, \
                 {subscriptions} bus subscriptions",
                closed.background_tasks, closed.flights, closed.refresh_tasks
            ),
            Self::CloseHung { node } => format!("node{node}'s close() did not return"),
            Self::Stuck { detail } => detail.clone(),
        }
    }
}

/// What the oracles remember between steps.
#[derive(Debug, Default)]
pub struct Oracle {
    in_flight: BTreeMap<(usize, u64, Flight), u32>,
    calls: BTreeMap<(usize, u64), u64>,
    failures: BTreeSet<u64>,
    said_not_found: BTreeSet<u64>,
    /// (node name, stored key) pairs a dropped copy may have left stale.
    dropped: BTreeSet<(String, String)>,
    /// Stored keys whose event may have reached nobody.
    lost: BTreeSet<String>,
    /// What each stored key was last written to at the remote (`None`: deleted).
    last_write: BTreeMap<String, Option<Vec<u8>>>,
    /// Keys with a remote write that may have applied unreported (a
    /// timed-out write, or an operation its node's restart cut short).
    ambiguous: BTreeSet<u64>,
    /// Sim ms and the injected clock of the step being judged.
    now_ms: u64,
    clock_ms: i64,
    /// The highest clock reading of any step so far: no loader's clock
    /// is above it.
    clock_high: i64,
    /// Per node incarnation: the highest clock reading a call started
    /// at; the loader read its clock then, and never goes back (T-7).
    clock_floor: BTreeMap<(usize, u64), i64>,
    /// That floor as each call started, by the call's start.
    floor_at: BTreeMap<u64, i64>,
    /// Per (node, incarnation, key): the expiry of the record last served.
    last_expiry: BTreeMap<(usize, u64, u64), i64>,
    /// Per (node, incarnation, key): what LINV-4 needs of its reads.
    keys: BTreeMap<(usize, u64, u64), KeyState>,
    /// Per node incarnation: its task keys at the last step.
    tasks_now: BTreeMap<(usize, u64), BTreeSet<u64>>,
    /// Every (node, incarnation, key) seen with a refresh task.
    tasks_seen: BTreeSet<(usize, u64, u64)>,
    /// Node incarnations whose `close()` returned.
    closed: BTreeSet<(usize, u64)>,
    /// `once` callers that joined a flight, per node incarnation.
    joined: BTreeMap<(usize, u64), u64>,
    /// `load_many` calls in progress, by call.
    batches: BTreeMap<u64, OpenBatch>,
    /// Per node incarnation: the key set of every batch loader call so far
    /// (a joined batch flight's loader started before its joiner ended).
    batch_sets: BTreeMap<(usize, u64), BTreeSet<Vec<u64>>>,
    /// Stored keys to key indexes.
    stored_index: BTreeMap<String, u64>,
    /// What the oracles judged (fairness counts).
    pub tally: OracleTally,
}

/// LINV-4's view of one key on one node incarnation.
#[derive(Clone, Copy, Debug, Default)]
struct KeyState {
    /// An upper bound of the loader's clock when the key was last read.
    read_high: i64,
    /// When (sim ms) a delete of the key started, if none read it with
    /// refresh since.
    deleted_at: Option<u64>,
    /// Since when (sim ms) the key is idle by every clock the loader can read.
    overdue_since: Option<u64>,
}

/// A `load_many` call in progress (LINV-7).
#[derive(Clone, Debug, Default)]
struct OpenBatch {
    node: usize,
    inc: u64,
    asked: BTreeSet<u64>,
    /// What its own loader saw, if it was called.
    saw: Option<Vec<u64>>,
}

/// What the LINV-3, -4 and -7 oracles had to judge in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OracleTally {
    /// Tier records served to `once` callers, each judged against the clock.
    pub linv3_judged: u64,
    /// Reads of a key whose record, served earlier on the node, had
    /// expired by then (the case LINV-3 is about).
    pub linv3_expired: u64,
    /// Refresh tasks seen (node, incarnation, key).
    pub linv4_tasks: u64,
    /// Deletes of a key that had a refresh task on the node.
    pub linv4_deleted_with_task: u64,
    /// `load_many` calls whose missed keys were judged.
    pub linv7_batches: u64,
}

/// How many (node, key) pairs LINV-5 judged, and how many it exempted
/// (a silent loss the node cannot know of: L-12 then bounds staleness by
/// the local lifetime only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvergenceTally {
    /// Pairs with a local copy, judged.
    pub judged: u64,
    /// Pairs with a local copy, exempted.
    pub exempt: u64,
    /// Judged pairs whose remote row had expired (compared with the
    /// remote's last write instead).
    pub expired_remote: u64,
}

impl Oracle {
    /// Judges new observations in order (LINV-1, LINV-2).
    pub fn observe(&mut self, log: &[Obs], db: &Db) -> Vec<Verdict> {
        let mut out = Vec::new();
        for o in log {
            match o {
                Obs::LoadStart { node, inc, flight } => {
                    if self.closed.contains(&(*node, *inc)) {
                        out.push(Verdict::LoadAfterClose {
                            node: *node,
                            flight: flight.clone(),
                        });
                    }
                    if let Flight::Batch(ks) = flight {
                        self.batch_sets
                            .entry((*node, *inc))
                            .or_default()
                            .insert(ks.clone());
                    }
                    *self.calls.entry((*node, *inc)).or_default() += 1;
                    let depth = self
                        .in_flight
                        .entry((*node, *inc, flight.clone()))
                        .or_default();
                    if *depth > 0 {
                        out.push(Verdict::SecondFlight {
                            node: *node,
                            inc: *inc,
                            flight: flight.clone(),
                        });
                    }
                    *depth += 1;
                }
                Obs::LoadEnd { node, inc, flight } => {
                    let k = (*node, *inc, flight.clone());
                    if let Some(d) = self.in_flight.get_mut(&k) {
                        *d = d.saturating_sub(1);
                        if *d == 0 {
                            self.in_flight.remove(&k);
                        }
                    }
                }
                Obs::LoadFailed { id } => {
                    self.failures.insert(*id);
                }
                Obs::SaidNotFound { key } => {
                    self.said_not_found.insert(*key);
                }
                Obs::Served {
                    node, key, value, ..
                } => {
                    if value.key != *key || !db.ever_had(value) {
                        out.push(Verdict::WrongValue {
                            node: *node,
                            key: *key,
                            value: *value,
                        });
                    }
                }
                Obs::ServedNotFound { node, key } => {
                    if !self.said_not_found.contains(key) {
                        out.push(Verdict::PlaceholderWithoutNotFound {
                            node: *node,
                            key: *key,
                        });
                    }
                }
                Obs::ServedFailure {
                    node,
                    key,
                    id,
                    started,
                } => {
                    // A caller joins only a flight in the air: the failure
                    // it shares ended after the caller started.
                    if !self.failures.contains(id) || id < started {
                        out.push(Verdict::CachedFailure {
                            node: *node,
                            key: *key,
                            id: *id,
                            started: *started,
                        });
                    }
                }
                Obs::ServedForeignError { node, detail } => out.push(Verdict::ForeignError {
                    node: *node,
                    detail: detail.clone(),
                }),
                Obs::CopyDropped { node, keys } => {
                    for k in keys {
                        self.dropped.insert((node.clone(), k.clone()));
                    }
                }
                Obs::PublishLost { keys } => self.lost.extend(keys.iter().cloned()),
                Obs::RemoteWrote { key, bytes } => {
                    if let Some(b) = bytes {
                        out.extend(unproduced(key, b, db));
                    }
                    self.last_write.insert(key.clone(), bytes.clone());
                }
                Obs::AmbiguousWrite { key } => {
                    self.ambiguous.insert(*key);
                }
                Obs::CrashedMidOp { keys } => self.ambiguous.extend(keys.iter().copied()),
                Obs::Read {
                    node,
                    inc,
                    keys,
                    refresh,
                    started,
                    clock_ms,
                } => self.read(*node, *inc, keys, *refresh, *started, *clock_ms),
                Obs::DeleteStarted { node, inc, key } => {
                    if self
                        .tasks_now
                        .get(&(*node, *inc))
                        .is_some_and(|t| t.contains(key))
                    {
                        self.tally.linv4_deleted_with_task += 1;
                    }
                    let now = self.now_ms;
                    self.keys.entry((*node, *inc, *key)).or_default().deleted_at = Some(now);
                }
                Obs::ServedRecord {
                    node,
                    inc,
                    key,
                    expires_at_ms,
                    started,
                } => {
                    // The loader read its clock as the call started: it was
                    // at least this floor, and a live record outlives it.
                    let Some(floor) = self.floor_at.remove(started) else {
                        continue;
                    };
                    self.tally.linv3_judged += 1;
                    if *expires_at_ms <= floor {
                        out.push(Verdict::ServedExpired {
                            node: *node,
                            key: *key,
                            expires_at_ms: *expires_at_ms,
                            clock_ms: floor,
                        });
                    }
                    self.last_expiry.insert((*node, *inc, *key), *expires_at_ms);
                }
                Obs::Joined { node, inc } => *self.joined.entry((*node, *inc)).or_default() += 1,
                Obs::BatchCall {
                    node,
                    inc,
                    call,
                    asked,
                } => {
                    self.batches.insert(
                        *call,
                        OpenBatch {
                            node: *node,
                            inc: *inc,
                            asked: asked.iter().copied().collect(),
                            saw: None,
                        },
                    );
                }
                Obs::BatchLoaderSaw {
                    node, call, keys, ..
                } => {
                    let mut sorted = keys.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    let Some(b) = self.batches.get_mut(call) else {
                        continue;
                    };
                    if sorted.len() != keys.len() || !sorted.iter().all(|k| b.asked.contains(k)) {
                        out.push(Verdict::BatchKeysRepeated {
                            node: *node,
                            keys: keys.clone(),
                        });
                    }
                    b.saw = Some(sorted);
                }
                Obs::BatchDone {
                    node,
                    call,
                    missed,
                    answered,
                    loaded,
                    ..
                } => {
                    if let Some(b) = self.batches.remove(call) {
                        out.extend(self.judge_batch(*node, b, missed, *answered));
                    }
                    if let Some((key, value)) = loaded.iter().find(|(k, v)| v.key != *k) {
                        out.push(Verdict::BatchAnswerMismatch {
                            node: *node,
                            key: *key,
                            value: *value,
                        });
                    }
                }
                Obs::LateResult { .. } => {}
            }
        }
        out
    }

    /// Sets the sim time and the injected clock of the step about to be
    /// judged (before [`Oracle::observe`]).
    pub fn set_time(&mut self, now_ms: u64, clock_ms: i64) {
        self.now_ms = now_ms;
        self.clock_ms = clock_ms;
        self.clock_high = self.clock_high.max(clock_ms);
    }

    fn read(&mut self, node: usize, inc: u64, keys: &[u64], refresh: bool, started: u64, at: i64) {
        let floor = self.clock_floor.entry((node, inc)).or_insert(i64::MIN);
        *floor = (*floor).max(at);
        let floor = *floor;
        self.floor_at.insert(started, floor);
        let high = self.clock_high.max(at);
        for k in keys {
            if self
                .last_expiry
                .get(&(node, inc, *k))
                .is_some_and(|e| *e <= floor)
            {
                self.tally.linv3_expired += 1;
                self.last_expiry.remove(&(node, inc, *k));
            }
            let st = self.keys.entry((node, inc, *k)).or_default();
            st.read_high = st.read_high.max(high);
            st.overdue_since = None;
            if refresh {
                st.deleted_at = None;
            }
        }
    }

    /// LINV-7 for one finished `load_many`.
    fn judge_batch(
        &mut self,
        node: usize,
        b: OpenBatch,
        missed: &[u64],
        answered: bool,
    ) -> Option<Verdict> {
        let mut missed = missed.to_vec();
        missed.sort_unstable();
        if !answered {
            return None;
        }
        if missed.is_empty() {
            return b
                .saw
                .map(|saw| Verdict::BatchLoaderSawOther { node, saw, missed });
        }
        self.tally.linv7_batches += 1;
        match b.saw {
            Some(saw) if saw != missed => Some(Verdict::BatchLoaderSawOther { node, saw, missed }),
            Some(_) => None,
            None if self
                .batch_sets
                .get(&(b.node, b.inc))
                .is_some_and(|sets| sets.contains(&missed)) =>
            {
                None
            }
            None => Some(Verdict::BatchAnsweredUnseen { node, missed }),
        }
    }

    /// LINV-4 on every running node after a step (call after
    /// [`Oracle::observe`]): task and refresh bounds, no task for a key
    /// deleted a window ago (unless read with refresh since), none for a
    /// key idle a refresh interval past its window; and records which
    /// node incarnations closed (a load after that is LINV-4 too).
    pub fn check_refresh(
        &mut self,
        nodes: &[NodeSlot],
        r: &NetRefresh,
        key_space: u64,
    ) -> Vec<Verdict> {
        let mut out = Vec::new();
        for (node, slot) in nodes.iter().enumerate() {
            if slot.closed.is_some() {
                self.closed.insert((node, slot.inc));
            }
            let Some(loader) = &slot.loader else { continue };
            if self.stored_index.is_empty() {
                self.stored_index = (0..key_space)
                    .map(|k| (loader.stored_key(&key_of(k)), k))
                    .collect();
            }
            let tasks: BTreeSet<u64> = loader
                .refresh_task_keys()
                .iter()
                .map(|s| self.stored_index.get(s).copied().unwrap_or(u64::MAX))
                .collect();
            if tasks.len() > r.tasks_max {
                out.push(Verdict::TooManyTasks {
                    node,
                    tasks: tasks.len(),
                    max: r.tasks_max,
                });
            }
            let refreshing = loader.refreshing();
            if refreshing > r.concurrency {
                out.push(Verdict::TooManyRefreshes {
                    node,
                    refreshing,
                    max: r.concurrency,
                });
            }
            for k in &tasks {
                if self.tasks_seen.insert((node, slot.inc, *k)) {
                    self.tally.linv4_tasks += 1;
                }
                let now = self.now_ms;
                let clock = self.clock_ms;
                let st = self.keys.entry((node, slot.inc, *k)).or_default();
                if let Some(since) = st.deleted_at.map(|t| now.saturating_sub(t)) {
                    if since > r.interval_ms {
                        out.push(Verdict::TaskAfterDelete {
                            node,
                            key: *k,
                            since_ms: since,
                        });
                    }
                }
                // Idle by the loader's clock, whatever it read: the
                // ticker drops the task at its next tick.
                if clock.saturating_sub(st.read_high) >= r.idle_ms as i64 {
                    let t0 = *st.overdue_since.get_or_insert(now);
                    let idle_for = now.saturating_sub(t0);
                    if idle_for > r.interval_ms.saturating_add(TICKER_SLACK_MS) {
                        out.push(Verdict::IdleTask {
                            node,
                            key: *k,
                            idle_for_ms: idle_for,
                        });
                    }
                } else {
                    st.overdue_since = None;
                }
            }
            self.tasks_now.insert((node, slot.inc), tasks);
        }
        out
    }

    /// LINV-6 on every running node: the L-15 equations, and `loads` equal
    /// to the loader calls its incarnation made.
    pub fn check_counters(&self, nodes: &[NodeSlot]) -> Vec<Verdict> {
        let mut out = Vec::new();
        for (node, slot) in nodes.iter().enumerate() {
            let Some(loader) = &slot.loader else { continue };
            let c = loader.counters();
            if let Err(detail) = c.check() {
                out.push(Verdict::Counters { node, detail });
            }
            let joined = self.joined.get(&(node, slot.inc)).copied().unwrap_or(0);
            if c.flight_joins < joined {
                out.push(Verdict::JoinsMiscounted {
                    node,
                    inc: slot.inc,
                    flight_joins: c.flight_joins,
                    joined,
                });
            }
            let calls = self.calls.get(&(node, slot.inc)).copied().unwrap_or(0);
            if c.loads != calls {
                out.push(Verdict::LoadsMiscounted {
                    node,
                    inc: slot.inc,
                    loads: c.loads,
                    calls,
                });
            }
        }
        out
    }

    /// LINV-5, once every event is delivered: each node's live local copy
    /// of each key is absent or equal to the remote's, except where a
    /// silent loss exempts it.
    pub fn check_convergence(
        &self,
        nodes: &[NodeSlot],
        remote: &MemoryRemote,
        key_space: u64,
    ) -> (Vec<Verdict>, ConvergenceTally) {
        let mut out = Vec::new();
        let mut tally = ConvergenceTally::default();
        for (node, slot) in nodes.iter().enumerate() {
            let Some(loader) = &slot.loader else { continue };
            for k in 0..key_space {
                if let Some(v) = self.diverged(node, loader, remote, k, &mut tally) {
                    out.push(v);
                }
            }
        }
        (out, tally)
    }

    fn diverged(
        &self,
        node: usize,
        loader: &Loader<DbValue>,
        remote: &MemoryRemote,
        k: u64,
        tally: &mut ConvergenceTally,
    ) -> Option<Verdict> {
        let key = key_of(k);
        let local = loader.local_record(&key)?;
        let stored = loader.stored_key(&key);
        if self.ambiguous.contains(&k)
            || self.lost.contains(&stored)
            || self.dropped.contains(&(node_name(node), stored.clone()))
        {
            tally.exempt += 1;
            return None;
        }
        tally.judged += 1;
        let payload = |b: Vec<u8>| Record::decode_owned(b).ok().map(|r| r.payload);
        let remote = match remote.peek(&stored) {
            Some(live) => payload(live),
            // Expired at the remote, which judges lifetimes on the clock
            // *it* reads: after a backward jump the loader keeps a copy
            // until its high-water clock passes the expiry (T-7), later in
            // simulated time than the remote. A copy of the value the
            // remote last held is no divergence; a copy of an older value,
            // or of a deleted one, is.
            None => {
                tally.expired_remote += 1;
                self.last_write
                    .get(&stored)
                    .cloned()
                    .flatten()
                    .and_then(payload)
            }
        };
        (remote.as_ref() != Some(&local.payload)).then_some(Verdict::Diverged {
            node,
            key: k,
            local: local.payload,
            remote,
        })
    }

    /// LINV-8 after every node closed: nothing of a loader remains.
    pub fn check_closed(nodes: &[NodeSlot]) -> Vec<Verdict> {
        let mut out = Vec::new();
        for (node, slot) in nodes.iter().enumerate() {
            let Some(closed) = slot.closed else {
                out.push(Verdict::CloseHung { node });
                continue;
            };
            let subscriptions = slot.bus.as_ref().map_or(0, |b| {
                b.live_subscriptions
                    .load(std::sync::atomic::Ordering::SeqCst)
            });
            if closed != Closed::default() || subscriptions > 0 {
                out.push(Verdict::Remains {
                    node,
                    closed,
                    subscriptions,
                });
            }
        }
        out
    }
}

/// LINV-2 on a write the remote applied: a value record must hold a value
/// the database had for its key (a loader's or a `set`'s); placeholders
/// carry none.
fn unproduced(stored: &str, bytes: &[u8], db: &Db) -> Option<Verdict> {
    let bad = |detail: String| {
        Some(Verdict::UnproducedWrite {
            key: stored.to_string(),
            detail,
        })
    };
    let record = match Record::decode(bytes) {
        Ok(r) => r,
        Err(e) => return bad(format!("no record ({e:?})")),
    };
    let Payload::Value(body) = record.payload else {
        return None;
    };
    let key = parse_stored_key(stored).map_or(u64::MAX, |(_, k)| index_of(&k));
    match Codec::Binary.decode::<DbValue>(&body) {
        Ok(v) if v.key == key && db.ever_had(&v) => None,
        Ok(v) => bad(format!("{v:?}")),
        Err(_) => bad(format!("the bytes {body:?}")),
    }
}
