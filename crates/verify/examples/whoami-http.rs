//! `GET /whoami` over mTLS behind tokenmint-verify: the caller's verified token as JSON
//! `{"client_id", "scope", "aud", "jti"}`, or an RFC 6750 refusal with a JSON error body.
//!
//! Beside `tokenmint serve --dev`, in the same directory:
//!
//! ```text
//! cargo run --release -p tokenmint-verify --example whoami-http -- --listen 127.0.0.1:9443
//! TOKEN=$(tokenmint token --audience https://demo.tokenmint.dev --output token)   # the demo client
//! curl --cacert certs/ca.pem --cert certs/demo.pem --key certs/demo.key \
//!      -H "Authorization: Bearer $TOKEN" https://localhost:9443/whoami
//! ```

#![allow(missing_docs)]

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use axum::{Extension, Json, Router, routing::get};
use clap::Parser as _;
use serde_json::{Value, json};
use tokenmint_verify::{VerifiedToken, VerifyLayer};

/// With the crate's `axum` feature, `tokenmint_verify::Verified` is the extractor for this.
async fn whoami(Extension(token): Extension<Arc<VerifiedToken>>) -> Json<Value> {
    Json(json!({
        "client_id": token.client_id,
        "scope": token.scopes.join(" "),
        "aud": token.audiences,
        "jti": token.token_id,
    }))
}

#[tokio::main]
async fn main() -> Result<(), common::Failure> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = common::Args::parse();
    let verifier = common::verifier(&args).await?;
    let router = Router::new()
        .route("/whoami", get(whoami))
        .layer(VerifyLayer::new(verifier));
    common::serve(&args, router).await
}
