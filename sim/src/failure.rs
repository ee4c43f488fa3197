//! The error a simulated resolver fails with: typed, so that oracles match
//! it (INV-6 asks which run produced an error) instead of reading its text.

use std::fmt;

/// Why a resolver run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The plan said this run fails (C-9).
    Planned,
    /// The plan said this run panics (C-14); the panic's payload carries
    /// this failure.
    Panicked,
    /// The run's nested call failed with an error of this kind (C-11).
    Nested(&'static str),
}

/// A resolver run's failure: the run that produced it and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunFailure {
    /// The resolver run.
    pub run: u64,
    /// Why it failed.
    pub cause: Cause,
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cause {
            Cause::Planned => write!(f, "planned error run{}", self.run),
            Cause::Panicked => write!(f, "planned panic run{}", self.run),
            Cause::Nested(kind) => write!(f, "nested {kind} run{}", self.run),
        }
    }
}

impl std::error::Error for RunFailure {}

impl RunFailure {
    /// The run behind a resolver's error or panic, if a simulated resolver
    /// produced it.
    pub fn of(e: &cache_core::CallError) -> Option<RunFailure> {
        match e {
            cache_core::CallError::Resolver(e) | cache_core::CallError::Panicked(e) => {
                e.downcast_ref::<RunFailure>().copied()
            }
            _ => None,
        }
    }
}
