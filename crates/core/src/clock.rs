//! Time as a parameter: one `Clock` reads the wall clock; tests pass a `ManualClock`.

use std::{
    sync::{Mutex, OnceLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// A source of the current time. Pure functions take `now`; only the edges read a `Clock`.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// Time elapsed on a monotonic clock since an arbitrary origin: it never jumps, whatever
    /// the wall clock does.
    fn monotonic(&self) -> Duration;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// A clock that moves only when told to, for tests. `advance` moves both the wall clock and
/// the monotonic clock (time passes); `set` moves only the wall clock (someone changed it).
#[derive(Debug)]
pub struct ManualClock(Mutex<(SystemTime, Duration)>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: SystemTime) -> Self {
        Self(Mutex::new((at, Duration::ZERO)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (SystemTime, Duration)> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lets `by` pass.
    pub fn advance(&self, by: Duration) {
        let mut clock = self.lock();
        clock.0 += by;
        clock.1 += by;
    }

    /// Sets the wall clock to `at` (a jump; the monotonic clock does not move).
    pub fn set(&self, at: SystemTime) {
        self.lock().0 = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.lock().0
    }

    fn monotonic(&self) -> Duration {
        self.lock().1
    }
}

/// A duration as a count of whole seconds, for arithmetic with times in seconds (saturating
/// at `i64::MAX`).
pub fn whole_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch (negative before it), as JWT `NumericDate` wants.
pub fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => whole_secs(after),
        Err(before) => i64::try_from(before.duration().as_secs())
            .map(|s| -s)
            .unwrap_or(i64::MIN),
    }
}

/// The instant `seconds` after the Unix epoch (saturating).
pub fn from_unix_seconds(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(from_unix_seconds(1_000));
        assert_eq!(unix_seconds(clock.now()), 1_000);
        clock.advance(Duration::from_secs(5));
        assert_eq!(unix_seconds(clock.now()), 1_005);
        assert_eq!(clock.monotonic(), Duration::from_secs(5));
        clock.set(from_unix_seconds(-7));
        assert_eq!(unix_seconds(clock.now()), -7);
        assert_eq!(
            clock.monotonic(),
            Duration::from_secs(5),
            "a jump is not elapsed time"
        );
    }
}
