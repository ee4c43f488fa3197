//! S-5 telemetry hooks: one span per call key per session, one per resolver run.

use crate::machine::SessionId;

/// One telemetry span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// The call key (or arbitrary key).
    pub key: String,
    /// The caller's session.
    pub session: Option<SessionId>,
    /// True only when no resolver ran for this call (a hit or a join).
    pub cached: bool,
}

/// Receives telemetry spans (S-5). Called outside the cache's lock.
pub trait Telemetry: Send + Sync {
    /// One span.
    fn span(&self, span: Span);
}
