//! The one place domain refusals become wire errors: a gRPC status carrying the OAuth2 error
//! code (in the `oauth-error` metadata and as the message's first word). The client gets a
//! fixed, actionable message; the detail goes to the log.

use tonic::{Code, Status, metadata::MetadataValue};

use crate::{oauth::ErrorCode, token::IssueError};

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
    oauth_status(error.code(), &error.public_message())
}
