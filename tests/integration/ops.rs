//! What operators and tools rely on: health, reflection, bounded handshakes, the connection
//! age, and shedding an address past its failed authentications.

use std::time::Duration;

use tokenmint::grpc::proto::IssueTokenRequest;
use tokio::io::AsyncReadExt as _;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_without_a_client_certificate() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let mut health = HealthClient::new(server.public_channel());
    for service in ["", "tokenmint.v1.TokenService", "tokenmint.v1.KeyService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.v1.Nothing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let mut reflection = ServerReflectionClient::new(server.public_channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    // The request stream stays open while the answer is awaited, as grpcurl keeps it.
    let (requests, receiver) = tokio::sync::mpsc::channel(1);
    requests.send(request).await.unwrap();
    let mut responses = tokio::time::timeout(
        Duration::from_secs(5),
        reflection.server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(receiver)),
    )
    .await
    .expect("reflection answers while its request stream is open")
    .unwrap()
    .into_inner();
    let response = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("an answer while the request stream is open")
        .unwrap()
        .unwrap();
    drop(requests);
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "tokenmint.v1.TokenService",
        "tokenmint.v1.KeyService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_blocks_nobody_and_is_dropped_after_the_timeout() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml = "handshake_timeout = \"1s\"\n".into();
    let server = setup.start().await;

    // A client that connects and never says anything.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let connected = std::time::Instant::now();

    // Everyone else is served meanwhile.
    let cert = setup.pki.client_uri(DEMO_URI);
    issue(&server, &cert, IssueTokenRequest::default())
        .await
        .unwrap();

    // The stalled connection is closed once its handshake time is up (well before 10 s).
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("the stalled connection should be closed, got {other:?}"),
    }
    assert!(
        connected.elapsed() >= Duration::from_millis(900),
        "closed by the 1 s handshake timeout, not at once: {:?}",
        connected.elapsed()
    );
    server.stop().await;
}

/// Whether the server closes `tcp` within `within` (EOF or reset) without our sending a byte.
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(within, tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_handshake_limit_a_new_connection_is_closed_at_once() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml = "handshake_timeout = \"30s\"\nmax_handshakes = 2\n".into();
    let server = setup.start().await;

    // Two connections hold both handshake slots and say nothing.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third, from another address (from the same one it would wait its address's turn),
    // is closed at once, long before the 30 s handshake timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut third = socket.connect(server.addr).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(3)).await);
    // The stalled ones are still open: the limit sheds new connections, not old ones.
    for tcp in &mut stalled {
        assert!(!closed_within(tcp, Duration::from_millis(100)).await);
    }

    // When they go, their slots come back and clients are served again.
    drop(stalled);
    let cert = setup.pki.client_uri(DEMO_URI);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match issue(&server, &cert, IssueTokenRequest::default()).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("not served after the slots were freed: {e:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_maximum_age_is_closed_and_its_client_reconnects() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml = "max_connection_age = \"1s\"\n".into();
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);

    // A bare HTTP/2 connection: its driver ends when the server closes the connection.
    let mut config = rustls_client(&setup, Some(&cert));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (_send, connection) = hyper::client::conn::http2::handshake::<_, _, String>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let opened = std::time::Instant::now();
    // Age 1 s, then at most the grace (here also 1 s) for calls in flight.
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(ended.is_ok(), "the connection outlived its maximum age");
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "{:?}",
        opened.elapsed()
    );

    // A gRPC channel simply reconnects.
    let client = server.client(&cert).await;
    client
        .clone()
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client
        .clone()
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_keeps_failing_handshakes_is_shed_for_a_while() {
    let mut setup = Setup::new(&demo_client());
    // One failure a second (a burst of two): 15 failures outrun it even when a loaded host
    // makes each handshake slow.
    setup.server_toml = "handshake_failures_per_peer = 1\n".into();
    let server = setup.start().await;
    let good = setup.pki.client_uri(DEMO_URI);
    let rogue_ca = tokenmint::pki::CertificateAuthority::generate("rogue CA").unwrap();
    let rogue = rogue_ca
        .issue(&tokenmint::pki::LeafSpec::client_uri(
            "demo",
            DEMO_URI,
            Duration::from_secs(3600),
        ))
        .unwrap();

    // More failed handshakes than 1/s with a burst of 2 allow, from 127.0.0.1.
    for _ in 0..15 {
        assert_tls_refused(issue(&server, &rogue, IssueTokenRequest::default()).await);
    }
    // Now even a good client from the same address is turned away at once…
    let mut shed = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut shed, Duration::from_secs(1)).await);
    assert!(
        issue(&server, &good, IssueTokenRequest::default())
            .await
            .is_err()
    );
    // …until the bucket has a token again (a second per token at 1/s).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match issue(&server, &good, IssueTokenRequest::default()).await {
            Ok(_) => break,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still shed after the penalty: {e:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_whose_calls_keep_failing_authentication_is_shed_too() {
    let mut setup = Setup::new(&demo_client());
    // One failure a second (a burst of two), so 15 outrun it on a loaded host too.
    setup.server_toml = "handshake_failures_per_peer = 1\n".into();
    let server = setup.start().await;
    // A certificate from the trusted CA that no client claims: the handshake succeeds, every
    // call is UNAUTHENTICATED.
    let stranger = setup.pki.client_uri("spiffe://tokenmint.test/stranger");
    let client = server.client(&stranger).await;
    for _ in 0..15 {
        assert_refused(
            client
                .clone()
                .issue_token(IssueTokenRequest::default())
                .await
                .map(tonic::Response::into_inner),
            tonic::Code::Unauthenticated,
            "invalid_client",
        );
    }
    // The address is now shed at accept, even for a good client…
    let mut shed = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut shed, Duration::from_secs(1)).await);
    // …until its bucket refills.
    let good = setup.pki.client_uri(DEMO_URI);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while issue(&server, &good, IssueTokenRequest::default())
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "still shed after the penalty"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_health_turns_not_serving_and_a_call_in_flight_completes() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);
    let mut health = HealthClient::new(server.public_channel());
    let mut statuses = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        statuses.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    // A call the server has taken in and not yet answered (its body is unfinished).
    let held = HeldRequest::start(&setup, &server, &cert).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopping = tokio::spawn(server.stop());
    let next = tokio::time::timeout(Duration::from_secs(5), statuses.message())
        .await
        .expect("health reports the shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(statuses);
    drop(health);

    // The call in flight is still answered, and the server then stops within its grace.
    let line = held.finish().await;
    assert!(line.contains(" 200 "), "{line}");
    tokio::time::timeout(Duration::from_secs(12), stopping)
        .await
        .expect("stopped within the grace")
        .unwrap();
}
