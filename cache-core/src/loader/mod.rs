//! The read-through loader of SPEC §7: a bounded local tier per node, a
//! shared remote tier, single flight per key, not-found placeholders,
//! refresh-ahead and invalidation events between nodes — in the shape of
//! the call cache: a pure [`machine::LoaderMachine`] (time and jitter
//! injected) under a thin async [`Loader`].
//!
//! Rules map to modules: L-1/L-2 flights in [`machine`] driven by [`api`];
//! L-3/L-4 tiers in [`machine`], [`local`], [`remote`]; L-5 [`keys`];
//! L-6/L-7 [`record`] (the placeholder tag) and [`machine`]; L-8
//! [`options`] and [`rng`]; L-9/L-10 refresh tasks in [`machine`], the
//! ticker and the remote lock in [`api`]; L-11/L-12 [`bus`]; L-13
//! `load_many` in [`api`]; L-14 [`codec`] and [`record`]; L-15
//! [`counters`]; L-16 [`error`]. `docs/loader.md` describes the choices.
//!
//! With the `redis` feature (on by default) the remote tier and the event
//! bus also run on a real Redis: `redis_remote::RedisRemote` (values with
//! `SET … PX`, `MGET`, pipelines, the refresh lock with `SET NX PX`) and
//! `redis_bus::RedisBus` (one pub/sub channel per cache; a dropped
//! subscription resubscribes and makes the node drop its local copies,
//! since the events it missed are unknown).
//!
//! ```
//! use std::sync::Arc;
//! use cache_core::facade::ManualClock;
//! use cache_core::loader::{CallOptions, Loader, LoaderOptions, MemoryRemote, Source};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let clock = ManualClock::new(1_000);
//! let remote = MemoryRemote::new(Arc::new(clock.clone()));
//! let users: Loader<String> = Loader::builder(LoaderOptions::new("users"), Arc::new(clock))
//!     .remote(Arc::new(remote))
//!     .build()
//!     .unwrap();
//!
//! let first = users
//!     .once("42", CallOptions::default(), |key| async move { Ok(format!("user {}", key.parts()[0])) })
//!     .await
//!     .unwrap();
//! assert_eq!((first.value.as_str(), first.source), ("user 42", Source::Loader));
//!
//! let again = users
//!     .once("42", CallOptions::default(), |_| async { unreachable!("served from the local tier") })
//!     .await
//!     .unwrap();
//! assert_eq!(again.source, Source::Local);
//! assert_eq!(users.counters().loads, 1);
//! users.close().await;
//! # });
//! ```

pub mod api;
pub mod bus;
pub mod codec;
pub mod contract;
pub mod counters;
pub mod error;
mod flight_cell;
pub mod keys;
pub mod local;
pub mod machine;
pub mod options;
pub mod record;
#[cfg(feature = "redis")]
pub mod redis_bus;
#[cfg(feature = "redis")]
pub mod redis_remote;
pub mod remote;
pub mod rng;

pub use api::{Batch, Loaded, Loader, LoaderBuilder, Source};
pub use bus::{BusFaults, BusStats, Event, EventBus, EventKind, MemoryBus};
pub use codec::{Codec, CodecError};
pub use counters::Counters;
pub use error::LoaderError;
pub use keys::{FlightKey, Key};
pub use options::{CallOptions, LoaderOptions, NotFound, MIN_TTL_MS};
pub use record::Record;
#[cfg(feature = "redis")]
pub use redis_bus::{RedisBus, RedisBusStats};
#[cfg(feature = "redis")]
pub use redis_remote::{RedisOptions, RedisRemote};
pub use remote::{MemoryRemote, Remote, RemoteError, RemoteFaults};
