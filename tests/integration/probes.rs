//! The plain-HTTP operations listener: liveness, readiness as SPEC §9 defines it, and
//! Prometheus metrics that move when the server acts.

use std::time::{Duration, Instant};

use tokenmint::{grpc::proto::IssueTokenRequest, ops};
use tokenmint_core::clock::Clock as _;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// GET over plain HTTP: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    install_provider();
    let response = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of one series in Prometheus text, if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_loaded_state_and_metrics_move_with_traffic() {
    let setup = Setup::new(&standard_clients());
    let config = setup.config();
    // As `tokenmint serve` does: the operations listener first, the state loaded after.
    let probe = ops::Probe::new(config.store.max_issue_staleness);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops_addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let ops_task = tokio::spawn(ops::serve(
        listener,
        probe.clone(),
        ops::metrics_handle(),
        stop.clone(),
    ));

    assert_eq!(get(ops_addr, "/healthz").await, (200, "ok\n".to_owned()));
    let (status, body) = get(ops_addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not loaded"), "{body}");

    let prepared = setup.prepare().await.unwrap();
    probe.attach(prepared.authority().clone());
    assert_eq!(get(ops_addr, "/readyz").await, (200, "ready\n".to_owned()));
    let server = setup.serve(prepared).await;

    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let token = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    let refused = issue(&server, &rs, IssueTokenRequest::default()).await;
    assert!(refused.is_err());
    // A scope refusal of an authenticated client is counted with its client.
    let bad_scope = issue(
        &server,
        &demo,
        IssueTokenRequest {
            scopes: vec!["not-a-scope-of-demo".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(bad_scope.is_err());
    assert!(introspect(&server, &rs, &token, None).await.unwrap().active);
    revoke(&server, &demo, &token).await.unwrap();

    // The key gauges come from the rotation task's first round: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, metrics) = get(ops_addr, "/metrics").await;
        assert_eq!(status, 200);
        if metrics.contains("tokenmint_signing_key_age_seconds") || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let at_least_one = |series: &str| {
        let value =
            sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{metrics}"));
        assert!(value >= 1.0, "{series} = {value}");
    };
    at_least_one(r#"tokenmint_tokens_issued_total{client="demo"}"#);
    at_least_one(r#"tokenmint_issue_refusals_total{client="rs",reason="not_permitted"}"#);
    at_least_one(r#"tokenmint_issue_refusals_total{client="demo",reason="scope"}"#);
    at_least_one(r#"tokenmint_introspections_total{outcome="active"}"#);
    at_least_one(r#"tokenmint_tls_handshakes_total{result="ok"}"#);
    // The tonic clients above agree the build's preferred group.
    at_least_one(if cfg!(feature = "aws-lc") {
        r#"tokenmint_tls_key_exchanges_total{group="X25519MLKEM768"}"#
    } else {
        r#"tokenmint_tls_key_exchanges_total{group="X25519"}"#
    });
    at_least_one(
        r#"tokenmint_rpc_duration_seconds_count{rpc="/tokenmint.v1.TokenService/IssueToken"}"#,
    );
    assert!(
        metrics.contains(r#"tokenmint_rpc_duration_seconds_bucket{rpc="/tokenmint.v1.TokenService/IssueToken",le="0.005"}"#),
        "{metrics}"
    );
    // Read at scrape time from this server's state: exactly the one revocation.
    assert_eq!(sample(&metrics, "tokenmint_blocklist_entries"), Some(1.0));
    assert_eq!(sample(&metrics, "tokenmint_ready"), Some(1.0));
    assert!(sample(&metrics, "tokenmint_store_staleness_seconds").unwrap() < 10.0);
    assert!(
        sample(&metrics, "tokenmint_signing_key_age_seconds").is_some(),
        "{metrics}"
    );
    assert!(sample(&metrics, "tokenmint_key_next_step_seconds").unwrap() > 0.0);
    // Tokens and secrets never appear in metrics.
    assert!(!metrics.contains(&token));

    // A path nobody registered does not become a label of its own.
    let _ = reqwest_post_unknown(&server, &setup).await;

    // Shutdown begins: not ready any more, still alive.
    probe.mark_stopping();
    let (status, body) = get(ops_addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not ready: shutting down\n"));
    assert_eq!(get(ops_addr, "/healthz").await.0, 200);
    assert_eq!(get(ops_addr, "/nothing-here").await.0, 404);

    server.stop().await;
    stop.cancel();
    ops_task.await.unwrap();
}

/// Sends a request to an unregistered path on the service port; the duration histogram must
/// file it under `other`.
async fn reqwest_post_unknown(server: &TestServer, setup: &Setup) {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(rustls_client(setup, None))
        .build()
        .unwrap();
    let response = client
        .get(format!(
            "https://localhost:{}/no/such/path/{}",
            server.addr.port(),
            "x".repeat(40)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let metrics = ops::metrics_handle().render();
    assert!(
        !metrics.contains("/no/such/path"),
        "an unknown path became a label"
    );
    assert!(metrics.contains(r#"rpc="other""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_ends_past_max_issue_staleness_and_returns_with_a_catch_up() {
    let setup = Setup::new(&demo_client());
    let clock = std::sync::Arc::new(tokenmint_core::clock::ManualClock::new(
        tokenmint_core::clock::SystemClock.now(),
    ));
    // Prepared, not serving: no background catch-up runs, the test decides when one happens.
    let prepared = setup.prepare_with_clock(clock.clone()).await.unwrap();
    let max_issue_staleness = setup.config().store.max_issue_staleness;
    let probe = ops::Probe::new(max_issue_staleness);
    probe.attach(prepared.authority().clone());
    assert_eq!(probe.readiness(), Ok(()));

    // Exactly at the limit: still ready. Past it: not, saying why.
    clock.advance(max_issue_staleness);
    assert_eq!(probe.readiness(), Ok(()));
    clock.advance(Duration::from_secs(1));
    let why = probe.readiness().unwrap_err();
    assert!(why.contains("no catch-up with the store"), "{why}");

    // A successful catch-up with the store makes it ready again.
    prepared.changes().catch_up().await.unwrap();
    assert_eq!(probe.readiness(), Ok(()));
}
