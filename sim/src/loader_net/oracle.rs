//! The `loader-net` oracles: LINV-1, LINV-2, LINV-5, LINV-6 and LINV-8,
//! judged from the hosts' observation log ([`Obs`]) and the loaders' own
//! accessors, between simulation steps and at the end — never inside a
//! host. Every verdict is typed ([`Verdict`]); its text is for people.

use std::collections::{BTreeMap, BTreeSet};

use cache_core::loader::record::{Payload, Record};
use cache_core::loader::{Loader, MemoryRemote};

use super::world::{key_of, node_name, Closed, Db, DbValue, Flight, NodeSlot, Obs};

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
            | Self::ForeignError { .. } => "LINV-2",
            Self::Diverged { .. } => "LINV-5",
            Self::Counters { .. } | Self::LoadsMiscounted { .. } => "LINV-6",
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
                    self.last_write.insert(key.clone(), bytes.clone());
                }
                Obs::AmbiguousWrite { key } => {
                    self.ambiguous.insert(*key);
                }
                Obs::CrashedMidOp { keys } => self.ambiguous.extend(keys.iter().copied()),
            }
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
