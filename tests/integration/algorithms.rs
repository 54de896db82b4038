//! Several algorithms at once (`keys.also`, `keys.audience_algorithms`): each audience's
//! tokens are signed with its algorithm, introspection accepts every one under its own key,
//! an independent implementation (jwt-simple) verifies each against the published keys, and
//! the post-quantum keys stay out of the default key set, published only to verifiers that
//! ask. RSA and ML-DSA need the aws-lc build: in the ring build this test says it skipped
//! (the configuration test checks that asking for them there is a start-up error).

use std::collections::HashSet;

use jwt_simple::prelude::{
    Ed25519PublicKey, EdDSAPublicKeyLike as _, JWTClaims, MLDSA65PublicKey,
    MLDSAPublicKeyLike as _, NoCustomClaims, RS256PublicKey, RSAPublicKeyLike as _,
    VerificationOptions,
};
use serde_json::Value;
use tokenmint::grpc::proto::{GetJwksRequest, IssueTokenRequest};
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
    if crypto::stack().supports(Algorithm::MlDsa65).is_err() {
        crate::binary::skipped("RS256 and ML-DSA need the aws-lc build (CI runs it there)");
        return;
    }
    let mut setup = Setup::new(&clients());
    setup.extra_toml = format!(
        "algorithm = \"EdDSA\"\nalso = [\"RS256\", \"ML-DSA-65\"]\n\
         audience_algorithms = {{ \"{RSA_AUDIENCE}\" = \"RS256\", \"{PQ_AUDIENCE}\" = \"ML-DSA-65\" }}\n"
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
        (DEMO_AUDIENCE, "EdDSA"),
        (RSA_AUDIENCE, "RS256"),
        (PQ_AUDIENCE, "ML-DSA-65"),
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
        audiences: vec![RSA_AUDIENCE.to_owned(), PQ_AUDIENCE.to_owned()],
        ..Default::default()
    };
    assert_refused(
        issue(&server, &demo, mixed).await,
        Code::InvalidArgument,
        "invalid_target",
    );
}
