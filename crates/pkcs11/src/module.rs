//! The PKCS#11 module and token: the one process-wide context and gate per module, the
//! logged-in session pool, and recovery. Every call into the token goes through
//! [`Hsm::with_session`], which logs in again, refreshes the module once, or marks the token
//! broken for the periodic check (`Custody::check`) to repair.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock},
    time::{Duration, Instant},
};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11},
    error::{Error, RvError},
    object::ObjectHandle,
    session::{Session, SessionState, UserType},
    slot::Slot,
    types::AuthPin,
};
use tokenmint_core::crypto::CryptoError;

use crate::{HsmError, Settings, TokenRef};

/// How long a signer waits for a session when all are in use before it gives up.
const SESSION_WAIT: Duration = Duration::from_secs(2);
/// At most one re-initialisation for a missing key per this long.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Tries at finding the token (a module may read a token another process is writing).
const FIND_TRIES: u32 = 5;

/// The module's context and its gate, shared by everything in this process that uses the
/// module: `C_Initialize` and `C_Finalize` are process-wide, and the login state is per
/// process. Every call into the module holds the gate to read; a re-initialisation holds it
/// to write, since `C_Finalize` must not run while another thread is inside the module
/// (PKCS#11 §5.4).
fn context(module: &Path) -> Result<(Pkcs11, Arc<RwLock<()>>), HsmError> {
    type Contexts = HashMap<PathBuf, (Pkcs11, Arc<RwLock<()>>)>;
    static CONTEXTS: OnceLock<Mutex<Contexts>> = OnceLock::new();
    let mut contexts = lock(CONTEXTS.get_or_init(Mutex::default));
    if let Some((ctx, gate)) = contexts.get(module) {
        return Ok((ctx.clone(), gate.clone()));
    }
    let ctx = Pkcs11::new(module).map_err(|e| HsmError::Load {
        module: module.display().to_string(),
        reason: e.to_string(),
    })?;
    initialize(&ctx).map_err(|e| HsmError::call("C_Initialize", &e))?;
    let gate = Arc::new(RwLock::new(()));
    contexts.insert(module.to_owned(), (ctx.clone(), gate.clone()));
    Ok((ctx, gate))
}

fn initialize(ctx: &Pkcs11) -> Result<(), Error> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        other => other,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the pool holds.
struct State {
    /// The token's slot (`None` while the token is not found).
    slot: Option<Slot>,
    /// Bumped at each re-initialisation: sessions of an older generation are closed on return.
    generation: u64,
    idle: Vec<Session>,
    /// Sessions open, idle or lent out.
    open: usize,
    /// Why the token cannot sign now, until `check` repairs it.
    broken: Option<String>,
    /// Private-key handles by `CKA_ID`, valid until the module is re-initialised.
    handles: HashMap<Vec<u8>, ObjectHandle>,
    /// The refresh window: when it opened, and the keys found missing within it.
    refreshed: Option<RefreshWindow>,
}

/// When the module was last re-initialised and for which missing keys since: a refresh
/// happens once per window, plus once for each key first found missing within it.
#[derive(Debug)]
struct RefreshWindow {
    opened: Instant,
    missing: HashSet<Vec<u8>>,
}

impl RefreshWindow {
    /// Whether a refresh is due, for `missing` (a key not found; `None`: a failing module),
    /// given the window now open (`None` or older than [`REFRESH_EVERY`]: none is). A key
    /// another process made after this one's last refresh is found by refreshing once more;
    /// a key that is really gone, asked for again and again, refreshes once per window.
    fn admits(window: &mut Option<RefreshWindow>, missing: Option<&[u8]>, now: Instant) -> bool {
        match window {
            Some(open) if now.saturating_duration_since(open.opened) < REFRESH_EVERY => {
                missing.is_some_and(|id| open.missing.insert(id.to_vec()))
            }
            _ => {
                *window = Some(RefreshWindow {
                    opened: now,
                    missing: missing.into_iter().map(<[u8]>::to_vec).collect(),
                });
                true
            }
        }
    }
}

/// A logged-in PKCS#11 token: a bounded pool of sessions over the module's one context.
pub struct Hsm {
    ctx: Pkcs11,
    module: PathBuf,
    token: TokenRef,
    pin: AuthPin,
    max_sessions: usize,
    state: Mutex<State>,
    freed: Condvar,
    /// Held while the module is re-initialised: one repair at a time.
    repairing: Mutex<()>,
    /// The module's gate (see [`context`]).
    gate: Arc<RwLock<()>>,
    /// The token refused the PIN: never tried again (a device may lock the user, or erase
    /// its keys, after a few wrong PINs) until a restart with the right one.
    pin_refused: Mutex<Option<RvError>>,
    /// The `CKA_ID`s signers use, with how many signers use each.
    watched: Mutex<HashMap<Vec<u8>, usize>>,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("max_sessions", &self.max_sessions)
            .finish_non_exhaustive()
    }
}

/// A session lent out of the pool.
struct Lease {
    session: Session,
    generation: u64,
}

impl Hsm {
    /// Loads the module, finds the token and logs in: every start-up error surfaces here.
    pub fn open(settings: Settings) -> Result<Self, HsmError> {
        let (ctx, gate) = context(&settings.module)?;
        let hsm = Self {
            ctx,
            gate,
            module: settings.module,
            token: settings.token,
            pin: AuthPin::new(settings.pin.as_str().into()),
            max_sessions: settings.sessions.max(1),
            state: Mutex::new(State {
                slot: None,
                generation: 0,
                idle: Vec::new(),
                open: 0,
                broken: None,
                handles: HashMap::new(),
                refreshed: None,
            }),
            freed: Condvar::new(),
            repairing: Mutex::new(()),
            pin_refused: Mutex::new(None),
            watched: Mutex::default(),
        };
        // Inside the module, like every call: another custody of this process may be
        // re-initialising it.
        let (slot, session) = {
            let _inside = hsm.gate.read().unwrap_or_else(|p| p.into_inner());
            hsm.connect()?
        };
        let mut state = lock(&hsm.state);
        state.slot = Some(slot);
        state.idle.push(session);
        state.open = 1;
        drop(state);
        metrics::gauge!("tokenmint_hsm_up").set(1.0);
        Ok(hsm)
    }

    /// The configured token, for messages.
    pub fn token(&self) -> &TokenRef {
        &self.token
    }

    /// The context, for the mechanism checks.
    pub(crate) fn ctx(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// The slot holding the token.
    pub(crate) fn slot(&self) -> Option<Slot> {
        lock(&self.state).slot
    }

    /// Finds the token's slot and opens a logged-in session on it.
    fn connect(&self) -> Result<(Slot, Session), HsmError> {
        let mut tries = 1;
        // Not found, or the module failing while it reads the token: another process may be
        // writing it at that moment.
        let slot = loop {
            match self.find_slot() {
                Err(HsmError::NoToken { .. } | HsmError::Call { .. }) if tries < FIND_TRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                found => break found?,
            }
        };
        let session = self
            .ctx
            .open_rw_session(slot)
            .map_err(|e| HsmError::call("C_OpenSession", &e))?;
        self.login(&session).map_err(|e| HsmError::Login {
            token: self.token.to_string(),
            reason: e.to_string(),
        })?;
        Ok((slot, session))
    }

    fn find_slot(&self) -> Result<Slot, HsmError> {
        let slots = self
            .ctx
            .get_slots_with_initialized_token()
            .map_err(|e| HsmError::call("C_GetSlotList", &e))?;
        let mut found = Vec::new();
        for slot in slots {
            let info = self
                .ctx
                .get_token_info(slot)
                .map_err(|e| HsmError::call("C_GetTokenInfo", &e))?;
            if self.token.matches(info.label(), info.serial_number()) {
                return Ok(slot);
            }
            found.push(format!(
                "{:?} (serial {})",
                info.label(),
                info.serial_number()
            ));
        }
        Err(HsmError::NoToken {
            token: self.token.to_string(),
            module: self.module.display().to_string(),
            found: if found.is_empty() {
                "none".into()
            } else {
                found.join(", ")
            },
        })
    }

    /// Logs the application in (the login is shared by all its sessions). A PIN the token
    /// refuses is remembered and never offered again.
    fn login(&self, session: &Session) -> Result<(), Error> {
        if let Some(refused) = *lock(&self.pin_refused) {
            return Err(Error::Pkcs11(refused, Function::Login));
        }
        match session.login(UserType::User, Some(&self.pin)) {
            Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(Error::Pkcs11(
                rv @ (RvError::PinIncorrect
                | RvError::PinLocked
                | RvError::PinExpired
                | RvError::PinInvalid
                | RvError::PinLenRange),
                f,
            )) => {
                tracing::error!(error = %rv, "the token refused the PIN: it will not be tried again until a restart");
                *lock(&self.pin_refused) = Some(rv);
                Err(Error::Pkcs11(rv, f))
            }
            other => other,
        }
    }

    /// Whether `session` is logged in (unknown counts as logged in: nothing to repair there).
    fn logged_in(&self, session: &Session) -> bool {
        session.get_session_info().map_or(true, |info| {
            !matches!(
                info.session_state(),
                SessionState::RoPublic | SessionState::RwPublic
            )
        })
    }

    /// Runs `call` on a pooled session. A logged-out token is logged in again and the call
    /// retried once. A key not found is looked for once more after the module is refreshed
    /// (a token shared by several processes may hold keys this one has not seen yet); still
    /// missing, only this call fails, as it does for a refusal of this one request (a
    /// template, a duplicate id). A failure of the device, the session or the module is
    /// tried once more after a refresh; failing again, it marks the token broken until the
    /// periodic check (`Custody::check`) repairs it, and signing fails fast meanwhile.
    pub(crate) fn with_session<T>(
        &self,
        what: &str,
        call: impl Fn(&Session) -> Result<T, Failure>,
    ) -> Result<T, CryptoError> {
        let mut retried = false;
        loop {
            let gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
            let lease = self.lease()?;
            let outcome = self.call_logged_in(&lease.session, &call);
            match outcome {
                Ok(value) => {
                    self.give_back(lease, true);
                    return Ok(value);
                }
                Err(Failure::Missing(id)) if !retried => {
                    let seen = lease.generation;
                    self.give_back(lease, true);
                    drop(gate);
                    self.refresh(seen, Some(&id));
                }
                Err(failure) if !failure.breaks_token() => {
                    self.give_back(lease, true);
                    return Err(CryptoError::Device(format!("{what}: {failure}")));
                }
                // A module can fail for a moment (SoftHSM reading a token another process is
                // writing): refreshed once, the call is tried again before the token counts
                // as broken.
                Err(failure) if !retried => {
                    tracing::warn!(%failure, "a PKCS#11 call failed: re-initialising the module and trying once more");
                    let seen = lease.generation;
                    self.give_back(lease, false);
                    drop(gate);
                    self.refresh(seen, None);
                }
                Err(failure) => {
                    let reason = format!("{what}: {failure}");
                    self.give_back(lease, false);
                    self.mark_broken(&reason);
                    return Err(CryptoError::Device(reason));
                }
            }
            retried = true;
        }
    }

    /// `call`, and once more after logging in again if it failed because the token logged
    /// this process out (a timeout in the HSM, an operator): the token hides its private
    /// keys then, so any failure may be this one.
    fn call_logged_in<T>(
        &self,
        session: &Session,
        call: &impl Fn(&Session) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let outcome = call(session);
        if outcome.is_ok() || self.logged_in(session) {
            return outcome;
        }
        metrics::counter!("tokenmint_hsm_logins_total").increment(1);
        tracing::warn!("the PKCS#11 token was logged out: logging in again");
        self.login(session).map_err(Failure::Token)?;
        call(session)
    }

    fn generation(&self) -> u64 {
        lock(&self.state).generation
    }

    /// A session: an idle one, a new one while fewer than `max_sessions` are open, or the
    /// first returned within [`SESSION_WAIT`].
    fn lease(&self) -> Result<Lease, CryptoError> {
        let deadline = Instant::now() + SESSION_WAIT;
        let mut state = lock(&self.state);
        loop {
            if let Some(reason) = &state.broken {
                return Err(CryptoError::Device(reason.clone()));
            }
            if let Some(session) = state.idle.pop() {
                return Ok(Lease {
                    session,
                    generation: state.generation,
                });
            }
            if state.open < self.max_sessions {
                return self.open_session(state);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CryptoError::Device(format!(
                    "all {} sessions were busy for {SESSION_WAIT:?}",
                    self.max_sessions
                )));
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    fn open_session(&self, mut state: MutexGuard<'_, State>) -> Result<Lease, CryptoError> {
        let (slot, generation) = (state.slot, state.generation);
        let slot = slot.ok_or_else(|| CryptoError::Device("the token is not found".into()))?;
        state.open += 1;
        drop(state);
        match self.ctx.open_rw_session(slot) {
            Ok(session) => Ok(Lease {
                session,
                generation,
            }),
            Err(e) => {
                let reason = format!("opening a session: {e}");
                lock(&self.state).open -= 1;
                self.freed.notify_one();
                self.mark_broken(&reason);
                Err(CryptoError::Device(reason))
            }
        }
    }

    /// Returns a session: back to the pool after a success in the current generation, closed
    /// otherwise — except one of an older generation, whose handle a re-initialised module
    /// may have given to a new session: it is let go without `C_CloseSession`.
    fn give_back(&self, lease: Lease, succeeded: bool) {
        let mut state = lock(&self.state);
        let current = lease.generation == state.generation;
        if succeeded && current {
            state.idle.push(lease.session);
        } else {
            state.open = state.open.saturating_sub(1);
            drop(state);
            if current {
                drop(lease.session);
            } else {
                std::mem::forget(lease.session);
            }
        }
        self.freed.notify_one();
    }

    fn mark_broken(&self, reason: &str) {
        let mut state = lock(&self.state);
        if state.broken.is_none() {
            tracing::error!(
                reason,
                "the PKCS#11 token cannot sign: issuance is unavailable until it recovers"
            );
            metrics::gauge!("tokenmint_hsm_up").set(0.0);
            metrics::counter!("tokenmint_hsm_failures_total").increment(1);
            state.broken = Some(reason.to_owned());
        }
        self.freed.notify_all();
    }

    /// The cached handle of the object with `CKA_ID` `id`.
    pub(crate) fn cached(&self, id: &[u8]) -> Option<ObjectHandle> {
        lock(&self.state).handles.get(id).copied()
    }

    /// Caches an object's handle.
    pub(crate) fn remember(&self, id: &[u8], handle: ObjectHandle) {
        lock(&self.state).handles.insert(id.to_vec(), handle);
    }

    /// Forgets a cached handle (its object was destroyed, or the handle went stale).
    pub(crate) fn forget(&self, id: &[u8]) {
        lock(&self.state).handles.remove(id);
    }

    /// Repairs a broken token: the module is finalised and initialised again, the token
    /// found and logged in, every session of the old generation let go. `Err`: why it is
    /// still broken.
    pub(crate) fn repair_if_broken(&self) -> Result<(), String> {
        let broken = lock(&self.state).broken.clone();
        match broken {
            Some(reason) => self
                .repair()
                .map_err(|e| format!("{reason}; recovery failed: {e}")),
            None => Ok(()),
        }
    }

    /// The `CKA_ID`s the signers use.
    pub(crate) fn watched(&self) -> Vec<Vec<u8>> {
        lock(&self.watched).keys().cloned().collect()
    }

    /// Re-initialises the module after a key was not found or the module failed, as
    /// [`RefreshWindow::admits`] allows, and not when another thread did since `seen`.
    /// SoftHSM, for one, re-reads its token only when the token's change counter moves past
    /// the one it last wrote, so it can miss keys another process made meanwhile.
    fn refresh(&self, seen: u64, missing: Option<&[u8]>) {
        let _one = lock(&self.repairing);
        if self.generation() != seen {
            return;
        }
        if !RefreshWindow::admits(&mut lock(&self.state).refreshed, missing, Instant::now()) {
            return;
        }
        if let Err(e) = self.repair_locked() {
            self.mark_broken(&format!("refreshing the module: {e}"));
        }
    }

    fn repair(&self) -> Result<(), HsmError> {
        let _one = lock(&self.repairing);
        if lock(&self.state).broken.is_none() {
            return Ok(());
        }
        let repaired = self.repair_locked();
        if repaired.is_ok() {
            metrics::counter!("tokenmint_hsm_recoveries_total").increment(1);
            tracing::warn!(token = %self.token, "the PKCS#11 token recovered: signing again");
        }
        repaired
    }

    /// Finalises and initialises the module, finds the token and logs in, with no call
    /// inside the module meanwhile; the caller holds `repairing`.
    fn repair_locked(&self) -> Result<(), HsmError> {
        if let Some(refused) = *lock(&self.pin_refused) {
            return Err(HsmError::Login {
                token: self.token.to_string(),
                reason: format!("{refused}; it is not tried again: set the right PIN and restart"),
            });
        }
        let _alone = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let stale = {
            let mut state = lock(&self.state);
            state.generation += 1;
            state.open = state.open.saturating_sub(state.idle.len());
            state.handles.clear();
            state.slot = None;
            std::mem::take(&mut state.idle)
        };
        drop(stale);
        // A re-initialised module forgets every session and handle of this process: the
        // other generation's sessions fail and are closed on return.
        let _ = self.ctx.clone().finalize();
        initialize(&self.ctx).map_err(|e| HsmError::call("C_Initialize", &e))?;
        let (slot, session) = self.connect()?;
        let mut state = lock(&self.state);
        state.slot = Some(slot);
        state.idle.push(session);
        state.open += 1;
        state.broken = None;
        state.handles.clear();
        drop(state);
        self.freed.notify_all();
        metrics::gauge!("tokenmint_hsm_up").set(1.0);
        Ok(())
    }

    /// Counts a signer of the key with `CKA_ID` `id`: the periodic check (`Custody::check`) looks for every key a
    /// signer uses.
    pub(crate) fn watch(&self, id: &[u8]) {
        *lock(&self.watched).entry(id.to_vec()).or_insert(0) += 1;
    }

    /// A signer of `id` is gone.
    pub(crate) fn unwatch(&self, id: &[u8]) {
        let mut watched = lock(&self.watched);
        if let Some(count) = watched.get_mut(id) {
            *count -= 1;
            if *count == 0 {
                watched.remove(id);
            }
        }
    }

    /// Logs this process out of the token, as an HSM does when its session times out: the
    /// next call logs in again. For tests of that recovery.
    #[doc(hidden)]
    pub fn log_out(&self) -> Result<(), String> {
        self.with_session("logging out", |session| {
            session.logout().map_err(Failure::Token)
        })
        .map_err(|e| e.to_string())
    }
}

/// Why a call into the token failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The module refused or failed.
    Token(Error),
    /// The token answered something this process cannot use.
    Answer(String),
    /// The key looked for (its `CKA_ID`) is not in the token.
    Missing(Vec<u8>),
}

impl Failure {
    /// Whether the failure is the device's, the session's or the module's (the token is
    /// broken until repaired), rather than a refusal of this one call.
    fn breaks_token(&self) -> bool {
        match self {
            Failure::Answer(_) | Failure::Missing(_) => false,
            Failure::Token(Error::Pkcs11(rv, _)) => matches!(
                rv,
                RvError::DeviceError
                    | RvError::DeviceMemory
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::TokenNotRecognized
                    | RvError::CryptokiNotInitialized
                    | RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::SessionCount
                    | RvError::GeneralError
                    | RvError::FunctionFailed
                    | RvError::HostMemory
                    | RvError::UserNotLoggedIn
                    | RvError::PinIncorrect
                    | RvError::PinLocked
                    | RvError::PinExpired
            ),
            // The binding itself failed (a missing symbol, a null function pointer).
            Failure::Token(_) => true,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Token(e) => write!(f, "{e}"),
            Failure::Answer(why) => f.write_str(why),
            Failure::Missing(id) => {
                write!(f, "key {} is not on the token", String::from_utf8_lossy(id))
            }
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Token(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica that refreshed for one key (the first keys another replica made) must still
    /// refresh at once for a key made after that (a rotation elsewhere), or it refuses to
    /// sign with the new key for up to [`REFRESH_EVERY`].
    #[test]
    fn each_key_first_missing_in_a_window_refreshes_once() {
        let start = Instant::now();
        let mut window = None;
        assert!(RefreshWindow::admits(&mut window, Some(b"k1"), start));
        let soon = start + Duration::from_millis(500);
        assert!(!RefreshWindow::admits(&mut window, Some(b"k1"), soon));
        assert!(RefreshWindow::admits(&mut window, Some(b"k2"), soon));
        assert!(!RefreshWindow::admits(&mut window, Some(b"k2"), soon));
        assert!(
            !RefreshWindow::admits(&mut window, None, soon),
            "a failing module waits"
        );
        let later = start + REFRESH_EVERY;
        assert!(RefreshWindow::admits(&mut window, Some(b"k1"), later));
        assert!(!RefreshWindow::admits(&mut window, None, later));
    }
}
