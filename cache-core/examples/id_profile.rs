//! What a 10-deep call ID chain costs to digest and to decode, against one
//! SHA-256 of its encoding (the `ids` bench's chain and floor), in two
//! forms a busy machine does not distort:
//!
//! - paired times: ROUNDS rounds (default 101), each timing about 2 ms of
//!   one side and then as many iterations of the other, which goes first
//!   alternating; the median of the per-round ratios is printed;
//! - instruction counts, under callgrind, of the never-inlined functions
//!   `id_profile::digests`, `id_profile::decodes` and `id_profile::floors`
//!   (each runs 10,000 iterations; ROUNDS = 0 runs only those). Valgrind hides the CPU's SHA
//!   extensions, so `sha2` hashes in software there: subtract 29 blocks'
//!   worth of the floor's per-block count (the floor hashes 14) to see
//!   what is not hashing.
//!
//! ```sh
//! cargo build --release -p cache-core --example id_profile
//! target/release/examples/id_profile            # paired ratios
//! valgrind --tool=callgrind --toggle-collect='id_profile::digests' \
//!     target/release/examples/id_profile 0      # then ÷ 10,000
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use cache_core::id::{CallId, Digest, Literal};

/// Iterations of each counted function.
const COUNTED: usize = 10_000;

/// The `ids` bench's ten links, not yet chained.
fn links() -> Vec<CallId> {
    let mut links = vec![CallId::new("container")
        .with_arg("platform", Literal::from("linux/amd64"))
        .with_module("core")];
    for d in 1..10 {
        links.push(
            CallId::new("withExec")
                .with_arg(
                    "args",
                    Literal::List(vec![
                        Literal::from("sh"),
                        Literal::from("-c"),
                        Literal::from(format!("step {d}")),
                    ]),
                )
                .with_arg("n", Literal::Int(d as i64)),
        );
    }
    links
}

/// The chain built link by link: ten recipe digests.
fn chain(links: &[CallId]) -> CallId {
    let mut id = links[0].clone();
    for link in &links[1..] {
        id = link.with_receiver(id);
    }
    id
}

#[inline(never)]
fn digests(links: &[CallId], n: usize) {
    for _ in 0..n {
        black_box(chain(black_box(links)));
    }
}

#[inline(never)]
fn decodes(bytes: &[u8], n: usize) {
    for _ in 0..n {
        black_box(CallId::decode(black_box(bytes)).expect("the chain decodes"));
    }
}

#[inline(never)]
fn floors(bytes: &[u8], n: usize) {
    for _ in 0..n {
        black_box(Digest::of(black_box(bytes)));
    }
}

/// The median over `rounds` of ours ÷ floor per iteration, each round
/// timing both sides back to back, which goes first alternating.
fn paired(rounds: usize, ours: impl Fn(usize), floor: impl Fn(usize)) -> f64 {
    let time = |f: &dyn Fn(usize), n: usize| {
        let start = Instant::now();
        f(n);
        start.elapsed().as_secs_f64() / n as f64
    };
    // Iterations per round: about 2 ms of ours.
    let mut n = 1;
    while time(&ours, n) * (n as f64) < Duration::from_millis(2).as_secs_f64() {
        n *= 2;
    }
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|r| {
            if r % 2 == 0 {
                let a = time(&ours, n);
                a / time(&floor, n)
            } else {
                let b = time(&floor, n);
                time(&ours, n) / b
            }
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[rounds / 2]
}

fn main() -> Result<(), String> {
    let rounds = match std::env::args().nth(1) {
        None => 101,
        Some(a) => a
            .parse::<usize>()
            .map_err(|_| format!("ROUNDS must be a whole number, got {a:?}"))?,
    };
    let links = links();
    let bytes = chain(&links).encode();
    digests(&links, COUNTED);
    decodes(&bytes, COUNTED);
    floors(&bytes, COUNTED);
    if rounds == 0 {
        return Ok(());
    }
    let digest = paired(rounds, |n| digests(&links, n), |n| floors(&bytes, n));
    let decode = paired(rounds, |n| decodes(&bytes, n), |n| floors(&bytes, n));
    println!(
        "10-deep chain ({} bytes encoded), median of {rounds} paired rounds: \
         digest {digest:.2}x, decode {decode:.2}x one SHA-256 of the encoding",
        bytes.len()
    );
    Ok(())
}
