//! Several algorithms at once (`keys.also`, `keys.audience_algorithms`): each audience's
//! tokens are signed with its algorithm, introspection accepts every one under its own key,
//! an independent implementation (jwt-simple) verifies each against the published keys, and
//! the post-quantum keys stay out of the default key set, published only to verifiers that
//! ask. RSA key generation and ML-DSA need the aws-lc build: the ring build runs ES256 and
//! EdDSA lanes (the configuration test checks that asking for the others there is a start-up
//! error). And a token near the 8 KiB verifiers accept passes every limit on its way.

use std::collections::HashSet;

use jwt_simple::prelude::{
    ECDSAP256PublicKeyLike as _, ES256PublicKey, Ed25519PublicKey, EdDSAPublicKeyLike as _,
    JWTClaims, MLDSA65PublicKey, MLDSAPublicKeyLike as _, NoCustomClaims, RS256PublicKey,
    RSAPublicKeyLike as _, VerificationOptions,
};
use serde_json::Value;
use tokenmint::{
    grpc::proto::{GetJwksRequest, IssueTokenRequest},
    pki::Issued,
};
use tokenmint_core::crypto::{self, Algorithm};
use tonic::Code;

use crate::support::*;

const RSA_AUDIENCE: &str = "https://rsa-only.example";
const PQ_AUDIENCE: &str = "https://pq.example";

fn clients() -> String {
    format!(
        r#"
[[clients]]
id = "demo"
san_uri = "{DEMO_URI}"
scopes = ["demo:read"]
audiences = ["{DEMO_AUDIENCE}", "{RSA_AUDIENCE}", "{PQ_AUDIENCE}"]
default_audiences = ["{DEMO_AUDIENCE}"]

[[clients]]
id = "rs"
san_uri = "{RS_URI}"
permissions = ["introspect"]
introspect_audiences = ["{DEMO_AUDIENCE}", "{RSA_AUDIENCE}", "{PQ_AUDIENCE}"]
"#
    )
}

/// The JWK named `kid` in a JWK Set text.
fn jwk_in(jwks_json: &str, kid: &str) -> Option<Value> {
    let set: Value = serde_json::from_str(jwks_json).unwrap();
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .cloned()
}

/// The protected header of a compact JWS.
fn header_of(token: &str) -> Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&crypto::b64url_decode(part).unwrap()).unwrap()
}

/// Verifies with jwt-simple, from the JWK alone; the claims.
fn verify_independently(token: &str, jwk: &Value, audience: &str) -> JWTClaims<NoCustomClaims> {
    let options = || VerificationOptions {
        required_signature_type: Some("at+jwt".into()),
        allowed_issuers: Some(HashSet::from([ISSUER.to_owned()])),
        allowed_audiences: Some(HashSet::from([audience.to_owned()])),
        time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(5)),
        ..VerificationOptions::default()
    };
    let text = jwk.to_string();
    match jwk["alg"].as_str().unwrap() {
        "ES256" => ES256PublicKey::from_jwk(&text)
            .unwrap()
            .verify_token(token, Some(options())),
        "EdDSA" => Ed25519PublicKey::from_jwk(&text)
            .unwrap()
            .verify_token(token, Some(options())),
        "RS256" => RS256PublicKey::from_jwk(&text)
            .unwrap()
            .verify_token(token, Some(options())),
        "ML-DSA-65" => MLDSA65PublicKey::from_jwk(&text)
            .unwrap()
            .verify_token(token, Some(options())),
        other => panic!("unexpected alg {other}"),
    }
    .unwrap()
}

#[tokio::test]
async fn each_audience_gets_its_algorithm_and_post_quantum_keys_are_published_apart() {
    // RSA and ML-DSA where the build has them; the ring build runs two lanes of its own.
    let aws_lc = crypto::stack().supports(Algorithm::MlDsa65).is_ok();
    let (default, rsa, pq) = if aws_lc {
        ("EdDSA", "RS256", "ML-DSA-65")
    } else {
        ("ES256", "EdDSA", "EdDSA")
    };
    let mut setup = Setup::new(&clients());
    setup.extra_toml = format!(
        "algorithm = \"{default}\"\nalso = [\"{rsa}\", \"{pq}\"]\n\
         audience_algorithms = {{ \"{RSA_AUDIENCE}\" = \"{rsa}\", \"{PQ_AUDIENCE}\" = \"{pq}\" }}\n"
    );
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);

    let default_set = server.jwks().await;
    let full_set = server
        .jwks_of(GetJwksRequest {
            include_post_quantum: true,
        })
        .await;
    assert_eq!(full_set.version, default_set.version);
    assert!(
        !default_set.jwks_json.contains("\"AKP\""),
        "{}",
        default_set.jwks_json
    );

    for (audience, alg) in [
        (DEMO_AUDIENCE, default),
        (RSA_AUDIENCE, rsa),
        (PQ_AUDIENCE, pq),
    ] {
        let request = IssueTokenRequest {
            audiences: vec![audience.to_owned()],
            ..Default::default()
        };
        let token = issue(&server, &demo, request).await.unwrap().access_token;
        let header = header_of(&token);
        assert_eq!(header["alg"], alg, "{audience}");
        let kid = header["kid"].as_str().unwrap();
        // The full set has the key; the default set has it unless it is post-quantum.
        let jwk = jwk_in(&full_set.jwks_json, kid).expect("published in the full set");
        assert_eq!(jwk["alg"], alg);
        assert_eq!(
            jwk_in(&default_set.jwks_json, kid).is_some(),
            alg != "ML-DSA-65",
            "{alg} in the default set"
        );
        let claims = verify_independently(&token, &jwk, audience);
        assert_eq!(claims.subject.as_deref(), Some("demo"));
        let answer = introspect(&server, &rs, &token, None).await.unwrap();
        assert!(answer.active, "{alg} token introspected active");
        // A changed signature is refused under every algorithm.
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut bytes = crypto::b64url_decode(signature).unwrap();
        bytes[0] ^= 1;
        let forged = format!("{input}.{}", crypto::b64url(&bytes));
        let answer = introspect(&server, &rs, &forged, None).await.unwrap();
        assert!(!answer.active, "forged {alg} token refused");
    }

    // One token cannot suit consumers that each take only their own algorithm.
    let mixed = IssueTokenRequest {
        audiences: vec![DEMO_AUDIENCE.to_owned(), RSA_AUDIENCE.to_owned()],
        ..Default::default()
    };
    let mixed = issue(&server, &demo, mixed).await;
    if aws_lc {
        let mixed = IssueTokenRequest {
            audiences: vec![RSA_AUDIENCE.to_owned(), PQ_AUDIENCE.to_owned()],
            ..Default::default()
        };
        assert_refused(
            issue(&server, &demo, mixed).await,
            Code::InvalidArgument,
            "invalid_target",
        );
    } else {
        // The default audience takes any algorithm: the listed one decides.
        let token = mixed.unwrap().access_token;
        assert_eq!(header_of(&token)["alg"], rsa);
    }
    server.stop().await;
}

/// A client with the most scopes a request may name (64), each 120 characters: enough to
/// push a token past the size verifiers accept.
fn wide_clients() -> String {
    let scopes: Vec<String> = (0..64).map(wide_scope).collect();
    let first = wide_scope(0);
    format!(
        r#"
[[clients]]
id = "demo"
san_uri = "{DEMO_URI}"
scopes = {scopes:?}
default_scopes = ["{first}"]
audiences = ["{DEMO_AUDIENCE}"]

[[clients]]
id = "rs"
san_uri = "{RS_URI}"
permissions = ["introspect"]
introspect_audiences = ["{DEMO_AUDIENCE}"]
"#
    )
}

fn wide_scope(i: usize) -> String {
    format!("scope{i:02}:{}", "x".repeat(112))
}

/// A token with the first `n` wide scopes, or the refusal.
async fn wide_token(server: &TestServer, demo: &Issued, n: usize) -> Result<String, tonic::Status> {
    let request = IssueTokenRequest {
        scopes: (0..n).map(wide_scope).collect(),
        ..Default::default()
    };
    issue(server, demo, request)
        .await
        .map(|issued| issued.access_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_near_8_kib_passes_every_limit_and_a_larger_one_is_never_issued() {
    // ML-DSA-65 where the build has it (its signature alone is 4.4 KB in base64url).
    let algorithm = if crypto::stack().supports(Algorithm::MlDsa65).is_ok() {
        "ML-DSA-65"
    } else {
        "ES256"
    };
    let mut setup = Setup::new(&wide_clients());
    setup.extra_toml = format!(
        "also = [\"{algorithm}\"]\naudience_algorithms = {{ \"{DEMO_AUDIENCE}\" = \"{algorithm}\" }}\n"
    );
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);

    // The largest token within MAX_JWS_LEN: one more scope is refused at issuance, with
    // what to do about it.
    let mut n = 1;
    let mut token = wide_token(&server, &demo, 1).await.unwrap();
    loop {
        match wide_token(&server, &demo, n + 1).await {
            Ok(bigger) => (n, token) = (n + 1, bigger),
            Err(status) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                assert!(status.message().contains("fewer scopes"), "{status:?}");
                break;
            }
        }
        assert!(n < 64, "64 wide scopes fit in one token");
    }
    assert_eq!(header_of(&token)["alg"], algorithm);
    assert!(
        (8 * 1024 - 200..=8 * 1024).contains(&token.len()),
        "{algorithm}: a token of {} bytes with {n} scopes",
        token.len()
    );

    // gRPC introspection.
    let answer = introspect(&server, &rs, &token, None).await.unwrap();
    assert!(answer.active);
    assert_eq!(answer.scopes.len(), n);
    // HTTP introspection (a form body).
    let answer = crate::low_s::introspect_http(&setup, &server, &rs, &token).await;
    assert_eq!(answer["active"], true, "{answer}");

    // tokenmint-verify, fed over gRPC.
    let verifier = crate::verifier::ready(
        crate::verifier::grpc_builder(&setup, &server, &rs)
            .build()
            .unwrap(),
    )
    .await;
    let peer = crate::verifier::peer(&demo);
    let verified = verifier
        .verify(&token, Some(&peer), verifier.now())
        .await
        .unwrap();
    assert_eq!(verified.client_id, "demo");

    // The sidecar: forward auth (the token in an Authorization header) and Envoy's gRPC check.
    let sidecar = crate::authz::start(crate::authz::authz_config(&setup, &server, "")).await;
    let forward = reqwest::Client::new()
        .get(&sidecar.verify)
        .header("x-original-uri", "/orders")
        .header("x-ssl-client-cert", crate::authz::nginx_header(&demo))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(forward.status().as_u16(), 200);
    let check = crate::authz::envoy_check(Some(&token), &crate::authz::nginx_header(&demo), None);
    let answer = crate::authz::envoy_ask(&sidecar.grpc, check).await;
    assert_eq!((answer.code, answer.status), (0, 200), "{answer:?}");
    sidecar.stop.cancel();
    server.stop().await;
}
