//! Where the TTL store's blocking calls run (DESIGN "Production defaults").
//!
//! A [`TtlStore`](crate::ttl::TtlStore) is synchronous: SQLite waits on its
//! file lock (up to its busy timeout) and on the disk. Run on an async
//! worker, such a call would stall every task of that worker. The facade
//! hands each store call (`select`, `compare_and_upsert`, GC) to a
//! [`BlockingExecutor`] and waits for the answer at most the store deadline
//! (`CacheBuilder::store_deadline_ms`, measured on tokio time); a late
//! answer is a store failure, which degrades the call to a session-scoped
//! key (T-2).
//!
//! - [`TokioBlocking`], the service default, runs it on tokio's blocking
//!   pool (`tokio::task::spawn_blocking`).
//! - [`Inline`] runs it in place: no thread, no timer, the same order of
//!   events on every run. The simulation's choice.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::ttl::StoreError;

/// A store call packaged for a [`BlockingExecutor`]: it sends its own
/// answer, so an executor only has to run it once.
pub type BlockingJob = Box<dyn FnOnce() + Send + 'static>;

/// Runs blocking store calls away from the async workers.
///
/// An implementation must run each job exactly once, or drop it unrun (the
/// waiting call then sees a store failure, T-2). It must not block the
/// calling task for long: that is the whole point.
pub trait BlockingExecutor: Send + Sync {
    /// Starts `job`; it may finish before this returns ([`Inline`]) or later.
    fn spawn(&self, job: BlockingJob);
}

/// Runs each job in place, on the calling task. Deterministic and
/// thread-free: what a simulation needs (its traces must not depend on a
/// thread pool's timing). A slow store blocks the caller's worker.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inline;

impl BlockingExecutor for Inline {
    fn spawn(&self, job: BlockingJob) {
        job();
    }
}

/// Runs each job on tokio's blocking thread pool
/// (`tokio::task::spawn_blocking`): the default of
/// [`Cache::builder`](super::Cache::builder). Outside a tokio runtime there
/// is no worker to protect and no pool to use, so the job runs in place.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioBlocking;

impl BlockingExecutor for TokioBlocking {
    fn spawn(&self, job: BlockingJob) {
        match tokio::runtime::Handle::try_current() {
            // Detached: the caller waits on the job's answer, not its handle.
            Ok(rt) => drop(rt.spawn_blocking(job)),
            Err(_) => job(),
        }
    }
}

/// Runs the store call `f` on `executor` and waits for its answer at most
/// `deadline` (tokio time). A panic in the store, a job dropped unrun and a
/// late answer are all store failures. A late job still runs to its end on
/// its thread; its answer is dropped.
///
/// An answer that is already there when the executor returns (always, with
/// [`Inline`]) is used at once, without a timer: a simulation's schedule is
/// the same as if the store were called directly.
pub(crate) async fn run_store<T: Send + 'static>(
    executor: &dyn BlockingExecutor,
    deadline: Duration,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, mut rx) = oneshot::channel();
    executor.spawn(Box::new(move || {
        let answer = std::panic::catch_unwind(AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the store call panicked".into())));
        let _ = tx.send(answer);
    }));
    let dropped = || StoreError::Unavailable("the executor dropped the store call unrun".into());
    match rx.try_recv() {
        Ok(answer) => return answer,
        Err(oneshot::error::TryRecvError::Closed) => return Err(dropped()),
        Err(oneshot::error::TryRecvError::Empty) => {}
    }
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(dropped()),
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer within {} ms",
            deadline.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drops every job unrun.
    struct Dropping;
    impl BlockingExecutor for Dropping {
        fn spawn(&self, job: BlockingJob) {
            drop(job);
        }
    }

    /// Keeps every job, never running it.
    struct Hoarding(std::sync::Mutex<Vec<BlockingJob>>);
    impl BlockingExecutor for Hoarding {
        fn spawn(&self, job: BlockingJob) {
            self.0.lock().unwrap().push(job);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn inline_answers_in_place_without_a_timer() {
        let before = tokio::time::Instant::now();
        let r = run_store(&Inline, Duration::ZERO, || Ok(7)).await;
        assert_eq!(
            r,
            Ok(7),
            "a zero deadline does not matter to an answer in hand"
        );
        assert_eq!(tokio::time::Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn store_panics_and_dropped_jobs_are_store_failures() {
        let r: Result<u8, _> = run_store(&Inline, Duration::from_secs(1), || panic!("boom")).await;
        assert!(matches!(r, Err(StoreError::Unavailable(m)) if m.contains("panicked")));
        let r = run_store(&Dropping, Duration::from_secs(1), || Ok(1)).await;
        assert!(matches!(r, Err(StoreError::Unavailable(m)) if m.contains("dropped")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_is_a_failure_after_the_deadline() {
        let hoard = Hoarding(Default::default());
        let start = tokio::time::Instant::now();
        let r = run_store(&hoard, Duration::from_millis(250), || Ok(1)).await;
        assert_eq!(
            r,
            Err(StoreError::Unavailable("no answer within 250 ms".into()))
        );
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(hoard.0.lock().unwrap().len(), 1, "spawned, never run");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokio_blocking_runs_off_the_worker() {
        let worker = std::thread::current().id();
        let ran_on = run_store(&TokioBlocking, Duration::from_secs(5), move || {
            Ok(std::thread::current().id())
        })
        .await
        .unwrap();
        assert_ne!(ran_on, worker, "the store call ran on the async worker");
    }
}
