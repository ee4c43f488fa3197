//! The engine's small framed protocol: one text line per frame.
//!
//! Client → engine: `HELLO <client>`, `CALL <req> <op>`, `CANCEL <req>`,
//! `PING`, `CLOSE`. Engine → client: `R <req> ok <value>`,
//! `R <req> err <kind>`, `CLOSED`. Operations are named by their index in
//! the client's plan, which both sides share.

/// The engine's port.
pub const PORT: u16 = 7000;
/// The engine drops a connection that sent nothing for this long (S-6).
pub const IDLE_MS: u64 = 1000;
/// Clients ping at this interval while idle or waiting.
pub const PING_MS: u64 = 200;
/// A client gives up on an answer after this long and reconnects.
pub const ANSWER_MS: u64 = 4000;

/// A request frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Identifies the client.
    Hello(usize),
    /// Runs operation `op` of the client's plan as request `req`.
    Call(u64, usize),
    /// Cancels request `req`.
    Cancel(u64),
    /// Keep-alive.
    Ping,
    /// Closes the session (S-1).
    Close,
}

impl Request {
    /// Parses a frame.
    pub fn parse(line: &str) -> Option<Request> {
        let mut w = line.split_whitespace();
        let r = match w.next()? {
            "HELLO" => Request::Hello(w.next()?.parse().ok()?),
            "CALL" => Request::Call(w.next()?.parse().ok()?, w.next()?.parse().ok()?),
            "CANCEL" => Request::Cancel(w.next()?.parse().ok()?),
            "PING" => Request::Ping,
            "CLOSE" => Request::Close,
            _ => return None,
        };
        Some(r)
    }

    /// The frame.
    pub fn line(&self) -> String {
        match self {
            Request::Hello(c) => format!("HELLO {c}\n"),
            Request::Call(r, o) => format!("CALL {r} {o}\n"),
            Request::Cancel(r) => format!("CANCEL {r}\n"),
            Request::Ping => "PING\n".into(),
            Request::Close => "CLOSE\n".into(),
        }
    }
}
