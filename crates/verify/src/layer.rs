//! The tower layer for tonic and axum services: the bearer token (or, for transaction
//! tokens, the `Txn-Token` header) and the peer certificate in, the verified token into the
//! request's extensions, or the refusal out.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{Either, Full};
use tower::{Layer, Service};

use crate::{
    certificate::PeerCertificate, error::VerifyError, refusal::Refusal, verifier::Verifier,
};

/// The service's future.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The header a transaction token travels in between workloads
/// (draft-ietf-oauth-transaction-tokens-10 §12.2): the JWT itself.
pub const TXN_TOKEN_HEADER: &str = "txn-token";

/// Verifies every request's bearer token against the [`PeerCertificate`] in its extensions;
/// the handler finds an `Arc<VerifiedToken>` in the extensions. Or, built with
/// [`VerifyLayer::txn`], its transaction token: an `Arc<TxnToken>`. Optionally requires
/// scopes (of a transaction token: its purpose).
#[derive(Clone, Debug)]
pub struct VerifyLayer {
    verifier: Verifier,
    scopes: Arc<[String]>,
    kind: Kind,
}

/// Which token a layer takes, from which header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An access token, `Authorization: Bearer`.
    Access,
    /// A transaction token, `Txn-Token`.
    Txn,
}

impl Kind {
    /// The token presented in `headers`.
    fn presented(self, headers: &http::HeaderMap) -> Result<&str, VerifyError> {
        match self {
            Kind::Access => bearer_token(headers),
            Kind::Txn => txn_token(headers),
        }
    }
}

impl VerifyLayer {
    /// A layer verifying access tokens (`Authorization: Bearer`) with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            scopes: Arc::from(Vec::new()),
            kind: Kind::Access,
        }
    }

    /// A layer verifying transaction tokens (the `Txn-Token` header) with `verifier`
    /// ([`Verifier::verify_txn`]).
    pub fn txn(verifier: Verifier) -> Self {
        Self {
            kind: Kind::Txn,
            ..Self::new(verifier)
        }
    }

    /// Also requires `scope` (`403 insufficient_scope` / `PERMISSION_DENIED` without it).
    #[must_use]
    pub fn require_scope(mut self, scope: impl Into<String>) -> Self {
        let mut scopes = self.scopes.to_vec();
        scopes.push(scope.into());
        self.scopes = scopes.into();
        self
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            verifier: self.verifier.clone(),
            scopes: self.scopes.clone(),
            kind: self.kind,
        }
    }
}

/// The service [`VerifyLayer`] makes.
#[derive(Clone, Debug)]
pub struct VerifyService<S> {
    inner: S,
    verifier: Verifier,
    scopes: Arc<[String]>,
    kind: Kind,
}

/// The transaction token of a `Txn-Token` header.
pub fn txn_token(headers: &http::HeaderMap) -> Result<&str, VerifyError> {
    let value = headers
        .get(TXN_TOKEN_HEADER)
        .ok_or(VerifyError::Missing)?
        .to_str()
        .map_err(|_| VerifyError::Malformed("the Txn-Token header is not text".into()))?;
    match value.trim() {
        "" => Err(VerifyError::Missing),
        token => Ok(token),
    }
}

/// The bearer token of an `Authorization` header (scheme compared without case).
pub fn bearer_token(headers: &http::HeaderMap) -> Result<&str, VerifyError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(VerifyError::Missing)?
        .to_str()
        .map_err(|_| VerifyError::Malformed("the Authorization header is not text".into()))?;
    bearer(value)
}

/// The token of an `Authorization` value `Bearer <token>` (scheme compared without case):
/// another scheme is no bearer token at all; `Bearer` with nothing after it is malformed.
pub fn bearer(value: &str) -> Result<&str, VerifyError> {
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| VerifyError::Malformed("the Authorization header is not Bearer".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(VerifyError::Missing);
    }
    match token.trim() {
        "" => Err(VerifyError::Malformed("an empty bearer token".into())),
        token => Ok(token),
    }
}

impl<S, B, RB> Service<Request<B>> for VerifyService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Either<RB, Full<Bytes>>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The ready service goes with this request; a clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (verifier, scopes, kind) = (self.verifier.clone(), self.scopes.clone(), self.kind);
        // What the check needs is taken out first: the body need not be `Sync`.
        let presented = kind.presented(request.headers()).map(str::to_owned);
        let certificate = request.extensions().get::<PeerCertificate>().cloned();
        Box::pin(async move {
            let certificate = certificate.as_ref();
            let admitted = match kind {
                Kind::Access => admit(&verifier, &scopes, presented, certificate)
                    .await
                    .map(|token| drop(request.extensions_mut().insert(token))),
                Kind::Txn => admit_txn(&verifier, &scopes, presented, certificate)
                    .await
                    .map(|token| drop(request.extensions_mut().insert(token))),
            };
            match admitted {
                Ok(()) => Ok(inner.call(request).await?.map(Either::Left)),
                Err(refusal) => Ok(refusal
                    .to_response_for(request.headers())
                    .map(Either::Right)),
            }
        })
    }
}

/// The verified token of a request, or why it is refused.
async fn admit(
    verifier: &Verifier,
    scopes: &[String],
    presented: Result<String, VerifyError>,
    certificate: Option<&PeerCertificate>,
) -> Result<Arc<crate::VerifiedToken>, Refusal> {
    let token = presented.map_err(Refusal::Token)?;
    let verified = verifier
        .verify(&token, certificate, verifier.now())
        .await
        .map_err(Refusal::Token)?;
    if let Some(missing) = scopes.iter().find(|s| !verified.has_scope(s)) {
        return Err(Refusal::InsufficientScope(missing.clone()));
    }
    Ok(verified)
}

/// The verified transaction token of a request, or why it is refused.
async fn admit_txn(
    verifier: &Verifier,
    scopes: &[String],
    presented: Result<String, VerifyError>,
    certificate: Option<&PeerCertificate>,
) -> Result<Arc<crate::TxnToken>, Refusal> {
    let token = presented.map_err(Refusal::Token)?;
    let verified = verifier
        .verify_txn(&token, certificate, verifier.now())
        .await
        .map_err(Refusal::Token)?;
    if let Some(missing) = scopes
        .iter()
        .find(|s| !verified.scopes().contains(&s.as_str()))
    {
        return Err(Refusal::InsufficientScope(missing.clone()));
    }
    Ok(Arc::new(verified))
}
