//! `keys.custody` and `[pkcs11]`: where the signing keys' private halves are held. The PIN is
//! never in the file: it is read from a file or an environment variable that `[pkcs11]` names.

use super::{file::FilePkcs11, validate::Validator, *};

/// The environment variable the PIN is read from when `[pkcs11]` names no other source.
pub const DEFAULT_PIN_ENV: &str = "TOKENMINT_PKCS11_PIN";
const MAX_PKCS11_SESSIONS: u32 = 256;

/// Where the signing keys' private halves are held (`keys.custody`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeyCustody {
    /// Sealed under the KEKs in the store (`"sealed"`, the default).
    #[default]
    Sealed,
    /// Generated and held in a PKCS#11 token (`"pkcs11"`).
    Pkcs11(Pkcs11Config),
}

impl KeyCustody {
    /// The name `keys.custody` spells.
    pub fn name(&self) -> &'static str {
        match self {
            KeyCustody::Sealed => "sealed",
            KeyCustody::Pkcs11(_) => "pkcs11",
        }
    }
}

/// `[pkcs11]`: the module, the token and where its PIN comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// The module (`.so`) path, resolved against the config file's directory.
    pub module: PathBuf,
    /// Which token.
    pub token: Pkcs11Token,
    /// Where the user PIN is read from at start-up.
    pub pin: PinSource,
    /// Sessions open at most (signers beyond it wait briefly, then fail as unavailable);
    /// `None`: the machine's threads and two (one per worker, the key-step and the check).
    pub sessions: Option<u32>,
}

/// Which token of the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pkcs11Token {
    /// By label (`token_label`).
    Label(String),
    /// By serial number (`token_serial`).
    Serial(String),
}

/// Where the PIN is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN (one line; surrounding whitespace ignored).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl Validator<'_> {
    /// `keys.custody` with `[pkcs11]`: the section is required for `"pkcs11"` and refused
    /// otherwise, so a half-configured token never goes unnoticed.
    pub(super) fn custody(
        &self,
        custody: Option<&str>,
        p: FilePkcs11,
    ) -> Result<KeyCustody, ConfigError> {
        let set = p != FilePkcs11::default();
        match custody.unwrap_or("sealed").trim() {
            "sealed" if set => Err(self.error(
                "pkcs11",
                format!(
                    "[pkcs11] is set but {} is \"sealed\": set keys.custody = \"pkcs11\" to use the token, or remove [pkcs11]",
                    self.label("keys.custody")
                ),
            )),
            "sealed" => Ok(KeyCustody::Sealed),
            "pkcs11" => Ok(KeyCustody::Pkcs11(self.pkcs11(p)?)),
            other => Err(self.error(
                "keys.custody",
                format!(
                    "{} `{other}` is not a key custody: use \"sealed\" (keys sealed under the KEKs in the store) or \"pkcs11\" (keys held in an HSM token)",
                    self.label("keys.custody")
                ),
            )),
        }
    }

    fn pkcs11(&self, p: FilePkcs11) -> Result<Pkcs11Config, ConfigError> {
        let Some(module) = p.module.as_deref() else {
            return Err(self.error(
                "pkcs11.module",
                "keys.custody is \"pkcs11\": set pkcs11.module to the PKCS#11 module's path, e.g. \"/usr/lib/softhsm/libsofthsm2.so\"".into(),
            ));
        };
        let module = self.path("pkcs11.module", Some(module), "")?;
        let token = match (p.token_label, p.token_serial) {
            (Some(label), None) if !label.trim().is_empty() => Pkcs11Token::Label(label),
            (None, Some(serial)) if !serial.trim().is_empty() => Pkcs11Token::Serial(serial),
            _ => {
                return Err(self.error(
                    "pkcs11.token_label",
                    "name the token with exactly one of pkcs11.token_label and pkcs11.token_serial"
                        .into(),
                ));
            }
        };
        let pin = match (p.pin_file, p.pin_env) {
            (Some(file), None) => PinSource::File(self.path("pkcs11.pin_file", Some(&file), "")?),
            (None, env) => {
                let var = env.unwrap_or_else(|| DEFAULT_PIN_ENV.to_owned());
                if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(self.error(
                        "pkcs11.pin_env",
                        format!(
                            "{} `{var}` is not an environment variable's name",
                            self.label("pkcs11.pin_env")
                        ),
                    ));
                }
                PinSource::Env(var)
            }
            (Some(_), Some(_)) => {
                return Err(self.error(
                    "pkcs11.pin_file",
                    "set one of pkcs11.pin_file and pkcs11.pin_env, not both".into(),
                ));
            }
        };
        if p.pin.is_some() {
            // Refused without quoting it: the PIN is never read from, nor echoed from, here.
            return Err(self.error(
                "pkcs11.pin",
                format!(
                    "the PIN is not read from the config file: remove it, and put it in a file named by pkcs11.pin_file or in the variable pkcs11.pin_env names (default {DEFAULT_PIN_ENV})"
                ),
            ));
        }
        let sessions = p.sessions;
        if let Some(sessions) = sessions
            && !(1..=MAX_PKCS11_SESSIONS).contains(&sessions)
        {
            return Err(self.error(
                "pkcs11.sessions",
                format!(
                    "{} must be from 1 to {MAX_PKCS11_SESSIONS}, not {sessions}",
                    self.label("pkcs11.sessions")
                ),
            ));
        }
        Ok(Pkcs11Config {
            module,
            token,
            pin,
            sessions,
        })
    }
}
