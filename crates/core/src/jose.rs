//! JOSE, in one place, for every algorithm: key ids (RFC 7638 and RFC 9964 thumbprints), the
//! public key set and its JWK Set texts (RFC 7517; classical keys, and the full set with the
//! post-quantum ones), the [`Signer`] seam, and compact JWS (RFC 7515) signing and
//! verification, parsed and checked here with the build's stack. A [`KeySet`] verifies with public keys only — no KEK, no
//! private key — so the libraries of resource servers use it as the issuer does.

use std::{collections::HashMap, fmt, sync::Arc};

use serde::de::DeserializeOwned;

use crate::crypto::{self, Algorithm, CryptoError, PublicKey};

/// The longest compact JWS looked at.
pub const MAX_JWS_LEN: usize = 8 * 1024;

/// A key id: the RFC 7638 SHA-256 thumbprint of the public key, base64url.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// The thumbprint of a public key (RFC 7638 §3; EC, OKP and RSA members as RFC 7518/8037
    /// name them; AKP's `alg`, `kty` and `pub` as RFC 9964 §6 names them).
    pub fn of(public: &PublicKey) -> Self {
        let members: Vec<(&str, String)> = match public {
            PublicKey::P256 { x, y } => vec![
                ("crv", "P-256".into()),
                ("kty", "EC".into()),
                ("x", crypto::b64url(x)),
                ("y", crypto::b64url(y)),
            ],
            PublicKey::Ed25519 { x } => vec![
                ("crv", "Ed25519".into()),
                ("kty", "OKP".into()),
                ("x", crypto::b64url(x)),
            ],
            PublicKey::Rsa { n, e } => vec![
                ("e", crypto::b64url(e)),
                ("kty", "RSA".into()),
                ("n", crypto::b64url(n)),
            ],
            PublicKey::MlDsa { level, public } => vec![
                ("alg", format!("ML-DSA-{level}")),
                ("kty", "AKP".into()),
                ("pub", crypto::b64url(public)),
            ],
        };
        let refs: Vec<(&str, &str)> = members.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Self(jwk_thumbprint(&refs))
    }

    /// A key id as stored or received (not checked: an unknown id simply finds no key).
    pub fn from_stored(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Lookups by `&str` on the request path allocate nothing. The derived `Hash` and `Eq` hash
// and compare the inner string exactly as `str` does, as `Borrow` requires.
impl std::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// RFC 7638 §3: SHA-256 over the required members, lexicographically ordered, as JSON with
/// no whitespace; base64url without padding. `members` are (name, string value) pairs.
pub fn jwk_thumbprint(members: &[(&str, &str)]) -> String {
    let mut sorted = members.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut json = String::from("{");
    for (i, (name, value)) in sorted.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        // serde_json escapes exactly as JSON requires; member names and values are plain strings.
        json.push_str(&serde_json::Value::from(*name).to_string());
        json.push(':');
        json.push_str(&serde_json::Value::from(*value).to_string());
    }
    json.push('}');
    crypto::b64url(&crypto::sha256(json.as_bytes()))
}

/// A verification key as a key set publishes it: everything needed to check a signature,
/// nothing private. Its algorithm is the key record's, never a token's.
#[derive(Clone, Debug)]
pub struct PublishedKey {
    /// Its id.
    pub kid: KeyId,
    /// Its algorithm (from the key record, never from a token).
    pub algorithm: Algorithm,
    /// The public key.
    pub public: PublicKey,
    /// Whether a high-S ES256 signature is refused under it (from the key record).
    pub low_s_only: bool,
}

/// The public keys that verify: ordered by id, with their JWK Set text and its version.
#[derive(Clone, Debug)]
pub struct KeySet {
    published: Vec<PublishedKey>,
    by_kid: HashMap<KeyId, usize>,
    jwks_json: Arc<str>,
    full_jwks_json: Arc<str>,
    version: String,
}

impl KeySet {
    /// The set of `keys` (a stable order, so the JWKS text and its version depend only on the
    /// set).
    pub fn new(mut keys: Vec<PublishedKey>) -> Self {
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        let by_kid = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.kid.clone(), i))
            .collect();
        let classic: Vec<PublishedKey> = keys
            .iter()
            .filter(|k| !k.algorithm.is_post_quantum())
            .cloned()
            .collect();
        let (jwks_json, _) = jwk_set(&classic);
        let (full_jwks_json, version) = jwk_set(&keys);
        Self {
            published: keys,
            by_kid,
            jwks_json: jwks_json.into(),
            full_jwks_json: full_jwks_json.into(),
            version,
        }
    }

    /// Every key, ordered by id.
    pub fn published(&self) -> &[PublishedKey] {
        &self.published
    }

    /// The JWK Set text (RFC 7517) of the classical keys: what `jwks_uri` serves. Post-quantum
    /// keys (`kty: "AKP"`) are left out, because some JOSE libraries (go-jose among them)
    /// refuse a whole set holding one key type they do not know.
    pub fn jwks_json(&self) -> &Arc<str> {
        &self.jwks_json
    }

    /// The JWK Set text of every key, post-quantum ones included: for verifiers that ask.
    pub fn full_jwks_json(&self) -> &Arc<str> {
        &self.full_jwks_json
    }

    /// The JWK Set's version: changes exactly when the full set does.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The key with this id.
    pub fn find(&self, kid: &str) -> Option<&PublishedKey> {
        self.by_kid.get(kid).and_then(|&i| self.published.get(i))
    }
}

/// The largest JWK Set text read from the network.
pub const MAX_JWKS_LEN: usize = 256 * 1024;
/// The most keys a JWK Set read from the network may hold.
pub const MAX_JWKS_KEYS: usize = 64;

/// Why a JWK Set text was not taken at all.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    /// Larger than [`MAX_JWKS_LEN`] or with more keys than [`MAX_JWKS_KEYS`].
    #[error("the JWK Set is too large (at most {MAX_JWKS_LEN} bytes and {MAX_JWKS_KEYS} keys)")]
    TooLarge,
    /// Not JSON of the form `{"keys":[…]}`.
    #[error("the JWK Set is not JSON of the form {{\"keys\":[…]}}: {0}")]
    Malformed(String),
}

/// A JWK Set read from elsewhere: the keys that verify, and the ones left out with why.
#[derive(Clone, Debug)]
pub struct ParsedJwks {
    /// The usable keys.
    pub keys: KeySet,
    /// Keys left out (an algorithm this build does not know, a key not for signatures, a
    /// `kid` that is not the key's thumbprint): `(kid or index, reason)`.
    pub skipped: Vec<(String, String)>,
}

/// Reads a JWK Set (RFC 7517) as tokenmint publishes it, for a verifier elsewhere. A key is
/// kept only if its `alg` is one this build verifies and matches its curve, its `use` is absent
/// or `sig`, and its `kid` is its RFC 7638 thumbprint (so a `kid` names exactly one key);
/// any other key is skipped with a reason, never the whole set, so a newer issuer's new key
/// types cannot break an older verifier. ES256 keys verify only low-S signatures, the only
/// form tokenmint signs.
pub fn parse_jwks(text: &str) -> Result<ParsedJwks, JwksError> {
    if text.len() > MAX_JWKS_LEN {
        return Err(JwksError::TooLarge);
    }
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Map<String, serde_json::Value>>,
    }
    let set: Set = serde_json::from_str(text).map_err(|e| JwksError::Malformed(e.to_string()))?;
    if set.keys.len() > MAX_JWKS_KEYS {
        return Err(JwksError::TooLarge);
    }
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, member) in set.keys.iter().enumerate() {
        match published_key(member) {
            Ok(key) => keys.push(key),
            Err(reason) => {
                let name = member.get("kid").and_then(|k| k.as_str());
                skipped.push((name.map_or_else(|| format!("#{i}"), str::to_owned), reason));
            }
        }
    }
    Ok(ParsedJwks {
        keys: KeySet::new(keys),
        skipped,
    })
}

/// One JWK as a [`PublishedKey`], or why not.
fn published_key(jwk: &serde_json::Map<String, serde_json::Value>) -> Result<PublishedKey, String> {
    let text = |name: &str| jwk.get(name).and_then(|v| v.as_str());
    let bytes = |name: &str, len: usize| {
        text(name)
            .and_then(crypto::b64url_decode)
            .filter(|b| b.len() == len)
            .ok_or_else(|| format!("`{name}` is not {len} bytes of base64url"))
    };
    if text("use").is_some_and(|u| u != "sig") {
        return Err("not a signature key (`use`)".into());
    }
    // A private member in a published set is the publisher's mistake: the key is not trusted
    // (RFC 9964 §3: `priv` must not appear in a public key; RFC 7518 §6: `d` and the RSA
    // primes are private).
    if ["d", "p", "q", "dp", "dq", "qi", "priv"]
        .iter()
        .any(|m| jwk.contains_key(*m))
    {
        return Err("the JWK holds a private member".into());
    }
    let alg = text("alg").ok_or("no `alg`")?;
    let algorithm = Algorithm::try_from_name(alg).ok_or_else(|| format!("unknown alg {alg:?}"))?;
    let public = match (algorithm, text("kty"), text("crv")) {
        (Algorithm::Es256, Some("EC"), Some("P-256")) => PublicKey::P256 {
            x: bytes("x", 32)?,
            y: bytes("y", 32)?,
        },
        (Algorithm::EdDsa, Some("OKP"), Some("Ed25519")) => {
            PublicKey::Ed25519 { x: bytes("x", 32)? }
        }
        (Algorithm::Rs256 | Algorithm::Ps256, Some("RSA"), None) => rsa_public(jwk)?,
        (Algorithm::MlDsa44, Some("AKP"), None) => PublicKey::MlDsa {
            level: 44,
            public: bytes("pub", ML_DSA_44_PUBLIC_LEN)?,
        },
        (Algorithm::MlDsa65, Some("AKP"), None) => PublicKey::MlDsa {
            level: 65,
            public: bytes("pub", ML_DSA_65_PUBLIC_LEN)?,
        },
        _ => return Err(format!("`kty`/`crv` do not match alg {alg}")),
    };
    if !crypto::stack().verifies(algorithm) {
        return Err(format!("this build's crypto stack does not verify {alg}"));
    }
    let kid = KeyId::of(&public);
    if text("kid") != Some(kid.as_str()) {
        return Err("`kid` is not the key's RFC 7638 thumbprint".into());
    }
    Ok(PublishedKey {
        kid,
        algorithm,
        public,
        low_s_only: true,
    })
}

/// The length of an ML-DSA-44 public key (FIPS 204 Table 2).
pub const ML_DSA_44_PUBLIC_LEN: usize = 1312;
/// The length of an ML-DSA-65 public key (FIPS 204 Table 2).
pub const ML_DSA_65_PUBLIC_LEN: usize = 1952;

/// An RSA JWK's `n` and `e`: a 2048- to 4096-bit modulus, an exponent of at most 4 bytes, both
/// without leading zeros (RFC 7518 §6.3.1).
fn rsa_public(jwk: &serde_json::Map<String, serde_json::Value>) -> Result<PublicKey, String> {
    let integer = |name: &str, max: usize| {
        jwk.get(name)
            .and_then(|v| v.as_str())
            .and_then(crypto::b64url_decode)
            .filter(|b| !b.is_empty() && b.len() <= max && b[0] != 0)
            .ok_or_else(|| format!("`{name}` is not an RSA integer of at most {max} bytes"))
    };
    let n = integer("n", 512)?;
    if n.len() < 256 || (n.len() == 256 && n[0] < 0x80) {
        return Err("the RSA modulus is shorter than 2048 bits".into());
    }
    Ok(PublicKey::Rsa {
        n,
        e: integer("e", 4)?,
    })
}

/// What signs: the software key of this process, or one held elsewhere (an HSM, a KMS).
///
/// Synchronous, as rustls's `Signer` is: a software signature takes microseconds, so an
/// `async` seam would put a future and an allocation on every issuance for nothing. A signer
/// that waits on a device or the network does so on the calling thread; the issue path runs
/// signing where blocking is allowed, and such a signer keeps its own bounded pool of sessions.
pub trait Signer: Send + Sync + fmt::Debug {
    /// The id of the key (its RFC 7638 thumbprint), named in the JWS header.
    fn kid(&self) -> &KeyId;
    /// Its algorithm.
    fn algorithm(&self) -> Algorithm;
    /// The JWS signature over `message` (for ES256, `r ‖ s` with low S).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

/// A [`Signer`] that makes compact JWS: its protected header (`alg`, `typ`, `kid`) encoded
/// once, so each token costs the payload's encoding and the signature only.
#[derive(Debug)]
pub struct CompactSigner {
    signer: Arc<dyn Signer>,
    header_b64: String,
}

impl CompactSigner {
    /// Signs with `signer`, every JWS of type `typ`.
    pub fn new(signer: Arc<dyn Signer>, typ: &str) -> Self {
        let header = serde_json::json!({
            "alg": signer.algorithm().as_str(),
            "typ": typ,
            "kid": signer.kid().as_str(),
        });
        let header_b64 = crypto::b64url(header.to_string().as_bytes());
        Self { signer, header_b64 }
    }

    /// The same key, signing JWS of type `typ`.
    pub fn with_typ(&self, typ: &str) -> CompactSigner {
        CompactSigner::new(self.signer.clone(), typ)
    }

    /// The signing key's id.
    pub fn kid(&self) -> &KeyId {
        self.signer.kid()
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.signer.algorithm()
    }

    /// A compact JWS: the encoded header, `payload` base64url, the signature.
    pub fn sign_compact(&self, payload: &[u8]) -> Result<String, CryptoError> {
        let payload_b64 = crypto::b64url(payload);
        let mut out = String::with_capacity(self.header_b64.len() + payload_b64.len() + 2 + 90);
        out.push_str(&self.header_b64);
        out.push('.');
        out.push_str(&payload_b64);
        let signature = self.signer.sign(out.as_bytes())?;
        out.push('.');
        out.push_str(&crypto::b64url(&signature));
        Ok(out)
    }
}

/// Why a compact JWS did not verify.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    /// Not a well-formed JWS with a payload of the expected shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `typ` is not one of those expected.
    #[error("the token's typ is not the one expected")]
    WrongType,
    /// No `kid`, or a `kid` naming no key of the set.
    #[error("the token names no published key")]
    UnknownKey,
    /// The header's `alg` differs from the algorithm stored with the key.
    #[error("the token's alg differs from its key's algorithm")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

/// A verified JWS: its payload and the key that signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedJws<T> {
    /// The payload.
    pub payload: T,
    /// The key's id.
    pub kid: String,
}

/// Verifies a compact JWS against `keys`: size, exactly three base64url parts, `typ` (one of
/// `types`, compared without case), the key its `kid` names and that key's algorithm (the
/// token's `alg` must match it), the signature by the build's stack (only its low-S form for a
/// low-S-only ES256 key), and the payload's shape. A header with `crit` is refused (no
/// extension is understood); `jku`, `x5u`, `jwk` and `x5c` are ignored; nothing is fetched.
///
/// Written here rather than through jsonwebtoken's `decode`, which verifies through a
/// process-wide provider: a library that verifies must not install one in its host.
pub fn verify_compact<T: DeserializeOwned>(
    token: &str,
    keys: &KeySet,
    types: &[&str],
) -> Result<VerifiedJws<T>, JwsError> {
    let jws = Compact::split(token, types)?;
    let kid = jws.header.kid.clone().ok_or(JwsError::UnknownKey)?;
    let key = keys.find(&kid).ok_or(JwsError::UnknownKey)?;
    Ok(VerifiedJws {
        payload: jws.verified_under(key)?,
        kid,
    })
}

/// Verifies a compact JWS under the one key `key`, whatever `kid` it names, by the rules of
/// [`verify_compact`]: for a token its signer's certificate vouches for (a workload's
/// self-signed assertion), where the key comes from the connection, not from a key set.
pub fn verify_compact_under<T: DeserializeOwned>(
    token: &str,
    key: &PublishedKey,
    types: &[&str],
) -> Result<T, JwsError> {
    Compact::split(token, types)?.verified_under(key)
}

/// A compact JWS split into its parts, its header read and its `typ` checked.
struct Compact<'a> {
    token: &'a str,
    header: Header,
    payload_b64: &'a str,
    signature_b64: &'a str,
}

impl<'a> Compact<'a> {
    fn split(token: &'a str, types: &[&str]) -> Result<Self, JwsError> {
        if token.len() > MAX_JWS_LEN {
            return Err(JwsError::Malformed("too long".into()));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed("not three dot-separated parts".into()));
        };
        let header: Header = decode_part(header_b64, "header")?;
        if header.crit.is_some() {
            return Err(JwsError::Malformed("a critical header extension".into()));
        }
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|t| types.iter().any(|want| t.eq_ignore_ascii_case(want)));
        if !typ_ok {
            return Err(JwsError::WrongType);
        }
        Ok(Self {
            token,
            header,
            payload_b64,
            signature_b64,
        })
    }

    /// The payload, once `alg` is `key`'s algorithm and the signature verifies under it.
    fn verified_under<T: DeserializeOwned>(&self, key: &PublishedKey) -> Result<T, JwsError> {
        if self.header.alg != key.algorithm.as_str() {
            return Err(JwsError::AlgorithmMismatch);
        }
        let signature = crypto::b64url_decode(self.signature_b64)
            .ok_or_else(|| JwsError::Malformed("the signature is not base64url".into()))?;
        if key.low_s_only
            && key.algorithm == Algorithm::Es256
            && crypto::es256_is_high_s(&signature)
        {
            return Err(JwsError::BadSignature);
        }
        let signing_input = &self.token[..self.token.len() - self.signature_b64.len() - 1];
        if !crypto::verify_signature(
            key.algorithm,
            &key.public,
            signing_input.as_bytes(),
            &signature,
        ) {
            return Err(JwsError::BadSignature);
        }
        decode_part(self.payload_b64, "payload")
    }
}

/// The protected header members looked at (the others are ignored).
#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// One base64url part as JSON of type `T` (strict base64url: no padding, no stray bits).
fn decode_part<T: DeserializeOwned>(part: &str, name: &str) -> Result<T, JwsError> {
    let bytes = crypto::b64url_decode(part)
        .ok_or_else(|| JwsError::Malformed(format!("the {name} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| JwsError::Malformed(format!("the {name}: {e}")))
}

/// A JWK's members in the order they are written: `use`, `alg`, `kid`, then the key type's.
#[derive(serde::Serialize)]
struct JwkMembers {
    #[serde(rename = "use")]
    use_: &'static str,
    alg: &'static str,
    kid: String,
    kty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(rename = "pub", skip_serializing_if = "Option::is_none")]
    public: Option<String>,
}

/// The JWK of a published key, with `kid`, `alg` and `use: sig`: RFC 7518 §6 for EC and RSA,
/// RFC 8037 for OKP, RFC 9964 §6 for AKP (ML-DSA: `pub` only; the private seed never).
pub fn jwk(key: &PublishedKey) -> serde_json::Value {
    // Serialising plain strings cannot fail.
    serde_json::to_value(jwk_members(key)).unwrap_or_default()
}

/// A key's JWK members, in their written order.
fn jwk_members(key: &PublishedKey) -> JwkMembers {
    let mut members = JwkMembers {
        use_: "sig",
        alg: key.algorithm.as_str(),
        kid: key.kid.to_string(),
        kty: "EC",
        crv: None,
        x: None,
        y: None,
        n: None,
        e: None,
        public: None,
    };
    match &key.public {
        PublicKey::P256 { x, y } => {
            (members.crv, members.x) = (Some("P-256"), Some(crypto::b64url(x)));
            members.y = Some(crypto::b64url(y));
        }
        PublicKey::Ed25519 { x } => {
            (members.kty, members.crv) = ("OKP", Some("Ed25519"));
            members.x = Some(crypto::b64url(x));
        }
        PublicKey::Rsa { n, e } => {
            (members.kty, members.n) = ("RSA", Some(crypto::b64url(n)));
            members.e = Some(crypto::b64url(e));
        }
        PublicKey::MlDsa { public, .. } => {
            (members.kty, members.public) = ("AKP", Some(crypto::b64url(public)));
        }
    }
    members
}

/// The JWK Set text of `keys` and its version (changes exactly when the text does).
fn jwk_set(keys: &[PublishedKey]) -> (String, String) {
    #[derive(serde::Serialize)]
    struct Set {
        keys: Vec<JwkMembers>,
    }
    let set = Set {
        keys: keys.iter().map(jwk_members).collect(),
    };
    // Serialising plain strings cannot fail; an empty set is the safe fallback.
    let json = serde_json::to_string(&set).unwrap_or_else(|_| r#"{"keys":[]}"#.to_owned());
    let version = crypto::hex(&crypto::sha256(json.as_bytes())[..16]);
    (json, version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigningKey;

    /// A signer held "elsewhere": the seam a PKCS#11 or KMS signer plugs into, here counting
    /// its calls.
    #[derive(Debug)]
    struct Elsewhere {
        kid: KeyId,
        key: SigningKey,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Signer for Elsewhere {
        fn kid(&self) -> &KeyId {
            &self.kid
        }
        fn algorithm(&self) -> Algorithm {
            self.key.algorithm()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.key.sign(message)
        }
    }

    /// The algorithms this build generates keys for.
    fn generated() -> Vec<Algorithm> {
        crypto::stack().signing_algorithms().collect()
    }

    #[test]
    fn a_published_jwk_set_reads_back_as_the_same_keys() {
        let keys: Vec<PublishedKey> = generated()
            .into_iter()
            .map(|algorithm| {
                let public = SigningKey::generate(algorithm).unwrap().0.public_key();
                PublishedKey {
                    kid: KeyId::of(&public),
                    algorithm,
                    public,
                    low_s_only: true,
                }
            })
            .collect();
        let set = KeySet::new(keys);
        // The classical set leaves the post-quantum keys out; the full set has every key.
        let classic = parse_jwks(set.jwks_json()).unwrap();
        assert!(
            classic
                .keys
                .published()
                .iter()
                .all(|k| !k.algorithm.is_post_quantum())
        );
        let parsed = parse_jwks(set.full_jwks_json()).unwrap();
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        assert_eq!(parsed.keys.version(), set.version());
        assert_eq!(parsed.keys.published().len(), generated().len());
        for key in set.published() {
            let back = parsed.keys.find(key.kid.as_str()).unwrap();
            assert_eq!((back.algorithm, &back.public), (key.algorithm, &key.public));
        }
    }

    #[test]
    fn keys_a_verifier_cannot_trust_are_skipped_not_fatal() {
        let public = SigningKey::generate(Algorithm::Es256)
            .unwrap()
            .0
            .public_key();
        let good = jwk(&PublishedKey {
            kid: KeyId::of(&public),
            algorithm: Algorithm::Es256,
            public,
            low_s_only: true,
        });
        let good = serde_json::to_value(&good).unwrap();
        let with = |name: &str, value: serde_json::Value| {
            let mut key = good.clone();
            key[name] = value;
            key
        };
        let cases = [
            ("wrong kid", with("kid", "other".into())),
            ("encryption key", with("use", "enc".into())),
            ("no alg", with("alg", serde_json::Value::Null)),
            ("alg confusion", with("alg", "EdDSA".into())),
            ("hmac", with("alg", "HS256".into())),
            ("short x", with("x", "AAAA".into())),
            ("private member", with("d", "AAAA".into())),
            ("private seed", with("priv", "AAAA".into())),
            (
                "future kty",
                serde_json::json!({"kty": "AKP", "alg": "ML-DSA-44", "kid": "k"}),
            ),
        ];
        for (name, key) in cases {
            let text = serde_json::json!({ "keys": [good.clone(), key] }).to_string();
            let parsed = parse_jwks(&text).unwrap();
            assert_eq!(parsed.keys.published().len(), 1, "{name}");
            assert_eq!(parsed.skipped.len(), 1, "{name}");
        }
        for bad in ["", "[]", "{\"keys\":{}}", "{\"keys\":[1]}"] {
            assert!(
                matches!(parse_jwks(bad), Err(JwksError::Malformed(_))),
                "{bad}"
            );
        }
        let many = serde_json::json!({ "keys": vec![good.clone(); MAX_JWKS_KEYS + 1] });
        assert_eq!(
            parse_jwks(&many.to_string()).unwrap_err(),
            JwksError::TooLarge
        );
    }

    #[test]
    fn a_key_set_of_public_keys_alone_verifies_what_any_signer_signed() {
        for algorithm in generated() {
            let (key, _pkcs8) = SigningKey::generate(algorithm).unwrap();
            let public = key.public_key();
            let kid = KeyId::of(&public);
            let signer = Arc::new(Elsewhere {
                kid: kid.clone(),
                key,
                calls: 0.into(),
            });
            let compact = CompactSigner::new(signer.clone(), "at+jwt");
            let jws = compact.sign_compact(br#"{"n":1}"#).unwrap();
            assert_eq!(signer.calls.load(std::sync::atomic::Ordering::Relaxed), 1);
            // No KEK, no private key: only what a JWKS publishes.
            let keys = KeySet::new(vec![PublishedKey {
                kid: kid.clone(),
                algorithm,
                public,
                low_s_only: true,
            }]);
            let verified: VerifiedJws<serde_json::Value> =
                verify_compact(&jws, &keys, &["at+jwt"]).unwrap();
            assert_eq!(verified.payload["n"], 1);
            assert_eq!(verified.kid, kid.as_str());
            assert_eq!(
                verify_compact::<serde_json::Value>(&jws, &keys, &["jwt"]),
                Err(JwsError::WrongType)
            );
            assert_eq!(
                verify_compact::<serde_json::Value>(&jws, &KeySet::new(vec![]), &["at+jwt"]),
                Err(JwsError::UnknownKey)
            );
            assert!(keys.full_jwks_json().contains(kid.as_str()));
            assert_eq!(
                keys.jwks_json().contains(kid.as_str()),
                !algorithm.is_post_quantum()
            );
        }
    }
}
