//! What each fuzz target runs: the project's own code on the input, and nothing else but the
//! fixed context it needs (the published key set the seed tokens were signed with, one client).
//! A panic anywhere below is a finding; so is a broken property asserted here.
//!
//! The seed corpus (`corpus/<target>/`) and `jwks.json` are written by
//! `TOKENMINT_WRITE_FUZZ_CORPUS=1 cargo test --test integration fuzz_corpus`, from the forgery
//! vectors and the test fixtures; the same test checks them when not asked to write.

use std::{path::Path, sync::OnceLock, time::Duration};

use prost::Message as _;
use tokenmint_core::{
    client::{Client, LifetimeDefaults},
    clock::UnixTime,
    form::{self, Form},
    forwarded::{self, HeaderFormat},
    grant,
    identity::{CertificateIdentity, CertificateMatcher, DistinguishedName},
    jose::{self, KeySet},
    request_path, token,
};
use tokenmint_proto::{
    convert,
    v1::{ClientSpec, ExchangeTokenRequest, IssueTokenRequest},
};

/// The issuer the seed tokens name (the integration tests' own).
pub const ISSUER: &str = "https://tokenmint.test";

/// The key set the seed tokens are signed under (the forgery vectors' own).
fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        jose::parse_jwks(include_str!("../jwks.json"))
            .map(|parsed| parsed.keys)
            .unwrap_or_else(|_| KeySet::new(Vec::new()))
    })
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A compact JWS as an access token: `token::verify_signature` (the JOSE decoder, `typ`, the
/// key by `kid` and its algorithm, the signature, the claims' shape, the issuer), then the
/// times.
pub fn jws(data: &[u8]) {
    let Some(token) = text(data) else { return };
    if let Ok(verified) = token::verify_signature(token, keys(), ISSUER) {
        assert!(
            keys().find(&verified.kid).is_some(),
            "verified under an unpublished kid"
        );
        let _ = token::check_times(
            &verified.claims,
            UnixTime::from_secs(1_800_000_000),
            Duration::from_secs(60),
        );
    }
}

/// A JWK Set as a verifier reads one (`jose::parse_jwks`).
pub fn jwks(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = jose::parse_jwks(text);
    }
}

/// RFC 4514 names and certificate identities: a name that parses reads back the same from its
/// canonical form; every matcher kind over the input; the input as a certificate's DER, matched.
pub fn identity(data: &[u8]) {
    if let Some(text) = text(data) {
        if let Ok(name) = DistinguishedName::parse_rfc4514(text) {
            let again = DistinguishedName::parse_rfc4514(&name.canonical());
            assert_eq!(again.ok().map(|n| n.canonical()), Some(name.canonical()));
        }
        for kind in ["san_uri", "san_dns", "subject_dn", "self_signed"] {
            if let Ok(matcher) = CertificateMatcher::try_from_parts(kind, text) {
                let back = CertificateMatcher::try_from_parts(matcher.kind(), &matcher.value());
                assert_eq!(back.ok().as_ref(), Some(&matcher), "{kind} round trip");
            }
        }
    }
    if let Ok(identity) = CertificateIdentity::from_der(data) {
        let _ = identity.lookup_keys();
        if let Ok(matcher) = CertificateMatcher::try_san_uri("spiffe://tokenmint.dev/demo") {
            let _ = matcher.matches(&identity);
        }
    }
}

/// What a proxy forwards: the certificate header in each proxy's format, and the original
/// path, whose normal form must be its own normal form's.
pub fn forwarded(data: &[u8]) {
    let Some(text) = text(data) else { return };
    for format in [
        HeaderFormat::Nginx,
        HeaderFormat::Traefik,
        HeaderFormat::Envoy,
    ] {
        let _ = forwarded::leaf_certificate(format, text);
    }
    if let Some(path) = request_path::normalised(text) {
        assert!(path.starts_with('/') && !path.contains("//"), "{path:?}");
        let _ = request_path::as_sent(&path);
    }
}

/// The HTTP face's bodies: the input's first line is the `Authorization` value, the rest the
/// form, read as the token, introspection and revocation endpoints read it.
pub fn oauth_form(data: &[u8]) {
    let (authorization, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (Some(&data[..at]), &data[at + 1..]),
        None => (None, data),
    };
    let form = Form::parse(body);
    let _ = form::token_request(&form, authorization);
    let _ = form.check_no_repeats();
    let _ = form.required("token");
    let _ = form.single_as_sent("presented_certificate_thumbprint");
}

/// `tokenmint.toml` as `check-config` reads it (no environment, no file touched).
pub fn config(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = tokenmint_config::Config::from_toml_str(
            text,
            Path::new("fuzz.toml"),
            Path::new("/nonexistent"),
            Vec::new(),
        );
    }
}

/// The gRPC requests with rules: `IssueTokenRequest` through the client-credentials policy of
/// one client, `ExchangeTokenRequest` through the exchange policy (the client down-scoping a
/// token of its own: never broader, never longer), `ClientSpec` through the one client rule.
pub fn proto(data: &[u8]) {
    if let Ok(message) = IssueTokenRequest::decode(data) {
        let request = convert::token_request(message);
        let ceiling = Duration::from_secs(3600);
        if let Ok(grant) = grant::client_credentials(client(), &request, ceiling, None) {
            assert!(grant.lifetime <= client().max_lifetime && !grant.audiences.is_empty());
        }
    }
    if let Ok(message) = ExchangeTokenRequest::decode(data) {
        exchange(&convert::exchange_request(message));
    }
    if let Ok(spec) = ClientSpec::decode(data) {
        if let Ok(draft) = convert::client_draft(spec) {
            let _ = draft.build(LifetimeDefaults {
                default: Duration::from_secs(300),
                max: Duration::from_secs(3600),
            });
        }
    }
}

/// An exchange by the demo client of a token of its own.
fn exchange(request: &grant::ExchangeRequest) {
    let _ = request.issued_token_type();
    let thumbprint = tokenmint_core::crypto::CertificateThumbprint::of_der(b"demo");
    let subject = token::AccessTokenClaims {
        iss: "https://issuer".into(),
        sub: "demo".into(),
        client_id: "demo".into(),
        aud: token::Audience::One("https://demo.tokenmint.dev".into()),
        scope: Some("demo:read".into()),
        iat: UnixTime::from_secs(100),
        nbf: UnixTime::from_secs(100),
        exp: UnixTime::from_secs(400),
        jti: "subject".into(),
        cnf: token::Confirmation {
            x5t_s256: thumbprint.to_b64url(),
        },
        act: None,
        may_act: None,
        ancestors: Vec::new(),
    };
    let x = grant::Exchange {
        caller: client(),
        thumbprint: &thumbprint,
        subject: &subject,
        now: UnixTime::from_secs(200),
        ceiling: Duration::from_secs(3600),
        max_depth: 4,
    };
    if let Ok(grant) = grant::token_exchange(&x, &request.request) {
        assert!(
            grant.lifetime <= Duration::from_secs(200),
            "past the subject's expiry"
        );
        assert!(
            grant.audiences == ["https://demo.tokenmint.dev"],
            "broader audiences"
        );
        assert!(
            grant.scopes.iter().all(|s| s == "demo:read"),
            "broader scopes"
        );
        assert_eq!(grant.ancestors, [subject.as_ancestor()]);
    }
}

/// The demo client of `serve --dev`.
fn client() -> &'static Client {
    static CLIENT: OnceLock<Option<Client>> = OnceLock::new();
    let built = CLIENT.get_or_init(|| {
        let spec = ClientSpec {
            client_id: "demo".into(),
            san_uri: "spiffe://tokenmint.dev/demo".into(),
            scopes: vec!["demo:read".into(), "demo:write".into()],
            default_scopes: vec!["demo:read".into()],
            audiences: vec!["https://demo.tokenmint.dev".into()],
            permissions: vec!["issue".into()],
            ..ClientSpec::default()
        };
        let defaults = LifetimeDefaults {
            default: Duration::from_secs(300),
            max: Duration::from_secs(3600),
        };
        convert::client_draft(spec).ok()?.build(defaults).ok()
    });
    match built {
        Some(client) => client,
        None => panic!("the fuzz client does not build"),
    }
}
