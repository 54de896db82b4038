//! The OAuth2 error codes every refusal carries (RFC 6749 §5.2, RFC 8707 §2), as the core names them.

use std::fmt;

/// An OAuth2 error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Client authentication failed.
    InvalidClient,
    /// A requested scope is unknown, malformed or not allowed.
    InvalidScope,
    /// A requested audience (resource) is not allowed, or there is none.
    InvalidTarget,
    /// The client may not use this grant or operation.
    UnauthorizedClient,
    /// The request is malformed.
    InvalidRequest,
    /// The grant type is not supported (only `client_credentials` is).
    UnsupportedGrantType,
    /// The server cannot serve the request now; retry later.
    TemporarilyUnavailable,
    /// An unexpected server-side failure.
    ServerError,
}

impl ErrorCode {
    /// The code as RFC 6749 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
