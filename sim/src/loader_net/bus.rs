//! The event bus over simulated TCP (L-11, L-12): a bus host that fans
//! every published event out to every subscribed connection, with the
//! swarm's per-copy faults (drop, duplicate, delay and so reorder), and
//! [`NetBus`], an [`EventBus`] client of it.
//!
//! Two ports: publishing is a request/response exchange (the ack is what
//! makes a publish count as sent); a subscription is one long-lived
//! connection on which the host sends numbered frames, a ping among them
//! every [`PING_MS`]. The subscriber treats a gap in the numbers, a
//! malformed frame or [`PING_MS`]×3 of silence as a lost connection:
//! it reconnects and then sends its node an [`Event::resync`] marker,
//! since the events it missed are unknown (the trait's contract).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::loader::bus::{BusError, Subscription};
use cache_core::loader::{Event, EventBus, EventKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use turmoil::net::TcpStream;

use super::frame::{read_msg, serve_rpc, with_timeout, write_msg, CallError, RpcClient};
use super::BoxFuture;

/// Port of the publish exchanges.
pub const PUB_PORT: u16 = 7001;
/// Port of the subscriptions.
pub const SUB_PORT: u16 = 7002;
/// Simulated ms between the host's pings on a quiet subscription.
pub const PING_MS: u64 = 200;
/// Silence after which a subscriber gives its connection up.
const SILENCE_MS: u64 = 3 * PING_MS;
/// Longest the host waits to write one frame to a subscriber.
const WRITE_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Pause before a subscriber reconnects.
const RECONNECT_MS: u64 = 50;

/// An event on the wire ([`Event`] has no serde of its own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    /// The publishing node.
    pub source: String,
    /// `set`, `load`, `refresh`, `delete` or `batch`.
    pub kind: String,
    /// Stored keys.
    pub keys: Vec<String>,
}

impl WireEvent {
    /// The wire form of `e`.
    pub fn of(e: &Event) -> Self {
        let kind = match e.kind {
            EventKind::Set => "set",
            EventKind::Load => "load",
            EventKind::Refresh => "refresh",
            EventKind::Delete => "delete",
            EventKind::Batch => "batch",
        };
        Self {
            source: e.source.clone(),
            kind: kind.into(),
            keys: e.keys.clone(),
        }
    }

    /// The event, or `None` for an unknown kind (a protocol error).
    pub fn event(self) -> Option<Event> {
        let kind = match self.kind.as_str() {
            "set" => EventKind::Set,
            "load" => EventKind::Load,
            "refresh" => EventKind::Refresh,
            "delete" => EventKind::Delete,
            "batch" => EventKind::Batch,
            _ => return None,
        };
        Some(Event {
            source: self.source,
            kind,
            keys: self.keys,
        })
    }
}

/// A publish exchange's reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PubReply {
    /// Taken: fanned out (each copy then under the faults).
    Ack,
    /// The request was not understood.
    Malformed(String),
}

/// The subscription's opening frame (client to host).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubscribeReq {
    /// The subscribing node.
    pub node: String,
}

/// A frame on a subscription (host to client), numbered from 0.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubFrame {
    /// This connection's frame number: a gap means frames were lost.
    pub seq: u64,
    /// `None`: a ping.
    pub event: Option<WireEvent>,
}

/// What the bus host does with each copy it addresses to a subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyFate {
    /// Written now.
    Now,
    /// Written after this many simulated ms (copies overtake each other).
    Delay(u64),
    /// Written twice.
    Twice,
    /// Never written.
    Drop,
}

/// The host's per-copy decisions and what it tells the world: the world
/// draws the faults from the seed and records dropped copies (the
/// convergence oracle exempts what a silent loss may leave stale).
pub trait BusPolicy: Send + Sync + 'static {
    /// The fate of one copy of `event` for subscriber `node`.
    fn fate(&self, node: &str, event: &WireEvent) -> CopyFate;
}

/// No faults: every copy is written at once.
pub struct Healthy;

impl BusPolicy for Healthy {
    fn fate(&self, _: &str, _: &WireEvent) -> CopyFate {
        CopyFate::Now
    }
}

type Subscribers = Arc<Mutex<Vec<(u64, String, mpsc::UnboundedSender<WireEvent>)>>>;

/// The bus host: publish exchanges on [`PUB_PORT`], subscriptions on
/// [`SUB_PORT`]. Every event goes to every subscribed connection, its
/// source's own included (as Redis pub/sub does; a node ignores its own).
pub async fn serve_bus(policy: Arc<dyn BusPolicy>) -> turmoil::Result {
    let subs: Subscribers = Arc::default();
    let pubs = turmoil::net::TcpListener::bind(("0.0.0.0", PUB_PORT)).await?;
    let sub_listener = turmoil::net::TcpListener::bind(("0.0.0.0", SUB_PORT)).await?;
    let next_conn = Arc::new(AtomicU64::new(1));
    {
        let subs = subs.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = sub_listener.accept().await {
                let id = next_conn.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(subscription(stream, id, subs.clone()));
            }
        });
    }
    loop {
        let (stream, _) = pubs.accept().await?;
        let (subs, policy) = (subs.clone(), policy.clone());
        tokio::spawn(async move {
            serve_rpc(
                stream,
                WRITE_TIMEOUT,
                PubReply::Malformed,
                |e: WireEvent| {
                    fan_out(&subs, policy.as_ref(), &e);
                    async { PubReply::Ack }
                },
            )
            .await;
        });
    }
}

fn fan_out(subs: &Subscribers, policy: &dyn BusPolicy, e: &WireEvent) {
    let targets: Vec<(String, mpsc::UnboundedSender<WireEvent>)> = subs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(_, n, tx)| (n.clone(), tx.clone()))
        .collect();
    for (node, tx) in targets {
        match policy.fate(&node, e) {
            CopyFate::Now => {
                let _ = tx.send(e.clone());
            }
            CopyFate::Twice => {
                let _ = tx.send(e.clone());
                let _ = tx.send(e.clone());
            }
            CopyFate::Delay(ms) => {
                let e = e.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let _ = tx.send(e);
                });
            }
            CopyFate::Drop => {}
        }
    }
}

/// One subscriber connection on the host: its opening frame, then events
/// and pings, numbered, until a write fails or times out.
async fn subscription(mut stream: TcpStream, id: u64, subs: Subscribers) {
    let Some(Ok(req)) = with_timeout(
        Duration::from_millis(SILENCE_MS),
        read_msg::<_, SubscribeReq>(&mut stream),
    )
    .await
    else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    subs.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((id, req.node, tx));
    let mut seq = 0u64;
    loop {
        // Frame 0 goes at once: it tells the subscriber it is subscribed.
        let event = if seq == 0 {
            None
        } else {
            // Biased: an unbiased select draws from tokio's per-runtime
            // generator, which no seed controls (INV-12).
            tokio::select! {
                biased;
                e = rx.recv() => e,
                _ = tokio::time::sleep(Duration::from_millis(PING_MS)) => None,
            }
        };
        let frame = SubFrame { seq, event };
        seq += 1;
        match with_timeout(WRITE_TIMEOUT, write_msg(&mut stream, &frame)).await {
            Some(Ok(())) => {}
            _ => break,
        }
    }
    subs.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(i, _, _)| *i != id);
}

/// What a [`NetBus`] saw, for the world's trace and the quiescence oracle.
#[derive(Debug, Default)]
pub struct NetBusStats {
    /// Subscription tasks still running (LINV-8: 0 after the loader closed).
    pub live_subscriptions: AtomicUsize,
    /// Connections a subscription gave up and made again (each one a resync).
    pub resyncs: AtomicU64,
}

/// An [`EventBus`] over turmoil TCP to the bus host `host`.
pub struct NetBus {
    host: String,
    rpc: RpcClient,
    timeout: Duration,
    stats: Arc<NetBusStats>,
    /// Subscriptions asked for, and how many connected at least once.
    asked: AtomicUsize,
    up: Arc<AtomicUsize>,
    up_changed: Arc<Notify>,
    stop: CancellationToken,
}

impl NetBus {
    /// A client of the bus host `host`; a publish gives up after `timeout`.
    pub fn new(host: &str, timeout: Duration) -> Self {
        Self {
            host: host.to_string(),
            rpc: RpcClient::new(host, PUB_PORT, timeout),
            timeout,
            stats: Arc::default(),
            asked: AtomicUsize::new(0),
            up: Arc::default(),
            up_changed: Arc::default(),
            stop: CancellationToken::new(),
        }
    }

    /// This bus stops when `stop` fires: publishes fail, subscriptions
    /// drop their connections and end (see [`RpcClient::stopping_on`]).
    pub fn stopping_on(mut self, stop: CancellationToken) -> Self {
        self.rpc = self.rpc.stopping_on(stop.clone());
        self.stop = stop;
        self
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<NetBusStats> {
        self.stats.clone()
    }

    /// Returns once every subscription made so far has connected at least
    /// once: a node serves only then, so no event published after it
    /// started serving can be missed unknowingly (a loss after that is a
    /// lost connection, which resyncs).
    pub async fn ready(&self) {
        loop {
            let changed = self.up_changed.notified();
            if self.up.load(Ordering::SeqCst) >= self.asked.load(Ordering::SeqCst) {
                return;
            }
            changed.await;
        }
    }
}

impl EventBus for NetBus {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            // A publish before this bus's own subscriptions are up would
            // race them (the contract wants the source to see its event).
            if with_timeout(self.timeout, self.ready()).await.is_none() {
                return Err(BusError("subscriptions not connected".into()));
            }
            match self.rpc.call::<_, PubReply>(WireEvent::of(&event)).await {
                Ok(PubReply::Ack) => Ok(()),
                Ok(PubReply::Malformed(e)) => Err(BusError(format!("bus host refused: {e}"))),
                Err(CallError::Unavailable(e) | CallError::Timeout(e) | CallError::Protocol(e)) => {
                    Err(BusError(e))
                }
            }
        })
    }

    fn subscribe(&self, node: &str) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.stats.live_subscriptions.fetch_add(1, Ordering::SeqCst);
        let task = SubTask {
            host: self.host.clone(),
            node: node.to_string(),
            tx,
            stats: self.stats.clone(),
            up: self.up.clone(),
            up_changed: self.up_changed.clone(),
            stop: self.stop.clone(),
        };
        tokio::spawn(task.run());
        rx
    }
}

struct SubTask {
    host: String,
    node: String,
    tx: mpsc::UnboundedSender<Event>,
    stats: Arc<NetBusStats>,
    up: Arc<AtomicUsize>,
    up_changed: Arc<Notify>,
    stop: CancellationToken,
}

impl SubTask {
    /// Connects, forwards, reconnects — until the subscriber is gone.
    async fn run(self) {
        let first = AtomicBool::new(true);
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                _ = self.tx.closed() => break,
                _ = self.connection(&first) => {}
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                _ = self.tx.closed() => break,
                _ = tokio::time::sleep(Duration::from_millis(RECONNECT_MS)) => {}
            }
        }
        self.stats.live_subscriptions.fetch_sub(1, Ordering::SeqCst);
    }

    /// One connection, until it is lost.
    async fn connection(&self, first: &AtomicBool) {
        let silence = Duration::from_millis(SILENCE_MS);
        let Some(Ok(mut stream)) =
            with_timeout(silence, TcpStream::connect((self.host.as_str(), SUB_PORT))).await
        else {
            return;
        };
        let hello = SubscribeReq {
            node: self.node.clone(),
        };
        if !matches!(
            with_timeout(silence, write_msg(&mut stream, &hello)).await,
            Some(Ok(()))
        ) {
            return;
        }
        let mut expect = 0u64;
        loop {
            let frame = match with_timeout(silence, read_msg::<_, SubFrame>(&mut stream)).await {
                Some(Ok(f)) if f.seq == expect => f,
                _ => return,
            };
            if expect == 0 {
                // Subscribed from here on. After a lost connection the node
                // cannot know what it missed: it drops its local copies.
                if first.swap(false, Ordering::SeqCst) {
                    self.up.fetch_add(1, Ordering::SeqCst);
                    self.up_changed.notify_waiters();
                } else {
                    self.stats.resyncs.fetch_add(1, Ordering::SeqCst);
                    let _ = self.tx.send(Event::resync());
                }
            }
            expect += 1;
            if let Some(e) = frame.event {
                match e.event() {
                    Some(e) => {
                        let _ = self.tx.send(e);
                    }
                    None => return,
                }
            }
        }
    }
}
