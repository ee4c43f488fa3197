#![doc = include_str!("../README.md")]
//!
//! ## The rules
//!
//! Every rule id cited in these docs, in the trace lines and in the errors
//! (C-7, T-4, INV-1 …) is defined in `docs/SPEC.md` at the root of the
//! repository ([`../docs/SPEC.md`](../docs/SPEC.md) from this crate's
//! directory); `docs/DESIGN.md` beside it describes how the state machine,
//! the async facade and the simulation harness fit together. A runnable
//! tour of the async API is `cargo run -p cache-core --example quickstart`;
//! the service guide above is compiled and run as a doc test.
#![warn(missing_docs)]
pub mod bugs;
pub mod checks;
#[cfg(feature = "driver")]
pub mod driver;
pub mod error;
pub mod facade;
pub mod id;
/// The read-through loader with local and remote tiers (SPEC §7).
pub mod loader;
pub mod machine;
pub mod metrics;
pub(crate) mod prefetch;
pub mod trace;
pub mod ttl;

pub use error::{CallError, ResolverError};
