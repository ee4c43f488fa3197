//! Per-cache and per-call options.

use std::sync::Arc;

use super::codec::Codec;
use super::error::LoaderError;
use super::machine::MachineConfig;
use crate::error::ResolverError;

/// The shortest lifetime accepted, ms (L-8): a TTL of 0 or less is an
/// [`LoaderError::InvalidOption`] naming the field, never a crash.
pub const MIN_TTL_MS: i64 = 1;

/// Not-found caching (L-6, L-7): which loader errors mean "not found", and
/// how long a placeholder lives.
#[derive(Clone)]
pub struct NotFound {
    /// The error callers get for a not-found key (from the loader or a placeholder).
    pub error: ResolverError,
    /// Placeholder lifetime, ms (≥ [`MIN_TTL_MS`]); jitter is added as for values.
    pub ttl_ms: i64,
    matches: Arc<dyn Fn(&ResolverError) -> bool + Send + Sync>,
}

impl NotFound {
    /// Loader errors equal to `error` (the same error, or a message error
    /// with the same text, see [`ResolverError`]'s `PartialEq`) mean not found.
    pub fn new(error: ResolverError, ttl_ms: i64) -> Self {
        let wanted = error.clone();
        Self {
            error,
            ttl_ms,
            matches: Arc::new(move |e| *e == wanted),
        }
    }

    /// Loader errors for which `matches` is true mean not found (for typed
    /// errors: `|e| e.downcast_ref::<MyNotFound>().is_some()`).
    pub fn matching(
        mut self,
        matches: impl Fn(&ResolverError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.matches = Arc::new(matches);
        self
    }

    /// Whether `e` means not found.
    pub fn is(&self, e: &ResolverError) -> bool {
        (self.matches)(e)
    }
}

impl std::fmt::Debug for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotFound")
            .field("error", &self.error)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

/// Options of one cache.
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    /// The cache's name: the first field of every stored key (L-5) and the
    /// `cache` label of its metrics (L-15). Not empty.
    pub name: String,
    /// This node's name in events (L-11). Distinct per node sharing a bus.
    pub node: String,
    /// Default value lifetime, ms.
    pub ttl_ms: i64,
    /// Longest a local copy lives, ms; also bounds how long a node that
    /// missed an event can serve a stale copy (L-12).
    pub local_ttl_ms: i64,
    /// Each lifetime gets `0..=jitter_ms` more, drawn from the seeded generator (L-8).
    pub jitter_ms: u64,
    /// Seed of the jitter generator (L-8: same seed, same expiries).
    pub seed: u64,
    /// Local tier capacity in entries; 0 means no local tier.
    pub local_capacity: usize,
    /// Not-found caching; `None`: a not-found error is an ordinary loader error.
    pub not_found: Option<NotFound>,
    /// Refresh period, ms (L-9).
    pub refresh_interval_ms: i64,
    /// Most refresh loads at once (L-9).
    pub refresh_concurrency: usize,
    /// Most refresh tasks (L-9).
    pub refresh_tasks_max: usize,
    /// A task stops once its key is unread this long, ms (L-9).
    pub refresh_idle_ms: i64,
    /// How long a caller waits on a flight before leaving with
    /// [`LoaderError::WaitTimeout`] (tokio time); `None`: no limit (L-2).
    pub wait_timeout_ms: Option<u64>,
    /// How values become bytes (L-14).
    pub codec: Codec,
}

impl LoaderOptions {
    /// Defaults for a cache named `name`: TTL 60 s, local TTL 60 s, no
    /// jitter, 1024 local entries, no not-found caching, refresh every 60 s
    /// (4 at once, 1024 tasks, stop after 10 min unread), no wait timeout,
    /// binary codec.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            node: "node".into(),
            ttl_ms: 60_000,
            local_ttl_ms: 60_000,
            jitter_ms: 0,
            seed: 0,
            local_capacity: 1024,
            not_found: None,
            refresh_interval_ms: 60_000,
            refresh_concurrency: 4,
            refresh_tasks_max: 1024,
            refresh_idle_ms: 600_000,
            wait_timeout_ms: None,
            codec: Codec::Binary,
        }
    }

    /// Checks every field; the first bad one is named (L-8).
    pub(crate) fn validate(&self, has_remote: bool) -> Result<(), LoaderError> {
        let bad = |field, reason: String| Err(LoaderError::InvalidOption { field, reason });
        if self.name.is_empty() {
            return bad("name", "must not be empty".into());
        }
        if self.node.is_empty() {
            return bad("node", "must not be empty".into());
        }
        for (field, v) in [
            ("ttl_ms", self.ttl_ms),
            ("local_ttl_ms", self.local_ttl_ms),
            ("refresh_interval_ms", self.refresh_interval_ms),
            ("refresh_idle_ms", self.refresh_idle_ms),
        ] {
            check_ttl(field, v)?;
        }
        if let Some(nf) = &self.not_found {
            check_ttl("not_found.ttl_ms", nf.ttl_ms)?;
        }
        if self.refresh_concurrency == 0 {
            return bad("refresh_concurrency", "must be at least 1".into());
        }
        if self.local_capacity == 0 && !has_remote {
            return Err(LoaderError::NoBackend);
        }
        Ok(())
    }

    pub(crate) fn machine_config(&self, has_remote: bool) -> MachineConfig {
        MachineConfig {
            node: self.node.clone(),
            ttl_ms: self.ttl_ms,
            local_ttl_ms: self.local_ttl_ms,
            jitter_ms: self.jitter_ms,
            not_found_ttl_ms: self.not_found.as_ref().map(|n| n.ttl_ms),
            local_capacity: self.local_capacity,
            has_remote,
            refresh_interval_ms: self.refresh_interval_ms,
            refresh_concurrency: self.refresh_concurrency,
            refresh_tasks_max: self.refresh_tasks_max,
            refresh_idle_ms: self.refresh_idle_ms,
        }
    }
}

/// A lifetime below [`MIN_TTL_MS`] is an error naming `field` (L-8).
pub(crate) fn check_ttl(field: &'static str, ttl_ms: i64) -> Result<(), LoaderError> {
    if ttl_ms < MIN_TTL_MS {
        return Err(LoaderError::InvalidOption {
            field,
            reason: format!("{ttl_ms} ms is below the minimum of {MIN_TTL_MS} ms"),
        });
    }
    Ok(())
}

/// Options of one read (`once`, `load_many`) or write (`set`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Lifetime of what this call writes, ms; `None`: the cache's default.
    pub ttl_ms: Option<i64>,
    /// Do not read the local tier (still written).
    pub skip_local: bool,
    /// Keep the key fresh with a refresh task (L-9) (`once` only).
    pub refresh: bool,
}

impl CallOptions {
    /// With a lifetime.
    pub fn ttl_ms(mut self, ttl_ms: i64) -> Self {
        self.ttl_ms = Some(ttl_ms);
        self
    }
    /// Skipping the local tier.
    pub fn skip_local(mut self) -> Self {
        self.skip_local = true;
        self
    }
    /// With refresh-ahead.
    pub fn refresh(mut self) -> Self {
        self.refresh = true;
        self
    }
}
