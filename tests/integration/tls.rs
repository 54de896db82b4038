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
        let mut client = tokenmint::grpc::proto::key_service_client::KeyServiceClient::connect(
            format!("http://{}", server.addr),
        )
        .await?;
        client.get_jwks(GetJwksRequest {}).await?;
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
