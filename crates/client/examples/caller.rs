//! A caller with the demo certificate: keeps a fresh token for the demo audience and calls both
//! `tokenmint-verify` examples with it — over HTTP through `BearerLayer`, over gRPC through
//! `BearerInterceptor`.
//!
//! Beside `tokenmint serve --dev` and the two examples, in the same directory:
//!
//! ```text
//! cargo run --release -p tokenmint-verify --example whoami-http -- --listen 127.0.0.1:9443 &
//! cargo run --release -p tokenmint-verify --example whoami-grpc -- --listen 127.0.0.1:9444 &
//! cargo run --release -p tokenmint-client --example caller
//! ```

#![allow(missing_docs)]

use std::{error::Error, path::PathBuf, sync::Arc, time::Duration};

use bytes_free::collect;
use clap::Parser;
use tokenmint_client::{BearerInterceptor, BearerLayer, Client};
use tokenmint_proto::connect::{self, Target};
use tower::{Service as _, ServiceExt as _};

type Failure = Box<dyn Error + Send + Sync>;

/// Calls whoami over HTTP and gRPC with a token from tokenmint.
#[derive(Debug, Parser)]
struct Args {
    /// The issuer.
    #[arg(long, default_value = "https://localhost:8443")]
    issuer: String,
    /// The audience both whoami services serve.
    #[arg(long, default_value = "https://demo.tokenmint.dev")]
    audience: String,
    /// whoami-http's URL.
    #[arg(long, default_value = "https://localhost:9443/whoami")]
    http: String,
    /// whoami-grpc's URL.
    #[arg(long, default_value = "https://localhost:9444")]
    grpc: String,
    /// The CA of the issuer and of both services.
    #[arg(long, default_value = "certs/ca.pem")]
    ca: PathBuf,
    /// This caller's certificate and key (the demo client).
    #[arg(long, default_value = "certs/demo.pem")]
    cert: PathBuf,
    #[arg(long, default_value = "certs/demo.key")]
    key: PathBuf,
}

mod bytes_free {
    //! Reading a whole response body.
    use http_body_util::BodyExt as _;

    pub async fn collect(body: hyper::body::Incoming) -> Result<String, super::Failure> {
        let bytes = http_body_util::Limited::new(body, 64 * 1024)
            .collect()
            .await?
            .to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "ring")]
    let provider = rustls::crypto::ring::default_provider();
    #[cfg(all(feature = "aws-lc", not(feature = "ring")))]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    Arc::new(provider)
}

/// The demo identity, for the issuer and for both services.
fn identity(args: &Args) -> Result<rustls::ClientConfig, Failure> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read(&args.ca)?) {
        roots.add(cert?)?;
    }
    let chain = CertificateDer::pem_slice_iter(&read(&args.cert)?).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&read(&args.key)?)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?)
}

/// `GET` over one HTTP/1.1 connection, the token attached by `BearerLayer`.
async fn call_http(
    args: &Args,
    tls: &rustls::ClientConfig,
    client: &Client,
) -> Result<String, Failure> {
    let target = Target::parse(&args.http)?;
    let stream = target
        .connect(connect::with_alpn(tls, b"http/1.1"), Duration::from_secs(5))
        .await?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let send = tower::service_fn(move |request: http::Request<String>| {
        let sender = sender.clone();
        async move { sender.lock().await.send_request(request).await }
    });
    let mut service = tower::ServiceBuilder::new()
        .layer(BearerLayer::new(client.for_audience(args.audience.clone())))
        .service(send);
    let request = http::Request::get(target.path_and_query())
        .header(http::header::HOST, target.authority())
        .body(String::new())?;
    let response = service.ready().await?.call(request).await?;
    let status = response.status();
    Ok(format!("{status} {}", collect(response.into_body()).await?))
}

/// whoami-grpc's messages, as its `whoami.proto` declares them.
#[derive(Clone, PartialEq, prost::Message)]
struct WhoamiRequest {}

#[derive(Clone, PartialEq, prost::Message)]
struct WhoamiResponse {
    #[prost(string, tag = "1")]
    client_id: String,
    #[prost(string, tag = "2")]
    scope: String,
    #[prost(string, repeated, tag = "3")]
    aud: Vec<String>,
    #[prost(string, tag = "4")]
    jti: String,
}

/// The gRPC call, the token attached by `BearerInterceptor` (the source's token is fetched
/// first: an interceptor cannot wait for one).
async fn call_grpc(
    args: &Args,
    tls: &rustls::ClientConfig,
    client: &Client,
) -> Result<String, Failure> {
    let source = client.for_audience(args.audience.clone());
    source.token().await?;
    let channel = connect::channel(&args.grpc, tls, Duration::from_secs(5))?;
    let service = tonic::service::interceptor::InterceptedService::new(
        channel,
        BearerInterceptor::new(source),
    );
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<WhoamiRequest, WhoamiResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/tokenmint.example.Whoami/Whoami");
    let answer = grpc
        .unary(tonic::Request::new(WhoamiRequest {}), path, codec)
        .await?
        .into_inner();
    Ok(format!(
        "client_id={} scope={:?} aud={:?} jti={}",
        answer.client_id, answer.scope, answer.aud, answer.jti
    ))
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let tls = identity(&args)?;
    let client = Client::builder(args.issuer.clone(), Arc::new(tls.clone())).build()?;
    println!("http: {}", call_http(&args, &tls, &client).await?);
    println!("grpc: {}", call_grpc(&args, &tls, &client).await?);
    let source = client.for_audience(args.audience.clone());
    println!("tokens issued: {}", source.issued());
    Ok(())
}
