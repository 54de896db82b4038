//! The signing-key lifecycle as pure functions of the stored keys, the policy and `now`:
//! which step is due (`due_step_at`), what an emergency rotation or a key revocation changes,
//! and the transition each step writes — in the style of SPIRE's current/next slots.
//!
//! Each configured algorithm is a *lane* with its own current and next key, rotated and
//! retained on the same policy; `keys.algorithm` is the default lane.
//!
//! ```text
//!  created ──▶ next ──(published ≥ publish_ahead and current ≥ rotation_period)──▶ current
//!    │ (algorithm removed: dropped, it never signed)                                │ promoted away, or
//!    ▼                                                                              ▼ algorithm removed
//!  dropped                 removed ◀──(retired ≥ retention, on both clocks)── retired
//!  any state ──(RevokeKey)──▶ revoked (leaves the published set at once)
//! ```
//!
//! A lane with no current key (an algorithm just added) promotes its next key once it has
//! been published for `publish_ahead`, so no verifier meets a `kid` it could not have
//! fetched. A removed algorithm's current key stops signing once the default lane has a
//! current key; until then it signs for the clients that had it.

use std::time::Duration;

use crate::{
    clock::UnixTime,
    crypto::{Algorithm, AlgorithmSet, RsaBits},
    keys::{KeyError, KeyId, KeyMaker, KeyRecord, KeyState},
    revocation::Change,
};

/// The rotation policy (`[keys]`, with the token lifetimes it must outlast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The default algorithm: of clients that name none (`keys.algorithm`).
    pub algorithm: Algorithm,
    /// The other algorithms that sign (`keys.also`), each a lane of its own.
    pub also: AlgorithmSet,
    /// The size of new RSA keys.
    pub rsa_bits: RsaBits,
    /// How long a key signs before the next one takes over.
    pub rotation_period: Duration,
    /// How long a key is published before it may sign (≥ 2 × `jwks_max_age`).
    pub publish_ahead: Duration,
    /// How long a retired key stays published (≥ max token lifetime + leeway).
    pub retention: Duration,
}

impl Policy {
    /// The configured algorithms: the default first, then the others in their fixed order.
    pub fn lanes(&self) -> impl Iterator<Item = Algorithm> + '_ {
        std::iter::once(self.algorithm).chain(self.also.iter().filter(|a| *a != self.algorithm))
    }

    /// Whether `algorithm` is configured (has a lane).
    pub fn signs(&self, algorithm: Algorithm) -> bool {
        algorithm == self.algorithm || self.also.contains(algorithm)
    }
}

/// One step of the lifecycle; each is applied as one store transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A configured algorithm has no `next` key: create one.
    CreateNext {
        /// Its algorithm.
        algorithm: Algorithm,
    },
    /// `next` becomes `current`, the lane's `current` (if any) becomes `retired`, and a new
    /// `next` is created.
    Promote {
        /// The key that starts signing.
        next: KeyId,
        /// The key that stops (`None`: the lane had none, its algorithm was just added).
        current: Option<KeyId>,
    },
    /// The `next` key of an algorithm no longer configured leaves the set (it never signed).
    DropNext {
        /// The key.
        kid: KeyId,
    },
    /// The `current` key of an algorithm no longer configured stops signing (retired).
    Retire {
        /// The key.
        kid: KeyId,
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

/// The key in `state` of `algorithm`'s lane.
fn in_lane(keys: &[KeyRecord], algorithm: Algorithm, state: KeyState) -> Option<&KeyRecord> {
    in_state(keys, state).find(|k| k.algorithm == algorithm)
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
    policy
        .lanes()
        .find_map(|algorithm| lane_step(keys, algorithm, policy, now))
        .or_else(|| removed_lane_step(keys, policy))
        .or_else(|| {
            in_state(keys, KeyState::Retired)
                .find(|k| removal_due(k, policy, now) && retired_long_enough(&k.kid))
                .map(|k| Step::Remove { kid: k.kid.clone() })
        })
}

/// The step due in a configured algorithm's lane.
fn lane_step(
    keys: &[KeyRecord],
    algorithm: Algorithm,
    policy: &Policy,
    now: UnixTime,
) -> Option<Step> {
    let current = in_lane(keys, algorithm, KeyState::Current);
    let Some(next) = in_lane(keys, algorithm, KeyState::Next) else {
        return Some(Step::CreateNext { algorithm });
    };
    (promotion_at(current, next, policy) <= now).then(|| Step::Promote {
        next: next.kid.clone(),
        current: current.map(|c| c.kid.clone()),
    })
}

/// The step due for keys of algorithms no longer configured: their next keys leave at once,
/// their current keys stop signing once the default lane has a current key.
fn removed_lane_step(keys: &[KeyRecord], policy: &Policy) -> Option<Step> {
    let removed = |state| in_state(keys, state).find(|k| !policy.signs(k.algorithm));
    if let Some(next) = removed(KeyState::Next) {
        return Some(Step::DropNext {
            kid: next.kid.clone(),
        });
    }
    let default_signs = in_lane(keys, policy.algorithm, KeyState::Current).is_some();
    removed(KeyState::Current)
        .filter(|_| default_signs)
        .map(|k| Step::Retire { kid: k.kid.clone() })
}

/// When a lane's next key may start signing: published for `publish_ahead`, and the lane's
/// current key (if any) signing for `rotation_period`.
fn promotion_at(current: Option<&KeyRecord>, next: &KeyRecord, policy: &Policy) -> UnixTime {
    let ahead = next.created_at.saturating_add(policy.publish_ahead);
    match current {
        Some(current) => current
            .activated_at
            .unwrap_or(current.created_at)
            .saturating_add(policy.rotation_period)
            .max(ahead),
        None => ahead,
    }
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
    let lanes = policy.lanes().map(|algorithm| {
        let current = in_lane(keys, algorithm, KeyState::Current);
        match in_lane(keys, algorithm, KeyState::Next) {
            // A next key to create: due now.
            None => Some(UnixTime::MIN),
            Some(next) => Some(promotion_at(current, next, policy)),
        }
    });
    let removed_lane = removed_lane_step(keys, policy).map(|_| UnixTime::MIN);
    let removal = in_state(keys, KeyState::Retired)
        .map(|k| {
            k.retired_at
                .unwrap_or(k.created_at)
                .saturating_add(policy.retention)
        })
        .min();
    lanes.chain([removed_lane, removal]).flatten().min()
}

/// How long the default algorithm's current key has signed (seconds), for metrics.
pub fn current_key_age(keys: &[KeyRecord], policy: &Policy, now: UnixTime) -> Option<Duration> {
    in_lane(keys, policy.algorithm, KeyState::Current)
        .map(|k| now.since(k.activated_at.unwrap_or(k.created_at)))
}

/// What one step writes, in one transaction. `expect_current` guards against a concurrent
/// writer: the transaction applies only if the current key of `lane` is still the one
/// expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTransition {
    /// The algorithm whose lane the step changes.
    pub lane: Algorithm,
    /// The lane's current key the step was computed against (`None`: there was none).
    pub expect_current: Option<KeyId>,
    /// The state each key the step changes or removes had when it was computed: the step
    /// applies only if every one is still in it (a step may touch another lane's keys, and a
    /// revoked key must never come back).
    pub expect_states: Vec<(KeyId, KeyState)>,
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

impl KeyTransition {
    /// An empty transition of `lane`, computed against its current key in `keys`.
    fn of_lane(keys: &[KeyRecord], lane: Algorithm, at: UnixTime) -> Self {
        Self {
            lane,
            expect_current: current_kid(keys, lane),
            expect_states: Vec::new(),
            set_state: Vec::new(),
            insert: Vec::new(),
            delete: Vec::new(),
            event: None,
            at,
        }
    }
}

/// The id of `lane`'s current key.
pub fn current_kid(keys: &[KeyRecord], lane: Algorithm) -> Option<KeyId> {
    in_lane(keys, lane, KeyState::Current).map(|k| k.kid.clone())
}

/// The algorithm of the key a step names.
fn lane_of(step: &Step, keys: &[KeyRecord]) -> Option<Algorithm> {
    let kid = match step {
        Step::CreateNext { algorithm } => return Some(*algorithm),
        Step::Promote { next: kid, .. }
        | Step::DropNext { kid }
        | Step::Retire { kid }
        | Step::Remove { kid } => kid,
    };
    keys.iter().find(|k| &k.kid == kid).map(|k| k.algorithm)
}

/// A new next key of `algorithm`.
fn new_next(
    algorithm: Algorithm,
    policy: &Policy,
    maker: &dyn KeyMaker,
    now: UnixTime,
) -> Result<KeyRecord, KeyError> {
    maker.make(algorithm, policy.rsa_bits, KeyState::Next, now)
}

/// The transition for a scheduled (or forced) step.
pub fn transition_for(
    step: &Step,
    keys: &[KeyRecord],
    policy: &Policy,
    maker: &dyn KeyMaker,
    now: UnixTime,
) -> Result<KeyTransition, KeyError> {
    let lane = lane_of(step, keys).unwrap_or(policy.algorithm);
    let mut t = KeyTransition::of_lane(keys, lane, now);
    match step {
        Step::CreateNext { algorithm } => t.insert.push(new_next(*algorithm, policy, maker, now)?),
        Step::Promote { next, current } => {
            match current {
                Some(current) => t.set_state.push((current.clone(), KeyState::Retired)),
                // The new default algorithm starts signing: the removed ones stop with it, in
                // the same transaction.
                None if lane == policy.algorithm => t.set_state.extend(
                    in_state(keys, KeyState::Current)
                        .filter(|k| !policy.signs(k.algorithm))
                        .map(|k| (k.kid.clone(), KeyState::Retired)),
                ),
                None => {}
            }
            t.set_state.push((next.clone(), KeyState::Current));
            t.insert.push(new_next(lane, policy, maker, now)?);
        }
        Step::Retire { kid } => t.set_state.push((kid.clone(), KeyState::Retired)),
        Step::DropNext { kid } | Step::Remove { kid } => t.delete.push(kid.clone()),
    }
    t.expect_states = states_before(&t, keys);
    Ok(t)
}

/// The state, in `keys`, of every key `t` changes or removes.
fn states_before(t: &KeyTransition, keys: &[KeyRecord]) -> Vec<(KeyId, KeyState)> {
    let touched = t.set_state.iter().map(|(kid, _)| kid).chain(&t.delete);
    touched
        .filter_map(|kid| keys.iter().find(|k| &k.kid == kid))
        .map(|k| (k.kid.clone(), k.state))
        .collect()
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

/// An operator's rotation of the default algorithm's lane: the scheduled promotion now if
/// `next` is old enough, else a refusal — or, with `force`, the promotion anyway (the
/// emergency exception: verifiers that cached the JWKS before `next` appeared will not know
/// the new signing key until their copy expires). Just after the default algorithm changed,
/// its lane has no current key yet: the promotion then retires the old algorithm's.
pub fn rotation(
    keys: &[KeyRecord],
    policy: &Policy,
    now: UnixTime,
    force: bool,
) -> Result<Step, RotateError> {
    let current = in_lane(keys, policy.algorithm, KeyState::Current);
    if current.is_none() && in_state(keys, KeyState::Current).next().is_none() {
        return Err(RotateError::Missing("current"));
    }
    let next =
        in_lane(keys, policy.algorithm, KeyState::Next).ok_or(RotateError::Missing("next"))?;
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
        current: current.map(|c| c.kid.clone()),
    })
}

/// Revoking a key: it leaves the set at once and its tokens are inactive. Revoking a current
/// key promotes its lane's `next` at once (the emergency exception); revoking a `next` key
/// creates a new one. A lane whose algorithm is no longer configured gets no new key. `None`
/// when the key is already revoked.
pub fn revocation(
    keys: &[KeyRecord],
    kid: &str,
    policy: &Policy,
    maker: &dyn KeyMaker,
    now: UnixTime,
) -> Result<Option<KeyTransition>, RevokeKeyError> {
    let key = keys
        .iter()
        .find(|k| k.kid.as_str() == kid)
        .ok_or_else(|| RotateError::UnknownKey(kid.to_owned()))?;
    let lane = key.algorithm;
    let configured = policy.signs(lane);
    let mut t = KeyTransition::of_lane(keys, lane, now);
    t.set_state.push((key.kid.clone(), KeyState::Revoked));
    t.event = Some(Change::KeyRevoked {
        key_id: key.kid.to_string(),
    });
    match key.state {
        KeyState::Revoked => return Ok(None),
        KeyState::Retired => {}
        KeyState::Next if configured => t.insert.push(new_next(lane, policy, maker, now)?),
        KeyState::Next => {}
        KeyState::Current if configured => {
            let next = in_lane(keys, lane, KeyState::Next).ok_or(RotateError::Missing("next"))?;
            t.set_state.push((next.kid.clone(), KeyState::Current));
            t.insert.push(new_next(lane, policy, maker, now)?);
        }
        KeyState::Current => {
            if let Some(next) = default_next_if_none_signs(keys, &key.kid, policy)? {
                t.set_state.push((next, KeyState::Current));
                t.insert
                    .push(new_next(policy.algorithm, policy, maker, now)?);
            }
        }
    }
    t.expect_states = states_before(&t, keys);
    Ok(Some(t))
}

/// Revoking the current key of a removed algorithm while the default algorithm has no
/// current key yet would leave nothing signing: the default's next key is then promoted at
/// once (the emergency exception, as for revoking any current key). Its id, if so.
fn default_next_if_none_signs(
    keys: &[KeyRecord],
    revoked: &KeyId,
    policy: &Policy,
) -> Result<Option<KeyId>, RotateError> {
    if in_state(keys, KeyState::Current).any(|k| &k.kid != revoked) {
        return Ok(None);
    }
    let next =
        in_lane(keys, policy.algorithm, KeyState::Next).ok_or(RotateError::Missing("next"))?;
    Ok(Some(next.kid.clone()))
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
    if current_kid(keys, t.lane) != t.expect_current {
        return false;
    }
    let unchanged = t
        .expect_states
        .iter()
        .all(|(kid, state)| keys.iter().any(|k| &k.kid == kid && k.state == *state));
    if !unchanged {
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
    use crate::crypto::Kek;

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
            also: AlgorithmSet::EMPTY,
            rsa_bits: RsaBits::default(),
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
            for lane in self.policy.lanes() {
                let promotions = applied
                    .iter()
                    .filter(|s| matches!(s, Step::Promote { next, .. } if self.lane_of(next) == Some(lane)))
                    .count();
                assert!(
                    promotions <= 1,
                    "at most one promotion per lane and tick, never a cascade: {applied:?}"
                );
            }
            if applied.len() < MAX_STEPS {
                // Settled: every configured algorithm has a next key, no other does.
                for key in in_states(&self.keys, KeyState::Next) {
                    assert!(self.policy.signs(key.algorithm), "{key:?}");
                }
                for lane in self.policy.lanes() {
                    assert!(
                        in_lane(&self.keys, lane, KeyState::Next).is_some(),
                        "{lane}"
                    );
                }
            }
            applied
        }

        /// The algorithm of a key in the set.
        fn lane_of(&self, kid: &KeyId) -> Option<Algorithm> {
            find(&self.keys, kid).map(|k| k.algorithm)
        }

        /// What a scheduled step must satisfy when it is chosen.
        fn check_step(&self, step: &Step) {
            let wall = self.wall;
            match step {
                Step::CreateNext { algorithm } => {
                    assert!(self.policy.signs(*algorithm));
                    assert!(in_lane(&self.keys, *algorithm, KeyState::Next).is_none());
                }
                Step::DropNext { kid } => {
                    let key = find(&self.keys, kid).unwrap();
                    assert_eq!(key.state, KeyState::Next);
                    assert!(!self.policy.signs(key.algorithm));
                }
                Step::Retire { kid } => {
                    let key = find(&self.keys, kid).unwrap();
                    assert_eq!(key.state, KeyState::Current);
                    assert!(!self.policy.signs(key.algorithm));
                    // Something still signs for the default algorithm's clients.
                    assert!(
                        in_lane(&self.keys, self.policy.algorithm, KeyState::Current).is_some()
                    );
                }
                Step::Promote { next, current } => {
                    let next = find(&self.keys, next).unwrap();
                    assert_eq!(next.state, KeyState::Next);
                    assert!(self.policy.signs(next.algorithm));
                    assert!(
                        wall - next.created_at.as_secs() >= secs(self.policy.publish_ahead),
                        "scheduled promotion at {wall} of a key published at {}",
                        next.created_at.as_secs()
                    );
                    let lane_current = in_lane(&self.keys, next.algorithm, KeyState::Current);
                    assert_eq!(current.as_ref(), lane_current.map(|c| &c.kid));
                    if let Some(current) = lane_current {
                        assert!(
                            wall - current.activated_at.unwrap().as_secs()
                                >= secs(self.policy.rotation_period),
                            "scheduled promotion at {wall} of a key current since {:?}",
                            current.activated_at
                        );
                    }
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
            let lane = self.policy.algorithm;
            assert_eq!(
                Some(next),
                in_lane(&self.keys, lane, KeyState::Next).map(|k| &k.kid)
            );
            assert_eq!(current, &current_kid(&self.keys, lane));
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
            // At most one current and one next key per algorithm, and something signs.
            for alg in Algorithm::ALL {
                for state in [KeyState::Current, KeyState::Next] {
                    let n = in_states(keys, state)
                        .iter()
                        .filter(|k| k.algorithm == alg)
                        .count();
                    assert!(n <= 1, "{n} {state:?} keys of {alg} in {keys:#?}");
                }
            }
            assert!(
                !in_states(keys, KeyState::Current).is_empty(),
                "no key signs"
            );
            let kids: HashSet<&KeyId> = keys.iter().map(|k| &k.kid).collect();
            assert_eq!(kids.len(), keys.len(), "key ids are unique");
            for current in in_states(keys, KeyState::Current) {
                if self.exempt.contains(&current.kid) {
                    continue;
                }
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
                if let Step::Promote {
                    current: Some(current),
                    ..
                } = step
                {
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
    fn a_default_algorithm_change_publishes_the_new_key_ahead_then_retires_the_old_lane() {
        let kek = Kek::generate().unwrap();
        for switch_at in [5 * H, 23 * H + 30 * M] {
            let mut sim = Sim::new(&kek, default_policy(), T0, true);
            let es256 = the(&sim.keys, KeyState::Current).kid.clone();
            let old_next = the(&sim.keys, KeyState::Next).kid.clone();
            sim.advance(switch_at);
            assert_eq!(sim.tick(), vec![]);

            // A restart with the new configuration: the EdDSA lane starts with a next key,
            // the ES256 lane's next key (never signed) leaves; ES256 still signs.
            sim.policy.algorithm = Algorithm::EdDsa;
            sim.restart();
            let steps = sim.tick();
            assert_eq!(steps.len(), 2, "{steps:?}");
            assert_eq!(
                steps[0],
                Step::CreateNext {
                    algorithm: Algorithm::EdDsa
                }
            );
            assert_eq!(
                steps[1],
                Step::DropNext {
                    kid: old_next.clone()
                }
            );
            assert!(find(&sim.keys, &old_next).is_none());
            let eddsa = the(&sim.keys, KeyState::Next).clone();
            assert_eq!(eddsa.algorithm, Algorithm::EdDsa);
            assert_eq!(eddsa.created_at.as_secs(), T0 + switch_at);
            assert_eq!(the(&sim.keys, KeyState::Current).kid, es256);

            // Promoted once it has been published for publish_ahead (its lane had no current
            // key); ES256 stops signing in the same transaction.
            let promote_at = eddsa.created_at.as_secs() + H;
            while sim.wall + M < promote_at {
                sim.advance(M);
                assert_eq!(sim.tick(), vec![], "at {}", sim.wall - T0);
            }
            sim.advance(promote_at - sim.wall);
            assert_eq!(
                sim.tick(),
                vec![Step::Promote {
                    next: eddsa.kid.clone(),
                    current: None
                }]
            );
            assert_eq!(find(&sim.keys, &es256).unwrap().state, KeyState::Retired);
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
    fn a_forced_rotation_to_a_new_default_retires_only_an_algorithm_no_longer_configured() {
        let kek = Kek::generate().unwrap();
        for keep_old in [false, true] {
            let mut sim = Sim::new(&kek, default_policy(), T0, false);
            let es256 = the(&sim.keys, KeyState::Current).kid.clone();
            sim.policy.algorithm = Algorithm::EdDsa;
            if keep_old {
                sim.policy.also = AlgorithmSet::EMPTY.with(Algorithm::Es256);
            }
            sim.tick();
            let step = rotation(&sim.keys, &sim.policy, ts(sim.wall), true).unwrap();
            assert!(
                matches!(&step, Step::Promote { current: None, .. }),
                "{step:?}"
            );
            let t = transition_for(&step, &sim.keys, &sim.policy, &kek, ts(sim.wall)).unwrap();
            let retired: Vec<&KeyId> = t
                .set_state
                .iter()
                .filter(|(_, state)| *state == KeyState::Retired)
                .map(|(kid, _)| kid)
                .collect();
            // Kept in `also`, ES256 goes on signing for its audiences; removed, it retires.
            assert_eq!(retired.is_empty(), keep_old, "{retired:?}");
            if !keep_old {
                assert_eq!(retired, [&es256]);
            }
            // Forced: the documented exception to publish_ahead.
            sim.commit(&t, true);
            sim.check_invariants();
        }
    }

    #[test]
    fn a_step_computed_before_a_revocation_never_brings_the_revoked_key_back() {
        let kek = Kek::generate().unwrap();
        let mut policy = default_policy();
        policy.algorithm = Algorithm::EdDsa;
        let mut sim = Sim::new(&kek, policy, T0, false);
        let e1 = the(&sim.keys, KeyState::Current).kid.clone();
        // The default becomes ES256: its lane has a next key, EdDSA's current key still signs.
        sim.policy.algorithm = Algorithm::Es256;
        sim.tick();
        let r1 = in_lane(&sim.keys, Algorithm::Es256, KeyState::Next)
            .unwrap()
            .kid
            .clone();
        // Two revocations computed against the same keys: of EdDSA's current key (which
        // promotes r1, since nothing else would sign) and of r1 itself.
        let now = ts(sim.wall);
        let of_e1 = revocation(&sim.keys, e1.as_str(), &sim.policy, &kek, now)
            .unwrap()
            .unwrap();
        assert!(of_e1.set_state.contains(&(r1.clone(), KeyState::Current)));
        let of_r1 = revocation(&sim.keys, r1.as_str(), &sim.policy, &kek, now)
            .unwrap()
            .unwrap();
        assert!(apply(&mut sim.keys, &of_r1));
        // The first was computed when r1 was a next key: it must not make it current.
        assert!(!apply(&mut sim.keys, &of_e1), "a revoked key came back");
        assert_eq!(find(&sim.keys, &r1).unwrap().state, KeyState::Revoked);
    }

    #[test]
    fn an_added_algorithm_is_a_lane_of_its_own_and_removing_it_retires_it() {
        let kek = Kek::generate().unwrap();
        let mut sim = Sim::new(&kek, default_policy(), T0, false);
        let es256 = the(&sim.keys, KeyState::Current).kid.clone();
        sim.policy.also = AlgorithmSet::EMPTY.with(Algorithm::EdDsa);
        assert_eq!(
            sim.tick(),
            vec![Step::CreateNext {
                algorithm: Algorithm::EdDsa
            }]
        );
        let eddsa = in_lane(&sim.keys, Algorithm::EdDsa, KeyState::Next)
            .unwrap()
            .kid
            .clone();
        // Not before publish_ahead, and ES256 is untouched.
        sim.advance(H - 1);
        assert_eq!(sim.tick(), vec![]);
        sim.advance(1);
        let steps = sim.tick();
        assert_eq!(
            steps,
            vec![Step::Promote {
                next: eddsa.clone(),
                current: None
            }]
        );
        assert_eq!(
            current_kid(&sim.keys, Algorithm::EdDsa),
            Some(eddsa.clone())
        );
        assert_eq!(
            current_kid(&sim.keys, Algorithm::Es256),
            Some(es256.clone())
        );
        // Each lane rotates on its own schedule: ES256 at 24 h, EdDSA 24 h after it started.
        sim.advance(23 * H);
        let steps = sim.tick();
        assert!(
            matches!(&steps[..], [Step::Promote { current: Some(c), .. }] if *c == es256),
            "{steps:?}"
        );
        assert_eq!(
            current_kid(&sim.keys, Algorithm::EdDsa),
            Some(eddsa.clone())
        );
        // Removed: its next key leaves at once, its current key retires (the default signs).
        sim.policy.also = AlgorithmSet::EMPTY;
        let steps = sim.tick();
        assert!(
            matches!(&steps[..], [Step::DropNext { .. }, Step::Retire { kid }] if *kid == eddsa),
            "{steps:?}"
        );
        let retired = find(&sim.keys, &eddsa).unwrap();
        assert_eq!(retired.state, KeyState::Retired);
        assert!(retired.state.is_published(), "published through retention");
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
                current: Some(current.clone())
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
        /// The process restarts with the other algorithm added to, or removed from, `also`.
        ToggleSecondLane,
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
                also: AlgorithmSet::EMPTY,
                rsa_bits: RsaBits::default(),
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
            1 => Just(Op::ToggleSecondLane),
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
                                Err(RotateError::Missing(_)) => {
                                    // Just after the default algorithm changed, its lane has
                                    // no current key (or, before a tick, no next key) yet.
                                    let lane = sim.policy.algorithm;
                                    prop_assert!(
                                        current_kid(&sim.keys, lane).is_none()
                                            || in_lane(&sim.keys, lane, KeyState::Next).is_none()
                                    );
                                    prop_assert_eq!(&sim.keys, &before);
                                }
                                Err(e) => prop_assert!(false, "rotation failed: {e}"),
                            }
                        }
                        Op::Revoke(index) => {
                            let kid = sim.keys[index % sim.keys.len()].kid.clone();
                            let was = find(&sim.keys, &kid).unwrap().state;
                            let lane = find(&sim.keys, &kid).unwrap().algorithm;
                            let lane_has_next = in_lane(&sim.keys, lane, KeyState::Next).is_some();
                            match sim.revoke(kid.as_str()) {
                                Ok(revoked) => {
                                    prop_assert_eq!(revoked.is_none(), was == KeyState::Revoked);
                                }
                                // A current key whose lane has no next key yet (the
                                // configuration just changed, no tick since).
                                Err(RevokeKeyError::Refused(RotateError::Missing("next"))) => {
                                    prop_assert_eq!(was, KeyState::Current);
                                    prop_assert!(!lane_has_next || !sim.policy.signs(lane));
                                }
                                Err(e) => prop_assert!(false, "revocation failed: {e}"),
                            }
                        }
                        Op::Restart => sim.restart(),
                        Op::SwitchAlgorithm => {
                            sim.policy.algorithm = match sim.policy.algorithm {
                                Algorithm::Es256 => Algorithm::EdDsa,
                                _ => Algorithm::Es256,
                            };
                            sim.restart();
                        }
                        Op::ToggleSecondLane => {
                            let other = match sim.policy.algorithm {
                                Algorithm::Es256 => Algorithm::EdDsa,
                                _ => Algorithm::Es256,
                            };
                            sim.policy.also = if sim.policy.also.contains(other) {
                                AlgorithmSet::EMPTY
                            } else {
                                AlgorithmSet::EMPTY.with(other)
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
