//! Closes one session of N handles (default 100k) once, for a profiler:
//! the session is built first (each handle a completed entry with a release
//! hook, as in `benches/benches/sessions.rs`), then only `Session::close`
//! is worth counting.
//!
//! ```sh
//! cargo build --release -p benches --example close_profile
//! valgrind --tool=callgrind --cache-sim=yes --LL=2097152,16,64 \
//!     --toggle-collect='*Session*close*' target/release/examples/close_profile 100000
//! ```
//!
//! `--LL` sets the simulated last-level cache to this machine's 2 MiB L2,
//! so its misses show which memory a close walks. The example also prints
//! the close's wall time per handle (one sample: use the criterion bench
//! for figures).
use std::time::Instant;

use benches::{fill, ids_named, runtime, value, Value};
use cache_core::facade::Cache;

fn main() {
    let n = match std::env::args().nth(1).map(|a| a.parse::<usize>()) {
        None => 100_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: close_profile [HANDLES]   (a positive count, default 100000)");
            std::process::exit(2);
        }
    };
    let rt = runtime();
    let v = value();
    let ids = ids_named("held", n);
    let cache: Cache<Value> = Cache::builder(1).build();
    let session = cache.open_session();
    rt.block_on(fill(&session, &ids, &v, true));
    let start = Instant::now();
    let summary = session.close().expect("an open session closes");
    let took = start.elapsed();
    assert_eq!((summary.released, cache.live_entries()), (n, 0));
    println!(
        "closed a session of {n} handles: {:.1} ns/handle",
        took.as_nanos() as f64 / n as f64
    );
}
