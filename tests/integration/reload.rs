//! TLS material reloaded while serving: a new server certificate reaches new connections with
//! no failed handshake, a broken replacement is refused and the old one keeps serving, a new
//! client CA takes effect, CRLs are honoured at start and on reload, and an expired server
//! certificate stops `serve` at start.

use std::{path::Path, sync::Arc, time::Duration};

use rustls::pki_types::ServerName;
use tokenmint::{
    grpc::proto::IssueTokenRequest,
    pki::{CertificateAuthority, Issued, LeafSpec, Usage},
};

use crate::support::*;

/// Writes a file whole: a temporary beside it, then a rename (as deployment tools do).
fn replace(dir: &Path, name: &str, contents: &[u8]) {
    let tmp = dir.join(format!(".{name}.new"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn client_config(setup: &Setup, client: &Issued) -> Arc<rustls::ClientConfig> {
    let mut config = rustls_client(setup, Some(client));
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// One full handshake with the server at `addr`; the leaf certificate it presented.
async fn handshake(
    addr: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_certificate_reaches_new_connections_and_a_broken_one_is_refused() {
    let metrics = tokenmint::ops::metrics_handle();
    let mut setup = Setup::new(&demo_client());
    setup.tls_toml = "reload_interval = \"100ms\"\n".into();
    let server = setup.start().await;
    let client = setup.pki.client_uri(DEMO_URI);
    let config = client_config(&setup, &client);
    let old = handshake(server.addr, &config).await.unwrap();
    assert_eq!(old, setup.pki.server.cert_der);

    // A client keeps opening connections while the certificate is replaced.
    let looping = {
        let config = config.clone();
        let addr = server.addr;
        let fresh = setup.pki.ca.issue_localhost_server().unwrap();
        let expected = fresh.cert_der.clone();
        let dir = setup.path().to_path_buf();
        let swap = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            replace(&dir, "server.key", fresh.key_pem.as_bytes());
            replace(&dir, "server.pem", fresh.cert_pem.as_bytes());
        });
        tokio::spawn(async move {
            let (mut failures, mut handshakes) = (0, 0);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match handshake(addr, &config).await {
                    Ok(leaf) => {
                        handshakes += 1;
                        if leaf == expected {
                            break;
                        }
                    }
                    Err(_) => failures += 1,
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the new certificate never arrived"
                );
            }
            swap.await.unwrap();
            (failures, handshakes)
        })
    };
    let (failures, handshakes) = looping.await.unwrap();
    assert_eq!(
        failures, 0,
        "handshakes failed during the swap ({handshakes} succeeded)"
    );
    assert!(handshakes > 1);
    // Issuance works on the new certificate.
    issue(&server, &client, IssueTokenRequest::default())
        .await
        .unwrap();

    // A broken replacement is refused; the certificate in place keeps serving.
    let current = handshake(server.addr, &config).await.unwrap();
    let failed_before = reload_failures(&metrics.render());
    replace(
        setup.path(),
        "server.pem",
        b"-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reload_failures(&metrics.render()) <= failed_before {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken file was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handshake(server.addr, &config).await.unwrap(), current);
    issue(&server, &client, IssueTokenRequest::default())
        .await
        .unwrap();
    server.stop().await;
}

/// `tokenmint_tls_reloads_total{result="failed"}` in Prometheus text (0 if absent).
fn reload_failures(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(r#"tokenmint_tls_reloads_total{result="failed"} "#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_ca_takes_effect_on_new_connections() {
    let mut setup = Setup::new(&demo_client());
    setup.tls_toml = "reload_interval = \"100ms\"\n".into();
    let server = setup.start().await;
    let old_client = setup.pki.client_uri(DEMO_URI);
    issue(&server, &old_client, IssueTokenRequest::default())
        .await
        .unwrap();

    // The client CA is replaced by a new one: its clients get in, the old CA's do not.
    let new_ca = CertificateAuthority::generate("new client CA").unwrap();
    let new_client = new_ca
        .issue(&LeafSpec::client_uri(
            "demo",
            DEMO_URI,
            Duration::from_secs(3600),
        ))
        .unwrap();
    replace(setup.path(), "ca.pem", new_ca.cert_pem().as_bytes());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while issue(&server, &new_client, IssueTokenRequest::default())
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new client CA never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_tls_refused(issue(&server, &old_client, IssueTokenRequest::default()).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_expired_server_certificate_naming_the_file() {
    let setup = Setup::new(&demo_client());
    let now = time::OffsetDateTime::now_utc();
    let expired = setup
        .pki
        .ca
        .issue(&LeafSpec {
            subject: vec![(tokenmint::pki::DnType::CommonName, "localhost".into())],
            san_uris: vec![],
            san_dns: vec!["localhost".into()],
            san_ips: vec![],
            usages: vec![Usage::Server],
            not_before: now - time::Duration::days(30),
            not_after: now - time::Duration::days(1),
        })
        .unwrap();
    replace(setup.path(), "server.key", expired.key_pem.as_bytes());
    replace(setup.path(), "server.pem", expired.cert_pem.as_bytes());
    let prepared = setup.prepare().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = prepared
        .serve(listener, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("server.pem"), "{error}");
    assert!(error.contains("expired"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_the_revocation_list_fails_the_handshake_and_a_reload_adds_to_it() {
    let mut setup = Setup::new(&demo_client());
    let kept = setup.pki.client_uri(DEMO_URI);
    let listed = setup.pki.client_uri(DEMO_URI);
    std::fs::write(
        setup.path().join("crl.pem"),
        setup.pki.ca.revocation_list(&[&listed]).unwrap(),
    )
    .unwrap();
    setup.tls_toml = "client_crls = [\"crl.pem\"]\nreload_interval = \"100ms\"\n".into();
    let server = setup.start().await;

    // Same CA, same identity: only the listed certificate is refused, at the handshake.
    assert_tls_refused(issue(&server, &listed, IssueTokenRequest::default()).await);
    issue(&server, &kept, IssueTokenRequest::default())
        .await
        .unwrap();

    // A new list that names the other certificate too: its new connections fail from then on.
    replace(
        setup.path(),
        "crl.pem",
        setup
            .pki
            .ca
            .revocation_list(&[&listed, &kept])
            .unwrap()
            .as_bytes(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while issue(&server, &kept, IssueTokenRequest::default())
        .await
        .is_ok()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new list never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_tls_refused(issue(&server, &kept, IssueTokenRequest::default()).await);
    // A client the lists do not name is still served.
    issue(
        &server,
        &setup.pki.client_uri(DEMO_URI),
        IssueTokenRequest::default(),
    )
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_list_that_is_not_pem_stops_serve_naming_the_file() {
    let mut setup = Setup::new(&demo_client());
    std::fs::write(setup.path().join("crl.pem"), "not a list").unwrap();
    setup.tls_toml = "client_crls = [\"crl.pem\"]\n".into();
    let prepared = setup.prepare().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = prepared
        .serve(listener, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("crl.pem"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_match_or_an_expired_certificate_is_refused_at_reload() {
    let metrics = tokenmint::ops::metrics_handle();
    let mut setup = Setup::new(&demo_client());
    setup.tls_toml = "reload_interval = \"100ms\"\n".into();
    let server = setup.start().await;
    let client = setup.pki.client_uri(DEMO_URI);
    let config = client_config(&setup, &client);
    let original = setup.pki.server.cert_der.clone();
    assert_eq!(handshake(server.addr, &config).await.unwrap(), original);

    let now = time::OffsetDateTime::now_utc();
    let expired = setup
        .pki
        .ca
        .issue(&LeafSpec {
            subject: vec![(tokenmint::pki::DnType::CommonName, "localhost".into())],
            san_uris: vec![],
            san_dns: vec!["localhost".into()],
            san_ips: vec![],
            usages: vec![Usage::Server],
            not_before: now - time::Duration::days(30),
            not_after: now - time::Duration::days(1),
        })
        .unwrap();
    let other = setup.pki.ca.issue_localhost_server().unwrap();
    let replacements = [
        (
            "another certificate's key",
            vec![("server.key", other.key_pem.as_bytes())],
        ),
        (
            "an expired certificate",
            vec![
                ("server.key", expired.key_pem.as_bytes()),
                ("server.pem", expired.cert_pem.as_bytes()),
            ],
        ),
    ];
    for (what, files) in replacements {
        let failed_before = reload_failures(&metrics.render());
        for (name, contents) in files {
            replace(setup.path(), name, contents);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while reload_failures(&metrics.render()) <= failed_before {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} was not noticed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Several reload intervals later the original certificate still serves.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            handshake(server.addr, &config).await.unwrap(),
            original,
            "{what} replaced the certificate"
        );
        issue(&server, &client, IssueTokenRequest::default())
            .await
            .unwrap();
    }
    server.stop().await;
}
