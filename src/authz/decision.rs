//! One decision per request, written once for every proxy protocol: the bearer token and the
//! caller's certificate as the proxy forwarded them, checked by the verifier, then the scopes
//! the path requires. Each face (forward auth over HTTP, Envoy's ext_authz over gRPC) maps it
//! once, with the one status rule here.

use std::sync::Arc;

use http::StatusCode;
use tokenmint_core::forwarded::{self, ForwardedError, HeaderFormat};
use tokenmint_core::request_path;
use tokenmint_verify::{PeerCertificate, VerifiedToken, Verifier, VerifyError};

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
}

/// Allowed, with what goes upstream; or refused, and why.
#[derive(Debug)]
pub enum Decision {
    /// The token verified: its claims for the headers upstream.
    Allow(Arc<VerifiedToken>),
    /// Refused.
    Deny(Denial),
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
            | Denial::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Denial::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3), with no detail an attacker could use.
    pub fn challenge(&self) -> String {
        match self {
            Denial::NoToken => "Bearer".into(),
            Denial::InsufficientScope(scope) => format!(
                "Bearer error=\"insufficient_scope\", scope=\"{}\"",
                scope.replace(['"', '\\'], "'")
            ),
            _ => "Bearer error=\"invalid_token\"".into(),
        }
    }
}

/// The decision for `ask`, with `format` the proxy's certificate encoding and `scopes` the
/// required scopes by path prefix (longest first).
pub async fn decide(
    verifier: &Verifier,
    format: HeaderFormat,
    scopes: &[(String, Vec<String>)],
    ask: Ask<'_>,
) -> Decision {
    // The layer's own rule: another scheme, or `Bearer` with nothing after it, is no token.
    let Some(token) = ask
        .authorization
        .and_then(|v| tokenmint_verify::bearer(v).ok())
    else {
        return Decision::Deny(Denial::NoToken);
    };
    let certificate = match ask.certificate.map(str::trim).filter(|v| !v.is_empty()) {
        None => None,
        Some(value) => match forwarded::leaf_certificate(format, value) {
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
    if let Some(missing) = required_scopes(scopes, ask.path)
        .into_iter()
        .find(|s| !verified.has_scope(s))
    {
        return Decision::Deny(Denial::InsufficientScope(missing.to_owned()));
    }
    Decision::Allow(verified)
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
    if scopes.is_empty() {
        return Vec::new();
    }
    let longest = |path: &str| {
        scopes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map_or(&[][..], |(_, scopes)| scopes.as_slice())
    };
    let readings = target.and_then(|target| {
        Some([
            request_path::as_sent(target)?.to_owned(),
            request_path::normalised(target)?,
        ])
    });
    let mut required: Vec<&str> = match readings {
        Some(readings) => readings
            .iter()
            .flat_map(|p| longest(p))
            .map(String::as_str)
            .collect(),
        None => scopes
            .iter()
            .flat_map(|(_, s)| s)
            .map(String::as_str)
            .collect(),
    };
    required.sort_unstable();
    required.dedup();
    required
}

/// The headers an allowed request goes upstream with (every proxy example in `deploy/`
/// must pass each on, replacing any the caller sent).
pub const UPSTREAM_HEADERS: [&str; 6] = [
    "x-tokenmint-client-id",
    "x-tokenmint-subject",
    "x-tokenmint-actor",
    "x-tokenmint-scope",
    "x-tokenmint-audience",
    "x-tokenmint-jti",
];

/// The values of [`UPSTREAM_HEADERS`]: the client the token was issued to, whom it is for
/// (`sub`), for a delegated token the actors (the one acting now first, space-separated;
/// empty otherwise), the scopes, the audiences and the token id.
pub fn upstream_headers(token: &VerifiedToken) -> [(&'static str, String); 6] {
    let [client_id, subject, actor, scope, audience, jti] = UPSTREAM_HEADERS;
    [
        (client_id, token.client_id.clone()),
        (subject, token.subject.clone()),
        (actor, token.actors().join(" ")),
        (scope, token.scopes.join(" ")),
        (audience, token.audiences.join(" ")),
        (jti, token.token_id.clone()),
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
