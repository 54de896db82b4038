//! Connections to tokenmint for the libraries (feature `channel`): an `https://` URL's host and
//! port, TCP and TLS with the **caller's** rustls configuration (its provider, trust anchors and
//! client certificate), and a lazily connecting tonic channel over them. Nothing here installs
//! a process-wide rustls provider or turns on a provider feature.

use std::{fmt, io, sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{ClientConfig, pki_types::ServerName},
};
use tonic::transport::{Channel, Endpoint};

/// A URL that is not `https://` with a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadUrl(pub String);

impl fmt::Display for BadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not an https:// URL with a host", self.0)
    }
}

impl std::error::Error for BadUrl {}

/// Where to connect: an `https://` URL's host, port (default 443) and path.
#[derive(Clone, Debug)]
pub struct Target {
    host: String,
    port: u16,
    path_and_query: String,
    server_name: ServerName<'static>,
}

impl Target {
    /// The target of `url`.
    pub fn parse(url: &str) -> Result<Self, BadUrl> {
        let bad = || BadUrl(url.to_owned());
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("https") {
            return Err(bad());
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(bare.to_owned()).map_err(|_| bad())?;
        Ok(Self {
            host: bare.to_owned(),
            port: uri.port_u16().unwrap_or(443),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            server_name,
        })
    }

    /// The path and query (`/` when the URL has none).
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// `host:port`, as a `Host` header or an authority (an IPv6 host in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A TLS connection to it with `tls`, within `timeout`.
    pub async fn connect(
        &self,
        tls: Arc<ClientConfig>,
        timeout: Duration,
    ) -> io::Result<TlsStream<TcpStream>> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
            tcp.set_nodelay(true)?;
            TlsConnector::from(tls)
                .connect(self.server_name.clone(), tcp)
                .await
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))?
    }
}

/// `tls` offering only the ALPN protocol `alpn`.
pub fn with_alpn(tls: &ClientConfig, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(tls)
}

/// A lazily connecting gRPC channel to `url` whose connections are TLS with `tls` (HTTP/2
/// offered by ALPN), each within `connect_timeout`. Call inside a tokio runtime. The endpoint
/// handed to tonic says `http://` because this connector does the TLS itself (tonic's own
/// TLS, if a host turned it on, would refuse an `https://` endpoint it has no config for).
pub fn channel(
    url: &str,
    tls: &ClientConfig,
    connect_timeout: Duration,
) -> Result<Channel, BadUrl> {
    let target = Target::parse(url)?;
    let tls = with_alpn(tls, b"h2");
    let endpoint = Endpoint::from_shared(format!("http://{}", target.authority()))
        .map_err(|_| BadUrl(url.to_owned()))?
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let connector = tower::service_fn(move |_: http::Uri| {
        let (target, tls) = (target.clone(), tls.clone());
        async move { target.connect(tls, connect_timeout).await.map(TokioIo::new) }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_with_a_host_are_targets() {
        let target = Target::parse("https://issuer.example:8443/.well-known/jwks.json").unwrap();
        assert_eq!(target.authority(), "issuer.example:8443");
        assert_eq!(target.path_and_query(), "/.well-known/jwks.json");
        assert_eq!(
            Target::parse("https://[::1]").unwrap().authority(),
            "[::1]:443"
        );
        for bad in [
            "http://issuer.example",
            "issuer.example",
            "https://",
            "",
            "https:// x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
