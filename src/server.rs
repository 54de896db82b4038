//! Start-up and serving: opens the store, loads or creates keys and the pepper, syncs the
//! configured clients, then serves gRPC and the OAuth2 HTTP face over the TLS listener (and
//! `AdminService` on the optional admin listener) until shutdown. Background tasks are named
//! and joined; shutdown drains within a bounded grace.

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::{
    authority::{Authority, Parts, TxnSettings},
    changes::ChangeLog,
    config::{self, Config, StoreUrl},
    grpc::{
        self, AdminApi, KeyApi, RevocationApi, TokenApi,
        proto::{
            admin_service_server::AdminServiceServer, key_service_server::KeyServiceServer,
            revocation_service_server::RevocationServiceServer,
            token_service_server::TokenServiceServer,
        },
    },
    lifecycle::Rotator,
    tls::{self, ClientVerifier, TlsError},
    transport,
};
use tokenmint_config::KeyCustody;
use tokenmint_core::{
    audit::{AuditRecord, CONFIG_ACTOR, IssuanceAudit, IssuanceMode, OPERATOR_ACTOR},
    client::{Client, ClientRegistry},
    clock::{Clock, UnixTime},
    crypto::{self, Algorithm, Kek, SecretHasher},
    keys::{Custody, KekRing, KeyError, KeyRecord, KeyRing, KeyState},
    limits::{IssueLimits, MAX_MESSAGE_BYTES},
    revocation::{Blocklist, Caps, Retention},
    rotation::Policy,
    token::Issuer,
};
use tokenmint_store::{ClientSync, Store, StoreError, sqlite::SqliteStore};

/// How long in-flight requests get to finish after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long calls in flight on a connection past `server.max_connection_age` may finish
/// (never longer than the age itself).
pub const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store failed.
    #[error("store: {0}")]
    Store(StoreError),
    /// Keys could not be loaded or created (for example a wrong or missing KEK).
    #[error("signing keys: {0}")]
    Keys(KeyError),
    /// A KEK could not be read.
    #[error("key-encryption key {source_name}: {reason}")]
    Kek {
        /// Where it was read from.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The client-secret pepper did not decrypt.
    #[error(
        "the client-secret pepper is sealed under KEK id {sealed_with}, which did not open it (configured KEK ids: {configured}): configure the KEK it was sealed with"
    )]
    Pepper {
        /// The KEK id stored with the pepper.
        sealed_with: String,
        /// The configured KEK ids.
        configured: String,
    },
    /// A configured or stored client is not acceptable.
    #[error("client {id}: {reason}")]
    Client {
        /// The client.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// TLS material could not be loaded.
    #[error("TLS: {0}")]
    Tls(TlsError),
    /// The key custody (a PKCS#11 token) could not be opened or cannot sign.
    #[error("key custody: {0}")]
    Custody(String),
    /// A key-lifecycle step due at start could not be applied.
    #[error("key lifecycle: {0}")]
    Lifecycle(String),
    /// The configuration asks for something this build does not do.
    #[error("{0}")]
    Unsupported(String),
    /// The gRPC server failed.
    #[error("serving failed: {0}")]
    Transport(String),
}

// `From` by hand rather than `#[from]`: the message already carries the cause, and a
// `source()` too would print it twice in an error chain.
impl From<StoreError> for ServeError {
    fn from(e: StoreError) -> Self {
        ServeError::Store(e)
    }
}

impl From<KeyError> for ServeError {
    fn from(e: KeyError) -> Self {
        ServeError::Keys(e)
    }
}

impl From<TlsError> for ServeError {
    fn from(e: TlsError) -> Self {
        ServeError::Tls(e)
    }
}

/// Reads the configured KEKs: `TOKENMINT_KEK` (if given) first, then `kek_files` in order.
/// The first one seals new material; all of them open.
pub fn load_keks(files: &[impl AsRef<Path>], env_kek: Option<&str>) -> Result<KekRing, ServeError> {
    let mut keks = Vec::new();
    if let Some(text) = env_kek.filter(|t| !t.trim().is_empty()) {
        keks.push(Kek::try_from_base64(text).map_err(|e| ServeError::Kek {
            source_name: config::KEK_ENV_VAR.into(),
            reason: e.to_string(),
        })?);
    }
    for file in files {
        let path = file.as_ref();
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            ServeError::Kek {
                source_name: path.display().to_string(),
                reason: format!("cannot read it ({e}); run `tokenmint init` for a development KEK or point [keys] kek_files at yours"),
            }
        })?);
        keks.push(Kek::try_from_base64(&text).map_err(|e| ServeError::Kek {
            source_name: path.display().to_string(),
            reason: e.to_string(),
        })?);
    }
    Ok(KekRing::try_new(keks)?)
}

/// Opens the configured store.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    match &config.store.url {
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path).await?)),
        StoreUrl::Postgres(url) => Ok(Arc::new(
            tokenmint_store::postgres::PostgresStore::open(url).await?,
        )),
    }
}

const PEPPER_AAD: &[u8] = b"tokenmint/client-secret-pepper/v1";

/// What `kek rotate` re-sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resealed {
    /// Signing keys re-sealed.
    pub keys: usize,
    /// Whether the pepper was re-sealed (false if none exists yet).
    pub pepper: bool,
}

/// KEK rotation: re-seals every stored signing key and the client-secret pepper under the
/// newest configured KEK, in one transaction with its audit event. Older KEKs can be dropped
/// from the config afterwards; no client secret changes.
pub async fn rotate_kek(
    store: &dyn Store,
    keks: &KekRing,
    now: UnixTime,
) -> Result<Resealed, ServeError> {
    let newest = keks.newest();
    let keys = store.keys().await?;
    // Keys held elsewhere (an HSM) have nothing sealed to re-seal.
    let mut resealed = Vec::with_capacity(keys.len());
    for key in &keys {
        if let Some(sealed) = key.reseal(keks, newest)? {
            resealed.push((key.kid.clone(), sealed));
        }
    }
    let pepper = match store.pepper().await? {
        Some(sealed) => {
            let refused = || ServeError::Pepper {
                sealed_with: sealed.kek_id.clone(),
                configured: keks.ids(),
            };
            let kek = keks.find(&sealed.kek_id).ok_or_else(refused)?;
            let plain = kek.open(&sealed, PEPPER_AAD).map_err(|_| refused())?;
            Some(newest.seal(&plain, PEPPER_AAD).map_err(KeyError::from)?)
        }
        None => None,
    };
    let audit = AuditRecord::new(OPERATOR_ACTOR, "kek.rotated", newest.id())
        .with("keys_resealed", resealed.len())
        .with("pepper_resealed", pepper.is_some());
    store
        .reseal(&resealed, pepper.as_ref(), &audit, now)
        .await?;
    Ok(Resealed {
        keys: resealed.len(),
        pepper: pepper.is_some(),
    })
}

/// Loads the client-secret pepper, creating it on first start.
pub async fn load_pepper(store: &dyn Store, keks: &KekRing) -> Result<SecretHasher, ServeError> {
    let sealed = match store.pepper().await? {
        Some(sealed) => sealed,
        None => {
            let pepper =
                zeroize::Zeroizing::new(crypto::random_bytes::<32>().map_err(KeyError::from)?);
            let sealed = keks
                .newest()
                .seal(pepper.as_ref(), PEPPER_AAD)
                .map_err(KeyError::from)?;
            store.create_pepper(&sealed).await?
        }
    };
    let refused = || ServeError::Pepper {
        sealed_with: sealed.kek_id.clone(),
        configured: keks.ids(),
    };
    let kek = keks.find(&sealed.kek_id).ok_or_else(refused)?;
    let pepper = kek.open(&sealed, PEPPER_AAD).map_err(|_| refused())?;
    Ok(SecretHasher::new(&pepper))
}

/// Loads the stored keys; on an empty store, creates a `current` and a `next` key of every
/// configured algorithm first (no verifier can have cached an older set).
pub async fn load_key_ring(
    store: &dyn Store,
    custody: &Arc<dyn Custody>,
    policy: &Policy,
    now: UnixTime,
) -> Result<KeyRing, ServeError> {
    let mut records = store.keys().await?;
    if records.is_empty() {
        let initial = first_keys(custody, policy, now).await?;
        match store.create_initial_keys(&initial).await {
            Ok(true) => {
                for key in initial.iter().filter(|k| k.state == KeyState::Current) {
                    tracing::info!(current = %key.kid, algorithm = %key.algorithm, "created the first signing keys");
                }
            }
            // Another replica was first, or the store refused: what this one made in a
            // token is nobody's.
            Ok(false) => crate::custody::destroy(custody.clone(), initial).await,
            Err(e) => {
                crate::custody::destroy(custody.clone(), initial).await;
                return Err(e.into());
            }
        }
        records = store.keys().await?;
    }
    let ring = KeyRing::try_build(&records, custody.as_ref())?;
    self_test(&ring)?;
    Ok(ring)
}

/// A current and a next key of every configured algorithm, made off the async workers; if
/// one cannot be made, those made already are destroyed.
async fn first_keys(
    custody: &Arc<dyn Custody>,
    policy: &Policy,
    now: UnixTime,
) -> Result<Vec<KeyRecord>, ServeError> {
    let (maker, policy) = (custody.clone(), *policy);
    tokio::task::spawn_blocking(move || {
        let mut made = Vec::new();
        for algorithm in policy.lanes() {
            for state in [KeyState::Current, KeyState::Next] {
                match maker.make(algorithm, policy.rsa_bits, state, now) {
                    Ok(key) => made.push(key),
                    Err(e) => {
                        for key in &made {
                            let _ = maker.destroy(key);
                        }
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(made)
    })
    .await
    .map_err(|e| ServeError::Custody(format!("creating the first keys stopped: {e}")))?
}

/// Signs and verifies a probe with every signing key before serving, so a custody that
/// cannot sign (a token without the key, a wrong PIN) is a start-up error, not the first
/// client's.
fn self_test(ring: &KeyRing) -> Result<(), ServeError> {
    for signer in ring.signers() {
        let jws = signer
            .sign_compact(b"{\"probe\":\"tokenmint start-up\"}")
            .map_err(|e| ServeError::Custody(format!("key {} cannot sign: {e}", signer.kid())))?;
        tokenmint_core::jose::verify_compact::<serde_json::Value>(
            &jws,
            ring.key_set(),
            &[tokenmint_core::keys::ACCESS_TOKEN_TYP],
        )
        .map_err(|e| {
            ServeError::Custody(format!("key {}'s probe did not verify: {e}", signer.kid()))
        })?;
    }
    Ok(())
}

/// The rotation policy `config` sets.
pub fn policy(config: &Config) -> Policy {
    Policy {
        algorithm: config.keys.algorithm,
        also: config.keys.also,
        rsa_bits: config.keys.rsa_bits,
        rotation_period: config.keys.rotation_period,
        publish_ahead: config.keys.publish_ahead,
        retention: config.keys.retention,
    }
}

/// Checks what the config file alone can show about its clients: each matcher is well-formed
/// and each policy consistent, and no two clients claim the same certificate matcher.
pub fn check_clients(config: &Config) -> Result<usize, ServeError> {
    let count = config.clients.len();
    registry(config.clients.clone())?;
    Ok(count)
}

/// Inserts configured clients that are absent (or overwrites all with `overwrite`).
pub async fn sync_clients(
    store: &dyn Store,
    config: &Config,
    overwrite: bool,
    now: UnixTime,
) -> Result<(), ServeError> {
    let (mut inserted, mut kept, mut overwritten) = (0usize, 0usize, 0usize);
    for client in &config.clients {
        let outcome = store
            .sync_config_client(
                client,
                overwrite,
                now,
                &AuditRecord::new(CONFIG_ACTOR, "client.synced", client.id.as_str())
                    .with("overwrite", overwrite),
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict(reason) => ServeError::Client {
                    id: client.id.to_string(),
                    reason: format!(
                        "its certificate matcher is already claimed by another client ({reason})"
                    ),
                },
                other => ServeError::Store(other),
            })?;
        tracing::debug!(client_id = %client.id, ?outcome, "config client synced");
        match outcome {
            ClientSync::Inserted => inserted += 1,
            ClientSync::Kept => kept += 1,
            ClientSync::Overwritten => overwritten += 1,
        }
    }
    if !config.clients.is_empty() {
        tracing::info!(
            inserted,
            kept,
            overwritten,
            "clients from the config file (stored clients are kept as they are unless --sync-clients)"
        );
    }
    Ok(())
}

fn registry(clients: Vec<Client>) -> Result<ClientRegistry, ServeError> {
    ClientRegistry::try_new(clients).map_err(|e| ServeError::Client {
        id: "registry".into(),
        reason: e.to_string(),
    })
}

/// Options for `prepare` beyond the config file.
pub struct Options {
    /// KEKs, newest first.
    pub keks: KekRing,
    /// Overwrite stored clients from the config file.
    pub sync_clients: bool,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

/// A server with its state loaded, ready to serve on a listener.
pub struct PreparedServer {
    config: Config,
    store: Arc<dyn Store>,
    authority: Arc<Authority>,
    changes: Arc<ChangeLog>,
    rotator: Arc<Rotator>,
    custody: Arc<dyn Custody>,
    issuance_audit: Arc<IssuanceAudit>,
    admin_listener: Option<TcpListener>,
}

/// How many verified tokens introspection remembers (an eviction only costs a verification).
pub const VERIFIED_CACHE_CAPACITY: u64 = 100_000;

impl std::fmt::Debug for PreparedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedServer").finish_non_exhaustive()
    }
}

/// Opens the store and loads everything the server needs. Every start-up error surfaces here.
pub async fn prepare(config: Config, options: Options) -> Result<PreparedServer, ServeError> {
    let store = open_store(&config).await?;
    prepare_with_store(config, options, store).await
}

/// As `prepare`, over a store the caller opened (tests wrap one to inject faults).
pub async fn prepare_with_store(
    config: Config,
    options: Options,
    store: Arc<dyn Store>,
) -> Result<PreparedServer, ServeError> {
    let now = options.clock.unix_now();
    let keks = Arc::new(options.keks);
    let custody = {
        let (config, keks) = (config.clone(), keks.clone());
        let algorithms: Vec<Algorithm> = policy(&config).lanes().collect();
        tokio::task::spawn_blocking(move || crate::custody::open(&config, keks, &algorithms))
            .await
            .map_err(|e| ServeError::Custody(format!("opening the key custody stopped: {e}")))?
            .map_err(|e| ServeError::Custody(e.to_string()))?
    };
    let ring = load_key_ring(store.as_ref(), &custody, &policy(&config), now).await?;
    let hasher = load_pepper(store.as_ref(), &keks).await?;
    let clock = options.clock.clone();
    sync_clients(store.as_ref(), &config, options.sync_clients, now).await?;
    let clients = registry(store.clients().await?)?;
    let (keys_tx, keys_rx) = watch::channel(Arc::new(ring));
    let issuance_audit = Arc::new(IssuanceAudit::new(config.audit.issuance));
    let authority = Arc::new(authority(
        &config,
        keys_rx,
        clients,
        hasher,
        clock.clone(),
        issuance_audit.clone(),
    ));
    let changes = Arc::new(ChangeLog::new(
        store.clone(),
        authority.clone(),
        Retention {
            leeway: config.tokens.leeway,
            max_lifetime: config.tokens.max_lifetime,
        },
    ));
    // The blocklist is loaded before anything is served: introspection never answers from
    // a partial list.
    let state = changes.load().await?;
    let rotator = Arc::new(Rotator::new(
        store.clone(),
        changes.clone(),
        custody.clone(),
        policy(&config),
        keys_tx,
        clock,
    ));
    // Whatever is due already (a next key in a newly configured algorithm, a promotion
    // missed while stopped) happens before serving.
    let steps = rotator
        .tick()
        .await
        .map_err(|e| ServeError::Lifecycle(e.to_string()))?;
    if !steps.is_empty() {
        tracing::info!(?steps, "key lifecycle steps applied at start");
    }
    tracing::info!(
        revoked_tokens = state.tokens.len(),
        cutoffs = state.cutoffs.len(),
        disabled_clients = state.disabled_clients.len(),
        through = state.high_water,
        "revocation state loaded"
    );
    Ok(PreparedServer {
        config,
        store,
        authority,
        changes,
        rotator,
        custody,
        issuance_audit,
        admin_listener: None,
    })
}

/// The authority over the loaded state: the issuer, the key ring's receiving end, the
/// clients, the blocklist's caps and the issuance limits of `config`.
fn authority(
    config: &Config,
    keys: watch::Receiver<Arc<KeyRing>>,
    clients: ClientRegistry,
    hasher: SecretHasher,
    clock: Arc<dyn Clock>,
    issuance_audit: Arc<IssuanceAudit>,
) -> Authority {
    let blocklist = Arc::new(Blocklist::new(
        Caps {
            max_live: config.revocation.max_live,
            per_client_max_live: config.revocation.per_client_max_live,
            per_client_per_second: config.revocation.per_client_rate,
        },
        config.tokens.leeway,
        config.tokens.max_lifetime,
    ));
    Authority::new(Parts {
        issuer: Issuer::new(config.server.issuer.clone(), config.tokens.max_lifetime),
        keys,
        clients,
        hasher,
        clock,
        blocklist,
        leeway: config.tokens.leeway,
        verified_cache_capacity: VERIFIED_CACHE_CAPACITY,
        max_staleness: config.store.max_staleness,
        max_issue_staleness: config.store.max_issue_staleness,
    })
    .with_issue_limits(IssueLimits::new(
        config.limits.issue_per_second,
        config.limits.issue_burst,
        &config.limits.issue_per_client,
    ))
    .with_issuance_audit(issuance_audit)
    .with_signing(config.keys.signing.clone())
    .with_exchange_depth(config.tokens.max_exchange_depth)
    .with_txn_tokens(config.txn_tokens.as_ref().map(|t| TxnSettings {
        trust_domain: t.trust_domain.clone(),
        lifetime: t.lifetime,
    }))
}

/// Background tasks by name, awaited at shutdown.
type Tasks = Vec<(&'static str, JoinHandle<()>)>;

/// The admin listener with its TLS acceptor and client verifier.
type AdminTls = (TcpListener, tokio_rustls::TlsAcceptor, Arc<ClientVerifier>);

/// Sets every service's health (and the server's, `""`) to `status`.
async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in [
        <TokenServiceServer<TokenApi> as tonic::server::NamedService>::NAME,
        <KeyServiceServer<KeyApi> as tonic::server::NamedService>::NAME,
        <RevocationServiceServer<RevocationApi> as tonic::server::NamedService>::NAME,
        <AdminServiceServer<AdminApi> as tonic::server::NamedService>::NAME,
    ] {
        health.set_service_status(name, status).await;
    }
}

impl PreparedServer {
    /// The authority (for in-process use and tests).
    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// The key rotator (for in-process use and tests).
    pub fn rotator(&self) -> &Arc<Rotator> {
        &self.rotator
    }

    /// The change log (for in-process use and tests).
    pub fn changes(&self) -> &Arc<ChangeLog> {
        &self.changes
    }

    /// Serves `AdminService` on `listener` rather than binding `admin.listen` (which must be
    /// set): for tests and callers that bind ports themselves.
    pub fn with_admin_listener(mut self, listener: TcpListener) -> Self {
        self.admin_listener = Some(listener);
        self
    }

    /// Serves on `listener` (and on the admin listener, when `admin.listen` is set) until
    /// `shutdown` completes, then drains within `SHUTDOWN_GRACE`.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let admin_listener = self.admin_listener().await?;
        let (acceptor, material, admin_plane) = self.tls_planes(admin_listener)?;

        let stop = CancellationToken::new();
        // Failed authentications by address, counted at the handshake and after it.
        let failures =
            tls::PeerFailures::new(self.config.server.handshake_failures_per_peer).map(Arc::new);
        let (conn_tx, conn_rx) = tokio::sync::mpsc::channel(256);
        let (health, health_service) = tonic_health::server::health_reporter();
        let handshake_limits = tls::HandshakeLimits {
            timeout: self.config.server.handshake_timeout,
            max_in_progress: self.config.server.max_handshakes,
            shares: address_shares(&self.config.server),
            failures: failures.clone(),
        };
        set_health(&health, ServingStatus::Serving).await;
        let mut tasks: Tasks = vec![
            (
                "tls-accept",
                tokio::spawn(tls::accept_loop(
                    listener,
                    acceptor,
                    material.verifier.clone(),
                    handshake_limits.clone(),
                    conn_tx,
                    stop.clone(),
                )),
            ),
            (
                "tls-reload",
                tokio::spawn(tls::reload_task(
                    material,
                    self.config.tls.reload_interval,
                    stop.clone(),
                )),
            ),
        ];
        tasks.extend(self.spawn_state_tasks(&health, &stop));

        tracing::info!(issuer = %self.config.server.issuer, "serving");
        let health_service = health_service.max_decoding_message_size(MAX_MESSAGE_BYTES);
        let with_health =
            |routes: tonic::service::Routes| routes.add_service(health_service.clone());
        let (routes, admin_tasks) =
            self.routes(admin_plane, with_health, &handshake_limits, &stop)?;
        tasks.extend(admin_tasks);
        let server = &self.config.server;
        let connection_limits = connection_limits(server);
        let routes = crate::layers::layered(
            routes,
            transport::Admission::new(admission_limits(server)),
            failures,
        );
        let serve = transport::serve_connections(conn_rx, routes, connection_limits, stop.clone());
        tokio::pin!(serve);
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut serve => {}
            () = &mut shutdown => {
                // Tell health checkers first, then stop accepting and drain.
                set_health(&health, ServingStatus::NotServing).await;
                stop.cancel();
                serve.await;
            }
        }
        stop.cancel();
        self.finish(tasks).await;
        Ok(())
    }

    /// The admin listener when `admin.listen` is set: the one handed in, else bound here.
    async fn admin_listener(&mut self) -> Result<Option<TcpListener>, ServeError> {
        match (self.config.admin.listen, self.admin_listener.take()) {
            (None, _) => Ok(None),
            (Some(_), Some(listener)) => Ok(Some(listener)),
            (Some(addr), None) => TcpListener::bind(addr).await.map(Some).map_err(|e| {
                ServeError::Transport(format!("admin.listen {addr}: cannot bind: {e}"))
            }),
        }
    }

    /// After the connections have drained: waits for the background tasks and writes the
    /// last interval's issuance counts (tokens issued while draining included).
    async fn finish(&self, tasks: Tasks) {
        for (name, task) in tasks {
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "background task failed");
            }
        }
        self.issuance_audit.flush();
        tracing::info!("stopped");
    }

    /// The TLS side of serving: the acceptor of the main listener, the material its reload
    /// task watches, and the admin listener's own acceptor and verifier when there is one.
    fn tls_planes(
        &self,
        admin_listener: Option<TcpListener>,
    ) -> Result<
        (
            tokio_rustls::TlsAcceptor,
            tls::TlsMaterial,
            Option<AdminTls>,
        ),
        ServeError,
    > {
        let provider = tls::provider();
        let verifier = ClientVerifier::try_new(
            provider.clone(),
            &self.config.tls.client_ca,
            &self.config.tls.client_crls,
            self.authority.clone(),
        )?;
        let verifier = Arc::new(if admin_listener.is_some() {
            verifier.denying_admin()
        } else {
            verifier
        });
        let certificate = Arc::new(tls::ServerCertificate::load(
            provider.clone(),
            &self.config.tls.cert,
            &self.config.tls.key,
        )?);
        let tls_config =
            tls::server_config(provider.clone(), certificate.clone(), verifier.clone())?;
        // The admin listener: the same server certificate, its own client CA, no pins.
        let admin_plane = match admin_listener {
            Some(listener) => {
                let verifier = Arc::new(ClientVerifier::try_new(
                    provider.clone(),
                    &self.config.admin.client_ca,
                    &self.config.admin.client_crls,
                    Arc::new(tls::NoPins),
                )?);
                let config = tls::server_config(provider, certificate.clone(), verifier.clone())?;
                tracing::info!(listen = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()), "AdminService is served on the admin listener only");
                Some((listener, tokio_rustls::TlsAcceptor::from(config), verifier))
            }
            None => None,
        };
        let material = tls::TlsMaterial {
            cert: self.config.tls.cert.clone(),
            key: self.config.tls.key.clone(),
            client_ca: self.config.tls.client_ca.clone(),
            client_crls: self.config.tls.client_crls.clone(),
            certificate,
            verifier,
            admin: admin_plane
                .as_ref()
                .map(|(_, _, verifier)| tls::AdminTrust {
                    client_ca: self.config.admin.client_ca.clone(),
                    client_crls: self.config.admin.client_crls.clone(),
                    verifier: verifier.clone(),
                }),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
        Ok((acceptor, material, admin_plane))
    }

    /// The tasks that keep this process's state in step: catching up with the store (and
    /// reporting readiness), key steps, purging, and the issuance counts.
    fn spawn_state_tasks(
        &self,
        health: &tonic_health::server::HealthReporter,
        stop: &CancellationToken,
    ) -> Tasks {
        let mut tasks = vec![
            (
                "catch-up",
                tokio::spawn(catch_up(
                    self.store.clone(),
                    self.changes.clone(),
                    self.rotator.clone(),
                    Readiness {
                        health: health.clone(),
                        authority: self.authority.clone(),
                        max_issue_staleness: self.config.store.max_issue_staleness,
                        round_timeout: self.config.store.max_staleness,
                        last: None,
                    },
                    self.config.store.catch_up_interval,
                    stop.clone(),
                )),
            ),
            (
                "key-rotation",
                tokio::spawn(rotate_keys(
                    self.rotator.clone(),
                    self.config.store.catch_up_interval,
                    stop.clone(),
                )),
            ),
            (
                "revocation-purge",
                tokio::spawn(purge_revocations(
                    self.changes.clone(),
                    self.config.revocation.purge_interval,
                    self.config.audit.retention,
                    stop.clone(),
                )),
            ),
            (
                "issuance-audit",
                tokio::spawn(flush_issuance_counts(
                    self.issuance_audit.clone(),
                    stop.clone(),
                )),
            ),
        ];
        // Sealed keys cannot become unreachable; a token can.
        if self.config.keys.custody != KeyCustody::Sealed {
            tasks.push((
                "key-custody",
                tokio::spawn(crate::custody::check_task(
                    self.custody.clone(),
                    self.authority.clone(),
                    stop.clone(),
                )),
            ));
        }
        tasks
    }

    /// The data plane's services (health is added by the caller) and the OAuth2 HTTP face on
    /// one router, and `AdminService` for whichever listener serves it; with
    /// `admin_on_its_listener`, the data plane refuses `AdminService` naming that listener.
    /// The routes of the main listener (every service with health, and `AdminService` unless
    /// the admin listener serves it); with an admin listener, its serving tasks.
    fn routes(
        &self,
        admin_plane: Option<AdminTls>,
        with_health: impl Fn(tonic::service::Routes) -> tonic::service::Routes,
        handshake_limits: &tls::HandshakeLimits,
        stop: &CancellationToken,
    ) -> Result<(tonic::service::Routes, Tasks), ServeError> {
        let (routes, admin_service) = self.service_routes(admin_plane.is_some(), stop)?;
        let routes = with_health(routes);
        let Some((listener, acceptor, verifier)) = admin_plane else {
            return Ok((routes.add_service(admin_service), Vec::new()));
        };
        let admin_routes =
            with_health(tonic::service::Routes::default()).add_service(admin_service);
        let tasks = spawn_admin_plane(
            AdminPlane {
                listener,
                acceptor,
                verifier,
                routes: admin_routes,
            },
            &self.config.server,
            handshake_limits.clone(),
            stop.clone(),
        );
        Ok((routes, tasks.into()))
    }

    fn service_routes(
        &self,
        admin_on_its_listener: bool,
        stop: &CancellationToken,
    ) -> Result<(tonic::service::Routes, AdminServiceServer<AdminApi>), ServeError> {
        // Both reflection versions: grpcurl and other tools still ask v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| ServeError::Transport(e.to_string()))?
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| ServeError::Transport(e.to_string()))?
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let token_service =
            TokenServiceServer::new(TokenApi::new(self.authority.clone(), self.changes.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let watch_limits = grpc::WatchLimits::new(
            self.config.server.watch_stall_timeout,
            crate::changes::WatchCaps::new(
                self.config.revocation.max_watches,
                self.config.revocation.max_watches_per_client,
            ),
            self.config.keys.max_jwks_watches,
        );
        let revocation_service = RevocationServiceServer::new(RevocationApi::new(
            self.authority.clone(),
            self.changes.clone(),
            stop.clone(),
            watch_limits.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let admin_service = AdminServiceServer::new(AdminApi::new(
            self.authority.clone(),
            self.changes.clone(),
            self.store.clone(),
            self.rotator.clone(),
            tokenmint_core::client::LifetimeDefaults {
                default: self.config.tokens.default_lifetime,
                max: self.config.tokens.max_lifetime,
            },
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let key_service = KeyServiceServer::new(KeyApi::new(
            self.authority.clone(),
            stop.clone(),
            watch_limits,
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);

        // One port: gRPC services by path, everything else to the OAuth2 HTTP face.
        let mut http = crate::http::router(
            self.authority.clone(),
            self.changes.clone(),
            self.config.keys.jwks_max_age,
        );
        if admin_on_its_listener {
            http = http.route(
                "/tokenmint.v1.AdminService/{*rpc}",
                axum::routing::any(admin_elsewhere),
            );
        }
        let routes = tonic::service::Routes::from(http)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(token_service)
            .add_service(key_service)
            .add_service(revocation_service);
        Ok((routes, admin_service))
    }
}

/// The admin listener and what it serves.
struct AdminPlane {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    verifier: Arc<ClientVerifier>,
    routes: tonic::service::Routes,
}

/// Starts the admin listener's accept loop and its serving, with limits of its own, so that
/// a flood on the data plane (or an address penalised there) cannot lock operators out
/// during the incident.
fn spawn_admin_plane(
    plane: AdminPlane,
    server: &config::ServerConfig,
    handshake_limits: tls::HandshakeLimits,
    stop: CancellationToken,
) -> [(&'static str, JoinHandle<()>); 2] {
    let (connections, incoming) = tokio::sync::mpsc::channel(64);
    let failures = tls::PeerFailures::new(server.handshake_failures_per_peer).map(Arc::new);
    let accept = tokio::spawn(tls::accept_loop(
        plane.listener,
        plane.acceptor,
        plane.verifier,
        tls::HandshakeLimits {
            failures: failures.clone(),
            shares: address_shares(server),
            ..handshake_limits
        },
        connections,
        stop.clone(),
    ));
    let routes = crate::layers::layered(
        plane.routes,
        transport::Admission::new(admission_limits(server)),
        failures,
    );
    let serve = tokio::spawn(transport::serve_connections(
        incoming,
        routes,
        connection_limits(server),
        stop,
    ));
    [("admin-accept", accept), ("admin-serve", serve)]
}

/// How requests are admitted, from `[server]`.
fn admission_limits(server: &config::ServerConfig) -> transport::AdmissionLimits {
    transport::AdmissionLimits {
        max_in_flight: server.max_in_flight,
        max_in_flight_without_certificate: server.without_certificate.max_in_flight,
        body_timeout: server.body_timeout,
        request_timeout: server.request_timeout,
    }
}

/// Each address's share of a listener's handshakes, from `[server]` (every listener has its
/// own: a flood on the data plane does not wait in line with operators).
fn address_shares(server: &config::ServerConfig) -> Arc<crate::address_shares::AddressShares> {
    crate::address_shares::AddressShares::new(
        server.max_handshakes_per_address,
        &server.max_handshakes_per_address_in,
        usize::try_from(server.max_handshakes).unwrap_or(usize::MAX),
    )
}

/// What a connection may hold, from `[server]`.
fn connection_limits(server: &config::ServerConfig) -> transport::ConnectionLimits {
    transport::ConnectionLimits {
        max_streams: server.max_concurrent_streams,
        max_streams_without_certificate: server.without_certificate.max_streams,
        max_connections_without_certificate: server.without_certificate.max_connections,
        idle_without_certificate: server.without_certificate.idle_timeout,
        max_header_bytes: server.max_header_list_size,
        header_timeout: server.body_timeout,
        keepalive_interval: server.keepalive_interval,
        keepalive_timeout: server.keepalive_timeout,
        max_age: server.max_connection_age,
        age_grace: MAX_CONNECTION_AGE_GRACE,
        grace: SHUTDOWN_GRACE,
    }
}

/// `AdminService` on the main listener when the admin plane has its own: refused, naming where
/// it is (gRPC `PERMISSION_DENIED`).
async fn admin_elsewhere() -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", axum::http::HeaderValue::from_static("7"));
    headers.insert(
        "grpc-message",
        axum::http::HeaderValue::from_static(
            "AdminService is served on the admin listener (admin.listen), not here",
        ),
    );
    response
}

/// What gRPC health says (SPEC §9): the server as a whole (`""`, and the token and key
/// services) is ready while its revocation state is within `max_issue_staleness`; the
/// services that need the store to answer (Revocation, Admin) follow the store's
/// reachability. A database blip therefore never drains every replica at once.
struct Readiness {
    health: tonic_health::server::HealthReporter,
    authority: Arc<Authority>,
    max_issue_staleness: Duration,
    round_timeout: Duration,
    last: Option<(bool, bool)>,
}

impl Readiness {
    /// Health by service: issuance follows the loaded state; revocation and administration
    /// need the store reached and accepting writes (`writable`: no refused commit since the
    /// last that succeeded).
    async fn report(&mut self, store_reached: bool, writable: bool) {
        metrics::gauge!("tokenmint_store_reachable").set(f64::from(u8::from(store_reached)));
        let store_reached = store_reached && writable;
        // Not ready while the store holds keys this replica cannot load (it would go on
        // signing with an old key, and fail any key step).
        let ready = self.authority.stale_for() <= self.max_issue_staleness
            && self.authority.key_ring_error().is_none()
            && self.authority.custody_error().is_none();
        if self.last == Some((ready, store_reached)) {
            return;
        }
        let status = |up: bool| {
            if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        self.health.set_service_status("", status(ready)).await;
        self.health
            .set_service_status("tokenmint.v1.TokenService", status(ready))
            .await;
        self.health
            .set_service_status("tokenmint.v1.RevocationService", status(store_reached))
            .await;
        self.health
            .set_service_status("tokenmint.v1.AdminService", status(store_reached))
            .await;
        if self.last.is_some() {
            tracing::info!(ready, store_reached, "health changed");
        }
        self.last = Some((ready, store_reached));
    }
}

/// Applies due key-lifecycle steps every `interval`.
async fn rotate_keys(rotator: Arc<Rotator>, interval: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = rotator.tick().await {
            tracing::warn!(error = %e, "key lifecycle step failed; will retry");
        }
    }
}

/// Removes expired revocations and old log entries every `interval`, and audit events older
/// than `audit_retention`.
async fn purge_revocations(
    changes: Arc<ChangeLog>,
    interval: Duration,
    audit_retention: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match changes.purge().await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "purged expired revocations and log entries"),
            Err(e) => tracing::warn!(error = %e, "purging expired revocations failed; will retry"),
        }
        match changes.purge_audit(audit_retention).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "purged audit events past audit.retention"),
            Err(e) => tracing::warn!(error = %e, "purging old audit events failed; will retry"),
        }
    }
}

/// Writes the per-client issuance counts every `audit.issuance_interval` (when issuance is
/// audited as counts); `serve` writes the last ones after the drain.
async fn flush_issuance_counts(audit: Arc<IssuanceAudit>, stop: CancellationToken) {
    let IssuanceMode::Counts { interval } = audit.mode() else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {
                audit.flush();
            }
        }
    }
}

/// Keeps this process in step with the store every `interval`, or as soon as the store
/// announces a change: revocations and client changes committed by other replicas (or by
/// the offline `tokenmint client add`), and key-lifecycle steps another replica applied. A
/// successful round marks the authority fresh; failed rounds let it go stale (SPEC §9).
async fn catch_up(
    store: Arc<dyn Store>,
    changes: Arc<ChangeLog>,
    rotator: Arc<Rotator>,
    mut readiness: Readiness,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = store.wait_for_change(interval) => {}
        }
        // A store that stops answering without closing its connections must not hang the
        // round: past max_staleness the replica is stale anyway.
        let reached = match tokio::time::timeout(readiness.round_timeout, changes.catch_up()).await
        {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(
                "the catch-up round timed out".into(),
            )),
        };
        // Reported before the probe, so a refused write shows for a round at least.
        let writable = changes.write_failure().is_none();
        readiness.report(reached.is_ok(), writable).await;
        let _ = tokio::time::timeout(readiness.round_timeout, changes.probe_write()).await;
        match reached {
            Ok((read, _)) if read > 0 => tracing::debug!(read, "caught up with the store"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "catch-up with the store failed; will retry");
                continue;
            }
        }
        changes.reload_clients().await;
        if let Err(e) = rotator.publish().await {
            tracing::warn!(error = %e, "reloading the key ring failed; will retry");
        }
    }
}
