//! `tokenmint-verify` against a real issuer: a tokenmint started in process on 127.0.0.1:0
//! over real mTLS (the integration tests' `support` module), one for ES256 keys and one for
//! EdDSA keys, each issuing a pool of 10,000 distinct tokens to the demo client before anything
//! is timed. Every verifier watches keys and revocations from its issuer over gRPC and is ready
//! (key set and revocation snapshot in) before it is timed.
//! `cargo bench --bench verify` (a filter narrows it: `cargo bench --bench verify -- repeated`).
//!
//! - `verify/raw/<alg>`: `crypto::verify_signature` of one pool token's signature over its
//!   signing input with the public key the issuer publishes (the signing input, the decoded
//!   signature and the key are ready beforehand): the floor under any verification.
//! - `verify/distinct/<alg>`: `Verifier::verify` over the pool, each call with the token's
//!   bound `PeerCertificate` and `verifier.now()`. Each run of the pool goes to a freshly built
//!   verifier (built and made ready outside the timed region), so every timed call is a cache
//!   miss: the hash of the token, the JWS path (header, `kid`, signature, claims), the cache
//!   insert and the revocation checks.
//! - `verify/repeated`: `Verifier::verify` of one ES256 token again and again: a cache hit,
//!   with the times, the certificate binding and the revocation state (token, client, key)
//!   checked on every call, as on a miss.
//! - `layer/axum/bare` and `layer/axum/with_layer`: an axum `Router` with one trivial handler,
//!   called in process with `tower::ServiceExt::oneshot` (no network). Each request is built
//!   in the timed loop with `Authorization: Bearer <token>` and the caller's `PeerCertificate`
//!   extension, alike for both rows; behind `VerifyLayer` the handler takes the `Verified`
//!   extractor. The difference between the rows is the layer's whole cost on a repeated token.
//!
//! The async rows time a whole batch inside one `Runtime::block_on` (`iter_custom`), so no
//! per-call `block_on` is counted; the runtime's two worker threads run the issuer and the
//! verifiers' watch tasks. The `metrics` feature is on with no recorder installed.
//!
//! Each benchmark warms up for 1 s and measures for 3 s over 20 samples.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, body::Body, routing::get};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode, header::AUTHORIZATION};
use tokenmint::{grpc::proto::IssueTokenRequest, pki::Issued};
use tokenmint_core::{
    crypto::{self, Algorithm, PublicKey},
    jose,
};
use tokenmint_verify::{PeerCertificate, Verified, Verifier, VerifyLayer};
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

#[allow(dead_code)] // the benches use a small part of it
#[path = "../tests/integration/support.rs"]
mod support;
use support::{DEMO_AUDIENCE, DEMO_URI, ISSUER, RS_URI, Setup, TestServer, standard_clients};

const POOL: usize = 10_000;
/// Concurrent issuing calls while the pool is made.
const ISSUERS: usize = 16;

/// A running issuer, the certificates of its demo client and of a resource server, and a pool
/// of distinct tokens it issued to the demo client.
struct Issuer {
    setup: Setup,
    server: TestServer,
    /// The resource server's client configuration (introspect permission: it may watch).
    tls: Arc<rustls::ClientConfig>,
    /// The demo client's certificate, as the host's TLS acceptor would hand it over.
    peer: PeerCertificate,
    tokens: Vec<String>,
}

impl Issuer {
    /// Starts an issuer (`keys.algorithm = algorithm`) and issues the pool.
    async fn start(algorithm: &str) -> Self {
        let mut setup = Setup::new(&standard_clients());
        setup.extra_toml = format!("algorithm = \"{algorithm}\"\n");
        let server = setup.start().await;
        let demo = setup.pki.client_uri(DEMO_URI);
        let rs = setup.pki.client_uri(RS_URI);
        let tokens = issue_pool(&server, &demo, POOL).await;
        Self {
            tls: Arc::new(support::rustls_client(&setup, Some(&rs))),
            peer: PeerCertificate::from_der(demo.cert_der.clone()),
            setup,
            server,
            tokens,
        }
    }

    /// A new verifier of this issuer's tokens, ready (its cache empty).
    async fn verifier(&self) -> Verifier {
        let verifier = Verifier::builder(ISSUER)
            .audience(DEMO_AUDIENCE)
            .grpc_endpoint(
                format!("https://localhost:{}", self.server.addr.port()),
                self.tls.clone(),
            )
            .build()
            .unwrap();
        for _ in 0..10_000 {
            if verifier.health().is_ready() {
                return verifier;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the verifier never got ready: {:?}", verifier.health());
    }

    /// The signing input, the signature and the published key of the pool's first token.
    async fn raw(&self) -> (Vec<u8>, Vec<u8>, Algorithm, PublicKey) {
        let token = &self.tokens[0];
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = crypto::b64url_decode(signature).unwrap();
        let header = token.split_once('.').unwrap().0;
        let header: serde_json::Value =
            serde_json::from_slice(&crypto::b64url_decode(header).unwrap()).unwrap();
        let kid = header["kid"].as_str().unwrap();
        let jwks = jose::parse_jwks(&self.server.jwks().await.jwks_json).unwrap();
        let key = jwks.keys.find(kid).unwrap();
        assert!(crypto::verify_signature(
            key.algorithm,
            &key.public,
            input.as_bytes(),
            &signature
        ));
        let algorithm = key.algorithm;
        (
            input.as_bytes().to_vec(),
            signature,
            algorithm,
            key.public.clone(),
        )
    }
}

/// `n` distinct tokens issued to `demo` for ten minutes (the demo client's longest), over one
/// connection with `ISSUERS` calls in flight.
async fn issue_pool(server: &TestServer, demo: &Issued, n: usize) -> Vec<String> {
    let client = server.client(demo).await;
    let mut tasks = tokio::task::JoinSet::new();
    for share in 0..ISSUERS {
        let mut client = client.clone();
        let count = n / ISSUERS + usize::from(share < n % ISSUERS);
        tasks.spawn(async move {
            let mut tokens = Vec::with_capacity(count);
            for _ in 0..count {
                let request = IssueTokenRequest {
                    lifetime: Some(prost_types::Duration {
                        seconds: 600,
                        nanos: 0,
                    }),
                    ..IssueTokenRequest::default()
                };
                tokens.push(
                    client
                        .issue_token(request)
                        .await
                        .unwrap()
                        .into_inner()
                        .access_token,
                );
            }
            tokens
        });
    }
    let mut tokens = Vec::with_capacity(n);
    while let Some(share) = tasks.join_next().await {
        tokens.extend(share.unwrap());
    }
    assert_eq!(tokens.len(), n);
    tokens
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn bench_verify(c: &mut Criterion) {
    let rt = runtime();
    let issuers = [("es256", "ES256"), ("eddsa", "EdDSA")]
        .map(|(name, algorithm)| (name, rt.block_on(Issuer::start(algorithm))));

    let mut group = c.benchmark_group("verify");
    for (name, issuer) in &issuers {
        let (input, signature, algorithm, public) = rt.block_on(issuer.raw());
        group.bench_function(format!("raw/{name}"), |b| {
            b.iter(|| {
                crypto::verify_signature(
                    algorithm,
                    black_box(&public),
                    black_box(&input),
                    black_box(&signature),
                )
            });
        });

        group.bench_function(format!("distinct/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut remaining = usize::try_from(iters).unwrap();
                while remaining > 0 {
                    let n = remaining.min(POOL);
                    remaining -= n;
                    // A cache that has seen none of the pool: each of the n calls misses.
                    let verifier = rt.block_on(issuer.verifier());
                    elapsed += rt.block_on(async {
                        let start = Instant::now();
                        for token in &issuer.tokens[..n] {
                            let verified = verifier
                                .verify(black_box(token), Some(&issuer.peer), verifier.now())
                                .await
                                .unwrap();
                            black_box(verified);
                        }
                        start.elapsed()
                    });
                }
                elapsed
            });
        });
    }

    let (_, es256) = &issuers[0];
    let verifier = rt.block_on(es256.verifier());
    let token = &es256.tokens[0];
    // The first call verifies and fills the cache; every timed call hits it.
    rt.block_on(verifier.verify(token, Some(&es256.peer), verifier.now()))
        .unwrap();
    group.bench_function("repeated", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let verified = verifier
                        .verify(black_box(token), Some(&es256.peer), verifier.now())
                        .await
                        .unwrap();
                    black_box(verified);
                }
                start.elapsed()
            })
        });
    });
    group.finish();

    bench_layer(c, &rt, es256, verifier);
    for (_, issuer) in issuers {
        rt.block_on(issuer.server.stop());
        drop(issuer.setup);
    }
}

async fn bare() -> &'static str {
    "ok"
}

async fn verified(token: Verified) -> &'static str {
    black_box(&token);
    "ok"
}

fn bench_layer(c: &mut Criterion, rt: &Runtime, issuer: &Issuer, verifier: Verifier) {
    let bearer = format!("Bearer {}", issuer.tokens[0]);
    let request = || {
        Request::builder()
            .uri("/")
            .header(AUTHORIZATION, bearer.as_str())
            .extension(issuer.peer.clone())
            .body(Body::empty())
            .unwrap()
    };
    let routers = [
        ("bare", Router::new().route("/", get(bare))),
        (
            "with_layer",
            Router::new()
                .route("/", get(verified))
                .layer(VerifyLayer::new(verifier)),
        ),
    ];
    let mut group = c.benchmark_group("layer/axum");
    for (name, router) in routers {
        let status = rt
            .block_on(router.clone().oneshot(request()))
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let response = router.clone().oneshot(request()).await.unwrap();
                        assert_eq!(response.status(), StatusCode::OK);
                        black_box(response);
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = verify;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_verify
}
criterion_main!(verify);
