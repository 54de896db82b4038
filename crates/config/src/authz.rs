//! `[authz]`: the verification sidecar's settings. Its defaults match `serve --dev` in the same
//! directory: the issuer is this configuration's, the CA is `certs/ca.pem`, the identity that
//! watches keys and revocations is `certs/resource.pem` (the client `demo-resource`), and the
//! audience is the demo one.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use tokenmint_core::forwarded::HeaderFormat;

use super::{ConfigError, ServerConfig, file::FileAuthz, validate::Validator};

/// `[authz]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzConfig {
    /// The forward-auth listener: a Unix socket, or a TCP address that is loopback unless the
    /// proxy must present a certificate ([`AuthzConfig::proxy_tls`]).
    pub listen: Listen,
    /// Envoy's ext_authz over gRPC, under the same rule (`None`: off).
    pub grpc_listen: Option<Listen>,
    /// TLS on the TCP listeners, the proxy's client certificate required (`None`: plain).
    pub proxy_tls: Option<ProxyTls>,
    /// `/healthz`, `/readyz`, `/metrics` (`None`: off).
    pub ops_listen: Option<SocketAddr>,
    /// The issuer tokens must name (`iss`).
    pub issuer: String,
    /// Where keys and revocations are watched (the issuer's URL unless set).
    pub issuer_endpoint: String,
    /// The CA of the issuer's certificate.
    pub ca: PathBuf,
    /// This sidecar's client certificate and key at the issuer (a client with `introspect`).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The audiences the protected service answers to.
    pub audiences: Vec<String>,
    /// The header the proxy puts the caller's certificate in (lower case).
    pub certificate_header: String,
    /// How the proxy encodes it.
    pub certificate_format: HeaderFormat,
    /// The header the proxy puts the original request target in, for per-path scopes (lower
    /// case; `None`: only the path a proxy appends to `/verify/`, as Envoy does).
    pub path_header: Option<String>,
    /// No word from the issuer for this long and every request is refused.
    pub staleness: Duration,
    /// Scopes required under a path prefix, longest prefix first.
    pub required_scopes: Vec<(String, Vec<String>)>,
    /// The trust domain whose transaction tokens are taken (`txn_tokens.trust_domain` unless
    /// set; `None`: none are, and a `Txn-Token` header is not looked at).
    pub trust_domain: Option<String>,
    /// Path prefixes under which a transaction token is required, with the purposes (scopes)
    /// it must carry (none: any), longest prefix first.
    pub txn_required: Vec<(String, Vec<String>)>,
}

/// Where a sidecar listener binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket (`unix:/run/tokenmint/authz.sock`), its file made readable and writable by
    /// its owner and group only: the directory and group say which proxy may reach it.
    Unix(PathBuf),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// TLS from the proxy: the sidecar's server certificate, and the CA the proxy's client
/// certificate must chain to (a connection without one is closed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyTls {
    /// The CA of the proxy's client certificate.
    pub ca: PathBuf,
    /// The sidecar's server certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// The sidecar's trust domain and the transaction tokens it requires by path.
type TxnRules = (Option<String>, Vec<(String, Vec<String>)>);

/// Defaults matching `serve --dev`.
const DEFAULT_LISTEN: &str = "127.0.0.1:9191";
const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:9193";
const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:9192";
const DEFAULT_CA: &str = "certs/ca.pem";
const DEFAULT_CERT: &str = "certs/resource.pem";
const DEFAULT_KEY: &str = "certs/resource.key";
const DEFAULT_AUDIENCE: &str = "https://demo.tokenmint.dev";

impl Validator<'_> {
    pub(super) fn authz(
        &self,
        a: FileAuthz,
        server: &ServerConfig,
        trust_domain: Option<&str>,
    ) -> Result<AuthzConfig, ConfigError> {
        let proxy_tls = self.proxy_tls(&a)?;
        let tls = proxy_tls.is_some();
        let listen = self.listen(
            "authz.listen",
            a.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
            tls,
        )?;
        let grpc_listen = match a
            .grpc_listen
            .as_deref()
            .unwrap_or(DEFAULT_GRPC_LISTEN)
            .trim()
        {
            "off" => None,
            raw => Some(self.listen("authz.grpc_listen", raw, tls)?),
        };
        let ops_listen = match a.ops_listen.as_deref().unwrap_or(DEFAULT_OPS_LISTEN).trim() {
            "off" => None,
            raw => Some(self.socket_addr("authz.ops_listen", raw, "or \"off\"")?),
        };
        let (certificate_header, certificate_format) = self.certificate_header(&a)?;
        let path_header = self.path_header(a.path_header.as_deref(), certificate_format)?;
        let required_scopes = self.path_rules("authz.required_scopes", a.required_scopes, true)?;
        let (trust_domain, txn_required) =
            self.authz_txn(a.trust_domain, a.txn_required, trust_domain)?;
        let issuer = a.issuer.unwrap_or_else(|| server.issuer.clone());
        let issuer_endpoint = a.issuer_endpoint.unwrap_or_else(|| issuer.clone());
        let audiences = a
            .audiences
            .unwrap_or_else(|| vec![DEFAULT_AUDIENCE.to_owned()]);
        if audiences.is_empty() || audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(self.error(
                "authz.audiences",
                format!(
                    "{} must name at least one audience, none empty",
                    self.label("authz.audiences")
                ),
            ));
        }
        let staleness = self.duration("authz.staleness", a.staleness.as_deref(), "15s")?;
        if staleness < Duration::from_secs(1) {
            return Err(self.error(
                "authz.staleness",
                format!(
                    "{} must be at least 1s (the issuer's heartbeat)",
                    self.label("authz.staleness")
                ),
            ));
        }
        Ok(AuthzConfig {
            listen,
            grpc_listen,
            proxy_tls,
            ops_listen,
            issuer,
            issuer_endpoint,
            ca: self.path("authz.ca", a.ca.as_deref(), DEFAULT_CA)?,
            cert: self.path("authz.cert", a.cert.as_deref(), DEFAULT_CERT)?,
            key: self.path("authz.key", a.key.as_deref(), DEFAULT_KEY)?,
            audiences,
            certificate_header,
            certificate_format,
            path_header,
            staleness,
            required_scopes,
            trust_domain,
            txn_required,
        })
    }

    /// `authz.trust_domain` (a URI as `txn_tokens.trust_domain` is; that one unless set) and
    /// `authz.txn_required`, which needs one.
    fn authz_txn(
        &self,
        raw: Option<String>,
        rules: std::collections::BTreeMap<String, Vec<String>>,
        default: Option<&str>,
    ) -> Result<TxnRules, ConfigError> {
        let domain = match raw {
            None => default.map(str::to_owned),
            Some(domain) if super::txn::is_uri(&domain) => Some(domain),
            Some(_) => {
                return Err(self.error(
                    "authz.trust_domain",
                    format!(
                        "{} must be a URI without spaces, such as \"spiffe://example.org\"",
                        self.label("authz.trust_domain")
                    ),
                ));
            }
        };
        let required = self.path_rules("authz.txn_required", rules, false)?;
        if !required.is_empty() && domain.is_none() {
            return Err(self.error(
                "authz.txn_required",
                format!(
                    "{} needs a trust domain: set authz.trust_domain or txn_tokens.trust_domain",
                    self.label("authz.txn_required")
                ),
            ));
        }
        Ok((domain, required))
    }

    /// A listener the proxy calls: a Unix socket, or a TCP address that is loopback unless
    /// the proxy must present a certificate (`tls`), because what it says of the caller's
    /// certificate is believed.
    fn listen(&self, key: &str, raw: &str, tls: bool) -> Result<Listen, ConfigError> {
        if let Some(path) = raw.trim().strip_prefix("unix:") {
            return Ok(Listen::Unix(self.path(
                key,
                Some(path),
                "/run/tokenmint/authz.sock",
            )?));
        }
        let addr = self.socket_addr(
            key,
            raw,
            "e.g. \"127.0.0.1:9191\", \"unix:PATH\" or \"off\"",
        )?;
        if !tls && !addr.ip().is_loopback() {
            return Err(self.error(
                key,
                format!(
                    "{} {addr} is not a loopback address: the sidecar believes the certificate the proxy forwards because only the proxy beside it can reach it; bind 127.0.0.1, ::1 or a Unix socket, or require the proxy's certificate with authz.proxy_ca",
                    self.label(key)
                ),
            ));
        }
        Ok(Listen::Tcp(addr))
    }

    /// `proxy_ca`, `tls_cert` and `tls_key`: all three, or none (unset or empty).
    fn proxy_tls(&self, a: &FileAuthz) -> Result<Option<ProxyTls>, ConfigError> {
        let set = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
        match (set(&a.proxy_ca), set(&a.tls_cert), set(&a.tls_key)) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(ProxyTls {
                ca: self.path("authz.proxy_ca", Some(&ca), "certs/proxy-ca.pem")?,
                cert: self.path("authz.tls_cert", Some(&cert), "certs/authz.pem")?,
                key: self.path("authz.tls_key", Some(&key), "certs/authz.key")?,
            })),
            _ => Err(self.error(
                "authz.proxy_ca",
                format!(
                    "{}, authz.tls_cert and authz.tls_key go together: set all three to require the proxy's certificate, or none",
                    self.label("authz.proxy_ca")
                ),
            )),
        }
    }

    /// The header holding the original request target: by default the one each proxy's
    /// shipped configuration sets (nginx `X-Original-URI`, Traefik and Caddy
    /// `X-Forwarded-Uri`), none for Envoy (which appends the path to `/verify/`); `"off"`
    /// for none.
    fn path_header(
        &self,
        raw: Option<&str>,
        format: HeaderFormat,
    ) -> Result<Option<String>, ConfigError> {
        let default = match format {
            HeaderFormat::Nginx => "x-original-uri",
            HeaderFormat::Traefik => "x-forwarded-uri",
            HeaderFormat::Envoy => "off",
        };
        let header = raw.unwrap_or(default).trim().to_ascii_lowercase();
        if header == "off" {
            return Ok(None);
        }
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(self.error(
                "authz.path_header",
                format!(
                    "{} `{header}` is not a header name (or \"off\")",
                    self.label("authz.path_header")
                ),
            ));
        }
        Ok(Some(header))
    }

    /// Scopes by path prefix, longest first. A prefix must be a path in its normal form
    /// (`/admin`, not `admin`, `/a/../admin` or `/%61dmin`), so it reads as the server routes
    /// it; each scope is named without spaces, and at least one is `needs_one`.
    fn path_rules(
        &self,
        key: &str,
        rules: std::collections::BTreeMap<String, Vec<String>>,
        needs_one: bool,
    ) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        for (prefix, scopes) in &rules {
            let normal = tokenmint_core::request_path::normalised(prefix);
            if normal.as_deref() != Some(prefix.as_str()) || prefix.contains(['%', '?', '#']) {
                return Err(self.error(
                    key,
                    format!(
                        "{} prefix `{}` is not a path in normal form: start it with `/`, without `.` or `..` segments, `//`, `%` escapes, `?` or `#`",
                        self.label(key),
                        prefix.escape_debug()
                    ),
                ));
            }
            if (needs_one && scopes.is_empty())
                || scopes
                    .iter()
                    .any(|s| s.trim().is_empty() || s.contains(' '))
            {
                let least = if needs_one {
                    "at least one scope, "
                } else {
                    "scopes, "
                };
                return Err(self.error(
                    key,
                    format!(
                        "{} under `{prefix}` must name {least}each without spaces",
                        self.label(key)
                    ),
                ));
            }
        }
        let mut rules: Vec<(String, Vec<String>)> = rules.into_iter().collect();
        rules.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(rules)
    }

    /// The certificate header and its format (`nginx` by default, its header
    /// `X-SSL-Client-Cert`; `traefik`; `envoy`).
    fn certificate_header(&self, a: &FileAuthz) -> Result<(String, HeaderFormat), ConfigError> {
        let format = match a.certificate_format.as_deref().unwrap_or("nginx").trim() {
            "nginx" => HeaderFormat::Nginx,
            "traefik" => HeaderFormat::Traefik,
            "envoy" => HeaderFormat::Envoy,
            other => {
                return Err(self.error(
                    "authz.certificate_format",
                    format!(
                        "{} `{other}` is not one of nginx, traefik, envoy",
                        self.label("authz.certificate_format")
                    ),
                ));
            }
        };
        let header = a
            .certificate_header
            .as_deref()
            .unwrap_or(format.default_header())
            .trim()
            .to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(self.error(
                "authz.certificate_header",
                format!(
                    "{} `{header}` is not a header name",
                    self.label("authz.certificate_header")
                ),
            ));
        }
        Ok((header, format))
    }
}
