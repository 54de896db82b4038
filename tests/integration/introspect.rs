//! Introspection (SPEC §6, RFC 7662 semantics): an active token's fields, the caller's
//! refusals as statuses, and the one bare `active: false` for every inactive token — including
//! forged tokens carrying a valid signature by our real key over one defect each.

use std::time::Duration;

use prost::Message as _;
use serde_json::{Value, json};
use tokenmint::{
    grpc::proto::{IntrospectTokenRequest, IntrospectTokenResponse, IssueTokenRequest},
    pki::Issued,
    wire::OAUTH_ERROR_METADATA,
};
use tokenmint_core::{
    clock::{Clock as _, SystemClock, unix_seconds},
    crypto::{Algorithm, SigningKey, b64url, random_id},
    keys::KeyId,
};
use tonic::Code;

use crate::support::*;

/// The wall clock, in Unix seconds.
fn now() -> i64 {
    unix_seconds(SystemClock.now())
}

fn b64_json(value: &Value) -> String {
    b64url(value.to_string().as_bytes())
}

/// A compact JWS of `header` and `claims` (as JSON text) with the given signature bytes.
fn with_signature(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64_json(header),
        b64_json(claims),
        b64url(signature)
    )
}

/// A compact JWS of `header` and `claims`, signed by `key` over exactly those bytes.
fn forge(header: Value, claims: Value, key: &SigningKey) -> String {
    let input = format!("{}.{}", b64_json(&header), b64_json(&claims));
    let signature = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64url(&signature))
}

/// The header tokenmint signs with.
fn good_header(kid: &str) -> Value {
    json!({"alg": "ES256", "typ": "at+jwt", "kid": kid})
}

/// Every claim of `AccessTokenClaims`, right for the demo client bound to `cert`, valid now.
fn good_claims(cert: &Issued) -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "sub": "demo",
        "client_id": "demo",
        "aud": DEMO_AUDIENCE,
        "scope": "demo:read",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": random_id().unwrap(),
        "cnf": {"x5t#S256": thumbprint_of(cert)},
    })
}

/// `claims` with `key` set to `value` (`Value::Null` removes it).
fn with(mut claims: Value, key: &str, value: Value) -> Value {
    let object = claims.as_object_mut().unwrap();
    if value.is_null() {
        object.remove(key);
    } else {
        object.insert(key.to_owned(), value);
    }
    claims
}

/// The bytes of the one bare inactive answer.
fn inactive_bytes() -> Vec<u8> {
    IntrospectTokenResponse::default().encode_to_vec()
}

/// Asserts a refused call: its gRPC code and OAuth2 error code.
fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, oauth: &str) {
    let status = match result {
        Ok(answer) => panic!("expected {code:?}/{oauth}, got an answer: {answer:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "status: {status:?}");
    let got = status
        .metadata()
        .get(OAUTH_ERROR_METADATA)
        .and_then(|v| v.to_str().ok());
    assert_eq!(got, Some(oauth), "status: {status:?}");
}

/// Introspects each `(name, token)` as `cert` and returns a line for every case whose answer
/// is not byte-for-byte the bare `active: false`.
async fn not_bare_inactive(
    server: &TestServer,
    cert: &Issued,
    cases: &[(String, String)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, token) in cases {
        match introspect(server, cert, token, None).await {
            Ok(answer) if answer.encode_to_vec() == inactive_bytes() => {}
            Ok(answer) => {
                failures.push(format!("{name}: not the bare inactive answer: {answer:?}"))
            }
            Err(status) => failures.push(format!("{name}: a status, not active:false: {status:?}")),
        }
    }
    failures
}

async fn assert_all_bare_inactive(server: &TestServer, cert: &Issued, cases: &[(String, String)]) {
    assert!(!cases.is_empty());
    let failures = not_bare_inactive(server, cert, cases).await;
    assert!(
        failures.is_empty(),
        "{} of {} bad tokens were not answered with the bare active:false:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A running server with the standard clients, their certificates and the real current key.
struct Fixture {
    server: TestServer,
    admin: Issued,
    demo: Issued,
    kid: String,
    key: SigningKey,
    // Last: the server's files outlive it.
    setup: Setup,
}

impl Fixture {
    async fn start() -> Self {
        let setup = Setup::new(&standard_clients());
        let server = setup.start().await;
        let admin = setup.pki.client_uri(ADMIN_URI);
        let demo = setup.pki.client_uri(DEMO_URI);
        let (kid, key) = setup.current_signing_key().await;
        Self {
            server,
            admin,
            demo,
            kid,
            key,
            setup,
        }
    }

    /// A well-formed token forged with the real key: it must be active, with these claims —
    /// proof that `forge` works and that each failure elsewhere is due to its one defect.
    async fn assert_control_active(&self) {
        let claims = good_claims(&self.demo);
        let token = forge(good_header(&self.kid), claims.clone(), &self.key);
        let answer = introspect(&self.server, &self.admin, &token, None)
            .await
            .unwrap();
        assert!(
            answer.active,
            "a well-formed token with a valid signature is active"
        );
        assert_eq!(answer.client_id, "demo");
        assert_eq!(answer.token_id, claims["jti"].as_str().unwrap());
        assert_eq!(answer.expires_at, claims["exp"].as_i64().unwrap());
        assert_eq!(answer.certificate_thumbprint, thumbprint_of(&self.demo));
        // And the checker used for the bad tokens does flag it.
        let flagged =
            not_bare_inactive(&self.server, &self.admin, &[("control".into(), token)]).await;
        assert_eq!(flagged.len(), 1, "the checker flags an active token");
    }

    async fn stop(self) {
        self.server.stop().await;
        drop(self.setup);
    }
}

/// Converts a fixed-size ES256 signature (r ‖ s) to its ASN.1 DER form.
fn der_of_fixed(fixed: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let start = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        let mut value = bytes[start..].to_vec();
        if value[0] & 0x80 != 0 {
            value.insert(0, 0);
        }
        let mut out = vec![0x02, u8::try_from(value.len()).unwrap()];
        out.extend(value);
        out
    }
    assert_eq!(fixed.len(), 64);
    let mut body = integer(&fixed[..32]);
    body.extend(integer(&fixed[32..]));
    let mut out = vec![0x30, u8::try_from(body.len()).unwrap()];
    out.extend(body);
    out
}

// ---------------------------------------------------------------------------------------------
// 1. An active token.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_token_reports_every_field_to_rs_and_admin_and_again_from_the_cache() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let admin = setup.pki.client_uri(ADMIN_URI);

    let issued = issue(
        &server,
        &demo,
        IssueTokenRequest {
            scopes: vec!["demo:read".into(), "demo:write".into()],
            audiences: vec![DEMO_AUDIENCE.into(), "https://other.example".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let claims = verify_with_jwks(
        &issued.access_token,
        &server.jwks().await.jwks_json,
        DEMO_AUDIENCE,
    );
    let expected = IntrospectTokenResponse {
        active: true,
        client_id: "demo".into(),
        subject: "demo".into(),
        scopes: vec!["demo:read".into(), "demo:write".into()],
        audiences: vec![DEMO_AUDIENCE.into(), "https://other.example".into()],
        issuer: ISSUER.into(),
        expires_at: claims["exp"].as_i64().unwrap(),
        issued_at: claims["iat"].as_i64().unwrap(),
        not_before: claims["nbf"].as_i64().unwrap(),
        token_id: claims["jti"].as_str().unwrap().into(),
        certificate_thumbprint: thumbprint_of(&demo),
    };
    assert_eq!(expected.expires_at - expected.issued_at, issued.expires_in);

    for (who, cert) in [("rs", &rs), ("admin", &admin)] {
        for attempt in ["first", "second (cache hit)"] {
            let answer = introspect(&server, cert, &issued.access_token, None)
                .await
                .unwrap();
            assert_eq!(answer, expected, "{who}, {attempt} introspection");
        }
    }

    // A single audience (the `aud` claim as a plain string) and the default scope.
    let single = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap();
    let answer = introspect(&server, &rs, &single.access_token, None)
        .await
        .unwrap();
    assert!(answer.active);
    assert_eq!(answer.audiences, [DEMO_AUDIENCE]);
    assert_eq!(answer.scopes, ["demo:read"]);
    assert_ne!(
        answer.token_id, expected.token_id,
        "each token its own answer"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Refusals of the caller, visibility and certificate binding.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_certificate_or_the_permission_get_a_status() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let other = setup.pki.client_uri(OTHER_URI);
    let token = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    let request = || IntrospectTokenRequest {
        token: token.clone(),
        presented_certificate_thumbprint: None,
    };

    let anonymous = server
        .anonymous_client()
        .await
        .introspect_token(request())
        .await
        .map(tonic::Response::into_inner);
    assert_status(anonymous, Code::Unauthenticated, "invalid_client");

    // Issuing clients without `introspect`, asking about a valid token (even their own).
    assert_status(
        introspect(&server, &demo, &token, None).await,
        Code::PermissionDenied,
        "unauthorized_client",
    );
    assert_status(
        introspect(&server, &other, &token, None).await,
        Code::PermissionDenied,
        "unauthorized_client",
    );
    // …and about garbage: still the refusal, not active:false.
    assert_status(
        introspect(&server, &demo, "garbage", None).await,
        Code::PermissionDenied,
        "unauthorized_client",
    );

    // A certificate from the trusted CA that names no registered client.
    let stranger = setup.pki.client_uri("spiffe://tokenmint.test/stranger");
    assert_status(
        introspect(&server, &stranger, &token, None).await,
        Code::Unauthenticated,
        "invalid_client",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_server_sees_only_its_audiences_and_an_admin_sees_all() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let other = setup.pki.client_uri(OTHER_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let admin = setup.pki.client_uri(ADMIN_URI);

    let elsewhere = issue(
        &server,
        &other,
        IssueTokenRequest {
            audiences: vec!["https://elsewhere.example".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .access_token;
    let answer = introspect(&server, &rs, &elsewhere, None).await.unwrap();
    assert_eq!(
        answer.encode_to_vec(),
        inactive_bytes(),
        "not visible to rs: {answer:?}"
    );
    let answer = introspect(&server, &admin, &elsewhere, None).await.unwrap();
    assert!(answer.active, "an admin sees every audience");
    assert_eq!(answer.client_id, "other");
    assert_eq!(answer.audiences, ["https://elsewhere.example"]);
    // rs again after the admin put it in the verified cache: still not visible.
    let answer = introspect(&server, &rs, &elsewhere, None).await.unwrap();
    assert_eq!(answer.encode_to_vec(), inactive_bytes());

    // One visible audience among several is enough.
    let both = issue(
        &server,
        &other,
        IssueTokenRequest {
            audiences: vec!["https://elsewhere.example".into(), DEMO_AUDIENCE.into()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .access_token;
    let answer = introspect(&server, &rs, &both, None).await.unwrap();
    assert!(answer.active);
    assert_eq!(
        answer.audiences,
        ["https://elsewhere.example", DEMO_AUDIENCE]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presented_certificate_must_be_the_one_the_token_is_bound_to() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    // The same client, another certificate: what a thief replaying the token would present.
    let demo_again = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let token = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    let right = thumbprint_of(&demo);
    assert_ne!(thumbprint_of(&demo_again), right);

    let mut one_off = right.clone().into_bytes();
    one_off[0] = if one_off[0] == b'A' { b'B' } else { b'A' };
    let one_off = String::from_utf8(one_off).unwrap();
    let wrong = [
        (
            "another certificate of the same client",
            thumbprint_of(&demo_again),
        ),
        ("another client's certificate", thumbprint_of(&rs)),
        ("one character changed", one_off),
    ];
    for (what, presented) in &wrong {
        let answer = introspect(&server, &rs, &token, Some(presented))
            .await
            .unwrap();
        assert_eq!(
            answer.encode_to_vec(),
            inactive_bytes(),
            "{what}: {answer:?}"
        );
    }
    let answer = introspect(&server, &rs, &token, Some(&right))
        .await
        .unwrap();
    assert!(answer.active, "the right certificate");
    assert_eq!(answer.certificate_thumbprint, right);
    let answer = introspect(&server, &rs, &token, None).await.unwrap();
    assert!(answer.active, "no presented certificate: no binding check");
    server.stop().await;
}

/// Regression: a thumbprint sent empty was taken for one left out, and the token answered
/// active with no binding check; a malformed one was compared and answered inactive. Both
/// are the resource server's mistake, and it hears so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presented_thumbprint_sent_empty_or_malformed_is_invalid_request_not_left_out() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let token = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    let right = thumbprint_of(&demo);

    // Sent empty and left out are different bytes on the wire (proto3 field presence).
    let sent_empty = IntrospectTokenRequest {
        token: String::new(),
        presented_certificate_thumbprint: Some(String::new()),
    };
    assert_eq!(
        sent_empty.encode_to_vec(),
        [0x12, 0x00],
        "field 2, length 0"
    );
    assert_eq!(
        IntrospectTokenRequest::default().encode_to_vec(),
        Vec::<u8>::new()
    );

    assert_status(
        introspect(&server, &rs, &token, Some("")).await,
        Code::InvalidArgument,
        "invalid_request",
    );
    // Refused whatever the token: the argument, not the token, is at fault.
    for (what, presented) in malformed_thumbprints(&right) {
        for token in [token.as_str(), "garbage"] {
            let status = introspect(&server, &rs, token, Some(&presented))
                .await
                .expect_err(what);
            assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
            assert_eq!(
                status.metadata().get(OAUTH_ERROR_METADATA).unwrap(),
                "invalid_request",
                "{what}: {status:?}"
            );
        }
    }

    // Left out: answered without a binding check, as before.
    let answer = introspect(&server, &rs, &token, None).await.unwrap();
    assert!(answer.active, "left out: no binding check");
    assert_eq!(answer.certificate_thumbprint, right);
    // The right certificate is active; another well-formed one is bare inactive.
    let answer = introspect(&server, &rs, &token, Some(&right))
        .await
        .unwrap();
    assert!(answer.active, "the right certificate");
    let answer = introspect(&server, &rs, &token, Some(&thumbprint_of(&rs)))
        .await
        .unwrap();
    assert_eq!(answer.encode_to_vec(), inactive_bytes(), "{answer:?}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Bad tokens: each is the bare active:false, byte for byte.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tokens_are_bare_inactive() {
    let fx = Fixture::start().await;
    fx.assert_control_active().await;
    let real = issue(&fx.server, &fx.demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    let (signing_input, _) = real.rsplit_once('.').unwrap();
    let parts: Vec<&str> = real.split('.').collect();

    let cases: Vec<(String, String)> = vec![
        ("garbage".into(), "this is not a token".into()),
        ("empty".into(), String::new()),
        ("two dots".into(), "..".into()),
        ("three dots".into(), "...".into()),
        ("a.b.c".into(), "a.b.c".into()),
        ("no signature part".into(), signing_input.to_owned()),
        ("empty signature".into(), format!("{signing_input}.")),
        ("four parts".into(), format!("{real}.{}", parts[2])),
        (
            "payload not JSON".into(),
            format!("{}.{}.{}", parts[0], b64url(b"not json"), parts[2]),
        ),
        (
            "payload a JSON array".into(),
            format!("{}.{}.{}", parts[0], b64url(b"[]"), parts[2]),
        ),
        (
            "header not base64url".into(),
            format!("!!!.{}.{}", parts[1], parts[2]),
        ),
        (
            "signature not base64url".into(),
            format!("{signing_input}.***"),
        ),
        (
            "JWE-shaped (five parts)".into(),
            format!("{}.a.b.c.d", parts[0]),
        ),
    ];
    assert_all_bare_inactive(&fx.server, &fx.admin, &cases).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithm_confusion_is_bare_inactive() {
    let fx = Fixture::start().await;
    fx.assert_control_active().await;
    let claims = || good_claims(&fx.demo);
    let mut cases: Vec<(String, String)> = Vec::new();

    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": fx.kid});
        cases.push((
            format!("alg {alg}, empty signature"),
            with_signature(&header, &claims(), &[]),
        ));
        // …and with a valid ES256 signature by our key over the same input.
        cases.push((
            format!("alg {alg}, a valid ES256 signature"),
            forge(header, claims(), &fx.key),
        ));
    }
    // No alg at all.
    cases.push((
        "no alg".into(),
        forge(json!({"typ": "at+jwt", "kid": fx.kid}), claims(), &fx.key),
    ));

    // HS256 with our public key (in every form a verifier might hold it) as the HMAC secret.
    let jwks = fx.server.jwks().await.jwks_json;
    let set: Value = serde_json::from_str(&jwks).unwrap();
    let jwk = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == fx.kid.as_str())
        .unwrap()
        .clone();
    let (x, y) = match fx.key.public_key() {
        tokenmint_core::crypto::PublicKey::P256 { x, y } => (x, y),
        other => panic!("the default key is P-256, got {other:?}"),
    };
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("the SEC1 point", sec1),
        ("the JWKS JSON text", jwks.clone().into_bytes()),
        ("the JWK JSON text", jwk.to_string().into_bytes()),
        ("x ‖ y", [x.clone(), y.clone()].concat()),
        (
            "the JWK's x",
            jwk["x"].as_str().unwrap().as_bytes().to_vec(),
        ),
        ("the kid", fx.kid.clone().into_bytes()),
    ];
    for alg in ["HS256", "HS384", "HS512"] {
        for (what, secret) in &secrets {
            let header = json!({"alg": alg, "typ": "at+jwt", "kid": fx.kid});
            let input = format!("{}.{}", b64_json(&header), b64_json(&claims()));
            let tag = hmac_tag(alg, secret, input.as_bytes());
            cases.push((
                format!("{alg} keyed with {what}"),
                format!("{input}.{}", b64url(tag.as_ref())),
            ));
        }
    }

    // Another asymmetric algorithm under our kid, validly signed by a key of that algorithm.
    let (ed25519, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
    cases.push((
        "EdDSA under our ES256 kid".into(),
        forge(
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": fx.kid}),
            claims(),
            &ed25519,
        ),
    ));
    // Our key's valid ES256 signature under another algorithm's name.
    for alg in ["ES384", "ES512", "RS256", "PS256", "es256"] {
        cases.push((
            format!("alg {alg} over a valid ES256 signature"),
            forge(
                json!({"alg": alg, "typ": "at+jwt", "kid": fx.kid}),
                claims(),
                &fx.key,
            ),
        ));
    }
    assert_all_bare_inactive(&fx.server, &fx.admin, &cases).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_bare_inactive() {
    let fx = Fixture::start().await;
    fx.assert_control_active().await;
    let header = good_header(&fx.kid);
    let claims = good_claims(&fx.demo);
    let input = format!("{}.{}", b64_json(&header), b64_json(&claims));
    let signature = fx.key.sign(input.as_bytes()).unwrap();
    assert_eq!(signature.len(), 64);
    // The control again, assembled by hand from the same parts.
    let good = format!("{input}.{}", b64url(&signature));
    let answer = introspect(&fx.server, &fx.admin, &good, None)
        .await
        .unwrap();
    assert!(answer.active, "the untampered token is active");

    let mut flipped = signature.clone();
    flipped[10] ^= 0x01;
    let mut zero_r = signature.clone();
    zero_r[..32].fill(0);
    let mut zero_s = signature.clone();
    zero_s[32..].fill(0);
    let swapped = [&signature[32..], &signature[..32]].concat();
    let der = der_of_fixed(&signature);
    assert_eq!(der[0], 0x30);

    // Tampered payloads under the original signature: one claim changed each.
    let tamper = |key: &str, value: Value| {
        format!(
            "{}.{}.{}",
            b64_json(&header),
            b64_json(&with(claims.clone(), key, value)),
            b64url(&signature)
        )
    };
    let exp = claims["exp"].as_i64().unwrap();

    let cases: Vec<(String, String)> = vec![
        (
            "all-zero 64-byte signature (CVE-2022-21449)".into(),
            format!("{input}.{}", b64url(&[0u8; 64])),
        ),
        ("r = 0".into(), format!("{input}.{}", b64url(&zero_r))),
        ("s = 0".into(), format!("{input}.{}", b64url(&zero_s))),
        (
            "one bit flipped".into(),
            format!("{input}.{}", b64url(&flipped)),
        ),
        (
            "r and s swapped".into(),
            format!("{input}.{}", b64url(&swapped)),
        ),
        (
            "truncated by one byte".into(),
            format!("{input}.{}", b64url(&signature[..63])),
        ),
        (
            "truncated to 32 bytes".into(),
            format!("{input}.{}", b64url(&signature[..32])),
        ),
        (
            "signature text cut by two characters".into(),
            good[..good.len() - 2].to_owned(),
        ),
        (
            "one extra byte".into(),
            format!("{input}.{}", b64url(&[signature.as_slice(), &[0]].concat())),
        ),
        (
            "DER-encoded signature".into(),
            format!("{input}.{}", b64url(&der)),
        ),
        (
            "signature in padded standard base64".into(),
            format!(
                "{input}.{}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &signature)
            ),
        ),
        (
            "tampered scope".into(),
            tamper("scope", json!("demo:read demo:write")),
        ),
        (
            "tampered client_id".into(),
            tamper("client_id", json!("admin")),
        ),
        ("tampered sub".into(), tamper("sub", json!("admin"))),
        ("tampered exp".into(), tamper("exp", json!(exp + 3600))),
        (
            "tampered aud".into(),
            tamper("aud", json!("https://other.example")),
        ),
        (
            "tampered cnf".into(),
            tamper("cnf", json!({"x5t#S256": b64url(&[7u8; 32])})),
        ),
        (
            "tampered header (an extra member)".into(),
            format!(
                "{}.{}.{}",
                b64_json(&json!({"alg": "ES256", "typ": "at+jwt", "kid": fx.kid, "x": 1})),
                b64_json(&claims),
                b64url(&signature)
            ),
        ),
    ];
    assert_all_bare_inactive(&fx.server, &fx.admin, &cases).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_headers_are_bare_inactive() {
    let fx = Fixture::start().await;
    fx.assert_control_active().await;
    let claims = || good_claims(&fx.demo);
    let header = |kid: Value, typ: Value| {
        let mut h = json!({"alg": "ES256"});
        if !kid.is_null() {
            h["kid"] = kid;
        }
        if !typ.is_null() {
            h["typ"] = typ;
        }
        h
    };
    let at = json!("at+jwt");
    let kid = json!(fx.kid);
    let cases: Vec<(String, String)> = vec![
        // kid
        (
            "unknown kid".into(),
            forge(
                header(json!(random_id().unwrap()), at.clone()),
                claims(),
                &fx.key,
            ),
        ),
        (
            "kid ../../etc/passwd".into(),
            forge(
                header(json!("../../etc/passwd"), at.clone()),
                claims(),
                &fx.key,
            ),
        ),
        (
            "kid 10 KiB long".into(),
            forge(
                header(json!("k".repeat(10 * 1024)), at.clone()),
                claims(),
                &fx.key,
            ),
        ),
        (
            "kid 2 KiB long (under the token size cap)".into(),
            forge(
                header(json!("k".repeat(2 * 1024)), at.clone()),
                claims(),
                &fx.key,
            ),
        ),
        (
            "our kid with a suffix".into(),
            forge(
                header(json!(format!("{}x", fx.kid)), at.clone()),
                claims(),
                &fx.key,
            ),
        ),
        (
            "our kid upper-cased".into(),
            forge(
                header(json!(fx.kid.to_uppercase()), at.clone()),
                claims(),
                &fx.key,
            ),
        ),
        (
            "empty kid".into(),
            forge(header(json!(""), at.clone()), claims(), &fx.key),
        ),
        (
            "no kid".into(),
            forge(header(Value::Null, at.clone()), claims(), &fx.key),
        ),
        (
            "kid a number".into(),
            forge(header(json!(12345), at.clone()), claims(), &fx.key),
        ),
        (
            "kid an array holding ours".into(),
            forge(header(json!([fx.kid]), at.clone()), claims(), &fx.key),
        ),
        // typ
        (
            "typ JWT".into(),
            forge(header(kid.clone(), json!("JWT")), claims(), &fx.key),
        ),
        (
            "no typ".into(),
            forge(header(kid.clone(), Value::Null), claims(), &fx.key),
        ),
        (
            "typ empty".into(),
            forge(header(kid.clone(), json!("")), claims(), &fx.key),
        ),
        (
            "typ application/jwt".into(),
            forge(
                header(kid.clone(), json!("application/jwt")),
                claims(),
                &fx.key,
            ),
        ),
        (
            "typ at+jwt with trailing space".into(),
            forge(header(kid.clone(), json!("at+jwt ")), claims(), &fx.key),
        ),
        (
            "typ an array".into(),
            forge(header(kid.clone(), json!(["at+jwt"])), claims(), &fx.key),
        ),
        // the header itself
        (
            "header a JSON array".into(),
            format!(
                "{}.{}.{}",
                b64url(b"[]"),
                b64_json(&claims()),
                b64url(&[0u8; 64])
            ),
        ),
    ];
    assert_all_bare_inactive(&fx.server, &fx.admin, &cases).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_references_in_the_header_are_never_fetched() {
    let fx = Fixture::start().await;
    fx.assert_control_active().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let (foreign, _) = SigningKey::generate(Algorithm::Es256).unwrap();
    let foreign_kid = KeyId::of(&foreign.public_key()).to_string();
    let foreign_jwk = match foreign.public_key() {
        tokenmint_core::crypto::PublicKey::P256 { x, y } => {
            json!({"kty": "EC", "crv": "P-256", "x": b64url(&x), "y": b64url(&y), "kid": foreign_kid})
        }
        other => panic!("generated P-256, got {other:?}"),
    };
    let claims = || good_claims(&fx.demo);
    let header = |kid: &str, extra: (&str, Value)| {
        let mut h = good_header(kid);
        h[extra.0] = extra.1;
        h
    };
    let cases: Vec<(String, String)> = vec![
        (
            "jku to our listener, foreign kid".into(),
            forge(
                header(&foreign_kid, ("jku", json!(url))),
                claims(),
                &foreign,
            ),
        ),
        (
            "jku to our listener, our kid, foreign signature".into(),
            forge(header(&fx.kid, ("jku", json!(url))), claims(), &foreign),
        ),
        (
            "x5u to our listener, foreign kid".into(),
            forge(
                header(&foreign_kid, ("x5u", json!(url))),
                claims(),
                &foreign,
            ),
        ),
        (
            "embedded jwk, foreign kid".into(),
            forge(
                header(&foreign_kid, ("jwk", foreign_jwk.clone())),
                claims(),
                &foreign,
            ),
        ),
        (
            "embedded jwk, our kid, foreign signature".into(),
            forge(header(&fx.kid, ("jwk", foreign_jwk)), claims(), &foreign),
        ),
    ];
    assert_all_bare_inactive(&fx.server, &fx.admin, &cases).await;
    let connected = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    assert!(
        connected.is_err(),
        "the server connected to a URL named in a token header: {connected:?}"
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_claims_with_a_valid_signature_are_bare_inactive() {
    let fx = Fixture::start().await;
    fx.assert_control_active().await;
    let now = now();
    let signed = |claims: Value| forge(good_header(&fx.kid), claims, &fx.key);
    let base = || good_claims(&fx.demo);

    // Controls: within the 30 s leeway is still active.
    for (what, claims) in [
        (
            "expired 5 s ago, within leeway",
            with(
                with(with(base(), "exp", json!(now - 5)), "iat", json!(now - 305)),
                "nbf",
                json!(now - 305),
            ),
        ),
        (
            "valid from 5 s ahead, within leeway",
            with(with(base(), "nbf", json!(now + 5)), "iat", json!(now + 5)),
        ),
        (
            "aud as an array",
            with(base(), "aud", json!([DEMO_AUDIENCE])),
        ),
    ] {
        let answer = introspect(&fx.server, &fx.admin, &signed(claims), None)
            .await
            .unwrap();
        assert!(answer.active, "{what}");
    }

    let expired = with(
        with(
            with(base(), "exp", json!(now - 120)),
            "iat",
            json!(now - 420),
        ),
        "nbf",
        json!(now - 420),
    );
    let cases: Vec<(String, String)> = vec![
        (
            "wrong iss".into(),
            signed(with(base(), "iss", json!("https://evil.example"))),
        ),
        (
            "iss with a trailing slash".into(),
            signed(with(base(), "iss", json!(format!("{ISSUER}/")))),
        ),
        (
            "iss missing".into(),
            signed(with(base(), "iss", Value::Null)),
        ),
        (
            "iss an array".into(),
            signed(with(base(), "iss", json!([ISSUER]))),
        ),
        (
            "exp as a string".into(),
            signed(with(base(), "exp", json!((now + 300).to_string()))),
        ),
        (
            "exp as a float".into(),
            signed(with(base(), "exp", json!((now + 300) as f64 + 0.5))),
        ),
        (
            "exp missing".into(),
            signed(with(base(), "exp", Value::Null)),
        ),
        ("expired beyond leeway".into(), signed(expired)),
        (
            "nbf in the future".into(),
            signed(with(base(), "nbf", json!(now + 3600))),
        ),
        (
            "iat in the future".into(),
            signed(with(base(), "iat", json!(now + 3600))),
        ),
        (
            "nbf missing".into(),
            signed(with(base(), "nbf", Value::Null)),
        ),
        (
            "iat missing".into(),
            signed(with(base(), "iat", Value::Null)),
        ),
        (
            "jti missing".into(),
            signed(with(base(), "jti", Value::Null)),
        ),
        (
            "cnf missing".into(),
            signed(with(base(), "cnf", Value::Null)),
        ),
        (
            "aud missing".into(),
            signed(with(base(), "aud", Value::Null)),
        ),
        (
            "sub missing".into(),
            signed(with(base(), "sub", Value::Null)),
        ),
        (
            "client_id missing".into(),
            signed(with(base(), "client_id", Value::Null)),
        ),
        (
            "client_id of no registered client".into(),
            signed(with(
                with(base(), "client_id", json!("ghost")),
                "sub",
                json!("ghost"),
            )),
        ),
        ("claims a JSON string".into(), signed(json!("claims"))),
    ];
    assert_all_bare_inactive(&fx.server, &fx.admin, &cases).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_signed_by_keys_we_never_published_are_bare_inactive() {
    let fx = Fixture::start().await;
    fx.assert_control_active().await;
    let (foreign, _) = SigningKey::generate(Algorithm::Es256).unwrap();
    let foreign_kid = KeyId::of(&foreign.public_key()).to_string();
    assert_ne!(foreign_kid, fx.kid);
    let cases: Vec<(String, String)> = vec![
        (
            "a fresh key under its own kid".into(),
            forge(good_header(&foreign_kid), good_claims(&fx.demo), &foreign),
        ),
        (
            "a foreign key under our kid".into(),
            forge(good_header(&fx.kid), good_claims(&fx.demo), &foreign),
        ),
    ];
    assert_all_bare_inactive(&fx.server, &fx.admin, &cases).await;
    fx.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Size.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_the_message_limit_is_refused_with_a_status() {
    let fx = Fixture::start().await;
    let huge = "a".repeat(100 * 1024);
    let status = introspect(&fx.server, &fx.admin, &huge, None)
        .await
        .expect_err("a 100 KiB request is over the 64 KiB limit");
    assert_eq!(status.code(), Code::OutOfRange, "status: {status:?}");

    // Under the message limit but over any token we issue: the bare inactive answer.
    let big = "a".repeat(60 * 1024);
    let answer = introspect(&fx.server, &fx.admin, &big, None).await.unwrap();
    assert_eq!(answer.encode_to_vec(), inactive_bytes());
    // The server is still serving.
    fx.assert_control_active().await;
    fx.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Revocation (in depth in revocation.rs).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_inactive_at_once() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let token = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    // Active first, which also puts it in the verified cache.
    assert!(introspect(&server, &rs, &token, None).await.unwrap().active);
    revoke(&server, &demo, &token).await.unwrap();
    let answer = introspect(&server, &rs, &token, None).await.unwrap();
    assert_eq!(
        answer.encode_to_vec(),
        inactive_bytes(),
        "revoked: {answer:?}"
    );
    server.stop().await;
}

/// HMAC of `input` under `secret` with the hash an `HS*` name names (RustCrypto: a forger's
/// tool independent of the server's stack).
fn hmac_tag(alg: &str, secret: &[u8], input: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac as _};
    use sha2::{Sha256, Sha384, Sha512};
    match alg {
        "HS256" => Hmac::<Sha256>::new_from_slice(secret)
            .unwrap()
            .chain_update(input)
            .finalize()
            .into_bytes()
            .to_vec(),
        "HS384" => Hmac::<Sha384>::new_from_slice(secret)
            .unwrap()
            .chain_update(input)
            .finalize()
            .into_bytes()
            .to_vec(),
        "HS512" => Hmac::<Sha512>::new_from_slice(secret)
            .unwrap()
            .chain_update(input)
            .finalize()
            .into_bytes()
            .to_vec(),
        other => panic!("not an HMAC algorithm: {other}"),
    }
}
