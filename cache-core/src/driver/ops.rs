//! The operations the driver applies. Every field is an index or a small
//! choice, taken modulo what exists when the operation runs, so any sequence
//! is valid and shrinking one never makes it meaningless.

use arbitrary::Arbitrary;

use crate::id::{CallId, Digest, Literal};

/// The state machine's input: which kind of cache, then the operations.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct MachineInput {
    /// A change cache: abandoned arbitrary inits keep their key (K-5).
    pub change_cache: bool,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

/// One operation on the pure state machine.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `begin_call` for one of the driver's call IDs (see [`call_ids`]).
    Call {
        /// Who calls.
        who: Who,
        /// Which call ID (modulo [`call_ids`]); [`INVALID_KEY`] is an invalid
        /// key (C-1): no call ID for an even `conc`, an empty storage key
        /// for an odd one; with [`EXPLICIT_STORAGE_KEY`] set, the call
        /// names its storage key itself.
        id: u8,
        /// Which concurrency key: `""`, `"c1"` or `"c2"` (modulo 3); above
        /// that, whether the call asks for repeated telemetry
        /// ([`repeats_telemetry`]).
        conc: u8,
        /// C-2 do-not-cache.
        dnc: bool,
        /// A TTL, chosen through the driver's in-memory TTL store (T-2).
        ttl: Ttl,
    },
    /// `begin_arbitrary` for key `"x"` or `"y"`.
    Arbitrary {
        /// Who calls.
        who: Who,
        /// Which key (modulo 2).
        key: u8,
    },
    /// The `which`-th running resolver (abandoned ones included) finishes.
    Complete {
        /// Which running resolver.
        which: u8,
        /// What it produced.
        outcome: Outcome,
        /// On success, the ID it returns instead of the requested one.
        returned_id: Option<u8>,
        /// T-3: the result may be persisted.
        safe: bool,
        /// Hand in a stale handle as a nested ref (refused, C-12).
        stale_nested: bool,
    },
    /// A waiter of the `which`-th in-flight call leaves (its cancellation
    /// fired, C-5).
    Leave {
        /// Which in-flight call (among those with waiters).
        which: u8,
        /// Which of its waiters.
        waiter: u8,
    },
    /// `leave` with a waiter id the machine never issued.
    LeaveUnknown {
        /// Which in-flight call.
        which: u8,
    },
    /// Release the `which`-th handle a top-level caller holds.
    Release {
        /// Which held handle.
        which: u8,
    },
    /// Release a handle its session already released (must be refused).
    ReleaseStale,
    /// A running resolver drops one of the refs its nested calls gave it.
    ReleaseInner {
        /// Which resolver (among those holding nested refs).
        which: u8,
    },
    /// Open a session (at most 4 open at once).
    Open,
    /// Close the `which`-th open session (S-1).
    Close {
        /// Which open session.
        which: u8,
    },
    /// Move the TTL clock forward.
    Advance {
        /// Milliseconds.
        ms: u16,
    },
    /// Set the in-memory TTL store's faults.
    StoreFaults {
        /// The next operations that fail (modulo 4).
        fail_next: u8,
        /// Every operation fails until changed.
        fail_all: bool,
    },
    /// T-5: garbage-collect expired TTL rows.
    Gc,
}

/// Who makes a call.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// A caller with no session.
    Anon,
    /// A caller in the n-th open session (anonymous when none is open).
    Session(u8),
    /// A caller in the n-th closed session (S-2; anonymous when none).
    Closed(u8),
    /// The n-th running resolver makes a nested call (anonymous when none).
    Inner(u8),
    /// A resolver of another cache instance calls this one: its chain
    /// repeats the n-th running resolver's keys and its entry id is that
    /// resolver's, both under the other instance. For this cache it is an
    /// anonymous caller: never recursive (C-4 is per instance), no
    /// wait-for edge (C-4b).
    Foreign(u8),
}

/// What a resolver produces.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A value, with a release hook; the hook fails (C-12) when the number
    /// is 7 modulo 8.
    Value(u16),
    /// A successful "no value" (C-10), with a release hook.
    NoValue,
    /// A resolver error (C-9).
    Error,
    /// A resolver panic (C-14).
    Panic,
    /// The resolver observed its cancellation.
    Cancelled,
}

impl Outcome {
    /// Whether the resolver succeeded.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Value(_) | Outcome::NoValue)
    }
}

/// A call's TTL.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// No TTL: the storage key is the call key.
    None,
    /// 100 ms.
    Short,
    /// 1000 ms.
    Long,
}

impl Ttl {
    /// Milliseconds; 0 for none.
    pub fn ms(self) -> u64 {
        match self {
            Ttl::None => 0,
            Ttl::Short => 100,
            Ttl::Long => 1000,
        }
    }
}

/// The call IDs every driver draws from: a small key space so collisions are
/// frequent. `a` and `b` are different recipes sharing content digest `A`
/// (content hits, C-8); `d` has its own content; `c` has none; `e` has a
/// custom digest.
///
/// Built once per process: digesting them is a fifth of a fuzz execution's
/// cost, and they are the same for every input.
pub fn call_ids() -> Vec<CallId> {
    static IDS: std::sync::OnceLock<Vec<CallId>> = std::sync::OnceLock::new();
    IDS.get_or_init(|| {
        let content = |id: CallId, c: &str| id.with_content_digest(Digest::of(c.as_bytes()));
        vec![
            content(CallId::new("a"), "A"),
            content(CallId::new("b"), "A"),
            CallId::new("c"),
            content(CallId::new("d").with_arg("n", Literal::Int(1)), "D"),
            CallId::new("e").with_custom_digest(Digest::of(b"custom-e")),
        ]
    })
    .clone()
}

/// The `id` of a call operation that asks with an invalid key (C-1). One
/// value of 256, so the inputs keep their layout and most calls stay valid.
pub const INVALID_KEY: u8 = u8::MAX;

/// The bit of a machine call's `id` that makes it name its storage key
/// itself, as its call key's text, when no TTL picks one: the same key the
/// cache derives, given the other way (a storage key that is a digest's
/// text must index and hit like the digest, C-3.1). The call ID is the
/// rest of `id`.
pub const EXPLICIT_STORAGE_KEY: u8 = 0x80;

/// The concurrency keys the drivers draw from.
pub const CONCURRENCY_KEYS: [&str; 3] = ["", "c1", "c2"];

/// Whether a top-level call whose `conc` field is `conc` asks for repeated
/// telemetry (S-5: it emits a span on every call, hits included): one call
/// in eight, chosen by the bits above those that pick its concurrency key.
pub fn repeats_telemetry(conc: u8) -> bool {
    usize::from(conc) / CONCURRENCY_KEYS.len() % 8 == 7
}

/// The arbitrary keys the drivers draw from.
pub const ARBITRARY_KEYS: [&str; 2] = ["x", "y"];

/// The facade's input: which kind of cache, then the operations.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct FacadeInput {
    /// A change cache: abandoned arbitrary inits keep their key (K-5).
    pub change_cache: bool,
    /// The operations, in order.
    pub ops: Vec<SessionOp>,
}

/// One operation on the async facade, its sessions and their resolvers. The
/// driver runs the facade on a current-thread tokio runtime with paused time;
/// after each operation it runs every task until all are blocked, so the
/// interleaving is decided by the operation sequence alone.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum SessionOp {
    /// Open a session (at most 4 alive at once).
    Open,
    /// `Session::close` the n-th session (a closed one: a clear error).
    Close {
        /// Which session.
        session: u8,
    },
    /// Drop the n-th session's value: a dropped connection closes it (S-6).
    Drop {
        /// Which session.
        session: u8,
    },
    /// A top-level call in a session (or none), on a spawned caller task.
    Call {
        /// The n-th session (open or closed); `None` for no session.
        session: Option<u8>,
        /// Which call ID; [`INVALID_KEY`] is a key with no call ID (C-1),
        /// refused at once: with its TTL, and with its caller cancelled
        /// first unless `obey_cancel` (C-1 still answers first).
        id: u8,
        /// Which concurrency key.
        conc: u8,
        /// C-2 do-not-cache.
        dnc: bool,
        /// A TTL through the cache's in-memory store.
        ttl: Ttl,
        /// Whether its resolver, if it runs, returns as soon as it is cancelled.
        obey_cancel: bool,
    },
    /// `get_or_init_arbitrary` in a session (or none).
    Arbitrary {
        /// The n-th session; `None` for no session.
        session: Option<u8>,
        /// Which key.
        key: u8,
        /// Whether its init, if it runs, returns as soon as it is cancelled.
        obey_cancel: bool,
    },
    /// The n-th running resolver makes a nested call in its own context.
    Nested {
        /// Which running resolver.
        parent: u8,
        /// Which call ID.
        id: u8,
        /// Which concurrency key.
        conc: u8,
        /// C-2 do-not-cache.
        dnc: bool,
        /// Whether the nested resolver returns as soon as it is cancelled.
        obey_cancel: bool,
    },
    /// The n-th running resolver finishes; on success it hands over the refs
    /// its nested calls gave it (C-11).
    Resolve {
        /// Which running resolver.
        which: u8,
        /// What it produces (`Cancelled` is an error the resolver returns).
        outcome: Outcome,
        /// On success, the ID it returns instead of the requested one.
        returned_id: Option<u8>,
        /// T-3: the result may be persisted.
        safe: bool,
    },
    /// The n-th waiting caller leaves: its token fires, or its task is aborted.
    Cancel {
        /// Which waiting caller.
        which: u8,
        /// Abort the caller's task instead of firing its token.
        abort: bool,
    },
    /// Release (or drop) the n-th result that holds its own ref.
    Release {
        /// Which held result.
        which: u8,
        /// Drop it instead of calling `release`.
        drop: bool,
    },
    /// Move the TTL clock forward.
    Advance {
        /// Milliseconds.
        ms: u16,
    },
    /// Set the in-memory TTL store's faults.
    StoreFaults {
        /// The next operations that fail (modulo 4).
        fail_next: u8,
        /// Every operation fails until changed.
        fail_all: bool,
        /// How long answers take.
        delay: StoreDelay,
    },
    /// T-5: garbage-collect expired TTL rows.
    Gc,
}

/// How long the in-memory TTL store takes to answer (simulated time).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDelay {
    /// At once.
    None,
    /// 50 ms: slow, but within the cache's deadline.
    Slow,
    /// 2000 ms: beyond the cache's 1000 ms deadline, so the call degrades (T-2).
    Timeout,
}

impl StoreDelay {
    /// Milliseconds.
    pub fn ms(self) -> u64 {
        match self {
            StoreDelay::None => 0,
            StoreDelay::Slow => 50,
            StoreDelay::Timeout => 2000,
        }
    }
}
