//! Keys in the token: which mechanisms each algorithm needs, generation (sensitive, never
//! extractable, `CKA_ID` = the `kid`), the signer, destruction, and the periodic check that
//! every key a signer uses is there.

use std::sync::Arc;

use cryptoki::{
    error::{Error, RvError},
    mechanism::{
        Mechanism, MechanismType,
        eddsa::{EddsaParams, EddsaSignatureScheme},
        rsa::{PkcsMgfType, PkcsPssParams},
    },
    object::{Attribute, AttributeType, ObjectClass, ObjectHandle},
    session::Session,
};
use tokenmint_core::{
    clock::UnixTime,
    crypto::{self, Algorithm, CryptoError, PublicKey, RsaBits},
    jose::Signer,
    keys::{KeyError, KeyId, KeyRecord, KeyState, PrivateHalf},
};

use crate::{CUSTODY, Hsm, HsmError, module::Failure};

/// The label of every key object tokenmint creates, so an operator can tell them apart.
pub const KEY_LABEL: &str = "tokenmint signing key";

/// DER of the P-256 curve's OID (1.2.840.10045.3.1.7), the EC key's `CKA_EC_PARAMS`.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of Ed25519's OID (1.3.101.112, RFC 8410).
const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// RSA public exponent 65537.
const RSA_EXPONENT: &[u8] = &[0x01, 0x00, 0x01];

/// The mechanisms an algorithm needs: key-pair generation, then signing.
fn mechanisms(algorithm: Algorithm) -> Option<[MechanismType; 2]> {
    Some(match algorithm {
        // SoftHSM 2.6 and others refuse CKM_ECDSA_SHA256: hash here, sign the digest.
        Algorithm::Es256 => [MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDSA],
        Algorithm::EdDsa => [
            MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
            MechanismType::EDDSA,
        ],
        Algorithm::Rs256 => [
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::SHA256_RSA_PKCS,
        ],
        Algorithm::Ps256 => [
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::SHA256_RSA_PKCS_PSS,
        ],
        Algorithm::MlDsa44 | Algorithm::MlDsa65 => return None,
    })
}

/// A start-up error unless the token has every mechanism `algorithm` needs.
pub(crate) fn check_mechanisms(hsm: &Hsm, algorithm: Algorithm) -> Result<(), HsmError> {
    let missing = |mechanism: String| HsmError::Mechanism {
        token: hsm.token().to_string(),
        algorithm,
        mechanism,
    };
    let Some(needed) = mechanisms(algorithm) else {
        return Err(missing(
            "ML-DSA key generation in this custody (tokenmint holds ML-DSA keys sealed only)"
                .into(),
        ));
    };
    let slot = hsm.slot().ok_or_else(|| missing("a token at all".into()))?;
    // One mechanism at a time: the module's whole list holds vendor mechanisms the binding
    // logs as errors.
    for mechanism in needed {
        match hsm.ctx().get_mechanism_info(slot, mechanism) {
            Ok(_) => {}
            Err(Error::Pkcs11(RvError::MechanismInvalid, _)) => {
                return Err(missing(mechanism.to_string()));
            }
            Err(e) => return Err(HsmError::call("C_GetMechanismInfo", &e)),
        }
    }
    Ok(())
}

fn private_template(id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(KEY_LABEL.as_bytes().to_vec()),
    ]
}

/// The key-pair mechanism and the public half's template: a session object, since the store
/// keeps the public key.
fn public_template(
    algorithm: Algorithm,
    rsa_bits: RsaBits,
) -> Option<(Mechanism<'static>, Vec<Attribute>)> {
    let mut template = vec![Attribute::Token(false), Attribute::Verify(true)];
    let mechanism = match algorithm {
        Algorithm::Es256 => {
            template.push(Attribute::EcParams(P256_PARAMS.to_vec()));
            Mechanism::EccKeyPairGen
        }
        Algorithm::EdDsa => {
            template.push(Attribute::EcParams(ED25519_PARAMS.to_vec()));
            Mechanism::EccEdwardsKeyPairGen
        }
        Algorithm::Rs256 | Algorithm::Ps256 => {
            template.push(Attribute::ModulusBits(u64::from(rsa_bits.bits()).into()));
            template.push(Attribute::PublicExponent(RSA_EXPONENT.to_vec()));
            Mechanism::RsaPkcsKeyPairGen
        }
        Algorithm::MlDsa44 | Algorithm::MlDsa65 => return None,
    };
    Some((mechanism, template))
}

/// Generates a key pair in the token, names its private half by the `kid`, and returns the
/// record the store keeps: the public key and that reference.
pub(crate) fn generate(
    hsm: &Hsm,
    algorithm: Algorithm,
    rsa_bits: RsaBits,
    state: KeyState,
    now: UnixTime,
) -> Result<KeyRecord, KeyError> {
    let (mechanism, public_template) = public_template(algorithm, rsa_bits).ok_or_else(|| {
        CryptoError::Device(format!("{algorithm} keys cannot be generated in the token"))
    })?;
    let provisional = crypto::random_bytes::<16>()?;
    let (public, handle, kid) = hsm.with_session("generating a key", |session| {
        let (public_handle, private_handle) = session.generate_key_pair(
            &mechanism,
            &public_template,
            &private_template(&provisional),
        )?;
        let named = read_public(session, public_handle, algorithm).and_then(|public| {
            let kid = KeyId::of(&public);
            session.update_attributes(private_handle, &[Attribute::Id(kid.as_str().into())])?;
            Ok((public, private_handle, kid))
        });
        let _ = session.destroy_object(public_handle);
        if named.is_err() {
            let _ = session.destroy_object(private_handle);
        }
        named
    })?;
    hsm.remember(kid.as_str().as_bytes(), handle);
    metrics::counter!("tokenmint_hsm_keys_generated_total").increment(1);
    Ok(KeyRecord {
        private: PrivateHalf::Held {
            custody: CUSTODY.into(),
            reference: kid.to_string(),
        },
        kid,
        algorithm,
        state,
        public,
        created_at: now,
        activated_at: (state == KeyState::Current).then_some(now),
        retired_at: None,
        revoked_at: None,
        low_s_only: true,
    })
}

/// The public key of a generated pair, in the store's form.
fn read_public(
    session: &Session,
    handle: ObjectHandle,
    algorithm: Algorithm,
) -> Result<PublicKey, Failure> {
    let wanted = match algorithm {
        Algorithm::Rs256 | Algorithm::Ps256 => {
            vec![AttributeType::Modulus, AttributeType::PublicExponent]
        }
        _ => vec![AttributeType::EcPoint],
    };
    let mut n = None;
    let mut e = None;
    let mut point = None;
    for attribute in session.get_attributes(handle, &wanted)? {
        match attribute {
            Attribute::Modulus(v) => n = Some(unpadded(v)),
            Attribute::PublicExponent(v) => e = Some(unpadded(v)),
            Attribute::EcPoint(v) => point = Some(v),
            _ => {}
        }
    }
    let unusable = || {
        Failure::Answer(format!(
            "the token returned an unusable {algorithm} public key"
        ))
    };
    let public = match (algorithm, n, e, point) {
        (Algorithm::Rs256 | Algorithm::Ps256, Some(n), Some(e), _) => PublicKey::Rsa { n, e },
        (Algorithm::Es256, _, _, Some(point)) => {
            let raw = octet_string(&point, 65).ok_or_else(unusable)?;
            match raw.split_first() {
                Some((0x04, xy)) => PublicKey::P256 {
                    x: xy[..32].to_vec(),
                    y: xy[32..].to_vec(),
                },
                _ => return Err(unusable()),
            }
        }
        (Algorithm::EdDsa, _, _, Some(point)) => PublicKey::Ed25519 {
            x: octet_string(&point, 32).ok_or_else(unusable)?.to_vec(),
        },
        _ => return Err(unusable()),
    };
    if public.fits(algorithm) {
        Ok(public)
    } else {
        Err(unusable())
    }
}

/// A point of `len` bytes, bare or DER-wrapped in an OCTET STRING (SoftHSM wraps both the EC
/// and the Ed25519 point).
fn octet_string(value: &[u8], len: usize) -> Option<&[u8]> {
    match value {
        raw if raw.len() == len => Some(raw),
        [0x04, l, rest @ ..] if usize::from(*l) == len && rest.len() == len => Some(rest),
        _ => None,
    }
}

fn unpadded(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros.min(v.len().saturating_sub(1)));
    v
}

/// The private key with `CKA_ID` `id`: the cached handle, or found.
fn private_key(hsm: &Hsm, session: &Session, id: &[u8]) -> Result<ObjectHandle, Failure> {
    if let Some(handle) = hsm.cached(id) {
        return Ok(handle);
    }
    let handle = find_private_key(session, id)?;
    hsm.remember(id, handle);
    Ok(handle)
}

/// The private key with `CKA_ID` `id`, looked for in the token.
pub(crate) fn find_private_key(session: &Session, id: &[u8]) -> Result<ObjectHandle, Failure> {
    let found = session.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Id(id.to_vec()),
    ])?;
    match found.as_slice() {
        [handle] => Ok(*handle),
        [] => Err(Failure::Missing(id.to_vec())),
        _ => Err(Failure::Answer(format!(
            "the token holds several keys with id {}",
            String::from_utf8_lossy(id)
        ))),
    }
}

/// Destroys every object with `CKA_ID` `id` (none left is success).
pub(crate) fn destroy(hsm: &Hsm, id: &[u8]) -> Result<(), CryptoError> {
    hsm.with_session("destroying a key", |session| {
        for handle in session.find_objects(&[Attribute::Id(id.to_vec())])? {
            session.destroy_object(handle)?;
        }
        Ok(())
    })?;
    hsm.forget(id);
    metrics::counter!("tokenmint_hsm_keys_destroyed_total").increment(1);
    Ok(())
}

/// A key in the token: it signs there; the signature is checked here before it is used.
#[derive(Debug)]
pub struct HsmSigner {
    hsm: Arc<Hsm>,
    kid: KeyId,
    algorithm: Algorithm,
    public: PublicKey,
    id: Vec<u8>,
}

impl HsmSigner {
    /// The signer of `record`, whose private half the token holds under `reference`.
    pub fn new(hsm: Arc<Hsm>, record: &KeyRecord, reference: &str) -> Self {
        hsm.watch(reference.as_bytes());
        Self {
            hsm,
            kid: record.kid.clone(),
            algorithm: record.algorithm,
            public: record.public.clone(),
            id: reference.as_bytes().to_vec(),
        }
    }

    fn raw_signature(
        &self,
        mechanism: &Mechanism<'_>,
        data: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.hsm.with_session("signing", |session| {
            let handle = private_key(&self.hsm, session, &self.id)?;
            match session.sign(mechanism, handle, data) {
                // The cached handle went stale: find the key again, once.
                Err(Error::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, _)) => {
                    self.hsm.forget(&self.id);
                    let handle = private_key(&self.hsm, session, &self.id)?;
                    Ok(session.sign(mechanism, handle, data)?)
                }
                other => Ok(other?),
            }
        })
    }
}

impl Drop for HsmSigner {
    fn drop(&mut self) {
        self.hsm.unwatch(&self.id);
    }
}

impl Signer for HsmSigner {
    fn kid(&self) -> &KeyId {
        &self.kid
    }

    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let pss = PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32.into(),
        };
        let digest;
        let (mechanism, data) = match self.algorithm {
            Algorithm::Es256 => {
                digest = crypto::sha256(message);
                (Mechanism::Ecdsa, &digest[..])
            }
            Algorithm::EdDsa => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                message,
            ),
            Algorithm::Rs256 => (Mechanism::Sha256RsaPkcs, message),
            Algorithm::Ps256 => (Mechanism::Sha256RsaPkcsPss(pss), message),
            Algorithm::MlDsa44 | Algorithm::MlDsa65 => return Err(CryptoError::Sign),
        };
        let mut signature = self.raw_signature(&mechanism, data)?;
        if self.algorithm == Algorithm::Es256 {
            // About a third of SoftHSM's ECDSA signatures are high-S; tokens verify low-S only.
            signature = crypto::es256_low_s(signature);
        }
        if !crypto::verify_signature(self.algorithm, &self.public, message, &signature) {
            tracing::error!(kid = %self.kid, "the token's signature does not verify under the key's published public key: not used");
            // A stale handle may name another key: find this one afresh next time.
            self.hsm.forget(&self.id);
            metrics::counter!("tokenmint_hsm_bad_signatures_total").increment(1);
            return Err(CryptoError::Sign);
        }
        Ok(signature)
    }
}

/// What the token says of a private key's protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protection {
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: bool,
    /// Whether the token gave out the private value (`CKA_VALUE`, or an RSA key's
    /// `CKA_PRIVATE_EXPONENT`) when asked.
    pub value_readable: bool,
}

/// Whether the token can sign (`Err`: why not): repaired first if broken, then every key a
/// signer uses looked for in it.
pub(crate) fn check(hsm: &Hsm) -> Result<(), String> {
    hsm.repair_if_broken()?;
    let ids = hsm.watched();
    hsm.with_session("checking the signing keys", |session| {
        session.get_session_info()?;
        for id in &ids {
            find_private_key(session, id)?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())
}

impl Hsm {
    /// The protection attributes of the private key `kid` names.
    pub fn protection(&self, kid: &str) -> Result<Protection, CryptoError> {
        self.with_session("reading a key's attributes", |session| {
            let handle = private_key(self, session, kid.as_bytes())?;
            let mut p = Protection {
                sensitive: false,
                extractable: true,
                always_sensitive: false,
                never_extractable: false,
                value_readable: false,
            };
            for attribute in session.get_attributes(
                handle,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )? {
                match attribute {
                    Attribute::Sensitive(v) => p.sensitive = v,
                    Attribute::Extractable(v) => p.extractable = v,
                    Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
                    Attribute::NeverExtractable(v) => p.never_extractable = v,
                    _ => {}
                }
            }
            // A sensitive value is refused (CKR_ATTRIBUTE_SENSITIVE) or left out.
            p.value_readable = matches!(
                session.get_attributes(handle, &[AttributeType::Value, AttributeType::PrivateExponent]),
                Ok(values) if values.iter().any(|a| matches!(a, Attribute::Value(v) | Attribute::PrivateExponent(v) if !v.is_empty()))
            );
            Ok(p)
        })
    }

    /// The `kid`s of the private keys tokenmint created on the token, sorted.
    pub fn key_ids(&self) -> Result<Vec<String>, CryptoError> {
        self.with_session("listing keys", |session| {
            let mut ids = Vec::new();
            for handle in session.find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(KEY_LABEL.as_bytes().to_vec()),
            ])? {
                for attribute in session.get_attributes(handle, &[AttributeType::Id])? {
                    if let Attribute::Id(id) = attribute {
                        ids.push(String::from_utf8_lossy(&id).into_owned());
                    }
                }
            }
            ids.sort();
            Ok(ids)
        })
    }
}
