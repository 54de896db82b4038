//! One decision per request, written once for every proxy protocol: the bearer token and the
//! caller's certificate as the proxy forwarded them, checked by the verifier, then the scopes
//! the path requires, then the transaction token (`Txn-Token`) where the path requires one or
//! the caller sent one. Each face (forward auth over HTTP, Envoy's ext_authz over gRPC) maps
//! it once, with the one status rule here.

use std::sync::Arc;

use http::StatusCode;
use tokenmint_core::forwarded::{self, ForwardedError, HeaderFormat};
use tokenmint_core::request_path;
use tokenmint_verify::{PeerCertificate, TxnToken, VerifiedToken, Verifier, VerifyError};

use crate::config::AuthzConfig;

/// What the proxy told us of a request.
#[derive(Debug)]
pub struct Ask<'a> {
    /// The original `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The certificate header's value (absent or empty: no certificate).
    pub certificate: Option<&'a str>,
    /// The original request target, as the proxy reported it (for per-path scopes); `None`
    /// when the proxy did not say.
    pub path: Option<&'a str>,
    /// The `Txn-Token` header (absent or empty: none).
    pub txn_token: Option<&'a str>,
}

/// What a request is held to, beside the token's own checks.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    /// How the proxy encodes the caller's certificate.
    pub format: HeaderFormat,
    /// Scopes required by path prefix, longest first.
    pub scopes: &'a [(String, Vec<String>)],
    /// Whether transaction tokens are looked at (the verifier has a trust domain).
    pub txn_tokens: bool,
    /// Purposes a transaction token must carry, by path prefix, longest first: a path under
    /// one needs a transaction token.
    pub txn_required: &'a [(String, Vec<String>)],
}

impl<'a> Rules<'a> {
    /// The rules `config` sets.
    pub fn of(config: &'a AuthzConfig) -> Self {
        Self {
            format: config.certificate_format,
            scopes: &config.required_scopes,
            txn_tokens: config.trust_domain.is_some(),
            txn_required: &config.txn_required,
        }
    }
}

/// Allowed, with what goes upstream; or refused, and why.
#[derive(Debug)]
pub enum Decision {
    /// The token verified: its claims for the headers upstream.
    Allow(Allowed),
    /// Refused.
    Deny(Denial),
}

/// An allowed request: the access token, and the transaction token if one came.
#[derive(Debug)]
pub struct Allowed {
    /// The access token's claims.
    pub token: Arc<VerifiedToken>,
    /// The transaction token's claims.
    pub txn: Option<TxnToken>,
}

/// Why a request is refused: the kinds every face maps to its statuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No bearer token: `401` with a bare challenge.
    NoToken,
    /// The token is not good (malformed, forged, expired, revoked, …): `401 invalid_token`.
    InvalidToken(&'static str),
    /// The token is good but not for this caller's certificate: `403`.
    WrongCertificate(&'static str),
    /// The certificate header is not what the proxy sends: `403`.
    BadCertificateHeader(ForwardedError),
    /// A scope the path requires is missing: `403 insufficient_scope`.
    InsufficientScope(String),
    /// The transaction token the path requires is missing, or the one sent is not good (or
    /// not from a workload with a certificate): `403`.
    TxnToken(&'static str),
    /// The transaction token lacks a purpose the path requires: `403`.
    TxnPurpose(String),
    /// The sidecar cannot vouch for its state (stale, not ready): refused, retry soon.
    Unavailable(&'static str),
}

impl Denial {
    /// A short stable label, for metrics and logs (never the token).
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::NoToken => "no_token",
            Denial::InvalidToken(reason) | Denial::WrongCertificate(reason) => reason,
            Denial::BadCertificateHeader(_) => "bad_certificate_header",
            Denial::InsufficientScope(_) => "insufficient_scope",
            Denial::TxnToken(reason) => reason,
            Denial::TxnPurpose(_) => "txn_insufficient_purpose",
            Denial::Unavailable(reason) => reason,
        }
    }

    /// The refusal's HTTP status: `401` when there is no good token, `403` when the token is
    /// good but not for this caller or this path, `503` when the sidecar cannot vouch for its
    /// state. A face whose proxy passes on only `401` and `403` (nginx) sends `503` as `401`.
    pub fn status(&self) -> StatusCode {
        match self {
            Denial::NoToken | Denial::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Denial::WrongCertificate(_)
            | Denial::BadCertificateHeader(_)
            | Denial::InsufficientScope(_)
            | Denial::TxnToken(_)
            | Denial::TxnPurpose(_) => StatusCode::FORBIDDEN,
            Denial::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3), with no detail an attacker could use.
    /// A transaction-token refusal is `invalid_request`: the bearer token was good, the request
    /// lacked what the path needs beside it.
    pub fn challenge(&self) -> String {
        match self {
            Denial::NoToken => "Bearer".into(),
            Denial::TxnToken(_) | Denial::TxnPurpose(_) => {
                "Bearer error=\"invalid_request\", error_description=\"Txn-Token\"".into()
            }
            Denial::InsufficientScope(scope) => format!(
                "Bearer error=\"insufficient_scope\", scope=\"{}\"",
                scope.replace(['"', '\\'], "'")
            ),
            _ => "Bearer error=\"invalid_token\"".into(),
        }
    }
}

/// The decision for `ask` under `rules`.
pub async fn decide(verifier: &Verifier, rules: Rules<'_>, ask: Ask<'_>) -> Decision {
    // The layer's own rule: another scheme, or `Bearer` with nothing after it, is no token.
    let Some(token) = ask
        .authorization
        .and_then(|v| tokenmint_verify::bearer(v).ok())
    else {
        return Decision::Deny(Denial::NoToken);
    };
    let certificate = match ask.certificate.map(str::trim).filter(|v| !v.is_empty()) {
        None => None,
        Some(value) => match forwarded::leaf_certificate(rules.format, value) {
            Ok(der) => Some(PeerCertificate::from_der(der)),
            Err(error) => return Decision::Deny(Denial::BadCertificateHeader(error)),
        },
    };
    let verified = match verifier
        .verify(token, certificate.as_ref(), verifier.now())
        .await
    {
        Ok(verified) => verified,
        Err(error) => return Decision::Deny(denial_of(&error)),
    };
    // The path is read once, for the scopes and the transaction token alike.
    let path = Readings::of(ask.path);
    if let Some(missing) = path
        .under(rules.scopes)
        .unwrap_or_default()
        .into_iter()
        .find(|s| !verified.has_scope(s))
    {
        return Decision::Deny(Denial::InsufficientScope(missing.to_owned()));
    }
    match transaction(verifier, rules, &ask, &path, certificate.as_ref()).await {
        Ok(txn) => Decision::Allow(Allowed {
            token: verified,
            txn,
        }),
        Err(denial) => Decision::Deny(denial),
    }
}

/// The transaction token of `ask`, verified as a receiving workload verifies it (from the
/// caller's certificate), where the path requires one or the caller sent one (a token sent
/// is never passed over unchecked), with the purposes the path requires.
async fn transaction(
    verifier: &Verifier,
    rules: Rules<'_>,
    ask: &Ask<'_>,
    path: &Readings,
    certificate: Option<&PeerCertificate>,
) -> Result<Option<TxnToken>, Denial> {
    if !rules.txn_tokens {
        return Ok(None);
    }
    let required = path.under(rules.txn_required);
    let sent = ask.txn_token.map(str::trim).filter(|t| !t.is_empty());
    let token = match (sent, &required) {
        (None, None) => return Ok(None),
        (None, Some(_)) => return Err(Denial::TxnToken("txn_token_missing")),
        (Some(token), _) => token,
    };
    let txn = match verifier
        .verify_txn(token, certificate, verifier.now())
        .await
    {
        Ok(txn) => txn,
        Err(error) if error.is_unavailable() => return Err(Denial::Unavailable(error.reason())),
        Err(_) => return Err(Denial::TxnToken("txn_token_invalid")),
    };
    let held = txn.scopes();
    if let Some(missing) = required.into_iter().flatten().find(|p| !held.contains(p)) {
        return Err(Denial::TxnPurpose(missing.to_owned()));
    }
    Ok(Some(txn))
}

/// The scopes a request to `target` must hold, given the required scopes by path prefix
/// (longest first): those of the longest prefix of the path as sent and those of the longest
/// prefix of the path as a server routes it (`/public/../admin` is `/admin`), so no way of
/// reading the path asks for less. A target that is missing or has no path reading is held to
/// every prefix's scopes.
pub fn required_scopes<'a>(
    scopes: &'a [(String, Vec<String>)],
    target: Option<&str>,
) -> Vec<&'a str> {
    under(scopes, target).unwrap_or_default()
}

/// The scopes of the rules `target` falls under (the longest prefix of each reading, as for
/// [`required_scopes`]), or `None` when it falls under none.
pub fn under<'a>(rules: &'a [(String, Vec<String>)], target: Option<&str>) -> Option<Vec<&'a str>> {
    Readings::of(target).under(rules)
}

/// A request target's two readings: as sent and as a server routes it (`None`: the proxy did
/// not say, or the target has no path reading).
pub struct Readings(Option<[String; 2]>);

impl Readings {
    /// The readings of `target`.
    pub fn of(target: Option<&str>) -> Self {
        Self(target.and_then(|target| {
            Some([
                request_path::as_sent(target)?.to_owned(),
                request_path::normalised(target)?,
            ])
        }))
    }

    /// The scopes of the rules the path falls under: the longest prefix of each reading; of
    /// every rule when there is no reading; `None` when it falls under none.
    pub fn under<'a>(&self, rules: &'a [(String, Vec<String>)]) -> Option<Vec<&'a str>> {
        if rules.is_empty() {
            return None;
        }
        let longest = |path: &str| {
            rules
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        };
        let matched: Vec<&(String, Vec<String>)> = match &self.0 {
            Some(readings) => readings.iter().filter_map(|p| longest(p)).collect(),
            None => rules.iter().collect(),
        };
        if matched.is_empty() {
            return None;
        }
        let mut required: Vec<&str> = matched
            .iter()
            .flat_map(|(_, s)| s)
            .map(String::as_str)
            .collect();
        required.sort_unstable();
        required.dedup();
        Some(required)
    }
}

/// The headers an allowed request goes upstream with (every proxy example in `deploy/`
/// must pass each on, replacing any the caller sent).
pub const UPSTREAM_HEADERS: [&str; 9] = [
    "x-tokenmint-client-id",
    "x-tokenmint-subject",
    "x-tokenmint-actor",
    "x-tokenmint-scope",
    "x-tokenmint-audience",
    "x-tokenmint-jti",
    "x-tokenmint-txn",
    "x-tokenmint-txn-subject",
    "x-tokenmint-txn-scope",
];

/// The values of [`UPSTREAM_HEADERS`]: the client the token was issued to, whom it is for
/// (`sub`), for a delegated token the actors (the one acting now first, space-separated;
/// empty otherwise), the scopes, the audiences and the token id; then, where a transaction
/// token came, its transaction id, subject and purpose (empty otherwise).
pub fn upstream_headers(allowed: &Allowed) -> [(&'static str, String); 9] {
    let [
        client_id,
        subject,
        actor,
        scope,
        audience,
        jti,
        txn,
        txn_subject,
        txn_scope,
    ] = UPSTREAM_HEADERS;
    let token = &allowed.token;
    let of_txn =
        |value: fn(&TxnToken) -> String| allowed.txn.as_ref().map(value).unwrap_or_default();
    [
        (client_id, token.client_id.clone()),
        (subject, token.subject.clone()),
        (actor, token.actors().join(" ")),
        (scope, token.scopes.join(" ")),
        (audience, token.audiences.join(" ")),
        (jti, token.token_id.clone()),
        (txn, of_txn(|t| t.txn.clone())),
        (txn_subject, of_txn(|t| t.sub.clone())),
        (txn_scope, of_txn(|t| t.scope.clone())),
    ]
}

fn denial_of(error: &VerifyError) -> Denial {
    match error {
        VerifyError::CertificateMismatch | VerifyError::CertificateRequired => {
            Denial::WrongCertificate(error.reason())
        }
        error if error.is_unavailable() => Denial::Unavailable(error.reason()),
        error => Denial::InvalidToken(error.reason()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy example that left a header out would let a caller's own header of that name
    /// through to the service, naming whoever it likes.
    #[test]
    fn every_proxy_example_passes_every_upstream_header() {
        let examples = [
            (
                "nginx",
                include_str!("../../deploy/nginx/tokenmint-authz.conf"),
            ),
            ("caddy", include_str!("../../deploy/caddy/Caddyfile")),
            (
                "traefik",
                include_str!("../../deploy/traefik/tokenmint-authz.yml"),
            ),
        ];
        for (proxy, text) in examples {
            let text = text.to_ascii_lowercase();
            for header in UPSTREAM_HEADERS {
                assert!(text.contains(header), "{proxy} does not pass {header} on");
            }
        }
        let envoy = include_str!("../../deploy/envoy/envoy.yaml");
        assert!(
            envoy.contains("prefix: x-tokenmint-"),
            "envoy passes x-tokenmint-* on"
        );
    }

    fn rules() -> Vec<(String, Vec<String>)> {
        vec![
            ("/admin/keys".into(), vec!["keys:admin".into()]),
            ("/admin".into(), vec!["admin".into()]),
            ("/".into(), vec!["read".into()]),
        ]
    }

    #[test]
    fn the_longest_prefix_of_the_path_sets_the_scopes() {
        let rules = rules();
        assert_eq!(
            required_scopes(&rules, Some("/admin/keys/1")),
            ["keys:admin"]
        );
        assert_eq!(required_scopes(&rules, Some("/admin?x=/")), ["admin"]);
        assert_eq!(required_scopes(&rules, Some("/orders")), ["read"]);
        assert!(required_scopes(&[], Some("/admin")).is_empty());
    }

    #[test]
    fn a_path_that_routes_elsewhere_than_it_reads_is_held_to_both() {
        let rules = rules();
        for target in [
            "/public/../admin",
            "/%61dmin",
            "//admin",
            "/./admin",
            "/public/%2e%2e/admin",
            "http://host/admin",
        ] {
            let required = required_scopes(&rules, Some(target));
            assert!(required.contains(&"admin"), "{target}: {required:?}");
        }
        assert_eq!(
            required_scopes(&rules, Some("/x/../admin/keys")),
            ["keys:admin", "read"]
        );
    }

    #[test]
    fn a_path_under_a_rule_without_scopes_still_falls_under_it() {
        let rules = vec![
            ("/orders/admin".to_owned(), vec!["orders:write".to_owned()]),
            ("/orders".to_owned(), vec![]),
        ];
        assert_eq!(under(&rules, Some("/orders/7")), Some(vec![]));
        assert_eq!(
            under(&rules, Some("/orders/admin/x")),
            Some(vec!["orders:write"])
        );
        assert_eq!(
            under(&rules, Some("/status/../orders/admin")),
            Some(vec!["orders:write"])
        );
        assert_eq!(under(&rules, Some("/status")), None);
        assert_eq!(under(&rules, None), Some(vec!["orders:write"]));
        assert_eq!(under(&[], None), None);
    }

    #[test]
    fn a_request_whose_path_is_unknown_is_held_to_every_prefix() {
        let rules = rules();
        for target in [None, Some("*"), Some("admin"), Some("")] {
            assert_eq!(
                required_scopes(&rules, target),
                ["admin", "keys:admin", "read"],
                "{target:?}"
            );
        }
    }
}
