//! Call IDs (ID-2, ID-6): digest, encode and decode of a 10-deep call chain.
//!
//! The chain is `container(platform) . withExec(args, n) ...`, ten links,
//! each with arguments. `digest` builds the chain on prebuilt links, one
//! `with_receiver` per link, so it computes exactly ten recipe digests (IDs
//! are immutable: each link is rebuilt and hashed once). `encode` writes the
//! canonical encoding; `decode` parses it and recomputes the ten digests.
//! The baseline is one SHA-256 pass over the chain's canonical encoding:
//! the floor of hashing that much data. `sha256_of_each_link_floor` (and
//! its pair, an info row) hashes ten buffers as long as the links'
//! preimages, one write each: what the digest's hashing alone costs.
//!
//! The report's gated ratios (digest and decode against the floor) are
//! also measured as pairs once criterion is done ([`paired`]), and so are
//! digest and decode against the links' hashing alone (info rows: what
//! building and parsing the IDs add to the hashing ID-2 requires): criterion's
//! medians of two benches are taken seconds apart, and a shared machine's
//! speed drifts in between.
//!
//! `BENCH_COUNT=N` runs only N iterations of each loop, in the
//! never-inlined functions `ids::digests`, `ids::decodes` and
//! `ids::floors`, for callgrind (instructions, which a busy machine does
//! not distort):
//!
//! ```sh
//! cargo bench -p benches --bench ids --no-run     # prints the binary's path
//! BENCH_COUNT=10000 valgrind --tool=callgrind --toggle-collect='ids::digests' \
//!     target/release/deps/ids-<hash>               # then ÷ 10,000
//! ```
//!
//! Valgrind hides the CPU's SHA extensions, so `sha2` hashes in software
//! there (about 3,450 instructions a block): the floor hashes 14 blocks,
//! the chain's digests 29.

use std::hint::black_box;
use std::time::{Duration, Instant};

use benches::paired::paired;
use benches::{criterion, quick};
use cache_core::id::{CallId, Digest, Literal};
use criterion::{criterion_group, Criterion};

const DEPTH: usize = 10;

/// The ten links, not yet chained.
fn links() -> Vec<CallId> {
    let mut links = vec![CallId::new("container")
        .with_arg("platform", Literal::from("linux/amd64"))
        .with_module("core")];
    for d in 1..DEPTH {
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

/// Buffers as long as the chain's ten recipe preimages (ID-2, as
/// `id::digest` writes them), for the hashing floor of the digest row: the
/// `container` link's 91 bytes (domain tag 27, no receiver 1, field 13,
/// argument count 4, `platform` and its string 28, module 9, view 1, nth 8)
/// and nine `withExec` links' 138 (domain tag 27, receiver digest 33, field
/// 12, count 4, `args` and its list of three strings 38, `n` and its
/// integer 14, module 1, view 1, nth 8). SHA-256 pads each to whole 64-byte
/// blocks: 2 + 9 × 3 = 29 blocks, where the encoding takes 14.
fn preimage_sized() -> Vec<Vec<u8>> {
    let mut sizes = vec![91];
    sizes.extend([138; DEPTH - 1]);
    sizes.into_iter().map(|n| vec![0x5a; n]).collect()
}

fn chain(links: &[CallId]) -> CallId {
    let mut id = links[0].clone();
    for link in &links[1..] {
        id = link.with_receiver(id);
    }
    id
}

fn id_chain(c: &mut Criterion) {
    let links = links();
    let id = chain(&links);
    let bytes = id.encode();
    assert_eq!(CallId::decode(&bytes).expect("round trip"), id);
    let mut g = c.benchmark_group("id_chain10");
    g.bench_function("digest", |b| b.iter(|| black_box(chain(black_box(&links)))));
    g.bench_function("encode", |b| b.iter(|| black_box(black_box(&id).encode())));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(CallId::decode(black_box(&bytes)).expect("decodes")))
    });
    g.bench_function("sha256_of_encoding_floor", |b| {
        b.iter(|| black_box(Digest::of(black_box(&bytes))))
    });
    let preimages = preimage_sized();
    g.bench_function("sha256_of_each_link_floor", |b| {
        b.iter(|| link_hashes(black_box(&preimages), 1))
    });
    g.finish();
}

/// How long `f` takes.
fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// The digest and decode ratios, each measured as a pair with the floor
/// in alternating rounds, on the loops `BENCH_COUNT` counts. Written for
/// `ci/bench-report` as `paired_id_digest.json` and `paired_id_decode.json`.
fn paired_ratios() {
    let rounds = if quick() { 51 } else { 201 };
    let round = Duration::from_millis(3);
    let links = links();
    let bytes = chain(&links).encode();
    let floor = |n| timed(|| floors(&bytes, n as usize));
    paired(
        rounds,
        round,
        |n| timed(|| digests(&links, n as usize)),
        floor,
    )
    .report("id_digest");
    paired(
        rounds,
        round,
        |n| timed(|| decodes(&bytes, n as usize)),
        floor,
    )
    .report("id_decode");
    // What hashing alone costs: ten SHA-256 of the links' preimage sizes,
    // each in one write (the digest writes each in about twenty pieces).
    let preimages = preimage_sized();
    let hashing = |n| timed(|| link_hashes(&preimages, n as usize));
    paired(rounds, round, hashing, floor).report("id_link_hashes");
    // What building the IDs adds to their hashing: the digest and decode
    // rows against the links' hashing floor (ID-2 hashes every link).
    paired(
        rounds,
        round,
        |n| timed(|| digests(&links, n as usize)),
        hashing,
    )
    .report("id_digest_over_hashing");
    paired(
        rounds,
        round,
        |n| timed(|| decodes(&bytes, n as usize)),
        hashing,
    )
    .report("id_decode_over_hashing");
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
fn link_hashes(preimages: &[Vec<u8>], n: usize) {
    for _ in 0..n {
        for p in preimages {
            black_box(Digest::of(black_box(p)));
        }
    }
}

#[inline(never)]
fn floors(bytes: &[u8], n: usize) {
    for _ in 0..n {
        black_box(Digest::of(black_box(bytes)));
    }
}

criterion_group! {
    name = ids;
    config = criterion();
    targets = id_chain
}

fn main() {
    if let Ok(count) = std::env::var("BENCH_COUNT") {
        let Ok(n) = count.parse::<usize>() else {
            eprintln!("ids: BENCH_COUNT must be a whole number of iterations, got {count:?}");
            std::process::exit(2);
        };
        let links = links();
        let bytes = chain(&links).encode();
        digests(&links, n);
        decodes(&bytes, n);
        floors(&bytes, n);
        return;
    }
    let listing = std::env::args().any(|a| a == "--list");
    ids();
    Criterion::default().configure_from_args().final_summary();
    // `BENCH_PAIRS=0` skips the pairs, as in the `hits` bench.
    let pairs = std::env::var("BENCH_PAIRS").map_or(true, |v| v != "0");
    if !listing && pairs {
        paired_ratios();
    }
}
