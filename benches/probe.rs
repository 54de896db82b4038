//! Throughput probes over real mTLS: an in-process tokenmint on 127.0.0.1:0 and a few
//! persistent connections running one RPC in a loop for a fixed time. Prints requests/s and
//! latency percentiles. Bounded in time; loopback only. Client and server share the machine.
//!
//! `cargo bench --bench probe` runs every mode; `PROBE_MODE=issue|introspect-repeated|
//! introspect-distinct` runs one. `PROBE_SECS` (default 5), `PROBE_CONNS` (default 4),
//! `PROBE_STREAMS` per connection (default 8).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokenmint::{
    clock::SystemClock,
    config::Config,
    crypto::Kek,
    grpc::proto::{
        IntrospectTokenRequest, IssueTokenRequest, token_service_client::TokenServiceClient,
    },
    pki::{CertificateAuthority, LeafSpec},
    server::{self, Options},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Issue,
    IntrospectRepeated,
    IntrospectDistinct,
}

#[tokio::main]
async fn main() {
    tokenmint::crypto::install_jwt_provider();
    let secs = env_or("PROBE_SECS", 5);
    let conns = env_or("PROBE_CONNS", 4);
    let streams = env_or("PROBE_STREAMS", 8);
    let modes = match std::env::var("PROBE_MODE").ok().as_deref() {
        Some("issue") => vec![Mode::Issue],
        Some("introspect-repeated") => vec![Mode::IntrospectRepeated],
        Some("introspect-distinct") => vec![Mode::IntrospectDistinct],
        _ => vec![
            Mode::Issue,
            Mode::IntrospectRepeated,
            Mode::IntrospectDistinct,
        ],
    };

    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("probe CA").unwrap();
    let server_cert = ca.issue_localhost_server().unwrap();
    let hour = Duration::from_secs(3600);
    let client_cert = ca
        .issue(&LeafSpec::client_uri(
            "probe",
            "spiffe://probe/client",
            hour,
        ))
        .unwrap();
    let rs_cert = ca
        .issue(&LeafSpec::client_uri("rs", "spiffe://probe/rs", hour))
        .unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), &server_cert.cert_pem).unwrap();
    std::fs::write(
        dir.path().join("server.key"),
        server_cert.key_pem.as_bytes(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenmint.kek"),
        Kek::generate().unwrap().to_base64().as_bytes(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenmint.toml"),
        r#"
[tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
[[clients]]
id = "probe"
san_uri = "spiffe://probe/client"
scopes = ["read"]
audiences = ["https://api.example"]
[[clients]]
id = "rs"
san_uri = "spiffe://probe/rs"
permissions = ["introspect"]
introspect_audiences = ["https://api.example"]
"#,
    )
    .unwrap();
    let config = Config::load(&dir.path().join("tokenmint.toml"), Vec::new()).unwrap();
    let keks = server::load_keks(&config.keys.kek_files, None).unwrap();
    let prepared = server::prepare(
        config,
        Options {
            keks,
            sync_clients: false,
            clock: Arc::new(SystemClock),
        },
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(prepared.serve(listener, async move {
        let _ = stop_rx.await;
    }));

    let tls = |cert: &tokenmint::pki::Issued| {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca.cert_pem()))
            .identity(Identity::from_pem(&cert.cert_pem, cert.key_pem.as_bytes()))
            .domain_name("localhost")
    };
    let connect = |tls: ClientTlsConfig| async move {
        Channel::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    };

    // Tokens to introspect: one repeated, or a pool of distinct ones (each seen once per lap).
    let mut issuer = TokenServiceClient::new(connect(tls(&client_cert)).await);
    let mut pool = Vec::new();
    for _ in 0..20_000 {
        pool.push(
            issuer
                .issue_token(IssueTokenRequest::default())
                .await
                .unwrap()
                .into_inner()
                .access_token,
        );
    }
    let pool = Arc::new(pool);

    println!(
        "{conns} mTLS connections × {streams} streams, {secs} s per mode; client and server in one process on this machine's cores"
    );
    for mode in modes {
        let cert = if mode == Mode::Issue {
            &client_cert
        } else {
            &rs_cert
        };
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut workers = Vec::new();
        for c in 0..conns {
            let channel = connect(tls(cert)).await;
            for s in 0..streams {
                let mut client = TokenServiceClient::new(channel.clone());
                let pool = pool.clone();
                let offset = usize::try_from(c * streams + s).unwrap() * 997;
                workers.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut i = offset;
                    while Instant::now() < deadline {
                        let start = Instant::now();
                        match mode {
                            Mode::Issue => {
                                client
                                    .issue_token(IssueTokenRequest::default())
                                    .await
                                    .unwrap();
                            }
                            Mode::IntrospectRepeated | Mode::IntrospectDistinct => {
                                let token = if mode == Mode::IntrospectRepeated {
                                    &pool[0]
                                } else {
                                    &pool[i % pool.len()]
                                };
                                i += 1;
                                let r = client
                                    .introspect_token(IntrospectTokenRequest {
                                        token: token.clone(),
                                        presented_certificate_thumbprint: String::new(),
                                    })
                                    .await
                                    .unwrap()
                                    .into_inner();
                                assert!(r.active);
                            }
                        }
                        latencies.push(start.elapsed());
                    }
                    latencies
                }));
            }
        }
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.await.unwrap());
        }
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "{mode:?}: {} requests, {:.0}/s, p50 {:?}, p99 {:?}",
            latencies.len(),
            latencies.len() as f64 / secs as f64,
            pct(0.50),
            pct(0.99)
        );
    }
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
