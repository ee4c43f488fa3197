//! O-2 decision trace lines: one line per cache decision, short keys, the path
//! taken and the rule that took it. Lines carry no time of their own, so a
//! simulation can stamp them with simulated time and stay byte-identical.

use std::fmt;

use crate::id::{CallId, Digest};
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
///
/// The keys are kept in the form the decision had them (the requested ID,
/// and the storage key only when it is not the call key) and turned into
/// text only when the line is printed or a key asked for: a hit that nobody
/// traces allocates nothing for its line.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceLine {
    keys: TraceKeys,
    /// The path taken.
    pub path: Path,
    /// Whether the reported ID differs from the stored entry's ID (content hit, C-8).
    pub overridden: bool,
    /// The caller's session.
    pub session: Option<SessionId>,
    /// The rule that took the decision.
    pub rule: &'static str,
}

#[derive(Clone, PartialEq, Eq)]
enum TraceKeys {
    /// A call: the requested ID's recipe (call key) and content digests,
    /// and its storage key if it is not the call key. Digests, not the ID:
    /// copying 64 bytes is cheaper than sharing the ID (two atomic
    /// refcount updates per decision), and lines compare by their keys.
    Call {
        call: Digest,
        content: Option<Digest>,
        storage: Option<String>,
    },
    /// An arbitrary key (call and storage key alike, no content key).
    Arbitrary(String),
}

impl TraceLine {
    /// A line for a call on `id`; `storage` is the storage key when it is
    /// not the call key. Path and rule start as a miss (C-3.4).
    pub(crate) fn call(id: &CallId, storage: Option<String>, session: Option<SessionId>) -> Self {
        Self {
            keys: TraceKeys::Call {
                call: id.recipe_digest(),
                content: id.content_digest(),
                storage,
            },
            path: Path::Miss,
            overridden: false,
            session,
            rule: "C-3.4",
        }
    }

    /// A line for an arbitrary key. Path and rule start as a K-2 miss.
    pub(crate) fn arbitrary(key: &str, session: Option<SessionId>) -> Self {
        Self {
            keys: TraceKeys::Arbitrary(key.to_string()),
            path: Path::Miss,
            overridden: false,
            session,
            rule: "K-2",
        }
    }

    /// The call key (or arbitrary key).
    pub fn call_key(&self) -> String {
        match &self.keys {
            TraceKeys::Call { call, .. } => call.to_string(),
            TraceKeys::Arbitrary(k) => k.clone(),
        }
    }

    /// The requested ID's content key, if any.
    pub fn content_key(&self) -> Option<String> {
        match &self.keys {
            TraceKeys::Call { content, .. } => content.map(|d| d.to_string()),
            TraceKeys::Arbitrary(_) => None,
        }
    }

    /// The storage key used for lookup.
    pub fn storage_key(&self) -> String {
        match &self.keys {
            TraceKeys::Call {
                storage: Some(s), ..
            } => s.clone(),
            _ => self.call_key(),
        }
    }

    /// Emits the line as a `tracing` event at debug level, target
    /// `cache_core::decision` (formatted only if that level is enabled).
    /// The line's fields are also the event's typed fields, in the short
    /// forms the line prints, so a subscriber reads them without parsing
    /// the message.
    pub fn emit(&self) {
        tracing::debug!(
            target: "cache_core::decision",
            call = short(&self.call_key()),
            content = self.content_key().as_deref().map_or("-", short),
            storage = short(&self.storage_key()),
            path = %self.path,
            overridden = self.overridden,
            session = self.session.map_or_else(|| "-".to_string(), |s| s.to_string()),
            rule = self.rule,
            "{self}"
        );
    }
}

impl fmt::Display for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.keys {
            TraceKeys::Call {
                call,
                content,
                storage,
            } => {
                let call = call.text();
                let content = content.map(|d| d.text());
                write!(
                    f,
                    "call={} content={} storage={}",
                    short(&call),
                    content.as_deref().map_or("-", short),
                    short(storage.as_deref().unwrap_or(&call)),
                )?;
            }
            TraceKeys::Arbitrary(k) => {
                write!(f, "call={} content=- storage={}", short(k), short(k))?;
            }
        }
        write!(
            f,
            " path={} overridden={} session={} rule={}",
            self.path,
            self.overridden,
            self.session
                .map_or_else(|| "-".to_string(), |s| s.to_string()),
            self.rule,
        )
    }
}

// By hand, printing the keys as text, as the line's fields once were.
impl fmt::Debug for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceLine")
            .field("call", &self.call_key())
            .field("content", &self.content_key())
            .field("storage", &self.storage_key())
            .field("path", &self.path)
            .field("overridden", &self.overridden)
            .field("session", &self.session)
            .field("rule", &self.rule)
            .finish()
    }
}
