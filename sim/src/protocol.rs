//! The engine's small framed protocol: one text line per frame.
//!
//! Client → engine: `HELLO <client> [<scenario> <seed>]`, `CALL <req> <op>`,
//! `CANCEL <req>`, `PING`, `CLOSE`. Engine → client: `R <req> ok <value>`,
//! `R <req> err <kind>`, `CLOSED`. Operations are named by their index in
//! the client's plan, which both sides share.
//!
//! How both sides know the plan: plans are a pure function of a named
//! scenario and a seed (`Plan::generate`). In a simulation the engine host
//! shares the world's plan, so the client says only `HELLO <client>`. A real
//! client (`cache-sim load`) names the scenario and seed in its HELLO and
//! the real engine (`cache-sim serve`) generates the same plan; the client
//! index then picks the client's list of operations. No operation parameter
//! goes over the wire, so the frames stay the simulation's.

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
    /// Identifies the client, and for a real client the plan it runs (a
    /// named scenario and a seed).
    Hello(usize, Option<(String, u64)>),
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
            "HELLO" => {
                let client = w.next()?.parse().ok()?;
                let plan = match w.next() {
                    None => None,
                    Some(name) => Some((name.to_string(), w.next()?.parse().ok()?)),
                };
                Request::Hello(client, plan)
            }
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
            Request::Hello(c, None) => format!("HELLO {c}\n"),
            Request::Hello(c, Some((scenario, seed))) => format!("HELLO {c} {scenario} {seed}\n"),
            Request::Call(r, o) => format!("CALL {r} {o}\n"),
            Request::Cancel(r) => format!("CANCEL {r}\n"),
            Request::Ping => "PING\n".into(),
            Request::Close => "CLOSE\n".into(),
        }
    }
}

/// The kind of error an answer carries: one per family of
/// [`CallError`](cache_core::CallError) variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrKind {
    /// C-5: the call was cancelled.
    Cancelled,
    /// C-9: the resolver returned an error.
    Resolver,
    /// C-14: the resolver panicked.
    Panicked,
    /// C-4: a recursive call.
    Recursive,
    /// S-2: the session was closed.
    SessionClosed,
    /// S-3: the session closed while the call ran.
    ClosedDuringExecution,
    /// C-1: an invalid key.
    InvalidKey,
    /// An unknown handle or id.
    Unknown,
    /// C-12: a release hook failed.
    ReleaseHook,
}

impl ErrKind {
    const ALL: [ErrKind; 9] = [
        ErrKind::Cancelled,
        ErrKind::Resolver,
        ErrKind::Panicked,
        ErrKind::Recursive,
        ErrKind::SessionClosed,
        ErrKind::ClosedDuringExecution,
        ErrKind::InvalidKey,
        ErrKind::Unknown,
        ErrKind::ReleaseHook,
    ];

    /// The kind of `e`.
    pub fn of(e: &cache_core::CallError) -> ErrKind {
        use cache_core::CallError as E;
        match e {
            E::Cancelled => ErrKind::Cancelled,
            E::Resolver(_) => ErrKind::Resolver,
            E::Panicked(_) => ErrKind::Panicked,
            E::Recursive { .. } => ErrKind::Recursive,
            E::SessionClosed => ErrKind::SessionClosed,
            E::ClosedDuringExecution => ErrKind::ClosedDuringExecution,
            E::InvalidKey(_) => ErrKind::InvalidKey,
            E::UnknownHandle(_) | E::Unknown { .. } => ErrKind::Unknown,
            E::ReleaseHook(_) => ErrKind::ReleaseHook,
        }
    }

    /// Its name on the wire and in traces.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrKind::Cancelled => "cancelled",
            ErrKind::Resolver => "resolver",
            ErrKind::Panicked => "panicked",
            ErrKind::Recursive => "recursive",
            ErrKind::SessionClosed => "session-closed",
            ErrKind::ClosedDuringExecution => "closed-during-execution",
            ErrKind::InvalidKey => "invalid-key",
            ErrKind::Unknown => "unknown",
            ErrKind::ReleaseHook => "release-hook",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<ErrKind> {
        ErrKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The resolver produced it (an error or a panic): a failure the
    /// client's plan may retry (S-4).
    pub fn from_resolver(self) -> bool {
        matches!(self, ErrKind::Resolver | ErrKind::Panicked)
    }
}

/// A response frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The answer to request `req`: the value shown (`o<N>` or `none`), or
    /// the kind of error.
    Answer {
        /// The request.
        req: u64,
        /// What it got.
        result: Result<String, ErrKind>,
    },
    /// The session is closed.
    Closed,
}

impl Response {
    /// Parses a frame.
    pub fn parse(line: &str) -> Option<Response> {
        let mut w = line.split_whitespace();
        let r = match w.next()? {
            "R" => {
                let req = w.next()?.parse().ok()?;
                let result = match w.next()? {
                    "ok" => Ok(w.next()?.to_string()),
                    "err" => Err(ErrKind::parse(w.next()?)?),
                    _ => return None,
                };
                Response::Answer { req, result }
            }
            "CLOSED" => Response::Closed,
            _ => return None,
        };
        Some(r)
    }

    /// The frame.
    pub fn line(&self) -> String {
        match self {
            Response::Answer { req, result: Ok(v) } => format!("R {req} ok {v}\n"),
            Response::Answer {
                req,
                result: Err(k),
            } => format!("R {req} err {}\n", k.as_str()),
            Response::Closed => "CLOSED\n".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_round_trip() {
        for r in [
            Request::Hello(2, None),
            Request::Hello(0, Some(("standard".into(), 17))),
        ] {
            assert_eq!(Request::parse(r.line().trim_end()), Some(r));
        }
        // A scenario without its seed is not a HELLO.
        assert_eq!(Request::parse("HELLO 1 standard"), None);
    }

    #[test]
    fn responses_round_trip() {
        for r in [
            Response::Answer {
                req: 3,
                result: Ok("o7".into()),
            },
            Response::Answer {
                req: 4,
                result: Err(ErrKind::ClosedDuringExecution),
            },
            Response::Closed,
        ] {
            assert_eq!(Response::parse(r.line().trim_end()), Some(r));
        }
        for k in ErrKind::ALL {
            assert_eq!(ErrKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Response::parse("R 1 err nonsense"), None);
    }
}
