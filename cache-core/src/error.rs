//! Errors a caller can get back from the cache.

use std::fmt;
use std::sync::Arc;

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
    /// The resolver returned an error (C-9: never cached). It keeps its
    /// identity: match it with [`ResolverError::downcast_ref`].
    #[error("resolver failed: {0}")]
    Resolver(ResolverError),
    /// C-14: the resolver panicked; every waiter gets this error. A panic
    /// whose payload is a [`ResolverError`] (`std::panic::panic_any`) keeps
    /// it; any other payload becomes its message.
    #[error("resolver panicked: {0}")]
    Panicked(ResolverError),
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

/// A resolver's own error, shared by every waiter of the call that failed.
///
/// It keeps the error's type, so callers and oracles match it with
/// [`downcast_ref`](Self::downcast_ref) instead of reading its text. Two
/// values are equal when they are the same error (clones of one value, as
/// every waiter of one call gets), or both plain messages with equal text.
///
/// ```
/// use cache_core::error::ResolverError;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("row {0} not found")]
/// struct NotFound(u64);
///
/// let e = ResolverError::new(NotFound(7));
/// assert_eq!(e.downcast_ref::<NotFound>().map(|n| n.0), Some(7));
/// assert_eq!(e.to_string(), "row 7 not found");
/// assert_eq!(ResolverError::from("boom"), ResolverError::msg("boom"));
/// ```
#[derive(Clone)]
pub struct ResolverError(Arc<dyn std::error::Error + Send + Sync + 'static>);

/// A resolver error that is only a message.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl ResolverError {
    /// Wraps a typed error.
    pub fn new<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        Self(Arc::new(error))
    }

    /// An error that is only a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::new(Message(message.into()))
    }

    /// The wrapped error, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }

    /// The message, if this error is only a message.
    pub fn message(&self) -> Option<&str> {
        self.downcast_ref::<Message>().map(|m| m.0.as_str())
    }
}

impl fmt::Display for ResolverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ResolverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(m) => write!(f, "{m:?}"),
            None => self.0.fmt(f),
        }
    }
}

impl PartialEq for ResolverError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || matches!((self.message(), other.message()), (Some(a), Some(b)) if a == b)
    }
}

impl Eq for ResolverError {}

impl From<String> for ResolverError {
    fn from(message: String) -> Self {
        Self::msg(message)
    }
}

impl From<&str> for ResolverError {
    fn from(message: &str) -> Self {
        Self::msg(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("typed {0}")]
    struct Typed(u32);

    #[test]
    fn resolver_errors_keep_their_type_and_compare_by_identity() {
        let a = ResolverError::new(Typed(1));
        assert_eq!(a.downcast_ref::<Typed>().map(|t| t.0), Some(1));
        assert_eq!(a.message(), None);
        assert_eq!(a, a.clone(), "clones are the same error");
        assert_ne!(a, ResolverError::new(Typed(1)), "another error, same text");
        assert_eq!(
            ResolverError::msg("x"),
            ResolverError::from("x".to_string())
        );
        assert_ne!(ResolverError::msg("x"), ResolverError::msg("y"));
        assert_eq!(ResolverError::msg("x").message(), Some("x"));
        assert!(ResolverError::msg("x").downcast_ref::<Typed>().is_none());
    }
}
