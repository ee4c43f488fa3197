//! cache-core: a shared, refcounted result cache whose decisions come from a
//! pure, deterministic state machine.
pub mod error;
pub mod facade;
pub mod id;
pub mod machine;
pub mod metrics;
pub mod trace;
pub mod ttl;

pub use error::CallError;
