//! `tokenmint-client` against a real issuer over real mTLS: one `IssueToken` for a hundred
//! callers at expiry, the refresh ahead of expiry by the rule (a manual clock), an issuer
//! outage absorbed while the token is good, and a refused refresh's OAuth2 code.

use std::{sync::Arc, time::Duration};

use tokenmint::{grpc::proto::DisableClientRequest, pki::Issued};
use tokenmint_client::{BearerInterceptor, BearerLayer, Client, TokenError, TokenSpec};
use tokenmint_core::clock::{Clock as _, ManualClock};

use crate::support::*;

/// A client of `server` as `cert`, on `clock`, retrying quickly.
fn client_on(setup: &Setup, port: u16, cert: &Issued, clock: &Arc<ManualClock>) -> Client {
    Client::builder(
        format!("https://localhost:{port}"),
        Arc::new(rustls_client(setup, Some(cert))),
    )
    .clock(clock.clone())
    .backoff(Duration::from_millis(20), Duration::from_millis(200))
    .timeout(Duration::from_secs(5))
    .build()
    .unwrap()
}

/// The demo client's certificate, a manual clock on the wall clock's time, and a client of
/// `server` as demo on that clock.
fn demo_client(setup: &Setup, server: &TestServer) -> (Issued, Arc<ManualClock>, Client) {
    let demo = setup.pki.client_uri(DEMO_URI);
    let clock = manual_clock();
    let client = client_on(setup, server.addr.port(), &demo, &clock);
    (demo, clock, client)
}

fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(tokenmint_core::clock::SystemClock.now()))
}

/// Waits (at most 5 s of real time) until `check` holds.
async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_callers_at_expiry_cause_one_issue_token() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (_, clock, client) = demo_client(&setup, &server);
    let source = client.source(TokenSpec::defaults());
    let first = source.token().await.unwrap();
    assert_eq!(source.issued(), 1);
    assert_eq!(first.audiences, [DEMO_AUDIENCE]);

    // Past its expiry (the demo client's 5 minutes): a hundred callers at once.
    clock.advance(Duration::from_secs(301));
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let source = client.source(TokenSpec::defaults());
            tokio::spawn(async move { source.token().await })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for caller in callers {
        tokens.insert(caller.await.unwrap().unwrap().secret().to_owned());
    }
    // One token for all of them, and not the expired one: exactly one IssueToken.
    assert_eq!(tokens.len(), 1);
    assert!(!tokens.contains(first.secret()));
    assert_eq!(source.issued(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_happens_ahead_of_expiry_by_the_rule() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (_, clock, client) = demo_client(&setup, &server);
    let source = client.source(TokenSpec::defaults());
    let first = source.token().await.unwrap();
    // A 5-minute token: refreshed after 4 minutes, brought forward by at most 15 s of jitter.
    let rule = tokenmint_client::refresh_after(Duration::from_secs(300), 0.0);
    assert_eq!(rule, Duration::from_secs(240));

    clock.advance(rule - Duration::from_secs(16));
    for _ in 0..10 {
        assert_eq!(source.token().await.unwrap(), first);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(source.issued(), 1, "refreshed before the rule");

    // Due: the held token is still handed out while one refresh runs in the background.
    clock.advance(Duration::from_secs(17));
    assert_eq!(source.token().await.unwrap(), first);
    until("the background refresh", || source.issued() == 2).await;
    let second = source.token().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(source.issued(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_outage_is_absorbed_while_the_token_is_valid_and_recovered_from_after() {
    let setup = Setup::new(&standard_clients());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = setup
        .serve_on(setup.prepare().await.unwrap(), listener)
        .await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let clock = manual_clock();
    let client = client_on(&setup, port, &demo, &clock);
    let source = client.source(TokenSpec::defaults());
    let first = source.token().await.unwrap();
    server.stop().await;

    // Due for refresh, the issuer gone: calls keep the valid token; the refresh keeps failing.
    clock.advance(Duration::from_secs(250));
    for _ in 0..20 {
        assert_eq!(source.token().await.unwrap(), first);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(source.issued(), 1);

    // Past expiry: the typed error, at once for every caller.
    clock.advance(Duration::from_secs(60));
    let error = source.token().await.unwrap_err();
    assert!(matches!(error, TokenError::Unavailable { .. }), "{error:?}");
    assert_eq!(error.oauth_code(), "temporarily_unavailable");

    // The issuer back on its port: recovery without a restart of anything.
    let server = setup
        .serve_on(setup.prepare().await.unwrap(), rebind(port).await)
        .await;
    let mut recovered = None;
    for _ in 0..100 {
        clock.advance(Duration::from_secs(1));
        if let Ok(token) = source.token().await {
            recovered = Some(token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = recovered.expect("no token after the issuer came back");
    assert_ne!(recovered, first);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_surfaces_its_oauth2_code() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, admin) = (
        setup.pki.client_uri(DEMO_URI),
        setup.pki.client_uri(ADMIN_URI),
    );
    let clock = manual_clock();
    let client = client_on(&setup, server.addr.port(), &demo, &clock);

    // A scope the client may not have.
    let error = client
        .source(TokenSpec::defaults().with_scope("admin:everything"))
        .token()
        .await
        .unwrap_err();
    assert_eq!(error.oauth_code(), "invalid_scope", "{error:?}");
    assert!(matches!(error, TokenError::Refused { .. }));

    // The client disabled while it holds a token: good until expiry, then the refusal.
    let source = client.source(TokenSpec::defaults());
    let held = source.token().await.unwrap();
    server
        .admin(&admin)
        .disable_client(DisableClientRequest {
            client_id: "demo".into(),
        })
        .await
        .unwrap();
    clock.advance(Duration::from_secs(250));
    assert_eq!(source.token().await.unwrap(), held);
    clock.advance(Duration::from_secs(60));
    let error = source.token().await.unwrap_err();
    let TokenError::Refused { code, .. } = &error else {
        panic!("{error:?}");
    };
    let direct = issue(&server, &demo, Default::default()).await.unwrap_err();
    let expected = direct
        .metadata()
        .get("oauth-error")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(code, expected, "the issuer's own code");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_and_the_interceptor_attach_the_token() {
    use tonic::service::Interceptor as _;
    use tower::{Service as _, ServiceExt as _};
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (_, _, client) = demo_client(&setup, &server);
    let source = client.for_audience(DEMO_AUDIENCE);

    // The interceptor cannot wait: no token yet is UNAVAILABLE (and starts a fetch).
    let mut interceptor = BearerInterceptor::new(source.clone());
    let refused = interceptor.call(tonic::Request::new(())).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    until("the fetch the interceptor started", || source.issued() == 1).await;
    let request = interceptor.call(tonic::Request::new(())).unwrap();
    let token = source.token().await.unwrap();
    assert_eq!(
        request.metadata().get("authorization").unwrap(),
        &format!("Bearer {}", token.secret())
    );

    // The layer, on any `http` service: the header it sent.
    let echo = tower::service_fn(|request: http::Request<()>| async move {
        let header = request.headers()["authorization"].clone();
        Ok::<_, std::convert::Infallible>(header.to_str().unwrap().to_owned())
    });
    let mut service = tower::ServiceBuilder::new()
        .layer(BearerLayer::new(source.clone()))
        .service(echo);
    let sent = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(sent, format!("Bearer {}", token.secret()));
    // Each downstream its own audience, one source per audience for the whole process.
    assert_eq!(client.for_audience(DEMO_AUDIENCE).issued(), 1);
    assert_eq!(client.for_audience("https://other.example").issued(), 0);
    server.stop().await;
}
