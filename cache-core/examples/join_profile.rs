//! Counts what joining one in-flight call costs per waiter, in
//! instructions (which, unlike time, do not move with a busy machine's
//! load): `ROUNDS` rounds of N callers of one fresh key, all polled on one
//! spawned task, as the `waiters` bench in `benches/benches/hits.rs` runs
//! them. One caller runs the resolver; the others join it, are served when
//! it completes, and every result is dropped (giving its ref back).
//!
//! The resolver runs on a task of its own and wakes the waiters from there,
//! so no one function holds the whole cost: count the whole program at two
//! round counts and divide the difference, which leaves out the setup.
//!
//! ```sh
//! cargo build --release -p cache-core --example join_profile
//! for r in 100 300; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$r target/release/examples/join_profile 64 $r
//! done
//! # (total at 300 - total at 100) / (200 rounds x 64 callers) = per caller
//! ```
//!
//! Arguments: the waiters per round N (default 64) and the rounds
//! (default 200).

use std::hint::black_box;
use std::sync::Arc;

use cache_core::facade::{Cache, CallKey, Ctx};
use cache_core::id::{CallId, Literal};
use cache_core::machine::Resolved;
use futures::future::join_all;

type Value = Arc<[u8]>;

/// `rounds` rounds of `n` callers joining one call on a fresh key each.
async fn joins(cache: &Cache<Value>, ids: &[CallId], v: &Value, n: usize, rounds: usize) {
    let ctx = Ctx::new();
    for id in ids.iter().cycle().take(rounds) {
        let key = CallKey::new(id.clone()).concurrency_key("c");
        let callers = (0..n).map(|_| {
            let value = v.clone();
            cache.get_or_init_call(&ctx, key.clone(), move |_| async move {
                Ok(Resolved::value(value))
            })
        });
        let results = join_all(callers).await;
        // A joined caller is served the call's own result, so it is not a
        // hit (it did wait for the computation); every caller gets it.
        let served = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(served, n, "every caller is served the one call's result");
        black_box(results);
    }
}

fn arg(n: usize, default: usize) -> Result<usize, String> {
    match std::env::args().nth(n) {
        None => Ok(default),
        Some(a) => a
            .parse()
            .map_err(|_| format!("argument {n} must be a whole number, got {a:?}")),
    }
}

fn main() -> Result<(), String> {
    let n = arg(1, 64)?;
    let rounds = arg(2, 200)?;
    if n == 0 || rounds == 0 {
        return Err("the waiters per round and the rounds must both be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a tokio runtime: {e}"))?;
    let ids: Arc<Vec<CallId>> = Arc::new(
        (0..4096)
            .map(|i| CallId::new("join").with_arg("i", Literal::Int(i)))
            .collect(),
    );
    let v: Value = Arc::from(vec![7u8; 64]);
    let cache: Cache<Value> = Cache::builder().build();
    let task = {
        let (cache, ids, v) = (cache.clone(), ids.clone(), v.clone());
        // A warm-up round outside the counted function, then the rounds.
        async move {
            joins(&cache, &ids, &v, n, 1).await;
            joins(&cache, &ids, &v, n, rounds).await;
        }
    };
    rt.block_on(async { tokio::spawn(task).await })
        .map_err(|e| format!("the join task failed: {e}"))?;
    assert_eq!(cache.live_entries(), 0, "INV-1 after the joins");
    // Every caller's future is built and moved (into `join_all`'s list)
    // before it is polled, so its size is part of each join's cost.
    let ctx = Ctx::new();
    let call = cache.get_or_init_call(&ctx, CallKey::new(ids[0].clone()), |_| async {
        Ok(Resolved::value(Value::from(vec![0u8])))
    });
    println!(
        "{rounds} rounds of {n} callers joined one call each; a call future is {} bytes",
        std::mem::size_of_val(&call)
    );
    Ok(())
}
