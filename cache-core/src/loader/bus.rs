//! Events between nodes (L-11, L-12): a trait a Redis pub/sub channel, a
//! simulated network or the in-memory [`MemoryBus`] implement.
//!
//! Every mutation on a node publishes one [`Event`] naming its stored keys
//! and its source node; every node subscribes, ignores its own events and
//! drops its local copies of the named keys, so the next read goes to the
//! remote.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use thiserror::Error;
use tokio::sync::mpsc;

/// What kind of mutation an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// `set`.
    Set,
    /// A foreground load wrote its value or placeholder.
    Load,
    /// A refresh wrote its value.
    Refresh,
    /// `delete`.
    Delete,
    /// A batch load wrote its keys.
    Batch,
}

/// One invalidation event (L-11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The node that made the mutation.
    pub source: String,
    /// What it did.
    pub kind: EventKind,
    /// The stored keys it changed, sorted.
    pub keys: Vec<String>,
}

impl Event {
    /// The source of a resync marker. No node publishes it: a real event
    /// always names at least one key, a marker none.
    pub const RESYNC_SOURCE: &'static str = "\u{0}resync";

    /// A resync marker: a subscription tells its node that events may have
    /// been lost (a dropped connection, an unreadable message) and how many
    /// is unknown (at least 0). The node drops every local copy of the cache
    /// (L-12: a lost event may not leave a stale local copy until its local
    /// lifetime ends when the loss is known), so its next reads go to the
    /// remote.
    pub fn resync() -> Self {
        Self {
            source: Self::RESYNC_SOURCE.to_string(),
            kind: EventKind::Delete,
            keys: Vec::new(),
        }
    }

    /// Whether this is a resync marker rather than a node's mutation.
    pub fn is_resync(&self) -> bool {
        self.source == Self::RESYNC_SOURCE && self.keys.is_empty()
    }
}

/// The bus failed to publish (L-11: the event counts as dropped).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("event bus unavailable: {0}")]
pub struct BusError(pub String);

/// Where a subscriber receives events.
pub type Subscription = mpsc::UnboundedReceiver<Event>;

/// The event bus. Delivery may be late, duplicated, reordered or lost;
/// the loader is correct under all of them (L-12).
pub trait EventBus: Send + Sync {
    /// Publishes `event` to every subscriber (its source included: a node
    /// recognises and ignores its own events, as with Redis pub/sub).
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), BusError>>;
    /// A new subscription for `node`. A bus that can lose events without
    /// knowing which (a dropped Redis subscription) sends an
    /// [`Event::resync`] marker on the subscription once it is back.
    fn subscribe(&self, node: &str) -> Subscription;
}

/// Faults a [`MemoryBus`] injects, per delivered copy; drawn from a seeded
/// generator, so the same seed gives the same faults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BusFaults {
    /// Per-mille chance a copy is dropped.
    pub drop_per_mille: u16,
    /// Per-mille chance a copy is delivered twice.
    pub duplicate_per_mille: u16,
    /// Each copy is delayed by 0..=`max_delay_ms` (tokio time); copies with
    /// different delays arrive out of order.
    pub max_delay_ms: u64,
    /// Publishing itself fails.
    pub fail_publish: bool,
}

/// What a [`MemoryBus`] did with the copies it was given. Once no copy is
/// in flight, `copies == delivered + dropped` (L-11).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Events published.
    pub published: u64,
    /// Copies addressed (one per subscriber per event).
    pub copies: u64,
    /// Copies delivered (first delivery).
    pub delivered: u64,
    /// Copies dropped (by the fault, or because the subscriber was gone).
    pub dropped: u64,
    /// Extra deliveries made by the duplicate fault.
    pub duplicates: u64,
    /// Copies still delayed.
    pub in_flight: u64,
}

struct BusState {
    subscribers: Vec<(String, mpsc::UnboundedSender<Event>)>,
    faults: BusFaults,
    rng: super::rng::SplitMix64,
    stats: BusStats,
}

/// An in-memory bus with seeded faults. Clones share one bus.
#[derive(Clone)]
pub struct MemoryBus {
    state: Arc<Mutex<BusState>>,
}

impl MemoryBus {
    /// A bus with no faults; `seed` drives every fault draw.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(BusState {
                subscribers: Vec::new(),
                faults: BusFaults::default(),
                rng: super::rng::SplitMix64::new(seed),
                stats: BusStats::default(),
            })),
        }
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: BusFaults) {
        self.lock().faults = faults;
    }

    /// What happened so far.
    pub fn stats(&self) -> BusStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusState> {
        // Every update is a push or a counter bump: a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliver(&self, tx: &mpsc::UnboundedSender<Event>, event: Event, copies: u32) {
        let mut state = self.lock();
        state.stats.in_flight = state.stats.in_flight.saturating_sub(1);
        let mut sent = 0;
        for _ in 0..copies {
            if tx.send(event.clone()).is_ok() {
                sent += 1;
            }
        }
        if sent == 0 {
            state.stats.dropped += 1;
        } else {
            state.stats.delivered += 1;
            state.stats.duplicates += sent - 1;
        }
    }
}

impl EventBus for MemoryBus {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let mut plans = Vec::new();
            {
                let mut state = self.lock();
                if state.faults.fail_publish {
                    return Err(BusError("publish failed (injected)".into()));
                }
                state.stats.published += 1;
                let faults = state.faults.clone();
                let subscribers = state.subscribers.clone();
                for (_, tx) in subscribers {
                    state.stats.copies += 1;
                    if state.rng.per_mille(faults.drop_per_mille) {
                        state.stats.dropped += 1;
                        continue;
                    }
                    let copies = if state.rng.per_mille(faults.duplicate_per_mille) {
                        2
                    } else {
                        1
                    };
                    let delay = if faults.max_delay_ms > 0 {
                        state.rng.below(faults.max_delay_ms + 1)
                    } else {
                        0
                    };
                    state.stats.in_flight += 1;
                    plans.push((tx, copies, delay));
                }
            }
            for (tx, copies, delay) in plans {
                if delay == 0 {
                    self.deliver(&tx, event.clone(), copies);
                } else {
                    let bus = self.clone();
                    let event = event.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                        bus.deliver(&tx, event, copies);
                    });
                }
            }
            Ok(())
        })
    }

    fn subscribe(&self, node: &str) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push((node.to_string(), tx));
        rx
    }
}
