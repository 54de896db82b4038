//! The one place domain refusals become wire errors: a gRPC status carrying the OAuth2 error
//! code (in the `oauth-error` metadata and as the message's first word). The client gets a
//! fixed, actionable message; the detail goes to the log.

use tonic::{Code, Status, metadata::MetadataValue};

use crate::{
    authority::{CallerError, RevokeError},
    client::AuthError,
    lifecycle::LifecycleError,
    oauth::ErrorCode,
    revocation::CapError,
    rotation::RotateError,
    store::StoreError,
    token::IssueError,
};

/// The metadata key that carries the OAuth2 error code on a refused RPC.
pub const OAUTH_ERROR_METADATA: &str = "oauth-error";

/// The gRPC code for an OAuth2 error.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidClient => Code::Unauthenticated,
        ErrorCode::UnauthorizedClient => Code::PermissionDenied,
        ErrorCode::InvalidScope | ErrorCode::InvalidTarget | ErrorCode::InvalidRequest => {
            Code::InvalidArgument
        }
        ErrorCode::TemporarilyUnavailable => Code::Unavailable,
        ErrorCode::ServerError => Code::Internal,
    }
}

/// A status for an OAuth2 refusal: `"<code>: <message>"`, with the code in metadata too.
pub fn oauth_status(code: ErrorCode, message: &str) -> Status {
    let mut status = Status::new(grpc_code(code), format!("{code}: {message}"));
    status.metadata_mut().insert(
        OAUTH_ERROR_METADATA,
        MetadataValue::from_static(code.as_str()),
    );
    status
}

/// The status for a refused issuance; logs the detail.
pub fn issue_refused(error: &IssueError, remote: Option<std::net::SocketAddr>) -> Status {
    match error.code() {
        ErrorCode::ServerError => tracing::error!(error = %error, ?remote, "token issuance failed"),
        code => tracing::info!(error = %error, oauth_error = %code, ?remote, "token refused"),
    }
    let mut status = oauth_status(error.code(), &error.public_message());
    if let IssueError::CutOff { retry_after, .. } = error
        && let Ok(value) = MetadataValue::try_from(retry_after.as_secs().max(1).to_string())
    {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
    }
    status
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
            let mut status =
                Status::resource_exhausted(format!("{}: {cap}", ErrorCode::TemporarilyUnavailable));
            status.metadata_mut().insert(
                OAUTH_ERROR_METADATA,
                MetadataValue::from_static(ErrorCode::TemporarilyUnavailable.as_str()),
            );
            if let Ok(value) = MetadataValue::try_from(retry_after.to_string()) {
                status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
            }
            status
        }
        RevokeError::InvalidArgument(message) => oauth_status(ErrorCode::InvalidRequest, message),
    }
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
        LifecycleError::Key(e) => {
            tracing::error!(error = %e, "key lifecycle step failed");
            oauth_status(
                ErrorCode::ServerError,
                "the key step failed; nothing was changed",
            )
        }
    }
}
