//! Access tokens (RFC 9068 profile): the claims (with a delegated token's actor chain and
//! ancestors), why issuance is refused, minting what a grant decided (the grants are
//! [`crate::grant`]'s), and verification against a key set (JWS itself is [`crate::jose`]'s).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    client::{AuthError, Authenticated},
    clock::UnixTime,
    crypto::{self, CryptoError},
    jose::{self, CompactSigner, JwsError, KeySet},
    oauth::ErrorCode,
    revocation::Link,
};

/// The most scopes or audiences one request may name.
pub const MAX_REQUESTED_VALUES: usize = 64;
/// The longest token looked at.
pub const MAX_TOKEN_LEN: usize = jose::MAX_JWS_LEN;

/// The token type URIs of RFC 8693 §3 this issuer takes and gives: an access token, which
/// is a JWT.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The JWT token type (RFC 8693 §3).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The `aud` claim: one value as a string, several as an array (RFC 7519 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    fn from_vec(mut values: Vec<String>) -> Self {
        if values.len() == 1 {
            Audience::One(values.remove(0))
        } else {
            Audience::Many(values)
        }
    }

    /// The audiences, without copying them.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Audience::One(a) => (Some(a.as_str()), &[][..]),
            Audience::Many(many) => (None, many.as_slice()),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }

    /// The audiences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(many) => many.clone(),
        }
    }
}

/// The confirmation claim binding a token to a certificate (RFC 8705 §3.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// base64url SHA-256 of the certificate's DER.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// One link of an actor chain (`act`, RFC 8693 §4.1): the party acting, and whoever acted
/// before it in a longer chain. Parties are client ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The acting party.
    pub sub: String,
    /// The party that acted before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// The acting parties, the current one first.
    pub fn chain(&self) -> Vec<&str> {
        self.parties().collect()
    }

    /// The acting parties, the current one first, without collecting them.
    pub fn parties(&self) -> impl Iterator<Item = &str> + Clone {
        std::iter::successors(Some(self), |actor| actor.act.as_deref()).map(|a| a.sub.as_str())
    }

    /// The chain whose parties are `chain`, the current actor first (`None`: empty).
    pub fn from_chain(chain: &[String]) -> Option<Actor> {
        chain.iter().rev().fold(None, |before, sub| {
            Some(Actor {
                sub: sub.clone(),
                act: before.map(Box::new),
            })
        })
    }
}

/// A token another was exchanged from, as the exchanged token lists it: enough to judge
/// its revocation without it — its id, the client it was issued to and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    /// Its `jti`.
    pub jti: String,
    /// Its `client_id`.
    pub client_id: String,
    /// Its `iat`.
    pub iat: UnixTime,
}

/// The `may_act` claim (RFC 8693 §4.4): the one party the subject lets act for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MayAct {
    /// The client id of that party.
    pub sub: String,
}

/// The claims of an access token. Nothing secret is ever in them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the party the token is for — the client itself, or for a delegated token the
    /// client the chain acts for.
    pub sub: String,
    /// The client the token was issued to (and whose certificate it is bound to).
    pub client_id: String,
    /// Audiences.
    pub aud: Audience,
    /// Space-delimited scopes; absent when none were granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Issued at (Unix seconds).
    pub iat: UnixTime,
    /// Not before (Unix seconds).
    pub nbf: UnixTime,
    /// Expires (Unix seconds).
    pub exp: UnixTime,
    /// Token id: 128 random bits, base64url.
    pub jti: String,
    /// Certificate binding.
    pub cnf: Confirmation,
    /// The actor chain of a delegated token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// Who may act for the subject (asked for at issuance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<MayAct>,
    /// The tokens this one was exchanged from, oldest first: revoking any of them, or
    /// cutting off the client one was issued to, revokes this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Ancestor>,
}

impl AccessTokenClaims {
    /// Every party in the token's chain: the client it was issued to, its subject and each
    /// actor. Disabling or cutting off any of them makes the token inactive.
    pub fn parties(&self) -> impl Iterator<Item = &str> + Clone {
        parties(&self.client_id, &self.sub, self.act.as_ref())
    }

    /// This token as an ancestor of one exchanged from it.
    pub fn as_ancestor(&self) -> Ancestor {
        Ancestor {
            jti: self.jti.clone(),
            client_id: self.client_id.clone(),
            iat: self.iat,
        }
    }

    /// The tokens of its chain, as the revocation state judges them: itself first, then
    /// its ancestors.
    pub fn links(&self) -> impl Iterator<Item = Link<'_>> + Clone {
        links(&self.jti, &self.client_id, self.iat, &self.ancestors)
    }

    /// The granted scopes as a list.
    pub fn scopes(&self) -> Vec<String> {
        split_scope(self.scope.as_deref().unwrap_or_default())
            .map(str::to_owned)
            .collect()
    }
}

/// The requested values if each is among `allowed` (else `refuse` names the first that is
/// not), or `default` when none were requested.
pub(crate) fn within(
    requested: &[String],
    allowed: &[String],
    default: &[String],
    refuse: fn(String) -> IssueError,
) -> Result<Vec<String>, IssueError> {
    if requested.is_empty() {
        return Ok(default.to_vec());
    }
    let requested = dedup(requested);
    match requested.iter().find(|v| !allowed.contains(v)) {
        Some(bad) => Err(refuse(bad.chars().take(140).collect())),
        None => Ok(requested),
    }
}

/// `values` in their order, each once.
fn dedup(values: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    values
        .iter()
        .filter(|v| seen.insert(v.as_str()))
        .cloned()
        .collect()
}

/// The scopes of a space-separated `scope` value (RFC 6749 §3.3), empty ones skipped.
pub fn split_scope(scope: &str) -> impl Iterator<Item = &str> {
    scope.split(' ').filter(|s| !s.is_empty())
}

/// Every party of a token's chain: the client it was issued to, then its subject and each
/// actor where they are not that client (a party named twice further up the chain is named
/// twice here; judging it again costs one lookup). Nothing is allocated: this is on every
/// verification.
pub fn parties<'a>(
    client_id: &'a str,
    sub: &'a str,
    act: Option<&'a Actor>,
) -> impl Iterator<Item = &'a str> + Clone {
    let actors = act.into_iter().flat_map(Actor::parties);
    std::iter::once(client_id).chain(
        std::iter::once(sub)
            .chain(actors)
            .filter(move |party| *party != client_id),
    )
}

/// The tokens of a chain: the one with `jti`, `client_id` and `iat` first, then
/// `ancestors`.
pub fn links<'a>(
    jti: &'a str,
    client_id: &'a str,
    iat: UnixTime,
    ancestors: &'a [Ancestor],
) -> impl Iterator<Item = Link<'a>> + Clone {
    let own = Link {
        token_id: jti,
        client_id,
        issued_at: iat,
    };
    std::iter::once(own).chain(ancestors.iter().map(|a| Link {
        token_id: &a.jti,
        client_id: &a.client_id,
        issued_at: a.iat,
    }))
}

/// What a client asks for. Empty lists and no lifetime mean the client's defaults.
#[derive(Clone, Default)]
pub struct TokenRequest {
    /// The client it claims to be (optional: derived from the certificate).
    pub client_id: Option<String>,
    /// Its secret, if it has one.
    pub client_secret: Option<String>,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Requested audiences.
    pub audiences: Vec<String>,
    /// Requested lifetime.
    pub lifetime: Option<RequestedLifetime>,
    /// The client it lets act for it (`may_act`), at issuance.
    pub may_act: Option<String>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "…"))
            .field("scopes", &self.scopes)
            .field("audiences", &self.audiences)
            .field("lifetime", &self.lifetime)
            .field("may_act", &self.may_act)
            .finish()
    }
}

/// A requested lifetime as the wire carries it: it may be zero or negative, which is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestedLifetime {
    /// Whole seconds (may be negative).
    pub seconds: i64,
    /// Fractional nanoseconds, same sign as `seconds`.
    pub nanos: i32,
}

/// A signed token and what was granted.
#[derive(Clone)]
pub struct IssuedToken {
    /// The compact JWS.
    pub access_token: String,
    /// Seconds until expiry.
    pub expires_in: i64,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Granted audiences.
    pub audiences: Vec<String>,
    /// The signing key's id.
    pub key_id: String,
    /// The token id (safe to log).
    pub token_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// Whom it is for (`sub`): the client itself, or a delegated token's subject.
    pub subject: String,
    /// The token it was exchanged from (its last ancestor), if any.
    pub exchanged_from: Option<String>,
    /// What it is, as a token exchange answers (`issued_token_type`): an access token (or
    /// the JWT an exchange asked for), or a transaction token.
    pub issued_token_type: &'static str,
    /// The answer's `token_type`: `Bearer`, or `N_A` for a transaction token, which is never
    /// an access token.
    pub token_type: &'static str,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token_id", &self.token_id)
            .field("client_id", &self.client_id)
            .field("subject", &self.subject)
            .field("exchanged_from", &self.exchanged_from)
            .field("expires_in", &self.expires_in)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Why a token was not issued. `code()` is what the client sees; `Display` is the log detail.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The peer is not an acceptable client.
    #[error("client authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// The client lacks the `issue` permission.
    #[error("client {0} does not have the issue permission")]
    NotPermitted(String),
    /// A requested scope is malformed or not allowed.
    #[error("scope {0:?} is not allowed for this client")]
    Scope(String),
    /// A requested audience is malformed or not allowed.
    #[error("audience {0:?} is not allowed for this client")]
    Audience(String),
    /// No audience was requested and the client has no default.
    #[error("no audience was requested and the client has no default audience")]
    NoAudience,
    /// The requested lifetime is zero, negative or malformed.
    #[error("the requested lifetime must be at least one second")]
    Lifetime,
    /// The request names too many values.
    #[error("at most {MAX_REQUESTED_VALUES} {0} may be requested")]
    TooMany(&'static str),
    /// The client was cut off and the cut-off has not passed yet.
    #[error("issuance to client {client_id} is paused by a cut-off; retry in {retry_after:?}")]
    CutOff {
        /// The client.
        client_id: String,
        /// When the cut-off passes.
        retry_after: Duration,
    },
    /// The client is over its issuance rate (`[limits]`).
    #[error("client {client_id} is over its issuance rate; retry in {retry_after:?}")]
    RateLimited {
        /// The client.
        client_id: String,
        /// When a token is there again.
        retry_after: Duration,
    },
    /// This replica has not caught up with the store for longer than `max_issue_staleness`.
    #[error("no catch-up with the store for {0:?}: issuance is paused")]
    Stale(Duration),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The device that holds the signing key (an HSM) cannot sign now.
    #[error("signing is unavailable: {0}")]
    SignerUnavailable(String),
    /// The signed token would be longer than verifiers accept ([`crate::jose::MAX_JWS_LEN`]):
    /// a large post-quantum signature and many scopes or audiences, or large transaction
    /// contexts.
    #[error(
        "the token would be {0} bytes, over the {max} bytes verifiers accept: request fewer scopes or audiences, or less context",
        max = crate::jose::MAX_JWS_LEN
    )]
    TooLarge(usize),
    /// The granted audiences are signed for with different algorithms.
    #[error(
        "audiences {0:?} and {1:?} take tokens signed with different algorithms: request them in separate tokens"
    )]
    MixedAlgorithms(String, String),
    /// A token-exchange request names a token type this issuer does not take or give.
    #[error("{0}")]
    TokenType(&'static str),
    /// The `subject_token` is not active here (the detail says why; the caller is told less).
    #[error("the subject_token is not active: {0}")]
    SubjectToken(&'static str),
    /// The `actor_token` is not active, or not the caller's own.
    #[error("the actor_token is not acceptable: {0}")]
    ActorToken(&'static str),
    /// The exchange policy refuses.
    #[error("{0}")]
    Exchange(ExchangeRefusal),
    /// An exchange asks for a scope it may not grant.
    #[error(
        "scope {0:?} is not one this exchange may grant: it must be in the subject_token and, when acting for another, among the scopes this client may pass on"
    )]
    ExchangeScope(String),
    /// An exchange asks for an audience it may not grant.
    #[error(
        "audience {0:?} is not one this exchange may grant: one of the subject_token's when narrowing a token of one's own, else one this client may call on another's behalf"
    )]
    ExchangeAudience(String),
    /// A transaction token is refused (draft-ietf-oauth-transaction-tokens).
    #[error("{0}")]
    Txn(TxnRefusal),
    /// `may_act` names a client that may not act for this one (or none registered).
    #[error("may_act names a client that is not registered to act for this client")]
    MayAct,
}

/// Why the exchange policy refuses a token exchange (RFC 8693 §2.2.2: `invalid_request`).
/// Each says what an honest caller can change, and nothing of other clients' registrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeRefusal {
    /// The subject token is another client's and not for an audience the caller serves.
    #[error("the subject_token is not for an audience this client serves")]
    NotServed,
    /// The caller's registration does not let it act for the subject.
    #[error("this client is not registered to act for the subject_token's subject")]
    MayNotActFor,
    /// The subject token's `may_act` names another party.
    #[error("the subject_token's may_act does not name this client")]
    MayActOther,
    /// The chain would hold more exchanges than `tokens.max_exchange_depth`.
    #[error(
        "the token has been exchanged {0} times already: no more exchanges are allowed behind it"
    )]
    TooDeep(usize),
    /// None of the subject token's scopes is one the caller may pass on.
    #[error("none of the subject_token's scopes is one this client may pass on")]
    NoScopeToPassOn,
    /// `may_act` is asked for at issuance only.
    #[error("may_act is asked for with client_credentials, not in an exchange")]
    MayActInExchange,
}

impl IssueError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            IssueError::Auth(_) => "authentication",
            IssueError::NotPermitted(_) => "not_permitted",
            IssueError::Scope(_) => "scope",
            IssueError::Audience(_) => "audience",
            IssueError::NoAudience => "no_audience",
            IssueError::Lifetime => "lifetime",
            IssueError::TooMany(_) => "too_many_values",
            IssueError::CutOff { .. } => "cut_off",
            IssueError::RateLimited { .. } => "rate_limited",
            IssueError::Stale(_) => "stale",
            IssueError::Signing(_) => "signing",
            IssueError::SignerUnavailable(_) => "signer_unavailable",
            IssueError::MixedAlgorithms(..) => "mixed_algorithms",
            IssueError::TooLarge(_) => "too_large",
            IssueError::TokenType(_) => "token_type",
            IssueError::SubjectToken(_) => "subject_token",
            IssueError::ActorToken(_) => "actor_token",
            IssueError::Exchange(_) => "exchange_policy",
            IssueError::ExchangeScope(_) => "scope",
            IssueError::ExchangeAudience(_) => "audience",
            IssueError::MayAct => "may_act",
            IssueError::Txn(_) => "txn_token",
        }
    }

    /// The OAuth2 error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            IssueError::Auth(_) => ErrorCode::InvalidClient,
            IssueError::NotPermitted(_) => ErrorCode::UnauthorizedClient,
            IssueError::Scope(_)
            | IssueError::ExchangeScope(_)
            | IssueError::Exchange(ExchangeRefusal::NoScopeToPassOn)
            | IssueError::Txn(TxnRefusal::Scope(_)) => ErrorCode::InvalidScope,
            IssueError::Audience(_)
            | IssueError::ExchangeAudience(_)
            | IssueError::Txn(TxnRefusal::Audience(_))
            | IssueError::NoAudience
            | IssueError::MixedAlgorithms(..) => ErrorCode::InvalidTarget,
            IssueError::Lifetime
            | IssueError::TooMany(_)
            | IssueError::TooLarge(_)
            | IssueError::TokenType(_)
            | IssueError::SubjectToken(_)
            | IssueError::ActorToken(_)
            | IssueError::Exchange(_)
            | IssueError::Txn(_)
            | IssueError::MayAct => ErrorCode::InvalidRequest,
            IssueError::CutOff { .. }
            | IssueError::Stale(_)
            | IssueError::RateLimited { .. }
            | IssueError::SignerUnavailable(_) => ErrorCode::TemporarilyUnavailable,
            IssueError::Signing(_) => ErrorCode::ServerError,
        }
    }

    /// What the client is told: actionable, but revealing nothing about other clients or keys.
    pub fn public_message(&self) -> String {
        match self {
            IssueError::Auth(AuthError::NoCertificate) => {
                "a client certificate is required: connect with mutual TLS".into()
            }
            IssueError::Auth(AuthError::BadSecret(_)) | IssueError::Auth(AuthError::UnexpectedSecret(_)) => {
                "client authentication failed: the client secret is missing, wrong or not expected".into()
            }
            IssueError::Auth(AuthError::Ambiguous(_)) => {
                "client authentication failed: the certificate matches several clients; name one with client_id".into()
            }
            IssueError::Auth(AuthError::CertificateMismatch(_)) | IssueError::Auth(AuthError::UnknownClient(_)) => {
                "client authentication failed: the certificate does not belong to the named client_id".into()
            }
            IssueError::Auth(_) => {
                "client authentication failed: the certificate does not identify an enabled client".into()
            }
            IssueError::Signing(_) => "the token could not be signed; try again".into(),
            IssueError::SignerUnavailable(_) => {
                "the signing keys are unavailable for now; try again shortly".into()
            }
            // Invalid, expired, revoked, forged or another issuer's: all alike to the caller.
            IssueError::SubjectToken(_) => {
                "the subject_token is not an active access token of this issuer".into()
            }
            IssueError::ActorToken(_) => {
                "the actor_token is not an active access token of this issuer issued to this client and bound to its certificate".into()
            }
            other => other.to_string(),
        }
    }
}

/// What a grant type decided for a request (see `grant`): what the token will carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Audiences granted.
    pub audiences: Vec<String>,
    /// Lifetime granted, whole seconds.
    pub lifetime: Duration,
    /// Whom the token is for when not the client itself (a delegated token's subject).
    pub subject: Option<String>,
    /// The actor chain of a delegated token.
    pub act: Option<Actor>,
    /// Who may act for the subject.
    pub may_act: Option<MayAct>,
    /// The tokens it was exchanged from, oldest first.
    pub ancestors: Vec<Ancestor>,
}

/// Signs access tokens for one issuer.
#[derive(Clone, Debug)]
pub struct Issuer {
    issuer: String,
    ceiling: Duration,
}

impl Issuer {
    /// An issuer named `issuer` (the `iss` claim) granting at most `ceiling`.
    pub fn new(issuer: impl Into<String>, ceiling: Duration) -> Self {
        Self {
            issuer: issuer.into(),
            ceiling,
        }
    }

    /// The `iss` value.
    pub fn name(&self) -> &str {
        &self.issuer
    }

    /// The most any grant gives (`tokens.max_lifetime`).
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// Mints and signs the token `grant` decided for an authenticated client at `now` (Unix
    /// seconds), bound to the certificate it authenticated with. Every grant type ends here.
    pub fn mint(
        &self,
        now: UnixTime,
        auth: &Authenticated<'_>,
        grant: Grant,
        signer: &CompactSigner,
    ) -> Result<IssuedToken, IssueError> {
        let (client, peer) = (&auth.client, auth.peer);
        let jti = crypto::random_id().map_err(|e| IssueError::Signing(e.to_string()))?;
        let lifetime = crate::clock::whole_secs(grant.lifetime);
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: grant.subject.unwrap_or_else(|| client.id.to_string()),
            client_id: client.id.to_string(),
            aud: Audience::from_vec(grant.audiences.clone()),
            scope: (!grant.scopes.is_empty()).then(|| grant.scopes.join(" ")),
            iat: now,
            nbf: now,
            exp: now.saturating_add(grant.lifetime),
            jti: jti.clone(),
            cnf: Confirmation {
                x5t_s256: peer.thumbprint.to_b64url(),
            },
            act: grant.act,
            may_act: grant.may_act,
            ancestors: grant.ancestors,
        };
        let access_token = sign_claims(signer, &claims)?;
        let exchanged_from = claims.ancestors.last().map(|a| a.jti.clone());
        let subject = claims.sub;
        Ok(IssuedToken {
            access_token,
            expires_in: lifetime,
            scopes: grant.scopes,
            audiences: grant.audiences,
            key_id: signer.kid().to_string(),
            token_id: jti,
            client_id: client.id.to_string(),
            subject,
            exchanged_from,
            issued_token_type: ACCESS_TOKEN_TYPE,
            token_type: "Bearer",
        })
    }
}

/// Why a transaction token is refused (besides the subject token itself, which the server
/// judges first).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnRefusal {
    /// Transaction tokens are off (`[txn_tokens]` has no trust domain).
    #[error("this issuer does not issue transaction tokens")]
    Off,
    /// `audience` is missing or not the trust domain.
    #[error("audience must name the trust domain, {0:?}")]
    Audience(String),
    /// `scope` is missing.
    #[error("scope is required: the purpose of the transaction")]
    NoScope,
    /// A scope the subject token does not hold.
    #[error("scope {0:?} is not in the subject_token: a transaction token is never broader")]
    Scope(String),
    /// A replacement would change a member of `tctx` or `rctx`.
    #[error("{0} member {1:?} cannot change in a replacement; members may only be added")]
    ContextChanged(&'static str, String),
    /// The caller's client id cannot join `req_wl`.
    #[error("the requesting workload's id cannot be listed in req_wl")]
    Requester,
    /// `request_context` or `request_details` is not a bounded JSON object.
    #[error("{0}")]
    Context(String),
    /// A self-signed or unsigned subject that does not say who, or is not good.
    #[error("the {0} subject_token {1}")]
    Asserted(&'static str, String),
    /// A self-signed or unsigned subject from a client not registered for them.
    #[error(
        "this client is not registered to name a subject with a self-signed or unsigned subject_token"
    )]
    SubjectNotAllowed,
}

impl From<TxnRefusal> for IssueError {
    fn from(refusal: TxnRefusal) -> Self {
        IssueError::Txn(refusal)
    }
}

/// `claims` signed as a compact JWS by `signer`: a device that cannot sign now is
/// [`IssueError::SignerUnavailable`], and a token no verifier would read (longer than
/// [`crate::jose::MAX_JWS_LEN`]) is refused here, not at its first use.
pub fn sign_claims(signer: &CompactSigner, claims: &impl Serialize) -> Result<String, IssueError> {
    let payload = serde_json::to_vec(claims).map_err(|e| IssueError::Signing(e.to_string()))?;
    let token = signer.sign_compact(&payload).map_err(|e| match e {
        CryptoError::Device(why) => IssueError::SignerUnavailable(why),
        other => IssueError::Signing(other.to_string()),
    })?;
    if token.len() > crate::jose::MAX_JWS_LEN {
        return Err(IssueError::TooLarge(token.len()));
    }
    Ok(token)
}

/// Why a token did not verify. Callers outside see only "inactive"; this is for logs and metrics.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The JWS itself: shape, `typ`, key, algorithm, signature.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// `iss` is not this issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// Past `exp` (with leeway).
    #[error("expired")]
    Expired,
    /// Before `nbf` or `iat` (with leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// A transaction token for another trust domain.
    #[error("another trust domain")]
    WrongTrustDomain,
}

/// A token whose signature, key, `typ` and issuer checked out — times not yet checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Its claims.
    pub claims: AccessTokenClaims,
    /// The key that signed it.
    pub kid: String,
}

/// Everything but the times: size, `typ`, the key its `kid` names (and that key's
/// algorithm), the signature (only its low-S form, for a key created since the cut-over), the
/// claims' presence and JSON types, and the issuer.
pub fn verify_signature(token: &str, keys: &KeySet, issuer: &str) -> Result<Verified, VerifyError> {
    let verified = jose::verify_compact::<AccessTokenClaims>(token, keys, ACCESS_TOKEN_TYPES)?;
    if verified.payload.iss != issuer {
        return Err(VerifyError::WrongIssuer);
    }
    Ok(Verified {
        claims: verified.payload,
        kid: verified.kid,
    })
}

/// The `typ` values an access token may carry (RFC 9068 §2.1), compared without case.
const ACCESS_TOKEN_TYPES: &[&str] = &["at+jwt", "application/at+jwt"];

/// `exp`, `nbf` and `iat` against `now` with `leeway`.
pub fn check_times(
    claims: &AccessTokenClaims,
    now: UnixTime,
    leeway: Duration,
) -> Result<(), VerifyError> {
    if claims.exp.saturating_add(leeway) <= now {
        return Err(VerifyError::Expired);
    }
    if claims.nbf.saturating_sub(leeway) > now || claims.iat.saturating_sub(leeway) > now {
        return Err(VerifyError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_tokens_only_party_is_its_client() {
        assert_eq!(parties("a", "a", None).collect::<Vec<_>>(), ["a"]);
        assert_eq!(parties("a", "b", None).collect::<Vec<_>>(), ["a", "b"]);
    }
    use crate::{
        crypto::{Algorithm, Kek},
        keys::{KekRing, KeyRecord, KeyRing, KeyState},
    };

    const ISSUER: &str = "https://issuer.test";

    /// A ring whose one key is current, of `algorithm`, low-S-only or not.
    fn ring(algorithm: Algorithm, low_s_only: bool) -> KeyRing {
        let kek = Kek::generate().unwrap();
        let keks = KekRing::try_new(vec![Kek::try_from_base64(&kek.to_base64()).unwrap()]).unwrap();
        let mut record =
            KeyRecord::generate(algorithm, KeyState::Current, &kek, UnixTime::EPOCH).unwrap();
        record.low_s_only = low_s_only;
        KeyRing::try_build(&[record], &keks).unwrap()
    }

    fn token(ring: &KeyRing, jti: usize) -> String {
        let claims = AccessTokenClaims {
            iss: ISSUER.into(),
            sub: "c".into(),
            client_id: "c".into(),
            aud: Audience::One("a".into()),
            scope: None,
            iat: UnixTime::from_secs(0),
            nbf: UnixTime::from_secs(0),
            exp: UnixTime::from_secs(1),
            jti: jti.to_string(),
            cnf: Confirmation {
                x5t_s256: String::new(),
            },
            act: None,
            may_act: None,
            ancestors: Vec::new(),
        };
        ring.signer()
            .sign_compact(&serde_json::to_vec(&claims).unwrap())
            .unwrap()
    }

    /// The token with its ES256 signature replaced by the other spelling, (r, n − s).
    fn twin(token: &str) -> String {
        let (input, signature) = token.rsplit_once('.').unwrap();
        let twin = crypto::es256_twin(&crypto::b64url_decode(signature).unwrap()).unwrap();
        format!("{input}.{}", crypto::b64url(&twin))
    }

    #[test]
    fn a_low_s_only_key_refuses_the_high_s_twin_as_a_bad_signature() {
        let ring = ring(Algorithm::Es256, true);
        for i in 0..16 {
            let token = token(&ring, i);
            assert!(verify_signature(&token, ring.key_set(), ISSUER).is_ok());
            assert_eq!(
                verify_signature(&twin(&token), ring.key_set(), ISSUER),
                Err(VerifyError::Jws(JwsError::BadSignature))
            );
        }
    }

    #[test]
    fn a_key_from_before_the_cut_over_accepts_both_forms() {
        let ring = ring(Algorithm::Es256, false);
        for i in 0..16 {
            let token = token(&ring, i);
            assert!(verify_signature(&token, ring.key_set(), ISSUER).is_ok());
            assert!(verify_signature(&twin(&token), ring.key_set(), ISSUER).is_ok());
        }
    }

    #[test]
    fn eddsa_signatures_are_never_read_as_es256() {
        // Half of Ed25519 signatures look "high-S" read as r ‖ s; none may be refused for it.
        let ring = ring(Algorithm::EdDsa, true);
        for i in 0..64 {
            let token = token(&ring, i);
            assert!(
                verify_signature(&token, ring.key_set(), ISSUER).is_ok(),
                "EdDSA token {i} refused"
            );
        }
    }
}
