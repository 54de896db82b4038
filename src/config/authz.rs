//! `[authz]`: the verification sidecar's settings. Its defaults match `serve --dev` in the same
//! directory: the issuer is this configuration's, the CA is `certs/ca.pem`, the identity that
//! watches keys and revocations is `certs/resource.pem` (the client `demo-resource`), and the
//! audience is the demo one.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use tokenmint_core::forwarded::HeaderFormat;

use super::{ConfigError, ServerConfig, file::FileAuthz, validate::Validator};

/// `[authz]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzConfig {
    /// The forward-auth listener (plain HTTP for the proxy beside it): loopback only.
    pub listen: SocketAddr,
    /// Envoy's ext_authz over gRPC (plain HTTP/2, for the proxy beside it): loopback only
    /// (`None`: off).
    pub grpc_listen: Option<SocketAddr>,
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
    /// No word from the issuer for this long and every request is refused.
    pub staleness: Duration,
    /// Scopes required under a path prefix, longest prefix first.
    pub required_scopes: Vec<(String, Vec<String>)>,
}

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
    ) -> Result<AuthzConfig, ConfigError> {
        let listen = self.loopback(
            "authz.listen",
            a.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
            "e.g. \"127.0.0.1:9191\"",
        )?;
        let grpc_listen = match a
            .grpc_listen
            .as_deref()
            .unwrap_or(DEFAULT_GRPC_LISTEN)
            .trim()
        {
            "off" => None,
            raw => Some(self.loopback("authz.grpc_listen", raw, "or \"off\"")?),
        };
        let ops_listen = match a.ops_listen.as_deref().unwrap_or(DEFAULT_OPS_LISTEN).trim() {
            "off" => None,
            raw => Some(self.socket_addr("authz.ops_listen", raw, "or \"off\"")?),
        };
        let (certificate_header, certificate_format) = self.certificate_header(&a)?;
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
        let mut required_scopes: Vec<(String, Vec<String>)> =
            a.required_scopes.into_iter().collect();
        required_scopes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(AuthzConfig {
            listen,
            grpc_listen,
            ops_listen,
            issuer,
            issuer_endpoint,
            ca: self.path("authz.ca", a.ca.as_deref(), DEFAULT_CA)?,
            cert: self.path("authz.cert", a.cert.as_deref(), DEFAULT_CERT)?,
            key: self.path("authz.key", a.key.as_deref(), DEFAULT_KEY)?,
            audiences,
            certificate_header,
            certificate_format,
            staleness,
            required_scopes,
        })
    }

    /// A listener the proxy beside the sidecar calls: loopback only, because what it says of
    /// the caller's certificate is believed.
    fn loopback(&self, key: &str, raw: &str, hint: &str) -> Result<SocketAddr, ConfigError> {
        let addr = self.socket_addr(key, raw, hint)?;
        if !addr.ip().is_loopback() {
            return Err(self.error(
                key,
                format!(
                    "{} {addr} is not a loopback address: the sidecar believes the certificate the proxy forwards because only the proxy beside it can reach it; bind 127.0.0.1 or ::1",
                    self.label(key)
                ),
            ));
        }
        Ok(addr)
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
