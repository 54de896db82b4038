//! What both back-ends share: how domain values map to columns and back, and how sqlx errors
//! map to `StoreError`. Each back-end only says how to read one column of its own row type.

use std::time::Duration;

use tokenmint_core::{
    audit::AuditEvent,
    client::{Client, ClientId, ExchangePolicy, Permission},
    clock::UnixTime,
    crypto::{Algorithm, PublicKey, Sealed},
    identity::CertificateMatcher,
    keys::{KeyId, KeyRecord, KeyState, PrivateHalf},
    revocation::{Change, Cutoff, Event, RevokedToken},
};

use super::StoreError;

/// A connection or statement failure: nothing was committed.
pub(super) fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A failed write: a unique violation is a `Conflict`, anything else `Unavailable`.
pub(super) fn write_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        _ => unavailable(e),
    }
}

/// A cursor (a sequence or an audit id) as the INTEGER/BIGINT column holds it; one past the
/// largest stored value matches nothing.
pub(super) fn cast_after(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

/// A change-log sequence number as its column holds it.
///
/// A sequence is a `u64` everywhere above SQL: in the core's events, states and cursors, in
/// the `Store` trait and in the shared store code. Its columns are signed 64-bit integers
/// (SQLite INTEGER, PostgreSQL BIGINT), so it crosses into SQL only here and back only through
/// [`Columns::sequence`], both checked: a number past `i64::MAX` cannot be stored, and a
/// negative stored one is `Corrupt`. A newtype would say nothing the core's `u64` fields do
/// not, and would be unwrapped again at every call into the core.
pub(super) fn sequence_column(sequence: u64) -> Result<i64, StoreError> {
    i64::try_from(sequence)
        .map_err(|_| StoreError::Corrupt(format!("sequence {sequence} overflows its column")))
}

/// A value that does not decode.
pub(super) fn corrupt(e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Reading one column of a back-end's row, typed the way the schema stores it.
pub(crate) trait Columns {
    /// A `TEXT` column that may be NULL.
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    /// An integer column that may be NULL.
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    /// A blob column that may be NULL.
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A 0/1 flag such as `enabled` (an INTEGER in SQLite, a SMALLINT in PostgreSQL).
    fn flag(&self, column: &str) -> Result<bool, StoreError>;

    /// A `TEXT NOT NULL` column.
    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.opt_text(column)?
            .ok_or_else(|| StoreError::Corrupt(format!("{column} is NULL")))
    }

    /// An integer `NOT NULL` column.
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.opt_int(column)?
            .ok_or_else(|| StoreError::Corrupt(format!("{column} is NULL")))
    }

    /// A blob `NOT NULL` column.
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        self.opt_bytes(column)?
            .ok_or_else(|| StoreError::Corrupt(format!("{column} is NULL")))
    }

    /// A time (seconds since the epoch) that may be NULL.
    fn opt_time(&self, column: &str) -> Result<Option<UnixTime>, StoreError> {
        Ok(self.opt_int(column)?.map(UnixTime::from_secs))
    }

    /// A time (seconds since the epoch) `NOT NULL`.
    fn time(&self, column: &str) -> Result<UnixTime, StoreError> {
        self.int(column).map(UnixTime::from_secs)
    }

    /// A sequence number (see [`sequence_column`]) that may be NULL.
    fn opt_sequence(&self, column: &str) -> Result<Option<u64>, StoreError> {
        self.opt_int(column)?
            .map(|value| {
                u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value}")))
            })
            .transpose()
    }

    /// A sequence number (see [`sequence_column`]).
    fn sequence(&self, column: &str) -> Result<u64, StoreError> {
        self.opt_sequence(column)?
            .ok_or_else(|| StoreError::Corrupt(format!("{column} is NULL")))
    }

    /// A JSON array of strings stored as text.
    fn list(&self, column: &str) -> Result<Vec<String>, StoreError> {
        serde_json::from_str(&self.text(column)?)
            .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
    }
}

/// A `revoked_tokens` row.
pub(super) fn revoked_token_from(row: &impl Columns) -> Result<RevokedToken, StoreError> {
    Ok(RevokedToken {
        token_id: row.text("token_id")?,
        expires_at: row.time("expires_at")?,
        client_id: row.opt_text("client_id")?,
        revoked_by: row.text("revoked_by")?,
        sequence: row.sequence("sequence")?,
        revoked_at: row.time("revoked_at")?,
    })
}

/// A `client_cutoffs` row.
pub(super) fn cutoff_from(row: &impl Columns) -> Result<Cutoff, StoreError> {
    Ok(Cutoff {
        client_id: row.text("client_id")?,
        issued_at_or_before: row.time("issued_at_or_before")?,
        sequence: row.sequence("sequence")?,
    })
}

/// A list as the JSON text the schema stores.
pub(super) fn json_list(value: &[String]) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

/// A client's permissions by name.
pub(super) fn permission_names(client: &Client) -> Vec<String> {
    client
        .permissions
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect()
}

/// The public key's columns: `public_x`, and `public_y` for two-part keys. P-256: x and y;
/// RSA: n and e; Ed25519 and ML-DSA: the encoded key alone.
pub(super) fn public_columns(public: &PublicKey) -> (Vec<u8>, Option<Vec<u8>>) {
    match public {
        PublicKey::P256 { x, y } => (x.clone(), Some(y.clone())),
        PublicKey::Rsa { n, e } => (n.clone(), Some(e.clone())),
        PublicKey::Ed25519 { x } => (x.clone(), None),
        PublicKey::MlDsa { public, .. } => (public.clone(), None),
    }
}

/// The sealed material of a row (`kek_id`, `nonce`, `ciphertext`).
pub(super) fn sealed_from(row: &impl Columns) -> Result<Sealed, StoreError> {
    Ok(Sealed {
        kek_id: row.text("kek_id")?,
        nonce: row.bytes("nonce")?,
        ciphertext: row.bytes("ciphertext")?,
    })
}

/// A key's private half: sealed in the row, or held by the custody it names.
fn private_from(row: &impl Columns) -> Result<PrivateHalf, StoreError> {
    match (row.opt_text("held_by")?, row.opt_text("held_ref")?) {
        (Some(custody), Some(reference)) => Ok(PrivateHalf::Held { custody, reference }),
        (None, None) => sealed_from(row).map(PrivateHalf::Sealed),
        _ => Err(StoreError::Corrupt(
            "a signing key names a custody without a reference, or the other way round".into(),
        )),
    }
}

/// A `signing_keys` row.
pub(super) fn key_from(row: &impl Columns) -> Result<KeyRecord, StoreError> {
    let kid = row.text("kid")?;
    let algorithm_name = row.text("algorithm")?;
    let algorithm = Algorithm::try_from_name(&algorithm_name)
        .ok_or_else(|| StoreError::Corrupt(format!("key {kid}: algorithm {algorithm_name:?}")))?;
    let state_name = row.text("state")?;
    let state = KeyState::try_from_name(&state_name)
        .ok_or_else(|| StoreError::Corrupt(format!("key {kid}: state {state_name:?}")))?;
    let x = row.bytes("public_x")?;
    let public = match (algorithm, row.opt_bytes("public_y")?) {
        (Algorithm::Es256, Some(y)) => PublicKey::P256 { x, y },
        (Algorithm::EdDsa, None) => PublicKey::Ed25519 { x },
        (Algorithm::Rs256 | Algorithm::Ps256, Some(e)) => PublicKey::Rsa { n: x, e },
        (Algorithm::MlDsa44, None) => PublicKey::MlDsa {
            level: 44,
            public: x,
        },
        (Algorithm::MlDsa65, None) => PublicKey::MlDsa {
            level: 65,
            public: x,
        },
        _ => return Err(StoreError::Corrupt(format!("key {kid}: public key shape"))),
    };
    Ok(KeyRecord {
        kid: KeyId::from_stored(kid),
        algorithm,
        state,
        public,
        private: private_from(row)?,
        created_at: row.time("created_at")?,
        activated_at: row.opt_time("activated_at")?,
        retired_at: row.opt_time("retired_at")?,
        revoked_at: row.opt_time("revoked_at")?,
        low_s_only: row.flag("low_s_only")?,
    })
}

/// A `clients` row.
pub(super) fn client_from(row: &impl Columns) -> Result<Client, StoreError> {
    let id = ClientId::try_new(&row.text("id")?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let matcher =
        CertificateMatcher::try_from_parts(&row.text("matcher_kind")?, &row.text("matcher_value")?)
            .map_err(|e| StoreError::Corrupt(format!("client {id}: {e}")))?;
    let permissions = row
        .list("permissions")?
        .iter()
        .map(|p| {
            Permission::try_from_name(p)
                .ok_or_else(|| StoreError::Corrupt(format!("client {id}: permission {p:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let lifetime = |column: &str| -> Result<Duration, StoreError> {
        u64::try_from(row.int(column)?)
            .map(Duration::from_secs)
            .map_err(|_| StoreError::Corrupt(format!("client {id}: {column}")))
    };
    Ok(Client {
        matcher,
        scopes: row.list("scopes")?,
        default_scopes: row.list("default_scopes")?,
        audiences: row.list("audiences")?,
        default_audiences: row.list("default_audiences")?,
        introspect_audiences: row.list("introspect_audiences")?,
        exchange: ExchangePolicy {
            serves: row.list("serves")?,
            act_for: row.list("act_for")?,
            delegate_audiences: row.list("delegate_audiences")?,
            delegate_scopes: row.list("delegate_scopes")?,
            asserts_txn_subjects: row.flag("asserts_txn_subjects")?,
        },
        permissions,
        default_lifetime: lifetime("default_lifetime_s")?,
        max_lifetime: lifetime("max_lifetime_s")?,
        enabled: row.flag("enabled")?,
        secret_hash: row.opt_bytes("secret_hash")?,
        id,
    })
}

/// An `audit_events` row.
pub(super) fn audit_event_from(row: &impl Columns) -> Result<AuditEvent, StoreError> {
    let id = row.sequence("id")?;
    Ok(AuditEvent {
        id,
        at: row.time("at")?,
        actor: row.text("actor")?,
        action: row.text("action")?,
        target: row.text("target")?,
        detail: serde_json::from_str(&row.text("detail")?)
            .map_err(|e| StoreError::Corrupt(format!("audit event {id}: detail: {e}")))?,
    })
}

/// The change-log columns of a change, in the order of `changes`: kind, token_id, client_id,
/// key_id, revoked_by, expires_at, issued_at_or_before.
pub(super) struct ChangeColumns<'a> {
    pub kind: &'static str,
    pub token_id: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub revoked_by: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub issued_at_or_before: Option<i64>,
}

impl<'a> ChangeColumns<'a> {
    /// The columns of `change`.
    pub(super) fn of(change: &'a Change) -> Self {
        let empty = |kind| Self {
            kind,
            token_id: None,
            client_id: None,
            key_id: None,
            revoked_by: None,
            expires_at: None,
            issued_at_or_before: None,
        };
        match change {
            Change::TokenRevoked {
                token_id,
                expires_at,
                client_id,
                revoked_by,
            } => Self {
                token_id: Some(token_id),
                client_id: client_id.as_deref(),
                revoked_by: Some(revoked_by),
                expires_at: Some(expires_at.as_secs()),
                ..empty("token_revoked")
            },
            Change::ClientCutoff {
                client_id,
                issued_at_or_before,
            } => Self {
                client_id: Some(client_id),
                issued_at_or_before: Some(issued_at_or_before.as_secs()),
                ..empty("client_cutoff")
            },
            Change::ClientDisabled { client_id } => Self {
                client_id: Some(client_id),
                ..empty("client_disabled")
            },
            Change::ClientEnabled { client_id } => Self {
                client_id: Some(client_id),
                ..empty("client_enabled")
            },
            Change::KeyRevoked { key_id } => Self {
                key_id: Some(key_id),
                ..empty("key_revoked")
            },
        }
    }
}

/// A `changes` row.
pub(super) fn event_from(row: &impl Columns) -> Result<Event, StoreError> {
    let kind = row.text("kind")?;
    let present = |column: &str| -> Result<String, StoreError> {
        row.opt_text(column)?
            .ok_or_else(|| StoreError::Corrupt(format!("change {kind}: {column} missing")))
    };
    let number = |column: &str| -> Result<i64, StoreError> {
        row.opt_int(column)?
            .ok_or_else(|| StoreError::Corrupt(format!("change {kind}: {column} missing")))
    };
    let change = match kind.as_str() {
        "token_revoked" => Change::TokenRevoked {
            token_id: present("token_id")?,
            expires_at: UnixTime::from_secs(number("expires_at")?),
            client_id: row.opt_text("client_id")?,
            revoked_by: present("revoked_by")?,
        },
        "client_cutoff" => Change::ClientCutoff {
            client_id: present("client_id")?,
            issued_at_or_before: UnixTime::from_secs(number("issued_at_or_before")?),
        },
        "client_disabled" => Change::ClientDisabled {
            client_id: present("client_id")?,
        },
        "client_enabled" => Change::ClientEnabled {
            client_id: present("client_id")?,
        },
        "key_revoked" => Change::KeyRevoked {
            key_id: present("key_id")?,
        },
        other => return Err(StoreError::Corrupt(format!("change kind {other:?}"))),
    };
    Ok(Event {
        sequence: row.sequence("sequence")?,
        committed_at: row.time("committed_at")?,
        change,
    })
}
