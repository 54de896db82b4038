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
}

pub use chosen::*;
