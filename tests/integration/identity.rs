//! Which certificate is which client: SAN URIs exactly, subject DNs as parsed names.

use tokenmint::{grpc::proto::IssueTokenRequest, pki::DnType};
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_san_uri_that_merely_starts_with_a_registered_one_does_not_match() {
    let setup = Setup::new(&demo_client());
    let server = setup.start().await;
    for uri in [
        format!("{DEMO_URI}-evil"),
        format!("{DEMO_URI}/sub"),
        DEMO_URI.to_uppercase(),
    ] {
        let cert = setup.pki.client_uri(&uri);
        assert_refused(
            issue(&server, &cert, IssueTokenRequest::default()).await,
            Code::Unauthenticated,
            "invalid_client",
        );
    }
    let exact = setup.pki.client_uri(DEMO_URI);
    issue(&server, &exact, IssueTokenRequest::default())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_dn_matches_as_parsed_names() {
    // RFC 4514 order (most specific first); the CN holds an escaped comma.
    let setup = Setup::new(
        r#"
[[clients]]
id = "billing"
subject_dn = "CN=billing\\, west,O=Acme Corp,C=US"
audiences = ["https://ledger.example"]
"#,
    );
    let server = setup.start().await;

    // The certificate's subject in DER order: C, O, CN — with the comma inside the CN value,
    // and different case and spacing, which RFC 5280 §7.1 comparison ignores.
    let matching = setup.pki.client_subject(&[
        (DnType::CountryName, "US"),
        (DnType::OrganizationName, "ACME  corp"),
        (DnType::CommonName, "Billing, West"),
    ]);
    let response = issue(&server, &matching, IssueTokenRequest::default())
        .await
        .unwrap();
    let claims = verify_with_jwks(
        &response.access_token,
        &server.jwks().await.jwks_json,
        "https://ledger.example",
    );
    assert_eq!(claims["sub"], "billing");

    // The comma splitting the name into two RDNs is a different name.
    let split = setup.pki.client_subject(&[
        (DnType::CountryName, "US"),
        (DnType::OrganizationName, "Acme Corp"),
        (DnType::CommonName, "west"),
        (DnType::CommonName, "billing"),
    ]);
    assert_refused(
        issue(&server, &split, IssueTokenRequest::default()).await,
        Code::Unauthenticated,
        "invalid_client",
    );

    // Reordered RDNs are a different name.
    let reordered = setup.pki.client_subject(&[
        (DnType::CommonName, "billing, west"),
        (DnType::OrganizationName, "Acme Corp"),
        (DnType::CountryName, "US"),
    ]);
    assert_refused(
        issue(&server, &reordered, IssueTokenRequest::default()).await,
        Code::Unauthenticated,
        "invalid_client",
    );

    // A CN without the comma is a different name.
    let plain = setup.pki.client_subject(&[
        (DnType::CountryName, "US"),
        (DnType::OrganizationName, "Acme Corp"),
        (DnType::CommonName, "billing west"),
    ]);
    assert_refused(
        issue(&server, &plain, IssueTokenRequest::default()).await,
        Code::Unauthenticated,
        "invalid_client",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_certificate_matchers_are_refused_at_start() {
    let impostor = format!(
        "[[clients]]\nid = \"impostor\"\nsan_uri = \"{DEMO_URI}\"\naudiences = [\"https://x.example\"]\n"
    );
    let setup = Setup::new(&format!("{}\n{impostor}", demo_client()));
    let error = setup.prepare().await.unwrap_err().to_string();
    assert!(error.contains("impostor"), "{error}");
    assert!(error.contains("already claimed"), "{error}");
}
