//! Certificates refused at the TLS layer: the handshake fails, no handler runs.

use std::time::Duration;

use tokenmint::{
    grpc::proto::{GetJwksRequest, IssueTokenRequest},
    pki::{CertificateAuthority, LeafSpec, Usage},
};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_an_untrusted_ca_fails_the_handshake() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let rogue_ca = CertificateAuthority::generate("rogue CA").unwrap();
    let rogue = rogue_ca
        .issue(&LeafSpec::client_uri(
            "demo",
            DEMO_URI,
            Duration::from_secs(3600),
        ))
        .unwrap();
    assert_tls_refused(issue(&server, &rogue, IssueTokenRequest::default()).await);
    // Control: the same identity from the trusted CA is served.
    let trusted = setup.pki.client_uri(DEMO_URI);
    issue(&server, &trusted, IssueTokenRequest::default())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_fails_the_handshake() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let mut spec = LeafSpec::client_uri("demo", DEMO_URI, Duration::from_secs(3600));
    let now = time::OffsetDateTime::now_utc();
    spec.not_before = now - time::Duration::days(10);
    spec.not_after = now - time::Duration::days(1);
    let expired = setup.pki.ca.issue(&spec).unwrap();
    assert_tls_refused(issue(&server, &expired, IssueTokenRequest::default()).await);
    let valid = setup.pki.client_uri(DEMO_URI);
    issue(&server, &valid, IssueTokenRequest::default())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_server_auth_only_fails_the_handshake() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let mut spec = LeafSpec::client_uri("demo", DEMO_URI, Duration::from_secs(3600));
    spec.usages = vec![Usage::Server];
    let server_only = setup.pki.ca.issue(&spec).unwrap();
    assert_tls_refused(issue(&server, &server_only, IssueTokenRequest::default()).await);
    let valid = setup.pki.client_uri(DEMO_URI);
    issue(&server, &valid, IssueTokenRequest::default())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_set_needs_no_client_certificate() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let jwks = server.jwks().await;
    let set: serde_json::Value = serde_json::from_str(&jwks.jwks_json).unwrap();
    let keys = set["keys"].as_array().unwrap();
    assert_eq!(
        keys.len(),
        2,
        "the current key and the next one are published"
    );
    for key in keys {
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert_eq!(key["alg"], "ES256");
        assert_eq!(key["use"], "sig");
        assert!(key.get("d").is_none(), "no private material");
    }
    assert_eq!(jwks.version.len(), 32);
    // A plaintext connection to the TLS port gets nothing (no silent downgrade).
    let plaintext = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))?
            .connect()
            .await?;
        let mut client = tokenmint::grpc::proto::key_service_client::KeyServiceClient::new(channel);
        client.get_jwks(GetJwksRequest::default()).await?;
        anyhow::Ok(())
    };
    let result = tokio::time::timeout(Duration::from_secs(10), plaintext).await;
    assert!(
        matches!(result, Ok(Err(_)) | Err(_)),
        "plaintext must not be served"
    );
    // The same answer twice: the version is stable while the set is.
    assert_eq!(server.jwks().await.version, jwks.version);
    server.stop().await;
}

/// A client session store that counts the TLS 1.3 tickets the server sends.
#[derive(Debug)]
struct CountingTickets {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: std::sync::atomic::AtomicUsize,
}

impl rustls::client::ClientSessionStore for CountingTickets {
    fn set_kx_hint(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        group: rustls::NamedGroup,
    ) {
        self.inner.set_kx_hint(server_name, group);
    }
    fn kx_hint(
        &self,
        server_name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(server_name)
    }
    fn set_tls12_session(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(server_name, value);
    }
    fn tls12_session(
        &self,
        server_name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }
    fn remove_tls12_session(&self, server_name: &rustls::pki_types::ServerName<'static>) {
        self.inner.remove_tls12_session(server_name);
    }
    fn insert_tls13_ticket(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.insert_tls13_ticket(server_name, value);
    }
    fn take_tls13_ticket(
        &self,
        server_name: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}

/// One HTTP/1.1 token request on a fresh TLS connection; returns the status line and whether
/// the session was resumed.
pub(crate) async fn token_over_fresh_connection(
    server: &TestServer,
    config: &std::sync::Arc<rustls::ClientConfig>,
) -> (String, rustls::HandshakeKind) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tls = fresh_connection(server, config.clone()).await;
    let kind = tls.get_ref().1.handshake_kind().unwrap();
    let body = "grant_type=client_credentials";
    let request = format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.lines().next().unwrap_or_default().to_owned();
    (status, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_ticket_per_handshake_and_a_resumed_client_is_still_authenticated() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);
    let mut config = rustls_client(&setup, Some(&cert));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let store = std::sync::Arc::new(CountingTickets {
        inner: rustls::client::ClientSessionMemoryCache::new(8),
        tickets: std::sync::atomic::AtomicUsize::new(0),
    });
    config.resumption = rustls::client::Resumption::store(store.clone());
    let config = std::sync::Arc::new(config);

    let (status, kind) = token_over_fresh_connection(&server, &config).await;
    assert_eq!(kind, rustls::HandshakeKind::Full);
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(store.tickets.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The ticket resumes the next connection, and the server still knows the client by the
    // certificate the resumed session carries.
    let (status, kind) = token_over_fresh_connection(&server, &config).await;
    assert_eq!(kind, rustls::HandshakeKind::Resumed);
    assert!(status.contains(" 200 "), "{status}");
    server.stop().await;
}

/// A new TCP connection to the server and a full TLS handshake (or a resumed one, if `config`
/// holds a ticket) as `localhost`.
async fn fresh_connection(
    server: &TestServer,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap()
}

/// The group a fresh handshake with `config` agrees.
async fn negotiated_group(server: &TestServer, config: rustls::ClientConfig) -> rustls::NamedGroup {
    let tls = fresh_connection(server, std::sync::Arc::new(config)).await;
    let connection = tls.get_ref().1;
    connection.negotiated_key_exchange_group().unwrap().name()
}

/// With aws-lc-rs, the build's own clients (the tests', the bench's, the CLI's) agree the
/// hybrid post-quantum X25519MLKEM768 with the server; with ring, X25519. A client that offers
/// only classical groups still connects, with X25519. The expectation is read from the build's
/// feature, not from the code under test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_exchange_is_hybrid_post_quantum_in_the_aws_lc_build() {
    use rustls::NamedGroup;
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);
    let expected = if cfg!(feature = "aws-lc") {
        NamedGroup::X25519MLKEM768
    } else {
        NamedGroup::X25519
    };
    let ours = rustls_client(&setup, Some(&cert));
    assert_eq!(negotiated_group(&server, ours).await, expected);

    let mut classical = tokenmint::tls::provider().as_ref().clone();
    classical
        .kx_groups
        .retain(|group| group.name() == NamedGroup::X25519);
    let config = rustls_client_with(&setup, Some(&cert), std::sync::Arc::new(classical));
    assert_eq!(negotiated_group(&server, config).await, NamedGroup::X25519);
    server.stop().await;
}
