//! # tokenmint-verify
//!
//! Verify tokenmint's access tokens (and transaction tokens, [`Verifier::verify_txn`]) in the
//! service that receives them, with no call to the issuer per request: the keys are watched, the certificate binding (RFC 8705 `cnf`) is
//! checked against the caller's TLS certificate, and revocations are pushed.
//!
//! ```text
//!   issuer ──WatchJwks──────────▶ key set ─┐
//!          ──WatchRevocations───▶ blocklist├─▶ Verifier::verify(token, peer cert, now)
//!   caller ──mTLS + Bearer──▶ layer ───────┘        │
//!                                 ▼                 ▼
//!                      handler(Arc<VerifiedToken>)  401 / 403 / 503 (or gRPC status)
//! ```
//!
//! - [`Verifier`]: built once ([`Verifier::builder`]), cloned into every request. Its source
//!   is the issuer's gRPC watch streams over mTLS (default), or a JWKS URL (keys only — no
//!   revocations are seen).
//! - [`Verifier::verify`] checks `typ: at+jwt`, the key the `kid` names and *its* algorithm
//!   (never the token's `alg`), the signature, `iss`, `aud`, the times with leeway, the
//!   certificate binding, and from local state the revocation of the token, its key, every
//!   token it was exchanged from and every party of its chain.
//!   An unknown `kid` triggers one key fetch shared by every waiting request.
//! - **Fail closed**: with no word from the issuer for longer than the staleness bound,
//!   verification fails with [`VerifyError::Stale`]; [`Verifier::health`] says why.
//! - [`VerifyLayer`] for tonic and axum services (`VerifyLayer::txn` for the `Txn-Token`
//!   header); [`PeerCertificate`], the request extension the
//!   host's TLS acceptor inserts; `Verified`, an axum extractor (feature `axum`).
//! - The TLS configuration and its crypto provider are **the caller's** ([`tls`] builds one
//!   from PEM): this crate never installs a process-wide rustls provider and turns on no
//!   rustls provider feature.
//!
//! ## Example
//!
//! ```no_run
//! use std::{path::Path, sync::Arc};
//! use tokenmint_verify::{Verifier, VerifyLayer, tls};
//!
//! # async fn run(
//! #     provider: Arc<tokenmint_verify::rustls::crypto::CryptoProvider>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! // This service's own identity, to watch keys and revocations from the issuer, over the
//! // crypto provider of your choice (`rustls::crypto::ring::default_provider()`, say).
//! let tls = tls::client_config_from_files(
//!     provider,
//!     Path::new("certs/ca.pem"),
//!     Path::new("certs/resource.pem"),
//!     Path::new("certs/resource.key"),
//! )?;
//! let verifier = Verifier::builder("https://localhost:8443")
//!     .audience("https://demo.tokenmint.dev")
//!     .grpc(Arc::new(tls))
//!     .build()?;
//!
//! // In front of an axum router or tonic routes; the host's TLS acceptor inserts each
//! // connection's `PeerCertificate` into the request extensions.
//! let layer = VerifyLayer::new(verifier.clone()).require_scope("demo:read");
//! # let _ = layer;
//! // Or by hand:
//! let token = "…";
//! match verifier.verify(token, None, verifier.now()).await {
//!     Ok(verified) => println!("{} may call", verified.client_id),
//!     Err(refused) => println!("refused: {refused}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Versioning
//!
//! Semantic versioning from 1.0; before it, a minor version may break the API and
//! `CHANGELOG.md` says how. [`VerifyError`], [`VerifiedToken`] and [`Health`] are
//! `#[non_exhaustive]`, so adding a reason, a claim (the actor chain of token exchange is
//! already there) or a figure is not a breaking change.

#![forbid(unsafe_code)]

mod certificate;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod health;
mod layer;
mod metrics;
mod refusal;
mod settings;
mod source;
mod state;
pub mod tls;
mod token;
mod verifier;

pub use certificate::PeerCertificate;
pub use error::{BuildError, VerifyError};
#[cfg(feature = "axum")]
pub use extract::Verified;
pub use health::Health;
pub use layer::{TXN_TOKEN_HEADER, VerifyLayer, VerifyService, bearer, bearer_token, txn_token};
pub use refusal::Refusal;
pub use token::{Actor, Ancestor, VerifiedToken};
pub use tokenmint_core::txn::TxnTokenClaims as TxnToken;
pub use verifier::{Builder, Verifier};

/// The clock types the builder and `verify` take, and the thumbprint a token is bound to.
pub use tokenmint_core::{
    clock::{Clock, ManualClock, SystemClock, UnixTime},
    crypto::CertificateThumbprint,
};
/// The rustls the TLS configuration and `PeerCertificate::from_connection` are written in.
pub use tokio_rustls::rustls;
