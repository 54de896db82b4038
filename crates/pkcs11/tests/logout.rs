//! A logged-out token, against a real SoftHSM2 token. `.ci/run` initialises a throwaway token
//! and exports `SOFTHSM2_CONF` and `TOKENMINT_TEST_PKCS11_{MODULE,TOKEN,PIN}`; without them
//! these tests say they are skipped (and fail under `CI=true`).
//!
//! Logging out is process-wide: this test has a process of its own (its own test binary), so
//! it cannot log out another test's calls.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use tokenmint_core::{
    clock::UnixTime,
    crypto::{self, Algorithm, Kek, RsaBits},
    keys::{Custody, KekRing, KeyMaker, KeyState},
};
use tokenmint_pkcs11::{Pkcs11Custody, Settings, TokenRef};
use zeroize::Zeroizing;

/// The token `.ci/run` set up, or `None` (skipped) on a machine without one.
fn settings() -> Option<Settings> {
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

fn custody(settings: Settings) -> Pkcs11Custody {
    let keks = Arc::new(KekRing::try_new(vec![Kek::generate().unwrap()]).unwrap());
    Pkcs11Custody::open(settings, keks, &[Algorithm::Es256]).unwrap()
}

#[test]
fn a_logged_out_token_is_logged_in_again_and_signing_goes_on() {
    let Some(settings) = settings() else { return };
    let custody = custody(settings);
    let record = custody
        .make(
            Algorithm::Es256,
            RsaBits::B2048,
            KeyState::Current,
            UnixTime::EPOCH,
        )
        .unwrap();
    let signer = custody.signer(&record).unwrap();
    signer.sign(b"before").unwrap();
    custody.hsm().log_out().unwrap();
    let signature = signer.sign(b"after").unwrap();
    assert!(crypto::verify_signature(
        Algorithm::Es256,
        &record.public,
        b"after",
        &signature
    ));
    assert_eq!(custody.check(), Ok(()));
    custody.destroy(&record).unwrap();
}
