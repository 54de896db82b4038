//! Key custody in a PKCS#11 token (`keys.custody = "pkcs11"`): signing keys are generated
//! inside the token, sensitive and never extractable, and found by their `CKA_ID`, which is the
//! key's `kid`. The store keeps the public key and that reference, so replicas share keys
//! through the store as they share sealed ones. The token signs; the build's stack hashes
//! first where the token wants a digest, and checks every signature before it leaves this
//! process. Keys sealed in the store before the switch keep signing until they rotate out.

mod keys;
mod module;

use std::{fmt, path::PathBuf, sync::Arc};

use tokenmint_core::{
    clock::UnixTime,
    crypto::{Algorithm, RsaBits},
    jose::Signer,
    keys::{Custody, KekRing, KeyError, KeyMaker, KeyRecord, KeyState, PrivateHalf},
};
use zeroize::Zeroizing;

pub use keys::HsmSigner;
pub use module::Hsm;

/// The custody's name, as `keys.custody` and the store's `held_by` spell it.
pub const CUSTODY: &str = "pkcs11";

/// Which token of the module holds the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenRef {
    /// The token's label (`CKA_LABEL` of the token, trailing blanks ignored).
    Label(String),
    /// The token's serial number.
    Serial(String),
}

impl TokenRef {
    fn matches(&self, label: &str, serial: &str) -> bool {
        match self {
            TokenRef::Label(want) => label.trim_end() == want.trim(),
            TokenRef::Serial(want) => serial.trim_end() == want.trim(),
        }
    }
}

impl fmt::Display for TokenRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenRef::Label(label) => write!(f, "labelled {label:?}"),
            TokenRef::Serial(serial) => write!(f, "with serial {serial:?}"),
        }
    }
}

/// How to reach the token.
pub struct Settings {
    /// The module (`.so`) to load.
    pub module: PathBuf,
    /// The token.
    pub token: TokenRef,
    /// The user PIN (read from a file or the environment, never the config file).
    pub pin: Zeroizing<String>,
    /// Sessions open at most: signers beyond it wait.
    pub sessions: usize,
}

/// What failed while reaching the token at start-up.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The module did not load.
    #[error("the PKCS#11 module {module} could not be loaded: {reason}")]
    Load {
        /// The module's path.
        module: String,
        /// Why.
        reason: String,
    },
    /// A call into the module failed.
    #[error("the PKCS#11 module failed in {call}: {reason}")]
    Call {
        /// The function.
        call: &'static str,
        /// Its error.
        reason: String,
    },
    /// No initialised token matches.
    #[error("no initialised token {token} in the PKCS#11 module {module}; its tokens: {found}")]
    NoToken {
        /// The configured token.
        token: String,
        /// The module.
        module: String,
        /// The tokens it has.
        found: String,
    },
    /// The PIN was refused.
    #[error("logging in to the token {token} failed: {reason} (check the PIN)")]
    Login {
        /// The token.
        token: String,
        /// The module's error.
        reason: String,
    },
    /// The token lacks a mechanism a configured algorithm needs.
    #[error(
        "the token {token} cannot hold {algorithm} keys: it lacks {mechanism}; configure algorithms it has, or another token"
    )]
    Mechanism {
        /// The token.
        token: String,
        /// The algorithm.
        algorithm: Algorithm,
        /// The missing mechanism.
        mechanism: String,
    },
}

impl HsmError {
    fn call(call: &'static str, e: &cryptoki::error::Error) -> Self {
        HsmError::Call {
            call,
            reason: e.to_string(),
        }
    }
}

/// The PKCS#11 custody: new keys in the token; keys sealed in the store before the switch
/// open with the KEKs until they rotate out.
#[derive(Debug)]
pub struct Pkcs11Custody {
    hsm: Arc<Hsm>,
    keks: Arc<KekRing>,
}

impl Pkcs11Custody {
    /// Opens the token and checks it has every mechanism `algorithms` need.
    pub fn open(
        settings: Settings,
        keks: Arc<KekRing>,
        algorithms: &[Algorithm],
    ) -> Result<Self, HsmError> {
        let hsm = Arc::new(Hsm::open(settings)?);
        for algorithm in algorithms {
            keys::check_mechanisms(&hsm, *algorithm)?;
        }
        Ok(Self { hsm, keks })
    }

    /// The token.
    pub fn hsm(&self) -> &Arc<Hsm> {
        &self.hsm
    }
}

impl KeyMaker for Pkcs11Custody {
    fn make(
        &self,
        algorithm: Algorithm,
        rsa_bits: RsaBits,
        state: KeyState,
        now: UnixTime,
    ) -> Result<KeyRecord, KeyError> {
        keys::generate(&self.hsm, algorithm, rsa_bits, state, now)
    }
}

impl Custody for Pkcs11Custody {
    fn name(&self) -> &'static str {
        CUSTODY
    }

    fn signer(&self, record: &KeyRecord) -> Result<Arc<dyn Signer>, KeyError> {
        match &record.private {
            PrivateHalf::Held { custody, reference } if custody == CUSTODY => Ok(Arc::new(
                HsmSigner::new(self.hsm.clone(), record, reference),
            )),
            PrivateHalf::Held { custody, .. } => Err(KeyError::HeldElsewhere {
                kid: record.kid.to_string(),
                custody: custody.clone(),
            }),
            PrivateHalf::Sealed(_) => self.keks.signer(record),
        }
    }

    fn destroy(&self, record: &KeyRecord) -> Result<(), KeyError> {
        match &record.private {
            PrivateHalf::Held { custody, reference } if custody == CUSTODY => {
                keys::destroy(&self.hsm, reference.as_bytes()).map_err(KeyError::from)
            }
            _ => Ok(()),
        }
    }

    fn check(&self) -> Result<(), String> {
        keys::check(&self.hsm)
    }
}
