//! The remote tier (L-3, L-4, L-10): a trait a Redis client, a simulated
//! remote host or the in-memory [`MemoryRemote`] implement.
//!
//! Values are opaque bytes (record envelopes) under stored keys, each with
//! a TTL in milliseconds. Methods return boxed futures so the trait is
//! object-safe (`Arc<dyn Remote>`); every failure is a [`RemoteError`], which
//! the loader counts and degrades (reads) or reports (writes), never panics on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use thiserror::Error;

use crate::facade::Clock;

/// A remote operation failed (L-16: "remote unavailable").
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RemoteError {
    /// The remote could not be reached (connection refused, partition).
    #[error("remote unavailable during {op}: {detail}")]
    Unavailable {
        /// Which operation.
        op: &'static str,
        /// What the transport said.
        detail: String,
    },
    /// The remote did not answer within the client's timeout (it may be
    /// paused, overloaded or partitioned mid-request).
    #[error("remote timed out during {op}: {detail}")]
    Timeout {
        /// Which operation.
        op: &'static str,
        /// What the transport said.
        detail: String,
    },
    /// The remote's answer could not be understood (a reply of the wrong
    /// type or a malformed one).
    #[error("remote protocol error during {op}: {detail}")]
    Protocol {
        /// Which operation.
        op: &'static str,
        /// What was wrong with the reply.
        detail: String,
    },
    /// The remote answered with an error.
    #[error("remote rejected {op}: {detail}")]
    Rejected {
        /// Which operation.
        op: &'static str,
        /// What the remote said.
        detail: String,
    },
}

impl RemoteError {
    /// Whether the remote may have applied the write that failed with this
    /// error: only an error the remote answered with says it did not. A
    /// timeout, a lost connection or an unreadable reply leave it unknown,
    /// and the request may land after the caller gave up on it.
    pub fn may_have_applied(&self) -> bool {
        !matches!(self, Self::Rejected { .. })
    }
}

/// A result of a remote operation.
pub type RemoteResult<T> = Result<T, RemoteError>;

/// The remote tier. Keys are stored keys (see [`super::keys`]); TTLs are in
/// milliseconds and always positive (the loader never asks for less than 1).
pub trait Remote: Send + Sync {
    /// The bytes under `key`, if present.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, RemoteResult<Option<Vec<u8>>>>;
    /// Writes `value` under `key` for `ttl_ms`.
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<()>>;
    /// Writes only if `key` is absent (Redis `SET NX PX`); whether it wrote.
    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>>;
    /// Writes only if `key` is present (Redis `SET XX PX`); whether it wrote.
    fn set_if_present<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>>;
    /// Deletes `key`; whether it was there.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, RemoteResult<bool>>;
    /// The bytes under each key, in the order asked (Redis `MGET`). The
    /// keys are borrowed (a batch lends them out of one buffer).
    fn multi_get<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, RemoteResult<Vec<Option<Vec<u8>>>>>;
    /// Writes every (key, value, ttl_ms) (a pipeline of `SET PX`).
    fn multi_set(&self, items: Vec<(String, Vec<u8>, u64)>) -> BoxFuture<'_, RemoteResult<()>>;
    /// Takes the lock `key` for `owner` for `ttl_ms` if nobody holds it
    /// (L-10: one refresher per window); whether this call took it. A lock
    /// is never released early: it expires, which is what bounds refreshes
    /// to one per window across nodes.
    fn lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>>;
}

/// Faults a [`MemoryRemote`] injects; all off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteFaults {
    /// Every read (`get`, `multi_get`) fails.
    pub fail_reads: bool,
    /// Every write (`set*`, `delete`, `multi_set`, `lock`) fails.
    pub fail_writes: bool,
    /// Every operation fails as unreachable.
    pub partitioned: bool,
    /// Every operation first waits this long (tokio time).
    pub latency_ms: u64,
}

#[derive(Default)]
struct State {
    rows: BTreeMap<String, (Vec<u8>, i64)>,
    faults: RemoteFaults,
    ops: u64,
}

/// An in-memory remote with injectable faults, expiring rows on an injected
/// clock. Clones share one store (several nodes, one remote).
#[derive(Clone)]
pub struct MemoryRemote {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

impl MemoryRemote {
    /// An empty remote judging TTLs on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::default(),
            clock,
        }
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: RemoteFaults) {
        self.lock_state().faults = faults;
    }

    /// The live bytes under `key`, without faults or latency (for tests and oracles).
    pub fn peek(&self, key: &str) -> Option<Vec<u8>> {
        let now = self.clock.now_ms();
        let state = self.lock_state();
        state
            .rows
            .get(key)
            .filter(|(_, exp)| now < *exp)
            .map(|(v, _)| v.clone())
    }

    /// Writes raw bytes under `key` without faults (for tests: corrupt records).
    pub fn poke(&self, key: &str, value: Vec<u8>, ttl_ms: u64) {
        let now = self.clock.now_ms();
        self.lock_state()
            .rows
            .insert(key.to_string(), (value, expiry(now, ttl_ms)));
    }

    /// How many operations were attempted.
    pub fn ops(&self) -> u64 {
        self.lock_state().ops
    }

    /// The live keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        let now = self.clock.now_ms();
        let state = self.lock_state();
        state
            .rows
            .iter()
            .filter(|(_, (_, exp))| now < *exp)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every update is one insert or remove), so a poisoned lock is safe.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Latency, then the fault check, then `f` on the live rows.
    async fn op<T>(
        &self,
        op: &'static str,
        write: bool,
        f: impl FnOnce(&mut BTreeMap<String, (Vec<u8>, i64)>, i64) -> T,
    ) -> RemoteResult<T> {
        let latency = {
            let mut state = self.lock_state();
            state.ops += 1;
            state.faults.latency_ms
        };
        if latency > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        }
        let now = self.clock.now_ms();
        let mut state = self.lock_state();
        let faults = &state.faults;
        if faults.partitioned {
            return Err(RemoteError::Unavailable {
                op,
                detail: "partitioned (injected)".into(),
            });
        }
        if (write && faults.fail_writes) || (!write && faults.fail_reads) {
            return Err(RemoteError::Rejected {
                op,
                detail: "injected failure".into(),
            });
        }
        state.rows.retain(|_, (_, exp)| now < *exp);
        Ok(f(&mut state.rows, now))
    }
}

fn expiry(now: i64, ttl_ms: u64) -> i64 {
    now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
}

impl Remote for MemoryRemote {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, RemoteResult<Option<Vec<u8>>>> {
        Box::pin(self.op("get", false, |rows, _| {
            rows.get(key).map(|(v, _)| v.clone())
        }))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<()>> {
        Box::pin(self.op("set", true, move |rows, now| {
            rows.insert(key.to_string(), (value, expiry(now, ttl_ms)));
        }))
    }

    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(self.op("set_if_absent", true, move |rows, now| {
            if rows.contains_key(key) {
                return false;
            }
            rows.insert(key.to_string(), (value, expiry(now, ttl_ms)));
            true
        }))
    }

    fn set_if_present<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(self.op("set_if_present", true, move |rows, now| {
            if !rows.contains_key(key) {
                return false;
            }
            rows.insert(key.to_string(), (value, expiry(now, ttl_ms)));
            true
        }))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(self.op("delete", true, |rows, _| rows.remove(key).is_some()))
    }

    fn multi_get<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, RemoteResult<Vec<Option<Vec<u8>>>>> {
        Box::pin(self.op("multi_get", false, |rows, _| {
            keys.iter()
                .map(|k| rows.get(*k).map(|(v, _)| v.clone()))
                .collect()
        }))
    }

    fn multi_set(&self, items: Vec<(String, Vec<u8>, u64)>) -> BoxFuture<'_, RemoteResult<()>> {
        Box::pin(self.op("multi_set", true, move |rows, now| {
            for (k, v, ttl_ms) in items {
                rows.insert(k, (v, expiry(now, ttl_ms)));
            }
        }))
    }

    fn lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl_ms: u64,
    ) -> BoxFuture<'a, RemoteResult<bool>> {
        Box::pin(self.op("lock", true, move |rows, now| {
            if rows.contains_key(key) {
                return false;
            }
            rows.insert(
                key.to_string(),
                (owner.as_bytes().to_vec(), expiry(now, ttl_ms)),
            );
            true
        }))
    }
}
