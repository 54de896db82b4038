//! Optional metrics (feature `metrics`, through the `metrics` facade): outcomes by reason, the
//! key set's age and the revocation feed's lag. Without the feature these do nothing.

use crate::{error::VerifyError, health::Health};

/// Counts one verification's outcome: `tokenmint_verify_outcomes_total{outcome}`.
#[cfg(feature = "metrics")]
pub(crate) fn outcome(error: Option<&VerifyError>) {
    let outcome = error.map_or("accepted", VerifyError::reason);
    metrics::counter!("tokenmint_verify_outcomes_total", "outcome" => outcome).increment(1);
}

/// Sets the gauges from a health reading: `tokenmint_verify_key_set_age_seconds` and
/// `tokenmint_verify_revocation_feed_lag_seconds`.
#[cfg(feature = "metrics")]
pub(crate) fn health(health: &Health) {
    if let Some(age) = health.keys_age {
        metrics::gauge!("tokenmint_verify_key_set_age_seconds").set(age.as_secs_f64());
    }
    if let Some(age) = health.revocations_age {
        metrics::gauge!("tokenmint_verify_revocation_feed_lag_seconds").set(age.as_secs_f64());
    }
    metrics::gauge!("tokenmint_verify_ready").set(if health.is_ready() { 1.0 } else { 0.0 });
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn outcome(_error: Option<&VerifyError>) {}

#[cfg(not(feature = "metrics"))]
pub(crate) fn health(_health: &Health) {}
