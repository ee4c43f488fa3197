//! What a caller carries into a call, and what a resolver is given.

use tokio_util::sync::CancellationToken;

use crate::machine::{Caller, ChainLink, EntryId, SessionId};

/// A caller's context: its session, its cancellation, and the resolvers it is
/// nested in (C-4).
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    /// The session that will own the handle (S-1); `None` for a bare caller.
    pub session: Option<SessionId>,
    /// Firing it makes this caller leave with a cancellation error (C-5).
    pub cancel: CancellationToken,
    /// The resolvers this call is nested in, outermost first.
    pub chain: Vec<ChainLink>,
    /// The in-flight entry (with its cache instance) whose resolver is calling.
    pub inside: Option<(u64, EntryId)>,
}

impl Ctx {
    /// A bare context: no session, its own cancellation token.
    pub fn new() -> Self {
        Self::default()
    }

    /// This context with another cancellation token.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    pub(crate) fn caller(&self) -> Caller {
        Caller {
            session: self.session,
            chain: self.chain.clone(),
            inside: self.inside,
        }
    }
}

/// What a resolver is given (C-5: it runs detached from any single caller).
#[derive(Clone, Debug)]
pub struct ResolverCtx {
    /// Fires when every waiter has left (C-5, K-4). Resolvers should observe it.
    pub cancel: CancellationToken,
    /// The storage key being resolved (a fresh unique one for do-not-cache, C-2).
    pub storage_key: String,
    /// The chain including this call.
    pub chain: Vec<ChainLink>,
    /// This call's entry and cache instance.
    pub entry: (u64, EntryId),
}

impl ResolverCtx {
    /// A context for a nested call made by this resolver. It has no session:
    /// the nested ref belongs to the resolver until it hands it over in its
    /// result (C-11), so a closing session can never release it underneath a
    /// shared call (C-5). It is cancelled with this call.
    pub fn nested(&self) -> Ctx {
        Ctx {
            session: None,
            cancel: self.cancel.child_token(),
            chain: self.chain.clone(),
            inside: Some(self.entry),
        }
    }
}
