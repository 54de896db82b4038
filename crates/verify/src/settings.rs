//! What a verifier's builder fixed, read by the verifier and by its source's tasks.

use std::time::Duration;

/// What the builder fixed.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) issuer: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) leeway: Duration,
    pub(crate) staleness: Duration,
    pub(crate) accept_unbound: bool,
    pub(crate) fail_open: bool,
    pub(crate) refresh_cooldown: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
}
