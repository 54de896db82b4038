//! Transaction tokens (draft-ietf-oauth-transaction-tokens-10) over real mTLS: issued by
//! token exchange from an access token the edge received or a subject the edge names itself,
//! replaced along the chain keeping the transaction id, never taken as an access token, and
//! checked where they are received: by `tokenmint-verify` (its entry point and layer) and by
//! the sidecar per path; asked for through `tokenmint-client` and the CLI.

use serde_json::Value;
use tokenmint::grpc::proto::ExchangeTokenRequest;
use tokenmint_core::{
    clock::{Clock as _, SystemClock, UnixTime},
    jose, txn,
};

use crate::{exchange::*, support::*};

/// The trust domain of these tests.
const DOMAIN: &str = "spiffe://tokenmint.test";

/// The chain's clients with transaction tokens on for [`DOMAIN`].
fn txn_setup() -> Setup {
    Setup::new(&format!(
        "[txn_tokens]\ntrust_domain = \"{DOMAIN}\"\nlifetime = \"30s\"\n{}",
        chain_clients()
    ))
}

/// A transaction-token request for `subject_token` of `subject_type`, for `scope`.
fn txn_request(subject_token: &str, subject_type: &str, scope: &[&str]) -> ExchangeTokenRequest {
    ExchangeTokenRequest {
        subject_token: subject_token.to_owned(),
        subject_token_type: subject_type.to_owned(),
        requested_token_type: txn::TXN_TOKEN_TYPE.into(),
        audiences: vec![DOMAIN.into()],
        scopes: scope.iter().map(|s| (*s).to_owned()).collect(),
        ..ExchangeTokenRequest::default()
    }
}

/// An issuer started from `setup`, its parties, A's access token, and the transaction token
/// B started from it for `orders:read` (as issued).
struct Started {
    server: TestServer,
    parties: Parties,
    a: String,
    txn: tokenmint::grpc::proto::ExchangeTokenResponse,
}

async fn started(setup: &Setup) -> Started {
    let server = setup.start().await;
    let parties = Parties::of(setup);
    let a = a_token(&server, &parties).await;
    let txn = exchange(
        &server,
        &parties.b,
        txn_request(&a, ACCESS_TOKEN, &["orders:read"]),
    )
    .await
    .unwrap();
    Started {
        server,
        parties,
        a,
        txn,
    }
}

/// The claims of a transaction token, verified against the published keys as a receiving
/// workload checks it; and its header's `typ`.
async fn txn_claims(server: &TestServer, token: &str) -> (txn::TxnTokenClaims, String) {
    let jwks = jose::parse_jwks(&server.jwks().await.jwks_json)
        .unwrap()
        .keys;
    let now = UnixTime::of(SystemClock.now());
    let claims =
        txn::verify_txn(token, &jwks, ISSUER, DOMAIN, now, std::time::Duration::ZERO).unwrap();
    let header = token.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&tokenmint_core::crypto::b64url_decode(header).unwrap()).unwrap();
    (claims, header["typ"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_token_from_an_access_token_is_replaced_along_the_chain() {
    let setup = txn_setup();
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let a = a_token(&server, &parties).await;

    // B, the edge serving A's call, asks over HTTP with the details of the request.
    let (status, body) = post_form(
        &https_as(&setup, &parties.b),
        &server,
        "/oauth2/token",
        &exchange_form(
            &a,
            &[
                ("requested_token_type", txn::TXN_TOKEN_TYPE),
                ("audience", DOMAIN),
                ("scope", "orders:read orders:write"),
                ("request_details", r#"{"order":42}"#),
                ("request_context", r#"{"req_ip":"10.0.0.1"}"#),
            ],
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "N_A");
    assert_eq!(body["issued_token_type"], txn::TXN_TOKEN_TYPE);
    let first = body["access_token"].as_str().unwrap().to_owned();
    let (claims, typ) = txn_claims(&server, &first).await;
    assert_eq!(typ, "txntoken+jwt");
    assert_eq!((claims.sub.as_str(), claims.aud.as_str()), ("a", DOMAIN));
    assert_eq!(claims.scope, "orders:read orders:write");
    assert_eq!(claims.req_wl, "b");
    assert_eq!(claims.tctx.as_ref().unwrap()["order"], 42);
    assert_eq!(claims.rctx.as_ref().unwrap()["req_ip"], "10.0.0.1");
    assert!(
        claims.exp.since(claims.iat).as_secs() <= 30,
        "the configured lifetime"
    );

    // C replaces it over gRPC, narrowing the purpose: the same transaction.
    let replaced = exchange(
        &server,
        &parties.c,
        txn_request(&first, txn::TXN_TOKEN_TYPE, &["orders:read"]),
    )
    .await
    .unwrap();
    assert_eq!(replaced.token_type, "N_A");
    assert_eq!(replaced.issued_token_type, txn::TXN_TOKEN_TYPE);
    let (second, _) = txn_claims(&server, &replaced.access_token).await;
    assert_eq!(second.txn, claims.txn, "one transaction id for the chain");
    assert_eq!((second.sub.as_str(), second.aud.as_str()), ("a", DOMAIN));
    assert_eq!(second.scope, "orders:read");
    assert_eq!(second.requesters(), ["b", "c"]);
    assert_eq!((&second.tctx, &second.rctx), (&claims.tctx, &claims.rctx));
    assert!(second.exp <= claims.exp, "never past the token it replaced");

    // A context member is kept, never changed, by a replacement.
    let changed = ExchangeTokenRequest {
        request_context: r#"{"req_ip":"10.0.0.2"}"#.into(),
        ..txn_request(&first, txn::TXN_TOKEN_TYPE, &["orders:read"])
    };
    let message = assert_exchange_refused(
        exchange(&server, &parties.c, changed).await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
    assert!(message.contains("rctx member \"req_ip\""), "{message}");

    // Widening on replacement is refused.
    assert_exchange_refused(
        exchange(
            &server,
            &parties.d,
            txn_request(
                &replaced.access_token,
                txn::TXN_TOKEN_TYPE,
                &["orders:write"],
            ),
        )
        .await,
        tonic::Code::InvalidArgument,
        "invalid_scope",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_token_is_never_an_access_token() {
    let setup = txn_setup();
    let Started {
        server,
        parties,
        a,
        txn: issued,
    } = started(&setup).await;
    let token = issued.access_token;
    // Not at introspection…
    let answer = introspect(&server, &parties.admin, &token, None)
        .await
        .unwrap();
    assert!(
        !answer.active,
        "a transaction token introspected as an access token"
    );
    // …nor as the subject of an access-token exchange.
    assert_exchange_refused(
        exchange(&server, &parties.c, exchange_request(&token)).await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
    // An access token is not a transaction token to replace either.
    assert_exchange_refused(
        exchange(
            &server,
            &parties.c,
            txn_request(&a, txn::TXN_TOKEN_TYPE, &["orders:read"]),
        )
        .await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_token_requests_are_refused_with_their_codes() {
    let setup = txn_setup();
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let a = a_token(&server, &parties).await;
    let refused = |request, code: &'static str| {
        let server = &server;
        let b = &parties.b;
        async move {
            assert_exchange_refused(
                exchange(server, b, request).await,
                tonic::Code::InvalidArgument,
                code,
            )
        }
    };
    // Broader than the access token, another trust domain, no purpose.
    refused(
        txn_request(&a, ACCESS_TOKEN, &["orders:admin"]),
        "invalid_scope",
    )
    .await;
    let mut elsewhere = txn_request(&a, ACCESS_TOKEN, &["orders:read"]);
    elsewhere.audiences = vec!["spiffe://elsewhere.test".into()];
    refused(elsewhere, "invalid_target").await;
    refused(txn_request(&a, ACCESS_TOKEN, &[]), "invalid_request").await;
    // Unsigned and self-signed subjects: not from a client not registered for them.
    let unsigned = r#"{"sub":"anyone"}"#;
    let message = refused(
        txn_request(unsigned, txn::UNSIGNED_JSON_TYPE, &["orders:read"]),
        "invalid_request",
    )
    .await;
    assert!(message.contains("not registered"), "{message}");
    refused(
        txn_request(&a, txn::SELF_SIGNED_TYPE, &["orders:read"]),
        "invalid_request",
    )
    .await;
    // A context that is not a JSON object.
    let mut bad = txn_request(&a, ACCESS_TOKEN, &["orders:read"]);
    bad.request_details = "[1,2]".into();
    refused(bad, "invalid_request").await;
    // What a transaction-token request does not take: an actor token, may_act, a lifetime,
    // more scopes than any request may name.
    let ask = || txn_request(&a, ACCESS_TOKEN, &["orders:read"]);
    let with_actor = ExchangeTokenRequest {
        actor_token: a.clone(),
        actor_token_type: ACCESS_TOKEN.into(),
        ..ask()
    };
    let with_lifetime = ExchangeTokenRequest {
        lifetime: Some(prost_types::Duration {
            seconds: 10,
            nanos: 0,
        }),
        ..ask()
    };
    let scopes: Vec<String> = (0..=tokenmint_core::token::MAX_REQUESTED_VALUES)
        .map(|i| format!("s{i}"))
        .collect();
    let too_many = ExchangeTokenRequest { scopes, ..ask() };
    for (request, says) in [
        (with_actor, "no actor_token"),
        (with_lifetime, "no may_act or lifetime"),
        (too_many, "scopes"),
    ] {
        let message = refused(request, "invalid_request").await;
        assert!(message.contains(says), "{says}: {message}");
    }
    // Two contexts of 4 KiB each would make a token no verifier reads: refused, never
    // signed and sent.
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(4000));
    let oversized = ExchangeTokenRequest {
        request_context: big.clone(),
        request_details: big,
        ..ask()
    };
    let message = refused(oversized, "invalid_request").await;
    assert!(message.contains("less context"), "{message}");
    // may_act, which only the form can carry, likewise.
    let (status, body) = post_form(
        &https_as(&setup, &parties.b),
        &server,
        "/oauth2/token",
        &exchange_form(
            &a,
            &[
                ("requested_token_type", txn::TXN_TOKEN_TYPE),
                ("audience", DOMAIN),
                ("scope", "orders:read"),
                ("may_act", "c"),
            ],
        ),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &Value::from("invalid_request")),
        "{body}"
    );
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains("no may_act"), "{body}");
    // An access token for an audience the caller does not serve: C cannot start a
    // transaction from A's token for B.
    assert_exchange_refused(
        exchange(&server, &parties.c, ask()).await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );

    // Without a trust domain the issuer gives none.
    let off = Setup::new(&chain_clients());
    let off_server = off.start().await;
    let off_parties = Parties::of(&off);
    let a = a_token(&off_server, &off_parties).await;
    let message = assert_exchange_refused(
        exchange(
            &off_server,
            &off_parties.b,
            txn_request(&a, ACCESS_TOKEN, &["orders:read"]),
        )
        .await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
    assert!(
        message.contains("does not issue transaction tokens"),
        "{message}"
    );
}

/// A workload's verifier for `domain`'s transaction tokens, fed by `server` over gRPC.
async fn workload_verifier(
    setup: &Setup,
    server: &TestServer,
    rs: &tokenmint::pki::Issued,
    domain: &str,
) -> tokenmint_verify::Verifier {
    let builder = tokenmint_verify::Verifier::builder(ISSUER)
        .audience(B_AUD)
        .trust_domain(domain);
    crate::verifier::ready(crate::verifier::with_source(builder, setup, server, rs)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hop_verifies_the_transaction_token_from_a_workload_of_the_domain() {
    use tokenmint_verify::VerifyError;
    let setup = txn_setup();
    let Started {
        server,
        parties,
        a,
        txn,
    } = started(&setup).await;
    let first = txn.access_token;
    let at_c = workload_verifier(&setup, &server, &parties.rs, DOMAIN).await;
    let from_b = crate::verifier::peer(&parties.b);
    let now = at_c.now();
    let verified = at_c.verify_txn(&first, Some(&from_b), now).await.unwrap();
    assert_eq!(
        (verified.sub.as_str(), verified.req_wl.as_str()),
        ("a", "b")
    );
    assert_eq!(verified, txn_claims(&server, &first).await.0);
    // Unbound and replayable: only from a workload presenting a certificate.
    assert_eq!(
        at_c.verify_txn(&first, None, now).await,
        Err(VerifyError::CertificateRequired)
    );
    // An access token is not a transaction token, nor the reverse.
    assert_eq!(
        at_c.verify_txn(&a, Some(&from_b), now).await,
        Err(VerifyError::WrongType)
    );
    assert_eq!(
        at_c.verify(&first, Some(&from_b), now).await.map(drop),
        Err(VerifyError::WrongType)
    );
    // Expired (past exp and the leeway), or for another trust domain.
    let later = now.saturating_add(std::time::Duration::from_secs(3600));
    assert_eq!(
        at_c.verify_txn(&first, Some(&from_b), later).await,
        Err(VerifyError::Expired)
    );
    let elsewhere =
        workload_verifier(&setup, &server, &parties.rs, "spiffe://elsewhere.test").await;
    assert_eq!(
        elsewhere.verify_txn(&first, Some(&from_b), now).await,
        Err(VerifyError::WrongAudience)
    );
    // A verifier with no trust domain takes none; nor one issued in the future.
    let builder = tokenmint_verify::Verifier::builder(ISSUER).audience(B_AUD);
    let no_domain = crate::verifier::ready(crate::verifier::with_source(
        builder,
        &setup,
        &server,
        &parties.rs,
    ))
    .await;
    assert_eq!(
        no_domain.verify_txn(&first, Some(&from_b), now).await,
        Err(VerifyError::WrongAudience)
    );
    let earlier = now.saturating_sub(std::time::Duration::from_secs(3600));
    assert_eq!(
        at_c.verify_txn(&first, Some(&from_b), earlier).await,
        Err(VerifyError::NotYetValid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_takes_the_txn_token_header_and_hands_the_token_to_the_handler() {
    use axum::{Extension, Router, body::Body, routing::get};
    use http::{Request, StatusCode};
    use std::sync::Arc;
    use tokenmint_verify::{TxnToken, VerifyLayer};
    use tower::ServiceExt as _;

    let setup = txn_setup();
    let Started {
        server,
        parties,
        a,
        txn,
    } = started(&setup).await;
    let txn_token = txn.access_token;
    let verifier = workload_verifier(&setup, &server, &parties.rs, DOMAIN).await;
    let handler = get(|Extension(t): Extension<Arc<TxnToken>>| async move {
        format!("{} {} {}", t.sub, t.req_wl, t.scope)
    });
    let router = |layer: VerifyLayer| Router::new().route("/", handler.clone()).layer(layer);
    let call = |router: Router, header: Option<(&str, &str)>, certificate: bool| {
        let mut request = Request::get("/");
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let mut request = request.body(Body::empty()).unwrap();
        if certificate {
            request
                .extensions_mut()
                .insert(crate::verifier::peer(&parties.b));
        }
        router.oneshot(request)
    };
    let guarded = router(VerifyLayer::txn(verifier.clone()));
    let response = call(guarded.clone(), Some(("txn-token", &txn_token)), true)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    assert_eq!(body, "a b orders:read");
    // In Authorization it is not a transaction token; without a certificate, refused; an
    // access token in Txn-Token, refused.
    let bearer = format!("Bearer {txn_token}");
    for (header, certificate) in [
        (Some(("authorization", bearer.as_str())), true),
        (Some(("txn-token", txn_token.as_str())), false),
        (Some(("txn-token", a.as_str())), true),
        (None, true),
    ] {
        let response = call(guarded.clone(), header, certificate).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header:?}");
    }
    // A purpose the token lacks.
    let scoped = router(VerifyLayer::txn(verifier).require_scope("orders:write"));
    let response = call(scoped, Some(("txn-token", &txn_token)), true)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

/// The edge gateway: registered to name a transaction's subject itself.
const EDGE_URI: &str = "spiffe://tokenmint.test/edge";

/// [`txn_setup`] with the edge gateway registered.
fn edge_setup() -> Setup {
    let edge = format!(
        "[[clients]]\nid = \"edge\"\nsan_uri = \"{EDGE_URI}\"\n\
         scopes = [\"orders:read\", \"orders:write\"]\nasserts_txn_subjects = true\n"
    );
    Setup::new(&format!(
        "[txn_tokens]\ntrust_domain = \"{DOMAIN}\"\nlifetime = \"30s\"\n{}",
        chain_clients_with(&[], &edge)
    ))
}

/// A self-signed subject assertion for `sub` from `iss`, signed with `key_of`'s certificate
/// key, living `lifetime` seconds from now.
fn self_signed(key_of: &tokenmint::pki::Issued, iss: &str, sub: &str, lifetime: i64) -> String {
    use tokenmint_core::crypto::{Algorithm, SigningKey};
    let pkcs8 = rcgen::KeyPair::from_pem(&key_of.key_pem)
        .unwrap()
        .serialize_der();
    let key = SigningKey::try_from_pkcs8(Algorithm::Es256, &pkcs8).unwrap();
    let now = UnixTime::of(SystemClock.now()).as_secs();
    crate::forgeries::forge(
        serde_json::json!({"alg": "ES256", "typ": "JWT"}),
        serde_json::json!({"iss": iss, "sub": sub, "aud": ISSUER, "iat": now, "exp": now + lifetime}),
        &key,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_registered_for_it_names_the_subject_unsigned_or_self_signed() {
    let setup = edge_setup();
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let edge = setup.pki.client_uri(EDGE_URI);

    // Unsigned JSON: the subject as the edge says, a new transaction, the edge's scopes.
    let unsigned = r#"{"sub":"user:alice","amr":["pwd"]}"#;
    let issued = exchange(
        &server,
        &edge,
        txn_request(unsigned, txn::UNSIGNED_JSON_TYPE, &["orders:read"]),
    )
    .await
    .unwrap();
    let (claims, _) = txn_claims(&server, &issued.access_token).await;
    assert_eq!(
        (claims.sub.as_str(), claims.req_wl.as_str()),
        ("user:alice", "edge")
    );
    assert_eq!(claims.scope, "orders:read");
    // The chain goes on from it as from any other.
    let replaced = exchange(
        &server,
        &parties.c,
        txn_request(&issued.access_token, txn::TXN_TOKEN_TYPE, &["orders:read"]),
    )
    .await
    .unwrap();
    let (next, _) = txn_claims(&server, &replaced.access_token).await;
    assert_eq!((&next.txn, next.sub.as_str()), (&claims.txn, "user:alice"));
    assert_eq!(next.requesters(), ["edge", "c"]);
    // Over the OAuth form as over gRPC; and refused there to a client not registered for it.
    let form = |subject: &'static str| {
        [
            ("grant_type", EXCHANGE_GRANT),
            ("subject_token", subject),
            ("subject_token_type", txn::UNSIGNED_JSON_TYPE),
            ("requested_token_type", txn::TXN_TOKEN_TYPE),
            ("audience", DOMAIN),
            ("scope", "orders:read"),
        ]
    };
    let (status, body) = post_form(
        &https_as(&setup, &edge),
        &server,
        "/oauth2/token",
        &form(unsigned),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let over_http = body["access_token"].as_str().unwrap();
    assert_eq!(txn_claims(&server, over_http).await.0.sub, "user:alice");
    let (status, body) = post_form(
        &https_as(&setup, &parties.b),
        &server,
        "/oauth2/token",
        &form(unsigned),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &Value::from("invalid_request")),
        "{body}"
    );

    // Self-signed with the key of the certificate the edge presents: never outliving it.
    let assertion = self_signed(&edge, "edge", "user:bob", 10);
    let issued = exchange(
        &server,
        &edge,
        txn_request(&assertion, txn::SELF_SIGNED_TYPE, &["orders:write"]),
    )
    .await
    .unwrap();
    let (claims, _) = txn_claims(&server, &issued.access_token).await;
    assert_eq!(claims.sub, "user:bob");
    assert!(
        claims.exp.since(claims.iat).as_secs() <= 10,
        "not past the assertion"
    );

    // Refused: another workload's key, another `iss`, a purpose beyond the edge's scopes.
    let refused = |subject: String, kind: &'static str, scope: &'static str| {
        let (server, edge) = (&server, &edge);
        async move { exchange(server, edge, txn_request(&subject, kind, &[scope])).await }
    };
    let cases = [
        (
            self_signed(&parties.b, "edge", "user:bob", 10),
            "invalid_request",
            "not signed with the key",
        ),
        (
            self_signed(&edge, "b", "user:bob", 10),
            "invalid_request",
            "`iss`",
        ),
        (
            self_signed(&edge, "edge", "user:bob", 600),
            "invalid_request",
            "at most 5 minutes",
        ),
    ];
    for (subject, code, why) in cases {
        let result = refused(subject, txn::SELF_SIGNED_TYPE, "orders:read").await;
        let message = assert_exchange_refused(result, tonic::Code::InvalidArgument, code);
        assert!(message.contains(why), "{why}: {message}");
    }
    let result = refused(
        r#"{"subject":"x"}"#.into(),
        txn::UNSIGNED_JSON_TYPE,
        "orders:read",
    )
    .await;
    let message = assert_exchange_refused(result, tonic::Code::InvalidArgument, "invalid_request");
    assert!(message.contains("`sub`"), "{message}");
    let result = refused(unsigned.into(), txn::UNSIGNED_JSON_TYPE, "orders:admin").await;
    assert_exchange_refused(result, tonic::Code::InvalidArgument, "invalid_scope");

    // B, not registered for it, may not name a subject, even with its own valid assertion.
    let own = self_signed(&parties.b, "b", "user:bob", 10);
    let message = assert_exchange_refused(
        exchange(
            &server,
            &parties.b,
            txn_request(&own, txn::SELF_SIGNED_TYPE, &["orders:read"]),
        )
        .await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
    assert!(message.contains("not registered"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_requires_a_transaction_token_where_the_path_says() {
    use crate::authz::{authz_config_with, envoy_ask, envoy_check, nginx_header, start};
    let setup = txn_setup();
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let chain = build_chain(&server, &parties).await;
    // B starts the transaction from A's token; C, which calls D, replaces it.
    let first = exchange(
        &server,
        &parties.b,
        txn_request(&chain.a, ACCESS_TOKEN, &["orders:read"]),
    )
    .await
    .unwrap()
    .access_token;
    let txn = exchange(
        &server,
        &parties.c,
        txn_request(&first, txn::TXN_TOKEN_TYPE, &["orders:read"]),
    )
    .await
    .unwrap()
    .access_token;
    let (claims, _) = txn_claims(&server, &txn).await;

    // The sidecar in front of D: /orders needs a transaction for orders:read, /audit one for
    // orders:write, /status none.
    let extra = format!(
        "trust_domain = \"{DOMAIN}\"\n\
         txn_required = {{ \"/orders\" = [\"orders:read\"], \"/audit\" = [\"orders:write\"] }}\n"
    );
    let env = vec![(
        "TOKENMINT__AUTHZ__AUDIENCES".to_owned(),
        format!("[\"{D_AUD}\"]"),
    )];
    let sidecar = start(authz_config_with(&setup, &server, &extra, env)).await;
    let ask = |path: &'static str, txn_token: Option<&str>| {
        let mut request = reqwest::Client::new()
            .get(&sidecar.verify)
            .header("x-original-uri", path)
            .header("x-ssl-client-cert", nginx_header(&parties.c))
            .bearer_auth(&chain.c.access_token)
            // A caller's own claims count for nothing.
            .header("x-tokenmint-txn-subject", "root");
        if let Some(token) = txn_token {
            request = request.header("txn-token", token);
        }
        request.send()
    };
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let allowed = ask("/orders/7", Some(&txn)).await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        header(&allowed, "x-tokenmint-txn"),
        Some(claims.txn.clone())
    );
    assert_eq!(
        header(&allowed, "x-tokenmint-txn-subject").as_deref(),
        Some("a")
    );
    assert_eq!(
        header(&allowed, "x-tokenmint-txn-scope").as_deref(),
        Some("orders:read")
    );
    assert_eq!(
        header(&allowed, "x-tokenmint-client-id").as_deref(),
        Some("c")
    );

    let status = ask("/status", None).await.unwrap();
    assert_eq!(status.status(), 200, "no transaction token needed there");
    assert_eq!(
        header(&status, "x-tokenmint-txn-subject").as_deref(),
        Some("")
    );

    // Refused with 403 and invalid_request: none where one is needed, a purpose it lacks, one
    // that is not good even where none is needed, and an access token in its place.
    for (path, token, reason) in [
        ("/orders", None, "txn_token_missing"),
        ("/public/../orders", None, "txn_token_missing"),
        ("/audit", Some(txn.as_str()), "txn_insufficient_purpose"),
        ("/status", Some("not-a-token"), "txn_token_invalid"),
        (
            "/orders",
            Some(chain.c.access_token.as_str()),
            "txn_token_invalid",
        ),
    ] {
        let refused = ask(path, token).await.unwrap();
        assert_eq!(refused.status(), 403, "{path} {reason}");
        let challenge = header(&refused, "www-authenticate").unwrap();
        assert!(challenge.contains("invalid_request"), "{challenge}");
        assert!(header(&refused, "x-tokenmint-txn").is_none());
    }
    // Two of them: the second would reach the service unchecked. Refused.
    let twice = reqwest::Client::new()
        .get(&sidecar.verify)
        .header("x-original-uri", "/orders")
        .header("x-ssl-client-cert", nginx_header(&parties.c))
        .bearer_auth(&chain.c.access_token)
        .header("txn-token", &txn)
        .header("txn-token", "not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 403);
    // Nor is a transaction token ever the bearer token there.
    let as_bearer = reqwest::Client::new()
        .get(&sidecar.verify)
        .header("x-original-uri", "/status")
        .header("x-ssl-client-cert", nginx_header(&parties.c))
        .bearer_auth(&txn)
        .send()
        .await
        .unwrap();
    assert_eq!(as_bearer.status(), 401);
    let metrics = sidecar.metrics().await;
    for reason in [
        "txn_token_missing",
        "txn_insufficient_purpose",
        "txn_token_invalid",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason}: {metrics}"
        );
    }

    // Envoy's ext_authz over gRPC takes the header the same way.
    let mut check = envoy_check(Some(&chain.c.access_token), &nginx_header(&parties.c), None);
    let answer = envoy_ask(&sidecar.grpc, check.clone()).await;
    assert_eq!(
        (answer.code, answer.status),
        (7, 403),
        "/orders?page=2 without one"
    );
    let request = check.attributes.as_mut().unwrap().request.as_mut().unwrap();
    let http = request.http.as_mut().unwrap();
    http.headers.insert("txn-token".into(), txn.clone());
    let answer = envoy_ask(&sidecar.grpc, check).await;
    assert_eq!((answer.code, answer.status), (0, 200), "{answer:?}");
    assert_eq!(answer.headers["x-tokenmint-txn-subject"], "a");
    sidecar.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_transaction_token_is_neither_replaced_nor_verified() {
    let setup = Setup::new(&format!(
        "[txn_tokens]\ntrust_domain = \"{DOMAIN}\"\nlifetime = \"1s\"\n{}",
        chain_clients()
    ));
    let Started {
        server,
        parties,
        txn: issued,
        ..
    } = started(&setup).await;
    assert_eq!(issued.expires_in, 1);
    // A workload's verifier without clock-skew leeway, so the expiry is its own.
    let rs = setup.pki.client_uri(RS_URI);
    let builder = tokenmint_verify::Verifier::builder(ISSUER)
        .audience(B_AUD)
        .trust_domain(DOMAIN)
        .leeway(std::time::Duration::ZERO);
    let verifier =
        crate::verifier::ready(crate::verifier::with_source(builder, &setup, &server, &rs)).await;
    let presenter = tokenmint_verify::PeerCertificate::from_der(parties.c.cert_der.clone());
    let good = verifier
        .verify_txn(&issued.access_token, Some(&presenter), verifier.now())
        .await;
    assert!(good.is_ok(), "{good:?}");

    // Past its `exp` (whole seconds): no replacement, and a workload refuses it.
    let (claims, _) = txn_claims(&server, &issued.access_token).await;
    while UnixTime::of(SystemClock.now()) < claims.exp {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let message = assert_exchange_refused(
        exchange(
            &server,
            &parties.c,
            txn_request(&issued.access_token, txn::TXN_TOKEN_TYPE, &["orders:read"]),
        )
        .await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
    assert!(message.contains("subject_token"), "{message}");
    let expired = verifier
        .verify_txn(&issued.access_token, Some(&presenter), verifier.now())
        .await;
    assert!(
        matches!(expired, Err(tokenmint_verify::VerifyError::Expired)),
        "{expired:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenmint_client_asks_for_and_replaces_transaction_tokens() {
    use tokenmint_client::{Client, TokenError, TxnSpec, TxnSubject};
    let setup = edge_setup();
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let client_of = |cert: &tokenmint::pki::Issued| {
        Client::builder(
            format!("https://localhost:{}", server.addr.port()),
            std::sync::Arc::new(crate::support::rustls_client(&setup, Some(cert))),
        )
        .build()
        .unwrap()
    };
    let (b, c) = (client_of(&parties.b), client_of(&parties.c));
    let a = a_token(&server, &parties).await;

    // B, the edge, from A's access token, with the request's details.
    let spec = TxnSpec::new(DOMAIN, ["orders:read", "orders:write"])
        .with_request_details(r#"{"order":42}"#);
    let first = b
        .txn_token(TxnSubject::AccessToken(&a), &spec)
        .await
        .unwrap();
    assert_eq!(first.purpose, ["orders:read", "orders:write"]);
    assert!(
        !format!("{first:?}").contains(first.secret()),
        "Debug hides it"
    );
    let header = first.header_value().unwrap();
    assert!(header.is_sensitive());
    let (claims, _) = txn_claims(&server, first.secret()).await;
    assert_eq!((claims.sub.as_str(), claims.req_wl.as_str()), ("a", "b"));
    assert_eq!(claims.tctx.unwrap()["order"], 42);

    // C replaces it, narrowing the purpose: the same transaction.
    let narrower = TxnSpec::new(DOMAIN, ["orders:read"]);
    let second = c
        .txn_token(TxnSubject::Replace(first.secret()), &narrower)
        .await
        .unwrap();
    let (next, _) = txn_claims(&server, second.secret()).await;
    assert_eq!(
        (&next.txn, next.requesters()),
        (&claims.txn, vec!["b", "c"])
    );
    assert!(second.expires_at <= first.expires_at);

    // The edge names a subject itself; B may not. Refusals carry the OAuth2 code.
    let edge = client_of(&setup.pki.client_uri(EDGE_URI));
    let named = edge
        .txn_token(
            TxnSubject::UnsignedJson(r#"{"sub":"user:alice"}"#),
            &narrower,
        )
        .await
        .unwrap();
    assert_eq!(
        txn_claims(&server, named.secret()).await.0.sub,
        "user:alice"
    );
    let refused = b
        .txn_token(
            TxnSubject::UnsignedJson(r#"{"sub":"user:alice"}"#),
            &narrower,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, TokenError::Refused { code, .. } if code == "invalid_request"),
        "{refused:?}"
    );
    let elsewhere = TxnSpec::new("spiffe://elsewhere.test", ["orders:read"]);
    let refused = b
        .txn_token(TxnSubject::AccessToken(&a), &elsewhere)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, TokenError::Refused { code, .. } if code == "invalid_target"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_asks_for_replaces_and_names_transaction_tokens() {
    let setup = edge_setup();
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let edge = setup.pki.client_uri(EDGE_URI);
    let a = a_token(&server, &parties).await;
    std::fs::write(setup.path().join("a.txt"), &a).unwrap();
    let subject = r#"{"sub":"user:alice"}"#;
    std::fs::write(setup.path().join("subject.json"), subject).unwrap();
    let (setup_ref, server_ref) = (&setup, &server);
    let txn_args = |more: &[&'static str]| {
        let mut args = vec!["exchange", "--txn", "--audience", DOMAIN];
        args.extend_from_slice(more);
        args
    };
    let (first, replaced, named) = tokio::task::block_in_place(|| {
        let first = cli(
            setup_ref,
            server_ref,
            ("b", &parties.b),
            &txn_args(&[
                "--subject-token-file",
                "a.txt",
                "--scope",
                "orders:read",
                "--request-details",
                r#"{"order":42}"#,
            ]),
        );
        std::fs::write(setup_ref.path().join("b.json"), first.to_string()).unwrap();
        let replaced = cli(
            setup_ref,
            server_ref,
            ("c", &parties.c),
            &txn_args(&[
                "--subject-token-type",
                "txn-token",
                "--subject-token-file",
                "b.json",
                "--scope",
                "orders:read",
            ]),
        );
        let named = cli(
            setup_ref,
            server_ref,
            ("edge", &edge),
            &txn_args(&[
                "--subject-token-type",
                "unsigned-json",
                "--subject-token-file",
                "subject.json",
                "--scope",
                "orders:read",
            ]),
        );
        (first, replaced, named)
    });
    assert_eq!(
        (&first["token_type"], &first["issued_token_type"]),
        (&Value::from("N_A"), &Value::from(txn::TXN_TOKEN_TYPE))
    );
    let token = |printed: &Value| printed["access_token"].as_str().unwrap().to_owned();
    let (first, _) = txn_claims(&server, &token(&first)).await;
    assert_eq!(first.tctx.as_ref().unwrap()["order"], 42);
    let (replaced, _) = txn_claims(&server, &token(&replaced)).await;
    assert_eq!(
        (&replaced.txn, replaced.requesters()),
        (&first.txn, vec!["b", "c"])
    );
    let (named, _) = txn_claims(&server, &token(&named)).await;
    assert_eq!(
        (named.sub.as_str(), named.req_wl.as_str()),
        ("user:alice", "edge")
    );
}
