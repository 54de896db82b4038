//! Where `tokenmint authz` listens: only the proxy may reach it, because it believes the
//! certificate the proxy forwards. A Unix socket (mode 0660, removed at the end, never stolen
//! from a live process) and TCP with TLS where the proxy's own certificate is required — both
//! faces, forward auth and Envoy's ext_authz, on each.

use std::{os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use tokenmint::{authz, pki::Issued};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::authz::{authz_config_with, demo_token, envoy_ask_on, envoy_check, nginx_header, start};
use crate::support::*;

/// `GET /verify` over the Unix socket at `path`, as raw HTTP/1.1: the status code.
async fn verify_over_unix(path: &Path, token: &str, certificate: &str) -> u16 {
    let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
    let request = format!(
        "GET /verify HTTP/1.1\r\nHost: authz\r\nAuthorization: Bearer {token}\r\n\
         X-SSL-Client-Cert: {certificate}\r\nX-Original-URI: /orders\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// A gRPC channel over the Unix socket at `path`.
async fn channel_over_unix(path: &Path) -> tonic::transport::Channel {
    let path = path.to_owned();
    tonic::transport::Endpoint::from_static("http://authz")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_unix_sockets_both_faces_answer_and_the_files_are_the_proxys_alone() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let (demo, other) = (
        setup.pki.client_uri(DEMO_URI),
        setup.pki.client_uri(OTHER_URI),
    );
    let (verify_sock, grpc_sock) = (setup.path().join("v.sock"), setup.path().join("g.sock"));
    let env = vec![
        ("TOKENMINT__AUTHZ__LISTEN".into(), "unix:v.sock".into()),
        ("TOKENMINT__AUTHZ__GRPC_LISTEN".into(), "unix:g.sock".into()),
    ];
    let config = authz_config_with(&setup, &server, "", env);
    // A socket file left behind by a process that is gone is replaced.
    drop(std::os::unix::net::UnixListener::bind(&verify_sock).unwrap());
    let sidecar = start(config.clone()).await;
    assert_eq!(
        sidecar.verify,
        format!("unix:{}/verify", verify_sock.display())
    );
    for sock in [&verify_sock, &grpc_sock] {
        let mode = std::fs::metadata(sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "{}", sock.display());
    }
    // One that answers is not taken over.
    let taken = authz::Listeners::bind(&config.authz).await.unwrap_err();
    assert!(format!("{taken:#}").contains("in use"), "{taken:#}");

    let token = demo_token(&server, &demo).await;
    assert_eq!(
        verify_over_unix(&verify_sock, &token, &nginx_header(&demo)).await,
        200
    );
    assert_eq!(
        verify_over_unix(&verify_sock, &token, &nginx_header(&other)).await,
        403
    );
    let channel = channel_over_unix(&grpc_sock).await;
    let allowed = envoy_ask_on(
        channel.clone(),
        envoy_check(Some(&token), &nginx_header(&demo), None),
    )
    .await;
    assert_eq!((allowed.code, allowed.status), (0, 200), "{allowed:?}");
    let refused = envoy_ask_on(
        channel,
        envoy_check(Some(&token), &nginx_header(&other), None),
    )
    .await;
    assert_eq!((refused.code, refused.status), (7, 403), "{refused:?}");

    sidecar.stop.cancel();
    for _ in 0..100 {
        if !verify_sock.exists() && !grpc_sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !verify_sock.exists() && !grpc_sock.exists(),
        "the socket files are removed"
    );
    server.stop().await;
}

/// The proxy's PKI, apart from the issuer's: the CA, the sidecar's server certificate and the
/// proxy's client certificate, written under `dir`.
fn proxy_pki(dir: &Path) -> (tokenmint::pki::CertificateAuthority, Issued, Issued) {
    let pki = Pki::new();
    let proxy = pki.client_uri("spiffe://proxy.example/nginx");
    std::fs::write(dir.join("proxy-ca.pem"), pki.ca.cert_pem()).unwrap();
    std::fs::write(dir.join("authz.pem"), &pki.server.cert_pem).unwrap();
    std::fs::write(dir.join("authz.key"), pki.server.key_pem.as_bytes()).unwrap();
    (pki.ca, pki.server, proxy)
}

fn https(ca_pem: &str, identity: Option<&Issued>) -> reqwest::Client {
    install_provider();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10));
    if let Some(who) = identity {
        let pem = format!("{}{}", who.cert_pem, who.key_pem.as_str());
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_proxy_tls_only_the_proxys_certificate_gets_an_answer() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let (proxy_ca, _, proxy) = proxy_pki(setup.path());
    let tls = "proxy_ca = \"proxy-ca.pem\"\ntls_cert = \"authz.pem\"\ntls_key = \"authz.key\"\n";
    let sidecar = start(authz_config_with(&setup, &server, tls, Vec::new())).await;
    assert!(
        sidecar.verify.starts_with("https://127.0.0.1:"),
        "{}",
        sidecar.verify
    );
    let token = demo_token(&server, &demo).await;
    let ask = |client: reqwest::Client| {
        client
            .get(&sidecar.verify)
            .bearer_auth(&token)
            .header("x-ssl-client-cert", nginx_header(&demo))
            .header("x-original-uri", "/orders")
            .send()
    };
    let answered = ask(https(proxy_ca.cert_pem(), Some(&proxy))).await.unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.headers()["x-tokenmint-client-id"], "demo");
    // No certificate, or a caller's certificate from the issuer's CA: no answer at all.
    for (case, identity) in [("none", None), ("a caller's", Some(&demo))] {
        let refused = ask(https(proxy_ca.cert_pem(), identity)).await;
        assert!(refused.is_err(), "{case}: {refused:?}");
    }

    // Envoy's ext_authz on the same terms.
    let endpoint = |identity: Option<&Issued>| {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(proxy_ca.cert_pem()))
            .domain_name("localhost");
        if let Some(who) = identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                &who.cert_pem,
                who.key_pem.as_bytes(),
            ));
        }
        tonic::transport::Endpoint::from_shared(sidecar.grpc.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
    };
    let channel = endpoint(Some(&proxy)).connect().await.unwrap();
    let allowed = envoy_ask_on(
        channel,
        envoy_check(Some(&token), &nginx_header(&demo), None),
    )
    .await;
    assert_eq!((allowed.code, allowed.status), (0, 200), "{allowed:?}");
    let stranger = endpoint(None).connect().await;
    if let Ok(channel) = stranger {
        let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(channel);
        let refused = client.check(envoy_check(Some(&token), "", None)).await;
        assert!(refused.is_err(), "{refused:?}");
    }
    sidecar.stop.cancel();
    server.stop().await;
}

/// A socket another instance put in place (a rolling restart) is left to it when this one
/// stops; only its own is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_replaced_by_another_instance_is_left_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authz.sock");
    let listen = tokenmint::config::Listen::Unix(path.clone());
    let bound = authz::Bound::bind(&listen, None).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    bound.serve(axum::Router::new(), stop).await.unwrap();
    assert!(path.exists(), "the other instance's socket stays");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no staging directory left behind: {leftovers:?}"
    );
}
