//! A client host: runs its plan of timed operations over one connection at
//! a time (one connection = one session), reconnecting after drops, timeouts
//! and engine restarts, and retrying failed calls when its plan says so.
//!
//! The host is generic over its transport and what it reports to
//! ([`ClientHost`]): the simulation plugs in the [`World`] (trace, oracles,
//! fault flags), `cache-sim load` real sockets and a few counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};

use crate::oracle::{self, Observation};
use crate::plan::{Op, OpKind};
use crate::protocol::{Request, Response, ANSWER_MS, PING_MS};
use crate::transport::{Connector, SimConnector, Stream};
use crate::world::World;

/// What a client host connects with and reports to.
pub trait ClientHost: Clone + Send + Sync + 'static {
    /// How it reaches the engine.
    type Connector: Connector;
    /// The connector.
    fn connector(&self) -> &Self::Connector;
    /// The HELLO client `c` sends on every new connection.
    fn hello(&self, c: usize) -> Request;
    /// One line of the client's log.
    fn trace(&self, who: &str, what: impl AsRef<str>);
    /// Counts an event; nothing by default.
    fn count(&self, _what: &str) {}
    /// Reports an observation to the oracles; nothing by default.
    fn observe(&self, _obs: Observation<'_>) {}
    /// Whether client `c` should drop its connection now (a fault).
    fn take_drop_flag(&self, _c: usize) -> bool {
        false
    }
    /// A request was sent.
    fn note_sent(&self) {}
    /// Client `c` starts operation `op` after a pause of `gap_ms`.
    fn note_op(&self, _c: usize, _op: usize, _gap_ms: u64) {}
}

impl ClientHost for Arc<World> {
    type Connector = SimConnector;
    fn connector(&self) -> &SimConnector {
        &SimConnector
    }
    fn hello(&self, c: usize) -> Request {
        Request::Hello(c, None)
    }
    fn trace(&self, who: &str, what: impl AsRef<str>) {
        World::trace(self, who, what)
    }
    fn count(&self, what: &str) {
        World::count(self, what)
    }
    fn observe(&self, obs: Observation<'_>) {
        oracle::observe(self, obs)
    }
    fn take_drop_flag(&self, c: usize) -> bool {
        World::take_drop_flag(self, c)
    }
    fn note_sent(&self) {
        World::note_sent(self)
    }
    fn note_op(&self, c: usize, op: usize, gap_ms: u64) {
        self.set_progress(c, op);
        self.note_pause(gap_ms);
    }
}

type Read<H> = <<<H as ClientHost>::Connector as Connector>::Stream as Stream>::Read;
type Write<H> = <<<H as ClientHost>::Connector as Connector>::Stream as Stream>::Write;

struct Conn<H: ClientHost> {
    lines: Lines<BufReader<Read<H>>>,
    wr: Write<H>,
}

impl<H: ClientHost> Conn<H> {
    async fn send(&mut self, r: Request) -> bool {
        // Bounded: a partition leaves turmoil's in-flight segments unacked,
        // and once they fill up a write would wait forever; a real client
        // gives up on a stuck write and reconnects.
        let line = r.line();
        let write = self.wr.write_all(line.as_bytes());
        matches!(
            tokio::time::timeout(Duration::from_millis(ANSWER_MS), write).await,
            Ok(Ok(()))
        )
    }
}

struct Client<H: ClientHost> {
    world: H,
    ops: Vec<Op>,
    c: usize,
    name: String,
    conn: Option<Conn<H>>,
    next_req: u64,
    /// Calls sent and not yet answered, by request id: several when the
    /// plan pipelines them.
    pending: BTreeMap<u64, Pending>,
}

/// A call waiting for its answer.
struct Pending {
    /// Its operation in the plan.
    op: usize,
    /// Cancel after this long without an answer.
    cancel_ms: Option<u64>,
    /// Retry once after a resolver failure (S-4).
    retry: bool,
    /// Waited so far, ms.
    waited: u64,
    /// A cancel was sent.
    cancelled: bool,
}

impl<H: ClientHost> Client<H> {
    fn trace(&self, what: impl AsRef<str>) {
        self.world.trace(&self.name, what);
    }

    fn drop_conn(&mut self, why: &str) {
        if self.conn.take().is_some() {
            self.trace(format!("drops connection ({why})"));
        }
        self.lose_pending(why);
    }

    /// Every call still waiting lost its answer with the connection.
    fn lose_pending(&mut self, why: &str) {
        for req in std::mem::take(&mut self.pending).into_keys() {
            self.trace(format!("r{req} lost: {why}"));
            self.world.count("lost-answers");
        }
    }

    async fn connect(&mut self) {
        while self.conn.is_none() {
            let attempt =
                tokio::time::timeout(Duration::from_millis(500), self.world.connector().connect())
                    .await;
            match attempt {
                Ok(Ok(s)) => {
                    let (rd, wr) = s.split();
                    let mut conn = Conn {
                        lines: BufReader::new(rd).lines(),
                        wr,
                    };
                    if conn.send(self.world.hello(self.c)).await {
                        self.conn = Some(conn);
                        self.trace("connected");
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Sleeps `ms`, pinging the engine so that it keeps the session; the
    /// answers of pipelined calls are read as they come.
    async fn idle(&mut self, ms: u64) {
        let mut left = ms;
        while left > 0 {
            let step = left.min(PING_MS);
            if self.pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(step)).await;
            } else {
                self.read_for(step).await;
            }
            left -= step;
            self.check_drop_flag();
            if let Some(conn) = self.conn.as_mut() {
                if !conn.send(Request::Ping).await {
                    self.drop_conn("ping failed");
                }
            }
        }
    }

    fn check_drop_flag(&mut self) {
        if self.world.take_drop_flag(self.c) {
            self.drop_conn("fault: dropped connection");
        }
    }

    /// Sends operation `op` as a new request; its id, or `None` when the
    /// send failed (the connection is dropped).
    async fn send(&mut self, op: usize, cancel_ms: Option<u64>, retry: bool) -> Option<u64> {
        self.connect().await;
        let req = self.next_req;
        self.next_req += 1;
        let sent = match self.conn.as_mut() {
            Some(conn) => conn.send(Request::Call(req, op)).await,
            None => false,
        };
        if !sent {
            self.drop_conn("send failed");
            return None;
        }
        self.trace(format!("r{req} op{op} sent"));
        self.world.note_sent();
        self.pending.insert(
            req,
            Pending {
                op,
                cancel_ms,
                retry,
                waited: 0,
                cancelled: false,
            },
        );
        Some(req)
    }

    /// Runs operation `op` and waits for its answer (and its retry's).
    async fn request(&mut self, op: usize, cancel_ms: Option<u64>, retry: bool) {
        let mut target = self.send(op, cancel_ms, retry).await;
        while let Some(req) = target {
            target = self.wait_for(req).await;
        }
    }

    /// Reads answers until `req` is answered or lost; the id of its retry
    /// when it failed and its plan retries it.
    async fn wait_for(&mut self, req: u64) -> Option<u64> {
        while self.pending.contains_key(&req) {
            if let Some((answered, retry)) = self.read_one().await {
                if answered == req {
                    return retry;
                }
            }
        }
        None
    }

    /// Reads the answers of pipelined calls for `ms` (an idle step).
    async fn read_for(&mut self, ms: u64) {
        let until = tokio::time::Instant::now() + Duration::from_millis(ms);
        while !self.pending.is_empty() {
            let now = tokio::time::Instant::now();
            if now >= until {
                break;
            }
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match tokio::time::timeout(until - now, conn.lines.next_line()).await {
                Ok(Ok(Some(l))) => {
                    self.answered(&l, true).await;
                }
                Ok(Ok(None)) | Ok(Err(_)) => self.drop_conn("connection lost"),
                Err(_) => {}
            }
        }
        for p in self.pending.values_mut() {
            p.waited += ms;
        }
        self.cancel_due().await;
    }

    /// Waits one ping interval for a line: the request it answered and its
    /// retry, if any. Sends the cancels that are due and gives up on calls
    /// that waited too long.
    async fn read_one(&mut self) -> Option<(u64, Option<u64>)> {
        self.check_drop_flag();
        let Some(conn) = self.conn.as_mut() else {
            self.lose_pending("connection dropped");
            return None;
        };
        let slice = Duration::from_millis(PING_MS);
        let got = match tokio::time::timeout(slice, conn.lines.next_line()).await {
            Ok(Ok(Some(l))) => self.answered(&l, true).await,
            Ok(Ok(None)) | Ok(Err(_)) => {
                self.drop_conn("connection lost");
                return None;
            }
            Err(_) => {
                for p in self.pending.values_mut() {
                    p.waited += PING_MS;
                }
                if !conn.send(Request::Ping).await {
                    self.drop_conn("ping failed");
                    return None;
                }
                None
            }
        };
        self.cancel_due().await;
        got
    }

    /// Sends the cancels that are due; drops the connection when a call
    /// waited longer than any answer takes.
    async fn cancel_due(&mut self) {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.cancelled && p.cancel_ms.is_some_and(|ms| p.waited >= ms))
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            let Some(p) = self.pending.get_mut(&req) else {
                continue;
            };
            p.cancelled = true;
            let init = matches!(self.ops[p.op].kind, OpKind::Arbitrary { .. });
            self.world
                .count(if init { "cancel:init" } else { "cancel:call" });
            self.trace(format!("cancels r{req}"));
            if let Some(conn) = self.conn.as_mut() {
                let _ = conn.send(Request::Cancel(req)).await;
            }
        }
        if self.pending.values().any(|p| p.waited >= ANSWER_MS) {
            self.drop_conn("no answer");
        }
    }

    /// One line from the engine: if it answers a pending call, the oracles
    /// see it, and a resolver failure the plan retries is sent again.
    async fn answered(&mut self, line: &str, may_retry: bool) -> Option<(u64, Option<u64>)> {
        let Some(Response::Answer { req, result }) = Response::parse(line) else {
            return None;
        };
        let p = self.pending.remove(&req)?;
        self.world.observe(Observation::ClientAnswered {
            client: &self.name,
            req,
            result: &result,
            cancelled: p.cancelled,
        });
        let mut retry = None;
        if may_retry && p.retry && matches!(result, Err(kind) if kind.from_resolver()) {
            self.trace(format!("retries op{}", p.op));
            retry = self.send(p.op, None, false).await;
        }
        Some((req, retry))
    }

    /// Closes the session (S-1). Answers of pipelined calls that arrive
    /// before the engine confirms are seen (not retried: the session is
    /// going); the rest are lost with the session.
    async fn close(&mut self) {
        let sent = match self.conn.as_mut() {
            Some(conn) => conn.send(Request::Close).await,
            None => false,
        };
        if sent {
            let until = tokio::time::Instant::now() + Duration::from_millis(ANSWER_MS);
            let mut closed = false;
            while let Some(conn) = self.conn.as_mut() {
                match tokio::time::timeout_at(until, conn.lines.next_line()).await {
                    Ok(Ok(Some(l))) if Response::parse(&l) == Some(Response::Closed) => {
                        closed = true;
                        break;
                    }
                    Ok(Ok(Some(l))) => {
                        self.answered(&l, false).await;
                    }
                    _ => break,
                }
            }
            self.trace(format!(
                "close: {}",
                if closed { "closed" } else { "no answer" }
            ));
        }
        self.conn = None;
        self.lose_pending("session closed");
    }
}

/// The client host's software. After a crash the host is restarted with
/// this same software: it reconnects (a new session; the engine closes the
/// old one when it notices the dead connection, S-6) and resumes its plan
/// at the operation it was at.
pub async fn run(world: Arc<World>, c: usize) -> turmoil::Result {
    let ops = world.plan.clients[c].clone();
    let start = world.progress(c);
    run_ops(world.clone(), c, ops, start).await;
    world.set_done(c);
    Ok(())
}

/// Runs client `c`'s operations `ops` from `start` over one connection at a
/// time, then closes its session: the client host's code for a simulation
/// and for `cache-sim load` alike.
pub async fn run_ops<H: ClientHost>(world: H, c: usize, ops: Vec<Op>, start: usize) {
    let mut cl = Client {
        world: world.clone(),
        ops: ops.clone(),
        c,
        name: format!("client{c}"),
        conn: None,
        next_req: 1,
        pending: BTreeMap::new(),
    };
    if start > 0 {
        cl.trace(format!("restarted: resumes at op{start}"));
    }
    cl.connect().await;
    for (i, op) in ops.iter().enumerate().skip(start) {
        world.note_op(c, i, op.gap_ms);
        cl.idle(op.gap_ms).await;
        match &op.kind {
            OpKind::Call {
                cancel_ms,
                retry,
                pipelined,
                ..
            } => {
                if *pipelined {
                    cl.send(i, *cancel_ms, *retry).await;
                } else {
                    cl.request(i, *cancel_ms, *retry).await;
                }
            }
            OpKind::Arbitrary { cancel_ms, .. } => {
                cl.request(i, *cancel_ms, false).await;
            }
            OpKind::InvalidCall => cl.request(i, None, false).await,
            OpKind::Close => {
                // Pipelined calls still in flight race the close (S-1a).
                cl.connect().await;
                cl.close().await;
                cl.connect().await;
            }
            OpKind::Reconnect => {
                cl.drop_conn("plan: reconnect");
                cl.connect().await;
            }
        }
    }
    // Pipelined calls get their answers before the final close.
    while let Some(&req) = cl.pending.keys().next() {
        cl.wait_for(req).await;
    }
    cl.connect().await;
    cl.close().await;
    cl.trace("done");
}
