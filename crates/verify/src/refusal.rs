//! A refusal as the caller sees it, written once: RFC 6750 on HTTP (`401` with
//! `WWW-Authenticate`, `403` for a missing scope, `503` when the verifier cannot vouch for
//! its state) with a JSON error body, and the matching status on gRPC.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::error::VerifyError;

/// Why a request is refused: a token that did not verify, or one without a required scope.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The token did not verify (or there was none).
    Token(VerifyError),
    /// The token verified but lacks this scope.
    InsufficientScope(String),
    /// The handler runs without the layer in front of it (a set-up mistake).
    NotBehindLayer,
}

/// gRPC status codes used here.
const GRPC_UNAUTHENTICATED: &str = "16";
const GRPC_PERMISSION_DENIED: &str = "7";
const GRPC_UNAVAILABLE: &str = "14";
const GRPC_INTERNAL: &str = "13";

impl Refusal {
    /// The HTTP status, the RFC 6750 error code (none for a request without a token) and a
    /// description safe to show the caller.
    fn parts(&self) -> (StatusCode, Option<&'static str>, String) {
        match self {
            Self::Token(VerifyError::Missing) => (
                StatusCode::UNAUTHORIZED,
                None,
                "a bearer token is required".into(),
            ),
            Self::Token(e) if e.is_unavailable() => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("temporarily_unavailable"),
                "the token cannot be checked right now; retry".into(),
            ),
            Self::Token(VerifyError::Malformed(_)) => (
                StatusCode::UNAUTHORIZED,
                Some("invalid_token"),
                "the token is malformed".into(),
            ),
            Self::Token(e) => (
                StatusCode::UNAUTHORIZED,
                Some("invalid_token"),
                e.to_string(),
            ),
            Self::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                Some("insufficient_scope"),
                format!("the token lacks the scope {scope:?}"),
            ),
            Self::NotBehindLayer => (
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "the service is not behind tokenmint-verify's layer".into(),
            ),
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3).
    fn challenge(&self, code: Option<&str>, description: &str) -> Option<HeaderValue> {
        let mut value = String::from("Bearer");
        if let Some(code) = code.filter(|c| *c != "temporarily_unavailable") {
            value.push_str(&format!(
                " error=\"{code}\", error_description=\"{}\"",
                description.replace(['"', '\\'], "'")
            ));
            if let Self::InsufficientScope(scope) = self {
                value.push_str(&format!(", scope=\"{}\"", scope.replace(['"', '\\'], "'")));
            }
        }
        match self {
            Self::NotBehindLayer => None,
            _ => HeaderValue::from_str(&value).ok(),
        }
    }

    /// The HTTP response: the status, the challenge and a JSON body
    /// `{"error": …, "error_description": …}`.
    pub fn to_http(&self) -> Response<Full<Bytes>> {
        let (status, code, description) = self.parts();
        let body = serde_json::json!({
            "error": code.unwrap_or(if status == StatusCode::UNAUTHORIZED { "invalid_request" } else { "server_error" }),
            "error_description": description,
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = self.challenge(code, &description) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }

    /// The gRPC response: trailers-only, `UNAUTHENTICATED`, `PERMISSION_DENIED`,
    /// `UNAVAILABLE` or `INTERNAL`, with the description as `grpc-message`.
    pub fn to_grpc(&self) -> Response<Full<Bytes>> {
        let (status, code, description) = self.parts();
        let grpc_status = match status {
            StatusCode::FORBIDDEN => GRPC_PERMISSION_DENIED,
            StatusCode::SERVICE_UNAVAILABLE => GRPC_UNAVAILABLE,
            StatusCode::INTERNAL_SERVER_ERROR => GRPC_INTERNAL,
            _ => GRPC_UNAUTHENTICATED,
        };
        let mut response = Response::new(Full::new(Bytes::new()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static(grpc_status));
        if let Ok(message) = HeaderValue::from_str(&percent_encode(&description)) {
            headers.insert("grpc-message", message);
        }
        if let Some(challenge) = self.challenge(code, &description) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }

    /// The response in the request's protocol: gRPC if its content type says so.
    pub fn to_response_for(&self, request_headers: &http::HeaderMap) -> Response<Full<Bytes>> {
        let grpc = request_headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if grpc { self.to_grpc() } else { self.to_http() }
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Refusal {
    fn into_response(self) -> axum_core::response::Response {
        self.to_http().map(axum_core::body::Body::new)
    }
}
