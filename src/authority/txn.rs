//! Transaction tokens at the authority (draft-ietf-oauth-transaction-tokens-10): the subject
//! token judged (an access token as an exchange judges it; a transaction token to replace,
//! checked as a receiving workload checks it, with no leeway; a subject the caller names in
//! a self-signed JWT or unsigned JSON, if its registration allows), the claims decided by
//! `tokenmint_core::txn`, signed as `txntoken+jwt` with the current key.

use std::time::Duration;

use tokenmint_core::{
    client::Authenticated,
    clock::UnixTime,
    crypto,
    grant::{ACCESS_TOKEN_TYPE, ExchangeRequest, JWT_TOKEN_TYPE},
    token::{self, IssueError, IssuedToken},
    txn::{self, AssertedSubject, TxnIssuance, TxnRefusal, TxnRequest, TxnSubject, TxnTokenClaims},
};

use super::{Authority, Inactive};

/// `[txn_tokens]` as the authority holds it.
#[derive(Clone, Debug)]
pub struct TxnSettings {
    /// Every transaction token's `aud`.
    pub trust_domain: String,
    /// How long one lives.
    pub lifetime: Duration,
}

impl Authority {
    /// With transaction tokens issued as `settings` say (none by default).
    pub fn with_txn_tokens(mut self, settings: Option<TxnSettings>) -> Self {
        self.txn_tokens = settings;
        self
    }

    /// The transaction token `request` asks of the authenticated caller, at `now`.
    pub(super) fn txn_token(
        &self,
        auth: &Authenticated<'_>,
        request: &ExchangeRequest,
        now: UnixTime,
    ) -> Result<IssuedToken, IssueError> {
        let settings = self.txn_tokens.as_ref().ok_or(TxnRefusal::Off)?;
        self.check_exchange_fresh()?;
        let asked = txn_request(request)?;
        let new_txn = crypto::random_id().map_err(|e| IssueError::Signing(e.to_string()))?;
        let issuance = TxnIssuance {
            issuer: self.issuer.name(),
            trust_domain: &settings.trust_domain,
            lifetime: settings.lifetime,
            now,
            requester: auth.client.id.as_str(),
            new_txn: &new_txn,
        };
        let claims = match request.subject_token_type.as_str() {
            ACCESS_TOKEN_TYPE | JWT_TOKEN_TYPE => {
                let subject = self.subject_of(auth, &request.subject_token, now)?;
                txn::txn_claims(&issuance, TxnSubject::AccessToken(&subject), &asked)?
            }
            txn::TXN_TOKEN_TYPE => {
                let held = self.replaced(&request.subject_token, settings, now)?;
                txn::txn_claims(&issuance, TxnSubject::Replacement(&held), &asked)?
            }
            asserted => {
                let asserted = self.asserted(auth, asserted, &request.subject_token, now)?;
                let ceiling = &auth.client.scopes;
                txn::txn_claims(
                    &issuance,
                    TxnSubject::Asserted {
                        asserted: &asserted,
                        ceiling,
                    },
                    &asked,
                )?
            }
        };
        self.sign_txn(auth, claims, now)
    }

    /// A subject the caller names itself, as a self-signed JWT (under its certificate's key)
    /// or unsigned JSON: only from a client registered for it (`asserts_txn_subjects`).
    fn asserted(
        &self,
        auth: &Authenticated<'_>,
        token_type: &str,
        token: &str,
        now: UnixTime,
    ) -> Result<AssertedSubject, IssueError> {
        if !auth.client.exchange.asserts_txn_subjects {
            return Err(TxnRefusal::SubjectNotAllowed.into());
        }
        let asserted = match token_type {
            txn::UNSIGNED_JSON_TYPE => txn::unsigned_subject(token)?,
            txn::SELF_SIGNED_TYPE => {
                let key = auth.peer.identity.key.as_ref().ok_or(TxnRefusal::Asserted(
                    "self_signed",
                    "needs a P-256, Ed25519 or RSA key in the certificate presented".into(),
                ))?;
                let (caller, issuer) = (auth.client.id.as_str(), self.issuer.name());
                txn::self_signed_subject(token, key, caller, issuer, now, self.leeway)?
            }
            _ => {
                return Err(IssueError::TokenType(
                    "subject_token_type is not a type a transaction token is made from",
                ));
            }
        };
        Ok(asserted)
    }

    /// A transaction token presented for replacement: this issuer's, for this trust
    /// domain, not expired (no leeway: the draft forbids replacing an expired one).
    fn replaced(
        &self,
        token: &str,
        settings: &TxnSettings,
        now: UnixTime,
    ) -> Result<TxnTokenClaims, IssueError> {
        let ring = self.key_ring();
        txn::verify_txn(
            token,
            ring.key_set(),
            self.issuer.name(),
            &settings.trust_domain,
            now,
            Duration::ZERO,
        )
        .map_err(|e| IssueError::SubjectToken(Inactive::from(e).label()))
    }

    /// Signs `claims` as a transaction token with the default algorithm's current key.
    fn sign_txn(
        &self,
        auth: &Authenticated<'_>,
        claims: TxnTokenClaims,
        now: UnixTime,
    ) -> Result<IssuedToken, IssueError> {
        let signer = self
            .keys
            .borrow()
            .signer_for(self.signing.default, self.signing.default)
            .with_typ(txn::TXN_JWT_TYPE);
        let token = token::sign_claims(&signer, &claims)?;
        Ok(IssuedToken {
            access_token: token,
            expires_in: tokenmint_core::clock::whole_secs(claims.exp.since(now)),
            scopes: claims.scopes().into_iter().map(str::to_owned).collect(),
            audiences: vec![claims.aud],
            key_id: signer.kid().to_string(),
            token_id: claims.txn,
            client_id: auth.client.id.to_string(),
            subject: claims.sub,
            exchanged_from: None,
            issued_token_type: txn::TXN_TOKEN_TYPE,
            token_type: txn::TXN_TOKEN_TYPE_NAME,
        })
    }
}

/// The transaction-token parameters of an exchange request, the contexts read as JSON
/// objects.
fn txn_request(request: &ExchangeRequest) -> Result<TxnRequest, IssueError> {
    let object = |name, text: &Option<String>| {
        text.as_deref()
            .map(|t| txn::context_object(name, t))
            .transpose()
            .map_err(TxnRefusal::Context)
    };
    Ok(TxnRequest {
        scopes: request.request.scopes.clone(),
        audiences: request.request.audiences.clone(),
        request_context: object("request_context", &request.request_context)?,
        request_details: object("request_details", &request.request_details)?,
    })
}
