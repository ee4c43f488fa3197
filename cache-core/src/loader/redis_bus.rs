//! The event bus on Redis pub/sub (L-11, L-12).
//!
//! One channel per cache, `<cache name>:events` (channels live apart from
//! keys in Redis, so it never meets a stored key). An event travels as a
//! small JSON object `{"source":…,"kind":…,"keys":[…]}`; every node
//! subscribes, receives its own events too and ignores them by their
//! `source` (in the loader's machine).
//!
//! Redis pub/sub is fire-and-forget: a message published while a
//! subscriber's connection is down is gone, and Redis cannot say how many
//! were. So when a subscription drops, its task reconnects (with a bounded
//! backoff), subscribes again and then sends one [`Event::resync`] marker:
//! "events may have been missed — how many is unknown, at least 0". The
//! loader drops every local copy of the cache on it, so a missed
//! invalidation cannot leave a stale copy for the rest of its local
//! lifetime (L-12's bound): after the marker every read goes to the remote,
//! and every later write arrives as an event on the new subscription. A
//! message on the channel that cannot be read is treated the same way (its
//! keys are unknown).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use redis::Client;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::bus::{BusError, Event, EventBus, EventKind, Subscription};
use super::redis_remote::{map_error, RedisOptions};
use super::remote::RemoteError;

/// What a [`RedisBus`] did so far (all its subscriptions together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisBusStats {
    /// Events published.
    pub published: u64,
    /// Publishes that failed (the loader counts them as dropped events, L-11).
    pub publish_failures: u64,
    /// Messages received and handed to a subscriber.
    pub received: u64,
    /// Messages on the channel that could not be read (each became a resync).
    pub unreadable: u64,
    /// Subscriptions made again after a drop or a failed attempt.
    pub resubscribes: u64,
    /// Resync markers sent: each says "events may have been missed, how
    /// many is unknown (at least 0)".
    pub gaps: u64,
}

struct Shared {
    stats: Mutex<RedisBusStats>,
    /// Subscriptions not yet subscribed on the server.
    pending: watch::Sender<usize>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, RedisBusStats> {
        // Every update is a counter bump: a poisoned lock is consistent.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An [`EventBus`] on Redis pub/sub for one cache. Clones share the
/// publishing connection and the statistics.
#[derive(Clone)]
pub struct RedisBus {
    client: Client,
    publisher: ConnectionManager,
    channel: String,
    opts: RedisOptions,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("channel", &self.channel)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// The pub/sub channel of the cache named `cache`.
pub fn channel_name(cache: &str) -> String {
    format!("{cache}:events")
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Set => "set",
        EventKind::Load => "load",
        EventKind::Refresh => "refresh",
        EventKind::Delete => "delete",
        EventKind::Batch => "batch",
    }
}

fn kind_from(name: &str) -> Option<EventKind> {
    Some(match name {
        "set" => EventKind::Set,
        "load" => EventKind::Load,
        "refresh" => EventKind::Refresh,
        "delete" => EventKind::Delete,
        "batch" => EventKind::Batch,
        _ => return None,
    })
}

/// The wire form of an event.
pub fn encode_event(event: &Event) -> String {
    json!({
        "source": event.source,
        "kind": kind_name(event.kind),
        "keys": event.keys,
    })
    .to_string()
}

/// Reads an event back from its wire form; `None` if it is not one, or if
/// it claims to be a resync marker (only a subscription makes those).
pub fn decode_event(bytes: &[u8]) -> Option<Event> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let source = v.get("source")?.as_str()?.to_string();
    let kind = kind_from(v.get("kind")?.as_str()?)?;
    let keys = v
        .get("keys")?
        .as_array()?
        .iter()
        .map(|k| k.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()?;
    let event = Event { source, kind, keys };
    (!event.is_resync()).then_some(event)
}

impl RedisBus {
    /// A bus for the cache named `cache` on the server in `opts`; connects
    /// the publishing connection (within the connect timeout).
    pub async fn connect(cache: &str, opts: RedisOptions) -> Result<Self, RemoteError> {
        let client = opts.client()?;
        let connect = ConnectionManager::new_with_config(client.clone(), opts.manager_config());
        let publisher = match tokio::time::timeout(
            Duration::from_millis(opts.connect_timeout_ms.saturating_mul(2)),
            connect,
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(map_error("connect", &e)),
            Err(_) => {
                return Err(RemoteError::Timeout {
                    op: "connect",
                    detail: format!("no connection within {} ms", opts.connect_timeout_ms),
                })
            }
        };
        Ok(Self {
            client,
            publisher,
            channel: channel_name(cache),
            opts,
            shared: Arc::new(Shared {
                stats: Mutex::default(),
                pending: watch::channel(0).0,
            }),
        })
    }

    /// The channel it publishes on and subscribes to.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// What it did so far.
    pub fn stats(&self) -> RedisBusStats {
        *self.shared.stats()
    }

    /// Waits until every subscription made through this bus (and its
    /// clones) is subscribed on the server, at most `timeout`; whether they
    /// all are. Pub/sub delivers only to subscribers present when a message
    /// is published, so a node that must not miss the first events waits
    /// here before serving.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.pending.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl EventBus for RedisBus {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            // This process's own subscriptions hear what it publishes (the
            // contract: the source's subscriber gets its own event too).
            self.ready(self.opts.op_timeout()).await;
            let payload = encode_event(&event);
            let mut conn = self.publisher.clone();
            let channel = self.channel.clone();
            let sent = tokio::time::timeout(self.opts.op_timeout(), async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await;
            let result = match sent {
                Ok(Ok(_receivers)) => Ok(()),
                Ok(Err(e)) => Err(BusError(map_error("publish", &e).to_string())),
                Err(_) => Err(BusError(format!(
                    "publish: no answer within {} ms",
                    self.opts.op_timeout_ms
                ))),
            };
            let mut stats = self.shared.stats();
            match result {
                Ok(()) => stats.published += 1,
                Err(_) => stats.publish_failures += 1,
            }
            result
        })
    }

    /// Starts a subscriber task on the current tokio runtime (the loader's
    /// builder checks there is one). It ends when the subscription is dropped.
    fn subscribe(&self, node: &str) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.pending.send_modify(|n| *n += 1);
        let task = SubscriberTask {
            client: self.client.clone(),
            channel: self.channel.clone(),
            node: node.to_string(),
            opts: self.opts.clone(),
            shared: self.shared.clone(),
            tx,
        };
        tokio::spawn(task.run());
        rx
    }
}

struct SubscriberTask {
    client: Client,
    channel: String,
    node: String,
    opts: RedisOptions,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Event>,
}

impl SubscriberTask {
    async fn run(self) {
        let mut pending = true;
        let mut attempts: u32 = 0;
        let mut lost = false;
        loop {
            if self.tx.is_closed() {
                break;
            }
            let subscribed = tokio::select! {
                _ = self.tx.closed() => break,
                s = self.subscribe() => s,
            };
            let mut pubsub = match subscribed {
                Ok(p) => p,
                Err(e) => {
                    attempts = attempts.saturating_add(1);
                    lost = true;
                    tracing::warn!(
                        target: "cache_core::loader",
                        channel = %self.channel,
                        node = %self.node,
                        error = %e,
                        "event subscription failed; retrying"
                    );
                    let backoff = Duration::from_millis(20u64 << attempts.min(5));
                    tokio::select! {
                        _ = self.tx.closed() => break,
                        _ = tokio::time::sleep(backoff) => continue,
                    }
                }
            };
            attempts = 0;
            if pending {
                pending = false;
                self.shared
                    .pending
                    .send_modify(|n| *n = n.saturating_sub(1));
            }
            if lost {
                // Subscribed again: anything published while we were away is
                // gone, and Redis cannot say how much (L-12).
                self.shared.stats().resubscribes += 1;
                self.gap("subscription restored");
            }
            let mut messages = pubsub.on_message();
            loop {
                let msg = tokio::select! {
                    _ = self.tx.closed() => return,
                    m = messages.next() => m,
                };
                let Some(msg) = msg else { break };
                match decode_event(msg.get_payload_bytes()) {
                    Some(event) => {
                        self.shared.stats().received += 1;
                        if self.tx.send(event).is_err() {
                            return;
                        }
                    }
                    None => {
                        self.shared.stats().unreadable += 1;
                        self.gap("unreadable message on the channel");
                    }
                }
            }
            // The connection dropped (server gone, killed client, network).
            lost = true;
            tracing::warn!(
                target: "cache_core::loader",
                channel = %self.channel,
                node = %self.node,
                "event subscription dropped; reconnecting"
            );
        }
        if pending {
            self.shared
                .pending
                .send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, RemoteError> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(
            Duration::from_millis(self.opts.connect_timeout_ms.saturating_mul(2)),
            connect,
        )
        .await
        {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(map_error("subscribe", &e)),
            Err(_) => Err(RemoteError::Timeout {
                op: "subscribe",
                detail: format!("not subscribed within {} ms", self.opts.connect_timeout_ms),
            }),
        }
    }

    /// Tells the node that events may have been missed.
    fn gap(&self, why: &'static str) {
        self.shared.stats().gaps += 1;
        tracing::warn!(
            target: "cache_core::loader",
            channel = %self.channel,
            node = %self.node,
            why,
            missed = "unknown, at least 0",
            "events may have been missed; the node drops its local copies of the cache"
        );
        let _ = self.tx.send(Event::resync());
    }
}
