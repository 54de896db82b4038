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

use crate::clock::UnixTime;

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
    now: UnixTime,
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

fn promotion_due(current: &KeyRecord, next: &KeyRecord, policy: &Policy, now: UnixTime) -> bool {
    promotion_at(current, next, policy) <= now
}

fn promotion_at(current: &KeyRecord, next: &KeyRecord, policy: &Policy) -> UnixTime {
    let signing_since = current.activated_at.unwrap_or(current.created_at);
    signing_since
        .saturating_add(policy.rotation_period)
        .max(next.created_at.saturating_add(policy.publish_ahead))
}

fn removal_due(retired: &KeyRecord, policy: &Policy, now: UnixTime) -> bool {
    retired
        .retired_at
        .unwrap_or(retired.created_at)
        .saturating_add(policy.retention)
        <= now
}

/// When the next scheduled step falls due (Unix seconds), for metrics and the task's sleep.
pub fn next_step_at(keys: &[KeyRecord], policy: &Policy) -> Option<UnixTime> {
    let current = in_state(keys, KeyState::Current).next();
    let next = in_state(keys, KeyState::Next).next();
    let promotion = match (current, next) {
        // A next key to create, or to replace in the configured algorithm: due now.
        (_, None) => Some(UnixTime::MIN),
        (_, Some(n)) if n.algorithm != policy.algorithm => Some(UnixTime::MIN),
        (Some(c), Some(n)) => Some(promotion_at(c, n, policy)),
        (None, Some(_)) => None,
    };
    let removal = in_state(keys, KeyState::Retired)
        .map(|k| {
            k.retired_at
                .unwrap_or(k.created_at)
                .saturating_add(policy.retention)
        })
        .min();
    [promotion, removal].into_iter().flatten().min()
}

/// How long the current key has signed (seconds), for metrics.
pub fn current_key_age(keys: &[KeyRecord], now: UnixTime) -> Option<Duration> {
    in_state(keys, KeyState::Current)
        .next()
        .map(|k| now.since(k.activated_at.unwrap_or(k.created_at)))
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
    pub at: UnixTime,
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
    now: UnixTime,
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
        "the next key {kid} has been published for {}s, less than keys.publish_ahead ({}s): verifiers that cache the JWKS may not have it yet; wait, or rotate with --force",
        .published_for.as_secs(),
        .publish_ahead.as_secs()
    )]
    TooEarly {
        /// The next key.
        kid: String,
        /// How long it has been published.
        published_for: Duration,
        /// How long it must be.
        publish_ahead: Duration,
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
    now: UnixTime,
    force: bool,
) -> Result<Step, RotateError> {
    let current = in_state(keys, KeyState::Current)
        .next()
        .ok_or(RotateError::Missing("current"))?;
    let next = in_state(keys, KeyState::Next)
        .next()
        .ok_or(RotateError::Missing("next"))?;
    let published_for = now.since(next.created_at);
    if !force && published_for < policy.publish_ahead {
        return Err(RotateError::TooEarly {
            kid: next.kid.to_string(),
            published_for,
            publish_ahead: policy.publish_ahead,
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
    now: UnixTime,
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

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use proptest::{collection::vec, prelude::*, test_runner::TestRunner};

    use super::*;

    const M: i64 = 60;
    const H: i64 = 3600;
    const T0: i64 = 1_700_000_000;
    /// `tokens.max_lifetime` and `tokens.leeway` (defaults) that `retention` must outlast.
    const MAX_LIFETIME: i64 = H;
    const LEEWAY: i64 = 30;
    /// The granularity of the timelines.
    const TICK: i64 = 10 * M;
    /// `MAX_STEPS_PER_TICK` of the Rotator.
    const MAX_STEPS: usize = 16;

    fn d(seconds: i64) -> Duration {
        Duration::from_secs(seconds.unsigned_abs())
    }

    /// The simulation keeps its clocks in seconds; the functions under test take times.
    fn ts(seconds: i64) -> UnixTime {
        UnixTime::from_secs(seconds)
    }

    fn secs(d: Duration) -> i64 {
        crate::clock::whole_secs(d)
    }

    fn default_policy() -> Policy {
        Policy {
            algorithm: Algorithm::Es256,
            rotation_period: d(24 * H),
            publish_ahead: d(H),
            retention: d(2 * H),
        }
    }

    fn in_states(keys: &[KeyRecord], state: KeyState) -> Vec<&KeyRecord> {
        keys.iter().filter(|k| k.state == state).collect()
    }

    fn the(keys: &[KeyRecord], state: KeyState) -> &KeyRecord {
        let found = in_states(keys, state);
        assert_eq!(found.len(), 1, "exactly one {state:?} key in {keys:#?}");
        found[0]
    }

    fn find<'a>(keys: &'a [KeyRecord], kid: &KeyId) -> Option<&'a KeyRecord> {
        keys.iter().find(|k| &k.kid == kid)
    }

    /// The store and a Rotator's process, with manual clocks: `wall` (Unix seconds, may jump)
    /// and `mono` (seconds, only moves forward with elapsed time).
    struct Sim<'k> {
        kek: &'k Kek,
        policy: Policy,
        keys: Vec<KeyRecord>,
        wall: i64,
        mono: i64,
        /// Whether removal is gated on the monotonic clock as the Rotator does it; if not,
        /// `retired_long_enough` is always true.
        gate: bool,
        /// As `Rotator::retired_seen`: when (monotonic) this process first saw a key retired.
        seen: HashMap<KeyId, i64>,
        /// When (monotonic) each key was actually retired.
        retired_mono: HashMap<KeyId, i64>,
        /// Keys that became current without the `publish_ahead` guarantee: the first key, and
        /// the documented exceptions (forced rotation, revocation of the current key).
        exempt: HashSet<KeyId>,
        /// Scheduled promotions: (wall, the key promoted).
        promotions: Vec<(i64, KeyId)>,
        /// Removals of retired keys: (key, wall, mono).
        removals: Vec<(KeyId, i64, i64)>,
    }

    impl<'k> Sim<'k> {
        fn new(kek: &'k Kek, policy: Policy, wall: i64, gate: bool) -> Self {
            let current =
                KeyRecord::generate(policy.algorithm, KeyState::Current, kek, ts(wall)).unwrap();
            let next =
                KeyRecord::generate(policy.algorithm, KeyState::Next, kek, ts(wall)).unwrap();
            let exempt = HashSet::from([current.kid.clone()]);
            let sim = Self {
                kek,
                policy,
                keys: vec![current, next],
                wall,
                mono: 0,
                gate,
                seen: HashMap::new(),
                retired_mono: HashMap::new(),
                exempt,
                promotions: Vec::new(),
                removals: Vec::new(),
            };
            sim.check_invariants();
            sim
        }

        fn retention(&self) -> i64 {
            secs(self.policy.retention)
        }

        /// Elapsed time: both clocks move.
        fn advance(&mut self, by: i64) {
            assert!(by >= 0);
            self.wall += by;
            self.mono += by;
        }

        /// A wall-clock jump: no time elapses.
        fn jump(&mut self, by: i64) {
            self.wall += by;
        }

        /// A process restart: the monotonic record is lost.
        fn restart(&mut self) {
            self.seen.clear();
        }

        /// As `Rotator::retired_long_enough`: forget keys no longer retired, note the newly
        /// retired ones at the monotonic now.
        fn observe(&mut self) {
            let keys = &self.keys;
            self.seen.retain(|kid, _| {
                keys.iter()
                    .any(|k| &k.kid == kid && k.state == KeyState::Retired)
            });
            for key in keys.iter().filter(|k| k.state == KeyState::Retired) {
                self.seen.entry(key.kid.clone()).or_insert(self.mono);
            }
        }

        /// As `Rotator::tick`: applies every due step, one at a time, at most 16.
        fn tick(&mut self) -> Vec<Step> {
            let mut applied = Vec::new();
            for _ in 0..MAX_STEPS {
                if self.gate {
                    self.observe();
                }
                let (gate, mono, retention, seen) =
                    (self.gate, self.mono, self.retention(), &self.seen);
                let long_enough = |kid: &KeyId| {
                    !gate || seen.get(kid).is_some_and(|since| mono - since >= retention)
                };
                let Some(step) = due_step_at(&self.keys, &self.policy, ts(self.wall), &long_enough)
                else {
                    break;
                };
                self.check_step(&step);
                let t = transition_for(&step, &self.keys, &self.policy, self.kek, ts(self.wall))
                    .unwrap();
                assert_eq!(t.at, ts(self.wall));
                assert_eq!(t.event, None, "scheduled steps log no revocation");
                if let Step::Promote { next, .. } = &step {
                    self.promotions.push((self.wall, next.clone()));
                }
                self.commit(&t, false);
                self.check_invariants();
                applied.push(step);
            }
            assert!(
                applied
                    .iter()
                    .filter(|s| matches!(s, Step::Promote { .. }))
                    .count()
                    <= 1,
                "at most one promotion per tick, never a cascade: {applied:?}"
            );
            if applied.len() < MAX_STEPS {
                let next = the(&self.keys, KeyState::Next);
                assert_eq!(next.algorithm, self.policy.algorithm);
            }
            applied
        }

        /// What a scheduled step must satisfy when it is chosen.
        fn check_step(&self, step: &Step) {
            let wall = self.wall;
            match step {
                Step::CreateNext => assert!(in_states(&self.keys, KeyState::Next).is_empty()),
                Step::ReplaceNext { old } => {
                    let old = find(&self.keys, old).unwrap();
                    assert_eq!(old.state, KeyState::Next);
                    assert_ne!(old.algorithm, self.policy.algorithm);
                }
                Step::Promote { next, current } => {
                    let next = find(&self.keys, next).unwrap();
                    let current = find(&self.keys, current).unwrap();
                    assert_eq!(next.state, KeyState::Next);
                    assert_eq!(current.state, KeyState::Current);
                    assert_eq!(next.algorithm, self.policy.algorithm);
                    assert!(
                        wall - next.created_at.as_secs() >= secs(self.policy.publish_ahead),
                        "scheduled promotion at {wall} of a key published at {}",
                        next.created_at.as_secs()
                    );
                    assert!(
                        wall - current.activated_at.unwrap().as_secs()
                            >= secs(self.policy.rotation_period),
                        "scheduled promotion at {wall} of a key current since {:?}",
                        current.activated_at
                    );
                }
                Step::Remove { kid } => {
                    let key = find(&self.keys, kid).unwrap();
                    assert_eq!(key.state, KeyState::Retired);
                    let retired_at = key.retired_at.unwrap().as_secs();
                    assert!(
                        wall >= retired_at + self.retention(),
                        "removal at wall {wall} of a key retired at {retired_at}"
                    );
                    if self.gate {
                        let seen = self.seen[kid];
                        assert!(
                            self.mono - seen >= self.retention(),
                            "removal at mono {} of a key first seen retired at {seen}",
                            self.mono
                        );
                        // The property that matters: retention of elapsed time since the
                        // key stopped signing (a restart only delays removal).
                        let retired = self.retired_mono[kid];
                        assert!(
                            self.mono - retired >= self.retention(),
                            "removal at mono {} of a key retired at mono {retired}",
                            self.mono
                        );
                    }
                }
            }
        }

        /// Applies a transition as the store does, with the bookkeeping of the checks.
        /// `emergency`: a promotion in it is a documented exception to `publish_ahead`.
        fn commit(&mut self, t: &KeyTransition, emergency: bool) {
            for kid in &t.delete {
                if find(&self.keys, kid).is_some_and(|k| k.state == KeyState::Retired) {
                    self.removals.push((kid.clone(), self.wall, self.mono));
                }
            }
            assert!(apply(&mut self.keys, t), "transition refused: {t:?}");
            for (kid, state) in &t.set_state {
                match state {
                    KeyState::Retired => {
                        self.retired_mono.insert(kid.clone(), self.mono);
                    }
                    KeyState::Current if emergency => {
                        self.exempt.insert(kid.clone());
                    }
                    _ => {}
                }
            }
        }

        /// An operator's rotation, as `Rotator::rotate`.
        fn rotate(&mut self, force: bool) -> Result<(), RotateError> {
            let step = rotation(&self.keys, &self.policy, ts(self.wall), force)?;
            let Step::Promote { next, current } = &step else {
                panic!("rotation is a promotion: {step:?}");
            };
            assert_eq!(next, &the(&self.keys, KeyState::Next).kid);
            assert_eq!(current, &the(&self.keys, KeyState::Current).kid);
            let t =
                transition_for(&step, &self.keys, &self.policy, self.kek, ts(self.wall)).unwrap();
            self.commit(&t, force);
            self.check_invariants();
            Ok(())
        }

        /// An operator's key revocation, as `Rotator::revoke`.
        fn revoke(&mut self, kid: &str) -> Result<Option<KeyTransition>, RevokeKeyError> {
            let Some(t) = revocation(&self.keys, kid, &self.policy, self.kek, ts(self.wall))?
            else {
                return Ok(None);
            };
            assert_eq!(
                t.event,
                Some(Change::KeyRevoked {
                    key_id: kid.to_owned()
                })
            );
            self.commit(&t, true);
            let key = self.keys.iter().find(|k| k.kid.as_str() == kid).unwrap();
            assert_eq!(key.state, KeyState::Revoked);
            assert!(!key.state.is_published());
            assert_eq!(key.revoked_at, Some(ts(self.wall)));
            self.check_invariants();
            Ok(Some(t))
        }

        fn check_invariants(&self) {
            let keys = &self.keys;
            let current = the(keys, KeyState::Current);
            the(keys, KeyState::Next);
            assert!(keys.iter().any(|k| k.state.is_published()));
            let kids: HashSet<&KeyId> = keys.iter().map(|k| &k.kid).collect();
            assert_eq!(kids.len(), keys.len(), "key ids are unique");
            if !self.exempt.contains(&current.kid) {
                let published_for =
                    current.activated_at.unwrap().as_secs() - current.created_at.as_secs();
                assert!(
                    published_for >= secs(self.policy.publish_ahead),
                    "current key {} was published for only {published_for}s before signing",
                    current.kid
                );
            }
            for key in keys {
                match key.state {
                    KeyState::Next => assert_eq!(key.activated_at, None),
                    KeyState::Current | KeyState::Retired => assert!(key.activated_at.is_some()),
                    KeyState::Revoked => {}
                }
                if key.state == KeyState::Retired {
                    assert!(key.retired_at.is_some());
                }
                if key.state == KeyState::Revoked {
                    assert!(key.revoked_at.is_some());
                }
            }
            // `next_step_at` (the metric) agrees with `due_step_at` when the monotonic rule
            // does not hold anything back.
            let due = due_step_at(keys, &self.policy, ts(self.wall), &|_| true);
            let at = next_step_at(keys, &self.policy);
            assert_eq!(due.is_some(), at.is_some_and(|at| at <= ts(self.wall)));
            if let Some(at) = at {
                assert!(due_step_at(keys, &self.policy, at, &|_| true).is_some());
                if at > UnixTime::MIN {
                    assert_eq!(due_step_at(keys, &self.policy, at - d(1), &|_| true), None);
                }
            }
        }
    }

    #[test]
    fn default_policy_timeline_over_four_days() {
        let kek = Kek::generate().unwrap();
        let policy = default_policy();
        let retention = secs(policy.retention);
        assert!(retention >= MAX_LIFETIME + LEEWAY);
        let mut sim = Sim::new(&kek, policy, T0, false);
        // Every key ever retired, with when; tokens signed just before a retirement.
        let mut retired: HashMap<KeyId, i64> = HashMap::new();
        let mut tokens: Vec<(KeyId, i64)> = Vec::new();
        let end = T0 + 4 * 24 * H;
        while sim.wall <= end {
            let signer = the(&sim.keys, KeyState::Current).kid.clone();
            let steps = sim.tick();
            for step in &steps {
                if let Step::Promote { current, .. } = step {
                    assert_eq!(current, &signer);
                    let retired_at = find(&sim.keys, current)
                        .unwrap()
                        .retired_at
                        .unwrap()
                        .as_secs();
                    assert_eq!(retired_at, sim.wall);
                    retired.insert(current.clone(), retired_at);
                    // Signed at the last instant before retirement, for the longest lifetime.
                    tokens.push((current.clone(), retired_at + MAX_LIFETIME));
                }
            }
            for (kid, &retired_at) in &retired {
                let key = find(&sim.keys, kid);
                if sim.wall < retired_at + retention {
                    assert_eq!(
                        key.map(|k| k.state),
                        Some(KeyState::Retired),
                        "at {} a key retired at {retired_at} is still published",
                        sim.wall
                    );
                } else {
                    assert!(
                        key.is_none(),
                        "at {} a key retired at {retired_at} is removed",
                        sim.wall
                    );
                }
            }
            for (kid, exp) in &tokens {
                if sim.wall < exp + LEEWAY {
                    assert!(
                        find(&sim.keys, kid).is_some_and(|k| k.state.is_published()),
                        "at {} a token expiring at {exp} still verifies",
                        sim.wall
                    );
                }
            }
            assert!((2..=3).contains(&sim.keys.len()), "{:?}", sim.keys);
            sim.advance(TICK);
        }
        // Once per rotation period, from the first key's activation.
        let promoted_at: Vec<i64> = sim.promotions.iter().map(|(at, _)| *at).collect();
        assert_eq!(promoted_at.len(), 4, "{promoted_at:?}");
        assert!((T0 + 24 * H..T0 + 24 * H + TICK).contains(&promoted_at[0]));
        for pair in promoted_at.windows(2) {
            let period = pair[1] - pair[0];
            assert!(
                (24 * H - TICK..=24 * H + TICK).contains(&period),
                "{period}"
            );
        }
        // Every key retired before the last day was removed, within a tick of retention,
        // and never before its tokens expired.
        assert_eq!(sim.removals.len(), 3);
        for (kid, removed_at, _) in &sim.removals {
            let retired_at = retired[kid];
            assert!((retired_at + retention..retired_at + retention + TICK).contains(removed_at));
            let exp = tokens.iter().find(|(k, _)| k == kid).unwrap().1;
            assert!(*removed_at >= exp + LEEWAY);
        }
    }

    #[test]
    fn wall_clock_jumps_never_remove_early_nor_make_two_currents() {
        let kek = Kek::generate().unwrap();
        let mut sim = Sim::new(&kek, default_policy(), T0, true);
        for i in 0..5 * 24 * 6 {
            sim.advance(TICK);
            if i % 7 == 3 {
                sim.jump(H);
            }
            if i % 11 == 5 {
                sim.jump(-H);
            }
            sim.tick();
            // No retired key is gone before retention has elapsed since its retirement.
            for (kid, &retired) in &sim.retired_mono {
                if sim.mono - retired < sim.retention() {
                    assert!(find(&sim.keys, kid).is_some());
                }
            }
        }
        assert!(sim.promotions.len() >= 4, "{:?}", sim.promotions);
        assert!(
            sim.removals.len() + 1 >= sim.promotions.len(),
            "removals {:?}, promotions {:?}",
            sim.removals,
            sim.promotions
        );
    }

    #[test]
    fn forward_jump_after_retirement_waits_for_monotonic_retention() {
        let kek = Kek::generate().unwrap();
        let mut sim = Sim::new(&kek, default_policy(), T0, true);
        sim.advance(24 * H);
        let old = the(&sim.keys, KeyState::Current).kid.clone();
        assert!(matches!(sim.tick()[..], [Step::Promote { .. }]));
        sim.advance(M);
        sim.jump(3 * H);
        // The wall clock says retention has passed; the monotonic clock does not.
        assert_eq!(
            due_step_at(&sim.keys, &sim.policy, ts(sim.wall), &|_| true),
            Some(Step::Remove { kid: old.clone() })
        );
        assert_eq!(sim.tick(), vec![]);
        sim.advance(2 * H - 2 * M);
        assert_eq!(sim.tick(), vec![]);
        assert!(find(&sim.keys, &old).is_some());
        sim.advance(M);
        assert_eq!(sim.tick(), vec![Step::Remove { kid: old.clone() }]);

        // A restart forgets when the key was seen retired: removal is delayed, never early.
        sim.advance(24 * H);
        let old = the(&sim.keys, KeyState::Current).kid.clone();
        assert!(matches!(sim.tick()[..], [Step::Promote { .. }]));
        sim.advance(H);
        sim.restart();
        assert_eq!(sim.tick(), vec![]);
        sim.advance(H);
        assert_eq!(
            sim.tick(),
            vec![],
            "retention passed, but not since the restart"
        );
        sim.advance(H);
        assert_eq!(sim.tick(), vec![Step::Remove { kid: old }]);

        // A backward jump delays removal on the wall clock.
        sim.advance(24 * H);
        let old = the(&sim.keys, KeyState::Current).kid.clone();
        assert!(matches!(sim.tick()[..], [Step::Promote { .. }]));
        sim.jump(-H);
        sim.advance(2 * H);
        assert_eq!(sim.tick(), vec![]);
        sim.advance(H);
        assert_eq!(sim.tick(), vec![Step::Remove { kid: old }]);
    }

    #[test]
    fn algorithm_change_replaces_next_and_promotes_it_on_schedule() {
        let kek = Kek::generate().unwrap();
        for switch_at in [5 * H, 23 * H + 30 * M] {
            let mut sim = Sim::new(&kek, default_policy(), T0, true);
            let es256 = the(&sim.keys, KeyState::Current).kid.clone();
            let old_next = the(&sim.keys, KeyState::Next).kid.clone();
            sim.advance(switch_at);
            assert_eq!(sim.tick(), vec![]);

            // A restart with the new configuration.
            sim.policy.algorithm = Algorithm::EdDsa;
            sim.restart();
            assert_eq!(
                sim.tick(),
                vec![Step::ReplaceNext {
                    old: old_next.clone()
                }]
            );
            assert!(find(&sim.keys, &old_next).is_none());
            let eddsa = the(&sim.keys, KeyState::Next).clone();
            assert_eq!(eddsa.algorithm, Algorithm::EdDsa);
            assert_eq!(eddsa.created_at.as_secs(), T0 + switch_at);
            assert_eq!(the(&sim.keys, KeyState::Current).kid, es256);

            // Promoted once it has been published for publish_ahead and the current key has
            // signed for rotation_period.
            let promote_at = (T0 + 24 * H).max(eddsa.created_at.as_secs() + H);
            while sim.wall + M < promote_at {
                sim.advance(M);
                assert_eq!(sim.tick(), vec![], "at {}", sim.wall - T0);
            }
            sim.advance(promote_at - sim.wall);
            assert_eq!(
                sim.tick(),
                vec![Step::Promote {
                    next: eddsa.kid.clone(),
                    current: es256.clone()
                }]
            );
            let current = the(&sim.keys, KeyState::Current);
            assert_eq!(current.kid, eddsa.kid);
            assert_eq!(current.algorithm, Algorithm::EdDsa);
            assert_eq!(the(&sim.keys, KeyState::Next).algorithm, Algorithm::EdDsa);

            // The ES256 key stays published, retired, until retention.
            sim.advance(2 * H - 1);
            assert_eq!(sim.tick(), vec![]);
            let old = find(&sim.keys, &es256).unwrap();
            assert_eq!(
                (old.state, old.algorithm),
                (KeyState::Retired, Algorithm::Es256)
            );
            sim.advance(1);
            assert_eq!(sim.tick(), vec![Step::Remove { kid: es256 }]);
        }
    }

    #[test]
    fn operator_rotation_respects_publish_ahead_unless_forced() {
        let kek = Kek::generate().unwrap();
        let policy = default_policy();
        let mut sim = Sim::new(&kek, policy, T0, true);
        let next = the(&sim.keys, KeyState::Next).kid.clone();
        let current = the(&sim.keys, KeyState::Current).kid.clone();
        sim.advance(H - 1);
        assert_eq!(
            rotation(&sim.keys, &policy, ts(sim.wall), false),
            Err(RotateError::TooEarly {
                kid: next.to_string(),
                published_for: d(H - 1),
                publish_ahead: d(H),
            })
        );
        let forced = rotation(&sim.keys, &policy, ts(sim.wall), true).unwrap();
        assert_eq!(
            forced,
            Step::Promote {
                next: next.clone(),
                current: current.clone()
            }
        );
        sim.advance(1);
        assert_eq!(
            rotation(&sim.keys, &policy, ts(sim.wall), false),
            Ok(forced)
        );
        sim.rotate(false).unwrap();
        assert_eq!(the(&sim.keys, KeyState::Current).kid, next);
        assert_eq!(find(&sim.keys, &current).unwrap().state, KeyState::Retired);

        // The new next is fresh: refused, unless forced (the documented exception).
        assert!(matches!(
            sim.rotate(false),
            Err(RotateError::TooEarly {
                published_for: Duration::ZERO,
                ..
            })
        ));
        sim.rotate(true).unwrap();
        assert_eq!(in_states(&sim.keys, KeyState::Retired).len(), 2);

        // Nothing to rotate.
        let only_next: Vec<KeyRecord> = in_states(&sim.keys, KeyState::Next)
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(
            rotation(&only_next, &policy, ts(sim.wall), true),
            Err(RotateError::Missing("current"))
        );
        let only_current: Vec<KeyRecord> = in_states(&sim.keys, KeyState::Current)
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(
            rotation(&only_current, &policy, ts(sim.wall), true),
            Err(RotateError::Missing("next"))
        );
    }

    #[test]
    fn revoking_current_promotes_next_and_creates_a_new_next() {
        let kek = Kek::generate().unwrap();
        let mut sim = Sim::new(&kek, default_policy(), T0, true);
        sim.advance(M);
        let current = the(&sim.keys, KeyState::Current).kid.clone();
        let next = the(&sim.keys, KeyState::Next).kid.clone();
        let t = sim.revoke(current.as_str()).unwrap().unwrap();
        assert_eq!(t.expect_current, Some(current.clone()));
        let now_current = the(&sim.keys, KeyState::Current);
        assert_eq!(now_current.kid, next);
        assert_eq!(now_current.activated_at, Some(ts(sim.wall)));
        let new_next = the(&sim.keys, KeyState::Next);
        assert_ne!(new_next.kid, next);
        assert_eq!(new_next.created_at.as_secs(), sim.wall);
        assert!(
            !find(&sim.keys, &current).unwrap().state.is_published(),
            "the revoked key leaves the published set at once"
        );
        // Revoked is not retired: never removed by schedule, never published again.
        sim.advance(30 * H);
        sim.tick();
        assert_eq!(find(&sim.keys, &current).unwrap().state, KeyState::Revoked);
    }

    #[test]
    fn revoking_next_creates_a_new_next() {
        let kek = Kek::generate().unwrap();
        let mut sim = Sim::new(&kek, default_policy(), T0, true);
        sim.advance(M);
        let current = the(&sim.keys, KeyState::Current).kid.clone();
        let next = the(&sim.keys, KeyState::Next).kid.clone();
        sim.revoke(next.as_str()).unwrap().unwrap();
        assert_eq!(the(&sim.keys, KeyState::Current).kid, current);
        let new_next = the(&sim.keys, KeyState::Next);
        assert_ne!(new_next.kid, next);
        assert_eq!(new_next.created_at.as_secs(), sim.wall);
        assert_eq!(find(&sim.keys, &next).unwrap().state, KeyState::Revoked);
    }

    #[test]
    fn revoking_retired_only_revokes_and_revoking_twice_is_none() {
        let kek = Kek::generate().unwrap();
        let mut sim = Sim::new(&kek, default_policy(), T0, true);
        sim.advance(24 * H);
        let retired = the(&sim.keys, KeyState::Current).kid.clone();
        sim.tick();
        let before = sim.keys.clone();
        let t = sim.revoke(retired.as_str()).unwrap().unwrap();
        assert_eq!(t.set_state, vec![(retired.clone(), KeyState::Revoked)]);
        assert!(t.insert.is_empty() && t.delete.is_empty());
        for key in &before {
            let after = find(&sim.keys, &key.kid).unwrap();
            if key.kid != retired {
                assert_eq!(after, key);
            }
        }
        assert_eq!(sim.keys.len(), before.len());

        // Already revoked: nothing to do.
        assert!(sim.revoke(retired.as_str()).unwrap().is_none());
        assert!(matches!(
            revocation(&sim.keys, retired.as_str(), &sim.policy, &kek, ts(sim.wall)),
            Ok(None)
        ));
        // Unknown.
        assert!(matches!(
            revocation(&sim.keys, "no-such-kid", &sim.policy, &kek, ts(sim.wall)),
            Err(RevokeKeyError::Refused(RotateError::UnknownKey(kid))) if kid == "no-such-kid"
        ));
    }

    #[test]
    fn apply_refuses_a_transition_computed_against_another_current() {
        let kek = Kek::generate().unwrap();
        let policy = default_policy();
        let mut keys = Sim::new(&kek, policy, T0, true).keys;
        let now = T0 + 24 * H;
        let step = due_step_at(&keys, &policy, ts(now), &|_| true).unwrap();
        let scheduled = transition_for(&step, &keys, &policy, &kek, ts(now)).unwrap();
        let current = the(&keys, KeyState::Current).kid.clone();
        let revoke = revocation(&keys, current.as_str(), &policy, &kek, ts(now))
            .unwrap()
            .unwrap();
        // Another writer moved first: the scheduled promotion was computed against the old
        // current key and must not apply on top of it.
        assert!(apply(&mut keys, &revoke));
        let after = keys.clone();
        assert!(!apply(&mut keys, &scheduled));
        assert_eq!(keys, after, "a refused transition changes nothing");
        assert!(!apply(&mut keys, &revoke));
        assert_eq!(keys, after);
        the(&keys, KeyState::Current);
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Time passes: both clocks move.
        Advance(i64),
        /// The wall clock jumps; no time passes.
        Jump(i64),
        /// The scheduled task runs.
        Tick,
        /// An operator's rotation.
        Rotate { force: bool },
        /// An operator revokes the key at this index (modulo the number of keys).
        Revoke(usize),
        /// The process restarts.
        Restart,
        /// The process restarts with the other algorithm configured.
        SwitchAlgorithm,
    }

    fn policies() -> impl Strategy<Value = Policy> {
        (2 * H..=48 * H)
            .prop_flat_map(|period| {
                (
                    Just(period),
                    10 * M..=period - M,
                    H..=10 * H,
                    prop_oneof![Just(Algorithm::Es256), Just(Algorithm::EdDsa)],
                )
            })
            .prop_map(|(period, ahead, retention, algorithm)| Policy {
                algorithm,
                rotation_period: d(period),
                publish_ahead: d(ahead),
                retention: d(retention),
            })
    }

    fn ops() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (M..=3 * H).prop_map(Op::Advance),
            2 => (M..=30 * H).prop_map(Op::Advance),
            2 => (-2 * H..=2 * H).prop_map(Op::Jump),
            5 => Just(Op::Tick),
            1 => any::<bool>().prop_map(|force| Op::Rotate { force }),
            1 => any::<usize>().prop_map(Op::Revoke),
            1 => Just(Op::Restart),
            1 => Just(Op::SwitchAlgorithm),
        ]
    }

    #[test]
    fn lifecycle_invariants_hold_under_random_operations() {
        let kek = Kek::generate().unwrap();
        let mut runner = TestRunner::new(ProptestConfig::with_cases(64));
        runner
            .run(&(policies(), vec(ops(), 1..60)), |(policy, ops)| {
                let mut sim = Sim::new(&kek, policy, T0, true);
                for op in ops {
                    match op {
                        Op::Advance(by) => sim.advance(by),
                        Op::Jump(by) => sim.jump(by),
                        Op::Tick => {
                            sim.tick();
                        }
                        Op::Rotate { force } => {
                            let before = sim.keys.clone();
                            match sim.rotate(force) {
                                Ok(()) => {}
                                Err(RotateError::TooEarly { published_for, .. }) => {
                                    prop_assert!(!force);
                                    prop_assert!(published_for < policy.publish_ahead);
                                    prop_assert_eq!(&sim.keys, &before);
                                }
                                Err(e) => prop_assert!(false, "rotation failed: {e}"),
                            }
                        }
                        Op::Revoke(index) => {
                            let kid = sim.keys[index % sim.keys.len()].kid.clone();
                            let was = find(&sim.keys, &kid).unwrap().state;
                            let revoked = sim.revoke(kid.as_str());
                            prop_assert!(revoked.is_ok(), "{revoked:?}");
                            prop_assert_eq!(revoked.unwrap().is_none(), was == KeyState::Revoked);
                        }
                        Op::Restart => sim.restart(),
                        Op::SwitchAlgorithm => {
                            sim.policy.algorithm = match sim.policy.algorithm {
                                Algorithm::Es256 => Algorithm::EdDsa,
                                _ => Algorithm::Es256,
                            };
                            sim.restart();
                        }
                    }
                    sim.check_invariants();
                }
                Ok(())
            })
            .unwrap();
    }
}
