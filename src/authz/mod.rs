//! `tokenmint authz`: the verification sidecar. One `tokenmint-verify` verifier (keys and
//! revocations watched from the issuer, fail closed past staleness) behind the proxies' own
//! external-authorization protocols, so a service in any language gets the certificate binding
//! and revocation checked with a few lines of proxy configuration.
//!
//! ```text
//!  proxy ── GET /verify (Authorization, certificate header) ──▶ http ─┐
//!                                                                      ├─▶ decision::decide ─▶ Verifier
//!  Envoy ── Authorization/Check (headers, peer certificate) ──▶ grpc ──┘
//!  ops: /healthz, /readyz (not ready while stale), /metrics
//! ```

mod decision;
mod grpc;
mod http;

use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokenmint_verify::Verifier;
use tokio_util::sync::CancellationToken;

use crate::config::AuthzConfig;

pub use decision::{Ask, Decision, Denial, decide};

/// The sidecar's state, shared by its listeners.
#[derive(Debug)]
pub struct Sidecar {
    /// Its settings.
    pub config: AuthzConfig,
    /// The one verifier.
    pub verifier: Verifier,
}

impl Sidecar {
    /// The sidecar for `config`: its verifier built (and watching) over the build's TLS
    /// provider. Call inside a tokio runtime.
    pub fn new(config: AuthzConfig) -> Result<Self> {
        // The recorder first, so no decision goes uncounted.
        let _ = crate::ops::metrics_handle();
        let tls = tokenmint_verify::tls::client_config_from_files(
            crate::tls::provider(),
            &config.ca,
            &config.cert,
            &config.key,
        )
        .context("the sidecar's identity at the issuer ([authz] ca, cert, key)")?;
        let mut builder = Verifier::builder(config.issuer.clone())
            .grpc_endpoint(config.issuer_endpoint.clone(), Arc::new(tls))
            .staleness(config.staleness);
        for audience in &config.audiences {
            builder = builder.audience(audience.clone());
        }
        let verifier = builder.build().context("the sidecar's verifier")?;
        Ok(Self { config, verifier })
    }
}

/// Runs the sidecar until `stop`: the forward-auth, ext_authz gRPC and operations listeners,
/// each announced on stdout once bound (`authz: forward auth on http://…`).
pub async fn run(config: AuthzConfig, stop: CancellationToken) -> Result<()> {
    let sidecar = Arc::new(Sidecar::new(config)?);
    let listener = tokio::net::TcpListener::bind(sidecar.config.listen)
        .await
        .with_context(|| format!("binding authz.listen {}", sidecar.config.listen))?;
    println!("authz: forward auth on http://{}", listener.local_addr()?);
    let grpc = match sidecar.config.grpc_listen {
        Some(addr) => {
            let grpc = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding authz.grpc_listen {addr}"))?;
            println!("authz: ext_authz gRPC on {}", grpc.local_addr()?);
            Some(grpc)
        }
        None => None,
    };
    let ops = match sidecar.config.ops_listen {
        Some(addr) => {
            let ops = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding authz.ops_listen {addr}"))?;
            println!("authz: ops on http://{}", ops.local_addr()?);
            Some(ops)
        }
        None => None,
    };
    serve(sidecar, listener, grpc, ops, stop).await
}

/// Serves `sidecar` on bound listeners until `stop`: forward auth on `listener`, Envoy's
/// ext_authz on `grpc`, operations on `ops`.
pub async fn serve(
    sidecar: Arc<Sidecar>,
    listener: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    ops: Option<tokio::net::TcpListener>,
    stop: CancellationToken,
) -> Result<()> {
    let ops_task = ops.map(|ops| {
        let app = ops_router(sidecar.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(ops, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(error) = served.await {
                tracing::error!(%error, "authz operations listener failed");
            }
        })
    });
    let grpc_task = grpc.map(|grpc| {
        let service = grpc::service(sidecar.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc),
                    stop.cancelled_owned(),
                );
            if let Err(error) = served.await {
                tracing::error!(%error, "authz ext_authz gRPC listener failed");
            }
        })
    });
    axum::serve(listener, http::router(sidecar))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .context("the forward-auth listener")?;
    for task in [ops_task, grpc_task].into_iter().flatten() {
        let _ = task.await;
    }
    Ok(())
}

/// `/healthz`, `/readyz` (503 with the reason while the verifier cannot vouch for its state),
/// `/metrics` (decisions by reason; the verifier's key-set age and feed lag).
fn ops_router(sidecar: Arc<Sidecar>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(sidecar)
}

async fn readyz(State(sidecar): State<Arc<Sidecar>>) -> (StatusCode, String) {
    match sidecar.verifier.health().problem {
        None => (StatusCode::OK, "ready\n".into()),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {problem}\n"),
        ),
    }
}

async fn metrics(State(sidecar): State<Arc<Sidecar>>) -> String {
    // Reading the health sets the verifier's gauges (key-set age, feed lag, ready).
    let _ = sidecar.verifier.health();
    crate::ops::metrics_handle().render()
}

/// Counts a decision: `tokenmint_authz_decisions_total{decision, reason}`.
fn count(decision: &Decision) {
    let (outcome, reason) = match decision {
        Decision::Allow(_) => ("allow", "verified"),
        Decision::Deny(denial) => ("deny", denial.reason()),
    };
    metrics::counter!("tokenmint_authz_decisions_total", "decision" => outcome, "reason" => reason)
        .increment(1);
}
