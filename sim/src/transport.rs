//! The two transports the engine and client hosts run on: turmoil's
//! simulated TCP (the simulation) and tokio's real TCP (`cache-sim serve`
//! and `cache-sim load`). The hosts are generic over these traits, so one
//! host's code serves both; only the socket types differ.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// A connected byte stream that splits into owned halves (one task owns
/// both, see the engine host).
pub trait Stream: Send + 'static {
    /// The read half.
    type Read: AsyncRead + Unpin + Send + 'static;
    /// The write half.
    type Write: AsyncWrite + Unpin + Send + 'static;
    /// Splits the stream.
    fn split(self) -> (Self::Read, Self::Write);
}

/// A bound listener.
pub trait Listener: Send + Sync + 'static {
    /// The streams it accepts.
    type Stream: Stream;
    /// The next connection.
    fn accept_stream(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Opens connections to the engine.
pub trait Connector: Send + Sync + 'static {
    /// The streams it opens.
    type Stream: Stream;
    /// One new connection.
    fn connect(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Stream for turmoil::net::TcpStream {
    type Read = turmoil::net::tcp::OwnedReadHalf;
    type Write = turmoil::net::tcp::OwnedWriteHalf;
    fn split(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl Listener for turmoil::net::TcpListener {
    type Stream = turmoil::net::TcpStream;
    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// The simulation's engine host, by its turmoil name and port.
#[derive(Clone, Copy, Debug)]
pub struct SimConnector;

impl Connector for SimConnector {
    type Stream = turmoil::net::TcpStream;
    async fn connect(&self) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(("engine", crate::protocol::PORT)).await
    }
}

impl Stream for tokio::net::TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn split(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// A real engine at a socket address.
#[derive(Clone, Copy, Debug)]
pub struct TcpConnector(pub SocketAddr);

impl Connector for TcpConnector {
    type Stream = tokio::net::TcpStream;
    async fn connect(&self) -> io::Result<Self::Stream> {
        let s = tokio::net::TcpStream::connect(self.0).await?;
        // One short line per frame: do not hold them back (Nagle).
        s.set_nodelay(true)?;
        Ok(s)
    }
}
