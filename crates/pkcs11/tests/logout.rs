//! A logged-out token, against a real SoftHSM2 token. `.ci/run` initialises a throwaway token
//! and exports `SOFTHSM2_CONF` and `TOKENMINT_TEST_PKCS11_{MODULE,TOKEN,PIN}`; without them
//! these tests say they are skipped (and fail under `CI=true`).
//!
//! Logging out is process-wide: this test has a process of its own (its own test binary), so
//! it cannot log out another test's calls.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{custody, key_in_token, settings};
use tokenmint_core::{
    crypto::{self, Algorithm},
    keys::{Custody, KeyState},
};

#[test]
fn a_logged_out_token_is_logged_in_again_and_signing_goes_on() {
    let Some(settings) = settings() else { return };
    let custody = custody(settings);
    let record = key_in_token(&custody, Algorithm::Es256, KeyState::Current);
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
