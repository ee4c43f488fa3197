//! Closes a session of N handles (default 100k), ROUNDS times (default 1), for a profiler:
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
//! for figures) and the minor page faults the closes took, where the
//! system reports them (Linux's `/proc/self/stat`): on a virtual machine a
//! fault can cost microseconds, and a large close touches fresh buffers.
use std::time::Instant;

use benches::{fill, ids_named, runtime, value, Value};
use cache_core::facade::Cache;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let (n, rounds) = match (args.next(), args.next(), args.next()) {
        (None, None, None) => (100_000, 1),
        (Some(Ok(n)), None, None) if n > 0 => (n, 1),
        (Some(Ok(n)), Some(Ok(r)), None) if n > 0 && r > 0 => (n, r),
        _ => {
            eprintln!(
                "usage: close_profile [HANDLES [ROUNDS]]   (positive counts, default 100000 1)"
            );
            std::process::exit(2);
        }
    };
    let rt = runtime();
    let v = value();
    let ids = ids_named("held", n);
    // Each round builds a fresh cache and session, as the bench does, and
    // times only the close; later rounds show the steady state of the
    // allocator (a first close also pays for fresh pages).
    let mut per_handle = Vec::with_capacity(rounds);
    let mut faults = Some(0);
    for _ in 0..rounds {
        let cache: Cache<Value> = Cache::builder().build();
        let session = cache.open_session();
        rt.block_on(fill(&session, &ids, &v, true));
        let faults_before = minor_faults();
        let start = Instant::now();
        let summary = session.close().expect("an open session closes");
        let took = start.elapsed();
        faults = match (faults, faults_before, minor_faults()) {
            (Some(sum), Some(before), Some(after)) => Some(sum + after - before),
            _ => None,
        };
        assert_eq!((summary.released, cache.live_entries()), (n, 0));
        per_handle.push(took.as_nanos() as f64 / n as f64);
    }
    let first = per_handle[0];
    per_handle.sort_by(f64::total_cmp);
    println!(
        "closed {rounds} session(s) of {n} handles: first {first:.1} ns/handle, \
         fastest {:.1}, median {:.1}; minor page faults per close: {}",
        per_handle[0],
        per_handle[per_handle.len() / 2],
        faults.map_or_else(|| "-".to_string(), |f| (f / rounds as u64).to_string())
    );
}

/// This process's minor page faults so far (field 10 of
/// `/proc/self/stat`), or `None` where that file is not there.
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: the 3rd field (state) comes first, so minflt is the 8th.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(7)?.parse().ok()
}
