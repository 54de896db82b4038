//! The operations edge: a plain-HTTP listener for the node's agents and Prometheus, apart
//! from the mTLS port, with no client certificate. Loopback by default (`server.ops_listen`).
//!
//! - `/healthz`: the process answers.
//! - `/readyz`: SPEC §9 readiness. Ready means the blocklist is loaded and the last
//!   successful catch-up with the store is within `max_issue_staleness`, and the server is
//!   not shutting down. Store reachability is not part of it (see `docs/deployment.md`).
//! - `/metrics`: Prometheus text from the `metrics` recorder this module installs.
//!
//! The request layers that record each request's span and duration are in `layers`.
//!
//! The listener starts before the state is loaded, so an orchestrator sees "alive, not
//! ready" during a slow start.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
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
        if let Some(error) = authority.custody_error() {
            return Err(format!("the key custody cannot sign: {error}"));
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

/// Names the authenticated client on the current request's span.
pub fn record_client(client_id: &str) {
    tracing::Span::current().record("client_id", client_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_without_state_is_not_ready_and_stopping_wins() {
        let probe = Probe::new(Duration::from_secs(300));
        assert!(probe.readiness().unwrap_err().starts_with("starting"));
        probe.mark_stopping();
        assert_eq!(probe.readiness().unwrap_err(), "shutting down");
    }
}
