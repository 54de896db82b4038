//! Forward auth over HTTP (nginx `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`,
//! Envoy's HTTP ext_authz): `/verify`, any method. Allowed → `200` with the `X-Tokenmint-*`
//! headers for upstream; refused → `401` or `403` only (nginx turns any other status into a
//! `500`), with the RFC 6750 challenge.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::any,
};

use super::Sidecar;
use super::decision::{Ask, Decision, Denial, Rules, decide, upstream_headers};
use tokenmint_verify::TXN_TOKEN_HEADER;

/// The forward-auth router.
pub fn router(sidecar: Arc<Sidecar>) -> Router {
    Router::new()
        .route("/verify", any(verify))
        // Envoy's HTTP ext_authz appends the original path to its `path_prefix`.
        .route("/verify/{*original}", any(verify))
        .with_state(sidecar)
}

async fn verify(
    State(sidecar): State<Arc<Sidecar>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // The path a proxy appended to /verify (Envoy) comes first: it is the proxy's own request
    // line. Else only the header this proxy's configuration sets (`authz.path_header`), never
    // another a client could have slipped through.
    let appended = uri.path().strip_prefix("/verify").filter(|p| !p.is_empty());
    let path = appended.or_else(|| {
        let header = sidecar.config.path_header.as_deref()?;
        text(header)
    });
    // A certificate header that is not text is a malformed certificate, never "none".
    let certificate = headers
        .get(sidecar.config.certificate_header.as_str())
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    // Repeated, the values are joined with `,` (as Envoy and newer nginx join them), which no
    // token verifies as: the service must never get a second one nobody checked.
    let txn_values: Vec<&str> = headers
        .get_all(TXN_TOKEN_HEADER)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .collect();
    let txn_token = (!txn_values.is_empty()).then(|| txn_values.join(","));
    let ask = Ask {
        authorization: text(header::AUTHORIZATION.as_str()),
        certificate,
        path,
        txn_token: txn_token.as_deref(),
    };
    let decision = decide(&sidecar.verifier, Rules::of(&sidecar.config), ask).await;
    super::count(&decision);
    match decision {
        Decision::Allow(allowed) => {
            let mut response = StatusCode::OK.into_response();
            let headers = response.headers_mut();
            for (name, value) in upstream_headers(&allowed) {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
            response
        }
        Decision::Deny(denial) => refusal(&denial),
    }
}

/// `401` or `403` with the challenge; `Retry-After` when the sidecar cannot vouch for its state.
fn refusal(denial: &Denial) -> Response {
    let status = match denial.status() {
        // nginx turns any status but 401 and 403 into a 500.
        StatusCode::SERVICE_UNAVAILABLE => StatusCode::UNAUTHORIZED,
        status => status,
    };
    let mut response = status.into_response();
    if let Ok(challenge) = HeaderValue::from_str(&denial.challenge()) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    if matches!(denial, Denial::Unavailable(_)) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
