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

use serde::Deserialize;

use tokenmint_core::client::{Client, ClientDraft, DraftField, IdentityDraft, LifetimeDefaults};
pub use tokenmint_core::{client::Permission, crypto::Algorithm};

/// The prefix of environment overrides: `TOKENMINT__<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "TOKENMINT__";

/// The environment variable that holds a KEK itself (read by the key module, not here;
/// this module only records whether it is set).
pub const KEK_ENV_VAR: &str = "TOKENMINT_KEK";

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
            "algorithm",
            "rotation_period",
            "publish_ahead",
            "jwks_max_age",
            "retention",
            "kek_files",
            "max_jwks_watches",
        ],
    ),
    ("tokens", &["default_lifetime", "max_lifetime", "leeway"]),
    (
        "limits",
        &["issue_per_second", "issue_burst", "issue_per_client"],
    ),
    ("admin", &["listen", "client_ca", "client_crls"]),
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
    /// Algorithm of new keys.
    pub algorithm: Algorithm,
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
}

// ---------------------------------------------------------------------------------------
// The raw file
// ---------------------------------------------------------------------------------------

/// The four durations of `[keys]` that bound one another.
struct KeyTiming {
    jwks_max_age: Duration,
    publish_ahead: Duration,
    rotation_period: Duration,
    retention: Duration,
}

/// The file as written: strings everywhere, nothing checked but the shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    server: FileServer,
    tls: FileTls,
    store: FileStore,
    keys: FileKeys,
    tokens: FileTokens,
    revocation: FileRevocation,
    limits: FileLimits,
    audit: FileAudit,
    admin: FileAdmin,
    clients: Vec<FileClient>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileAdmin {
    listen: Option<String>,
    client_ca: Option<String>,
    client_crls: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileAudit {
    issuance: Option<String>,
    issuance_interval: Option<String>,
    issuance_sample: Option<u64>,
    retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileLimits {
    issue_per_second: Option<u32>,
    issue_burst: Option<u32>,
    issue_per_client: std::collections::BTreeMap<String, u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileRevocation {
    max_live: Option<u64>,
    per_client_max_live: Option<u64>,
    per_client_rate: Option<u32>,
    purge_interval: Option<String>,
    max_watches: Option<u32>,
    max_watches_per_client: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileServer {
    listen: Option<String>,
    issuer: Option<String>,
    handshake_timeout: Option<String>,
    ops_listen: Option<String>,
    max_handshakes: Option<u32>,
    max_concurrent_streams: Option<u32>,
    max_header_list_size: Option<u32>,
    keepalive_interval: Option<String>,
    keepalive_timeout: Option<String>,
    max_connection_age: Option<String>,
    handshake_failures_per_peer: Option<u32>,
    max_in_flight: Option<u32>,
    max_in_flight_without_certificate: Option<u32>,
    max_streams_without_certificate: Option<u32>,
    max_connections_without_certificate: Option<u32>,
    idle_timeout_without_certificate: Option<String>,
    body_timeout: Option<String>,
    request_timeout: Option<String>,
    max_handshakes_per_address: Option<u32>,
    max_handshakes_per_address_in: std::collections::BTreeMap<String, u32>,
    watch_stall_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    client_crls: Vec<String>,
    reload_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileStore {
    url: Option<String>,
    max_staleness: Option<String>,
    catch_up_interval: Option<String>,
    max_issue_staleness: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileKeys {
    algorithm: Option<String>,
    rotation_period: Option<String>,
    publish_ahead: Option<String>,
    jwks_max_age: Option<String>,
    retention: Option<String>,
    kek_files: Option<Vec<String>>,
    max_jwks_watches: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileTokens {
    default_lifetime: Option<String>,
    max_lifetime: Option<String>,
    leeway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileClient {
    id: Option<String>,
    san_uri: Option<String>,
    san_dns: Option<String>,
    subject_dn: Option<String>,
    pinned_sha256: Option<Vec<String>>,
    scopes: Vec<String>,
    default_scopes: Option<Vec<String>>,
    audiences: Vec<String>,
    default_audiences: Option<Vec<String>>,
    introspect_audiences: Vec<String>,
    permissions: Option<Vec<String>>,
    default_lifetime: Option<String>,
    max_lifetime: Option<String>,
    enabled: Option<bool>,
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

/// One `TOKENMINT__SECTION__KEY` variable.
struct Override {
    var: String,
    raw: String,
}

/// The environment, sorted out: overrides by (section, key), and whether a KEK is given.
struct EnvOverrides {
    overrides: BTreeMap<(String, String), Override>,
    kek_from_env: bool,
}

impl EnvOverrides {
    fn read(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut vars: Vec<(String, String)> = env.into_iter().collect();
        vars.sort();
        let mut overrides: BTreeMap<(String, String), Override> = BTreeMap::new();
        let mut kek_from_env = false;
        for (var, raw) in vars {
            if var == KEK_ENV_VAR {
                kek_from_env = !raw.is_empty();
                continue;
            }
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let env_error = |message: String| ConfigError::Env {
                var: var.clone(),
                message,
            };
            let (section, key) = match rest.split("__").collect::<Vec<_>>().as_slice() {
                [section, key] if !section.is_empty() && !key.is_empty() => {
                    (section.to_ascii_lowercase(), key.to_ascii_lowercase())
                }
                _ => {
                    return Err(env_error(
                        "an override is named TOKENMINT__<SECTION>__<KEY>, e.g. \
                         TOKENMINT__STORE__URL: rename or unset it"
                            .to_owned(),
                    ));
                }
            };
            if section == "clients" {
                return Err(env_error(
                    "[[clients]] cannot be set from the environment: edit the config file \
                     and unset the variable"
                        .to_owned(),
                ));
            }
            let Some((_, keys)) = SECTIONS.iter().find(|(name, _)| *name == section) else {
                return Err(env_error(format!(
                    "unknown section `{section}`: known sections are {}; rename or unset the variable",
                    SECTIONS
                        .iter()
                        .map(|(name, _)| *name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if !keys.contains(&key.as_str()) {
                return Err(env_error(format!(
                    "unknown key `{key}` in [{section}]: known keys are {}; rename or unset the variable",
                    keys.join(", ")
                )));
            }
            let field = (section, key);
            if let Some(previous) = overrides.get(&field) {
                return Err(env_error(format!(
                    "{} also sets {}.{}: unset one of them",
                    previous.var, field.0, field.1
                )));
            }
            overrides.insert(field, Override { var, raw });
        }
        Ok(EnvOverrides {
            overrides,
            kek_from_env,
        })
    }

    /// The names of every override, for an error that cannot be pinned on one.
    fn var_names(&self) -> String {
        self.overrides
            .values()
            .map(|o| o.var.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Writes each override into `table`. The value is taken as TOML when it parses as a
    /// TOML value of the right type (`["a.kek", "b.kek"]`, `"quoted"`), otherwise as the
    /// plain string (`5m`, `sqlite://x.db`).
    fn apply(&self, table: &mut toml::Table) -> Result<(), ConfigError> {
        for ((section, key), o) in &self.overrides {
            let env_error = |message: String| ConfigError::Env {
                var: o.var.clone(),
                message,
            };
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(section_table) = entry else {
                return Err(env_error(format!(
                    "`{section}` in the config file is not a table: make it a [{section}] section"
                )));
            };
            let candidates = o
                .raw
                .parse::<toml::Value>()
                .ok()
                .into_iter()
                .chain(std::iter::once(toml::Value::String(o.raw.clone())));
            let mut first_error = None;
            let mut accepted = None;
            for candidate in candidates {
                let mut trial = section_table.clone();
                trial.insert(key.clone(), candidate.clone());
                match check_section(section, trial) {
                    Ok(()) => {
                        accepted = Some(candidate);
                        break;
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            match accepted {
                Some(value) => {
                    section_table.insert(key.clone(), value);
                }
                None => {
                    let what = first_error
                        .map(|e| e.message().trim_end().to_owned())
                        .unwrap_or_default();
                    return Err(env_error(format!(
                        "cannot use it for {section}.{key}: {what}; write the value in TOML \
                         syntax, e.g. [\"a.kek\", \"b.kek\"] for a list"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Whether `table` deserializes as section `section` (shape and types only).
fn check_section(section: &str, table: toml::Table) -> Result<(), toml::de::Error> {
    match section {
        "server" => table.try_into::<FileServer>().map(drop),
        "tls" => table.try_into::<FileTls>().map(drop),
        "store" => table.try_into::<FileStore>().map(drop),
        "keys" => table.try_into::<FileKeys>().map(drop),
        "tokens" => table.try_into::<FileTokens>().map(drop),
        "revocation" => table.try_into::<FileRevocation>().map(drop),
        "limits" => table.try_into::<FileLimits>().map(drop),
        "audit" => table.try_into::<FileAudit>().map(drop),
        "admin" => table.try_into::<FileAdmin>().map(drop),
        // `EnvOverrides::read` lets only the sections above through.
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// Turns a `FileConfig` into a `Config`, naming the field in every error.
struct Validator<'a> {
    file: &'a Path,
    base_dir: &'a Path,
    /// `section.key` → the environment variable that set it.
    env_vars: HashMap<String, String>,
}

/// A duration as written in messages: `5m`, `1h 30s`.
fn show(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

impl Validator<'_> {
    /// The field's name as messages show it, with the variable that set it, if any.
    fn label(&self, field: &str) -> String {
        match self.env_vars.get(field) {
            Some(var) => format!("{field} (set by {var})"),
            None => field.to_owned(),
        }
    }

    fn error(&self, field: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            field: field.to_owned(),
            message,
        }
    }

    fn duration(
        &self,
        field: &str,
        value: Option<&str>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        let raw = value.unwrap_or(default);
        humantime::parse_duration(raw.trim()).map_err(|e| {
            self.error(
                field,
                format!(
                    "{} `{raw}` is not a duration ({e}): write a number and a unit, like \"30s\", \"5m\", \"1h\" or \"24h\"",
                    self.label(field)
                ),
            )
        })
    }

    /// A duration that must be > 0.
    fn positive(
        &self,
        field: &str,
        value: Option<&str>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(field, value, default)?;
        if d.is_zero() {
            return Err(self.error(
                field,
                format!(
                    "{} must be greater than 0: give it a positive duration like \"{default}\"",
                    self.label(field)
                ),
            ));
        }
        Ok(d)
    }

    /// A token lifetime: > 0 and a whole number of seconds (JWT times are whole seconds).
    fn lifetime(
        &self,
        field: &str,
        value: Option<&str>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        let d = self.positive(field, value, default)?;
        self.whole_seconds(field, &self.label(field), d)
    }

    fn whole_seconds(
        &self,
        field: &str,
        label: &str,
        d: Duration,
    ) -> Result<Duration, ConfigError> {
        if d.subsec_nanos() != 0 {
            return Err(self.error(
                field,
                format!("{label} must be a whole number of seconds (token times have one-second resolution): write e.g. \"90s\" or \"5m\""),
            ));
        }
        Ok(d)
    }

    fn path(
        &self,
        field: &str,
        value: Option<&str>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        let raw = value.unwrap_or(default);
        if raw.trim().is_empty() {
            return Err(self.error(
                field,
                format!(
                    "{} is empty: give a file path like \"{default}\"",
                    self.label(field)
                ),
            ));
        }
        // `join` keeps an absolute path as it is.
        Ok(self.base_dir.join(raw))
    }

    fn validate(&self, file: FileConfig, kek_from_env: bool) -> Result<Config, ConfigError> {
        let server = self.server(file.server)?;
        let tls = self.tls(file.tls)?;
        let tokens = self.tokens(file.tokens)?;
        let keys = self.keys(file.keys, &tokens, kek_from_env)?;
        let store = self.store(file.store, &keys, &tokens)?;
        let clients = self.clients(file.clients, &tokens)?;
        let revocation = self.revocation(file.revocation)?;
        let limits = self.limits(file.limits)?;
        let audit = self.audit(file.audit)?;
        let admin = self.admin(file.admin, &tls, &server)?;
        Ok(Config {
            server,
            tls,
            store,
            keys,
            tokens,
            revocation,
            limits,
            audit,
            admin,
            clients,
            kek_from_env,
            source: self.file.to_path_buf(),
        })
    }

    fn admin(
        &self,
        a: FileAdmin,
        tls: &TlsConfig,
        server: &ServerConfig,
    ) -> Result<AdminConfig, ConfigError> {
        let raw = a.listen.as_deref().unwrap_or("off").trim();
        let listen = if raw.is_empty() || raw == "off" {
            None
        } else {
            let addr = raw.parse::<SocketAddr>().map_err(|_| {
                self.error(
                    "admin.listen",
                    format!(
                        "{} `{raw}` is not a socket address: write IP:PORT, e.g. \"127.0.0.1:8444\", or \"off\"",
                        self.label("admin.listen")
                    ),
                )
            })?;
            let same_ip = addr.ip() == server.listen.ip()
                || addr.ip().is_unspecified()
                || server.listen.ip().is_unspecified();
            if same_ip && addr.port() == server.listen.port() && addr.port() != 0 {
                return Err(self.error(
                    "admin.listen",
                    format!(
                        "{} is server.listen ({addr}): give the admin listener its own port",
                        self.label("admin.listen")
                    ),
                ));
            }
            Some(addr)
        };
        let client_ca = match a.client_ca.as_deref() {
            Some(raw) => self.path("admin.client_ca", Some(raw), DEFAULT_TLS_CLIENT_CA)?,
            None if listen.is_some() => {
                return Err(self.error(
                    "admin.client_ca",
                    format!(
                        "{} is required when admin.listen is set: give the admin plane a CA of its own (its revocation lists go in admin.client_crls)",
                        self.label("admin.client_ca")
                    ),
                ));
            }
            None => tls.client_ca.clone(),
        };
        Ok(AdminConfig {
            listen,
            client_ca,
            client_crls: a
                .client_crls
                .iter()
                .map(|raw| self.path("admin.client_crls", Some(raw), "crl.pem"))
                .collect::<Result<_, _>>()?,
        })
    }

    fn audit(&self, a: FileAudit) -> Result<AuditConfig, ConfigError> {
        use tokenmint_core::audit::IssuanceMode;
        // Both settings are checked whichever mode is chosen: a bad value must not wait for
        // the day someone switches modes.
        let interval = self.positive(
            "audit.issuance_interval",
            a.issuance_interval.as_deref(),
            DEFAULT_AUDIT_INTERVAL,
        )?;
        let one_in = a.issuance_sample.unwrap_or(DEFAULT_AUDIT_SAMPLE);
        if one_in < 2 {
            return Err(self.error(
                "audit.issuance_sample",
                format!(
                    "{} ({one_in}) must be at least 2 (one token in that many is audited); for every token use issuance = \"every\"",
                    self.label("audit.issuance_sample")
                ),
            ));
        }
        let mode = a.issuance.as_deref().unwrap_or("counts");
        let issuance = match mode.trim() {
            "off" => IssuanceMode::Off,
            "every" => IssuanceMode::Every,
            "counts" => IssuanceMode::Counts { interval },
            "sampled" => IssuanceMode::Sampled { one_in },
            other => {
                return Err(self.error(
                    "audit.issuance",
                    format!(
                        "{} `{other}` is not a mode: use \"counts\" (per-client counts every issuance_interval, the default), \"sampled\" (one token in issuance_sample), \"every\" or \"off\"",
                        self.label("audit.issuance")
                    ),
                ));
            }
        };
        let retention = self.positive(
            "audit.retention",
            a.retention.as_deref(),
            DEFAULT_AUDIT_RETENTION,
        )?;
        Ok(AuditConfig {
            issuance,
            retention,
        })
    }

    fn limits(&self, l: FileLimits) -> Result<LimitsConfig, ConfigError> {
        let issue_per_second = l.issue_per_second.unwrap_or(0);
        let most = l
            .issue_per_client
            .values()
            .copied()
            .chain([issue_per_second])
            .max()
            .unwrap_or(0);
        // 0 or absent: as many at once as the highest rate set.
        let issue_burst = l.issue_burst.filter(|b| *b > 0).unwrap_or(most);
        // Ids are not checked against [[clients]]: clients registered with `tokenmint client
        // add` live only in the store.
        Ok(LimitsConfig {
            issue_per_second,
            issue_burst,
            issue_per_client: l.issue_per_client,
        })
    }

    fn revocation(&self, r: FileRevocation) -> Result<RevocationConfig, ConfigError> {
        let max_live = r.max_live.unwrap_or(DEFAULT_MAX_LIVE_REVOCATIONS);
        if max_live < 10 {
            return Err(self.error(
                "revocation.max_live",
                format!(
                    "{} ({max_live}) must be at least 10: it caps the live revocations held in memory (default {DEFAULT_MAX_LIVE_REVOCATIONS})",
                    self.label("revocation.max_live")
                ),
            ));
        }
        let per_client_max_live = r.per_client_max_live.unwrap_or(DEFAULT_PER_CLIENT_MAX_LIVE);
        if per_client_max_live == 0 || per_client_max_live > max_live {
            return Err(self.error(
                "revocation.per_client_max_live",
                format!(
                    "{} ({per_client_max_live}) must be between 1 and revocation.max_live ({max_live})",
                    self.label("revocation.per_client_max_live")
                ),
            ));
        }
        let per_client_rate = r.per_client_rate.unwrap_or(DEFAULT_PER_CLIENT_RATE);
        if per_client_rate == 0 {
            return Err(self.error(
                "revocation.per_client_rate",
                format!(
                    "{} must be at least 1 (revocations per second a client may make of its own tokens)",
                    self.label("revocation.per_client_rate")
                ),
            ));
        }
        let purge_interval = self.positive(
            "revocation.purge_interval",
            r.purge_interval.as_deref(),
            DEFAULT_PURGE_INTERVAL,
        )?;
        let max_watches = self.at_least_one(
            "revocation.max_watches",
            r.max_watches,
            DEFAULT_MAX_WATCHES,
            "WatchRevocations streams open at once",
        )?;
        let max_watches_per_client = self.at_least_one(
            "revocation.max_watches_per_client",
            r.max_watches_per_client,
            DEFAULT_MAX_WATCHES_PER_CLIENT,
            "WatchRevocations streams one client may hold",
        )?;
        Ok(RevocationConfig {
            max_live,
            per_client_max_live,
            per_client_rate,
            purge_interval,
            max_watches,
            max_watches_per_client,
        })
    }

    fn server(&self, mut s: FileServer) -> Result<ServerConfig, ConfigError> {
        let listen = self.socket_addr(
            "server.listen",
            s.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
            "e.g. \"127.0.0.1:8443\" or \"[::]:8443\"",
        )?;

        let issuer = self.issuer(s.issuer.take())?;

        let handshake_timeout = self.positive_at_most(
            "server.handshake_timeout",
            s.handshake_timeout.as_deref(),
            DEFAULT_HANDSHAKE_TIMEOUT,
            MAX_HANDSHAKE_TIMEOUT,
        )?;
        let ops_listen = self.ops_listen(s.ops_listen.as_deref())?;
        let max_handshakes = self.at_least_one(
            "server.max_handshakes",
            s.max_handshakes,
            DEFAULT_MAX_HANDSHAKES,
            "TLS handshakes in progress at once",
        )?;
        let handshake_failures_per_peer = s
            .handshake_failures_per_peer
            .unwrap_or(DEFAULT_HANDSHAKE_FAILURES_PER_PEER);
        let without_certificate = self.without_certificate(&s)?;
        let (body_timeout, request_timeout) =
            self.request_timeouts(s.body_timeout.as_deref(), s.request_timeout.as_deref())?;
        let (max_handshakes_per_address, max_handshakes_per_address_in) =
            self.handshake_shares(&s, max_handshakes)?;
        Ok(ServerConfig {
            listen,
            issuer,
            handshake_timeout,
            ops_listen,
            handshake_failures_per_peer,
            max_in_flight: self.at_least_one(
                "server.max_in_flight",
                s.max_in_flight,
                DEFAULT_MAX_IN_FLIGHT,
                "requests in flight across all connections",
            )?,
            max_handshakes,
            max_concurrent_streams: self.at_least_one(
                "server.max_concurrent_streams",
                s.max_concurrent_streams,
                DEFAULT_MAX_CONCURRENT_STREAMS,
                "HTTP/2 streams per connection",
            )?,
            max_header_list_size: self.at_least_one(
                "server.max_header_list_size",
                s.max_header_list_size,
                DEFAULT_MAX_HEADER_LIST_SIZE,
                "bytes of HTTP/2 headers",
            )?,
            keepalive_interval: self.positive(
                "server.keepalive_interval",
                s.keepalive_interval.as_deref(),
                DEFAULT_KEEPALIVE_INTERVAL,
            )?,
            keepalive_timeout: self.positive(
                "server.keepalive_timeout",
                s.keepalive_timeout.as_deref(),
                DEFAULT_KEEPALIVE_TIMEOUT,
            )?,
            max_connection_age: self.positive(
                "server.max_connection_age",
                s.max_connection_age.as_deref(),
                DEFAULT_MAX_CONNECTION_AGE,
            )?,
            without_certificate,
            body_timeout,
            request_timeout,
            max_handshakes_per_address,
            max_handshakes_per_address_in,
            watch_stall_timeout: self.positive(
                "server.watch_stall_timeout",
                s.watch_stall_timeout.as_deref(),
                DEFAULT_WATCH_STALL_TIMEOUT,
            )?,
        })
    }

    /// `server.ops_listen`: an address, or `"off"` (or empty) for no operations listener.
    fn ops_listen(&self, raw: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
        let raw = raw.unwrap_or(DEFAULT_OPS_LISTEN).trim();
        if raw.is_empty() || raw == "off" {
            return Ok(None);
        }
        self.socket_addr(
            "server.ops_listen",
            raw,
            "e.g. \"127.0.0.1:9464\", or \"off\"",
        )
        .map(Some)
    }

    /// `server.max_handshakes_per_address` (never above `max_handshakes`) and the ranges of
    /// `server.max_handshakes_per_address_in`.
    fn handshake_shares(
        &self,
        s: &FileServer,
        max_handshakes: u32,
    ) -> Result<(u32, Vec<(ipnet::IpNet, u32)>), ConfigError> {
        // The default never exceeds the total; a value written does not either.
        let max_handshakes_per_address = s
            .max_handshakes_per_address
            .unwrap_or(DEFAULT_MAX_HANDSHAKES_PER_ADDRESS.min(max_handshakes));
        if max_handshakes_per_address > max_handshakes {
            return Err(self.error(
                "server.max_handshakes_per_address",
                format!(
                    "{} ({max_handshakes_per_address}) must not exceed {} ({max_handshakes}): one address cannot have more in progress than the server",
                    self.label("server.max_handshakes_per_address"),
                    self.label("server.max_handshakes")
                ),
            ));
        }
        let max_handshakes_per_address_in =
            self.address_ranges(&s.max_handshakes_per_address_in)?;
        Ok((max_handshakes_per_address, max_handshakes_per_address_in))
    }

    /// The `[server]` limits for connections without a client certificate.
    fn without_certificate(&self, s: &FileServer) -> Result<WithoutCertificate, ConfigError> {
        let max_in_flight = self.at_least_one(
            "server.max_in_flight_without_certificate",
            s.max_in_flight_without_certificate,
            DEFAULT_MAX_IN_FLIGHT_WITHOUT_CERTIFICATE,
            "requests in flight from connections without a client certificate",
        )?;
        let max_streams = self.at_least_one(
            "server.max_streams_without_certificate",
            s.max_streams_without_certificate,
            DEFAULT_MAX_STREAMS_WITHOUT_CERTIFICATE,
            "HTTP/2 streams per connection without a client certificate",
        )?;
        let max_connections = self.at_least_one(
            "server.max_connections_without_certificate",
            s.max_connections_without_certificate,
            DEFAULT_MAX_CONNECTIONS_WITHOUT_CERTIFICATE,
            "connections without a client certificate",
        )?;
        let idle_timeout = self.positive(
            "server.idle_timeout_without_certificate",
            s.idle_timeout_without_certificate.as_deref(),
            DEFAULT_IDLE_TIMEOUT_WITHOUT_CERTIFICATE,
        )?;
        Ok(WithoutCertificate {
            max_in_flight,
            max_streams,
            max_connections,
            idle_timeout,
        })
    }

    /// `server.issuer`: an `https://` URL without query, fragment, user info or trailing slash.
    fn issuer(&self, raw: Option<String>) -> Result<String, ConfigError> {
        let issuer = raw.unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
        if let Err(problem) = check_issuer(&issuer) {
            return Err(self.error(
                "server.issuer",
                format!(
                    "{} `{issuer}` {problem}: write an https URL like \"https://tokenmint.example.com\"",
                    self.label("server.issuer")
                ),
            ));
        }
        Ok(issuer)
    }

    /// A positive duration of at most `max`.
    fn positive_at_most(
        &self,
        field: &str,
        value: Option<&str>,
        default: &str,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let value = self.positive(field, value, default)?;
        if value > max {
            return Err(self.error(
                field,
                format!(
                    "{} ({}) must be at most {}: lower it",
                    self.label(field),
                    show(value),
                    show(max)
                ),
            ));
        }
        Ok(value)
    }

    /// A socket address (`IP:PORT`); `example` ends the message when it is not one.
    fn socket_addr(
        &self,
        field: &str,
        raw: &str,
        example: &str,
    ) -> Result<SocketAddr, ConfigError> {
        raw.trim().parse::<SocketAddr>().map_err(|_| {
            self.error(
                field,
                format!(
                    "{} `{raw}` is not a socket address: write IP:PORT, {example}",
                    self.label(field)
                ),
            )
        })
    }

    /// A count that must be at least 1 (`what` it counts, for the message).
    fn at_least_one(
        &self,
        field: &str,
        value: Option<u32>,
        default: u32,
        what: &str,
    ) -> Result<u32, ConfigError> {
        let value = value.unwrap_or(default);
        if value == 0 {
            return Err(self.error(
                field,
                format!(
                    "{} must be at least 1 ({what}; default {default})",
                    self.label(field)
                ),
            ));
        }
        Ok(value)
    }

    /// `server.body_timeout` and `server.request_timeout`: positive, at most 5 minutes, and
    /// the body's within the request's.
    fn request_timeouts(
        &self,
        body: Option<&str>,
        request: Option<&str>,
    ) -> Result<(Duration, Duration), ConfigError> {
        let body = self.positive_at_most(
            "server.body_timeout",
            body,
            DEFAULT_BODY_TIMEOUT,
            MAX_REQUEST_TIMEOUT,
        )?;
        let request = self.positive_at_most(
            "server.request_timeout",
            request,
            DEFAULT_REQUEST_TIMEOUT,
            MAX_REQUEST_TIMEOUT,
        )?;
        if body > request {
            return Err(self.error(
                "server.body_timeout",
                format!(
                    "{} ({}) must not exceed {} ({}): the body is read within the request's time",
                    self.label("server.body_timeout"),
                    show(body),
                    self.label("server.request_timeout"),
                    show(request)
                ),
            ));
        }
        Ok((body, request))
    }

    /// `server.max_handshakes_per_address_in`: CIDR ranges, most specific first.
    fn address_ranges(
        &self,
        ranges: &std::collections::BTreeMap<String, u32>,
    ) -> Result<Vec<(ipnet::IpNet, u32)>, ConfigError> {
        let field = "server.max_handshakes_per_address_in";
        let mut parsed = ranges
            .iter()
            .map(|(range, limit)| {
                let net = range.trim().parse::<ipnet::IpNet>().map_err(|_| {
                    self.error(
                        field,
                        format!(
                            "{} `{range}` is not an address range: write CIDR like \"10.0.0.0/8\" or \"2001:db8::/48\"",
                            self.label(field)
                        ),
                    )
                })?;
                Ok((net.trunc(), *limit))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let mut seen = std::collections::BTreeSet::new();
        if let Some((net, _)) = parsed.iter().find(|(net, _)| !seen.insert(*net)) {
            return Err(self.error(
                field,
                format!(
                    "{} names the range {net} twice (written two ways): keep one",
                    self.label(field)
                ),
            ));
        }
        parsed.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Ok(parsed)
    }

    fn tls(&self, t: FileTls) -> Result<TlsConfig, ConfigError> {
        Ok(TlsConfig {
            cert: self.path("tls.cert", t.cert.as_deref(), DEFAULT_TLS_CERT)?,
            key: self.path("tls.key", t.key.as_deref(), DEFAULT_TLS_KEY)?,
            client_ca: self.path(
                "tls.client_ca",
                t.client_ca.as_deref(),
                DEFAULT_TLS_CLIENT_CA,
            )?,
            client_crls: t
                .client_crls
                .iter()
                .map(|raw| self.path("tls.client_crls", Some(raw), "crl.pem"))
                .collect::<Result<_, _>>()?,
            reload_interval: self.positive(
                "tls.reload_interval",
                t.reload_interval.as_deref(),
                DEFAULT_TLS_RELOAD_INTERVAL,
            )?,
        })
    }

    fn tokens(&self, t: FileTokens) -> Result<TokensConfig, ConfigError> {
        let max_lifetime = self.lifetime(
            "tokens.max_lifetime",
            t.max_lifetime.as_deref(),
            DEFAULT_MAX_LIFETIME,
        )?;
        let default_lifetime = self.lifetime(
            "tokens.default_lifetime",
            t.default_lifetime.as_deref(),
            DEFAULT_TOKEN_LIFETIME,
        )?;
        if default_lifetime > max_lifetime {
            return Err(self.error(
                "tokens.default_lifetime",
                format!(
                    "{} ({}) must not exceed {} ({}): lower default_lifetime or raise max_lifetime",
                    self.label("tokens.default_lifetime"),
                    show(default_lifetime),
                    self.label("tokens.max_lifetime"),
                    show(max_lifetime)
                ),
            ));
        }
        let leeway = self.duration("tokens.leeway", t.leeway.as_deref(), DEFAULT_LEEWAY)?;
        if leeway > MAX_LEEWAY {
            return Err(self.error(
                "tokens.leeway",
                format!(
                    "{} ({}) must be at most {}: lower it (it only absorbs clock skew)",
                    self.label("tokens.leeway"),
                    show(leeway),
                    show(MAX_LEEWAY)
                ),
            ));
        }
        Ok(TokensConfig {
            default_lifetime,
            max_lifetime,
            leeway,
        })
    }

    fn keys(
        &self,
        k: FileKeys,
        tokens: &TokensConfig,
        kek_from_env: bool,
    ) -> Result<KeysConfig, ConfigError> {
        let raw_alg = k.algorithm.as_deref().unwrap_or(DEFAULT_ALGORITHM);
        let algorithm = raw_alg.parse::<Algorithm>().map_err(|_| {
            self.error(
                "keys.algorithm",
                format!(
                    "{} `{raw_alg}` is not supported: use one of {} (exact spelling)",
                    self.label("keys.algorithm"),
                    Algorithm::ALL.map(Algorithm::as_str).join(", ")
                ),
            )
        })?;
        let timing = self.key_timing(&k, tokens)?;
        let kek_files = self.kek_files(k.kek_files, kek_from_env)?;
        let max_jwks_watches = self.at_least_one(
            "keys.max_jwks_watches",
            k.max_jwks_watches,
            DEFAULT_MAX_JWKS_WATCHES,
            "WatchJwks streams open at once",
        )?;
        Ok(KeysConfig {
            algorithm,
            rotation_period: timing.rotation_period,
            publish_ahead: timing.publish_ahead,
            jwks_max_age: timing.jwks_max_age,
            retention: timing.retention,
            kek_files,
            max_jwks_watches,
        })
    }

    /// `keys.kek_files`: the KEK files, resolved, none twice; empty only with the KEK in
    /// the environment.
    fn kek_files(
        &self,
        files: Option<Vec<String>>,
        kek_from_env: bool,
    ) -> Result<Vec<PathBuf>, ConfigError> {
        let kek_files = match files {
            Some(files) => files,
            None => vec![DEFAULT_KEK_FILE.to_owned()],
        };
        if kek_files.is_empty() && !kek_from_env {
            return Err(self.error(
                "keys.kek_files",
                format!(
                    "{} is empty and {KEK_ENV_VAR} is not set: list a KEK file (e.g. [\"{DEFAULT_KEK_FILE}\"]) or set {KEK_ENV_VAR}",
                    self.label("keys.kek_files")
                ),
            ));
        }
        let mut resolved: Vec<PathBuf> = Vec::with_capacity(kek_files.len());
        for (i, f) in kek_files.iter().enumerate() {
            let field = format!("keys.kek_files[{i}]");
            let path = self.path(&field, Some(f), DEFAULT_KEK_FILE)?;
            if resolved.contains(&path) {
                return Err(self.error(
                    &field,
                    format!(
                        "{} `{f}` is listed twice: remove the duplicate",
                        self.label("keys.kek_files")
                    ),
                ));
            }
            resolved.push(path);
        }
        Ok(resolved)
    }

    /// The key timing: how long the JWKS may be cached, how early the next key is published,
    /// how often keys rotate, how long a retired key stays published — each bound by the
    /// others so no verifier meets a key it could not have fetched.
    fn key_timing(&self, k: &FileKeys, tokens: &TokensConfig) -> Result<KeyTiming, ConfigError> {
        let jwks_max_age = self.duration(
            "keys.jwks_max_age",
            k.jwks_max_age.as_deref(),
            DEFAULT_JWKS_MAX_AGE,
        )?;
        let publish_ahead = self.duration(
            "keys.publish_ahead",
            k.publish_ahead.as_deref(),
            DEFAULT_PUBLISH_AHEAD,
        )?;
        let twice_max_age = jwks_max_age.saturating_mul(2);
        if publish_ahead < twice_max_age {
            return Err(self.error(
                "keys.publish_ahead",
                format!(
                    "{} ({}) must be at least 2 × {} (2 × {} = {}), so no verifier caching the JWKS meets a key it could not have fetched: raise publish_ahead or lower jwks_max_age",
                    self.label("keys.publish_ahead"),
                    show(publish_ahead),
                    self.label("keys.jwks_max_age"),
                    show(jwks_max_age),
                    show(twice_max_age)
                ),
            ));
        }
        let rotation_period = self.duration(
            "keys.rotation_period",
            k.rotation_period.as_deref(),
            DEFAULT_ROTATION_PERIOD,
        )?;
        if rotation_period <= publish_ahead {
            return Err(self.error(
                "keys.rotation_period",
                format!(
                    "{} ({}) must be greater than {} ({}), so the next key is published before it is due: raise rotation_period or lower publish_ahead",
                    self.label("keys.rotation_period"),
                    show(rotation_period),
                    self.label("keys.publish_ahead"),
                    show(publish_ahead)
                ),
            ));
        }
        let retention =
            self.duration("keys.retention", k.retention.as_deref(), DEFAULT_RETENTION)?;
        let token_validity = tokens.max_lifetime.saturating_add(tokens.leeway);
        if retention < token_validity {
            return Err(self.error(
                "keys.retention",
                format!(
                    "{} ({}) must be at least tokens.max_lifetime + tokens.leeway ({} + {} = {}), so a retired key stays published while its tokens are valid: raise retention or lower tokens.max_lifetime",
                    self.label("keys.retention"),
                    show(retention),
                    show(tokens.max_lifetime),
                    show(tokens.leeway),
                    show(token_validity)
                ),
            ));
        }
        Ok(KeyTiming {
            jwks_max_age,
            publish_ahead,
            rotation_period,
            retention,
        })
    }

    fn store(
        &self,
        s: FileStore,
        keys: &KeysConfig,
        tokens: &TokensConfig,
    ) -> Result<StoreConfig, ConfigError> {
        let raw_url = s.url.as_deref().unwrap_or(DEFAULT_STORE_URL);
        let url = self.store_url(raw_url)?;
        let max_staleness = self.positive(
            "store.max_staleness",
            s.max_staleness.as_deref(),
            DEFAULT_MAX_STALENESS,
        )?;
        let catch_up_interval = self.positive(
            "store.catch_up_interval",
            s.catch_up_interval.as_deref(),
            DEFAULT_CATCH_UP_INTERVAL,
        )?;
        let half = max_staleness / 2;
        if catch_up_interval >= half {
            return Err(self.error(
                "store.catch_up_interval",
                format!(
                    "{} ({}) must be less than half of {} ({} / 2 = {}), so one missed catch-up does not make the replica stale: lower catch_up_interval or raise max_staleness",
                    self.label("store.catch_up_interval"),
                    show(catch_up_interval),
                    self.label("store.max_staleness"),
                    show(max_staleness),
                    show(half)
                ),
            ));
        }
        let max_issue_staleness = self.positive(
            "store.max_issue_staleness",
            s.max_issue_staleness.as_deref(),
            DEFAULT_MAX_ISSUE_STALENESS,
        )?;
        let bound = keys
            .retention
            .saturating_sub(tokens.max_lifetime)
            .saturating_sub(tokens.leeway);
        if max_issue_staleness >= bound {
            return Err(self.error(
                "store.max_issue_staleness",
                format!(
                    "{} ({}) must be less than keys.retention - tokens.max_lifetime - tokens.leeway ({} - {} - {} = {}), so a cut-off replica never signs with a key the others may have removed: lower max_issue_staleness or raise keys.retention",
                    self.label("store.max_issue_staleness"),
                    show(max_issue_staleness),
                    show(keys.retention),
                    show(tokens.max_lifetime),
                    show(tokens.leeway),
                    show(bound)
                ),
            ));
        }
        Ok(StoreConfig {
            url,
            max_staleness,
            catch_up_interval,
            max_issue_staleness,
        })
    }

    fn store_url(&self, raw: &str) -> Result<StoreUrl, ConfigError> {
        const FIELD: &str = "store.url";
        let fix = "use \"sqlite://PATH\" (e.g. \"sqlite://tokenmint.db\"), \"sqlite:PATH\" or \"postgres://…\"";
        let label = self.label(FIELD);
        if let Some(rest) = raw
            .strip_prefix("postgres://")
            .or_else(|| raw.strip_prefix("postgresql://"))
        {
            if rest.is_empty() {
                return Err(self.error(FIELD, format!("{label} names no PostgreSQL server: {fix}")));
            }
            return Ok(StoreUrl::Postgres(raw.to_owned()));
        }
        if let Some(path) = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(self.error(
                    FIELD,
                    format!("{label} `{raw}` names no database file: {fix}"),
                ));
            }
            if path == ":memory:" {
                return Err(self.error(
                    FIELD,
                    format!("{label} `{raw}`: an in-memory store loses every key and revocation on restart: give a file path, e.g. \"sqlite://tokenmint.db\""),
                ));
            }
            if path.contains('?') {
                return Err(self.error(
                    FIELD,
                    format!("{label} `{raw}`: query parameters are not supported (tokenmint sets the SQLite options itself): remove everything from `?`"),
                ));
            }
            return Ok(StoreUrl::Sqlite(self.base_dir.join(path)));
        }
        // Show only the scheme: a URL we do not understand may still carry a password.
        let shown = match raw.split_once(':') {
            Some((scheme, _)) => format!("has the unsupported scheme `{scheme}`"),
            None => "has no scheme".to_owned(),
        };
        Err(self.error(FIELD, format!("{label} {shown}: {fix}")))
    }

    fn clients(
        &self,
        clients: Vec<FileClient>,
        tokens: &TokensConfig,
    ) -> Result<Vec<Client>, ConfigError> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(clients.len());
        for (i, c) in clients.into_iter().enumerate() {
            let client = self.client(i, c, tokens)?;
            if let Some(first) = seen.insert(client.id.to_string(), i) {
                return Err(self.error(
                    &format!("clients[{i}].id"),
                    format!(
                        "clients[{i}].id `{}` is already used by clients[{first}]: client ids must be unique, rename one",
                        client.id
                    ),
                ));
            }
            out.push(client);
        }
        Ok(out)
    }

    /// One `[[clients]]` entry, by the one client rule ([`ClientDraft::build`]); a refusal
    /// names the entry (`clients[0].scopes (client "demo")`).
    fn client(
        &self,
        i: usize,
        c: FileClient,
        tokens: &TokensConfig,
    ) -> Result<Client, ConfigError> {
        let Some(id) = c.id else {
            return Err(self.error(
                &format!("clients[{i}].id"),
                format!("clients[{i}].id is missing: every [[clients]] entry needs one, e.g. id = \"billing\""),
            ));
        };
        let duration = |key: &str, raw: Option<String>| {
            raw.map(|raw| {
                self.client_duration(
                    &format!("clients[{i}].{key}"),
                    &format!("clients[{i}].{key} (client \"{id}\")"),
                    &raw,
                )
            })
            .transpose()
        };
        let draft = ClientDraft {
            default_lifetime: duration("default_lifetime", c.default_lifetime)?,
            max_lifetime: duration("max_lifetime", c.max_lifetime)?,
            id: id.clone(),
            identity: IdentityDraft {
                san_uri: c.san_uri,
                san_dns: c.san_dns,
                subject_dn: c.subject_dn,
                pinned_sha256: c.pinned_sha256,
            },
            scopes: c.scopes,
            default_scopes: c.default_scopes,
            audiences: c.audiences,
            default_audiences: c.default_audiences,
            introspect_audiences: c.introspect_audiences,
            permissions: c.permissions,
            enabled: c.enabled.unwrap_or(true),
        };
        let defaults = LifetimeDefaults {
            default: tokens.default_lifetime,
            max: tokens.max_lifetime,
        };
        draft.build(defaults).map_err(|e| {
            let (field, label) = match e.field {
                DraftField::Client => (
                    format!("clients[{i}]"),
                    format!("clients[{i}] (client \"{id}\")"),
                ),
                DraftField::Id => (format!("clients[{i}].id"), format!("clients[{i}].id")),
                f => (
                    format!("clients[{i}].{f}"),
                    format!("clients[{i}].{f} (client \"{id}\")"),
                ),
            };
            self.error(&field, format!("{label} {}", e.problem))
        })
    }

    /// A client's lifetime: a duration > 0.
    fn client_duration(
        &self,
        field: &str,
        label: &str,
        raw: &str,
    ) -> Result<Duration, ConfigError> {
        let d = humantime::parse_duration(raw.trim()).map_err(|e| {
            self.error(
                field,
                format!("{label} `{raw}` is not a duration ({e}): write a number and a unit, like \"5m\" or \"1h\""),
            )
        })?;
        if d.is_zero() {
            return Err(self.error(
                field,
                format!("{label} must be greater than 0: give it a positive duration like \"5m\""),
            ));
        }
        self.whole_seconds(field, label, d)
    }
}

/// What is wrong with an issuer, if anything.
fn check_issuer(issuer: &str) -> Result<(), &'static str> {
    let Some(rest) = issuer.strip_prefix("https://") else {
        return Err("must start with \"https://\"");
    };
    if issuer.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace");
    }
    if issuer.contains('?') || issuer.contains('#') {
        return Err("must not have a query (`?`) or fragment (`#`)");
    }
    if issuer.ends_with('/') {
        return Err("must not end with a slash");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err("names no host");
    }
    if authority.contains('@') {
        return Err("must not contain user info (`user@`)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The starter file
// ---------------------------------------------------------------------------------------

/// The starter file `tokenmint init` writes: exactly the format above with comments, the demo client and the admin client
/// (id `"admin"`, `san_uri` `"spiffe://tokenmint.dev/admin"`, `scopes = []`, `permissions = ["issue", "introspect", "admin"]`), default values written out.
/// It loads with [`Config::from_toml_str`] without error, and its sections equal the defaults.
#[must_use]
pub fn starter_toml() -> String {
    STARTER_TOML.to_owned()
}

const STARTER_TOML: &str = r#"# tokenmint configuration, written by `tokenmint init`.
#
# Every key is optional: the values written here are the defaults. Durations are written
# like "30s", "5m", "1h" or "24h"; relative paths are relative to this file's directory.
# Unknown keys are refused. Any key of a section can be overridden from the environment
# as TOKENMINT__<SECTION>__<KEY>, e.g. TOKENMINT__STORE__URL=sqlite://other.db or
# TOKENMINT__KEYS__KEK_FILES='["new.kek", "old.kek"]'.

[server]
# Address and port of the gRPC listener.
listen = "127.0.0.1:8443"
# The `iss` of every token: an https URL without query, fragment or trailing slash.
issuer = "https://localhost:8443"
# How long a peer may take to finish the TLS handshake (at most 5m).
handshake_timeout = "10s"
# Plain-HTTP /healthz, /readyz and Prometheus /metrics, no client certificate: keep it on
# loopback or a private interface. "off" disables it.
ops_listen = "127.0.0.1:9464"
# TLS handshakes in progress at once; a connection beyond it is closed at once (a reconnect
# storm costs handshakes, not memory).
max_handshakes = 1024
# HTTP/2: streams in flight per connection, and the largest header list (bytes).
max_concurrent_streams = 256
max_header_list_size = 16384
# HTTP/2 pings on idle connections, and how long one may go unanswered.
keepalive_interval = "30s"
keepalive_timeout = "10s"
# A connection older than this is asked to go away (in-flight calls get 30s), so rotated
# certificates and CAs reach long-lived clients.
max_connection_age = "1h"
# Failed TLS handshakes per second one IP address may cause (twice that at once); past it
# its new connections are closed at once until the rate allows again. 0 = no limit. Behind
# a NAT or proxy many clients share one address: raise it there.
handshake_failures_per_peer = 50
# Requests in flight from connections with a client certificate; past it a request is
# refused at once with RESOURCE_EXHAUSTED (HTTP 429) and a retry hint, before any work is
# done. A request takes its slot only once its body has arrived in full.
max_in_flight = 4096
# Peers without a client certificate (JWKS, metadata, health) have capacity of their own,
# apart from the above: requests in flight, HTTP/2 streams per connection, connections.
max_in_flight_without_certificate = 256
max_streams_without_certificate = 8
max_connections_without_certificate = 1024
# One address (an IPv6 /64) may hold a sixteenth of those connections; one with no request
# open for this long is closed.
idle_timeout_without_certificate = "30s"
# How long a peer may take to send a request's body (on HTTP/1.1 its headers too), and to
# have the whole request answered (at most 5m each).
body_timeout = "10s"
request_timeout = "30s"
# TLS handshakes in progress at once from one address (an IPv6 /64 counts as one); more from
# that address wait their turn within handshake_timeout. 0 = no per-address limit. Behind
# SNAT or a node-local proxy many clients share one address: raise it for those ranges, or
# lift it with 0, e.g. { "10.1.0.0/16" = 512, "192.0.2.7/32" = 0 }.
max_handshakes_per_address = 64
max_handshakes_per_address_in = {}
# A WatchRevocations or WatchJwks stream whose reader takes nothing for this long is ended
# by closing its connection (the reader reconnects and resumes).
watch_stall_timeout = "60s"

[tls]
# The server's certificate chain and private key (PEM).
cert = "certs/server.pem"
key = "certs/server.key"
# The CA that client certificates must chain to (PEM).
client_ca = "certs/ca.pem"
# Certificate revocation lists (PEM) from the client CAs: a listed client certificate fails
# the handshake. A client whose issuer has no list here is not checked.
client_crls = []
# How often these files are checked for a change; they are also reloaded on SIGHUP. A
# replacement that does not load is refused and the old material keeps serving.
reload_interval = "5s"

[store]
# "sqlite://PATH" or "sqlite:PATH" (an SQLite file), or "postgres://…".
url = "sqlite://tokenmint.db"
# Past this since the last catch-up with the store, introspection and watches answer UNAVAILABLE.
max_staleness = "5s"
# How often to catch up with the store; less than half of max_staleness.
catch_up_interval = "1s"
# Past this since the last catch-up, issuance answers UNAVAILABLE too; less than
# keys.retention - tokens.max_lifetime - tokens.leeway.
max_issue_staleness = "5m"

[keys]
# Algorithm of new signing keys: "ES256" or "EdDSA".
algorithm = "ES256"
# How often the next key becomes the signing key; more than publish_ahead.
rotation_period = "24h"
# How long a key is published before it signs; at least 2 × jwks_max_age.
publish_ahead = "1h"
# Cache-Control max-age of the published JWKS.
jwks_max_age = "5m"
# How long a retired key stays published; at least tokens.max_lifetime + tokens.leeway.
retention = "2h"
# Files holding the key-encryption key (KEK), newest first. May be [] when the KEK is
# given in the TOKENMINT_KEK environment variable instead.
kek_files = ["tokenmint.kek"]
# WatchJwks streams open at once (GetJwks and the HTTP JWKS are not limited by it).
max_jwks_watches = 10000

[tokens]
# Lifetime of a token when the request names none; at most max_lifetime.
default_lifetime = "5m"
# The ceiling of every token's lifetime.
max_lifetime = "1h"
# Clock skew tolerated when checking token times; at most 5m.
leeway = "30s"

[revocation]
# Live revoked tokens held in memory at most; clients may fill 90%, the rest is kept for admins.
max_live = 1000000
# Live revocations a client may make of its own tokens, and how many per second.
per_client_max_live = 10000
per_client_rate = 10
# How often expired revocations and old log entries are removed.
purge_interval = "1m"
# WatchRevocations streams open at once, and per client (a fleet of resource servers
# watches with one client, one stream per instance). A connection may hold 16.
max_watches = 20000
max_watches_per_client = 10000

[limits]
# Tokens per second each client may get; 0 = no limit. Past it, RESOURCE_EXHAUSTED (HTTP 429)
# with a retry hint.
issue_per_second = 0
# How many a client may get at once; 0 = the highest rate set.
issue_burst = 0
# Per-client rates in place of issue_per_second (0 = no limit for that client), e.g.
# issue_per_client = { demo = 50 }
issue_per_client = {}

[admin]
# An optional separate listener for AdminService, with its own client CA, to keep the admin
# plane off the data plane. "off": AdminService is served on server.listen.
listen = "off"
# The CA admin certificates must chain to there (required with listen: the admin plane's own
# CA), and its CRLs. Pinned self-signed certificates are not accepted there.
client_ca = "certs/ca.pem"
client_crls = []

[audit]
# Issuance is audited on the log target tokenmint::audit::issuance: "counts" (per-client
# counts every issuance_interval), "sampled" (one token in issuance_sample), "every" or "off".
# Revocations, key rotations and admin changes are always audited, in the store.
issuance = "counts"
issuance_interval = "1m"
issuance_sample = 100
# Stored audit events older than this are removed.
retention = "400d"

# One [[clients]] entry per machine allowed to ask for tokens. A client is recognised by
# exactly one of san_uri, san_dns or subject_dn of its CA-issued certificate, or by
# pinned_sha256 = ["<SHA-256 thumbprint>", …] for a self-signed certificate.
[[clients]]
id = "demo"
san_uri = "spiffe://tokenmint.dev/demo"
# Scopes it may ask for, and those it gets when it names none (default: all of scopes).
scopes = ["demo:read"]
default_scopes = ["demo:read"]
# Audiences it may ask for, and those it gets when it names none (default: the one
# audience if there is exactly one, else none).
audiences = ["https://demo.tokenmint.dev"]
default_audiences = ["https://demo.tokenmint.dev"]
# Any of "issue", "introspect", "admin" (default: ["issue"]).
permissions = ["issue"]
# Its tokens' default and longest lifetimes (at most tokens.max_lifetime).
default_lifetime = "5m"
max_lifetime = "1h"
enabled = true

[[clients]]
id = "admin"
san_uri = "spiffe://tokenmint.dev/admin"
scopes = []
audiences = []
permissions = ["issue", "introspect", "admin"]
enabled = true
"#;

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
    fn starter_toml_loads_with_the_defaults_and_both_clients() {
        let starter = load(&starter_toml()).unwrap();
        let defaults = load("").unwrap();
        assert_eq!(starter.server, defaults.server);
        assert_eq!(starter.tls, defaults.tls);
        assert_eq!(starter.store, defaults.store);
        assert_eq!(starter.keys, defaults.keys);
        assert_eq!(starter.tokens, defaults.tokens);

        let [demo, admin] = starter.clients.as_slice() else {
            panic!("expected two clients, got {:?}", starter.clients);
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
    fn starter_toml_writes_every_key_an_override_may_address() {
        let table: toml::Table = toml::from_str(&starter_toml()).unwrap();
        for (section, keys) in SECTIONS {
            let written = table[*section].as_table().unwrap();
            let mut written: Vec<&str> = written.keys().map(String::as_str).collect();
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
}
