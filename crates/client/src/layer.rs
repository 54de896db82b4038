//! Attaching the token to outgoing calls: a tower layer for any HTTP or gRPC client service
//! (it waits for a refresh when it must), and a tonic interceptor (which cannot wait, so it
//! uses the held token).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, header::AUTHORIZATION};
use tower::{Layer, Service};

use crate::{error::TokenError, source::TokenSource};

/// The error of a call through [`BearerService`]: no token, or the inner service's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Adds `authorization: Bearer …` from `source` to every request. One layer per downstream:
/// each downstream gets the source for its own audience.
#[derive(Clone, Debug)]
pub struct BearerLayer {
    source: TokenSource,
}

impl BearerLayer {
    /// A layer attaching `source`'s token.
    pub fn new(source: TokenSource) -> Self {
        Self { source }
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = BearerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerService {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The service [`BearerLayer`] makes. A call with no valid token fails with the
/// [`TokenError`] (boxed) before anything is sent.
#[derive(Clone, Debug)]
pub struct BearerService<S> {
    inner: S,
    source: TokenSource,
}

impl<S, B> Service<Request<B>> for BearerService<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The ready service goes with this request; a clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let source = self.source.clone();
        Box::pin(async move {
            let token = source.token().await?;
            let value = token
                .authorization()
                .ok_or_else(|| BoxError::from("the issued token is not a valid header value"))?;
            request.headers_mut().insert(AUTHORIZATION, value);
            inner.call(request).await.map_err(Into::into)
        })
    }
}

/// A tonic interceptor adding the held token. An interceptor cannot wait, so before the first
/// token (or after expiry) the call fails with `UNAVAILABLE` and a refresh starts; prefer
/// [`BearerLayer`], which waits, unless the client must be built with `with_interceptor`.
#[derive(Clone, Debug)]
pub struct BearerInterceptor {
    source: TokenSource,
}

impl BearerInterceptor {
    /// An interceptor attaching `source`'s token.
    pub fn new(source: TokenSource) -> Self {
        Self { source }
    }
}

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(token) = self.source.held_token() else {
            let source = self.source.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { source.token().await });
            }
            return Err(tonic::Status::unavailable(
                "no valid access token yet; one is being fetched",
            ));
        };
        let value = format!("Bearer {}", token.secret())
            .parse()
            .map_err(|_| tonic::Status::internal("the issued token is not a valid header"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

impl From<TokenError> for tonic::Status {
    fn from(error: TokenError) -> Self {
        match &error {
            TokenError::Refused { .. } => tonic::Status::unauthenticated(error.to_string()),
            TokenError::Unavailable { .. } => tonic::Status::unavailable(error.to_string()),
        }
    }
}
