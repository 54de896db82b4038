//! What a verifier holds between requests: the key set, the revocation state, how fresh each
//! is, the verified-token cache, and the counters its health reports.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use tokenmint_core::{
    clock::Clock,
    jose::{KeySet, ParsedJwks},
    revocation::{Blocklist, Caps, Freshness},
};

/// A key set as the issuer sent it: the keys this build can use, and the issuer's version.
pub(crate) struct IssuerKeys {
    pub(crate) parsed: ParsedJwks,
    pub(crate) version: String,
}

/// The verifier's state, shared by its handles and its source's tasks.
pub(crate) struct State {
    keys: ArcSwap<KeySet>,
    /// The issuer's version of the key set held (what its heartbeats name): not the version
    /// of `keys`, which holds only the keys this build can use.
    issuer_version: ArcSwap<String>,
    keys_loaded: std::sync::atomic::AtomicBool,
    pub(crate) keys_fresh: Freshness,
    pub(crate) blocklist: Blocklist,
    pub(crate) revocations_fresh: Freshness,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) stats: Stats,
    /// How long a polled source waits between fetches, milliseconds (0: a watched source).
    poll_interval_ms: AtomicU64,
}

/// Counters for health and tests.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) key_fetches: AtomicU64,
    pub(crate) key_sets: AtomicU64,
    pub(crate) key_polls: AtomicU64,
    pub(crate) key_polls_unchanged: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) resumes: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    /// The last issuer `as_of` seen in a revocation heartbeat, Unix milliseconds (0: none).
    pub(crate) revocations_as_of_ms: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
}

impl Stats {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_error(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl State {
    pub(crate) fn new(clock: Arc<dyn Clock>, leeway: Duration) -> Self {
        Self {
            keys: ArcSwap::from_pointee(KeySet::new(Vec::new())),
            issuer_version: ArcSwap::default(),
            keys_loaded: false.into(),
            keys_fresh: Freshness::default(),
            // Caps and the longest lifetime only matter to an issuer taking revocations.
            blocklist: Blocklist::new(Caps::default(), leeway, Duration::from_secs(24 * 3600)),
            revocations_fresh: Freshness::default(),
            clock,
            stats: Stats::default(),
            poll_interval_ms: AtomicU64::new(0),
        }
    }

    /// The key set in force.
    pub(crate) fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    /// Whether a key set has arrived.
    pub(crate) fn keys_loaded(&self) -> bool {
        self.keys_loaded.load(Ordering::Acquire)
    }

    /// Takes a key set from the issuer and marks the keys fresh; a set with no key this build
    /// can use is refused and the held one kept.
    pub(crate) fn set_keys(&self, keys: IssuerKeys) -> Result<(), String> {
        let IssuerKeys { parsed, version } = keys;
        for (kid, reason) in &parsed.skipped {
            tracing::warn!(kid = %kid.escape_debug(), reason = %reason, "key set: key skipped");
        }
        if parsed.keys.published().is_empty() {
            return Err(format!(
                "the issuer's key set (version {}) has no key this build can use",
                version.escape_debug()
            ));
        }
        if self.keys.load().version() != parsed.keys.version() {
            let (version, keys) = (parsed.keys.version(), parsed.keys.published().len());
            tracing::info!(version, keys, "key set updated");
            Stats::count(&self.stats.key_sets);
        }
        self.keys.store(Arc::new(parsed.keys));
        self.issuer_version.store(Arc::new(version));
        self.keys_loaded.store(true, Ordering::Release);
        self.mark_keys_fresh();
        Ok(())
    }

    /// Whether the issuer's `version` is the one held (a heartbeat that confirms it).
    pub(crate) fn holds_version(&self, version: &str) -> bool {
        self.keys_loaded() && self.issuer_version.load().as_str() == version
    }

    /// A polled source's interval (it sends no heartbeat, so staleness is measured past it).
    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_poll_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.poll_interval_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn mark_keys_fresh(&self) {
        self.keys_fresh.mark(self.clock.monotonic());
    }

    pub(crate) fn mark_revocations_fresh(&self) {
        self.revocations_fresh.mark(self.clock.monotonic());
    }
}

#[cfg(test)]
mod tests {
    use tokenmint_core::{
        clock::SystemClock,
        crypto::{Algorithm, SigningKey},
        jose::{self, KeyId, PublishedKey},
    };

    use super::*;

    /// An issuer's JWK Set with one usable key and, if `extra`, one of a type this build skips.
    fn issuer_set(extra: bool) -> String {
        let public = SigningKey::generate(Algorithm::Es256)
            .unwrap()
            .0
            .public_key();
        let key = jose::jwk(&PublishedKey {
            kid: KeyId::of(&public),
            algorithm: Algorithm::Es256,
            public,
            low_s_only: true,
        });
        let mut keys = vec![serde_json::to_value(key).unwrap()];
        if extra {
            keys.push(
                serde_json::json!({"kty": "AKP", "alg": "ML-DSA-44", "kid": "pq", "pub": "AA"}),
            );
        }
        serde_json::json!({ "keys": keys }).to_string()
    }

    #[test]
    fn heartbeats_are_checked_against_the_issuers_version_not_ours() {
        let state = State::new(Arc::new(SystemClock), Duration::from_secs(30));
        let parsed = jose::parse_jwks(&issuer_set(true)).unwrap();
        assert_eq!(parsed.skipped.len(), 1);
        let ours = parsed.keys.version().to_owned();
        state
            .set_keys(IssuerKeys {
                parsed,
                version: "issuer-v1".into(),
            })
            .unwrap();
        // The issuer's heartbeat names its own version of the whole set.
        assert!(state.holds_version("issuer-v1"));
        assert!(!state.holds_version(&ours));
    }

    #[test]
    fn a_set_with_no_usable_key_is_refused_and_the_held_one_kept() {
        let state = State::new(Arc::new(SystemClock), Duration::from_secs(30));
        let good = jose::parse_jwks(&issuer_set(false)).unwrap();
        let held = good.keys.version().to_owned();
        state
            .set_keys(IssuerKeys {
                parsed: good,
                version: "v1".into(),
            })
            .unwrap();
        let useless =
            jose::parse_jwks(r#"{"keys":[{"kty":"AKP","alg":"ML-DSA-44","kid":"pq","pub":"AA"}]}"#)
                .unwrap();
        let refused = state.set_keys(IssuerKeys {
            parsed: useless,
            version: "v2".into(),
        });
        assert!(refused.unwrap_err().contains("no key this build can use"));
        assert_eq!(state.keys().version(), held);
        assert!(state.holds_version("v1"));
    }
}
