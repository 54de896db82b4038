//! Several tokenmint processes on one store: each catches up with the others' changes, and a
//! replica that cannot reach the store stops answering what it can no longer vouch for.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokenmint::{
    clock::{Clock as _, ManualClock},
    grpc::proto::{
        IssueTokenRequest, RotateKeysRequest, WatchRevocationsRequest, revocation_event::Event,
    },
    store::sqlite::SqliteStore,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    revocation::FlakyStore,
    store_contract::{TestDatabase, postgres_url},
    support::*,
};

/// The longest a change may take to reach another replica in these tests (the target is 1 s;
/// latency itself is reported, not asserted tightly).
const PROPAGATION_BOUND: Duration = Duration::from_secs(5);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_replica_reach_another() {
    let Some(url) = postgres_url() else {
        println!("skipped: TOKENMINT_TEST_POSTGRES_URL is not set");
        return;
    };
    let database = TestDatabase::create(&url).await;
    // Revocations here come faster than the default per-client rate allows.
    let mut setup = Setup::new(&format!(
        "[revocation]\nper_client_rate = 1000\n{}",
        standard_clients()
    ));
    setup.store_url = database.url.clone();
    let a = setup.start().await;
    let b = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let admin = setup.pki.client_uri(ADMIN_URI);

    // One key set: both replicas publish the same JWKS.
    assert_eq!(a.jwks().await.version, b.jwks().await.version);

    // A watcher on B.
    let mut stream = b
        .revocations(&rs)
        .watch_revocations(WatchRevocationsRequest { after_sequence: 0 })
        .await
        .unwrap()
        .into_inner();
    loop {
        let event = tokio::time::timeout(PROPAGATION_BOUND, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if matches!(event.event, Some(Event::SnapshotComplete(_))) {
            break;
        }
    }

    // Revocations made on A, seen by introspection on B: latency over a few dozen.
    let mut latencies = Vec::new();
    let mut last_jti = String::new();
    for _ in 0..40 {
        let token = issue(&a, &demo, IssueTokenRequest::default())
            .await
            .unwrap()
            .access_token;
        assert!(introspect(&b, &rs, &token, None).await.unwrap().active);
        revoke(&a, &demo, &token).await.unwrap();
        let revoked_at = Instant::now();
        while introspect(&b, &rs, &token, None).await.unwrap().active {
            assert!(
                revoked_at.elapsed() < PROPAGATION_BOUND,
                "B never saw the revocation"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(revoked_at.elapsed());
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&tokenmint::crypto::b64url_decode(payload).unwrap()).unwrap();
        last_jti = claims["jti"].as_str().unwrap().to_owned();
    }
    latencies.sort();
    println!(
        "revocation on replica A seen by introspection on replica B: p50 {:?}, p99 {:?}, max {:?} over {}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        latencies.len()
    );

    // B's watcher got every one of them, in order, the last one included.
    let mut seen = Vec::new();
    while seen.len() < 40 {
        let event = tokio::time::timeout(PROPAGATION_BOUND, stream.message())
            .await
            .expect("B's watcher gets A's revocations")
            .unwrap()
            .unwrap();
        if let Some(Event::TokenRevoked(revoked)) = event.event {
            seen.push((event.sequence, revoked.token_id));
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "in sequence order"
    );
    assert_eq!(seen.last().unwrap().1, last_jti);

    // A key rotation forced on A reaches B's key set, and B then signs with the new key.
    let rotated = a
        .admin(&admin)
        .rotate_keys(RotateKeysRequest { force: true })
        .await
        .unwrap()
        .into_inner();
    let since = Instant::now();
    while b.jwks().await.version != a.jwks().await.version {
        assert!(
            since.elapsed() < PROPAGATION_BOUND,
            "B never saw the rotation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let since = Instant::now();
    loop {
        let from_b = issue(&b, &demo, IssueTokenRequest::default())
            .await
            .unwrap();
        if from_b.key_id == rotated.current_key_id {
            break;
        }
        assert!(
            since.elapsed() < PROPAGATION_BOUND,
            "B kept signing with the old key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    a.stop().await;
    b.stop().await;
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_store_goes_stale_then_recovers() {
    let mut setup = Setup::new(&standard_clients());
    setup.store_toml =
        "max_staleness = \"2s\"\ncatch_up_interval = \"500ms\"\nmax_issue_staleness = \"10s\"\n"
            .into();
    let clock = Arc::new(ManualClock::new(tokenmint::clock::SystemClock.now()));
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);

    setup.write_config();
    let store = Arc::new(FlakyStore {
        inner: SqliteStore::open(&setup.path().join("tokenmint.db"))
            .await
            .unwrap(),
        fail_commits: Default::default(),
        fail_reads: Default::default(),
    });
    let server = setup
        .start_with_store_and_clock(store.clone(), clock.clone())
        .await;
    let token = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    assert!(introspect(&server, &rs, &token, None).await.unwrap().active);

    assert_health(&server, "", ServingStatus::Serving).await;
    assert_health(
        &server,
        "tokenmint.v1.RevocationService",
        ServingStatus::Serving,
    )
    .await;

    // The store stops answering; time passes beyond max_staleness.
    store.fail_reads.store(true, Ordering::SeqCst);
    // The services that need the store say so; the replica as a whole stays ready.
    assert_health(
        &server,
        "tokenmint.v1.RevocationService",
        ServingStatus::NotServing,
    )
    .await;
    assert_health(
        &server,
        "tokenmint.v1.AdminService",
        ServingStatus::NotServing,
    )
    .await;
    assert_health(&server, "", ServingStatus::Serving).await;
    clock.advance(Duration::from_secs(3));
    let status = introspect(&server, &rs, &token, None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Issuance holds on until max_issue_staleness…
    issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap();
    // …and stops past it.
    clock.advance(Duration::from_secs(8));
    assert_refused(
        issue(&server, &demo, IssueTokenRequest::default()).await,
        Code::Unavailable,
        "temporarily_unavailable",
    );
    // Past max_issue_staleness the replica is no longer ready.
    assert_health(&server, "", ServingStatus::NotServing).await;

    // The store is back: one catch-up and everything answers again.
    store.fail_reads.store(false, Ordering::SeqCst);
    server.changes.catch_up().await.unwrap();
    assert!(introspect(&server, &rs, &token, None).await.unwrap().active);
    issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap();
    assert_health(&server, "", ServingStatus::Serving).await;
    assert_health(
        &server,
        "tokenmint.v1.RevocationService",
        ServingStatus::Serving,
    )
    .await;
    server.stop().await;
}

/// Waits (a few seconds at most: the catch-up task runs every 500 ms here) until gRPC health
/// reports `expected` for `service`.
async fn assert_health(server: &TestServer, service: &str, expected: ServingStatus) {
    let mut health = HealthClient::new(server.public_channel());
    let since = Instant::now();
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == expected {
            return;
        }
        assert!(
            since.elapsed() < PROPAGATION_BOUND,
            "health of {service:?} stayed {status:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
