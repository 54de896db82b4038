//! The configuration: the TOML file and `TOKENMINT__SECTION__KEY` overrides, read raw and then validated once into a `Config`.
//!
//! Two stages, as in kanidm and ripgrep: the file is deserialized into the private, stringly
//! typed `FileConfig` (every struct `deny_unknown_fields`, so a misspelt key is refused with
//! toml's message naming it and its line), environment overrides are applied to the parsed
//! table before that, and [`Config::from_toml_str`] then validates everything once —
//! durations (`"5m"`, `"1h"`, parsed by `humantime`), addresses, paths (relative to the
//! file's directory), enums and the cross-field invariants of the key lifecycle — into the
//! typed [`Config`] the rest of the server reads. Nothing after this module re-checks them.
//!
//! The environment is a parameter (`Config::load(path, env)`), never read here, so tests
//! pass their own.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenmint_core::client::{Client, ClientDraft, DraftField, IdentityDraft, LifetimeDefaults};
pub use tokenmint_core::{
    client::Permission,
    crypto::{Algorithm, AlgorithmSet, RsaBits},
    grant::SigningChoice,
};

/// The prefix of environment overrides: `TOKENMINT__<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "TOKENMINT__";

/// The environment variable that holds a KEK itself (read by the key module, not here;
/// this module only records whether it is set).
pub const KEK_ENV_VAR: &str = "TOKENMINT_KEK";

mod authz;
mod custody;
mod env;
mod file;
mod starter;
mod txn;
mod validate;

pub use authz::{AuthzConfig, Listen, ProxyTls};
pub use custody::{DEFAULT_PIN_ENV, KeyCustody, PinSource, Pkcs11Config, Pkcs11Token};
use env::EnvOverrides;
use file::FileConfig;
pub use starter::{lacks_client, resource_client_toml, starter_toml};
pub use txn::{DEFAULT_TXN_LIFETIME, MAX_TXN_LIFETIME, TxnTokensConfig};
use validate::Validator;

// Defaults, as the product contract writes them. `starter_toml()` writes the same values
// out (a test keeps the two in step).
const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// The operations listener: loopback, so only the node's own agents reach it by default.
const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:9464";
const DEFAULT_ISSUER: &str = "https://localhost:8443";
const DEFAULT_HANDSHAKE_TIMEOUT: &str = "10s";
/// Default of `tls.reload_interval`.
const DEFAULT_TLS_RELOAD_INTERVAL: &str = "5s";
/// Default of `server.handshake_failures_per_peer`.
const DEFAULT_HANDSHAKE_FAILURES_PER_PEER: u32 = 50;
/// Default of `server.max_in_flight`.
const DEFAULT_MAX_IN_FLIGHT: u32 = 4096;
/// Default of `server.max_handshakes`.
const DEFAULT_MAX_HANDSHAKES: u32 = 1024;
/// Default of `server.max_handshakes_per_address`.
const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS: u32 = 64;
/// Default of `server.max_in_flight_without_certificate`.
const DEFAULT_MAX_IN_FLIGHT_WITHOUT_CERTIFICATE: u32 = 256;
/// Default of `server.max_streams_without_certificate`.
const DEFAULT_MAX_STREAMS_WITHOUT_CERTIFICATE: u32 = 8;
/// Default of `server.max_connections_without_certificate`.
const DEFAULT_MAX_CONNECTIONS_WITHOUT_CERTIFICATE: u32 = 1024;
/// Default of `server.idle_timeout_without_certificate`.
const DEFAULT_IDLE_TIMEOUT_WITHOUT_CERTIFICATE: &str = "30s";
/// Default of `server.body_timeout`.
const DEFAULT_BODY_TIMEOUT: &str = "10s";
/// Default of `server.request_timeout`.
const DEFAULT_REQUEST_TIMEOUT: &str = "30s";
/// Upper bound of `server.body_timeout` and `server.request_timeout`.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default of `server.max_concurrent_streams`.
const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default of `server.max_header_list_size` (bytes).
const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Default of `server.keepalive_interval`.
const DEFAULT_KEEPALIVE_INTERVAL: &str = "30s";
/// Default of `server.keepalive_timeout`.
const DEFAULT_KEEPALIVE_TIMEOUT: &str = "10s";
/// Default of `server.max_connection_age`.
const DEFAULT_MAX_CONNECTION_AGE: &str = "1h";
const DEFAULT_TLS_CERT: &str = "certs/server.pem";
const DEFAULT_TLS_KEY: &str = "certs/server.key";
const DEFAULT_TLS_CLIENT_CA: &str = "certs/ca.pem";
const DEFAULT_STORE_URL: &str = "sqlite://tokenmint.db";
const DEFAULT_MAX_STALENESS: &str = "5s";
const DEFAULT_CATCH_UP_INTERVAL: &str = "1s";
const DEFAULT_MAX_ISSUE_STALENESS: &str = "5m";
const DEFAULT_ALGORITHM: &str = "ES256";
const DEFAULT_ROTATION_PERIOD: &str = "24h";
const DEFAULT_PUBLISH_AHEAD: &str = "1h";
const DEFAULT_JWKS_MAX_AGE: &str = "5m";
const DEFAULT_RETENTION: &str = "2h";
const DEFAULT_KEK_FILE: &str = "tokenmint.kek";
const DEFAULT_TOKEN_LIFETIME: &str = "5m";
const DEFAULT_MAX_LIFETIME: &str = "1h";
const DEFAULT_LEEWAY: &str = "30s";

/// Upper bound of `server.handshake_timeout`.
const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default of `revocation.max_live`.
const DEFAULT_MAX_LIVE_REVOCATIONS: u64 = 1_000_000;
/// Default of `revocation.per_client_max_live`.
const DEFAULT_PER_CLIENT_MAX_LIVE: u64 = 10_000;
/// Default of `revocation.per_client_rate`.
const DEFAULT_PER_CLIENT_RATE: u32 = 10;
/// Default of `revocation.max_watches`.
const DEFAULT_MAX_WATCHES: u32 = 20_000;
/// Default of `revocation.max_watches_per_client`.
const DEFAULT_MAX_WATCHES_PER_CLIENT: u32 = 10_000;
/// Default of `keys.max_jwks_watches`.
const DEFAULT_MAX_JWKS_WATCHES: u32 = 10_000;
/// Default of `server.watch_stall_timeout`.
const DEFAULT_WATCH_STALL_TIMEOUT: &str = "60s";
/// Default of `revocation.purge_interval`.
const DEFAULT_PURGE_INTERVAL: &str = "1m";
/// Default of `audit.issuance_interval`.
const DEFAULT_AUDIT_INTERVAL: &str = "1m";
/// Default of `audit.issuance_sample`.
const DEFAULT_AUDIT_SAMPLE: u64 = 100;
/// Default of `audit.retention`.
const DEFAULT_AUDIT_RETENTION: &str = "400d";

/// Default of `tokens.max_exchange_depth`.
pub const DEFAULT_MAX_EXCHANGE_DEPTH: u32 = 4;
/// Upper bound of `tokens.max_exchange_depth`: every exchange adds a token id to the token.
pub const MAX_EXCHANGE_DEPTH: u32 = 16;
/// Upper bound of `tokens.leeway`.
const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);

/// The sections that environment overrides may address, with their keys. `[[clients]]` is
/// an array of tables and is set in the file only.
const SECTIONS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "issuer",
            "handshake_timeout",
            "ops_listen",
            "max_handshakes",
            "max_concurrent_streams",
            "max_header_list_size",
            "keepalive_interval",
            "keepalive_timeout",
            "max_connection_age",
            "handshake_failures_per_peer",
            "max_in_flight",
            "max_in_flight_without_certificate",
            "max_streams_without_certificate",
            "max_connections_without_certificate",
            "idle_timeout_without_certificate",
            "body_timeout",
            "request_timeout",
            "max_handshakes_per_address",
            "max_handshakes_per_address_in",
            "watch_stall_timeout",
        ],
    ),
    (
        "tls",
        &["cert", "key", "client_ca", "client_crls", "reload_interval"],
    ),
    (
        "store",
        &[
            "url",
            "max_staleness",
            "catch_up_interval",
            "max_issue_staleness",
        ],
    ),
    (
        "keys",
        &[
            "custody",
            "algorithm",
            "also",
            "rsa_bits",
            "audience_algorithms",
            "rotation_period",
            "publish_ahead",
            "jwks_max_age",
            "retention",
            "kek_files",
            "max_jwks_watches",
        ],
    ),
    (
        "pkcs11",
        &[
            "module",
            "token_label",
            "token_serial",
            "pin_file",
            "pin_env",
            "sessions",
        ],
    ),
    (
        "tokens",
        &[
            "default_lifetime",
            "max_lifetime",
            "leeway",
            "max_exchange_depth",
        ],
    ),
    (
        "limits",
        &["issue_per_second", "issue_burst", "issue_per_client"],
    ),
    ("admin", &["listen", "client_ca", "client_crls"]),
    ("txn_tokens", &["trust_domain", "lifetime"]),
    (
        "authz",
        &[
            "listen",
            "grpc_listen",
            "ops_listen",
            "issuer",
            "issuer_endpoint",
            "ca",
            "cert",
            "key",
            "audiences",
            "certificate_header",
            "certificate_format",
            "path_header",
            "proxy_ca",
            "tls_cert",
            "tls_key",
            "staleness",
            "required_scopes",
            "trust_domain",
            "txn_required",
        ],
    ),
    (
        "audit",
        &[
            "issuance",
            "issuance_interval",
            "issuance_sample",
            "retention",
        ],
    ),
    (
        "revocation",
        &[
            "max_live",
            "per_client_max_live",
            "per_client_rate",
            "purge_interval",
            "max_watches",
            "max_watches_per_client",
        ],
    ),
];

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why the configuration was refused. Every message names the file, field or environment
/// variable, what is wrong, and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {error} — {}", .file.display(), read_hint(.error))]
    Read {
        /// The file that was asked for.
        file: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type
    /// (toml's message names the key and the line).
    #[error("{}: {}", .file.display(), .error.to_string().trim_end())]
    Parse {
        /// The file (as named in messages).
        file: PathBuf,
        /// toml's error, with line and column.
        error: toml::de::Error,
    },
    /// An environment override is malformed, names an unknown section or key, or has a
    /// value of the wrong type.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable (or variables, comma-separated) at fault.
        var: String,
        /// What is wrong and the fix.
        message: String,
    },
    /// A value, or a combination of values, breaks a rule of the configuration.
    #[error("{}: {message}", .file.display())]
    Invalid {
        /// The file the configuration came from (as named in messages).
        file: PathBuf,
        /// The dotted name of the field at fault, e.g. `keys.publish_ahead` or
        /// `clients[1].scopes`.
        field: String,
        /// What is wrong and the fix; it starts with the field's name.
        message: String,
    },
}

fn read_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => "run `tokenmint init` or pass --config",
        io::ErrorKind::PermissionDenied => "make it readable by the user tokenmint runs as",
        io::ErrorKind::InvalidData => "the file must be UTF-8 text",
        _ => "check the path passed with --config",
    }
}

// ---------------------------------------------------------------------------------------
// The validated configuration
// ---------------------------------------------------------------------------------------

/// The validated configuration: every value typed, every default filled in, every
/// cross-field invariant checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[tls]`.
    pub tls: TlsConfig,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[keys]`.
    pub keys: KeysConfig,
    /// `[tokens]`.
    pub tokens: TokensConfig,
    /// `[revocation]`.
    pub revocation: RevocationConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[authz]`: the verification sidecar (`tokenmint authz`).
    pub authz: AuthzConfig,
    /// `[txn_tokens]`: transaction tokens, when a trust domain is set.
    pub txn_tokens: Option<TxnTokensConfig>,
    /// `[[clients]]`, in file order.
    pub clients: Vec<Client>,
    /// Whether `TOKENMINT_KEK` was set (non-empty) in the environment; then `keys.kek_files`
    /// may be empty.
    pub kek_from_env: bool,
    /// The file the configuration came from.
    pub source: PathBuf,
}

/// `[server]`: where to listen and what to call ourselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The gRPC listener's address.
    pub listen: SocketAddr,
    /// The `iss` of every token: an `https://` URL without query, fragment or trailing slash.
    pub issuer: String,
    /// How long a peer may take to finish the TLS handshake (> 0, ≤ 5m).
    pub handshake_timeout: Duration,
    /// The plain-HTTP operations listener (`/healthz`, `/readyz`, `/metrics`); `None`: off.
    pub ops_listen: Option<SocketAddr>,
    /// TLS handshakes in progress at once; a connection beyond it is closed at once.
    pub max_handshakes: u32,
    /// HTTP/2 streams in flight per connection.
    pub max_concurrent_streams: u32,
    /// The largest HTTP/2 header list accepted (bytes).
    pub max_header_list_size: u32,
    /// How often an idle HTTP/2 connection is pinged.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// How long a connection may live; then it is asked to go away (in-flight calls get a
    /// 30 s grace), so new credentials and CA material reach long-lived clients.
    pub max_connection_age: Duration,
    /// Failed TLS handshakes per second one IP address may cause (twice that at once) before
    /// its new connections are closed at once for a while; 0: no limit.
    pub handshake_failures_per_peer: u32,
    /// Requests in flight from connections with a verified client certificate; past it a
    /// request is refused at once.
    pub max_in_flight: u32,
    /// What peers without a client certificate may hold, apart from those with one.
    pub without_certificate: WithoutCertificate,
    /// How long a peer may take to send a request's body (on HTTP/1.1, its headers too).
    pub body_timeout: Duration,
    /// How long a request may take from its headers to its response (≥ `body_timeout`).
    pub request_timeout: Duration,
    /// TLS handshakes in progress at once from one address (an IPv6 /64 counts as one); more
    /// wait their turn. 0: no per-address limit.
    pub max_handshakes_per_address: u32,
    /// `max_handshakes_per_address` for addresses in these ranges instead (most specific
    /// range first; 0: no per-address limit there).
    pub max_handshakes_per_address_in: Vec<(ipnet::IpNet, u32)>,
    /// A watch stream whose reader takes nothing for this long is ended with its connection.
    pub watch_stall_timeout: Duration,
}

/// `[server]` limits for connections without a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WithoutCertificate {
    /// Requests in flight from such connections (a pool of their own).
    pub max_in_flight: u32,
    /// HTTP/2 streams at once on one.
    pub max_streams: u32,
    /// Such connections open at once (one address: a sixteenth).
    pub max_connections: u32,
    /// One with no request open this long is closed.
    pub idle_timeout: Duration,
}

/// `[tls]`: the server's certificate and the CA its clients authenticate with (resolved paths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA that client certificates must chain to (PEM).
    pub client_ca: PathBuf,
    /// Certificate revocation lists (PEM) for CA-issued client certificates (resolved paths).
    pub client_crls: Vec<PathBuf>,
    /// How often the files are checked for a change (they are also reloaded on `SIGHUP`).
    pub reload_interval: Duration,
}

/// Where the store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite database file (resolved path), from `sqlite://PATH` or `sqlite:PATH`.
    Sqlite(PathBuf),
    /// A PostgreSQL URL, as written (`postgres://…` or `postgresql://…`). It may hold a
    /// password, so `Debug` redacts it.
    Postgres(String),
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreUrl::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
        }
    }
}

/// `url` with the password of its user info and its whole query replaced by `***`.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None => return "***".to_owned(),
    };
    let (before_query, has_query) = match rest.split_once('?') {
        Some((before, _)) => (before, true),
        None => (rest, false),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((authority, path)) => (authority, Some(path)),
        None => (before_query, None),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}");
    if let Some(path) = path {
        out.push('/');
        out.push_str(path);
    }
    if has_query {
        out.push_str("?***");
    }
    out
}

/// `[store]`: the store and how stale this replica's view of it may get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Which store.
    pub url: StoreUrl,
    /// Past this since the last successful catch-up, introspection and watches answer
    /// `UNAVAILABLE`.
    pub max_staleness: Duration,
    /// How often a replica catches up with the store (< `max_staleness` / 2).
    pub catch_up_interval: Duration,
    /// Past this since the last successful catch-up, issuance answers `UNAVAILABLE` too
    /// (< `keys.retention` − `tokens.max_lifetime` − `tokens.leeway`).
    pub max_issue_staleness: Duration,
}

/// `[keys]`: signing-key rotation and the KEKs that wrap keys at rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeysConfig {
    /// Where the private halves are held (`keys.custody`, with `[pkcs11]`).
    pub custody: KeyCustody,
    /// The default algorithm: of tokens for audiences not in `audience_algorithms`.
    pub algorithm: Algorithm,
    /// The other algorithms that sign (`keys.also`), each with its own current and next key.
    pub also: AlgorithmSet,
    /// The size of new RSA keys (`keys.rsa_bits`: 2048 or 3072).
    pub rsa_bits: RsaBits,
    /// The algorithm each listed audience's tokens are signed with
    /// (`keys.audience_algorithms`), with the default.
    pub signing: SigningChoice,
    /// How often `next` is promoted to `current` (> `publish_ahead`).
    pub rotation_period: Duration,
    /// `WatchJwks` streams open at once.
    pub max_jwks_watches: u32,
    /// How long a key is published before it signs (≥ 2 × `jwks_max_age`).
    pub publish_ahead: Duration,
    /// `Cache-Control: max-age` of the JWKS.
    pub jwks_max_age: Duration,
    /// How long a retired key stays published (≥ `tokens.max_lifetime` + `tokens.leeway`).
    pub retention: Duration,
    /// KEK files, newest first (resolved paths); empty only when `kek_from_env`.
    pub kek_files: Vec<PathBuf>,
}

/// `[admin]`: an optional separate listener for `AdminService`, with its own client CA, for
/// deployments that keep the admin plane off the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the admin listener binds (`None`: off, `AdminService` is on the main listener).
    pub listen: Option<SocketAddr>,
    /// The CA admin client certificates must chain to (PEM); pins are not accepted there.
    pub client_ca: PathBuf,
    /// Revocation lists (PEM) for the admin client certificates.
    pub client_crls: Vec<PathBuf>,
}

/// `[audit]`: how much issuance is audited, and how long audit events are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// `issuance` (`"counts"`, `"sampled"`, `"every"` or `"off"`) with `issuance_interval` or
    /// `issuance_sample`.
    pub issuance: tokenmint_core::audit::IssuanceMode,
    /// Stored audit events older than this are removed (at each revocation purge).
    pub retention: Duration,
}

/// `[limits]`: per-client token buckets on issuance, off unless configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Tokens per second each client may get (0: no limit).
    pub issue_per_second: u32,
    /// How many it may get at once (0 in the file: the highest rate set).
    pub issue_burst: u32,
    /// Per-client rates in place of `issue_per_second` (0: no limit for that client).
    pub issue_per_client: std::collections::BTreeMap<String, u32>,
}

/// `[revocation]`: the caps on live revocations and how often expired ones are purged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationConfig {
    /// Live revoked tokens in all (clients may fill 90%; the rest is the admins' reserve).
    pub max_live: u64,
    /// Live revocations a client may make of its own tokens.
    pub per_client_max_live: u64,
    /// Revocations per second a client may make of its own tokens.
    pub per_client_rate: u32,
    /// How often expired revocations and old log entries are removed.
    pub purge_interval: Duration,
    /// `WatchRevocations` streams open at once, in all.
    pub max_watches: u32,
    /// `WatchRevocations` streams one client may hold open (one per resource-server
    /// instance of a fleet).
    pub max_watches_per_client: u32,
}

/// `[tokens]`: global token lifetimes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokensConfig {
    /// Lifetime of a token when the request names none (> 0, ≤ `max_lifetime`).
    pub default_lifetime: Duration,
    /// The global ceiling of token lifetimes (> 0).
    pub max_lifetime: Duration,
    /// Clock skew tolerated when checking `exp`/`nbf`/`iat` (≤ 5m).
    pub leeway: Duration,
    /// The most token exchanges behind one token (1–16): bounds delegation chains.
    pub max_exchange_depth: u32,
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

impl Config {
    /// Under `serve --dev`: an issuer and an operations listener still at their defaults
    /// follow a `server.listen` moved off the default port — the issuer becomes
    /// `https://localhost:<port>`, the operations port `<port> + 1021` (9464 for 8443) — so a
    /// second development instance needs only its port.
    pub fn dev_following_listen(mut self) -> Self {
        let port = self.server.listen.port();
        let default_port = DEFAULT_LISTEN
            .parse::<SocketAddr>()
            .map_or(8443, |a| a.port());
        if port == default_port {
            return self;
        }
        if self.server.issuer == DEFAULT_ISSUER {
            self.server.issuer = format!("https://localhost:{port}");
        }
        let default_ops = DEFAULT_OPS_LISTEN.parse::<SocketAddr>().ok();
        if let (Some(ops), Some(default_ops)) = (self.server.ops_listen, default_ops)
            && ops == default_ops
        {
            let offset = default_ops.port() - default_port;
            let ops_port = port.checked_add(offset).unwrap_or(0);
            self.server.ops_listen = Some(SocketAddr::new(ops.ip(), ops_port));
        }
        self
    }
}

impl Config {
    /// Reads and validates `path`, with overrides from `env` (e.g. `std::env::vars()` collected).
    ///
    /// Relative paths in the file are resolved against the file's directory.
    ///
    /// # Errors
    /// [`ConfigError::Read`] if the file cannot be read; otherwise as
    /// [`Config::from_toml_str`].
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            file: path.to_path_buf(),
            error,
        })?;
        // Resolve against an absolute directory so the paths stay right whatever the
        // process's working directory later becomes; fall back to the path as given.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base_dir = absolute.parent().unwrap_or(Path::new(""));
        Config::from_toml_str(&text, path, base_dir, env)
    }

    /// Parses and validates text (`base_dir` resolves relative paths; `source` is the name used in messages).
    ///
    /// `env` is the whole environment: variables named `TOKENMINT__<SECTION>__<KEY>` override
    /// that key (section and key case-insensitive), `TOKENMINT_KEK` sets
    /// [`Config::kek_from_env`], every other variable is ignored.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML, an unknown key or a value of the wrong type in
    /// the file; [`ConfigError::Env`] for a malformed or unknown override;
    /// [`ConfigError::Invalid`] for a value or combination of values that breaks a rule.
    pub fn from_toml_str(
        text: &str,
        source: &Path,
        base_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_error = |error| ConfigError::Parse {
            file: source.to_path_buf(),
            error,
        };
        // The file alone first, so its mistakes are reported with toml's line numbers.
        let from_file: FileConfig = toml::from_str(text).map_err(parse_error)?;
        let env = EnvOverrides::read(env)?;
        let file = if env.overrides.is_empty() {
            from_file
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(parse_error)?;
            env.apply(&mut table)?;
            table
                .try_into()
                .map_err(|error: toml::de::Error| ConfigError::Env {
                    var: env.var_names(),
                    message: format!("{}: fix or unset the variable", error.message().trim_end()),
                })?
        };
        let validator = Validator {
            file: source,
            base_dir,
            env_vars: env
                .overrides
                .iter()
                .map(|((section, key), o)| (format!("{section}.{key}"), o.var.clone()))
                .collect(),
        };
        validator.validate(file, env.kek_from_env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "tokenmint.toml";
    const BASE: &str = "/etc/tokenmint";

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new(FILE), Path::new(BASE), env(vars))
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        load_env(text, &[])
    }

    /// Loads `text`, expects an error, and checks that its message names every one of `needles`.
    #[track_caller]
    fn refused(text: &str, needles: &[&str]) -> ConfigError {
        refused_env(text, &[], needles)
    }

    #[track_caller]
    fn refused_env(text: &str, vars: &[(&str, &str)], needles: &[&str]) -> ConfigError {
        match load_env(text, vars) {
            Ok(config) => panic!("expected an error naming {needles:?}, got {config:?}"),
            Err(e) => {
                let message = e.to_string();
                for needle in needles {
                    assert!(
                        message.contains(needle),
                        "{message:?} does not contain {needle:?}"
                    );
                }
                e
            }
        }
    }

    #[track_caller]
    fn invalid_field(e: &ConfigError) -> &str {
        match e {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("expected ConfigError::Invalid, got {other:?}"),
        }
    }

    const CLIENT: &str = r#"
[[clients]]
id = "demo"
san_uri = "spiffe://tokenmint.dev/demo"
scopes = ["demo:read", "demo:write"]
audiences = ["https://demo.tokenmint.dev"]
"#;

    fn with_client(extra: &str) -> String {
        format!("{CLIENT}{extra}")
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = load("").unwrap();
        assert_eq!(
            c.server.listen,
            "127.0.0.1:8443".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.server.issuer, "https://localhost:8443");
        assert_eq!(c.server.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.tls.cert, PathBuf::from("/etc/tokenmint/certs/server.pem"));
        assert_eq!(c.tls.key, PathBuf::from("/etc/tokenmint/certs/server.key"));
        assert_eq!(
            c.tls.client_ca,
            PathBuf::from("/etc/tokenmint/certs/ca.pem")
        );
        assert_eq!(
            c.store.url,
            StoreUrl::Sqlite(PathBuf::from("/etc/tokenmint/tokenmint.db"))
        );
        assert_eq!(c.store.max_staleness, Duration::from_secs(5));
        assert_eq!(c.store.catch_up_interval, Duration::from_secs(1));
        assert_eq!(c.store.max_issue_staleness, Duration::from_secs(300));
        assert_eq!(c.keys.algorithm, Algorithm::Es256);
        assert_eq!(c.keys.rotation_period, Duration::from_secs(24 * 3600));
        assert_eq!(c.keys.publish_ahead, Duration::from_secs(3600));
        assert_eq!(c.keys.jwks_max_age, Duration::from_secs(300));
        assert_eq!(c.keys.retention, Duration::from_secs(7200));
        assert_eq!(
            c.keys.kek_files,
            vec![PathBuf::from("/etc/tokenmint/tokenmint.kek")]
        );
        assert_eq!(c.tokens.default_lifetime, Duration::from_secs(300));
        assert_eq!(c.tokens.max_lifetime, Duration::from_secs(3600));
        assert_eq!(c.tokens.leeway, Duration::from_secs(30));
        assert!(c.clients.is_empty());
        assert!(!c.kek_from_env);
        assert_eq!(c.source, PathBuf::from(FILE));
    }

    #[test]
    fn starter_toml_loads_with_the_defaults_and_its_three_clients() {
        let starter = load(&starter_toml()).unwrap();
        let defaults = load("").unwrap();
        assert_eq!(starter.server, defaults.server);
        assert_eq!(starter.tls, defaults.tls);
        assert_eq!(starter.store, defaults.store);
        assert_eq!(starter.keys, defaults.keys);
        assert_eq!(starter.tokens, defaults.tokens);

        let [demo, admin, resource] = starter.clients.as_slice() else {
            panic!("expected three clients, got {:?}", starter.clients);
        };
        assert_eq!(demo.id.as_str(), "demo");
        assert_eq!(
            demo.matcher,
            tokenmint_core::identity::CertificateMatcher::try_san_uri(
                "spiffe://tokenmint.dev/demo"
            )
            .unwrap()
        );
        assert_eq!(demo.scopes, ["demo:read"]);
        assert_eq!(demo.default_audiences, ["https://demo.tokenmint.dev"]);
        assert_eq!(demo.permissions, [Permission::Issue]);
        assert!(demo.enabled);
        assert_eq!(admin.id.as_str(), "admin");
        assert_eq!(
            admin.matcher,
            tokenmint_core::identity::CertificateMatcher::try_san_uri(
                "spiffe://tokenmint.dev/admin"
            )
            .unwrap()
        );
        assert!(admin.scopes.is_empty());
        assert_eq!(admin.permissions, Permission::ALL);
        assert_eq!(resource.id.as_str(), "demo-resource");
        assert_eq!(
            resource.matcher,
            tokenmint_core::identity::CertificateMatcher::try_san_uri(
                "spiffe://tokenmint.dev/demo-resource"
            )
            .unwrap()
        );
        assert!(resource.scopes.is_empty() && resource.audiences.is_empty());
        assert_eq!(resource.permissions, [Permission::Introspect]);
        assert_eq!(
            resource.introspect_audiences,
            ["https://demo.tokenmint.dev"]
        );
        assert!(resource.enabled);
    }

    #[test]
    fn the_resource_client_block_is_the_starter_files_last_and_is_found_missing_elsewhere() {
        assert!(starter_toml().ends_with(resource_client_toml()));
        assert!(!lacks_client(&starter_toml(), "demo-resource"));
        let without = starter_toml().replace(resource_client_toml(), "");
        assert!(lacks_client(&without, "demo-resource"));
        assert!(!lacks_client(&without, "demo"));
        assert!(lacks_client("", "demo-resource"));
        assert!(
            !lacks_client("[[clients]\nid =", "demo-resource"),
            "not TOML: no opinion"
        );
    }

    #[test]
    fn audit_is_counts_per_minute_by_default_and_bad_settings_are_named() {
        use tokenmint_core::audit::IssuanceMode;
        let c = load("").unwrap();
        assert_eq!(
            c.audit.issuance,
            IssuanceMode::Counts {
                interval: Duration::from_secs(60)
            }
        );
        assert_eq!(c.audit.retention, Duration::from_secs(400 * 24 * 3600));
        let c = load("[audit]\nissuance = \"sampled\"\nissuance_sample = 10").unwrap();
        assert_eq!(c.audit.issuance, IssuanceMode::Sampled { one_in: 10 });
        assert_eq!(
            load("[audit]\nissuance = \"every\"")
                .unwrap()
                .audit
                .issuance,
            IssuanceMode::Every
        );
        refused("[audit]\nissuance = \"all\"", &["audit.issuance", "counts"]);
        refused(
            "[audit]\nissuance = \"sampled\"\nissuance_sample = 1",
            &["audit.issuance_sample", "at least 2"],
        );
        refused(
            "[audit]\nissuance_interval = \"0s\"",
            &["audit.issuance_interval", "greater than 0"],
        );
        // Checked even where the mode does not use it.
        refused(
            "[audit]\nissuance = \"every\"\nissuance_sample = 0",
            &["audit.issuance_sample"],
        );
        refused(
            "[audit]\nissuance = \"off\"\nissuance_interval = \"soon\"",
            &["audit.issuance_interval"],
        );
        refused("[audit]\nretention = \"a year\"", &["audit.retention"]);
        refused("[audit]\nkeep = \"1d\"", &["keep"]);
    }

    #[test]
    fn the_admin_listener_is_off_by_default_and_checked_when_set() {
        let c = load("").unwrap();
        assert_eq!(c.admin.listen, None);
        assert_eq!(c.admin.client_ca, c.tls.client_ca);
        refused(
            "[admin]\nlisten = \"127.0.0.1:8444\"",
            &["admin.client_ca", "required"],
        );
        let c = load("[admin]\nlisten = \"127.0.0.1:8444\"\nclient_ca = \"admin-ca.pem\"").unwrap();
        assert_eq!(c.admin.listen, Some("127.0.0.1:8444".parse().unwrap()));
        assert!(c.admin.client_ca.ends_with("admin-ca.pem"));
        refused(
            "[admin]\nlisten = \"localhost\"",
            &["admin.listen", "IP:PORT"],
        );
        refused(
            "[server]\nlisten = \"127.0.0.1:8443\"\n[admin]\nlisten = \"0.0.0.0:8443\"\nclient_ca = \"a.pem\"",
            &["admin.listen", "its own port"],
        );
    }

    #[test]
    fn a_client_names_the_audiences_it_serves_and_whom_it_may_act_for() {
        let c = load(&format!(
            "{CLIENT}serves = [\"https://demo.tokenmint.dev\"]\nact_for = [\"web\", \"*\"]\ndelegate_audiences = [\"https://demo.tokenmint.dev\"]\ndelegate_scopes = [\"demo:read\"]\nasserts_txn_subjects = true\n"
        ))
        .unwrap();
        let exchange = &c.clients[0].exchange;
        assert_eq!(exchange.serves, ["https://demo.tokenmint.dev"]);
        assert_eq!(exchange.act_for, ["web", "*"]);
        assert_eq!(exchange.delegate_audiences, ["https://demo.tokenmint.dev"]);
        assert_eq!(exchange.delegate_scopes, ["demo:read"]);
        assert!(exchange.asserts_txn_subjects);
        let plain = load(CLIENT).unwrap();
        assert!(
            !plain.clients[0].exchange.asserts_txn_subjects,
            "never by default"
        );
        refused(
            &format!("{CLIENT}act_for = [\"web\"]\ndelegate_audiences = [\"https://x.example\"]\n"),
            &["clients[0].delegate_audiences", "not in audiences"],
        );
    }

    const PKCS11: &str = "[keys]\ncustody = \"pkcs11\"\n[pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"hsm-1\"\n";

    #[test]
    fn pkcs11_custody_names_its_token_and_reads_the_pin_from_the_environment_by_default() {
        let c = load(PKCS11).unwrap();
        let KeyCustody::Pkcs11(p) = &c.keys.custody else {
            panic!("{:?}", c.keys.custody)
        };
        assert_eq!(p.module, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(p.token, Pkcs11Token::Label("hsm-1".into()));
        assert_eq!(p.pin, PinSource::Env(DEFAULT_PIN_ENV.into()));
        assert_eq!(p.sessions, None);
        assert_eq!(load("").unwrap().keys.custody, KeyCustody::Sealed);
        // A PIN file, resolved against the config's directory; a serial; more sessions.
        let c = load_env(
            "[keys]\ncustody = \"pkcs11\"\n[pkcs11]\nmodule = \"m.so\"\ntoken_serial = \"8e7e\"\npin_file = \"pin\"",
            &[("TOKENMINT__PKCS11__SESSIONS", "16")],
        )
        .unwrap();
        let KeyCustody::Pkcs11(p) = &c.keys.custody else {
            panic!()
        };
        assert_eq!(p.token, Pkcs11Token::Serial("8e7e".into()));
        assert_eq!(p.pin, PinSource::File(Path::new(BASE).join("pin")));
        assert_eq!(p.sessions, Some(16));
    }

    #[test]
    fn pkcs11_custody_refuses_what_is_missing_doubled_or_misplaced() {
        refused("[keys]\ncustody = \"pkcs11\"", &["pkcs11.module"]);
        refused(
            "[keys]\ncustody = \"kms\"",
            &["keys.custody", "\"sealed\"", "\"pkcs11\""],
        );
        refused(
            &format!("{PKCS11}token_serial = \"1\""),
            &["exactly one of pkcs11.token_label and pkcs11.token_serial"],
        );
        refused(
            &format!("{PKCS11}pin_file = \"p\"\npin_env = \"P\""),
            &["not both"],
        );
        refused(&format!("{PKCS11}pin_env = \"A-B\""), &["pkcs11.pin_env"]);
        refused(
            &format!("{PKCS11}sessions = 0"),
            &["pkcs11.sessions", "1 to 256"],
        );
        // The PIN itself is not a key the file may hold, and it is not echoed.
        let e = refused(
            &format!("{PKCS11}pin = \"8231\""),
            &["pkcs11.pin", "pin_file"],
        );
        assert!(!e.to_string().contains("8231"), "{e}");
        let e = refused(&format!("{PKCS11}pin = 8231"), &["pkcs11.pin"]);
        assert!(!e.to_string().contains("8231"), "{e}");
        // [pkcs11] beside sealed custody is a mistake, not ignored.
        refused(
            "[pkcs11]\nmodule = \"m.so\"\ntoken_label = \"t\"",
            &["[pkcs11] is set", "keys.custody"],
        );
        // Keys in a token: no ML-DSA there; RSA in either build (the token makes the keys).
        refused(
            &PKCS11.replace("custody", "also = [\"ML-DSA-65\"]\ncustody"),
            &["keys.also[0]", "PKCS#11 token"],
        );
        let rsa = load(&PKCS11.replace("custody", "algorithm = \"RS256\"\ncustody")).unwrap();
        assert_eq!(rsa.keys.algorithm, Algorithm::Rs256);
    }

    #[test]
    fn starter_toml_writes_every_key_an_override_may_address() {
        let starter = starter_toml();
        let table: toml::Table = toml::from_str(&starter).unwrap();
        for (section, keys) in SECTIONS {
            // [pkcs11] is refused beside the starter's sealed custody, and [txn_tokens] is off
            // until set: each is written as comments, every key named.
            if *section == "pkcs11" || *section == "txn_tokens" {
                for key in *keys {
                    assert!(
                        starter.contains(&format!("\n# {key} = ")),
                        "[{section}] {key}"
                    );
                }
                continue;
            }
            let written = table[*section].as_table().unwrap();
            let mut written: Vec<&str> = written.keys().map(String::as_str).collect();
            // A key whose default comes from another section (authz.trust_domain) is named in
            // a comment instead.
            let commented: Vec<&str> = keys
                .iter()
                .copied()
                .filter(|k| !written.contains(k) && starter.contains(&format!("\n# {k} = ")))
                .collect();
            written.extend(commented);
            let mut known = keys.to_vec();
            written.sort_unstable();
            known.sort_unstable();
            assert_eq!(written, known, "[{section}]");
        }
    }

    #[test]
    fn client_defaults_are_filled_in() {
        let c = load(&with_client("")).unwrap();
        let demo = &c.clients[0];
        assert_eq!(demo.default_scopes, ["demo:read", "demo:write"]);
        assert_eq!(demo.default_audiences, ["https://demo.tokenmint.dev"]);
        assert_eq!(demo.permissions, [Permission::Issue]);
        assert_eq!(demo.max_lifetime, Duration::from_secs(3600));
        assert_eq!(demo.default_lifetime, Duration::from_secs(300));
        assert!(demo.enabled);

        // Several audiences: no default audience. A short max lifetime caps the default.
        let c = load(
            r#"
[[clients]]
id = "two"
san_dns = "two.example.com"
audiences = ["a", "b"]
max_lifetime = "1m"
enabled = false
"#,
        )
        .unwrap();
        let two = &c.clients[0];
        assert_eq!(
            two.matcher,
            tokenmint_core::identity::CertificateMatcher::try_san_dns("two.example.com").unwrap()
        );
        assert!(two.default_audiences.is_empty());
        assert_eq!(two.max_lifetime, Duration::from_secs(60));
        assert_eq!(two.default_lifetime, Duration::from_secs(60));
        assert!(!two.enabled);
    }

    #[test]
    fn bad_listen_is_refused() {
        let e = refused(
            "[server]\nlisten = \"localhost\"",
            &["server.listen", "localhost", "IP:PORT"],
        );
        assert_eq!(invalid_field(&e), "server.listen");
    }

    #[test]
    fn bad_issuer_is_refused() {
        for issuer in [
            "http://localhost:8443",
            "https://localhost:8443/",
            "https://localhost:8443?x=1",
            "https://localhost:8443#f",
            "https://",
            "localhost",
        ] {
            let e = refused(
                &format!("[server]\nissuer = \"{issuer}\""),
                &["server.issuer", "https"],
            );
            assert_eq!(invalid_field(&e), "server.issuer");
        }
        let c = load("[server]\nissuer = \"https://auth.example.com/tenant\"").unwrap();
        assert_eq!(c.server.issuer, "https://auth.example.com/tenant");
    }

    #[test]
    fn issuance_limits_are_off_by_default_and_read_globally_or_per_client() {
        let c = load("").unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.server.ops_listen, Some("127.0.0.1:9464".parse().unwrap()));
        let c =
            load("[limits]\nissue_per_second = 20\nissue_per_client = { demo = 50, batch = 0 }")
                .unwrap();
        assert_eq!(c.limits.issue_per_second, 20);
        assert_eq!(
            c.limits.issue_burst, 50,
            "the burst defaults to the highest rate"
        );
        assert_eq!(c.limits.issue_per_client.get("batch"), Some(&0));
        let c = load("[limits]\nissue_per_second = 5\nissue_burst = 0").unwrap();
        assert_eq!(c.limits.issue_burst, 5);
        let c = load_env("", &[("TOKENMINT__LIMITS__ISSUE_PER_SECOND", "7")]).unwrap();
        assert_eq!((c.limits.issue_per_second, c.limits.issue_burst), (7, 7));
        let c = load("[server]\nops_listen = \"off\"").unwrap();
        assert_eq!(c.server.ops_listen, None);
        refused(
            "[server]\nops_listen = \"nowhere\"",
            &["server.ops_listen", "off"],
        );
    }

    #[test]
    fn handshake_timeout_is_bounded() {
        refused(
            "[server]\nhandshake_timeout = \"6m\"",
            &["server.handshake_timeout", "5m"],
        );
        refused(
            "[server]\nhandshake_timeout = \"0s\"",
            &["server.handshake_timeout", "greater than 0"],
        );
    }

    #[test]
    fn bad_algorithm_is_refused_listing_the_allowed_ones() {
        let e = refused(
            "[keys]\nalgorithm = \"es256\"",
            &["keys.algorithm", "es256", "ES256", "EdDSA"],
        );
        assert_eq!(invalid_field(&e), "keys.algorithm");
        let c = load("[keys]\nalgorithm = \"EdDSA\"").unwrap();
        assert_eq!(c.keys.algorithm, Algorithm::EdDsa);
    }

    #[test]
    fn several_algorithms_by_audience_and_only_those_this_build_has() {
        let text = "[keys]\nalgorithm = \"EdDSA\"\nalso = [\"RS256\", \"ML-DSA-65\"]\n\
                    rsa_bits = 3072\naudience_algorithms = { \"aws\" = \"RS256\" }";
        if tokenmint_core::crypto::stack()
            .supports(Algorithm::Rs256)
            .is_ok()
        {
            let c = load(text).unwrap();
            assert_eq!(
                c.keys.also.iter().collect::<Vec<_>>(),
                [Algorithm::Rs256, Algorithm::MlDsa65]
            );
            assert_eq!(c.keys.rsa_bits, RsaBits::B3072);
            assert_eq!(c.keys.signing.default, Algorithm::EdDsa);
            assert_eq!(c.keys.signing.by_audience["aws"], Algorithm::Rs256);
            // An audience may only name an algorithm that signs.
            let e = refused(
                "[keys]\naudience_algorithms = { \"aws\" = \"PS256\" }",
                &["keys.audience_algorithms", "PS256", "keys.also"],
            );
            assert!(invalid_field(&e).starts_with("keys.audience_algorithms"));
        } else {
            // The ring build: a start-up error naming the feature that has them.
            refused(text, &["keys.also[0]", "RS256", "--features aws-lc"]);
        }
        refused(
            "[keys]\nrsa_bits = 4096",
            &["keys.rsa_bits", "2048 or 3072", "4096"],
        );
        refused(
            "[keys]\nalso = [\"HS256\"]",
            &["keys.also[0]", "HS256", "ML-DSA-65"],
        );
        if tokenmint_core::crypto::stack()
            .supports(Algorithm::MlDsa65)
            .is_ok()
        {
            refused(
                "[keys]\nalgorithm = \"ML-DSA-65\"",
                &["keys.algorithm", "cannot be the default", "keys.also"],
            );
        }
        // The same settings as TOKENMINT__KEYS__* overrides (what benches/algorithms.sh sets).
        let from_env = load_env(
            "",
            &[
                ("TOKENMINT__KEYS__ALSO", "[\"EdDSA\"]"),
                ("TOKENMINT__KEYS__RSA_BITS", "3072"),
                (
                    "TOKENMINT__KEYS__AUDIENCE_ALGORITHMS",
                    "{ \"aws\" = \"EdDSA\" }",
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            from_env.keys.also,
            AlgorithmSet::EMPTY.with(Algorithm::EdDsa)
        );
        assert_eq!(from_env.keys.rsa_bits, RsaBits::B3072);
        assert_eq!(from_env.keys.signing.by_audience["aws"], Algorithm::EdDsa);
        let plain = load("").unwrap();
        assert_eq!(plain.keys.also, AlgorithmSet::EMPTY);
        assert_eq!(plain.keys.signing.default, Algorithm::Es256);
    }

    #[test]
    fn publish_ahead_below_twice_jwks_max_age_is_refused() {
        let e = refused(
            "[keys]\npublish_ahead = \"9m\"\njwks_max_age = \"5m\"",
            &[
                "keys.publish_ahead (9m)",
                "2 × keys.jwks_max_age",
                "10m",
                "raise publish_ahead",
            ],
        );
        assert_eq!(invalid_field(&e), "keys.publish_ahead");
        // Exactly twice is fine.
        load("[keys]\npublish_ahead = \"10m\"\njwks_max_age = \"5m\"").unwrap();
    }

    #[test]
    fn retention_below_max_lifetime_plus_leeway_is_refused() {
        let e = refused(
            "[keys]\nretention = \"1h\"",
            &[
                "keys.retention (1h)",
                "tokens.max_lifetime + tokens.leeway",
                "1h 30s",
            ],
        );
        assert_eq!(invalid_field(&e), "keys.retention");
    }

    #[test]
    fn rotation_period_not_above_publish_ahead_is_refused() {
        let e = refused(
            "[keys]\nrotation_period = \"1h\"",
            &["keys.rotation_period", "keys.publish_ahead"],
        );
        assert_eq!(invalid_field(&e), "keys.rotation_period");
    }

    #[test]
    fn catch_up_interval_not_below_half_max_staleness_is_refused() {
        let e = refused(
            "[store]\ncatch_up_interval = \"3s\"",
            &[
                "store.catch_up_interval (3s)",
                "store.max_staleness",
                "2s 500ms",
            ],
        );
        assert_eq!(invalid_field(&e), "store.catch_up_interval");
    }

    #[test]
    fn max_issue_staleness_must_leave_room_in_retention() {
        // 2h - 1h - 30s = 59m 30s.
        let e = refused(
            "[store]\nmax_issue_staleness = \"1h\"",
            &[
                "store.max_issue_staleness (1h)",
                "keys.retention",
                "59m 30s",
            ],
        );
        assert_eq!(invalid_field(&e), "store.max_issue_staleness");
        load("[store]\nmax_issue_staleness = \"59m\"").unwrap();
    }

    #[test]
    fn default_lifetime_above_max_lifetime_is_refused() {
        let e = refused(
            "[tokens]\ndefault_lifetime = \"2h\"\n[keys]\nretention = \"3h\"",
            &["tokens.default_lifetime (2h)", "tokens.max_lifetime (1h)"],
        );
        assert_eq!(invalid_field(&e), "tokens.default_lifetime");
    }

    #[test]
    fn leeway_above_five_minutes_is_refused() {
        refused("[tokens]\nleeway = \"6m\"", &["tokens.leeway"]);
        for depth in ["0", "17"] {
            refused(
                &format!("[tokens]\nmax_exchange_depth = {depth}"),
                &["tokens.max_exchange_depth", "from 1 to 16"],
            );
        }
    }

    #[test]
    fn unparsable_duration_names_the_field() {
        let e = refused(
            "[keys]\nretention = \"5 parsecs\"",
            &["keys.retention", "5 parsecs", "\"5m\""],
        );
        assert_eq!(invalid_field(&e), "keys.retention");
        refused(
            &with_client("max_lifetime = \"soon\""),
            &["clients[0].max_lifetime", "soon"],
        );
    }

    #[test]
    fn client_with_two_matchers_is_refused() {
        let e = refused(
            &with_client("san_dns = \"demo.example.com\""),
            &["clients[0]", "san_uri and san_dns", "exactly one"],
        );
        assert_eq!(invalid_field(&e), "clients[0]");
    }

    #[test]
    fn client_without_matcher_is_refused() {
        refused(
            "[[clients]]\nid = \"x\"",
            &[
                "clients[0]",
                "\"x\"",
                "san_uri, san_dns, subject_dn or pinned_sha256",
            ],
        );
        refused(
            "[[clients]]\nid = \"x\"\nsubject_dn = \" \"",
            &["clients[0].subject_dn", "empty"],
        );
    }

    #[test]
    fn client_id_is_required_and_checked() {
        refused(
            "[[clients]]\nsan_uri = \"spiffe://x\"",
            &["clients[0].id", "missing"],
        );
        refused(
            "[[clients]]\nid = \"a b\"\nsan_uri = \"spiffe://x\"",
            &["clients[0].id", "`a b`"],
        );
        refused(
            &format!(
                "[[clients]]\nid = \"{}\"\nsan_uri = \"spiffe://x\"",
                "a".repeat(129)
            ),
            &["clients[0].id", "too long"],
        );
        load(&format!(
            "[[clients]]\nid = \"{}\"\nsan_uri = \"spiffe://x\"",
            "Az09._:-".repeat(16)
        ))
        .unwrap();
    }

    #[test]
    fn duplicate_client_id_is_refused() {
        let e = refused(
            &format!("{CLIENT}{CLIENT}"),
            &["clients[1].id", "`demo`", "clients[0]", "unique"],
        );
        assert_eq!(invalid_field(&e), "clients[1].id");
    }

    #[test]
    fn bad_permission_is_refused() {
        let e = refused(
            &with_client("permissions = [\"issue\", \"root\"]"),
            &[
                "clients[0].permissions",
                "`root`",
                "issue, introspect, admin",
            ],
        );
        assert_eq!(invalid_field(&e), "clients[0].permissions");
    }

    #[test]
    fn default_scopes_must_be_a_subset_of_scopes() {
        let e = refused(
            &with_client("default_scopes = [\"demo:admin\"]"),
            &["clients[0].default_scopes", "demo:admin", "not in scopes"],
        );
        assert_eq!(invalid_field(&e), "clients[0].default_scopes");
        let c = load(&with_client("default_scopes = []")).unwrap();
        assert!(c.clients[0].default_scopes.is_empty());
    }

    #[test]
    fn default_audiences_must_be_a_subset_of_audiences() {
        refused(
            &with_client("default_audiences = [\"https://other\"]"),
            &["clients[0].default_audiences", "not in audiences"],
        );
    }

    #[test]
    fn a_malformed_certificate_identity_is_refused_when_the_file_is_read() {
        // Not only at serve: check-config sees it too.
        let e = refused(
            "[[clients]]\nid = \"x\"\nsan_uri = \"s\"",
            &["clients[0].san_uri", "(client \"x\")", "absolute"],
        );
        assert_eq!(invalid_field(&e), "clients[0].san_uri");
    }

    #[test]
    fn bad_scope_and_audience_are_refused() {
        refused(
            "[[clients]]\nid = \"x\"\nsan_uri = \"spiffe://x\"\nscopes = [\"a b\"]",
            &["clients[0].scopes", "`a b`"],
        );
        refused(
            "[[clients]]\nid = \"x\"\nsan_uri = \"spiffe://x\"\nscopes = [\"a\\\\b\"]",
            &["clients[0].scopes"],
        );
        refused(
            "[[clients]]\nid = \"x\"\nsan_uri = \"spiffe://x\"\nscopes = [\"\"]",
            &["clients[0].scopes", "empty"],
        );
        refused(
            "[[clients]]\nid = \"x\"\nsan_uri = \"spiffe://x\"\nscopes = [\"a\", \"a\"]",
            &["clients[0].scopes", "twice"],
        );
        refused(
            "[[clients]]\nid = \"x\"\nsan_uri = \"spiffe://x\"\naudiences = [\"a b\"]",
            &["clients[0].audiences"],
        );
        refused(
            &format!(
                "[[clients]]\nid = \"x\"\nsan_uri = \"spiffe://x\"\naudiences = [\"{}\"]",
                "a".repeat(513)
            ),
            &["clients[0].audiences", "too long"],
        );
    }

    #[test]
    fn client_max_lifetime_above_the_ceiling_is_refused() {
        let e = refused(
            &with_client("max_lifetime = \"2h\""),
            &[
                "clients[0].max_lifetime",
                "\"demo\"",
                "tokens.max_lifetime (1h)",
                "ceiling",
            ],
        );
        assert_eq!(invalid_field(&e), "clients[0].max_lifetime");
    }

    #[test]
    fn client_default_lifetime_above_its_max_is_refused() {
        refused(
            &with_client("max_lifetime = \"10m\"\ndefault_lifetime = \"20m\""),
            &["clients[0].default_lifetime", "10m"],
        );
    }

    #[test]
    fn store_urls() {
        let c = load("[store]\nurl = \"sqlite:data/t.db\"").unwrap();
        assert_eq!(
            c.store.url,
            StoreUrl::Sqlite(PathBuf::from("/etc/tokenmint/data/t.db"))
        );
        let c = load("[store]\nurl = \"sqlite:///var/lib/t.db\"").unwrap();
        assert_eq!(
            c.store.url,
            StoreUrl::Sqlite(PathBuf::from("/var/lib/t.db"))
        );
        let url = "postgres://tm:hunter2@db.example.com/tokenmint?sslmode=require";
        let c = load(&format!("[store]\nurl = \"{url}\"")).unwrap();
        assert_eq!(c.store.url, StoreUrl::Postgres(url.into()));
        let debug = format!("{:?}", c.store.url);
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("db.example.com"), "{debug}");
    }

    #[test]
    fn bad_store_url_is_refused_without_echoing_it() {
        let e = refused(
            "[store]\nurl = \"mysql://root:hunter2@db/x\"",
            &["store.url", "`mysql`", "sqlite://"],
        );
        assert_eq!(invalid_field(&e), "store.url");
        assert!(!e.to_string().contains("hunter2"));
        refused(
            "[store]\nurl = \"tokenmint.db\"",
            &["store.url", "sqlite://"],
        );
        refused(
            "[store]\nurl = \"sqlite://\"",
            &["store.url", "no database file"],
        );
        refused(
            "[store]\nurl = \"sqlite::memory:\"",
            &["store.url", "in-memory"],
        );
    }

    #[test]
    fn unknown_key_in_file_is_refused_naming_it() {
        let e = refused(
            "[server]\nlissen = \"127.0.0.1:1\"",
            &[FILE, "lissen", "line 2", "listen"],
        );
        assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
        refused("[sever]\n", &[FILE, "sever"]);
        refused(&with_client("colour = \"red\""), &[FILE, "colour"]);
    }

    #[test]
    fn wrong_type_in_file_is_refused() {
        refused("[server]\nlisten = 8443", &[FILE, "listen"]);
    }

    #[test]
    fn under_dev_the_issuer_and_ops_port_follow_a_moved_listen_port() {
        let moved = load("[server]\nlisten = \"127.0.0.1:9443\"\n")
            .unwrap()
            .dev_following_listen();
        assert_eq!(moved.server.issuer, "https://localhost:9443");
        assert_eq!(
            moved.server.ops_listen,
            Some("127.0.0.1:10464".parse().unwrap())
        );
        // The default port, or values written on purpose, are left as they are.
        let default = load("").unwrap().dev_following_listen();
        assert_eq!(default.server.issuer, "https://localhost:8443");
        let chosen = load(
            "[server]\nlisten = \"127.0.0.1:9443\"\nissuer = \"https://tm.example\"\nops_listen = \"off\"\n",
        )
        .unwrap()
        .dev_following_listen();
        assert_eq!(chosen.server.issuer, "https://tm.example");
        assert_eq!(chosen.server.ops_listen, None);
    }

    #[test]
    fn availability_limits_are_read_and_checked() {
        let c = load(
            "[server]\nbody_timeout = \"2s\"\nrequest_timeout = \"4s\"\nmax_handshakes_per_address = 8\nmax_handshakes_per_address_in = { \"10.0.0.0/8\" = 0, \"10.1.0.0/16\" = 512 }\n",
        )
        .unwrap();
        assert_eq!(c.server.body_timeout, Duration::from_secs(2));
        assert_eq!(c.server.request_timeout, Duration::from_secs(4));
        assert_eq!(c.server.max_handshakes_per_address, 8);
        // Most specific first.
        let ranges: Vec<(String, u32)> = c
            .server
            .max_handshakes_per_address_in
            .iter()
            .map(|(net, share)| (net.to_string(), *share))
            .collect();
        assert_eq!(
            ranges,
            [
                ("10.1.0.0/16".to_owned(), 512),
                ("10.0.0.0/8".to_owned(), 0)
            ]
        );
        let e = refused(
            "[server]\nbody_timeout = \"40s\"\n",
            &["server.body_timeout", "server.request_timeout"],
        );
        assert_eq!(invalid_field(&e), "server.body_timeout");
        refused(
            "[server]\nrequest_timeout = \"10m\"\n",
            &["server.request_timeout", "5m"],
        );
        refused(
            "[server]\nmax_handshakes_per_address_in = { \"10.0.0/8\" = 1 }\n",
            &["server.max_handshakes_per_address_in", "10.0.0/8", "CIDR"],
        );
        refused(
            "[server]\nmax_handshakes_per_address_in = { \"10.0.0.1/8\" = 1, \"10.0.0.0/8\" = 2 }\n",
            &["10.0.0.0/8", "twice"],
        );
        refused(
            "[server]\nmax_handshakes = 10\nmax_handshakes_per_address = 11\n",
            &["server.max_handshakes_per_address", "server.max_handshakes"],
        );
        refused(
            "[server]\nmax_streams_without_certificate = 0\n",
            &["server.max_streams_without_certificate", "at least 1"],
        );
        refused(
            "[revocation]\nmax_watches = 0\n",
            &["revocation.max_watches"],
        );
    }

    #[test]
    fn env_overrides_a_scalar() {
        let c = load_env(
            "[store]\nurl = \"sqlite://a.db\"",
            &[
                ("TOKENMINT__STORE__URL", "sqlite:///var/lib/b.db"),
                ("tokenmint__ignored", "x"),
                ("TOKENMINT__keys__Algorithm", "EdDSA"),
                ("TOKENMINT__TOKENS__MAX_LIFETIME", "\"30m\""),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.store.url,
            StoreUrl::Sqlite(PathBuf::from("/var/lib/b.db"))
        );
        assert_eq!(c.keys.algorithm, Algorithm::EdDsa);
        assert_eq!(c.tokens.max_lifetime, Duration::from_secs(1800));
    }

    #[test]
    fn env_overrides_an_array() {
        let c = load_env(
            "",
            &[(
                "TOKENMINT__KEYS__KEK_FILES",
                r#"["new.kek", "/keys/old.kek"]"#,
            )],
        )
        .unwrap();
        assert_eq!(
            c.keys.kek_files,
            vec![
                PathBuf::from("/etc/tokenmint/new.kek"),
                PathBuf::from("/keys/old.kek")
            ]
        );
        // A bare string is not a list: refused, naming the variable.
        refused_env(
            "",
            &[("TOKENMINT__KEYS__KEK_FILES", "a.kek")],
            &["TOKENMINT__KEYS__KEK_FILES", "TOML syntax"],
        );
        // So in every section, the sidecar's and the PKCS#11 one's included.
        for (var, value) in [
            ("TOKENMINT__AUTHZ__AUDIENCES", "5"),
            ("TOKENMINT__AUTHZ__TXN_REQUIRED", "/orders"),
            ("TOKENMINT__PKCS11__SESSIONS", "many"),
        ] {
            refused_env("", &[(var, value)], &[var, "TOML syntax"]);
        }
    }

    #[test]
    fn env_override_value_is_validated_naming_the_variable() {
        let e = refused_env(
            "",
            &[("TOKENMINT__KEYS__PUBLISH_AHEAD", "1m")],
            &["keys.publish_ahead (set by TOKENMINT__KEYS__PUBLISH_AHEAD)"],
        );
        assert_eq!(invalid_field(&e), "keys.publish_ahead");
    }

    #[test]
    fn unknown_env_key_is_refused_naming_the_variable() {
        let e = refused_env(
            "",
            &[("TOKENMINT__SERVER__LISSEN", "x")],
            &[
                "TOKENMINT__SERVER__LISSEN",
                "lissen",
                "listen, issuer, handshake_timeout, ops_listen, max_handshakes",
            ],
        );
        assert!(matches!(e, ConfigError::Env { .. }), "{e:?}");
        refused_env(
            "",
            &[("TOKENMINT__SEVER__LISTEN", "x")],
            &["TOKENMINT__SEVER__LISTEN", "sever", "server, tls"],
        );
        refused_env(
            "",
            &[("TOKENMINT__STORE", "x")],
            &["TOKENMINT__STORE", "TOKENMINT__<SECTION>__<KEY>"],
        );
        refused_env("", &[("TOKENMINT__A__B__C", "x")], &["TOKENMINT__A__B__C"]);
        refused_env(
            "",
            &[("TOKENMINT__CLIENTS__ID", "x")],
            &["TOKENMINT__CLIENTS__ID", "[[clients]]"],
        );
        refused_env(
            "",
            &[
                ("TOKENMINT__STORE__URL", "sqlite:a"),
                ("TOKENMINT__store__url", "sqlite:b"),
            ],
            &["TOKENMINT__STORE__URL", "TOKENMINT__store__url"],
        );
    }

    #[test]
    fn empty_kek_files_needs_the_kek_in_the_environment() {
        let text = "[keys]\nkek_files = []";
        let e = refused(text, &["keys.kek_files", "TOKENMINT_KEK"]);
        assert_eq!(invalid_field(&e), "keys.kek_files");
        refused_env(text, &[("TOKENMINT_KEK", "")], &["keys.kek_files"]);
        let c = load_env(text, &[("TOKENMINT_KEK", "c2VjcmV0")]).unwrap();
        assert!(c.kek_from_env);
        assert!(c.keys.kek_files.is_empty());
        // With files listed, the variable is only recorded.
        assert!(
            load_env("", &[("TOKENMINT_KEK", "c2VjcmV0")])
                .unwrap()
                .kek_from_env
        );
    }

    #[test]
    fn relative_paths_are_resolved_against_the_base_dir() {
        let c = load(
            r#"
[tls]
cert = "pki/server.pem"
key = "/secure/server.key"
[keys]
kek_files = ["a.kek", "../b.kek"]
"#,
        )
        .unwrap();
        assert_eq!(c.tls.cert, PathBuf::from("/etc/tokenmint/pki/server.pem"));
        assert_eq!(c.tls.key, PathBuf::from("/secure/server.key"));
        assert_eq!(
            c.tls.client_ca,
            PathBuf::from("/etc/tokenmint/certs/ca.pem")
        );
        assert_eq!(
            c.keys.kek_files,
            vec![
                PathBuf::from("/etc/tokenmint/a.kek"),
                PathBuf::from("/etc/tokenmint/../b.kek")
            ]
        );
    }

    #[test]
    fn load_reads_the_file_and_resolves_against_its_directory() {
        let dir =
            std::env::temp_dir().join(format!("tokenmint-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenmint.toml");
        std::fs::write(&path, starter_toml()).unwrap();
        let c = Config::load(&path, env(&[])).unwrap();
        assert_eq!(c.source, path);
        assert_eq!(c.tls.cert, dir.join("certs/server.pem"));
        std::fs::remove_dir_all(&dir).unwrap();

        let missing = dir.join("missing.toml");
        let e = Config::load(&missing, env(&[])).unwrap_err();
        let message = e.to_string();
        assert!(message.contains("cannot read config file"), "{message}");
        assert!(message.contains("missing.toml"), "{message}");
        assert!(message.contains("tokenmint init"), "{message}");
    }

    #[test]
    fn enum_names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
        }
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(p));
        }
        let e = "Admin".parse::<Permission>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`Admin` is not one of issue, introspect, admin"
        );
    }

    #[test]
    fn transaction_tokens_are_off_until_a_trust_domain_is_set() {
        assert_eq!(load("").unwrap().txn_tokens, None);
        let on = load("[txn_tokens]\ntrust_domain = \"spiffe://example.org\"").unwrap();
        assert_eq!(
            on.txn_tokens,
            Some(TxnTokensConfig {
                trust_domain: "spiffe://example.org".into(),
                lifetime: Duration::from_secs(60),
            })
        );
        let env = load_env(
            "",
            &[
                (
                    "TOKENMINT__TXN_TOKENS__TRUST_DOMAIN",
                    "\"urn:example:payments\"",
                ),
                ("TOKENMINT__TXN_TOKENS__LIFETIME", "\"20s\""),
            ],
        )
        .unwrap();
        assert_eq!(
            env.txn_tokens.map(|t| (t.trust_domain, t.lifetime)),
            Some(("urn:example:payments".into(), Duration::from_secs(20)))
        );
        refused(
            "[txn_tokens]\nlifetime = \"30s\"",
            &["txn_tokens.trust_domain", "is not set"],
        );
        for domain in ["", "example.org", "spiffe://has space", "1ab:x"] {
            refused(
                &format!("[txn_tokens]\ntrust_domain = \"{domain}\""),
                &["txn_tokens.trust_domain", "must be a URI"],
            );
        }
        refused(
            "[txn_tokens]\ntrust_domain = \"urn:x:y\"\nlifetime = \"6m\"",
            &["txn_tokens.lifetime", "at most 5m"],
        );
    }
}
