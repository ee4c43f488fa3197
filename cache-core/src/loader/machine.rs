//! The loader's pure state machine (DESIGN principle 1 for SPEC §7).
//!
//! It owns the local tier, the flights per key, the refresh tasks and their
//! schedule, and the counters; it decides, and the async layer ([`super::Loader`])
//! does the I/O (remote, bus, loader calls) and reports back. Time (`now_ms`)
//! and jitter draws (`rand`) are arguments: there is no clock, no RNG and no
//! tokio in here, so a driver can replay any sequence bit for bit.
//!
//! The payload `P` of a refresh task is opaque to the machine (the async
//! layer stores the loader to call; machine tests store `()`).

use std::collections::BTreeMap;

use super::bus::{Event, EventKind};
use super::counters::Counters;
use super::keys::FlightKey;
use super::local::{LocalEntry, LocalTier};
use super::record::{Payload, Record};
use crate::bugs::{LoaderBug, LoaderBugs};

/// The id of a flight.
pub type FlightId = u64;
/// The id of one caller waiting on a flight.
pub type WaiterId = u64;

/// The machine's options (validated by the async layer's builder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    /// This node's name, carried by its events (L-11).
    pub node: String,
    /// Default value lifetime, ms (> 0).
    pub ttl_ms: i64,
    /// Longest a local copy lives, ms (> 0); never past the record's expiry (L-3, L-12).
    pub local_ttl_ms: i64,
    /// Jitter bound, ms: each lifetime gets `0..=jitter_ms` more (L-8).
    pub jitter_ms: u64,
    /// Placeholder lifetime when not-found caching is on (L-6, L-7).
    pub not_found_ttl_ms: Option<i64>,
    /// Local tier capacity in entries (0: no local tier).
    pub local_capacity: usize,
    /// Whether a remote tier exists (writes go to it first, L-4).
    pub has_remote: bool,
    /// Refresh period of a task, ms (L-9).
    pub refresh_interval_ms: i64,
    /// Most refresh loads at once on this node (L-9).
    pub refresh_concurrency: usize,
    /// Most refresh tasks on this node (L-9).
    pub refresh_tasks_max: usize,
    /// A task stops once its key has not been read for this long, ms (L-9).
    pub refresh_idle_ms: i64,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            node: "node".into(),
            ttl_ms: 60_000,
            local_ttl_ms: 60_000,
            jitter_ms: 0,
            not_found_ttl_ms: None,
            local_capacity: 1024,
            has_remote: false,
            refresh_interval_ms: 10_000,
            refresh_concurrency: 4,
            refresh_tasks_max: 1024,
            refresh_idle_ms: 60_000,
        }
    }
}

/// A machine invariant broke: which rule and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant id (`LINV-1`, …).
    pub rule: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

#[derive(Clone, Debug)]
struct Flight {
    key: FlightKey,
    /// Ascending: waiter ids only grow, so a joiner is pushed at the end.
    waiters: Vec<WaiterId>,
    /// Led by a refresh (the refresh holds it open without a waiter).
    refresh: bool,
    /// The write sequence when the flight began (L-7).
    started_seq: u64,
}

#[derive(Clone, Debug)]
struct Task<P> {
    payload: P,
    next_due_ms: i64,
    last_read_ms: i64,
}

/// Whether a caller leads a new flight or joins one (L-1, L-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
    /// A new flight: the caller (or refresh) must drive it.
    Lead {
        /// The flight.
        flight: FlightId,
        /// The caller's waiter id (`None` for a refresh).
        waiter: Option<WaiterId>,
    },
    /// A flight for this key is already in the air.
    Join {
        /// The flight.
        flight: FlightId,
        /// The caller's waiter id (`None` for a refresh: it is satisfied).
        waiter: Option<WaiterId>,
    },
}

impl Begin {
    /// The flight begun or joined.
    pub fn flight(self) -> FlightId {
        match self {
            Self::Lead { flight, .. } | Self::Join { flight, .. } => flight,
        }
    }
    /// The waiter id, if a caller (not a refresh) began.
    pub fn waiter(self) -> Option<WaiterId> {
        match self {
            Self::Lead { waiter, .. } | Self::Join { waiter, .. } => waiter,
        }
    }
}

/// What the local tier had for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalRead {
    /// A live value's bytes.
    Value(Vec<u8>),
    /// A live placeholder (L-6).
    Placeholder,
    /// Nothing live.
    Miss,
}

/// What a remote read gave, once judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteRead {
    /// A live record; it was copied to the local tier with its remaining lifetime (L-3).
    Live(Record),
    /// The bytes are not a record: delete it remotely and load (L-14).
    Corrupt,
    /// Absent or expired.
    Miss,
    /// The read failed: load instead (L-4).
    Failed,
}

/// What [`LoaderMachine::remote_read_kept`] found: [`RemoteRead`]
/// without the record, which went to the local tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteKept {
    /// A live value; copied to the local tier with its remaining lifetime (L-3).
    Value,
    /// A live placeholder (L-6); copied likewise.
    Placeholder,
    /// The bytes are not a record: delete it remotely and load (L-14).
    Corrupt,
    /// Absent or expired.
    Miss,
    /// The read failed: load instead (L-4).
    Failed,
}

/// What a loader call produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadOutcome {
    /// A value, encoded.
    Value(Vec<u8>),
    /// The configured not-found error (L-6).
    NotFound,
    /// Any other error (never cached, L-4).
    Failed,
}

/// How a remote write is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Overwrite (`set`, a loaded value).
    Always,
    /// Only if absent: a placeholder never overwrites a value written meanwhile (L-7).
    IfAbsent,
}

/// A write the machine decided on: the async layer writes the remote (if
/// any) first, then reports with [`LoaderMachine::write_applied`], which
/// writes the local tier only if the remote accepted it (L-4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOrder {
    /// Stored key.
    pub key: String,
    /// The record to write.
    pub record: Record,
    /// Remote TTL, ms (≥ 1).
    pub ttl_ms: u64,
    /// Remote write mode.
    pub mode: WriteMode,
    /// The write sequence when the data was read or the load began (L-7).
    pub started_seq: u64,
    /// The jitter drawn for this write, ms: the local copy's cap
    /// (`local_ttl_ms`) gets it too, so local copies written at one instant
    /// do not all expire at one instant either (L-8).
    pub jitter_ms: i64,
}

/// How the remote answered a [`WriteOrder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteWrite {
    /// No remote tier.
    NoRemote,
    /// Written (or, for `IfAbsent`, whether it was written).
    Done(bool),
    /// The write failed and the remote did not apply it (it answered with
    /// an error; L-4: counted, warned, no local write).
    Failed,
    /// The write failed, and whether the remote applied it is unknown (a
    /// timeout, a lost connection: the request may land later). Counted and
    /// warned like `Failed`, but the node keeps no local copy of the key
    /// and an event is due (L-12: other nodes' copies may be stale now).
    Unknown,
}

impl RemoteWrite {
    /// How a remote write that failed with `e` is reported.
    pub fn failed(e: &super::remote::RemoteError) -> Self {
        if e.may_have_applied() {
            Self::Unknown
        } else {
            Self::Failed
        }
    }
}

/// The read-through loader's state machine (SPEC §7).
pub struct LoaderMachine<P> {
    cfg: MachineConfig,
    local: LocalTier,
    flights: BTreeMap<FlightKey, FlightId>,
    by_id: BTreeMap<FlightId, Flight>,
    tasks: BTreeMap<String, Task<P>>,
    counters: Counters,
    closed: bool,
    next_id: u64,
    write_seq: u64,
    touched: Touched,
    bugs: LoaderBugs,
}

/// Slots of the touched-key filter (a power of two).
const TOUCH_SLOTS: usize = 1024;

/// When each key was last touched — written, deleted, invalidated by an
/// event — as a write sequence, kept per slot of a fixed table that keys
/// share by hash (FNV-1a, so the same on every run): a key's entry is the
/// newest touch of any key in its slot, never older than its own. A local
/// copy is only kept for an operation that began after its key's last
/// touch (L-12): one that began before may carry what that touch replaced
/// (a remote read answered before a delete, a load finished after a
/// `set`, a write that lost its race at the remote), and the node ignores
/// its own events, so nothing would correct it later. A shared slot only
/// ever drops a copy that was safe to keep; the table never grows.
struct Touched {
    slots: Box<[u64]>,
    /// The last time every key was touched at once (a resync).
    all: u64,
}

impl Touched {
    fn new() -> Self {
        Self {
            slots: vec![0; TOUCH_SLOTS].into_boxed_slice(),
            all: 0,
        }
    }

    fn slot(key: &str) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (h as usize) & (TOUCH_SLOTS - 1)
    }

    fn touch(&mut self, key: &str, seq: u64) {
        self.slots[Self::slot(key)] = seq;
    }

    /// Whether `key` may have been touched after `seq`.
    fn since(&self, key: &str, seq: u64) -> bool {
        self.all > seq || self.slots[Self::slot(key)] > seq
    }
}

impl<P: Clone> LoaderMachine<P> {
    /// A machine with `cfg`.
    pub fn new(cfg: MachineConfig) -> Self {
        Self {
            local: LocalTier::new(cfg.local_capacity),
            cfg,
            flights: BTreeMap::new(),
            by_id: BTreeMap::new(),
            tasks: BTreeMap::new(),
            counters: Counters::default(),
            closed: false,
            next_id: 1,
            write_seq: 0,
            touched: Touched::new(),
            bugs: LoaderBugs::none(),
        }
    }

    /// The same machine with the loader zoo's `bugs` switched on (harness
    /// self-tests only: the faulty paths exist only with feature `bug-zoo`).
    #[cfg(feature = "bug-zoo")]
    pub fn with_bugs(mut self, bugs: LoaderBugs) -> Self {
        self.bugs = bugs;
        self
    }

    #[inline(always)]
    fn bug(&self, bug: LoaderBug) -> bool {
        self.bugs.on(bug)
    }

    /// The options.
    pub fn config(&self) -> &MachineConfig {
        &self.cfg
    }

    /// The counters (L-15).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Whether `close` ran.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// How many flights are in the air.
    pub fn flights(&self) -> usize {
        self.by_id.len()
    }

    /// How many refresh tasks exist.
    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }

    /// The keys with a refresh task, sorted.
    pub fn task_keys(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }

    /// How many refresh-led flights are in the air (L-9).
    pub fn refreshing(&self) -> usize {
        self.by_id.values().filter(|f| f.refresh).count()
    }

    /// The local tier (for checks and oracles).
    pub fn local(&self) -> &LocalTier {
        &self.local
    }

    /// The flight for `key`, if one is in the air.
    pub fn flight_for(&self, key: &FlightKey) -> Option<FlightId> {
        self.flights.get(key).copied()
    }

    /// The key a flight is for.
    pub fn flight_key(&self, flight: FlightId) -> Option<&FlightKey> {
        self.by_id.get(&flight).map(|f| &f.key)
    }

    /// Whether the flight is led by a refresh.
    pub fn is_refresh(&self, flight: FlightId) -> bool {
        self.by_id.get(&flight).is_some_and(|f| f.refresh)
    }

    /// How many callers wait on the flight.
    pub fn waiters(&self, flight: FlightId) -> usize {
        self.by_id.get(&flight).map_or(0, |f| f.waiters.len())
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn jitter(&self, rand: u64) -> i64 {
        let bound = self.cfg.jitter_ms.saturating_add(1);
        i64::try_from(rand % bound).unwrap_or(0)
    }

    /// Reads the local tier for a foreground read (L-3), counting the outcome
    /// and marking the key read (L-9 idle window).
    pub fn read_local(&mut self, key: &str, now_ms: i64) -> LocalRead {
        self.touch(key, now_ms);
        if !self.local.enabled() {
            return LocalRead::Miss;
        }
        // The zoo's expiry-blind tier reads as if time never passed.
        let judged_ms = if self.bug(LoaderBug::LocalIgnoresExpiry) {
            i64::MIN
        } else {
            now_ms
        };
        match self.local.get(key, judged_ms) {
            Some(entry) => {
                self.counters.local_hit += 1;
                self.counters.hit += 1;
                match entry.record.payload {
                    Payload::Value(bytes)
                        if self.bug(LoaderBug::PlaceholderInBand)
                            && bytes == crate::bugs::IN_BAND_PLACEHOLDER =>
                    {
                        self.counters.placeholder_hits += 1;
                        LocalRead::Placeholder
                    }
                    Payload::Value(bytes) => LocalRead::Value(bytes),
                    Payload::Placeholder => {
                        self.counters.placeholder_hits += 1;
                        LocalRead::Placeholder
                    }
                }
            }
            None => {
                self.counters.local_miss += 1;
                LocalRead::Miss
            }
        }
    }

    /// Marks `key` as read now (keeps its refresh task alive, L-9).
    pub fn touch(&mut self, key: &str, now_ms: i64) {
        if let Some(task) = self.tasks.get_mut(key) {
            task.last_read_ms = task.last_read_ms.max(now_ms);
        }
    }

    /// Begins or joins the flight for `key` (L-1). A refresh joining a
    /// flight is satisfied by it and gets no waiter; a caller joining a
    /// refresh's flight waits on it like any other (L-1: "and vice versa").
    pub fn begin(&mut self, key: FlightKey, refresh: bool) -> Option<Begin> {
        if self.closed {
            return None;
        }
        let key = if self.bug(LoaderBug::BatchKeyText) {
            crate::bugs::batch_text_key(&key)
        } else {
            key
        };
        let joinable = !(refresh && self.bug(LoaderBug::RefreshBypassesFlight));
        if let Some(&flight) = self.flights.get(&key).filter(|_| joinable) {
            if refresh {
                self.counters.refresh_joins += 1;
                return Some(Begin::Join {
                    flight,
                    waiter: None,
                });
            }
            let waiter = self.id();
            if !self.bug(LoaderBug::WaitersNotCounted) {
                self.counters.flight_joins += 1;
            }
            if let Some(f) = self.by_id.get_mut(&flight) {
                f.waiters.push(waiter);
            }
            return Some(Begin::Join {
                flight,
                waiter: Some(waiter),
            });
        }
        let flight = self.id();
        let waiter = (!refresh).then(|| self.id());
        self.flights.insert(key.clone(), flight);
        self.by_id.insert(
            flight,
            Flight {
                key,
                waiters: waiter.into_iter().collect(),
                refresh,
                started_seq: self.write_seq,
            },
        );
        Some(Begin::Lead { flight, waiter })
    }

    /// A waiter leaves (its cancellation or wait timeout, L-2). Returns
    /// whether nobody is left: the flight should then be cancelled (unless
    /// its loader already produced, in which case its write completes).
    pub fn leave(&mut self, flight: FlightId, waiter: WaiterId) -> bool {
        match self.by_id.get_mut(&flight) {
            Some(f) => {
                if let Ok(at) = f.waiters.binary_search(&waiter) {
                    f.waiters.remove(at);
                }
                f.waiters.is_empty() && !f.refresh
            }
            None => false,
        }
    }

    /// The flight ends; returns the waiters to answer. Idempotent.
    pub fn settle(&mut self, flight: FlightId) -> Vec<WaiterId> {
        match self.by_id.remove(&flight) {
            Some(f) => {
                if self.flights.get(&f.key) == Some(&flight) {
                    self.flights.remove(&f.key);
                }
                f.waiters
            }
            None => Vec::new(),
        }
    }

    /// Judges a remote read of `key` (L-3, L-4, L-14). A live record is
    /// copied to the local tier with its remaining lifetime.
    ///
    /// `read_seq` is [`LoaderMachine::seq`] when the read was sent: if the
    /// key was touched since, the answer may predate that touch, so no
    /// local copy is kept (L-12).
    pub fn remote_read(
        &mut self,
        key: &str,
        answer: Result<Option<Vec<u8>>, ()>,
        now_ms: i64,
        read_seq: u64,
    ) -> RemoteRead {
        match self.judge_remote(key, answer, now_ms) {
            Ok(record) => {
                self.copy_local(key, record.clone(), now_ms, read_seq);
                RemoteRead::Live(record)
            }
            Err(read) => read,
        }
    }

    /// The write sequence now: pass it back with a remote read's answer
    /// ([`LoaderMachine::remote_read`]).
    pub fn seq(&self) -> u64 {
        self.write_seq
    }

    /// The write sequence when `flight` began (now, if it is gone): its
    /// remote reads were sent after that.
    pub fn flight_seq(&self, flight: FlightId) -> u64 {
        self.by_id
            .get(&flight)
            .map_or(self.write_seq, |f| f.started_seq)
    }

    /// A remote hit's local copy (L-3), unless its key was touched since
    /// the read was sent (L-12).
    fn copy_local(&mut self, key: &str, record: Record, now_ms: i64, read_seq: u64) {
        if self.touched.since(key, read_seq) {
            self.local.remove(key);
            return;
        }
        let seq = self.write_seq;
        self.write_local(key, record, seq, now_ms, 0);
    }

    /// [`LoaderMachine::remote_read`] for a caller that has already read
    /// what it needs from the answer's bytes (see
    /// [`super::record::Record::value_bytes`]): the same judgement, counters
    /// and local copy, but the record moves into the local tier instead of
    /// being copied back out.
    pub fn remote_read_kept(
        &mut self,
        key: &str,
        answer: Result<Option<Vec<u8>>, ()>,
        now_ms: i64,
        read_seq: u64,
    ) -> RemoteKept {
        match self.judge_remote(key, answer, now_ms) {
            Ok(record) => {
                let kept = if record.is_placeholder() {
                    RemoteKept::Placeholder
                } else {
                    RemoteKept::Value
                };
                self.copy_local(key, record, now_ms, read_seq);
                kept
            }
            Err(RemoteRead::Corrupt) => RemoteKept::Corrupt,
            Err(RemoteRead::Failed) => RemoteKept::Failed,
            Err(RemoteRead::Miss | RemoteRead::Live(_)) => RemoteKept::Miss,
        }
    }

    /// The live record in a remote answer, or what else it was; counts
    /// the outcome. The record is not yet copied to the local tier.
    fn judge_remote(
        &mut self,
        key: &str,
        answer: Result<Option<Vec<u8>>, ()>,
        now_ms: i64,
    ) -> Result<Record, RemoteRead> {
        let bytes = match answer {
            Err(()) => {
                self.counters.remote_read_failures += 1;
                return Err(RemoteRead::Failed);
            }
            Ok(None) => {
                self.counters.remote_miss += 1;
                return Err(RemoteRead::Miss);
            }
            Ok(Some(bytes)) => bytes,
        };
        let record = match Record::decode_owned(bytes) {
            Ok(r) => r,
            Err(_) => {
                self.counters.codec_errors += 1;
                self.local.remove(key);
                return Err(RemoteRead::Corrupt);
            }
        };
        if !record.is_live(now_ms) {
            self.counters.remote_miss += 1;
            return Err(RemoteRead::Miss);
        }
        self.counters.remote_hit += 1;
        self.counters.hit += 1;
        if record.is_placeholder() {
            self.counters.placeholder_hits += 1;
        }
        Ok(record)
    }

    /// A value in a tier failed to decode as `V` (L-14): counted, and the
    /// local copy is dropped (the async layer deletes the remote one).
    pub fn corrupt(&mut self, key: &str) {
        self.counters.codec_errors += 1;
        self.local.remove(key);
    }

    /// The loader is about to be called for `flight`. False (do not call)
    /// once the machine is closed or the flight is gone (L-9: nothing runs
    /// after close). Counts `loads` (= loader calls, L-15), and a
    /// foreground miss or a refresh.
    pub fn load_started(&mut self, flight: FlightId) -> bool {
        if self.closed {
            return false;
        }
        let Some(f) = self.by_id.get(&flight) else {
            return false;
        };
        self.counters.loads += 1;
        if f.refresh {
            self.counters.refreshes += 1;
        } else if let FlightKey::Single(_) = f.key {
            self.counters.miss += 1;
        }
        true
    }

    /// The loader answered for `key` in `flight`: what to write (L-4, L-6,
    /// L-7, L-8). `ttl_ms` overrides the default value lifetime.
    pub fn load_finished(
        &mut self,
        flight: FlightId,
        key: &str,
        outcome: LoadOutcome,
        ttl_ms: Option<i64>,
        now_ms: i64,
        rand: u64,
    ) -> Option<WriteOrder> {
        let (refresh, started_seq) = self
            .by_id
            .get(&flight)
            .map_or((false, self.write_seq), |f| (f.refresh, f.started_seq));
        match outcome {
            LoadOutcome::Failed => {
                self.counters.load_failures += 1;
                if refresh {
                    self.counters.refresh_failures += 1;
                    if self.bug(LoaderBug::RefreshWritesEmpty) {
                        let ttl = ttl_ms.unwrap_or(self.cfg.ttl_ms);
                        return Some(self.order(
                            key,
                            Payload::Value(Vec::new()),
                            ttl,
                            now_ms,
                            rand,
                            started_seq,
                        ));
                    }
                }
                None
            }
            LoadOutcome::Value(bytes) => {
                let ttl = ttl_ms.unwrap_or(self.cfg.ttl_ms);
                Some(self.order(key, Payload::Value(bytes), ttl, now_ms, rand, started_seq))
            }
            LoadOutcome::NotFound => {
                let ttl = self.cfg.not_found_ttl_ms?;
                Some(self.order(key, Payload::Placeholder, ttl, now_ms, rand, started_seq))
            }
        }
    }

    fn order(
        &self,
        key: &str,
        payload: Payload,
        ttl_ms: i64,
        now_ms: i64,
        rand: u64,
        started_seq: u64,
    ) -> WriteOrder {
        let jitter_ms = self.jitter(rand);
        let life = ttl_ms.max(1).saturating_add(jitter_ms);
        let mode = match payload {
            Payload::Placeholder => WriteMode::IfAbsent,
            Payload::Value(_) => WriteMode::Always,
        };
        WriteOrder {
            key: key.to_string(),
            record: Record {
                payload,
                expires_at_ms: now_ms.saturating_add(life),
            },
            ttl_ms: u64::try_from(life).unwrap_or(1),
            mode,
            started_seq,
            jitter_ms,
        }
    }

    /// A `set` of `bytes` under `key` (L-7: overwrites a placeholder).
    pub fn prepare_set(
        &mut self,
        key: &str,
        bytes: Vec<u8>,
        ttl_ms: Option<i64>,
        now_ms: i64,
        rand: u64,
    ) -> WriteOrder {
        let ttl = ttl_ms.unwrap_or(self.cfg.ttl_ms);
        let seq = self.write_seq;
        self.order(key, Payload::Value(bytes), ttl, now_ms, rand, seq)
    }

    /// The remote answered `order` (or there is none): writes the local
    /// tier only if the remote accepted it (L-4), and never lets a
    /// placeholder overwrite a value written after the load began (L-7).
    /// Returns whether the mutation took effect (an event is due).
    pub fn write_applied(&mut self, order: &WriteOrder, remote: RemoteWrite, now_ms: i64) -> bool {
        let ahead = self.bug(LoaderBug::LocalWriteAheadOfRemote);
        match remote {
            RemoteWrite::Failed if !ahead => {
                self.counters.remote_write_failures += 1;
                false
            }
            RemoteWrite::Unknown if !ahead => {
                // The remote may take the write after this: neither this
                // node's old copy nor the new one is known to match it.
                self.counters.remote_write_failures += 1;
                self.write_seq += 1;
                self.touched.touch(&order.key, self.write_seq);
                self.local.remove(&order.key);
                true
            }
            RemoteWrite::Done(false) => false,
            RemoteWrite::Failed
            | RemoteWrite::Unknown
            | RemoteWrite::NoRemote
            | RemoteWrite::Done(true) => {
                if self.closed {
                    return true;
                }
                if order.record.is_placeholder() && !self.bug(LoaderBug::PlaceholderOverwritesValue)
                {
                    if let Some(existing) = self.local.peek(&order.key) {
                        if !existing.record.is_placeholder()
                            && existing.written_seq > order.started_seq
                            && existing.record.is_live(now_ms)
                        {
                            return true;
                        }
                    }
                }
                // The remote took this write, but a touch of the key since
                // it began may have raced it there: which landed last is
                // unknown here, so no local copy is kept (L-12).
                let raced = self.touched.since(&order.key, order.started_seq)
                    && !(order.record.is_placeholder()
                        && self.bug(LoaderBug::PlaceholderOverwritesValue));
                self.write_seq += 1;
                let seq = self.write_seq;
                self.touched.touch(&order.key, seq);
                if raced {
                    self.local.remove(&order.key);
                } else {
                    self.write_local(
                        &order.key,
                        order.record.clone(),
                        seq,
                        now_ms,
                        order.jitter_ms,
                    );
                }
                true
            }
        }
    }

    fn write_local(
        &mut self,
        key: &str,
        mut record: Record,
        seq: u64,
        now_ms: i64,
        jitter_ms: i64,
    ) {
        if self.closed {
            return;
        }
        if !record.is_live(now_ms) {
            // Already expired when the remote acknowledged it (a short
            // lifetime, a slow write): nothing to keep, but the copy it
            // replaces is older than what the remote now holds, and the
            // node ignores its own event (L-12).
            self.local.remove(key);
            return;
        }
        let cap = now_ms
            .saturating_add(self.cfg.local_ttl_ms)
            .saturating_add(jitter_ms);
        record.expires_at_ms = record.expires_at_ms.min(cap);
        self.local.put_str(
            key,
            LocalEntry {
                record,
                written_seq: seq,
            },
        );
    }

    /// `delete(key)`: drops the local copy and cancels the key's refresh task (L-9).
    pub fn delete(&mut self, key: &str) {
        self.write_seq += 1;
        self.touched.touch(key, self.write_seq);
        self.local.remove(key);
        if !self.bug(LoaderBug::DeleteKeepsRefreshTask) {
            self.tasks.remove(key);
        }
    }

    /// Starts a refresh task for `key` if it has none and the limit allows (L-9).
    pub fn add_task(&mut self, key: &str, payload: P, now_ms: i64) -> bool {
        if self.closed && !self.bug(LoaderBug::RefreshAfterClose) {
            return false;
        }
        if let Some(task) = self.tasks.get_mut(key) {
            task.payload = payload;
            task.last_read_ms = task.last_read_ms.max(now_ms);
            return true;
        }
        if self.tasks.len() >= self.cfg.refresh_tasks_max {
            self.counters.refresh_tasks_rejected += 1;
            return false;
        }
        self.tasks.insert(
            key.to_string(),
            Task {
                payload,
                next_due_ms: now_ms.saturating_add(self.cfg.refresh_interval_ms),
                last_read_ms: now_ms,
            },
        );
        true
    }

    /// The refreshes due at `now_ms`, in key order, at most as many as the
    /// concurrency limit leaves room for (L-9). Tasks idle past their window
    /// are stopped first. Each returned task's next due time moves one interval on.
    pub fn due(&mut self, now_ms: i64) -> Vec<(String, P)> {
        if self.closed {
            return Vec::new();
        }
        let idle = self.cfg.refresh_idle_ms;
        self.tasks
            .retain(|_, t| now_ms.saturating_sub(t.last_read_ms) < idle);
        let room = self
            .cfg
            .refresh_concurrency
            .saturating_sub(self.refreshing());
        let interval = self.cfg.refresh_interval_ms;
        let mut out = Vec::new();
        for (key, task) in self.tasks.iter_mut() {
            if out.len() >= room {
                break;
            }
            if task.next_due_ms <= now_ms {
                task.next_due_ms = now_ms.saturating_add(interval);
                out.push((key.clone(), task.payload.clone()));
            }
        }
        out
    }

    /// The earliest time a task is due, if any.
    pub fn next_due(&self) -> Option<i64> {
        self.tasks.values().map(|t| t.next_due_ms).min()
    }

    /// This node publishes an event for a mutation of `keys` (L-11).
    pub fn emit(&mut self, kind: EventKind, mut keys: Vec<String>) -> Event {
        keys.sort();
        keys.dedup();
        self.counters.events_emitted += 1;
        Event {
            source: self.cfg.node.clone(),
            kind,
            keys,
        }
    }

    /// Publishing an event failed: it is dropped (L-11).
    pub fn emit_failed(&mut self) {
        self.counters.events_dropped += 1;
    }

    /// An event arrived from the bus (L-11, L-12): another node's mutation
    /// drops the local copies it names; this node's own is ignored; a
    /// resync marker ([`Event::resync`]) drops every local copy. Nothing is
    /// applied after close.
    pub fn event_received(&mut self, event: &Event) -> bool {
        if self.closed {
            return false;
        }
        if event.is_resync() {
            // Events were lost, which ones is unknown: every local copy may
            // be stale, so none is kept (L-12). Not an event any node
            // emitted, so no event counter moves (L-11 conservation).
            self.local.clear();
            self.write_seq += 1;
            self.touched.all = self.write_seq;
            return true;
        }
        if event.source == self.cfg.node {
            self.counters.events_ignored += 1;
            return false;
        }
        self.counters.events_delivered += 1;
        self.write_seq += 1;
        for key in &event.keys {
            self.touched.touch(key, self.write_seq);
            self.local.remove(key);
        }
        true
    }

    /// Closes (L-9): every task is cancelled, every flight ends; returns the
    /// flights that were in the air so the async layer can cancel them and
    /// answer their waiters. Idempotent.
    pub fn close(&mut self) -> Vec<(FlightId, Vec<WaiterId>)> {
        self.closed = true;
        self.tasks.clear();
        self.local.clear();
        let ids: Vec<FlightId> = self.by_id.keys().copied().collect();
        ids.into_iter().map(|id| (id, self.settle(id))).collect()
    }

    /// LINV-1, LINV-4 and LINV-6 on the machine's own state at `now_ms`.
    pub fn check_invariants(&self, now_ms: i64) -> Result<(), Violation> {
        // LINV-1: the key index and the flights agree one to one, so no key
        // has two flights (refreshes included: they are flights too).
        if self.flights.len() != self.by_id.len() {
            return Err(Violation {
                rule: "LINV-1",
                detail: format!(
                    "{} keys index {} flights: some key has two flights or a flight lost its key",
                    self.flights.len(),
                    self.by_id.len()
                ),
            });
        }
        for (key, id) in &self.flights {
            match self.by_id.get(id) {
                Some(f) if &f.key == key => {}
                _ => {
                    return Err(Violation {
                        rule: "LINV-1",
                        detail: format!("key {key} indexes flight {id}, which is not its flight"),
                    })
                }
            }
        }
        // LINV-4: refresh bounds.
        if self.tasks.len() > self.cfg.refresh_tasks_max {
            return Err(Violation {
                rule: "LINV-4",
                detail: format!(
                    "{} refresh tasks > refresh_tasks_max {}",
                    self.tasks.len(),
                    self.cfg.refresh_tasks_max
                ),
            });
        }
        let refreshing = self.refreshing();
        if refreshing > self.cfg.refresh_concurrency {
            return Err(Violation {
                rule: "LINV-4",
                detail: format!(
                    "{refreshing} refreshes in flight > refresh_concurrency {}",
                    self.cfg.refresh_concurrency
                ),
            });
        }
        let window = self
            .cfg
            .refresh_idle_ms
            .saturating_add(self.cfg.refresh_interval_ms);
        if let Some((key, task)) = self
            .tasks
            .iter()
            .find(|(_, t)| now_ms.saturating_sub(t.last_read_ms) > window)
        {
            return Err(Violation {
                rule: "LINV-4",
                detail: format!(
                    "task for {key} outlived its idle window: last read {} ms, now {now_ms} ms",
                    task.last_read_ms
                ),
            });
        }
        if self.closed && (!self.tasks.is_empty() || !self.by_id.is_empty()) {
            return Err(Violation {
                rule: "LINV-4",
                detail: format!(
                    "closed, yet {} tasks and {} flights remain",
                    self.tasks.len(),
                    self.by_id.len()
                ),
            });
        }
        // LINV-6: counter conservation.
        self.counters.check().map_err(|detail| Violation {
            rule: "LINV-6",
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MachineConfig {
        MachineConfig {
            refresh_interval_ms: 100,
            refresh_concurrency: 2,
            refresh_tasks_max: 3,
            refresh_idle_ms: 1_000,
            ..MachineConfig::default()
        }
    }

    fn single(k: &str) -> FlightKey {
        FlightKey::Single(k.into())
    }

    /// L-12 (loader-net seeds 1080, 1808): a write whose record expired
    /// before the remote acknowledged it still replaces the older local
    /// copy — by removing it — rather than leaving it to be served.
    #[test]
    fn l12_a_write_expired_on_arrival_drops_the_older_local_copy() {
        let mut m: LoaderMachine<()> = LoaderMachine::new(cfg());
        let old = m.prepare_set("k", vec![1], Some(10_000), 0, 0);
        assert!(m.write_applied(&old, RemoteWrite::Done(true), 0));
        assert!(m.local().peek("k").is_some());
        let short = m.prepare_set("k", vec![2], Some(40), 100, 0);
        // Acknowledged after its 40 ms lifetime.
        assert!(m.write_applied(&short, RemoteWrite::Done(true), 200));
        assert!(m.local().peek("k").is_none(), "the older copy stayed");
    }

    #[test]
    fn linv1_holds_through_begin_join_refresh_settle() {
        let mut m: LoaderMachine<()> = LoaderMachine::new(cfg());
        let lead = m.begin(single("k"), false).unwrap();
        assert!(matches!(
            lead,
            Begin::Lead {
                waiter: Some(_),
                ..
            }
        ));
        let join = m.begin(single("k"), false).unwrap();
        assert_eq!(join.flight(), lead.flight());
        assert_eq!(
            m.begin(single("k"), true),
            Some(Begin::Join {
                flight: lead.flight(),
                waiter: None
            })
        );
        assert_eq!(m.flights(), 1);
        m.check_invariants(0).unwrap();
        assert_eq!(m.settle(lead.flight()).len(), 2);
        assert_eq!(
            m.settle(lead.flight()),
            Vec::<WaiterId>::new(),
            "idempotent"
        );
        m.check_invariants(0).unwrap();
    }

    #[test]
    fn linv1_planted_second_flight_for_one_key_is_caught() {
        let mut m: LoaderMachine<()> = LoaderMachine::new(cfg());
        let first = m.begin(single("k"), false).unwrap().flight();
        // Plant: a second flight for the same key, as a lost index entry would allow.
        m.by_id.insert(
            first + 100,
            Flight {
                key: single("k"),
                waiters: Vec::new(),
                refresh: false,
                started_seq: 0,
            },
        );
        assert_eq!(m.check_invariants(0).unwrap_err().rule, "LINV-1");
    }

    #[test]
    fn linv4_refresh_bounds_hold_and_planted_violations_are_caught() {
        let mut m: LoaderMachine<()> = LoaderMachine::new(cfg());
        for k in ["a", "b", "c", "d"] {
            m.add_task(k, (), 0);
        }
        assert_eq!(m.tasks(), 3);
        assert_eq!(m.counters().refresh_tasks_rejected, 1);
        let due = m.due(100);
        assert_eq!(due.len(), 2, "concurrency 2");
        for (k, ()) in &due {
            m.begin(single(k), true).unwrap();
        }
        assert!(m.due(100).is_empty(), "no room until a refresh ends");
        m.check_invariants(100).unwrap();

        // Plant: a third refresh flight beyond the concurrency bound.
        let mut over = LoaderMachine::<()>::new(cfg());
        for k in ["a", "b", "c"] {
            over.begin(single(k), true).unwrap();
        }
        assert_eq!(over.check_invariants(0).unwrap_err().rule, "LINV-4");

        // Plant: a task kept past its idle window.
        let mut idle = LoaderMachine::<()>::new(cfg());
        idle.add_task("a", (), 0);
        assert_eq!(idle.check_invariants(5_000).unwrap_err().rule, "LINV-4");
        idle.due(5_000);
        idle.check_invariants(5_000).unwrap();
        assert_eq!(idle.tasks(), 0);

        // Plant: tasks beyond the maximum.
        let mut many = LoaderMachine::<()>::new(cfg());
        for k in ["a", "b", "c", "d"] {
            many.tasks.insert(
                k.into(),
                Task {
                    payload: (),
                    next_due_ms: 0,
                    last_read_ms: 0,
                },
            );
        }
        assert_eq!(many.check_invariants(0).unwrap_err().rule, "LINV-4");

        // Close: nothing remains, nothing runs.
        m.close();
        m.check_invariants(100).unwrap();
        assert!(m.begin(single("z"), false).is_none());
        assert!(m.due(10_000).is_empty());
        // Plant: a task surviving close.
        m.tasks.insert(
            "x".into(),
            Task {
                payload: (),
                next_due_ms: 0,
                last_read_ms: 100,
            },
        );
        assert_eq!(m.check_invariants(100).unwrap_err().rule, "LINV-4");
    }

    #[test]
    fn linv6_counters_conserve_and_a_planted_drift_is_caught() {
        let mut m: LoaderMachine<()> = LoaderMachine::new(MachineConfig {
            has_remote: true,
            ..cfg()
        });
        assert_eq!(m.read_local("k", 0), LocalRead::Miss);
        let f = m.begin(single("k"), false).unwrap().flight();
        assert_eq!(m.remote_read("k", Ok(None), 0, 0), RemoteRead::Miss);
        assert!(m.load_started(f));
        let order = m
            .load_finished(f, "k", LoadOutcome::Value(b"v".to_vec()), None, 0, 3)
            .unwrap();
        assert!(m.write_applied(&order, RemoteWrite::Done(true), 0));
        m.settle(f);
        assert_eq!(m.read_local("k", 1), LocalRead::Value(b"v".to_vec()));
        let rec = Record::value(b"w".to_vec(), 10_000).encode();
        assert!(matches!(
            m.remote_read("j", Ok(Some(rec)), 1, 0),
            RemoteRead::Live(_)
        ));
        let f = m.begin(single("e"), false).unwrap().flight();
        assert!(m.load_started(f));
        assert!(m
            .load_finished(f, "e", LoadOutcome::Failed, None, 1, 0)
            .is_none());
        let c = m.counters();
        assert_eq!(
            (c.hit, c.local_hit, c.remote_hit, c.loads, c.load_failures),
            (2, 1, 1, 2, 1)
        );
        m.check_invariants(1).unwrap();

        m.counters.hit += 1; // plant
        assert_eq!(m.check_invariants(1).unwrap_err().rule, "LINV-6");
        m.counters.hit -= 1;
        m.counters.load_failures = m.counters.loads + 1; // plant
        assert_eq!(m.check_invariants(1).unwrap_err().rule, "LINV-6");
    }

    /// `remote_read_kept` judges, counts and copies exactly as
    /// `remote_read` does (L-3, L-14); only the record's way out differs.
    #[test]
    fn l3_remote_read_kept_matches_remote_read() {
        let cfg = MachineConfig {
            has_remote: true,
            ..cfg()
        };
        let answers: Vec<Result<Option<Vec<u8>>, ()>> = vec![
            Ok(Some(Record::value(b"v".to_vec(), 1_000).encode())),
            Ok(Some(Record::placeholder(900).encode())),
            Ok(Some(Record::value(b"old".to_vec(), 5).encode())),
            Ok(Some(b"junk".to_vec())),
            Ok(None),
            Err(()),
        ];
        let mut copied: LoaderMachine<()> = LoaderMachine::new(cfg.clone());
        let mut kept: LoaderMachine<()> = LoaderMachine::new(cfg);
        for (i, answer) in answers.into_iter().enumerate() {
            let key = format!("k{i}");
            let read = copied.remote_read(&key, answer.clone(), 10, 0);
            let verdict = kept.remote_read_kept(&key, answer, 10, 0);
            let want = match read {
                RemoteRead::Live(r) if r.is_placeholder() => RemoteKept::Placeholder,
                RemoteRead::Live(_) => RemoteKept::Value,
                RemoteRead::Corrupt => RemoteKept::Corrupt,
                RemoteRead::Miss => RemoteKept::Miss,
                RemoteRead::Failed => RemoteKept::Failed,
            };
            assert_eq!(verdict, want, "answer {i}");
            assert_eq!(copied.local().peek(&key), kept.local().peek(&key), "{i}");
        }
        assert_eq!(copied.counters(), kept.counters());
        assert_eq!(kept.local().len(), 2, "the live value and placeholder");
    }

    #[test]
    fn l4_a_failed_remote_write_leaves_the_local_tier_alone() {
        let mut m: LoaderMachine<()> = LoaderMachine::new(MachineConfig {
            has_remote: true,
            ..cfg()
        });
        let order = m.prepare_set("k", b"v".to_vec(), None, 0, 0);
        assert!(!m.write_applied(&order, RemoteWrite::Failed, 0));
        assert_eq!(m.read_local("k", 0), LocalRead::Miss);
        assert_eq!(m.counters().remote_write_failures, 1);
    }

    #[test]
    fn l12_a_remote_write_of_unknown_fate_drops_the_local_copy_and_is_announced() {
        let mut m: LoaderMachine<()> = LoaderMachine::new(MachineConfig {
            has_remote: true,
            ..cfg()
        });
        let old = m.prepare_set("k", b"old".to_vec(), None, 0, 0);
        assert!(m.write_applied(&old, RemoteWrite::Done(true), 0));
        assert!(matches!(m.read_local("k", 0), LocalRead::Value(_)));
        // A timeout: the new value may reach the remote after this, so the
        // old copy may be stale and the other nodes must hear of it.
        let new = m.prepare_set("k", b"new".to_vec(), None, 1, 0);
        assert!(
            m.write_applied(&new, RemoteWrite::Unknown, 1),
            "an event is due"
        );
        assert_eq!(m.read_local("k", 1), LocalRead::Miss);
        assert_eq!(m.counters().remote_write_failures, 1);
        let timeout = crate::loader::RemoteError::Timeout {
            op: "set",
            detail: String::new(),
        };
        let rejected = crate::loader::RemoteError::Rejected {
            op: "set",
            detail: String::new(),
        };
        assert_eq!(RemoteWrite::failed(&timeout), RemoteWrite::Unknown);
        assert_eq!(RemoteWrite::failed(&rejected), RemoteWrite::Failed);
    }

    #[test]
    fn l7_placeholder_skips_a_value_written_after_the_load_began() {
        let mut m: LoaderMachine<()> = LoaderMachine::new(MachineConfig {
            not_found_ttl_ms: Some(500),
            ..cfg()
        });
        let f = m.begin(single("k"), false).unwrap().flight();
        let set = m.prepare_set("k", b"real".to_vec(), None, 0, 0);
        assert!(m.write_applied(&set, RemoteWrite::NoRemote, 0));
        assert!(m.load_started(f));
        let ph = m
            .load_finished(f, "k", LoadOutcome::NotFound, None, 1, 0)
            .unwrap();
        assert_eq!(ph.mode, WriteMode::IfAbsent);
        m.write_applied(&ph, RemoteWrite::NoRemote, 1);
        assert_eq!(m.read_local("k", 2), LocalRead::Value(b"real".to_vec()));
    }

    #[test]
    fn l3_remote_copy_never_outlives_the_remote_record_and_expired_records_miss() {
        let mut m: LoaderMachine<()> = LoaderMachine::new(MachineConfig {
            has_remote: true,
            ..cfg()
        });
        let rec = Record::value(b"v".to_vec(), 1_000);
        m.remote_read("k", Ok(Some(rec.encode())), 400, 0);
        assert_eq!(m.local().peek("k").unwrap().record.expires_at_ms, 1_000);
        assert_eq!(
            m.read_local("k", 1_000),
            LocalRead::Miss,
            "LINV-3: not at its expiry"
        );
        assert_eq!(
            m.remote_read("j", Ok(Some(rec.encode())), 1_000, 0),
            RemoteRead::Miss
        );
        assert_eq!(
            m.remote_read("x", Ok(Some(b"junk".to_vec())), 0, 0),
            RemoteRead::Corrupt
        );
    }

    /// L-12: an answer or a write that began before its key was touched —
    /// deleted, written, invalidated by another node's event, or every key
    /// by a resync — leaves no local copy, since it may carry what that
    /// touch replaced; one that began after keeps its copy as usual.
    #[test]
    fn l12_no_local_copy_from_before_the_keys_last_touch() {
        let rec = |v: &[u8]| Record {
            payload: Payload::Value(v.to_vec()),
            expires_at_ms: 10_000,
        };
        let mut m: LoaderMachine<()> = LoaderMachine::new(cfg());
        // A remote read sent, then the key deleted, then the answer.
        let sent = m.seq();
        m.delete("k");
        m.remote_read("k", Ok(Some(rec(b"old").encode())), 1, sent);
        assert!(m.local().peek("k").is_none(), "a read from before a delete");
        // Sent after the delete: kept.
        let sent = m.seq();
        m.remote_read("k", Ok(Some(rec(b"new").encode())), 1, sent);
        assert!(m.local().peek("k").is_some());
        // Another key's touch leaves this one's copy alone (slots apart).
        let sent = m.seq();
        m.delete("other");
        m.remote_read("j", Ok(Some(rec(b"j").encode())), 1, sent);
        assert_eq!(
            Touched::slot("other") == Touched::slot("j"),
            m.local().peek("j").is_none()
        );
        // A set that began before another node's event for its key.
        let order = m.prepare_set("k", b"mine".to_vec(), None, 1, 0);
        let theirs = Event {
            source: "elsewhere".into(),
            kind: EventKind::Set,
            keys: vec!["k".into()],
        };
        assert!(m.event_received(&theirs));
        assert!(m.write_applied(&order, RemoteWrite::Done(true), 1));
        assert!(
            m.local().peek("k").is_none(),
            "a set raced by another node's"
        );
        // Two sets of one key on this node: the later one to begin wins
        // locally only if the earlier one was done before it began.
        let first = m.prepare_set("k", b"a".to_vec(), None, 1, 0);
        let second = m.prepare_set("k", b"b".to_vec(), None, 1, 0);
        assert!(m.write_applied(&second, RemoteWrite::Done(true), 1));
        assert!(m.write_applied(&first, RemoteWrite::Done(true), 1));
        assert!(
            m.local().peek("k").is_none(),
            "which landed last is unknown"
        );
        let third = m.prepare_set("k", b"c".to_vec(), None, 1, 0);
        assert!(m.write_applied(&third, RemoteWrite::Done(true), 1));
        assert!(m.local().peek("k").is_some(), "nothing raced it");
        // A resync touches every key.
        let sent = m.seq();
        assert!(m.event_received(&Event::resync()));
        m.remote_read("z", Ok(Some(rec(b"z").encode())), 1, sent);
        assert!(m.local().peek("z").is_none());
    }
}
