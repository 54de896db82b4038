//! The sidecar's listeners. What a proxy forwards of the caller's certificate is believed, so
//! only the proxy may reach them: a loopback TCP address, a Unix socket whose file mode and
//! directory say who may connect, or TCP with TLS where the proxy's own client certificate is
//! required (a connection without one is closed once its handshake ends).

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail};
use axum::Router;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Listen, ProxyTls},
    tls, transport,
};

/// A bound listener, ready to serve.
pub enum Bound {
    /// Plain HTTP on a TCP address (loopback).
    Tcp(TcpListener),
    /// Plain HTTP on a Unix socket; its file (device and inode) is removed when serving ends.
    Unix(UnixListener, PathBuf, (u64, u64)),
    /// HTTPS, the proxy's client certificate required.
    Tls(
        TcpListener,
        tokio_rustls::TlsAcceptor,
        Arc<tls::ClientVerifier>,
    ),
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

/// A TLS listener's limits: a handful of proxy connections, never a crowd.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HANDSHAKES: u32 = 64;

impl Bound {
    /// Binds `listen`, with TLS from the proxy when `tls` is set and `listen` is TCP.
    pub async fn bind(listen: &Listen, tls: Option<&ProxyTls>) -> Result<Self> {
        match (listen, tls) {
            (Listen::Unix(path), _) => {
                let (listener, id) = bind_unix(path).await?;
                Ok(Bound::Unix(listener, path.clone(), id))
            }
            (Listen::Tcp(addr), None) => Ok(Bound::Tcp(bind_tcp(*addr).await?)),
            (Listen::Tcp(addr), Some(tls)) => {
                let (acceptor, verifier) = acceptor(tls)?;
                Ok(Bound::Tls(bind_tcp(*addr).await?, acceptor, verifier))
            }
        }
    }

    /// The TCP address it is bound to (`None` for a Unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Bound::Tcp(listener) | Bound::Tls(listener, ..) => listener.local_addr().ok(),
            Bound::Unix(..) => None,
        }
    }

    /// Where it listens, as a URL (`http://127.0.0.1:9191`, `https://…`, `unix:/path`).
    pub fn url(&self) -> String {
        let addr = self
            .local_addr()
            .map_or_else(|| "?".into(), |a| a.to_string());
        match self {
            Bound::Tcp(_) => format!("http://{addr}"),
            Bound::Tls(..) => format!("https://{addr}"),
            Bound::Unix(_, path, _) => format!("unix:{}", path.display()),
        }
    }

    /// Serves `router` until `stop`.
    pub async fn serve(self, router: Router, stop: CancellationToken) -> Result<()> {
        match self {
            Bound::Tcp(listener) => axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .context("serving"),
            Bound::Unix(listener, path, id) => {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                remove_own_socket(&path, id);
                served.context("serving")
            }
            Bound::Tls(listener, acceptor, verifier) => {
                serve_tls(listener, acceptor, verifier, router, stop).await;
                Ok(())
            }
        }
    }
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Binds a Unix socket at `path`, mode 0660 from the moment it is reachable: it is bound in a
/// private directory (0700) beside `path`, narrowed, then renamed into place. A socket file
/// whose listener is gone (connection refused) is replaced; one that answers, one this process
/// may not try, or a file that is not a socket, is an error. Returns the listener and the
/// socket's identity, so only this socket is removed at the end.
async fn bind_unix(path: &std::path::Path) -> Result<(UnixListener, (u64, u64))> {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        match tokio::net::UnixStream::connect(path).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
            Ok(_) => bail!("{} is in use by another process", path.display()),
            Err(e) => bail!("{} cannot be checked: {e}", path.display()),
        }
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let private = parent
        .unwrap_or_else(|| std::path::Path::new("."))
        .join(format!(".tokenmint-authz-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("creating {}", private.display()))?;
    let staged = private.join("socket");
    let bound = UnixListener::bind(&staged)
        .with_context(|| format!("binding unix:{}", path.display()))
        .and_then(|listener| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o660))?;
            std::fs::rename(&staged, path)?;
            let meta = std::fs::symlink_metadata(path)?;
            Ok((listener, (meta.dev(), meta.ino())))
        });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound.with_context(|| format!("placing the socket at {}", path.display()))
}

/// Removes the socket at `path` if it is still the one `id` names (another instance may have
/// replaced it since).
fn remove_own_socket(path: &std::path::Path, id: (u64, u64)) {
    use std::os::unix::fs::MetadataExt as _;
    if std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == id) {
        let _ = std::fs::remove_file(path);
    }
}

/// The acceptor for `tls`: the sidecar's certificate, the proxy's CA.
fn acceptor(tls: &ProxyTls) -> Result<(tokio_rustls::TlsAcceptor, Arc<tls::ClientVerifier>)> {
    let provider = tls::provider();
    let verifier = Arc::new(
        tls::ClientVerifier::try_new(provider.clone(), &tls.ca, &[], Arc::new(tls::NoPins))
            .context("authz.proxy_ca")?,
    );
    let certificate = Arc::new(
        tls::ServerCertificate::load(provider.clone(), &tls.cert, &tls.key)
            .context("authz.tls_cert and authz.tls_key")?,
    );
    let config = tls::server_config(provider, certificate, verifier.clone())
        .context("the sidecar's TLS settings")?;
    Ok((tokio_rustls::TlsAcceptor::from(config), verifier))
}

/// HTTPS with the server's own accept loop (each handshake in its own task, under a time
/// limit) and connection serving, where a connection without a verified certificate gets no
/// place at all.
async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    verifier: Arc<tls::ClientVerifier>,
    router: Router,
    stop: CancellationToken,
) {
    let (connections, incoming) = tokio::sync::mpsc::channel(64);
    let limits = tls::HandshakeLimits {
        timeout: HANDSHAKE_TIMEOUT,
        max_in_progress: MAX_HANDSHAKES,
        shares: crate::address_shares::AddressShares::new(0, &[], 0),
        failures: None,
    };
    let accept = tokio::spawn(tls::accept_loop(
        listener,
        acceptor,
        verifier,
        limits,
        connections,
        stop.clone(),
    ));
    transport::serve_connections(incoming, router, connection_limits(), stop).await;
    let _ = accept.await;
}

fn connection_limits() -> transport::ConnectionLimits {
    transport::ConnectionLimits {
        max_streams: 256,
        max_streams_without_certificate: 1,
        // No place for a connection whose peer is not the proxy.
        max_connections_without_certificate: 0,
        idle_without_certificate: Duration::from_secs(1),
        max_header_bytes: 64 * 1024,
        header_timeout: Duration::from_secs(10),
        keepalive_interval: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(10),
        max_age: Duration::from_secs(3600),
        age_grace: Duration::from_secs(30),
        grace: Duration::from_secs(5),
    }
}
