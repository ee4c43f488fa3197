//! Rule checks shared by every harness that drives the cache: the
//! simulation's oracles and the operation drivers feed them what they saw
//! and get a typed verdict back, so one rule is judged by one piece of code.
//!
//! ```
//! use cache_core::checks::telemetry::{CallFacts, SpanCheck};
//!
//! let mut check = SpanCheck::new();
//! let facts = CallFacts { session: Some(1), key: 7, always: false, retries: true };
//! check.call_started(1, facts);
//! check.span(1, true).unwrap();
//! check.resolver_ran(1).unwrap_err(); // S-5: a span said cached, then it ran
//! ```

pub mod accounting;
pub mod answers;
pub mod telemetry;
pub mod ttl_rows;
pub mod ttl_served;
