//! The OAuth2 HTTP face (SPEC §5, §11, §12): a standard OAuth2 client library gets a token
//! that an independent JOSE implementation verifies against the JWKS served over HTTP; every
//! token-endpoint refusal with its exact status and `error`; introspection and revocation
//! agreeing with their gRPC twins; the JWKS's caching headers; the RFC 8414 metadata; and
//! HTTP/1.1, HTTP/2 and gRPC side by side on the one TLS port.

use std::collections::{BTreeSet, HashSet};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jwt_simple::prelude::{
    ECDSAP256PublicKeyLike as _, ES256PublicKey, Ed25519PublicKey, EdDSAPublicKeyLike as _,
    JWTClaims, Token, VerificationOptions,
};
use oauth2::{
    AuthType, ClientId, ClientSecret, Scope, TokenResponse as _, TokenUrl, basic::BasicClient,
};
use reqwest::{StatusCode, Version, header};
use serde_json::Value;
use tokenmint::{
    grpc::proto::{GetJwksRequest, IssueTokenRequest, RotateKeysRequest},
    pki::Issued,
};
use tonic::Code;

use crate::support::*;

/// Where a standard client finds the token endpoint.
const TOKEN_PATH: &str = "/oauth2/token";
const INTROSPECT_PATH: &str = "/oauth2/introspect";
const REVOKE_PATH: &str = "/oauth2/revoke";
const JWKS_PATH: &str = "/.well-known/jwks.json";
const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
const FORM: &str = "application/x-www-form-urlencoded";

fn base(server: &TestServer) -> String {
    format!("https://localhost:{}", server.addr.port())
}

/// An HTTPS client trusting only the test CA, presenting `cert` if given.
fn https(setup: &Setup, cert: Option<&Issued>) -> reqwest::Client {
    https_builder(setup, cert).build().unwrap()
}

fn https_builder(setup: &Setup, cert: Option<&Issued>) -> reqwest::ClientBuilder {
    install_provider();
    let ca = reqwest::Certificate::from_pem(setup.pki.ca.cert_pem().as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(std::time::Duration::from_secs(10));
    if let Some(cert) = cert {
        let pem = format!("{}{}", cert.cert_pem, cert.key_pem.as_str());
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder
}

/// What came back: status, headers and the body (JSON where there is one).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    version: Version,
    headers: header::HeaderMap,
    text: String,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Self {
        Self {
            status: response.status(),
            version: response.version(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header: {self:?}"))
            .to_str()
            .unwrap()
    }

    /// The body as JSON; asserts it is declared JSON.
    fn json(&self) -> Value {
        let content_type = self.header(header::CONTENT_TYPE);
        assert!(
            content_type.starts_with("application/json")
                || content_type.starts_with("application/jwk-set+json"),
            "a JSON content type, got {content_type}: {self:?}"
        );
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("a JSON body ({e}): {:?}", self.text))
    }

    /// Asserts an RFC 6749 §5.2 JSON error: this status and `error`, a description, no HTML.
    fn assert_error(&self, status: StatusCode, error: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            !self.text.trim_start().starts_with('<'),
            "never HTML: {self:?}"
        );
        let body = self.json();
        assert_eq!(body["error"], error, "{self:?}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "an error_description a person can act on: {self:?}"
        );
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                self.headers.contains_key(header::WWW_AUTHENTICATE),
                "401 carries WWW-Authenticate: {self:?}"
            );
        }
    }

    fn assert_no_store(&self) {
        assert_eq!(self.header(header::CACHE_CONTROL), "no-store", "{self:?}");
    }
}

/// POSTs `body` as a form to `path`.
async fn post_form(
    client: &reqwest::Client,
    server: &TestServer,
    path: &str,
    body: &str,
) -> Answer {
    post(client, server, path, FORM, body.to_owned()).await
}

async fn post(
    client: &reqwest::Client,
    server: &TestServer,
    path: &str,
    content_type: &str,
    body: String,
) -> Answer {
    let response = client
        .post(format!("{}{path}", base(server)))
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    Answer::of(response).await
}

async fn get(client: &reqwest::Client, server: &TestServer, path: &str) -> Answer {
    let response = client
        .get(format!("{}{path}", base(server)))
        .send()
        .await
        .unwrap();
    Answer::of(response).await
}

/// A form body from pairs, encoded as a browser or client library would.
fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// base64url SHA-256 of the certificate's DER, computed here rather than by tokenmint.
fn x5t_s256(cert: &Issued) -> String {
    use sha2::{Digest as _, Sha256};
    URL_SAFE_NO_PAD.encode(Sha256::digest(&cert.cert_der))
}

/// The claims tokenmint adds beyond the registered ones.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct AccessClaims {
    client_id: String,
    scope: Option<String>,
    cnf: Value,
}

/// Verifies `token` as an unrelated resource server would, with jwt-simple (not jsonwebtoken,
/// not tokenmint's code) and only the JWKS text: key by `kid` (checked to be the key's RFC 7638
/// thumbprint), the algorithm the JWK names, `typ: at+jwt`, issuer and audience. Returns the
/// verified claims.
fn verify_independently(token: &str, jwks_json: &str, audience: &str) -> JWTClaims<AccessClaims> {
    let metadata = Token::decode_metadata(token).unwrap();
    assert_eq!(metadata.signature_type(), Some("at+jwt"));
    let kid = metadata.key_id().expect("a kid").to_owned();
    let set: Value = serde_json::from_str(jwks_json).unwrap();
    let jwk = set["keys"]
        .as_array()
        .expect("a JWK Set")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the token's kid is published")
        .to_string();
    let options = VerificationOptions {
        required_signature_type: Some("at+jwt".into()),
        required_key_id: Some(kid.clone()),
        allowed_issuers: Some(HashSet::from([ISSUER.to_owned()])),
        allowed_audiences: Some(HashSet::from([audience.to_owned()])),
        time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(5)),
        ..VerificationOptions::default()
    };
    match metadata.algorithm() {
        "ES256" => {
            let key = ES256PublicKey::from_jwk(&jwk).unwrap();
            assert_eq!(key.jwk_thumbprint(), kid, "kid is the RFC 7638 thumbprint");
            key.verify_token::<AccessClaims>(token, Some(options))
                .unwrap()
        }
        "EdDSA" => {
            let key = Ed25519PublicKey::from_jwk(&jwk).unwrap();
            assert_eq!(key.jwk_thumbprint(), kid, "kid is the RFC 7638 thumbprint");
            key.verify_token::<AccessClaims>(token, Some(options))
                .unwrap()
        }
        other => panic!("unexpected alg {other}"),
    }
}

/// The token's payload as JSON, read without verification (after `verify_independently`).
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The token's `aud`, as a set whichever JSON form it takes.
fn audiences(claims: &Value) -> BTreeSet<String> {
    match &claims["aud"] {
        Value::String(s) => BTreeSet::from([s.clone()]),
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
        other => panic!("aud: {other}"),
    }
}

/// oauth2's HTTP hook: the exchange goes over our reqwest client, which carries the client
/// certificate (mutual TLS is the client authentication).
fn oauth2_transport(
    client: reqwest::Client,
) -> impl Fn(
    oauth2::HttpRequest,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, reqwest::Error>> + Send>,
> {
    move |request: oauth2::HttpRequest| {
        let client = client.clone();
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let mut builder = oauth2::http::Response::builder()
                .status(response.status())
                .version(response.version());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = response.bytes().await?.to_vec();
            Ok(builder.body(body).expect("a valid response"))
        })
    }
}

/// Registers client `id` (demo's policy, SAN URI `spiffe://tokenmint.test/<id>`) with a secret,
/// as `tokenmint client add --with-secret` does; returns the secret. Before `start`.
async fn register_with_secret(setup: &Setup, id: &str) -> String {
    let config = setup.config();
    let keks = tokenmint::server::load_keks(&config.keys.kek_files, None).unwrap();
    let store = tokenmint::server::open_store(&config).await.unwrap();
    let hasher = tokenmint::server::load_pepper(store.as_ref(), &keks)
        .await
        .unwrap();
    let secret = tokenmint_core::crypto::generate_client_secret().unwrap();
    let demo = config
        .clients
        .iter()
        .find(|c| c.id.as_str() == "demo")
        .unwrap();
    let mut client = demo.clone();
    client.id = tokenmint_core::client::ClientId::try_new(id).unwrap();
    client.matcher = tokenmint_core::identity::CertificateMatcher::try_san_uri(&format!(
        "spiffe://tokenmint.test/{id}"
    ))
    .unwrap();
    client.secret_hash = Some(hasher.hash(&secret));
    store
        .insert_client(
            &client,
            tokenmint_core::clock::UnixTime::EPOCH,
            &test_audit(),
        )
        .await
        .unwrap();
    secret.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_oauth2_client_gets_a_token_that_verifies_independently() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);

    let oauth = BasicClient::new(ClientId::new("demo".into()))
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(TokenUrl::new(format!("{}{TOKEN_PATH}", base(&server))).unwrap());
    let transport = oauth2_transport(https(&setup, Some(&demo)));
    let response = oauth
        .exchange_client_credentials()
        .add_scope(Scope::new("demo:write".into()))
        .add_extra_param("resource", DEMO_AUDIENCE)
        .request_async(&transport)
        .await
        .unwrap();
    assert_eq!(
        response.token_type(),
        &oauth2::basic::BasicTokenType::Bearer
    );
    assert_eq!(
        response.expires_in(),
        Some(std::time::Duration::from_secs(300))
    );
    assert_eq!(
        response
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        Some(vec!["demo:write".to_owned()])
    );
    let token = response.access_token().secret();

    // The key set as an off-the-shelf resource server fetches it: HTTPS, no certificate.
    let jwks = get(&https(&setup, None), &server, JWKS_PATH).await;
    assert_eq!(jwks.status, StatusCode::OK, "{jwks:?}");
    let verified = verify_independently(token, &jwks.text, DEMO_AUDIENCE);
    assert_eq!(verified.issuer.as_deref(), Some(ISSUER));
    assert_eq!(verified.subject.as_deref(), Some("demo"));
    assert_eq!(verified.custom.client_id, "demo");
    assert_eq!(verified.custom.scope.as_deref(), Some("demo:write"));
    assert_eq!(verified.custom.cnf["x5t#S256"], x5t_s256(&demo));
    assert!(
        verified
            .jwt_id
            .as_deref()
            .is_some_and(|j| URL_SAFE_NO_PAD.decode(j).unwrap().len() >= 16)
    );
    let claims = payload(token);
    assert_eq!(
        audiences(&claims),
        BTreeSet::from([DEMO_AUDIENCE.to_owned()])
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );

    // Without a resource or scope: the client's defaults.
    let defaults = oauth
        .exchange_client_credentials()
        .request_async(&transport)
        .await
        .unwrap();
    let verified =
        verify_independently(defaults.access_token().secret(), &jwks.text, DEMO_AUDIENCE);
    assert_eq!(verified.custom.scope.as_deref(), Some("demo:read"));

    // A token from the gRPC face verifies the same way against the HTTP JWKS.
    let grpc = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap();
    verify_independently(&grpc.access_token, &jwks.text, DEMO_AUDIENCE);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_refusals_have_exact_statuses_and_errors() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let as_demo = https(&setup, Some(&demo));
    let grant = ("grant_type", "client_credentials");

    // No client certificate: the TLS handshake passes (public endpoints need none), the
    // token endpoint refuses.
    let answer = post_form(&https(&setup, None), &server, TOKEN_PATH, &form(&[grant])).await;
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    answer.assert_no_store();

    let answer = post_form(
        &as_demo,
        &server,
        TOKEN_PATH,
        &form(&[
            ("grant_type", "password"),
            ("username", "u"),
            ("password", "p"),
        ]),
    )
    .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    answer.assert_no_store();

    for body in ["", "scope=demo%3Aread", "grant_type="] {
        let answer = post_form(&as_demo, &server, TOKEN_PATH, body).await;
        answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        answer.assert_no_store();
    }

    let answer = post_form(
        &as_demo,
        &server,
        TOKEN_PATH,
        &form(&[grant, ("scope", "demo:read admin:everything")]),
    )
    .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_scope");

    let answer = post_form(
        &as_demo,
        &server,
        TOKEN_PATH,
        &form(&[grant, ("resource", "https://elsewhere.example")]),
    )
    .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_target");

    // scope is single-valued (RFC 6749 §3.1); resource is repeatable (RFC 8707).
    let answer = post_form(
        &as_demo,
        &server,
        TOKEN_PATH,
        &form(&[grant, ("scope", "demo:read"), ("scope", "demo:write")]),
    )
    .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let answer = post_form(
        &as_demo,
        &server,
        TOKEN_PATH,
        &form(&[grant, ("grant_type", "client_credentials")]),
    )
    .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let answer = post_form(
        &as_demo,
        &server,
        TOKEN_PATH,
        &form(&[
            grant,
            ("resource", DEMO_AUDIENCE),
            ("resource", "https://other.example"),
            // Unknown parameters are ignored (RFC 6749 §3.2).
            ("unknown_parameter", "whatever"),
            ("audience", "https://elsewhere.example"),
        ]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    answer.assert_no_store();
    let body = answer.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "demo:read");
    let token = body["access_token"].as_str().unwrap();
    let jwks = server.jwks().await.jwks_json;
    verify_independently(token, &jwks, "https://other.example");
    assert_eq!(
        audiences(&payload(token)),
        BTreeSet::from([DEMO_AUDIENCE.to_owned(), "https://other.example".to_owned()])
    );

    // A client_id that is not the certificate's client.
    let answer = post_form(
        &as_demo,
        &server,
        TOKEN_PATH,
        &form(&[grant, ("client_id", "other")]),
    )
    .await;
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // A secret sent by a client registered without one.
    let answer = post_form(
        &as_demo,
        &server,
        TOKEN_PATH,
        &form(&[grant, ("client_id", "demo"), ("client_secret", "guess")]),
    )
    .await;
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");

    // rs may introspect but not get tokens: RFC 6749 §5.2 says 400 on the token endpoint.
    let answer = post_form(
        &https(&setup, Some(&rs)),
        &server,
        TOKEN_PATH,
        &form(&[grant]),
    )
    .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "unauthorized_client");
    answer.assert_no_store();

    // Not a form.
    let answer = post(
        &as_demo,
        &server,
        TOKEN_PATH,
        "application/json",
        r#"{"grant_type":"client_credentials"}"#.into(),
    )
    .await;
    answer.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request");

    // Over 64 KiB (SPEC §11), on every POST endpoint: 413 with the JSON error body.
    let padding = "a".repeat(64 * 1024);
    for path in [TOKEN_PATH, INTROSPECT_PATH, REVOKE_PATH] {
        let answer = post_form(
            &as_demo,
            &server,
            path,
            &form(&[grant, ("token", "x"), ("padding", &padding)]),
        )
        .await;
        answer.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request");
        answer.assert_no_store();
    }

    // Just under the cap is fine (unknown parameters are ignored).
    let padding = "a".repeat(60 * 1024);
    let answer = post_form(
        &as_demo,
        &server,
        TOKEN_PATH,
        &form(&[grant, ("padding", &padding)]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");

    // The wrong method: a JSON error too, and what is allowed.
    for path in [TOKEN_PATH, INTROSPECT_PATH, REVOKE_PATH] {
        let answer = get(&as_demo, &server, path).await;
        answer.assert_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
        assert_eq!(answer.header(header::ALLOW), "POST", "{answer:?}");
    }
    let answer = post_form(&as_demo, &server, JWKS_PATH, "").await;
    answer.assert_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_secret_works_as_basic_or_post_and_a_wrong_one_is_invalid_client() {
    let setup = Setup::new(&standard_clients());
    let secret = register_with_secret(&setup, "secretive").await;
    let server = setup.start().await;
    let cert = setup.pki.client_uri("spiffe://tokenmint.test/secretive");
    let client = https(&setup, Some(&cert));
    let grant = ("grant_type", "client_credentials");
    let url = format!("{}{TOKEN_PATH}", base(&server));
    let basic =
        |id: &str, secret: &str| format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
    let jwks = server.jwks().await.jwks_json;

    // A standard client library, both ways.
    let transport = oauth2_transport(client.clone());
    for auth_type in [AuthType::BasicAuth, AuthType::RequestBody] {
        let response = BasicClient::new(ClientId::new("secretive".into()))
            .set_client_secret(ClientSecret::new(secret.clone()))
            .set_auth_type(auth_type.clone())
            .set_token_uri(TokenUrl::new(url.clone()).unwrap())
            .exchange_client_credentials()
            .request_async(&transport)
            .await
            .unwrap_or_else(|e| panic!("{auth_type:?}: {e:?}"));
        let verified = verify_independently(response.access_token().secret(), &jwks, DEMO_AUDIENCE);
        assert_eq!(verified.subject.as_deref(), Some("secretive"));
        assert_eq!(verified.custom.cnf["x5t#S256"], x5t_s256(&cert));
    }

    // client_secret_basic, by hand.
    let send_basic = |authorization: String| {
        let client = client.clone();
        let url = url.clone();
        async move {
            Answer::of(
                client
                    .post(url)
                    .header(header::CONTENT_TYPE, FORM)
                    .header(header::AUTHORIZATION, authorization)
                    .body(form(&[grant]))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let right = send_basic(basic("secretive", &secret)).await;
    assert_eq!(right.status, StatusCode::OK, "{right:?}");
    right.assert_no_store();
    let wrong = send_basic(basic("secretive", &format!("{secret}x"))).await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    wrong.assert_no_store();
    let empty = send_basic(basic("secretive", "")).await;
    empty.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let not_basic = send_basic("Bearer whatever".into()).await;
    not_basic.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let someone_else = send_basic(basic("demo", &secret)).await;
    someone_else.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");

    // client_secret_post, by hand.
    let post_with = |secret: Option<&str>| {
        let mut pairs = vec![grant, ("client_id", "secretive")];
        if let Some(secret) = secret {
            pairs.push(("client_secret", secret));
        }
        form(&pairs)
    };
    let right = post_form(&client, &server, TOKEN_PATH, &post_with(Some(&secret))).await;
    assert_eq!(right.status, StatusCode::OK, "{right:?}");
    right.assert_no_store();
    let wrong = post_form(
        &client,
        &server,
        TOKEN_PATH,
        &post_with(Some(&format!("{secret}x"))),
    )
    .await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    wrong.assert_no_store();
    // The secret is a second factor: the certificate alone is not enough.
    let missing = post_form(&client, &server, TOKEN_PATH, &post_with(None)).await;
    missing.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    // Nor is the secret alone.
    let no_cert = post_form(
        &https(&setup, None),
        &server,
        TOKEN_PATH,
        &post_with(Some(&secret)),
    )
    .await;
    no_cert.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");

    // One method at a time.
    let both = client
        .post(&url)
        .header(header::CONTENT_TYPE, FORM)
        .header(header::AUTHORIZATION, basic("secretive", &secret))
        .body(post_with(Some(&secret)))
        .send()
        .await
        .unwrap();
    Answer::of(both)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_and_revocation_over_http_agree_with_grpc() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let other = setup.pki.client_uri(OTHER_URI);
    let as_demo = https(&setup, Some(&demo));
    let as_rs = https(&setup, Some(&rs));
    let anonymous = https(&setup, None);

    let token = issue(
        &server,
        &demo,
        IssueTokenRequest {
            scopes: vec!["demo:read".into(), "demo:write".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .access_token;

    // Active: the same answer both ways.
    let answer = post_form(
        &as_rs,
        &server,
        INTROSPECT_PATH,
        &form(&[("token", &token)]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    answer.assert_no_store();
    let http = answer.json();
    let grpc = introspect(&server, &rs, &token, None).await.unwrap();
    assert!(grpc.active);
    assert_eq!(http["active"], true);
    assert_eq!(http["client_id"], grpc.client_id.as_str());
    assert_eq!(http["client_id"], "demo");
    assert_eq!(http["sub"], grpc.subject.as_str());
    assert_eq!(http["iss"], grpc.issuer.as_str());
    assert_eq!(http["scope"], grpc.scopes.join(" ").as_str());
    assert_eq!(http["scope"], "demo:read demo:write");
    assert_eq!(
        audiences(&http),
        grpc.audiences.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(http["exp"], grpc.expires_at);
    assert_eq!(http["iat"], grpc.issued_at);
    assert_eq!(http["nbf"], grpc.not_before);
    assert_eq!(http["jti"], grpc.token_id.as_str());
    assert_eq!(
        http["cnf"]["x5t#S256"],
        grpc.certificate_thumbprint.as_str()
    );
    assert_eq!(http["cnf"]["x5t#S256"], x5t_s256(&demo));
    assert_eq!(http["token_type"], "Bearer");

    // The resource server's caller presented another certificate: inactive, bare.
    let answer = post_form(
        &as_rs,
        &server,
        INTROSPECT_PATH,
        &form(&[
            ("token", &token),
            ("presented_certificate_thumbprint", &x5t_s256(&other)),
        ]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.json(), serde_json::json!({"active": false}));
    let answer = post_form(
        &as_rs,
        &server,
        INTROSPECT_PATH,
        &form(&[
            ("token", &token),
            ("presented_certificate_thumbprint", &x5t_s256(&demo)),
        ]),
    )
    .await;
    assert_eq!(answer.json()["active"], true, "{answer:?}");

    // Callers refused outright: a status, never active: false.
    let answer = post_form(
        &as_demo,
        &server,
        INTROSPECT_PATH,
        &form(&[("token", &token)]),
    )
    .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "unauthorized_client");
    answer.assert_no_store();
    let status = introspect(&server, &demo, &token, None).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let answer = post_form(
        &anonymous,
        &server,
        INTROSPECT_PATH,
        &form(&[("token", &token)]),
    )
    .await;
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let answer = post_form(&as_rs, &server, INTROSPECT_PATH, "").await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let answer = post(
        &as_rs,
        &server,
        INTROSPECT_PATH,
        "application/json",
        serde_json::json!({ "token": token }).to_string(),
    )
    .await;
    answer.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request");

    // Revocation refusals leave the token active.
    let answer = post_form(
        &anonymous,
        &server,
        REVOKE_PATH,
        &form(&[("token", &token)]),
    )
    .await;
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let answer = post_form(
        &https(&setup, Some(&other)),
        &server,
        REVOKE_PATH,
        &form(&[("token", &token)]),
    )
    .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "unauthorized_client");
    let status = revoke(&server, &other, &token).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(introspect(&server, &rs, &token, None).await.unwrap().active);
    let answer = post_form(
        &as_rs,
        &server,
        INTROSPECT_PATH,
        &form(&[("token", &token)]),
    )
    .await;
    assert_eq!(answer.json()["active"], true);

    // RFC 7009: an unverifiable token is an OK no-op.
    let answer = post_form(
        &as_demo,
        &server,
        REVOKE_PATH,
        &form(&[
            ("token", "not.a.token"),
            ("token_type_hint", "access_token"),
        ]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let answer = post_form(&as_demo, &server, REVOKE_PATH, "").await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    // The owner revokes over HTTP: inactive both ways, at once.
    let answer = post_form(
        &as_demo,
        &server,
        REVOKE_PATH,
        &form(&[("token", &token), ("token_type_hint", "access_token")]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let answer = post_form(
        &as_rs,
        &server,
        INTROSPECT_PATH,
        &form(&[("token", &token)]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    answer.assert_no_store();
    assert_eq!(answer.json(), serde_json::json!({"active": false}));
    let grpc = introspect(&server, &rs, &token, None).await.unwrap();
    assert!(!grpc.active);
    assert_eq!(grpc, Default::default(), "a bare active: false");
    // Revoking it again is an OK no-op, over both faces.
    let answer = post_form(&as_demo, &server, REVOKE_PATH, &form(&[("token", &token)])).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    revoke(&server, &demo, &token).await.unwrap();

    // A token revoked over gRPC is inactive over HTTP too.
    let second = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    let answer = post_form(
        &as_rs,
        &server,
        INTROSPECT_PATH,
        &form(&[("token", &second)]),
    )
    .await;
    assert_eq!(answer.json()["active"], true);
    revoke(&server, &demo, &second).await.unwrap();
    let answer = post_form(
        &as_rs,
        &server,
        INTROSPECT_PATH,
        &form(&[("token", &second)]),
    )
    .await;
    assert_eq!(answer.json(), serde_json::json!({"active": false}));
    server.stop().await;
}

/// Regression: `presented_certificate_thumbprint=` (sent, empty) was read as left out, and a
/// certificate-bound token was answered active with no binding check; a malformed value was
/// compared and answered inactive. Both are now 400 `invalid_request`, as over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_malformed_presented_thumbprint_is_400_invalid_request_not_left_out() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let as_rs = https(&setup, Some(&rs));
    let token = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    // A JWT needs no form encoding.
    let sent_empty = [
        (
            "with =",
            format!("token={token}&presented_certificate_thumbprint="),
        ),
        (
            "without =",
            format!("token={token}&presented_certificate_thumbprint"),
        ),
    ];
    for (what, body) in sent_empty {
        let answer = post_form(&as_rs, &server, INTROSPECT_PATH, &body).await;
        answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        answer.assert_no_store();
        assert!(
            answer.json()["error_description"]
                .as_str()
                .unwrap()
                .contains("presented_certificate_thumbprint"),
            "{what}: the description names the parameter: {answer:?}"
        );
    }
    for (what, presented) in malformed_thumbprints(&x5t_s256(&demo)) {
        for token in [token.as_str(), "garbage"] {
            let answer = post_form(
                &as_rs,
                &server,
                INTROSPECT_PATH,
                &form(&[
                    ("token", token),
                    ("presented_certificate_thumbprint", &presented),
                ]),
            )
            .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}: {answer:?}");
            answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        }
    }

    // Left out: answered without a binding check, as before.
    let answer = post_form(
        &as_rs,
        &server,
        INTROSPECT_PATH,
        &form(&[("token", &token)]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.json()["active"], true, "{answer:?}");
    // The right certificate is active; another well-formed one is bare inactive.
    let answer = post_form(
        &as_rs,
        &server,
        INTROSPECT_PATH,
        &form(&[
            ("token", &token),
            ("presented_certificate_thumbprint", &x5t_s256(&demo)),
        ]),
    )
    .await;
    assert_eq!(answer.json()["active"], true, "{answer:?}");
    let answer = post_form(
        &as_rs,
        &server,
        INTROSPECT_PATH,
        &form(&[
            ("token", &token),
            ("presented_certificate_thumbprint", &x5t_s256(&rs)),
        ]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.json(), serde_json::json!({"active": false}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_is_cacheable_with_a_strong_etag_that_changes_exactly_with_the_key_set() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let anonymous = https(&setup, None);
    let admin = setup.pki.client_uri(ADMIN_URI);

    let first = get(&anonymous, &server, JWKS_PATH).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(
        first.header(header::CONTENT_TYPE),
        "application/jwk-set+json"
    );
    let cache = first.header(header::CACHE_CONTROL);
    assert!(
        cache.split(',').any(|d| d.trim() == "max-age=300"),
        "jwks_max_age defaults to 5m: {cache}"
    );
    let etag = first.header(header::ETAG).to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "a strong ETag: {etag}"
    );
    let grpc = server.jwks().await;
    assert_eq!(etag, format!("\"{}\"", grpc.version));
    let grpc_set: Value = serde_json::from_str(&grpc.jwks_json).unwrap();
    assert_eq!(first.json(), grpc_set);
    assert_eq!(
        grpc_set["keys"].as_array().unwrap().len(),
        2,
        "current and next"
    );

    // Nothing changed: the same ETag, and If-None-Match gets 304.
    let again = get(&anonymous, &server, JWKS_PATH).await;
    assert_eq!(again.header(header::ETAG), etag);
    assert_eq!(again.text, first.text);
    let not_modified = |tag: String| {
        let anonymous = anonymous.clone();
        let url = format!("{}{JWKS_PATH}", base(&server));
        async move {
            Answer::of(
                anonymous
                    .get(url)
                    .header(header::IF_NONE_MATCH, tag)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let cached = not_modified(etag.clone()).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED, "{cached:?}");
    assert!(cached.text.is_empty());
    assert_eq!(cached.header(header::ETAG), etag);
    assert!(cached.header(header::CACHE_CONTROL).contains("max-age=300"));
    // RFC 9110 §13.1.2: If-None-Match compares weakly, so W/"<etag>" matches too.
    let weak = not_modified(format!("W/{etag}")).await;
    assert_eq!(weak.status, StatusCode::NOT_MODIFIED, "{weak:?}");
    let listed = not_modified(format!("\"something-else\", {etag}")).await;
    assert_eq!(listed.status, StatusCode::NOT_MODIFIED, "{listed:?}");
    let stale = not_modified("\"something-else\"".into()).await;
    assert_eq!(stale.status, StatusCode::OK, "{stale:?}");

    // A forced rotation changes the set: the old ETag gets the new set and a new ETag.
    server
        .admin(&admin)
        .rotate_keys(RotateKeysRequest { force: true })
        .await
        .unwrap();
    let rotated = not_modified(etag.clone()).await;
    assert_eq!(rotated.status, StatusCode::OK, "{rotated:?}");
    let new_etag = rotated.header(header::ETAG).to_owned();
    assert_ne!(new_etag, etag);
    let grpc = server.jwks().await;
    assert_eq!(new_etag, format!("\"{}\"", grpc.version));
    assert_eq!(
        rotated.json(),
        serde_json::from_str::<Value>(&grpc.jwks_json).unwrap()
    );
    assert_ne!(rotated.text, first.text);
    let cached = not_modified(new_etag.clone()).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED, "{cached:?}");

    // The gRPC face agrees through a client that presents a certificate too.
    let with_cert = tokenmint::grpc::proto::key_service_client::KeyServiceClient::new(
        server.channel_for(&admin),
    )
    .get_jwks(GetJwksRequest::default())
    .await
    .unwrap()
    .into_inner();
    assert_eq!(with_cert.version, grpc.version);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_max_age_follows_the_configuration() {
    let mut setup = Setup::new(&standard_clients());
    setup.extra_toml = "jwks_max_age = \"1m\"\npublish_ahead = \"2m\"\n".into();
    let server = setup.start().await;
    let answer = get(&https(&setup, None), &server, JWKS_PATH).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let cache = answer.header(header::CACHE_CONTROL);
    assert!(
        cache.split(',').any(|d| d.trim() == "max-age=60"),
        "{cache}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_server_metadata_describes_the_endpoints() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let answer = get(&https(&setup, None), &server, METADATA_PATH).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let metadata = answer.json();
    assert_eq!(metadata["issuer"], ISSUER);
    assert_eq!(metadata["token_endpoint"], format!("{ISSUER}{TOKEN_PATH}"));
    assert_eq!(
        metadata["introspection_endpoint"],
        format!("{ISSUER}{INTROSPECT_PATH}")
    );
    assert_eq!(
        metadata["revocation_endpoint"],
        format!("{ISSUER}{REVOKE_PATH}")
    );
    assert_eq!(metadata["jwks_uri"], format!("{ISSUER}{JWKS_PATH}"));
    // REQUIRED by RFC 8414, and non-empty for common validators (authlib refuses []).
    assert_eq!(
        metadata["response_types_supported"],
        serde_json::json!(["none"]),
        "{metadata}"
    );
    // A secret is accepted (beside the certificate) on the token endpoint only.
    let token_methods = metadata["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    for method in ["client_secret_basic", "client_secret_post"] {
        assert!(token_methods.contains(&Value::from(method)), "{metadata}");
        for endpoint in ["introspection", "revocation"] {
            let methods = metadata[format!("{endpoint}_endpoint_auth_methods_supported")]
                .as_array()
                .unwrap();
            assert!(!methods.contains(&Value::from(method)), "{metadata}");
        }
    }
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&Value::from("client_credentials"))
    );
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&Value::from(
                "urn:ietf:params:oauth:grant-type:token-exchange"
            )),
        "{metadata}"
    );
    for endpoint in ["token", "introspection", "revocation"] {
        let methods = metadata[format!("{endpoint}_endpoint_auth_methods_supported")]
            .as_array()
            .unwrap_or_else(|| panic!("{endpoint} auth methods: {metadata}"));
        for method in ["tls_client_auth", "self_signed_tls_client_auth"] {
            assert!(
                methods.contains(&Value::from(method)),
                "{endpoint} lists {method}: {metadata}"
            );
        }
        assert!(
            methods.iter().all(|m| m.is_string()),
            "{endpoint}: {metadata}"
        );
    }
    assert_eq!(metadata["tls_client_certificate_bound_access_tokens"], true);
    assert!(metadata.get("scopes_supported").is_none(), "{metadata}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_http2_and_grpc_share_the_port_and_unknown_paths_are_json_404() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let h1 = https_builder(&setup, Some(&demo))
        .http1_only()
        .build()
        .unwrap();
    let h2 = https(&setup, Some(&demo));
    let jwks = server.jwks().await.jwks_json;

    for (client, version) in [(&h1, Version::HTTP_11), (&h2, Version::HTTP_2)] {
        let answer = post_form(
            client,
            &server,
            TOKEN_PATH,
            &form(&[("grant_type", "client_credentials")]),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_eq!(answer.version, version);
        let token = answer.json()["access_token"].as_str().unwrap().to_owned();
        verify_independently(&token, &jwks, DEMO_AUDIENCE);

        let answer = get(client, &server, JWKS_PATH).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_eq!(answer.version, version);

        for path in [
            "/",
            "/nope",
            "/oauth2/authorize",
            "/.well-known/openid-configuration",
        ] {
            let answer = get(client, &server, path).await;
            answer.assert_error(StatusCode::NOT_FOUND, "invalid_request");
            assert_eq!(answer.version, version);
        }
        let answer = post_form(client, &server, "/oauth2/nope", "token=x").await;
        answer.assert_error(StatusCode::NOT_FOUND, "invalid_request");
    }

    // gRPC on the same port, between and after the HTTP calls.
    let response = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap();
    verify_independently(&response.access_token, &jwks, DEMO_AUDIENCE);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_issuance_rate_gets_429_with_retry_after() {
    install_provider();
    let setup = Setup::new(&format!(
        "[limits]\nissue_per_second = 2\n{}",
        standard_clients()
    ));
    let server = setup.start().await;
    let client = https(&setup, Some(&setup.pki.client_uri(DEMO_URI)));
    let grant = form(&[("grant_type", "client_credentials")]);
    let mut limited = None;
    for _ in 0..10 {
        let answer = post_form(&client, &server, "/oauth2/token", &grant).await;
        if answer.status != StatusCode::OK {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("the third call within a second is over 2/s");
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable");
    limited.assert_no_store();
    let retry: u64 = limited.header(header::RETRY_AFTER).parse().unwrap();
    assert_eq!(retry, 1, "{limited:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_client_gets_503_with_retry_after_and_a_revocation_cap_429() {
    install_provider();
    let setup = Setup::new(&format!(
        "[revocation]\nper_client_rate = 1\n{}",
        standard_clients()
    ));
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let admin = setup.pki.client_uri(ADMIN_URI);
    let client = https(&setup, Some(&demo));
    let grant = form(&[("grant_type", "client_credentials")]);

    // Two of demo's own tokens; the second self-revocation in the same second hits the rate.
    let first = post_form(&client, &server, "/oauth2/token", &grant).await;
    let second = post_form(&client, &server, "/oauth2/token", &grant).await;
    let token = |a: &Answer| a.json()["access_token"].as_str().unwrap().to_owned();
    let revoke = |t: String| form(&[("token", t.as_str())]);
    let ok = post_form(&client, &server, "/oauth2/revoke", &revoke(token(&first))).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let limited = post_form(&client, &server, "/oauth2/revoke", &revoke(token(&second))).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable");
    assert!(
        !limited.header(header::RETRY_AFTER).is_empty(),
        "{limited:?}"
    );

    // A cut-off pauses issuance to demo: 503 with Retry-After, as RFC 6749 JSON.
    server
        .admin(&admin)
        .revoke_client_tokens(tokenmint::grpc::proto::RevokeClientTokensRequest {
            client_id: "demo".into(),
        })
        .await
        .unwrap();
    let paused = post_form(&client, &server, "/oauth2/token", &grant).await;
    paused.assert_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
    paused.assert_no_store();
    let retry: u64 = paused.header(header::RETRY_AFTER).parse().unwrap();
    assert!(
        (1..=31).contains(&retry),
        "retry after the leeway: {paused:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_on_requests_in_flight_http_gets_429_with_retry_after() {
    install_provider();
    let mut setup = Setup::new(&demo_client());
    setup.server_toml = "max_in_flight = 1\n".into();
    let store = std::sync::Arc::new(crate::flaky::FlakyStore::open(&setup).await);
    let server = setup.start_with_store(store.clone()).await;
    let cert = setup.pki.client_uri(DEMO_URI);
    let client = https(&setup, Some(&cert));
    let url = format!("{}/oauth2/token", base(&server));
    let call = || async {
        let response = client
            .post(&url)
            .header(header::CONTENT_TYPE, FORM)
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = response.json().await.unwrap();
        (status, retry, body)
    };
    // A revocation waits in its commit: it holds the only slot.
    let held = crate::flaky::HeldCommit::start(&server, &store, &cert).await;
    let (status, retry, body) = call().await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("max_in_flight"),
        "{body}"
    );
    // The held request completes, and then a call alone is served.
    held.finish().await.unwrap();
    assert_eq!(call().await.0, StatusCode::OK);
    server.stop().await;
}
