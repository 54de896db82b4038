//! tokenmint's tokens checked by an implementation other than the one that signed them, for
//! every algorithm: jwt-simple (pure Rust — p256, ed25519-compact, the `rsa` crate and
//! RustCrypto's `ml-dsa`, none of them ring or aws-lc-rs) verifies the compact JWS exactly as
//! the issuer makes it, with the key read from the JWK Set text exactly as it is published,
//! and computes the same RFC 7638 / RFC 9964 thumbprint as the `kid`; a flipped signature byte
//! fails there too; and in the other direction tokenmint verifies what jwt-simple signs.
//! A signer that agrees only with its own verifier could share a mistake with it (an encoding,
//! a padding, a thumbprint's members); a second implementation is unlikely to. An algorithm this
//! build cannot sign with is refused, naming the feature that has it.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::{collections::HashSet, sync::Arc, time::Duration};

use jwt_simple::prelude::{
    Claims, ECDSAP256KeyPairLike as _, ECDSAP256PublicKeyLike as _, ES256KeyPair, ES256PublicKey,
    Ed25519KeyPair, Ed25519PublicKey, EdDSAKeyPairLike as _, EdDSAPublicKeyLike as _,
    HeaderOptions, JWTClaims, MLDSA44KeyPair, MLDSA44PublicKey, MLDSA65KeyPair, MLDSA65PublicKey,
    MLDSAKeyPairLike as _, MLDSAPublicKeyLike as _, PS256KeyPair, PS256PublicKey, RS256KeyPair,
    RS256PublicKey, RSAKeyPairLike as _, RSAPublicKeyLike as _, VerificationOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenmint_core::{
    clock::{Clock as _, SystemClock, UnixTime},
    crypto::{self, Algorithm, CertificateThumbprint, PublicKey, RsaBits, SigningKey, stack},
    jose::{self, CompactSigner, JwsError, KeyId, KeySet, PublishedKey},
    keys::SoftwareSigner,
    token::{AccessTokenClaims, Audience, Confirmation},
};

const ISSUER: &str = "https://tokenmint.example.internal";
const CLIENT: &str = "billing-batch-worker";
const AUDIENCE: &str = "https://ledger.example.internal";
/// A realistic granted scope: about 100 characters.
const SCOPE: &str = "ledger:read ledger:write invoices:read invoices:write payments:read \
                     customers:read reports:export";
const TYP: &str = "at+jwt";
const LIFETIME: Duration = Duration::from_secs(300);

/// A new key of `algorithm` (RSA of `bits`) as the issuer signs and publishes it, or `None`
/// after checking that this build refuses it, naming the feature that has it.
fn issuer_key(algorithm: Algorithm, bits: RsaBits) -> Option<(CompactSigner, PublishedKey)> {
    if let Err(unsupported) = stack().supports(algorithm) {
        assert!(
            unsupported.to_string().contains("--features aws-lc"),
            "{unsupported}"
        );
        let refused = SigningKey::generate_sized(algorithm, bits)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("--features aws-lc"),
            "{algorithm}: {refused}"
        );
        eprintln!("{algorithm}: not in this build, refused: {refused}");
        return None;
    }
    let (key, _private) = SigningKey::generate_sized(algorithm, bits).unwrap();
    let public = key.public_key();
    let kid = KeyId::of(&public);
    let published = PublishedKey {
        kid: kid.clone(),
        algorithm,
        public,
        low_s_only: true,
    };
    Some((
        CompactSigner::new(Arc::new(SoftwareSigner::new(key)), TYP),
        published,
    ))
}

/// Access-token claims as the issuer mints them, at `now`.
fn access_claims(now: UnixTime) -> AccessTokenClaims {
    AccessTokenClaims {
        iss: ISSUER.into(),
        sub: CLIENT.into(),
        client_id: CLIENT.into(),
        aud: Audience::One(AUDIENCE.into()),
        scope: Some(SCOPE.into()),
        iat: now,
        nbf: now,
        exp: now + LIFETIME,
        jti: crypto::random_id().unwrap(),
        cnf: Confirmation {
            x5t_s256: CertificateThumbprint::of_der(b"the client's certificate").to_b64url(),
        },
        act: None,
        may_act: None,
        ancestors: Vec::new(),
    }
}

/// The claims jwt-simple does not model itself.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Extra {
    client_id: String,
    scope: String,
    cnf: Confirmation,
}

/// The one published JWK, taken from the JWK Set text as served.
fn published_jwk(key: &PublishedKey) -> String {
    let set = KeySet::new(vec![key.clone()]);
    let jwks: Value = serde_json::from_str(set.full_jwks_json()).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0], jose::jwk(key), "the set holds the key's JWK");
    keys[0].to_string()
}

/// jwt-simple's public key of one algorithm.
enum Independent {
    Es256(ES256PublicKey),
    EdDsa(Ed25519PublicKey),
    Rs256(RS256PublicKey),
    Ps256(PS256PublicKey),
    MlDsa44(MLDSA44PublicKey),
    MlDsa65(MLDSA65PublicKey),
}

impl Independent {
    /// jwt-simple's reading of a JWK as a key of `algorithm` (it refuses a JWK whose `alg`,
    /// `kty` or `crv` is another algorithm's).
    fn from_jwk(algorithm: Algorithm, jwk: &str) -> Result<Self, jwt_simple::Error> {
        Ok(match algorithm {
            Algorithm::Es256 => Self::Es256(ES256PublicKey::from_jwk(jwk)?),
            Algorithm::EdDsa => Self::EdDsa(Ed25519PublicKey::from_jwk(jwk)?),
            Algorithm::Rs256 => Self::Rs256(RS256PublicKey::from_jwk(jwk)?),
            Algorithm::Ps256 => Self::Ps256(PS256PublicKey::from_jwk(jwk)?),
            Algorithm::MlDsa44 => Self::MlDsa44(MLDSA44PublicKey::from_jwk(jwk)?),
            Algorithm::MlDsa65 => Self::MlDsa65(MLDSA65PublicKey::from_jwk(jwk)?),
        })
    }

    /// jwt-simple's RFC 7638 (RFC 9964 for AKP) thumbprint of the key.
    fn thumbprint(&self) -> String {
        match self {
            Self::Es256(k) => k.jwk_thumbprint(),
            Self::EdDsa(k) => k.jwk_thumbprint(),
            Self::Rs256(k) => k.jwk_thumbprint(),
            Self::Ps256(k) => k.jwk_thumbprint(),
            Self::MlDsa44(k) => k.jwk_thumbprint(),
            Self::MlDsa65(k) => k.jwk_thumbprint(),
        }
    }

    /// The `kid` jwt-simple read from the JWK.
    fn key_id(&self) -> Option<String> {
        match self {
            Self::Es256(k) => k.key_id().clone(),
            Self::EdDsa(k) => k.key_id().clone(),
            Self::Rs256(k) => k.key_id().clone(),
            Self::Ps256(k) => k.key_id().clone(),
            Self::MlDsa44(k) => k.key_id().clone(),
            Self::MlDsa65(k) => k.key_id().clone(),
        }
    }

    fn verify(
        &self,
        token: &str,
        options: VerificationOptions,
    ) -> Result<JWTClaims<Extra>, jwt_simple::Error> {
        let options = Some(options);
        match self {
            Self::Es256(k) => k.verify_token(token, options),
            Self::EdDsa(k) => k.verify_token(token, options),
            Self::Rs256(k) => k.verify_token(token, options),
            Self::Ps256(k) => k.verify_token(token, options),
            Self::MlDsa44(k) => k.verify_token(token, options),
            Self::MlDsa65(k) => k.verify_token(token, options),
        }
    }
}

/// What a resource server using jwt-simple would insist on.
fn strict_options(kid: &KeyId) -> VerificationOptions {
    VerificationOptions {
        required_key_id: Some(kid.to_string()),
        required_signature_type: Some(TYP.into()),
        required_subject: Some(CLIENT.into()),
        allowed_issuers: Some(HashSet::from([ISSUER.to_owned()])),
        allowed_audiences: Some(HashSet::from([AUDIENCE.to_owned()])),
        time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(5)),
        max_token_length: Some(jose::MAX_JWS_LEN),
        ..VerificationOptions::default()
    }
}

/// The token with one byte of its signature flipped.
fn with_flipped_signature_byte(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut signature = crypto::b64url_decode(signature).unwrap();
    let middle = signature.len() / 2;
    signature[middle] ^= 0x01;
    format!("{signed}.{}", crypto::b64url(&signature))
}

/// The keys signed with in these tests: every algorithm, and RSA of both sizes.
fn cases() -> Vec<(Algorithm, RsaBits)> {
    let mut cases: Vec<_> = Algorithm::ALL
        .into_iter()
        .map(|a| (a, RsaBits::B2048))
        .collect();
    cases.push((Algorithm::Rs256, RsaBits::B3072));
    cases.push((Algorithm::Ps256, RsaBits::B3072));
    cases
}

/// The algorithm, with the key size for RSA.
fn label(algorithm: Algorithm, bits: RsaBits) -> String {
    match algorithm {
        Algorithm::Rs256 | Algorithm::Ps256 => format!("{algorithm} ({} bits)", bits.bits()),
        _ => algorithm.to_string(),
    }
}

#[test]
fn jwt_simple_verifies_what_tokenmint_signs_with_the_published_jwk() {
    let mut verified = Vec::new();
    for (algorithm, bits) in cases() {
        let Some((signer, published)) = issuer_key(algorithm, bits) else {
            continue;
        };
        let jwk = published_jwk(&published);
        let kid = &published.kid;
        let key = Independent::from_jwk(algorithm, &jwk)
            .unwrap_or_else(|e| panic!("{algorithm}: jwt-simple refused the JWK: {e}\n{jwk}"));
        // The kid is the thumbprint by a second implementation's reckoning (RFC 7638 members
        // for EC, OKP and RSA; RFC 9964's `alg`, `kty`, `pub` for AKP), and jwt-simple read it.
        assert_eq!(key.thumbprint(), kid.as_str(), "{algorithm}: thumbprint");
        assert_eq!(key.key_id().as_deref(), Some(kid.as_str()), "{algorithm}");
        // The JWK is a key of its own algorithm only.
        for other in Algorithm::ALL.into_iter().filter(|o| *o != algorithm) {
            assert!(
                Independent::from_jwk(other, &jwk).is_err(),
                "{algorithm}'s JWK read as {other}"
            );
        }

        let now = SystemClock.unix_now();
        let claims = access_claims(now);
        let token = signer
            .sign_compact(&serde_json::to_vec(&claims).unwrap())
            .unwrap();
        let back = key
            .verify(&token, strict_options(kid))
            .unwrap_or_else(|e| panic!("{algorithm}: jwt-simple refused the token: {e}"));
        assert_eq!(back.issuer.as_deref(), Some(ISSUER), "{algorithm}");
        assert_eq!(back.subject.as_deref(), Some(CLIENT), "{algorithm}");
        assert_eq!(
            back.audiences.unwrap().into_string().unwrap(),
            AUDIENCE,
            "{algorithm}"
        );
        assert_eq!(back.jwt_id.as_deref(), Some(claims.jti.as_str()));
        let secs = |t: UnixTime| u64::try_from(t.as_secs()).unwrap();
        assert_eq!(back.issued_at.unwrap().as_secs(), secs(claims.iat));
        assert_eq!(back.invalid_before.unwrap().as_secs(), secs(claims.nbf));
        assert_eq!(back.expires_at.unwrap().as_secs(), secs(claims.exp));
        assert_eq!(
            back.custom,
            Extra {
                client_id: CLIENT.into(),
                scope: SCOPE.into(),
                cnf: claims.cnf.clone(),
            },
            "{algorithm}"
        );

        // The times are read as times: a token that expired an hour ago is refused.
        let mut expired = access_claims(now - Duration::from_secs(3600 + 600));
        expired.exp = now - Duration::from_secs(3600);
        let token = signer
            .sign_compact(&serde_json::to_vec(&expired).unwrap())
            .unwrap();
        assert!(
            key.verify(&token, strict_options(kid)).is_err(),
            "{algorithm}: an expired token verified"
        );
        verified.push(label(algorithm, bits));
    }
    eprintln!("verified by jwt-simple: {}", verified.join(", "));
}

#[test]
fn a_flipped_signature_byte_fails_in_jwt_simple() {
    for algorithm in Algorithm::ALL {
        let Some((signer, published)) = issuer_key(algorithm, RsaBits::B2048) else {
            continue;
        };
        let key = Independent::from_jwk(algorithm, &published_jwk(&published)).unwrap();
        let claims = access_claims(SystemClock.unix_now());
        let token = signer
            .sign_compact(&serde_json::to_vec(&claims).unwrap())
            .unwrap();
        let options = || strict_options(&published.kid);
        assert!(key.verify(&token, options()).is_ok(), "{algorithm}");
        let tampered = with_flipped_signature_byte(&token);
        let refused = key.verify(&tampered, options());
        assert!(refused.is_err(), "{algorithm}: a tampered token verified");
        // tokenmint's own verifier agrees.
        let keys = KeySet::new(vec![published.clone()]);
        assert_eq!(
            jose::verify_compact::<Value>(&tampered, &keys, &[TYP]),
            Err(JwsError::BadSignature),
            "{algorithm}"
        );
    }
}

/// A key pair of jwt-simple's: its public key as tokenmint reads it, jwt-simple's thumbprint
/// of it, and a function signing a fresh access token with it (`typ` and `kid` set).
struct IndependentSigner {
    public: PublicKey,
    thumbprint: String,
    sign: Box<dyn Fn() -> String>,
}

/// Claims jwt-simple signs: the same set as the issuer's.
fn independent_claims() -> JWTClaims<Extra> {
    Claims::with_custom_claims(
        Extra {
            client_id: CLIENT.into(),
            scope: SCOPE.into(),
            cnf: Confirmation {
                x5t_s256: CertificateThumbprint::of_der(b"cert").to_b64url(),
            },
        },
        jwt_simple::prelude::Duration::from_secs(LIFETIME.as_secs()),
    )
    .with_issuer(ISSUER)
    .with_subject(CLIENT)
    .with_audience(AUDIENCE)
    .with_jwt_id(crypto::random_id().unwrap())
}

fn at_jwt() -> HeaderOptions {
    HeaderOptions {
        signature_type: Some(TYP.into()),
        ..HeaderOptions::default()
    }
}

/// A jwt-simple key pair and tokenmint's form of its public key as an [`IndependentSigner`]:
/// its thumbprint by jwt-simple, and tokens under tokenmint's `kid` for that key.
macro_rules! independent {
    ($pair:expr, $public:expr) => {{
        let (pair, public) = ($pair, $public);
        let thumbprint = pair.public_key().jwk_thumbprint();
        let pair = pair.with_key_id(KeyId::of(&public).as_str());
        IndependentSigner {
            public,
            thumbprint,
            sign: Box::new(move || {
                pair.sign_with_options(independent_claims(), &at_jwt())
                    .unwrap()
            }),
        }
    }};
}

/// A new jwt-simple key pair for `algorithm`.
fn independent_signer(algorithm: Algorithm) -> IndependentSigner {
    match algorithm {
        Algorithm::Es256 => {
            let pair = ES256KeyPair::generate();
            let point = pair.public_key().public_key().to_bytes_uncompressed();
            assert_eq!((point.len(), point[0]), (65, 0x04));
            let public = PublicKey::P256 {
                x: point[1..33].to_vec(),
                y: point[33..].to_vec(),
            };
            independent!(pair, public)
        }
        Algorithm::EdDsa => {
            let pair = Ed25519KeyPair::generate();
            let public = PublicKey::Ed25519 {
                x: pair.public_key().to_bytes(),
            };
            independent!(pair, public)
        }
        Algorithm::Rs256 => {
            let pair = RS256KeyPair::generate(2048).unwrap();
            let components = pair.public_key().to_components();
            let public = PublicKey::Rsa {
                n: components.n,
                e: components.e,
            };
            independent!(pair, public)
        }
        Algorithm::Ps256 => {
            let pair = PS256KeyPair::generate(2048).unwrap();
            let components = pair.public_key().to_components();
            let public = PublicKey::Rsa {
                n: components.n,
                e: components.e,
            };
            independent!(pair, public)
        }
        Algorithm::MlDsa44 => {
            let pair = MLDSA44KeyPair::generate();
            let public = PublicKey::MlDsa {
                level: 44,
                public: pair.public_key().to_bytes(),
            };
            independent!(pair, public)
        }
        Algorithm::MlDsa65 => {
            let pair = MLDSA65KeyPair::generate();
            let public = PublicKey::MlDsa {
                level: 65,
                public: pair.public_key().to_bytes(),
            };
            independent!(pair, public)
        }
    }
}

/// Another algorithm, of the same key shape where there is one.
fn wrong_algorithm(algorithm: Algorithm) -> Algorithm {
    match algorithm {
        Algorithm::Es256 => Algorithm::EdDsa,
        Algorithm::EdDsa => Algorithm::Es256,
        Algorithm::Rs256 => Algorithm::Ps256,
        Algorithm::Ps256 => Algorithm::Rs256,
        Algorithm::MlDsa44 => Algorithm::MlDsa65,
        Algorithm::MlDsa65 => Algorithm::MlDsa44,
    }
}

/// The key set holding `public` as a key of `algorithm`.
fn key_set(algorithm: Algorithm, public: &PublicKey, low_s_only: bool) -> KeySet {
    KeySet::new(vec![PublishedKey {
        kid: KeyId::of(public),
        algorithm,
        public: public.clone(),
        low_s_only,
    }])
}

#[test]
fn tokenmint_verifies_what_jwt_simple_signs_under_the_key_records_algorithm() {
    for algorithm in Algorithm::ALL {
        let signer = independent_signer(algorithm);
        let kid = KeyId::of(&signer.public);
        assert!(signer.public.fits(algorithm), "{algorithm}");
        // Both implementations name the key alike.
        assert_eq!(signer.thumbprint, kid.as_str(), "{algorithm}: thumbprint");
        let keys = key_set(algorithm, &signer.public, true);
        let token = (signer.sign)();
        let verified = jose::verify_compact::<Value>(&token, &keys, &[TYP]);
        if !stack().verifies(algorithm) {
            // ring has no ML-DSA: refused, never taken on trust.
            assert_eq!(verified, Err(JwsError::BadSignature), "{algorithm}");
            eprintln!("{algorithm}: this build does not verify it (refused)");
            continue;
        }
        if algorithm == Algorithm::Es256 {
            es256_low_and_high_s(&signer, &keys);
        } else {
            let verified = verified.unwrap_or_else(|e| panic!("{algorithm}: refused: {e}"));
            assert_eq!(verified.kid, kid.as_str());
            assert_eq!(verified.payload["iss"], ISSUER, "{algorithm}");
            assert_eq!(verified.payload["sub"], CLIENT, "{algorithm}");
            assert_eq!(verified.payload["aud"], AUDIENCE, "{algorithm}");
            assert_eq!(verified.payload["scope"], SCOPE, "{algorithm}");
        }
        // A key record of another algorithm refuses it, whatever the token's header says.
        let wrong = key_set(wrong_algorithm(algorithm), &signer.public, true);
        assert_eq!(
            jose::verify_compact::<Value>(&token, &wrong, &[TYP]),
            Err(JwsError::AlgorithmMismatch),
            "{algorithm} under a {} key record",
            wrong_algorithm(algorithm)
        );
        // And a flipped signature byte is refused.
        assert_eq!(
            jose::verify_compact::<Value>(&with_flipped_signature_byte(&token), &keys, &[TYP]),
            Err(JwsError::BadSignature),
            "{algorithm}"
        );
    }
}

/// jwt-simple's ES256 signatures are not normalised to low S (p256 leaves S as it comes), so
/// about half are high-S: a low-S-only key record (every key tokenmint creates, and every key
/// it reads from a JWK Set) accepts only the low-S ones; without that rule both verify.
fn es256_low_and_high_s(signer: &IndependentSigner, low_s_only: &KeySet) {
    let either = key_set(Algorithm::Es256, &signer.public, false);
    let (mut low, mut high) = (0, 0);
    for _ in 0..64 {
        let token = (signer.sign)();
        let signature = crypto::b64url_decode(token.rsplit_once('.').unwrap().1).unwrap();
        let strict = jose::verify_compact::<Value>(&token, low_s_only, &[TYP]);
        if crypto::es256_is_high_s(&signature) {
            high += 1;
            assert_eq!(strict, Err(JwsError::BadSignature));
        } else {
            low += 1;
            assert_eq!(strict.unwrap().payload["iss"], ISSUER);
        }
        let lax = jose::verify_compact::<Value>(&token, &either, &[TYP]).unwrap();
        assert_eq!(lax.payload["sub"], CLIENT);
        if low > 0 && high > 0 {
            return;
        }
    }
    panic!("64 jwt-simple ES256 signatures, all of one form: {low} low-S, {high} high-S");
}

#[test]
fn token_sizes_stay_under_the_verifiers_limit() {
    let now = SystemClock.unix_now();
    for (algorithm, bits) in cases() {
        let Some((signer, published)) = issuer_key(algorithm, bits) else {
            continue;
        };
        let payload = serde_json::to_vec(&access_claims(now)).unwrap();
        let token = signer.sign_compact(&payload).unwrap();
        let parts: Vec<usize> = token.split('.').map(str::len).collect();
        eprintln!(
            "{}: {} bytes compact (header {}, payload {}, signature {}); JWK {} bytes",
            label(algorithm, bits),
            token.len(),
            parts[0],
            parts[1],
            parts[2],
            published_jwk(&published).len(),
        );
        assert!(
            token.len() <= jose::MAX_JWS_LEN,
            "{algorithm}: {} bytes",
            token.len()
        );
        if algorithm == Algorithm::MlDsa65 {
            // The largest token tokenmint signs, with a realistic claims set, still fits, and
            // both verifiers take it.
            assert!(token.len() < jose::MAX_JWS_LEN);
            let keys = KeySet::new(vec![published.clone()]);
            jose::verify_compact::<AccessTokenClaims>(&token, &keys, &[TYP]).unwrap();
            Independent::from_jwk(algorithm, &published_jwk(&published))
                .unwrap()
                .verify(&token, strict_options(&published.kid))
                .unwrap();
        }
    }
}
