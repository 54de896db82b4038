//! A first throughput probe: an in-process tokenmint on 127.0.0.1:0, real mTLS, and a few
//! persistent connections each issuing tokens in a loop for a fixed time. Prints tokens/s
//! and latency percentiles. Bounded in time; loopback only.
//!
//! `cargo bench --bench issue_probe` (env: PROBE_SECS, default 5; PROBE_CONNS, default 4;
//! PROBE_STREAMS per connection, default 8).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokenmint::{
    clock::SystemClock,
    config::Config,
    crypto::Kek,
    grpc::proto::{IssueTokenRequest, token_service_client::TokenServiceClient},
    pki::CertificateAuthority,
    server::{self, Options},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    tokenmint::crypto::install_jwt_provider();
    let secs = env_or("PROBE_SECS", 5);
    let conns = env_or("PROBE_CONNS", 4);
    let streams = env_or("PROBE_STREAMS", 8);

    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("probe CA").unwrap();
    let server_cert = ca.issue_localhost_server().unwrap();
    let client_cert = ca
        .issue(&tokenmint::pki::LeafSpec::client_uri(
            "probe",
            "spiffe://probe/client",
            Duration::from_secs(3600),
        ))
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

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .identity(Identity::from_pem(
            &client_cert.cert_pem,
            client_cert.key_pem.as_bytes(),
        ))
        .domain_name("localhost");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut workers = Vec::new();
    for _ in 0..conns {
        let channel = Channel::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(tls.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        for _ in 0..streams {
            let mut client = TokenServiceClient::new(channel.clone());
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    client
                        .issue_token(IssueTokenRequest::default())
                        .await
                        .unwrap();
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
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "IssueToken over {conns} mTLS connections × {streams} streams, {secs} s (client and server in one process, 2 cores shared):"
    );
    println!(
        "  {} tokens, {:.0} tokens/s, p50 {:?}, p99 {:?}",
        latencies.len(),
        latencies.len() as f64 / secs as f64,
        pct(0.50),
        pct(0.99)
    );
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
