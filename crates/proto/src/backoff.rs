//! Retry delays for the libraries (feature `channel`): exponential with full jitter, so a fleet
//! that lost the issuer together does not come back together.

use std::{
    hash::{BuildHasher as _, Hasher as _},
    time::Duration,
};

/// Exponential backoff with full jitter between `min` and `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays from `min`, growing to at most `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay: uniformly in `[min, min·2ⁿ]`, capped at `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let spread = ceiling.saturating_sub(self.min);
        self.min + spread.mul_f64(unit())
    }

    /// Back to the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A number in `[0, 1)` for jitter: not for secrets (std's per-process random hash keys).
pub fn unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // The top 53 bits as a fraction: exactly representable, below 1.
    (bits >> 11) as f64 / (1u64 << 53) as f64
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

    #[test]
    fn jitter_is_spread_over_the_unit_interval() {
        let draws: Vec<f64> = (0..1000).map(|_| unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.iter().any(|u| *u < 0.1) && draws.iter().any(|u| *u > 0.9));
    }
}
