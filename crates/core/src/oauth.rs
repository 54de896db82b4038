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

/// What kind of refusal, whatever the transport: each face maps it once (gRPC code, HTTP
/// status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The caller is not authenticated (gRPC `UNAUTHENTICATED`, HTTP 401).
    Unauthenticated,
    /// The caller may not do this (`PERMISSION_DENIED`, 403).
    PermissionDenied,
    /// The request is malformed or not allowed (`INVALID_ARGUMENT`, 400).
    InvalidArgument,
    /// The request does not fit the current state (`FAILED_PRECONDITION`, 400).
    FailedPrecondition,
    /// What it names does not exist (`NOT_FOUND`, 404).
    NotFound,
    /// A limit was reached; retry later (`RESOURCE_EXHAUSTED`, 429).
    Exhausted,
    /// The server cannot serve it now (`UNAVAILABLE`, 503).
    Unavailable,
    /// The request is too large (`OUT_OF_RANGE`, 413).
    TooLarge,
    /// The request arrived too slowly (`DEADLINE_EXCEEDED`, 408).
    TooSlow,
    /// An unexpected server-side failure (`INTERNAL`, 500).
    Internal,
}

/// A refusal as the core decides it: its kind, the OAuth2 code it carries, a fixed message
/// for the caller (the detail goes to the log), and when to retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The kind.
    pub kind: RefusalKind,
    /// The OAuth2 error code.
    pub code: ErrorCode,
    /// The message the caller sees.
    pub message: String,
    /// A retry hint, in whole seconds.
    pub retry_after_secs: Option<u64>,
}

impl Refusal {
    /// A refusal with this code, of the kind the code implies.
    pub fn oauth(code: ErrorCode, message: impl Into<String>) -> Self {
        let kind = match code {
            ErrorCode::InvalidClient => RefusalKind::Unauthenticated,
            ErrorCode::UnauthorizedClient => RefusalKind::PermissionDenied,
            ErrorCode::InvalidScope
            | ErrorCode::InvalidTarget
            | ErrorCode::InvalidRequest
            | ErrorCode::UnsupportedGrantType => RefusalKind::InvalidArgument,
            ErrorCode::TemporarilyUnavailable => RefusalKind::Unavailable,
            ErrorCode::ServerError => RefusalKind::Internal,
        };
        Self::new(kind, code, message)
    }

    /// A refusal of this kind carrying this code.
    pub fn new(kind: RefusalKind, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// A limit reached: `temporarily_unavailable`, retry after `secs` (at least 1).
    pub fn exhausted(message: impl Into<String>, secs: u64) -> Self {
        Self::new(
            RefusalKind::Exhausted,
            ErrorCode::TemporarilyUnavailable,
            message,
        )
        .retry_after(secs)
    }

    /// With a retry hint of `secs` (at least 1).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }
}
