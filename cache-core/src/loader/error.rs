//! Errors a loader caller can get (L-16): each names its cause.

use thiserror::Error;

use super::codec::CodecError;
use super::remote::RemoteError;
use crate::error::ResolverError;

/// Why a loader operation did not give a value (L-16).
///
/// The loader's own error keeps its identity: match it with
/// [`ResolverError::downcast_ref`] on [`LoaderError::Loader`] (or on the
/// configured not-found error in [`LoaderError::NotFound`]).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LoaderError {
    /// Neither a local tier (capacity 0) nor a remote tier is configured.
    #[error("no backend configured: local capacity is 0 and there is no remote tier")]
    NoBackend,
    /// An option or argument is out of range; names the field and why (L-8).
    #[error("invalid option {field}: {reason}")]
    InvalidOption {
        /// The option or argument.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The remote tier failed where nothing could stand in for it (a `set`,
    /// a `delete`, a `get` that only the remote could answer) (L-4).
    #[error("remote unavailable: {0}")]
    RemoteUnavailable(RemoteError),
    /// A value could not be encoded, or a record decoded even after one reload (L-14).
    #[error("codec: {0}")]
    Codec(CodecError),
    /// The loader failed; never cached (L-4). Match it with `downcast_ref`.
    #[error("loader failed: {0}")]
    Loader(ResolverError),
    /// The configured not-found error: the loader returned it, or a live
    /// placeholder said so without calling the loader (L-6).
    #[error("not found: {0}")]
    NotFound(ResolverError),
    /// `get`: no tier holds the key (no loader to ask).
    #[error("cache miss: no tier holds the key")]
    Miss,
    /// This caller's flight was cancelled: every waiter left (L-2).
    #[error("cancelled")]
    Cancelled,
    /// This caller stopped waiting after the cache's wait timeout (L-2);
    /// the flight goes on for the others.
    #[error("gave up waiting after {after_ms} ms")]
    WaitTimeout {
        /// The wait timeout.
        after_ms: u64,
    },
    /// The loader was closed (L-9); nothing ran.
    #[error("loader closed")]
    Closed,
}

impl LoaderError {
    /// The loader's own error, if this is one (L-16).
    pub fn loader_error(&self) -> Option<&ResolverError> {
        match self {
            Self::Loader(e) => Some(e),
            _ => None,
        }
    }

    /// A short, bounded name of the cause (for logs and metrics labels).
    pub fn cause(&self) -> &'static str {
        match self {
            Self::NoBackend => "no_backend",
            Self::InvalidOption { .. } => "invalid_option",
            Self::RemoteUnavailable(_) => "remote_unavailable",
            Self::Codec(_) => "codec",
            Self::Loader(_) => "loader",
            Self::NotFound(_) => "not_found",
            Self::Miss => "miss",
            Self::Cancelled => "cancelled",
            Self::WaitTimeout { .. } => "wait_timeout",
            Self::Closed => "closed",
        }
    }
}
