//! The one place domain refusals become wire errors: a gRPC status carrying the OAuth2 error
//! code (in the `oauth-error` metadata and as the message's first word), and its HTTP form —
//! a status code and an RFC 6749 §5.2 JSON body — derived from that same status. The client
//! gets a fixed, actionable message; the detail goes to the log.

use tonic::{Code, Status, metadata::MetadataValue};

use crate::{
    authority::{CallerError, IntrospectError, RevokeError},
    lifecycle::LifecycleError,
};
use tokenmint_core::{
    client::AuthError, oauth::ErrorCode, revocation::CapError, rotation::RotateError,
    token::IssueError,
};
use tokenmint_store::StoreError;

/// The metadata key that carries the OAuth2 error code on a refused RPC.
pub const OAUTH_ERROR_METADATA: &str = "oauth-error";

/// The gRPC code for an OAuth2 error.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidClient => Code::Unauthenticated,
        ErrorCode::UnauthorizedClient => Code::PermissionDenied,
        ErrorCode::InvalidScope
        | ErrorCode::InvalidTarget
        | ErrorCode::InvalidRequest
        | ErrorCode::UnsupportedGrantType => Code::InvalidArgument,
        ErrorCode::TemporarilyUnavailable => Code::Unavailable,
        ErrorCode::ServerError => Code::Internal,
    }
}

/// A status for an OAuth2 refusal: `"<code>: <message>"`, with the code in metadata too.
pub fn oauth_status(code: ErrorCode, message: &str) -> Status {
    with_code(grpc_code(code), code, message)
}

/// The status for a refused issuance (counted where it was decided, `Authority::issue`); logs
/// the detail.
pub fn issue_refused(error: &IssueError, remote: Option<std::net::SocketAddr>) -> Status {
    match error.code() {
        ErrorCode::ServerError => tracing::error!(error = %error, ?remote, "token issuance failed"),
        code => tracing::info!(error = %error, oauth_error = %code, ?remote, "token refused"),
    }
    if let IssueError::RateLimited { retry_after, .. } = error {
        return resource_exhausted(&error.public_message(), retry_after.as_secs().max(1));
    }
    let mut status = oauth_status(error.code(), &error.public_message());
    if let IssueError::CutOff { retry_after, .. } = error
        && let Ok(value) = MetadataValue::try_from(retry_after.as_secs().max(1).to_string())
    {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
    }
    status
}

/// Counts an issued token, by client.
pub fn issued(client_id: &str) {
    crate::ops::record_client(client_id);
    metrics::counter!("tokenmint_tokens_issued_total", "client" => client_id.to_owned())
        .increment(1);
}

/// The status for a caller refused outright (no certificate, unknown or disabled client,
/// missing permission, not ready): never an `active: false`.
pub fn caller_refused(error: &CallerError, remote: Option<std::net::SocketAddr>) -> Status {
    tracing::info!(error = %error, ?remote, "caller refused");
    match error {
        CallerError::Auth(AuthError::NoCertificate) => oauth_status(
            ErrorCode::InvalidClient,
            "a client certificate is required: connect with mutual TLS",
        ),
        CallerError::Auth(AuthError::Ambiguous(_)) => oauth_status(
            ErrorCode::InvalidClient,
            "client authentication failed: the certificate matches several clients",
        ),
        CallerError::Auth(_) => oauth_status(
            ErrorCode::InvalidClient,
            "client authentication failed: the certificate does not identify an enabled client",
        ),
        CallerError::NotPermitted { permission, .. } => oauth_status(
            ErrorCode::UnauthorizedClient,
            &format!("this client does not have the {permission} permission"),
        ),
        CallerError::NotReady => oauth_status(
            ErrorCode::TemporarilyUnavailable,
            "the revocation state is still loading; retry shortly",
        ),
        CallerError::Stale(_) => oauth_status(
            ErrorCode::TemporarilyUnavailable,
            "this replica cannot reach the store and its revocation state may be out of date; retry, possibly on another replica",
        ),
    }
}

/// The status for a refused introspection request: the caller, or a malformed argument.
pub fn introspect_refused(error: &IntrospectError, remote: Option<std::net::SocketAddr>) -> Status {
    match error {
        IntrospectError::Caller(e) => caller_refused(e, remote),
        IntrospectError::MalformedThumbprint => {
            tracing::info!(error = %error, ?remote, "introspection refused");
            oauth_status(
                ErrorCode::InvalidRequest,
                "presented_certificate_thumbprint must be the base64url SHA-256 of the certificate your caller presented (43 characters); leave it out when your caller presented none",
            )
        }
    }
}

/// The status for a refused revocation.
pub fn revoke_refused(error: &RevokeError, remote: Option<std::net::SocketAddr>) -> Status {
    match error {
        RevokeError::Caller(e) => caller_refused(e, remote),
        RevokeError::NotOwner { .. } => {
            tracing::info!(error = %error, ?remote, "revocation refused");
            oauth_status(
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
            resource_exhausted(&cap.to_string(), retry_after)
        }
        RevokeError::InvalidArgument(message) => oauth_status(ErrorCode::InvalidRequest, message),
    }
}

/// `RESOURCE_EXHAUSTED` (HTTP 429) with `temporarily_unavailable` and a retry hint in seconds.
pub fn resource_exhausted(message: &str, retry_after_secs: u64) -> Status {
    let mut status =
        Status::resource_exhausted(format!("{}: {message}", ErrorCode::TemporarilyUnavailable));
    status.metadata_mut().insert(
        OAUTH_ERROR_METADATA,
        MetadataValue::from_static(ErrorCode::TemporarilyUnavailable.as_str()),
    );
    if let Ok(value) = MetadataValue::try_from(retry_after_secs.to_string()) {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
    }
    status
}

/// `OUT_OF_RANGE` (HTTP 413) with `invalid_request`: a request body over `limit` bytes.
pub fn too_large(limit: usize) -> Status {
    with_code(
        Code::OutOfRange,
        ErrorCode::InvalidRequest,
        &format!("the request is larger than {limit} bytes"),
    )
}

/// `DEADLINE_EXCEEDED` (HTTP 408) with `invalid_request`: the peer was too slow to send its
/// request.
pub fn deadline_exceeded(message: &str) -> Status {
    with_code(Code::DeadlineExceeded, ErrorCode::InvalidRequest, message)
}

/// A status with this gRPC code carrying an OAuth2 code.
fn with_code(grpc: Code, code: ErrorCode, message: &str) -> Status {
    let mut status = Status::new(grpc, format!("{code}: {message}"));
    status.metadata_mut().insert(
        OAUTH_ERROR_METADATA,
        MetadataValue::from_static(code.as_str()),
    );
    status
}

/// The metadata key that carries a retry hint, in whole seconds.
pub const RETRY_AFTER_METADATA: &str = "retry-after";

/// The status for a store failure: nothing was committed.
pub fn store_failed(error: &StoreError) -> Status {
    match error {
        StoreError::NotFound(what) => {
            // NOT_FOUND, with the OAuth2 code every refusal carries (SPEC §11).
            let mut status = Status::not_found(format!(
                "{}: {what} does not exist",
                ErrorCode::InvalidRequest
            ));
            status.metadata_mut().insert(
                OAUTH_ERROR_METADATA,
                MetadataValue::from_static(ErrorCode::InvalidRequest.as_str()),
            );
            status
        }
        other => {
            tracing::error!(error = %other, "store failure; nothing was committed");
            oauth_status(
                ErrorCode::TemporarilyUnavailable,
                "the store is unavailable; nothing was changed, retry later",
            )
        }
    }
}

/// The status for a failed or refused key-lifecycle request.
pub fn lifecycle_failed(error: &LifecycleError) -> Status {
    match error {
        LifecycleError::Refused(RotateError::UnknownKey(kid)) => {
            let mut status = Status::not_found(format!("invalid_request: no key {kid}"));
            status.metadata_mut().insert(
                OAUTH_ERROR_METADATA,
                MetadataValue::from_static("invalid_request"),
            );
            status
        }
        LifecycleError::Refused(refusal) => {
            let mut status = Status::failed_precondition(format!("invalid_request: {refusal}"));
            status.metadata_mut().insert(
                OAUTH_ERROR_METADATA,
                MetadataValue::from_static("invalid_request"),
            );
            status
        }
        LifecycleError::Store(e) => store_failed(e),
        LifecycleError::SavedNotLoaded(e) => {
            tracing::error!(error = %e, "key lifecycle step saved; the key ring could not be loaded");
            oauth_status(
                ErrorCode::ServerError,
                "the key step was saved (see keys list), but this replica cannot load the key ring it leads to: check that every replica is configured with the KEK the keys are sealed under (docs/key-lifecycle.md)",
            )
        }
        LifecycleError::Key(e) => {
            tracing::error!(error = %e, "key lifecycle step failed");
            oauth_status(
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

    /// The HTTP form of a gRPC refusal made by this module: the same OAuth2 code and message.
    pub fn from_status(status: Status) -> Self {
        use axum::http::StatusCode as H;
        let http = match status.code() {
            Code::Unauthenticated => H::UNAUTHORIZED,
            Code::PermissionDenied => H::FORBIDDEN,
            Code::InvalidArgument | Code::FailedPrecondition => H::BAD_REQUEST,
            Code::NotFound => H::NOT_FOUND,
            Code::ResourceExhausted => H::TOO_MANY_REQUESTS,
            Code::Unavailable => H::SERVICE_UNAVAILABLE,
            Code::OutOfRange => H::PAYLOAD_TOO_LARGE,
            Code::DeadlineExceeded => H::REQUEST_TIMEOUT,
            _ => H::INTERNAL_SERVER_ERROR,
        };
        let metadata = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let error = metadata(OAUTH_ERROR_METADATA)
            .unwrap_or_else(|| ErrorCode::ServerError.as_str().to_owned());
        let description = status
            .message()
            .strip_prefix(&format!("{error}: "))
            .unwrap_or(status.message())
            .to_owned();
        Self {
            status: http,
            error,
            description,
            retry_after: metadata(RETRY_AFTER_METADATA),
        }
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

    fn status(self) -> Status {
        match self {
            AdmissionRefusal::BodyTimedOut(limit) => deadline_exceeded(&format!(
                "the request body did not arrive within server.body_timeout ({}s)",
                limit.as_secs_f64()
            )),
            AdmissionRefusal::BodyTooLarge(limit) => too_large(limit),
            AdmissionRefusal::BodyUnreadable => oauth_status(
                ErrorCode::InvalidRequest,
                "the request body could not be read",
            ),
            AdmissionRefusal::Shed { with_certificate } => resource_exhausted(
                if with_certificate {
                    "tokenmint is at its limit of requests in flight (server.max_in_flight); retry shortly"
                } else {
                    "tokenmint is at its limit of requests in flight from connections without a client certificate (server.max_in_flight_without_certificate); retry shortly"
                },
                1,
            ),
            // The handler may have committed a change before the time ran out: retrying is
            // safe (every change is idempotent) and tells which.
            AdmissionRefusal::TimedOut(limit) => oauth_status(
                ErrorCode::TemporarilyUnavailable,
                &format!(
                    "the request was not answered within server.request_timeout ({}s); a change it asked for may have been made: retry",
                    limit.as_secs_f64()
                ),
            ),
        }
    }

    /// The response: a gRPC status, or the HTTP face's JSON error (with `no-store`).
    pub fn into_response(self, grpc: bool) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let status = self.status();
        if grpc {
            return status.into_http();
        }
        no_store(HttpError::from_status(status).into_response())
    }
}
