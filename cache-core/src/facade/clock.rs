//! Injected time (T-6). The crate reads the operating system's clock in
//! one place only, [`SystemClock`], the default of a service's cache; a
//! simulation injects a [`ManualClock`] (or its own [`Clock`]) instead, so
//! nothing it can reach reads OS time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of "now", in milliseconds since the Unix epoch.
///
/// A service passes a wall clock; a simulation passes simulated time (with
/// jumps); tests pass a [`ManualClock`].
pub trait Clock: Send + Sync {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The wall clock: `std::time::SystemTime`, in milliseconds since the Unix
/// epoch. The default clock of [`Cache::builder`](super::Cache::builder).
///
/// The only place the crate reads OS time. A simulation must not use it (its
/// traces would depend on when it ran); it injects a [`ManualClock`].
/// A wall clock can step backwards (NTP); TTL decisions are judged on the
/// highest reading seen (T-7), so a step back never revives an expired row.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        // Before the epoch (a badly set clock) reads as negative time rather
        // than failing: TTL arithmetic saturates, and T-7 keeps the mark.
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(after) => ms(after),
            Err(before) => -ms(before.duration()),
        }
    }
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

    /// The system clock reads the wall clock: after 2020 and within a few
    /// seconds of `SystemTime::now()` read here.
    #[test]
    fn system_clock_reads_wall_time() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let now = SystemClock.now_ms();
        assert!(now >= before, "{now} < {before}");
        assert!(now - before < 5_000, "{now} is far from {before}");
        assert!(now > 1_577_836_800_000, "{now} is before 2020");
    }

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
