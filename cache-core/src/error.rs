//! Errors a caller can get back from the cache.

use thiserror::Error;

/// Why a call, a release or a session operation did not produce a result.
///
/// Every variant says which rule of the specification produced it, so an error
/// seen in a simulation trace can be traced back to the rule.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// C-1 / K-1: the key is missing or empty; nothing ran.
    #[error("invalid cache key: {0} (C-1)")]
    InvalidKey(String),
    /// C-4 / C-4a / C-4b: the call would wait on itself.
    #[error("recursive call detected for storage key {key} (C-4)")]
    Recursive {
        /// The storage key that was revisited.
        key: String,
    },
    /// C-5: this caller's own cancellation fired, or every waiter left.
    #[error("call cancelled")]
    Cancelled,
    /// The resolver returned an error (C-9: never cached).
    #[error("resolver failed: {0}")]
    Resolver(String),
    /// C-14: the resolver panicked; every waiter gets this error.
    #[error("resolver panicked: {0}")]
    Panicked(String),
    /// S-2: the session is closed; nothing ran.
    #[error("session closed")]
    SessionClosed,
    /// S-3: the call finished after its session closed; its handle was released.
    #[error("session closed during execution; the result was released")]
    ClosedDuringExecution,
    /// C-12: the handle does not name a live ref (released already, or unknown).
    #[error("unknown or already released handle {0}")]
    UnknownHandle(String),
    /// An id (entry, waiter, session) that this cache never issued or that has settled.
    #[error("unknown {what} {id}")]
    Unknown {
        /// What kind of id it was.
        what: &'static str,
        /// The id, printed.
        id: String,
    },
    /// C-12: a release hook failed; returned to the releaser.
    #[error("release hook failed: {0}")]
    ReleaseHook(String),
}
