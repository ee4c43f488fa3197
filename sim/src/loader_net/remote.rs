//! The remote tier over simulated TCP: a host serving a [`MemoryRemote`]
//! (its injected faults and latency included) and [`NetRemote`], a
//! [`Remote`] client of it (L-3, L-4, L-10 across a real socket).

use std::time::Duration;

use super::BoxFuture;
use cache_core::loader::remote::RemoteResult;
use cache_core::loader::{MemoryRemote, Remote, RemoteError};
use serde::{Deserialize, Serialize};

use super::frame::{serve_rpc, CallError, RpcClient};

/// The remote host's port.
pub const REMOTE_PORT: u16 = 6379;

/// Longest a server waits to write one reply before dropping the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A remote operation on the wire (one per [`Remote`] method).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RemoteReq {
    /// `get`.
    Get(String),
    /// `set`.
    Set(String, Vec<u8>, u64),
    /// `set_if_absent`.
    SetIfAbsent(String, Vec<u8>, u64),
    /// `set_if_present`.
    SetIfPresent(String, Vec<u8>, u64),
    /// `delete`.
    Delete(String),
    /// `multi_get`.
    MultiGet(Vec<String>),
    /// `multi_set`.
    MultiSet(Vec<(String, Vec<u8>, u64)>),
    /// `lock`: key, owner, ttl.
    Lock(String, String, u64),
}

/// Which [`RemoteError`] the server reports.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum WireErrorKind {
    /// [`RemoteError::Unavailable`].
    Unavailable,
    /// [`RemoteError::Timeout`].
    Timeout,
    /// [`RemoteError::Protocol`].
    Protocol,
    /// [`RemoteError::Rejected`].
    Rejected,
}

/// A remote reply on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RemoteReply {
    /// One value or none (`get`).
    Value(Option<Vec<u8>>),
    /// Values in the order asked (`multi_get`).
    Values(Vec<Option<Vec<u8>>>),
    /// Done (`set`, `multi_set`).
    Done,
    /// Whether it wrote / was there / took the lock.
    Flag(bool),
    /// The backend failed.
    Failed(WireErrorKind, String),
}

fn to_wire(e: RemoteError) -> RemoteReply {
    match e {
        RemoteError::Unavailable { detail, .. } => {
            RemoteReply::Failed(WireErrorKind::Unavailable, detail)
        }
        RemoteError::Timeout { detail, .. } => RemoteReply::Failed(WireErrorKind::Timeout, detail),
        RemoteError::Protocol { detail, .. } => {
            RemoteReply::Failed(WireErrorKind::Protocol, detail)
        }
        RemoteError::Rejected { detail, .. } => {
            RemoteReply::Failed(WireErrorKind::Rejected, detail)
        }
    }
}

/// Runs one request against the backend.
pub async fn apply(remote: &MemoryRemote, req: RemoteReq) -> RemoteReply {
    let r = match req {
        RemoteReq::Get(k) => remote.get(&k).await.map(RemoteReply::Value),
        RemoteReq::Set(k, v, t) => remote.set(&k, v, t).await.map(|()| RemoteReply::Done),
        RemoteReq::SetIfAbsent(k, v, t) => {
            remote.set_if_absent(&k, v, t).await.map(RemoteReply::Flag)
        }
        RemoteReq::SetIfPresent(k, v, t) => {
            remote.set_if_present(&k, v, t).await.map(RemoteReply::Flag)
        }
        RemoteReq::Delete(k) => remote.delete(&k).await.map(RemoteReply::Flag),
        RemoteReq::MultiGet(ks) => {
            let refs: Vec<&str> = ks.iter().map(String::as_str).collect();
            remote.multi_get(&refs).await.map(RemoteReply::Values)
        }
        RemoteReq::MultiSet(items) => remote.multi_set(items).await.map(|()| RemoteReply::Done),
        RemoteReq::Lock(k, o, t) => remote.lock(&k, &o, t).await.map(RemoteReply::Flag),
    };
    r.unwrap_or_else(to_wire)
}

/// The remote host: serves `remote` on [`REMOTE_PORT`], one task per
/// connection. `on_applied` sees every request with its reply, in the
/// order the backend ran them (the world records what each key was last
/// written to, for the convergence oracle).
pub async fn serve_remote(
    remote: MemoryRemote,
    on_applied: impl Fn(&RemoteReq, &RemoteReply) + Clone + Send + Sync + 'static,
) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", REMOTE_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let remote = remote.clone();
        let on_applied = on_applied.clone();
        tokio::spawn(async move {
            serve_rpc(
                stream,
                WRITE_TIMEOUT,
                |e| RemoteReply::Failed(WireErrorKind::Protocol, e),
                |req: RemoteReq| {
                    let (remote, on_applied) = (remote.clone(), on_applied.clone());
                    async move {
                        let reply = apply(&remote, req.clone()).await;
                        on_applied(&req, &reply);
                        reply
                    }
                },
            )
            .await;
        });
    }
}

/// A [`Remote`] over turmoil TCP to the remote host: reconnects after a
/// broken connection; a call with no answer within its timeout is
/// [`RemoteError::Timeout`]; a malformed or mismatched reply is
/// [`RemoteError::Protocol`].
pub struct NetRemote {
    rpc: RpcClient,
}

impl NetRemote {
    /// A client of the remote host `host`; every call gives up after `timeout`.
    pub fn new(host: &str, timeout: Duration) -> Self {
        Self {
            rpc: RpcClient::new(host, REMOTE_PORT, timeout),
        }
    }

    /// This client stops when `stop` fires (see [`RpcClient::stopping_on`]).
    pub fn stopping_on(mut self, stop: tokio_util::sync::CancellationToken) -> Self {
        self.rpc = self.rpc.stopping_on(stop);
        self
    }

    async fn call(&self, op: &'static str, req: RemoteReq) -> RemoteResult<RemoteReply> {
        let reply = self.rpc.call(req).await.map_err(|e| match e {
            CallError::Unavailable(detail) => RemoteError::Unavailable { op, detail },
            CallError::Timeout(detail) => RemoteError::Timeout { op, detail },
            CallError::Protocol(detail) => RemoteError::Protocol { op, detail },
        })?;
        match reply {
            RemoteReply::Failed(kind, detail) => Err(match kind {
                WireErrorKind::Unavailable => RemoteError::Unavailable { op, detail },
                WireErrorKind::Timeout => RemoteError::Timeout { op, detail },
                WireErrorKind::Protocol => RemoteError::Protocol { op, detail },
                WireErrorKind::Rejected => RemoteError::Rejected { op, detail },
            }),
            other => Ok(other),
        }
    }

    async fn flag(&self, op: &'static str, req: RemoteReq) -> RemoteResult<bool> {
        match self.call(op, req).await? {
            RemoteReply::Flag(b) => Ok(b),
            other => Err(wrong(op, &other)),
        }
    }

    async fn done(&self, op: &'static str, req: RemoteReq) -> RemoteResult<()> {
        match self.call(op, req).await? {
            RemoteReply::Done => Ok(()),
            other => Err(wrong(op, &other)),
        }
    }
}

fn wrong(op: &'static str, reply: &RemoteReply) -> RemoteError {
    RemoteError::Protocol {
        op,
        detail: format!("unexpected reply {reply:?}"),
    }
}

impl Remote for NetRemote {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, RemoteResult<Option<Vec<u8>>>> {
        Box::pin(async move {
            match self.call("get", RemoteReq::Get(key.into())).await? {
                RemoteReply::Value(v) => Ok(v),
                other => Err(wrong("get", &other)),
            }
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<()>> {
        Box::pin(self.done("set", RemoteReq::Set(key.into(), value, ttl_ms)))
    }

    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(self.flag(
            "set_if_absent",
            RemoteReq::SetIfAbsent(key.into(), value, ttl_ms),
        ))
    }

    fn set_if_present<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(self.flag(
            "set_if_present",
            RemoteReq::SetIfPresent(key.into(), value, ttl_ms),
        ))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(self.flag("delete", RemoteReq::Delete(key.into())))
    }

    fn multi_get<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, RemoteResult<Vec<Option<Vec<u8>>>>> {
        Box::pin(async move {
            let asked = keys.len();
            let req = RemoteReq::MultiGet(keys.iter().map(|k| k.to_string()).collect());
            match self.call("multi_get", req).await? {
                RemoteReply::Values(v) if v.len() == asked => Ok(v),
                other => Err(wrong("multi_get", &other)),
            }
        })
    }

    fn multi_set(&self, items: Vec<(String, Vec<u8>, u64)>) -> BoxFuture<'_, RemoteResult<()>> {
        Box::pin(self.done("multi_set", RemoteReq::MultiSet(items)))
    }

    fn lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(self.flag("lock", RemoteReq::Lock(key.into(), owner.into(), ttl_ms)))
    }
}
