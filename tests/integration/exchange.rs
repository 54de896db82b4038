//! Token exchange (RFC 8693) over real mTLS: a call chain A → B → C → D where each hop
//! delegates, and what each hop's token carries (`sub`, nested `act`, `aud`, `cnf`, scopes,
//! expiry); the verifier of the next hop accepts a delegated token only from the actor's
//! certificate; revoking the first token, or cutting off or disabling any party, reaches
//! every later hop. The helpers here (the chain's clients, an exchange on either face) serve
//! `exchange_refusals.rs` too.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokenmint::{
    grpc::proto::{
        DisableClientRequest, ExchangeTokenRequest, ExchangeTokenResponse, IssueTokenRequest,
        RevokeClientTokensRequest,
    },
    pki::Issued,
};
use tokenmint_verify::{Verifier, VerifyError};

use crate::{
    support::*,
    verifier::{peer, ready, with_source},
};

pub const A_URI: &str = "spiffe://tokenmint.test/a";
pub const B_URI: &str = "spiffe://tokenmint.test/b";
pub const C_URI: &str = "spiffe://tokenmint.test/c";
pub const D_URI: &str = "spiffe://tokenmint.test/d";
/// The audience B serves (A calls B with a token for it), and C's and D's.
pub const B_AUD: &str = "https://b.example";
pub const C_AUD: &str = "https://c.example";
pub const D_AUD: &str = "https://d.example";
/// `urn:ietf:params:oauth:token-type:access_token`.
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The chain's clients, and admin and a resource server that may introspect every hop:
/// - `a` calls B (`orders:read orders:write`, up to 10m);
/// - `b` serves B, acts for `a`, calls C on its behalf passing both scopes on;
/// - `c` serves C, acts for `a`, calls D on its behalf passing `orders:read` only;
/// - `d` serves D, acts for nobody.
pub fn chain_clients() -> String {
    chain_clients_with(&[], "")
}

/// [`chain_clients`] with `a` calling `more_for_a` too (its default audience stays B), and
/// the `[[clients]]` of `more` added.
pub fn chain_clients_with(more_for_a: &[&str], more: &str) -> String {
    let a_audiences: Vec<&str> = [B_AUD].iter().chain(more_for_a).copied().collect();
    format!(
        r#"{admin}
[[clients]]
id = "rs"
san_uri = "{RS_URI}"
permissions = ["introspect"]
introspect_audiences = ["{B_AUD}", "{C_AUD}", "{D_AUD}"]

[[clients]]
id = "a"
san_uri = "{A_URI}"
scopes = ["orders:read", "orders:write"]
default_scopes = ["orders:read", "orders:write"]
audiences = {a_audiences:?}
default_audiences = ["{B_AUD}"]
default_lifetime = "5m"
max_lifetime = "10m"
{b}
{c}
[[clients]]
id = "d"
san_uri = "{D_URI}"
serves = ["{D_AUD}"]
permissions = ["issue"]
{more}"#,
        admin = admin_client(),
        b = delegate(
            "b",
            B_URI,
            B_AUD,
            "a",
            C_AUD,
            &["orders:read", "orders:write"]
        ),
        c = delegate("c", C_URI, C_AUD, "a", D_AUD, &["orders:read"]),
    )
}

/// A client `id` that serves `serves`, acts for `act_for` and calls `calls` on its behalf,
/// passing `pass_on` scopes.
pub fn delegate(
    id: &str,
    uri: &str,
    serves: &str,
    act_for: &str,
    calls: &str,
    pass_on: &[&str],
) -> String {
    format!(
        r#"
[[clients]]
id = "{id}"
san_uri = "{uri}"
audiences = ["{calls}"]
serves = ["{serves}"]
act_for = ["{act_for}"]
delegate_audiences = ["{calls}"]
delegate_scopes = {pass_on:?}
default_lifetime = "10m"
max_lifetime = "20m"
"#
    )
}

/// The chain's certificates.
pub struct Parties {
    pub a: Issued,
    pub b: Issued,
    pub c: Issued,
    pub d: Issued,
    pub rs: Issued,
    pub admin: Issued,
}

impl Parties {
    pub fn of(setup: &Setup) -> Self {
        Self {
            a: setup.pki.client_uri(A_URI),
            b: setup.pki.client_uri(B_URI),
            c: setup.pki.client_uri(C_URI),
            d: setup.pki.client_uri(D_URI),
            rs: setup.pki.client_uri(RS_URI),
            admin: setup.pki.client_uri(ADMIN_URI),
        }
    }
}

/// An exchange of `subject_token` with defaults for everything else.
pub fn exchange_request(subject_token: &str) -> ExchangeTokenRequest {
    ExchangeTokenRequest {
        subject_token: subject_token.to_owned(),
        subject_token_type: ACCESS_TOKEN.into(),
        ..ExchangeTokenRequest::default()
    }
}

/// `TokenService.ExchangeToken` as `cert`.
pub async fn exchange(
    server: &TestServer,
    cert: &Issued,
    request: ExchangeTokenRequest,
) -> Result<ExchangeTokenResponse, tonic::Status> {
    server
        .client(cert)
        .await
        .exchange_token(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts an exchange refusal's gRPC code and OAuth2 error (the message starts with it).
pub fn assert_exchange_refused(
    result: Result<ExchangeTokenResponse, tonic::Status>,
    code: tonic::Code,
    oauth: &str,
) -> String {
    let status = match result {
        Ok(r) => panic!(
            "expected {code:?}/{oauth}, got a token for {:?}",
            r.audiences
        ),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "status: {status:?}");
    let got = status
        .metadata()
        .get(tokenmint::wire::OAUTH_ERROR_METADATA)
        .and_then(|v| v.to_str().ok());
    assert_eq!(got, Some(oauth), "status: {status:?}");
    assert!(status.message().starts_with(oauth), "{status:?}");
    status.message().to_owned()
}

/// An HTTPS client trusting the test CA and presenting `cert`.
pub fn https_as(setup: &Setup, cert: &Issued) -> reqwest::Client {
    install_provider();
    let ca = reqwest::Certificate::from_pem(setup.pki.ca.cert_pem().as_bytes()).unwrap();
    let pem = format!("{}{}", cert.cert_pem, cert.key_pem.as_str());
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// POSTs `pairs` as a form to `path` on `server`: the status and the JSON body.
pub async fn post_form(
    client: &reqwest::Client,
    server: &TestServer,
    path: &str,
    pairs: &[(&str, &str)],
) -> (u16, Value) {
    let (status, _, body) = post_form_answer(client, server, path, pairs).await;
    (status, body)
}

/// [`post_form`], with the answer's headers.
pub async fn post_form_answer(
    client: &reqwest::Client,
    server: &TestServer,
    path: &str,
    pairs: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let response = client
        .post(format!("https://localhost:{}{path}", server.addr.port()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON ({e}): {text}"));
    (status, headers, body)
}

/// The token endpoint's form for exchanging `subject_token`, plus `extra`.
pub fn exchange_form<'a>(
    subject_token: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut pairs = vec![
        ("grant_type", EXCHANGE_GRANT),
        ("subject_token", subject_token),
        ("subject_token_type", ACCESS_TOKEN),
    ];
    pairs.extend_from_slice(extra);
    pairs
}

/// A's token for B (both scopes, A's default lifetime).
pub async fn a_token(server: &TestServer, parties: &Parties) -> String {
    issue(server, &parties.a, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token
}

/// The claims of `token`, verified against the published keys for `audience`.
async fn claims(server: &TestServer, token: &str, audience: &str) -> Value {
    verify_with_jwks(token, &server.jwks().await.jwks_json, audience)
}

/// A verifier for `audience` (C's or D's), fed over gRPC as the resource server `rs`.
pub async fn verifier_for(
    setup: &Setup,
    server: &TestServer,
    rs: &Issued,
    audience: &str,
) -> Verifier {
    let builder = Verifier::builder(ISSUER).audience(audience);
    ready(with_source(builder, setup, server, rs)).await
}

/// The chain A → B → C → D: B's token for C and C's for D.
pub struct Chain {
    pub a: String,
    pub b: ExchangeTokenResponse,
    pub c: ExchangeTokenResponse,
}

pub async fn build_chain(server: &TestServer, parties: &Parties) -> Chain {
    let a = a_token(server, parties).await;
    let b = exchange(server, &parties.b, exchange_request(&a))
        .await
        .unwrap();
    let c = exchange(server, &parties.c, exchange_request(&b.access_token))
        .await
        .unwrap();
    Chain { a, b, c }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_to_b_to_c_to_d_each_hop_delegates_bound_to_its_actor() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let chain = build_chain(&server, &parties).await;

    let a = claims(&server, &chain.a, B_AUD).await;
    assert_eq!(
        (a["sub"].as_str(), a["client_id"].as_str()),
        (Some("a"), Some("a"))
    );
    assert!(
        a.get("act").is_none() && a.get("ancestors").is_none(),
        "{a}"
    );
    assert_eq!(a["cnf"]["x5t#S256"], thumbprint_of(&parties.a));

    // B → C: for A, acted by B, bound to B, for C, both scopes, no later than A's token.
    assert_eq!(chain.b.issued_token_type, ACCESS_TOKEN);
    assert_eq!(chain.b.token_type, "Bearer");
    assert_eq!(chain.b.audiences, [C_AUD]);
    let b = claims(&server, &chain.b.access_token, C_AUD).await;
    assert_eq!(b["sub"], "a");
    assert_eq!(b["client_id"], "b");
    assert_eq!(b["act"], serde_json::json!({ "sub": "b" }));
    assert_eq!(b["aud"], C_AUD);
    assert_eq!(b["cnf"]["x5t#S256"], thumbprint_of(&parties.b));
    assert_eq!(b["scope"], "orders:read orders:write");
    let ancestor = |t: &Value| serde_json::json!({ "jti": t["jti"], "client_id": t["client_id"], "iat": t["iat"] });
    assert_eq!(b["ancestors"], serde_json::json!([ancestor(&a)]));
    assert!(
        b["exp"].as_i64() <= a["exp"].as_i64(),
        "B's token outlives A's: {b} {a}"
    );
    assert!(
        b["exp"].as_i64().unwrap() - b["iat"].as_i64().unwrap() <= chain.b.expires_in,
        "expires_in says what was granted"
    );

    // C → D: the chain nests, C acting now; only what C may pass on.
    let c = claims(&server, &chain.c.access_token, D_AUD).await;
    assert_eq!(c["sub"], "a");
    assert_eq!(c["client_id"], "c");
    assert_eq!(
        c["act"],
        serde_json::json!({ "sub": "c", "act": { "sub": "b" } })
    );
    assert_eq!(c["aud"], D_AUD);
    assert_eq!(c["cnf"]["x5t#S256"], thumbprint_of(&parties.c));
    assert_eq!(c["scope"], "orders:read");
    assert_eq!(
        c["ancestors"],
        serde_json::json!([ancestor(&a), ancestor(&b)])
    );
    assert!(c["exp"].as_i64() <= b["exp"].as_i64(), "{c} {b}");
    println!(
        "exchange: A's token lives {}s, B's {}s, C's {}s",
        a["exp"].as_i64().unwrap() - a["iat"].as_i64().unwrap(),
        b["exp"].as_i64().unwrap() - b["iat"].as_i64().unwrap(),
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap()
    );

    // C's verifier takes B's delegated token from B's certificate only; D's takes C's from C.
    let at_c = verifier_for(&setup, &server, &parties.rs, C_AUD).await;
    let verified = at_c
        .verify(&chain.b.access_token, Some(&peer(&parties.b)), at_c.now())
        .await
        .unwrap();
    assert_eq!(
        (verified.subject.as_str(), verified.client_id.as_str()),
        ("a", "b")
    );
    assert_eq!(verified.actors(), ["b"]);
    for (who, cert) in [("A", &parties.a), ("C", &parties.c)] {
        assert_eq!(
            at_c.verify(&chain.b.access_token, Some(&peer(cert)), at_c.now())
                .await
                .map(drop),
            Err(VerifyError::CertificateMismatch),
            "B's token presented by {who}"
        );
    }
    let at_d = verifier_for(&setup, &server, &parties.rs, D_AUD).await;
    let verified = at_d
        .verify(&chain.c.access_token, Some(&peer(&parties.c)), at_d.now())
        .await
        .unwrap();
    assert_eq!(verified.actors(), ["c", "b"]);
    assert_eq!(verified.ancestors.len(), 2);
    // D serves D but acts for nobody: the chain ends there.
    let refused = assert_exchange_refused(
        exchange(&server, &parties.d, exchange_request(&chain.c.access_token)).await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
    assert!(refused.contains("not registered to act for"), "{refused}");

    // Introspection returns the chain unchanged, on both faces.
    let answer = introspect(&server, &parties.rs, &chain.c.access_token, None)
        .await
        .unwrap();
    assert!(answer.active);
    assert_eq!(
        (answer.subject.as_str(), answer.client_id.as_str()),
        ("a", "c")
    );
    assert_eq!(answer.actors, ["c", "b"]);
    let (status, body) = post_form(
        &https_as(&setup, &parties.rs),
        &server,
        "/oauth2/introspect",
        &[("token", &chain.c.access_token)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["act"], c["act"], "act unchanged: {body}");
    assert_eq!(
        (body["sub"].as_str(), body["client_id"].as_str()),
        (Some("a"), Some("c"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_scoping_over_http_narrows_a_token_of_ones_own() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let chain = build_chain(&server, &parties).await;
    // B narrows its delegated token to one scope and a minute: still for A, acted by B.
    let as_b = https_as(&setup, &parties.b);
    let (status, body) = post_form(
        &as_b,
        &server,
        "/oauth2/token",
        &exchange_form(
            &chain.b.access_token,
            &[("scope", "orders:read"), ("audience", C_AUD)],
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "orders:read");
    let narrowed = claims(&server, body["access_token"].as_str().unwrap(), C_AUD).await;
    assert_eq!(narrowed["sub"], "a");
    assert_eq!(narrowed["act"], serde_json::json!({ "sub": "b" }));
    assert_eq!(narrowed["scope"], "orders:read");
    assert_eq!(narrowed["cnf"]["x5t#S256"], thumbprint_of(&parties.b));
    assert_eq!(narrowed["ancestors"].as_array().unwrap().len(), 2);
    // Broader than its own: refused.
    let (status, body) = post_form(
        &as_b,
        &server,
        "/oauth2/token",
        &exchange_form(
            body["access_token"].as_str().unwrap(),
            &[("scope", "orders:write")],
        ),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{body}"
    );
}

/// How long until `verifier` refuses `token` from `cert` as `expected` (at most 10 s).
async fn refused_within(
    verifier: &Verifier,
    token: &str,
    cert: &Issued,
    expected: VerifyError,
    since: Instant,
) -> Duration {
    loop {
        let outcome = verifier
            .verify(token, Some(&peer(cert)), verifier.now())
            .await;
        if outcome.as_ref().err() == Some(&expected) {
            return since.elapsed();
        }
        assert!(outcome.is_ok(), "refused for another reason: {outcome:?}");
        assert!(since.elapsed() < Duration::from_secs(10), "never refused");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_first_token_makes_every_later_hop_inactive() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let chain = build_chain(&server, &parties).await;
    let at_c = verifier_for(&setup, &server, &parties.rs, C_AUD).await;
    let at_d = verifier_for(&setup, &server, &parties.rs, D_AUD).await;
    for (verifier, token, cert) in [
        (&at_c, &chain.b.access_token, &parties.b),
        (&at_d, &chain.c.access_token, &parties.c),
    ] {
        verifier
            .verify(token, Some(&peer(cert)), verifier.now())
            .await
            .unwrap();
    }

    // A revokes its own token: one revocation, and both later hops go.
    let revoked_at = Instant::now();
    revoke(&server, &parties.a, &chain.a).await.unwrap();
    let at_c_delay = refused_within(
        &at_c,
        &chain.b.access_token,
        &parties.b,
        VerifyError::AncestorRevoked,
        revoked_at,
    )
    .await;
    let at_d_delay = refused_within(
        &at_d,
        &chain.c.access_token,
        &parties.c,
        VerifyError::AncestorRevoked,
        revoked_at,
    )
    .await;
    println!(
        "exchange: A's token revoked → B's token refused at C's verifier after {at_c_delay:?}, C's at D's after {at_d_delay:?}"
    );
    for token in [&chain.a, &chain.b.access_token, &chain.c.access_token] {
        let answer = introspect(&server, &parties.rs, token, None).await.unwrap();
        assert!(!answer.active, "inactive at introspection");
    }
    // Nor can the chain grow from a revoked token.
    assert_exchange_refused(
        exchange(&server, &parties.c, exchange_request(&chain.b.access_token)).await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
}

/// A server with the chain built, and D's verifier having accepted C's token from C.
async fn chain_seen_at_d() -> (Setup, TestServer, Parties, Verifier, Chain) {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let at_d = verifier_for(&setup, &server, &parties.rs, D_AUD).await;
    let chain = build_chain(&server, &parties).await;
    at_d.verify(&chain.c.access_token, Some(&peer(&parties.c)), at_d.now())
        .await
        .unwrap();
    (setup, server, parties, at_d, chain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_off_a_middle_actor_reaches_the_later_hops() {
    let (_setup, server, parties, at_d, chain) = chain_seen_at_d().await;
    // B, the middle actor, is cut off: C's token (C acting for A through B) goes too.
    let since = Instant::now();
    server
        .admin(&parties.admin)
        .revoke_client_tokens(RevokeClientTokensRequest {
            client_id: "b".into(),
        })
        .await
        .unwrap();
    let delay = refused_within(
        &at_d,
        &chain.c.access_token,
        &parties.c,
        VerifyError::ClientCutOff,
        since,
    )
    .await;
    println!("exchange: B cut off → C's delegated token refused at D's verifier after {delay:?}");
    let answer = introspect(&server, &parties.rs, &chain.c.access_token, None)
        .await
        .unwrap();
    assert!(!answer.active, "inactive at introspection");
    // A's own token is not B's: it stays good.
    let answer = introspect(&server, &parties.rs, &chain.a, None)
        .await
        .unwrap();
    assert!(answer.active, "A's token is not cut off with B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_the_subject_reaches_every_hop() {
    let (_setup, server, parties, at_d, chain) = chain_seen_at_d().await;
    let since = Instant::now();
    server
        .admin(&parties.admin)
        .disable_client(DisableClientRequest {
            client_id: "a".into(),
        })
        .await
        .unwrap();
    let delay = refused_within(
        &at_d,
        &chain.c.access_token,
        &parties.c,
        VerifyError::ClientDisabled,
        since,
    )
    .await;
    println!("exchange: A disabled → C's delegated token refused at D's verifier after {delay:?}");
    for token in [&chain.b.access_token, &chain.c.access_token] {
        let answer = introspect(&server, &parties.rs, token, None).await.unwrap();
        assert!(!answer.active, "inactive at introspection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_passes_subject_and_actor_and_refuses_a_revoked_chain() {
    use crate::authz::{authz_config_with, nginx_header, start};
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let chain = build_chain(&server, &parties).await;
    let env = vec![(
        "TOKENMINT__AUTHZ__AUDIENCES".to_owned(),
        format!("[\"{D_AUD}\"]"),
    )];
    let sidecar = start(authz_config_with(&setup, &server, "", env)).await;
    let ask = |cert: &Issued| {
        reqwest::Client::new()
            .get(&sidecar.verify)
            .header("x-original-uri", "/orders")
            .header("x-ssl-client-cert", nginx_header(cert))
            .bearer_auth(&chain.c.access_token)
            // A caller's own claims count for nothing.
            .header("x-tokenmint-actor", "d")
            .send()
    };
    let allowed = ask(&parties.c).await.unwrap();
    assert_eq!(allowed.status(), 200);
    let header = |name: &str| allowed.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("x-tokenmint-client-id"), "c");
    assert_eq!(header("x-tokenmint-subject"), "a");
    assert_eq!(header("x-tokenmint-actor"), "c b");
    assert_eq!(header("x-tokenmint-scope"), "orders:read");
    // From B's certificate (an earlier actor), C's token is not good.
    assert_eq!(ask(&parties.b).await.unwrap().status(), 403);

    let since = Instant::now();
    revoke(&server, &parties.a, &chain.a).await.unwrap();
    loop {
        let status = ask(&parties.c).await.unwrap().status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(since.elapsed() < Duration::from_secs(10), "never refused");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "exchange: A's token revoked → C's delegated token refused by the sidecar after {:?}",
        since.elapsed()
    );
    sidecar.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenmint_client_exchanges_for_the_next_hop() {
    use tokenmint_client::{Client, TokenError, TokenSpec};
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let b = Client::builder(
        format!("https://localhost:{}", server.addr.port()),
        Arc::new(rustls_client(&setup, Some(&parties.b))),
    )
    .build()
    .unwrap();
    let a = a_token(&server, &parties).await;
    let spec = TokenSpec::audience(C_AUD).with_scope("orders:read");
    let for_c = b.exchange(&a, &spec).await.unwrap();
    assert_eq!(
        (for_c.audiences.as_slice(), for_c.scopes.as_slice()),
        (&[C_AUD.to_owned()][..], &["orders:read".to_owned()][..])
    );
    let claims = claims(&server, for_c.secret(), C_AUD).await;
    assert_eq!(
        (claims["sub"].as_str(), claims["client_id"].as_str()),
        (Some("a"), Some("b"))
    );
    assert_eq!(claims["act"], serde_json::json!({ "sub": "b" }));
    // A refusal comes back with its OAuth2 code.
    let broader = TokenSpec::audience(D_AUD);
    let refused = b.exchange(&a, &broader).await.unwrap_err();
    assert!(
        matches!(&refused, TokenError::Refused { code, .. } if code == "invalid_target"),
        "{refused:?}"
    );
}

/// `tokenmint token …` as `who` (its certificate written into the setup's directory).
pub fn cli(setup: &Setup, server: &TestServer, who: (&str, &Issued), args: &[&str]) -> Value {
    let dir = setup.path();
    let (name, cert) = who;
    std::fs::write(dir.join(format!("{name}.pem")), &cert.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), cert.key_pem.as_bytes()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tokenmint"))
        .current_dir(dir)
        .args(["token"])
        .args(args)
        .args([
            "--server",
            &format!("https://localhost:{}", server.addr.port()),
        ])
        .args(["--ca", "ca.pem", "--server-name", "localhost"])
        .args([
            "--cert",
            &format!("{name}.pem"),
            "--key",
            &format!("{name}.key"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tokenmint token {args:?}: {stderr}"
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_issues_with_may_act_and_exchanges_what_it_printed() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let (setup_ref, server_ref) = (&setup, &server);
    let printed = tokio::task::block_in_place(|| {
        let a = cli(
            setup_ref,
            server_ref,
            ("a", &parties.a),
            &["issue", "--may-act", "b"],
        );
        std::fs::write(setup_ref.path().join("a.json"), a.to_string()).unwrap();
        cli(
            setup_ref,
            server_ref,
            ("b", &parties.b),
            &[
                "exchange",
                "--subject-token-file",
                "a.json",
                "--scope",
                "orders:read",
            ],
        )
    });
    assert_eq!(printed["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(printed["audiences"], serde_json::json!([C_AUD]));
    assert_eq!(printed["scope"], "orders:read");
    let b = claims(&server, printed["access_token"].as_str().unwrap(), C_AUD).await;
    assert_eq!(
        (b["sub"].as_str(), b["client_id"].as_str()),
        (Some("a"), Some("b"))
    );
    let a_file = std::fs::read_to_string(setup.path().join("a.json")).unwrap();
    let a: Value = serde_json::from_str(&a_file).unwrap();
    let a = claims(&server, a["access_token"].as_str().unwrap(), B_AUD).await;
    assert_eq!(a["may_act"], serde_json::json!({ "sub": "b" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_off_the_subject_reaches_every_hop() {
    let (_setup, server, parties, at_d, chain) = chain_seen_at_d().await;
    server
        .admin(&parties.admin)
        .revoke_client_tokens(RevokeClientTokensRequest {
            client_id: "a".into(),
        })
        .await
        .unwrap();
    // C's token was issued to C, after A's: A's cut-off reaches it through its chain.
    refused_within(
        &at_d,
        &chain.c.access_token,
        &parties.c,
        VerifyError::ClientCutOff,
        Instant::now(),
    )
    .await;
    for token in [&chain.a, &chain.b.access_token, &chain.c.access_token] {
        let answer = introspect(&server, &parties.rs, token, None).await.unwrap();
        assert!(!answer.active, "inactive at introspection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_says_nothing_of_the_standing_of_a_token_the_caller_could_not_exchange() {
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);
    let a = a_token(&server, &parties).await;
    // C does not serve B's audience: the same answer whether A's token is good or revoked.
    let good = assert_exchange_refused(
        exchange(&server, &parties.c, exchange_request(&a)).await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
    revoke(&server, &parties.a, &a).await.unwrap();
    let revoked = assert_exchange_refused(
        exchange(&server, &parties.c, exchange_request(&a)).await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
    assert_eq!(good, revoked);
    assert!(revoked.contains("serves"), "{revoked}");
    // B, which serves it, learns that it is no longer active.
    let to_b = assert_exchange_refused(
        exchange(&server, &parties.b, exchange_request(&a)).await,
        tonic::Code::InvalidArgument,
        "invalid_request",
    );
    assert!(to_b.contains("not an active access token"), "{to_b}");
}

/// An exchange judges another's token, so a replica behind the store by more than
/// `max_staleness` refuses it (`temporarily_unavailable`), while a client-credentials token
/// is still issued until `max_issue_staleness`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_store_refuses_exchanges_but_still_issues() {
    use tokenmint_core::clock::{Clock as _, ManualClock, SystemClock};
    let domain = "spiffe://tokenmint.test";
    let setup = Setup::new(&format!(
        "[txn_tokens]\ntrust_domain = \"{domain}\"\n{}",
        chain_clients()
    ));
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let server = setup.start_with_clock(clock.clone()).await;
    let parties = Parties::of(&setup);
    let a = a_token(&server, &parties).await;
    let as_txn = ExchangeTokenRequest {
        requested_token_type: tokenmint_core::txn::TXN_TOKEN_TYPE.into(),
        audiences: vec![domain.into()],
        scopes: vec!["orders:read".into()],
        ..exchange_request(&a)
    };
    // An access token and a transaction token alike.
    for request in [exchange_request(&a), as_txn] {
        // Ten seconds pass with no catch-up (the default max_staleness is 5 s). The catch-up
        // task marks the replica fresh again within a second of real time, so a try that
        // lost that race is made again.
        let mut stale = None;
        for _ in 0..10 {
            clock.advance(Duration::from_secs(10));
            if let Err(status) = exchange(&server, &parties.b, request.clone()).await {
                stale = Some(status);
                break;
            }
        }
        let status = stale.expect("an exchange refused while stale");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert_eq!(
            status
                .metadata()
                .get(tokenmint::wire::OAUTH_ERROR_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some("temporarily_unavailable")
        );
    }
    issue(&server, &parties.a, IssueTokenRequest::default())
        .await
        .expect("client_credentials issues until max_issue_staleness");
}
