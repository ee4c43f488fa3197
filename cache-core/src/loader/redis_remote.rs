//! The remote tier on Redis (L-3, L-4, L-10): a [`Remote`] over the `redis`
//! crate's reconnecting [`ConnectionManager`] on tokio.
//!
//! Every operation is one command or one pipeline: values are written with
//! `SET key value PX ttl` (plus `NX` / `XX` for the conditional writes),
//! batches with `MGET` and a pipeline of `SET … PX`, the refresh lock with
//! `SET lock owner NX PX window`. Keys arrive already encoded by
//! [`super::keys`], so they start with `<cache name>:` and stay injective
//! (L-5); this module adds nothing to them.
//!
//! Failures come back as typed [`RemoteError`]s — unreachable or dropped
//! connection: `Unavailable`; no answer within the operation timeout:
//! `Timeout`; a reply of the wrong shape: `Protocol`; an error reply
//! (`OOM`, `READONLY`, …): `Rejected`. The loader decides what they mean
//! (a failing read degrades to the loader, a failing write is counted and
//! reported, L-4); this module never retries a command itself, so a write
//! is never applied twice behind the loader's back.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError};

use super::remote::{Remote, RemoteError, RemoteResult};

/// How a Redis client connects and how long it waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// The server, as a `redis://host:port/db` URL.
    pub url: String,
    /// Longest one operation may take, connection wait included, ms. Past
    /// it the operation fails with [`RemoteError::Timeout`]: a paused or
    /// overloaded server costs a caller this long at most.
    pub op_timeout_ms: u64,
    /// Longest one connection attempt may take, ms.
    pub connect_timeout_ms: u64,
    /// Reconnection attempts after a dropped connection before the manager
    /// waits for the next command to try again.
    pub reconnect_retries: usize,
}

impl RedisOptions {
    /// Options for the server at `url`: 1 s per operation, 500 ms per
    /// connection attempt, 3 reconnection attempts.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            op_timeout_ms: 1_000,
            connect_timeout_ms: 500,
            reconnect_retries: 3,
        }
    }

    /// With this operation timeout, ms.
    pub fn op_timeout_ms(mut self, ms: u64) -> Self {
        self.op_timeout_ms = ms;
        self
    }

    fn check(&self) -> RemoteResult<()> {
        let bad = |detail: String| RemoteError::Rejected {
            op: "connect",
            detail,
        };
        if self.op_timeout_ms == 0 {
            return Err(bad("op_timeout_ms must be at least 1".into()));
        }
        if self.connect_timeout_ms == 0 {
            return Err(bad("connect_timeout_ms must be at least 1".into()));
        }
        Ok(())
    }

    pub(crate) fn client(&self) -> RemoteResult<Client> {
        self.check()?;
        Client::open(self.url.as_str()).map_err(|e| RemoteError::Rejected {
            op: "connect",
            detail: format!("url {:?}: {e}", self.url),
        })
    }

    pub(crate) fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_millis(self.op_timeout_ms)))
            .set_connection_timeout(Some(Duration::from_millis(self.connect_timeout_ms)))
            .set_number_of_retries(self.reconnect_retries)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500))
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.op_timeout_ms)
    }
}

/// Maps a Redis client error to the loader's typed remote error.
pub(crate) fn map_error(op: &'static str, e: &RedisError) -> RemoteError {
    let detail = e.to_string();
    if e.is_timeout() {
        RemoteError::Timeout { op, detail }
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        RemoteError::Unavailable { op, detail }
    } else {
        match e.kind() {
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
                RemoteError::Protocol { op, detail }
            }
            ErrorKind::Server(_) | ErrorKind::Extension => RemoteError::Rejected { op, detail },
            // Client-side states (a closed manager, a bad config) leave the
            // remote out of reach for this call.
            _ => RemoteError::Unavailable { op, detail },
        }
    }
}

/// A Redis remote tier. Clones share one connection manager (one
/// multiplexed connection, reconnected on I/O errors).
#[derive(Clone)]
pub struct RedisRemote {
    conn: ConnectionManager,
    opts: RedisOptions,
}

impl std::fmt::Debug for RedisRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRemote")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl RedisRemote {
    /// Connects to the server named in `opts` (within its connect timeout).
    /// A bad URL or a zero timeout is `Rejected` naming the field; an
    /// unreachable server is `Unavailable` (or `Timeout`).
    pub async fn connect(opts: RedisOptions) -> RemoteResult<Self> {
        let client = opts.client()?;
        let connect = ConnectionManager::new_with_config(client, opts.manager_config());
        let conn = match tokio::time::timeout(
            Duration::from_millis(opts.connect_timeout_ms.saturating_mul(2)),
            connect,
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(map_error("connect", &e)),
            Err(_) => {
                return Err(RemoteError::Timeout {
                    op: "connect",
                    detail: format!("no connection within {} ms", opts.connect_timeout_ms),
                })
            }
        };
        Ok(Self { conn, opts })
    }

    /// The options it was made with.
    pub fn options(&self) -> &RedisOptions {
        &self.opts
    }

    /// Its connection (shared, not a new one): for commands the trait does
    /// not cover, and for benches that time bare commands on the very same
    /// client.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs `cmd` within the operation timeout.
    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> RemoteResult<T> {
        let mut conn = self.conn.clone();
        self.bounded(op, cmd.query_async(&mut conn)).await
    }

    /// Runs `pipe` (one round trip) within the operation timeout.
    async fn run_pipe(&self, op: &'static str, pipe: &redis::Pipeline) -> RemoteResult<()> {
        let mut conn = self.conn.clone();
        self.bounded(op, pipe.query_async::<()>(&mut conn)).await
    }

    /// `fut` cut at the operation timeout, its error typed.
    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> RemoteResult<T> {
        match tokio::time::timeout(self.opts.op_timeout(), fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(op, &e)),
            Err(_) => Err(RemoteError::Timeout {
                op,
                detail: format!("no answer within {} ms", self.opts.op_timeout_ms),
            }),
        }
    }

    /// `SET key value [NX|XX] PX ttl`; whether it wrote.
    async fn set_cmd(
        &self,
        op: &'static str,
        key: &str,
        value: Vec<u8>,
        ttl_ms: u64,
        condition: Option<&'static str>,
    ) -> RemoteResult<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(c) = condition {
            cmd.arg(c);
        }
        // Redis refuses PX 0; the loader never asks for less than 1 ms.
        cmd.arg("PX").arg(ttl_ms.max(1));
        // `OK` when written, nil when NX/XX declined.
        let reply: Option<String> = self.run(op, &cmd).await?;
        match reply.as_deref() {
            None => Ok(false),
            Some("OK") => Ok(true),
            Some(other) => Err(RemoteError::Protocol {
                op,
                detail: format!("SET answered {other:?}, want OK or nil"),
            }),
        }
    }
}

impl Remote for RedisRemote {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, RemoteResult<Option<Vec<u8>>>> {
        Box::pin(async move { self.run("get", redis::cmd("GET").arg(key)).await })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<()>> {
        Box::pin(async move {
            match self.set_cmd("set", key, value, ttl_ms, None).await? {
                true => Ok(()),
                false => Err(RemoteError::Protocol {
                    op: "set",
                    detail: "an unconditional SET answered nil".into(),
                }),
            }
        })
    }

    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(self.set_cmd("set_if_absent", key, value, ttl_ms, Some("NX")))
    }

    fn set_if_present<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(self.set_cmd("set_if_present", key, value, ttl_ms, Some("XX")))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(async move {
            let n: i64 = self.run("delete", redis::cmd("DEL").arg(key)).await?;
            Ok(n > 0)
        })
    }

    fn multi_get<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, RemoteResult<Vec<Option<Vec<u8>>>>> {
        Box::pin(async move {
            if keys.is_empty() {
                // MGET needs at least one key.
                return Ok(Vec::new());
            }
            let want = keys.len();
            let got: Vec<Option<Vec<u8>>> =
                self.run("multi_get", redis::cmd("MGET").arg(keys)).await?;
            if got.len() != want {
                return Err(RemoteError::Protocol {
                    op: "multi_get",
                    detail: format!("MGET of {want} keys answered {} values", got.len()),
                });
            }
            Ok(got)
        })
    }

    fn multi_set(&self, items: Vec<(String, Vec<u8>, u64)>) -> BoxFuture<'_, RemoteResult<()>> {
        Box::pin(async move {
            if items.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            for (key, value, ttl_ms) in items {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(ttl_ms.max(1))
                    .ignore();
            }
            // One round trip; an error reply to any SET (OOM) fails the whole
            // call, which the loader counts as one failed write (L-4).
            self.run_pipe("multi_set", &pipe).await
        })
    }

    fn lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(self.set_cmd("lock", key, owner.as_bytes().to_vec(), ttl_ms, Some("NX")))
    }
}
