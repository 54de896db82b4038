//! # tokenmint-client
//!
//! Keep a fresh tokenmint access token and attach it to every outgoing call — the
//! fetch-cache-refresh loop every calling service would otherwise write, with its edge cases
//! done once:
//!
//! - **One written refresh rule**: a token of lifetime L is refreshed
//!   `max(½·L, min(0.8·L, L − 30 s))` after its issue, less a jitter of up to L/20
//!   ([`refresh_after`]): a 30-second token after 15 s (never in a loop), a 1-hour token
//!   12 minutes early.
//! - **One refresh for all concurrent callers**: a hundred requests at expiry cause one
//!   `IssueToken`.
//! - **Issuer blips are absorbed**: while the held token is valid, calls keep using it and the
//!   refresh retries with backoff and jitter; past expiry, calls fail with a typed
//!   [`TokenError`] (`Refused` carries the issuer's OAuth2 code, `Unavailable` the reason), and
//!   recover by themselves when the issuer is back.
//! - **Attaching**: [`BearerLayer`] (tower: tonic channels, hyper and any `http` client
//!   service) and [`BearerInterceptor`] (tonic); one [`TokenSource`] per downstream audience
//!   ([`Client::for_audience`]).
//! - **TLS is the caller's**: the `rustls::ClientConfig` carries this service's client
//!   certificate, the issuer's trust anchors and the crypto provider; nothing process-wide is
//!   installed.
//!
//! ## Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use tokenmint_client::{BearerLayer, Client};
//!
//! # async fn run(tls: rustls::ClientConfig, channel: tonic::transport::Channel)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! // `tls`: this service's certificate (certs/demo.pem in development), the issuer's CA,
//! // the provider of your choice.
//! let client = Client::builder("https://localhost:8443", Arc::new(tls)).build()?;
//! let orders = client.for_audience("https://orders.example");
//!
//! // Every call on this channel carries a fresh token for the orders service:
//! let channel = tower::ServiceBuilder::new()
//!     .layer(BearerLayer::new(orders.clone()))
//!     .service(channel);
//! # let _ = channel;
//! // Or by hand:
//! let token = orders.token().await?;
//! println!("expires at {}", token.expires_at);
//! # Ok(())
//! # }
//! ```
//!
//! ## Versioning
//!
//! Semantic versioning; before 1.0 a minor version may break the API and `CHANGELOG.md` says
//! how. [`TokenError`], [`BuildError`], [`AccessToken`] and [`TokenSpec`] are
//! `#[non_exhaustive]`.

#![forbid(unsafe_code)]

mod client;
mod error;
mod layer;
mod rule;
mod source;
mod token;

pub use client::{Builder, Client};
pub use error::{BuildError, TokenError};
pub use layer::{BearerInterceptor, BearerLayer, BearerService, BoxError};
pub use rule::refresh_after;
pub use source::TokenSource;
pub use token::{AccessToken, TokenSpec, TransactionToken, TxnSpec, TxnSubject};
