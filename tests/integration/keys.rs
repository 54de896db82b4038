//! Signing keys at rest: they survive a restart, need the right KEK, and are bound to their id.

use tokenmint::grpc::proto::IssueTokenRequest;
use tokenmint_core::crypto::Kek;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_issued_before_a_restart_verifies_after_it() {
    let setup = Setup::new(&demo_client());
    let cert = setup.pki.client_uri(DEMO_URI);
    let server = setup.start().await;
    let before = issue(&server, &cert, IssueTokenRequest::default())
        .await
        .unwrap();
    let jwks_before = server.jwks().await;
    server.stop().await;

    let server = setup.start().await;
    let jwks_after = server.jwks().await;
    assert_eq!(
        jwks_after.version, jwks_before.version,
        "same key set after restart"
    );
    verify_with_jwks(&before.access_token, &jwks_after.jwks_json, DEMO_AUDIENCE);
    let after = issue(&server, &cert, IssueTokenRequest::default())
        .await
        .unwrap();
    assert_eq!(after.key_id, before.key_id, "the same current key signs");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_kek_refuses_to_start_and_says_so() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    server.stop().await;
    let original =
        Kek::try_from_base64(&std::fs::read_to_string(setup.path().join("tokenmint.kek")).unwrap())
            .unwrap();

    let wrong = Kek::generate().unwrap();
    std::fs::write(
        setup.path().join("tokenmint.kek"),
        wrong.to_base64().as_bytes(),
    )
    .unwrap();
    let error = setup.prepare().await.unwrap_err().to_string();
    assert!(
        error.contains(original.id()),
        "names the KEK the data was sealed under: {error}"
    );
    assert!(
        error.contains(wrong.id()),
        "names the configured KEK: {error}"
    );

    std::fs::remove_file(setup.path().join("tokenmint.kek")).unwrap();
    let error = setup.prepare().await.unwrap_err().to_string();
    assert!(
        error.contains("tokenmint.kek"),
        "names the missing file: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_ciphertext_does_not_decrypt_under_another_kid() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    server.stop().await;

    // Move the `next` key's sealed private key onto the `current` key's row: same KEK, but the
    // associated data binds each ciphertext to its own kid.
    let db = setup.path().join("tokenmint.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE signing_keys SET nonce = (SELECT nonce FROM signing_keys WHERE state = 'next'), \
         ciphertext = (SELECT ciphertext FROM signing_keys WHERE state = 'next') WHERE state = 'current'",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let error = setup.prepare().await.unwrap_err().to_string();
    assert!(error.contains("did not decrypt"), "{error}");
}
