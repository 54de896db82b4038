//! The build's crypto stack: the one place in the code that reads the `ring` and `aws-lc`
//! features. Everything else in [`crate::crypto`] is written once against the API both
//! libraries share (aws-lc-rs keeps *ring*'s), through [`lib`]; the few calls whose
//! signatures differ are wrapped here.

#[cfg(all(feature = "ring", feature = "aws-lc"))]
compile_error!(
    "tokenmint builds with exactly one crypto stack, and both `ring` and `aws-lc` are on: \
     build with `--no-default-features --features aws-lc` (or `fips`) for aws-lc-rs"
);

#[cfg(not(any(feature = "ring", feature = "aws-lc")))]
compile_error!(
    "tokenmint needs a crypto stack: the default feature `ring`, or \
     `--no-default-features --features aws-lc`"
);

#[cfg(feature = "aws-lc")]
mod chosen {
    pub use aws_lc_rs as lib;
    use lib::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

    pub const STACK: super::super::Stack = super::super::Stack::AwsLc {
        fips: cfg!(feature = "fips"),
    };

    /// A P-256 key pair from PKCS#8 (aws-lc-rs takes no random source).
    pub fn p256_from_pkcs8(pkcs8: &[u8]) -> Option<EcdsaKeyPair> {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).ok()
    }

    /// Whether the FIPS module is in its approved mode (always false outside `fips`).
    pub fn fips_mode() -> bool {
        cfg!(feature = "fips") && lib::try_fips_mode().is_ok()
    }

    /// A new RSA key of `bits` (2048 or 3072), as PKCS#8.
    pub fn rsa_generate_pkcs8(bits: u32) -> Option<Vec<u8>> {
        use lib::{encoding::AsDer as _, rsa::KeySize, signature::RsaKeyPair};
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            _ => return None,
        };
        let pair = RsaKeyPair::generate(size).ok()?;
        Some(pair.as_der().ok()?.as_ref().to_vec())
    }

    /// An ML-DSA key pair (FIPS 204), made from its 32-byte seed (RFC 9964's private key).
    pub struct MlDsaPair(lib::signature::PqdsaKeyPair);

    fn ml_dsa_signing(level: u16) -> Option<&'static lib::signature::PqdsaSigningAlgorithm> {
        match level {
            44 => Some(&lib::signature::ML_DSA_44_SIGNING),
            65 => Some(&lib::signature::ML_DSA_65_SIGNING),
            _ => None,
        }
    }

    /// The ML-DSA-`level` key of `seed`.
    pub fn ml_dsa_from_seed(level: u16, seed: &[u8]) -> Option<MlDsaPair> {
        lib::signature::PqdsaKeyPair::from_seed(ml_dsa_signing(level)?, seed)
            .ok()
            .map(MlDsaPair)
    }

    /// A signature (pure ML-DSA, empty context, hedged).
    pub fn ml_dsa_sign(pair: &MlDsaPair, message: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; pair.0.algorithm().signature_len()];
        let len = pair.0.sign(message, &mut out).ok()?;
        out.truncate(len);
        Some(out)
    }

    /// The public key's raw encoding (FIPS 204 pkEncode).
    pub fn ml_dsa_public(pair: &MlDsaPair) -> Vec<u8> {
        use lib::signature::KeyPair as _;
        pair.0.public_key().as_ref().to_vec()
    }

    /// Verifies an ML-DSA-`level` signature with the raw public key.
    pub fn ml_dsa_verify(level: u16, public: &[u8], message: &[u8], sig: &[u8]) -> bool {
        use lib::signature::{ML_DSA_44, ML_DSA_65, UnparsedPublicKey};
        let algorithm = match level {
            44 => &ML_DSA_44,
            65 => &ML_DSA_65,
            _ => return false,
        };
        UnparsedPublicKey::new(algorithm, public)
            .verify(message, sig)
            .is_ok()
    }
}

#[cfg(all(feature = "ring", not(feature = "aws-lc")))]
mod chosen {
    use lib::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    pub use ring as lib;

    pub const STACK: super::super::Stack = super::super::Stack::Ring;

    /// A P-256 key pair from PKCS#8 (ring checks the key against a random source).
    pub fn p256_from_pkcs8(pkcs8: &[u8]) -> Option<EcdsaKeyPair> {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, super::super::rng()).ok()
    }

    /// ring has no FIPS mode.
    pub fn fips_mode() -> bool {
        false
    }

    /// ring cannot generate RSA keys (it signs with them).
    pub fn rsa_generate_pkcs8(_bits: u32) -> Option<Vec<u8>> {
        None
    }

    /// ring has no ML-DSA: no value of this type exists in a ring build.
    pub enum MlDsaPair {}

    /// ring has no ML-DSA.
    pub fn ml_dsa_from_seed(_level: u16, _seed: &[u8]) -> Option<MlDsaPair> {
        None
    }

    /// Unreachable: no [`MlDsaPair`] exists in a ring build.
    pub fn ml_dsa_sign(pair: &MlDsaPair, _message: &[u8]) -> Option<Vec<u8>> {
        match *pair {}
    }

    /// Unreachable: no [`MlDsaPair`] exists in a ring build.
    pub fn ml_dsa_public(pair: &MlDsaPair) -> Vec<u8> {
        match *pair {}
    }

    /// ring has no ML-DSA: nothing verifies.
    pub fn ml_dsa_verify(_level: u16, _public: &[u8], _message: &[u8], _sig: &[u8]) -> bool {
        false
    }
}

pub use chosen::*;
