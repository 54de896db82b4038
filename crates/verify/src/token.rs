//! The verified token handed to a request: what the issuer vouched for, with the actor
//! chain and the ancestors token exchange adds.

use serde::Deserialize;
pub use tokenmint_core::token::{Actor, Ancestor};
use tokenmint_core::{
    clock::UnixTime,
    crypto::CertificateThumbprint,
    token::{Audience, Confirmation},
};

/// A token that passed every check. Shared by every request that presents it (`Arc`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedToken {
    /// The client the token was issued to: for a delegated token, the party acting now (and
    /// the one whose certificate it is bound to).
    pub client_id: String,
    /// Whom it is for: `client_id` for a client-credentials token, the original caller for a
    /// delegated one.
    pub subject: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// Its audiences.
    pub audiences: Vec<String>,
    /// Its id (`jti`): safe to log.
    pub token_id: String,
    /// Issued at.
    pub issued_at: UnixTime,
    /// Not before.
    pub not_before: UnixTime,
    /// Expires at.
    pub expires_at: UnixTime,
    /// The signing key's id.
    pub key_id: String,
    /// The certificate it is bound to (`cnf.x5t#S256`); `None` only when unbound tokens are
    /// accepted.
    pub bound_to: Option<CertificateThumbprint>,
    /// The actor chain (`act`, RFC 8693 §4.1) of a delegated token: who acts for `subject`,
    /// the party acting now first.
    pub actor: Option<Actor>,
    /// The tokens it was exchanged from, oldest first (revoking any revokes it).
    pub ancestors: Vec<Ancestor>,
}

impl VerifiedToken {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The acting parties of a delegated token, the one acting now first (empty when the
    /// token is not delegated).
    pub fn actors(&self) -> Vec<&str> {
        self.actor.as_ref().map(Actor::chain).unwrap_or_default()
    }

    /// The tokens of its chain, as the revocation state judges them: itself, then its
    /// ancestors.
    pub(crate) fn links(
        &self,
    ) -> impl Iterator<Item = tokenmint_core::revocation::Link<'_>> + Clone {
        tokenmint_core::token::links(
            &self.token_id,
            &self.client_id,
            self.issued_at,
            &self.ancestors,
        )
    }

    /// Every party of the token's chain: its client, its subject and each actor.
    pub(crate) fn parties(&self) -> impl Iterator<Item = &str> + Clone {
        tokenmint_core::token::parties(&self.client_id, &self.subject, self.actor.as_ref())
    }
}

/// The claims as they arrive: core's access-token claims, with the binding optional (checked
/// by the verifier's rule) and the actor chain.
#[derive(Deserialize)]
pub(crate) struct Claims {
    pub iss: String,
    pub sub: String,
    pub client_id: String,
    pub aud: Audience,
    #[serde(default)]
    pub scope: Option<String>,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub exp: UnixTime,
    pub jti: String,
    #[serde(default)]
    pub cnf: Option<Confirmation>,
    #[serde(default)]
    pub act: Option<Actor>,
    #[serde(default)]
    pub ancestors: Vec<Ancestor>,
}

impl Claims {
    /// The verified token of these claims, signed by `key_id`. A `cnf` that is not a
    /// base64url SHA-256 is malformed, never read as "unbound".
    pub(crate) fn into_verified(self, key_id: String) -> Result<VerifiedToken, String> {
        let bound_to = match self.cnf {
            Some(cnf) => Some(
                CertificateThumbprint::from_b64url(&cnf.x5t_s256)
                    .ok_or("cnf.x5t#S256 is not a base64url SHA-256")?,
            ),
            None => None,
        };
        Ok(VerifiedToken {
            client_id: self.client_id,
            subject: self.sub,
            scopes: self
                .scope
                .map(|s| {
                    tokenmint_core::token::split_scope(&s)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            audiences: self.aud.to_vec(),
            token_id: self.jti,
            issued_at: self.iat,
            not_before: self.nbf,
            expires_at: self.exp,
            key_id,
            bound_to,
            actor: self.act,
            ancestors: self.ancestors,
        })
    }
}
