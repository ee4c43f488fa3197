//! Waiting for an outcome, leaving on cancellation, and running resolvers.

use std::borrow::Borrow;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Poll, Waker};

use futures::FutureExt;
use rustc_hash::FxHasher;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{run_hooks, CallResult, ResolverCtx, Shared};
use crate::bugs::Bug;
use crate::error::{CallError, ResolverError};
use crate::machine::{CallCache, Decision, EntryId, Left, Resolved, Served, Violation, WaiterId};

pub(super) type Outcome<V> = Result<Served<V>, CallError>;

/// A map with a fixed hasher: the same operations give the same layout on
/// every run, so nothing observable can depend on a hasher seed. Hashed, not
/// ordered: every miss inserts and removes here, and tree nodes cost an
/// allocation and a rebalance each time. The one walk, in
/// `check`, sorts what it reports.
type Map<K, T> = std::collections::HashMap<K, T, BuildHasherDefault<FxHasher>>;

/// The facade's bookkeeping beside the machine: where each waiter's
/// outcome goes and whom to wake, and each in-flight call's cancellation
/// token.
pub(crate) struct Waits<V> {
    /// One slot per registered waiter, under the cache's own lock: a
    /// completion fills the slots of all its waiters in the pass that grants
    /// their refs, then wakes them once the lock is released. A channel per
    /// waiter cost an allocation, its own synchronisation and a wake-up
    /// under the lock for each (a call joined by 512 callers made 512).
    slots: Map<WaiterId, Slot<V>>,
    settle: Map<EntryId, Vec<oneshot::Sender<()>>>,
    tokens: Map<EntryId, CancellationToken>,
}

/// A waiter's outcome once delivered, and the waker of the future waiting
/// for it until then.
struct Slot<V> {
    entry: EntryId,
    outcome: Option<Outcome<V>>,
    waker: Option<Waker>,
}

impl<V> Default for Waits<V> {
    fn default() -> Self {
        Self {
            slots: Map::default(),
            settle: Map::default(),
            tokens: Map::default(),
        }
    }
}

/// What a caller waits on after its decision.
pub(crate) enum Wait {
    Nothing,
    /// Its slot in [`Waits`].
    Outcome,
    Settled(oneshot::Receiver<()>),
}

impl<V> Waits<V> {
    /// Registers the caller's wake-up for a decision, under the same lock as
    /// the decision itself, so no completion can slip in between.
    pub(crate) fn register(&mut self, decision: &Decision<V>) -> Wait {
        let (entry, waiter) = match decision {
            Decision::Hit(_) => return Wait::Nothing,
            Decision::Blocked { entry } => {
                let (tx, rx) = oneshot::channel();
                self.settle.entry(*entry).or_default().push(tx);
                return Wait::Settled(rx);
            }
            Decision::Wait { entry, waiter } => (*entry, *waiter),
            Decision::Run(order) => (order.entry, order.waiter),
        };
        self.slots.insert(
            waiter,
            Slot {
                entry,
                outcome: None,
                waker: None,
            },
        );
        Wait::Outcome
    }

    /// Puts `outcome` in `waiter`'s slot and takes the waker to wake (after
    /// the lock is released). Gives the outcome back if nobody waits for it.
    fn deliver(
        &mut self,
        waiter: WaiterId,
        outcome: Outcome<V>,
        wake: &mut Vec<Waker>,
    ) -> Option<Outcome<V>> {
        let Some(slot) = self.slots.get_mut(&waiter) else {
            return Some(outcome);
        };
        slot.outcome = Some(outcome);
        // Waiters polled by one task (a `join_all` of a few futures) share
        // its waker: one wake-up serves them all, the rest would only
        // schedule the same task again.
        match slot.waker.take() {
            Some(w) if wake.last().is_some_and(|last| last.will_wake(&w)) => {}
            w => wake.extend(w),
        }
        None
    }

    /// The resolver cancellation token of an in-flight call.
    pub(crate) fn call_token(&mut self, entry: EntryId) -> CancellationToken {
        self.tokens.entry(entry).or_default().clone()
    }

    /// Every registered waiter is waiting in the machine; every token belongs
    /// to a live entry.
    /// The first violation in id order, so the report is the same whatever
    /// the maps' layout.
    pub(crate) fn check<T: Clone>(&self, machine: &CallCache<T>) -> Result<(), Violation> {
        // A delivered slot is no longer waiting in the machine: its waiter
        // has been served and is about to take the outcome.
        let stray_waiter = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.outcome.is_none())
            .filter(|(waiter, slot)| !machine.waiters(slot.entry).contains(waiter))
            .map(|(waiter, slot)| (*waiter, slot.entry))
            .min();
        if let Some((waiter, entry)) = stray_waiter {
            return Err(Violation {
                rule: "INV-7",
                detail: format!("waiter {waiter} is registered for {entry} but the machine does not have it waiting"),
            });
        }
        let stray_token = self
            .tokens
            .keys()
            .filter(|entry| !machine.contains(**entry))
            .min();
        if let Some(entry) = stray_token {
            return Err(Violation {
                rule: "INV-7",
                detail: format!("resolver token kept for settled entry {entry}"),
            });
        }
        Ok(())
    }
}

/// Waits for the outcome; leaves (C-5) if cancelled or dropped first.
/// `starter` says whether this caller's decision was to run the resolver.
pub(crate) async fn outcome<V: Clone + Send + 'static>(
    shared: &Arc<Shared<V>>,
    entry: EntryId,
    waiter: WaiterId,
    wait: Wait,
    cancel: &CancellationToken,
    starter: bool,
) -> Result<CallResult<V>, CallError> {
    let first_ctx = shared.bug(Bug::FirstCtxCancelsAll);
    let Wait::Outcome = wait else {
        return Err(CallError::Unknown {
            what: "wait registration",
            id: waiter.to_string(),
        });
    };
    // Borrowed, not cloned: the result takes its own clone only once served.
    let mut waiting = Waiting {
        shared,
        entry,
        waiter,
        armed: true,
        value: PhantomData,
    };
    // BUG (first-ctx-cancels-all, breaks C-5): a joined waiter cannot
    // cancel on its own. The switch decides whether there is a
    // cancellation to watch at all, so with it off no branch of the wait
    // below depends on it.
    let watch_cancel = !first_ctx || starter;
    let mut cancelled = std::pin::pin!(watch_cancel.then(|| cancel.cancelled()));
    // The delivery is looked at first: an outcome already delivered is
    // taken even if the caller was cancelled in the same instant (its ref
    // is then the caller's to drop). Polled by hand rather than through
    // `select!`, whose bookkeeping cost a joiner more than its own poll.
    let received = std::future::poll_fn(|cx| match waiting.poll_delivered(Some(cx.waker())) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        Poll::Pending => match cancelled.as_mut().as_pin_mut() {
            Some(c) => c.poll(cx).map(|()| None),
            None => Poll::Pending,
        },
    })
    .await;
    match received {
        Some(r) => match r {
            Ok(served) => Ok(CallResult::new(shared.clone(), served)),
            Err(e) => Err(e),
        },
        None => {
            if first_ctx {
                // BUG (first-ctx-cancels-all, breaks C-5 / INV-7): the
                // resolver runs under the first caller's cancellation, so
                // every other waiter fails with it.
                if let Some(token) = shared.lock().waits.tokens.remove(&entry) {
                    token.cancel();
                }
            }
            waiting.leave();
            Err(CallError::Cancelled)
        }
    }
}

/// K-5: waits until a blocking entry settles.
pub(crate) async fn settled<V>(
    shared: &Arc<Shared<V>>,
    wait: Wait,
    cancel: &CancellationToken,
) -> Result<(), CallError> {
    let _ = shared;
    let Wait::Settled(rx) = wait else {
        return Ok(());
    };
    tokio::select! {
        biased;
        _ = rx => Ok(()),
        _ = cancel.cancelled() => Err(CallError::Cancelled),
    }
}

/// A registered waiter; dropping it unanswered is leaving (C-5). `S` is how
/// it holds the cache: a caller's wait borrows the cache's own `Arc` (no
/// reference count update per waiter), a test's waiter owns one.
pub(super) struct Waiting<V: Clone, S: Borrow<Arc<Shared<V>>> = Arc<Shared<V>>> {
    pub(super) shared: S,
    pub(super) entry: EntryId,
    pub(super) waiter: WaiterId,
    /// Still registered: its outcome not yet taken, nor left.
    pub(super) armed: bool,
    /// `V` appears only in `S`'s bound, which a struct cannot name alone.
    pub(super) value: PhantomData<fn() -> V>,
}

impl<V: Clone, S: Borrow<Arc<Shared<V>>>> Waiting<V, S> {
    /// Takes the outcome out of this waiter's slot if it has been
    /// delivered; otherwise leaves `waker` (if any) to be woken when it is.
    pub(super) fn poll_delivered(&mut self, waker: Option<&Waker>) -> Poll<Outcome<V>> {
        let mut state = self.shared.borrow().lock();
        let Some(slot) = state.waits.slots.get_mut(&self.waiter) else {
            // A slot goes only with its own waiter (taking its outcome, or
            // leaving), so this is not reached; answering it as a
            // cancellation keeps a broken invariant from hanging the caller.
            self.armed = false;
            return Poll::Ready(Err(CallError::Cancelled));
        };
        let Some(outcome) = slot.outcome.take() else {
            if let Some(waker) = waker {
                match &mut slot.waker {
                    Some(w) if w.will_wake(waker) => {}
                    w => *w = Some(waker.clone()),
                }
            }
            return Poll::Pending;
        };
        state.waits.slots.remove(&self.waiter);
        self.armed = false;
        Poll::Ready(outcome)
    }

    /// The delivered outcome, taken as [`Waiting::poll_delivered`] does;
    /// `None` if none has been delivered yet.
    #[cfg(test)]
    pub(super) fn take_delivered(&mut self) -> Option<Outcome<V>> {
        match self.poll_delivered(None) {
            Poll::Ready(outcome) => Some(outcome),
            Poll::Pending => None,
        }
    }

    pub(super) fn leave(&mut self) {
        if !std::mem::take(&mut self.armed) {
            return;
        }
        let shared = self.shared.borrow();
        let releases = {
            let mut state = shared.lock();
            let slot = state.waits.slots.remove(&self.waiter);
            match state.machine.leave(self.entry, self.waiter) {
                Left::Removed => Vec::new(),
                Left::CancelResolver => {
                    if let Some(token) = state.waits.tokens.remove(&self.entry) {
                        token.cancel();
                    }
                    Vec::new()
                }
                // Served just before we left: give the ref straight back.
                Left::NotWaiting => match slot.and_then(|s| s.outcome) {
                    Some(Ok(served)) => state.machine.release(served.handle).unwrap_or_default(),
                    _ => Vec::new(),
                },
            }
        };
        let _ = run_hooks(shared, releases);
    }
}

impl<V: Clone, S: Borrow<Arc<Shared<V>>>> Drop for Waiting<V, S> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Spawns a resolver on the current runtime, detached from every caller (C-5).
pub(crate) fn spawn_resolver<V, F, Fut>(
    shared: Arc<Shared<V>>,
    entry: EntryId,
    ctx: ResolverCtx,
    resolver: F,
) where
    V: Clone + Send + 'static,
    F: FnOnce(ResolverCtx) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resolved<V>, CallError>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut guard = Unfinished {
            shared: shared.clone(),
            entry,
            armed: true,
        };
        // Calling the resolver inside the guarded future catches panics in
        // the call itself as well as in the future (C-14).
        let run = AssertUnwindSafe(async move { resolver(ctx).await })
            .catch_unwind()
            .await;
        let outcome = run.unwrap_or_else(|panic| Err(CallError::Panicked(panic_error(panic))));
        guard.armed = false;
        if let Some(write) = finish(&shared, entry, outcome) {
            // Boxed: only TTL'd results pay for the write's state; every
            // resolver task would otherwise carry it.
            Box::pin(persist(&shared, write)).await;
        }
    });
}

/// If the resolver task is dropped before finishing (runtime shut down),
/// its waiters still get an answer instead of hanging.
struct Unfinished<V: Clone + Send + 'static> {
    shared: Arc<Shared<V>>,
    entry: EntryId,
    armed: bool,
}

impl<V: Clone + Send + 'static> Drop for Unfinished<V> {
    fn drop(&mut self) {
        if self.armed && !self.shared.strands_resolvers() {
            // A failed outcome is never persisted (T-3): nothing to write.
            let none = finish(&self.shared, self.entry, Err(CallError::Cancelled));
            debug_assert!(none.is_none(), "a failure is never persisted (T-3)");
        }
    }
}

/// Applies a resolver's outcome: wakes the waiters and runs hooks outside
/// the lock. Returns the TTL write to make (T-3, T-4), if any: the waiters
/// are answered first, so a slow store delays no caller.
#[must_use = "the TTL write must be made (T-4)"]
pub(super) fn finish<V: Clone + Send + 'static>(
    shared: &Arc<Shared<V>>,
    entry: EntryId,
    outcome: Result<Resolved<V>, CallError>,
) -> Option<crate::ttl::PreparedWrite> {
    let mut wake = Vec::new();
    let (releases, persist, index) = {
        let mut state = shared.lock();
        let completion = match state.machine.complete(entry, outcome) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(target: "cache_core::facade", "completion refused: {e}");
                return None;
            }
        };
        state.waits.tokens.remove(&entry);
        let mut releases = completion.releases;
        wake.reserve_exact(completion.served.len());
        for (waiter, result) in completion.served {
            let undelivered = state.waits.deliver(waiter, result, &mut wake);
            // Nobody is listening any more: the ref goes straight back.
            if let Some(Ok(served)) = undelivered {
                releases.extend(state.machine.release(served.handle).unwrap_or_default());
            }
        }
        for tx in state
            .waits
            .settle
            .remove(&completion.settled)
            .unwrap_or_default()
        {
            let _ = tx.send(());
        }
        // The indexes this completion left, for a tool comparing two runs
        // (`cache-sim diff`); read only when a subscriber asks for them.
        let index = tracing::enabled!(target: "cache_core::completion", tracing::Level::DEBUG)
            .then(|| state.machine.index_lines().join("\n"));
        (releases, completion.persist, index)
    };
    // Woken once the lock is released: a woken waiter on another thread
    // then finds the lock free to take its outcome.
    for w in wake {
        w.wake();
    }
    // Sent after the lock is released, as spans are (S-5).
    if let Some(index) = index {
        tracing::debug!(target: "cache_core::completion", entry = %entry, index = index.as_str());
    }
    let _ = run_hooks(shared, releases);
    persist
}

/// T-4: makes a TTL write on the cache's executor, within the store
/// deadline. A failure (a late answer included) leaves the result
/// session-scoped (T-2); a late write may still land afterwards, which
/// T-4's compare-and-upsert makes as safe as any other racing writer.
async fn persist<V>(shared: &Shared<V>, write: crate::ttl::PreparedWrite) {
    let Some(store) = shared.store().cloned() else {
        return;
    };
    let answer =
        super::executor::run_store(shared.executor(), shared.store_deadline(), move || {
            store.compare_and_upsert(&write.call_key, &write.row, write.compare.as_deref())
        })
        .await;
    match answer {
        Ok(true) => {}
        Ok(false) => shared.metrics().ttl_write_lost(),
        Err(e) => {
            shared.metrics().ttl_store_failure();
            tracing::warn!(target: "cache_core::ttl", "TTL write failed, result stays session-scoped (T-2): {e}");
        }
    }
}

/// C-14: a panic's payload as the error every waiter gets; a
/// [`ResolverError`] payload keeps its identity.
fn panic_error(panic: Box<dyn std::any::Any + Send>) -> ResolverError {
    let panic = match panic.downcast::<ResolverError>() {
        Ok(e) => return *e,
        Err(other) => other,
    };
    if let Some(s) = panic.downcast_ref::<&str>() {
        ResolverError::msg(*s)
    } else if let Some(s) = panic.downcast_ref::<String>() {
        ResolverError::msg(s.clone())
    } else {
        ResolverError::msg("non-string panic payload")
    }
}
