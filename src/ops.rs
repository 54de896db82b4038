//! The operations edge: a plain-HTTP listener for the node's agents and Prometheus, apart
//! from the mTLS port, with no client certificate. Loopback by default (`server.ops_listen`).
//!
//! - `/healthz`: the process answers.
//! - `/readyz`: SPEC §9 readiness. Ready means the blocklist is loaded and the last
//!   successful catch-up with the store is within `max_issue_staleness`, and the server is
//!   not shutting down. Store reachability is not part of it (see `docs/deployment.md`).
//! - `/metrics`: Prometheus text from the `metrics` recorder this module installs.
//!
//! It also holds two of the layers every request on the service port passes: the request
//! span and duration histogram, and the count of unauthenticated answers per peer address
//! (admission is `transport`'s).
//!
//! The listener starts before the state is loaded, so an orchestrator sees "alive, not
//! ready" during a slow start.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::authority::Authority;

/// What `/readyz` reads: the authority once it is loaded, and whether shutdown has begun.
#[derive(Debug)]
pub struct Probe {
    authority: ArcSwapOption<Authority>,
    max_issue_staleness: Duration,
    stopping: AtomicBool,
}

impl Probe {
    /// A probe that reports "starting" until `attach` is called.
    pub fn new(max_issue_staleness: Duration) -> Arc<Self> {
        Arc::new(Self {
            authority: ArcSwapOption::empty(),
            max_issue_staleness,
            stopping: AtomicBool::new(false),
        })
    }

    /// The loaded authority: from now on readiness follows its state.
    pub fn attach(&self, authority: Arc<Authority>) {
        self.authority.store(Some(authority));
    }

    /// Shutdown has begun: not ready from now on.
    pub fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Ready, or why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        let authority = self.authority.load();
        let Some(authority) = authority.as_ref() else {
            return Err("starting: the revocation state is not loaded yet".into());
        };
        if !authority.blocklist().is_loaded() {
            return Err("starting: the revocation state is not loaded yet".into());
        }
        if let Some(error) = authority.key_ring_error() {
            return Err(format!(
                "the signing keys in the store cannot be loaded: {error}"
            ));
        }
        let stale = authority.stale_for();
        if stale > self.max_issue_staleness {
            return Err(format!(
                "no catch-up with the store for {}s (max_issue_staleness {}s)",
                stale.as_secs(),
                self.max_issue_staleness.as_secs()
            ));
        }
        Ok(())
    }
}

/// Histogram buckets (seconds) for request durations and replication lag.
const BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's Prometheus recorder, installed on first use. If another recorder is already
/// installed (an embedding program's), the handle renders only what this one records.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets(BUCKETS) {
                Ok(builder) => builder,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only tokenmint's own"
                );
            }
            handle
        })
        .clone()
}

#[derive(Clone)]
struct OpsState {
    probe: Arc<Probe>,
    metrics: PrometheusHandle,
}

/// The operations router.
pub fn router(probe: Arc<Probe>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { text(StatusCode::OK, "ok\n".into()) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .fallback(|| async {
            text(
                StatusCode::NOT_FOUND,
                "not found: try /healthz, /readyz or /metrics\n".into(),
            )
        })
        .with_state(OpsState { probe, metrics })
}

/// Serves the operations router on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    probe: Arc<Probe>,
    metrics: PrometheusHandle,
    stop: CancellationToken,
) {
    let app = router(probe, metrics);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "operations listener failed");
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn readyz(State(state): State<OpsState>) -> Response {
    match state.probe.readiness() {
        Ok(()) => text(StatusCode::OK, "ready\n".into()),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn render_metrics(State(state): State<OpsState>) -> Response {
    // Gauges read at scrape time, from the state as it is now.
    if let Some(authority) = state.probe.authority.load().as_ref() {
        metrics::gauge!("tokenmint_blocklist_entries").set(authority.blocklist().live() as f64);
        metrics::gauge!("tokenmint_store_staleness_seconds")
            .set(authority.stale_for().as_secs_f64());
        metrics::gauge!("tokenmint_ready")
            .set(f64::from(u8::from(state.probe.readiness().is_ok())));
    }
    state.metrics.run_upkeep();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
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
    State(failures): State<Option<Arc<crate::tls::PeerFailures>>>,
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

/// Names the authenticated client on the current request's span.
pub fn record_client(client_id: &str) {
    tracing::Span::current().record("client_id", client_id);
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

    #[test]
    fn a_probe_without_state_is_not_ready_and_stopping_wins() {
        let probe = Probe::new(Duration::from_secs(300));
        assert!(probe.readiness().unwrap_err().starts_with("starting"));
        probe.mark_stopping();
        assert_eq!(probe.readiness().unwrap_err(), "shutting down");
    }
}
