//! A token as the source hands it out, and what a source asks for; a transaction token and
//! what [`crate::Client::txn_token`] asks for.

use std::{fmt, sync::Arc, time::Duration};

use tokenmint_core::clock::UnixTime;

/// The lifetime an answer's `expires_in` gives (none when it is not positive).
pub(crate) fn lifetime_of(expires_in: i64) -> Duration {
    Duration::from_secs(u64::try_from(expires_in).unwrap_or(0))
}

/// An access token and what was granted. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessToken {
    value: Arc<str>,
    /// When it expires (the issuer's `expires_in` counted from when it arrived).
    pub expires_at: UnixTime,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The audiences granted.
    pub audiences: Vec<String>,
    /// The signing key's id.
    pub key_id: String,
}

impl AccessToken {
    pub(crate) fn new(
        value: String,
        expires_at: UnixTime,
        scopes: Vec<String>,
        audiences: Vec<String>,
        key_id: String,
    ) -> Self {
        Self {
            value: value.into(),
            expires_at,
            scopes,
            audiences,
            key_id,
        }
    }

    /// The token itself (a secret: never log it).
    pub fn secret(&self) -> &str {
        &self.value
    }

    /// The `authorization` header value, `Bearer …`, marked sensitive.
    pub fn authorization(&self) -> Option<http::HeaderValue> {
        let mut value = http::HeaderValue::try_from(format!("Bearer {}", self.value)).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"…")
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("audiences", &self.audiences)
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// What a token source asks for: empty lists and no lifetime mean the client's defaults at
/// the issuer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenSpec {
    /// Scopes.
    pub scopes: Vec<String>,
    /// Audiences.
    pub audiences: Vec<String>,
    /// Lifetime (at most the client's maximum).
    pub lifetime: Option<Duration>,
}

impl TokenSpec {
    /// The client's default scopes and audiences.
    pub fn defaults() -> Self {
        Self::default()
    }

    /// Tokens for one audience (the downstream that receives them).
    pub fn audience(audience: impl Into<String>) -> Self {
        Self::default().with_audience(audience)
    }

    /// Adds an audience.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Adds a scope.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Asks for this lifetime.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }
}

/// A transaction token (draft-ietf-oauth-transaction-tokens) as the issuer gave it: passed
/// on in the `Txn-Token` header, never as a bearer token. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransactionToken {
    value: Arc<str>,
    /// When it expires (the issuer's `expires_in` counted from when it arrived).
    pub expires_at: UnixTime,
    /// The purpose it carries.
    pub purpose: Vec<String>,
}

impl TransactionToken {
    pub(crate) fn new(value: String, expires_at: UnixTime, purpose: Vec<String>) -> Self {
        Self {
            value: value.into(),
            expires_at,
            purpose,
        }
    }

    /// The token itself (a secret: never log it).
    pub fn secret(&self) -> &str {
        &self.value
    }

    /// The `Txn-Token` header value, marked sensitive.
    pub fn header_value(&self) -> Option<http::HeaderValue> {
        let mut value = http::HeaderValue::try_from(&*self.value).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

impl fmt::Debug for TransactionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionToken")
            .field("value", &"…")
            .field("expires_at", &self.expires_at)
            .field("purpose", &self.purpose)
            .finish()
    }
}

/// What a transaction token is made from (the draft's subject token types).
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum TxnSubject<'a> {
    /// An access token for an audience this client serves (the edge, from the caller's
    /// token), or one of its own: a new transaction for its subject.
    AccessToken(&'a str),
    /// A transaction token to replace: the same transaction, narrowed or with context added.
    Replace(&'a str),
    /// A JSON object naming the subject (`{"sub": …}`), for a client registered with
    /// `asserts_txn_subjects`.
    UnsignedJson(&'a str),
    /// A JWT self-signed with this client's certificate key, naming the subject, for a
    /// client registered with `asserts_txn_subjects`.
    SelfSigned(&'a str),
}

impl fmt::Debug for TxnSubject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            TxnSubject::AccessToken(_) => "AccessToken",
            TxnSubject::Replace(_) => "Replace",
            TxnSubject::UnsignedJson(_) => "UnsignedJson",
            TxnSubject::SelfSigned(_) => "SelfSigned",
        };
        write!(f, "TxnSubject::{kind}(…)")
    }
}

/// What a transaction token is asked for: the trust domain (its audience), the purpose
/// (scopes, within the subject's), and the request context and details (JSON objects).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxnSpec {
    /// The trust domain.
    pub trust_domain: String,
    /// The purpose.
    pub purpose: Vec<String>,
    /// `request_context`: a JSON object (it becomes `rctx`).
    pub request_context: Option<String>,
    /// `request_details`: a JSON object (it becomes `tctx`).
    pub request_details: Option<String>,
}

impl TxnSpec {
    /// For `trust_domain`, with the purposes `purpose`.
    pub fn new<S: Into<String>>(
        trust_domain: impl Into<String>,
        purpose: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            purpose: purpose.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// With `request_context` (a JSON object).
    pub fn with_request_context(mut self, json: impl Into<String>) -> Self {
        self.request_context = Some(json.into());
        self
    }

    /// With `request_details` (a JSON object).
    pub fn with_request_details(mut self, json: impl Into<String>) -> Self {
        self.request_details = Some(json.into());
        self
    }
}
