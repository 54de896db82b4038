//! The signing-key lifecycle as pure functions of the stored keys, the policy and `now`:
//! which step is due (`due_step_at`), what an emergency rotation or a key revocation changes,
//! and the transition each step writes — in the style of SPIRE's current/next slots.
//!
//! ```text
//!  created ──▶ next ──(published ≥ publish_ahead and current ≥ rotation_period)──▶ current
//!                                                                                   │ promoted away
//!                                                                                   ▼
//!                          removed ◀──(retired ≥ retention, on both clocks)── retired
//!  any state ──(RevokeKey)──▶ revoked (leaves the published set at once)
//! ```

use std::time::Duration;

use crate::{
    crypto::{Algorithm, Kek},
    keys::{KeyError, KeyId, KeyRecord, KeyState},
    revocation::Change,
};

/// The rotation policy (`[keys]`, with the token lifetimes it must outlast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The algorithm of new keys.
    pub algorithm: Algorithm,
    /// How long a key signs before the next one takes over.
    pub rotation_period: Duration,
    /// How long a key is published before it may sign (≥ 2 × `jwks_max_age`).
    pub publish_ahead: Duration,
    /// How long a retired key stays published (≥ max token lifetime + leeway).
    pub retention: Duration,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// One step of the lifecycle; each is applied as one store transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// There is no `next` key: create one.
    CreateNext,
    /// The `next` key is not in the configured algorithm: replace it (it never signed).
    ReplaceNext {
        /// The key replaced.
        old: KeyId,
    },
    /// `next` becomes `current`, `current` becomes `retired`, and a new `next` is created.
    Promote {
        /// The key that starts signing.
        next: KeyId,
        /// The key that stops.
        current: KeyId,
    },
    /// A retired key whose tokens can no longer be valid leaves the set.
    Remove {
        /// The key.
        kid: KeyId,
    },
}

fn in_state(keys: &[KeyRecord], state: KeyState) -> impl Iterator<Item = &KeyRecord> {
    keys.iter().filter(move |k| k.state == state)
}

/// The step due at `now`, if any. `retired_long_enough(kid)` says whether `retention` has
/// also passed on the monotonic clock since the key was seen retired, so a wall-clock jump
/// forward cannot remove a key early.
pub fn due_step_at(
    keys: &[KeyRecord],
    policy: &Policy,
    now: i64,
    retired_long_enough: &dyn Fn(&KeyId) -> bool,
) -> Option<Step> {
    let current = in_state(keys, KeyState::Current).next();
    let next = in_state(keys, KeyState::Next).next();
    match next {
        None => return Some(Step::CreateNext),
        Some(next) if next.algorithm != policy.algorithm => {
            return Some(Step::ReplaceNext {
                old: next.kid.clone(),
            });
        }
        Some(next) => {
            if let Some(current) = current
                && promotion_due(current, next, policy, now)
            {
                return Some(Step::Promote {
                    next: next.kid.clone(),
                    current: current.kid.clone(),
                });
            }
        }
    }
    in_state(keys, KeyState::Retired)
        .find(|k| removal_due(k, policy, now) && retired_long_enough(&k.kid))
        .map(|k| Step::Remove { kid: k.kid.clone() })
}

fn promotion_due(current: &KeyRecord, next: &KeyRecord, policy: &Policy, now: i64) -> bool {
    promotion_at(current, next, policy) <= now
}

fn promotion_at(current: &KeyRecord, next: &KeyRecord, policy: &Policy) -> i64 {
    let signing_since = current.activated_at.unwrap_or(current.created_at);
    signing_since
        .saturating_add(secs(policy.rotation_period))
        .max(next.created_at.saturating_add(secs(policy.publish_ahead)))
}

fn removal_due(retired: &KeyRecord, policy: &Policy, now: i64) -> bool {
    retired
        .retired_at
        .unwrap_or(retired.created_at)
        .saturating_add(secs(policy.retention))
        <= now
}

/// When the next scheduled step falls due (Unix seconds), for metrics and the task's sleep.
pub fn next_step_at(keys: &[KeyRecord], policy: &Policy) -> Option<i64> {
    let current = in_state(keys, KeyState::Current).next();
    let next = in_state(keys, KeyState::Next).next();
    let promotion = match (current, next) {
        // A next key to create, or to replace in the configured algorithm: due now.
        (_, None) => Some(i64::MIN),
        (_, Some(n)) if n.algorithm != policy.algorithm => Some(i64::MIN),
        (Some(c), Some(n)) => Some(promotion_at(c, n, policy)),
        (None, Some(_)) => None,
    };
    let removal = in_state(keys, KeyState::Retired)
        .map(|k| {
            k.retired_at
                .unwrap_or(k.created_at)
                .saturating_add(secs(policy.retention))
        })
        .min();
    [promotion, removal].into_iter().flatten().min()
}

/// How long the current key has signed (seconds), for metrics.
pub fn current_key_age(keys: &[KeyRecord], now: i64) -> Option<i64> {
    in_state(keys, KeyState::Current)
        .next()
        .map(|k| now.saturating_sub(k.activated_at.unwrap_or(k.created_at)))
}

/// What one step writes, in one transaction. `expect_current` guards against a concurrent
/// writer: the transaction applies only if the current key is still the one expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTransition {
    /// The current key the step was computed against (`None`: there was none).
    pub expect_current: Option<KeyId>,
    /// Keys whose state changes, with the time of the change.
    pub set_state: Vec<(KeyId, KeyState)>,
    /// New keys.
    pub insert: Vec<KeyRecord>,
    /// Keys removed from the store.
    pub delete: Vec<KeyId>,
    /// The event to log with it (a key revocation).
    pub event: Option<Change>,
    /// When (Unix seconds).
    pub at: i64,
}

fn current_kid(keys: &[KeyRecord]) -> Option<KeyId> {
    in_state(keys, KeyState::Current)
        .next()
        .map(|k| k.kid.clone())
}

/// The transition for a scheduled (or forced) step.
pub fn transition_for(
    step: &Step,
    keys: &[KeyRecord],
    policy: &Policy,
    kek: &Kek,
    now: i64,
) -> Result<KeyTransition, KeyError> {
    let mut t = KeyTransition {
        expect_current: current_kid(keys),
        set_state: Vec::new(),
        insert: Vec::new(),
        delete: Vec::new(),
        event: None,
        at: now,
    };
    match step {
        Step::CreateNext => {
            t.insert.push(KeyRecord::generate(
                policy.algorithm,
                KeyState::Next,
                kek,
                now,
            )?);
        }
        Step::ReplaceNext { old } => {
            t.delete.push(old.clone());
            t.insert.push(KeyRecord::generate(
                policy.algorithm,
                KeyState::Next,
                kek,
                now,
            )?);
        }
        Step::Promote { next, current } => {
            t.set_state.push((current.clone(), KeyState::Retired));
            t.set_state.push((next.clone(), KeyState::Current));
            t.insert.push(KeyRecord::generate(
                policy.algorithm,
                KeyState::Next,
                kek,
                now,
            )?);
        }
        Step::Remove { kid } => t.delete.push(kid.clone()),
    }
    Ok(t)
}

/// Why a rotation or revocation asked for by an operator is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RotateError {
    /// The next key has not been published long enough for verifiers that cache the JWKS.
    #[error(
        "the next key {kid} has been published for {published_for}s, less than keys.publish_ahead ({publish_ahead}s): verifiers that cache the JWKS may not have it yet; wait, or rotate with --force"
    )]
    TooEarly {
        /// The next key.
        kid: String,
        /// Seconds it has been published.
        published_for: i64,
        /// Seconds it must be.
        publish_ahead: i64,
    },
    /// There is no next (or current) key to rotate to.
    #[error("there is no {0} key to rotate")]
    Missing(&'static str),
    /// No such key.
    #[error("no key {0}")]
    UnknownKey(String),
}

/// An operator's rotation: the scheduled promotion now if `next` is old enough, else a
/// refusal — or, with `force`, the promotion anyway (the emergency exception: verifiers that
/// cached the JWKS before `next` appeared will not know the new signing key until their
/// copy expires).
pub fn rotation(
    keys: &[KeyRecord],
    policy: &Policy,
    now: i64,
    force: bool,
) -> Result<Step, RotateError> {
    let current = in_state(keys, KeyState::Current)
        .next()
        .ok_or(RotateError::Missing("current"))?;
    let next = in_state(keys, KeyState::Next)
        .next()
        .ok_or(RotateError::Missing("next"))?;
    let published_for = now.saturating_sub(next.created_at);
    if !force && published_for < secs(policy.publish_ahead) {
        return Err(RotateError::TooEarly {
            kid: next.kid.to_string(),
            published_for,
            publish_ahead: secs(policy.publish_ahead),
        });
    }
    Ok(Step::Promote {
        next: next.kid.clone(),
        current: current.kid.clone(),
    })
}

/// Revoking a key: it leaves the set at once and its tokens are inactive. Revoking the
/// current key promotes `next` at once (the emergency exception); revoking `next` creates a
/// new one. `None` when the key is already revoked.
pub fn revocation(
    keys: &[KeyRecord],
    kid: &str,
    policy: &Policy,
    kek: &Kek,
    now: i64,
) -> Result<Option<KeyTransition>, RevokeKeyError> {
    let key = keys
        .iter()
        .find(|k| k.kid.as_str() == kid)
        .ok_or_else(|| RotateError::UnknownKey(kid.to_owned()))?;
    let mut t = KeyTransition {
        expect_current: current_kid(keys),
        set_state: vec![(key.kid.clone(), KeyState::Revoked)],
        insert: Vec::new(),
        delete: Vec::new(),
        event: Some(Change::KeyRevoked {
            key_id: key.kid.to_string(),
        }),
        at: now,
    };
    match key.state {
        KeyState::Revoked => return Ok(None),
        KeyState::Retired => {}
        KeyState::Next => {
            t.insert.push(KeyRecord::generate(
                policy.algorithm,
                KeyState::Next,
                kek,
                now,
            )?);
        }
        KeyState::Current => {
            let next = in_state(keys, KeyState::Next)
                .next()
                .ok_or(RotateError::Missing("next"))?;
            t.set_state.push((next.kid.clone(), KeyState::Current));
            t.insert.push(KeyRecord::generate(
                policy.algorithm,
                KeyState::Next,
                kek,
                now,
            )?);
        }
    }
    Ok(Some(t))
}

/// Why a key revocation could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum RevokeKeyError {
    /// Refused.
    #[error(transparent)]
    Refused(#[from] RotateError),
    /// A new key could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Applies a transition to an in-memory key list, as the store does: for simulations and
/// the property test.
pub fn apply(keys: &mut Vec<KeyRecord>, t: &KeyTransition) -> bool {
    if current_kid(keys) != t.expect_current {
        return false;
    }
    for (kid, state) in &t.set_state {
        if let Some(k) = keys.iter_mut().find(|k| &k.kid == kid) {
            k.state = *state;
            match state {
                KeyState::Current => k.activated_at = Some(t.at),
                KeyState::Retired => k.retired_at = Some(t.at),
                KeyState::Revoked => k.revoked_at = Some(t.at),
                KeyState::Next => {}
            }
        }
    }
    keys.retain(|k| !t.delete.contains(&k.kid));
    keys.extend(t.insert.iter().cloned());
    true
}
