//! What every caller of one flight shares (L-1, L-2): its outcome, set
//! once; its cancellation, set when its last waiter leaves or at close;
//! and one list of the wake-ups to make when either is set.
//!
//! A burst of callers of one cold key is the loader's everyday case, so a
//! waiter's cost is kept to what it must do: read the outcome, and if it
//! is not there yet, put its waker in the list under a lock and read it
//! again. The answer sets the outcome, takes the list under the same lock
//! and wakes it outside: a waiter either sees the outcome or is in the
//! list the answer takes, so no wake-up is lost. (`tokio::sync::Notify`
//! did the same with an intrusive list whose every waiter also locked
//! to leave it and walked a state machine on each poll; in a burst of 100
//! callers that was a quarter of each caller's instructions.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

/// A flight's shared outcome, cancellation and wake-ups.
pub(super) struct FlightCell<O> {
    outcome: OnceLock<O>,
    cancelled: AtomicBool,
    wakers: Mutex<Wakers>,
}

/// The wakers of the waiters that found nothing ready. `round` counts the
/// times the list was taken, so a waiter knows whether the slot it filled
/// is still in it.
#[derive(Default)]
struct Wakers {
    round: u64,
    list: Vec<Option<Waker>>,
}

impl<O: Clone> FlightCell<O> {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            outcome: OnceLock::new(),
            cancelled: AtomicBool::new(false),
            wakers: Mutex::new(Wakers::default()),
        })
    }

    /// Answers every waiter; a second answer (a flight settling after
    /// close answered it) is dropped.
    pub(super) fn answer(&self, outcome: O) {
        if self.outcome.set(outcome).is_ok() {
            self.wake_all();
        }
    }

    /// Cancels the flight: its loader stops at its next poll (L-2).
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    /// Whether the flight has been cancelled.
    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// The outcome, once the flight has one (each waiter gets a copy).
    pub(super) fn outcome(&self) -> impl Future<Output = O> + '_ {
        Until {
            cell: self,
            ready: |c: &Self| c.outcome.get().cloned(),
            slot: None,
        }
    }

    /// Returns once the flight is cancelled.
    pub(super) fn cancelled(&self) -> impl Future<Output = ()> + '_ {
        Until {
            cell: self,
            ready: |c: &Self| c.is_cancelled().then_some(()),
            slot: None,
        }
    }
}

impl<O> FlightCell<O> {
    fn lock(&self) -> MutexGuard<'_, Wakers> {
        // Nothing under this lock panics: a poisoned list is still whole.
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every waiter in the list, outside the lock (a woken waiter on
    /// another thread then finds it free).
    fn wake_all(&self) {
        let list = {
            let mut wakers = self.lock();
            wakers.round += 1;
            std::mem::take(&mut wakers.list)
        };
        for waker in list.into_iter().flatten() {
            waker.wake();
        }
    }
}

/// Waits until `ready` gives something. `slot` is where this waiter's waker
/// sits in the list (the round and the index), once it has put one there.
struct Until<'a, O, F> {
    cell: &'a FlightCell<O>,
    ready: F,
    slot: Option<(u64, usize)>,
}

impl<O, F, T> Future for Until<'_, O, F>
where
    F: Fn(&FlightCell<O>) -> Option<T> + Unpin,
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        if let Some(got) = (this.ready)(this.cell) {
            this.slot = None;
            return Poll::Ready(got);
        }
        let mut wakers = this.cell.lock();
        // Read again under the lock: whatever sets the outcome or the flag
        // takes the list under it afterwards, so either this read sees it
        // or the waker put below is taken and woken.
        if let Some(got) = (this.ready)(this.cell) {
            drop(wakers);
            this.slot = None;
            return Poll::Ready(got);
        }
        let waker = cx.waker();
        match this.slot {
            Some((round, at)) if round == wakers.round => {
                let held = &mut wakers.list[at];
                if !held.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *held = Some(waker.clone());
                }
            }
            _ => {
                this.slot = Some((wakers.round, wakers.list.len()));
                wakers.list.push(Some(waker.clone()));
            }
        }
        Poll::Pending
    }
}

impl<O, F> Drop for Until<'_, O, F> {
    /// A waiter that leaves before it is ready takes its waker out, so the
    /// list does not keep its task alive until the flight ends.
    fn drop(&mut self) {
        if let Some((round, at)) = self.slot {
            let mut wakers = self.cell.lock();
            if wakers.round == round {
                wakers.list[at] = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// Counts its wake-ups.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    fn poll<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn l1_every_waiter_is_woken_once_and_gets_the_outcome() {
        let cell = FlightCell::<u32>::new();
        let (counts, wakers): (Vec<_>, Vec<_>) = (0..3).map(|_| counter()).unzip();
        let mut waits: Vec<_> = (0..3).map(|_| Box::pin(cell.outcome())).collect();
        for (w, waker) in waits.iter_mut().zip(&wakers) {
            assert!(poll(w, waker).is_pending());
            // A second poll with the same waker keeps one slot.
            assert!(poll(w, waker).is_pending());
        }
        assert_eq!(cell.lock().list.len(), 3);
        cell.answer(7);
        cell.answer(8); // a second answer is dropped
        for ((w, waker), count) in waits.iter_mut().zip(&wakers).zip(&counts) {
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
            assert_eq!(poll(w, waker), Poll::Ready(7));
        }
        assert!(cell.lock().list.is_empty());
    }

    #[test]
    fn l2_a_waiter_that_leaves_takes_its_waker_out() {
        let cell = FlightCell::<u32>::new();
        let (count, waker) = counter();
        let mut wait = Box::pin(cell.outcome());
        assert!(poll(&mut wait, &waker).is_pending());
        drop(wait);
        assert!(cell.lock().list.iter().all(Option::is_none));
        cell.answer(1);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            0,
            "a waiter gone is not woken"
        );
        // This test's own two: the list kept no clone.
        assert_eq!(Arc::strong_count(&count), 2, "its waker is not kept");
    }

    #[test]
    fn l2_cancel_wakes_the_flight_and_its_waiters_wait_on() {
        let cell = FlightCell::<u32>::new();
        let (flight_count, flight_waker) = counter();
        let (waiter_count, waiter_waker) = counter();
        let mut flight = Box::pin(cell.cancelled());
        let mut wait = Box::pin(cell.outcome());
        assert!(poll(&mut flight, &flight_waker).is_pending());
        assert!(poll(&mut wait, &waiter_waker).is_pending());
        cell.cancel();
        assert!(cell.is_cancelled());
        assert_eq!(flight_count.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut flight, &flight_waker), Poll::Ready(()));
        // The waiter was woken too; with no outcome it registers again, in
        // the new round, and the answer that follows wakes it.
        assert_eq!(waiter_count.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut wait, &waiter_waker).is_pending());
        cell.answer(5);
        assert_eq!(waiter_count.0.load(Ordering::SeqCst), 2);
        assert_eq!(poll(&mut wait, &waiter_waker), Poll::Ready(5));
    }

    /// The race the read under the lock closes: the answer lands after a
    /// waiter's first read found nothing and before it takes the lock, so
    /// the answer's wake-up found an empty list.
    #[test]
    fn l1_an_answer_between_the_first_read_and_the_lock_is_not_lost() {
        let cell = FlightCell::<u32>::new();
        let reads = AtomicUsize::new(0);
        let mut wait = Until {
            cell: &*cell,
            ready: |c: &FlightCell<u32>| {
                if reads.fetch_add(1, Ordering::SeqCst) == 0 {
                    c.answer(9); // lands right after this read
                    return None;
                }
                c.outcome.get().copied()
            },
            slot: None,
        };
        let (_count, waker) = counter();
        assert_eq!(poll(&mut wait, &waker), Poll::Ready(9));
    }

    #[test]
    fn a_new_waker_replaces_the_old_one_in_its_slot() {
        let cell = FlightCell::<u32>::new();
        let (first, first_waker) = counter();
        let (second, second_waker) = counter();
        let mut wait = Box::pin(cell.outcome());
        assert!(poll(&mut wait, &first_waker).is_pending());
        assert!(poll(&mut wait, &second_waker).is_pending());
        assert_eq!(cell.lock().list.len(), 1);
        cell.answer(3);
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }
}
