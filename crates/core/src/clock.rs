//! Time as a parameter: one `Clock` reads the wall clock; tests pass a `ManualClock`.

use std::{
    fmt,
    ops::{Add, Sub},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// A point in time in whole seconds since the Unix epoch (negative before it): JWT's
/// `NumericDate`, and what the store keeps. Token times have one-second resolution.
/// Arithmetic with a [`Duration`] saturates instead of overflowing.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixTime(i64);

impl UnixTime {
    /// The epoch.
    pub const EPOCH: Self = Self(0);
    /// Before every other time.
    pub const MIN: Self = Self(i64::MIN);

    /// The time `secs` seconds after the epoch.
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs)
    }

    /// Seconds since the epoch.
    pub const fn as_secs(self) -> i64 {
        self.0
    }

    /// The whole second `at` falls in.
    pub fn of(at: SystemTime) -> Self {
        Self(unix_seconds(at))
    }

    /// As a `SystemTime` (saturating).
    pub fn to_system_time(self) -> SystemTime {
        from_unix_seconds(self.0)
    }

    /// `d` later (saturating).
    pub fn saturating_add(self, d: Duration) -> Self {
        self + d
    }

    /// `d` earlier (saturating).
    pub fn saturating_sub(self, d: Duration) -> Self {
        self - d
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: Self) -> Duration {
        Duration::from_secs(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl Add<Duration> for UnixTime {
    type Output = Self;
    fn add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(whole_secs(d)))
    }
}

impl Sub<Duration> for UnixTime {
    type Output = Self;
    fn sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(whole_secs(d)))
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A source of the current time. Pure functions take `now`; only the edges read a `Clock`.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// The current wall-clock time, in the whole seconds tokens and the store use.
    fn unix_now(&self) -> UnixTime {
        UnixTime::of(self.now())
    }

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
    fn unix_time_arithmetic_saturates() {
        let t = UnixTime::from_secs(100);
        assert_eq!(t + Duration::from_secs(5), UnixTime::from_secs(105));
        assert_eq!(t - Duration::from_secs(200), UnixTime::from_secs(-100));
        assert_eq!(
            UnixTime::from_secs(i64::MAX - 1) + Duration::MAX,
            UnixTime::from_secs(i64::MAX)
        );
        assert_eq!(UnixTime::MIN - Duration::from_secs(1), UnixTime::MIN);
        assert_eq!(t.since(UnixTime::from_secs(40)), Duration::from_secs(60));
        assert_eq!(t.since(UnixTime::from_secs(400)), Duration::ZERO);
        assert_eq!(serde_json::to_string(&t).unwrap(), "100");
    }

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
