//! # tokenmint
//!
//! An OAuth2-style token issuer for machines. A backend service proves who it is with a
//! client certificate over mutual TLS (RFC 8705) and receives a short-lived JWT access token
//! (RFC 9068 profile) bound to that certificate (`cnf.x5t#S256`). The services it calls verify
//! the token offline against the published key set (`KeyService.GetJwks`).
//!
//! ## How a request flows
//!
//! ```text
//!  TCP ─▶ tls::accept_loop ─▶ rustls handshake ─▶ tls::ClientVerifier (pins, client CA roots)
//!              │  (bounded by handshake_timeout; the peer is classified once: PeerCertificate)
//!              ▼
//!  grpc::TokenApi.issue_token ─▶ authority::Authority.issue
//!              │                     ├─ client::ClientRegistry.authenticate  (identity matchers, secret)
//!              │                     ├─ token::grant                          (scopes, audiences, lifetime)
//!              │                     └─ token::Issuer.issue_at(now)           (claims ─▶ keys::ActiveSigner)
//!              ▼
//!  wire (refusals ─▶ gRPC status + OAuth2 code)        store (SQLite or PostgreSQL: keys sealed under a KEK, clients, audit)
//! ```
//!
//! ## The dependency rule
//!
//! The domain core — [`identity`], [`client`], [`token`], [`keys`], [`rotation`],
//! [`revocation`], [`limits`], [`audit`], [`authority`], [`clock`], [`oauth`], [`config`] and
//! [`crypto`] (ring's one home) — imports no tonic, rustls, sqlx or clap. [`changes`] (the durable commit path and
//! the watch streams) and [`lifecycle`] (applying key steps) drive the core against the
//! [`store::Store`] trait. The edges adapt it: [`tls`] (rustls; with [`address_shares`],
//! each address's share of the handshakes in progress), [`connection`] (what a request knows
//! of its connection), [`grpc`] and [`wire`] (tonic), [`http`] (axum, the OAuth2 HTTP face), [`ops`] (plain-HTTP probes and Prometheus
//! metrics), [`transport`] (hyper: serving each connection with limits by peer, and admitting
//! requests only once their body is complete), [`store`] (sqlx: SQLite and PostgreSQL),
//! [`server`] (wiring, the background tasks, readiness), [`pki`] (rcgen, the development
//! PKI), [`failpoint`] (a test-only crash point); the CLI lives in the binary. See
//! `docs/architecture.md`.

#![forbid(unsafe_code)]

pub mod address_shares;
pub mod audit;
pub mod authority;
pub mod changes;
pub mod client;
pub mod clock;
pub mod config;
pub mod connection;
pub mod crypto;
pub mod failpoint;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod oauth;
pub mod ops;
pub mod pki;
pub mod revocation;
pub mod rotation;
pub mod server;
pub mod store;
pub mod tls;
pub mod token;
pub mod transport;
pub mod wire;
