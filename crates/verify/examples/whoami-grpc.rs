//! `tokenmint.example.Whoami/Whoami` over mTLS behind tokenmint-verify: the caller's verified
//! token, or `UNAUTHENTICATED` / `PERMISSION_DENIED` / `UNAVAILABLE`. The service is written out
//! by hand (no build script) so the example stands alone; a real one comes from `protoc`.
//!
//! Beside `tokenmint serve --dev`, in the same directory:
//!
//! ```text
//! cargo run --release -p tokenmint-verify --example whoami-grpc -- --listen 127.0.0.1:9444
//! grpcurl -cacert certs/ca.pem -cert certs/demo.pem -key certs/demo.key \
//!   -H "authorization: Bearer $TOKEN" -import-path crates/verify/examples \
//!   -proto whoami.proto localhost:9444 tokenmint.example.Whoami/Whoami
//! ```

#![allow(missing_docs)]

#[path = "common/mod.rs"]
mod common;

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc};

use clap::Parser as _;
use tokenmint_verify::{VerifiedToken, VerifyLayer};
use tonic::{Status, server::UnaryService};

/// The request: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WhoamiRequest {}

/// Who the caller is, by its verified token.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WhoamiResponse {
    #[prost(string, tag = "1")]
    pub client_id: String,
    #[prost(string, tag = "2")]
    pub scope: String,
    #[prost(string, repeated, tag = "3")]
    pub aud: Vec<String>,
    #[prost(string, tag = "4")]
    pub jti: String,
}

const PATH: &str = "/tokenmint.example.Whoami/Whoami";

/// The handler: reads the token the layer put in the request's extensions.
struct Handler;

impl UnaryService<WhoamiRequest> for Handler {
    type Response = WhoamiResponse;
    type Future = std::future::Ready<Result<tonic::Response<WhoamiResponse>, Status>>;

    fn call(&mut self, request: tonic::Request<WhoamiRequest>) -> Self::Future {
        std::future::ready(match request.extensions().get::<Arc<VerifiedToken>>() {
            Some(token) => Ok(tonic::Response::new(WhoamiResponse {
                client_id: token.client_id.clone(),
                scope: token.scopes.join(" "),
                aud: token.audiences.clone(),
                jti: token.token_id.clone(),
            })),
            None => Err(Status::internal("not behind the verification layer")),
        })
    }
}

/// The service: one method, routed by path.
#[derive(Clone)]
struct Whoami;

impl tonic::server::NamedService for Whoami {
    const NAME: &'static str = "tokenmint.example.Whoami";
}

type Reply = http::Response<tonic::body::Body>;

impl tower::Service<http::Request<tonic::body::Body>> for Whoami {
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if request.uri().path() != PATH {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let codec = tonic_prost::ProstCodec::<WhoamiResponse, WhoamiRequest>::default();
            Ok(tonic::server::Grpc::new(codec)
                .unary(Handler, request)
                .await)
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), common::Failure> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = common::Args::parse();
    let verifier = common::verifier(&args).await?;
    let router = tonic::service::Routes::new(Whoami)
        .into_axum_router()
        .layer(VerifyLayer::new(verifier));
    common::serve(&args, router).await
}
