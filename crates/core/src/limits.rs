//! Per-client issuance rate limits: a token bucket per client (governor), off unless
//! configured, globally (`limits.issue_per_second`) or per client
//! (`limits.issue_per_client`). Keys are authenticated client ids only, so the set of
//! buckets is bounded by the registry, never by what callers send. And the fixed size
//! limits of a request (SPEC §11).

use std::{collections::BTreeMap, collections::HashMap, num::NonZeroU32, time::Duration};

use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};

use crate::client::ClientId;

/// The largest gRPC request message accepted (SPEC §11); larger ones get `OUT_OF_RANGE`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The largest HTTP request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The issuance limits.
pub struct IssueLimits {
    default: Option<DefaultKeyedRateLimiter<ClientId>>,
    /// A client's own bucket (`None`: that client is not limited).
    per_client: HashMap<String, Option<DefaultDirectRateLimiter>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for IssueLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssueLimits")
            .field("default", &self.default.is_some())
            .field("per_client", &self.per_client.len())
            .finish()
    }
}

impl Default for IssueLimits {
    fn default() -> Self {
        Self::new(0, 0, &BTreeMap::new())
    }
}

fn quota(per_second: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    Some(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate)))
}

impl IssueLimits {
    /// `per_second` for every client (0: none), `burst` tokens at once, and per-client rates
    /// in place of the default (0: that client is not limited).
    pub fn new(per_second: u32, burst: u32, per_client: &BTreeMap<String, u32>) -> Self {
        Self {
            default: quota(per_second, burst).map(RateLimiter::keyed),
            per_client: per_client
                .iter()
                .map(|(id, rate)| (id.clone(), quota(*rate, burst).map(RateLimiter::direct)))
                .collect(),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one token from `client`'s bucket, or says how long until one is there.
    pub fn check(&self, client: &ClientId) -> Result<(), Duration> {
        let refused = match self.per_client.get(client.as_str()) {
            Some(None) => return Ok(()),
            Some(Some(own)) => own.check().err(),
            None => match &self.default {
                None => return Ok(()),
                Some(shared) => shared.check_key(client).err(),
            },
        };
        match refused {
            None => Ok(()),
            Some(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::try_new(s).unwrap()
    }

    #[test]
    fn off_unless_configured() {
        let limits = IssueLimits::default();
        for _ in 0..10_000 {
            assert!(limits.check(&id("a")).is_ok());
        }
    }

    #[test]
    fn each_client_has_its_own_bucket_and_overrides_win() {
        let per_client = BTreeMap::from([("fast".to_owned(), 0), ("slow".to_owned(), 1)]);
        let limits = IssueLimits::new(5, 5, &per_client);
        // The default: a burst of 5 per client, each client separately.
        for _ in 0..5 {
            assert!(limits.check(&id("a")).is_ok());
        }
        let retry = limits.check(&id("a")).unwrap_err();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_millis(200),
            "{retry:?}"
        );
        assert!(limits.check(&id("b")).is_ok());
        // An override of 0: unlimited; an override of 1/s with the burst of 5.
        for _ in 0..1_000 {
            assert!(limits.check(&id("fast")).is_ok());
        }
        for _ in 0..5 {
            assert!(limits.check(&id("slow")).is_ok());
        }
        let retry = limits.check(&id("slow")).unwrap_err();
        assert!(retry > Duration::from_millis(200), "{retry:?}");
    }
}
