//! ES256 malleability: (r, n − s) verifies wherever (r, s) does, so a token has a second
//! spelling. tokenmint signs only the low-S form; a key created since the low-S cut-over
//! refuses the high-S twin of a real token at introspection (gRPC and HTTP), and a key created
//! before it still accepts both, so no live token breaks on upgrade.

use serde_json::{Value, json};
use tokenmint::{grpc::proto::IssueTokenRequest, pki::Issued, server};
use tokenmint_core::{
    crypto::Algorithm,
    keys::{KeyRecord, KeyState},
};
use tokenmint_store::{Store as _, sqlite::SqliteStore};

use crate::forgeries::{es256_twin, is_high_s, signature_of};
use crate::support::*;

/// A token and its twin, as (low-S form, high-S form).
fn low_and_high(token: &str) -> (String, String) {
    let other = es256_twin(token);
    let (token_high, other_high) = (
        is_high_s(&signature_of(token)),
        is_high_s(&signature_of(&other)),
    );
    assert_ne!(token_high, other_high, "exactly one of the twins is high-S");
    if token_high {
        (other, token.to_owned())
    } else {
        (token.to_owned(), other)
    }
}

async fn issue_demo(server: &TestServer, demo: &Issued) -> String {
    issue(server, demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token
}

/// `/oauth2/introspect` over HTTPS as `cert`: the JSON answer.
pub(crate) async fn introspect_http(
    setup: &Setup,
    server: &TestServer,
    cert: &Issued,
    token: &str,
) -> Value {
    install_provider();
    let ca = reqwest::Certificate::from_pem(setup.pki.ca.cert_pem().as_bytes()).unwrap();
    let pem = format!("{}{}", cert.cert_pem, cert.key_pem.as_str());
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .finish();
    let response = client
        .post(format!(
            "https://localhost:{}/oauth2/introspect",
            server.addr.port()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.json().await.unwrap()
}

/// Whether `token` is active, asked over gRPC and over HTTP as the resource server; the two
/// must agree, and an inactive answer is the bare one both ways.
async fn active_both_ways(setup: &Setup, server: &TestServer, rs: &Issued, token: &str) -> bool {
    let grpc = introspect(server, rs, token, None).await.unwrap();
    let http = introspect_http(setup, server, rs, token).await;
    assert_eq!(http["active"], json!(grpc.active), "gRPC and HTTP agree");
    if !grpc.active {
        assert_eq!(grpc, Default::default(), "the bare inactive answer");
        assert_eq!(http, json!({"active": false}), "the bare inactive answer");
    }
    grpc.active
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_high_s_twin_of_a_real_token_is_inactive_and_the_low_s_form_active() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);

    // The keys the server created for itself are from after the cut-over.
    let stored = SqliteStore::open(&setup.path().join("tokenmint.db"))
        .await
        .unwrap()
        .keys()
        .await
        .unwrap();
    assert!(!stored.is_empty());
    assert!(stored.iter().all(|k| k.low_s_only), "{stored:?}");

    let token = issue_demo(&server, &demo).await;
    let (low, high) = low_and_high(&token);
    assert!(
        active_both_ways(&setup, &server, &rs, &low).await,
        "the low-S form of a real token is active"
    );
    assert!(
        !active_both_ways(&setup, &server, &rs, &high).await,
        "the high-S twin of a real token from a new key is inactive"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_issued_es256_signature_is_low_s() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);

    // A signer that ignores the rule emits high-S about half the time: 50 tokens all low by
    // chance is a 2⁻⁵⁰ event.
    let mut high = 0;
    for _ in 0..50 {
        let token = issue_demo(&server, &demo).await;
        if is_high_s(&signature_of(&token)) {
            high += 1;
        }
    }
    assert_eq!(high, 0, "{high} of 50 issued signatures were high-S");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_before_the_cut_over_accepts_both_forms() {
    let setup = Setup::new(&standard_clients());
    // The store as an upgraded deployment has it: its keys were created before the cut-over
    // (the migration gives existing rows low_s_only = false).
    let keks = server::load_keks(&setup.config().keys.kek_files, None).unwrap();
    let before = |state| {
        let mut key =
            KeyRecord::generate(Algorithm::Es256, state, keks.newest(), now_seconds()).unwrap();
        key.low_s_only = false;
        key
    };
    let keys = [before(KeyState::Current), before(KeyState::Next)];
    let store = SqliteStore::open(&setup.path().join("tokenmint.db"))
        .await
        .unwrap();
    assert!(store.create_initial_keys(&keys).await.unwrap());
    drop(store);

    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let token = issue_demo(&server, &demo).await;
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
        Some(keys[0].kid.as_str()),
        "signed by the key from before the cut-over"
    );
    let (low, high) = low_and_high(&token);
    assert_eq!(low, token, "the signer is low-S whatever the key's age");
    assert!(
        active_both_ways(&setup, &server, &rs, &low).await,
        "the low-S form is active"
    );
    assert!(
        active_both_ways(&setup, &server, &rs, &high).await,
        "the high-S form stays active under a key from before the cut-over"
    );
    server.stop().await;
}

fn now_seconds() -> tokenmint_core::clock::UnixTime {
    use tokenmint_core::clock::Clock as _;
    tokenmint_core::clock::SystemClock.unix_now()
}
