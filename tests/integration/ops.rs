//! What operators and tools rely on: health, reflection, bounded handshakes.

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
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
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
