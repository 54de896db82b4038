//! The library installs no process-wide rustls provider: a host built with another provider,
//! or none installed, must not find one set behind its back (nor panic because of us).

#![allow(clippy::unwrap_used, missing_docs)]

use std::{sync::Arc, time::Duration};

use rustls::{ClientConfig, RootCertStore, crypto::CryptoProvider};
use tokenmint_verify::{Verifier, VerifyError};

fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "ring")]
    let provider = rustls::crypto::ring::default_provider();
    #[cfg(all(feature = "aws-lc", not(feature = "ring")))]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    Arc::new(provider)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_connect_with_the_callers_provider_and_install_none() {
    let tls = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let tls = Arc::new(tls);
    // A port nothing listens on: the sources try, fail, and back off.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let grpc = Verifier::builder("https://localhost:1")
        .audience("https://api.example")
        .grpc_endpoint(format!("https://localhost:{port}"), tls.clone())
        .build()
        .unwrap();
    let http = Verifier::builder("https://localhost:1")
        .audience("https://api.example")
        .jwks_url(format!("https://localhost:{port}/jwks.json"), tls)
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for verifier in [&grpc, &http] {
        assert_eq!(
            verifier.verify("a.b.c", None, verifier.now()).await,
            Err(VerifyError::NotReady)
        );
        let health = verifier.health();
        assert!(health.reconnects > 0, "{health:?}");
        assert!(health.last_error.is_some());
    }
    assert!(CryptoProvider::get_default().is_none());
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let tls = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let built = Verifier::builder("https://issuer.example")
        .audience("https://api.example")
        .grpc(Arc::new(tls.clone()))
        .build();
    assert_eq!(built.unwrap_err(), tokenmint_verify::BuildError::NoRuntime);
    let built = Verifier::builder("https://issuer.example")
        .grpc(Arc::new(tls))
        .build();
    assert_eq!(built.unwrap_err(), tokenmint_verify::BuildError::NoAudience);
}
