//! A key the token does not hold, against a real SoftHSM2 token (see softhsm.rs for the set-up).
//! Looking for it re-initialises the module once, which is process-wide: this test has a
//! process of its own (its own test binary).

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{custody, key_in_token, settings};
use tokenmint_core::{
    crypto::{self, Algorithm, CryptoError},
    keys::{Custody, KeyState},
};

/// A key not found fails the call that wanted it, and only that call: the token is not marked
/// broken, other keys go on signing, and the check passes.
#[test]
fn a_key_the_token_lacks_fails_only_its_own_call() {
    let Some(settings) = settings() else { return };
    let custody = custody(settings);
    let record = key_in_token(&custody, Algorithm::Es256, KeyState::Current);
    let signer = custody.signer(&record).unwrap();
    let missing = custody.hsm().protection("no-such-kid").unwrap_err();
    assert!(
        matches!(&missing, CryptoError::Device(why) if why.contains("no-such-kid is not on the token")),
        "{missing:?}"
    );
    let signature = signer.sign(b"still signing").unwrap();
    assert!(crypto::verify_signature(
        Algorithm::Es256,
        &record.public,
        b"still signing",
        &signature
    ));
    assert_eq!(custody.check(), Ok(()));
    custody.destroy(&record).unwrap();
}
