//! Real parallelism: many clients on a multi-thread runtime with real timers.
//! Sessions close while their calls are in flight, callers are cancelled by
//! token and by dropping their future, resolvers fail, panic, ignore
//! cancellation and nest. At the end nothing is left (INV-1), every
//! resolver output was released exactly once (C-12), and the invariants
//! hold (INV-3, INV-7, INV-10).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::facade::{Cache, CallKey, CallResult, Ctx, ResolverCtx};
use cache_core::id::CallId;
use cache_core::machine::Resolved;
use cache_core::CallError;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

type V = u64;

/// Every output a resolver made, with how often its release hook ran.
#[derive(Clone, Default)]
struct Outputs(Arc<Mutex<Vec<u32>>>);

impl Outputs {
    fn make(&self) -> Resolved<V> {
        let mut all = self.0.lock().unwrap();
        let n = all.len();
        all.push(0);
        let me = self.clone();
        Resolved::value(n as u64).with_release(move || {
            me.0.lock().unwrap()[n] += 1;
            Ok(())
        })
    }
}

/// A small deterministic generator (xorshift): the schedule is the
/// runtime's, the choices are the seed's.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const KEYS: u64 = 8;

/// Key `k` of round `g`: every round asks for fresh keys, so resolvers keep
/// running instead of the first results serving every later call.
fn key(g: u64, k: u64) -> CallKey {
    CallKey::new(CallId::new(format!("g{g}-k{k}"))).concurrency_key("c")
}

/// A resolver for key `k`: by `style`, a value after a short sleep, an
/// error, a panic, a value that ignores cancellation, or a value that first
/// makes a nested call on a higher key (so nesting never loops, C-4).
fn resolver(
    cache: Cache<V>,
    outputs: Outputs,
    g: u64,
    k: u64,
    style: u64,
    ms: u64,
) -> impl FnOnce(ResolverCtx) -> BoxFuture<'static, Result<Resolved<V>, CallError>> + Send {
    move |ctx: ResolverCtx| {
        Box::pin(async move {
            let pause = tokio::time::sleep(Duration::from_millis(ms));
            match style {
                0 => {
                    tokio::select! {
                        _ = ctx.cancel.cancelled() => Err(CallError::Cancelled),
                        _ = pause => Ok(outputs.make()),
                    }
                }
                1 => {
                    pause.await;
                    Err(CallError::Resolver("planned failure".into()))
                }
                2 => {
                    pause.await;
                    panic!("planned panic");
                }
                // Deaf: finishes whatever happens (C-5a releases it if
                // nobody is left).
                3 => {
                    pause.await;
                    Ok(outputs.make())
                }
                _ if k + 1 < KEYS => {
                    let inner = resolver(cache.clone(), outputs.clone(), g, k + 1, 0, ms / 2);
                    let nested = cache
                        .get_or_init_call(&ctx.nested(), key(g, k + 1), inner)
                        .await?;
                    let handle = nested
                        .into_nested()
                        .expect("a nested ref is the resolver's");
                    Ok(outputs.make().with_nested(handle))
                }
                _ => Ok(outputs.make()),
            }
        })
    }
}

async fn client(cache: Cache<V>, outputs: Outputs, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for g in 0..16 {
        let session = cache.open_session();
        let mut in_flight = Vec::new();
        for _ in 0..6 {
            let k = rng.next(KEYS);
            let r = resolver(
                cache.clone(),
                outputs.clone(),
                g,
                k,
                rng.next(5),
                1 + rng.next(8),
            );
            let bare = rng.next(4) == 0;
            let ctx = if bare { Ctx::new() } else { session.ctx() };
            let c = cache.clone();
            match rng.next(4) {
                // Cancelled by its token after a while.
                0 => {
                    let token = CancellationToken::new();
                    let ctx = ctx.with_cancel(token.clone());
                    let after = Duration::from_millis(rng.next(6));
                    in_flight.push(tokio::spawn(async move {
                        let call = c.get_or_init_call(&ctx, key(g, k), r);
                        tokio::pin!(call);
                        tokio::select! {
                            out = &mut call => drop(out),
                            _ = tokio::time::sleep(after) => {
                                token.cancel();
                                drop(call.await);
                            }
                        }
                    }));
                }
                // Dropped unfinished after a while.
                1 => {
                    let after = Duration::from_millis(rng.next(6));
                    in_flight.push(tokio::spawn(async move {
                        let _ = tokio::time::timeout(after, c.get_or_init_call(&ctx, key(g, k), r))
                            .await;
                    }));
                }
                // Left in flight when the session closes below.
                2 => {
                    in_flight.push(tokio::spawn(async move {
                        let out: Result<CallResult<V>, CallError> =
                            c.get_or_init_call(&ctx, key(g, k), r).await;
                        drop(out);
                    }));
                }
                // Awaited in line, its result held until the session closes.
                _ => {
                    let out = c.get_or_init_call(&ctx, key(g, k), r).await;
                    if let Ok(held) = out {
                        if rng.next(2) == 0 {
                            let _ = held.release();
                        }
                    }
                }
            }
        }
        if rng.next(2) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.next(4))).await;
        }
        // S-3: some calls are still running; they release on completion.
        session.close().unwrap();
        for t in in_flight {
            t.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dozens_of_clients_leave_nothing_behind() {
    // The planned panics are expected (C-14): keep them out of the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let planned = info.payload().downcast_ref::<&str>() == Some(&"planned panic");
        if !planned {
            default_hook(info);
        }
    }));
    let cache: Cache<V> = Cache::builder().build();
    let outputs = Outputs::default();
    let run = async {
        let clients: Vec<_> = (0..48)
            .map(|seed| tokio::spawn(client(cache.clone(), outputs.clone(), seed)))
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        // Deaf and abandoned resolvers finish on their own (C-5a).
        while cache.live_entries() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap_or_else(|_| panic!("not quiescent after 20 s:\n{}", cache.leak_report()));
    let report = cache.leak_report();
    assert_eq!(cache.entries(), 0, "{report}");
    assert!(report.is_clean(), "{report}");
    cache.check_invariants().unwrap();
    let all = outputs.0.lock().unwrap();
    assert!(all.len() > 150, "only {} outputs were made", all.len());
    let wrong: Vec<_> = all.iter().enumerate().filter(|(_, n)| **n != 1).collect();
    assert!(
        wrong.is_empty(),
        "outputs not released exactly once: {wrong:?}"
    );
}
