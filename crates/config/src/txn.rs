//! `[txn_tokens]`: transaction tokens (draft-ietf-oauth-transaction-tokens) — the trust
//! domain they are for (their `aud`) and how long they live. Without a trust domain the
//! issuer gives none.

use super::{file::FileTxnTokens, validate::Validator, *};

/// Default of `txn_tokens.lifetime`.
pub const DEFAULT_TXN_LIFETIME: &str = "1m";
/// Upper bound of `txn_tokens.lifetime`: a transaction token lives for one call chain.
pub const MAX_TXN_LIFETIME: Duration = Duration::from_secs(300);
/// The longest trust domain name taken.
const MAX_TRUST_DOMAIN_LEN: usize = 256;

/// `[txn_tokens]`, when transaction tokens are on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnTokensConfig {
    /// The trust domain: every transaction token's `aud`, a URI such as
    /// `spiffe://example.org` or `urn:example:payments`.
    pub trust_domain: String,
    /// How long a transaction token lives (whole seconds, 1s–5m).
    pub lifetime: Duration,
}

impl Validator<'_> {
    /// `[txn_tokens]`: `None` when no trust domain is set (transaction tokens off); a
    /// lifetime without one is refused, as half a setting.
    pub(super) fn txn_tokens(
        &self,
        t: FileTxnTokens,
    ) -> Result<Option<TxnTokensConfig>, ConfigError> {
        let lifetime = self.lifetime(
            "txn_tokens.lifetime",
            t.lifetime.as_deref(),
            DEFAULT_TXN_LIFETIME,
        )?;
        if lifetime > MAX_TXN_LIFETIME {
            return Err(self.error(
                "txn_tokens.lifetime",
                format!(
                    "{} ({}) must be at most {}: a transaction token lives for one call chain",
                    self.label("txn_tokens.lifetime"),
                    validate::show(lifetime),
                    validate::show(MAX_TXN_LIFETIME)
                ),
            ));
        }
        let Some(domain) = t.trust_domain else {
            if t.lifetime.is_some() {
                return Err(self.error(
                    "txn_tokens.trust_domain",
                    format!(
                        "{} is not set, but txn_tokens.lifetime is: set the trust domain to turn transaction tokens on",
                        self.label("txn_tokens.trust_domain")
                    ),
                ));
            }
            return Ok(None);
        };
        if !is_uri(&domain) {
            return Err(self.error(
                "txn_tokens.trust_domain",
                format!(
                    "{} must be a URI of at most {MAX_TRUST_DOMAIN_LEN} characters without spaces, such as \"spiffe://example.org\" or \"urn:example:payments\"",
                    self.label("txn_tokens.trust_domain")
                ),
            ));
        }
        Ok(Some(TxnTokensConfig {
            trust_domain: domain,
            lifetime,
        }))
    }
}

/// A trust domain: an absolute URI (as a SAN URI is), bounded.
pub(super) fn is_uri(text: &str) -> bool {
    text.len() <= MAX_TRUST_DOMAIN_LEN && tokenmint_core::identity::is_absolute_uri(text)
}
