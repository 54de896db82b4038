//! The client: one mTLS channel to the issuer, and one token source per [`TokenSpec`], shared
//! by everything in the process that asks for it; and the one-shot exchanges, held by no
//! source (`exchange`, `txn_token`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokenmint_core::{
    clock::{Clock, SystemClock, UnixTime},
    grant::ACCESS_TOKEN_TYPE,
    txn,
};
use tokenmint_proto::v1::{
    ExchangeTokenRequest, ExchangeTokenResponse, token_service_client::TokenServiceClient,
};
use tokio_rustls::rustls::ClientConfig;

use crate::{
    error::{BuildError, TokenError},
    source::{Parts, TokenSource},
    token::{AccessToken, TokenSpec, TransactionToken, TxnSpec, TxnSubject, lifetime_of},
};

/// A caller's handle on the issuer. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    tokens: TokenServiceClient<tonic::transport::Channel>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    backoff: (Duration, Duration),
    sources: Mutex<HashMap<TokenSpec, TokenSource>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]: `Client::builder(issuer, tls)`, then any of the options.
#[must_use]
pub struct Builder {
    issuer: String,
    tls: Arc<ClientConfig>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    backoff: (Duration, Duration),
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("issuer", &self.issuer)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the issuer at `issuer` (`https://host:port`), over mTLS with `tls`: this
    /// caller's client certificate, the issuer's trust anchors and the crypto provider
    /// (nothing process-wide is installed).
    pub fn builder(issuer: impl Into<String>, tls: Arc<ClientConfig>) -> Builder {
        Builder {
            issuer: issuer.into(),
            tls,
            clock: Arc::new(SystemClock),
            timeout: Duration::from_secs(10),
            backoff: (Duration::from_millis(200), Duration::from_secs(30)),
        }
    }

    /// The token source for `spec`: the same source (and token) for every caller that asks
    /// for the same scopes, audiences and lifetime.
    pub fn source(&self, spec: TokenSpec) -> TokenSource {
        let inner = &self.inner;
        let mut sources = inner
            .sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sources
            .entry(spec.clone())
            .or_insert_with(|| {
                TokenSource::new(Parts {
                    tokens: inner.tokens.clone(),
                    spec,
                    clock: inner.clock.clone(),
                    timeout: inner.timeout,
                    backoff: inner.backoff,
                })
            })
            .clone()
    }

    /// The token source for one downstream audience, with the client's default scopes: what
    /// each downstream's channel or HTTP client is given (`BearerLayer::new(client.for_audience(…))`).
    pub fn for_audience(&self, audience: impl Into<String>) -> TokenSource {
        self.source(TokenSpec::audience(audience))
    }

    /// Exchanges `subject_token` (RFC 8693, `TokenService.ExchangeToken`) for a token bound
    /// to this client's certificate, as `spec` asks: a token another client sent (delegation:
    /// this client then calls on its behalf, `sub` staying that client's) or one of this
    /// client's own (down-scoping). Once, not held or refreshed: each inbound call brings its
    /// own subject token, and the new one never outlives it.
    pub async fn exchange(
        &self,
        subject_token: &str,
        spec: &TokenSpec,
    ) -> Result<AccessToken, TokenError> {
        let request = ExchangeTokenRequest {
            subject_token: subject_token.to_owned(),
            subject_token_type: ACCESS_TOKEN_TYPE.to_owned(),
            audiences: spec.audiences.clone(),
            scopes: spec.scopes.clone(),
            lifetime: spec
                .lifetime
                .and_then(|l| prost_types::Duration::try_from(l).ok()),
            ..ExchangeTokenRequest::default()
        };
        let response = self.exchange_call(request).await?;
        Ok(AccessToken::new(
            response.access_token,
            self.expiry(response.expires_in),
            response.scopes,
            response.audiences,
            response.key_id,
        ))
    }

    /// A transaction token (draft-ietf-oauth-transaction-tokens) made from `subject` as
    /// `spec` asks, by token exchange: a new transaction from an access token (or, for a
    /// client registered for it, a subject it names itself), or a replacement of a
    /// transaction token keeping its transaction id. Once, not held or refreshed: it lives
    /// for one call chain.
    pub async fn txn_token(
        &self,
        subject: TxnSubject<'_>,
        spec: &TxnSpec,
    ) -> Result<TransactionToken, TokenError> {
        let (token_type, subject_token) = match subject {
            TxnSubject::AccessToken(t) => (ACCESS_TOKEN_TYPE, t),
            TxnSubject::Replace(t) => (txn::TXN_TOKEN_TYPE, t),
            TxnSubject::UnsignedJson(t) => (txn::UNSIGNED_JSON_TYPE, t),
            TxnSubject::SelfSigned(t) => (txn::SELF_SIGNED_TYPE, t),
        };
        let request = ExchangeTokenRequest {
            subject_token: subject_token.to_owned(),
            subject_token_type: token_type.to_owned(),
            requested_token_type: txn::TXN_TOKEN_TYPE.to_owned(),
            audiences: vec![spec.trust_domain.clone()],
            scopes: spec.purpose.clone(),
            request_context: spec.request_context.clone().unwrap_or_default(),
            request_details: spec.request_details.clone().unwrap_or_default(),
            ..ExchangeTokenRequest::default()
        };
        let response = self.exchange_call(request).await?;
        Ok(TransactionToken::new(
            response.access_token,
            self.expiry(response.expires_in),
            response.scopes,
        ))
    }

    /// One `ExchangeToken`, within the client's timeout.
    async fn exchange_call(
        &self,
        request: ExchangeTokenRequest,
    ) -> Result<ExchangeTokenResponse, TokenError> {
        let inner = &self.inner;
        let mut tokens = inner.tokens.clone();
        let outcome = tokio::time::timeout(inner.timeout, tokens.exchange_token(request)).await;
        TokenError::of_call(outcome, "ExchangeToken")
    }

    /// When a token given now with `expires_in` seconds expires.
    fn expiry(&self, expires_in: i64) -> UnixTime {
        UnixTime::of(self.inner.clock.now()).saturating_add(lifetime_of(expires_in))
    }
}

impl Builder {
    /// How long one `IssueToken` may take, connection included (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The bounds of the retry backoff after a failed refresh (default 200 ms to 30 s, with
    /// jitter; an issuer's `retry-after` hint is honoured when longer).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max);
        self
    }

    /// The clock expiry and the refresh rule are read from (tests pass a manual one).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The client. Call inside a tokio runtime; nothing connects until the first token.
    pub fn build(self) -> Result<Client, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let _entered = runtime.enter();
        let channel = tokenmint_proto::connect::channel(&self.issuer, &self.tls, self.timeout)
            .map_err(|bad| BuildError::BadUrl(bad.0))?;
        Ok(Client {
            inner: Arc::new(Inner {
                tokens: TokenServiceClient::new(channel),
                clock: self.clock,
                timeout: self.timeout,
                backoff: self.backoff,
                sources: Mutex::new(HashMap::new()),
            }),
        })
    }
}
