//! Which custody holds the signing keys (`keys.custody`): the KEKs, or a PKCS#11 token opened
//! with its PIN from a file or the environment; and the periodic check that tells readiness
//! whether the token can sign, repairing it when it cannot.

use std::{path::Path, sync::Arc, time::Duration};

use tokenmint_config::{Config, KeyCustody, PinSource, Pkcs11Config, Pkcs11Token};
use tokenmint_core::{
    crypto::Algorithm,
    keys::{Custody, KekRing, KeyRecord, PrivateHalf},
};
use tokenmint_pkcs11::{Pkcs11Custody, Settings, TokenRef};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::authority::Authority;

/// Why the key custody could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CustodyError(String);

/// How often a token's custody is checked (and repaired).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The longest PIN file read.
const MAX_PIN_LEN: usize = 256;

/// The configured custody over `keks` (which also open keys sealed before a switch to a
/// token), for keys of `algorithms`. Opening a token loads its module and logs in: run off
/// the async workers.
pub fn open(
    config: &Config,
    keks: Arc<KekRing>,
    algorithms: &[Algorithm],
) -> Result<Arc<dyn Custody>, CustodyError> {
    match &config.keys.custody {
        KeyCustody::Sealed => Ok(keks),
        KeyCustody::Pkcs11(p) => {
            let settings = settings(p)?;
            let custody = Pkcs11Custody::open(settings, keks, algorithms)
                .map_err(|e| CustodyError(e.to_string()))?;
            tracing::info!(module = %p.module.display(), token = %custody.hsm().token(), "signing keys are held in a PKCS#11 token");
            Ok(Arc::new(custody))
        }
    }
}

fn settings(p: &Pkcs11Config) -> Result<Settings, CustodyError> {
    Ok(Settings {
        module: p.module.clone(),
        token: match &p.token {
            Pkcs11Token::Label(label) => TokenRef::Label(label.clone()),
            Pkcs11Token::Serial(serial) => TokenRef::Serial(serial.clone()),
        },
        pin: pin(&p.pin)?,
        sessions: match p.sessions {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            // One per worker thread that may sign at once, the key step's and the check's.
            None => std::thread::available_parallelism().map_or(2, usize::from) + 2,
        },
    })
}

/// The token's PIN from where `[pkcs11]` says (never from the config file itself).
fn pin(source: &PinSource) -> Result<Zeroizing<String>, CustodyError> {
    let refused = |why: String| CustodyError(format!("the PKCS#11 PIN: {why}"));
    let pin = match source {
        PinSource::Env(var) => Zeroizing::new(std::env::var(var).map_err(|_| {
            refused(format!(
                "{var} is not set (or not UTF-8): set it, or name a file in pkcs11.pin_file"
            ))
        })?),
        PinSource::File(path) => read_pin_file(path).map_err(refused)?,
    };
    let trimmed = Zeroizing::new(pin.trim().to_owned());
    if trimmed.is_empty() {
        return Err(refused("it is empty".into()));
    }
    Ok(trimmed)
}

fn read_pin_file(path: &Path) -> Result<Zeroizing<String>, String> {
    let bytes = Zeroizing::new(
        std::fs::read(path).map_err(|e| format!("{} could not be read: {e}", path.display()))?,
    );
    if bytes.len() > MAX_PIN_LEN {
        return Err(format!(
            "{} is longer than {MAX_PIN_LEN} bytes: it should hold the PIN alone",
            path.display()
        ));
    }
    std::str::from_utf8(&bytes)
        .map(|text| Zeroizing::new(text.to_owned()))
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// Destroys the private halves of `records` that a device holds, off the async workers (a
/// device call may take a while). A sealed key has nothing outside its store row. A failure
/// is logged: the key is out of the store already, so it never signs again here.
pub async fn destroy(custody: Arc<dyn Custody>, records: Vec<KeyRecord>) {
    let held: Vec<KeyRecord> = records
        .into_iter()
        .filter(|r| matches!(r.private, PrivateHalf::Held { .. }))
        .collect();
    if held.is_empty() {
        return;
    }
    let destroyed = tokio::task::spawn_blocking(move || {
        for record in &held {
            match custody.destroy(record) {
                Ok(()) => tracing::info!(kid = %record.kid, custody = custody.name(), "a key's private half was destroyed"),
                Err(e) => tracing::warn!(kid = %record.kid, error = %e, "a key's private half could not be destroyed; destroy it by hand"),
            }
        }
    })
    .await;
    if let Err(e) = destroyed {
        tracing::warn!(error = %e, "destroying keys' private halves stopped");
    }
}

/// Checks the custody every [`CHECK_INTERVAL`] on the blocking pool (a check may repair the
/// token, which can take a while) and records the outcome for readiness and metrics.
pub async fn check_task(
    custody: Arc<dyn Custody>,
    authority: Arc<Authority>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let custody = custody.clone();
        let outcome = match tokio::task::spawn_blocking(move || custody.check()).await {
            Ok(outcome) => outcome,
            Err(e) => Err(format!("the custody check stopped: {e}")),
        };
        authority.mark_custody(outcome.err());
    }
}
