//! The PKCS#11 custody against a real SoftHSM2 token. `.ci/run` initialises a throwaway token
//! and exports `SOFTHSM2_CONF` and `TOKENMINT_TEST_PKCS11_{MODULE,TOKEN,PIN}`; without them
//! these tests say they are skipped (and fail under `CI=true`).
//!
//! The module's context and login are process-wide, so every test here shares the one token
//! and never re-initialises the module; the module failing is tested in a child process
//! (tests/integration/hsm.rs).

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{custody, key_in_token, settings};
use tokenmint_core::{
    clock::UnixTime,
    crypto::{self, Algorithm, Kek},
    jose::{self, KeySet, PublishedKey},
    keys::{ACCESS_TOKEN_TYP, Custody, KekRing, KeyRecord, KeyRing, KeyState, PrivateHalf},
};
use tokenmint_pkcs11::{CUSTODY, Pkcs11Custody, TokenRef};

const HSM_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::Es256,
    Algorithm::EdDsa,
    Algorithm::Rs256,
    Algorithm::Ps256,
];

#[test]
fn each_algorithm_is_generated_in_the_token_and_its_tokens_verify() {
    let Some(settings) = settings() else { return };
    let keks = Arc::new(KekRing::try_new(vec![Kek::generate().unwrap()]).unwrap());
    let custody = Pkcs11Custody::open(settings, keks, &HSM_ALGORITHMS).unwrap();
    for algorithm in HSM_ALGORITHMS {
        let record = key_in_token(&custody, algorithm, KeyState::Current);
        // The store keeps the public key and the token's name for the private half.
        assert_eq!(
            record.private,
            PrivateHalf::Held {
                custody: CUSTODY.into(),
                reference: record.kid.to_string()
            }
        );
        assert!(record.public.fits(algorithm), "{algorithm}");
        assert_eq!(jose::KeyId::of(&record.public), record.kid);
        let ring = KeyRing::try_build(std::slice::from_ref(&record), &custody).unwrap();
        let jws = ring.signer().sign_compact(br#"{"sub":"a"}"#).unwrap();
        let verified: jose::VerifiedJws<serde_json::Value> =
            jose::verify_compact(&jws, ring.key_set(), &[ACCESS_TOKEN_TYP]).unwrap();
        assert_eq!(verified.kid, record.kid.as_str(), "{algorithm}");
        // A set that does not hold the key refuses the token.
        let other = KeySet::new(Vec::<PublishedKey>::new());
        assert!(
            jose::verify_compact::<serde_json::Value>(&jws, &other, &[ACCESS_TOKEN_TYP]).is_err()
        );
        custody.destroy(&record).unwrap();
    }
}

#[test]
fn private_keys_are_sensitive_and_never_extractable() {
    let Some(settings) = settings() else { return };
    let custody = custody(settings);
    for algorithm in [Algorithm::Es256, Algorithm::Rs256] {
        let record = key_in_token(&custody, algorithm, KeyState::Next);
        let p = custody.hsm().protection(record.kid.as_str()).unwrap();
        assert!(p.sensitive && p.always_sensitive, "{algorithm}: {p:?}");
        assert!(!p.extractable && p.never_extractable, "{algorithm}: {p:?}");
        assert!(
            !p.value_readable,
            "{algorithm}: the private value was given out"
        );
        custody.destroy(&record).unwrap();
    }
}

#[test]
fn es256_signatures_from_the_token_are_always_low_s() {
    let Some(settings) = settings() else { return };
    let custody = custody(settings);
    let record = key_in_token(&custody, Algorithm::Es256, KeyState::Current);
    let signer = custody.signer(&record).unwrap();
    // SoftHSM returns high S about a third of the time: 60 signatures all but never miss one.
    for i in 0..60u32 {
        let message = format!("message {i}");
        let signature = signer.sign(message.as_bytes()).unwrap();
        assert_eq!(signature.len(), 64);
        assert_eq!(
            crypto::es256_low_s(signature.clone()),
            signature,
            "signature {i} is high-S"
        );
        assert!(crypto::verify_signature(
            Algorithm::Es256,
            &record.public,
            message.as_bytes(),
            &signature
        ));
    }
    custody.destroy(&record).unwrap();
}

#[test]
fn destroying_a_key_removes_it_from_the_token() {
    let Some(settings) = settings() else { return };
    let custody = custody(settings);
    let record = key_in_token(&custody, Algorithm::EdDsa, KeyState::Next);
    let kid = record.kid.to_string();
    assert!(custody.hsm().key_ids().unwrap().contains(&kid));
    custody.destroy(&record).unwrap();
    assert!(!custody.hsm().key_ids().unwrap().contains(&kid));
    // Destroying what is gone already is no error (a replica may have been first).
    custody.destroy(&record).unwrap();
}

#[test]
fn keys_sealed_before_the_switch_still_sign_and_another_custody_is_named() {
    let Some(settings) = settings() else { return };
    let kek = Kek::generate().unwrap();
    let keks =
        Arc::new(KekRing::try_new(vec![Kek::try_from_base64(&kek.to_base64()).unwrap()]).unwrap());
    let custody = Pkcs11Custody::open(settings, keks, &[Algorithm::Es256]).unwrap();
    let sealed =
        KeyRecord::generate(Algorithm::Es256, KeyState::Current, &kek, UnixTime::EPOCH).unwrap();
    let signer = custody.signer(&sealed).unwrap();
    assert!(crypto::verify_signature(
        Algorithm::Es256,
        &sealed.public,
        b"m",
        &signer.sign(b"m").unwrap()
    ));
    let mut elsewhere = sealed.clone();
    elsewhere.private = PrivateHalf::Held {
        custody: "kms".into(),
        reference: "x".into(),
    };
    let refused = custody.signer(&elsewhere).unwrap_err().to_string();
    assert!(refused.contains("kms"), "{refused}");
}

#[test]
fn an_algorithm_the_token_cannot_hold_is_a_start_up_error() {
    let Some(settings) = settings() else { return };
    let keks = Arc::new(KekRing::try_new(vec![Kek::generate().unwrap()]).unwrap());
    let refused = Pkcs11Custody::open(settings, keks, &[Algorithm::MlDsa65])
        .unwrap_err()
        .to_string();
    assert!(refused.contains("ML-DSA-65"), "{refused}");
}

#[test]
fn an_unknown_token_is_named_with_the_tokens_there_are() {
    let Some(mut settings) = settings() else {
        return;
    };
    let real = match &settings.token {
        TokenRef::Label(label) => label.clone(),
        TokenRef::Serial(_) => unreachable!(),
    };
    settings.token = TokenRef::Label("no-such-token".into());
    let keks = Arc::new(KekRing::try_new(vec![Kek::generate().unwrap()]).unwrap());
    let refused = Pkcs11Custody::open(settings, keks, &[Algorithm::Es256])
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("no-such-token") && refused.contains(&real),
        "{refused}"
    );
}
