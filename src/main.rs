//! The `tokenmint` command: serve, set up a development directory, check a config, and the
//! operator's calls: clients, tokens, revocations, keys, KEK rotation and the audit trail.

#![forbid(unsafe_code)]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use tokenmint::{
    config::{self, Config},
    grpc::{
        duration_to_proto,
        proto::{
            ClientInfo, ClientSpec, DisableClientRequest, EnableClientRequest,
            ExchangeTokenRequest, GetClientRequest, IntrospectTokenRequest, IssueTokenRequest,
            ListClientsRequest, ListKeysRequest, ListRevocationsRequest, RegisterClientRequest,
            RevokeClientTokensRequest, RevokeKeyRequest, RevokeTokenIdRequest, RevokeTokenRequest,
            RotateKeysRequest, UpdateClientRequest, admin_service_client::AdminServiceClient,
            token_service_client::TokenServiceClient,
        },
    },
    ops, pki,
    registration::{self, RegisterError, Registrar},
    server::{self, Options},
};
use tokenmint_core::{
    client::LifetimeDefaults,
    clock::{Clock as _, SystemClock, UnixTime},
    crypto, grant,
    introspection::{ActiveToken, Introspection},
    token::{Actor, Confirmation, MayAct},
    txn,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// `println!` for the CLI's output: a closed standard output (the reader of a pipe gone, as
/// with `| head`) ends the process as a pipe's writer ends, with status 141, not a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            stdout_failed(&e);
        }
    }};
}

/// Ends the process after a failed write of its output: quietly when the reader went away.
fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: writing to standard output: {e}");
    std::process::exit(1)
}

#[derive(Parser)]
#[command(
    name = "tokenmint",
    version = version(),
    about = "An OAuth2-style token issuer for machines: mTLS in, certificate-bound JWTs out."
)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` (one object per line) for collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TOKENMINT_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--version`: the package version and the crypto stack the binary was built with.
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} ({})",
            env!("CARGO_PKG_VERSION"),
            tokenmint_core::crypto::stack().describe()
        )
    })
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Run the verification sidecar for proxies (nginx auth_request, Traefik ForwardAuth,
    /// Caddy forward_auth): `[authz]` in the config file, defaults matching `serve --dev`.
    Authz(AuthzArgs),
    /// Write a development set-up into a directory: PKI under certs/, tokenmint.toml, a KEK.
    Init {
        /// The directory (default: the current one).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Validate the configuration and exit.
    CheckConfig {
        /// The config file.
        #[arg(long, default_value = "tokenmint.toml")]
        config: PathBuf,
    },
    /// Manage registered clients (offline: writes the store directly; a running server
    /// picks changes up within `store.catch_up_interval`).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Tokens: issue, introspect, revoke (over mTLS).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Revocations by an admin (over mTLS).
    #[command(subcommand)]
    Revoke(RevokeCommand),
    /// Signing keys (admin, over mTLS).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Key-encryption keys (offline: works on the store directly).
    #[command(subcommand)]
    Kek(KekCommand),
    /// The audit trail (admin, over mTLS).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List audit events, oldest first, as JSON lines (revocations, key rotations, admin
    /// changes; never a token or a secret).
    List {
        #[command(flatten)]
        remote: Remote,
        /// Only this actor (a client id, "tokenmint", "config" or "operator").
        #[arg(long)]
        actor: Option<String>,
        /// Only this action, e.g. client.registered, token.revoked, key.rotated.
        #[arg(long)]
        action: Option<String>,
        /// Only this target (a client id, key id or token id).
        #[arg(long)]
        target: Option<String>,
        /// Only events at or after this Unix time.
        #[arg(long)]
        since: Option<i64>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List the signing keys: id, algorithm, state, timestamps (never key material).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Promote the next key now (refused if it has not been published for keys.publish_ahead).
    Rotate {
        #[command(flatten)]
        remote: Remote,
        /// Promote even if the next key is younger than keys.publish_ahead (an emergency).
        #[arg(long)]
        force: bool,
    },
    /// Revoke a signing key: it leaves the key set at once and its tokens are inactive.
    Revoke {
        #[command(flatten)]
        remote: Remote,
        /// The key id (kid). A base64url kid may begin with `-`; it is still the kid.
        #[arg(allow_hyphen_values = true)]
        key_id: String,
    },
}

#[derive(Subcommand)]
enum KekCommand {
    /// Re-seal every signing key and the client-secret pepper under the newest configured KEK
    /// (the first of TOKENMINT_KEK and keys.kek_files). Older KEKs can be dropped afterwards.
    Rotate {
        /// The config file.
        #[arg(long, default_value = "tokenmint.toml")]
        config: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The config file.
    #[arg(long, default_value = "tokenmint.toml")]
    config: PathBuf,
    /// Development mode: on first run, write a development PKI, config and KEK beside the config file.
    #[arg(long)]
    dev: bool,
    /// Overwrite stored clients with the ones in the config file (normally only absent ones are added).
    #[arg(long)]
    sync_clients: bool,
}

#[derive(clap::Args)]
struct AuthzArgs {
    /// The config file (`[authz]`; read if it exists, else every default applies).
    #[arg(long, default_value = "tokenmint.toml")]
    config: PathBuf,
    /// The forward-auth listener (loopback only), over `authz.listen`.
    #[arg(long)]
    listen: Option<String>,
    /// Envoy's ext_authz over gRPC (loopback only, or "off"), over `authz.grpc_listen`.
    #[arg(long)]
    grpc_listen: Option<String>,
    /// The operations listener (`/healthz`, `/readyz`, `/metrics`, or "off"), over `authz.ops_listen`.
    #[arg(long)]
    ops_listen: Option<String>,
    /// The issuer (`iss`, and where keys and revocations are watched), over `authz.issuer`
    /// and `authz.issuer_endpoint` (unless `TOKENMINT__AUTHZ__ISSUER_ENDPOINT` names another).
    #[arg(long)]
    issuer: Option<String>,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client (offline: writes the store directly; see `register` for the API).
    Add(Box<ClientAddArgs>),
    /// Register a client (admin, over mTLS); with --with-secret, prints its secret once.
    Register(Box<ClientRegisterArgs>),
    /// Replace a client's policy, keeping its secret and enabled state (admin, over mTLS).
    Update(Box<ClientUpdateArgs>),
    /// Show one registered client, or every one without an id (admin, over mTLS).
    Get {
        #[command(flatten)]
        remote: Remote,
        /// The client id (omit to list every client).
        client_id: Option<String>,
    },
    /// List registered clients (offline: reads the store directly; see `get` for the API).
    List {
        /// The config file.
        #[arg(long, default_value = "tokenmint.toml")]
        config: PathBuf,
    },
    /// Disable a client: it gets no tokens and none of its tokens are active (admin, over mTLS).
    Disable {
        #[command(flatten)]
        remote: Remote,
        /// The client id.
        client_id: String,
    },
    /// Enable a disabled client again (admin, over mTLS).
    Enable {
        #[command(flatten)]
        remote: Remote,
        /// The client id.
        client_id: String,
    },
}

#[derive(Args)]
struct ClientAddArgs {
    /// The config file (for the store and KEK).
    #[arg(long, default_value = "tokenmint.toml")]
    config: PathBuf,
    #[command(flatten)]
    spec: ClientSpecArgs,
    #[command(flatten)]
    new: NewClientArgs,
}

#[derive(Args)]
struct ClientRegisterArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(flatten)]
    spec: ClientSpecArgs,
    #[command(flatten)]
    new: NewClientArgs,
}

#[derive(Args)]
struct ClientUpdateArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(flatten)]
    spec: ClientSpecArgs,
}

/// What only a new client takes (an update keeps the secret and the enabled state).
#[derive(Args)]
struct NewClientArgs {
    /// Generate a client secret as a second factor; it is printed once and stored only as an HMAC.
    #[arg(long)]
    with_secret: bool,
    /// Register it disabled.
    #[arg(long)]
    disabled: bool,
}

/// What a client is, as `client add` (offline) and `client register` (over mTLS) take it.
#[derive(Args)]
struct ClientSpecArgs {
    /// The client id.
    #[arg(long)]
    id: String,
    /// Match certificates by this SAN URI (e.g. a SPIFFE ID).
    #[arg(long, group = "matcher")]
    san_uri: Option<String>,
    /// Match certificates by this SAN DNS name.
    #[arg(long, group = "matcher")]
    san_dns: Option<String>,
    /// Match certificates by this subject DN (RFC 4514, most specific first: "CN=svc,O=Acme").
    #[arg(long, group = "matcher")]
    subject_dn: Option<String>,
    /// A self-signed client (`self_signed_tls_client_auth`): pin this SHA-256 certificate
    /// thumbprint, hex (as `openssl x509 -fingerprint -sha256` prints it) or base64url
    /// (repeatable, up to 8 pins with --pin-cert).
    #[arg(long = "pin-sha256")]
    pin_sha256: Vec<String>,
    /// A self-signed client: pin the thumbprint of the first certificate in this PEM file
    /// (repeatable).
    #[arg(long = "pin-cert")]
    pin_cert: Vec<PathBuf>,
    /// An allowed scope (repeatable).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// A default scope (repeatable; default: all allowed scopes).
    #[arg(long = "default-scope")]
    default_scopes: Vec<String>,
    /// An allowed audience (repeatable).
    #[arg(long = "audience")]
    audiences: Vec<String>,
    /// A default audience (repeatable; default: the only audience, if there is one).
    #[arg(long = "default-audience")]
    default_audiences: Vec<String>,
    /// An audience whose tokens it may introspect (repeatable; needs --permission introspect).
    #[arg(long = "introspect-audience")]
    introspect_audiences: Vec<String>,
    /// A permission: issue, introspect or admin (repeatable; default: issue).
    #[arg(long = "permission")]
    permissions: Vec<String>,
    /// An audience this client serves: it may exchange tokens for it; an audience is served by
    /// one client only (repeatable).
    #[arg(long = "serves")]
    serves: Vec<String>,
    /// A client id it may act for, or "*" for any (repeatable; needs --delegate-audience).
    #[arg(long = "act-for")]
    act_for: Vec<String>,
    /// An audience it may call on another's behalf, one of its --audience values (repeatable;
    /// needs --act-for).
    #[arg(long = "delegate-audience")]
    delegate_audiences: Vec<String>,
    /// A scope it may pass on when acting for another (repeatable; needs --act-for).
    #[arg(long = "delegate-scope")]
    delegate_scopes: Vec<String>,
    /// It may name a transaction token's subject itself, in a self-signed JWT or unsigned
    /// JSON (an edge gateway; off by default).
    #[arg(long)]
    asserts_txn_subjects: bool,
    /// Default token lifetime (default: tokens.default_lifetime).
    #[arg(long, value_parser = humantime::parse_duration)]
    default_lifetime: Option<Duration>,
    /// Maximum token lifetime (default: tokens.max_lifetime).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_lifetime: Option<Duration>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Get a token over mTLS and print the response as JSON.
    Issue(Box<TokenIssueArgs>),
    /// Exchange a token (RFC 8693) for one bound to this certificate: a token of one's own
    /// for a narrower one, or a token another client sent, to act on its behalf. Prints the
    /// response as JSON.
    Exchange(Box<TokenExchangeArgs>),
    /// Introspect a token (needs the introspect permission; default certificate: admin).
    Introspect {
        #[command(flatten)]
        remote: Remote,
        /// A file holding the token, or - for standard input.
        #[arg(long)]
        token_file: PathBuf,
        /// The base64url SHA-256 of the certificate the token's presenter used.
        #[arg(long)]
        presented_thumbprint: Option<String>,
    },
    /// Revoke a token: a client its own, an admin any (default certificate: admin).
    Revoke {
        #[command(flatten)]
        remote: Remote,
        /// A file holding the token, or - for standard input.
        #[arg(long)]
        token_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum RevokeCommand {
    /// Revoke a token by its id (jti) alone (admin).
    TokenId {
        #[command(flatten)]
        remote: Remote,
        /// The token id (jti). A base64url id may begin with `-`; it is still the id.
        #[arg(allow_hyphen_values = true)]
        token_id: String,
    },
    /// Cut a client off: revoke every token issued to it until now + leeway (admin).
    Client {
        #[command(flatten)]
        remote: Remote,
        /// The client id.
        client_id: String,
    },
    /// List the revocations in force (admin).
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

/// How to reach a running server over mTLS; the defaults fit `serve --dev`. Each option can
/// also come from the environment (`TOKENMINT_SERVER`, `TOKENMINT_CERT`, `TOKENMINT_KEY`,
/// `TOKENMINT_CA`, `TOKENMINT_SERVER_NAME`).
#[derive(Args, Clone)]
struct Remote {
    /// The server.
    #[arg(
        long,
        env = "TOKENMINT_SERVER",
        default_value = "https://localhost:8443"
    )]
    server: String,
    /// The client certificate (PEM) [default: certs/demo.pem for tokens, certs/admin.pem for administration].
    #[arg(long, env = "TOKENMINT_CERT")]
    cert: Option<PathBuf>,
    /// Its private key (PEM) [default: beside the default certificate].
    #[arg(long, env = "TOKENMINT_KEY")]
    key: Option<PathBuf>,
    /// The CA that signed the server certificate (PEM).
    #[arg(long, env = "TOKENMINT_CA", default_value = "certs/ca.pem")]
    ca: PathBuf,
    /// The TLS server name to verify (default: the URL's host).
    #[arg(long, env = "TOKENMINT_SERVER_NAME")]
    server_name: Option<String>,
}

impl Remote {
    /// Connects with the given certificate, or `certs/<default_identity>.pem` and `.key`.
    async fn channel(&self, default_identity: &str) -> Result<Channel> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let cert = self
            .cert
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("certs/{default_identity}.pem")));
        let key = self
            .key
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("certs/{default_identity}.key")));
        let uri: tonic::transport::Uri = self
            .server
            .parse()
            .with_context(|| format!("--server {:?} is not a URL", self.server))?;
        let server_name = self
            .server_name
            .clone()
            .or_else(|| uri.host().map(str::to_owned))
            .context("--server has no host")?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&cert)?, read(&key)?))
            .domain_name(server_name);
        Channel::builder(uri)
            .tls_config(tls)?
            .connect()
            .await
            .with_context(|| {
                format!(
                    "cannot reach tokenmint at {}: start one with `tokenmint serve --dev`, or point --server (or TOKENMINT_SERVER) at yours",
                    self.server
                )
            })
    }
}

/// A status as the CLI reports it.
fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", status.code(), status.message())
}

/// A file's text, or standard input's for `-`.
fn read_text(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Reads a token from a file, or standard input for `-` (never from the command line, where
/// it would land in shell history and process lists): a bare token, or the JSON `token issue`
/// and `token exchange` print.
fn read_token(path: &Path) -> Result<String> {
    let text = read_text(path)?;
    let text = text.trim();
    // What `token issue` and `token exchange` print is read as well as a bare token.
    if !text.starts_with('{') {
        return Ok(text.to_owned());
    }
    let printed: serde_json::Value = serde_json::from_str(text)
        .with_context(|| format!("{} is neither a token nor JSON", path.display()))?;
    printed["access_token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the JSON in {} has no access_token", path.display()))
}

/// Who asks and what for: what `token issue` and `token exchange` share.
#[derive(Args)]
struct Asking {
    #[command(flatten)]
    remote: Remote,
    /// The client id (default: derived from the certificate).
    #[arg(long)]
    client_id: Option<String>,
    /// A file holding the client secret, for clients that have one.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// A requested scope (repeatable; default: the client's defaults, or for an exchange
    /// all it may take).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// A requested audience (repeatable; default: the client's default).
    #[arg(long = "audience")]
    audiences: Vec<String>,
    /// A requested lifetime, e.g. 10m (an exchanged token never outlives its subject token).
    #[arg(long, value_parser = humantime::parse_duration)]
    lifetime: Option<Duration>,
}

#[derive(Args)]
struct TokenIssueArgs {
    #[command(flatten)]
    asking: Asking,
    /// The client it lets act for it (the token's may_act; that client must be registered
    /// to act for this one).
    #[arg(long)]
    may_act: Option<String>,
}

#[derive(Args)]
struct TokenExchangeArgs {
    #[command(flatten)]
    asking: Asking,
    /// A file holding the token exchanged, or - for standard input.
    #[arg(long)]
    subject_token_file: PathBuf,
    /// A file holding a token of the caller's own (optional).
    #[arg(long)]
    actor_token_file: Option<PathBuf>,
    /// Ask for a transaction token (draft-ietf-oauth-transaction-tokens): --audience the
    /// trust domain, --scope the purpose.
    #[arg(long)]
    txn: bool,
    /// What the subject token is: an access token, a transaction token to replace, or, for a
    /// client registered with asserts_txn_subjects, an unsigned JSON object or a self-signed
    /// JWT naming the subject.
    #[arg(long, value_enum, default_value = "access-token")]
    subject_token_type: SubjectTokenType,
    /// With --txn: request_context, a JSON object.
    #[arg(long)]
    request_context: Option<String>,
    /// With --txn: request_details, a JSON object.
    #[arg(long)]
    request_details: Option<String>,
}

/// `token exchange --subject-token-type`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SubjectTokenType {
    AccessToken,
    TxnToken,
    UnsignedJson,
    SelfSigned,
}

impl SubjectTokenType {
    fn urn(self) -> &'static str {
        match self {
            Self::AccessToken => grant::ACCESS_TOKEN_TYPE,
            Self::TxnToken => txn::TXN_TOKEN_TYPE,
            Self::UnsignedJson => txn::UNSIGNED_JSON_TYPE,
            Self::SelfSigned => txn::SELF_SIGNED_TYPE,
        }
    }
}

/// The environment as UTF-8 pairs (others are skipped: no tokenmint variable is non-UTF-8).
fn environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn env_kek() -> Option<String> {
    std::env::var(config::KEK_ENV_VAR).ok()
}

fn load_config(path: &Path) -> Result<Config> {
    Ok(Config::load(path, environment())?)
}

/// mimalloc: per-thread free lists make the request path's many small allocations cheaper
/// than glibc's arenas (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The text log's field formatter: each value as tracing writes it, with control characters
/// (newlines, ESC and the rest) escaped as Rust does (`\n`, `\u{1b}`).
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let raw = format!("{value:?}");
        let text = escape_controls(&raw);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ")
}

/// `text` with every control character escaped.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Runs the command; an error is printed as its chain of causes, without a backtrace
/// whatever `RUST_BACKTRACE` says (a refusal is not a crash).
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a file or a collector gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        // Every field is escaped, so a peer-supplied string cannot forge a line or send a
        // terminal escape (the JSON format escapes as JSON does).
        LogFormat::Text => logs.fmt_fields(escaped_fields()).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Authz(args) => authz(args).await,
            Command::Init { dir } => init(&dir),
            Command::CheckConfig { config } => {
                let config = load_config(&config)?;
                let clients = server::check_clients(&config)?;
                out!(
                    "{}: ok ({clients} clients; keys.algorithm {}; keys.custody {}; {})",
                    config.source.display(),
                    config.keys.algorithm,
                    config.keys.custody.name(),
                    tokenmint_core::crypto::stack().describe()
                );
                Ok(())
            }
            Command::Client(command) => client_command(command).await,
            Command::Audit(command) => audit_command(command).await,
            Command::Token(command) => token_command(command).await,
            Command::Revoke(command) => revoke_command(command).await,
            Command::Keys(command) => keys_command(command).await,
            Command::Kek(command) => kek_command(command).await,
        }
    })
}

/// `tokenmint client …`.
async fn client_command(command: ClientCommand) -> Result<()> {
    match command {
        ClientCommand::Add(args) => client_add(*args).await,
        ClientCommand::Register(args) => client_register(*args).await,
        ClientCommand::Update(args) => client_update(*args).await,
        ClientCommand::Get { remote, client_id } => client_get(&remote, client_id).await,
        ClientCommand::List { config } => client_list(&config).await,
        ClientCommand::Disable { remote, client_id } => {
            let mut admin = AdminServiceClient::new(remote.channel("admin").await?);
            let r = admin
                .disable_client(DisableClientRequest {
                    client_id: client_id.clone(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            out!("disabled client {client_id} (sequence {})", r.sequence);
            Ok(())
        }
        ClientCommand::Enable { remote, client_id } => {
            let mut admin = AdminServiceClient::new(remote.channel("admin").await?);
            let r = admin
                .enable_client(EnableClientRequest {
                    client_id: client_id.clone(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            out!("enabled client {client_id} (sequence {})", r.sequence);
            Ok(())
        }
    }
}

/// `tokenmint audit …`.
async fn audit_command(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::List {
            remote,
            actor,
            action,
            target,
            since,
        } => {
            let filter = tokenmint::grpc::proto::ListAuditEventsRequest {
                actor: actor.unwrap_or_default(),
                action: action.unwrap_or_default(),
                target: target.unwrap_or_default(),
                since: since.unwrap_or(0),
                ..Default::default()
            };
            audit_list(&remote, filter).await
        }
    }
}

/// `tokenmint token …`.
async fn token_command(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Issue(args) => token_issue(*args).await,
        TokenCommand::Exchange(args) => token_exchange(*args).await,
        TokenCommand::Introspect {
            remote,
            token_file,
            presented_thumbprint,
        } => {
            let token = read_token(&token_file)?;
            let mut tokens = TokenServiceClient::new(remote.channel("admin").await?);
            let r = tokens
                .introspect_token(IntrospectTokenRequest {
                    token,
                    presented_certificate_thumbprint: presented_thumbprint,
                })
                .await
                .map_err(refused)?
                .into_inner();
            let answer = if r.active {
                Introspection::Active(Box::new(ActiveToken {
                    client_id: r.client_id,
                    sub: r.subject,
                    scopes: r.scopes,
                    aud: r.audiences,
                    iss: r.issuer,
                    exp: UnixTime::from_secs(r.expires_at),
                    iat: UnixTime::from_secs(r.issued_at),
                    nbf: UnixTime::from_secs(r.not_before),
                    jti: r.token_id,
                    cnf: Confirmation {
                        x5t_s256: r.certificate_thumbprint,
                    },
                    act: Actor::from_chain(&r.actors),
                    may_act: (!r.may_act.is_empty()).then_some(MayAct { sub: r.may_act }),
                }))
            } else {
                Introspection::Inactive
            };
            let json = answer.to_json();
            out!("{json:#}");
            Ok(())
        }
        TokenCommand::Revoke { remote, token_file } => {
            let token = read_token(&token_file)?;
            let mut tokens = TokenServiceClient::new(remote.channel("admin").await?);
            tokens
                .revoke_token(RevokeTokenRequest { token })
                .await
                .map_err(refused)?;
            out!("revoked (or nothing to revoke: unknown, expired or already revoked)");
            Ok(())
        }
    }
}

/// `tokenmint revoke …`.
async fn revoke_command(command: RevokeCommand) -> Result<()> {
    match command {
        RevokeCommand::TokenId { remote, token_id } => {
            let mut admin = AdminServiceClient::new(remote.channel("admin").await?);
            let r = admin
                .revoke_token_id(RevokeTokenIdRequest {
                    token_id: token_id.clone(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            match r.sequence {
                0 => out!("token id {token_id} was already revoked"),
                n => out!("revoked token id {token_id} (sequence {n})"),
            }
            Ok(())
        }
        RevokeCommand::Client { remote, client_id } => {
            let mut admin = AdminServiceClient::new(remote.channel("admin").await?);
            let r = admin
                .revoke_client_tokens(RevokeClientTokensRequest {
                    client_id: client_id.clone(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            out!(
                "cut off client {client_id}: every token issued at or before {} is revoked; issuance resumes after it (sequence {})",
                r.issued_at_or_before,
                r.sequence
            );
            Ok(())
        }
        RevokeCommand::List { remote } => {
            let mut admin = AdminServiceClient::new(remote.channel("admin").await?);
            let mut page_token = String::new();
            loop {
                let r = admin
                    .list_revocations(ListRevocationsRequest {
                        page_size: 0,
                        page_token,
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                for c in &r.disabled_clients {
                    out!("disabled\t{c}");
                }
                for c in &r.cutoffs {
                    out!(
                        "cutoff\t{}\tissued_at_or_before={}\tsequence={}",
                        c.client_id,
                        c.issued_at_or_before,
                        c.sequence
                    );
                }
                for t in &r.tokens {
                    out!(
                        "token\t{}\tclient={}\texpires_at={}\tsequence={}",
                        t.token_id,
                        t.client_id,
                        t.expires_at,
                        t.sequence
                    );
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            Ok(())
        }
    }
}

/// `tokenmint keys …`.
async fn keys_command(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::List { remote } => {
            let mut admin = AdminServiceClient::new(remote.channel("admin").await?);
            let r = admin
                .list_keys(ListKeysRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            for k in &r.keys {
                out!(
                    "{}\t{}\t{}\tcreated={}\tactivated={}\tretired={}\trevoked={}",
                    k.key_id,
                    k.algorithm,
                    k.state,
                    k.created_at,
                    k.activated_at,
                    k.retired_at,
                    k.revoked_at
                );
            }
            out!(
                "current key age: {}s; next scheduled step at {}",
                r.current_key_age_seconds,
                r.next_step_at
            );
            Ok(())
        }
        KeysCommand::Rotate { remote, force } => {
            let mut admin = AdminServiceClient::new(remote.channel("admin").await?);
            let r = admin
                .rotate_keys(RotateKeysRequest { force })
                .await
                .map_err(refused)?
                .into_inner();
            out!(
                "rotated: {} signs now, {} is retired",
                r.current_key_id,
                if r.retired_key_id.is_empty() {
                    "no key"
                } else {
                    r.retired_key_id.as_str()
                }
            );
            if !r.warning.is_empty() {
                eprintln!("warning: {}", r.warning);
            }
            Ok(())
        }
        KeysCommand::Revoke { remote, key_id } => {
            let mut admin = AdminServiceClient::new(remote.channel("admin").await?);
            let r = admin
                .revoke_key(RevokeKeyRequest {
                    key_id: key_id.clone(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            match r.sequence {
                0 => out!("key {key_id} was already revoked"),
                n => out!(
                    "revoked key {key_id} (sequence {n}); verifiers caching the key set may trust it until their copy expires (keys.jwks_max_age)"
                ),
            }
            Ok(())
        }
    }
}

/// `tokenmint kek …`.
async fn kek_command(command: KekCommand) -> Result<()> {
    match command {
        KekCommand::Rotate { config } => {
            let config = load_config(&config)?;
            let keks = server::load_keks(&config.keys.kek_files, env_kek().as_deref())?;
            let store = server::open_store(&config).await?;
            let done = server::rotate_kek(store.as_ref(), &keks, SystemClock.unix_now()).await?;
            out!(
                "re-sealed {} signing keys{} under KEK {}; older KEKs can now be removed from the configuration",
                done.keys,
                if done.pepper {
                    " and the client-secret pepper"
                } else {
                    ""
                },
                keks.newest().id()
            );
            Ok(())
        }
    }
}

fn init(dir: &Path) -> Result<()> {
    let report = pki::init(dir)?;
    for file in &report.written {
        out!("wrote {}", dir.join(file).display());
    }
    for file in &report.kept {
        out!("kept  {}", dir.join(file).display());
    }
    for note in &report.notes {
        eprintln!("note: {}:\n{}", note.summary, note.add);
    }
    Ok(())
}

/// Logs the crypto stack; a build on the FIPS module must be in FIPS mode to serve.
fn check_crypto_stack() -> Result<()> {
    let stack = tokenmint_core::crypto::stack();
    if stack.is_fips_build() && !tokenmint_core::crypto::fips_mode() {
        anyhow::bail!(
            "this binary was built on the FIPS module, but the module is not in FIPS mode: refusing to serve ({})",
            stack.describe()
        );
    }
    tracing::info!(
        stack = stack.name(),
        feature = stack.feature(),
        fips_mode = tokenmint_core::crypto::fips_mode(),
        "crypto stack"
    );
    Ok(())
}

/// `serve --dev`: what is missing of the development set-up, written beside the config file,
/// logged as `init` prints it.
fn dev_set_up(config: &Path) -> Result<()> {
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let report = pki::init(dir)?;
    for file in &report.written {
        tracing::info!(file = %dir.join(file).display(), "development set-up written");
    }
    for note in &report.notes {
        tracing::warn!(
            add = note.add,
            "{} (`tokenmint init --dir {}` prints the [[clients]] block)",
            note.summary,
            dir.display()
        );
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    check_crypto_stack()?;
    if args.dev {
        dev_set_up(&args.config)?;
    }
    // SIGHUP means "reload TLS material" (src/tls.rs): take it over from the default action
    // (exit) now, so a reload asked for during start-up cannot kill the process.
    #[cfg(unix)]
    let _hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let mut config = load_config(&args.config)?;
    if args.dev {
        config = config.dev_following_listen();
    }
    let keks = server::load_keks(&config.keys.kek_files, env_kek().as_deref())?;
    let listen = config.server.listen;
    // The operations listener comes first, so probes see "alive, not ready" while the state
    // loads.
    let probe = ops::Probe::new(config.store.max_issue_staleness);
    let ops_stop = CancellationToken::new();
    let ops_task = match config.server.ops_listen {
        Some(addr) => {
            let ops_listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (server.ops_listen)"))?;
            let local = ops_listener.local_addr().unwrap_or(addr);
            tracing::info!(listen = %local, "operations listener: /healthz /readyz /metrics");
            Some(tokio::spawn(ops::serve(
                ops_listener,
                probe.clone(),
                ops::metrics_handle(),
                ops_stop.clone(),
            )))
        }
        None => None,
    };
    let prepared = server::prepare(
        config,
        Options {
            keks,
            sync_clients: args.sync_clients,
            clock: Arc::new(SystemClock),
        },
    )
    .await?;
    probe.attach(prepared.authority().clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    tracing::info!(%listen, "listening");
    let stopping = probe.clone();
    let result = prepared
        .serve(listener, async move {
            shutdown_signal().await;
            stopping.mark_stopping();
        })
        .await;
    ops_stop.cancel();
    if let Some(task) = ops_task {
        let _ = task.await;
    }
    result?;
    Ok(())
}

/// `tokenmint authz`: the flags as `TOKENMINT__AUTHZ__*` overrides over the file (or the
/// defaults when there is none), then the sidecar until SIGINT or SIGTERM.
async fn authz(args: AuthzArgs) -> Result<()> {
    check_crypto_stack()?;
    let mut env = environment();
    let endpoint_set = env
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("TOKENMINT__AUTHZ__ISSUER_ENDPOINT"));
    let endpoint = args.issuer.clone().filter(|_| !endpoint_set);
    for (key, value) in [
        ("LISTEN", &args.listen),
        ("GRPC_LISTEN", &args.grpc_listen),
        ("OPS_LISTEN", &args.ops_listen),
        ("ISSUER", &args.issuer),
        ("ISSUER_ENDPOINT", &endpoint),
    ] {
        if let Some(value) = value {
            env.push((format!("TOKENMINT__AUTHZ__{key}"), value.clone()));
        }
    }
    let config = if args.config.exists() {
        Config::load(&args.config, env)?
    } else {
        let dir = std::env::current_dir().context("reading the current directory")?;
        Config::from_toml_str("", &args.config, &dir, env)?
    };
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    tokenmint::authz::run(config.authz, stop).await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}

async fn client_add(args: ClientAddArgs) -> Result<()> {
    let config = load_config(&args.config)?;
    // The same checks and defaults as RegisterClient.
    let client = tokenmint::grpc::client_from_spec(
        client_spec(args.spec, args.new.disabled)?,
        LifetimeDefaults {
            default: config.tokens.default_lifetime,
            max: config.tokens.max_lifetime,
        },
    )
    .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
    let store = server::open_store(&config).await?;
    let hasher = if args.new.with_secret {
        let keks = server::load_keks(&config.keys.kek_files, env_kek().as_deref())?;
        Some(server::load_pepper(store.as_ref(), &keks).await?)
    } else {
        None
    };
    let by = Registrar {
        actor: tokenmint_core::audit::OPERATOR_ACTOR,
        now: SystemClock.unix_now(),
        offline: true,
    };
    let (id, serves) = (client.id.clone(), client.exchange.serves.clone());
    let (client, secret) = match registration::register(store.as_ref(), client, hasher.as_ref(), by)
        .await
    {
        Ok(registered) => registered,
        // The store says only that something is taken: an audience another client serves
        // is named, as RegisterClient names it.
        Err(e @ RegisterError::Taken { .. }) => {
            let refused =
                match registration::served_elsewhere(store.as_ref(), id.as_str(), &serves).await {
                    Some(why) => anyhow::anyhow!(why),
                    None => anyhow::Error::new(e),
                };
            return Err(refused.context("registering the client"));
        }
        Err(e) => return Err(e).context("registering the client"),
    };
    out!(
        "registered client {} ({} {})",
        client.id,
        client.matcher.kind(),
        client.matcher.value()
    );
    if let Some(secret) = secret {
        out!(
            "client secret (shown once, store it now): {}",
            secret.as_str()
        );
    }
    Ok(())
}

/// The pins a client spec names: its `--pin-sha256` values, then the thumbprint (base64url)
/// of the first certificate in each `--pin-cert` file.
fn pins_of(spec: &ClientSpecArgs) -> Result<Vec<String>> {
    let mut pins = spec.pin_sha256.clone();
    for path in &spec.pin_cert {
        let certificates = tokenmint::tls::read_certificates(path)?;
        let first = certificates
            .first()
            .with_context(|| format!("{}: no certificate", path.display()))?;
        pins.push(crypto::CertificateThumbprint::of_der(first.as_ref()).to_b64url());
    }
    Ok(pins)
}

/// The API's form of a client spec (`disabled` for a new client only).
fn client_spec(spec: ClientSpecArgs, disabled: bool) -> Result<ClientSpec> {
    let lifetime = |d: Option<Duration>| d.map(duration_to_proto);
    let pinned_sha256 = pins_of(&spec)?;
    Ok(ClientSpec {
        client_id: spec.id,
        san_uri: spec.san_uri.unwrap_or_default(),
        san_dns: spec.san_dns.unwrap_or_default(),
        subject_dn: spec.subject_dn.unwrap_or_default(),
        scopes: spec.scopes,
        default_scopes: spec.default_scopes,
        audiences: spec.audiences,
        default_audiences: spec.default_audiences,
        introspect_audiences: spec.introspect_audiences,
        permissions: spec.permissions,
        default_lifetime: lifetime(spec.default_lifetime),
        max_lifetime: lifetime(spec.max_lifetime),
        disabled,
        pinned_sha256,
        serves: spec.serves,
        act_for: spec.act_for,
        delegate_audiences: spec.delegate_audiences,
        delegate_scopes: spec.delegate_scopes,
        asserts_txn_subjects: spec.asserts_txn_subjects,
    })
}

async fn client_register(args: ClientRegisterArgs) -> Result<()> {
    let request = RegisterClientRequest {
        client: Some(client_spec(args.spec, args.new.disabled)?),
        with_secret: args.new.with_secret,
    };
    let mut admin = AdminServiceClient::new(args.remote.channel("admin").await?);
    let registered = admin
        .register_client(request)
        .await
        .map_err(refused)?
        .into_inner();
    if let Some(client) = &registered.client {
        out!(
            "registered client {} ({} {})",
            client.client_id,
            client.matcher_kind,
            client.matcher_value
        );
    }
    if !registered.client_secret.is_empty() {
        out!(
            "client secret (shown once, store it now): {}",
            registered.client_secret
        );
    }
    Ok(())
}

async fn client_update(args: ClientUpdateArgs) -> Result<()> {
    let mut admin = AdminServiceClient::new(args.remote.channel("admin").await?);
    let client = admin
        .update_client(UpdateClientRequest {
            client: Some(client_spec(args.spec, false)?),
        })
        .await
        .map_err(refused)?
        .into_inner();
    out!(
        "updated client {} ({} {})",
        client.client_id,
        client.matcher_kind,
        client.matcher_value
    );
    Ok(())
}

/// One line of JSON per client.
async fn audit_list(
    remote: &Remote,
    filter: tokenmint::grpc::proto::ListAuditEventsRequest,
) -> Result<()> {
    let mut admin = AdminServiceClient::new(remote.channel("admin").await?);
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_audit_events(tokenmint::grpc::proto::ListAuditEventsRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..filter.clone()
            })
            .await
            .map_err(refused)?
            .into_inner();
        for event in &page.events {
            let detail: std::collections::BTreeMap<_, _> = event.detail.iter().collect();
            out!(
                "{}",
                serde_json::json!({
                    "id": event.id,
                    "at": event.at,
                    "actor": event.actor,
                    "action": event.action,
                    "target": event.target,
                    "detail": detail,
                })
            );
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

async fn client_get(remote: &Remote, client_id: Option<String>) -> Result<()> {
    let mut admin = AdminServiceClient::new(remote.channel("admin").await?);
    let show = |c: &ClientInfo| {
        serde_json::json!({
            "client_id": c.client_id,
            "matcher": { "kind": c.matcher_kind, "value": c.matcher_value },
            "scopes": c.scopes,
            "default_scopes": c.default_scopes,
            "audiences": c.audiences,
            "default_audiences": c.default_audiences,
            "introspect_audiences": c.introspect_audiences,
            "permissions": c.permissions,
            "default_lifetime_seconds": c.default_lifetime.map(|d| d.seconds),
            "max_lifetime_seconds": c.max_lifetime.map(|d| d.seconds),
            "enabled": c.enabled,
            "has_secret": c.has_secret,
            "pinned_sha256": c.pinned_sha256,
            "serves": c.serves,
            "act_for": c.act_for,
            "delegate_audiences": c.delegate_audiences,
            "delegate_scopes": c.delegate_scopes,
            "asserts_txn_subjects": c.asserts_txn_subjects,
        })
    };
    if let Some(client_id) = client_id {
        let client = admin
            .get_client(GetClientRequest { client_id })
            .await
            .map_err(refused)?
            .into_inner();
        out!("{}", show(&client));
        return Ok(());
    }
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_clients(ListClientsRequest {
                page_size: 0,
                page_token: page_token.clone(),
            })
            .await
            .map_err(refused)?
            .into_inner();
        for client in &page.clients {
            out!("{}", show(client));
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

async fn client_list(config: &Path) -> Result<()> {
    let config = load_config(config)?;
    let store = server::open_store(&config).await?;
    for c in store.clients().await? {
        // A client's place in call chains, only where it has one.
        let exchange: String = [
            ("serves", &c.exchange.serves),
            ("act_for", &c.exchange.act_for),
            ("delegate_audiences", &c.exchange.delegate_audiences),
            ("delegate_scopes", &c.exchange.delegate_scopes),
        ]
        .into_iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(key, values)| format!("\t{key}=[{}]", values.join(" ")))
        .chain(
            c.exchange
                .asserts_txn_subjects
                .then(|| "\tasserts_txn_subjects".to_owned()),
        )
        .collect();
        out!(
            "{}\t{}={}\tscopes=[{}]\taudiences=[{}]\tpermissions=[{}]{exchange}\t{}{}",
            c.id,
            c.matcher.kind(),
            c.matcher.value(),
            c.scopes.join(" "),
            c.audiences.join(" "),
            c.permissions
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            if c.enabled { "enabled" } else { "disabled" },
            if c.secret_hash.is_some() {
                "\tsecret"
            } else {
                ""
            },
        );
    }
    Ok(())
}

/// The client secret in `path`, or none.
fn read_secret(path: Option<&Path>) -> Result<zeroize::Zeroizing<String>> {
    let Some(path) = path else {
        return Ok(zeroize::Zeroizing::new(String::new()));
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
}

/// A token endpoint answer as the CLI prints it.
fn print_issued(
    access_token: String,
    token_type: String,
    expires_in: i64,
    scopes: &[String],
    audiences: &[String],
    key_id: String,
) -> serde_json::Value {
    serde_json::json!({
        "access_token": access_token,
        "token_type": token_type,
        "expires_in": expires_in,
        "scope": scopes.join(" "),
        "audiences": audiences,
        "key_id": key_id,
    })
}

async fn token_issue(args: TokenIssueArgs) -> Result<()> {
    let asking = args.asking;
    let channel = asking.remote.channel("demo").await?;
    let secret = read_secret(asking.secret_file.as_deref())?;
    let r = TokenServiceClient::new(channel)
        .issue_token(IssueTokenRequest {
            client_id: asking.client_id.unwrap_or_default(),
            client_secret: secret.to_string(),
            scopes: asking.scopes,
            audiences: asking.audiences,
            lifetime: asking.lifetime.map(duration_to_proto),
            may_act: args.may_act.unwrap_or_default(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let json = print_issued(
        r.access_token,
        r.token_type,
        r.expires_in,
        &r.scopes,
        &r.audiences,
        r.key_id,
    );
    out!("{json:#}");
    Ok(())
}

async fn token_exchange(args: TokenExchangeArgs) -> Result<()> {
    let asking = args.asking;
    let channel = asking.remote.channel("demo").await?;
    let secret = read_secret(asking.secret_file.as_deref())?;
    let actor_token = args
        .actor_token_file
        .as_deref()
        .map(read_token)
        .transpose()?;
    let token_type = |given: bool| {
        if given {
            grant::ACCESS_TOKEN_TYPE.to_owned()
        } else {
            String::new()
        }
    };
    // An unsigned JSON subject is the object itself, never the `access_token` of printed JSON.
    let subject_token = match args.subject_token_type {
        SubjectTokenType::UnsignedJson => read_text(&args.subject_token_file)?.trim().to_owned(),
        _ => read_token(&args.subject_token_file)?,
    };
    let requested = if args.txn { txn::TXN_TOKEN_TYPE } else { "" };
    let r = TokenServiceClient::new(channel)
        .exchange_token(ExchangeTokenRequest {
            client_id: asking.client_id.unwrap_or_default(),
            client_secret: secret.to_string(),
            subject_token,
            subject_token_type: args.subject_token_type.urn().to_owned(),
            actor_token_type: token_type(actor_token.is_some()),
            actor_token: actor_token.unwrap_or_default(),
            requested_token_type: requested.to_owned(),
            audiences: asking.audiences,
            scopes: asking.scopes,
            lifetime: asking.lifetime.map(duration_to_proto),
            request_context: args.request_context.unwrap_or_default(),
            request_details: args.request_details.unwrap_or_default(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let mut json = print_issued(
        r.access_token,
        r.token_type,
        r.expires_in,
        &r.scopes,
        &r.audiences,
        r.key_id,
    );
    json["issued_token_type"] = serde_json::Value::from(r.issued_token_type);
    out!("{json:#}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One kid or jti in 64 begins with `-` (base64url); it must not be read as a flag.
    #[test]
    fn a_key_or_token_id_beginning_with_a_hyphen_is_an_id() {
        let cli = Cli::try_parse_from(["tokenmint", "keys", "revoke", "-yAbc_9"]);
        assert!(
            matches!(cli.map(|c| c.command), Ok(Command::Keys(KeysCommand::Revoke { key_id, .. })) if key_id == "-yAbc_9")
        );
        let cli = Cli::try_parse_from(["tokenmint", "revoke", "token-id", "-Q8x"]);
        assert!(
            matches!(cli.map(|c| c.command), Ok(Command::Revoke(RevokeCommand::TokenId { token_id, .. })) if token_id == "-Q8x")
        );
    }
}
