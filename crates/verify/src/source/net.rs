//! One TLS connection to the issuer: the host and port of an `https://` URL, TCP, then the
//! caller's rustls configuration with the ALPN protocol the source speaks.

use std::{io, sync::Arc, time::Duration};

use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{ClientConfig, pki_types::ServerName},
};

use crate::error::BuildError;

/// Where to connect: an `https://` URL's host, port and path.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path_and_query: String,
    server_name: ServerName<'static>,
}

impl Target {
    /// The target of `url`: `https://`, a host, the port (default 443).
    pub(crate) fn parse(url: &str) -> Result<Self, BuildError> {
        let bad = || BuildError::BadUrl(url.to_owned());
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

    /// The `Host` header value.
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `tls` with only `alpn` offered.
pub(crate) fn with_alpn(tls: &ClientConfig, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(tls)
}

/// A TLS connection to `target`, within `timeout`.
pub(crate) async fn connect(
    target: &Target,
    tls: Arc<ClientConfig>,
    timeout: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    let connect = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        tcp.set_nodelay(true)?;
        TlsConnector::from(tls)
            .connect(target.server_name.clone(), tcp)
            .await
    };
    tokio::time::timeout(timeout, connect).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "connecting to the issuer timed out",
        )
    })?
}
