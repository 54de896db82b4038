//! The one place domain refusals become wire errors. Each domain error becomes a
//! transport-neutral [`Refusal`] (its kind, OAuth2 code, fixed message and retry hint; the
//! detail goes to the log); a refusal is mapped once to a gRPC status ([`grpc`]: the OAuth2
//! code in the `oauth-error` metadata and as the message's first word) and once to HTTP
//! ([`HttpError`]: a status code and an RFC 6749 §5.2 JSON body).

use tonic::{Code, Status, metadata::MetadataValue};

use crate::{
    authority::{CallerError, IntrospectError, RevokeError},
    lifecycle::LifecycleError,
};
use tokenmint_core::{
    client::AuthError,
    oauth::{ErrorCode, Refusal, RefusalKind},
    revocation::CapError,
    rotation::RotateError,
    token::IssueError,
};
use tokenmint_store::StoreError;

/// The metadata key that carries the OAuth2 error code on a refused RPC.
pub const OAUTH_ERROR_METADATA: &str = "oauth-error";

/// The gRPC status for a refusal: `"<code>: <message>"`, the OAuth2 code in the
/// `oauth-error` metadata and the retry hint in `retry-after`.
pub fn grpc(refusal: Refusal) -> Status {
    let code = match refusal.kind {
        RefusalKind::Unauthenticated => Code::Unauthenticated,
        RefusalKind::PermissionDenied => Code::PermissionDenied,
        RefusalKind::InvalidArgument => Code::InvalidArgument,
        RefusalKind::FailedPrecondition => Code::FailedPrecondition,
        RefusalKind::NotFound => Code::NotFound,
        RefusalKind::Exhausted => Code::ResourceExhausted,
        RefusalKind::Unavailable => Code::Unavailable,
        RefusalKind::TooLarge => Code::OutOfRange,
        RefusalKind::TooSlow => Code::DeadlineExceeded,
        RefusalKind::Internal => Code::Internal,
    };
    let mut status = Status::new(code, format!("{}: {}", refusal.code, refusal.message));
    status.metadata_mut().insert(
        OAUTH_ERROR_METADATA,
        MetadataValue::from_static(refusal.code.as_str()),
    );
    if let Some(secs) = refusal.retry_after_secs
        && let Ok(value) = MetadataValue::try_from(secs.to_string())
    {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
    }
    status
}

/// The gRPC status for an OAuth2 refusal of the kind its code implies.
pub fn oauth_status(code: ErrorCode, message: &str) -> Status {
    grpc(Refusal::oauth(code, message))
}

/// The status for a refused issuance (counted where it was decided, `Authority::issue`); logs
/// the detail.
pub fn issue_refused(error: &IssueError, remote: Option<std::net::SocketAddr>) -> Refusal {
    match error.code() {
        ErrorCode::ServerError => tracing::error!(error = %error, ?remote, "token issuance failed"),
        code => tracing::info!(error = %error, oauth_error = %code, ?remote, "token refused"),
    }
    match error {
        IssueError::RateLimited { retry_after, .. } => {
            Refusal::exhausted(error.public_message(), retry_after.as_secs())
        }
        IssueError::CutOff { retry_after, .. } => {
            Refusal::oauth(error.code(), error.public_message()).retry_after(retry_after.as_secs())
        }
        _ => Refusal::oauth(error.code(), error.public_message()),
    }
}

/// Counts an issued token, by client.
pub fn issued(client_id: &str) {
    crate::ops::record_client(client_id);
    metrics::counter!("tokenmint_tokens_issued_total", "client" => client_id.to_owned())
        .increment(1);
}

/// The status for a caller refused outright (no certificate, unknown or disabled client,
/// missing permission, not ready): never an `active: false`.
pub fn caller_refused(error: &CallerError, remote: Option<std::net::SocketAddr>) -> Refusal {
    tracing::info!(error = %error, ?remote, "caller refused");
    match error {
        CallerError::Auth(AuthError::NoCertificate) => Refusal::oauth(
            ErrorCode::InvalidClient,
            "a client certificate is required: connect with mutual TLS",
        ),
        CallerError::Auth(AuthError::Ambiguous(_)) => Refusal::oauth(
            ErrorCode::InvalidClient,
            "client authentication failed: the certificate matches several clients",
        ),
        CallerError::Auth(_) => Refusal::oauth(
            ErrorCode::InvalidClient,
            "client authentication failed: the certificate does not identify an enabled client",
        ),
        CallerError::NotPermitted { permission, .. } => Refusal::oauth(
            ErrorCode::UnauthorizedClient,
            format!("this client does not have the {permission} permission"),
        ),
        CallerError::NotReady => Refusal::oauth(
            ErrorCode::TemporarilyUnavailable,
            "the revocation state is still loading; retry shortly",
        ),
        CallerError::Stale(_) => Refusal::oauth(
            ErrorCode::TemporarilyUnavailable,
            "this replica cannot reach the store and its revocation state may be out of date; retry, possibly on another replica",
        ),
    }
}

/// The status for a refused introspection request: the caller, or a malformed argument.
pub fn introspect_refused(
    error: &IntrospectError,
    remote: Option<std::net::SocketAddr>,
) -> Refusal {
    match error {
        IntrospectError::Caller(e) => caller_refused(e, remote),
        IntrospectError::MalformedThumbprint => {
            tracing::info!(error = %error, ?remote, "introspection refused");
            Refusal::oauth(
                ErrorCode::InvalidRequest,
                "presented_certificate_thumbprint must be the base64url SHA-256 of the certificate your caller presented (43 characters); leave it out when your caller presented none",
            )
        }
    }
}

/// The status for a refused revocation.
pub fn revoke_refused(error: &RevokeError, remote: Option<std::net::SocketAddr>) -> Refusal {
    match error {
        RevokeError::Caller(e) => caller_refused(e, remote),
        RevokeError::NotOwner { .. } => {
            tracing::info!(error = %error, ?remote, "revocation refused");
            Refusal::oauth(
                ErrorCode::UnauthorizedClient,
                "a client may revoke only its own tokens",
            )
        }
        RevokeError::Cap(cap) => {
            tracing::warn!(error = %error, ?remote, "revocation refused by a cap");
            let retry_after = match cap {
                CapError::Rate { retry_after, .. } => retry_after.as_secs().max(1),
                CapError::Full { .. } | CapError::ClientFull { .. } => 60,
            };
            Refusal::exhausted(cap.to_string(), retry_after)
        }
        RevokeError::InvalidArgument(message) => {
            Refusal::oauth(ErrorCode::InvalidRequest, message.as_str())
        }
    }
}

/// `RESOURCE_EXHAUSTED` (HTTP 429) with `temporarily_unavailable` and a retry hint in seconds.
pub fn resource_exhausted(message: &str, retry_after_secs: u64) -> Status {
    grpc(Refusal::exhausted(message, retry_after_secs))
}

/// The metadata key that carries a retry hint, in whole seconds.
pub const RETRY_AFTER_METADATA: &str = "retry-after";

/// The refusal for a store failure: nothing was committed.
pub fn store_failed(error: &StoreError) -> Refusal {
    match error {
        // NOT_FOUND, with the OAuth2 code every refusal carries (SPEC §11).
        StoreError::NotFound(what) => Refusal::new(
            RefusalKind::NotFound,
            ErrorCode::InvalidRequest,
            format!("{what} does not exist"),
        ),
        other => {
            tracing::error!(error = %other, "store failure; nothing was committed");
            Refusal::oauth(
                ErrorCode::TemporarilyUnavailable,
                "the store is unavailable; nothing was changed, retry later",
            )
        }
    }
}

/// The refusal for a failed or refused key-lifecycle request.
pub fn lifecycle_failed(error: &LifecycleError) -> Refusal {
    match error {
        LifecycleError::Refused(RotateError::UnknownKey(kid)) => Refusal::new(
            RefusalKind::NotFound,
            ErrorCode::InvalidRequest,
            format!("no key {kid}"),
        ),
        LifecycleError::Refused(refusal) => Refusal::new(
            RefusalKind::FailedPrecondition,
            ErrorCode::InvalidRequest,
            refusal.to_string(),
        ),
        LifecycleError::Store(e) => store_failed(e),
        LifecycleError::SavedNotLoaded(e) => {
            tracing::error!(error = %e, "key lifecycle step saved; the key ring could not be loaded");
            Refusal::oauth(
                ErrorCode::ServerError,
                "the key step was saved (see keys list), but this replica cannot load the key ring it leads to: check that every replica is configured with the KEK the keys are sealed under (docs/key-lifecycle.md)",
            )
        }
        LifecycleError::Key(e) => {
            tracing::error!(error = %e, "key lifecycle step failed");
            Refusal::oauth(
                ErrorCode::ServerError,
                "the key step failed; nothing was changed",
            )
        }
    }
}

/// An HTTP refusal: a status code and the RFC 6749 §5.2 JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status.
    pub status: axum::http::StatusCode,
    /// The OAuth2 error code.
    pub error: String,
    /// The human-readable description.
    pub description: String,
    /// A retry hint in seconds (`Retry-After`).
    pub retry_after: Option<String>,
}

impl HttpError {
    /// A refusal with this status and code.
    pub fn new(status: axum::http::StatusCode, code: ErrorCode, description: &str) -> Self {
        Self {
            status,
            error: code.as_str().to_owned(),
            description: description.to_owned(),
            retry_after: None,
        }
    }

    /// 400 with this code.
    pub fn bad_request(code: ErrorCode, description: &str) -> Self {
        Self::new(axum::http::StatusCode::BAD_REQUEST, code, description)
    }

    /// 401 `invalid_client`.
    pub fn invalid_client(description: &str) -> Self {
        Self::new(
            axum::http::StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidClient,
            description,
        )
    }

    /// The one rule of the OAuth2 endpoints (token, revocation per RFC 7009 §2.2.1,
    /// introspection per RFC 7662 §2.3): RFC 6749 §5.2 answers 400 for every error but
    /// `invalid_client` (401) and server-side conditions — `unauthorized_client` included.
    pub fn per_rfc6749(mut self) -> Self {
        if self.status == axum::http::StatusCode::FORBIDDEN {
            self.status = axum::http::StatusCode::BAD_REQUEST;
        }
        self
    }
}

impl From<Refusal> for HttpError {
    fn from(refusal: Refusal) -> Self {
        use axum::http::StatusCode as H;
        let status = match refusal.kind {
            RefusalKind::Unauthenticated => H::UNAUTHORIZED,
            RefusalKind::PermissionDenied => H::FORBIDDEN,
            RefusalKind::InvalidArgument | RefusalKind::FailedPrecondition => H::BAD_REQUEST,
            RefusalKind::NotFound => H::NOT_FOUND,
            RefusalKind::Exhausted => H::TOO_MANY_REQUESTS,
            RefusalKind::Unavailable => H::SERVICE_UNAVAILABLE,
            RefusalKind::TooLarge => H::PAYLOAD_TOO_LARGE,
            RefusalKind::TooSlow => H::REQUEST_TIMEOUT,
            RefusalKind::Internal => H::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            error: refusal.code.as_str().to_owned(),
            description: refusal.message,
            retry_after: refusal.retry_after_secs.map(|s| s.to_string()),
        }
    }
}

impl axum::response::IntoResponse for HttpError {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == axum::http::StatusCode::UNAUTHORIZED {
            headers.insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"tokenmint\""),
            );
        }
        if let Some(retry) = self
            .retry_after
            .and_then(|r| axum::http::HeaderValue::from_str(&r).ok())
        {
            headers.insert(axum::http::header::RETRY_AFTER, retry);
        }
        response
    }
}

/// Adds `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1): for token
/// responses and every refusal of the HTTP face.
pub fn no_store(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Why a request was refused at admission, before its handler (`transport::admit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmissionRefusal {
    /// The body did not arrive within `server.body_timeout` (this long).
    BodyTimedOut(std::time::Duration),
    /// The body is over this many bytes.
    BodyTooLarge(usize),
    /// The body could not be read (the peer reset the stream, or sent a malformed one).
    BodyUnreadable,
    /// No slot in flight in the pool of the request's kind of connection.
    Shed {
        /// Whether the connection has a verified client certificate.
        with_certificate: bool,
    },
    /// No response within `server.request_timeout` (this long).
    TimedOut(std::time::Duration),
}

impl AdmissionRefusal {
    /// The `reason` label of `tokenmint_requests_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            AdmissionRefusal::BodyTimedOut(_) => "body_timeout",
            AdmissionRefusal::BodyTooLarge(_) => "body_too_large",
            AdmissionRefusal::BodyUnreadable => "body_unreadable",
            AdmissionRefusal::Shed { .. } => "in_flight",
            AdmissionRefusal::TimedOut(_) => "request_timeout",
        }
    }

    fn refusal(self) -> Refusal {
        match self {
            AdmissionRefusal::BodyTimedOut(limit) => Refusal::new(
                RefusalKind::TooSlow,
                ErrorCode::InvalidRequest,
                format!(
                    "the request body did not arrive within server.body_timeout ({}s)",
                    limit.as_secs_f64()
                ),
            ),
            AdmissionRefusal::BodyTooLarge(limit) => Refusal::new(
                RefusalKind::TooLarge,
                ErrorCode::InvalidRequest,
                format!("the request is larger than {limit} bytes"),
            ),
            AdmissionRefusal::BodyUnreadable => Refusal::oauth(
                ErrorCode::InvalidRequest,
                "the request body could not be read",
            ),
            AdmissionRefusal::Shed { with_certificate } => Refusal::exhausted(
                if with_certificate {
                    "tokenmint is at its limit of requests in flight (server.max_in_flight); retry shortly"
                } else {
                    "tokenmint is at its limit of requests in flight from connections without a client certificate (server.max_in_flight_without_certificate); retry shortly"
                },
                1,
            ),
            // The handler may have committed a change before the time ran out: retrying is
            // safe (every change is idempotent) and tells which.
            AdmissionRefusal::TimedOut(limit) => Refusal::oauth(
                ErrorCode::TemporarilyUnavailable,
                format!(
                    "the request was not answered within server.request_timeout ({}s); a change it asked for may have been made: retry",
                    limit.as_secs_f64()
                ),
            ),
        }
    }

    /// The response: a gRPC status, or the HTTP face's JSON error (with `no-store`).
    pub fn into_response(self, grpc: bool) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let refusal = self.refusal();
        if grpc {
            return self::grpc(refusal).into_http();
        }
        no_store(HttpError::from(refusal).into_response())
    }
}
