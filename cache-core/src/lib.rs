//! cache-core: see README.
pub mod ttl;
