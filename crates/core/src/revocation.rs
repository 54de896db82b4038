//! Revocation: the changes that take tokens out of service (a token id, a client cut-off, a
//! disabled client, a revoked key), the never-evicting blocklist that holds them in memory,
//! and the caps on how many may be live. The one home of moka's unbounded cache.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A change to revocation state, as committed to the store and pushed to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A token is revoked until it expires.
    TokenRevoked {
        /// Its `jti`.
        token_id: String,
        /// Unix seconds; the entry is needed until then (plus leeway).
        expires_at: UnixTime,
        /// The client it was issued to, when known (not for a bare `jti`).
        client_id: Option<String>,
        /// Who revoked it: a client id.
        revoked_by: String,
    },
    /// Every token of the client issued at or before the time is revoked.
    ClientCutoff {
        /// The client.
        client_id: String,
        /// Unix seconds.
        issued_at_or_before: UnixTime,
    },
    /// The client is disabled.
    ClientDisabled {
        /// The client.
        client_id: String,
    },
    /// The client is enabled again.
    ClientEnabled {
        /// The client.
        client_id: String,
    },
    /// A signing key is revoked.
    KeyRevoked {
        /// The key id.
        key_id: String,
    },
}

/// A committed change and its place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its sequence number: commit order.
    pub sequence: u64,
    /// Unix seconds when it was committed.
    pub committed_at: UnixTime,
    /// What changed.
    pub change: Change,
}

/// How long revocation state and its log are kept (SPEC §6–7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// The clock-skew leeway.
    pub leeway: Duration,
    /// The longest a token can live.
    pub max_lifetime: Duration,
}

impl Retention {
    /// Until when (Unix seconds) a change's state is needed: a revoked token until it expires
    /// plus leeway; a cut-off until every token issued before it has expired; client and key
    /// changes live on in the client and key records, so not at all.
    pub fn state_until(&self, change: &Change, now: UnixTime) -> UnixTime {
        let leeway = self.leeway;
        match change {
            Change::TokenRevoked { expires_at, .. } => expires_at.saturating_add(leeway),
            Change::ClientCutoff {
                issued_at_or_before,
                ..
            } => issued_at_or_before
                .saturating_add(self.max_lifetime)
                .saturating_add(leeway),
            Change::ClientDisabled { .. }
            | Change::ClientEnabled { .. }
            | Change::KeyRevoked { .. } => now,
        }
    }

    /// Until when the change stays in the log: max lifetime + leeway after its state expires.
    pub fn log_until(&self, change: &Change, now: UnixTime) -> UnixTime {
        self.state_until(change, now)
            .max(now)
            .saturating_add(self.max_lifetime)
            .saturating_add(self.leeway)
    }
}

/// A revoked token as the blocklist holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedToken {
    /// Its `jti`.
    pub token_id: String,
    /// Unix seconds.
    pub expires_at: UnixTime,
    /// The client it was issued to, when known.
    pub client_id: Option<String>,
    /// Who revoked it.
    pub revoked_by: String,
    /// The sequence of the change that revoked it.
    pub sequence: u64,
    /// Unix seconds.
    pub revoked_at: UnixTime,
}

/// A client cut-off in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cutoff {
    /// The client.
    pub client_id: String,
    /// Tokens issued at or before this (Unix seconds) are revoked.
    pub issued_at_or_before: UnixTime,
    /// The sequence of the change.
    pub sequence: u64,
}

/// The revocation state in force, as loaded from the store or sent in a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Revoked tokens not yet expired.
    pub tokens: Vec<RevokedToken>,
    /// Cut-offs that can still matter.
    pub cutoffs: Vec<Cutoff>,
    /// Disabled clients, with the sequence of the change that disabled them (0: configured so).
    pub disabled_clients: Vec<(String, u64)>,
    /// Revoked signing keys, with the sequence of the change.
    pub revoked_keys: Vec<(String, u64)>,
    /// The highest sequence committed.
    pub high_water: u64,
    /// The highest sequence removed from the log: a cursor below it cannot be resumed.
    pub purged_through: u64,
}

/// One token of a chain as the revocation state judges it ([`Blocklist::strikes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link<'a> {
    /// Its `jti`.
    pub token_id: &'a str,
    /// The client it was issued to.
    pub client_id: &'a str,
    /// When.
    pub issued_at: UnixTime,
}

/// What in the revocation state makes a token inactive ([`Blocklist::strikes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Struck {
    /// The token itself is revoked.
    Revoked,
    /// A token it was exchanged from is revoked.
    AncestorRevoked,
    /// A party of its chain is disabled.
    ClientDisabled,
    /// A token of its chain was issued to a client cut off at or after that.
    ClientCutOff,
}

/// The limits on live revocations (SPEC §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Live revoked tokens in all (admins may use all of it; clients 90%).
    pub max_live: u64,
    /// Live revocations a client may make of its own tokens.
    pub per_client_max_live: u64,
    /// Revocations a client may make of its own tokens per second.
    pub per_client_per_second: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            max_live: 1_000_000,
            per_client_max_live: 10_000,
            per_client_per_second: 10,
        }
    }
}

/// Why a revocation is refused before anything is stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapError {
    /// The blocklist is at its cap (for clients: at the 90% that leaves the admins' reserve).
    #[error("the blocklist holds {live} live revocations, its cap for this caller is {cap}")]
    Full {
        /// Live entries.
        live: u64,
        /// The cap that applies.
        cap: u64,
    },
    /// The client has as many live self-revocations as it may.
    #[error("client {client_id} has {live} live revocations of its own tokens, its cap is {cap}")]
    ClientFull {
        /// The client.
        client_id: String,
        /// Its live self-revocations.
        live: u64,
        /// The cap.
        cap: u64,
    },
    /// The client revokes faster than its rate.
    #[error("client {client_id} revokes faster than {per_second}/s; retry in {retry_after:?}")]
    Rate {
        /// The client.
        client_id: String,
        /// Its rate.
        per_second: u32,
        /// When to retry.
        retry_after: Duration,
    },
}

/// What the blocklist keeps per token: who revoked it, and how long the entry must live.
#[derive(Clone, Debug)]
struct Entry {
    self_revoked_by: Option<Arc<str>>,
    ttl: Duration,
}

struct EntryExpiry;

impl moka::Expiry<Arc<str>, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The blocklist: revoked token ids until their tokens expire (plus leeway), client cut-offs,
/// disabled clients and revoked keys. The token map is moka **without** a capacity bound — a
/// bounded cache's admission policy could silently drop a revocation; entries leave only by
/// expiry, when the token they block can no longer be valid anyway.
pub struct Blocklist {
    tokens: moka::sync::Cache<Arc<str>, Entry>,
    // Read on every request, changed by rare admin events: copy-on-write behind a swap, so
    // readers on all cores never contend.
    cutoffs: ArcSwap<HashMap<String, UnixTime>>,
    disabled: ArcSwap<HashSet<String>>,
    revoked_keys: ArcSwap<HashSet<String>>,
    self_revocations: Arc<Mutex<HashMap<Arc<str>, u64>>>,
    live: Arc<AtomicU64>,
    rate: DefaultKeyedRateLimiter<String>,
    caps: Caps,
    leeway: Duration,
    max_lifetime: Duration,
    loaded: AtomicBool,
    applied_through: AtomicU64,
}

impl std::fmt::Debug for Blocklist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocklist")
            .field("live", &self.live.load(Ordering::Relaxed))
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Blocklist {
    /// An empty blocklist; `leeway` and `max_lifetime` decide how long entries live.
    pub fn new(caps: Caps, leeway: Duration, max_lifetime: Duration) -> Self {
        let self_revocations: Arc<Mutex<HashMap<Arc<str>, u64>>> = Arc::default();
        let live = Arc::new(AtomicU64::new(0));
        let listener_counts = self_revocations.clone();
        let listener_live = live.clone();
        let tokens = moka::sync::Cache::builder()
            .expire_after(EntryExpiry)
            .eviction_listener(move |_key, entry: Entry, cause| {
                if cause == moka::notification::RemovalCause::Replaced {
                    return;
                }
                listener_live.fetch_sub(1, Ordering::Relaxed);
                if let Some(client) = entry.self_revoked_by {
                    let mut counts = lock(&listener_counts);
                    if let Some(count) = counts.get_mut(&client) {
                        *count = count.saturating_sub(1);
                        if *count == 0 {
                            counts.remove(&client);
                        }
                    }
                }
            })
            .build();
        let per_second = NonZeroU32::new(caps.per_client_per_second).unwrap_or(NonZeroU32::MIN);
        Self {
            tokens,
            cutoffs: ArcSwap::default(),
            disabled: ArcSwap::default(),
            revoked_keys: ArcSwap::default(),
            self_revocations,
            live,
            rate: RateLimiter::keyed(Quota::per_second(per_second)),
            caps,
            leeway,
            max_lifetime,
            loaded: AtomicBool::new(false),
            applied_through: AtomicU64::new(0),
        }
    }

    /// Replaces everything with `state` (at start-up, or from a snapshot) and marks the list
    /// loaded. Readers are served throughout and never see a gap: the new state's tokens are
    /// added first, then the ones it no longer holds are removed, so a token revoked before
    /// and after is revoked at every instant of the reload.
    pub fn load(&self, state: &State, now: UnixTime) {
        let kept: HashSet<&str> = state.tokens.iter().map(|t| t.token_id.as_str()).collect();
        for token in &state.tokens {
            self.insert_token(
                &token.token_id,
                token.expires_at,
                token.client_id.as_deref(),
                &token.revoked_by,
                now,
            );
        }
        let gone: Vec<Arc<str>> = self
            .tokens
            .iter()
            .map(|(id, _)| Arc::clone(&*id))
            .filter(|id: &Arc<str>| !kept.contains(&**id))
            .collect();
        for id in gone {
            self.tokens.invalidate(&id);
        }
        self.tokens.run_pending_tasks();
        self.cutoffs.store(Arc::new(
            state
                .cutoffs
                .iter()
                .map(|c| (c.client_id.clone(), c.issued_at_or_before))
                .collect(),
        ));
        self.disabled.store(Arc::new(
            state
                .disabled_clients
                .iter()
                .map(|(c, _)| c.clone())
                .collect(),
        ));
        self.revoked_keys.store(Arc::new(
            state.revoked_keys.iter().map(|(k, _)| k.clone()).collect(),
        ));
        self.applied_through
            .store(state.high_water, Ordering::Release);
        self.loaded.store(true, Ordering::Release);
    }

    /// Whether the state has been loaded (introspection answers `UNAVAILABLE` until it is).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The highest sequence applied.
    pub fn applied_through(&self) -> u64 {
        self.applied_through.load(Ordering::Acquire)
    }

    /// Applies one committed event. Idempotent: applying an event twice changes nothing.
    pub fn apply(&self, event: &Event, now: UnixTime) {
        match &event.change {
            Change::TokenRevoked {
                token_id,
                expires_at,
                client_id,
                revoked_by,
            } => {
                self.insert_token(token_id, *expires_at, client_id.as_deref(), revoked_by, now);
            }
            Change::ClientCutoff {
                client_id,
                issued_at_or_before,
            } => {
                self.cutoffs.rcu(|cutoffs| {
                    let mut cutoffs = HashMap::clone(cutoffs);
                    let entry = cutoffs
                        .entry(client_id.clone())
                        .or_insert(*issued_at_or_before);
                    *entry = (*entry).max(*issued_at_or_before);
                    cutoffs
                });
            }
            Change::ClientDisabled { client_id } => {
                self.disabled.rcu(|disabled| {
                    let mut disabled = HashSet::clone(disabled);
                    disabled.insert(client_id.clone());
                    disabled
                });
            }
            Change::ClientEnabled { client_id } => {
                self.disabled.rcu(|disabled| {
                    let mut disabled = HashSet::clone(disabled);
                    disabled.remove(client_id);
                    disabled
                });
            }
            Change::KeyRevoked { key_id } => {
                self.revoked_keys.rcu(|keys| {
                    let mut keys = HashSet::clone(keys);
                    keys.insert(key_id.clone());
                    keys
                });
            }
        }
        self.applied_through
            .fetch_max(event.sequence, Ordering::AcqRel);
    }

    fn insert_token(
        &self,
        token_id: &str,
        expires_at: UnixTime,
        client_id: Option<&str>,
        revoked_by: &str,
        now: UnixTime,
    ) {
        let key: Arc<str> = Arc::from(token_id);
        if self.tokens.contains_key(&key) {
            return;
        }
        let until = expires_at.saturating_add(self.leeway);
        let ttl = until.since(now).max(Duration::from_secs(1));
        // One shared copy of the client id per client, not one per entry.
        let self_revoked_by = (client_id == Some(revoked_by)).then(|| {
            let mut counts = lock(&self.self_revocations);
            let client = counts
                .get_key_value(revoked_by)
                .map_or_else(|| Arc::from(revoked_by), |(client, _)| client.clone());
            *counts.entry(client.clone()).or_insert(0) += 1;
            client
        });
        self.live.fetch_add(1, Ordering::Relaxed);
        self.tokens.insert(
            key,
            Entry {
                self_revoked_by,
                ttl,
            },
        );
    }

    /// Whether a token is revoked by id.
    pub fn is_token_revoked(&self, token_id: &str) -> bool {
        self.tokens.contains_key(token_id)
    }

    /// The cut-off of a client, if one is in force.
    pub fn cutoff(&self, client_id: &str) -> Option<UnixTime> {
        self.cutoffs.load().get(client_id).copied()
    }

    /// Whether a client is disabled by a revocation event.
    pub fn is_client_disabled(&self, client_id: &str) -> bool {
        self.disabled.load().contains(client_id)
    }

    /// Whether a signing key is revoked.
    pub fn is_key_revoked(&self, key_id: &str) -> bool {
        self.revoked_keys.load().contains(key_id)
    }

    /// What in the revocation state strikes a token, if anything: a token of its chain
    /// (`links`: itself first, then its ancestors) revoked, or cut off with the client it was
    /// issued to (a cut-off at or after its `iat`), or a party of the chain (`parties`:
    /// client, subject, actors) disabled. One event reaches every token exchanged from the
    /// one it names.
    pub fn strikes<'a, 'p>(
        &self,
        links: impl Iterator<Item = Link<'a>> + Clone,
        parties: impl IntoIterator<Item = &'p str>,
    ) -> Option<Struck> {
        let mut chain = links.clone();
        if let Some(own) = chain.next() {
            if self.is_token_revoked(own.token_id) {
                return Some(Struck::Revoked);
            }
            if chain.any(|l| self.is_token_revoked(l.token_id)) {
                return Some(Struck::AncestorRevoked);
            }
        }
        if parties.into_iter().any(|p| self.is_client_disabled(p)) {
            return Some(Struck::ClientDisabled);
        }
        let mut links = links;
        links
            .any(|l| {
                self.cutoff(l.client_id)
                    .is_some_and(|cutoff| l.issued_at <= cutoff)
            })
            .then_some(Struck::ClientCutOff)
    }

    /// Live revoked-token entries (approximate: expired entries leave lazily).
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Checks the caps for a new token revocation by `revoked_by` of a token of `client_id`.
    /// An admin revoking any token has the whole cap; a client revoking its own tokens has
    /// 90% of it, its own cap and its own rate.
    pub fn check_caps(&self, revoked_by: &str, is_admin: bool) -> Result<(), CapError> {
        let live = self.live();
        if is_admin {
            if live >= self.caps.max_live {
                return Err(CapError::Full {
                    live,
                    cap: self.caps.max_live,
                });
            }
            return Ok(());
        }
        let client_cap = self.caps.max_live - self.caps.max_live / 10;
        if live >= client_cap {
            return Err(CapError::Full {
                live,
                cap: client_cap,
            });
        }
        let own = lock(&self.self_revocations)
            .get(revoked_by)
            .copied()
            .unwrap_or(0);
        if own >= self.caps.per_client_max_live {
            return Err(CapError::ClientFull {
                client_id: revoked_by.to_owned(),
                live: own,
                cap: self.caps.per_client_max_live,
            });
        }
        if let Err(not_until) = self.rate.check_key(&revoked_by.to_owned()) {
            let retry_after = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(CapError::Rate {
                client_id: revoked_by.to_owned(),
                per_second: self.caps.per_client_per_second,
                retry_after,
            });
        }
        Ok(())
    }

    /// How long a revocation by bare `jti` must be held: the longest a token can live.
    pub fn bare_token_expiry(&self, now: UnixTime) -> UnixTime {
        now.saturating_add(self.max_lifetime)
    }

    /// Runs moka's pending maintenance (expiry), so counts catch up.
    pub fn run_pending_tasks(&self) {
        self.tokens.run_pending_tasks();
    }
}

/// How fresh this process's view of the store is: the monotonic time of the last successful
/// catch-up. Past `max_staleness` introspection and watches answer `UNAVAILABLE`; past
/// `max_issue_staleness` issuance does too (SPEC §9).
#[derive(Debug, Default)]
pub struct Freshness {
    // Nanoseconds on the clock's monotonic scale, plus one (0: never caught up).
    last: AtomicU64,
}

impl Freshness {
    /// Records a successful catch-up at monotonic time `at`.
    pub fn mark(&self, at: Duration) {
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX - 1);
        self.last
            .fetch_max(nanos.saturating_add(1), Ordering::AcqRel);
    }

    /// How long since the last successful catch-up (`Duration::MAX` if never).
    pub fn stale_for(&self, now: Duration) -> Duration {
        match self.last.load(Ordering::Acquire) {
            0 => Duration::MAX,
            last => {
                let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(now.saturating_sub(last - 1))
            }
        }
    }
}

/// The verified-token cache: tokens whose signature already checked out, keyed by a SHA-256
/// of the token, each entry living at most until the token expires. Bounded — an eviction
/// only costs a re-verification. Revocation, client and key status are never cached.
pub struct VerifiedCache<V> {
    entries: moka::sync::Cache<[u8; 32], (V, Duration)>,
}

impl<V> std::fmt::Debug for VerifiedCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

struct TtlExpiry;

impl<V> moka::Expiry<[u8; 32], (V, Duration)> for TtlExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &(V, Duration),
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.1)
    }
}

impl<V: Clone + Send + Sync + 'static> VerifiedCache<V> {
    /// A cache holding at most `capacity` tokens.
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(TtlExpiry)
                .build(),
        }
    }

    /// The cached value for a token hash.
    pub fn get(&self, token_hash: &[u8; 32]) -> Option<V> {
        self.entries.get(token_hash).map(|(v, _)| v)
    }

    /// Caches `value` for at most `ttl`.
    pub fn insert(&self, token_hash: [u8; 32], value: V, ttl: Duration) {
        if !ttl.is_zero() {
            self.entries.insert(token_hash, (value, ttl));
        }
    }
}

use crate::clock::UnixTime;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_never_shows_a_token_revoked_before_and_after_as_unrevoked() {
        let list = Arc::new(Blocklist::new(
            Caps::default(),
            Duration::ZERO,
            Duration::from_secs(3600),
        ));
        let now = UnixTime::from_secs(1_000);
        let state = |ids: std::ops::Range<u32>| State {
            tokens: ids
                .map(|i| RevokedToken {
                    token_id: format!("t{i}"),
                    expires_at: UnixTime::from_secs(5_000),
                    client_id: None,
                    revoked_by: String::new(),
                    sequence: u64::from(i),
                    revoked_at: now,
                })
                .collect(),
            ..State::default()
        };
        list.load(&state(0..20_000), now);
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (list, done) = (list.clone(), done.clone());
            std::thread::spawn(move || {
                let mut gaps = 0u64;
                while !done.load(Ordering::Relaxed) {
                    gaps += u64::from(!list.is_token_revoked("t0"));
                }
                gaps
            })
        };
        for _ in 0..3 {
            list.load(&state(0..20_000), now);
        }
        // A snapshot that drops half: those go, the rest stay revoked throughout.
        list.load(&state(0..10_000), now);
        done.store(true, Ordering::Relaxed);
        assert_eq!(
            reader.join().unwrap(),
            0,
            "t0 was seen unrevoked during a reload"
        );
        assert!(list.is_token_revoked("t9999"));
        assert!(!list.is_token_revoked("t10000"));
        list.run_pending_tasks();
        assert_eq!(list.live(), 10_000);
    }

    fn revoked(token_id: &str, client: &str, by: &str, sequence: u64) -> Event {
        Event {
            sequence,
            committed_at: UnixTime::from_secs(0),
            change: Change::TokenRevoked {
                token_id: token_id.into(),
                expires_at: UnixTime::from_secs(10_000),
                client_id: Some(client.into()),
                revoked_by: by.into(),
            },
        }
    }

    #[test]
    fn applying_events_is_idempotent_and_tracks_the_cursor() {
        let list = Blocklist::new(
            Caps::default(),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        );
        list.apply(&revoked("a", "c1", "c1", 1), UnixTime::EPOCH);
        list.apply(&revoked("a", "c1", "c1", 1), UnixTime::EPOCH);
        assert!(list.is_token_revoked("a"));
        assert!(!list.is_token_revoked("b"));
        assert_eq!(list.live(), 1);
        assert_eq!(list.applied_through(), 1);
        list.apply(
            &Event {
                sequence: 2,
                committed_at: UnixTime::from_secs(0),
                change: Change::ClientCutoff {
                    client_id: "c1".into(),
                    issued_at_or_before: UnixTime::from_secs(50),
                },
            },
            UnixTime::EPOCH,
        );
        list.apply(
            &Event {
                sequence: 3,
                committed_at: UnixTime::from_secs(0),
                change: Change::ClientCutoff {
                    client_id: "c1".into(),
                    issued_at_or_before: UnixTime::from_secs(40),
                },
            },
            UnixTime::EPOCH,
        );
        assert_eq!(
            list.cutoff("c1"),
            Some(UnixTime::from_secs(50)),
            "a cut-off never moves back"
        );
        list.apply(
            &Event {
                sequence: 4,
                committed_at: UnixTime::from_secs(0),
                change: Change::ClientDisabled {
                    client_id: "c2".into(),
                },
            },
            UnixTime::EPOCH,
        );
        assert!(list.is_client_disabled("c2"));
        list.apply(
            &Event {
                sequence: 5,
                committed_at: UnixTime::from_secs(0),
                change: Change::ClientEnabled {
                    client_id: "c2".into(),
                },
            },
            UnixTime::EPOCH,
        );
        assert!(!list.is_client_disabled("c2"));
        assert_eq!(list.applied_through(), 5);
    }

    #[test]
    fn caps_keep_a_reserve_for_admins_and_limit_each_client() {
        let caps = Caps {
            max_live: 10,
            per_client_max_live: 3,
            per_client_per_second: 1000,
        };
        let list = Blocklist::new(caps, Duration::from_secs(30), Duration::from_secs(3600));
        for i in 0..3 {
            list.check_caps("c1", false).unwrap();
            list.apply(
                &revoked(&format!("c1-{i}"), "c1", "c1", i + 1),
                UnixTime::EPOCH,
            );
        }
        assert!(matches!(
            list.check_caps("c1", false),
            Err(CapError::ClientFull { .. })
        ));
        // Revocations by an admin of c1's tokens do not count against c1.
        for i in 0..6 {
            list.check_caps("admin", true).unwrap();
            list.apply(
                &revoked(&format!("a-{i}"), "c1", "admin", 10 + i),
                UnixTime::EPOCH,
            );
        }
        assert_eq!(list.live(), 9);
        assert!(matches!(
            list.check_caps("c2", false),
            Err(CapError::Full { cap: 9, .. })
        ));
        list.check_caps("admin", true).unwrap();
        list.apply(&revoked("a-last", "c1", "admin", 20), UnixTime::EPOCH);
        assert!(matches!(
            list.check_caps("admin", true),
            Err(CapError::Full { cap: 10, .. })
        ));
        // Nothing was evicted to make room.
        assert!(list.is_token_revoked("c1-0"));
    }

    #[test]
    fn the_rate_limits_self_revocation() {
        let caps = Caps {
            max_live: 1000,
            per_client_max_live: 1000,
            per_client_per_second: 2,
        };
        let list = Blocklist::new(caps, Duration::from_secs(30), Duration::from_secs(3600));
        let mut refused = None;
        for _ in 0..10 {
            if let Err(e) = list.check_caps("c1", false) {
                refused = Some(e);
                break;
            }
        }
        assert!(
            matches!(refused, Some(CapError::Rate { per_second: 2, .. })),
            "{refused:?}"
        );
        list.check_caps("admin", true).unwrap();
    }

    #[test]
    fn load_replaces_the_state() {
        let list = Blocklist::new(
            Caps::default(),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        );
        assert!(!list.is_loaded());
        list.apply(&revoked("old", "c1", "c1", 1), UnixTime::EPOCH);
        let state = State {
            tokens: vec![RevokedToken {
                token_id: "new".into(),
                expires_at: UnixTime::from_secs(10_000),
                client_id: None,
                revoked_by: "admin".into(),
                sequence: 7,
                revoked_at: UnixTime::from_secs(0),
            }],
            cutoffs: vec![Cutoff {
                client_id: "c3".into(),
                issued_at_or_before: UnixTime::from_secs(99),
                sequence: 8,
            }],
            disabled_clients: vec![("c4".into(), 9)],
            revoked_keys: vec![("k1".into(), 10)],
            high_water: 10,
            purged_through: 0,
        };
        list.load(&state, UnixTime::EPOCH);
        assert!(list.is_loaded());
        assert!(!list.is_token_revoked("old"));
        assert!(list.is_token_revoked("new"));
        assert_eq!(list.cutoff("c3"), Some(UnixTime::from_secs(99)));
        assert!(list.is_client_disabled("c4"));
        assert!(list.is_key_revoked("k1"));
        assert_eq!(list.applied_through(), 10);
        assert_eq!(list.live(), 1);
    }

    /// A chain is judged token by token: a token exchanged after its client's cut-off (a
    /// replica that had not seen it yet) still goes when an ancestor was issued to a client
    /// cut off at or after that ancestor's `iat`; revoking any ancestor revokes it.
    #[test]
    fn every_token_of_a_chain_is_judged_by_its_own_client_and_time() {
        let list = Blocklist::new(
            Caps::default(),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        );
        let at = UnixTime::from_secs;
        let event = |sequence, change| Event {
            sequence,
            committed_at: at(0),
            change,
        };
        let link = |token_id, client_id, secs| Link {
            token_id,
            client_id,
            issued_at: at(secs),
        };
        // A's token (100) → B's (200) → C's (300); A cut off up to 150.
        let chain = [
            link("c", "c", 300),
            link("a", "a", 100),
            link("b", "b", 200),
        ];
        let parties = ["a", "b", "c"];
        assert_eq!(list.strikes(chain.into_iter(), parties), None);
        list.apply(
            &event(
                1,
                Change::ClientCutoff {
                    client_id: "a".into(),
                    issued_at_or_before: at(150),
                },
            ),
            at(0),
        );
        assert_eq!(
            list.strikes(chain.into_iter(), parties),
            Some(Struck::ClientCutOff)
        );
        // A token A got after its cut-off starts a chain that stands.
        let later = [link("c2", "c", 300), link("a2", "a", 160)];
        assert_eq!(list.strikes(later.into_iter(), parties), None);
        list.apply(&revoked("a2", "a", "a", 2), at(0));
        assert_eq!(
            list.strikes(later.into_iter(), parties),
            Some(Struck::AncestorRevoked)
        );
        list.apply(&revoked("c2", "c", "c", 3), at(0));
        assert_eq!(
            list.strikes(later.into_iter(), parties),
            Some(Struck::Revoked)
        );
        let other = [link("d", "d", 300)];
        list.apply(
            &event(
                4,
                Change::ClientDisabled {
                    client_id: "b".into(),
                },
            ),
            at(0),
        );
        assert_eq!(
            list.strikes(other.into_iter(), ["d", "b"]),
            Some(Struck::ClientDisabled)
        );
        assert_eq!(list.strikes(other.into_iter(), ["d"]), None);
    }
}
