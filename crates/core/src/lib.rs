//! # tokenmint-core
//!
//! The domain of tokenmint, free of any async runtime, network, TLS or database: who a peer
//! is ([`identity`]), what a client may ask for ([`client`]) and the grants that decide it
//! ([`grant`]: client credentials, token exchange), transaction tokens ([`txn`]), the
//! access-token claims and their signing and verification ([`token`], [`jose`], [`keys`],
//! with [`crypto`] as the one home of the
//! cryptographic primitives), when keys step ([`rotation`]), what is revoked ([`revocation`]),
//! rate limits ([`limits`]), the audit trail's records ([`audit`]), the clock ([`clock`]),
//! OAuth2's error codes ([`oauth`]) and form bodies ([`form`]), and what proxies forward of a
//! request: the caller's certificate in a header ([`forwarded`]) and the original path
//! ([`request_path`]).
//!
//! The server (`tokenmint`), the store (`tokenmint-store`) and the libraries build on it; its
//! `Cargo.toml` keeps tokio, tonic, hyper, axum, sqlx and rustls out, so the dependency rule
//! is the compiler's to keep.

#![forbid(unsafe_code)]

pub mod audit;
pub mod client;
pub mod clock;
pub mod crypto;
pub mod form;
pub mod forwarded;
pub mod grant;
pub mod identity;
pub mod introspection;
pub mod jose;
pub mod keys;
pub mod limits;
pub mod oauth;
pub mod request_path;
pub mod revocation;
pub mod rotation;
pub mod token;
pub mod txn;
