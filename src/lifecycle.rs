//! Applying the key lifecycle: the scheduled rotation task, an operator's rotation and key
//! revocation. Each step is one store transaction (through the change log, so a key
//! revocation is numbered like any revocation); then the key ring is rebuilt from the store
//! and published on the `watch` channel the request path reads.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::{Mutex, watch};

use crate::changes::ChangeLog;
use tokenmint_core::{
    audit::SYSTEM_ACTOR,
    clock::{Clock, UnixTime},
    keys::{Custody, KeyError, KeyId, KeyRecord, KeyRing, KeyState},
    revocation::Event,
    rotation::{self, Policy, RevokeKeyError, RotateError, Step},
};
use tokenmint_store::{Store, StoreError};

/// The most steps one tick applies (a long outage may leave several due).
const MAX_STEPS_PER_TICK: usize = 16;

/// What failed while applying the lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The store failed or another writer moved first; nothing of this step was applied.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Keys could not be made or opened.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The operator's request is refused.
    #[error(transparent)]
    Refused(#[from] RotateError),
    /// The step was saved in the store, but this process could not load the key ring it
    /// leads to (for example a key sealed under a KEK it is not configured with).
    #[error("the key step was saved, but this replica cannot load the key ring: {0}")]
    SavedNotLoaded(String),
}

impl From<RevokeKeyError> for LifecycleError {
    fn from(e: RevokeKeyError) -> Self {
        match e {
            RevokeKeyError::Refused(e) => LifecycleError::Refused(e),
            RevokeKeyError::Key(e) => LifecycleError::Key(e),
        }
    }
}

/// Applies rotation steps and publishes the resulting key ring.
pub struct Rotator {
    store: Arc<dyn Store>,
    changes: Arc<ChangeLog>,
    custody: Arc<dyn Custody>,
    policy: Policy,
    ring: watch::Sender<Arc<KeyRing>>,
    clock: Arc<dyn Clock>,
    // When (monotonic) this process first saw each key retired: removal needs `retention` on
    // this clock too, so a wall-clock jump cannot remove a key early.
    retired_seen: std::sync::Mutex<HashMap<KeyId, Duration>>,
    // One step at a time within this process.
    step_lock: Mutex<()>,
}

impl std::fmt::Debug for Rotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotator")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What an operator's rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotated {
    /// The key that signs now.
    pub current: KeyId,
    /// The key retired (`None`: the default algorithm's first key started signing beside the
    /// old default, which still signs in its own lane).
    pub retired: Option<KeyId>,
    /// Whether it was forced past `publish_ahead` (the emergency exception).
    pub forced_early: bool,
}

impl Rotator {
    /// A rotator publishing on `ring`.
    pub fn new(
        store: Arc<dyn Store>,
        changes: Arc<ChangeLog>,
        custody: Arc<dyn Custody>,
        policy: Policy,
        ring: watch::Sender<Arc<KeyRing>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            changes,
            custody,
            policy,
            ring,
            clock,
            retired_seen: std::sync::Mutex::default(),
            step_lock: Mutex::new(()),
        }
    }

    fn now(&self) -> UnixTime {
        self.clock.unix_now()
    }

    /// Every stored key.
    pub async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.store.keys().await
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn retired_long_enough(&self, keys: &[KeyRecord]) -> impl Fn(&KeyId) -> bool + use<> {
        let now = self.clock.monotonic();
        let mut seen = self
            .retired_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.retain(|kid, _| {
            keys.iter()
                .any(|k| &k.kid == kid && k.state == KeyState::Retired)
        });
        for key in keys.iter().filter(|k| k.state == KeyState::Retired) {
            seen.entry(key.kid.clone()).or_insert(now);
        }
        let snapshot = seen.clone();
        let retention = self.policy.retention;
        move |kid| {
            snapshot
                .get(kid)
                .is_some_and(|since| now.saturating_sub(*since) >= retention)
        }
    }

    /// Applies every step due now, one transaction each, then publishes the ring, then has
    /// the custody destroy the keys the steps let go. Returns the steps applied.
    pub async fn tick(&self) -> Result<Vec<Step>, LifecycleError> {
        let _one = self.step_lock.lock().await;
        let (mut applied, mut unneeded) = (Vec::new(), Vec::new());
        let stepped = self.due_steps(&mut applied, &mut unneeded).await;
        if !applied.is_empty() {
            self.publish_then_destroy(unneeded).await?;
        }
        stepped.map(|()| applied)
    }

    /// Applies the steps due, one transaction each, recording each one applied and the keys
    /// it let go.
    async fn due_steps(
        &self,
        applied: &mut Vec<Step>,
        unneeded: &mut Vec<KeyRecord>,
    ) -> Result<(), LifecycleError> {
        for _ in 0..MAX_STEPS_PER_TICK {
            let keys = self.store.keys().await?;
            let now = self.now();
            let long_enough = self.retired_long_enough(&keys);
            let Some(step) = rotation::due_step_at(&keys, &self.policy, now, &long_enough) else {
                // Nothing is due: the keys just read also give the schedule gauges.
                if let Some(age) = rotation::current_key_age(&keys, &self.policy, now) {
                    metrics::gauge!("tokenmint_signing_key_age_seconds").set(age.as_secs_f64());
                }
                if let Some(at) = rotation::next_step_at(&keys, &self.policy) {
                    metrics::gauge!("tokenmint_key_next_step_seconds")
                        .set(at.since(now).as_secs_f64());
                }
                break;
            };
            let transition = self.transition(&step, keys.clone(), now).await?;
            let (_, gone) = self.commit(&transition, &keys, SYSTEM_ACTOR).await?;
            unneeded.extend(gone);
            tracing::info!(?step, "key lifecycle step applied");
            applied.push(step);
        }
        Ok(())
    }

    /// The transition of `step`, computed off the async workers: it may generate a key, and
    /// an RSA key takes up to a second.
    async fn transition(
        &self,
        step: &Step,
        keys: Vec<KeyRecord>,
        now: UnixTime,
    ) -> Result<rotation::KeyTransition, LifecycleError> {
        let (custody, policy, step) = (self.custody.clone(), self.policy, step.clone());
        let computed = off_runtime(move || {
            rotation::transition_for(&step, &keys, &policy, custody.as_ref(), now)
        });
        Ok(computed.await?)
    }

    /// Commits `transition` (computed from `keys`) through the change log. Returns its event
    /// and the keys it let go (removed, dropped or revoked), for the custody to destroy once
    /// this replica no longer signs with them. When another writer moved first, the keys this
    /// step made, which nobody will store, are destroyed here.
    async fn commit(
        &self,
        transition: &rotation::KeyTransition,
        keys: &[KeyRecord],
        actor: &str,
    ) -> Result<(Option<Event>, Vec<KeyRecord>), LifecycleError> {
        match self.changes.commit_key_transition(transition, actor).await {
            Ok(event) => {
                let gone =
                    keys.iter()
                        .filter(|k| {
                            transition.delete.contains(&k.kid)
                                || transition.set_state.iter().any(|(kid, state)| {
                                    kid == &k.kid && *state == KeyState::Revoked
                                })
                        })
                        .cloned()
                        .collect();
                Ok((event, gone))
            }
            // A refused step stored nothing; an unanswered one may have, so it keeps them.
            Err(e @ StoreError::Conflict(_)) => {
                crate::custody::destroy(self.custody.clone(), transition.insert.clone()).await;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An operator's rotation (`actor` asked): the scheduled promotion now, refused if `next`
    /// has not been published for `publish_ahead` unless `force`.
    pub async fn rotate(&self, force: bool, actor: &str) -> Result<Rotated, LifecycleError> {
        let _one = self.step_lock.lock().await;
        let keys = self.store.keys().await?;
        let now = self.now();
        let forced_early = rotation::rotation(&keys, &self.policy, now, false).is_err();
        let step = rotation::rotation(&keys, &self.policy, now, force)?;
        let Step::Promote { next, .. } = &step else {
            return Err(RotateError::Missing("next").into());
        };
        let transition = self.transition(&step, keys.clone(), now).await?;
        let retired = transition
            .set_state
            .iter()
            .find(|(_, state)| *state == KeyState::Retired)
            .map(|(kid, _)| kid.clone());
        let rotated = Rotated {
            current: next.clone(),
            retired,
            forced_early: forced_early && force,
        };
        let (_, gone) = self.commit(&transition, &keys, actor).await?;
        let retired = rotated.retired.as_ref().map(KeyId::to_string);
        tracing::warn!(current = %rotated.current, retired = ?retired, forced_early = rotated.forced_early, "keys rotated by an operator");
        self.publish_then_destroy(gone).await?;
        Ok(rotated)
    }

    /// Revokes a key (`actor` asked): it leaves the published set at once (the current key is
    /// replaced by `next` at once). `None` when it was already revoked.
    pub async fn revoke(&self, kid: &str, actor: &str) -> Result<Option<Event>, LifecycleError> {
        let _one = self.step_lock.lock().await;
        let keys = self.store.keys().await?;
        let now = self.now();
        let (custody, policy, owned_kid, read) = (
            self.custody.clone(),
            self.policy,
            kid.to_owned(),
            keys.clone(),
        );
        let computed = off_runtime(move || {
            rotation::revocation(&read, &owned_kid, &policy, custody.as_ref(), now)
        })
        .await;
        let Some(transition) = computed? else {
            return Ok(None);
        };
        let (event, gone) = self.commit(&transition, &keys, actor).await?;
        tracing::warn!(%kid, "signing key revoked");
        self.publish_then_destroy(gone).await?;
        Ok(event)
    }

    /// Publishes after a step the store has saved, then destroys the keys it let go (this
    /// replica no longer signs with them), whether or not the ring could be loaded.
    async fn publish_then_destroy(&self, gone: Vec<KeyRecord>) -> Result<(), LifecycleError> {
        let published = self.publish_saved().await;
        crate::custody::destroy(self.custody.clone(), gone).await;
        published
    }

    /// Publishes after a step the store has saved: a failure says the step was saved.
    async fn publish_saved(&self) -> Result<(), LifecycleError> {
        self.publish()
            .await
            .map_err(|e| LifecycleError::SavedNotLoaded(e.to_string()))
    }

    /// Rebuilds the key ring from the store and publishes it if it changed. Whether it could
    /// is recorded with the authority (readiness and `tokenmint_key_ring_loaded`): a replica
    /// that cannot load the ring its store holds keeps signing with an old key.
    pub async fn publish(&self) -> Result<(), LifecycleError> {
        let built = self.build_ring().await;
        // A store out of reach says nothing of the keys it holds (staleness covers it): only
        // keys read and not loadable (corrupt rows, a KEK that does not open them) make the
        // replica unready.
        if !matches!(
            built,
            Err(LifecycleError::Store(
                tokenmint_store::StoreError::Unavailable(_)
            ))
        ) {
            self.changes
                .authority()
                .mark_key_ring(built.as_ref().err().map(ToString::to_string));
        }
        let ring = built?;
        self.ring.send_if_modified(|old| {
            let changed =
                old.version() != ring.version() || old.signer_kids() != ring.signer_kids();
            if changed {
                *old = Arc::new(ring);
            }
            changed
        });
        Ok(())
    }

    async fn build_ring(&self) -> Result<KeyRing, LifecycleError> {
        let keys = self.store.keys().await?;
        Ok(KeyRing::try_build(&keys, self.custody.as_ref())?)
    }

    /// When the next scheduled step is due and how old the current key is, for metrics.
    pub async fn schedule(&self) -> Result<(Option<UnixTime>, Option<Duration>), StoreError> {
        let keys = self.store.keys().await?;
        Ok((
            rotation::next_step_at(&keys, &self.policy),
            rotation::current_key_age(&keys, &self.policy, self.now()),
        ))
    }
}

/// Runs `work` on the blocking pool (key generation), so the async workers keep serving.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
