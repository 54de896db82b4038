//! The issuing authority: the core's entry point for requests. It authenticates the peer as
//! a client, applies the client's policy — for `client_credentials`, a token exchange or a
//! transaction token (`txn`) — and signs with the current key; it answers
//! introspection against the key ring, the client registry and the blocklist; and it decides
//! what a revocation request changes. It reads the state it is handed and holds no lock while
//! anything awaits.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use tokenmint_core::{
    audit::{IssuanceAudit, IssuanceMode},
    client::{AuthError, Authenticated, Client, ClientRegistry, PeerCertificate, Permission},
    clock::{Clock, UnixTime},
    crypto::{self, CertificateThumbprint, SecretHasher},
    grant::{self, Exchange, ExchangeRequest, SigningChoice},
    jose::JwsError,
    keys::KeyRing,
    limits::IssueLimits,
    revocation::{Blocklist, CapError, Change, Freshness, Struck, VerifiedCache},
    token::{
        self, AccessTokenClaims, Grant, IssueError, IssuedToken, Issuer, TokenRequest, Verified,
        VerifyError,
    },
};

/// Why a token is inactive. Only the log and metrics see this; the caller sees `active: false`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Inactive {
    /// It does not verify (or is malformed, expired, not yet valid…).
    #[error("{0}")]
    Invalid(#[from] VerifyError),
    /// Its `jti` is revoked.
    #[error("revoked")]
    Revoked,
    /// A token it was exchanged from is revoked.
    #[error("a token it was exchanged from is revoked")]
    AncestorRevoked,
    /// Its client was cut off after it was issued.
    #[error("client cut off")]
    ClientCutOff,
    /// Its client is disabled or no longer registered.
    #[error("client disabled or unknown")]
    ClientDisabled,
    /// Its signing key was revoked or removed.
    #[error("key revoked")]
    KeyRevoked,
    /// The caller may not introspect any of its audiences.
    #[error("audience not visible to the caller")]
    AudienceNotVisible,
    /// The presented certificate is not the one the token is bound to.
    #[error("certificate thumbprint mismatch")]
    CertificateMismatch,
}

impl Inactive {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Inactive::Invalid(VerifyError::Jws(JwsError::Malformed(_))) => "malformed",
            Inactive::Invalid(VerifyError::Jws(JwsError::WrongType)) => "wrong_type",
            Inactive::Invalid(VerifyError::Jws(JwsError::UnknownKey)) => "unknown_key",
            Inactive::Invalid(VerifyError::Jws(JwsError::AlgorithmMismatch)) => {
                "algorithm_mismatch"
            }
            Inactive::Invalid(VerifyError::Jws(JwsError::BadSignature)) => "bad_signature",
            Inactive::Invalid(VerifyError::WrongIssuer) => "wrong_issuer",
            Inactive::Invalid(VerifyError::Expired) => "expired",
            Inactive::Invalid(VerifyError::NotYetValid) => "not_yet_valid",
            Inactive::Invalid(VerifyError::WrongTrustDomain) => "wrong_trust_domain",
            Inactive::Revoked => "revoked",
            Inactive::AncestorRevoked => "ancestor_revoked",
            Inactive::ClientCutOff => "client_cut_off",
            Inactive::ClientDisabled => "client_disabled",
            Inactive::KeyRevoked => "key_revoked",
            Inactive::AudienceNotVisible => "audience_not_visible",
            Inactive::CertificateMismatch => "certificate_mismatch",
        }
    }
}

impl From<Struck> for Inactive {
    fn from(struck: Struck) -> Self {
        match struck {
            Struck::Revoked => Inactive::Revoked,
            Struck::AncestorRevoked => Inactive::AncestorRevoked,
            Struck::ClientDisabled => Inactive::ClientDisabled,
            Struck::ClientCutOff => Inactive::ClientCutOff,
        }
    }
}

/// Why a caller may not introspect, watch or administer at all (a status, never `active: false`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallerError {
    /// The peer is not an acceptable client.
    #[error("client authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// The client lacks the permission.
    #[error("client {client_id} does not have the {permission} permission")]
    NotPermitted {
        /// The caller.
        client_id: String,
        /// The permission it lacks.
        permission: &'static str,
    },
    /// The blocklist is not loaded yet.
    #[error("the revocation state is not loaded yet")]
    NotReady,
    /// The store has not been reached for longer than `max_staleness`.
    #[error("the revocation state is stale: no catch-up with the store for {0:?}")]
    Stale(Duration),
}

/// Why an introspection request is refused (a status, never `active: false`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntrospectError {
    /// The caller is not acceptable.
    #[error(transparent)]
    Caller(#[from] CallerError),
    /// A presented certificate thumbprint was sent that is not a base64url SHA-256 (empty,
    /// hex, padded, truncated…). Absent is not malformed: it asks for no binding check.
    #[error("the presented certificate thumbprint is not a base64url SHA-256")]
    MalformedThumbprint,
}

/// Why a revocation request is refused (an unverifiable or unknown token is not refused: it is
/// an OK no-op).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RevokeError {
    /// The caller is not acceptable.
    #[error(transparent)]
    Caller(#[from] CallerError),
    /// The token belongs to another client and the caller is not an admin.
    #[error("client {caller} may not revoke a token of client {owner}")]
    NotOwner {
        /// The caller.
        caller: String,
        /// The token's client.
        owner: String,
    },
    /// A cap on live revocations is reached.
    #[error(transparent)]
    Cap(#[from] CapError),
    /// A malformed argument (an admin's token id or client id).
    #[error("{0}")]
    InvalidArgument(String),
}

/// The longest token id accepted from an admin.
const MAX_TOKEN_ID_LEN: usize = 128;

/// The authority. Cheap to share (`Arc`).
pub struct Authority {
    issuer: Issuer,
    keys: watch::Receiver<Arc<KeyRing>>,
    clients: ArcSwap<ClientRegistry>,
    hasher: SecretHasher,
    clock: Arc<dyn Clock>,
    blocklist: Arc<Blocklist>,
    verified: VerifiedCache<Arc<Verified>>,
    leeway: Duration,
    freshness: Freshness,
    max_staleness: Duration,
    max_issue_staleness: Duration,
    issue_limits: IssueLimits,
    issuance_audit: Arc<IssuanceAudit>,
    /// Which algorithm signs a token, by its audiences.
    signing: SigningChoice,
    /// Why the key ring the store holds could not be loaded, when it could not.
    key_ring_error: arc_swap::ArcSwapOption<String>,
    custody_error: arc_swap::ArcSwapOption<String>,
    /// The most exchanges behind a token (`tokens.max_exchange_depth`).
    max_exchange_depth: usize,
    /// `[txn_tokens]`, when on.
    txn_tokens: Option<TxnSettings>,
}

mod txn;
pub use txn::TxnSettings;

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// What the authority is built from.
pub struct Parts {
    /// Signs as.
    pub issuer: Issuer,
    /// The key ring as it changes.
    pub keys: watch::Receiver<Arc<KeyRing>>,
    /// The clients.
    pub clients: ClientRegistry,
    /// Checks client secrets.
    pub hasher: SecretHasher,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Revocation state.
    pub blocklist: Arc<Blocklist>,
    /// Clock-skew leeway for token times.
    pub leeway: Duration,
    /// How many verified tokens to remember.
    pub verified_cache_capacity: u64,
    /// Past this since the last catch-up, introspection and watches are refused.
    pub max_staleness: Duration,
    /// Past this since the last catch-up, issuance is refused too.
    pub max_issue_staleness: Duration,
}

/// Counts a refused issuance by reason, and by client when one was authenticated (never a
/// client id a caller merely claimed).
fn refused(client: Option<&str>, error: IssueError) -> IssueError {
    metrics::counter!(
        "tokenmint_issue_refusals_total",
        "client" => client.unwrap_or("").to_owned(),
        "reason" => error.label()
    )
    .increment(1);
    error
}

impl Authority {
    /// With issuance rate limits (none by default).
    pub fn with_issue_limits(mut self, limits: IssueLimits) -> Self {
        self.issue_limits = limits;
        self
    }

    /// With issuance audited as `audit` says (not at all by default).
    pub fn with_issuance_audit(mut self, audit: Arc<IssuanceAudit>) -> Self {
        self.issuance_audit = audit;
        self
    }

    /// With tokens signed as `signing` says (by default: ES256, whatever the audience).
    pub fn with_signing(mut self, signing: SigningChoice) -> Self {
        self.signing = signing;
        self
    }

    /// With at most `depth` exchanges behind a token (by default
    /// `tokens.max_exchange_depth`'s default).
    pub fn with_exchange_depth(mut self, depth: u32) -> Self {
        self.max_exchange_depth = usize::try_from(depth).unwrap_or(usize::MAX);
        self
    }

    /// An authority from its parts.
    pub fn new(parts: Parts) -> Self {
        Self {
            issuer: parts.issuer,
            keys: parts.keys,
            clients: ArcSwap::from_pointee(parts.clients),
            hasher: parts.hasher,
            clock: parts.clock,
            blocklist: parts.blocklist,
            verified: VerifiedCache::new(parts.verified_cache_capacity),
            leeway: parts.leeway,
            freshness: Freshness::default(),
            max_staleness: parts.max_staleness,
            max_issue_staleness: parts.max_issue_staleness,
            issue_limits: IssueLimits::default(),
            issuance_audit: Arc::new(IssuanceAudit::new(IssuanceMode::Off)),
            signing: SigningChoice::default(),
            key_ring_error: arc_swap::ArcSwapOption::empty(),
            custody_error: arc_swap::ArcSwapOption::empty(),
            max_exchange_depth: crate::config::DEFAULT_MAX_EXCHANGE_DEPTH as usize,
            txn_tokens: None,
        }
    }

    /// Records whether the key ring the store holds could be loaded (`None`: it could).
    pub fn mark_key_ring(&self, error: Option<String>) {
        metrics::gauge!("tokenmint_key_ring_loaded").set(f64::from(u8::from(error.is_none())));
        self.key_ring_error.store(error.map(Arc::new));
    }

    /// Why the key ring the store holds could not be loaded, if it could not.
    pub fn key_ring_error(&self) -> Option<Arc<String>> {
        self.key_ring_error.load_full()
    }

    /// Records whether the key custody can sign (`None`: it can), from its periodic check.
    pub fn mark_custody(&self, error: Option<String>) {
        metrics::gauge!("tokenmint_key_custody_up").set(f64::from(u8::from(error.is_none())));
        if let Some(error) = &error {
            if self.custody_error.load().as_deref() != Some(error) {
                tracing::error!(%error, "the key custody cannot sign: not ready");
            }
        } else if self.custody_error.load().is_some() {
            tracing::warn!("the key custody signs again: ready");
        }
        self.custody_error.store(error.map(Arc::new));
    }

    /// Why the key custody cannot sign, if it cannot.
    pub fn custody_error(&self) -> Option<Arc<String>> {
        self.custody_error.load_full()
    }

    /// Authenticates `peer` as a client and issues it a token as `request` asks
    /// (`client_credentials`).
    pub fn issue(
        &self,
        peer: Option<&PeerCertificate>,
        request: &TokenRequest,
    ) -> Result<IssuedToken, IssueError> {
        self.grant_to(peer, request, |auth, now| {
            // The registry is read only when a token names who may act for it.
            let actor =
                (request.may_act.as_deref()).and_then(|id| self.clients.load().find(id).cloned());
            let grant = grant::client_credentials(
                &auth.client,
                request,
                self.issuer.ceiling(),
                actor.as_deref(),
            )?;
            self.mint(auth, grant, now)
        })
    }

    /// Authenticates `peer` as a client and exchanges the subject token `request` carries
    /// (RFC 8693): down-scoping a token of its own, or delegation (`grant::token_exchange`).
    pub fn exchange(
        &self,
        peer: Option<&PeerCertificate>,
        request: &ExchangeRequest,
    ) -> Result<IssuedToken, IssueError> {
        self.grant_to(peer, &request.request, |auth, now| {
            let issued_token_type = request.issued_token_type()?;
            if request.wants_txn_token() {
                return self.txn_token(auth, request, now);
            }
            self.check_exchange_fresh()?;
            let subject = self.subject_of(auth, &request.subject_token, now)?;
            if let Some(actor) = &request.actor_token {
                self.check_actor_token(auth, actor, now)?;
            }
            let exchange = Exchange {
                caller: &auth.client,
                thumbprint: &auth.peer.thumbprint,
                subject: &subject,
                now,
                ceiling: self.issuer.ceiling(),
                max_depth: self.max_exchange_depth,
            };
            let grant = grant::token_exchange(&exchange, &request.request)?;
            let issued = self.mint(auth, grant, now)?;
            Ok(IssuedToken {
                issued_token_type,
                ..issued
            })
        })
    }

    /// An exchange judges another party's token, as introspection does, so it needs the
    /// revocation state as fresh: loaded, and caught up within `max_staleness`.
    fn check_exchange_fresh(&self) -> Result<(), IssueError> {
        self.check_fresh()
            .map_err(|_| IssueError::Stale(self.stale_for()))
    }

    /// The subject token's claims: its signature first, then whether the caller may
    /// exchange it at all (`grant::exchangeable`), then its standing — so a caller learns
    /// nothing of the standing of a token it could not exchange.
    fn subject_of(
        &self,
        auth: &Authenticated<'_>,
        token: &str,
        now: UnixTime,
    ) -> Result<AccessTokenClaims, IssueError> {
        let inactive = |e: Inactive| IssueError::SubjectToken(e.label());
        let verified = self.verified(token, now).map_err(inactive)?;
        grant::exchangeable(&auth.client, &auth.peer.thumbprint, &verified.claims)?;
        self.standing(&verified, now).map_err(inactive)?;
        Ok(verified.claims.clone())
    }

    /// An `actor_token` says only who the caller is: it must be active, issued to the caller
    /// and bound to the certificate it presents.
    fn check_actor_token(
        &self,
        auth: &Authenticated<'_>,
        token: &str,
        now: UnixTime,
    ) -> Result<(), IssueError> {
        let claims = self
            .check_active(token, now)
            .map_err(|e| IssueError::ActorToken(e.label()))?;
        if !grant::issued_to(&claims, auth.client.id.as_str(), &auth.peer.thumbprint) {
            return Err(IssueError::ActorToken("another client's"));
        }
        Ok(())
    }

    /// One way through for every grant: authenticate, the gates, then the token `make`
    /// decides and signs; the outcome for an authenticated client goes to the issuance
    /// audit.
    fn grant_to(
        &self,
        peer: Option<&PeerCertificate>,
        request: &TokenRequest,
        make: impl FnOnce(&Authenticated<'_>, UnixTime) -> Result<IssuedToken, IssueError>,
    ) -> Result<IssuedToken, IssueError> {
        let auth = self
            .clients
            .load()
            .authenticate(
                peer,
                request.client_id.as_deref(),
                request.client_secret.as_deref(),
                &self.hasher,
            )
            .map_err(|e| refused(None, IssueError::from(e)))?;
        let now = self.now();
        let issued = self
            .admit_issuance(&auth.client, now)
            .and_then(|()| make(&auth, now));
        match issued {
            Ok(token) => {
                self.issuance_audit.issued(&token);
                Ok(token)
            }
            Err(e) => {
                self.issuance_audit
                    .refused(auth.client.id.as_str(), e.label());
                Err(refused(Some(auth.client.id.as_str()), e))
            }
        }
    }

    /// Signs `grant` with the current key of the algorithm its audiences take.
    fn mint(
        &self,
        auth: &Authenticated<'_>,
        grant: Grant,
        now: UnixTime,
    ) -> Result<IssuedToken, IssueError> {
        let algorithm = self.signing.for_audiences(&grant.audiences)?;
        let signer = self
            .keys
            .borrow()
            .signer_for(algorithm, self.signing.default)
            .clone();
        self.issuer.mint(now, auth, grant, &signer)
    }

    /// Every gate between an authenticated client and a new token, checked once, in order:
    /// disabled since the registry was loaded, the `issue` permission, this replica's
    /// staleness, a cut-off, the client's rate.
    fn admit_issuance(&self, client: &Client, now: UnixTime) -> Result<(), IssueError> {
        if self.blocklist.is_client_disabled(client.id.as_str()) {
            return Err(IssueError::Auth(AuthError::Disabled(client.id.to_string())));
        }
        if !client.has(Permission::Issue) {
            return Err(IssueError::NotPermitted(client.id.to_string()));
        }
        let stale = self.stale_for();
        if stale > self.max_issue_staleness {
            return Err(IssueError::Stale(stale));
        }
        if let Some(cutoff) = self.blocklist.cutoff(client.id.as_str())
            && now <= cutoff
        {
            return Err(IssueError::CutOff {
                client_id: client.id.to_string(),
                retry_after: cutoff.since(now) + Duration::from_secs(1),
            });
        }
        if let Err(retry_after) = self.issue_limits.check(&client.id) {
            return Err(IssueError::RateLimited {
                client_id: client.id.to_string(),
                retry_after,
            });
        }
        Ok(())
    }

    /// The client `peer` is, with `permission` (admins hold every permission). No secret is
    /// asked: the secret is a second factor for getting tokens only.
    pub fn caller(
        &self,
        peer: Option<&PeerCertificate>,
        permission: Permission,
    ) -> Result<Arc<Client>, CallerError> {
        let mut client = self.clients.load().identify(peer)?;
        if self.blocklist.is_client_disabled(client.id.as_str()) {
            return Err(CallerError::Auth(AuthError::Disabled(
                client.id.to_string(),
            )));
        }
        // On the data plane of a deployment with an admin listener, admin rights (revoking
        // others' tokens, introspecting any token) are not available.
        if peer.is_some_and(|p| !p.admin_allowed) && client.permissions.contains(&Permission::Admin)
        {
            client = Arc::new(client.without_admin());
        }
        if !client.has(permission) {
            return Err(CallerError::NotPermitted {
                client_id: client.id.to_string(),
                permission: permission.as_str(),
            });
        }
        Ok(client)
    }

    /// Introspects `token` for `caller` (who holds the `introspect` permission): the claims if
    /// it is active, else why not. `presented_thumbprint` is the certificate the resource
    /// server's caller presented: absent, the token is answered without a binding check (see
    /// `docs/decisions.md`); present, it must be a base64url SHA-256 — an empty or malformed
    /// one is refused, never taken for absent.
    pub fn introspect(
        &self,
        caller: &Client,
        token: &str,
        presented_thumbprint: Option<&str>,
    ) -> Result<Result<AccessTokenClaims, Inactive>, IntrospectError> {
        if let Some(text) = presented_thumbprint
            && CertificateThumbprint::from_b64url(text).is_none()
        {
            return Err(IntrospectError::MalformedThumbprint);
        }
        self.check_fresh()?;
        let now = self.now();
        Ok(self.check_active(token, now).and_then(|claims| {
            let visible = caller.has(Permission::Admin)
                || claims
                    .aud
                    .to_vec()
                    .iter()
                    .any(|a| caller.introspect_audiences.contains(a));
            if !visible {
                return Err(Inactive::AudienceNotVisible);
            }
            // Well-formed, so spelled as `cnf` spells it: base64url decoding is strict.
            if let Some(presented) = presented_thumbprint
                && !constant_time_eq(presented, &claims.cnf.x5t_s256)
            {
                return Err(Inactive::CertificateMismatch);
            }
            Ok(claims)
        }))
    }

    /// Whether `token` is active at `now`, whoever asks. The signature check is cached; the
    /// times, key status and revocation state are checked on every call — the token's own
    /// and its chain's: every ancestor token and every party (client, subject, actors).
    fn check_active(&self, token: &str, now: UnixTime) -> Result<AccessTokenClaims, Inactive> {
        let verified = self.verified(token, now)?;
        self.standing(&verified, now)?;
        Ok(verified.claims.clone())
    }

    /// The token's signature, key, `typ` and issuer checked (cached until it expires).
    fn verified(&self, token: &str, now: UnixTime) -> Result<Arc<Verified>, Inactive> {
        let hash = crypto::sha256(token.as_bytes());
        if let Some(hit) = self.verified.get(&hash) {
            return Ok(hit);
        }
        let ring = self.key_ring();
        let verified = Arc::new(token::verify_signature(
            token,
            ring.key_set(),
            self.issuer.name(),
        )?);
        let ttl = verified.claims.exp.saturating_add(self.leeway).since(now);
        if !ttl.is_zero() {
            self.verified.insert(hash, verified.clone(), ttl);
        }
        Ok(verified)
    }

    /// A verified token's standing now: its times, its key, and the revocation state of the
    /// token and its chain (every ancestor, every party).
    fn standing(&self, verified: &Verified, now: UnixTime) -> Result<(), Inactive> {
        let claims = &verified.claims;
        token::check_times(claims, now, self.leeway)?;
        let ring = self.key_ring();
        if ring.find(&verified.kid).is_none() || self.blocklist.is_key_revoked(&verified.kid) {
            return Err(Inactive::KeyRevoked);
        }
        if let Some(struck) = self.blocklist.strikes(claims.links(), claims.parties()) {
            return Err(struck.into());
        }
        let registry = self.clients.load();
        if !claims
            .parties()
            .all(|p| registry.find(p).is_some_and(|c| c.enabled))
        {
            return Err(Inactive::ClientDisabled);
        }
        Ok(())
    }

    /// Decides what revoking `token` at `caller`'s request changes (SPEC §7): nothing for an
    /// unverifiable, unknown, expired or already-revoked token; a refusal for another
    /// client's token unless the caller is an admin; else the token's revocation.
    pub fn revocation_of(
        &self,
        caller: &Client,
        token: &str,
    ) -> Result<Option<Change>, RevokeError> {
        let ring = self.key_ring();
        let claims = match token::verify_signature(token, ring.key_set(), self.issuer.name()) {
            Ok(verified) => verified.claims,
            Err(e) => {
                tracing::info!(caller = %caller.id, reason = %e, "revocation of an unverifiable token: nothing to do");
                return Ok(None);
            }
        };
        let is_admin = caller.has(Permission::Admin);
        let is_owner = claims.client_id == caller.id.as_str();
        if !is_owner && !is_admin {
            return Err(RevokeError::NotOwner {
                caller: caller.id.to_string(),
                owner: claims.client_id,
            });
        }
        if self.blocklist.is_token_revoked(&claims.jti) {
            return Ok(None);
        }
        let now = self.now();
        if claims.exp.saturating_add(self.leeway) <= now {
            return Ok(None);
        }
        self.blocklist.check_caps(caller.id.as_str(), is_admin)?;
        Ok(Some(Change::TokenRevoked {
            token_id: claims.jti,
            expires_at: claims.exp,
            client_id: Some(claims.client_id),
            revoked_by: caller.id.to_string(),
        }))
    }

    /// An admin's revocation of a bare token id: held for the longest a token can live.
    pub fn revocation_of_id(
        &self,
        caller: &Client,
        token_id: &str,
    ) -> Result<Option<Change>, RevokeError> {
        let well_formed = !token_id.is_empty()
            && token_id.len() <= MAX_TOKEN_ID_LEN
            && token_id.bytes().all(|b| b.is_ascii_graphic());
        if !well_formed {
            return Err(RevokeError::InvalidArgument(format!(
                "token_id must be 1–{MAX_TOKEN_ID_LEN} printable ASCII characters"
            )));
        }
        if self.blocklist.is_token_revoked(token_id) {
            return Ok(None);
        }
        self.blocklist.check_caps(caller.id.as_str(), true)?;
        Ok(Some(Change::TokenRevoked {
            token_id: token_id.to_owned(),
            expires_at: self.blocklist.bare_token_expiry(self.now()),
            client_id: None,
            revoked_by: caller.id.to_string(),
        }))
    }

    /// A client cut-off at now + leeway: every token issued to it until then is revoked.
    pub fn cutoff_of(&self, client_id: &str) -> Result<Change, RevokeError> {
        if self.clients.load().find(client_id).is_none() {
            return Err(RevokeError::InvalidArgument(format!(
                "client {client_id:?} is not registered"
            )));
        }
        Ok(Change::ClientCutoff {
            client_id: client_id.to_owned(),
            issued_at_or_before: self.now().saturating_add(self.leeway),
        })
    }

    /// Refuses when the revocation state is not loaded or is older than `max_staleness`:
    /// what introspection and revocation watches need.
    pub fn check_fresh(&self) -> Result<(), CallerError> {
        if !self.blocklist.is_loaded() {
            return Err(CallerError::NotReady);
        }
        let stale = self.stale_for();
        if stale > self.max_staleness {
            return Err(CallerError::Stale(stale));
        }
        Ok(())
    }

    /// Records a successful catch-up with the store.
    pub fn mark_fresh(&self) {
        self.freshness.mark(self.clock.monotonic());
    }

    /// When the last successful catch-up with the store was, on the wall clock.
    pub fn fresh_as_of(&self) -> std::time::SystemTime {
        let now = self.clock.now();
        now.checked_sub(self.stale_for()).unwrap_or(now)
    }

    /// How long since the last successful catch-up with the store.
    pub fn stale_for(&self) -> Duration {
        self.freshness.stale_for(self.clock.monotonic())
    }

    /// How client secrets are stored (HMAC under the pepper).
    pub fn secret_hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    /// The blocklist.
    pub fn blocklist(&self) -> &Arc<Blocklist> {
        &self.blocklist
    }

    /// The key ring as it is now.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.keys.borrow().clone()
    }

    /// A receiver that sees every new key ring.
    pub fn watch_keys(&self) -> watch::Receiver<Arc<KeyRing>> {
        self.keys.clone()
    }

    /// Whether a registered client pins this certificate thumbprint (no copy of the registry).
    pub fn is_pinned(&self, thumbprint: &tokenmint_core::crypto::CertificateThumbprint) -> bool {
        self.clients.load().is_pinned(thumbprint)
    }

    /// The client registry as it is now.
    pub fn clients(&self) -> Arc<ClientRegistry> {
        self.clients.load_full()
    }

    /// Replaces the client registry (after a reload from the store).
    pub fn replace_clients(&self, registry: ClientRegistry) {
        self.clients.store(Arc::new(registry));
    }

    /// The issuer this authority signs as.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// Reads the authority's clock (Unix seconds).
    pub fn now(&self) -> UnixTime {
        self.clock.unix_now()
    }
}

/// Compares two strings in time independent of where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
