//! Introspection (SPEC §6, RFC 7662 semantics): an active token's fields, the caller's
//! refusals as statuses, and the one bare `active: false` for every inactive token — including
//! every shared forgery vector (`forgeries.rs`), most carrying a valid signature by our real key
//! over one defect each.

use std::time::Duration;

use prost::Message as _;
use serde_json::json;
use tokenmint::{
    grpc::proto::{IntrospectTokenRequest, IntrospectTokenResponse, IssueTokenRequest},
    pki::Issued,
    wire::OAUTH_ERROR_METADATA,
};
use tonic::Code;

use crate::forgeries::{self, Forgery, ForgeryContext, forge, good_claims, good_header, with};
use crate::support::*;

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

/// Introspects each case's token as `cert` and returns a line for every case whose answer is
/// not byte-for-byte the bare `active: false`.
async fn not_bare_inactive(server: &TestServer, cert: &Issued, cases: &[Forgery]) -> Vec<String> {
    let mut failures = Vec::new();
    for Forgery { class, name, token } in cases {
        match introspect(server, cert, token, None).await {
            Ok(answer) if answer.encode_to_vec() == inactive_bytes() => {}
            Ok(answer) => failures.push(format!(
                "{class}: {name}: not the bare inactive answer: {answer:?}"
            )),
            Err(status) => failures.push(format!(
                "{class}: {name}: a status, not active:false: {status:?}"
            )),
        }
    }
    failures
}

async fn assert_all_bare_inactive(server: &TestServer, cert: &Issued, cases: &[Forgery]) {
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

/// A running server with the standard clients, their certificates, and the forgery context
/// over the real current key, bound to the demo client's certificate.
struct Fixture {
    server: TestServer,
    admin: Issued,
    demo: Issued,
    forgeries: ForgeryContext,
    /// Where the `jku` and `x5u` vectors point: nothing may connect to it.
    key_url_listener: tokio::net::TcpListener,
    // Last: the server's files outlive it.
    setup: Setup,
}

impl Fixture {
    async fn start() -> Self {
        let setup = Setup::new(&standard_clients());
        let server = setup.start().await;
        let admin = setup.pki.client_uri(ADMIN_URI);
        let demo = setup.pki.client_uri(DEMO_URI);
        let key_url_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let key_url = format!(
            "http://{}/jwks.json",
            key_url_listener.local_addr().unwrap()
        );
        let forgeries = ForgeryContext::of(&setup, &server, &demo, &key_url).await;
        Self {
            server,
            admin,
            demo,
            forgeries,
            key_url_listener,
            setup,
        }
    }

    /// A well-formed token forged with the real key: it must be active, with these claims —
    /// proof that `forge` works and that each failure elsewhere is due to its one defect.
    async fn assert_control_active(&self) {
        let claims = good_claims(&self.forgeries);
        let token = forge(
            good_header(&self.forgeries),
            claims.clone(),
            &self.forgeries.key,
        );
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
        let control = Forgery {
            class: "control",
            name: "control".into(),
            token,
        };
        let flagged = not_bare_inactive(&self.server, &self.admin, &[control]).await;
        assert_eq!(flagged.len(), 1, "the checker flags an active token");
    }

    /// Asserts that nothing connected to the URL the `jku` and `x5u` vectors name.
    async fn assert_key_url_never_fetched(&self) {
        let connected =
            tokio::time::timeout(Duration::from_millis(500), self.key_url_listener.accept()).await;
        assert!(
            connected.is_err(),
            "the server connected to a URL named in a token header: {connected:?}"
        );
    }

    async fn stop(self) {
        self.server.stop().await;
        drop(self.setup);
    }
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
        ..IntrospectTokenResponse::default()
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

/// Every shared forgery vector, asked by the admin (who sees every audience) with no presented
/// certificate; and no URL a header names is ever fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shared_forgery_is_bare_inactive() {
    let fx = Fixture::start().await;
    fx.assert_control_active().await;
    let cases = forgeries::vectors(&fx.forgeries);
    assert_all_bare_inactive(&fx.server, &fx.admin, &cases).await;
    fx.assert_key_url_never_fetched().await;
    fx.stop().await;
}

/// Not a shared vector: the token alone is valid, and only the issuer knows that no client of
/// that name is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validly_signed_token_of_a_client_never_registered_is_bare_inactive() {
    let fx = Fixture::start().await;
    fx.assert_control_active().await;
    let ctx = &fx.forgeries;
    let claims = with(
        with(good_claims(ctx), "client_id", json!("ghost")),
        "sub",
        json!("ghost"),
    );
    let cases = [Forgery {
        class: "bad-claims",
        name: "client_id of no registered client".into(),
        token: forge(good_header(ctx), claims, &ctx.key),
    }];
    assert_all_bare_inactive(&fx.server, &fx.admin, &cases).await;
    fx.stop().await;
}

/// The controls for the `bad-claims` vectors: within the 30 s leeway, and `aud` as an array,
/// a validly signed token is active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_within_the_leeway_or_with_aud_as_an_array_are_active() {
    let fx = Fixture::start().await;
    let ctx = &fx.forgeries;
    let now = ctx.now.as_secs();
    let base = || good_claims(ctx);
    let controls = [
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
    ];
    for (what, claims) in controls {
        let token = forge(good_header(ctx), claims, &ctx.key);
        let answer = introspect(&fx.server, &fx.admin, &token, None)
            .await
            .unwrap();
        assert!(answer.active, "{what}");
    }
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
