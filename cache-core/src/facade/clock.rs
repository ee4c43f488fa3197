//! Injected time (T-6): the crate never reads the system clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A source of "now", in milliseconds since the Unix epoch.
///
/// A service passes a wall clock; a simulation passes simulated time (with
/// jumps); tests pass a [`ManualClock`].
pub trait Clock: Send + Sync {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// A clock that only moves when told to. Clones share one time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(now_ms)))
    }
    /// Sets the time (backwards jumps allowed: simulations inject them).
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    /// Moves the time forward (or back, with a negative delta).
    pub fn advance(&self, delta_ms: i64) {
        self.0.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The cache's view of time for TTL decisions (T-7): the highest reading its
/// clock has given so far. A clock that jumps backwards (an NTP step, a
/// simulated fault) would otherwise make an expired TTL row look live again
/// and hand out a result past its expiry; judged on the high-water mark, a
/// row that has expired once stays expired.
pub(crate) struct HighWaterClock {
    clock: std::sync::Arc<dyn Clock>,
    high: AtomicI64,
}

impl HighWaterClock {
    /// Wraps `clock`; the mark starts at its first reading.
    pub(crate) fn new(clock: std::sync::Arc<dyn Clock>) -> Self {
        Self {
            clock,
            high: AtomicI64::new(i64::MIN),
        }
    }

    /// The highest reading so far, this one included.
    pub(crate) fn now_ms(&self) -> i64 {
        let now = self.clock.now_ms();
        self.high.fetch_max(now, Ordering::SeqCst).max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t7_high_water_never_moves_back() {
        let clock = ManualClock::new(1_000);
        let hw = HighWaterClock::new(std::sync::Arc::new(clock.clone()));
        assert_eq!(hw.now_ms(), 1_000);
        clock.advance(500);
        assert_eq!(hw.now_ms(), 1_500);
        // A backwards jump: TTL decisions keep the highest reading.
        clock.advance(-700);
        assert_eq!(hw.now_ms(), 1_500);
        // Forward again past the mark: the mark follows.
        clock.advance(900);
        assert_eq!(hw.now_ms(), 1_700);
    }
}
