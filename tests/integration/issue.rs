//! Issuing tokens: the happy path verified as a resource server would, and every refusal.

use std::collections::HashSet;

use sha2::{Digest as _, Sha256};
use tokenmint::grpc::proto::IssueTokenRequest;
use tokenmint_core::crypto::b64url;
use tokenmint_store::{Store as _, sqlite::SqliteStore};
use tonic::Code;

use crate::support::*;

fn thumbprint(der: &[u8]) -> String {
    b64url(&Sha256::digest(der))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_token_verifies_against_the_published_jwks() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);

    let response = issue(&server, &cert, IssueTokenRequest::default())
        .await
        .unwrap();
    assert_eq!(response.token_type, "Bearer");
    assert_eq!(response.expires_in, 300, "the client's default lifetime");
    assert_eq!(response.scopes, ["demo:read"]);
    assert_eq!(response.audiences, [DEMO_AUDIENCE]);

    let jwks = server.jwks().await;
    let claims = verify_with_jwks(&response.access_token, &jwks.jwks_json, DEMO_AUDIENCE);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "demo");
    assert_eq!(claims["client_id"], "demo");
    assert_eq!(claims["aud"], DEMO_AUDIENCE);
    assert_eq!(claims["scope"], "demo:read");
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint(&cert.cert_der));
    let (iat, nbf, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(nbf, iat);
    assert_eq!(exp - iat, response.expires_in);
    let jti = claims["jti"].as_str().unwrap();
    assert!(
        tokenmint_core::crypto::b64url_decode(jti).unwrap().len() >= 16,
        "jti has ≥ 128 bits"
    );
    let header = jsonwebtoken::decode_header(&response.access_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(response.key_id.as_str()));

    // Distinct tokens get distinct ids.
    let again = issue(&server, &cert, IssueTokenRequest::default())
        .await
        .unwrap();
    let again_claims = verify_with_jwks(&again.access_token, &jwks.jwks_json, DEMO_AUDIENCE);
    assert_ne!(again_claims["jti"], claims["jti"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_by_configuration() {
    let mut setup = Setup::new(&demo_client());
    setup.extra_toml = "algorithm = \"EdDSA\"\n".into();
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);
    let response = issue(&server, &cert, IssueTokenRequest::default())
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&response.access_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let claims = verify_with_jwks(
        &response.access_token,
        &server.jwks().await.jwks_json,
        DEMO_AUDIENCE,
    );
    assert_eq!(claims["sub"], "demo");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_scopes_audiences_and_lifetime_are_granted_within_policy() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);

    let response = issue(
        &server,
        &cert,
        IssueTokenRequest {
            scopes: vec!["demo:write".into(), "demo:read".into(), "demo:write".into()],
            audiences: vec!["https://other.example".into(), DEMO_AUDIENCE.into()],
            lifetime: Some(prost_types::Duration {
                seconds: 120,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(response.scopes, ["demo:write", "demo:read"]);
    assert_eq!(response.expires_in, 120);
    let claims = verify_with_jwks(
        &response.access_token,
        &server.jwks().await.jwks_json,
        DEMO_AUDIENCE,
    );
    assert_eq!(claims["scope"], "demo:write demo:read");
    let aud: HashSet<&str> = claims["aud"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(aud, HashSet::from(["https://other.example", DEMO_AUDIENCE]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );

    // Above the client's maximum (10m): clamped, and expires_in says what was granted.
    let clamped = issue(
        &server,
        &cert,
        IssueTokenRequest {
            lifetime: Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(clamped.expires_in, 600);
    let claims = verify_with_jwks(
        &clamped.access_token,
        &server.jwks().await.jwks_json,
        DEMO_AUDIENCE,
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusals_carry_their_oauth_error() {
    let setup = Setup::new(&format!(
        "{}\n{}",
        demo_client(),
        r#"
[[clients]]
id = "no-default-audience"
san_uri = "spiffe://tokenmint.test/nda"
scopes = ["a"]
audiences = ["https://x.example", "https://y.example"]
"#
    ));
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);

    let scope = issue(
        &server,
        &demo,
        IssueTokenRequest {
            scopes: vec!["admin:all".into()],
            ..Default::default()
        },
    )
    .await;
    assert_refused(scope, Code::InvalidArgument, "invalid_scope");

    let malformed_scope = issue(
        &server,
        &demo,
        IssueTokenRequest {
            scopes: vec!["has space".into()],
            ..Default::default()
        },
    )
    .await;
    assert_refused(malformed_scope, Code::InvalidArgument, "invalid_scope");

    let audience = issue(
        &server,
        &demo,
        IssueTokenRequest {
            audiences: vec!["https://evil.example".into()],
            ..Default::default()
        },
    )
    .await;
    assert_refused(audience, Code::InvalidArgument, "invalid_target");

    let nda = setup.pki.client_uri("spiffe://tokenmint.test/nda");
    let no_audience = issue(&server, &nda, IssueTokenRequest::default()).await;
    assert_refused(no_audience, Code::InvalidArgument, "invalid_target");
    // Naming an allowed audience works for the same client.
    issue(
        &server,
        &nda,
        IssueTokenRequest {
            audiences: vec!["https://y.example".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let zero = issue(
        &server,
        &demo,
        IssueTokenRequest {
            lifetime: Some(prost_types::Duration {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_refused(zero, Code::InvalidArgument, "invalid_request");
    let negative = issue(
        &server,
        &demo,
        IssueTokenRequest {
            lifetime: Some(prost_types::Duration {
                seconds: -60,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_refused(negative, Code::InvalidArgument, "invalid_request");

    let mismatch = issue(
        &server,
        &demo,
        IssueTokenRequest {
            client_id: "no-default-audience".into(),
            ..Default::default()
        },
    )
    .await;
    assert_refused(mismatch, Code::Unauthenticated, "invalid_client");
    let unknown_id = issue(
        &server,
        &demo,
        IssueTokenRequest {
            client_id: "nobody".into(),
            ..Default::default()
        },
    )
    .await;
    assert_refused(unknown_id, Code::Unauthenticated, "invalid_client");
    // The right client_id is accepted.
    issue(
        &server,
        &demo,
        IssueTokenRequest {
            client_id: "demo".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_authentication_refusals() {
    let setup = Setup::new(&format!(
        "{}\n{}",
        demo_client(),
        r#"
[[clients]]
id = "off"
san_uri = "spiffe://tokenmint.test/off"
audiences = ["https://x.example"]
enabled = false

[[clients]]
id = "reader"
san_uri = "spiffe://tokenmint.test/reader"
audiences = ["https://x.example"]
permissions = ["introspect"]
"#
    ));
    let server = setup.start().await;

    // No certificate at all: the TLS handshake succeeds, the RPC does not.
    let anonymous = server
        .anonymous_client()
        .await
        .issue_token(IssueTokenRequest::default())
        .await;
    assert_refused(
        anonymous.map(tonic::Response::into_inner),
        Code::Unauthenticated,
        "invalid_client",
    );

    let unregistered = setup.pki.client_uri("spiffe://tokenmint.test/stranger");
    assert_refused(
        issue(&server, &unregistered, IssueTokenRequest::default()).await,
        Code::Unauthenticated,
        "invalid_client",
    );

    let disabled = setup.pki.client_uri("spiffe://tokenmint.test/off");
    assert_refused(
        issue(&server, &disabled, IssueTokenRequest::default()).await,
        Code::Unauthenticated,
        "invalid_client",
    );

    let no_issue = setup.pki.client_uri("spiffe://tokenmint.test/reader");
    assert_refused(
        issue(&server, &no_issue, IssueTokenRequest::default()).await,
        Code::PermissionDenied,
        "unauthorized_client",
    );

    // A secret sent by a client that has none is refused rather than ignored.
    let demo = setup.pki.client_uri(DEMO_URI);
    let stray_secret = issue(
        &server,
        &demo,
        IssueTokenRequest {
            client_secret: "x".into(),
            ..Default::default()
        },
    )
    .await;
    assert_refused(stray_secret, Code::Unauthenticated, "invalid_client");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_secret_needs_the_right_one() {
    let setup = Setup::new(&demo_client());
    // Register the client the way `tokenmint client add --with-secret` does.
    let config = setup.config();
    let keks = tokenmint::server::load_keks(&config.keys.kek_files, None).unwrap();
    let store = tokenmint::server::open_store(&config).await.unwrap();
    let hasher = tokenmint::server::load_pepper(store.as_ref(), &keks)
        .await
        .unwrap();
    let secret = tokenmint_core::crypto::generate_client_secret().unwrap();
    let mut client = config.clients[0].clone();
    client.id = tokenmint_core::client::ClientId::try_new("secretive").unwrap();
    client.matcher = tokenmint_core::identity::CertificateMatcher::try_san_uri(
        "spiffe://tokenmint.test/secretive",
    )
    .unwrap();
    client.secret_hash = Some(hasher.hash(&secret));
    store
        .insert_client(
            &client,
            tokenmint_core::clock::UnixTime::EPOCH,
            &test_audit(),
        )
        .await
        .unwrap();
    drop(store);

    let server = setup.start().await;
    let cert = setup.pki.client_uri("spiffe://tokenmint.test/secretive");
    let missing = issue(&server, &cert, IssueTokenRequest::default()).await;
    assert_refused(missing, Code::Unauthenticated, "invalid_client");
    let wrong = issue(
        &server,
        &cert,
        IssueTokenRequest {
            client_secret: format!("{}x", secret.as_str()),
            ..Default::default()
        },
    )
    .await;
    assert_refused(wrong, Code::Unauthenticated, "invalid_client");
    let right = issue(
        &server,
        &cert,
        IssueTokenRequest {
            client_secret: secret.to_string(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        verify_with_jwks(
            &right.access_token,
            &server.jwks().await.jwks_json,
            DEMO_AUDIENCE
        )["sub"],
        "secretive"
    );

    // The stored form is an HMAC, never the secret.
    let stored = SqliteStore::open(&setup.path().join("tokenmint.db"))
        .await
        .unwrap();
    let clients = stored.clients().await.unwrap();
    let hash = clients
        .iter()
        .find(|c| c.id.as_str() == "secretive")
        .unwrap()
        .secret_hash
        .clone()
        .unwrap();
    assert_ne!(hash, secret.as_bytes());
    assert_eq!(hash.len(), 32);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_64_kib_are_refused_out_of_range() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let cert = setup.pki.client_uri(DEMO_URI);
    let big = IssueTokenRequest {
        scopes: vec!["s".repeat(65 * 1024)],
        ..Default::default()
    };
    let status = issue(&server, &cert, big).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // The connection and server are fine afterwards.
    issue(&server, &cert, IssueTokenRequest::default())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_second_lifetimes_and_too_many_values_are_invalid_requests() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);

    // Below JWT's one-second resolution.
    let half_second = issue(
        &server,
        &demo,
        IssueTokenRequest {
            lifetime: Some(prost_types::Duration {
                seconds: 0,
                nanos: 500_000_000,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_refused(half_second, Code::InvalidArgument, "invalid_request");

    // At most 64 scopes or audiences per request, whatever they are.
    let many_scopes = issue(
        &server,
        &demo,
        IssueTokenRequest {
            scopes: vec!["demo:read".into(); 65],
            ..Default::default()
        },
    )
    .await;
    assert_refused(many_scopes, Code::InvalidArgument, "invalid_request");
    let many_audiences = issue(
        &server,
        &demo,
        IssueTokenRequest {
            audiences: vec![DEMO_AUDIENCE.into(); 65],
            ..Default::default()
        },
    )
    .await;
    assert_refused(many_audiences, Code::InvalidArgument, "invalid_request");
    // 64 is still fine.
    issue(
        &server,
        &demo,
        IssueTokenRequest {
            scopes: vec!["demo:read".into(); 64],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    server.stop().await;
}
