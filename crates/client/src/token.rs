//! A token as the source hands it out, and what a source asks for.

use std::{fmt, sync::Arc, time::Duration};

use tokenmint_core::clock::UnixTime;

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
