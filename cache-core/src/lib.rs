//! cache-core: see README.
