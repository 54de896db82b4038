//! The client installs no process-wide rustls provider, and an unreachable issuer is a typed
//! error, fast on repeat (the backoff), never a panic.

#![allow(clippy::unwrap_used, missing_docs)]

use std::{sync::Arc, time::Duration};

use rustls::{ClientConfig, RootCertStore, crypto::CryptoProvider};
use tokenmint_client::{BuildError, Client, TokenError, TokenSpec};

fn tls() -> Arc<ClientConfig> {
    #[cfg(feature = "ring")]
    let provider = rustls::crypto::ring::default_provider();
    #[cfg(all(feature = "aws-lc", not(feature = "ring")))]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_issuer_is_unavailable_and_no_provider_is_installed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder(format!("https://localhost:{port}"), tls())
        .timeout(Duration::from_secs(2))
        .backoff(Duration::from_secs(5), Duration::from_secs(5))
        .build()
        .unwrap();
    let source = client.source(TokenSpec::defaults());
    let error = source.token().await.unwrap_err();
    assert!(matches!(error, TokenError::Unavailable { .. }), "{error:?}");
    // Within the backoff, the same answer at once, with no new attempt.
    let started = std::time::Instant::now();
    assert_eq!(source.token().await.unwrap_err(), error);
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(source.issued(), 0);
    assert!(CryptoProvider::get_default().is_none());
}

#[test]
fn building_needs_a_runtime_and_an_https_url() {
    let outside = Client::builder("https://issuer.example", tls()).build();
    assert_eq!(outside.unwrap_err(), BuildError::NoRuntime);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let plain = Client::builder("http://issuer.example", tls()).build();
        assert!(matches!(plain, Err(BuildError::BadUrl(_))));
    });
}
