#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
pub mod bugs;
#[cfg(feature = "driver")]
pub mod driver;
pub mod error;
pub mod facade;
pub mod id;
pub mod machine;
pub mod metrics;
pub(crate) mod prefetch;
pub mod trace;
pub mod ttl;

pub use error::{CallError, ResolverError};
