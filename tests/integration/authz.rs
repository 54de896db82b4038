//! `tokenmint authz`, the verification sidecar, against a real issuer: the forward-auth answer
//! for each proxy's certificate format, refusals only as 401 or 403 with a challenge, garbage
//! certificate headers refused cleanly, scopes per path, failing closed, Envoy's ext_authz
//! over gRPC with the certificate where Envoy puts it, and its settings.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest,
    attribute_context::{HttpRequest, Peer, Request},
    authorization_client::AuthorizationClient,
    check_response::HttpResponse,
};
use tokenmint::{
    authz::{self, Ask, Decision, Denial, Sidecar},
    config::Config,
    grpc::proto::IssueTokenRequest,
    pki::Issued,
};
use tokenmint_core::forwarded::HeaderFormat;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// The sidecar's identity at the issuer (the `rs` client, with `introspect`) written beside
/// the server's files, and an `[authz]` section using it, plus `extra`.
pub(crate) fn authz_config(setup: &Setup, server: &TestServer, extra: &str) -> Config {
    authz_config_with(setup, server, extra, Vec::new())
}

/// [`authz_config`] with `TOKENMINT__AUTHZ__*` overrides.
pub(crate) fn authz_config_with(
    setup: &Setup,
    server: &TestServer,
    extra: &str,
    env: Vec<(String, String)>,
) -> Config {
    let rs = setup.pki.client_uri(RS_URI);
    std::fs::write(setup.path().join("rs.pem"), &rs.cert_pem).unwrap();
    std::fs::write(setup.path().join("rs.key"), rs.key_pem.as_bytes()).unwrap();
    let text = format!(
        "[authz]\nlisten = \"127.0.0.1:0\"\ngrpc_listen = \"127.0.0.1:0\"\n\
         ops_listen = \"127.0.0.1:0\"\nissuer = \"{ISSUER}\"\n\
         issuer_endpoint = \"https://localhost:{}\"\nca = \"ca.pem\"\ncert = \"rs.pem\"\n\
         key = \"rs.key\"\naudiences = [\"{DEMO_AUDIENCE}\"]\n{extra}",
        server.addr.port()
    );
    Config::from_toml_str(&text, &setup.config_path(), setup.path(), env).unwrap()
}

/// A sidecar serving on loopback: its forward-auth, ext_authz gRPC and ops base URLs.
pub(crate) struct Running {
    pub(crate) verify: String,
    pub(crate) grpc: String,
    pub(crate) ops: String,
    pub(crate) sidecar: Arc<Sidecar>,
    pub(crate) stop: CancellationToken,
}

impl Running {
    /// The sidecar's `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        let answer = reqwest::get(format!("{}/metrics", self.ops)).await.unwrap();
        answer.text().await.unwrap()
    }
}

/// A token the issuer gives `demo` (bound to its certificate), with no options.
pub(crate) async fn demo_token(server: &TestServer, demo: &Issued) -> String {
    issue(server, demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token
}

pub(crate) async fn start(config: Config) -> Running {
    install_provider();
    let listeners = authz::Listeners::bind(&config.authz).await.unwrap();
    let sidecar = Arc::new(Sidecar::new(config.authz).unwrap());
    let (verify, grpc_url, ops_url) = (
        format!("{}/verify", listeners.forward.url()),
        listeners.grpc.as_ref().unwrap().url(),
        format!(
            "http://{}",
            listeners.ops.as_ref().unwrap().local_addr().unwrap()
        ),
    );
    let stop = CancellationToken::new();
    tokio::spawn(authz::serve(sidecar.clone(), listeners, stop.clone()));
    for _ in 0..500 {
        if sidecar.verifier.health().is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Running {
        verify,
        grpc: grpc_url,
        ops: ops_url,
        sidecar,
        stop,
    }
}

/// nginx's `$ssl_client_escaped_cert` of `cert`.
pub(crate) fn nginx_header(cert: &Issued) -> String {
    percent_encode(&cert.cert_pem)
}

/// Every byte but the unreserved ones as `%XX`, as nginx escapes a certificate.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The forward-auth answer: status, challenge, the client id header.
async fn ask(
    url: &str,
    token: Option<&str>,
    cert_header: Option<&str>,
    uri: &str,
) -> (u16, Option<String>, Option<String>) {
    let mut request = reqwest::Client::new()
        .get(url)
        .header("x-original-uri", uri);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(cert) = cert_header {
        request = request.header("x-ssl-client-cert", cert);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (challenge, client) = (header("www-authenticate"), header("x-tokenmint-client-id"));
    (response.status().as_u16(), challenge, client)
}

/// A token, a certificate header, the original URI; the status and challenge expected.
type Case<'a> = (Option<&'a str>, Option<String>, &'a str, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_allows_the_bound_caller_and_refuses_the_rest_with_401_or_403() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, other) = (
        setup.pki.client_uri(DEMO_URI),
        setup.pki.client_uri(OTHER_URI),
    );
    let scopes = "[authz.required_scopes]\n\"/admin\" = [\"demo:write\"]\n";
    let sidecar = start(authz_config(&setup, &server, scopes)).await;
    let token = demo_token(&server, &demo).await;
    let url = &sidecar.verify;
    let demo_cert = nginx_header(&demo);

    let (status, _, client) = ask(url, Some(&token), Some(&demo_cert), "/orders").await;
    assert_eq!((status, client.as_deref()), (200, Some("demo")));
    let cases: Vec<Case> = vec![
        (
            Some(&token),
            Some(nginx_header(&other)),
            "/",
            403,
            "invalid_token",
        ),
        (Some(&token), None, "/", 403, "invalid_token"),
        (None, Some(demo_cert.clone()), "/", 401, "Bearer"),
        (
            Some("not.a.token"),
            Some(demo_cert.clone()),
            "/",
            401,
            "invalid_token",
        ),
        (
            Some(&token),
            Some(demo_cert.clone()),
            "/admin/x",
            403,
            "insufficient_scope",
        ),
    ];
    // A path that reads as another but routes to /admin is held to /admin's scopes.
    let walked = [
        "/orders/../admin/x",
        "/orders/%2e%2e/admin",
        "/%61dmin/x",
        "//admin",
        "/./admin",
        "https://api.example.com/admin?x",
    ];
    let cases = cases.into_iter().chain(walked.into_iter().map(|uri| {
        let cert = Some(demo_cert.clone());
        (Some(token.as_str()), cert, uri, 403, "insufficient_scope")
    }));
    for (token, cert, uri, expected, challenge) in cases {
        let (status, got, client) = ask(url, token, cert.as_deref(), uri).await;
        assert_eq!(status, expected, "{token:?} {uri}");
        assert!(got.unwrap().contains(challenge));
        assert!(client.is_none());
    }
    // Without a path the request is held to every prefix's scopes.
    let unsaid = reqwest::Client::new()
        .get(url)
        .bearer_auth(&token)
        .header("x-ssl-client-cert", &demo_cert)
        .send()
        .await
        .unwrap();
    assert_eq!(unsaid.status(), 403);
    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("tokenmint_authz_decisions_total{decision=\"allow\""),
        "{metrics}"
    );
    sidecar.stop.cancel();
    server.stop().await;
}

/// Traefik and Caddy set `X-Forwarded-Uri` and pass a client's other headers on: a client's
/// own `X-Original-URI` naming a path without scopes must not stand in for the real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_path_header_the_proxy_sets_counts() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let extra = "path_header = \"x-forwarded-uri\"\n\
                 [authz.required_scopes]\n\"/admin\" = [\"demo:write\"]\n";
    let sidecar = start(authz_config(&setup, &server, extra)).await;
    let token = demo_token(&server, &demo).await;
    let call = |forwarded: &'static str, original: &'static str| {
        reqwest::Client::new()
            .get(&sidecar.verify)
            .bearer_auth(&token)
            .header("x-ssl-client-cert", nginx_header(&demo))
            .header("x-forwarded-uri", forwarded)
            .header("x-original-uri", original)
            .send()
    };
    assert_eq!(call("/orders", "/admin").await.unwrap().status(), 200);
    assert_eq!(call("/admin/keys", "/orders").await.unwrap().status(), 403);
    sidecar.stop.cancel();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_certificate_headers_are_a_clean_403_never_a_5xx() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let sidecar = start(authz_config(&setup, &server, "")).await;
    let token = demo_token(&server, &demo).await;
    let chain = nginx_header(&demo).repeat(2);
    let not_pem = "-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----";
    // Not text at all: a malformed certificate, never taken for none.
    let binary = reqwest::Client::new()
        .get(&sidecar.verify)
        .bearer_auth(&token)
        .header(
            "x-ssl-client-cert",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(binary.status(), 403);
    for garbage in [
        "garbage".to_owned(),
        "%ZZ%".to_owned(),
        not_pem.to_owned(),
        chain,
        "A".repeat(20_000),
        "%00%01%02".to_owned(),
    ] {
        let (status, challenge, _) = ask(&sidecar.verify, Some(&token), Some(&garbage), "/").await;
        assert_eq!(status, 403, "{}", &garbage[..garbage.len().min(40)]);
        assert!(challenge.is_some());
    }
    sidecar.stop.cancel();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxys_certificate_format_reaches_the_same_decision() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, other) = (
        setup.pki.client_uri(DEMO_URI),
        setup.pki.client_uri(OTHER_URI),
    );
    let sidecar = start(authz_config(&setup, &server, "")).await;
    let token = demo_token(&server, &demo).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let traefik = |c: &Issued| {
        format!(
            "{},{}",
            b64.encode(&c.cert_der),
            b64.encode(&other.cert_der)
        )
    };
    let envoy = |c: &Issued| format!("By=spiffe://proxy;Cert=\"{}\";URI=x", nginx_header(c));
    for (format, mine, theirs) in [
        (HeaderFormat::Traefik, traefik(&demo), traefik(&other)),
        (HeaderFormat::Envoy, envoy(&demo), envoy(&other)),
    ] {
        let decide = |value: String| {
            let verifier = &sidecar.sidecar.verifier;
            let token = format!("Bearer {token}");
            async move {
                let ask = Ask {
                    authorization: Some(&token),
                    certificate: Some(&value),
                    path: Some("/"),
                    txn_token: None,
                };
                let rules = authz::Rules {
                    format,
                    scopes: &[],
                    txn_tokens: false,
                    txn_required: &[],
                };
                authz::decide(verifier, rules, ask).await
            }
        };
        assert!(
            matches!(decide(mine.clone()).await, Decision::Allow(a) if a.token.client_id == "demo")
        );
        assert!(matches!(
            decide(theirs).await,
            Decision::Deny(Denial::WrongCertificate(_))
        ));
        if format == HeaderFormat::Envoy {
            // Two elements: the proxy appended to one the client sent. Refused.
            let two = decide(format!("{mine},{mine}")).await;
            assert!(matches!(
                two,
                Decision::Deny(Denial::BadCertificateHeader(_))
            ));
        }
    }
    sidecar.stop.cancel();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_issuer_gone_it_allows_within_staleness_then_refuses_and_is_not_ready() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let sidecar = start(authz_config(&setup, &server, "staleness = \"2s\"\n")).await;
    let token = demo_token(&server, &demo).await;
    let demo_cert = nginx_header(&demo);
    assert_eq!(
        reqwest::get(format!("{}/readyz", sidecar.ops))
            .await
            .unwrap()
            .status(),
        200
    );
    server.stop().await;
    let (status, _, _) = ask(&sidecar.verify, Some(&token), Some(&demo_cert), "/").await;
    assert_eq!(status, 200, "within the staleness bound");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let response = reqwest::Client::new()
        .get(&sidecar.verify)
        .bearer_auth(&token)
        .header("x-ssl-client-cert", &demo_cert)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "fails closed, and only with a status nginx passes on"
    );
    assert_eq!(response.headers()["retry-after"], "1");
    let ready = reqwest::get(format!("{}/readyz", sidecar.ops))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    sidecar.stop.cancel();
}

/// A `Check` as Envoy sends it: the token and any `x-forwarded-client-cert` among the
/// lower-cased headers, the peer's URL-encoded PEM in `source.certificate` ("" without).
pub(crate) fn envoy_check(
    token: Option<&str>,
    peer_certificate: &str,
    xfcc: Option<&str>,
) -> CheckRequest {
    let mut headers = std::collections::HashMap::new();
    if let Some(token) = token {
        headers.insert("authorization".to_owned(), format!("Bearer {token}"));
    }
    if let Some(xfcc) = xfcc {
        headers.insert("x-forwarded-client-cert".to_owned(), xfcc.to_owned());
    }
    let http = HttpRequest {
        method: "GET".into(),
        path: "/orders?page=2".into(),
        headers,
        ..HttpRequest::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                certificate: peer_certificate.to_owned(),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(http),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

/// What Envoy would do with the answer: the gRPC code, the HTTP status (200 when allowed), and
/// the headers (set upstream when allowed, sent to the caller when refused).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) code: i32,
    pub(crate) status: i32,
    pub(crate) headers: std::collections::HashMap<String, String>,
}

pub(crate) async fn envoy_ask(url: &str, check: CheckRequest) -> Answer {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    envoy_ask_on(channel, check).await
}

/// Envoy's `Check` of `check` on `channel`.
pub(crate) async fn envoy_ask_on(
    channel: tonic::transport::Channel,
    check: CheckRequest,
) -> Answer {
    let mut client = AuthorizationClient::new(channel);
    let response = client.check(check).await.unwrap().into_inner();
    let code = response.status.unwrap().code;
    let (status, options) = match response.http_response.unwrap() {
        HttpResponse::OkResponse(ok) => (200, ok.headers),
        HttpResponse::DeniedResponse(denied) => (denied.status.unwrap().code, denied.headers),
        other => panic!("unexpected {other:?}"),
    };
    let headers = options
        .into_iter()
        .map(|option| {
            // Every header replaces one the caller sent, even when empty.
            assert_eq!(option.append_action, 2, "OVERWRITE_IF_EXISTS_OR_ADD");
            assert!(option.keep_empty_value);
            let header = option.header.unwrap();
            (header.key, header.value)
        })
        .collect();
    Answer {
        code,
        status,
        headers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_ext_authz_with_the_peer_certificate_allows_the_bound_caller_only() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, other) = (
        setup.pki.client_uri(DEMO_URI),
        setup.pki.client_uri(OTHER_URI),
    );
    let sidecar = start(authz_config(&setup, &server, "")).await;
    let token = demo_token(&server, &demo).await;
    let url = &sidecar.grpc;

    let allowed = envoy_ask(url, envoy_check(Some(&token), &nginx_header(&demo), None)).await;
    assert_eq!((allowed.code, allowed.status), (0, 200), "{allowed:?}");
    assert_eq!(allowed.headers["x-tokenmint-client-id"], "demo");
    assert!(allowed.headers["x-tokenmint-audience"].contains(DEMO_AUDIENCE));
    assert!(!allowed.headers["x-tokenmint-scope"].is_empty());
    assert!(!allowed.headers["x-tokenmint-jti"].is_empty());
    assert_eq!(allowed.headers["x-tokenmint-subject"], "demo");
    assert_eq!(allowed.headers["x-tokenmint-actor"], "", "not delegated");
    assert_eq!(
        allowed.headers["x-tokenmint-txn"], "",
        "no transaction token"
    );
    assert_eq!(allowed.headers.len(), 9);

    let theirs = envoy_ask(url, envoy_check(Some(&token), &nginx_header(&other), None)).await;
    assert_eq!((theirs.code, theirs.status), (7, 403), "PERMISSION_DENIED");
    assert!(theirs.headers["www-authenticate"].contains("invalid_token"));
    assert!(!theirs.headers.contains_key("x-tokenmint-client-id"));

    let no_token = envoy_ask(url, envoy_check(None, &nginx_header(&demo), None)).await;
    assert_eq!(
        (no_token.code, no_token.status),
        (16, 401),
        "UNAUTHENTICATED"
    );
    assert_eq!(no_token.headers["www-authenticate"], "Bearer");

    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("reason=\"no_token\""),
        "gRPC decisions are counted: {metrics}"
    );
    sidecar.stop.cancel();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_ext_authz_takes_xfcc_without_a_peer_certificate_and_refuses_garbage_cleanly() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let sidecar = start(authz_config(&setup, &server, "")).await;
    let token = demo_token(&server, &demo).await;
    let url = &sidecar.grpc;
    let xfcc = format!("By=spiffe://proxy;Cert=\"{}\"", nginx_header(&demo));

    let allowed = envoy_ask(url, envoy_check(Some(&token), "", Some(&xfcc))).await;
    assert_eq!((allowed.code, allowed.status), (0, 200), "{allowed:?}");
    assert_eq!(allowed.headers["x-tokenmint-client-id"], "demo");

    // Two elements: the proxy appended to one the caller sent.
    let two = format!("{xfcc},{xfcc}");
    let refused = envoy_ask(url, envoy_check(Some(&token), "", Some(&two))).await;
    assert_eq!((refused.code, refused.status), (7, 403), "{refused:?}");

    for garbage in ["garbage", "%ZZ%", "%00%01%02", &"A".repeat(20_000)] {
        let refused = envoy_ask(url, envoy_check(Some(&token), garbage, None)).await;
        assert_eq!((refused.code, refused.status), (7, 403), "{refused:?}");
        assert!(refused.headers.contains_key("www-authenticate"));
    }
    sidecar.stop.cancel();
    server.stop().await;
}

fn authz_listen_unix(path: std::path::PathBuf) -> tokenmint::config::Listen {
    tokenmint::config::Listen::Unix(path)
}

/// `check` as Envoy sends it with `encode_raw_headers: true`: the headers as a list of raw
/// values in `header_map`, names in any case, a repeated name sent twice.
fn raw_headers(mut check: CheckRequest, extra: &[(&str, &str)]) -> CheckRequest {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let http = check
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    let mut list: Vec<HeaderValue> = std::mem::take(&mut http.headers)
        .into_iter()
        .chain(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .map(|(key, value)| HeaderValue {
            key: key.to_ascii_uppercase(),
            raw_value: value.into_bytes(),
            ..HeaderValue::default()
        })
        .collect();
    list.reverse();
    http.header_map = Some(HeaderMap { headers: list });
    check
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_ext_authz_reads_raw_headers_when_envoy_sends_them() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, other) = (
        setup.pki.client_uri(DEMO_URI),
        setup.pki.client_uri(OTHER_URI),
    );
    let sidecar = start(authz_config(&setup, &server, "")).await;
    let token = demo_token(&server, &demo).await;
    let url = &sidecar.grpc;
    let xfcc = |who: &Issued| format!("Cert=\"{}\"", nginx_header(who));

    let check = raw_headers(envoy_check(Some(&token), "", Some(&xfcc(&demo))), &[]);
    let allowed = envoy_ask(url, check).await;
    assert_eq!((allowed.code, allowed.status), (0, 200), "{allowed:?}");
    assert_eq!(allowed.headers["x-tokenmint-client-id"], "demo");
    // A second XFCC header, as a client's own one passed along: two elements, refused.
    let second = xfcc(&other);
    let check = raw_headers(
        envoy_check(Some(&token), "", Some(&xfcc(&demo))),
        &[("x-forwarded-client-cert", &second)],
    );
    let refused = envoy_ask(url, check).await;
    assert_eq!((refused.code, refused.status), (7, 403), "{refused:?}");
    let check = raw_headers(envoy_check(None, "", Some(&xfcc(&demo))), &[]);
    let refused = envoy_ask(url, check).await;
    assert_eq!((refused.code, refused.status), (16, 401), "{refused:?}");
    sidecar.stop.cancel();
    server.stop().await;
}

#[test]
fn its_settings_are_checked_with_the_rest_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let load = |text: &str| {
        Config::from_toml_str(text, &dir.path().join("t.toml"), dir.path(), Vec::new())
    };
    let defaults = load("").unwrap().authz;
    assert_eq!(defaults.listen.to_string(), "127.0.0.1:9191");
    assert_eq!(
        defaults.grpc_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9193")
    );
    assert_eq!(
        load("[authz]\ngrpc_listen = \"off\"\n")
            .unwrap()
            .authz
            .grpc_listen,
        None
    );
    assert_eq!(defaults.issuer, "https://localhost:8443");
    assert!(defaults.cert.ends_with("certs/resource.pem"));
    assert_eq!(defaults.certificate_header, "x-ssl-client-cert");
    assert_eq!(defaults.path_header.as_deref(), Some("x-original-uri"));
    assert_eq!(defaults.proxy_tls, None);
    let envoy = load("[authz]\ncertificate_format = \"envoy\"\n")
        .unwrap()
        .authz;
    assert_eq!(envoy.path_header, None);
    let traefik = load("[authz]\ncertificate_format = \"traefik\"\n")
        .unwrap()
        .authz;
    assert_eq!(traefik.path_header.as_deref(), Some("x-forwarded-uri"));
    let unix = load("[authz]\nlisten = \"unix:authz.sock\"\n")
        .unwrap()
        .authz;
    assert_eq!(
        unix.listen,
        authz_listen_unix(dir.path().join("authz.sock"))
    );
    // Any address once the proxy must present a certificate.
    let tls = load(
        "[authz]\nlisten = \"0.0.0.0:9191\"\nproxy_ca = \"p.pem\"\n\
         tls_cert = \"s.pem\"\ntls_key = \"s.key\"\n",
    )
    .unwrap()
    .authz;
    assert_eq!(tls.listen.to_string(), "0.0.0.0:9191");
    assert!(tls.proxy_tls.unwrap().ca.ends_with("p.pem"));
    for (text, field) in [
        ("[authz]\nlisten = \"0.0.0.0:9191\"\n", "authz.listen"),
        (
            "[authz]\ngrpc_listen = \"0.0.0.0:9193\"\n",
            "authz.grpc_listen",
        ),
        (
            "[authz]\ncertificate_format = \"haproxy\"\n",
            "authz.certificate_format",
        ),
        ("[authz]\naudiences = []\n", "authz.audiences"),
        ("[authz]\nstaleness = \"10ms\"\n", "authz.staleness"),
        (
            "[authz]\ncertificate_header = \"bad header\"\n",
            "authz.certificate_header",
        ),
        ("[authz]\nproxy_ca = \"ca.pem\"\n", "authz.proxy_ca"),
        (
            "[authz]\npath_header = \"bad header\"\n",
            "authz.path_header",
        ),
        (
            "[authz.required_scopes]\n\"admin\" = [\"a\"]\n",
            "authz.required_scopes",
        ),
        (
            "[authz.required_scopes]\n\"/a/../b\" = [\"a\"]\n",
            "authz.required_scopes",
        ),
        (
            "[authz.required_scopes]\n\"/%61\" = [\"a\"]\n",
            "authz.required_scopes",
        ),
        (
            "[authz.required_scopes]\n\"/admin\" = []\n",
            "authz.required_scopes",
        ),
        (
            "[authz.txn_required]\n\"/orders\" = []\n",
            "authz.txn_required needs a trust domain",
        ),
        (
            "[authz]\ntrust_domain = \"example.org\"\n",
            "authz.trust_domain",
        ),
        (
            "[authz]\ntrust_domain = \"spiffe://example.org\"\n\
             [authz.txn_required]\n\"orders\" = []\n",
            "authz.txn_required",
        ),
    ] {
        let error = load(text).unwrap_err().to_string();
        assert!(error.contains(field), "{text}: {error}");
    }
    // Transaction tokens: off unless a trust domain is known; txn_tokens' by default; a path
    // rule may name no purpose (any transaction will do).
    assert_eq!(defaults.trust_domain, None);
    let txn = load(
        "[txn_tokens]\ntrust_domain = \"spiffe://example.org\"\n\
         [authz.txn_required]\n\"/orders\" = []\n\"/audit\" = [\"audit:read\"]\n",
    )
    .unwrap()
    .authz;
    assert_eq!(txn.trust_domain.as_deref(), Some("spiffe://example.org"));
    assert_eq!(
        txn.txn_required,
        [
            ("/orders".to_owned(), vec![]),
            ("/audit".to_owned(), vec!["audit:read".to_owned()])
        ]
    );
    let own = load(
        "[txn_tokens]\ntrust_domain = \"spiffe://a\"\n[authz]\ntrust_domain = \"spiffe://b\"\n",
    )
    .unwrap()
    .authz;
    assert_eq!(own.trust_domain.as_deref(), Some("spiffe://b"));
    let overridden = Config::from_toml_str(
        "",
        &dir.path().join("t.toml"),
        dir.path(),
        vec![(
            "TOKENMINT__AUTHZ__CERTIFICATE_FORMAT".into(),
            "envoy".into(),
        )],
    )
    .unwrap();
    assert_eq!(
        overridden.authz.certificate_header,
        "x-forwarded-client-cert"
    );
}
