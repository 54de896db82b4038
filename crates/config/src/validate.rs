//! Validation: every value of the raw file checked and typed once, each error naming its
//! field (and the environment variable that set it).

use super::{file::*, *};

/// The four durations of `[keys]` that bound one another.
struct KeyTiming {
    jwks_max_age: Duration,
    publish_ahead: Duration,
    rotation_period: Duration,
    retention: Duration,
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// Turns a `FileConfig` into a `Config`, naming the field in every error.
pub(super) struct Validator<'a> {
    pub(super) file: &'a Path,
    pub(super) base_dir: &'a Path,
    /// `section.key` → the environment variable that set it.
    pub(super) env_vars: HashMap<String, String>,
}

/// A duration as written in messages: `5m`, `1h 30s`.
pub(super) fn show(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

impl Validator<'_> {
    /// The field's name as messages show it, with the variable that set it, if any.
    pub(super) fn label(&self, field: &str) -> String {
        match self.env_vars.get(field) {
            Some(var) => format!("{field} (set by {var})"),
            None => field.to_owned(),
        }
    }

    pub(super) fn error(&self, field: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            field: field.to_owned(),
            message,
        }
    }

    pub(super) fn duration(
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
    pub(super) fn lifetime(
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

    pub(super) fn path(
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

    pub(super) fn validate(
        &self,
        file: FileConfig,
        kek_from_env: bool,
    ) -> Result<Config, ConfigError> {
        let server = self.server(file.server)?;
        let tls = self.tls(file.tls)?;
        let tokens = self.tokens(file.tokens)?;
        let keys = self.keys(file.keys, file.pkcs11, &tokens, kek_from_env)?;
        let store = self.store(file.store, &keys, &tokens)?;
        let clients = self.clients(file.clients, &tokens)?;
        let revocation = self.revocation(file.revocation)?;
        let limits = self.limits(file.limits)?;
        let audit = self.audit(file.audit)?;
        let admin = self.admin(file.admin, &tls, &server)?;
        let txn_tokens = self.txn_tokens(file.txn_tokens)?;
        let domain = txn_tokens.as_ref().map(|t| t.trust_domain.as_str());
        let authz = self.authz(file.authz, &server, domain)?;
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
            authz,
            txn_tokens,
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
        let (max_concurrent_streams, max_header_list_size) = self.http2_limits(&s)?;
        let (keepalive_interval, keepalive_timeout) = self.keepalive(&s)?;
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
            max_concurrent_streams,
            max_header_list_size,
            keepalive_interval,
            keepalive_timeout,
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

    /// `server.max_concurrent_streams` and `server.max_header_list_size`: what one HTTP/2
    /// connection may hold.
    fn http2_limits(&self, s: &FileServer) -> Result<(u32, u32), ConfigError> {
        let streams = self.at_least_one(
            "server.max_concurrent_streams",
            s.max_concurrent_streams,
            DEFAULT_MAX_CONCURRENT_STREAMS,
            "HTTP/2 streams per connection",
        )?;
        let headers = self.at_least_one(
            "server.max_header_list_size",
            s.max_header_list_size,
            DEFAULT_MAX_HEADER_LIST_SIZE,
            "bytes of HTTP/2 headers",
        )?;
        Ok((streams, headers))
    }

    /// `server.keepalive_interval` and `server.keepalive_timeout`.
    fn keepalive(&self, s: &FileServer) -> Result<(Duration, Duration), ConfigError> {
        let interval = self.positive(
            "server.keepalive_interval",
            s.keepalive_interval.as_deref(),
            DEFAULT_KEEPALIVE_INTERVAL,
        )?;
        let timeout = self.positive(
            "server.keepalive_timeout",
            s.keepalive_timeout.as_deref(),
            DEFAULT_KEEPALIVE_TIMEOUT,
        )?;
        Ok((interval, timeout))
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
    pub(super) fn socket_addr(
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
        let max_exchange_depth = t.max_exchange_depth.unwrap_or(DEFAULT_MAX_EXCHANGE_DEPTH);
        if !(1..=MAX_EXCHANGE_DEPTH).contains(&max_exchange_depth) {
            return Err(self.error(
                "tokens.max_exchange_depth",
                format!(
                    "{} must be from 1 to {MAX_EXCHANGE_DEPTH}, not {max_exchange_depth}",
                    self.label("tokens.max_exchange_depth")
                ),
            ));
        }
        Ok(TokensConfig {
            default_lifetime,
            max_lifetime,
            leeway,
            max_exchange_depth,
        })
    }

    fn keys(
        &self,
        k: FileKeys,
        pkcs11: FilePkcs11,
        tokens: &TokensConfig,
        kek_from_env: bool,
    ) -> Result<KeysConfig, ConfigError> {
        let custody = self.custody(k.custody.as_deref(), pkcs11)?;
        let held = custody != KeyCustody::Sealed;
        let algorithm = self.algorithm(
            "keys.algorithm",
            k.algorithm.as_deref().unwrap_or(DEFAULT_ALGORITHM),
            held,
        )?;
        if algorithm.is_post_quantum() {
            return Err(self.error(
                "keys.algorithm",
                format!(
                    "{} is {algorithm}: post-quantum keys are published only in the full key set, which verifiers must ask for, so they cannot be the default; put {algorithm} in keys.also and name the audiences that take it in keys.audience_algorithms",
                    self.label("keys.algorithm")
                ),
            ));
        }
        let mut also = AlgorithmSet::EMPTY;
        for (i, name) in k.also.iter().flatten().enumerate() {
            also = also.with(self.algorithm(&format!("keys.also[{i}]"), name, held)?);
        }
        let rsa_bits = match k.rsa_bits {
            None => RsaBits::default(),
            Some(bits) => RsaBits::try_from_bits(bits).ok_or_else(|| {
                self.error(
                    "keys.rsa_bits",
                    format!(
                        "{} must be 2048 or 3072, not {bits}",
                        self.label("keys.rsa_bits")
                    ),
                )
            })?,
        };
        let signing =
            self.audience_algorithms(k.audience_algorithms.clone(), algorithm, also, held)?;
        let timing = self.key_timing(&k, tokens)?;
        let kek_files = self.kek_files(k.kek_files, kek_from_env)?;
        let max_jwks_watches = self.at_least_one(
            "keys.max_jwks_watches",
            k.max_jwks_watches,
            DEFAULT_MAX_JWKS_WATCHES,
            "WatchJwks streams open at once",
        )?;
        Ok(KeysConfig {
            custody,
            algorithm,
            also,
            rsa_bits,
            signing,
            rotation_period: timing.rotation_period,
            publish_ahead: timing.publish_ahead,
            jwks_max_age: timing.jwks_max_age,
            retention: timing.retention,
            kek_files,
            max_jwks_watches,
        })
    }

    /// An algorithm's JOSE name at `field`, one this build can sign with: make keys for and
    /// sign with when they are sealed here, verify when a token (`held`) makes and signs.
    fn algorithm(&self, field: &str, name: &str, held: bool) -> Result<Algorithm, ConfigError> {
        let algorithm = name.parse::<Algorithm>().map_err(|_| {
            self.error(
                field,
                format!(
                    "{} `{name}` is not supported: use one of {} (exact spelling)",
                    self.label(field),
                    Algorithm::ALL.map(Algorithm::as_str).join(", ")
                ),
            )
        })?;
        if held && algorithm.is_post_quantum() {
            return Err(self.error(
                field,
                format!(
                    "{} is {algorithm}: keys held in a PKCS#11 token are ES256, EdDSA, RS256 or PS256 (tokenmint does not yet hold ML-DSA keys in a token)",
                    self.label(field)
                ),
            ));
        }
        if held {
            return Ok(algorithm);
        }
        tokenmint_core::crypto::stack()
            .supports(algorithm)
            .map_err(|e| self.error(field, format!("{}: {e}", self.label(field))))?;
        Ok(algorithm)
    }

    /// `keys.audience_algorithms`: audience → algorithm, each one that signs (the default or
    /// one of `keys.also`).
    fn audience_algorithms(
        &self,
        map: Option<BTreeMap<String, String>>,
        default: Algorithm,
        also: AlgorithmSet,
        held: bool,
    ) -> Result<SigningChoice, ConfigError> {
        let mut by_audience = BTreeMap::new();
        for (audience, name) in map.unwrap_or_default() {
            let field = format!("keys.audience_algorithms.{audience:?}");
            let algorithm = self.algorithm(&field, &name, held)?;
            if algorithm != default && !also.contains(algorithm) {
                return Err(self.error(
                    &field,
                    format!(
                        "{} is {algorithm}, which does not sign here: add it to keys.also (or make it keys.algorithm)",
                        self.label(&field)
                    ),
                ));
            }
            by_audience.insert(audience, algorithm);
        }
        Ok(SigningChoice {
            default,
            by_audience,
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
            serves: c.serves,
            act_for: c.act_for,
            delegate_audiences: c.delegate_audiences,
            delegate_scopes: c.delegate_scopes,
            asserts_txn_subjects: c.asserts_txn_subjects.unwrap_or(false),
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
pub(super) fn check_issuer(issuer: &str) -> Result<(), &'static str> {
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
