//! A real tokenmint on 127.0.0.1:0 over real mTLS, with a PKI made in the test.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tempfile::TempDir;
use tokenmint::{
    config::Config,
    grpc::proto::{
        GetJwksRequest, GetJwksResponse, IssueTokenRequest, IssueTokenResponse,
        key_service_client::KeyServiceClient, token_service_client::TokenServiceClient,
    },
    pki::{CertificateAuthority, DnType, Issued, LeafSpec},
    server::{self, Options, PreparedServer, ServeError},
    wire::OAUTH_ERROR_METADATA,
};
use tokenmint_core::{clock::SystemClock, crypto::Kek};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub const ISSUER: &str = "https://tokenmint.test";
pub const DEMO_URI: &str = "spiffe://tokenmint.test/demo";
pub const DEMO_AUDIENCE: &str = "https://demo.example";
pub const ADMIN_URI: &str = "spiffe://tokenmint.test/admin";
/// A resource server that may introspect tokens for DEMO_AUDIENCE only.
pub const RS_URI: &str = "spiffe://tokenmint.test/resource-server";
/// Another issuing client, for ownership tests.
pub const OTHER_URI: &str = "spiffe://tokenmint.test/other";

/// The admin client (every permission).
pub fn admin_client() -> String {
    format!(
        r#"
[[clients]]
id = "admin"
san_uri = "{ADMIN_URI}"
audiences = ["{DEMO_AUDIENCE}"]
permissions = ["issue", "introspect", "admin"]
"#
    )
}

/// A resource server: introspect permission for DEMO_AUDIENCE only.
pub fn resource_server_client() -> String {
    format!(
        r#"
[[clients]]
id = "rs"
san_uri = "{RS_URI}"
permissions = ["introspect"]
introspect_audiences = ["{DEMO_AUDIENCE}"]
"#
    )
}

/// Another client that may get tokens for DEMO_AUDIENCE.
pub fn other_client() -> String {
    format!(
        r#"
[[clients]]
id = "other"
san_uri = "{OTHER_URI}"
audiences = ["{DEMO_AUDIENCE}", "https://elsewhere.example"]
default_audiences = ["{DEMO_AUDIENCE}"]
"#
    )
}

/// demo, admin, rs and other.
pub fn standard_clients() -> String {
    format!(
        "{}{}{}{}",
        demo_client(),
        admin_client(),
        resource_server_client(),
        other_client()
    )
}

/// The test PKI: a trusted client CA and the server's certificate.
pub struct Pki {
    pub ca: CertificateAuthority,
    pub server: Issued,
}

impl Pki {
    pub fn new() -> Self {
        let ca = CertificateAuthority::generate("tokenmint test CA").unwrap();
        let server = ca.issue_localhost_server().unwrap();
        Self { ca, server }
    }

    /// A client certificate with one SAN URI, valid now.
    pub fn client_uri(&self, uri: &str) -> Issued {
        self.ca
            .issue(&LeafSpec::client_uri(
                "client",
                uri,
                Duration::from_secs(3600),
            ))
            .unwrap()
    }

    /// A client certificate with the given subject (DER order) and no SAN.
    pub fn client_subject(&self, subject: &[(DnType, &str)]) -> Issued {
        let mut spec = LeafSpec::client_uri("unused", "spiffe://unused", Duration::from_secs(3600));
        spec.san_uris.clear();
        spec.subject = subject
            .iter()
            .map(|(t, v)| (t.clone(), (*v).to_owned()))
            .collect();
        self.ca.issue(&spec).unwrap()
    }
}

/// The demo client section, as a test's config starts from.
pub fn demo_client() -> String {
    format!(
        r#"
[[clients]]
id = "demo"
san_uri = "{DEMO_URI}"
scopes = ["demo:read", "demo:write"]
default_scopes = ["demo:read"]
audiences = ["{DEMO_AUDIENCE}", "https://other.example"]
default_audiences = ["{DEMO_AUDIENCE}"]
default_lifetime = "5m"
max_lifetime = "10m"
"#
    )
}

/// A directory holding the server's PKI, KEK and config.
pub struct Setup {
    pub dir: TempDir,
    pub pki: Pki,
    pub clients_toml: String,
    /// Extra lines for `[keys]`.
    pub extra_toml: String,
    /// Extra lines for `[server]`.
    pub server_toml: String,
    /// Extra lines for `[tls]`.
    pub tls_toml: String,
    /// `[store] url`.
    pub store_url: String,
    /// Extra lines for `[store]`.
    pub store_toml: String,
    /// Lines for `[revocation]`.
    pub revocation_toml: String,
    /// `[keys] kek_files`, newest first.
    pub kek_files: Vec<String>,
    /// Lines for `[admin]`; when not empty, the server gets an admin listener on an
    /// ephemeral port (`TestServer::admin_addr`).
    pub admin_toml: String,
}

impl Setup {
    pub fn new(clients_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        std::fs::write(dir.path().join("ca.pem"), pki.ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), &pki.server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), pki.server.key_pem.as_bytes()).unwrap();
        std::fs::write(
            dir.path().join("tokenmint.kek"),
            Kek::generate().unwrap().to_base64().as_bytes(),
        )
        .unwrap();
        Self {
            dir,
            pki,
            clients_toml: clients_toml.to_owned(),
            extra_toml: String::new(),
            server_toml: String::new(),
            tls_toml: String::new(),
            store_url: "sqlite://tokenmint.db".into(),
            store_toml: String::new(),
            revocation_toml: String::new(),
            kek_files: vec!["tokenmint.kek".into()],
            admin_toml: String::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("tokenmint.toml")
    }

    pub fn write_config(&self) {
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
issuer = "{ISSUER}"
{server}

[tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
{tls}

[store]
url = "{store_url}"
{store}

[admin]
{admin}
{revocation}

[keys]
kek_files = {kek_files:?}
{extra}
{clients}
"#,
            admin = self.admin_toml,
            kek_files = self.kek_files,
            revocation = if self.revocation_toml.is_empty() {
                String::new()
            } else {
                format!("[revocation]\n{}", self.revocation_toml)
            },
            extra = self.extra_toml,
            server = self.server_toml,
            tls = self.tls_toml,
            store_url = self.store_url,
            store = self.store_toml,
            clients = self.clients_toml,
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn config(&self) -> Config {
        self.write_config();
        Config::load(&self.config_path(), Vec::<(String, String)>::new()).unwrap()
    }

    pub async fn prepare(&self) -> Result<PreparedServer, ServeError> {
        self.prepare_with(false).await
    }

    pub async fn prepare_with(&self, sync_clients: bool) -> Result<PreparedServer, ServeError> {
        self.prepare_over(None, Arc::new(SystemClock), sync_clients)
            .await
    }

    /// Prepares the server as configured, over `store` if given (else the configured one),
    /// reading time from `clock`.
    async fn prepare_over(
        &self,
        store: Option<Arc<dyn tokenmint_store::Store>>,
        clock: Arc<dyn tokenmint_core::clock::Clock>,
        sync_clients: bool,
    ) -> Result<PreparedServer, ServeError> {
        tokenmint_core::crypto::install_jwt_provider();
        let config = self.config();
        let keks = server::load_keks(&config.keys.kek_files, None)?;
        let options = Options {
            keks,
            sync_clients,
            clock,
        };
        match store {
            Some(store) => server::prepare_with_store(config, options, store).await,
            None => server::prepare(config, options).await,
        }
    }

    /// Prepares the server (state loaded, not serving) reading time from `clock`.
    pub async fn prepare_with_clock(
        &self,
        clock: Arc<dyn tokenmint_core::clock::Clock>,
    ) -> Result<PreparedServer, ServeError> {
        self.prepare_over(None, clock, false).await
    }

    /// Starts the server reading time from `clock` (a `ManualClock` lets a test move time).
    pub async fn start_with_clock(
        &self,
        clock: Arc<dyn tokenmint_core::clock::Clock>,
    ) -> TestServer {
        self.serve(self.prepare_with_clock(clock).await.unwrap())
            .await
    }

    /// Starts the server over a store the test built, reading time from `clock`.
    pub async fn start_with_store_and_clock(
        &self,
        store: Arc<dyn tokenmint_store::Store>,
        clock: Arc<dyn tokenmint_core::clock::Clock>,
    ) -> TestServer {
        self.serve(self.prepare_over(Some(store), clock, false).await.unwrap())
            .await
    }

    /// Starts the server over a store the test built (e.g. a fault-injecting wrapper).
    pub async fn start_with_store(&self, store: Arc<dyn tokenmint_store::Store>) -> TestServer {
        self.start_with_store_and_clock(store, Arc::new(SystemClock))
            .await
    }

    /// The current signing key, unsealed from the store with the KEK — for forging tokens
    /// that carry a valid signature over bad claims.
    pub async fn current_signing_key(&self) -> (String, tokenmint_core::crypto::SigningKey) {
        use tokenmint_store::Store as _;
        let config = self.config();
        let keks = server::load_keks(&config.keys.kek_files, None).unwrap();
        let store = tokenmint_store::sqlite::SqliteStore::open(&self.path().join("tokenmint.db"))
            .await
            .unwrap();
        let record = store
            .keys()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.state == tokenmint_core::keys::KeyState::Current)
            .unwrap();
        (record.kid.to_string(), record.unseal(&keks).unwrap())
    }

    /// Starts the server on an ephemeral loopback port.
    pub async fn start(&self) -> TestServer {
        self.start_with(false).await
    }

    /// Starts the server; `sync_clients` as `serve --sync-clients`.
    pub async fn start_with(&self, sync_clients: bool) -> TestServer {
        let prepared = self.prepare_with(sync_clients).await.unwrap();
        self.serve(prepared).await
    }

    pub async fn serve(&self, prepared: PreparedServer) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.serve_on(prepared, listener).await
    }

    /// Serves on a listener of the test's own (a restart on the same port).
    pub async fn serve_on(
        &self,
        prepared: PreparedServer,
        listener: tokio::net::TcpListener,
    ) -> TestServer {
        let rotator = prepared.rotator().clone();
        let changes = prepared.changes().clone();
        let addr = listener.local_addr().unwrap();
        let (prepared, admin_addr) = if self.admin_toml.is_empty() {
            (prepared, None)
        } else {
            let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let admin_addr = admin.local_addr().unwrap();
            (prepared.with_admin_listener(admin), Some(admin_addr))
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(prepared.serve(listener, async move {
            let _ = stop_rx.await;
        }));
        TestServer {
            addr,
            admin_addr,
            rotator,
            changes,
            ca_pem: self.pki.ca.cert_pem().to_owned(),
            stop: Some(stop_tx),
            task: Some(task),
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin listener, when `Setup::admin_toml` configured one.
    pub admin_addr: Option<SocketAddr>,
    /// The server's key rotator: `tick()` applies due lifecycle steps now (with a manual
    /// clock, tests advance the clock and tick instead of waiting).
    pub rotator: Arc<tokenmint::lifecycle::Rotator>,
    /// The server's change log: `catch_up()` reads the store now (the background task does
    /// every `catch_up_interval` of real time).
    pub changes: Arc<tokenmint::changes::ChangeLog>,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    fn tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost")
    }

    fn channel(&self, tls: ClientTlsConfig) -> Channel {
        self.channel_to(self.addr, tls)
    }

    fn channel_to(&self, addr: SocketAddr, tls: ClientTlsConfig) -> Channel {
        Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            // Lazy: under TLS 1.3 a refused client certificate surfaces on the first call.
            .connect_lazy()
    }

    /// A TokenService client presenting `cert`.
    pub async fn client(&self, cert: &Issued) -> TokenServiceClient<Channel> {
        let identity = Identity::from_pem(&cert.cert_pem, cert.key_pem.as_bytes());
        TokenServiceClient::new(self.channel(self.tls().identity(identity)))
    }

    /// A channel presenting no client certificate.
    pub fn public_channel(&self) -> Channel {
        self.channel(self.tls())
    }

    /// A channel presenting `cert`.
    pub fn channel_for(&self, cert: &Issued) -> Channel {
        let identity = Identity::from_pem(&cert.cert_pem, cert.key_pem.as_bytes());
        self.channel(self.tls().identity(identity))
    }

    /// An AdminService client presenting `cert`.
    pub fn admin(
        &self,
        cert: &Issued,
    ) -> tokenmint::grpc::proto::admin_service_client::AdminServiceClient<Channel> {
        tokenmint::grpc::proto::admin_service_client::AdminServiceClient::new(
            self.channel_for(cert),
        )
    }

    /// An AdminService client on the admin listener, presenting `cert`.
    pub fn admin_plane(
        &self,
        cert: &Issued,
    ) -> tokenmint::grpc::proto::admin_service_client::AdminServiceClient<Channel> {
        let identity = Identity::from_pem(&cert.cert_pem, cert.key_pem.as_bytes());
        let addr = self.admin_addr.expect("an admin listener is configured");
        tokenmint::grpc::proto::admin_service_client::AdminServiceClient::new(
            self.channel_to(addr, self.tls().identity(identity)),
        )
    }

    /// A RevocationService client presenting `cert`.
    pub fn revocations(
        &self,
        cert: &Issued,
    ) -> tokenmint::grpc::proto::revocation_service_client::RevocationServiceClient<Channel> {
        tokenmint::grpc::proto::revocation_service_client::RevocationServiceClient::new(
            self.channel_for(cert),
        )
    }

    /// A TokenService client presenting no certificate.
    pub async fn anonymous_client(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel(self.tls()))
    }

    /// The JWKS, fetched without a client certificate.
    pub async fn jwks(&self) -> GetJwksResponse {
        self.jwks_of(GetJwksRequest::default()).await
    }

    /// The key set `request` asks for, fetched without a client certificate.
    pub async fn jwks_of(&self, request: GetJwksRequest) -> GetJwksResponse {
        KeyServiceClient::new(self.channel(self.tls()))
            .get_jwks(request)
            .await
            .unwrap()
            .into_inner()
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops within its grace")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Issues with `request` as `cert`.
pub async fn issue(
    server: &TestServer,
    cert: &Issued,
    request: IssueTokenRequest,
) -> Result<IssueTokenResponse, tonic::Status> {
    server
        .client(cert)
        .await
        .issue_token(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts a refusal's gRPC code and OAuth2 error code.
pub fn assert_refused(
    result: Result<IssueTokenResponse, tonic::Status>,
    code: tonic::Code,
    oauth: &str,
) {
    let status = match result {
        Ok(_) => panic!("expected {code:?}/{oauth}, got a token"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "status: {status:?}");
    let got = status
        .metadata()
        .get(OAUTH_ERROR_METADATA)
        .and_then(|v| v.to_str().ok());
    assert_eq!(got, Some(oauth), "status: {status:?}");
    assert!(
        status.message().starts_with(oauth),
        "message names the OAuth2 code: {}",
        status.message()
    );
}

/// Asserts a call failed at the TLS layer (TLS 1.3: on the first call, as a transport error).
pub fn assert_tls_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    let status = result.expect_err("the handshake must fail");
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
        ),
        "expected a transport failure, got {status:?}"
    );
    assert!(
        status.metadata().get(OAUTH_ERROR_METADATA).is_none(),
        "no RPC handler may have run: {status:?}"
    );
}

/// Verifies `token` using only the JWKS, as a resource server would (jsonwebtoken, keys
/// picked by `kid`, the algorithm from the JWK), and returns its claims.
pub fn verify_with_jwks(token: &str, jwks_json: &str, audience: &str) -> serde_json::Value {
    // jsonwebtoken panics on its first use if no provider is installed, and then none can be:
    // a test that verifies before any server has started would break every later server.
    tokenmint_core::crypto::install_jwt_provider();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.expect("a kid");
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(jwks_json).unwrap();
    let jwk = set.find(&kid).expect("the kid is published");
    let alg: jsonwebtoken::Algorithm = jwk
        .common
        .key_algorithm
        .expect("the JWK names its alg")
        .to_string()
        .parse()
        .unwrap();
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]);
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .unwrap()
        .claims
}

/// Introspects `token` as `cert`, with an optional presented thumbprint.
pub async fn introspect(
    server: &TestServer,
    cert: &Issued,
    token: &str,
    presented: Option<&str>,
) -> Result<tokenmint::grpc::proto::IntrospectTokenResponse, tonic::Status> {
    server
        .client(cert)
        .await
        .introspect_token(tokenmint::grpc::proto::IntrospectTokenRequest {
            token: token.to_owned(),
            presented_certificate_thumbprint: presented.map(str::to_owned),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Revokes `token` as `cert`.
pub async fn revoke(server: &TestServer, cert: &Issued, token: &str) -> Result<(), tonic::Status> {
    server
        .client(cert)
        .await
        .revoke_token(tokenmint::grpc::proto::RevokeTokenRequest {
            token: token.to_owned(),
        })
        .await
        .map(drop)
}

/// base64url SHA-256 of a certificate's DER: what `cnf.x5t#S256` holds.
pub fn thumbprint_of(cert: &Issued) -> String {
    tokenmint_core::crypto::CertificateThumbprint::of_der(&cert.cert_der).to_b64url()
}

/// Values that are not a base64url SHA-256 thumbprint, made from `right` (one that is): what a
/// resource server might send by mistake.
pub fn malformed_thumbprints(right: &str) -> Vec<(&'static str, String)> {
    let standard_alphabet = right.replace('-', "+").replace('_', "/");
    let standard_alphabet = if standard_alphabet == right {
        format!("+{}", &right[1..])
    } else {
        standard_alphabet
    };
    vec![
        ("a prefix", right[..right.len() - 1].to_owned()),
        ("an extension", format!("{right}A")),
        ("padded", format!("{right}=")),
        ("with a space", format!(" {right}")),
        ("the standard base64 alphabet", standard_alphabet),
        ("hex instead of base64url", "00".repeat(32)),
        ("a word", "none".to_owned()),
    ]
}

/// Lets `by` pass on a manual clock, then catches the server up with the store, as its
/// background task would have done many times over in that time (otherwise the jump would
/// leave the server stale and pausing issuance, as SPEC §9 asks of a cut-off replica).
pub async fn advance(
    server: &TestServer,
    clock: &tokenmint_core::clock::ManualClock,
    by: Duration,
) {
    clock.advance(by);
    server.changes.catch_up().await.unwrap();
}

/// Binds `port` on loopback again once a stopped server has let go of it (a restart on the
/// same port).
pub async fn rebind(port: u16) -> tokio::net::TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("port {port} never came free");
}

/// Installs the build's TLS provider (the server's) process-wide, for clients built without
/// one of their own (reqwest, sqlx): ring, or aws-lc-rs in the `aws-lc` build.
pub fn install_provider() {
    let _ = tokenmint::tls::provider()
        .as_ref()
        .clone()
        .install_default();
}

/// A bare rustls client (the build's provider) trusting only the test CA, presenting `cert` if given; callers
/// set ALPN and resumption as their test needs.
pub fn rustls_client(setup: &Setup, cert: Option<&Issued>) -> rustls::ClientConfig {
    rustls_client_with(setup, cert, tokenmint::tls::provider())
}

/// [`rustls_client`] with a provider of the test's own.
pub fn rustls_client_with(
    setup: &Setup,
    cert: Option<&Issued>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
) -> rustls::ClientConfig {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(setup.pki.ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match cert {
        None => builder.with_no_client_auth(),
        Some(cert) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    }
}

/// An audit record for store calls made directly by a test.
pub fn test_audit() -> tokenmint_core::audit::AuditRecord {
    tokenmint_core::audit::AuditRecord::new("test", "test.change", "")
}

/// An HTTP/1.1 token request whose body is not finished: the server has its headers and waits
/// for the rest (it holds no slot in flight yet), until `finish`.
pub struct HeldRequest {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

const HELD_BODY: &str = "grant_type=client_credentials";

impl HeldRequest {
    /// Sends the headers and the first half of the body as `cert`.
    pub async fn start(setup: &Setup, server: &TestServer, cert: &Issued) -> Self {
        use tokio::io::AsyncWriteExt as _;
        let mut config = rustls_client(setup, Some(cert));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let head = format!(
            "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            HELD_BODY.len(),
            &HELD_BODY[..10]
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        Self { tls }
    }

    /// Sends the rest of the body; the response's status line.
    pub async fn finish(mut self) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        self.tls
            .write_all(&HELD_BODY.as_bytes()[10..])
            .await
            .unwrap();
        let mut response = Vec::new();
        let _ = self.tls.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Whether an `openssl` command is at hand.
pub fn openssl_available() -> bool {
    std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs openssl, failing the test with its output if it fails.
pub fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A self-signed certificate as `openssl req -x509` makes one (CA:TRUE, P-256), written to
/// `dir/{name}.pem`, for the key in `dir/{key}` (made first when absent), with subject
/// CN=`name` and, if given, one SAN URI. Made with openssl when it is installed, else the same
/// certificate with rcgen, so the tests need nothing but the Rust toolchain.
pub fn self_signed(dir: &Path, name: &str, key: &str, san_uri: Option<&str>) -> Issued {
    let key_path = dir.join(key);
    let cert_path = dir.join(format!("{name}.pem"));
    if openssl_available() {
        if !key_path.exists() {
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                key_path.to_str().unwrap(),
            ]);
        }
        let subject = format!("/CN={name}");
        let mut args = vec![
            "req",
            "-x509",
            "-new",
            "-key",
            key_path.to_str().unwrap(),
            "-out",
            cert_path.to_str().unwrap(),
            "-days",
            "2",
            "-subj",
            &subject,
        ];
        let san = san_uri.map(|uri| format!("subjectAltName=URI:{uri}"));
        if let Some(san) = &san {
            args.extend(["-addext", san]);
        }
        openssl(&args);
    } else {
        let key_pair = if key_path.exists() {
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap()
        } else {
            let key_pair = rcgen::KeyPair::generate().unwrap();
            std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
            key_pair
        };
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        if let Some(uri) = san_uri {
            params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        }
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(2);
        let cert = params.self_signed(&key_pair).unwrap();
        std::fs::write(&cert_path, cert.pem()).unwrap();
    }
    let cert_pem = std::fs::read_to_string(&cert_path).unwrap();
    let cert_der = {
        use rustls::pki_types::{CertificateDer, pem::PemObject as _};
        CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .unwrap()
            .to_vec()
    };
    Issued {
        cert_pem,
        cert_der,
        key_pem: std::fs::read_to_string(&key_path).unwrap().into(),
    }
}

/// The SHA-256 fingerprint of `dir/{name}.pem` as `openssl x509 -fingerprint -sha256` prints
/// it (upper-case hex with colons); computed the same way without openssl.
pub fn sha256_fingerprint_hex(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}.pem"));
    if openssl_available() {
        let out = openssl(&[
            "x509",
            "-in",
            path.to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha256",
        ]);
        return out.trim().split_once('=').unwrap().1.to_owned();
    }
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let der = CertificateDer::from_pem_file(&path).unwrap();
    use sha2::{Digest as _, Sha256};
    Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether a certificate says CA:TRUE in its basic constraints.
pub fn is_ca_certificate(cert: &Issued) -> bool {
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert.cert_der).unwrap();
    parsed
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|ext| ext.value.ca)
}
