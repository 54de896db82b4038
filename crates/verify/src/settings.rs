//! What a verifier's builder fixed, read by the verifier and by its source's tasks.

use std::time::Duration;

use crate::error::BuildError;

/// What the builder fixed.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) issuer: String,
    pub(crate) audiences: Vec<String>,
    /// The trust domain transaction tokens must be for (`None`: none are accepted).
    pub(crate) trust_domain: Option<String>,
    pub(crate) leeway: Duration,
    pub(crate) staleness: Duration,
    pub(crate) accept_unbound: bool,
    pub(crate) fail_open: bool,
    pub(crate) refresh_cooldown: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
}

impl Settings {
    /// Refuses options the verifier cannot work with: a staleness bound under a second (the
    /// issuer's heartbeat), a reconnect delay under 10 ms (a busy loop), a cooldown shorter than
    /// one fetch may take, a leeway over 5 minutes (the issuer's own ceiling).
    pub(crate) fn check(&self) -> Result<(), BuildError> {
        let refuse = |what: &str| Err(BuildError::Setting(what.to_owned()));
        if self.staleness < Duration::from_secs(1) {
            return refuse("the staleness bound must be at least 1 s (the issuer's heartbeat)");
        }
        if self.reconnect_min < Duration::from_millis(10) || self.reconnect_max < self.reconnect_min
        {
            return refuse(
                "the reconnect backoff must start at 10 ms or more and not end below it",
            );
        }
        if self.refresh_cooldown < self.fetch_timeout {
            return refuse("the refresh cooldown must be at least the fetch timeout (5 s)");
        }
        if self.leeway > Duration::from_secs(300) {
            return refuse("the leeway must be at most 5 minutes");
        }
        Ok(())
    }
}
