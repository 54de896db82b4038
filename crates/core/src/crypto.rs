//! The one home of the crypto stack (ring by default, aws-lc-rs with the `aws-lc` feature;
//! [`backend`] is the only code that knows which): key generation and signing, AEAD for keys
//! at rest, HMAC, random ids, SHA-256 thumbprints, and the `CryptoProvider` jsonwebtoken
//! verifies with.

use std::fmt;

use backend::lib::{
    aead, digest, hmac,
    rand::{SecureRandom, SystemRandom},
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

mod backend;

/// The crypto stack this build was made with: one per build, chosen by cargo feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// ring (the default build).
    Ring,
    /// aws-lc-rs (`--no-default-features --features aws-lc`, or `fips`).
    AwsLc {
        /// Built on the FIPS module (`fips` feature).
        fips: bool,
    },
}

/// The crypto stack of this build.
pub fn stack() -> Stack {
    backend::STACK
}

/// Whether the FIPS module is in its approved mode: false outside the `fips` build.
pub fn fips_mode() -> bool {
    backend::fips_mode()
}

impl Stack {
    /// The library's name, as `--version` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Ring => "ring",
            Stack::AwsLc { fips: false } => "aws-lc-rs",
            Stack::AwsLc { fips: true } => "aws-lc-rs (FIPS module)",
        }
    }

    /// The cargo feature that selects it.
    pub fn feature(self) -> &'static str {
        match self {
            Stack::Ring => "ring",
            Stack::AwsLc { fips: false } => "aws-lc",
            Stack::AwsLc { fips: true } => "fips",
        }
    }

    /// Whether this build was made on the FIPS module (`fips` feature): it must then run in
    /// FIPS mode, and `serve` refuses to start otherwise.
    pub fn is_fips_build(self) -> bool {
        matches!(self, Stack::AwsLc { fips: true })
    }

    /// One line for `--version` and `check-config`: the stack, the feature, the FIPS state.
    pub fn describe(self) -> String {
        let fips = match self {
            Stack::AwsLc { fips: true } if fips_mode() => ", FIPS mode on",
            Stack::AwsLc { fips: true } => ", FIPS mode OFF",
            _ => "",
        };
        format!(
            "crypto: {} (feature `{}`{fips})",
            self.name(),
            self.feature()
        )
    }

    /// Whether this build can generate and sign with `algorithm` — checked when the
    /// configuration is read, so a build that lacks an algorithm says so at start-up, naming
    /// the feature that has it, never at the first rotation.
    pub fn supports(self, algorithm: Algorithm) -> Result<(), Unsupported> {
        // Each new algorithm must be placed here: ring cannot generate RSA keys and has no
        // ML-DSA.
        match (self, algorithm) {
            (_, Algorithm::Es256 | Algorithm::EdDsa)
            | (
                Stack::AwsLc { .. },
                Algorithm::Rs256 | Algorithm::Ps256 | Algorithm::MlDsa44 | Algorithm::MlDsa65,
            ) => Ok(()),
            (
                Stack::Ring,
                Algorithm::Rs256 | Algorithm::Ps256 | Algorithm::MlDsa44 | Algorithm::MlDsa65,
            ) => Err(Unsupported {
                algorithm,
                stack: self.name(),
            }),
        }
    }
}

impl Stack {
    /// The algorithms this build makes keys for and signs with, in [`Algorithm::ALL`]'s order.
    pub fn signing_algorithms(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(move |a| self.supports(*a).is_ok())
    }

    /// Whether this build verifies `algorithm`'s signatures: every algorithm but ML-DSA in a
    /// ring build (ring verifies RSA; it only cannot generate RSA keys).
    pub fn verifies(self, algorithm: Algorithm) -> bool {
        !(self == Stack::Ring && algorithm.is_post_quantum())
    }
}

/// An algorithm this build's crypto stack lacks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{algorithm} needs the aws-lc-rs crypto stack; this binary was built with {stack}: \
     rebuild with `cargo build --release --no-default-features --features aws-lc`"
)]
pub struct Unsupported {
    /// The algorithm asked for.
    pub algorithm: Algorithm,
    /// The stack this build has.
    pub stack: &'static str,
}

/// What failed in a cryptographic operation. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A private key could not be generated or parsed.
    #[error("the {0} private key is malformed")]
    MalformedKey(Algorithm),
    /// Signing failed.
    #[error("signing failed")]
    Sign,
    /// The device that holds the key (an HSM) cannot sign now: unreachable, logged out,
    /// busy, or missing the key. Retrying later may succeed.
    #[error("the signing device is unavailable: {0}")]
    Device(String),
    /// Sealing (encryption) failed.
    #[error("encryption failed")]
    Seal,
    /// Sealed data did not open: wrong key, wrong associated data, or tampering.
    #[error(
        "decryption failed: wrong key-encryption key, wrong associated data, or the data was altered"
    )]
    Open,
    /// The build's crypto stack lacks the algorithm.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// A key-encryption key is not 32 bytes of base64.
    #[error("a key-encryption key must be 32 random bytes in base64 ({0})")]
    MalformedKek(String),
}

/// A JWS signing algorithm tokenmint can generate keys for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (the default).
    #[default]
    Es256,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
    Rs256,
    /// RSASSA-PSS with SHA-256 and MGF1-SHA-256, 32-byte salt (RFC 7518 §3.5).
    Ps256,
    /// ML-DSA-44 (FIPS 204; RFC 9964).
    MlDsa44,
    /// ML-DSA-65 (FIPS 204; RFC 9964).
    MlDsa65,
}

impl Algorithm {
    /// Every algorithm, the default first.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Es256,
        Algorithm::EdDsa,
        Algorithm::Rs256,
        Algorithm::Ps256,
        Algorithm::MlDsa44,
        Algorithm::MlDsa65,
    ];

    /// The JOSE name: `ES256`, `EdDSA`, `RS256`, `PS256`, `ML-DSA-44` or `ML-DSA-65`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Rs256 => "RS256",
            Algorithm::Ps256 => "PS256",
            Algorithm::MlDsa44 => "ML-DSA-44",
            Algorithm::MlDsa65 => "ML-DSA-65",
        }
    }

    /// Parses the JOSE name, exactly as written.
    pub fn try_from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Whether this is a post-quantum algorithm, whose keys (`kty: "AKP"`) go in the separate
    /// post-quantum key set: verifiers that know no `AKP` key may refuse a whole set holding one.
    pub fn is_post_quantum(self) -> bool {
        matches!(self, Algorithm::MlDsa44 | Algorithm::MlDsa65)
    }

    /// The ML-DSA parameter set (44 or 65), for an ML-DSA algorithm.
    fn ml_dsa_level(self) -> Option<u16> {
        match self {
            Algorithm::MlDsa44 => Some(44),
            Algorithm::MlDsa65 => Some(65),
            _ => None,
        }
    }
}

/// A name that is not an algorithm's JOSE name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not one of ES256, EdDSA, RS256, PS256, ML-DSA-44, ML-DSA-65 (exact spelling)")]
pub struct UnknownAlgorithm(pub String);

/// A set of algorithms, in [`Algorithm::ALL`]'s order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AlgorithmSet(u8);

impl AlgorithmSet {
    /// The empty set.
    pub const EMPTY: AlgorithmSet = AlgorithmSet(0);

    fn bit(algorithm: Algorithm) -> u8 {
        let index = Algorithm::ALL
            .iter()
            .position(|a| *a == algorithm)
            .unwrap_or_default();
        1 << index
    }

    /// The set with `algorithm` added.
    #[must_use]
    pub fn with(self, algorithm: Algorithm) -> Self {
        Self(self.0 | Self::bit(algorithm))
    }

    /// Whether `algorithm` is in the set.
    pub fn contains(self, algorithm: Algorithm) -> bool {
        self.0 & Self::bit(algorithm) != 0
    }

    /// The algorithms in the set, in [`Algorithm::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Algorithm> for AlgorithmSet {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, Self::with)
    }
}

/// The size of new RSA keys (`[keys] rsa_bits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RsaBits {
    /// 2048 bits (the default: what every RSA consumer takes).
    #[default]
    B2048,
    /// 3072 bits (NIST's size for use past 2030).
    B3072,
}

impl RsaBits {
    /// The size in bits.
    pub fn bits(self) -> u32 {
        match self {
            RsaBits::B2048 => 2048,
            RsaBits::B3072 => 3072,
        }
    }

    /// 2048 or 3072.
    pub fn try_from_bits(bits: u64) -> Option<Self> {
        match bits {
            2048 => Some(RsaBits::B2048),
            3072 => Some(RsaBits::B3072),
            _ => None,
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from_name(s).ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn rng() -> &'static SystemRandom {
    static RNG: std::sync::OnceLock<SystemRandom> = std::sync::OnceLock::new();
    RNG.get_or_init(SystemRandom::new)
}

/// Fills an array with random bytes from the system generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    rng().fill(&mut out).map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// A random identifier of 128 bits, base64url without padding (22 characters).
pub fn random_id() -> Result<String, CryptoError> {
    Ok(b64url(&random_bytes::<16>()?))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url without padding.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Lower-case hexadecimal.
pub fn hex(data: &[u8]) -> String {
    use fmt::Write as _;
    data.iter()
        .fold(String::with_capacity(data.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The SHA-256 thumbprint of a certificate's DER: what `cnf.x5t#S256` carries (RFC 8705 §3.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertificateThumbprint([u8; 32]);

impl CertificateThumbprint {
    /// The thumbprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(sha256(der))
    }

    /// A thumbprint from 64 hex digits, either case, colons allowed between them (as
    /// `openssl x509 -fingerprint -sha256` prints it).
    pub fn from_hex(text: &str) -> Option<Self> {
        let digits = text.bytes().filter(|b| *b != b':').collect::<Vec<_>>();
        if digits.len() != 64 {
            return None;
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(digits.chunks_exact(2)) {
            let value = |d: u8| char::from(d).to_digit(16);
            *byte = u8::try_from(value(pair[0])? * 16 + value(pair[1])?).ok()?;
        }
        Some(Self(digest))
    }

    /// A thumbprint from its base64url form (43 characters, no padding).
    pub fn from_b64url(text: &str) -> Option<Self> {
        if text.len() != 43 {
            return None;
        }
        b64url_decode(text)?.try_into().ok().map(Self)
    }

    /// base64url without padding, as `x5t#S256` wants it.
    pub fn to_b64url(&self) -> String {
        b64url(&self.0)
    }

    /// Whether two thumbprints are equal, in time independent of where they differ.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl fmt::Debug for CertificateThumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateThumbprint({})", self.to_b64url())
    }
}

/// A parsed private signing key, kept parsed so signing a token costs one signature.
pub struct SigningKey {
    algorithm: Algorithm,
    pair: SigningPair,
}

enum SigningPair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
    MlDsa(backend::MlDsaPair),
}

/// The length of an ML-DSA seed: the private key RFC 9964 stores.
const ML_DSA_SEED_LEN: usize = 32;

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, …)", self.algorithm)
    }
}

/// The public half of a signing key, as the coordinates a JWK carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// P-256: the affine coordinates, 32 bytes each.
    P256 {
        /// x coordinate.
        x: Vec<u8>,
        /// y coordinate.
        y: Vec<u8>,
    },
    /// Ed25519: the 32-byte public key.
    Ed25519 {
        /// The public key.
        x: Vec<u8>,
    },
    /// RSA: modulus and public exponent, big-endian without leading zeros.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
    /// ML-DSA: the raw public key (RFC 9964's `pub`); `level` is 44 or 65, part of the key's
    /// identity (its thumbprint names the algorithm).
    MlDsa {
        /// The parameter set: 44 or 65.
        level: u16,
        /// The encoded public key.
        public: Vec<u8>,
    },
}

impl PublicKey {
    /// Whether this key can be a key of `algorithm` (its shape, not its validity).
    pub fn fits(&self, algorithm: Algorithm) -> bool {
        match self {
            PublicKey::P256 { .. } => algorithm == Algorithm::Es256,
            PublicKey::Ed25519 { .. } => algorithm == Algorithm::EdDsa,
            PublicKey::Rsa { .. } => matches!(algorithm, Algorithm::Rs256 | Algorithm::Ps256),
            PublicKey::MlDsa { level, .. } => algorithm.ml_dsa_level() == Some(*level),
        }
    }
}

impl SigningKey {
    /// Generates a new key (RSA of 2048 bits); returns it with its private document.
    pub fn generate(algorithm: Algorithm) -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        Self::generate_sized(algorithm, RsaBits::default())
    }

    /// Generates a new key, RSA of `rsa_bits`; returns it with its private document, to be
    /// sealed for storage: PKCS#8, or for ML-DSA the 32-byte seed (RFC 9964's private key).
    /// An algorithm the build lacks is [`CryptoError::Unsupported`].
    pub fn generate_sized(
        algorithm: Algorithm,
        rsa_bits: RsaBits,
    ) -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        stack()
            .supports(algorithm)
            .map_err(CryptoError::Unsupported)?;
        let malformed = |_| CryptoError::MalformedKey(algorithm);
        let document = match algorithm {
            Algorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, rng())
                    .map_err(malformed)?
                    .as_ref()
                    .to_vec()
            }
            Algorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(rng())
                .map_err(malformed)?
                .as_ref()
                .to_vec(),
            Algorithm::Rs256 | Algorithm::Ps256 => backend::rsa_generate_pkcs8(rsa_bits.bits())
                .ok_or(CryptoError::MalformedKey(algorithm))?,
            Algorithm::MlDsa44 | Algorithm::MlDsa65 => random_bytes::<ML_DSA_SEED_LEN>()?.to_vec(),
        };
        let document = Zeroizing::new(document);
        let key = Self::try_from_pkcs8(algorithm, &document)?;
        Ok((key, document))
    }

    /// Parses a private key of the given algorithm: PKCS#8, or for ML-DSA its 32-byte seed.
    pub fn try_from_pkcs8(algorithm: Algorithm, document: &[u8]) -> Result<Self, CryptoError> {
        let malformed = CryptoError::MalformedKey(algorithm);
        let pair = match algorithm {
            Algorithm::Es256 => {
                SigningPair::Ecdsa(backend::p256_from_pkcs8(document).ok_or(malformed)?)
            }
            Algorithm::EdDsa => SigningPair::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(document).map_err(|_| malformed)?,
            ),
            Algorithm::Rs256 | Algorithm::Ps256 => {
                let pair = RsaKeyPair::from_pkcs8(document).map_err(|_| malformed)?;
                let bits = pair.public_key().modulus_len() * 8;
                if !(2048..=4096).contains(&bits) {
                    return Err(CryptoError::MalformedKey(algorithm));
                }
                SigningPair::Rsa(pair)
            }
            Algorithm::MlDsa44 | Algorithm::MlDsa65 => {
                let level = algorithm
                    .ml_dsa_level()
                    .ok_or(CryptoError::MalformedKey(algorithm))?;
                if document.len() != ML_DSA_SEED_LEN {
                    return Err(malformed);
                }
                SigningPair::MlDsa(backend::ml_dsa_from_seed(level, document).ok_or(malformed)?)
            }
        };
        Ok(Self { algorithm, pair })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        match &self.pair {
            SigningPair::Ecdsa(pair) => {
                // The uncompressed point: 0x04 ‖ x ‖ y.
                let point = pair.public_key().as_ref();
                let coords = point.get(1..).unwrap_or_default();
                let (x, y) = coords.split_at(coords.len() / 2);
                PublicKey::P256 {
                    x: x.to_vec(),
                    y: y.to_vec(),
                }
            }
            SigningPair::Ed25519(pair) => PublicKey::Ed25519 {
                x: pair.public_key().as_ref().to_vec(),
            },
            SigningPair::Rsa(pair) => {
                let components =
                    signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                PublicKey::Rsa {
                    n: components.n,
                    e: components.e,
                }
            }
            SigningPair::MlDsa(pair) => PublicKey::MlDsa {
                level: self.algorithm.ml_dsa_level().unwrap_or_default(),
                public: backend::ml_dsa_public(pair),
            },
        }
    }

    /// Signs `message`; the JWS signature bytes (ES256: the fixed 64-byte r ‖ s form, always
    /// low-S).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &self.pair {
            SigningPair::Ecdsa(pair) => pair
                .sign(rng(), message)
                .map(|sig| es256_low_s(sig.as_ref().to_vec()))
                .map_err(|_| CryptoError::Sign),
            SigningPair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            SigningPair::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.algorithm {
                    Algorithm::Ps256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0u8; pair.public_key().modulus_len()];
                pair.sign(padding, rng(), message, &mut out)
                    .map_err(|_| CryptoError::Sign)?;
                Ok(out)
            }
            SigningPair::MlDsa(pair) => {
                backend::ml_dsa_sign(pair, message).ok_or(CryptoError::Sign)
            }
        }
    }
}

/// The order n of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// ⌊n / 2⌋ for the P-256 order, big-endian: the largest s of a low-S signature.
const P256_HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// The s half of a fixed-form ES256 signature (r ‖ s, 32 bytes each, big-endian).
fn es256_s(signature: &[u8]) -> Option<&[u8; 32]> {
    if signature.len() != 64 {
        return None;
    }
    signature.get(32..)?.try_into().ok()
}

/// Whether a fixed-form ES256 signature has s > n/2 ("high-S"). ECDSA accepts (r, s) and
/// (r, n − s) alike, so each token has two spellings; tokenmint signs only the low one and
/// refuses the high one for keys created since the low-S cut-over.
/// Anything not 64 bytes is not high-S (it is not an ES256 signature at all).
pub fn es256_is_high_s(signature: &[u8]) -> bool {
    // Equal-length big-endian byte strings compare as the numbers do.
    es256_s(signature).is_some_and(|s| *s > P256_HALF_ORDER)
}

/// The other valid spelling of a fixed-form ES256 signature: (r, n − s), for 0 < s < n.
/// `None` for anything else (wrong length, s = 0, s ≥ n: no valid signature has those).
pub fn es256_twin(signature: &[u8]) -> Option<Vec<u8>> {
    let s = es256_s(signature)?;
    if s.iter().all(|b| *b == 0) || *s >= P256_ORDER {
        return None;
    }
    let mut out = signature.to_vec();
    let mut borrow = 0u8;
    for i in (0..32).rev() {
        let (digit, under_1) = P256_ORDER[i].overflowing_sub(s[i]);
        let (digit, under_2) = digit.overflowing_sub(borrow);
        borrow = u8::from(under_1 || under_2);
        out[32 + i] = digit;
    }
    Some(out)
}

/// The one low-S rule every signer applies: a high-S ES256 signature becomes (r, n − s), the
/// same signature's low spelling; anything else is returned as it is.
pub fn es256_low_s(signature: Vec<u8>) -> Vec<u8> {
    if es256_is_high_s(&signature) {
        es256_twin(&signature).unwrap_or(signature)
    } else {
        signature
    }
}

/// Verifies a JWS signature of `algorithm` over `message` with a public key; false when the
/// key is not a key of that algorithm (an RSA key verifies RS256 or PS256, as its record says).
pub fn verify_signature(
    algorithm: Algorithm,
    public: &PublicKey,
    message: &[u8],
    sig: &[u8],
) -> bool {
    if !public.fits(algorithm) {
        return false;
    }
    match public {
        PublicKey::P256 { x, y } => {
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            verify_raw(algorithm, &point, message, sig)
        }
        PublicKey::Ed25519 { x } => verify_raw(algorithm, x, message, sig),
        PublicKey::Rsa { n, e } => {
            let verification = match algorithm {
                Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                _ => &signature::RSA_PKCS1_2048_8192_SHA256,
            };
            signature::RsaPublicKeyComponents { n, e }
                .verify(verification, message, sig)
                .is_ok()
        }
        PublicKey::MlDsa { level, public } => backend::ml_dsa_verify(*level, public, message, sig),
    }
}

/// Verifies with an elliptic-curve public key in the stack's raw form: the uncompressed point
/// for P-256, the 32 bytes for Ed25519.
fn verify_raw(algorithm: Algorithm, public: &[u8], message: &[u8], sig: &[u8]) -> bool {
    let verification: &'static dyn signature::VerificationAlgorithm = match algorithm {
        Algorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::EdDsa => &signature::ED25519,
        _ => return false,
    };
    signature::UnparsedPublicKey::new(verification, public)
        .verify(message, sig)
        .is_ok()
}

/// A key-encryption key: 32 random bytes that seal signing keys and the client-secret pepper.
pub struct Kek {
    key: aead::LessSafeKey,
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek(id {}, …)", self.id)
    }
}

/// Data sealed under a KEK: what is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The id of the KEK that sealed it.
    pub kek_id: String,
    /// The random 96-bit nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext with the 16-byte tag appended.
    pub ciphertext: Vec<u8>,
}

impl Kek {
    /// A new random KEK.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::from_bytes(Zeroizing::new(random_bytes::<32>()?))
    }

    /// Reads a KEK from its base64 text (standard or URL-safe alphabet, surrounding space ignored).
    pub fn try_from_base64(text: &str) -> Result<Self, CryptoError> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let text = text.trim();
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE.decode(text))
                .map_err(|_| CryptoError::MalformedKek("not valid base64".into()))?,
        );
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            CryptoError::MalformedKek(format!("decoded to {} bytes", decoded.len()))
        })?;
        Self::from_bytes(Zeroizing::new(bytes))
    }

    fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Result<Self, CryptoError> {
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, bytes.as_ref())
            .map_err(|_| CryptoError::MalformedKek("rejected by AES-256-GCM".into()))?;
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, bytes.as_ref()),
            b"tokenmint/kek-id/v1",
        );
        let id = hex(tag.as_ref().get(..8).unwrap_or_default());
        Ok(Self {
            key: aead::LessSafeKey::new(unbound),
            id,
            bytes,
        })
    }

    /// The KEK's id: hex of the first 8 bytes of HMAC-SHA-256(KEK, "tokenmint/kek-id/v1").
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The base64 text to write to a KEK file. Handle as a secret.
    pub fn to_base64(&self) -> Zeroizing<String> {
        use base64::engine::general_purpose::STANDARD;
        Zeroizing::new(STANDARD.encode(self.bytes.as_ref()))
    }

    /// Seals `plaintext` with AES-256-GCM under a random nonce, binding `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, CryptoError> {
        let nonce = random_bytes::<12>()?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                &mut in_out,
            )
            .map_err(|_| CryptoError::Seal)?;
        Ok(Sealed {
            kek_id: self.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext: in_out,
        })
    }

    /// Opens data this KEK sealed with the same `aad`.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let nonce: [u8; 12] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Open)?;
        let mut in_out = Zeroizing::new(sealed.ciphertext.clone());
        let len = self
            .key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                &mut in_out,
            )
            .map_err(|_| CryptoError::Open)?
            .len();
        in_out.truncate(len);
        Ok(in_out)
    }
}

/// HMAC-SHA-256 under the client-secret pepper: how client secrets are stored and checked.
pub struct SecretHasher {
    key: hmac::Key,
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHasher(…)")
    }
}

impl SecretHasher {
    /// A hasher keyed by `pepper`.
    pub fn new(pepper: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, pepper),
        }
    }

    /// The stored form of `secret`.
    pub fn hash(&self, secret: &str) -> Vec<u8> {
        hmac::sign(&self.key, secret.as_bytes()).as_ref().to_vec()
    }

    /// Checks `secret` against a stored hash in constant time.
    pub fn verify(&self, secret: &str, stored: &[u8]) -> bool {
        hmac::verify(&self.key, secret.as_bytes(), stored).is_ok()
    }
}

/// Generates a client secret: 256 random bits, base64url.
pub fn generate_client_secret() -> Result<Zeroizing<String>, CryptoError> {
    let bytes = Zeroizing::new(random_bytes::<32>()?);
    Ok(Zeroizing::new(b64url(bytes.as_ref())))
}

pub use jwt_provider::install as install_jwt_provider;

/// jsonwebtoken's `CryptoProvider`, written over this module (so over the build's stack):
/// ES256 and EdDSA only (tests and tools; the project's own JWS code covers every algorithm).
mod jwt_provider {
    use jsonwebtoken::{
        Algorithm as JwtAlgorithm, DecodingKey, EncodingKey,
        crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils},
        errors::{Error, ErrorKind},
        jwk::{EllipticCurve, ThumbprintHash},
    };
    use signature as signature_trait;

    use super::{Algorithm, PublicKey, SigningKey};

    static PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory: new_signer,
        verifier_factory: new_verifier,
        key_utils: KeyUtils {
            rsa_pub_components_from_private_key: |_| Err(ErrorKind::UnsupportedAlgorithm.into()),
            rsa_pub_components_from_public_key: |_| Err(ErrorKind::UnsupportedAlgorithm.into()),
            ec_pub_components_from_private_key: ec_components,
            ed_pub_components_from_private_key: ed_components,
            compute_digest,
        },
    };

    /// Installs the provider for the process; later calls are no-ops.
    pub fn install() {
        let _ = PROVIDER.install_default();
    }

    fn ours(algorithm: JwtAlgorithm) -> Result<Algorithm, Error> {
        match algorithm {
            JwtAlgorithm::ES256 => Ok(Algorithm::Es256),
            JwtAlgorithm::EdDSA => Ok(Algorithm::EdDsa),
            _ => Err(ErrorKind::InvalidAlgorithm.into()),
        }
    }

    struct Verifier {
        algorithm: JwtAlgorithm,
        ours: Algorithm,
        public_key: Vec<u8>,
    }

    impl signature_trait::Verifier<Vec<u8>> for Verifier {
        fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature_trait::Error> {
            super::verify_raw(self.ours, &self.public_key, msg, sig)
                .then_some(())
                .ok_or_else(signature_trait::Error::new)
        }
    }

    impl JwtVerifier for Verifier {
        fn algorithm(&self) -> JwtAlgorithm {
            self.algorithm
        }
    }

    fn new_verifier(
        algorithm: &JwtAlgorithm,
        key: &DecodingKey,
    ) -> Result<Box<dyn JwtVerifier>, Error> {
        Ok(Box::new(Verifier {
            algorithm: *algorithm,
            ours: ours(*algorithm)?,
            public_key: key.try_get_as_bytes()?.to_vec(),
        }))
    }

    struct Signer {
        algorithm: JwtAlgorithm,
        key: SigningKey,
    }

    impl signature_trait::Signer<Vec<u8>> for Signer {
        fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature_trait::Error> {
            self.key
                .sign(msg)
                .map_err(|_| signature_trait::Error::new())
        }
    }

    impl JwtSigner for Signer {
        fn algorithm(&self) -> JwtAlgorithm {
            self.algorithm
        }
    }

    fn parse(algorithm: Algorithm, pkcs8: &[u8]) -> Result<SigningKey, Error> {
        SigningKey::try_from_pkcs8(algorithm, pkcs8).map_err(|_| {
            Error::from(match algorithm {
                Algorithm::Es256 => ErrorKind::InvalidEcdsaKey,
                Algorithm::EdDsa => ErrorKind::InvalidEddsaKey,
                Algorithm::Rs256 | Algorithm::Ps256 => ErrorKind::InvalidRsaKey(String::new()),
                Algorithm::MlDsa44 | Algorithm::MlDsa65 => ErrorKind::InvalidAlgorithm,
            })
        })
    }

    fn new_signer(
        algorithm: &JwtAlgorithm,
        key: &EncodingKey,
    ) -> Result<Box<dyn JwtSigner>, Error> {
        Ok(Box::new(Signer {
            algorithm: *algorithm,
            key: parse(ours(*algorithm)?, key.as_bytes())?,
        }))
    }

    fn ec_components(
        der: &[u8],
        algorithm: JwtAlgorithm,
    ) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
        if algorithm != JwtAlgorithm::ES256 {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        match parse(Algorithm::Es256, der)?.public_key() {
            PublicKey::P256 { x, y } => Ok((EllipticCurve::P256, x, y)),
            _ => Err(ErrorKind::InvalidEcdsaKey.into()),
        }
    }

    fn ed_components(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>, Error> {
        if *curve != EllipticCurve::Ed25519 {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        match parse(Algorithm::EdDsa, der)?.public_key() {
            PublicKey::Ed25519 { x } => Ok(x),
            _ => Err(ErrorKind::InvalidEddsaKey.into()),
        }
    }

    fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
        use super::backend::lib::digest;
        let algorithm = match hash {
            ThumbprintHash::SHA256 => &digest::SHA256,
            ThumbprintHash::SHA384 => &digest::SHA384,
            ThumbprintHash::SHA512 => &digest::SHA512,
            _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
        };
        Ok(digest::digest(algorithm, data).as_ref().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thumbprint_reads_from_hex_with_or_without_colons_and_from_base64url() {
        let t = CertificateThumbprint::of_der(b"certificate");
        let lower = hex(&t.0);
        let colons = lower
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap().to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(CertificateThumbprint::from_hex(&lower), Some(t));
        assert_eq!(CertificateThumbprint::from_hex(&colons), Some(t));
        assert_eq!(CertificateThumbprint::from_b64url(&t.to_b64url()), Some(t));
        for bad in [
            &lower[..62],
            &format!("{lower}00"),
            &lower.replace('a', "g"),
            "",
            "::",
        ] {
            assert_eq!(CertificateThumbprint::from_hex(bad), None, "{bad:?}");
        }
        assert_eq!(CertificateThumbprint::from_b64url(&lower), None);
    }

    #[test]
    fn a_base64url_thumbprint_has_one_spelling_and_nothing_else_reads() {
        let t = CertificateThumbprint::of_der(b"certificate");
        let text = t.to_b64url();
        assert_eq!(text.len(), 43);
        // The last character carries 4 bits of the digest and 2 unused ones: setting an
        // unused bit spells no other thumbprint.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = ALPHABET
            .iter()
            .position(|c| *c == text.as_bytes()[42])
            .unwrap();
        assert_eq!(last & 0b11, 0);
        let trailing_bits = format!("{}{}", &text[..42], char::from(ALPHABET[last | 1]));
        let standard_alphabet = {
            let mut t = [0u8; 32];
            t[0] = 0xfb; // "+" in the standard alphabet, "-" in base64url
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(t)
        };
        for bad in [
            "",
            " ",
            &text[..42],
            &format!("{text}A"),
            &format!("{text}="),
            &format!(" {text}"),
            &trailing_bits,
            &standard_alphabet,
            &hex(&t.0),
            &"A".repeat(44),
        ] {
            assert_eq!(CertificateThumbprint::from_b64url(bad), None, "{bad:?}");
        }
        assert_eq!(CertificateThumbprint::from_b64url(&text), Some(t));
    }

    #[test]
    fn kek_seal_open_binds_associated_data() {
        let kek = Kek::generate().unwrap();
        let sealed = kek.seal(b"secret", b"ad-1").unwrap();
        assert_eq!(kek.open(&sealed, b"ad-1").unwrap().as_slice(), b"secret");
        assert!(kek.open(&sealed, b"ad-2").is_err());
        let other = Kek::generate().unwrap();
        assert!(other.open(&sealed, b"ad-1").is_err());
    }

    #[test]
    fn kek_id_is_hmac_prefix_and_base64_round_trips() {
        let kek = Kek::generate().unwrap();
        assert_eq!(kek.id().len(), 16);
        let again = Kek::try_from_base64(&kek.to_base64()).unwrap();
        assert_eq!(again.id(), kek.id());
        assert!(Kek::try_from_base64("c2hvcnQ=").is_err());
        assert!(Kek::try_from_base64("!!!").is_err());
    }

    #[test]
    fn kek_id_matches_known_answer() {
        // HMAC-SHA-256 with a 32-byte key of zeros over "tokenmint/kek-id/v1", first 8 bytes,
        // computed independently (Python's hmac module).
        let zero = Kek::try_from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        assert_eq!(zero.id(), "7e863af580a81f97");
    }

    #[test]
    fn the_stack_is_the_one_the_features_chose() {
        let expected = if cfg!(feature = "aws-lc") {
            Stack::AwsLc {
                fips: cfg!(feature = "fips"),
            }
        } else {
            Stack::Ring
        };
        assert_eq!(stack(), expected);
        assert_eq!(stack().is_fips_build(), cfg!(feature = "fips"));
        // Outside the FIPS build the module is never reported in FIPS mode.
        assert!(cfg!(feature = "fips") || !fips_mode());
        assert!(stack().describe().contains(stack().name()));
        assert!(stack().describe().contains(stack().feature()));
    }

    #[test]
    fn every_algorithm_works_in_this_build_or_names_the_feature_that_has_it() {
        for alg in Algorithm::ALL {
            match stack().supports(alg) {
                Ok(()) => {
                    let (key, _) = SigningKey::generate(alg).unwrap();
                    let sig = key.sign(b"m").unwrap();
                    assert!(
                        verify_signature(alg, &key.public_key(), b"m", &sig),
                        "{alg}"
                    );
                }
                Err(e) => {
                    assert_eq!(e.algorithm, alg);
                    assert!(e.to_string().contains("--features aws-lc"), "{e}");
                    // Generating says the same, naming the feature.
                    let refused = SigningKey::generate(alg).unwrap_err().to_string();
                    assert!(refused.contains("--features aws-lc"), "{refused}");
                }
            }
        }
    }

    #[test]
    fn sign_and_verify_each_algorithm() {
        for alg in stack().signing_algorithms() {
            let (key, document) = SigningKey::generate(alg).unwrap();
            let public = key.public_key();
            assert!(public.fits(alg), "{alg}");
            let sig = key.sign(b"message").unwrap();
            assert!(verify_signature(alg, &public, b"message", &sig), "{alg}");
            assert!(!verify_signature(alg, &public, b"massage", &sig), "{alg}");
            let reparsed = SigningKey::try_from_pkcs8(alg, &document).unwrap();
            assert_eq!(reparsed.public_key(), public, "{alg}");
            // A key verifies only under its own algorithm.
            for other in Algorithm::ALL.into_iter().filter(|o| *o != alg) {
                assert!(
                    !verify_signature(other, &public, b"message", &sig),
                    "{alg} as {other}"
                );
            }
        }
        assert!(SigningKey::try_from_pkcs8(Algorithm::Es256, b"junk").is_err());
    }

    #[test]
    fn new_key_shapes_and_sizes() {
        for alg in stack().signing_algorithms() {
            let (key, document) = SigningKey::generate(alg).unwrap();
            let sig = key.sign(b"m").unwrap();
            let (public_len, sig_len) = match key.public_key() {
                PublicKey::P256 { x, y } => (x.len() + y.len(), 64),
                PublicKey::Ed25519 { x } => (x.len(), 64),
                PublicKey::Rsa { n, e } => {
                    assert_eq!(e, [1, 0, 1], "{alg}: e = 65537");
                    (n.len(), 256)
                }
                PublicKey::MlDsa { level: 44, public } => (public.len() - 1312 + 64, 2420),
                PublicKey::MlDsa { public, .. } => (public.len() - 1952 + 64, 3309),
            };
            assert_eq!(sig.len(), sig_len, "{alg}");
            match alg {
                Algorithm::Rs256 | Algorithm::Ps256 => assert_eq!(public_len, 256, "{alg}"),
                Algorithm::EdDsa => assert_eq!(public_len, 32),
                _ => assert_eq!(public_len, 64, "{alg}"),
            }
            if alg.is_post_quantum() {
                // RFC 9964: the private key is the 32-byte seed.
                assert_eq!(document.len(), 32);
            }
        }
        if stack().supports(Algorithm::Rs256).is_ok() {
            let (big, _) = SigningKey::generate_sized(Algorithm::Ps256, RsaBits::B3072).unwrap();
            assert!(matches!(big.public_key(), PublicKey::Rsa { n, .. } if n.len() == 384));
            assert_eq!(big.sign(b"m").unwrap().len(), 384);
        }
    }

    #[test]
    fn pss_signatures_are_randomised_and_pkcs1_ones_are_not() {
        if stack().supports(Algorithm::Ps256).is_err() {
            return;
        }
        let (pss, _) = SigningKey::generate(Algorithm::Ps256).unwrap();
        assert_ne!(pss.sign(b"m").unwrap(), pss.sign(b"m").unwrap());
        let (pkcs1, _) = SigningKey::generate(Algorithm::Rs256).unwrap();
        assert_eq!(pkcs1.sign(b"m").unwrap(), pkcs1.sign(b"m").unwrap());
    }

    #[test]
    fn algorithm_names_round_trip_and_only_ml_dsa_is_post_quantum() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::try_from_name(alg.as_str()), Some(alg));
            assert_eq!(
                alg.is_post_quantum(),
                alg.as_str().starts_with("ML-DSA"),
                "{alg}"
            );
            assert!(stack().verifies(alg) || stack() == Stack::Ring && alg.is_post_quantum());
        }
        assert_eq!(Algorithm::try_from_name("ml-dsa-44"), None);
        assert_eq!(Algorithm::try_from_name("ML-DSA-87"), None);
    }

    /// 32 bytes from 64 hex digits.
    fn be(hex_digits: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex_digits.as_bytes().chunks_exact(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
        }
        out
    }

    /// A signature with r = 0x11… and the given s.
    fn with_s(s: [u8; 32]) -> Vec<u8> {
        [[0x11u8; 32], s].concat()
    }

    /// `value` + `k` for small `k`, big-endian.
    fn plus(mut value: [u8; 32], mut k: u8) -> [u8; 32] {
        for byte in value.iter_mut().rev() {
            let (sum, carry) = byte.overflowing_add(k);
            *byte = sum;
            k = u8::from(carry);
        }
        value
    }

    fn minus_one(mut value: [u8; 32]) -> [u8; 32] {
        for byte in value.iter_mut().rev() {
            let (digit, borrow) = byte.overflowing_sub(1);
            *byte = digit;
            if !borrow {
                break;
            }
        }
        value
    }

    #[test]
    fn the_order_constants_are_the_p256_order_and_its_half() {
        assert_eq!(
            P256_ORDER,
            be("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
        );
        // n is odd: n = 2⌊n/2⌋ + 1.
        let doubled = {
            let mut out = [0u8; 32];
            let mut carry = 0u16;
            for i in (0..32).rev() {
                let sum = u16::from(P256_HALF_ORDER[i]) * 2 + carry;
                out[i] = (sum & 0xff) as u8;
                carry = sum >> 8;
            }
            assert_eq!(carry, 0);
            out
        };
        assert_eq!(plus(doubled, 1), P256_ORDER);
    }

    #[test]
    fn low_s_normalisation_at_the_edges() {
        let half = P256_HALF_ORDER;
        let above_half = plus(half, 1);
        let n_minus_one = minus_one(P256_ORDER);
        let mut one = [0u8; 32];
        one[31] = 1;

        // s = n/2 is the largest low s: kept.
        assert!(!es256_is_high_s(&with_s(half)));
        assert_eq!(es256_low_s(with_s(half)), with_s(half));
        // s = n/2 + 1 is the smallest high s: its twin is n − (⌊n/2⌋ + 1) = ⌊n/2⌋.
        assert!(es256_is_high_s(&with_s(above_half)));
        assert_eq!(es256_low_s(with_s(above_half)), with_s(half));
        // s = n − 1 becomes 1, and 1 stays.
        assert!(es256_is_high_s(&with_s(n_minus_one)));
        assert_eq!(es256_low_s(with_s(n_minus_one)), with_s(one));
        assert!(!es256_is_high_s(&with_s(one)));
        assert_eq!(es256_low_s(with_s(one)), with_s(one));
        assert_eq!(es256_twin(&with_s(one)), Some(with_s(n_minus_one)));

        // r is never touched.
        assert_eq!(es256_low_s(with_s(n_minus_one))[..32], [0x11u8; 32]);
    }

    #[test]
    fn low_s_normalisation_known_answers() {
        // n − s computed independently (Python integers).
        let s = be("c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5");
        let n_minus_s = be("39fb806abe128293cfbabf916a3f8327606f6c621a2861dd480dc1099ff2866c");
        assert!(es256_is_high_s(&with_s(s)));
        assert_eq!(es256_low_s(with_s(s)), with_s(n_minus_s));
        assert_eq!(es256_twin(&with_s(n_minus_s)), Some(with_s(s)));
        // A borrow that runs through 31 bytes.
        let mut s = [0u8; 32];
        s[0] = 1;
        assert_eq!(
            es256_twin(&with_s(s)),
            Some(with_s(be(
                "feffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551"
            )))
        );
    }

    #[test]
    fn what_is_no_valid_es256_signature_is_left_alone() {
        let zero = [0u8; 32];
        assert!(!es256_is_high_s(&with_s(zero)));
        assert_eq!(es256_twin(&with_s(zero)), None);
        assert_eq!(es256_low_s(with_s(zero)), with_s(zero));
        // s ≥ n: high, but it has no twin and is not rewritten.
        for s in [P256_ORDER, plus(P256_ORDER, 1), [0xff; 32]] {
            assert!(es256_is_high_s(&with_s(s)));
            assert_eq!(es256_twin(&with_s(s)), None);
            assert_eq!(es256_low_s(with_s(s)), with_s(s));
        }
        // Not 64 bytes: not an ES256 signature; an Ed25519 signature is never rewritten.
        for len in [0, 32, 63, 65] {
            let bytes = vec![0xff; len];
            assert!(!es256_is_high_s(&bytes));
            assert_eq!(es256_twin(&bytes), None);
            assert_eq!(es256_low_s(bytes.clone()), bytes);
        }
    }

    #[test]
    fn es256_signatures_are_low_s_and_their_high_twins_still_verify_in_the_stack() {
        let (key, _) = SigningKey::generate(Algorithm::Es256).unwrap();
        let public = key.public_key();
        for i in 0..64u32 {
            let message = i.to_be_bytes();
            let sig = key.sign(&message).unwrap();
            assert!(!es256_is_high_s(&sig), "signature {i} is high-S");
            assert!(verify_signature(Algorithm::Es256, &public, &message, &sig));
            // Why the rule is needed: both stacks accept the high-S twin as well.
            let twin = es256_twin(&sig).unwrap();
            assert!(es256_is_high_s(&twin));
            assert!(verify_signature(Algorithm::Es256, &public, &message, &twin));
        }
    }

    #[test]
    fn secret_hasher_checks_in_constant_time_api() {
        let hasher = SecretHasher::new(&[7u8; 32]);
        let stored = hasher.hash("s3cret");
        assert!(hasher.verify("s3cret", &stored));
        assert!(!hasher.verify("s3cret!", &stored));
        assert!(!SecretHasher::new(&[8u8; 32]).verify("s3cret", &stored));
    }
}
