//! Reconnect delays: exponential with full jitter, so a fleet of verifiers that lost the issuer
//! together does not come back together.

use std::time::Duration;

/// Exponential backoff with full jitter between `min` and `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay: uniformly in [min, min·2ⁿ] capped at `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let spread = ceiling.saturating_sub(self.min);
        self.min + spread.mul_f64(jitter())
    }

    /// Back to the shortest delay (after a stream that got current).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A number in [0, 1) from the stack's random source (a failure only loses the jitter).
fn jitter() -> f64 {
    tokenmint_core::crypto::random_bytes::<4>()
        .map(|b| f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0))
        .unwrap_or(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_within_bounds_and_reset() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut backoff = Backoff::new(min, max);
        let delays: Vec<_> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| *d >= min && *d <= max), "{delays:?}");
        assert_eq!(delays[0], min, "the first ceiling is the minimum");
        assert!(delays[6..].iter().any(|d| *d > min * 2), "{delays:?}");
        backoff.reset();
        assert_eq!(backoff.next_delay(), min);
    }
}
