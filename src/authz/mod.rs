//! `tokenmint authz`: the verification sidecar. One `tokenmint-verify` verifier (keys and
//! revocations watched from the issuer, fail closed past staleness) behind the proxies' own
//! external-authorization protocols, so a service in any language gets the certificate binding
//! and revocation checked — and, where `authz.txn_required` says, a transaction token
//! (`Txn-Token`) — with a few lines of proxy configuration.
//!
//! ```text
//!  proxy ── GET /verify (Authorization, Txn-Token, certificate header) ──▶ http ─┐
//!                                                                                 ├─▶ decision::decide ─▶ Verifier
//!  Envoy ── Authorization/Check (headers, peer certificate) ──▶ grpc ─────────────┘
//!  ops: /healthz, /readyz (not ready while stale), /metrics
//! ```
//!
//! Both faces listen where only the proxy can reach them ([`Bound`]): loopback, a Unix
//! socket, or TLS with the proxy's certificate required.

mod decision;
mod grpc;
mod http;
mod listen;

use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokenmint_verify::Verifier;
use tokio_util::sync::CancellationToken;

use crate::config::AuthzConfig;

pub use decision::{Allowed, Ask, Decision, Denial, Rules, decide, required_scopes};
pub use listen::Bound;

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
        if let Some(domain) = &config.trust_domain {
            builder = builder.trust_domain(domain.clone());
        }
        for audience in &config.audiences {
            builder = builder.audience(audience.clone());
        }
        let verifier = builder.build().context("the sidecar's verifier")?;
        Ok(Self { config, verifier })
    }
}

/// The sidecar's bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// Forward auth over HTTP.
    pub forward: Bound,
    /// Envoy's ext_authz over gRPC.
    pub grpc: Option<Bound>,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub ops: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds every listener `config` names.
    pub async fn bind(config: &AuthzConfig) -> Result<Self> {
        let tls = config.proxy_tls.as_ref();
        let forward = Bound::bind(&config.listen, tls)
            .await
            .context("authz.listen")?;
        let grpc = match &config.grpc_listen {
            Some(listen) => Some(
                Bound::bind(listen, tls)
                    .await
                    .context("authz.grpc_listen")?,
            ),
            None => None,
        };
        let ops = match config.ops_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding authz.ops_listen {addr}"))?,
            ),
            None => None,
        };
        Ok(Self { forward, grpc, ops })
    }
}

/// Runs the sidecar until `stop`: the forward-auth, ext_authz gRPC and operations listeners,
/// each announced on stdout once bound (`authz: forward auth on http://…`).
pub async fn run(config: AuthzConfig, stop: CancellationToken) -> Result<()> {
    let sidecar = Arc::new(Sidecar::new(config)?);
    let listeners = Listeners::bind(&sidecar.config).await?;
    println!("authz: forward auth on {}", listeners.forward.url());
    if let Some(grpc) = &listeners.grpc {
        println!("authz: ext_authz gRPC on {}", grpc.url());
    }
    if let Some(ops) = &listeners.ops {
        println!("authz: ops on http://{}", ops.local_addr()?);
    }
    serve(sidecar, listeners, stop).await
}

/// Serves `sidecar` on its bound listeners until `stop`.
pub async fn serve(
    sidecar: Arc<Sidecar>,
    listeners: Listeners,
    stop: CancellationToken,
) -> Result<()> {
    let ops_task = listeners.ops.map(|ops| {
        let app = ops_router(sidecar.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(ops, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(error) = served.await {
                tracing::error!(%error, "authz operations listener failed");
            }
        })
    });
    let grpc_task = listeners.grpc.map(|grpc| {
        let routes = tonic::service::Routes::new(grpc::service(sidecar.clone()));
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(error) = grpc.serve(routes.into_axum_router(), stop).await {
                tracing::error!(error = %format!("{error:#}"), "authz ext_authz gRPC listener failed");
            }
        })
    });
    listeners
        .forward
        .serve(http::router(sidecar), stop)
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
