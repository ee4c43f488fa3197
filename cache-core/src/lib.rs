//! cache-core: see README.

pub mod id;
