//! Availability under hostile peers: no peer without a client certificate can take capacity
//! from clients with one. Stalled request bodies hold no slot in flight and time out; a
//! connection without a certificate gets a small stream budget; HTTP/1.1 headers have the
//! same size limit as HTTP/2's.

use std::{sync::Arc, time::Duration};

use tokenmint::{grpc::proto::IssueTokenRequest, pki::Issued};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    flaky::{FlakyStore, HeldCommit},
    support::*,
};

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the server offering `alpn`, presenting `cert` if given.
async fn connect(
    setup: &Setup,
    server: &TestServer,
    cert: Option<&Issued>,
    alpn: &[u8],
) -> TlsStream {
    connect_from("127.0.0.1", setup, server, cert, alpn).await
}

/// The same, from `source` (an address in 127.0.0.0/8).
async fn connect_from(
    source: &str,
    setup: &Setup,
    server: &TestServer,
    cert: Option<&Issued>,
    alpn: &[u8],
) -> TlsStream {
    let mut config = rustls_client(setup, cert);
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tcp_from(source, server).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// An HTTP/2 client over `tls`, its connection driven by a task of its own.
async fn h2_over(tls: TlsStream) -> h2::client::SendRequest<axum::body::Bytes> {
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// What an attacker holds open: HTTP/2 streams whose bodies never finish.
struct Stalled {
    /// The stream budget the server gave the connection.
    budget: usize,
    /// Held open until dropped.
    _streams: Vec<(
        h2::client::ResponseFuture,
        h2::SendStream<axum::body::Bytes>,
    )>,
}

/// Opens one HTTP/2 connection without a certificate and as many POST streams on it (up to
/// `wanted`) as the server lets it, each with half a body that is never finished.
async fn stall_streams(setup: &Setup, server: &TestServer, path: &str, wanted: usize) -> Stalled {
    let mut client = h2_over(connect(setup, server, None, b"h2").await).await;
    // One finished request first, so the server's settings (its stream budget) are in force.
    let (warm_up, _) = client
        .send_request(
            http::Request::get("https://localhost/.well-known/jwks.json")
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    assert_eq!(warm_up.await.unwrap().status(), http::StatusCode::OK);
    let budget = client.current_max_send_streams();
    let grpc = path.starts_with("/tokenmint.");
    let mut streams = Vec::new();
    for _ in 0..wanted {
        // The client waits for the server's stream budget: past it, it gives up.
        let Ok(Ok(ready)) =
            tokio::time::timeout(Duration::from_millis(300), client.clone().ready()).await
        else {
            break;
        };
        client = ready;
        let request = http::Request::post(format!("https://localhost{path}"))
            .header(
                "content-type",
                if grpc {
                    "application/grpc"
                } else {
                    "application/x-www-form-urlencoded"
                },
            )
            .header("te", "trailers")
            .header("content-length", "100")
            .body(())
            .unwrap();
        let Ok((response, mut body)) = client.send_request(request, false) else {
            break;
        };
        body.send_data(axum::body::Bytes::from_static(&[0; 10]), false)
            .unwrap();
        streams.push((response, body));
    }
    Stalled {
        budget,
        _streams: streams,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_from_peers_without_a_certificate_take_no_capacity_from_clients_with_one() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml = "max_in_flight = 64\n".into();
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);

    // The attack, bounded: 6 connections without a certificate, each trying 64 streams to
    // the token endpoints whose bodies never arrive (before the fix: 384 streams, every one
    // holding a slot, and every authenticated call refused).
    let mut attack = Vec::new();
    for i in 0..6 {
        let path = if i % 2 == 0 {
            "/tokenmint.v1.TokenService/IssueToken"
        } else {
            "/oauth2/token"
        };
        let stalled = stall_streams(&setup, &server, path, 64).await;
        // The server's stream budget for a connection without a certificate (the h2 client
        // queues the rest on its side).
        assert_eq!(stalled.budget, 8);
        attack.push(stalled);
    }

    // Meanwhile a client with a certificate keeps getting tokens, none refused.
    let mut client = server.client(&cert).await;
    for _ in 0..100 {
        client
            .issue_token(IssueTokenRequest::default())
            .await
            .unwrap();
    }
    drop(attack);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_holds_no_slot_and_is_refused_after_body_timeout() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml =
        "max_in_flight = 1\nbody_timeout = \"1s\"\nrequest_timeout = \"2s\"\n".into();
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);

    // Half a body, from a client with a certificate: it holds no slot while it waits.
    let mut tls = connect(&setup, &server, Some(&cert), b"http/1.1").await;
    tls.write_all(
        b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 29\r\nConnection: close\r\n\r\ngrant_type",
    )
    .await
    .unwrap();
    tls.flush().await.unwrap();
    let started = std::time::Instant::now();
    server
        .client(&cert)
        .await
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap();

    // Then it is answered 408 with the OAuth2 error body, after about body_timeout.
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .expect("the server answers a stalled body")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    assert!(
        response.contains("\"error\":\"invalid_request\""),
        "{response}"
    );
    assert!(response.contains("server.body_timeout"), "{response}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_body_that_never_arrives_is_refused_deadline_exceeded() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml = "body_timeout = \"1s\"\n".into();
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);
    let client = h2_over(connect(&setup, &server, Some(&cert), b"h2").await).await;
    let request = http::Request::post("https://localhost/tokenmint.v1.TokenService/IssueToken")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = client
        .ready()
        .await
        .unwrap()
        .send_request(request, false)
        .unwrap();
    body.send_data(axum::body::Bytes::from_static(&[0, 0, 0, 0, 9]), false)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(
        response.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"4"[..]),
        "DEADLINE_EXCEEDED: {response:?}"
    );
    drop(body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_answered_within_request_timeout_is_refused_unavailable() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml = "body_timeout = \"1s\"\nrequest_timeout = \"1s\"\n".into();
    let store = Arc::new(FlakyStore::open(&setup).await);
    let server = setup.start_with_store(store.clone()).await;
    let cert = setup.pki.client_uri(DEMO_URI);
    let held = HeldCommit::start(&server, &store, &cert).await;
    let status = held.answer_while_held().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("request_timeout"), "{status:?}");
    server.stop().await;
}

/// Fetches the key set over `tls` with HTTP/2: its status, or an error if the server closed
/// the connection first.
async fn jwks_over(tls: TlsStream) -> Result<http::StatusCode, h2::Error> {
    let (client, connection) = h2::client::handshake(tls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get("https://localhost/.well-known/jwks.json")
        .body(())
        .unwrap();
    let (response, _) = client.ready().await?.send_request(request, true)?;
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .map_err(|_| h2::Error::from(h2::Reason::CANCEL))??;
    Ok(response.status())
}

/// An HTTP/2 connection without a certificate from `source`, kept open by its driver task.
async fn open_h2_from(
    source: &str,
    setup: &Setup,
    server: &TestServer,
) -> (
    h2::client::SendRequest<axum::body::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = connect_from(source, setup, server, None, b"h2").await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    (client, tokio::spawn(connection))
}

/// Retries `attempt` until it succeeds, within 10 s.
async fn served_again<F, Fut>(mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !attempt().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_certificate_are_capped_in_all_and_per_address() {
    let mut setup = Setup::new(&demo_client());
    // 32 in all, so 2 per address.
    setup.server_toml = "max_connections_without_certificate = 32\n".into();
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(open_h2_from("127.0.0.2", &setup, &server).await);
    }
    // A third from the same address is closed; from another address, or with a certificate,
    // one is served.
    let third = connect_from("127.0.0.2", &setup, &server, None, b"h2").await;
    assert!(
        jwks_over(third).await.is_err(),
        "a third connection from one address was served"
    );
    let elsewhere = connect_from("127.0.0.3", &setup, &server, None, b"h2").await;
    assert_eq!(jwks_over(elsewhere).await.unwrap(), http::StatusCode::OK);
    let certified = connect_from("127.0.0.2", &setup, &server, Some(&cert), b"h2").await;
    assert_eq!(jwks_over(certified).await.unwrap(), http::StatusCode::OK);
    // 32 in all: fill the rest from 15 more addresses, and the 33rd is closed.
    for i in 4..19 {
        for _ in 0..2 {
            open.push(open_h2_from(&format!("127.0.0.{i}"), &setup, &server).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let over = connect_from("127.0.0.30", &setup, &server, None, b"h2").await;
    assert!(
        jwks_over(over).await.is_err(),
        "a 33rd connection was served"
    );
    // Once one closes, another is taken (once the server has seen it close).
    drop(open.pop());
    served_again(|| async {
        let tls = connect_from("127.0.0.30", &setup, &server, None, b"h2").await;
        jwks_over(tls).await.is_ok()
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_without_a_certificate_is_closed_and_gives_its_place_back() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml =
        "max_connections_without_certificate = 16\nidle_timeout_without_certificate = \"1s\"\n"
            .into();
    let server = setup.start().await;
    // One address's only place, held by a connection that sends no request at all.
    let (_idle, idle_connection) = open_h2_from("127.0.0.2", &setup, &server).await;
    let refused = connect_from("127.0.0.2", &setup, &server, None, b"h2").await;
    assert!(jwks_over(refused).await.is_err());
    // The server closes it once idle, and the address is served again.
    let closed = tokio::time::timeout(Duration::from_secs(10), idle_connection).await;
    assert!(closed.is_ok(), "the idle connection was never closed");
    served_again(|| async {
        let tls = connect_from("127.0.0.2", &setup, &server, None, b"h2").await;
        jwks_over(tls).await.is_ok()
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_certificate_that_holds_a_stream_is_not_idle() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml = "idle_timeout_without_certificate = \"1s\"\n".into();
    let server = setup.start().await;
    let mut keys =
        tokenmint::grpc::proto::key_service_client::KeyServiceClient::new(server.public_channel());
    let mut stream = keys
        .watch_jwks(tokenmint::grpc::proto::WatchJwksRequest::default())
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    // Well past the idle timeout, the stream is still open.
    let quiet = tokio::time::timeout(Duration::from_secs(3), stream.message()).await;
    assert!(quiet.is_err(), "the stream ended: {quiet:?}");
    server.stop().await;
}

/// Sends one HTTP/1.1 GET with a header of `header_bytes` bytes; the status line.
async fn get_with_header(setup: &Setup, server: &TestServer, header_bytes: usize) -> String {
    let mut tls = connect(setup, server, None, b"http/1.1").await;
    let request = format!(
        "GET /.well-known/jwks.json HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(header_bytes)
    );
    // The server may answer and close before it has read everything: ignore a write error.
    let _ = tls.write_all(request.as_bytes()).await;
    let _ = tls.flush().await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_headers_over_the_header_limit_get_431() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    assert!(
        get_with_header(&setup, &server, 4 * 1024)
            .await
            .contains(" 200 ")
    );
    for size in [20 * 1024, 500 * 1000] {
        let line = get_with_header(&setup, &server, size).await;
        assert!(line.starts_with("HTTP/1.1 431 "), "{size} bytes: {line:?}");
    }
    server.stop().await;
}

/// A TCP connection to the server from `source` (an address in 127.0.0.0/8).
async fn tcp_from(source: &str, server: &TestServer) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server.addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_cannot_take_every_handshake_slot() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml =
        "max_handshakes = 64\nmax_handshakes_per_address = 8\nhandshake_timeout = \"20s\"\n".into();
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);
    // The attack, bounded: 200 TCP connections from 127.0.0.2 that never start their
    // handshake (before the fix, 64 of them held every slot and the rest were re-opened).
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tcp_from("127.0.0.2", &server).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A client from another address connects and gets tokens, every time on a new connection.
    for _ in 0..20 {
        server
            .client(&cert)
            .await
            .issue_token(IssueTokenRequest::default())
            .await
            .unwrap();
    }
    drop(idle);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_reconnect_storm_from_one_address_waits_its_turn_and_is_served() {
    let mut setup = Setup::new(&demo_client());
    // A small share, so that the storm certainly exceeds it.
    setup.server_toml = "max_handshakes_per_address = 2\n".into();
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);
    let config = Arc::new({
        let mut config = rustls_client(&setup, Some(&cert));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    });
    // 100 clients behind one address reconnect at once, each to fetch the key set.
    let storm = (0..100).map(|_| {
        let config = config.clone();
        let addr = server.addr;
        tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            tls.write_all(
                b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )
            .await?;
            let mut response = Vec::new();
            tls.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
        })
    });
    let mut served = 0;
    for call in storm.collect::<Vec<_>>() {
        let response = call
            .await
            .unwrap()
            .expect("no connection of the storm is refused");
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
        served += 1;
    }
    assert_eq!(served, 100);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_in_flight_pools_are_apart() {
    let mut setup = Setup::new(&demo_client());
    setup.server_toml = "max_in_flight = 1\n".into();
    let store = Arc::new(FlakyStore::open(&setup).await);
    let server = setup.start_with_store(store.clone()).await;
    let cert = setup.pki.client_uri(DEMO_URI);
    // The pool of connections with a certificate is full: a revocation waits in its commit.
    let held = HeldCommit::start(&server, &store, &cert).await;
    let shed = server
        .client(&cert)
        .await
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(shed.code(), tonic::Code::ResourceExhausted, "{shed:?}");
    // A peer without a certificate is served from its own pool meanwhile.
    let keys = server.jwks().await;
    assert!(keys.jwks_json.contains("\"keys\""));
    held.finish().await.unwrap();
    server.stop().await;
}
