//! When a token is refreshed: one written rule, a pure function of its lifetime.

use std::time::Duration;

/// How long after its issue a token of lifetime `lifetime` is refreshed:
/// `max(½·L, min(0.8·L, L − 30 s))`, less a jitter of up to `L/20` (`unit` in `[0, 1)` picks
/// where), so a fleet that got its tokens together does not refresh together.
///
/// A 30-second token is refreshed after 15 s (13.5 s at the earliest), never in a loop; a
/// 5-minute one after 4 min; a 1-hour one 12 minutes early (up to 15 with the jitter).
pub fn refresh_after(lifetime: Duration, unit: f64) -> Duration {
    let half = lifetime / 2;
    let late = lifetime
        .mul_f64(0.8)
        .min(lifetime.saturating_sub(Duration::from_secs(30)));
    let jitter = (lifetime / 20).mul_f64(unit.clamp(0.0, 1.0));
    half.max(late).saturating_sub(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn the_rule_at_the_lifetimes_the_issue_names() {
        let at = |l: Duration| refresh_after(l, 0.0);
        assert_eq!(at(Duration::from_secs(30)), Duration::from_secs(15));
        assert_eq!(at(5 * MIN), 4 * MIN);
        assert_eq!(
            at(60 * MIN),
            48 * MIN,
            "a 1-hour token refreshes 12 minutes early"
        );
        assert_eq!(at(Duration::from_secs(60)), Duration::from_secs(30));
        assert_eq!(at(Duration::from_secs(100)), Duration::from_secs(70));
        assert_eq!(at(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn jitter_only_brings_the_refresh_forward_by_at_most_a_twentieth() {
        for secs in [1, 30, 299, 3600, 86_400] {
            let lifetime = Duration::from_secs(secs);
            let rule = refresh_after(lifetime, 0.0);
            for unit in [0.0, 0.25, 0.999, 1.0, -3.0, 7.0] {
                let at = refresh_after(lifetime, unit);
                assert!(
                    at <= rule && at + lifetime / 20 >= rule,
                    "{secs} s, {unit}: {at:?}"
                );
                assert!(at >= lifetime * 9 / 20, "never before 45% of the lifetime");
            }
        }
    }
}
