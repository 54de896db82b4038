//! ES256 malleability: (r, n − s) verifies wherever (r, s) does, so a token has a second
//! spelling. tokenmint signs only the low-S form; a key created since the low-S cut-over
//! refuses the high-S twin of a real token at introspection (gRPC and HTTP), and a key created
//! before it still accepts both, so no live token breaks on upgrade.

use serde_json::{Value, json};
use tokenmint::{grpc::proto::IssueTokenRequest, pki::Issued, server};
use tokenmint_core::{
    crypto::{Algorithm, b64url, b64url_decode},
    keys::{KeyRecord, KeyState},
};
use tokenmint_store::{Store as _, sqlite::SqliteStore};

use crate::support::*;

/// The order n of the P-256 group, big-endian.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// ⌊n / 2⌋, big-endian: the largest low s.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// The signature bytes of a compact JWS.
fn signature_of(token: &str) -> Vec<u8> {
    let (_, signature) = token.rsplit_once('.').unwrap();
    let signature = b64url_decode(signature).unwrap();
    assert_eq!(signature.len(), 64, "ES256 signs r ‖ s, 32 bytes each");
    signature
}

/// Whether an ES256 signature's s is above n/2 (equal-length big-endian bytes compare as the
/// numbers do).
fn is_high_s(signature: &[u8]) -> bool {
    signature[32..] > HALF_ORDER[..]
}

/// The same token with (r, n − s): the other valid signature over the same bytes. Computed
/// here, independently of tokenmint's own arithmetic.
fn twin(token: &str) -> String {
    let signature = signature_of(token);
    let mut out = signature.clone();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut digit = i16::from(ORDER[i]) - i16::from(signature[32 + i]) - borrow;
        borrow = i16::from(digit < 0);
        if digit < 0 {
            digit += 256;
        }
        out[32 + i] = u8::try_from(digit).unwrap();
    }
    assert_eq!(borrow, 0, "0 < s < n");
    let (input, _) = token.rsplit_once('.').unwrap();
    format!("{input}.{}", b64url(&out))
}

/// A token and its twin, as (low-S form, high-S form).
fn low_and_high(token: &str) -> (String, String) {
    let other = twin(token);
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
async fn introspect_http(setup: &Setup, server: &TestServer, cert: &Issued, token: &str) -> Value {
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
