//! The TLS edge: the rustls server configuration, the project's own client-certificate
//! verifier (client CA roots and CRLs behind one swap), the swappable server certificate and
//! the task that reloads all of it together, the accept loop that bounds every handshake
//! (time, count, failures per address) and classifies each peer once, and the connection
//! wrapper that coalesces writes.

use std::{
    fmt, io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    pki_types::{
        CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime, pem::PemObject,
    },
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;

use crate::connection::ConnectionInfo;
use tokenmint_core::{
    client::{PeerCertificate, Verification},
    crypto::CertificateThumbprint,
    identity::CertificateIdentity,
};

/// What failed while setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// The build's rustls stack: the one place in the server that reads the crypto feature (the
/// core's `crypto::backend` is the other side of the same choice).
#[cfg(feature = "aws-lc")]
use rustls::crypto::aws_lc_rs as stack;
#[cfg(not(feature = "aws-lc"))]
use rustls::crypto::ring as stack;

/// The crypto provider: the build's stack with its default cipher suites, which are AEAD only
/// (TLS 1.3, and TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305; the FIPS build drops
/// ChaCha20), and its default key-exchange groups: with aws-lc-rs the hybrid post-quantum
/// X25519MLKEM768 comes first, then X25519, P-256, P-384.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(stack::default_provider())
}

/// Reads every certificate in a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(format!("cannot read: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error("holds no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// Reads a private key (PKCS#8, SEC1 or PKCS#1) from a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        reason: format!("no usable private key: {e}"),
    })
}

/// The material client certificates are checked against. Swapped whole, so a reload never
/// mixes old and new.
struct ClientTrust {
    chain: Arc<dyn ClientCertVerifier>,
    /// Leaves of resumed sessions whose chain this trust verified at classification (a
    /// resumed session skips the verifier): checked once each, and voided with the trust.
    resumed_chained: moka::sync::Cache<CertificateThumbprint, ()>,
}

/// Which certificate thumbprints are pinned (`self_signed_tls_client_auth` clients): the
/// client registry as it is at the moment of asking, so a pin registered, changed or removed
/// through the API or on another replica takes effect with the registry.
pub trait PinnedCertificates: Send + Sync + 'static {
    /// Whether some registered client pins this thumbprint.
    fn is_pinned(&self, thumbprint: &CertificateThumbprint) -> bool;
}

/// No pins: a listener that takes CA-issued certificates only (the admin listener).
#[derive(Clone, Copy, Debug)]
pub struct NoPins;

impl PinnedCertificates for NoPins {
    fn is_pinned(&self, _: &CertificateThumbprint) -> bool {
        false
    }
}

impl PinnedCertificates for crate::authority::Authority {
    fn is_pinned(&self, thumbprint: &CertificateThumbprint) -> bool {
        self.is_pinned(thumbprint)
    }
}

/// How long a leaf accepted by its pin is remembered: longer than any handshake may take
/// (`server.handshake_timeout` is at most 5 minutes).
const PINNED_ACCEPT_MEMORY: Duration = Duration::from_secs(600);

/// How many leaves the resumed-session cache remembers.
const CLASSIFY_CACHE_CAPACITY: u64 = 10_000;

/// The client-certificate verifier (SPEC §2). A certificate is accepted if its thumbprint is
/// pinned (within its validity; pinned certificates are never trust anchors and sign nothing)
/// or else if it chains to a client CA (webpki: clientAuth EKU, validity, CRLs). The CA
/// roots and CRLs sit behind one swap. A certificate is optional at the TLS layer (public
/// endpoints need none); each RPC that needs one checks for it.
pub struct ClientVerifier {
    provider: Arc<CryptoProvider>,
    trust: ArcSwap<ClientTrust>,
    pins: Arc<dyn PinnedCertificates>,
    /// Leaves accepted by their pin in a recent handshake: if the pin is gone by the time the
    /// connection is classified, the peer is not taken as CA-verified.
    pinned_accepts: moka::sync::Cache<CertificateThumbprint, ()>,
    /// Whether peers of this listener may use the `admin` permission.
    admin_allowed: bool,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientVerifier")
    }
}

impl ClientVerifier {
    /// A verifier trusting the CA certificates in `client_ca` (less the certificates the CRLs
    /// list) and the certificates `pins` pins.
    pub fn try_new(
        provider: Arc<CryptoProvider>,
        client_ca: &Path,
        client_crls: &[std::path::PathBuf],
        pins: Arc<dyn PinnedCertificates>,
    ) -> Result<Self, TlsError> {
        let trust = Self::load(&provider, client_ca, client_crls)?;
        Ok(Self {
            provider,
            trust: ArcSwap::from_pointee(trust),
            pins,
            // Unbounded in count on purpose: only pinned leaves enter (at most MAX_PINS per
            // client), and an eviction here could let a removed pin's leaf pass as CA-verified.
            // The time to live outlasts the longest handshake (MAX_HANDSHAKE_TIMEOUT).
            pinned_accepts: moka::sync::Cache::builder()
                .time_to_live(PINNED_ACCEPT_MEMORY)
                .build(),
            admin_allowed: true,
        })
    }

    /// The verifier of a data-plane listener when a separate admin listener exists: its
    /// peers never exercise the `admin` permission, whatever client they are.
    pub fn denying_admin(mut self) -> Self {
        self.admin_allowed = false;
        self
    }

    /// Loads the roots and CRLs from their files, for a swap.
    fn reload_trust(
        &self,
        client_ca: &Path,
        client_crls: &[std::path::PathBuf],
    ) -> Result<ClientTrust, TlsError> {
        Self::load(&self.provider, client_ca, client_crls)
    }

    /// How the peer of a finished handshake was verified, decided once against the pins in
    /// place now: `Pinned` if its leaf is pinned (and within its validity), else `CaChain`.
    /// A leaf the handshake accepted by a pin that is gone now is neither (`None`): it never
    /// falls through to the name matchers. A resumed session (`resumed`) skipped the
    /// verifier, so its chain is checked here against the current roots and CRLs (once per
    /// leaf and loaded trust).
    pub fn classify(
        &self,
        certificates: &[CertificateDer<'_>],
        thumbprint: &CertificateThumbprint,
        resumed: bool,
    ) -> Option<Verification> {
        let (leaf, intermediates) = certificates.split_first()?;
        if self.pins.is_pinned(thumbprint) {
            // After a full handshake the verifier has just checked the validity.
            return (!resumed || check_leaf_validity(leaf, UnixTime::now()).is_ok())
                .then_some(Verification::Pinned);
        }
        if !resumed {
            // The verifier ran in this handshake and took the leaf by its chain or by a pin.
            return (!self.pinned_accepts.contains_key(thumbprint))
                .then_some(Verification::CaChain);
        }
        let trust = self.trust.load();
        if !trust.resumed_chained.contains_key(thumbprint) {
            trust
                .chain
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .ok()?;
            trust.resumed_chained.insert(*thumbprint, ());
        }
        Some(Verification::CaChain)
    }

    fn load(
        provider: &Arc<CryptoProvider>,
        client_ca: &Path,
        client_crls: &[std::path::PathBuf],
    ) -> Result<ClientTrust, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certificates(client_ca)? {
            roots.add(cert).map_err(|e| TlsError::Pem {
                path: client_ca.display().to_string(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let mut crls = Vec::new();
        for path in client_crls {
            let pem_error = |reason: String| TlsError::Pem {
                path: path.display().to_string(),
                reason,
            };
            let found = CertificateRevocationListDer::pem_file_iter(path)
                .map_err(|e| pem_error(format!("cannot read: {e}")))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_error(format!("bad PEM: {e}")))?;
            if found.is_empty() {
                return Err(pem_error("holds no X509 CRL block".into()));
            }
            crls.extend(found);
        }
        // Revocation is checked for the client's own certificate against the lists given; a
        // client whose issuer published no list here is not checked (the README says so).
        let chain = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(ClientTrust {
            chain,
            resumed_chained: moka::sync::Cache::builder()
                .max_capacity(CLASSIFY_CACHE_CAPACITY)
                .time_to_live(Duration::from_secs(300))
                .build(),
        })
    }
}

/// Why a certificate is outside its validity period at a time.
enum OutOfValidity {
    /// It does not parse.
    Unparsable(String),
    /// It expired at this time.
    Expired(x509_parser::time::ASN1Time),
    /// It is valid from this time on.
    NotYetValid(x509_parser::time::ASN1Time),
}

/// Whether `der` is within its validity period at `now`.
fn validity_at(
    der: &CertificateDer<'_>,
    now: tokenmint_core::clock::UnixTime,
) -> Result<(), OutOfValidity> {
    let now = now.as_secs();
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| OutOfValidity::Unparsable(e.to_string()))?;
    let validity = parsed.validity();
    if now > validity.not_after.timestamp() {
        return Err(OutOfValidity::Expired(validity.not_after));
    }
    if now < validity.not_before.timestamp() {
        return Err(OutOfValidity::NotYetValid(validity.not_before));
    }
    Ok(())
}

/// Refuses a pinned leaf outside its validity period (the one check a pin keeps: the chain
/// check's other rules are for certificates a CA vouches for).
fn check_leaf_validity(leaf: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    use rustls::CertificateError;
    let now =
        tokenmint_core::clock::UnixTime::EPOCH + std::time::Duration::from_secs(now.as_secs());
    validity_at(leaf, now).map_err(|problem| {
        rustls::Error::InvalidCertificate(match problem {
            OutOfValidity::Unparsable(_) => CertificateError::BadEncoding,
            OutOfValidity::Expired(_) => CertificateError::Expired,
            OutOfValidity::NotYetValid(_) => CertificateError::NotValidYet,
        })
    })
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a client then sends whatever certificate it has (RFC 8446 §4.2.4), and the
        // roots can be swapped without a borrow outliving them.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let thumbprint = CertificateThumbprint::of_der(end_entity.as_ref());
        if self.pins.is_pinned(&thumbprint) {
            check_leaf_validity(end_entity, now)?;
            self.pinned_accepts.insert(thumbprint, ());
            return Ok(ClientCertVerified::assertion());
        }
        let verified =
            self.trust
                .load()
                .chain
                .verify_client_cert(end_entity, intermediates, now)?;
        // Accepted by its chain this time (a pin it had is gone): classify it so.
        if self.pinned_accepts.contains_key(&thumbprint) {
            self.pinned_accepts.invalidate(&thumbprint);
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .load()
            .chain
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .load()
            .chain
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.load().chain.supported_verify_schemes()
    }
}

/// The server's certificate and key, swappable while serving: each handshake takes the one
/// in place when it starts.
#[derive(Debug)]
pub struct ServerCertificate {
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl ServerCertificate {
    /// Loads `cert` and `key`; refuses a key that does not match the certificate, or a
    /// certificate that has expired or is not valid yet.
    pub fn load(provider: Arc<CryptoProvider>, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let current = ArcSwap::from_pointee(Self::read(&provider, cert, key)?);
        Ok(Self { provider, current })
    }

    fn read(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
        let chain = read_certificates(cert)?;
        check_validity(cert, &chain[0])?;
        let certified =
            CertifiedKey::from_der(chain, read_private_key(key)?, provider).map_err(|e| {
                TlsError::Config(format!("{} and {}: {e}", cert.display(), key.display()))
            })?;
        Ok(certified)
    }
}

impl rustls::server::ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Refuses a server certificate outside its validity period, naming the file.
fn check_validity(path: &Path, leaf: &CertificateDer<'_>) -> Result<(), TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let now =
        tokenmint_core::clock::UnixTime::from_secs(x509_parser::time::ASN1Time::now().timestamp());
    validity_at(leaf, now).map_err(|problem| {
        pem_error(match problem {
            OutOfValidity::Unparsable(e) => format!("the first certificate cannot be parsed: {e}"),
            OutOfValidity::Expired(at) => {
                format!("the server certificate expired on {at}: renew it")
            }
            OutOfValidity::NotYetValid(at) => {
                format!("the server certificate is not valid before {at}")
            }
        })
    })
}

/// Builds the server configuration: TLS 1.3 and 1.2, AEAD suites, ALPN `h2` and `http/1.1`, the
/// server certificate from `certificate`, client certificates checked by `verifier`.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    certificate: Arc<ServerCertificate>,
    verifier: Arc<ClientVerifier>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // One TLS 1.3 session ticket per full handshake, not rustls's default two: each costs the
    // server an encode and a cache entry (about 7% of a new connection, docs/performance.md),
    // and a client resumes one connection per ticket.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// The TLS material on disk, and where it is in use: reloaded together, on `SIGHUP` or when a
/// file changes. A replacement that does not load is refused as a whole; the old material
/// keeps serving.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The server certificate chain (PEM).
    pub cert: std::path::PathBuf,
    /// Its key (PEM).
    pub key: std::path::PathBuf,
    /// The client CA roots (PEM).
    pub client_ca: std::path::PathBuf,
    /// The client CAs' revocation lists (PEM).
    pub client_crls: Vec<std::path::PathBuf>,
    /// The server certificate in use.
    pub certificate: Arc<ServerCertificate>,
    /// The client verifier in use.
    pub verifier: Arc<ClientVerifier>,
    /// The admin listener's own client CA, when it has one.
    pub admin: Option<AdminTrust>,
}

/// The admin listener's client CA roots and CRLs (PEM), and its verifier.
#[derive(Debug)]
pub struct AdminTrust {
    /// The admin client CA roots (PEM).
    pub client_ca: std::path::PathBuf,
    /// Their revocation lists (PEM).
    pub client_crls: Vec<std::path::PathBuf>,
    /// The admin listener's verifier.
    pub verifier: Arc<ClientVerifier>,
}

impl TlsMaterial {
    /// Loads everything first, then swaps: either all of it changes or none.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified = ServerCertificate::read(&self.certificate.provider, &self.cert, &self.key)?;
        let trust = self
            .verifier
            .reload_trust(&self.client_ca, &self.client_crls)?;
        let admin_trust = self
            .admin
            .as_ref()
            .map(|admin| {
                admin
                    .verifier
                    .reload_trust(&admin.client_ca, &admin.client_crls)
            })
            .transpose()?;
        self.certificate.current.store(Arc::new(certified));
        self.verifier.trust.store(Arc::new(trust));
        if let (Some(admin), Some(trust)) = (&self.admin, admin_trust) {
            admin.verifier.trust.store(Arc::new(trust));
        }
        Ok(())
    }

    /// What the files look like now (length and modification time), to notice a change.
    fn fingerprint(&self) -> Vec<Option<(u64, std::time::SystemTime)>> {
        [&self.cert, &self.key, &self.client_ca]
            .into_iter()
            .chain(&self.client_crls)
            .chain(
                self.admin
                    .iter()
                    .flat_map(|admin| std::iter::once(&admin.client_ca).chain(&admin.client_crls)),
            )
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.len(), m.modified().ok()?)))
            })
            .collect()
    }
}

/// Reloads `material` on `SIGHUP`, and when one of its files changes (checked every
/// `interval`), until `stop`. Each attempt is logged and counted in
/// `tokenmint_tls_reloads_total{result}`.
pub async fn reload_task(material: TlsMaterial, interval: Duration, stop: CancellationToken) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = material.fingerprint();
    loop {
        #[cfg(unix)]
        let hangup_received = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_received = std::future::pending::<Option<()>>();
        let reason = tokio::select! {
            () = stop.cancelled() => return,
            _ = hangup_received => "SIGHUP",
            _ = ticker.tick() => {
                let now = material.fingerprint();
                if now == seen {
                    continue;
                }
                "a file changed"
            }
        };
        seen = material.fingerprint();
        match material.reload() {
            Ok(()) => {
                metrics::counter!("tokenmint_tls_reloads_total", "result" => "ok").increment(1);
                tracing::info!(reason, "TLS certificate, key and client CA reloaded");
            }
            Err(e) => {
                metrics::counter!("tokenmint_tls_reloads_total", "result" => "failed").increment(1);
                tracing::error!(reason, error = %e, "TLS reload refused; the previous certificate, key and client CA stay in use");
            }
        }
    }
}

/// An accepted TLS connection with its classified peer.
///
/// Writes are coalesced: what the HTTP/2 or HTTP/1.1 layer writes is gathered in `pending` and
/// handed to TLS when it flushes, and the first flush of a batch yields once to the scheduler,
/// so responses finished in the meantime by other streams of the connection leave in the same
/// TLS record and system call (docs/performance.md: this halves the writes per response under
/// load). Nothing waits on a timer: an idle connection's flush goes out after one yield.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: ConnectionInfo,
    pending: Vec<u8>,
    /// How much of `pending` TLS has already taken.
    taken: usize,
    /// Whether the current flush has already yielded once.
    yielded: bool,
}

/// The most plaintext gathered before a write goes through to TLS.
const WRITE_COALESCE_LIMIT: usize = 64 * 1024;

/// What a drained write buffer may keep (a few token responses): the rest is freed.
const IDLE_WRITE_BUFFER: usize = 8 * 1024;

impl TlsConnection {
    /// What handlers of this connection know about it.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    fn new(stream: TlsStream<TcpStream>, info: ConnectionInfo) -> Self {
        Self {
            stream,
            info,
            pending: Vec::new(),
            taken: 0,
            yielded: false,
        }
    }

    /// Hands everything gathered to TLS.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.taken < self.pending.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.pending[self.taken..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.taken += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.clear();
        // A connection that once wrote a large response does not keep its buffer while idle.
        if self.pending.capacity() > IDLE_WRITE_BUFFER {
            self.pending.shrink_to(IDLE_WRITE_BUFFER);
        }
        self.taken = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room to gather more: drains first when the limit is reached.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.pending.len() >= WRITE_COALESCE_LIMIT {
            match self.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(WRITE_COALESCE_LIMIT - self.pending.len()))
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let room = match self.poll_room(cx) {
            Poll::Ready(Ok(room)) => room,
            other => return other,
        };
        let n = buf.len().min(room);
        self.pending.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut room = match self.poll_room(cx) {
            Poll::Ready(Ok(room)) => room,
            other => return other,
        };
        let mut n = 0;
        for buf in bufs {
            let part = buf.len().min(room);
            self.pending.extend_from_slice(&buf[..part]);
            n += part;
            room -= part;
            if room == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.len() > self.taken && !self.yielded {
            // Let the connection's other ready work add to this batch first.
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        self.yielded = false;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Classifies the peer of a finished handshake once, as pinned or CA-verified (see
/// [`ClientVerifier::classify`]), and parses its leaf certificate once.
/// Counts the key-exchange group a handshake agreed (`X25519MLKEM768` is the hybrid
/// post-quantum one): how much of the fleet is post-quantum today.
fn count_key_exchange(stream: &TlsStream<TcpStream>) {
    if let Some(group) = stream.get_ref().1.negotiated_key_exchange_group() {
        let name = group.name().as_str().unwrap_or("other");
        metrics::counter!("tokenmint_tls_key_exchanges_total", "group" => name).increment(1);
    }
}

fn classify(
    stream: &TlsStream<TcpStream>,
    verifier: &ClientVerifier,
) -> Option<Arc<PeerCertificate>> {
    let connection = stream.get_ref().1;
    let certificates = connection.peer_certificates()?;
    let leaf = certificates.first()?;
    let thumbprint = CertificateThumbprint::of_der(leaf.as_ref());
    let resumed = connection.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let Some(verification) = verifier.classify(certificates, &thumbprint, resumed) else {
        metrics::counter!("tokenmint_tls_peers_untrusted_total").increment(1);
        tracing::debug!(
            "the client certificate is no longer pinned or trusted (changed since its session began); treating the peer as unauthenticated"
        );
        return None;
    };
    match CertificateIdentity::from_der(leaf.as_ref()) {
        Ok(identity) => Some(Arc::new(PeerCertificate {
            identity,
            thumbprint,
            verification,
            admin_allowed: verifier.admin_allowed,
        })),
        Err(e) => {
            tracing::warn!(error = %e, "verified client certificate could not be parsed; treating the peer as unauthenticated");
            None
        }
    }
}

/// Bounds on the TLS handshakes in progress.
#[derive(Clone, Debug)]
pub struct HandshakeLimits {
    /// How long a peer may take to finish its handshake.
    pub timeout: Duration,
    /// Handshakes in progress at once; a connection beyond it is closed at once.
    pub max_in_progress: u32,
    /// Each source address's share of them: past it, its connections wait their turn.
    pub shares: Arc<crate::address_shares::AddressShares>,
    /// Failed authentications by IP address (`None`: no limit): past its rate, an address's
    /// new connections are closed at once.
    pub failures: Option<Arc<PeerFailures>>,
}

/// Per-address accounting of failed authentications (failed TLS handshakes, and calls refused
/// as `UNAUTHENTICATED` after one): a token bucket per IP address, and the
/// addresses that emptied theirs, with when they may try again. Both are bounded: the
/// buckets are pruned when the penalty list is, and the penalty list holds at most
/// `MAX_PENALIZED` addresses (one that does not fit is not penalized: it may only try again
/// early).
pub struct PeerFailures {
    buckets: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    penalized: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, std::time::Instant>>,
    clock: governor::clock::DefaultClock,
}

const MAX_PENALIZED: usize = 100_000;

impl fmt::Debug for PeerFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerFailures").finish_non_exhaustive()
    }
}

impl PeerFailures {
    /// `per_second` failures per address, twice that at once; `None` when 0 (no limit).
    pub fn new(per_second: u32) -> Option<Self> {
        let rate = std::num::NonZeroU32::new(per_second)?;
        let burst = rate.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
        Some(Self {
            buckets: governor::RateLimiter::keyed(
                governor::Quota::per_second(rate).allow_burst(burst),
            ),
            penalized: std::sync::Mutex::default(),
            clock: governor::clock::DefaultClock::default(),
        })
    }

    /// Whether `ip` is waiting out a penalty now.
    fn is_penalized(&self, ip: std::net::IpAddr) -> bool {
        let penalized = self
            .penalized
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        penalized
            .get(&ip)
            .is_some_and(|until| std::time::Instant::now() < *until)
    }

    /// Counts a failed authentication from `ip`; past its rate, `ip` waits until the bucket
    /// has a token again.
    pub fn failed(&self, ip: std::net::IpAddr) {
        use governor::clock::Clock as _;
        if let Err(not_until) = self.buckets.check_key(&ip) {
            let now = std::time::Instant::now();
            let until = now + not_until.wait_time_from(self.clock.now());
            let mut penalized = self
                .penalized
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if penalized.len() >= MAX_PENALIZED {
                penalized.retain(|_, until| *until > now);
                self.buckets.retain_recent();
            }
            if penalized.len() < MAX_PENALIZED {
                penalized.insert(ip, until);
            }
        }
    }
}

/// Accepts TCP connections until `shutdown`, runs each TLS handshake in its own task under
/// `limits.timeout`, and passes finished connections on. A stalled client blocks nobody; an
/// address past its share of handshakes waits its turn (closed past its queue); past
/// `limits.max_in_progress` handshakes a connection is closed at once, so a reconnect storm
/// costs no more than that many handshakes' memory.
pub async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    verifier: Arc<ClientVerifier>,
    limits: HandshakeLimits,
    connections: mpsc::Sender<TlsConnection>,
    shutdown: CancellationToken,
) {
    let handshaker = Arc::new(Handshaker {
        acceptor,
        verifier,
        in_progress: Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(limits.max_in_progress).unwrap_or(usize::MAX),
        )),
        failures: limits.failures.clone(),
        timeout: limits.timeout,
        connections,
        shutdown: shutdown.clone(),
    });
    loop {
        let (tcp, remote_addr) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if limits
            .failures
            .as_ref()
            .is_some_and(|f| f.is_penalized(remote_addr.ip()))
        {
            metrics::counter!("tokenmint_tls_handshakes_total", "result" => "peer_limited")
                .increment(1);
            tracing::debug!(%remote_addr, "too many failed handshakes from this address; connection closed");
            continue;
        }
        let Ok(place) = limits.shares.enter(remote_addr.ip()) else {
            metrics::counter!("tokenmint_tls_handshakes_total", "result" => "address_limited")
                .increment(1);
            tracing::debug!(%remote_addr, "too many TLS handshakes in progress and waiting from this address; connection closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(handshaker.clone().run(tcp, remote_addr, place));
    }
}

/// What every handshake of one listener shares.
struct Handshaker {
    acceptor: TlsAcceptor,
    verifier: Arc<ClientVerifier>,
    in_progress: Arc<tokio::sync::Semaphore>,
    failures: Option<Arc<PeerFailures>>,
    timeout: Duration,
    connections: mpsc::Sender<TlsConnection>,
    shutdown: CancellationToken,
}

impl Handshaker {
    /// One connection: its address's turn within `timeout` of its accept (waiting holds no
    /// handshake slot), a slot, the handshake within `timeout` of its turn; then the
    /// classified connection is passed on. Waiting is not the peer's failure: only the
    /// handshake's own outcome counts against its address.
    async fn run(
        self: Arc<Self>,
        tcp: TcpStream,
        remote_addr: SocketAddr,
        place: crate::address_shares::Place,
    ) {
        let turn = tokio::select! {
            () = self.shutdown.cancelled() => return,
            turn = tokio::time::timeout(self.timeout, place.turn()) => match turn {
                Ok(turn) => turn,
                Err(_) => {
                    metrics::counter!("tokenmint_tls_handshakes_total", "result" => "address_wait_timeout").increment(1);
                    tracing::debug!(%remote_addr, "no turn for this address within the handshake timeout; connection closed");
                    return;
                }
            },
        };
        let Ok(slot) = self.in_progress.clone().try_acquire_owned() else {
            metrics::counter!("tokenmint_tls_handshakes_total", "result" => "shed").increment(1);
            tracing::debug!(%remote_addr, "too many TLS handshakes in progress; connection closed");
            return;
        };
        let handshake = tokio::time::timeout(self.timeout, self.acceptor.accept(tcp));
        let result = tokio::select! {
            () = self.shutdown.cancelled() => return,
            result = handshake => result,
        };
        drop((slot, turn, place));
        let outcome = match &result {
            Ok(Ok(_)) => "ok",
            Ok(Err(_)) => "failed",
            Err(_) => "timeout",
        };
        metrics::counter!("tokenmint_tls_handshakes_total", "result" => outcome).increment(1);
        let stream = match result {
            Ok(Ok(stream)) => {
                count_key_exchange(&stream);
                stream
            }
            Ok(Err(e)) => {
                self.failed(remote_addr);
                tracing::debug!(%remote_addr, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.failed(remote_addr);
                tracing::debug!(%remote_addr, "TLS handshake timed out");
                return;
            }
        };
        let info = ConnectionInfo {
            remote_addr: Some(remote_addr),
            peer: classify(&stream, &self.verifier),
            state: Arc::default(),
        };
        let _ = self
            .connections
            .send(TlsConnection::new(stream, info))
            .await;
    }

    fn failed(&self, remote_addr: SocketAddr) {
        if let Some(failures) = &self.failures {
            failures.failed(remote_addr.ip());
        }
    }
}
