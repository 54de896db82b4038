//! The audit trail (SPEC §8). Revocations, key rotations and admin changes become
//! [`AuditRecord`]s, which the store writes in the same transaction as the change they record,
//! so neither exists without the other; `ListAuditEvents` reads them back as [`AuditEvent`]s.
//! Issuance is audited apart, as structured log events on the [`ISSUANCE_TARGET`] log target,
//! at the volume [`IssuanceMode`] chooses.
//!
//! No record carries a token or a secret: the fields are client ids, key ids, token ids
//! (`jti`), times and names, and the constructors here are the only ones the code uses.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    clock::UnixTime, keys::KeyState, revocation::Change, rotation::KeyTransition,
    token::IssuedToken,
};

/// The actor of work nobody asked for: scheduled key rotation, start-up.
pub const SYSTEM_ACTOR: &str = "tokenmint";
/// The actor of changes made from the config file (`[[clients]]` at start-up).
pub const CONFIG_ACTOR: &str = "config";
/// The actor of offline commands run against the store (`tokenmint client add`, `kek rotate`).
pub const OPERATOR_ACTOR: &str = "operator";

/// Most events one `ListAuditEvents` page returns.
pub const MAX_PAGE: u32 = 1000;

/// One audit event to write with the change it records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Who: the client id that asked, or one of the `*_ACTOR` names.
    pub actor: String,
    /// What, as `noun.verb`: `client.registered`, `token.revoked`, `key.rotated`…
    pub action: &'static str,
    /// What it acted on: a client id, key id or token id.
    pub target: String,
    /// Further facts, by name. Never a token or a secret.
    pub detail: BTreeMap<&'static str, String>,
}

impl AuditRecord {
    /// A record without detail.
    pub fn new(actor: &str, action: &'static str, target: &str) -> Self {
        Self {
            actor: actor.to_owned(),
            action,
            target: target.to_owned(),
            detail: BTreeMap::new(),
        }
    }

    /// Adds one fact.
    pub fn with(mut self, name: &'static str, value: impl ToString) -> Self {
        self.detail.insert(name, value.to_string());
        self
    }

    /// The record of a revocation-state change made by `actor`.
    pub fn for_change(change: &Change, actor: &str) -> Self {
        match change {
            Change::TokenRevoked {
                token_id,
                expires_at,
                client_id,
                ..
            } => {
                let record =
                    Self::new(actor, "token.revoked", token_id).with("expires_at", expires_at);
                match client_id {
                    Some(client) => record.with("client_id", client),
                    None => record,
                }
            }
            Change::ClientCutoff {
                client_id,
                issued_at_or_before,
            } => Self::new(actor, "client.tokens_revoked", client_id)
                .with("issued_at_or_before", issued_at_or_before),
            Change::ClientDisabled { client_id } => Self::new(actor, "client.disabled", client_id),
            Change::ClientEnabled { client_id } => Self::new(actor, "client.enabled", client_id),
            Change::KeyRevoked { key_id } => Self::new(actor, "key.revoked", key_id),
        }
    }

    /// The record of a key-lifecycle step taken by `actor`: `key.revoked` when it revokes a
    /// key; `key.rotated` when a key becomes current (naming it); else `key.created` (naming
    /// the new key), `key.retired` or `key.removed` (naming the first key concerned).
    pub fn for_key_transition(t: &KeyTransition, actor: &str) -> Self {
        if let Some(change) = &t.event {
            return Self::for_change(change, actor);
        }
        let first_in = |state: KeyState| {
            t.set_state
                .iter()
                .find(|(_, s)| *s == state)
                .map(|(kid, _)| kid.as_str())
        };
        let (action, target) = if let Some(kid) = first_in(KeyState::Current) {
            ("key.rotated", kid)
        } else if let Some(key) = t.insert.first() {
            ("key.created", key.kid.as_str())
        } else if let Some(kid) = first_in(KeyState::Retired) {
            ("key.retired", kid)
        } else {
            (
                "key.removed",
                t.delete.first().map_or("", |kid| kid.as_str()),
            )
        };
        let mut record = Self::new(actor, action, target);
        for state in [KeyState::Current, KeyState::Retired, KeyState::Revoked] {
            let kids = t
                .set_state
                .iter()
                .filter(|(_, s)| *s == state)
                .map(|(kid, _)| kid.as_str())
                .collect::<Vec<_>>();
            if !kids.is_empty() {
                let name = match state {
                    KeyState::Current => "made_current",
                    KeyState::Retired => "retired",
                    _ => "revoked",
                };
                record = record.with(name, kids.join(","));
            }
        }
        if !t.insert.is_empty() {
            let created = t.insert.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>();
            record = record.with("created", created.join(","));
        }
        if !t.delete.is_empty() {
            let deleted = t.delete.iter().map(|k| k.as_str()).collect::<Vec<_>>();
            record = record.with("deleted", deleted.join(","));
        }
        record
    }

    /// The detail as the JSON object the store keeps.
    pub fn detail_json(&self) -> String {
        serde_json::to_string(&self.detail).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// A stored audit event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Its number: later events have higher numbers.
    pub id: u64,
    /// Unix seconds.
    pub at: UnixTime,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Further facts.
    pub detail: BTreeMap<String, String>,
}

/// Which audit events to list: those numbered above `after_id`, oldest first, filtered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events numbered above this (the previous page's last id; 0 for the first page).
    pub after_id: u64,
    /// At most this many (1 to [`MAX_PAGE`]).
    pub limit: u32,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only at or after this time (Unix seconds).
    pub since: Option<UnixTime>,
}

/// The log target issuance events are written to, apart from the service's own log, so they
/// can be routed to an audit sink (`RUST_LOG=tokenmint_core::audit::issuance=info`).
pub const ISSUANCE_TARGET: &str = "tokenmint_core::audit::issuance";

/// How much issuance is audited (`[audit] issuance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuanceMode {
    /// Nothing.
    Off,
    /// Per client, how many tokens it was issued and refused, once per interval (the default).
    Counts {
        /// How often the counts are written.
        interval: Duration,
    },
    /// One token in `one_in` (counted across all clients), in full.
    Sampled {
        /// The sampling period (≥ 2).
        one_in: u64,
    },
    /// Every token, in full.
    Every,
}

/// Issuance auditing: per-token events written as tokens are issued, or per-client counts
/// gathered here and written by [`IssuanceAudit::flush`]. The counts are kept per client id of
/// an authenticated client, so their number is bounded by the registry. Counting a token takes
/// a shared read lock and an atomic add; only a client's first token takes the write lock.
#[derive(Debug)]
pub struct IssuanceAudit {
    mode: IssuanceMode,
    seen: AtomicU64,
    counts: RwLock<HashMap<String, Counts>>,
}

/// Tokens issued to one client and refused to it since the last flush.
#[derive(Debug, Default)]
struct Counts {
    issued: AtomicU64,
    refused: AtomicU64,
}

impl IssuanceAudit {
    /// Auditing at `mode`.
    pub fn new(mode: IssuanceMode) -> Self {
        Self {
            mode,
            seen: AtomicU64::new(0),
            counts: RwLock::new(HashMap::new()),
        }
    }

    /// The mode.
    pub fn mode(&self) -> IssuanceMode {
        self.mode
    }

    /// Records an issued token.
    pub fn issued(&self, token: &IssuedToken) {
        match self.mode {
            IssuanceMode::Off => {}
            IssuanceMode::Counts { .. } => self.count(&token.client_id, true),
            IssuanceMode::Sampled { one_in } => {
                if self
                    .seen
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(one_in)
                {
                    log_token(token, one_in);
                }
            }
            IssuanceMode::Every => log_token(token, 1),
        }
    }

    /// Records a refusal for an authenticated client (an unauthenticated caller has no
    /// trustworthy id to count under; the metrics count those).
    pub fn refused(&self, client_id: &str, reason: &'static str) {
        match self.mode {
            IssuanceMode::Off => {}
            IssuanceMode::Counts { .. } => self.count(client_id, false),
            IssuanceMode::Sampled { .. } | IssuanceMode::Every => {
                tracing::info!(target: ISSUANCE_TARGET, event = "token.refused", client_id, reason);
            }
        }
    }

    fn count(&self, client_id: &str, issued: bool) {
        let add = |counts: &Counts| {
            let counter = if issued {
                &counts.issued
            } else {
                &counts.refused
            };
            counter.fetch_add(1, Ordering::Relaxed);
        };
        if let Some(counts) = self
            .counts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(client_id)
        {
            return add(counts);
        }
        let mut all = self.counts.write().unwrap_or_else(|e| e.into_inner());
        add(all.entry(client_id.to_owned()).or_default());
    }

    /// Writes and resets the counts gathered since the last flush: one event per client that
    /// asked since, ordered by client id. Returns how many events were written (none unless
    /// the mode is `Counts`).
    pub fn flush(&self) -> usize {
        let IssuanceMode::Counts { interval } = self.mode else {
            return 0;
        };
        let mut counts = self
            .counts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(client_id, counts)| {
                let issued = counts.issued.swap(0, Ordering::Relaxed);
                let refused = counts.refused.swap(0, Ordering::Relaxed);
                (client_id.clone(), (issued, refused))
            })
            .filter(|(_, (issued, refused))| issued + refused > 0)
            .collect::<Vec<_>>();
        counts.sort();
        for (client_id, (issued, refused)) in &counts {
            tracing::info!(
                target: ISSUANCE_TARGET,
                event = "token.counts",
                client_id = client_id.as_str(),
                issued,
                refused,
                interval_s = interval.as_secs(),
            );
        }
        counts.len()
    }
}

/// One issued token, by its id: never the token itself.
fn log_token(token: &IssuedToken, one_in: u64) {
    tracing::info!(
        target: ISSUANCE_TARGET,
        event = "token.issued",
        client_id = token.client_id.as_str(),
        subject = token.subject.as_str(),
        exchanged_from = token.exchanged_from.as_deref().unwrap_or(""),
        token_id = token.token_id.as_str(),
        key_id = token.key_id.as_str(),
        scopes = token.scopes.join(" ").as_str(),
        audiences = token.audiences.join(" ").as_str(),
        expires_in = token.expires_in,
        sampled_one_in = one_in,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_names_its_actor_action_and_target_and_nothing_secret() {
        let record = AuditRecord::for_change(
            &Change::TokenRevoked {
                token_id: "jti-1".into(),
                expires_at: UnixTime::from_secs(1_700_000_000),
                client_id: Some("billing".into()),
                revoked_by: "admin".into(),
            },
            "admin",
        );
        assert_eq!(record.actor, "admin");
        assert_eq!(record.action, "token.revoked");
        assert_eq!(record.target, "jti-1");
        assert_eq!(
            record.detail_json(),
            r#"{"client_id":"billing","expires_at":"1700000000"}"#
        );
        let cutoff = AuditRecord::for_change(
            &Change::ClientCutoff {
                client_id: "billing".into(),
                issued_at_or_before: UnixTime::from_secs(5),
            },
            "ops",
        );
        assert_eq!(
            (cutoff.action, cutoff.target.as_str()),
            ("client.tokens_revoked", "billing")
        );
    }

    #[test]
    fn each_kind_of_key_step_gets_its_action_and_target() {
        use crate::{
            crypto::{Algorithm, PublicKey, Sealed},
            keys::{KeyId, KeyRecord},
        };
        let kid = |k: &str| KeyId::from_stored(k);
        let record = |k: &str| KeyRecord {
            kid: kid(k),
            algorithm: Algorithm::Es256,
            state: KeyState::Next,
            public: PublicKey::Ed25519 { x: vec![] },
            private: crate::keys::PrivateHalf::Sealed(Sealed {
                kek_id: String::new(),
                nonce: vec![],
                ciphertext: vec![],
            }),
            created_at: UnixTime::from_secs(0),
            activated_at: None,
            retired_at: None,
            revoked_at: None,
            low_s_only: true,
        };
        let step = |set_state, insert, delete, event| KeyTransition {
            lane: Algorithm::EdDsa,
            expect_current: Some(kid("k1")),
            expect_states: vec![],
            set_state,
            insert,
            delete,
            event,
            at: UnixTime::from_secs(7),
        };
        let action = |t: &KeyTransition| {
            let r = AuditRecord::for_key_transition(t, SYSTEM_ACTOR);
            (r.action, r.target, r.detail)
        };
        let (a, target, detail) = action(&step(
            vec![
                (kid("k2"), KeyState::Current),
                (kid("k1"), KeyState::Retired),
            ],
            vec![record("k3")],
            vec![],
            None,
        ));
        assert_eq!((a, target.as_str()), ("key.rotated", "k2"));
        assert_eq!(detail["retired"], "k1");
        assert_eq!(detail["created"], "k3");
        let (a, target, _) = action(&step(vec![], vec![record("k4")], vec![], None));
        assert_eq!((a, target.as_str()), ("key.created", "k4"));
        let (a, target, _) = action(&step(
            vec![(kid("k1"), KeyState::Retired)],
            vec![],
            vec![],
            None,
        ));
        assert_eq!((a, target.as_str()), ("key.retired", "k1"));
        let (a, target, detail) = action(&step(vec![], vec![], vec![kid("k0")], None));
        assert_eq!((a, target.as_str()), ("key.removed", "k0"));
        assert_eq!(detail["deleted"], "k0");
        let revoked = Change::KeyRevoked {
            key_id: "k2".into(),
        };
        let (a, target, _) = action(&step(vec![], vec![], vec![], Some(revoked)));
        assert_eq!((a, target.as_str()), ("key.revoked", "k2"));
    }

    #[test]
    fn counts_are_per_client_and_reset_by_a_flush() {
        let audit = IssuanceAudit::new(IssuanceMode::Counts {
            interval: Duration::from_secs(60),
        });
        audit.count("a", true);
        audit.count("a", true);
        audit.count("b", false);
        {
            let counts = audit.counts.read().unwrap();
            let pair = |c: &Counts| {
                (
                    c.issued.load(Ordering::Relaxed),
                    c.refused.load(Ordering::Relaxed),
                )
            };
            assert_eq!(pair(&counts["a"]), (2, 0));
            assert_eq!(pair(&counts["b"]), (0, 1));
        }
        assert_eq!(audit.flush(), 2);
        assert_eq!(audit.flush(), 0);
        audit.count("b", true);
        assert_eq!(audit.flush(), 1, "only the clients that asked since");
    }

    #[test]
    fn off_counts_nothing() {
        let audit = IssuanceAudit::new(IssuanceMode::Off);
        audit.refused("a", "invalid_scope");
        assert_eq!(audit.flush(), 0);
    }
}
