//! O-2 decision trace lines: one line per cache decision, short keys, the path
//! taken and the rule that took it. Lines carry no time of their own, so a
//! simulation can stamp them with simulated time and stay byte-identical.

use std::fmt;

use crate::machine::entry::short;
use crate::machine::SessionId;

/// The path a lookup took (O-2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Path {
    /// A completed entry under the storage key (C-3.1).
    Storage,
    /// A completed entry under the content key (C-3.2).
    Content,
    /// Joined an in-flight call (C-3.3, K-2).
    Ongoing,
    /// Started a new call (C-3.4).
    Miss,
    /// Ran without the cache (C-2, or a forced retry S-4).
    DoNotCache,
    /// Refused as recursive (C-4, C-4a, C-4b).
    Recursive,
    /// Waits for an abandoned change-cache init to finish (K-5).
    Blocked,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Storage => "storage",
            Path::Content => "content",
            Path::Ongoing => "ongoing",
            Path::Miss => "miss",
            Path::DoNotCache => "do-not-cache",
            Path::Recursive => "recursive",
            Path::Blocked => "blocked",
        })
    }
}

/// One cache decision (O-2).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TraceLine {
    /// The call key (or arbitrary key).
    pub call: String,
    /// The requested ID's content key, if any.
    pub content: Option<String>,
    /// The storage key used for lookup.
    pub storage: String,
    /// The path taken.
    pub path: Path,
    /// Whether the reported ID differs from the stored entry's ID (content hit, C-8).
    pub overridden: bool,
    /// The caller's session.
    pub session: Option<SessionId>,
    /// The rule that took the decision.
    pub rule: &'static str,
}

impl fmt::Display for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "call={} content={} storage={} path={} overridden={} session={} rule={}",
            short(&self.call),
            self.content.as_deref().map_or("-", short),
            short(&self.storage),
            self.path,
            self.overridden,
            self.session
                .map_or_else(|| "-".to_string(), |s| s.to_string()),
            self.rule,
        )
    }
}

impl TraceLine {
    /// Emits the line as a `tracing` event at debug level, target `cache_core::decision`.
    pub fn emit(&self) {
        tracing::debug!(target: "cache_core::decision", "{self}");
    }
}
