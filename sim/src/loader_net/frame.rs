//! Length-prefixed frames on a byte stream, and the request/response
//! client both the remote tier and the bus's publish path speak.
//!
//! A frame is a 4-byte big-endian length and that many bytes of JSON
//! (serde_json is already the sim's; the frames are small). A length above
//! [`MAX_FRAME`] or a body that does not decode is a protocol error, never
//! a panic; every read, write and connect a client makes runs under its
//! timeout, so a partition (turmoil drops or holds segments, and a held
//! link fills its in-flight segments until a writer blocks) ends in an
//! error instead of a hang.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use turmoil::net::TcpStream;

/// Longest frame body accepted, bytes: far above any batch the world
/// sends, far below what a garbage length would make a reader allocate.
pub const MAX_FRAME: usize = 1 << 20;

/// Why a frame could not be read or understood.
#[derive(Debug)]
pub enum FrameError {
    /// The stream failed or closed.
    Io(io::Error),
    /// The length prefix exceeds [`MAX_FRAME`].
    TooLong(usize),
    /// The body is not the expected message.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "stream failed: {e}"),
            Self::TooLong(n) => write!(f, "frame of {n} bytes exceeds the {MAX_FRAME}-byte limit"),
            Self::Malformed(e) => write!(f, "malformed frame: {e}"),
        }
    }
}

/// Writes one frame holding `msg`.
pub async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    write_frame(w, &body).await
}

/// Writes one frame holding `body` as is.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one frame's body.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.map_err(FrameError::Io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(FrameError::Io)?;
    Ok(body)
}

/// Reads one frame and decodes it as `T`.
pub async fn read_msg<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<T, FrameError> {
    let body = read_frame(r).await?;
    serde_json::from_slice(&body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// A request or reply with the id that pairs them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tagged<T> {
    /// Chosen by the client, echoed by the server.
    pub id: u64,
    /// The message.
    pub body: T,
}

/// Why a call through an [`RpcClient`] failed.
#[derive(Debug)]
pub enum CallError {
    /// No connection (refused, reset, closed).
    Unavailable(String),
    /// No answer within the timeout.
    Timeout(String),
    /// An answer that is not one (bad frame, wrong id).
    Protocol(String),
}

/// A request/response client over turmoil TCP: a small pool of idle
/// connections, one request in flight per connection. A connection goes
/// back to the pool only after a whole exchange; one dropped mid-way (an
/// error, a timeout, a caller that stopped waiting) is closed, so the next
/// call connects afresh: that is the reconnect.
pub struct RpcClient {
    host: String,
    port: u16,
    timeout: Duration,
    idle: Mutex<Vec<TcpStream>>,
    next_id: AtomicU64,
    stop: CancellationToken,
}

impl RpcClient {
    /// A client of `host:port`; each call gives up after `timeout`.
    pub fn new(host: &str, port: u16, timeout: Duration) -> Self {
        Self {
            host: host.to_string(),
            port,
            timeout,
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            stop: CancellationToken::new(),
        }
    }

    /// This client stops when `stop` fires: calls in flight end with
    /// [`CallError::Unavailable`] and drop their connections, in the order
    /// their tasks run, and later calls fail at once. A simulated node
    /// stops its clients before its host is torn down, whose task order
    /// follows tokio's process-global task ids (not the seed).
    pub fn stopping_on(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Closes the idle connections, oldest first.
    pub fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(idle);
    }

    /// The call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One exchange: `req` out, its reply back, within the timeout.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        req: Req,
    ) -> Result<Resp, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let exchange = async {
            let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut stream = match pooled {
                Some(s) => s,
                None => TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|e| CallError::Unavailable(format!("connect: {e}")))?,
            };
            write_msg(&mut stream, &Tagged { id, body: req })
                .await
                .map_err(|e| CallError::Unavailable(format!("write: {e}")))?;
            let reply: Tagged<Resp> = read_msg(&mut stream).await.map_err(|e| match e {
                FrameError::Io(e) => CallError::Unavailable(format!("read: {e}")),
                other => CallError::Protocol(other.to_string()),
            })?;
            if reply.id != id {
                return Err(CallError::Protocol(format!(
                    "reply to request {} on the connection of request {id}",
                    reply.id
                )));
            }
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(stream);
            Ok(reply.body)
        };
        let timed = async {
            with_timeout(self.timeout, exchange)
                .await
                .unwrap_or_else(|| {
                    Err(CallError::Timeout(format!(
                        "no answer within {} ms",
                        self.timeout.as_millis()
                    )))
                })
        };
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => {
                self.close_idle();
                Err(CallError::Unavailable("client stopped".into()))
            }
            r = timed => r,
        }
    }
}

/// `fut`'s output, or `None` once `limit` has passed (tokio time, which a
/// turmoil host runs on simulated time).
pub async fn with_timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, fut).await.ok()
}

/// Serves request/response exchanges on one connection until it closes, a
/// frame is malformed (answered with `malformed`'s reply under id 0, then
/// closed), or a reply cannot be written within `write_timeout`.
pub async fn serve_rpc<Req, Resp, F, Fut>(
    mut stream: TcpStream,
    write_timeout: Duration,
    malformed: impl Fn(String) -> Resp,
    handle: F,
) where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: Fn(Req) -> Fut,
    Fut: Future<Output = Resp>,
{
    loop {
        let req: Tagged<Req> = match read_msg(&mut stream).await {
            Ok(r) => r,
            Err(FrameError::Io(_)) => return,
            Err(e) => {
                let reply = Tagged {
                    id: 0,
                    body: malformed(e.to_string()),
                };
                let _ = with_timeout(write_timeout, write_msg(&mut stream, &reply)).await;
                return;
            }
        };
        let reply = Tagged {
            id: req.id,
            body: handle(req.body).await,
        };
        match with_timeout(write_timeout, write_msg(&mut stream, &reply)).await {
            Some(Ok(())) => {}
            _ => return,
        }
    }
}
