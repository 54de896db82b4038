//! Verifying a JWS installs no process-wide jsonwebtoken provider: a library built on the core
//! (the resource servers' verifier) must leave its host's choice alone. Its own process, so no
//! other test has installed one.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use tokenmint_core::{
    crypto::{Algorithm, SigningKey},
    jose::{CompactSigner, KeyId, KeySet, PublishedKey, Signer, VerifiedJws, verify_compact},
};

#[derive(Debug)]
struct Key(KeyId, SigningKey);

impl Signer for Key {
    fn kid(&self) -> &KeyId {
        &self.0
    }
    fn algorithm(&self) -> Algorithm {
        self.1.algorithm()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, tokenmint_core::crypto::CryptoError> {
        self.1.sign(message)
    }
}

#[test]
fn verify_compact_leaves_jsonwebtoken_without_a_provider() {
    let (key, _) = SigningKey::generate(Algorithm::Es256).unwrap();
    let public = key.public_key();
    let kid = KeyId::of(&public);
    let signer = CompactSigner::new(Arc::new(Key(kid.clone(), key)), "at+jwt");
    let token = signer.sign_compact(br#"{"sub":"x"}"#).unwrap();
    let tokenmint_core::crypto::PublicKey::P256 { x, y } = &public else {
        unreachable!()
    };
    let b64 = tokenmint_core::crypto::b64url;
    let decoding = jsonwebtoken::DecodingKey::from_ec_components(&b64(x), &b64(y)).unwrap();
    let keys = KeySet::new(vec![PublishedKey {
        kid,
        algorithm: Algorithm::Es256,
        public,
        low_s_only: true,
    }]);
    let verified: VerifiedJws<serde_json::Value> =
        verify_compact(&token, &keys, &["at+jwt"]).unwrap();
    assert_eq!(verified.payload["sub"], "x");
    // jsonwebtoken, asked to verify now, finds no provider: none was installed behind our back.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let outcome = std::panic::catch_unwind(|| {
        jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
    });
    assert!(
        outcome.is_err(),
        "a jsonwebtoken provider is installed: {outcome:?}"
    );
}
