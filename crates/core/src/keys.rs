//! Signing keys: their states, sealing at rest under a KEK, the software [`Signer`], and the
//! `KeyRing` — the published [`KeySet`] plus the keys that sign, one per algorithm. Key ids, the key set and
//! JWS live in [`crate::jose`].

use std::{fmt, sync::Arc};

use zeroize::Zeroizing;

pub use crate::jose::{KeyId, PublishedKey, jwk_thumbprint};
use crate::{
    clock::UnixTime,
    crypto::{Algorithm, CryptoError, Kek, PublicKey, RsaBits, Sealed, SigningKey},
    jose::{CompactSigner, KeySet, Signer},
};

/// What failed while creating, sealing or opening signing keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No KEK is configured at all.
    #[error(
        "no key-encryption key is configured: set [keys] kek_files or TOKENMINT_KEK (run `tokenmint init` to create one for development)"
    )]
    NoKek,
    /// A stored key is sealed under a KEK that is not configured.
    #[error(
        "signing key {kid} is sealed under KEK id {kek_id}, which is not among the configured KEKs (ids: {configured}): configure the KEK it was created with"
    )]
    UnknownKek {
        /// The key.
        kid: String,
        /// The KEK id stored with it.
        kek_id: String,
        /// The ids of the configured KEKs.
        configured: String,
    },
    /// A stored key did not open under the KEK with its id.
    #[error(
        "signing key {kid} did not decrypt under KEK {kek_id}: the stored key or its associated data was altered"
    )]
    Unseal {
        /// The key.
        kid: String,
        /// The KEK id.
        kek_id: String,
    },
    /// A stored key decrypted but does not match its recorded public key.
    #[error("signing key {kid} decrypted but does not match its published public key")]
    Mismatch {
        /// The key.
        kid: String,
    },
    /// There is no current key to sign with.
    #[error("there is no current signing key")]
    NoCurrentKey,
    /// The key's private half is held by a custody this process cannot sign with.
    #[error(
        "signing key {kid} is held by {custody}, which this process is not configured to use: configure that key custody"
    )]
    HeldElsewhere {
        /// The key.
        kid: String,
        /// The custody that holds it.
        custody: String,
    },
    /// A cryptographic primitive failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Signing; exactly one key is current.
    Current,
    /// Published for verification only.
    Retired,
    /// Withdrawn at once; never published again.
    Revoked,
}

impl KeyState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Retired => "retired",
            KeyState::Revoked => "revoked",
        }
    }

    /// Parses the stored name.
    pub fn try_from_name(name: &str) -> Option<Self> {
        Some(match name {
            "next" => KeyState::Next,
            "current" => KeyState::Current,
            "retired" => KeyState::Retired,
            "revoked" => KeyState::Revoked,
            _ => return None,
        })
    }

    /// Whether keys in this state appear in the published JWKS.
    pub fn is_published(self) -> bool {
        !matches!(self, KeyState::Revoked)
    }
}

/// Where a key's private half is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrivateHalf {
    /// PKCS#8, sealed under a KEK, in the store.
    Sealed(Sealed),
    /// In a device or service that signs without releasing it: which custody holds it (e.g.
    /// `pkcs11`) and how that custody names it.
    Held {
        /// The custody.
        custody: String,
        /// Its name for the key.
        reference: String,
    },
}

/// A signing key as stored: public half in clear, private half sealed or held elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The RFC 7638 thumbprint, computed once at creation.
    pub kid: KeyId,
    /// The algorithm this key signs with; the only one accepted for its tokens.
    pub algorithm: Algorithm,
    /// Its state.
    pub state: KeyState,
    /// The public key.
    pub public: PublicKey,
    /// The private half.
    pub private: PrivateHalf,
    /// Unix seconds when it was created (and published).
    pub created_at: UnixTime,
    /// Unix seconds when it became current.
    pub activated_at: Option<UnixTime>,
    /// Unix seconds when it was retired.
    pub retired_at: Option<UnixTime>,
    /// Unix seconds when it was revoked.
    pub revoked_at: Option<UnixTime>,
    /// Created since the ES256 low-S cut-over: it signs only low-S and its tokens verify only
    /// in that form. Keys created before accept both forms (see docs/key-lifecycle.md).
    pub low_s_only: bool,
}

/// The associated data that binds a sealed private key to its version, algorithm and id.
pub fn sealing_aad(algorithm: Algorithm, kid: &KeyId) -> Vec<u8> {
    let mut aad = b"tokenmint/signing-key/v1".to_vec();
    aad.extend_from_slice(algorithm.as_str().as_bytes());
    aad.extend_from_slice(kid.as_str().as_bytes());
    aad
}

impl KeyRecord {
    /// Generates a new key in `state`, sealed under `kek` (RSA: 2048 bits).
    pub fn generate(
        algorithm: Algorithm,
        state: KeyState,
        kek: &Kek,
        now: UnixTime,
    ) -> Result<Self, KeyError> {
        Self::generate_sized(algorithm, RsaBits::default(), state, kek, now)
    }

    /// Generates a new key in `state`, sealed under `kek`, RSA of `rsa_bits`.
    pub fn generate_sized(
        algorithm: Algorithm,
        rsa_bits: RsaBits,
        state: KeyState,
        kek: &Kek,
        now: UnixTime,
    ) -> Result<Self, KeyError> {
        let (key, pkcs8) = SigningKey::generate_sized(algorithm, rsa_bits)?;
        let public = key.public_key();
        let kid = KeyId::of(&public);
        let sealed = kek.seal(&pkcs8, &sealing_aad(algorithm, &kid))?;
        Ok(Self {
            kid,
            algorithm,
            state,
            public,
            private: PrivateHalf::Sealed(sealed),
            created_at: now,
            activated_at: (state == KeyState::Current).then_some(now),
            retired_at: None,
            revoked_at: None,
            low_s_only: true,
        })
    }

    /// Re-seals the private key under `kek` (KEK rotation): opened with whichever configured
    /// KEK sealed it, sealed again with the same associated data. `None` for a key held
    /// elsewhere: no KEK protects it.
    pub fn reseal(&self, keks: &KekRing, kek: &Kek) -> Result<Option<Sealed>, KeyError> {
        match &self.private {
            PrivateHalf::Sealed(sealed) => {
                let pkcs8 = self.open(sealed, keks)?;
                Ok(Some(
                    kek.seal(&pkcs8, &sealing_aad(self.algorithm, &self.kid))?,
                ))
            }
            PrivateHalf::Held { .. } => Ok(None),
        }
    }

    /// The sealed private half, if it is in the store.
    pub fn sealed(&self) -> Option<&Sealed> {
        match &self.private {
            PrivateHalf::Sealed(sealed) => Some(sealed),
            PrivateHalf::Held { .. } => None,
        }
    }

    fn open(&self, sealed: &Sealed, keks: &KekRing) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let kek = keks
            .find(&sealed.kek_id)
            .ok_or_else(|| KeyError::UnknownKek {
                kid: self.kid.to_string(),
                kek_id: sealed.kek_id.clone(),
                configured: keks.ids(),
            })?;
        kek.open(sealed, &sealing_aad(self.algorithm, &self.kid))
            .map_err(|_| KeyError::Unseal {
                kid: self.kid.to_string(),
                kek_id: sealed.kek_id.clone(),
            })
    }

    /// Opens the private key with whichever configured KEK sealed it; a key held elsewhere
    /// does not open.
    pub fn unseal(&self, keks: &KekRing) -> Result<SigningKey, KeyError> {
        let sealed = match &self.private {
            PrivateHalf::Sealed(sealed) => sealed,
            PrivateHalf::Held { custody, .. } => {
                return Err(KeyError::HeldElsewhere {
                    kid: self.kid.to_string(),
                    custody: custody.clone(),
                });
            }
        };
        let pkcs8 = self.open(sealed, keks)?;
        let key = SigningKey::try_from_pkcs8(self.algorithm, &pkcs8)?;
        if key.public_key() != self.public {
            return Err(KeyError::Mismatch {
                kid: self.kid.to_string(),
            });
        }
        Ok(key)
    }
}

/// Who makes new signing keys: the newest KEK seals them into the store; a device's custody
/// generates them inside the device. Rotation asks it for every new key.
pub trait KeyMaker {
    /// A new key of `algorithm` (RSA of `rsa_bits`) in `state`, created at `now`.
    fn make(
        &self,
        algorithm: Algorithm,
        rsa_bits: RsaBits,
        state: KeyState,
        now: UnixTime,
    ) -> Result<KeyRecord, KeyError>;
}

impl KeyMaker for Kek {
    fn make(
        &self,
        algorithm: Algorithm,
        rsa_bits: RsaBits,
        state: KeyState,
        now: UnixTime,
    ) -> Result<KeyRecord, KeyError> {
        KeyRecord::generate_sized(algorithm, rsa_bits, state, self, now)
    }
}

/// Who holds the private halves: the KEKs, for keys sealed in the store; a device's or a
/// service's custody, for keys held there. The key ring asks it for each current key's signer
/// and rotation for new keys, so a new custody plugs in here and nowhere on the issue path.
pub trait Custody: KeyMaker + Send + Sync {
    /// The custody's name, as `keys.custody` spells it.
    fn name(&self) -> &'static str;

    /// The signer for `record`'s private half.
    fn signer(&self, record: &KeyRecord) -> Result<Arc<dyn Signer>, KeyError>;

    /// Destroys `record`'s private half once the store no longer holds the key (removed after
    /// retention, dropped, or revoked). A sealed key has nothing outside its store row.
    fn destroy(&self, record: &KeyRecord) -> Result<(), KeyError> {
        let _ = record;
        Ok(())
    }

    /// Whether the custody can sign now (`Err`: why not), trying to recover first if it
    /// could not. Called periodically off the request path.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl KeyMaker for KekRing {
    fn make(
        &self,
        algorithm: Algorithm,
        rsa_bits: RsaBits,
        state: KeyState,
        now: UnixTime,
    ) -> Result<KeyRecord, KeyError> {
        self.newest().make(algorithm, rsa_bits, state, now)
    }
}

impl Custody for KekRing {
    fn name(&self) -> &'static str {
        "sealed"
    }

    fn signer(&self, record: &KeyRecord) -> Result<Arc<dyn Signer>, KeyError> {
        Ok(Arc::new(SoftwareSigner {
            kid: record.kid.clone(),
            key: record.unseal(self)?,
        }))
    }
}

/// The configured KEKs, newest first: the newest seals, any of them opens.
#[derive(Debug)]
pub struct KekRing {
    keks: Vec<Kek>,
}

impl KekRing {
    /// A ring of KEKs, newest first. Empty is an error: nothing could be sealed or opened.
    pub fn try_new(keks: Vec<Kek>) -> Result<Self, KeyError> {
        if keks.is_empty() {
            return Err(KeyError::NoKek);
        }
        Ok(Self { keks })
    }

    /// The KEK new material is sealed under.
    pub fn newest(&self) -> &Kek {
        // try_new refuses an empty ring.
        &self.keks[0]
    }

    /// The KEK with this id.
    pub fn find(&self, id: &str) -> Option<&Kek> {
        self.keks.iter().find(|k| k.id() == id)
    }

    /// The configured ids, comma-separated, for messages.
    pub fn ids(&self) -> String {
        self.keks.iter().map(Kek::id).collect::<Vec<_>>().join(", ")
    }
}

/// The software signer: a private key unsealed into this process's memory.
pub struct SoftwareSigner {
    kid: KeyId,
    key: SigningKey,
}

impl SoftwareSigner {
    /// The signer of `key`, under its RFC 7638/9964 thumbprint.
    pub fn new(key: SigningKey) -> Self {
        Self {
            kid: KeyId::of(&key.public_key()),
            key,
        }
    }
}

impl fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SoftwareSigner({}, {})", self.kid, self.key.algorithm())
    }
}

impl Signer for SoftwareSigner {
    fn kid(&self) -> &KeyId {
        &self.kid
    }

    fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.key.sign(message)
    }
}

/// The media type of access tokens (RFC 9068 §2.1), the `typ` of every token signed here.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The key set as the request path sees it: what is published, and the keys that sign — one
/// current key per algorithm.
#[derive(Debug)]
pub struct KeyRing {
    keys: KeySet,
    /// The current keys' signers, the longest-signing first.
    signers: Vec<Arc<CompactSigner>>,
}

impl KeyRing {
    /// Builds the ring from stored records: every published key, and each current key's
    /// signer from `custody` (the KEKs, for sealed keys).
    pub fn try_build(records: &[KeyRecord], custody: &dyn Custody) -> Result<Self, KeyError> {
        let mut current: Vec<&KeyRecord> = records
            .iter()
            .filter(|r| r.state == KeyState::Current)
            .collect();
        current.sort_by_key(|r| (r.activated_at.unwrap_or(r.created_at), r.algorithm));
        // A store written by the aws-lc build may hold a current key this build cannot sign
        // with (ML-DSA in the ring build): it stays published, and the rest still sign.
        current.retain(|r| {
            let usable = crate::crypto::stack().verifies(r.algorithm);
            if !usable {
                tracing::warn!(kid = %r.kid, algorithm = %r.algorithm, "a current key of an algorithm this build lacks does not sign here");
            }
            usable
        });
        let signers = current
            .into_iter()
            .map(|r| {
                Ok(Arc::new(CompactSigner::new(
                    custody.signer(r)?,
                    ACCESS_TOKEN_TYP,
                )))
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        if signers.is_empty() {
            return Err(KeyError::NoCurrentKey);
        }
        let published = records
            .iter()
            .filter(|r| r.state.is_published())
            .map(|r| PublishedKey {
                kid: r.kid.clone(),
                algorithm: r.algorithm,
                public: r.public.clone(),
                low_s_only: r.low_s_only,
            })
            .collect();
        Ok(Self {
            keys: KeySet::new(published),
            signers,
        })
    }

    /// The longest-signing current key: the one key that signs when one algorithm is
    /// configured.
    pub fn signer(&self) -> &Arc<CompactSigner> {
        // `try_build` refuses a ring without a signer.
        &self.signers[0]
    }

    /// The key that signs a token of `algorithm`: that algorithm's current key; while it has
    /// none (just added, its first key not yet published long enough), the default
    /// algorithm's; while that has none either (the default just changed), the
    /// longest-signing classical current key — the old default's, unless another classical
    /// lane has signed longer. Never a post-quantum key for a token that did not ask for one:
    /// its key is not in the set most verifiers read.
    pub fn signer_for(&self, algorithm: Algorithm, default: Algorithm) -> &Arc<CompactSigner> {
        let of = |alg| self.signers.iter().find(|s| s.algorithm() == alg);
        of(algorithm)
            .or_else(|| of(default))
            .or_else(|| {
                self.signers
                    .iter()
                    .find(|s| !s.algorithm().is_post_quantum())
            })
            .unwrap_or_else(|| self.signer())
    }

    /// The algorithms that have a current key.
    pub fn signing_algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.signers.iter().map(|s| s.algorithm())
    }

    /// The keys that sign, one per algorithm, the longest-signing first.
    pub fn signers(&self) -> &[Arc<CompactSigner>] {
        &self.signers
    }

    /// The ids of the keys that sign, the longest-signing first: a ring whose set is unchanged
    /// may still sign differently (a key retired or promoted).
    pub fn signer_kids(&self) -> Vec<&KeyId> {
        self.signers.iter().map(|s| s.kid()).collect()
    }

    /// The published keys.
    pub fn key_set(&self) -> &KeySet {
        &self.keys
    }

    /// Every published key, ordered by id.
    pub fn published(&self) -> &[PublishedKey] {
        self.keys.published()
    }

    /// The JWK Set text (RFC 7517) of the published classical keys (see
    /// [`KeySet::jwks_json`]).
    pub fn jwks_json(&self) -> &Arc<str> {
        self.keys.jwks_json()
    }

    /// The JWK Set text of every published key, post-quantum ones included.
    pub fn full_jwks_json(&self) -> &Arc<str> {
        self.keys.full_jwks_json()
    }

    /// The JWK Set's version: changes exactly when the set does.
    pub fn version(&self) -> &str {
        self.keys.version()
    }

    /// The published key with this id.
    pub fn find(&self, kid: &str) -> Option<&PublishedKey> {
        self.keys.find(kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto;
    use std::collections::HashMap;

    #[test]
    fn rfc7638_section_3_1_vector() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let thumbprint = jwk_thumbprint(&[("kty", "RSA"), ("n", n), ("e", "AQAB")]);
        assert_eq!(thumbprint, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn rfc8037_appendix_a3_vector() {
        let x = crypto::b64url_decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        let kid = KeyId::of(&PublicKey::Ed25519 { x });
        assert_eq!(kid.as_str(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn sealed_key_opens_only_under_its_own_kid_and_alg() {
        let kek = Kek::generate().unwrap();
        let keks = KekRing::try_new(vec![Kek::try_from_base64(&kek.to_base64()).unwrap()]).unwrap();
        let record =
            KeyRecord::generate(Algorithm::Es256, KeyState::Current, &kek, UnixTime::EPOCH)
                .unwrap();
        assert!(record.unseal(&keks).is_ok());

        let other =
            KeyRecord::generate(Algorithm::Es256, KeyState::Next, &kek, UnixTime::EPOCH).unwrap();
        let mut swapped = record.clone();
        swapped.kid = other.kid.clone();
        assert!(matches!(
            swapped.unseal(&keks),
            Err(KeyError::Unseal { .. })
        ));

        let mut relabelled = record.clone();
        relabelled.algorithm = Algorithm::EdDsa;
        assert!(matches!(
            relabelled.unseal(&keks),
            Err(KeyError::Unseal { .. })
        ));
    }

    #[test]
    fn wrong_kek_is_named_in_the_error() {
        let kek = Kek::generate().unwrap();
        let record =
            KeyRecord::generate(Algorithm::EdDsa, KeyState::Current, &kek, UnixTime::EPOCH)
                .unwrap();
        let keks = KekRing::try_new(vec![Kek::generate().unwrap()]).unwrap();
        let err = record.unseal(&keks).unwrap_err();
        assert!(matches!(err, KeyError::UnknownKek { .. }));
        assert!(err.to_string().contains(kek.id()));
    }

    /// A custody that holds its keys itself (as an HSM would), by reference.
    struct Device(HashMap<String, Arc<dyn Signer>>);

    impl KeyMaker for Device {
        fn make(
            &self,
            _: Algorithm,
            _: RsaBits,
            _: KeyState,
            _: UnixTime,
        ) -> Result<KeyRecord, KeyError> {
            Err(KeyError::NoKek)
        }
    }

    impl Custody for Device {
        fn name(&self) -> &'static str {
            "device"
        }

        fn signer(&self, record: &KeyRecord) -> Result<Arc<dyn Signer>, KeyError> {
            match &record.private {
                PrivateHalf::Held { reference, .. } => {
                    self.0.get(reference).cloned().ok_or(KeyError::NoCurrentKey)
                }
                PrivateHalf::Sealed(_) => Err(KeyError::NoKek),
            }
        }
    }

    #[test]
    fn a_key_held_elsewhere_signs_through_its_custody_and_never_unseals() {
        let kek = Kek::generate().unwrap();
        let keks = KekRing::try_new(vec![Kek::try_from_base64(&kek.to_base64()).unwrap()]).unwrap();
        let mut record =
            KeyRecord::generate(Algorithm::EdDsa, KeyState::Current, &kek, UnixTime::EPOCH)
                .unwrap();
        let in_device: Arc<dyn Signer> = Arc::new(SoftwareSigner {
            kid: record.kid.clone(),
            key: record.unseal(&keks).unwrap(),
        });
        record.private = PrivateHalf::Held {
            custody: "pkcs11".into(),
            reference: "slot-7".into(),
        };
        // The KEKs cannot sign with it, and say which custody can.
        let refused = KeyRing::try_build(std::slice::from_ref(&record), &keks).unwrap_err();
        assert!(refused.to_string().contains("pkcs11"), "{refused}");
        assert!(record.reseal(&keks, &kek).unwrap().is_none());
        assert!(record.sealed().is_none());
        // Its own custody can; tokens verify against the published key set as any other.
        let device = Device(HashMap::from([("slot-7".to_owned(), in_device)]));
        let ring = KeyRing::try_build(&[record.clone()], &device).unwrap();
        let jws = ring.signer().sign_compact(br#"{"a":1}"#).unwrap();
        let verified: crate::jose::VerifiedJws<serde_json::Value> =
            crate::jose::verify_compact(&jws, ring.key_set(), &[ACCESS_TOKEN_TYP]).unwrap();
        assert_eq!(verified.kid, record.kid.as_str());
    }

    #[test]
    fn each_algorithm_signs_with_its_own_key_and_the_fallback_is_never_post_quantum() {
        let kek = Kek::generate().unwrap();
        let keks = KekRing::try_new(vec![Kek::try_from_base64(&kek.to_base64()).unwrap()]).unwrap();
        // The longest-signing current key is post-quantum where the build has ML-DSA.
        let oldest = if crypto::stack().supports(Algorithm::MlDsa44).is_ok() {
            Algorithm::MlDsa44
        } else {
            Algorithm::EdDsa
        };
        let at = |secs| UnixTime::from_secs(secs);
        let mut old = KeyRecord::generate(oldest, KeyState::Current, &kek, at(10)).unwrap();
        old.activated_at = Some(at(10));
        let mut es =
            KeyRecord::generate(Algorithm::Es256, KeyState::Current, &kek, at(20)).unwrap();
        es.activated_at = Some(at(20));
        let ring = KeyRing::try_build(&[es.clone(), old.clone()], &keks).unwrap();
        assert_eq!(ring.signer().kid(), &old.kid, "the longest-signing key");
        assert_eq!(ring.signer_for(oldest, Algorithm::Es256).kid(), &old.kid);
        assert_eq!(ring.signer_for(Algorithm::Es256, oldest).kid(), &es.kid);
        // RS256 has no key yet: the default's; with no default key either, a classical one.
        assert_eq!(
            ring.signer_for(Algorithm::Rs256, Algorithm::Es256).kid(),
            &es.kid
        );
        let fallback = ring.signer_for(Algorithm::Rs256, Algorithm::Ps256);
        if oldest.is_post_quantum() {
            assert_eq!(fallback.kid(), &es.kid);
        } else {
            assert_eq!(fallback.kid(), &old.kid);
        }
    }

    #[test]
    fn a_current_key_this_build_cannot_sign_with_is_published_but_does_not_sign() {
        if crypto::stack().supports(Algorithm::MlDsa44).is_ok() {
            return; // the aws-lc build signs with every algorithm
        }
        let kek = Kek::generate().unwrap();
        let keks = KekRing::try_new(vec![Kek::try_from_base64(&kek.to_base64()).unwrap()]).unwrap();
        let es = KeyRecord::generate(Algorithm::Es256, KeyState::Current, &kek, UnixTime::EPOCH)
            .unwrap();
        // An ML-DSA-44 key as the aws-lc build stores it (its seed is never opened here).
        let public = PublicKey::MlDsa {
            level: 44,
            public: vec![7; 1312],
        };
        let mut pq = es.clone();
        (pq.kid, pq.algorithm, pq.public) = (KeyId::of(&public), Algorithm::MlDsa44, public);
        let ring = KeyRing::try_build(&[pq.clone(), es.clone()], &keks).unwrap();
        assert_eq!(ring.signer().kid(), &es.kid);
        assert_eq!(
            ring.signing_algorithms().collect::<Vec<_>>(),
            [Algorithm::Es256]
        );
        assert!(ring.find(pq.kid.as_str()).is_some(), "still published");
        // Alone, it leaves nothing to sign with.
        assert!(matches!(
            KeyRing::try_build(&[pq], &keks),
            Err(KeyError::NoCurrentKey)
        ));
    }

    #[test]
    fn ring_signs_with_current_and_publishes_all_but_revoked() {
        let kek = Kek::generate().unwrap();
        let keks = KekRing::try_new(vec![Kek::try_from_base64(&kek.to_base64()).unwrap()]).unwrap();
        let current =
            KeyRecord::generate(Algorithm::Es256, KeyState::Current, &kek, UnixTime::EPOCH)
                .unwrap();
        let next =
            KeyRecord::generate(Algorithm::Es256, KeyState::Next, &kek, UnixTime::EPOCH).unwrap();
        let mut revoked =
            KeyRecord::generate(Algorithm::EdDsa, KeyState::Revoked, &kek, UnixTime::EPOCH)
                .unwrap();
        revoked.revoked_at = Some(UnixTime::from_secs(1));
        let ring =
            KeyRing::try_build(&[current.clone(), next.clone(), revoked.clone()], &keks).unwrap();
        assert_eq!(ring.signer().kid(), &current.kid);
        assert_eq!(ring.published().len(), 2);
        assert!(ring.find(next.kid.as_str()).is_some());
        assert!(ring.find(revoked.kid.as_str()).is_none());

        let jws = ring.signer().sign_compact(b"{}").unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        let message = format!("{}.{}", parts[0], parts[1]);
        let sig = crypto::b64url_decode(parts[2]).unwrap();
        assert!(crypto::verify_signature(
            current.algorithm,
            &current.public,
            message.as_bytes(),
            &sig
        ));
    }
}
