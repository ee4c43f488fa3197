//! A client host: runs its plan of timed operations over one connection at
//! a time (one connection = one session), reconnecting after drops, timeouts
//! and engine restarts, and retrying failed calls when its plan says so.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use turmoil::net::TcpStream;

use crate::oracle::{self, Observation};
use crate::plan::OpKind;
use crate::protocol::{ErrKind, Request, Response, ANSWER_MS, PING_MS, PORT};
use crate::world::World;

struct Conn {
    lines: Lines<BufReader<OwnedReadHalf>>,
    wr: OwnedWriteHalf,
}

impl Conn {
    async fn send(&mut self, r: Request) -> bool {
        self.wr.write_all(r.line().as_bytes()).await.is_ok()
    }
}

struct Client {
    world: Arc<World>,
    c: usize,
    name: String,
    conn: Option<Conn>,
    next_req: u64,
}

/// What waiting for an answer gave.
enum Answer {
    Got(Result<String, ErrKind>),
    Lost(&'static str),
}

impl Client {
    fn trace(&self, what: impl AsRef<str>) {
        self.world.trace(&self.name, what);
    }

    fn drop_conn(&mut self, why: &str) {
        if self.conn.take().is_some() {
            self.trace(format!("drops connection ({why})"));
        }
    }

    async fn connect(&mut self) {
        while self.conn.is_none() {
            let attempt = tokio::time::timeout(
                Duration::from_millis(500),
                TcpStream::connect(("engine", PORT)),
            )
            .await;
            match attempt {
                Ok(Ok(s)) => {
                    let (rd, wr) = s.into_split();
                    let mut conn = Conn {
                        lines: BufReader::new(rd).lines(),
                        wr,
                    };
                    if conn.send(Request::Hello(self.c)).await {
                        self.conn = Some(conn);
                        self.trace("connected");
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Sleeps `ms`, pinging the engine so that it keeps the session.
    async fn idle(&mut self, ms: u64) {
        let mut left = ms;
        while left > 0 {
            let step = left.min(PING_MS);
            tokio::time::sleep(Duration::from_millis(step)).await;
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

    /// Waits for the answer to `req`, cancelling after `cancel_ms`.
    async fn wait(&mut self, req: u64, cancel_ms: Option<u64>) -> Answer {
        let mut waited = 0;
        let mut cancelled = false;
        loop {
            self.check_drop_flag();
            let Some(conn) = self.conn.as_mut() else {
                return Answer::Lost("connection dropped");
            };
            let slice = Duration::from_millis(PING_MS);
            match tokio::time::timeout(slice, conn.lines.next_line()).await {
                Ok(Ok(Some(l))) => {
                    if let Some(Response::Answer { req: r, result }) = Response::parse(&l) {
                        if r == req {
                            oracle::observe(
                                &self.world,
                                Observation::ClientAnswered {
                                    client: &self.name,
                                    req,
                                    result: &result,
                                    cancelled,
                                },
                            );
                            return Answer::Got(result);
                        }
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => return Answer::Lost("connection lost"),
                Err(_) => {
                    waited += PING_MS;
                    if !conn.send(Request::Ping).await {
                        return Answer::Lost("ping failed");
                    }
                }
            }
            if let Some(ms) = cancel_ms {
                if !cancelled && waited >= ms {
                    cancelled = true;
                    self.trace(format!("cancels r{req}"));
                    if let Some(conn) = self.conn.as_mut() {
                        let _ = conn.send(Request::Cancel(req)).await;
                    }
                }
            }
            if waited >= ANSWER_MS {
                return Answer::Lost("no answer");
            }
        }
    }

    async fn request(
        &mut self,
        op: usize,
        cancel_ms: Option<u64>,
    ) -> Option<Result<String, ErrKind>> {
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
        match self.wait(req, cancel_ms).await {
            Answer::Got(result) => Some(result),
            Answer::Lost(why) => {
                self.trace(format!("r{req} lost: {why}"));
                self.world.count("lost-answers");
                self.drop_conn(why);
                None
            }
        }
    }

    async fn close(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            if conn.send(Request::Close).await {
                let until = tokio::time::timeout(Duration::from_millis(ANSWER_MS), async {
                    while let Ok(Some(l)) = conn.lines.next_line().await {
                        if Response::parse(&l) == Some(Response::Closed) {
                            return true;
                        }
                    }
                    false
                })
                .await;
                self.trace(format!(
                    "close: {}",
                    if until == Ok(true) {
                        "closed"
                    } else {
                        "no answer"
                    }
                ));
            }
        }
        self.conn = None;
    }
}

/// The client host's software. After a crash the host is restarted with
/// this same software: it reconnects (a new session; the engine closes the
/// old one when it notices the dead connection, S-6) and resumes its plan
/// at the operation it was at.
pub async fn run(world: Arc<World>, c: usize) -> turmoil::Result {
    let ops = world.plan.clients[c].clone();
    let mut cl = Client {
        world: world.clone(),
        c,
        name: format!("client{c}"),
        conn: None,
        next_req: 1,
    };
    let start = world.progress(c);
    if start > 0 {
        cl.trace(format!("restarted: resumes at op{start}"));
    }
    cl.connect().await;
    for (i, op) in ops.iter().enumerate().skip(start) {
        world.set_progress(c, i);
        world.note_pause(op.gap_ms);
        cl.idle(op.gap_ms).await;
        match &op.kind {
            OpKind::Call {
                cancel_ms, retry, ..
            } => {
                let answer = cl.request(i, *cancel_ms).await;
                let failed = matches!(answer, Some(Err(kind)) if kind.from_resolver());
                if failed && *retry {
                    cl.trace(format!("retries op{i}"));
                    cl.request(i, None).await;
                }
            }
            OpKind::Arbitrary { .. } => {
                cl.request(i, None).await;
            }
            OpKind::Close => {
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
    cl.connect().await;
    cl.close().await;
    cl.trace("done");
    world.set_done(c);
    Ok(())
}
