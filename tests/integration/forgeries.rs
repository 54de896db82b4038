//! The forgery vectors: tokens that a correct verifier of tokenmint's access tokens must
//! refuse, as data. The list is shared: the issuer's introspection tests (`introspect.rs`)
//! expect the bare `active: false` for each, and the resource servers' offline verifier's
//! tests expect a refusal for each. Add a vector here and both sides run it.
//!
//! Each vector is a well-formed token for the demo client with one defect, named by its class
//! (`CLASSES`). The defect is in the token itself, judged against the issuer's published keys,
//! its name and the audience: a correct verifier refuses every vector whatever the audiences
//! its caller may see, whatever has been revoked, and whichever certificate is presented.
//! Cases that depend on state kept by the server (a revoked token, a disabled or unregistered
//! client) stay in their own tests. `control` is the token without a defect, signed by the same
//! key; a verifier must accept it, which shows that each refusal is due to the defect.
//!
//! The `high-s` vector assumes the signing key was created after the low-S cut-over
//! (`docs/key-lifecycle.md`), as every key a fresh server creates is; it exists only for ES256.

use serde_json::{Value, json};
use tokenmint::pki::Issued;
use tokenmint_core::{
    clock::{Clock as _, SystemClock, UnixTime},
    crypto::{Algorithm, CertificateThumbprint, PublicKey, SigningKey, b64url, b64url_decode},
    keys::KeyId,
};

use crate::support::*;

/// Every class of forgery; `vectors` has at least one of each.
pub const CLASSES: &[&str] = &[
    // Not a compact JWS with a JSON object for header and payload.
    "malformed",
    // `alg: none` in any spelling, with or without a signature.
    "alg-none",
    // An `alg` absent or other than the key's, over a signature valid for its own algorithm.
    "alg-mismatch",
    // HS256/384/512 keyed with the public key, in every form a verifier might hold it.
    "hmac-key-confusion",
    // An all-zero signature, or one with r or s zero (CVE-2022-21449).
    "zero-signature",
    // The high-S twin (r, n − s) of a valid ES256 signature.
    "high-s",
    // A signature that does not match: altered, truncated, re-encoded, or over altered bytes.
    "bad-signature",
    // Validly signed by a key the issuer never published.
    "foreign-key",
    // A header naming its own key: `jwk`, `jku`, `x5u`, `x5c`.
    "embedded-key",
    // A `kid` that is a path.
    "kid-traversal",
    // No `kid`, or an empty one.
    "missing-kid",
    // A `kid` that is not one the issuer published, exactly.
    "unknown-kid",
    // No `typ`.
    "missing-typ",
    // A `typ` other than `at+jwt`.
    "wrong-typ",
    // Validly signed by the issuer's key over claims that are wrong, missing or of a wrong type.
    "bad-claims",
];

/// One forged token: its class (one of `CLASSES`), what is wrong with it, and the token.
#[derive(Clone, Debug)]
pub struct Forgery {
    /// One of `CLASSES`.
    pub class: &'static str,
    /// What is wrong with it; unique within its class.
    pub name: String,
    /// The compact token.
    pub token: String,
}

impl Forgery {
    fn new(class: &'static str, name: impl Into<String>, token: String) -> Self {
        Self {
            class,
            name: name.into(),
            token,
        }
    }
}

/// What the vectors are made from: the issuer's real key, what a verifier holds, and the
/// binding and claims of the demo client's token.
pub struct ForgeryContext {
    /// The issuer's current signing key (`Setup::current_signing_key`).
    pub key: SigningKey,
    /// Its kid.
    pub kid: String,
    /// The issuer's JWK Set text, as published; it holds `kid`.
    pub jwks_json: String,
    /// The issuer name the claims carry.
    pub issuer: String,
    /// The audience the claims carry.
    pub audience: String,
    /// The client the claims name, as `sub` and `client_id`.
    pub client_id: String,
    /// The scope the claims carry.
    pub scope: String,
    /// The certificate the token is bound to (`cnf.x5t#S256`), DER.
    pub bound_certificate_der: Vec<u8>,
    /// That certificate's private key: one the client CA vouches for, but never a token signer.
    pub bound_key: SigningKey,
    /// A key the issuer never published (ES256).
    pub foreign_key: SigningKey,
    /// Its kid (its RFC 7638 thumbprint, as tokenmint names keys).
    pub foreign_kid: String,
    /// A self-signed certificate for it, DER.
    pub foreign_certificate_der: Vec<u8>,
    /// The URL the `jku` and `x5u` vectors name; no verifier may connect to it.
    pub key_url: String,
    /// The time the claims are valid at.
    pub now: UnixTime,
}

impl ForgeryContext {
    /// The context for a running server: its current key and JWK Set, the demo client's
    /// claims bound to `bound`, valid now.
    pub async fn of(setup: &Setup, server: &TestServer, bound: &Issued, key_url: &str) -> Self {
        let (kid, key) = setup.current_signing_key().await;
        let jwks_json = server.jwks().await.jwks_json;
        Self::new(kid, key, jwks_json, bound, key_url)
    }

    /// The context for `key` published under `kid` in `jwks_json`: the demo client's claims
    /// bound to `bound`, valid now.
    pub fn new(
        kid: String,
        key: SigningKey,
        jwks_json: String,
        bound: &Issued,
        key_url: &str,
    ) -> Self {
        let (foreign_key, foreign_pkcs8) = SigningKey::generate(Algorithm::Es256).unwrap();
        let foreign_pair = rcgen::KeyPair::try_from(foreign_pkcs8.as_slice()).unwrap();
        let foreign_certificate_der = rcgen::CertificateParams::new(["forger.example".to_owned()])
            .unwrap()
            .self_signed(&foreign_pair)
            .unwrap()
            .der()
            .to_vec();
        let bound_pkcs8 = rcgen::KeyPair::from_pem(&bound.key_pem)
            .unwrap()
            .serialize_der();
        Self {
            foreign_kid: KeyId::of(&foreign_key.public_key()).to_string(),
            foreign_key,
            foreign_certificate_der,
            bound_key: SigningKey::try_from_pkcs8(Algorithm::Es256, &bound_pkcs8).unwrap(),
            bound_certificate_der: bound.cert_der.clone(),
            key,
            kid,
            jwks_json,
            issuer: ISSUER.to_owned(),
            audience: DEMO_AUDIENCE.to_owned(),
            client_id: "demo".to_owned(),
            scope: "demo:read".to_owned(),
            key_url: key_url.to_owned(),
            now: SystemClock.unix_now(),
        }
    }

    /// The issuer's JWK for `kid`, from the published set.
    pub fn published_jwk(&self) -> Value {
        let set: Value = serde_json::from_str(&self.jwks_json).unwrap();
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == self.kid.as_str())
            .expect("the JWK Set holds the context's kid")
            .clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Building tokens by hand.

/// `value` as JSON text, base64url.
pub fn b64_json(value: &Value) -> String {
    b64url(value.to_string().as_bytes())
}

/// `bytes` in standard, padded base64 (as `x5c` and PEM carry them).
fn b64_standard(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

/// A compact JWS of `header` and `claims` (as JSON text) with the given signature bytes.
pub fn with_signature(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64_json(header),
        b64_json(claims),
        b64url(signature)
    )
}

/// A compact JWS of `header` and `claims`, signed by `key` over exactly those bytes.
pub fn forge(header: Value, claims: Value, key: &SigningKey) -> String {
    let input = format!("{}.{}", b64_json(&header), b64_json(&claims));
    let signature = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64url(&signature))
}

/// The header tokenmint signs with, for a key of `algorithm` under `kid`.
pub fn header_for(algorithm: Algorithm, kid: &str) -> Value {
    json!({"alg": algorithm.as_str(), "typ": "at+jwt", "kid": kid})
}

/// The header tokenmint signs with under the context's key.
pub fn good_header(ctx: &ForgeryContext) -> Value {
    header_for(ctx.key.algorithm(), &ctx.kid)
}

/// Every claim of `AccessTokenClaims`, right for the context's client and binding, valid at
/// the context's time for five minutes, with a fresh `jti`.
pub fn good_claims(ctx: &ForgeryContext) -> Value {
    let now = ctx.now.as_secs();
    json!({
        "iss": ctx.issuer,
        "sub": ctx.client_id,
        "client_id": ctx.client_id,
        "aud": ctx.audience,
        "scope": ctx.scope,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": tokenmint_core::crypto::random_id().unwrap(),
        "cnf": {"x5t#S256": CertificateThumbprint::of_der(&ctx.bound_certificate_der).to_b64url()},
    })
}

/// A valid token: the good header and claims, signed by the context's key. Every verifier
/// must accept it.
pub fn control(ctx: &ForgeryContext) -> String {
    forge(good_header(ctx), good_claims(ctx), &ctx.key)
}

/// `claims` with `key` set to `value` (`Value::Null` removes it).
pub fn with(mut claims: Value, key: &str, value: Value) -> Value {
    let object = claims.as_object_mut().unwrap();
    if value.is_null() {
        object.remove(key);
    } else {
        object.insert(key.to_owned(), value);
    }
    claims
}

/// A public key as a JWK under `kid`.
pub fn jwk_of(public: &PublicKey, kid: &str) -> Value {
    match public {
        PublicKey::P256 { x, y } => {
            json!({"kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y), "kid": kid})
        }
        PublicKey::Ed25519 { x } => {
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(x), "kid": kid})
        }
        other => panic!("the forgery suite runs on ES256 and EdDSA keys, not {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// ES256 signature arithmetic, independent of tokenmint's own.

/// The order n of the P-256 group, big-endian.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// ⌊n / 2⌋, big-endian: the largest low s.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// The signature bytes of an ES256 compact JWS.
pub fn signature_of(token: &str) -> Vec<u8> {
    let (_, signature) = token.rsplit_once('.').unwrap();
    let signature = b64url_decode(signature).unwrap();
    assert_eq!(signature.len(), 64, "ES256 signs r ‖ s, 32 bytes each");
    signature
}

/// Whether an ES256 signature's s is above n/2 (equal-length big-endian bytes compare as the
/// numbers do).
pub fn is_high_s(signature: &[u8]) -> bool {
    signature[32..] > HALF_ORDER[..]
}

/// The same ES256 token with (r, n − s): the other valid signature over the same bytes.
pub fn es256_twin(token: &str) -> String {
    let signature = signature_of(token);
    let mut out = signature.clone();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut digit = i16::from(ORDER[i]) - i16::from(signature[32 + i]) - borrow;
        borrow = i16::from(digit < 0);
        if digit < 0 {
            digit += 256;
        }
        out[32 + i] = u8::try_from(digit).unwrap();
    }
    assert_eq!(borrow, 0, "0 < s < n");
    let (input, _) = token.rsplit_once('.').unwrap();
    format!("{input}.{}", b64url(&out))
}

/// Converts a fixed-size ES256 signature (r ‖ s) to its ASN.1 DER form.
fn der_of_fixed(fixed: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let start = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        let mut value = bytes[start..].to_vec();
        if value[0] & 0x80 != 0 {
            value.insert(0, 0);
        }
        let mut out = vec![0x02, u8::try_from(value.len()).unwrap()];
        out.extend(value);
        out
    }
    assert_eq!(fixed.len(), 64);
    let mut body = integer(&fixed[..32]);
    body.extend(integer(&fixed[32..]));
    let mut out = vec![0x30, u8::try_from(body.len()).unwrap()];
    out.extend(body);
    out
}

/// HMAC of `input` under `secret` with the hash an `HS*` name names (RustCrypto: a forger's
/// tool independent of the server's stack).
fn hmac_tag(alg: &str, secret: &[u8], input: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac as _};
    use sha2::{Sha256, Sha384, Sha512};
    match alg {
        "HS256" => Hmac::<Sha256>::new_from_slice(secret)
            .unwrap()
            .chain_update(input)
            .finalize()
            .into_bytes()
            .to_vec(),
        "HS384" => Hmac::<Sha384>::new_from_slice(secret)
            .unwrap()
            .chain_update(input)
            .finalize()
            .into_bytes()
            .to_vec(),
        "HS512" => Hmac::<Sha512>::new_from_slice(secret)
            .unwrap()
            .chain_update(input)
            .finalize()
            .into_bytes()
            .to_vec(),
        other => panic!("not an HMAC algorithm: {other}"),
    }
}

/// A compact JWS of `header` and `claims` with an `alg` HMAC under `secret`.
fn hmac_signed(alg: &str, header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let tag = hmac_tag(alg, secret, input.as_bytes());
    format!("{input}.{}", b64url(&tag))
}

// ---------------------------------------------------------------------------------------------
// The vectors.

/// Every forgery, each class in turn.
pub fn vectors(ctx: &ForgeryContext) -> Vec<Forgery> {
    [
        malformed(ctx),
        alg_none(ctx),
        alg_mismatch(ctx),
        hmac_key_confusion(ctx),
        zero_signature(ctx),
        high_s(ctx),
        bad_signature(ctx),
        tampered(ctx),
        foreign_key(ctx),
        embedded_key(ctx),
        kid_traversal(ctx),
        kid(ctx),
        typ(ctx),
        bad_claims(ctx),
        missing_claims(ctx),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The control token's parts: signed once, then taken apart and put together wrong.
struct Signed {
    header: Value,
    claims: Value,
    input: String,
    signature: Vec<u8>,
}

impl Signed {
    fn control(ctx: &ForgeryContext) -> Self {
        let (header, claims) = (good_header(ctx), good_claims(ctx));
        let input = format!("{}.{}", b64_json(&header), b64_json(&claims));
        let signature = ctx.key.sign(input.as_bytes()).unwrap();
        Self {
            header,
            claims,
            input,
            signature,
        }
    }

    /// The signing input with `signature` (base64url) after it.
    fn signed_with(&self, signature: &[u8]) -> String {
        format!("{}.{}", self.input, b64url(signature))
    }

    fn token(&self) -> String {
        self.signed_with(&self.signature)
    }
}

fn malformed(ctx: &ForgeryContext) -> Vec<Forgery> {
    let good = control(ctx);
    let (input, _) = good.rsplit_once('.').unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let v = |name: &str, token: String| Forgery::new("malformed", name, token);
    vec![
        v("garbage", "this is not a token".into()),
        v("empty", String::new()),
        v("two dots", "..".into()),
        v("three dots", "...".into()),
        v("a.b.c", "a.b.c".into()),
        v("no signature part", input.to_owned()),
        v("empty signature", format!("{input}.")),
        v("four parts", format!("{good}.{}", parts[2])),
        v(
            "payload not JSON",
            format!("{}.{}.{}", parts[0], b64url(b"not json"), parts[2]),
        ),
        v(
            "payload a JSON array",
            format!("{}.{}.{}", parts[0], b64url(b"[]"), parts[2]),
        ),
        v(
            "header not base64url",
            format!("!!!.{}.{}", parts[1], parts[2]),
        ),
        v("signature not base64url", format!("{input}.***")),
        v("JWE-shaped (five parts)", format!("{}.a.b.c.d", parts[0])),
        v(
            "header a JSON array",
            format!("{}.{}.{}", b64url(b"[]"), parts[1], b64url(&[0u8; 64])),
        ),
    ]
}

fn alg_none(ctx: &ForgeryContext) -> Vec<Forgery> {
    let ours = ctx.key.algorithm().as_str();
    let mut out = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": ctx.kid});
        out.push(Forgery::new(
            "alg-none",
            format!("alg {alg}, empty signature"),
            with_signature(&header, &good_claims(ctx), &[]),
        ));
        // …and with a valid signature by our key over the same input.
        out.push(Forgery::new(
            "alg-none",
            format!("alg {alg}, a valid {ours} signature"),
            forge(header, good_claims(ctx), &ctx.key),
        ));
    }
    out
}

fn alg_mismatch(ctx: &ForgeryContext) -> Vec<Forgery> {
    let ours = ctx.key.algorithm();
    let header = |alg: &str| json!({"alg": alg, "typ": "at+jwt", "kid": ctx.kid});
    let mut out = vec![Forgery::new(
        "alg-mismatch",
        "no alg",
        forge(
            json!({"typ": "at+jwt", "kid": ctx.kid}),
            good_claims(ctx),
            &ctx.key,
        ),
    )];
    // Another asymmetric algorithm under our kid, validly signed by a key of that algorithm.
    let other = match ours {
        Algorithm::Es256 => Algorithm::EdDsa,
        _ => Algorithm::Es256,
    };
    let (other_key, _) = SigningKey::generate(other).unwrap();
    out.push(Forgery::new(
        "alg-mismatch",
        format!("{} under our {} kid", other.as_str(), ours.as_str()),
        forge(header(other.as_str()), good_claims(ctx), &other_key),
    ));
    // Our key's valid signature under another algorithm's name.
    let lower = ours.as_str().to_lowercase();
    for alg in ["ES384", "ES512", "RS256", "PS256", lower.as_str()] {
        out.push(Forgery::new(
            "alg-mismatch",
            format!("alg {alg} over a valid {} signature", ours.as_str()),
            forge(header(alg), good_claims(ctx), &ctx.key),
        ));
    }
    out
}

/// The DER SubjectPublicKeyInfo of a P-256 key up to its SEC1 point (RFC 5480).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// The DER SubjectPublicKeyInfo of an Ed25519 key up to the key (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER SubjectPublicKeyInfo of `public`: what a PEM `PUBLIC KEY` holds.
fn spki_der(public: &PublicKey) -> Vec<u8> {
    match public {
        PublicKey::P256 { x, y } => [&P256_SPKI_PREFIX[..], &[0x04], x, y].concat(),
        PublicKey::Ed25519 { x } => [&ED25519_SPKI_PREFIX[..], x].concat(),
        other => panic!("the forgery suite runs on ES256 and EdDSA keys, not {other:?}"),
    }
}

/// The issuer's public key in every form a verifier might hold it, as bytes.
fn public_key_forms(ctx: &ForgeryContext) -> Vec<(&'static str, Vec<u8>)> {
    let jwk = ctx.published_jwk();
    let public = ctx.key.public_key();
    let spki = spki_der(&public);
    let mut forms = match public {
        PublicKey::P256 { x, y } => vec![
            ("the SEC1 point", [&[0x04][..], &x, &y].concat()),
            ("x ‖ y", [x, y].concat()),
        ],
        PublicKey::Ed25519 { x } => vec![("the raw public key", x)],
        other => panic!("the forgery suite runs on ES256 and EdDSA keys, not {other:?}"),
    };
    forms.extend([
        ("the JWKS JSON text", ctx.jwks_json.clone().into_bytes()),
        ("the JWK JSON text", jwk.to_string().into_bytes()),
        (
            "the JWK's x",
            jwk["x"].as_str().unwrap().as_bytes().to_vec(),
        ),
        ("the kid", ctx.kid.clone().into_bytes()),
        (
            "the SPKI PEM text",
            pem_of("PUBLIC KEY", &spki).into_bytes(),
        ),
        ("the SPKI DER", spki),
    ]);
    forms
}

/// `der` as a PEM block with `label`.
fn pem_of(label: &str, der: &[u8]) -> String {
    let text = b64_standard(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn hmac_key_confusion(ctx: &ForgeryContext) -> Vec<Forgery> {
    let mut out = Vec::new();
    for alg in ["HS256", "HS384", "HS512"] {
        for (what, secret) in public_key_forms(ctx) {
            let header = json!({"alg": alg, "typ": "at+jwt", "kid": ctx.kid});
            out.push(Forgery::new(
                "hmac-key-confusion",
                format!("{alg} keyed with {what}"),
                hmac_signed(alg, &header, &good_claims(ctx), &secret),
            ));
        }
    }
    out
}

fn zero_signature(ctx: &ForgeryContext) -> Vec<Forgery> {
    let signed = Signed::control(ctx);
    let half = signed.signature.len() / 2;
    let mut zero_r = signed.signature.clone();
    zero_r[..half].fill(0);
    let mut zero_s = signed.signature.clone();
    zero_s[half..].fill(0);
    let v = |name: &str, signature: &[u8]| {
        Forgery::new("zero-signature", name, signed.signed_with(signature))
    };
    vec![
        v("all-zero 64-byte signature (CVE-2022-21449)", &[0u8; 64]),
        v("r = 0", &zero_r),
        v("s = 0", &zero_s),
    ]
}

fn high_s(ctx: &ForgeryContext) -> Vec<Forgery> {
    if ctx.key.algorithm() != Algorithm::Es256 {
        return Vec::new();
    }
    let token = control(ctx);
    assert!(!is_high_s(&signature_of(&token)), "tokenmint signs low-S");
    let twin = es256_twin(&token);
    assert!(is_high_s(&signature_of(&twin)));
    vec![Forgery::new(
        "high-s",
        "the high-S twin of a valid token",
        twin,
    )]
}

fn bad_signature(ctx: &ForgeryContext) -> Vec<Forgery> {
    let signed = Signed::control(ctx);
    let signature = &signed.signature;
    let good = signed.token();
    let mut flipped = signature.clone();
    flipped[10] ^= 0x01;
    let half = signature.len() / 2;
    let swapped = [&signature[half..], &signature[..half]].concat();
    let v = |name: &str, token: String| Forgery::new("bad-signature", name, token);
    let mut out = vec![
        v("one bit flipped", signed.signed_with(&flipped)),
        v("r and s swapped", signed.signed_with(&swapped)),
        v(
            "truncated by one byte",
            signed.signed_with(&signature[..signature.len() - 1]),
        ),
        v(
            "truncated to 32 bytes",
            signed.signed_with(&signature[..32]),
        ),
        v(
            "signature text cut by two characters",
            good[..good.len() - 2].to_owned(),
        ),
        v(
            "one extra byte",
            signed.signed_with(&[signature.as_slice(), &[0]].concat()),
        ),
        v(
            "signature in padded standard base64",
            format!("{}.{}", signed.input, b64_standard(signature)),
        ),
    ];
    if ctx.key.algorithm() == Algorithm::Es256 {
        let der = der_of_fixed(signature);
        assert_eq!(der[0], 0x30);
        out.push(v("DER-encoded signature", signed.signed_with(&der)));
    }
    out
}

/// A valid signature over other bytes: the control's signature under changed claims or header.
fn tampered(ctx: &ForgeryContext) -> Vec<Forgery> {
    let signed = Signed::control(ctx);
    let exp = signed.claims["exp"].as_i64().unwrap();
    let changes = [
        ("scope", json!("demo:read demo:write")),
        ("client_id", json!("admin")),
        ("sub", json!("admin")),
        ("exp", json!(exp + 3600)),
        ("aud", json!("https://other.example")),
        ("cnf", json!({"x5t#S256": b64url(&[7u8; 32])})),
    ];
    let mut out: Vec<Forgery> = changes
        .into_iter()
        .map(|(claim, value)| {
            let claims = with(signed.claims.clone(), claim, value);
            Forgery::new(
                "bad-signature",
                format!("tampered {claim}"),
                with_signature(&signed.header, &claims, &signed.signature),
            )
        })
        .collect();
    let header = with(signed.header.clone(), "x", json!(1));
    out.push(Forgery::new(
        "bad-signature",
        "tampered header (an extra member)",
        with_signature(&header, &signed.claims, &signed.signature),
    ));
    out
}

fn foreign_key(ctx: &ForgeryContext) -> Vec<Forgery> {
    assert_ne!(ctx.foreign_kid, ctx.kid);
    let foreign = &ctx.foreign_key;
    let header = |kid: &str| header_for(foreign.algorithm(), kid);
    vec![
        Forgery::new(
            "foreign-key",
            "a fresh key under its own kid",
            forge(header(&ctx.foreign_kid), good_claims(ctx), foreign),
        ),
        Forgery::new(
            "foreign-key",
            "a foreign key under our kid",
            forge(header(&ctx.kid), good_claims(ctx), foreign),
        ),
    ]
}

fn embedded_key(ctx: &ForgeryContext) -> Vec<Forgery> {
    let foreign = &ctx.foreign_key;
    let foreign_jwk = jwk_of(&foreign.public_key(), &ctx.foreign_kid);
    let url = json!(ctx.key_url);
    let x5c = |der: &[u8]| json!([b64_standard(der)]);
    let bound_kid = KeyId::of(&ctx.bound_key.public_key()).to_string();
    // (what, kid, the header member naming a key, the key that signs)
    let cases = [
        (
            "jku to a URL, foreign kid",
            &ctx.foreign_kid,
            ("jku", url.clone()),
            foreign,
        ),
        (
            "jku to a URL, our kid, foreign signature",
            &ctx.kid,
            ("jku", url.clone()),
            foreign,
        ),
        (
            "x5u to a URL, foreign kid",
            &ctx.foreign_kid,
            ("x5u", url),
            foreign,
        ),
        (
            "embedded jwk, foreign kid",
            &ctx.foreign_kid,
            ("jwk", foreign_jwk.clone()),
            foreign,
        ),
        (
            "embedded jwk, our kid, foreign signature",
            &ctx.kid,
            ("jwk", foreign_jwk),
            foreign,
        ),
        (
            "x5c a self-signed certificate, foreign kid",
            &ctx.foreign_kid,
            ("x5c", x5c(&ctx.foreign_certificate_der)),
            foreign,
        ),
        (
            "x5c a self-signed certificate, our kid, foreign signature",
            &ctx.kid,
            ("x5c", x5c(&ctx.foreign_certificate_der)),
            foreign,
        ),
        (
            "x5c the bound client's certificate from the trusted CA, signed by its key",
            &bound_kid,
            ("x5c", x5c(&ctx.bound_certificate_der)),
            &ctx.bound_key,
        ),
    ];
    cases
        .into_iter()
        .map(|(what, kid, (member, value), key)| {
            let header = with(header_for(key.algorithm(), kid), member, value);
            Forgery::new("embedded-key", what, forge(header, good_claims(ctx), key))
        })
        .collect()
}

fn kid_traversal(ctx: &ForgeryContext) -> Vec<Forgery> {
    let header = |kid: &str| header_for(ctx.key.algorithm(), kid);
    let hs256_empty = json!({"alg": "HS256", "typ": "at+jwt", "kid": "/dev/null"});
    vec![
        Forgery::new(
            "kid-traversal",
            "kid ../../etc/passwd",
            forge(header("../../etc/passwd"), good_claims(ctx), &ctx.key),
        ),
        Forgery::new(
            "kid-traversal",
            "kid ..%2F..%2Fetc%2Fpasswd",
            forge(header("..%2F..%2Fetc%2Fpasswd"), good_claims(ctx), &ctx.key),
        ),
        // A file read as the key would be empty: HS256 under the empty secret.
        Forgery::new(
            "kid-traversal",
            "kid /dev/null, HS256 keyed with nothing",
            hmac_signed("HS256", &hs256_empty, &good_claims(ctx), &[]),
        ),
    ]
}

/// Missing, empty and unknown kids, each under our key's valid signature.
fn kid(ctx: &ForgeryContext) -> Vec<Forgery> {
    let header = |kid: Value| with(good_header(ctx), "kid", kid);
    let cases = [
        ("missing-kid", "no kid", Value::Null),
        ("missing-kid", "empty kid", json!("")),
        (
            "unknown-kid",
            "unknown kid",
            json!(tokenmint_core::crypto::random_id().unwrap()),
        ),
        (
            "unknown-kid",
            "kid 10 KiB long",
            json!("k".repeat(10 * 1024)),
        ),
        (
            "unknown-kid",
            "kid 2 KiB long (under the token size cap)",
            json!("k".repeat(2 * 1024)),
        ),
        (
            "unknown-kid",
            "our kid with a suffix",
            json!(format!("{}x", ctx.kid)),
        ),
        (
            "unknown-kid",
            "our kid upper-cased",
            json!(ctx.kid.to_uppercase()),
        ),
        ("unknown-kid", "kid a number", json!(12345)),
        ("unknown-kid", "kid an array holding ours", json!([ctx.kid])),
    ];
    cases
        .into_iter()
        .map(|(class, name, kid)| {
            Forgery::new(class, name, forge(header(kid), good_claims(ctx), &ctx.key))
        })
        .collect()
}

/// Missing and wrong `typ`s, each under our key's valid signature.
fn typ(ctx: &ForgeryContext) -> Vec<Forgery> {
    let cases = [
        ("missing-typ", "no typ", Value::Null),
        ("wrong-typ", "typ JWT", json!("JWT")),
        ("wrong-typ", "typ empty", json!("")),
        ("wrong-typ", "typ application/jwt", json!("application/jwt")),
        (
            "wrong-typ",
            "typ at+jwt with trailing space",
            json!("at+jwt "),
        ),
        ("wrong-typ", "typ an array", json!(["at+jwt"])),
    ];
    cases
        .into_iter()
        .map(|(class, name, typ)| {
            let header = with(good_header(ctx), "typ", typ);
            Forgery::new(class, name, forge(header, good_claims(ctx), &ctx.key))
        })
        .collect()
}

/// Wrong claims under our key's valid signature.
fn bad_claims(ctx: &ForgeryContext) -> Vec<Forgery> {
    let now = ctx.now.as_secs();
    let base = || good_claims(ctx);
    let expired = with(
        with(
            with(base(), "exp", json!(now - 120)),
            "iat",
            json!(now - 420),
        ),
        "nbf",
        json!(now - 420),
    );
    let issuer = &ctx.issuer;
    let cases = [
        (
            "wrong iss",
            with(base(), "iss", json!("https://evil.example")),
        ),
        (
            "iss with a trailing slash",
            with(base(), "iss", json!(format!("{issuer}/"))),
        ),
        ("iss an array", with(base(), "iss", json!([issuer]))),
        (
            "exp as a string",
            with(base(), "exp", json!((now + 300).to_string())),
        ),
        (
            "exp as a float",
            with(base(), "exp", json!((now + 300) as f64 + 0.5)),
        ),
        ("expired beyond leeway", expired),
        ("nbf in the future", with(base(), "nbf", json!(now + 3600))),
        ("iat in the future", with(base(), "iat", json!(now + 3600))),
        ("claims a JSON string", json!("claims")),
    ];
    cases
        .into_iter()
        .map(|(name, claims)| {
            Forgery::new(
                "bad-claims",
                name,
                forge(good_header(ctx), claims, &ctx.key),
            )
        })
        .collect()
}

/// Each required claim left out, under our key's valid signature.
fn missing_claims(ctx: &ForgeryContext) -> Vec<Forgery> {
    let required = [
        "iss",
        "exp",
        "nbf",
        "iat",
        "jti",
        "cnf",
        "aud",
        "sub",
        "client_id",
    ];
    required
        .into_iter()
        .map(|claim| {
            let claims = with(good_claims(ctx), claim, Value::Null);
            Forgery::new(
                "bad-claims",
                format!("{claim} missing"),
                forge(good_header(ctx), claims, &ctx.key),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The list itself.

/// A context over a key made here (no server): enough to build and check the list.
pub(crate) fn offline_context() -> ForgeryContext {
    let (key, _) = SigningKey::generate(Algorithm::Es256).unwrap();
    let kid = KeyId::of(&key.public_key()).to_string();
    let mut jwk = jwk_of(&key.public_key(), &kid);
    jwk["alg"] = json!("ES256");
    jwk["use"] = json!("sig");
    let jwks_json = json!({"keys": [jwk]}).to_string();
    let bound = Pki::new().client_uri(DEMO_URI);
    ForgeryContext::new(kid, key, jwks_json, &bound, "http://127.0.0.1:9/jwks.json")
}

#[test]
fn every_class_has_a_vector_and_every_vector_a_known_class() {
    let ctx = offline_context();
    let vectors = vectors(&ctx);
    for class in CLASSES {
        assert!(
            vectors.iter().any(|v| v.class == *class),
            "no vector of class {class}"
        );
    }
    for vector in &vectors {
        assert!(
            CLASSES.contains(&vector.class),
            "{}: class {} is not in CLASSES",
            vector.name,
            vector.class
        );
    }
    let mut names: Vec<(&str, &str)> = vectors.iter().map(|v| (v.class, v.name.as_str())).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "each vector has its own name");
}

#[test]
fn the_control_verifies_with_an_independent_library() {
    let ctx = offline_context();
    let claims = verify_with_jwks(&control(&ctx), &ctx.jwks_json, &ctx.audience);
    assert_eq!(claims["client_id"], ctx.client_id.as_str());
    assert_eq!(
        claims["cnf"]["x5t#S256"],
        CertificateThumbprint::of_der(&ctx.bound_certificate_der).to_b64url()
    );
}

#[test]
fn the_spki_forms_match_an_independent_encoder() {
    // The algorithms the forgery suite runs on.
    for algorithm in [Algorithm::Es256, Algorithm::EdDsa] {
        let (key, pkcs8) = SigningKey::generate(algorithm).unwrap();
        let pair = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        assert_eq!(
            spki_der(&key.public_key()),
            rcgen::PublicKeyData::subject_public_key_info(&pair),
            "{algorithm:?}"
        );
    }
}
