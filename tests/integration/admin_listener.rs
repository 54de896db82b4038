//! The optional admin listener: `AdminService` on its own port with its own client CA, and
//! not on the data-plane listener; its CA reloads with the rest of the TLS material.

use std::time::{Duration, Instant};

use tokenmint::{
    grpc::proto::{
        ClientSpec, IssueTokenRequest, ListClientsRequest, RegisterClientRequest,
        RevokeTokenIdRequest, RevokeTokenRequest,
    },
    pki::{CertificateAuthority, LeafSpec},
};
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_plane_has_its_own_listener_and_client_ca() {
    let mut setup = Setup::new(&standard_clients());
    let admin_ca = CertificateAuthority::generate("tokenmint admin CA").unwrap();
    std::fs::write(setup.path().join("admin-ca.pem"), admin_ca.cert_pem()).unwrap();
    setup.admin_toml = "listen = \"127.0.0.1:0\"\nclient_ca = \"admin-ca.pem\"".into();
    setup.tls_toml = "reload_interval = \"100ms\"".into();
    let server = setup.start().await;
    let hour = Duration::from_secs(3600);
    let plane_admin = admin_ca
        .issue(&LeafSpec::client_uri("admin", ADMIN_URI, hour))
        .unwrap();
    let plane_demo = admin_ca
        .issue(&LeafSpec::client_uri("demo", DEMO_URI, hour))
        .unwrap();
    let data_admin = setup.pki.client_uri(ADMIN_URI);
    let demo = setup.pki.client_uri(DEMO_URI);

    // The admin plane: an admin certificate from the admin CA is served.
    let clients = server
        .admin_plane(&plane_admin)
        .list_clients(ListClientsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clients;
    assert!(clients.iter().any(|c| c.client_id == "demo"));
    // A certificate from the admin CA still needs the admin permission.
    let refused = server
        .admin_plane(&plane_demo)
        .list_clients(ListClientsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // The data-plane CA is not trusted there, even for a certificate naming the admin.
    assert_tls_refused(
        server
            .admin_plane(&data_admin)
            .list_clients(ListClientsRequest::default())
            .await,
    );

    // No pins on the admin plane: a pinned certificate, even one of a client with the admin
    // permission, fails the handshake there (it is served on the data plane).
    let dir = tempfile::tempdir().unwrap();
    let pinned = self_signed(dir.path(), "pinned-admin", "pinned-admin.key", None);
    server
        .admin_plane(&plane_admin)
        .register_client(RegisterClientRequest {
            client: Some(ClientSpec {
                client_id: "pinned-admin".into(),
                pinned_sha256: vec![thumbprint_of(&pinned)],
                audiences: vec![DEMO_AUDIENCE.into()],
                permissions: vec!["issue".into(), "admin".into()],
                ..Default::default()
            }),
            with_secret: false,
        })
        .await
        .unwrap();
    issue(&server, &pinned, IssueTokenRequest::default())
        .await
        .unwrap();
    assert_tls_refused(
        server
            .admin_plane(&pinned)
            .list_clients(ListClientsRequest::default())
            .await,
    );

    // The data plane no longer serves AdminService, and says where it is.
    let refused = server
        .admin(&data_admin)
        .list_clients(ListClientsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("admin listener"), "{refused:?}");
    // …and still serves tokens; the admin CA is not trusted on it.
    let token = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    // There the admin permission counts for nothing: the admin cannot revoke demo's token.
    let refused = server
        .client(&data_admin)
        .await
        .revoke_token(RevokeTokenRequest {
            token: token.clone(),
        })
        .await
        .unwrap_err();
    assert_ne!(refused.code(), Code::Ok, "{refused:?}");
    // The admin plane can (by id).
    let claims = verify_with_jwks(&token, &server.jwks().await.jwks_json, DEMO_AUDIENCE);
    let sequence = server
        .admin_plane(&plane_admin)
        .revoke_token_id(RevokeTokenIdRequest {
            token_id: claims["jti"].as_str().unwrap().to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .sequence;
    assert!(sequence > 0);
    assert_tls_refused(issue(&server, &plane_admin, IssueTokenRequest::default()).await);

    // The admin CA reloads with the rest: replaced by another CA, the old admin certificate
    // is refused on new connections.
    let other_ca = CertificateAuthority::generate("another admin CA").unwrap();
    let replacement = setup.path().join("admin-ca.pem.new");
    std::fs::write(&replacement, other_ca.cert_pem()).unwrap();
    std::fs::rename(&replacement, setup.path().join("admin-ca.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = server
            .admin_plane(&plane_admin)
            .list_clients(ListClientsRequest::default())
            .await;
        if result.is_err() {
            assert_tls_refused(result);
            break;
        }
        assert!(Instant::now() < deadline, "the admin CA was never reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_admin = other_ca
        .issue(&LeafSpec::client_uri("admin", ADMIN_URI, hour))
        .unwrap();
    server
        .admin_plane(&new_admin)
        .list_clients(ListClientsRequest::default())
        .await
        .unwrap();
}
