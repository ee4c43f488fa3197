//! Call IDs (ID-2, ID-6): digest, encode and decode of a 10-deep call chain.
//!
//! The chain is `container(platform) . withExec(args, n) ...`, ten links,
//! each with arguments. `digest` builds the chain on prebuilt links, one
//! `with_receiver` per link, so it computes exactly ten recipe digests (IDs
//! are immutable: each link is rebuilt and hashed once). `encode` writes the
//! canonical encoding; `decode` parses it and recomputes the ten digests.
//! The baseline is one SHA-256 pass over the chain's canonical encoding:
//! the floor of hashing that much data.

use std::hint::black_box;

use benches::criterion;
use cache_core::id::{CallId, Digest, Literal};
use criterion::{criterion_group, criterion_main, Criterion};

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
    g.finish();
}

criterion_group! {
    name = ids;
    config = criterion();
    targets = id_chain
}
criterion_main!(ids);
