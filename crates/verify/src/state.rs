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

/// The verifier's state, shared by its handles and its source's tasks.
pub(crate) struct State {
    keys: ArcSwap<KeySet>,
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

    /// Takes a key set from the issuer and marks the keys fresh.
    pub(crate) fn set_keys(&self, parsed: ParsedJwks) {
        for (kid, reason) in &parsed.skipped {
            tracing::warn!(kid = %kid.escape_debug(), reason = %reason, "key set: key skipped");
        }
        if self.keys.load().version() != parsed.keys.version() {
            tracing::info!(
                version = parsed.keys.version(),
                keys = parsed.keys.published().len(),
                "key set updated"
            );
            Stats::count(&self.stats.key_sets);
        }
        self.keys.store(Arc::new(parsed.keys));
        self.keys_loaded.store(true, Ordering::Release);
        self.mark_keys_fresh();
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

    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub(crate) fn mark_revocations_fresh(&self) {
        self.revocations_fresh.mark(self.clock.monotonic());
    }
}
