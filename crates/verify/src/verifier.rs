//! The verifier: built once with the issuer, the audiences and a source of keys and
//! revocations, then shared by every request; `verify` checks one token against local state.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokenmint_core::{
    clock::{Clock, SystemClock, UnixTime},
    crypto,
    jose::{self, KeySet},
    revocation::{Struck, VerifiedCache},
    txn::{self, TxnTokenClaims as TxnToken},
};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ClientConfig;

use crate::{
    certificate::PeerCertificate,
    error::{BuildError, VerifyError},
    health::Health,
    metrics,
    settings::Settings,
    source::{self, Fetch, Source},
    state::{State, Stats},
    token::{Claims, VerifiedToken},
};

/// The `typ` values an access token may carry (RFC 9068 §2.1), compared without case.
const ACCESS_TOKEN_TYPES: &[&str] = &["at+jwt", "application/at+jwt"];

/// Verifies tokenmint's access tokens offline. Cheap to clone: every clone shares one key set,
/// one revocation state and one cache; the source's watch tasks stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Verifier {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.shared.settings.issuer)
            .field("audiences", &self.shared.settings.audiences)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) state: Arc<State>,
    cache: VerifiedCache<Arc<VerifiedToken>>,
    fetch: Arc<dyn Fetch>,
    watches_revocations: bool,
    refresh: std::sync::Mutex<Refresh>,
    tasks: Vec<JoinHandle<()>>,
}

/// The on-demand key fetch: running (with its completion to wait on), or idle since the end
/// of the last one.
enum Refresh {
    Idle(Option<Duration>),
    Running(tokio::sync::watch::Receiver<bool>),
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Builds a [`Verifier`]: `Verifier::builder(issuer)`, then the audiences, the source, and
/// any of the options.
#[must_use]
pub struct Builder {
    settings: Settings,
    source: Option<Source>,
    cache_capacity: u64,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("settings", &self.settings)
            .field("source", &self.source)
            .field("cache_capacity", &self.cache_capacity)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A builder for tokens of `issuer` (the `iss` claim; the gRPC source's default endpoint).
    pub fn builder(issuer: impl Into<String>) -> Builder {
        Builder {
            settings: Settings {
                issuer: issuer.into(),
                audiences: Vec::new(),
                trust_domain: None,
                leeway: Duration::from_secs(30),
                staleness: Duration::from_secs(15),
                accept_unbound: false,
                fail_open: false,
                refresh_cooldown: Duration::from_secs(10),
                fetch_timeout: Duration::from_secs(5),
                reconnect_min: Duration::from_millis(100),
                reconnect_max: Duration::from_secs(10),
            },
            source: None,
            cache_capacity: 100_000,
            clock: Arc::new(SystemClock),
        }
    }
}

impl Builder {
    /// An audience this service serves (the `aud` claim must name one). At least one.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.settings.audiences.push(audience.into());
        self
    }

    /// The trust domain whose transaction tokens this service takes
    /// ([`Verifier::verify_txn`]): their `aud`. Unset, none are taken.
    pub fn trust_domain(mut self, domain: impl Into<String>) -> Self {
        self.settings.trust_domain = Some(domain.into());
        self
    }

    /// Keys and revocations from the issuer's gRPC `WatchJwks` and `WatchRevocations` over
    /// mTLS: `tls` carries this service's own client certificate, the issuer's trust anchors
    /// and the crypto provider (nothing process-wide is installed). The endpoint is the issuer.
    pub fn grpc(self, tls: Arc<ClientConfig>) -> Self {
        let endpoint = self.settings.issuer.clone();
        self.grpc_endpoint(endpoint, tls)
    }

    /// As [`Builder::grpc`], at another endpoint than the issuer URL.
    pub fn grpc_endpoint(mut self, endpoint: impl Into<String>, tls: Arc<ClientConfig>) -> Self {
        self.source = Some(Source::Grpc {
            endpoint: endpoint.into(),
            tls,
        });
        self
    }

    /// Keys from a JWKS URL (`Cache-Control: max-age` and `ETag` honoured) and **no
    /// revocation feed**: revoked tokens, cut-offs, disabled clients and revoked keys are not
    /// seen, so a revoked token stays good here until it expires.
    pub fn jwks_url(mut self, url: impl Into<String>, tls: Arc<ClientConfig>) -> Self {
        self.source = Some(Source::Http {
            url: url.into(),
            tls,
        });
        self
    }

    /// Clock-skew leeway on `exp`, `nbf` and `iat` (default 30 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.settings.leeway = leeway;
        self
    }

    /// How long without word from the issuer before verification fails closed with
    /// [`VerifyError::Stale`] (default 15 s; the issuer sends a heartbeat every second).
    pub fn staleness(mut self, bound: Duration) -> Self {
        self.settings.staleness = bound;
        self
    }

    /// Accept tokens without a certificate binding (`cnf`). Off by default: tokenmint binds
    /// every token it issues.
    pub fn accept_unbound_tokens(mut self, accept: bool) -> Self {
        self.settings.accept_unbound = accept;
        self
    }

    /// **Dangerous**: keep verifying on stale state when the issuer is unreachable, so a
    /// token revoked meanwhile is accepted. Off by default.
    pub fn dangerous_fail_open(mut self, fail_open: bool) -> Self {
        self.settings.fail_open = fail_open;
        self
    }

    /// The most verified tokens kept (default 100,000). A hit costs a hash lookup; the
    /// revocation state is still checked on every call.
    pub fn cache_capacity(mut self, capacity: u64) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The shortest time between two key fetches for unknown `kid`s (default 10 s).
    pub fn refresh_cooldown(mut self, cooldown: Duration) -> Self {
        self.settings.refresh_cooldown = cooldown;
        self
    }

    /// The bounds of the reconnect backoff (default 100 ms to 10 s, with jitter).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.settings.reconnect_min = min;
        self.settings.reconnect_max = max;
        self
    }

    /// The clock staleness and the cache read (tests pass a manual one).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The verifier, its source's watch tasks started. Call inside a tokio runtime.
    pub fn build(self) -> Result<Verifier, BuildError> {
        if self.settings.audiences.is_empty() {
            return Err(BuildError::NoAudience);
        }
        self.settings.check()?;
        let source = self.source.ok_or(BuildError::NoSource)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let state = Arc::new(State::new(self.clock, self.settings.leeway));
        let watches_revocations = source.watches_revocations();
        let started = source::start(source, &self.settings, state.clone(), &runtime)?;
        Ok(Verifier {
            shared: Arc::new(Shared {
                settings: self.settings,
                state,
                cache: VerifiedCache::new(self.cache_capacity),
                fetch: started.fetch,
                watches_revocations,
                refresh: std::sync::Mutex::new(Refresh::Idle(None)),
                tasks: started.tasks,
            }),
        })
    }
}

impl Verifier {
    /// Verifies `token` presented by a caller with `certificate` at `now`: `typ: at+jwt`, the
    /// key its `kid` names and that key's algorithm (never the token's), the signature, `iss`,
    /// `aud`, `exp`/`nbf`/`iat` with leeway, the certificate binding, and from local state the
    /// token's revocation, its client's cut-off and status, and its key's revocation.
    pub async fn verify(
        &self,
        token: &str,
        certificate: Option<&PeerCertificate>,
        now: UnixTime,
    ) -> Result<Arc<VerifiedToken>, VerifyError> {
        let outcome = self.verify_inner(token, certificate, now).await;
        metrics::outcome(outcome.as_ref().err());
        outcome
    }

    async fn verify_inner(
        &self,
        token: &str,
        certificate: Option<&PeerCertificate>,
        now: UnixTime,
    ) -> Result<Arc<VerifiedToken>, VerifyError> {
        let shared = &self.shared;
        shared.check_fresh()?;
        let hash = crypto::sha256(token.as_bytes());
        let verified = match shared.cache.get(&hash) {
            Some(hit) => hit,
            None => {
                let verified = Arc::new(shared.verify_signed(token).await?);
                let ttl = verified
                    .expires_at
                    .saturating_add(shared.settings.leeway)
                    .since(now);
                shared.cache.insert(hash, verified.clone(), ttl);
                verified
            }
        };
        shared.check_standing(&verified, certificate, now)?;
        Ok(verified)
    }

    /// Verifies a transaction token (draft-ietf-oauth-transaction-tokens-10) presented by a
    /// workload with `presenter`'s certificate: its `typ` (`txntoken+jwt`), key and signature,
    /// issuer, `aud` the configured trust domain, and times. A transaction token is not bound
    /// and can be replayed inside the domain, so only a workload presenting a certificate
    /// (one the host's TLS verified, of the domain) may present it. Never an access token:
    /// [`Verifier::verify`] refuses it, and this refuses an access token.
    pub async fn verify_txn(
        &self,
        token: &str,
        presenter: Option<&PeerCertificate>,
        now: UnixTime,
    ) -> Result<TxnToken, VerifyError> {
        let shared = &self.shared;
        shared.check_fresh()?;
        if presenter.is_none() {
            return Err(VerifyError::CertificateRequired);
        }
        if token.is_empty() {
            return Err(VerifyError::Missing);
        }
        let domain = shared
            .settings
            .trust_domain
            .as_deref()
            .ok_or(VerifyError::WrongAudience)?;
        let claims = shared
            .verify_jws::<TxnToken>(token, &[txn::TXN_JWT_TYPE])
            .await?
            .payload;
        let settings = &shared.settings;
        txn::check_claims(&claims, &settings.issuer, domain, now, settings.leeway)?;
        Ok(claims)
    }

    /// The time by the verifier's clock: what the layer passes as `now`.
    pub fn now(&self) -> UnixTime {
        self.shared.state.clock.unix_now()
    }

    /// How this verifier stands: whether it can verify now and, if not, why.
    pub fn health(&self) -> Health {
        self.shared.health()
    }
}

impl Shared {
    /// Fails closed when the keys (or the revocation feed) have not arrived or have gone quiet.
    fn check_fresh(&self) -> Result<(), VerifyError> {
        let state = &self.state;
        if !state.keys_loaded() || (self.watches_revocations && !state.blocklist.is_loaded()) {
            return Err(VerifyError::NotReady);
        }
        if self.settings.fail_open {
            return Ok(());
        }
        let now = state.clock.monotonic();
        let mut stale = state.keys_fresh.stale_for(now);
        if self.watches_revocations {
            stale = stale.max(state.revocations_fresh.stale_for(now));
        }
        if stale > self.staleness_bound() {
            return Err(VerifyError::Stale(stale));
        }
        Ok(())
    }

    /// The staleness bound; for a JWKS URL, its polling interval is added (it has no heartbeat).
    fn staleness_bound(&self) -> Duration {
        self.settings
            .staleness
            .saturating_add(self.state.poll_interval())
    }

    /// The signature, key, `typ`, issuer and audience: what a cache hit need not redo.
    async fn verify_signed(self: &Arc<Self>, token: &str) -> Result<VerifiedToken, VerifyError> {
        let verified = self.verify_jws::<Claims>(token, ACCESS_TOKEN_TYPES).await?;
        let claims = verified.payload;
        if claims.iss != self.settings.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        let audiences = claims.aud.to_vec();
        if !audiences
            .iter()
            .any(|a| self.settings.audiences.contains(a))
        {
            return Err(VerifyError::WrongAudience);
        }
        claims
            .into_verified(verified.kid)
            .map_err(VerifyError::Malformed)
    }

    /// A compact JWS of one of `types`, by a key of the set: a `kid` not held fetches the
    /// set once (single-flight) before the token is refused.
    async fn verify_jws<T: serde::de::DeserializeOwned>(
        self: &Arc<Self>,
        token: &str,
        types: &[&str],
    ) -> Result<jose::VerifiedJws<T>, VerifyError> {
        let keys = self.state.keys();
        match jose::verify_compact::<T>(token, &keys, types) {
            Err(jose::JwsError::UnknownKey) => {
                drop(keys);
                let kid = header_kid(token).ok_or(VerifyError::UnknownKey)?;
                let keys = self
                    .refresh_for(&kid)
                    .await
                    .ok_or(VerifyError::UnknownKey)?;
                Ok(jose::verify_compact::<T>(token, &keys, types)?)
            }
            other => Ok(other?),
        }
    }

    /// The key set holding `kid` after at most one fetch shared by every waiting request
    /// (single-flight), or `None` if it still does not (or the cooldown forbids a fetch). The
    /// fetch runs in a task of its own: a caller that goes away (a dropped request) neither
    /// cancels it nor spends the cooldown without a key set arriving.
    async fn refresh_for(self: &Arc<Self>, kid: &str) -> Option<Arc<KeySet>> {
        let mut done = {
            let mut refresh = lock(&self.refresh);
            if let Some(keys) = self.holding(kid) {
                return Some(keys);
            }
            match &*refresh {
                Refresh::Running(done) => done.clone(),
                Refresh::Idle(Some(at))
                    if self.state.clock.monotonic().saturating_sub(*at)
                        < self.settings.refresh_cooldown =>
                {
                    return None;
                }
                Refresh::Idle(_) => {
                    let (finished, done) = tokio::sync::watch::channel(false);
                    *refresh = Refresh::Running(done.clone());
                    tokio::spawn(Arc::clone(self).fetch_keys(finished));
                    done
                }
            }
        };
        // An error here means the task is gone (the runtime shutting down): look anyway.
        let _ = done.wait_for(|finished| *finished).await;
        self.holding(kid)
    }

    /// The key set in force if it holds `kid`.
    fn holding(&self, kid: &str) -> Option<Arc<KeySet>> {
        let held = self.state.keys();
        held.find(kid)
            .is_some()
            .then(|| arc_swap::Guard::into_inner(held))
    }

    /// The one fetch: its key set taken, the cooldown counted from its end, the waiters told.
    async fn fetch_keys(self: Arc<Self>, finished: tokio::sync::watch::Sender<bool>) {
        Stats::count(&self.state.stats.key_fetches);
        let fetched = tokio::time::timeout(self.settings.fetch_timeout, self.fetch.fetch()).await;
        let outcome = match fetched {
            Ok(Ok(keys)) => self.state.set_keys(keys),
            Ok(Err(error)) => Err(error),
            Err(_) => Err("timed out".into()),
        };
        if let Err(error) = outcome {
            self.state.stats.note_error(format!("key fetch: {error}"));
        }
        *lock(&self.refresh) = Refresh::Idle(Some(self.state.clock.monotonic()));
        let _ = finished.send(true);
    }

    /// Times, the key, revocation state and the certificate binding: checked on every call.
    fn check_standing(
        &self,
        token: &VerifiedToken,
        certificate: Option<&PeerCertificate>,
        now: UnixTime,
    ) -> Result<(), VerifyError> {
        let leeway = self.settings.leeway;
        if token.expires_at.saturating_add(leeway) <= now {
            return Err(VerifyError::Expired);
        }
        if token.not_before.saturating_sub(leeway) > now
            || token.issued_at.saturating_sub(leeway) > now
        {
            return Err(VerifyError::NotYetValid);
        }
        self.check_binding(token, certificate)?;
        let blocklist = &self.state.blocklist;
        if blocklist.is_key_revoked(&token.key_id) {
            return Err(VerifyError::KeyRevoked);
        }
        // A key no longer published (retired past retention, or revoked) verifies nothing.
        if self.state.keys().find(&token.key_id).is_none() {
            return Err(VerifyError::UnknownKey);
        }
        match blocklist.strikes(token.links(), token.parties()) {
            None => {}
            Some(Struck::Revoked) => return Err(VerifyError::Revoked),
            Some(Struck::AncestorRevoked) => return Err(VerifyError::AncestorRevoked),
            Some(Struck::ClientDisabled) => return Err(VerifyError::ClientDisabled),
            Some(Struck::ClientCutOff) => return Err(VerifyError::ClientCutOff),
        }
        Ok(())
    }

    fn check_binding(
        &self,
        token: &VerifiedToken,
        certificate: Option<&PeerCertificate>,
    ) -> Result<(), VerifyError> {
        match (&token.bound_to, certificate) {
            (Some(bound), Some(presented)) if bound.ct_eq(presented.thumbprint()) => Ok(()),
            (Some(_), Some(_)) => Err(VerifyError::CertificateMismatch),
            (Some(_), None) => Err(VerifyError::CertificateRequired),
            (None, _) if self.settings.accept_unbound => Ok(()),
            (None, _) => Err(VerifyError::Unbound),
        }
    }

    fn health(&self) -> Health {
        let state = &self.state;
        let now = state.clock.monotonic();
        let age = |fresh: &tokenmint_core::revocation::Freshness| {
            Some(fresh.stale_for(now)).filter(|d| *d != Duration::MAX)
        };
        let stats = &state.stats;
        let health = Health {
            problem: self.check_fresh().err(),
            key_set_version: state
                .keys_loaded()
                .then(|| state.keys().version().to_owned()),
            keys_age: age(&state.keys_fresh),
            revocations_watched: self.watches_revocations,
            revocations_age: age(&state.revocations_fresh),
            revocations_through: state.blocklist.applied_through(),
            revocations_as_of: match stats.revocations_as_of_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(std::time::UNIX_EPOCH + Duration::from_millis(ms)),
            },
            revoked_tokens: state.blocklist.live(),
            key_fetches: stats.key_fetches.load(Ordering::Relaxed),
            key_sets: stats.key_sets.load(Ordering::Relaxed),
            key_polls: stats.key_polls.load(Ordering::Relaxed),
            key_polls_unchanged: stats.key_polls_unchanged.load(Ordering::Relaxed),
            snapshots: stats.snapshots.load(Ordering::Relaxed),
            resumes: stats.resumes.load(Ordering::Relaxed),
            reconnects: stats.reconnects.load(Ordering::Relaxed),
            last_error: stats.last_error(),
        };
        metrics::health(&health);
        health
    }
}

/// The `kid` of a compact JWS's header, read without verifying anything (to decide whether a
/// refresh could help).
fn header_kid(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Header {
        kid: Option<String>,
    }
    let (header, _) = token.split_once('.')?;
    if header.len() > 2048 {
        return None;
    }
    let bytes = crypto::b64url_decode(header)?;
    serde_json::from_slice::<Header>(&bytes).ok()?.kid
}
