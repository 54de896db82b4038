//! Why a token was refused, as one typed error with a stable label for logs and metrics.

use std::time::Duration;

/// Why a token did not verify. `Display` is safe to log: it never contains the token.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The request carried no bearer token (the layer's refusal; `verify` never returns it).
    #[error("no bearer token")]
    Missing,
    /// Not a well-formed compact JWS with access-token claims.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `typ` is not `at+jwt` (RFC 9068).
    #[error("the token's typ is not at+jwt")]
    WrongType,
    /// No `kid`, or one that names no key of the issuer's key set, even after a refresh.
    #[error("the token names no key of the issuer's key set")]
    UnknownKey,
    /// The header's `alg` is not the algorithm of the key its `kid` names.
    #[error("the token's alg is not its key's algorithm")]
    AlgorithmMismatch,
    /// The signature does not verify (or is the high-S form tokenmint never makes).
    #[error("bad signature")]
    BadSignature,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// None of the token's audiences is one this verifier serves.
    #[error("the token is not for this audience")]
    WrongAudience,
    /// Past `exp` (with leeway).
    #[error("expired")]
    Expired,
    /// Before `nbf` or `iat` (with leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// The token is bound to a certificate and the caller presented none.
    #[error("the token is bound to a certificate and the caller presented none")]
    CertificateRequired,
    /// The token is bound to a certificate other than the caller's.
    #[error("the token is bound to another certificate")]
    CertificateMismatch,
    /// The token carries no certificate binding and unbound tokens are not accepted.
    #[error("the token is not bound to a certificate")]
    Unbound,
    /// The token was revoked.
    #[error("the token is revoked")]
    Revoked,
    /// A token it was exchanged from was revoked.
    #[error("a token it was exchanged from is revoked")]
    AncestorRevoked,
    /// The key that signed it was revoked.
    #[error("the token's signing key is revoked")]
    KeyRevoked,
    /// Its client, or another party of its chain (subject, actor), is disabled.
    #[error("a party of the token's chain is disabled")]
    ClientDisabled,
    /// Its client, or another party of its chain, was cut off after it was issued.
    #[error("a party of the token's chain was cut off")]
    ClientCutOff,
    /// No word from the issuer for longer than the staleness bound: failing closed.
    #[error("no word from the issuer for {0:?}: failing closed")]
    Stale(Duration),
    /// The key set (or, for the gRPC source, the revocation state) has not arrived yet.
    #[error("the issuer's key set or revocation state has not arrived yet")]
    NotReady,
}

impl VerifyError {
    /// A short stable label, for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
            Self::WrongType => "wrong_type",
            Self::UnknownKey => "unknown_key",
            Self::AlgorithmMismatch => "algorithm_mismatch",
            Self::BadSignature => "bad_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::CertificateRequired => "certificate_required",
            Self::CertificateMismatch => "certificate_mismatch",
            Self::Unbound => "unbound",
            Self::Revoked => "revoked",
            Self::AncestorRevoked => "ancestor_revoked",
            Self::KeyRevoked => "key_revoked",
            Self::ClientDisabled => "client_disabled",
            Self::ClientCutOff => "client_cut_off",
            Self::Stale(_) => "stale",
            Self::NotReady => "not_ready",
        }
    }

    /// Whether the refusal says nothing about the token: this verifier cannot vouch for its
    /// state (stale or not ready). Served as `503`/`UNAVAILABLE`, not `401`.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Stale(_) | Self::NotReady)
    }
}

impl From<tokenmint_core::jose::JwsError> for VerifyError {
    fn from(error: tokenmint_core::jose::JwsError) -> Self {
        use tokenmint_core::jose::JwsError;
        match error {
            JwsError::Malformed(detail) => Self::Malformed(detail),
            JwsError::WrongType => Self::WrongType,
            JwsError::UnknownKey => Self::UnknownKey,
            JwsError::AlgorithmMismatch => Self::AlgorithmMismatch,
            JwsError::BadSignature => Self::BadSignature,
        }
    }
}

impl From<tokenmint_core::token::VerifyError> for VerifyError {
    fn from(error: tokenmint_core::token::VerifyError) -> Self {
        use tokenmint_core::token::VerifyError as Core;
        match error {
            Core::Jws(jws) => jws.into(),
            Core::WrongIssuer => Self::WrongIssuer,
            // A verifier answers for its audiences; the trust domain is a transaction token's.
            Core::WrongTrustDomain => Self::WrongAudience,
            Core::Expired => Self::Expired,
            Core::NotYetValid => Self::NotYetValid,
        }
    }
}

/// Why a [`crate::Verifier`] could not be built.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// No audience was named: a verifier must know which tokens are for it.
    #[error("name at least one audience this service serves")]
    NoAudience,
    /// No source of keys was named.
    #[error("name a source of keys: `grpc` (default) or `jwks_url`")]
    NoSource,
    /// The issuer, endpoint or JWKS URL is not an `https://` URL with a host.
    #[error("{0:?} is not an https:// URL with a host")]
    BadUrl(String),
    /// Not called inside a tokio runtime (the source's watch tasks need one).
    #[error("build the verifier inside a tokio runtime")]
    NoRuntime,
    /// An option is outside what the verifier can work with.
    #[error("{0}")]
    Setting(String),
}
