//! Issuance rate limits: a client over its bucket is refused with a retry hint; the others
//! are served as before. And the cap on requests in flight.

use std::sync::Arc;

use tokenmint::grpc::proto::IssueTokenRequest;

use crate::{
    flaky::{FlakyStore, HeldCommit},
    support::*,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_ten_times_its_rate_is_refused_with_a_hint_while_another_is_served() {
    let setup = Setup::new(&format!(
        "[limits]\nissue_per_client = {{ demo = 5 }}\nissue_burst = 5\n{}",
        standard_clients()
    ));
    let server = setup.start().await;
    let demo = server.client(&setup.pki.client_uri(DEMO_URI)).await;
    let other = server.client(&setup.pki.client_uri(OTHER_URI)).await;

    // 50 calls from demo in well under a second (10× its 5/s), interleaved with other's.
    let (mut demo_ok, mut demo_limited, mut other_ok) = (0, 0, 0);
    let started = std::time::Instant::now();
    for _ in 0..50 {
        match demo.clone().issue_token(IssueTokenRequest::default()).await {
            Ok(_) => demo_ok += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert_eq!(
                    status
                        .metadata()
                        .get("oauth-error")
                        .and_then(|v| v.to_str().ok()),
                    Some("temporarily_unavailable")
                );
                let retry: u64 = status
                    .metadata()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .expect("a retry hint in whole seconds");
                assert!((1..=1).contains(&retry), "{retry}");
                demo_limited += 1;
            }
        }
        other
            .clone()
            .issue_token(IssueTokenRequest::default())
            .await
            .unwrap();
        other_ok += 1;
    }
    // The burst of 5, plus what refilled at 5/s while the loop ran (one more for rounding).
    let refilled = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize + 1;
    assert!(
        (5..=5 + refilled).contains(&demo_ok),
        "demo got {demo_ok} in {:?}",
        started.elapsed()
    );
    assert!(demo_limited > 0, "10× the rate was never refused");
    assert_eq!(demo_ok + demo_limited, 50);
    assert_eq!(other_ok, 50);

    // The bucket refills: after a second demo is served again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    demo.clone()
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_limit_unless_configured() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let demo = server.client(&setup.pki.client_uri(DEMO_URI)).await;
    for _ in 0..200 {
        demo.clone()
            .issue_token(IssueTokenRequest::default())
            .await
            .unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_on_requests_in_flight_a_call_is_refused_at_once_with_a_hint() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml = "max_in_flight = 1\n".into();
    let store = Arc::new(FlakyStore::open(&setup).await);
    let server = setup.start_with_store(store.clone()).await;
    let cert = setup.pki.client_uri(DEMO_URI);
    // A revocation waits in its commit: it holds the only slot.
    let held = HeldCommit::start(&server, &store, &cert).await;
    let status = server
        .client(&cert)
        .await
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_in_flight"), "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    held.finish().await.unwrap();
    // Alone, a call is served.
    server
        .client(&cert)
        .await
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap();
    server.stop().await;
}
