//! What the SoftHSM2 tests share: the token `.ci/run` set up, and a custody over it.

use std::sync::Arc;

use tokenmint_core::{
    clock::UnixTime,
    crypto::{Algorithm, Kek, RsaBits},
    keys::{KekRing, KeyMaker, KeyRecord, KeyState},
};
use tokenmint_pkcs11::{Pkcs11Custody, Settings, TokenRef};
use zeroize::Zeroizing;

/// The token `.ci/run` set up, or `None` (skipped) on a machine without one.
pub fn settings() -> Option<Settings> {
    let token = std::env::var("TOKENMINT_TEST_PKCS11_TOKEN").ok();
    let pin = std::env::var("TOKENMINT_TEST_PKCS11_PIN").ok();
    let (Some(token), Some(pin)) = (token, pin) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must provide a SoftHSM2 token (TOKENMINT_TEST_PKCS11_TOKEN, _PIN): see .ci/run"
        );
        eprintln!(
            "skipped: no SoftHSM2 token (TOKENMINT_TEST_PKCS11_TOKEN unset; .ci/run sets one up)"
        );
        return None;
    };
    let module = std::env::var("TOKENMINT_TEST_PKCS11_MODULE")
        .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into());
    Some(Settings {
        module: module.into(),
        token: TokenRef::Label(token),
        pin: Zeroizing::new(pin),
        sessions: 4,
    })
}

/// A custody over the token, with a KEK of its own, checked for ES256.
pub fn custody(settings: Settings) -> Pkcs11Custody {
    let keks = Arc::new(KekRing::try_new(vec![Kek::generate().unwrap()]).unwrap());
    Pkcs11Custody::open(settings, keks, &[Algorithm::Es256]).unwrap()
}

/// A new key of `algorithm` in `state`, generated in the token (RSA: 2048 bits).
pub fn key_in_token(custody: &Pkcs11Custody, algorithm: Algorithm, state: KeyState) -> KeyRecord {
    custody
        .make(algorithm, RsaBits::B2048, state, UnixTime::EPOCH)
        .unwrap()
}
