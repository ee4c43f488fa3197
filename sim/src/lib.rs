//! Deterministic simulations of the cache (skeleton until the sim issue).
