//! The request layers every listener runs, outermost first: each request's span and its
//! duration metric, the count of refused authentications by address (feeding the per-address
//! shedding at accept), and admission (`transport::admit`: the body in full, a slot in flight,
//! the request's time).

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};

use crate::{tls, transport};

/// The request layers every listener runs: each request's span and duration ,
/// the count of failed authentications by address, and admission (`transport::admit`: the body
/// in full, a slot in flight, the request's time).
pub fn layered(
    routes: tonic::service::Routes,
    admission: Arc<transport::Admission>,
    failures: Option<Arc<tls::PeerFailures>>,
) -> axum::Router {
    routes
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            admission,
            transport::admit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            failures,
            count_auth_failures,
        ))
        .layer(axum::middleware::from_fn(record_rpc))
}

/// The RPCs and HTTP routes the duration histogram names; anything else is `other`, so a
/// client cannot grow the label set.
const KNOWN_PATHS: &[&str] = &[
    "/tokenmint.v1.TokenService/IssueToken",
    "/tokenmint.v1.TokenService/IntrospectToken",
    "/tokenmint.v1.TokenService/RevokeToken",
    "/tokenmint.v1.KeyService/GetJwks",
    "/tokenmint.v1.KeyService/WatchJwks",
    "/tokenmint.v1.RevocationService/WatchRevocations",
    "/tokenmint.v1.AdminService/RevokeTokenId",
    "/tokenmint.v1.AdminService/RevokeClientTokens",
    "/tokenmint.v1.AdminService/DisableClient",
    "/tokenmint.v1.AdminService/EnableClient",
    "/tokenmint.v1.AdminService/ListRevocations",
    "/tokenmint.v1.AdminService/ListKeys",
    "/tokenmint.v1.AdminService/RotateKeys",
    "/tokenmint.v1.AdminService/RevokeKey",
    "/tokenmint.v1.AdminService/RegisterClient",
    "/tokenmint.v1.AdminService/UpdateClient",
    "/tokenmint.v1.AdminService/GetClient",
    "/tokenmint.v1.AdminService/ListClients",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/oauth2/token",
    "/oauth2/introspect",
    "/oauth2/revoke",
    "/.well-known/jwks.json",
    "/.well-known/jwks-all.json",
    "/.well-known/oauth-authorization-server",
];

/// The label for a request path.
pub fn rpc_label(path: &str) -> &'static str {
    KNOWN_PATHS
        .iter()
        .find(|known| **known == path)
        .copied()
        .unwrap_or("other")
}

/// Middleware on the service port: records each request's time to its response head in
/// `tokenmint_rpc_duration_seconds{rpc}` (for a stream, the time to its first response).
pub async fn record_rpc(request: Request, next: Next) -> Response {
    let rpc = rpc_label(request.uri().path());
    let started = Instant::now();
    // One span per request: every log line inside carries the RPC, and the client once the
    // handler has authenticated it (`record_client`).
    let span = tracing::info_span!("request", rpc, client_id = tracing::field::Empty);
    let response = tracing::Instrument::instrument(next.run(request), span).await;
    metrics::histogram!("tokenmint_rpc_duration_seconds", "rpc" => rpc)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Counts a call refused as unauthenticated (gRPC `UNAUTHENTICATED`, HTTP 401) against its
/// peer's address, like a failed handshake: an address that keeps presenting a certificate no
/// client claims is shed at accept once past `server.handshake_failures_per_peer`.
pub async fn count_auth_failures(
    State(failures): State<Option<Arc<tls::PeerFailures>>>,
    request: Request,
    next: Next,
) -> Response {
    let remote = request
        .extensions()
        .get::<crate::connection::ConnectionInfo>()
        .and_then(|info| info.remote_addr);
    let response = next.run(request).await;
    if let (Some(failures), Some(remote)) = (&failures, remote) {
        let unauthenticated = response.status() == axum::http::StatusCode::UNAUTHORIZED
            || response
                .headers()
                .get("grpc-status")
                .is_some_and(|code| code.as_bytes() == b"16");
        if unauthenticated {
            failures.failed(remote.ip());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(
            rpc_label("/tokenmint.v1.TokenService/IssueToken"),
            "/tokenmint.v1.TokenService/IssueToken"
        );
        assert_eq!(rpc_label("/oauth2/token"), "/oauth2/token");
        assert_eq!(rpc_label("/anything/else"), "other");
        assert_eq!(rpc_label("/oauth2/token/"), "other");
    }
}
