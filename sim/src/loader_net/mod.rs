//! The loader over simulated TCP (SPEC §7, §10): the `loader-net` world.
//!
//! Unlike the `loader` world (`crate::loader`, which drives the pure
//! machine through the driver's harness and models the network), every
//! node here runs the real async [`cache_core::loader::Loader`] with a
//! [`remote::NetRemote`] and a [`bus::NetBus`]: the remote tier and the
//! event bus are turmoil hosts reached over simulated TCP, so partitions,
//! held links, latency, lost connections and bus faults hit real sockets.
//!
//! - [`frame`]: length-prefixed frames and the request/response client;
//! - [`remote`]: the remote host (a `MemoryRemote` behind the wire) and `NetRemote`;
//! - [`bus`]: the bus host (fan-out with per-copy faults) and `NetBus`;
//! - [`scenario`], [`plan`]: the `loader-net` scenario file and a seed's plan;
//! - [`world`]: the hosts (nodes running client streams, remote, bus) and
//!   the observation log they write;
//! - [`oracle`]: LINV-1, -2, -5, -6, -8 judged from that log and the
//!   loaders' own accessors, outside the hosts;
//! - [`run`]: one seed, step by step, faults injected and healed;
//! - [`tools`]: the debugging loop — plan files, shrinking, the report's
//!   gauges and the decisions `explain` and `diff` read.
//!
//! ```
//! use sim::loader_net::{run_net_seed, NetScenario};
//!
//! let s = NetScenario::named("loader-net").unwrap();
//! let o = run_net_seed(2, &s);
//! assert!(o.violations.is_empty(), "{:?}", o.violations);
//! // One seed, one trace (INV-12).
//! assert_eq!(run_net_seed(2, &s).trace, o.trace);
//! ```

pub mod bus;
pub mod frame;
pub mod oracle;
pub mod plan;
pub mod remote;
pub mod run;
pub mod scenario;
pub mod tools;
pub mod world;

use std::future::Future;
use std::pin::Pin;

pub use run::{as_run_outcome, run_net_plan, run_net_seed, NetOutcome};
pub use scenario::{NetScenario, NET_NAMED};

/// A boxed, sendable future (the loader traits' return type; the sim does
/// not depend on `futures` for this one alias).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
