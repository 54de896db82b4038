//! ES256 malleability: (r, n − s) verifies wherever (r, s) does, so a token has a second
//! spelling. tokenmint signs only the low-S form.

use tokenmint::{crypto::b64url_decode, grpc::proto::IssueTokenRequest, pki::Issued};

use crate::support::*;

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

async fn issue_demo(server: &TestServer, demo: &Issued) -> String {
    issue(server, demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token
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
