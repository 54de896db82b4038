//! The starter file `tokenmint init` writes.

// ---------------------------------------------------------------------------------------
// The starter file
// ---------------------------------------------------------------------------------------

/// The starter file `tokenmint init` writes: exactly the format above with comments, the demo client, the admin client
/// (id `"admin"`, `san_uri` `"spiffe://tokenmint.dev/admin"`, `scopes = []`, `permissions = ["issue", "introspect", "admin"]`)
/// and the resource server's client ([`resource_client_toml`]), default values written out.
/// It loads with [`super::Config::from_toml_str`] without error, and its sections equal the defaults.
#[must_use]
pub fn starter_toml() -> String {
    format!("{STARTER_TOML}{RESOURCE_CLIENT_TOML}")
}

/// The starter file's last `[[clients]]` entry, with its comment: `demo-resource`, the client of
/// `certs/resource.pem`, which may introspect tokens for the demo audience and watch
/// revocations, and gets no tokens. A file written before the starter had it lacks it: `init`
/// shows this block to add.
#[must_use]
pub fn resource_client_toml() -> &'static str {
    RESOURCE_CLIENT_TOML
}

/// Whether `text`, a config file, is TOML whose `[[clients]]` name no client `id` (false when
/// it is not TOML at all: loading it says what is wrong).
#[must_use]
pub fn lacks_client(text: &str, id: &str) -> bool {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return false;
    };
    let clients = table.get("clients").and_then(toml::Value::as_array);
    !clients.is_some_and(|clients| {
        clients
            .iter()
            .any(|client| client.get("id").and_then(toml::Value::as_str) == Some(id))
    })
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
# The default signing algorithm: "ES256", "EdDSA", "RS256", "PS256", "ML-DSA-44" or
# "ML-DSA-65" (RSA key generation and ML-DSA need a build with `--features aws-lc`).
algorithm = "ES256"
# Other algorithms that sign at once, each with its own current and next key, e.g. ["RS256"].
also = []
# The size of new RSA keys: 2048 or 3072.
rsa_bits = 2048
# The algorithm tokens for an audience are signed with, for consumers that accept only one,
# e.g. { "https://aws-federation.example" = "RS256" }; other audiences get `algorithm`. Each
# must be `algorithm` or in `also`. ML-DSA keys are published only in the full key set
# (pq_jwks_uri), which a consumer must ask for.
audience_algorithms = {}
# How often the next key becomes the signing key; more than publish_ahead.
rotation_period = "24h"
# How long a key is published before it signs; at least 2 × jwks_max_age.
publish_ahead = "1h"
# Cache-Control max-age of the published JWKS.
jwks_max_age = "5m"
# How long a retired key stays published; at least tokens.max_lifetime + tokens.leeway.
retention = "2h"
# Where the private halves of the signing keys are held: "sealed" (under the KEK, in the
# store) or "pkcs11" (generated in an HSM token, never exportable: set [pkcs11] below).
custody = "sealed"
# Files holding the key-encryption key (KEK), newest first. May be [] when the KEK is
# given in the TOKENMINT_KEK environment variable instead.
kek_files = ["tokenmint.kek"]
# WatchJwks streams open at once (GetJwks and the HTTP JWKS are not limited by it).
max_jwks_watches = 10000

# With keys.custody = "pkcs11": the module, the token (token_label or token_serial) and
# where the user PIN is read from (pin_file, or the variable pin_env names; default
# TOKENMINT_PKCS11_PIN). The PIN is never written here. Sessions: opened at most
# (default: the machine's threads and two).
# [pkcs11]
# module = "/usr/lib/softhsm/libsofthsm2.so"
# token_label = "tokenmint"
# token_serial = "8e7e58849f0cd90d"
# pin_file = "/run/secrets/tokenmint-pkcs11-pin"
# pin_env = "TOKENMINT_PKCS11_PIN"
# sessions = 4

[tokens]
# Lifetime of a token when the request names none; at most max_lifetime.
default_lifetime = "5m"
# The ceiling of every token's lifetime.
max_lifetime = "1h"
# Clock skew tolerated when checking token times; at most 5m.
leeway = "30s"
# The most token exchanges (RFC 8693) behind one token: bounds delegation chains; 1 to 16.
max_exchange_depth = 4

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

[authz]
# `tokenmint authz`, the verification sidecar for proxies (nginx auth_request, Traefik
# ForwardAuth, Caddy forward_auth, Envoy's HTTP ext_authz). The forward-auth listener binds
# loopback only: the certificate header is believed because only the proxy can reach it.
listen = "127.0.0.1:9191"
ops_listen = "127.0.0.1:9192"
# Envoy's ext_authz over gRPC (envoy.service.auth.v3.Authorization), loopback only, or "off".
grpc_listen = "127.0.0.1:9193"
# Either may be a Unix socket instead, e.g. "unix:/run/tokenmint/authz.sock" (mode 0660).
# With proxy_ca, tls_cert and tls_key set (e.g. "certs/proxy-ca.pem", "certs/authz.pem",
# "certs/authz.key"), both TCP listeners speak TLS and answer only a proxy presenting a
# certificate from proxy_ca; then they may bind any address. Empty: plain, as the proxy is
# beside the sidecar.
proxy_ca = ""
tls_cert = ""
tls_key = ""
# The issuer tokens must name, and where keys and revocations are watched.
issuer = "https://localhost:8443"
issuer_endpoint = "https://localhost:8443"
# The issuer's CA, and the sidecar's identity there (a client with introspect).
ca = "certs/ca.pem"
cert = "certs/resource.pem"
key = "certs/resource.key"
audiences = ["https://demo.tokenmint.dev"]
# How the proxy forwards the caller's certificate: "nginx" ($ssl_client_escaped_cert),
# "traefik" (X-Forwarded-Tls-Client-Cert) or "envoy" (x-forwarded-client-cert).
certificate_format = "nginx"
certificate_header = "x-ssl-client-cert"
# The one header the original path is read from (for required_scopes): the one the proxy
# sets. Default: x-original-uri for nginx, x-forwarded-uri for traefik, "off" for envoy.
path_header = "x-original-uri"
# No word from the issuer for this long and every request is refused.
staleness = "15s"
# Scopes required under a path prefix, e.g. { "/admin" = ["demo:write"] }. The path is read
# as sent and as a server routes it (/public/../admin is /admin); both readings count.
required_scopes = {}
# Transaction tokens (draft-ietf-oauth-transaction-tokens): the trust domain whose tokens are
# taken (default: txn_tokens.trust_domain), and the path prefixes under which a Txn-Token
# header is required, with the purposes it must carry ([] for any), e.g.
# { "/orders" = ["orders:read"] }. A Txn-Token sent elsewhere is verified too.
# trust_domain = "spiffe://tokenmint.dev"
txn_required = {}

[audit]
# Issuance is audited on the log target tokenmint::audit::issuance: "counts" (per-client
# counts every issuance_interval), "sampled" (one token in issuance_sample), "every" or "off".
# Revocations, key rotations and admin changes are always audited, in the store.
issuance = "counts"
issuance_interval = "1m"
issuance_sample = 100
# Stored audit events older than this are removed.
retention = "400d"

# Transaction tokens (draft-ietf-oauth-transaction-tokens): off until a trust domain is set.
# [txn_tokens]
# The trust domain every transaction token is for (its aud), a URI.
# trust_domain = "spiffe://tokenmint.dev"
# How long one lives: one call chain; at most 5m.
# lifetime = "1m"

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

const RESOURCE_CLIENT_TOML: &str = r#"
# The development resource server, certs/resource.pem: the identity with which a resource
# server (the tokenmint-verify examples) watches keys and revocations. It gets no tokens.
[[clients]]
id = "demo-resource"
san_uri = "spiffe://tokenmint.dev/demo-resource"
scopes = []
audiences = []
# "introspect": it may introspect tokens for introspect_audiences, and watch revocations
# (WatchRevocations). Keys (WatchJwks, the JWKS) need no permission.
permissions = ["introspect"]
introspect_audiences = ["https://demo.tokenmint.dev"]
# Token exchange (RFC 8693): the audiences this client *is* (unique across clients; it may
# exchange tokens addressed to them), whom it may act for ("*": anyone), and what it may call
# and pass on when it does (delegate_audiences within audiences).
# serves = ["https://demo.tokenmint.dev"]
# act_for = ["demo"]
# delegate_audiences = []
# delegate_scopes = []
# Transaction tokens: whether this client may name the subject itself, in a self-signed JWT
# (signed with its certificate's key) or unsigned JSON — an edge gateway, never by default.
# asserts_txn_subjects = false
enabled = true
"#;
