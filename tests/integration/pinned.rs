//! Self-signed clients (`self_signed_tls_client_auth`, SPEC §2): certificates made with
//! `openssl req -x509` (so CA:TRUE; the same certificate from rcgen where openssl is not
//! installed), accepted by their pinned thumbprint only, matched only by their pin (never by
//! the names they carry), and cut off when their pin goes.

use std::path::Path;

use tokenmint::{
    grpc::proto::{
        ClientSpec, IssueTokenRequest, ListClientsRequest, RegisterClientRequest,
        UpdateClientRequest,
    },
    pki::Issued,
};
use tonic::Code;

use crate::support::*;

/// The claims of a token issued to `cert`, checked against the key set.
async fn issued_claims(server: &TestServer, cert: &Issued) -> serde_json::Value {
    let token = issue(server, cert, IssueTokenRequest::default())
        .await
        .unwrap();
    verify_with_jwks(
        &token.access_token,
        &server.jwks().await.jwks_json,
        DEMO_AUDIENCE,
    )
}

fn pinned_spec(id: &str, pins: &[String]) -> ClientSpec {
    ClientSpec {
        client_id: id.into(),
        pinned_sha256: pins.to_vec(),
        audiences: vec![DEMO_AUDIENCE.into()],
        scopes: vec!["orders:read".into()],
        ..Default::default()
    }
}

/// Registers `spec` as the admin `admin`, without a secret.
pub(crate) async fn register(
    server: &TestServer,
    admin: &Issued,
    spec: ClientSpec,
) -> Result<(), tonic::Status> {
    server
        .admin(admin)
        .register_client(RegisterClientRequest {
            client: Some(spec),
            with_secret: false,
        })
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_self_signed_client_gets_a_token_and_another_certificate_for_its_key_does_not() {
    let setup = Setup::new(&standard_clients());
    let dir = tempfile::tempdir().unwrap();
    let own = self_signed(dir.path(), "selfie", "selfie.key", None);
    let same_key = self_signed(dir.path(), "selfie-again", "selfie.key", None);
    // The premise: a CA certificate, which no chain check would take as a leaf.
    assert!(
        is_ca_certificate(&own),
        "openssl req -x509 makes CA:TRUE certificates"
    );

    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    // Unregistered, it is neither pinned nor CA-issued: the handshake fails.
    assert_tls_refused(issue(&server, &own, IssueTokenRequest::default()).await);

    // The pin as openssl prints it: hex with colons.
    let fingerprint = sha256_fingerprint_hex(dir.path(), "selfie");
    register(&server, &admin, pinned_spec("selfie", &[fingerprint]))
        .await
        .unwrap();

    let claims = issued_claims(&server, &own).await;
    assert_eq!(claims["client_id"], "selfie");
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint_of(&own));

    // The same key in another certificate is not the pinned certificate.
    assert_tls_refused(issue(&server, &same_key, IssueTokenRequest::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_certificate_carrying_the_admin_san_gets_no_admin_rights_before_or_after_its_pin_goes()
 {
    let setup = Setup::new(&standard_clients());
    let dir = tempfile::tempdir().unwrap();
    let imposter = self_signed(dir.path(), "imposter", "imposter.key", Some(ADMIN_URI));
    let replacement = self_signed(dir.path(), "replacement", "replacement.key", None);
    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    register(
        &server,
        &admin,
        pinned_spec("imposter", &[thumbprint_of(&imposter)]),
    )
    .await
    .unwrap();

    // Pinned: it is the pinned client and nobody else, whatever SAN it carries.
    let refused = server
        .admin(&imposter)
        .list_clients(ListClientsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let claims = issued_claims(&server, &imposter).await;
    assert_eq!(claims["client_id"], "imposter");

    // Its pin replaced: the certificate is no longer accepted at all, and certainly not as
    // the admin its SAN names.
    server
        .admin(&admin)
        .update_client(UpdateClientRequest {
            client: Some(pinned_spec("imposter", &[thumbprint_of(&replacement)])),
        })
        .await
        .unwrap();
    assert_tls_refused(
        server
            .admin(&imposter)
            .list_clients(ListClientsRequest::default())
            .await,
    );
    assert_tls_refused(issue(&server, &imposter, IssueTokenRequest::default()).await);
    // The new pin works at once.
    let token = issue(&server, &replacement, IssueTokenRequest::default())
        .await
        .unwrap();
    assert!(!token.access_token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thumbprint_is_pinned_by_one_client_only_and_bad_pins_are_refused() {
    let setup = Setup::new(&standard_clients());
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path(), "shared", "shared.key", None);
    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    let pin = thumbprint_of(&cert);
    register(
        &server,
        &admin,
        pinned_spec("first", std::slice::from_ref(&pin)),
    )
    .await
    .unwrap();

    // The same thumbprint, spelt as hex this time, for another client.
    let hex = sha256_fingerprint_hex(dir.path(), "shared");
    let taken = register(&server, &admin, pinned_spec("second", &[hex]))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    // Nor may another client take it over by an update.
    register(
        &server,
        &admin,
        pinned_spec("second", &[openssl_fingerprint_of_new(dir.path())]),
    )
    .await
    .unwrap();
    let taken = server
        .admin(&admin)
        .update_client(UpdateClientRequest {
            client: Some(pinned_spec("second", std::slice::from_ref(&pin))),
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");

    for (pins, why) in [
        (vec!["not-a-thumbprint".to_owned()], "not a digest"),
        (vec![], "no pin and no other matcher"),
        (vec!["00".repeat(32); 9], "more than 8 pins"),
    ] {
        let refused = register(&server, &admin, pinned_spec("third", &pins))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{why}: {refused:?}");
    }
    // A pin and a name at once is refused: one matcher per client.
    let mut both = pinned_spec("third", &[pin]);
    both.san_uri = "spiffe://tokenmint.test/third".into();
    let refused = register(&server, &admin, both).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // The first client still gets its tokens as itself.
    let claims = issued_claims(&server, &cert).await;
    assert_eq!(claims["client_id"], "first");
}

/// A fresh self-signed certificate's hex fingerprint.
fn openssl_fingerprint_of_new(dir: &Path) -> String {
    self_signed(dir, "fresh", "fresh.key", None);
    sha256_fingerprint_hex(dir, "fresh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_client_from_the_config_file_is_served_and_a_ca_issued_certificate_never_matches_a_pin()
 {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path(), "configured", "configured.key", None);
    let clients = format!(
        r#"{}
[[clients]]
id = "configured"
pinned_sha256 = ["{}"]
audiences = ["{DEMO_AUDIENCE}"]
"#,
        standard_clients(),
        thumbprint_of(&cert)
    );
    let setup = Setup::new(&clients);
    let server = setup.start().await;
    let claims = issued_claims(&server, &cert).await;
    assert_eq!(claims["client_id"], "configured");

    // A CA-issued client naming the pinned client gets invalid_client: its certificate is
    // not the pinned one.
    let demo = setup.pki.client_uri(DEMO_URI);
    assert_refused(
        issue(
            &server,
            &demo,
            IssueTokenRequest {
                client_id: "configured".into(),
                ..Default::default()
            },
        )
        .await,
        Code::Unauthenticated,
        "invalid_client",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_of_a_certificate_whose_pin_was_removed_is_not_authenticated() {
    let setup = Setup::new(&standard_clients());
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path(), "resumer", "resumer.key", Some(ADMIN_URI));
    let other = self_signed(dir.path(), "other-pin", "other-pin.key", None);
    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    register(
        &server,
        &admin,
        pinned_spec("resumer", &[thumbprint_of(&cert)]),
    )
    .await
    .unwrap();

    let mut config = rustls_client(&setup, Some(&cert));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::store(std::sync::Arc::new(
        rustls::client::ClientSessionMemoryCache::new(8),
    ));
    let config = std::sync::Arc::new(config);
    let (status, kind) = crate::tls::token_over_fresh_connection(&server, &config).await;
    assert_eq!(kind, rustls::HandshakeKind::Full);
    assert!(status.contains(" 200 "), "{status}");

    // The pin goes; the client resumes its session, which skips certificate verification.
    // Classification checks again: the peer is unauthenticated, not the admin its SAN names.
    server
        .admin(&admin)
        .update_client(UpdateClientRequest {
            client: Some(pinned_spec("resumer", &[thumbprint_of(&other)])),
        })
        .await
        .unwrap();
    let (status, kind) = crate::tls::token_over_fresh_connection(&server, &config).await;
    assert_eq!(kind, rustls::HandshakeKind::Resumed);
    assert!(status.contains(" 401 "), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_registered_or_removed_on_one_replica_takes_effect_on_another() {
    let Some(url) = crate::store_contract::postgres_url() else {
        println!("skipped: TOKENMINT_TEST_POSTGRES_URL is not set");
        return;
    };
    let database = crate::store_contract::TestDatabase::create(&url).await;
    let mut setup = Setup::new(&standard_clients());
    setup.store_url = database.url.clone();
    let a = setup.start().await;
    let b = setup.start().await;
    let dir = tempfile::tempdir().unwrap();
    let device = self_signed(dir.path(), "device", "device.key", None);
    let next = self_signed(dir.path(), "device-next", "device-next.key", None);
    let admin = setup.pki.client_uri(ADMIN_URI);
    let bound = std::time::Duration::from_secs(10);

    // Registered on A: B accepts the certificate within the catch-up interval.
    register(&a, &admin, pinned_spec("device", &[thumbprint_of(&device)]))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + bound;
    loop {
        match issue(&b, &device, IssueTokenRequest::default()).await {
            Ok(token) => {
                assert!(!token.access_token.is_empty());
                break;
            }
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "never accepted on B: {e:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Its pin replaced on A: B refuses the old certificate and takes the new one.
    a.admin(&admin)
        .update_client(UpdateClientRequest {
            client: Some(pinned_spec("device", &[thumbprint_of(&next)])),
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + bound;
    loop {
        let result = issue(&b, &device, IssueTokenRequest::default()).await;
        if result.is_err() {
            assert_tls_refused(result);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the removed pin still works on B"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let claims = issued_claims(&b, &next).await;
    assert_eq!(claims["client_id"], "device");
    a.stop().await;
    b.stop().await;
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_pinned_certificate_fails_the_handshake() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    // Self-signed like the others, but its validity ended yesterday.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(3);
    params.not_after = now - time::Duration::days(1);
    let cert = params.self_signed(&key).unwrap();
    let expired = Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem().into(),
    };
    register(
        &server,
        &admin,
        pinned_spec("expired", &[thumbprint_of(&expired)]),
    )
    .await
    .unwrap();
    assert_tls_refused(issue(&server, &expired, IssueTokenRequest::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_pin_refuses_the_next_call_on_a_connection_already_open() {
    let setup = Setup::new(&standard_clients());
    let dir = tempfile::tempdir().unwrap();
    let device = self_signed(dir.path(), "device", "device.key", None);
    let next = self_signed(dir.path(), "next", "next.key", None);
    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    register(
        &server,
        &admin,
        pinned_spec("device", &[thumbprint_of(&device)]),
    )
    .await
    .unwrap();
    // One client, one connection for both calls.
    let mut open = server.client(&device).await;
    open.issue_token(IssueTokenRequest::default())
        .await
        .unwrap();
    server
        .admin(&admin)
        .update_client(UpdateClientRequest {
            client: Some(pinned_spec("device", &[thumbprint_of(&next)])),
        })
        .await
        .unwrap();
    assert_refused(
        open.issue_token(IssueTokenRequest::default())
            .await
            .map(tonic::Response::into_inner),
        Code::Unauthenticated,
        "invalid_client",
    );
}
