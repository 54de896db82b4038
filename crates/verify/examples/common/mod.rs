//! What both `whoami` examples share: the command line (defaults matching `tokenmint serve
//! --dev` in the current directory), the verifier, and a TLS acceptor that puts each
//! connection's client certificate into every request as a `PeerCertificate`.

use std::{error::Error, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rustls::{
    RootCertStore, ServerConfig, crypto::CryptoProvider, pki_types::PrivateKeyDer,
    pki_types::pem::PemObject, server::WebPkiClientVerifier,
};
use tokenmint_verify::{PeerCertificate, Verifier, tls};
use tower::ServiceExt as _;

pub type Failure = Box<dyn Error + Send + Sync>;

/// A resource server behind tokenmint-verify.
#[derive(Debug, Parser)]
pub struct Args {
    /// Where to listen (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,
    /// The issuer: the `iss` claim, and where keys and revocations are watched.
    #[arg(long, default_value = "https://localhost:8443")]
    pub issuer: String,
    /// Where to reach the issuer, if not at its own URL.
    #[arg(long)]
    pub issuer_endpoint: Option<String>,
    /// The audience this service serves.
    #[arg(long, default_value = "https://demo.tokenmint.dev")]
    pub audience: String,
    /// The CA that callers' certificates and the issuer's chain to.
    #[arg(long, default_value = "certs/ca.pem")]
    pub ca: PathBuf,
    /// This service's TLS certificate and key.
    #[arg(long, default_value = "certs/server.pem")]
    pub cert: PathBuf,
    #[arg(long, default_value = "certs/server.key")]
    pub key: PathBuf,
    /// This service's client identity at the issuer (a client with `introspect`).
    #[arg(long, default_value = "certs/resource.pem")]
    pub identity: PathBuf,
    #[arg(long, default_value = "certs/resource.key")]
    pub identity_key: PathBuf,
}

/// The build's crypto stack as a rustls provider, passed to everything explicitly.
pub fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "ring")]
    let provider = rustls::crypto::ring::default_provider();
    #[cfg(all(feature = "aws-lc", not(feature = "ring")))]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    Arc::new(provider)
}

/// The verifier, watching the issuer as this service's identity; waits (10 s at most) until
/// it can verify, so the first request is not refused as "not ready".
pub async fn verifier(args: &Args) -> Result<Verifier, Failure> {
    let identity =
        tls::client_config_from_files(provider(), &args.ca, &args.identity, &args.identity_key)?;
    let endpoint = args
        .issuer_endpoint
        .clone()
        .unwrap_or_else(|| args.issuer.clone());
    let verifier = Verifier::builder(args.issuer.clone())
        .audience(args.audience.clone())
        .grpc_endpoint(endpoint, Arc::new(identity))
        .build()?;
    for _ in 0..100 {
        if verifier.health().is_ready() {
            return Ok(verifier);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = verifier.health();
    Err(format!(
        "the verifier is not ready: {:?} (last error: {:?})",
        health.problem, health.last_error
    )
    .into())
}

/// The server's TLS: its certificate, client certificates from `--ca` asked for but optional
/// (so a bound token without one is refused by the verifier, with an RFC 6750 answer).
pub fn server_tls(args: &Args) -> Result<Arc<ServerConfig>, Failure> {
    let mut roots = RootCertStore::empty();
    for cert in tls::certificates(&tls::read(&args.ca)?)? {
        roots.add(cert)?;
    }
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()?;
    let key = PrivateKeyDer::from_pem_slice(&tls::read(&args.key)?)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(clients)
        .with_single_cert(tls::certificates(&tls::read(&args.cert)?)?, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `args.listen`, forever.
pub async fn serve(args: &Args, router: axum::Router) -> Result<(), Failure> {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls(args)?);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on https://{}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            // Once per connection: the caller's leaf certificate, hashed once.
            let certificate = PeerCertificate::from_connection(stream.get_ref().1);
            let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
                if let Some(certificate) = &certificate {
                    request.extensions_mut().insert(certificate.clone());
                }
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
