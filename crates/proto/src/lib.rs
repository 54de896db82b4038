//! The protobuf messages and gRPC clients of `tokenmint.v1`, generated from the workspace's
//! `proto/` for the libraries, tools and tests that call tokenmint. Messages that carry a
//! token or a secret print `…` in its place under `Debug`.

#![forbid(unsafe_code)]

use std::fmt;

#[cfg(feature = "channel")]
pub mod backoff;
#[cfg(feature = "channel")]
pub mod connect;
#[cfg(feature = "core")]
pub mod convert;

/// `tokenmint.v1`: every message, enum and client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("tokenmint.v1");
}

use v1::{
    IntrospectTokenRequest, IssueTokenRequest, IssueTokenResponse, RegisterClientResponse,
    RevokeTokenRequest,
};

impl fmt::Debug for IssueTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssueTokenRequest")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &(!self.client_secret.is_empty()).then_some("…"),
            )
            .field("scopes", &self.scopes)
            .field("audiences", &self.audiences)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl fmt::Debug for IntrospectTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectTokenRequest")
            .field("token", &"…")
            .field(
                "presented_certificate_thumbprint",
                &self.presented_certificate_thumbprint,
            )
            .finish()
    }
}

impl fmt::Debug for RevokeTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevokeTokenRequest")
            .field("token", &"…")
            .finish()
    }
}

impl fmt::Debug for RegisterClientResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterClientResponse")
            .field("client", &self.client)
            .field("client_secret", &"…")
            .finish()
    }
}

impl fmt::Debug for IssueTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssueTokenResponse")
            .field("access_token", &"…")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scopes", &self.scopes)
            .field("audiences", &self.audiences)
            .field("key_id", &self.key_id)
            .finish()
    }
}
