//! The loader driver's proptest strategies, shared by `loader_proptest.rs`
//! and `loader_zoo.rs`: operation sequences weighted so flights, refreshes,
//! batches and events happen, with values that include the in-band `*`.

#![allow(dead_code)]

use cache_core::driver::{LoadResult, LoaderInput, LoaderOp, RemoteFault};
use proptest::prelude::*;

/// Values include `*` (42), the in-band placeholder a buggy loader cache uses.
pub fn value() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![1u8, 2, 3, 42])
}

pub fn result() -> impl Strategy<Value = LoadResult> {
    prop_oneof![
        3 => value().prop_map(LoadResult::Value),
        1 => Just(LoadResult::NotFound),
        1 => Just(LoadResult::Fail),
    ]
}

/// One loader operation, weighted so flights, refreshes and events happen.
pub fn op() -> impl Strategy<Value = LoaderOp> {
    let node = 0u8..2;
    let key = 0u8..5;
    prop_oneof![
        6 => (node.clone(), key.clone(), any::<bool>(), prop::bool::weighted(0.1), any::<bool>())
            .prop_map(|(node, key, refresh, skip_local, stubborn)| LoaderOp::Once { node, key, refresh, skip_local, stubborn }),
        3 => (0u8..4).prop_map(|which| LoaderOp::Start { which }),
        5 => (0u8..4, result()).prop_map(|(which, result)| LoaderOp::Finish { which, result }),
        2 => (0u8..4, 0u8..4).prop_map(|(which, waiter)| LoaderOp::Leave { which, waiter }),
        2 => (node.clone(), key.clone()).prop_map(|(node, key)| LoaderOp::Get { node, key }),
        1 => (node.clone(), key.clone()).prop_map(|(node, key)| LoaderOp::Exists { node, key }),
        3 => (node.clone(), key.clone(), value(), prop::option::weighted(0.2, 0u8..40))
            .prop_map(|(node, key, value, ttl)| LoaderOp::Set { node, key, value, ttl }),
        2 => (node.clone(), key.clone()).prop_map(|(node, key)| LoaderOp::Delete { node, key }),
        2 => (node.clone(), 1u8..32).prop_map(|(node, mask)| LoaderOp::LoadMany { node, mask }),
        3 => any::<u8>().prop_map(|ms| LoaderOp::Advance { ms }),
        1 => any::<u8>().prop_map(|ms| LoaderOp::Back { ms }),
        1 => node.clone().prop_map(|node| LoaderOp::Tick { node }),
        1 => prop_oneof![
            3 => Just(RemoteFault::Healthy),
            1 => Just(RemoteFault::ReadFail),
            1 => Just(RemoteFault::WriteFail),
            1 => Just(RemoteFault::Partition),
        ].prop_map(|fault| LoaderOp::Remote { fault }),
        1 => (prop::bool::weighted(0.3), prop::bool::weighted(0.3), prop::bool::weighted(0.1))
            .prop_map(|(drop, duplicate, fail_publish)| LoaderOp::Bus { drop, duplicate, fail_publish }),
        3 => (node.clone(), 0u8..4).prop_map(|(node, which)| LoaderOp::Deliver { node, which }),
        1 => (node.clone(), 0u8..4).prop_map(|(node, which)| LoaderOp::Lose { node, which }),
        1 => prop::bool::weighted(0.3).prop_flat_map(move |close| {
            if close { (0u8..2).prop_map(|node| LoaderOp::Close { node }).boxed() }
            else { (0u8..2).prop_map(|node| LoaderOp::Tick { node }).boxed() }
        }),
    ]
}

/// A whole driver input.
pub fn input(max_ops: usize) -> impl Strategy<Value = LoaderInput> {
    (
        any::<bool>(),
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.6),
        prop::bool::weighted(0.3),
        any::<bool>(),
        prop::collection::vec(op(), 0..max_ops),
    )
        .prop_map(
            |(two_nodes, remote, not_found, small_local, jitter, ops)| LoaderInput {
                two_nodes,
                remote,
                not_found,
                small_local,
                jitter,
                ops,
            },
        )
}
