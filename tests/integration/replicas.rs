//! Several tokenmint processes on one store: each catches up with the others' changes, and a
//! replica that cannot reach the store stops answering what it can no longer vouch for.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokenmint::{
    grpc::proto::{
        IssueTokenRequest, RotateKeysRequest, WatchRevocationsRequest, revocation_event::Event,
    },
    pki::Issued,
};
use tokenmint_core::clock::{Clock as _, ManualClock, unix_seconds};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    flaky::FlakyStore,
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
        .watch_revocations(WatchRevocationsRequest {
            after_sequence: 0,
            ..Default::default()
        })
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
            serde_json::from_slice(&tokenmint_core::crypto::b64url_decode(payload).unwrap())
                .unwrap();
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
    let clock = Arc::new(ManualClock::new(tokenmint_core::clock::SystemClock.now()));
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);

    setup.write_config();
    let store = Arc::new(FlakyStore::open(&setup).await);
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

    // A watch stream open before the outage, with heartbeats: one arrives once it is current.
    let mut stream = server
        .revocations(&rs)
        .watch_revocations(WatchRevocationsRequest {
            progress: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let event = tokio::time::timeout(PROPAGATION_BOUND, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if matches!(event.event, Some(Event::Progress(_))) {
            break;
        }
    }

    // The store stops answering; time passes beyond max_staleness.
    let failed_at = unix_seconds(clock.now());
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
    // The open stream ends with UNAVAILABLE rather than go on vouching for a stale state; no
    // heartbeat on the way claims a state confirmed after the store stopped answering.
    let ended = tokio::time::timeout(PROPAGATION_BOUND, async {
        loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    if let Some(Event::Progress(progress)) = event.event {
                        let as_of = progress.as_of.unwrap().seconds;
                        assert!(as_of <= failed_at, "{as_of} after the outage began");
                    }
                }
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(ended.unwrap_err().code(), Code::Unavailable);
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

// ---------------------------------------------------------------------------------------------
// More replicas on PostgreSQL: ordering through the wire, rotation across three replicas, lost
// connections, and a database cut off behind a proxy the test controls.
// ---------------------------------------------------------------------------------------------

/// A fresh database of its own on the server of `TOKENMINT_TEST_POSTGRES_URL`, or `None` after
/// saying the test is skipped.
async fn test_database() -> Option<TestDatabase> {
    let Some(url) = postgres_url() else {
        println!("skipped: TOKENMINT_TEST_POSTGRES_URL is not set");
        return None;
    };
    Some(TestDatabase::create(&url).await)
}

/// A random index below `n`.
fn pick(n: usize) -> usize {
    usize::from(tokenmint_core::crypto::random_bytes::<1>().unwrap()[0]) % n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_on_two_replicas_reach_a_watcher_in_sequence_order() {
    const TASKS_PER_REPLICA: usize = 4;
    const REVOCATIONS: usize = 1_000;
    let Some(database) = test_database().await else {
        return;
    };
    let mut setup = Setup::new(&format!(
        "[revocation]\nmax_live = 100000\n{}",
        standard_clients()
    ));
    setup.store_url = database.url.clone();
    let a = setup.start().await;
    let b = setup.start().await;
    let rs = setup.pki.client_uri(RS_URI);
    let admin = setup.pki.client_uri(ADMIN_URI);

    // A watcher on B from the beginning; the snapshot is skipped, then every live event must
    // come with a sequence above every one before it.
    let mut stream = b
        .revocations(&rs)
        .watch_revocations(WatchRevocationsRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = loop {
        let event = tokio::time::timeout(PROPAGATION_BOUND, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if matches!(event.event, Some(Event::SnapshotComplete(_))) {
            break event.sequence;
        }
    };
    let start_sequence = last;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = tokio::spawn(async move {
        let mut in_snapshot = false;
        while let Ok(Some(event)) = stream.message().await {
            match event.event {
                Some(Event::SnapshotBegin(_)) => in_snapshot = true,
                Some(Event::SnapshotComplete(_)) => {
                    in_snapshot = false;
                    last = last.max(event.sequence);
                }
                Some(Event::TokenRevoked(revoked)) if !in_snapshot => {
                    if event.sequence <= last {
                        let _ = seen_tx.send(Err(format!(
                            "sequence {} after {last} ({})",
                            event.sequence, revoked.token_id
                        )));
                        return;
                    }
                    last = event.sequence;
                    if seen_tx
                        .send(Ok((event.sequence, revoked.token_id)))
                        .is_err()
                    {
                        return;
                    }
                }
                _ => {}
            }
        }
    });

    // Eight writers, four on each replica, all committing at once. The admin API is not
    // rate-limited.
    //
    // What makes the watcher's order hold is the store's sequence scheme: each number is
    // assigned under a transaction-scoped advisory lock held through the commit, so commit
    // order is sequence order. A plain BIGSERIAL hands numbers out at insert time, and two
    // replicas could commit 11 before 10 — a watcher would then get 11, and 10 would be
    // either out of order or lost. The contract suite's store-level ordering test covers the
    // store itself; this one goes through both replicas' catch-up, broadcast and gRPC stream.
    let started = Instant::now();
    let per_task = REVOCATIONS / (2 * TASKS_PER_REPLICA);
    let mut writers = Vec::new();
    for task in 0..2 * TASKS_PER_REPLICA {
        let replica = if task % 2 == 0 { &a } else { &b };
        let mut client = replica.admin(&admin);
        writers.push(tokio::spawn(async move {
            let mut sequences = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let response = client
                    .revoke_token_id(tokenmint::grpc::proto::RevokeTokenIdRequest {
                        token_id: format!("concurrent-{task}-{i}"),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                sequences.push(response.sequence);
            }
            sequences
        }));
    }
    let mut committed = Vec::with_capacity(REVOCATIONS);
    for writer in writers {
        committed.extend(writer.await.unwrap());
    }
    let writing = started.elapsed();
    committed.sort_unstable();
    committed.dedup();
    assert_eq!(
        committed.len(),
        REVOCATIONS,
        "every revocation has a number of its own"
    );

    let mut received = Vec::with_capacity(REVOCATIONS);
    while received.len() < REVOCATIONS {
        let item = tokio::time::timeout(PROPAGATION_BOUND, seen_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the watcher on B got {} of {REVOCATIONS} revocations",
                    received.len()
                )
            })
            .expect("the watch stream stays open");
        received.push(item.unwrap_or_else(|e| panic!("out of order: {e}")));
    }
    println!(
        "{REVOCATIONS} admin revocations from 8 tasks on 2 replicas in {writing:?}; all on B's watcher after {:?}",
        started.elapsed()
    );
    // In order, gap-free (nothing else is committed here), and exactly the numbers handed out.
    let sequences: Vec<u64> = received.iter().map(|(s, _)| *s).collect();
    let expected: Vec<u64> = (start_sequence + 1..=start_sequence + REVOCATIONS as u64).collect();
    assert_eq!(sequences, expected);
    assert_eq!(committed, expected);
    let ids: std::collections::BTreeSet<String> = received.into_iter().map(|(_, id)| id).collect();
    let wanted: std::collections::BTreeSet<String> = (0..2 * TASKS_PER_REPLICA)
        .flat_map(|task| (0..per_task).map(move |i| format!("concurrent-{task}-{i}")))
        .collect();
    assert_eq!(ids, wanted);

    watcher.abort();
    a.stop().await;
    b.stop().await;
    drop(database);
}

/// Verifies `token` with the key set `jwks_json`, as a resource server would; the error says
/// why not.
fn check_with_jwks(token: &str, jwks_json: &str) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(jwks_json).map_err(|e| e.to_string())?;
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} is not published"))?;
    let alg: jsonwebtoken::Algorithm = jwk
        .common
        .key_algorithm
        .ok_or("the JWK names no alg")?
        .to_string()
        .parse()
        .map_err(|e: jsonwebtoken::errors::Error| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.set_audience(&[DEMO_AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]);
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .map(drop)
        .map_err(|e| format!("kid {kid}: {e}"))
}

/// A resource server's view of the key set: a cached JWKS, fetched again (from any replica)
/// when a token names a `kid` it does not hold.
struct Verifier {
    jwks: Option<String>,
    fetches: usize,
}

impl Verifier {
    async fn verify(&mut self, token: &str, replicas: &[TestServer]) -> Result<(), String> {
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|e| e.to_string())?
            .kid
            .ok_or("no kid")?;
        let known = self.jwks.as_deref().is_some_and(|jwks| {
            serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(jwks)
                .is_ok_and(|set| set.find(&kid).is_some())
        });
        if !known {
            self.jwks = Some(replicas[pick(replicas.len())].jwks().await.jwks_json);
            self.fetches += 1;
        }
        check_with_jwks(token, self.jwks.as_deref().unwrap_or_default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_rotating_every_few_seconds_never_sign_with_an_unpublished_key() {
    const RUN: Duration = Duration::from_secs(15);
    let Some(database) = test_database().await else {
        return;
    };
    // Every bound at its smallest valid setting around a 6 s rotation: retention (10 s) ≥
    // max_lifetime + leeway (4 s + 1 s); max_issue_staleness (4 s) < retention − max_lifetime
    // − leeway (5 s); catch_up_interval (200 ms) < max_staleness / 2 (1 s); publish_ahead (2 s)
    // ≥ 2 × jwks_max_age (1 s).
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
        admin_client()
    ));
    setup.extra_toml =
        "rotation_period = \"6s\"\npublish_ahead = \"2s\"\njwks_max_age = \"1s\"\nretention = \"10s\"\n"
            .into();
    setup.store_toml =
        "catch_up_interval = \"200ms\"\nmax_staleness = \"2s\"\nmax_issue_staleness = \"4s\"\n"
            .into();
    setup.store_url = database.url.clone();
    let replicas = vec![
        setup.start().await,
        setup.start().await,
        setup.start().await,
    ];
    let demo = setup.pki.client_uri(DEMO_URI);
    let admin = setup.pki.client_uri(ADMIN_URI);
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(replica.client(&demo).await);
    }

    // Sampled throughout: the database holds exactly one current and one next key.
    let stop_sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn({
        let url = database.url.clone();
        let stop = stop_sampling.clone();
        async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let (mut samples, mut bad) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let row: (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*) FILTER (WHERE state = 'current'), \
                            COUNT(*) FILTER (WHERE state = 'next') FROM signing_keys",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                samples += 1;
                if row != (1, 1) {
                    bad.push(row);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            pool.close().await;
            (samples, bad)
        }
    });

    // One client issuing from a random replica; two verifiers, each with its own cache,
    // verifying every token as it arrives.
    let mut verifiers = [
        Verifier {
            jwks: None,
            fetches: 0,
        },
        Verifier {
            jwks: None,
            fetches: 0,
        },
    ];
    let mut kids = Vec::<String>::new();
    let (mut issued, mut failures) = (0usize, Vec::new());
    let started = Instant::now();
    while started.elapsed() < RUN {
        let from = pick(replicas.len());
        let token = clients[from]
            .issue_token(IssueTokenRequest::default())
            .await
            .unwrap_or_else(|status| panic!("issuing from replica {from}: {status:?}"))
            .into_inner();
        issued += 1;
        if !kids.contains(&token.key_id) {
            kids.push(token.key_id.clone());
        }
        for (i, verifier) in verifiers.iter_mut().enumerate() {
            if let Err(e) = verifier.verify(&token.access_token, &replicas).await {
                failures.push(format!(
                    "verifier {i}, token from replica {from} at {:?}: {e}",
                    started.elapsed()
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_sampling.store(true, Ordering::SeqCst);
    let (samples, bad) = sampler.await.unwrap();
    let keys = replicas[0]
        .admin(&admin)
        .list_keys(tokenmint::grpc::proto::ListKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    println!(
        "{issued} tokens over {:?} signed by {} keys; JWKS fetched {} and {} times; {samples} samples of the key table",
        started.elapsed(),
        kids.len(),
        verifiers[0].fetches,
        verifiers[1].fetches,
    );
    assert!(failures.is_empty(), "verification failures: {failures:#?}");
    assert!(
        kids.len() >= 3,
        "at least two rotations in {RUN:?}, got signing keys {kids:?}"
    );
    assert!(
        bad.is_empty(),
        "(current, next) key counts other than (1, 1): {bad:?} in {samples} samples"
    );
    assert!(samples > 100, "the key table was sampled throughout");
    let current: Vec<_> = keys.keys.iter().filter(|k| k.state == "current").collect();
    assert_eq!(current.len(), 1, "{:?}", keys.keys);

    for replica in replicas {
        replica.stop().await;
    }
    drop(database);
}

/// Waits (within `PROPAGATION_BOUND`) until introspecting `token` on `server` answers
/// `active`.
async fn await_active(server: &TestServer, rs: &Issued, token: &str, active: bool, what: &str) {
    let since = Instant::now();
    loop {
        match introspect(server, rs, token, None).await {
            Ok(answer) if answer.active == active => return,
            Ok(_) => {}
            // A replica catching up after a lost connection may briefly answer UNAVAILABLE.
            Err(status) if status.code() == Code::Unavailable => {}
            Err(status) => panic!("{what}: {status:?}"),
        }
        assert!(
            since.elapsed() < PROPAGATION_BOUND,
            "{what}: introspection never answered active = {active}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Revokes `token` on `server`, retrying a few times while the store's connections come back.
async fn revoke_with_retries(server: &TestServer, cert: &Issued, token: &str) -> usize {
    for attempt in 1..=10 {
        match revoke(server, cert, token).await {
            Ok(()) => return attempt,
            Err(status) if status.code() == Code::Unavailable && attempt < 10 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("revoking after {attempt} attempts: {status:?}"),
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_survive_their_database_connections_being_terminated() {
    use sqlx::Connection as _;
    let Some(database) = test_database().await else {
        return;
    };
    let mut setup = Setup::new(&format!(
        "[revocation]\nper_client_rate = 1000\n{}",
        standard_clients()
    ));
    setup.store_url = database.url.clone();
    let a = setup.start().await;
    let b = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let replicas = [&a, &b];

    let mut tokens = Vec::new();
    for i in 0..12 {
        tokens.push(
            issue(replicas[i % 2], &demo, IssueTokenRequest::default())
                .await
                .unwrap()
                .access_token,
        );
    }
    let kept = tokens.pop().unwrap();
    // Revoked before: three on each replica.
    for (i, token) in tokens[..6].iter().enumerate() {
        revoke(replicas[i % 2], &demo, token).await.unwrap();
    }

    // Every backend of the test database but this one is terminated: both replicas' pooled
    // connections and their LISTEN connections.
    let mut admin = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let listening = "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND query LIKE 'LISTEN%'";
    let since = Instant::now();
    loop {
        let count: i64 = sqlx::query_scalar(listening)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if count == 2 {
            break;
        }
        assert!(
            since.elapsed() < PROPAGATION_BOUND,
            "{count} replicas listening, expected 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        terminated.len() >= 4 && terminated.iter().all(|t| *t),
        "terminated {terminated:?}"
    );
    let cut_at = Instant::now();

    // A revocation on A goes through as its pool reconnects, and B — whose LISTEN connection
    // was killed too — sees it within the bound.
    let attempts = revoke_with_retries(&a, &demo, &tokens[6]).await;
    let revoked_at = Instant::now();
    await_active(
        &b,
        &rs,
        &tokens[6],
        false,
        "B after the connections were killed",
    )
    .await;
    println!(
        "after pg_terminate_backend on {} backends: revoke on A in {attempts} attempt(s) ({:?}), seen on B {:?} later",
        terminated.len(),
        revoked_at - cut_at,
        revoked_at.elapsed()
    );
    // Both replicas listen again.
    let since = Instant::now();
    loop {
        let count: i64 = sqlx::query_scalar(listening)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if count == 2 {
            break;
        }
        assert!(
            since.elapsed() < PROPAGATION_BOUND,
            "{count} replicas listening again, expected 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Revoked after: the rest, on both replicas.
    for (i, token) in tokens[7..].iter().enumerate() {
        revoke_with_retries(replicas[i % 2], &demo, token).await;
    }
    // Nothing lost: every revocation, before and after, is in force on both replicas, and the
    // token nobody revoked is still active.
    for replica in replicas {
        for token in &tokens {
            await_active(replica, &rs, token, false, "a revoked token").await;
        }
        assert!(introspect(replica, &rs, &kept, None).await.unwrap().active);
    }

    admin.close().await.ok();
    a.stop().await;
    b.stop().await;
    drop(database);
}

/// A TCP forwarder on 127.0.0.1 to the PostgreSQL server, with a switch: `cut` closes every
/// connection through it and refuses new ones (accepted, then closed at once) until
/// `restore`. It stands for the network between one replica and the database.
struct DbProxy {
    addr: std::net::SocketAddr,
    // The forwarding tasks of the connections through it; `None` while cut.
    connections: Arc<std::sync::Mutex<Option<Vec<tokio::task::JoinHandle<()>>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::Mutex::new(Some(Vec::new())));
        let accept = tokio::spawn({
            let connections = connections.clone();
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    let mut open = connections.lock().unwrap();
                    // Cut: the connection is closed as soon as it is accepted.
                    let Some(open) = open.as_mut() else {
                        continue;
                    };
                    open.retain(|task: &tokio::task::JoinHandle<()>| !task.is_finished());
                    open.push(tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    }));
                }
            }
        });
        Self {
            addr,
            connections,
            accept,
        }
    }

    /// Closes every connection through the proxy (they are gone when this returns) and
    /// refuses new ones.
    async fn cut(&self) {
        let open = self.connections.lock().unwrap().take().unwrap_or_default();
        for task in open {
            task.abort();
            let _ = task.await;
        }
    }

    /// Lets connections through again.
    fn restore(&self) {
        let mut open = self.connections.lock().unwrap();
        if open.is_none() {
            *open = Some(Vec::new());
        }
    }

    /// `url` with its host and port replaced by the proxy's.
    fn url_through(&self, url: &str) -> String {
        let start = url.find("://").map_or(0, |i| i + 3);
        let end = url[start..]
            .find(['/', '?'])
            .map_or(url.len(), |i| start + i);
        let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
        format!("{}{}{}", &url[..host_start], self.addr, &url[end..])
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(open) = self.connections.lock().unwrap().take() {
            for task in open {
                task.abort();
            }
        }
    }
}

/// Checks gRPC health `service` once.
async fn health_of(server: &TestServer, service: &str) -> ServingStatus {
    HealthClient::new(server.public_channel())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_by_the_network_refuses_what_it_cannot_vouch_for_then_recovers() {
    use std::str::FromStr as _;
    const MAX_STALENESS: Duration = Duration::from_secs(2);
    const MAX_ISSUE_STALENESS: Duration = Duration::from_secs(5);
    let Some(database) = test_database().await else {
        return;
    };
    let options = sqlx::postgres::PgConnectOptions::from_str(&database.url).unwrap();
    if options.get_socket().is_some() {
        println!("skipped: TOKENMINT_TEST_POSTGRES_URL names a Unix socket, not a TCP port");
        return;
    }
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = DbProxy::start(upstream).await;

    let mut setup = Setup::new(&format!(
        "[revocation]\nper_client_rate = 1000\n{}",
        standard_clients()
    ));
    setup.store_toml = format!(
        "max_staleness = \"{}s\"\ncatch_up_interval = \"500ms\"\nmax_issue_staleness = \"{}s\"\n",
        MAX_STALENESS.as_secs(),
        MAX_ISSUE_STALENESS.as_secs()
    );
    // A reaches the database through the proxy; B directly.
    setup.store_url = proxy.url_through(&database.url);
    let a = setup.start().await;
    setup.store_url = database.url.clone();
    let b = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(
            issue(&a, &demo, IssueTokenRequest::default())
                .await
                .unwrap()
                .access_token,
        );
    }
    let [first, second, kept] = <[String; 3]>::try_from(tokens).unwrap();
    assert_health(&a, "", ServingStatus::Serving).await;
    assert_health(&a, "tokenmint.v1.RevocationService", ServingStatus::Serving).await;

    // A short blip (shorter than max_issue_staleness): a revocation on A fails as UNAVAILABLE
    // and leaves nothing behind; the store-bound services say so; the replica as a whole stays
    // ready throughout.
    proxy.cut().await;
    let blip = Instant::now();
    let status = revoke(&a, &demo, &first).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_health(
        &a,
        "tokenmint.v1.RevocationService",
        ServingStatus::NotServing,
    )
    .await;
    while blip.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            health_of(&a, "").await,
            ServingStatus::Serving,
            "readiness during a blip of {:?}",
            blip.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(blip.elapsed() < MAX_ISSUE_STALENESS);
    proxy.restore();
    await_active(&a, &rs, &first, true, "A after the blip").await;
    assert!(
        introspect(&b, &rs, &first, None).await.unwrap().active,
        "the failed revocation was not half-applied"
    );
    assert_health(&a, "tokenmint.v1.RevocationService", ServingStatus::Serving).await;
    println!("blip: A answered again {:?} after the cut", blip.elapsed());

    // A longer cut. B revokes meanwhile; A goes stale: introspection and watches refuse past
    // max_staleness, issuance goes on until max_issue_staleness and refuses past it, and A is
    // no longer ready.
    proxy.cut().await;
    let cut = Instant::now();
    revoke(&b, &demo, &second).await.unwrap();
    let since = loop {
        match introspect(&a, &rs, &kept, None).await {
            Ok(answer) => assert!(answer.active),
            Err(status) if status.code() == Code::Unavailable => break cut.elapsed(),
            Err(status) => panic!("{status:?}"),
        }
        assert!(
            cut.elapsed() < MAX_STALENESS + PROPAGATION_BOUND,
            "introspection on A still answered {:?} after the cut",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("cut: introspection on A refused {since:?} after the cut");
    let status = a
        .revocations(&rs)
        .watch_revocations(WatchRevocationsRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    if cut.elapsed() < MAX_ISSUE_STALENESS - Duration::from_millis(500) {
        issue(&a, &demo, IssueTokenRequest::default())
            .await
            .expect("issuance holds on until max_issue_staleness");
    }
    let since = loop {
        match issue(&a, &demo, IssueTokenRequest::default()).await {
            Ok(_) => {}
            Err(status) => {
                assert_refused(Err(status), Code::Unavailable, "temporarily_unavailable");
                break cut.elapsed();
            }
        }
        assert!(
            cut.elapsed() < MAX_ISSUE_STALENESS + PROPAGATION_BOUND,
            "issuance on A still answered {:?} after the cut",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("cut: issuance on A refused {since:?} after the cut");
    assert!(
        since > MAX_STALENESS,
        "issuance refused only {since:?} after the cut"
    );
    assert_health(&a, "", ServingStatus::NotServing).await;
    // B, which reaches the database, answers all along.
    assert!(!introspect(&b, &rs, &second, None).await.unwrap().active);
    assert_health(&b, "", ServingStatus::Serving).await;

    // Restored: A catches up (B's revocation included) and answers again.
    proxy.restore();
    let restored = Instant::now();
    await_active(&a, &rs, &second, false, "A after the cut").await;
    println!("restored: A fresh again after {:?}", restored.elapsed());
    assert!(introspect(&a, &rs, &kept, None).await.unwrap().active);
    issue(&a, &demo, IssueTokenRequest::default())
        .await
        .unwrap();
    assert_health(&a, "", ServingStatus::Serving).await;
    assert_health(&a, "tokenmint.v1.RevocationService", ServingStatus::Serving).await;
    revoke_with_retries(&a, &demo, &first).await;
    await_active(
        &b,
        &rs,
        &first,
        false,
        "B sees A's revocation after the cut",
    )
    .await;

    a.stop().await;
    b.stop().await;
    drop(proxy);
    drop(database);
}
