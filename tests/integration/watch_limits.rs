//! Watch streams hold bounded memory whatever their readers do: a snapshot comes in pages
//! that a watcher can resume where its stream ended; a reader that takes nothing is cut off
//! after the stall timeout (its connection closed); and streams are capped per connection,
//! per client and in all, for both `WatchRevocations` and `WatchJwks`.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use tokenmint::grpc::proto::{
    RevocationEvent, SnapshotResume, WatchJwksRequest, WatchRevocationsRequest,
    key_service_client::KeyServiceClient,
    revocation_event::{Event, SnapshotBegin, SnapshotComplete, TokenRevoked},
    revocation_service_client::RevocationServiceClient,
};
use tokenmint_core::revocation::Change;
use tonic::{Code, Streaming, transport::Channel};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

/// Revokes `count` bare token ids (`t-0000`, …) through the server's commit path.
async fn revoke_many(server: &TestServer, from: usize, count: usize) {
    use tokenmint_core::clock::Clock as _;
    let expires_at = tokenmint_core::clock::SystemClock.unix_now() + Duration::from_secs(3600);
    for i in from..from + count {
        server
            .changes
            .commit(
                Change::TokenRevoked {
                    token_id: format!("t-{i:04}"),
                    expires_at,
                    client_id: None,
                    revoked_by: "admin".into(),
                },
                "admin",
            )
            .await
            .unwrap()
            .unwrap();
    }
}

async fn open(
    client: &mut RevocationServiceClient<Channel>,
    request: WatchRevocationsRequest,
) -> Result<Streaming<RevocationEvent>, tonic::Status> {
    tokio::time::timeout(WAIT, client.watch_revocations(request))
        .await
        .expect("answered in time")
        .map(tonic::Response::into_inner)
}

async fn next(stream: &mut Streaming<RevocationEvent>) -> RevocationEvent {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

fn token_id(event: &RevocationEvent) -> Option<&str> {
    match &event.event {
        Some(Event::TokenRevoked(TokenRevoked { token_id, .. })) => Some(token_id),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_a_stream_ended_inside_of_is_resumed_where_it_ended() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let rs = setup.pki.client_uri(RS_URI);
    // More revoked tokens than one page holds (256), so the snapshot spans pages.
    revoke_many(&server, 0, 700).await;

    let mut client = server.revocations(&rs);
    let mut stream = open(&mut client, WatchRevocationsRequest::default())
        .await
        .unwrap();
    let first = next(&mut stream).await;
    let Some(Event::SnapshotBegin(SnapshotBegin { through })) = first.event else {
        panic!("a snapshot starts with SnapshotBegin: {first:?}");
    };
    assert_eq!(through, 700);
    // Read part of it — past the first page — then the stream ends.
    let mut seen = BTreeSet::new();
    let mut last = 0;
    while seen.len() < 300 {
        let event = next(&mut stream).await;
        let id = token_id(&event)
            .expect("only tokens in this state")
            .to_owned();
        assert!(event.sequence > last, "tokens come in ascending sequence");
        last = event.sequence;
        seen.insert(id);
    }
    drop(stream);

    // Meanwhile more revocations land, and a change to the snapshot's head: a client is
    // disabled.
    revoke_many(&server, 700, 5).await;
    server
        .changes
        .commit(
            Change::ClientDisabled {
                client_id: "other".into(),
            },
            "admin",
        )
        .await
        .unwrap()
        .unwrap();

    // Resumed: no SnapshotBegin, the rest of the snapshot with nothing repeated, its
    // SnapshotComplete, then what was committed since.
    let mut resumed = open(
        &mut client,
        WatchRevocationsRequest {
            resume_snapshot: Some(SnapshotResume {
                through,
                after: last,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    loop {
        let event = next(&mut resumed).await;
        match &event.event {
            Some(Event::SnapshotComplete(SnapshotComplete {})) => {
                assert_eq!(event.sequence, through);
                break;
            }
            Some(Event::TokenRevoked(TokenRevoked { token_id, .. })) => {
                assert!(event.sequence <= through, "{event:?}");
                assert!(seen.insert(token_id.clone()), "{token_id} sent twice");
            }
            other => panic!("inside the resumed snapshot: {other:?}"),
        }
    }
    assert_eq!(
        seen.len(),
        700,
        "the snapshot, across both streams, is whole"
    );
    for sequence in 701..=705 {
        let event = next(&mut resumed).await;
        assert_eq!(event.sequence, sequence);
        assert!(seen.insert(token_id(&event).unwrap().to_owned()));
    }
    assert_eq!(seen.len(), 705);
    // The head's change reaches the watcher from the log, after the resumed snapshot.
    let disabled = next(&mut resumed).await;
    assert_eq!(disabled.sequence, 706);
    assert!(
        matches!(&disabled.event, Some(Event::ClientDisabled(d)) if d.client_id == "other"),
        "{disabled:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_can_no_longer_be_resumed_starts_again() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let rs = setup.pki.client_uri(RS_URI);
    revoke_many(&server, 0, 3).await;
    let mut client = server.revocations(&rs);
    // A snapshot mark ahead of the log (another server's): a fresh snapshot.
    let mut stream = open(
        &mut client,
        WatchRevocationsRequest {
            resume_snapshot: Some(SnapshotResume {
                through: 99,
                after: 1,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let first = next(&mut stream).await;
    assert!(
        matches!(
            first.event,
            Some(Event::SnapshotBegin(SnapshotBegin { through: 3 }))
        ),
        "{first:?}"
    );
    // Resumed before its first token: nothing worth keeping, so a fresh snapshot too.
    let mut stream = open(
        &mut client,
        WatchRevocationsRequest {
            resume_snapshot: Some(SnapshotResume {
                through: 3,
                after: 0,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let first = next(&mut stream).await;
    assert!(
        matches!(
            first.event,
            Some(Event::SnapshotBegin(SnapshotBegin { through: 3 }))
        ),
        "{first:?}"
    );
    server.stop().await;
}

/// A raw HTTP/2 connection presenting `cert` whose receive window is one byte short of
/// nothing: it takes almost no data unless it reads.
async fn stalled_connection(
    setup: &Setup,
    server: &TestServer,
    cert: &tokenmint::pki::Issued,
) -> (
    h2::client::SendRequest<axum::body::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let mut config = rustls_client(setup, Some(cert));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(1024)
        .initial_connection_window_size(1024)
        .handshake(tls)
        .await
        .unwrap();
    (client, tokio::spawn(connection))
}

/// A gRPC request for `path` with an empty message.
fn grpc_request(path: &str) -> http::Request<()> {
    http::Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_cut_off_after_the_stall_timeout() {
    let mut setup = Setup::new(&standard_clients());
    setup.server_toml = "watch_stall_timeout = \"1s\"\n".into();
    let server = setup.start().await;
    let rs = setup.pki.client_uri(RS_URI);
    revoke_many(&server, 0, 4000).await;

    // A watcher that never reads past its 1 KiB window.
    let (client, connection) = stalled_connection(&setup, &server, &rs).await;
    let (response, mut body) = client
        .ready()
        .await
        .unwrap()
        .send_request(
            grpc_request("/tokenmint.v1.RevocationService/WatchRevocations"),
            false,
        )
        .unwrap();
    body.send_data(axum::body::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);

    // A watcher that reads gets the whole snapshot meanwhile.
    let mut reader = open(
        &mut server.revocations(&rs),
        WatchRevocationsRequest::default(),
    )
    .await
    .unwrap();
    let mut tokens = 0;
    loop {
        let event = next(&mut reader).await;
        match event.event {
            Some(Event::SnapshotComplete(_)) => break,
            Some(Event::TokenRevoked(_)) => tokens += 1,
            _ => {}
        }
    }
    assert_eq!(tokens, 4000);

    // The stalled one's connection is closed by the server once it made no progress for
    // the stall timeout.
    let closed = tokio::time::timeout(Duration::from_secs(8), connection)
        .await
        .expect("the stalled watcher's connection is closed");
    drop(closed);
    // And the reader's stream is still live.
    revoke_many(&server, 4000, 1).await;
    assert_eq!(token_id(&next(&mut reader).await), Some("t-4000"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_watches_are_capped_per_connection_per_client_and_in_all() {
    let mut setup = Setup::new(&standard_clients());
    setup.revocation_toml = "max_watches = 20\nmax_watches_per_client = 18\n".into();
    let server = setup.start().await;
    let rs = setup.pki.client_uri(RS_URI);
    let admin = setup.pki.client_uri(ADMIN_URI);

    let refused = |result: Result<Streaming<RevocationEvent>, tonic::Status>, what: &str| {
        let status = result
            .err()
            .unwrap_or_else(|| panic!("{what}: not refused"));
        assert_eq!(status.code(), Code::ResourceExhausted, "{what}: {status:?}");
        status.message().to_owned()
    };
    // One connection: 16 streams, not 17.
    let mut one = server.revocations(&rs);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(
            open(&mut one, WatchRevocationsRequest::default())
                .await
                .unwrap(),
        );
    }
    let message = refused(
        open(&mut one, WatchRevocationsRequest::default()).await,
        "the 17th on one connection",
    );
    assert!(message.contains("connection"), "{message}");
    // The client: 18 in all, across connections.
    let mut two = server.revocations(&rs);
    for _ in 0..2 {
        held.push(
            open(&mut two, WatchRevocationsRequest::default())
                .await
                .unwrap(),
        );
    }
    let message = refused(
        open(&mut two, WatchRevocationsRequest::default()).await,
        "the client's 19th",
    );
    assert!(message.contains("max_watches_per_client"), "{message}");
    // The server: 20 in all, whoever asks.
    let mut other = server.revocations(&admin);
    for _ in 0..2 {
        held.push(
            open(&mut other, WatchRevocationsRequest::default())
                .await
                .unwrap(),
        );
    }
    let message = refused(
        open(&mut other, WatchRevocationsRequest::default()).await,
        "the server's 21st",
    );
    assert!(message.contains("revocation.max_watches"), "{message}");
    // A closed stream gives its place back (once the server has seen it close).
    held.pop();
    let deadline = std::time::Instant::now() + WAIT;
    while open(&mut other, WatchRevocationsRequest::default())
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_set_watches_are_capped_per_connection_and_apart_for_peers_without_a_certificate() {
    let mut setup = Setup::new(&standard_clients());
    // 40 with a certificate, a quarter of that (10) without.
    setup.extra_toml = "max_jwks_watches = 40\n".into();
    let server = setup.start().await;
    let rs = setup.pki.client_uri(RS_URI);
    let watch = |mut client: KeyServiceClient<Channel>| async move {
        tokio::time::timeout(WAIT, client.watch_jwks(WatchJwksRequest::default()))
            .await
            .expect("answered in time")
            .map(tonic::Response::into_inner)
    };
    let refused =
        |result: Result<Streaming<tokenmint::grpc::proto::GetJwksResponse>, tonic::Status>| {
            let status = result.expect_err("refused");
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            status.message().to_owned()
        };
    let mut held = Vec::new();
    // One connection with a certificate: 16 watch streams, not 17.
    let one = server.channel_for(&rs);
    for _ in 0..16 {
        held.push(watch(KeyServiceClient::new(one.clone())).await.unwrap());
    }
    let message = refused(watch(KeyServiceClient::new(one.clone())).await);
    assert!(message.contains("connection"), "{message}");
    // Without a certificate: 10 in all, whatever the connections.
    for _ in 0..10 {
        held.push(
            watch(KeyServiceClient::new(server.public_channel()))
                .await
                .unwrap(),
        );
    }
    let message = refused(watch(KeyServiceClient::new(server.public_channel())).await);
    assert!(message.contains("max_jwks_watches"), "{message}");
    // Those did not take the streams of peers with a certificate.
    held.push(
        watch(KeyServiceClient::new(server.channel_for(&rs)))
            .await
            .unwrap(),
    );
    // GetJwks is not limited by it.
    server.jwks().await;
    server.stop().await;
}
