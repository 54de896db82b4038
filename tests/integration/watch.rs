//! `WatchRevocations` (SPEC §7): a snapshot of the state in force, then every change live,
//! numbered in commit order; resumable by sequence; a fresh snapshot when the history a
//! cursor needs was purged; ended by shutdown.

use std::time::{Duration, Instant};

use tokenmint::{
    grpc::proto::{
        DisableClientRequest, EnableClientRequest, IssueTokenRequest, RevocationEvent,
        RevokeClientTokensRequest, RevokeTokenIdRequest, WatchRevocationsRequest,
        revocation_event::{
            ClientCutoff, ClientDisabled, ClientEnabled, Event, SnapshotBegin, SnapshotComplete,
            TokenRevoked,
        },
        revocation_service_client::RevocationServiceClient,
    },
    pki::Issued,
    server::SHUTDOWN_GRACE,
};
use tokenmint_core::crypto::b64url_decode;
use tokenmint_store::{Store as _, sqlite::SqliteStore};
use tonic::{Code, Streaming};

use crate::support::*;

/// How long any one event may take to arrive.
const WAIT: Duration = Duration::from_secs(5);

fn jti_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&b64url_decode(payload).unwrap()).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

fn exp_of(token: &str) -> i64 {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&b64url_decode(payload).unwrap()).unwrap();
    claims["exp"].as_i64().unwrap()
}

async fn watch(
    server: &TestServer,
    cert: &Issued,
    after_sequence: u64,
) -> Streaming<RevocationEvent> {
    tokio::time::timeout(
        WAIT,
        server
            .revocations(cert)
            .watch_revocations(WatchRevocationsRequest {
                after_sequence,
                ..Default::default()
            }),
    )
    .await
    .expect("the watch starts in time")
    .unwrap()
    .into_inner()
}

/// The next event, within `WAIT`.
async fn next(stream: &mut Streaming<RevocationEvent>) -> RevocationEvent {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

/// Asserts nothing more arrives for a while (the stream stays open).
async fn assert_quiet(stream: &mut Streaming<RevocationEvent>) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        panic!("expected no event, got {item:?}");
    }
}

/// Reads a snapshot: SnapshotBegin, the state, SnapshotComplete. Returns the state's events
/// and the sequence the snapshot is current through.
async fn read_snapshot(stream: &mut Streaming<RevocationEvent>) -> (Vec<RevocationEvent>, u64) {
    let first = next(stream).await;
    let Some(Event::SnapshotBegin(SnapshotBegin { through })) = first.event else {
        panic!("a snapshot starts with SnapshotBegin: {first:?}");
    };
    let mut state = Vec::new();
    loop {
        let event = next(stream).await;
        match event.event {
            Some(Event::SnapshotComplete(SnapshotComplete {})) => {
                assert_eq!(
                    event.sequence, through,
                    "SnapshotBegin announces the sequence SnapshotComplete carries"
                );
                return (state, event.sequence);
            }
            Some(Event::SnapshotBegin(_)) | None => panic!("inside a snapshot: {event:?}"),
            Some(_) => state.push(event),
        }
    }
}

fn token_revoked(token: &str) -> Event {
    Event::TokenRevoked(TokenRevoked {
        token_id: jti_of(token),
        expires_at: exp_of(token),
    })
}

async fn token_for(server: &TestServer, cert: &Issued) -> String {
    issue(server, cert, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_needs_a_certificate_and_the_introspect_permission() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;

    let status = RevocationServiceClient::new(server.public_channel())
        .watch_revocations(WatchRevocationsRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .expect_err("no certificate");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    for uri in [DEMO_URI, OTHER_URI] {
        let cert = setup.pki.client_uri(uri);
        let status = server
            .revocations(&cert)
            .watch_revocations(WatchRevocationsRequest {
                after_sequence: 0,
                ..Default::default()
            })
            .await
            .expect_err("no introspect permission");
        assert_eq!(status.code(), Code::PermissionDenied, "{uri}: {status:?}");
    }

    // An unknown certificate (trusted CA, no client) is not a client.
    let stranger = setup.pki.client_uri("spiffe://tokenmint.test/stranger");
    let status = server
        .revocations(&stranger)
        .watch_revocations(WatchRevocationsRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .expect_err("not a client");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_gets_the_state_then_every_change_live() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let admin_cert = setup.pki.client_uri(ADMIN_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let mut admin = server.admin(&admin_cert);

    // State before anyone watches.
    let first = token_for(&server, &demo).await;
    let second = token_for(&server, &demo).await;
    revoke(&server, &demo, &first).await.unwrap();

    let mut stream = watch(&server, &rs, 0).await;
    let (state, high_water) = read_snapshot(&mut stream).await;
    assert_eq!(
        high_water, 1,
        "the snapshot is current through the last commit"
    );
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(state[0].sequence, 1);
    assert_eq!(state[0].event, Some(token_revoked(&first)));

    // Each kind of change, live, in commit order.
    let mut last = high_water;
    let mut expect = |event: RevocationEvent, sequence: u64, want: Event| {
        assert_eq!(event.event, Some(want), "{event:?}");
        assert!(
            event.sequence > last,
            "sequences increase: {event:?} after {last}"
        );
        assert_eq!(event.sequence, sequence, "the sequence the commit answered");
        last = event.sequence;
    };

    revoke(&server, &demo, &second).await.unwrap();
    let event = next(&mut stream).await;
    let revoked_sequence = event.sequence;
    expect(event, revoked_sequence, token_revoked(&second));

    let cutoff = admin
        .revoke_client_tokens(RevokeClientTokensRequest {
            client_id: "other".into(),
        })
        .await
        .unwrap()
        .into_inner();
    expect(
        next(&mut stream).await,
        cutoff.sequence,
        Event::ClientCutoff(ClientCutoff {
            client_id: "other".into(),
            issued_at_or_before: cutoff.issued_at_or_before,
        }),
    );

    let disabled = admin
        .disable_client(DisableClientRequest {
            client_id: "other".into(),
        })
        .await
        .unwrap()
        .into_inner();
    expect(
        next(&mut stream).await,
        disabled.sequence,
        Event::ClientDisabled(ClientDisabled {
            client_id: "other".into(),
        }),
    );

    let enabled = admin
        .enable_client(EnableClientRequest {
            client_id: "other".into(),
        })
        .await
        .unwrap()
        .into_inner();
    expect(
        next(&mut stream).await,
        enabled.sequence,
        Event::ClientEnabled(ClientEnabled {
            client_id: "other".into(),
        }),
    );
    // No-ops (an already revoked token) send nothing.
    revoke(&server, &demo, &second).await.unwrap();
    assert_quiet(&mut stream).await;

    // An admin watching now gets the state in force: both revocations and the cut-off (the
    // client was disabled and enabled again, so it is not disabled).
    let mut admin_stream = watch(&server, &admin_cert, 0).await;
    let (state, high_water) = read_snapshot(&mut admin_stream).await;
    assert_eq!(high_water, enabled.sequence);
    let mut got: Vec<(u64, Event)> = state
        .into_iter()
        .map(|e| (e.sequence, e.event.unwrap()))
        .collect();
    got.sort_by_key(|(sequence, _)| *sequence);
    assert_eq!(
        got,
        [
            (1, token_revoked(&first)),
            (revoked_sequence, token_revoked(&second)),
            (
                cutoff.sequence,
                Event::ClientCutoff(ClientCutoff {
                    client_id: "other".into(),
                    issued_at_or_before: cutoff.issued_at_or_before,
                })
            ),
        ]
    );
    // Both watchers see the next change.
    let third = token_for(&server, &demo).await;
    revoke(&server, &demo, &third).await.unwrap();
    for s in [&mut stream, &mut admin_stream] {
        let event = next(s).await;
        assert_eq!(event.sequence, enabled.sequence + 1);
        assert_eq!(event.event, Some(token_revoked(&third)));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_a_cursor_gets_exactly_what_it_missed() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let mut admin = server.admin(&setup.pki.client_uri(ADMIN_URI));
    let tokens = [
        token_for(&server, &demo).await,
        token_for(&server, &demo).await,
        token_for(&server, &demo).await,
    ];

    let mut stream = watch(&server, &rs, 0).await;
    let (state, high_water) = read_snapshot(&mut stream).await;
    assert!(state.is_empty());
    assert_eq!(high_water, 0);
    revoke(&server, &demo, &tokens[0]).await.unwrap();
    let seen = next(&mut stream).await;
    assert_eq!(seen.event, Some(token_revoked(&tokens[0])));
    let last = seen.sequence;
    drop(stream);

    // Changes while disconnected.
    revoke(&server, &demo, &tokens[1]).await.unwrap();
    let disabled = admin
        .disable_client(DisableClientRequest {
            client_id: "other".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let enabled = admin
        .enable_client(EnableClientRequest {
            client_id: "other".into(),
        })
        .await
        .unwrap()
        .into_inner();

    let mut stream = watch(&server, &rs, last).await;
    let missed = [
        next(&mut stream).await,
        next(&mut stream).await,
        next(&mut stream).await,
    ];
    assert_eq!(
        missed.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [last + 1, disabled.sequence, enabled.sequence],
        "in commit order, nothing skipped: {missed:?}"
    );
    assert_eq!(missed[0].event, Some(token_revoked(&tokens[1])));
    assert_eq!(
        missed[1].event,
        Some(Event::ClientDisabled(ClientDisabled {
            client_id: "other".into()
        }))
    );
    assert_eq!(
        missed[2].event,
        Some(Event::ClientEnabled(ClientEnabled {
            client_id: "other".into()
        }))
    );
    // Exactly those: no snapshot, nothing repeated, and then live again.
    assert_quiet(&mut stream).await;
    revoke(&server, &demo, &tokens[2]).await.unwrap();
    let live = next(&mut stream).await;
    assert_eq!(live.sequence, enabled.sequence + 1);
    assert_eq!(live.event, Some(token_revoked(&tokens[2])));

    // A cursor at the head resumes with nothing to catch up.
    let mut at_head = watch(&server, &rs, live.sequence).await;
    assert_quiet(&mut at_head).await;
    // A cursor ahead of the log (another server's, or a reset store) gets a snapshot.
    let mut ahead = watch(&server, &rs, live.sequence + 1000).await;
    let (state, high_water) = read_snapshot(&mut ahead).await;
    assert_eq!(high_water, live.sequence);
    assert_eq!(state.len(), 3, "the three revoked tokens: {state:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_kept_history_gets_a_fresh_snapshot() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let mut admin = server.admin(&setup.pki.client_uri(ADMIN_URI));

    let tokens = [
        token_for(&server, &demo).await,
        token_for(&server, &demo).await,
        token_for(&server, &demo).await,
    ];
    for t in &tokens {
        revoke(&server, &demo, t).await.unwrap();
    }
    let disabled = admin
        .disable_client(DisableClientRequest {
            client_id: "other".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disabled.sequence, 4);

    // The control: while the history is kept, cursor 1 resumes without a snapshot.
    let mut stream = watch(&server, &rs, 1).await;
    let resumed = next(&mut stream).await;
    assert_eq!(resumed.sequence, 2);
    assert_eq!(resumed.event, Some(token_revoked(&tokens[1])));
    drop(stream);

    // Purge every log entry, as if they were all long past their keep time.
    let far_future = tokenmint_core::clock::UnixTime::from_secs(4_102_444_800); // 2100-01-01
    let store = SqliteStore::open(&setup.path().join("tokenmint.db"))
        .await
        .unwrap();
    assert!(store.purge(far_future).await.unwrap() > 0);
    assert!(store.changes_after(0, 100).await.unwrap().is_empty());
    drop(store);

    let mut stream = watch(&server, &rs, 1).await;
    let (state, high_water) = read_snapshot(&mut stream).await;
    assert_eq!(
        high_water, disabled.sequence,
        "current through the last commit"
    );
    // The token revocations were purged with the log (their state was past its time too);
    // the disabled client lives on in the client record.
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(
        state[0].event,
        Some(Event::ClientDisabled(ClientDisabled {
            client_id: "other".into()
        }))
    );
    assert_eq!(state[0].sequence, disabled.sequence);
    // Then live as usual.
    let enabled = admin
        .enable_client(EnableClientRequest {
            client_id: "other".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let live = next(&mut stream).await;
    assert_eq!(live.sequence, enabled.sequence);
    assert_eq!(live.sequence, disabled.sequence + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_reach_a_watcher_in_sequence_order() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let rs = setup.pki.client_uri(RS_URI);
    let admin = server.admin(&setup.pki.client_uri(ADMIN_URI));

    let mut stream = watch(&server, &rs, 0).await;
    read_snapshot(&mut stream).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let mut admin = admin.clone();
            tokio::spawn(async move {
                admin
                    .revoke_token_id(RevokeTokenIdRequest {
                        token_id: format!("concurrent-{i}"),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .sequence
            })
        })
        .collect();
    let mut answered = Vec::new();
    for task in tasks {
        answered.push(task.await.unwrap());
    }
    answered.sort_unstable();
    assert_eq!(answered, (1..=20).collect::<Vec<u64>>());

    let mut ids = std::collections::HashSet::new();
    for expected in 1..=20 {
        let event = next(&mut stream).await;
        assert_eq!(
            event.sequence, expected,
            "in commit order, no gap: {event:?}"
        );
        match event.event {
            Some(Event::TokenRevoked(t)) => assert!(ids.insert(t.token_id)),
            other => panic!("expected a token revocation, got {other:?}"),
        }
    }
    assert_eq!(ids.len(), 20);
    assert_quiet(&mut stream).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_an_open_watch_stream() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let rs = setup.pki.client_uri(RS_URI);

    let mut stream = watch(&server, &rs, 0).await;
    read_snapshot(&mut stream).await;

    let started = Instant::now();
    let stopping = tokio::spawn(server.stop());
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream ends when the server shuts down");
    let status = end.expect_err("the stream ends with a status saying why");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    tokio::time::timeout(SHUTDOWN_GRACE, stopping)
        .await
        .expect("the server stops within its grace")
        .unwrap();
    assert!(
        started.elapsed() < SHUTDOWN_GRACE,
        "an open watch does not hold shutdown to its grace: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revocation_reaches_watchers_and_stays_in_the_snapshot() {
    use tokenmint::grpc::proto::{RevokeKeyRequest, revocation_event::KeyRevoked};

    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let demo = setup.pki.client_uri(DEMO_URI);
    let token = token_for(&server, &demo).await;
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();

    let mut stream = watch(&server, &rs, 0).await;
    let (_, through) = read_snapshot(&mut stream).await;

    let revoked = server
        .admin(&admin)
        .revoke_key(RevokeKeyRequest {
            key_id: kid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.sequence > through);
    let event = next(&mut stream).await;
    assert_eq!(event.sequence, revoked.sequence);
    assert_eq!(
        event.event,
        Some(Event::KeyRevoked(KeyRevoked {
            key_id: kid.clone()
        }))
    );
    // Its tokens are inactive at once.
    let answer = introspect(&server, &admin, &token, None).await.unwrap();
    assert!(!answer.active);

    // A new watcher sees the revoked key in its snapshot.
    let mut fresh = watch(&server, &rs, 0).await;
    let (state, _) = read_snapshot(&mut fresh).await;
    assert!(
        state.iter().any(|e| e.event
            == Some(Event::KeyRevoked(KeyRevoked {
                key_id: kid.clone()
            }))),
        "snapshot: {state:?}"
    );
    server.stop().await;
}

/// The `as_of` of a Progress event, which must be recent on the server's clock.
fn progress_as_of(event: &RevocationEvent) -> std::time::SystemTime {
    let Some(Event::Progress(progress)) = &event.event else {
        panic!("expected Progress: {event:?}");
    };
    let as_of = progress.as_of.unwrap();
    let as_of = std::time::UNIX_EPOCH
        + Duration::new(as_of.seconds as u64, as_of.nanos.try_into().unwrap());
    let age = tokenmint_core::clock::Clock::now(&tokenmint_core::clock::SystemClock)
        .duration_since(as_of)
        .unwrap_or_default();
    assert!(age < WAIT, "as_of is recent: {age:?} old");
    as_of
}

/// A watcher that asks for Progress gets one at least every second once current, carrying
/// the sequence its state is current through; a change comes before the Progress that vouches
/// for it. A watcher that does not ask (every client built before Progress) never gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_heartbeats_say_how_current_a_watcher_is_and_only_when_asked_for() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let token = token_for(&server, &demo).await;
    revoke(&server, &demo, &token).await.unwrap();

    let mut silent = watch(&server, &rs, 0).await;
    read_snapshot(&mut silent).await;

    let mut stream = tokio::time::timeout(
        WAIT,
        server
            .revocations(&rs)
            .watch_revocations(WatchRevocationsRequest {
                progress: true,
                ..Default::default()
            }),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();
    let (_, through) = read_snapshot(&mut stream).await;
    let first = next(&mut stream).await;
    assert_eq!(first.sequence, through, "{first:?}");
    let first_as_of = progress_as_of(&first);

    // Heartbeats keep coming, about a second apart, with nothing to report.
    let started = Instant::now();
    let second = next(&mut stream).await;
    assert_eq!(second.sequence, through);
    assert!(progress_as_of(&second) >= first_as_of);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "a heartbeat at least every second: {:?}",
        started.elapsed()
    );

    // A change arrives before any heartbeat that covers it.
    let another = token_for(&server, &demo).await;
    revoke(&server, &demo, &another).await.unwrap();
    let change = loop {
        let event = next(&mut stream).await;
        if !matches!(event.event, Some(Event::Progress(_))) {
            break event;
        }
        assert_eq!(
            event.sequence, through,
            "no heartbeat vouches for the change early"
        );
    };
    assert_eq!(change.event, Some(token_revoked(&another)));
    let after = next(&mut stream).await;
    assert_eq!(after.sequence, change.sequence, "{after:?}");
    progress_as_of(&after);

    // The watcher that did not ask got the change and nothing else.
    assert_eq!(next(&mut silent).await.event, Some(token_revoked(&another)));
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(1500), silent.message()).await {
        panic!("no Progress for a watcher that did not ask: {item:?}");
    }
    server.stop().await;
}
