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
//!              │                     ├─ client::ClientRegistry.authenticate  (identity matchers, secret) ─▶ Authenticated
//!              │                     ├─ Authority.admit_issuance              (disabled, permission, staleness, cut-off, rate)
//!              │                     ├─ grant::client_credentials             (scopes, audiences, lifetime) ─▶ Grant
//!              │                     └─ token::Issuer.mint(now)               (claims ─▶ jose::CompactSigner ─▶ dyn Signer)
//!              ▼
//!  wire (domain error ─▶ Refusal ─▶ gRPC status | HTTP error)   store (SQLite or PostgreSQL: keys sealed under a KEK, clients, audit)
//! ```
//!
//! ## The dependency rule
//!
//! The domain core is its own crate, `tokenmint-core` (identity, clients, tokens, keys,
//! rotation, revocation, limits, audit records, the clock, OAuth2 codes, and `crypto`, ring's
//! one home): its `Cargo.toml` has no tokio, tonic, hyper, axum, sqlx or rustls. The store is
//! `tokenmint-store` (sqlx: SQLite and PostgreSQL); the generated messages and clients are
//! `tokenmint-proto`. This crate is the server: [`changes`] (the durable commit path and the
//! watch streams) and [`lifecycle`] (applying key steps) drive the core against the store;
//! [`authority`] is the core's entry point for a request; [`config`] reads `tokenmint.toml`.
//! The edges adapt it: [`tls`] (rustls; with `address_shares`, each address's share of the
//! handshakes in progress), `connection` (what a request knows of its connection), [`grpc`]
//! (one file per service) and [`wire`] (tonic), `http` (axum, the OAuth2 HTTP face),
//! `layers` (the request layers every listener runs), [`ops`] (plain-HTTP probes and
//! Prometheus metrics), [`authz`] (the verification sidecar, `tokenmint authz`, over
//! `tokenmint-verify`), `transport` (hyper: serving each connection with limits by
//! peer, and admitting requests only once their body is complete), [`server`] (wiring, the
//! background tasks, readiness), [`pki`] (rcgen, the development PKI); the CLI lives in the
//! binary. See `docs/architecture.md`.

#![forbid(unsafe_code)]

// Modules the binary, the tests and the benches use are public; the rest serve only inside the
// server, so the compiler reports what they stop using.

mod address_shares;
pub mod authority;
pub mod authz;
pub mod changes;
pub use tokenmint_config as config;
mod connection;
pub mod custody;
pub mod grpc;
mod http;
mod layers;
pub mod lifecycle;
pub mod ops;
pub mod pki;
pub mod registration;
pub mod server;
pub mod tls;
mod transport;
pub mod wire;
