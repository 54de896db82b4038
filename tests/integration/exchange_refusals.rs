//! Every refusal of a token exchange (RFC 8693), on both faces: gRPC `ExchangeToken`
//! (`INVALID_ARGUMENT` with the OAuth2 code in `oauth-error` and first in the message) and
//! the HTTP token endpoint (400 with the RFC 6749 §5.2 JSON body and `no-store`), with the
//! same description on each. A subject token that is garbage, expired, revoked, forged or
//! another issuer's gets one and the same description; a policy refusal says which rule
//! refused (served audience, registration, `may_act`, depth); an audience or a scope past
//! what may be passed on is `invalid_target` or `invalid_scope`; no certificate is
//! `invalid_client`. Where a refusal could be mistaken for a broken setup, a control shows
//! the same exchange, with the one defect removed, succeeding.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokenmint::{
    grpc::proto::{
        ClientSpec, ExchangeTokenRequest, ExchangeTokenResponse, IssueTokenRequest,
        UpdateClientRequest,
    },
    pki::Issued,
};
use tokenmint_core::{
    clock::{Clock as _, ManualClock, SystemClock},
    crypto::{Algorithm, SigningKey, b64url, b64url_decode},
};

use crate::{
    exchange::*,
    forgeries::{forge, with},
    support::*,
};

/// `urn:ietf:params:oauth:token-type:jwt`.
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// A second server of A's calls, registered to act for A as B is.
const B2_URI: &str = "spiffe://tokenmint.test/b2";
const B2_AUD: &str = "https://b2.example";
/// A third server of A's calls, registered to act for C only.
const X_URI: &str = "spiffe://tokenmint.test/x";
const X_AUD: &str = "https://x.example";
/// Not a token at all.
const GARBAGE: &str = "garbage-that-is-not-a-compact-jws";
/// Words a description of an unusable subject token must not say: which check failed.
const TELLTALES: &[&str] = &[
    "expired",
    "revoked",
    "signature",
    "forged",
    "kid",
    "key",
    "malformed",
    "wrong",
    "another issuer",
    "unknown",
];

/// The chain's clients (`chain_clients`), and beside B two more servers of A's calls:
/// - `a` may also call B2 and X (its default audience stays B);
/// - `b2` serves B2 and acts for `a`, as `b` does;
/// - `x` serves X and acts for `c` only.
fn wide_clients() -> String {
    let b2 = delegate(
        "b2",
        B2_URI,
        B2_AUD,
        "a",
        C_AUD,
        &["orders:read", "orders:write"],
    );
    let x = delegate("x", X_URI, X_AUD, "c", D_AUD, &["orders:read"]);
    chain_clients_with(&[B2_AUD, X_AUD], &format!("{b2}{x}"))
}

// ---------------------------------------------------------------------------------------------
// Both faces.

/// The token endpoint's form for `request`, as a client of the HTTP face sends it: empty
/// fields left out, each audience an `audience`, the scopes space-separated.
fn form_of(request: &ExchangeTokenRequest) -> Vec<(&'static str, String)> {
    let mut pairs = vec![("grant_type", EXCHANGE_GRANT.to_owned())];
    for (name, value) in [
        ("client_id", &request.client_id),
        ("client_secret", &request.client_secret),
        ("subject_token", &request.subject_token),
        ("subject_token_type", &request.subject_token_type),
        ("actor_token", &request.actor_token),
        ("actor_token_type", &request.actor_token_type),
        ("requested_token_type", &request.requested_token_type),
    ] {
        if !value.is_empty() {
            pairs.push((name, value.clone()));
        }
    }
    for audience in &request.audiences {
        pairs.push(("audience", audience.clone()));
    }
    if !request.scopes.is_empty() {
        pairs.push(("scope", request.scopes.join(" ")));
    }
    pairs
}

fn as_refs<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// POSTs `pairs` to the token endpoint: the status, the headers and the JSON body.
async fn post_token(
    client: &reqwest::Client,
    server: &TestServer,
    pairs: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    post_form_answer(client, server, "/oauth2/token", pairs).await
}

/// Asserts the token endpoint refuses `pairs` with `status` and `error`, not to be cached and
/// with no token in it; the `error_description`.
async fn http_refused(
    client: &reqwest::Client,
    server: &TestServer,
    pairs: &[(&str, &str)],
    status: u16,
    error: &str,
) -> String {
    let (got, headers, body) = post_token(client, server, pairs).await;
    assert_eq!(
        (got, body["error"].as_str()),
        (status, Some(error)),
        "{body}"
    );
    assert_eq!(
        headers
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "{headers:?}"
    );
    assert!(
        body.get("access_token").is_none() && body.get("issued_token_type").is_none(),
        "a refusal carries no token: {body}"
    );
    body["error_description"]
        .as_str()
        .unwrap_or_else(|| panic!("an error_description: {body}"))
        .to_owned()
}

/// Asserts both faces refuse `request` from `cert` with `oauth` (gRPC `INVALID_ARGUMENT`,
/// HTTP 400) and the same description, which echoes neither token; the description.
async fn refused_on_both(
    setup: &Setup,
    server: &TestServer,
    cert: &Issued,
    request: ExchangeTokenRequest,
    oauth: &str,
) -> String {
    let form = form_of(&request);
    let tokens = [request.subject_token.clone(), request.actor_token.clone()];
    let message = assert_exchange_refused(
        exchange(server, cert, request).await,
        tonic::Code::InvalidArgument,
        oauth,
    );
    let description =
        http_refused(&https_as(setup, cert), server, &as_refs(&form), 400, oauth).await;
    assert_eq!(
        message,
        format!("{oauth}: {description}"),
        "both faces say the same"
    );
    for token in tokens.iter().filter(|t| t.len() > 16) {
        assert!(
            !message.contains(token.as_str()),
            "the refusal echoes a token: {message}"
        );
    }
    description
}

/// Asserts both faces grant `request` from `cert`: the gRPC answer and the HTTP body.
async fn granted_on_both(
    setup: &Setup,
    server: &TestServer,
    cert: &Issued,
    request: ExchangeTokenRequest,
) -> (ExchangeTokenResponse, Value) {
    let form = form_of(&request);
    let answer = exchange(server, cert, request)
        .await
        .unwrap_or_else(|status| panic!("the control is refused: {status:?}"));
    let (status, _, body) = post_token(&https_as(setup, cert), server, &as_refs(&form)).await;
    assert_eq!(status, 200, "the control is refused over HTTP: {body}");
    assert!(body["access_token"].as_str().is_some(), "{body}");
    (answer, body)
}

/// An exchange of `subject_token` asking for `audiences` and `scopes`.
fn asking(subject_token: &str, audiences: &[&str], scopes: &[&str]) -> ExchangeTokenRequest {
    ExchangeTokenRequest {
        audiences: audiences.iter().map(|s| (*s).to_owned()).collect(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..exchange_request(subject_token)
    }
}

/// A's token for `audiences`, letting `may_act` act for it (empty: nobody named).
async fn a_token_for(
    server: &TestServer,
    parties: &Parties,
    audiences: &[&str],
    may_act: &str,
) -> String {
    issue(
        server,
        &parties.a,
        IssueTokenRequest {
            audiences: audiences.iter().map(|s| (*s).to_owned()).collect(),
            may_act: may_act.to_owned(),
            ..IssueTokenRequest::default()
        },
    )
    .await
    .unwrap()
    .access_token
}

/// What both faces say of a subject token that is not an active token of this issuer: the
/// description for plain garbage, from `b`.
async fn garbage_description(setup: &Setup, server: &TestServer, parties: &Parties) -> String {
    refused_on_both(
        setup,
        server,
        &parties.b,
        exchange_request(GARBAGE),
        "invalid_request",
    )
    .await
}

/// Asserts `description` says the subject token is unusable, and nothing of why.
fn assert_tells_nothing(description: &str) {
    assert!(description.contains("subject_token"), "{description}");
    let lower = description.to_lowercase();
    for word in TELLTALES {
        assert!(
            !lower.contains(word),
            "the description says {word:?}: {description}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Forgeries of a real token.

fn segments(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS: {token}");
    [parts[0], parts[1], parts[2]]
}

fn json_segment(segment: &str) -> Value {
    serde_json::from_slice(&b64url_decode(segment).unwrap()).unwrap()
}

/// Forgeries of `token` (a real one), each named: its signature altered; its claims altered
/// under its signature; its claims signed by another key under the issuer's `kid`; `alg:
/// none`.
fn forgeries_of(token: &str) -> Vec<(&'static str, String)> {
    let [header, payload, signature] = segments(token);
    let mut altered = b64url_decode(signature).unwrap();
    altered[10] ^= 0x01;
    let claims = json_segment(payload);
    let longer = with(
        claims.clone(),
        "exp",
        Value::from(claims["exp"].as_i64().unwrap() + 3600),
    );
    let wider = with(
        claims.clone(),
        "scope",
        Value::from("orders:read orders:write orders:admin"),
    );
    let (other_key, _) = SigningKey::generate(Algorithm::Es256).unwrap();
    let mut none = json_segment(header);
    none["alg"] = Value::from("none");
    vec![
        (
            "its signature altered",
            format!("{header}.{payload}.{}", b64url(&altered)),
        ),
        (
            "its exp pushed out under its signature",
            format!(
                "{header}.{}.{signature}",
                b64url(longer.to_string().as_bytes())
            ),
        ),
        (
            "its scope widened under its signature",
            format!(
                "{header}.{}.{signature}",
                b64url(wider.to_string().as_bytes())
            ),
        ),
        (
            "its claims signed by another key under the issuer's kid",
            forge(json_segment(header), claims.clone(), &other_key),
        ),
        (
            "alg none",
            format!("{}.{payload}.", b64url(none.to_string().as_bytes())),
        ),
    ]
}

/// A token A holds from another tokenmint: its own PKI, its own keys, the same issuer name,
/// for B's audience, bound to A's certificate there.
async fn foreign_a_token() -> (Setup, TestServer, String) {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let token = a_token(&server, &Parties::of(&setup)).await;
    (setup, server, token)
}

// ---------------------------------------------------------------------------------------------
// The subject token.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_subject_token_is_invalid_request() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    for garbage in [GARBAGE, "a.b.c", "eyJhbGciOiJFUzI1NiJ9..", " "] {
        let description = refused_on_both(
            &setup,
            &server,
            &parties.b,
            exchange_request(garbage),
            "invalid_request",
        )
        .await;
        assert_tells_nothing(&description);
    }
    // The control: a real token of A's, from B.
    granted_on_both(
        &setup,
        &server,
        &parties.b,
        exchange_request(&a_token(&server, &parties).await),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_subject_token_is_invalid_request() {
    let setup = Setup::new(&chain_clients());
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let server = setup.start_with_clock(clock.clone()).await;
    let parties = Parties::of(&setup);
    let token = a_token(&server, &parties).await;
    let lifetime = issue(&server, &parties.a, IssueTokenRequest::default())
        .await
        .unwrap()
        .expires_in;
    let expected = garbage_description(&setup, &server, &parties).await;
    // Past its exp but within the leeway: it cannot give a token that outlives it by a second.
    advance(
        &server,
        &clock,
        Duration::from_secs(lifetime.unsigned_abs() + 1),
    )
    .await;
    assert_eq!(
        refused_on_both(
            &setup,
            &server,
            &parties.b,
            exchange_request(&token),
            "invalid_request"
        )
        .await,
        expected,
        "within the leeway"
    );
    // Past its exp and the leeway (30 s by default) too.
    advance(&server, &clock, Duration::from_secs(60)).await;
    assert_eq!(
        refused_on_both(
            &setup,
            &server,
            &parties.b,
            exchange_request(&token),
            "invalid_request"
        )
        .await,
        expected,
        "past the leeway"
    );
    // The control: a token A gets now is exchanged.
    granted_on_both(
        &setup,
        &server,
        &parties.b,
        exchange_request(&a_token(&server, &parties).await),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_subject_token_is_invalid_request() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let token = a_token(&server, &parties).await;
    // Exchanged before the revocation: the token was good.
    granted_on_both(&setup, &server, &parties.b, exchange_request(&token)).await;
    revoke(&server, &parties.a, &token).await.unwrap();
    let description = refused_on_both(
        &setup,
        &server,
        &parties.b,
        exchange_request(&token),
        "invalid_request",
    )
    .await;
    assert_eq!(
        description,
        garbage_description(&setup, &server, &parties).await
    );
    // Down-scoping by its own holder is refused alike.
    assert_eq!(
        refused_on_both(
            &setup,
            &server,
            &parties.a,
            asking(&token, &[], &["orders:read"]),
            "invalid_request"
        )
        .await,
        description
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_subject_token_is_invalid_request() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let token = a_token(&server, &parties).await;
    let expected = garbage_description(&setup, &server, &parties).await;
    for (forgery, forged) in forgeries_of(&token) {
        assert_ne!(forged, token);
        let description = refused_on_both(
            &setup,
            &server,
            &parties.b,
            exchange_request(&forged),
            "invalid_request",
        )
        .await;
        assert_eq!(description, expected, "{forgery}");
    }
    // The control: the token itself.
    granted_on_both(&setup, &server, &parties.b, exchange_request(&token)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tokenmints_token_is_invalid_request() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let (foreign_setup, foreign_server, foreign) = foreign_a_token().await;
    // Its own issuer takes it.
    assert_eq!(
        json_segment(segments(&foreign)[1])["iss"],
        ISSUER,
        "the same issuer name"
    );
    let description = refused_on_both(
        &setup,
        &server,
        &parties.b,
        exchange_request(&foreign),
        "invalid_request",
    )
    .await;
    assert_eq!(
        description,
        garbage_description(&setup, &server, &parties).await
    );
    // Nor does this one's token pass at the other.
    let ours = a_token(&server, &parties).await;
    assert_exchange_refused(
        exchange(
            &foreign_server,
            &Parties::of(&foreign_setup).b,
            exchange_request(&ours),
        )
        .await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unusable_subject_token_gets_the_same_description() {
    let setup = Setup::new(&chain_clients());
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let server = setup.start_with_clock(clock.clone()).await;
    let parties = Parties::of(&setup);
    let mut cases: Vec<(String, String)> = Vec::new();

    let garbage = garbage_description(&setup, &server, &parties).await;
    cases.push(("garbage".into(), garbage.clone()));
    let revoked = a_token(&server, &parties).await;
    revoke(&server, &parties.a, &revoked).await.unwrap();
    let real = a_token(&server, &parties).await;
    let mut tokens: Vec<(String, String)> = vec![("revoked".into(), revoked)];
    for (forgery, forged) in forgeries_of(&real) {
        tokens.push((format!("forged: {forgery}"), forged));
    }
    let (_foreign_setup, _foreign_server, foreign) = foreign_a_token().await;
    tokens.push(("another tokenmint's".into(), foreign));
    for (case, token) in tokens {
        let description = refused_on_both(
            &setup,
            &server,
            &parties.b,
            exchange_request(&token),
            "invalid_request",
        )
        .await;
        cases.push((case, description));
    }
    // Last, so the others are refused for what they are: the real token, once expired.
    advance(&server, &clock, Duration::from_secs(11 * 60)).await;
    let description = refused_on_both(
        &setup,
        &server,
        &parties.b,
        exchange_request(&real),
        "invalid_request",
    )
    .await;
    cases.push(("expired".into(), description));

    for (case, description) in &cases {
        println!("exchange refusal: {case}: {description}");
        assert_eq!(description, &garbage, "{case}");
    }
    assert_tells_nothing(&garbage);
    assert!(cases.len() >= 8, "{cases:?}");
}

// ---------------------------------------------------------------------------------------------
// The actor token.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_token_not_the_callers_own_or_without_its_type_is_invalid_request() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let subject = a_token(&server, &parties).await;
    let own = issue(&server, &parties.b, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    let with_actor = |actor: &str, actor_type: &str| ExchangeTokenRequest {
        actor_token: actor.to_owned(),
        actor_token_type: actor_type.to_owned(),
        ..exchange_request(&subject)
    };
    // The control: B's own token, from B.
    granted_on_both(&setup, &server, &parties.b, with_actor(&own, ACCESS_TOKEN)).await;

    // A's token (the subject token itself) as B's actor token.
    let description = refused_on_both(
        &setup,
        &server,
        &parties.b,
        with_actor(&subject, ACCESS_TOKEN),
        "invalid_request",
    )
    .await;
    assert!(description.contains("actor_token"), "{description}");
    // B's token presented by C (C serves C's audience; A's token of B's is for C).
    let b_delegated = exchange(&server, &parties.b, exchange_request(&subject))
        .await
        .unwrap()
        .access_token;
    let from_c = ExchangeTokenRequest {
        actor_token: own.clone(),
        actor_token_type: ACCESS_TOKEN.into(),
        ..exchange_request(&b_delegated)
    };
    let stolen = refused_on_both(&setup, &server, &parties.c, from_c, "invalid_request").await;
    assert_eq!(stolen, description, "B's own token is not C's");
    // Garbage as the actor token.
    let garbage = refused_on_both(
        &setup,
        &server,
        &parties.b,
        with_actor(GARBAGE, ACCESS_TOKEN),
        "invalid_request",
    )
    .await;
    assert!(garbage.contains("actor_token"), "{garbage}");

    // The type is sent exactly with the token, and is one this issuer takes.
    for (case, request) in [
        ("a token without its type", with_actor(&own, "")),
        ("a type without its token", with_actor("", ACCESS_TOKEN)),
        (
            "a type this issuer does not take",
            with_actor(&own, "urn:ietf:params:oauth:token-type:id_token"),
        ),
    ] {
        let description =
            refused_on_both(&setup, &server, &parties.b, request, "invalid_request").await;
        assert!(description.contains("actor_token"), "{case}: {description}");
    }
}

// ---------------------------------------------------------------------------------------------
// The exchange policy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_token_for_an_audience_the_caller_does_not_serve_is_invalid_request() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let token = a_token(&server, &parties).await;
    // C and D act in the chain, but A's token is for B.
    for (who, cert) in [("c", &parties.c), ("d", &parties.d)] {
        let description = refused_on_both(
            &setup,
            &server,
            cert,
            exchange_request(&token),
            "invalid_request",
        )
        .await;
        assert!(description.contains("serves"), "{who}: {description}");
        // Even asking for the audience B may pass it on to.
        let description = refused_on_both(
            &setup,
            &server,
            cert,
            asking(&token, &[C_AUD], &[]),
            "invalid_request",
        )
        .await;
        assert!(description.contains("serves"), "{who}: {description}");
    }
    // The control: B, which serves it.
    granted_on_both(&setup, &server, &parties.b, exchange_request(&token)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_not_registered_to_act_for_the_subject_is_invalid_request() {
    let setup = Setup::new(&wide_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    // D serves D and acts for nobody: C's token for D, for A, ends there.
    let a = a_token(&server, &parties).await;
    let b = exchange(&server, &parties.b, exchange_request(&a))
        .await
        .unwrap();
    let c = exchange(&server, &parties.c, exchange_request(&b.access_token))
        .await
        .unwrap();
    assert_eq!(c.audiences, [D_AUD]);
    let description = refused_on_both(
        &setup,
        &server,
        &parties.d,
        exchange_request(&c.access_token),
        "invalid_request",
    )
    .await;
    assert!(
        description.contains("not registered to act for"),
        "{description}"
    );
    // X serves X and acts for C only: A's token for X is not X's to exchange.
    let x = setup.pki.client_uri(X_URI);
    let for_x = a_token_for(&server, &parties, &[X_AUD], "").await;
    let description = refused_on_both(
        &setup,
        &server,
        &x,
        exchange_request(&for_x),
        "invalid_request",
    )
    .await;
    assert!(
        description.contains("not registered to act for"),
        "{description}"
    );
    assert!(
        !description.contains('"') && !description.contains(" c "),
        "nothing of X's registration: {description}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn may_act_at_issuance_must_name_a_client_registered_to_act_for_the_issuer() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let as_a = https_as(&setup, &parties.a);
    // D acts for nobody; "rs" and "nobody" neither (the latter is not even registered).
    for actor in ["d", "rs", "nobody"] {
        assert_refused(
            issue(
                &server,
                &parties.a,
                IssueTokenRequest {
                    may_act: actor.into(),
                    ..IssueTokenRequest::default()
                },
            )
            .await,
            tonic::Code::InvalidArgument,
            "invalid_request",
        );
        let description = http_refused(
            &as_a,
            &server,
            &[("grant_type", "client_credentials"), ("may_act", actor)],
            400,
            "invalid_request",
        )
        .await;
        assert!(description.contains("may_act"), "{actor}: {description}");
    }
    // The control: B, registered to act for A, on both faces.
    let token = a_token_for(&server, &parties, &[], "b").await;
    let answer = introspect(&server, &parties.rs, &token, None)
        .await
        .unwrap();
    assert_eq!(answer.may_act, "b");
    let (status, _, body) = post_token(
        &as_a,
        &server,
        &[("grant_type", "client_credentials"), ("may_act", "b")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn may_act_naming_b_does_not_let_an_unregistered_server_of_the_token_act() {
    let setup = Setup::new(&wide_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let x = setup.pki.client_uri(X_URI);
    // A's token for B and X, letting B act: X serves one of its audiences, but X is not
    // registered to act for A.
    let token = a_token_for(&server, &parties, &[B_AUD, X_AUD], "b").await;
    let description = refused_on_both(
        &setup,
        &server,
        &x,
        exchange_request(&token),
        "invalid_request",
    )
    .await;
    assert!(
        description.contains("not registered to act for"),
        "{description}"
    );
    // The control: B.
    granted_on_both(&setup, &server, &parties.b, exchange_request(&token)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn may_act_naming_the_caller_does_not_stand_in_for_a_registration_it_no_longer_has() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    // Issued while B was registered to act for A, naming B.
    let token = a_token_for(&server, &parties, &[], "b").await;
    granted_on_both(&setup, &server, &parties.b, exchange_request(&token)).await;
    // B is registered now to act for C only: the token's may_act still names it.
    server
        .admin(&parties.admin)
        .update_client(UpdateClientRequest {
            client: Some(ClientSpec {
                client_id: "b".into(),
                san_uri: B_URI.into(),
                audiences: vec![C_AUD.into()],
                serves: vec![B_AUD.into()],
                act_for: vec!["c".into()],
                delegate_audiences: vec![C_AUD.into()],
                delegate_scopes: vec!["orders:read".into()],
                ..ClientSpec::default()
            }),
        })
        .await
        .unwrap();
    let answer = introspect(&server, &parties.rs, &token, None)
        .await
        .unwrap();
    assert!(answer.active && answer.may_act == "b", "{answer:?}");
    let description = refused_on_both(
        &setup,
        &server,
        &parties.b,
        exchange_request(&token),
        "invalid_request",
    )
    .await;
    assert!(
        description.contains("not registered to act for"),
        "{description}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn may_act_naming_another_client_refuses_what_the_registration_allows() {
    let setup = Setup::new(&wide_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let b2 = setup.pki.client_uri(B2_URI);
    // The control: without may_act, B2 (registered to act for A) exchanges A's token for B2.
    let open = a_token_for(&server, &parties, &[B_AUD, B2_AUD], "").await;
    granted_on_both(&setup, &server, &b2, exchange_request(&open)).await;
    // Naming B: B2 is refused, B is not.
    let token = a_token_for(&server, &parties, &[B_AUD, B2_AUD], "b").await;
    let description = refused_on_both(
        &setup,
        &server,
        &b2,
        exchange_request(&token),
        "invalid_request",
    )
    .await;
    assert!(
        description.contains("may_act does not name this client"),
        "{description}"
    );
    let (granted, _) = granted_on_both(&setup, &server, &parties.b, exchange_request(&token)).await;
    assert_eq!(granted.audiences, [C_AUD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_past_the_depth_bound_is_invalid_request() {
    let setup = Setup::new(&format!(
        "[tokens]\nmax_exchange_depth = 1\n{}",
        chain_clients()
    ));
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let a = a_token(&server, &parties).await;
    // One exchange behind a token is the most: B's works…
    let (b, _) = granted_on_both(&setup, &server, &parties.b, exchange_request(&a)).await;
    // …and nothing exchanges B's token again: not C delegating, nor B down-scoping.
    let description = refused_on_both(
        &setup,
        &server,
        &parties.c,
        exchange_request(&b.access_token),
        "invalid_request",
    )
    .await;
    assert!(description.contains("exchanged 1 times"), "{description}");
    let description = refused_on_both(
        &setup,
        &server,
        &parties.b,
        asking(&b.access_token, &[], &["orders:read"]),
        "invalid_request",
    )
    .await;
    assert!(description.contains("exchanged"), "{description}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audience_the_caller_may_not_call_for_another_is_invalid_target() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let token = a_token(&server, &parties).await;
    // B may call C for A, not D, nor its own audience, nor one nobody knows.
    for audience in [D_AUD, B_AUD, "https://elsewhere.example"] {
        let description = refused_on_both(
            &setup,
            &server,
            &parties.b,
            asking(&token, &[audience], &[]),
            "invalid_target",
        )
        .await;
        assert!(description.contains(audience), "{description}");
    }
    // One allowed beside one not: still refused.
    refused_on_both(
        &setup,
        &server,
        &parties.b,
        asking(&token, &[C_AUD, D_AUD], &[]),
        "invalid_target",
    )
    .await;
    granted_on_both(&setup, &server, &parties.b, asking(&token, &[C_AUD], &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_the_caller_may_not_pass_on_is_invalid_scope() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let a = a_token(&server, &parties).await;
    let b = exchange(&server, &parties.b, exchange_request(&a))
        .await
        .unwrap();
    assert_eq!(b.scopes, ["orders:read", "orders:write"]);
    // C passes on orders:read only, though B's token holds both.
    let description = refused_on_both(
        &setup,
        &server,
        &parties.c,
        asking(&b.access_token, &[], &["orders:write"]),
        "invalid_scope",
    )
    .await;
    assert!(description.contains("orders:write"), "{description}");
    refused_on_both(
        &setup,
        &server,
        &parties.c,
        asking(&b.access_token, &[], &["orders:read", "orders:write"]),
        "invalid_scope",
    )
    .await;
    // B may pass on both, but not one A's token does not hold.
    refused_on_both(
        &setup,
        &server,
        &parties.b,
        asking(&a, &[], &["orders:admin"]),
        "invalid_scope",
    )
    .await;
    // The control: C asking for what it may pass on.
    let (granted, _) = granted_on_both(
        &setup,
        &server,
        &parties.c,
        asking(&b.access_token, &[], &["orders:read"]),
    )
    .await;
    assert_eq!(granted.scopes, ["orders:read"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_scoping_to_anything_broader_is_refused() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let a = a_token(&server, &parties).await;
    let b = exchange(&server, &parties.b, exchange_request(&a))
        .await
        .unwrap();
    let narrowed = exchange(
        &server,
        &parties.b,
        asking(&b.access_token, &[C_AUD], &["orders:read"]),
    )
    .await
    .unwrap();
    assert_eq!(narrowed.scopes, ["orders:read"]);
    // A scope it no longer holds, though the token it came from did.
    let description = refused_on_both(
        &setup,
        &server,
        &parties.b,
        asking(&narrowed.access_token, &[], &["orders:write"]),
        "invalid_scope",
    )
    .await;
    assert!(description.contains("orders:write"), "{description}");
    // An audience it is not for, though B may call it on its own.
    refused_on_both(
        &setup,
        &server,
        &parties.b,
        asking(&narrowed.access_token, &[D_AUD], &[]),
        "invalid_target",
    )
    .await;
    // A down-scoping its own token likewise.
    refused_on_both(
        &setup,
        &server,
        &parties.a,
        asking(&a, &[], &["orders:admin"]),
        "invalid_scope",
    )
    .await;
    refused_on_both(
        &setup,
        &server,
        &parties.a,
        asking(&a, &[C_AUD], &[]),
        "invalid_target",
    )
    .await;
    // The control: the same scope again.
    granted_on_both(
        &setup,
        &server,
        &parties.b,
        asking(&narrowed.access_token, &[], &["orders:read"]),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// The request itself.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_types_and_a_missing_subject_token_are_invalid_request() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let token = a_token(&server, &parties).await;
    for unknown in [
        "urn:ietf:params:oauth:token-type:id_token",
        "urn:ietf:params:oauth:token-type:refresh_token",
        "access_token",
    ] {
        let description = refused_on_both(
            &setup,
            &server,
            &parties.b,
            ExchangeTokenRequest {
                subject_token_type: unknown.into(),
                ..exchange_request(&token)
            },
            "invalid_request",
        )
        .await;
        assert!(description.contains("subject_token_type"), "{description}");
        let description = refused_on_both(
            &setup,
            &server,
            &parties.b,
            ExchangeTokenRequest {
                requested_token_type: unknown.into(),
                ..exchange_request(&token)
            },
            "invalid_request",
        )
        .await;
        assert!(
            description.contains("requested_token_type"),
            "{description}"
        );
    }
    // No subject_token_type, or no subject_token: on gRPC the fields are empty, which the
    // core refuses; on HTTP the form is refused first, naming the parameter left out.
    let no_type = assert_exchange_refused(
        exchange(
            &server,
            &parties.b,
            ExchangeTokenRequest {
                subject_token_type: String::new(),
                ..exchange_request(&token)
            },
        )
        .await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
    assert!(no_type.contains("subject_token_type"), "{no_type}");
    let no_token = assert_exchange_refused(
        exchange(&server, &parties.b, exchange_request("")).await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
    assert!(no_token.contains("subject_token"), "{no_token}");
    let as_b = https_as(&setup, &parties.b);
    for (missing, pairs) in [
        (
            "subject_token",
            vec![
                ("grant_type", EXCHANGE_GRANT),
                ("subject_token_type", ACCESS_TOKEN),
            ],
        ),
        (
            "subject_token",
            vec![
                ("grant_type", EXCHANGE_GRANT),
                ("subject_token", ""),
                ("subject_token_type", ACCESS_TOKEN),
            ],
        ),
        (
            "subject_token_type",
            vec![("grant_type", EXCHANGE_GRANT), ("subject_token", &token)],
        ),
        (
            "subject_token_type",
            vec![
                ("grant_type", EXCHANGE_GRANT),
                ("subject_token", &token),
                ("subject_token_type", ""),
            ],
        ),
    ] {
        let description = http_refused(&as_b, &server, &pairs, 400, "invalid_request").await;
        assert!(description.contains(missing), "{description}");
        assert!(!description.contains(&token), "{description}");
    }
    // The control: the JWT type asked for, and given.
    let (granted, body) = granted_on_both(
        &setup,
        &server,
        &parties.b,
        ExchangeTokenRequest {
            subject_token_type: JWT.into(),
            requested_token_type: JWT.into(),
            ..exchange_request(&token)
        },
    )
    .await;
    assert_eq!(granted.issued_token_type, JWT);
    assert_eq!(body["issued_token_type"], JWT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_without_a_client_certificate_is_invalid_client() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let token = a_token(&server, &parties).await;
    let status = server
        .anonymous_client()
        .await
        .exchange_token(exchange_request(&token))
        .await
        .expect_err("no certificate, no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(tokenmint::wire::OAUTH_ERROR_METADATA)
            .and_then(|v| v.to_str().ok()),
        Some("invalid_client"),
        "{status:?}"
    );
    assert!(status.message().starts_with("invalid_client"), "{status:?}");

    install_provider();
    let ca = reqwest::Certificate::from_pem(setup.pki.ca.cert_pem().as_bytes()).unwrap();
    let anonymous = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let form = exchange_form(&token, &[]);
    let description = http_refused(&anonymous, &server, &form, 401, "invalid_client").await;
    assert!(description.contains("certificate"), "{description}");
    assert_eq!(status.message(), format!("invalid_client: {description}"));
    let (_, headers, _) = post_token(&anonymous, &server, &form).await;
    assert!(
        headers.contains_key(reqwest::header::WWW_AUTHENTICATE),
        "401 carries WWW-Authenticate: {headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn may_act_in_an_exchange_is_invalid_request() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let as_b = https_as(&setup, &parties.b);
    // gRPC's ExchangeTokenRequest has no may_act: the HTTP form is where it can be sent.
    let token = a_token(&server, &parties).await;
    for actor in ["c", "b", "a"] {
        let description = http_refused(
            &as_b,
            &server,
            &exchange_form(&token, &[("may_act", actor)]),
            400,
            "invalid_request",
        )
        .await;
        assert!(description.contains("may_act"), "{actor}: {description}");
    }
    // A down-scoping its own token, asking to let B act: refused too.
    let description = http_refused(
        &https_as(&setup, &parties.a),
        &server,
        &exchange_form(&token, &[("may_act", "b")]),
        400,
        "invalid_request",
    )
    .await;
    assert!(description.contains("may_act"), "{description}");
    // The control: the same form without it.
    let (status, _, body) = post_token(&as_b, &server, &exchange_form(&token, &[])).await;
    assert_eq!(status, 200, "{body}");
}
