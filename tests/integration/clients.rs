//! Where clients come from: the config file (never undoing later changes) and the store.

use std::time::{Duration, Instant};

use tokenmint::grpc::proto::IssueTokenRequest;
use tokenmint_store::{Store as _, sqlite::SqliteStore};
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_clients_are_inserted_when_absent_and_overwritten_only_with_sync() {
    let mut setup = Setup::new(&demo_client());
    let server = setup.start().await;
    server.stop().await;

    // The file now allows only a different scope; the stored client is kept as it was.
    setup.clients_toml = demo_client().replace(
        r#"scopes = ["demo:read", "demo:write"]
default_scopes = ["demo:read"]"#,
        r#"scopes = ["demo:admin"]
default_scopes = ["demo:admin"]"#,
    );
    assert!(setup.clients_toml.contains("demo:admin"));
    let cert = setup.pki.client_uri(DEMO_URI);
    let server = setup.start().await;
    let kept = issue(&server, &cert, IssueTokenRequest::default())
        .await
        .unwrap();
    assert_eq!(
        kept.scopes,
        ["demo:read"],
        "a restart does not undo the stored client"
    );
    server.stop().await;

    let server = setup.start_with(true).await;
    let synced = issue(&server, &cert, IssueTokenRequest::default())
        .await
        .unwrap();
    assert_eq!(
        synced.scopes,
        ["demo:admin"],
        "--sync-clients overwrites from the file"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_added_to_the_store_is_served_without_a_restart() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    let cert = setup.pki.client_uri("spiffe://tokenmint.test/late");
    assert_refused(
        issue(&server, &cert, IssueTokenRequest::default()).await,
        Code::Unauthenticated,
        "invalid_client",
    );

    // What `tokenmint client add` does: write the store directly.
    let config = setup.config();
    let mut client = config.clients[0].clone();
    client.id = tokenmint_core::client::ClientId::try_new("late").unwrap();
    client.matcher =
        tokenmint_core::identity::CertificateMatcher::try_san_uri("spiffe://tokenmint.test/late")
            .unwrap();
    let store = SqliteStore::open(&setup.path().join("tokenmint.db"))
        .await
        .unwrap();
    store
        .insert_client(
            &client,
            tokenmint_core::clock::UnixTime::EPOCH,
            &test_audit(),
        )
        .await
        .unwrap();

    // Picked up within store.catch_up_interval (1 s by default).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match issue(&server, &cert, IssueTokenRequest::default()).await {
            Ok(response) => {
                let claims = verify_with_jwks(
                    &response.access_token,
                    &server.jwks().await.jwks_json,
                    DEMO_AUDIENCE,
                );
                assert_eq!(claims["sub"], "late");
                break;
            }
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unauthenticated);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("the new client was not picked up: {status:?}"),
        }
    }
    server.stop().await;
}
