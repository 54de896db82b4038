//! The embedded SQLite back-end: one file, WAL, `synchronous=FULL`, a single writer
//! connection taking `BEGIN IMMEDIATE`, readers beside it, migrations on open.

use std::{path::Path, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Row, SqlitePool,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};

use super::rows::{
    ChangeColumns, Columns, audit_event_from, cast_after, client_from, corrupt, event_from,
    json_list, key_from, permission_names, public_columns, revoked_token_from, sealed_from,
    seconds, unavailable, write_error,
};
use super::{ClientFlags, ClientSync, Committed, Store, StoreError};
use tokenmint_core::{
    audit::{AuditEvent, AuditQuery, AuditRecord},
    client::Client,
    crypto::Sealed,
    keys::{KeyId, KeyRecord, KeyState},
    revocation::{Change, Cutoff, Event, RevokedToken, State},
    rotation::KeyTransition,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// A SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        owner_only(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating {}: {e}", path.display())))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(unavailable)?;
        Ok(Self { writer, reader })
    }

    /// `PRAGMA synchronous` as the writer connection runs it (2 = FULL).
    pub async fn writer_synchronous(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.writer)
            .await
            .map_err(unavailable)
    }
}

/// Writes a stored client's policy from `client`: everything but its enabled state and its
/// secret.
async fn write_policy(
    conn: &mut sqlx::SqliteConnection,
    client: &Client,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE clients SET matcher_kind = ?, matcher_value = ?, scopes = ?, \
         default_scopes = ?, audiences = ?, default_audiences = ?, permissions = ?, \
         default_lifetime_s = ?, max_lifetime_s = ?, updated_at = ?, \
         introspect_audiences = ? WHERE id = ?",
    )
    .bind(client.matcher.kind())
    .bind(client.matcher.value())
    .bind(json_list(&client.scopes))
    .bind(json_list(&client.default_scopes))
    .bind(json_list(&client.audiences))
    .bind(json_list(&client.default_audiences))
    .bind(json_list(&permission_names(client)))
    .bind(seconds(client.default_lifetime))
    .bind(seconds(client.max_lifetime))
    .bind(now)
    .bind(json_list(&client.introspect_audiences))
    .bind(client.id.as_str())
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    write_pins(conn, client).await
}

/// The database holds sealed keys, secret hashes and the audit trail: it is created readable
/// by its owner only (SQLite gives its `-wal` and `-shm` files the database's mode), and an
/// existing one readable by others is narrowed to that.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let failed = |what: &str, e: std::io::Error| {
            StoreError::Unavailable(format!("cannot {what} {}: {e}", path.display()))
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| failed("create", e))?;
        let mode = file
            .metadata()
            .map_err(|e| failed("read the mode of", e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| failed("restrict the mode of", e))?;
            tracing::info!(path = %path.display(), "the database was readable by others; it is now owner-only (0600)");
        }
        // Journal files left by an earlier run keep their own mode: narrow them too.
        for suffix in ["-wal", "-shm"] {
            let mut journal = path.as_os_str().to_owned();
            journal.push(suffix);
            let journal = std::path::PathBuf::from(journal);
            if let Ok(meta) = std::fs::metadata(&journal)
                && meta.permissions().mode() & 0o077 != 0
            {
                std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| failed("restrict the mode of", e))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

async fn insert_key<'e, E>(executor: E, key: &KeyRecord) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let (x, y) = public_columns(&key.public);
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, state, public_x, public_y, kek_id, nonce, \
         ciphertext, created_at, activated_at, retired_at, revoked_at, low_s_only) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.kid.as_str())
    .bind(key.algorithm.as_str())
    .bind(key.state.as_str())
    .bind(x)
    .bind(y)
    .bind(&key.sealed.kek_id)
    .bind(&key.sealed.nonce)
    .bind(&key.sealed.ciphertext)
    .bind(key.created_at)
    .bind(key.activated_at)
    .bind(key.retired_at)
    .bind(key.revoked_at)
    .bind(i64::from(key.low_s_only))
    .execute(executor)
    .await
    .map_err(write_error)?;
    Ok(())
}

/// Appends `change` to the change log; its sequence number (commit order: one writer).
async fn log_change<'e, E>(
    executor: E,
    change: &Change,
    now: i64,
    log_until: i64,
) -> Result<i64, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let columns = ChangeColumns::of(change);
    sqlx::query_scalar(
        "INSERT INTO changes (kind, token_id, client_id, key_id, revoked_by, expires_at, \
             issued_at_or_before, committed_at, keep_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             RETURNING sequence",
    )
    .bind(columns.kind)
    .bind(columns.token_id)
    .bind(columns.client_id)
    .bind(columns.key_id)
    .bind(columns.revoked_by)
    .bind(columns.expires_at)
    .bind(columns.issued_at_or_before)
    .bind(now)
    .bind(log_until)
    .fetch_one(executor)
    .await
    .map_err(write_error)
}

/// Writes one audit event, in the transaction of the change it records.
async fn write_audit<'e, E>(executor: E, record: &AuditRecord, at: i64) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(at)
    .bind(&record.actor)
    .bind(record.action)
    .bind(&record.target)
    .bind(record.detail_json())
    .execute(executor)
    .await
    .map_err(write_error)?;
    Ok(())
}

/// Replaces the pinned thumbprints of `client`; a thumbprint another client pins is a `Conflict`.
async fn write_pins(tx: &mut sqlx::SqliteConnection, client: &Client) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM client_pins WHERE client_id = ?")
        .bind(client.id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
    for pin in client.matcher.pins() {
        sqlx::query("INSERT INTO client_pins (thumbprint, client_id) VALUES (?, ?)")
            .bind(pin.to_b64url())
            .bind(client.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(write_error)?;
    }
    Ok(())
}

impl Columns for SqliteRow {
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.try_get(column).map_err(corrupt)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(column).map_err(corrupt)
    }

    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.try_get(column).map_err(corrupt)
    }

    fn flag(&self, column: &str) -> Result<bool, StoreError> {
        Ok(self.try_get::<i64, _>(column).map_err(corrupt)? == 1)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        rows.iter().map(key_from).collect()
    }

    async fn create_initial_keys(&self, keys: &[KeyRecord]) -> Result<bool, StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys")
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        if count > 0 {
            return Ok(false);
        }
        for key in keys {
            insert_key(&mut *tx, key).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn apply_key_transition(
        &self,
        t: &KeyTransition,
        log_until: i64,
        audit: &AuditRecord,
    ) -> Result<Option<Event>, StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT kid FROM signing_keys WHERE state = 'current'")
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        if current.as_deref() != t.expect_current.as_ref().map(KeyId::as_str) {
            return Err(StoreError::Conflict(
                "the current key changed since this step was computed".into(),
            ));
        }
        for (kid, state) in &t.set_state {
            let column = match state {
                KeyState::Current => "activated_at",
                KeyState::Retired => "retired_at",
                KeyState::Revoked => "revoked_at",
                KeyState::Next => "created_at",
            };
            let updated = sqlx::query(&format!(
                "UPDATE signing_keys SET state = ?, {column} = ? WHERE kid = ?"
            ))
            .bind(state.as_str())
            .bind(t.at)
            .bind(kid.as_str())
            .execute(&mut *tx)
            .await
            .map_err(write_error)?;
            if updated.rows_affected() != 1 {
                return Err(StoreError::NotFound(format!("key {kid}")));
            }
            crate::failpoint::hit("key-step");
        }
        for kid in &t.delete {
            sqlx::query("DELETE FROM signing_keys WHERE kid = ?")
                .bind(kid.as_str())
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
        }
        for key in &t.insert {
            insert_key(&mut *tx, key).await?;
        }
        let event = match &t.event {
            Some(change @ Change::KeyRevoked { .. }) => {
                let sequence = log_change(&mut *tx, change, t.at, log_until).await?;
                Some(Event {
                    sequence: u64::try_from(sequence)
                        .map_err(|_| StoreError::Corrupt("negative sequence".into()))?,
                    committed_at: t.at,
                    change: change.clone(),
                })
            }
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "a key transition cannot carry {other:?}"
                )));
            }
            None => None,
        };
        write_audit(&mut *tx, audit, t.at).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(event)
    }

    async fn reseal(
        &self,
        keys: &[(KeyId, Sealed)],
        pepper: Option<&Sealed>,
        audit: &AuditRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        for (kid, sealed) in keys {
            sqlx::query(
                "UPDATE signing_keys SET kek_id = ?, nonce = ?, ciphertext = ? WHERE kid = ?",
            )
            .bind(&sealed.kek_id)
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .bind(kid.as_str())
            .execute(&mut *tx)
            .await
            .map_err(write_error)?;
        }
        if let Some(sealed) = pepper {
            sqlx::query("UPDATE sealed_secrets SET kek_id = ?, nonce = ?, ciphertext = ? WHERE name = 'pepper'")
                .bind(&sealed.kek_id)
                .bind(&sealed.nonce)
                .bind(&sealed.ciphertext)
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
        }
        write_audit(&mut *tx, audit, now).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }

    async fn pepper(&self) -> Result<Option<Sealed>, StoreError> {
        let row = sqlx::query(
            "SELECT kek_id, nonce, ciphertext FROM sealed_secrets WHERE name = 'pepper'",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.map(|row| sealed_from(&row)).transpose()
    }

    async fn create_pepper(&self, sealed: &Sealed) -> Result<Sealed, StoreError> {
        sqlx::query(
            "INSERT INTO sealed_secrets (name, kek_id, nonce, ciphertext) VALUES ('pepper', ?, ?, ?) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&sealed.kek_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .execute(&self.writer)
        .await
        .map_err(write_error)?;
        let row = sqlx::query(
            "SELECT kek_id, nonce, ciphertext FROM sealed_secrets WHERE name = 'pepper'",
        )
        .fetch_one(&self.writer)
        .await
        .map_err(unavailable)?;
        sealed_from(&row)
    }

    async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        let rows = sqlx::query("SELECT * FROM clients ORDER BY id")
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        rows.iter().map(client_from).collect()
    }

    async fn insert_client(
        &self,
        client: &Client,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        insert(&mut tx, client, now).await?;
        write_audit(&mut *tx, audit, now).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn commit_change(
        &self,
        change: &Change,
        now: i64,
        state_until: i64,
        log_until: i64,
        audit: &AuditRecord,
    ) -> Result<Committed, StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        match change {
            Change::TokenRevoked { token_id, .. } => {
                let exists: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM revoked_tokens WHERE token_id = ?")
                        .bind(token_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                if exists.is_some() {
                    return Ok(Committed::AlreadyInForce);
                }
            }
            Change::ClientCutoff { client_id, .. }
            | Change::ClientDisabled { client_id }
            | Change::ClientEnabled { client_id } => {
                let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM clients WHERE id = ?")
                    .bind(client_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("client {client_id}")));
                }
            }
            Change::KeyRevoked { .. } => {}
        }
        let sequence = log_change(&mut *tx, change, now, log_until).await?;
        match change {
            Change::TokenRevoked {
                token_id,
                expires_at,
                client_id,
                revoked_by,
            } => {
                sqlx::query(
                    "INSERT INTO revoked_tokens (token_id, expires_at, client_id, revoked_by, \
                     sequence, revoked_at, keep_until) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(token_id)
                .bind(expires_at)
                .bind(client_id)
                .bind(revoked_by)
                .bind(sequence)
                .bind(now)
                .bind(state_until)
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
            }
            Change::ClientCutoff {
                client_id,
                issued_at_or_before,
            } => {
                sqlx::query(
                    "INSERT INTO client_cutoffs (client_id, issued_at_or_before, sequence, keep_until) \
                     VALUES (?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET \
                     issued_at_or_before = MAX(issued_at_or_before, excluded.issued_at_or_before), \
                     sequence = excluded.sequence, keep_until = MAX(keep_until, excluded.keep_until)",
                )
                .bind(client_id)
                .bind(issued_at_or_before)
                .bind(sequence)
                .bind(state_until)
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
            }
            Change::ClientDisabled { client_id } => {
                sqlx::query("UPDATE clients SET enabled = 0, disabled_sequence = ?, updated_at = ? WHERE id = ?")
                    .bind(sequence)
                    .bind(now)
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(write_error)?;
            }
            Change::ClientEnabled { client_id } => {
                sqlx::query("UPDATE clients SET enabled = 1, disabled_sequence = NULL, updated_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(write_error)?;
            }
            Change::KeyRevoked { .. } => {}
        }
        write_audit(&mut *tx, audit, now).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Committed::Event(Event {
            sequence: u64::try_from(sequence)
                .map_err(|_| StoreError::Corrupt("negative sequence".into()))?,
            committed_at: now,
            change: change.clone(),
        }))
    }

    async fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let after = cast_after(after);
        let rows =
            sqlx::query("SELECT * FROM changes WHERE sequence > ? ORDER BY sequence LIMIT ?")
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(unavailable)?;
        rows.iter().map(event_from).collect()
    }

    async fn revocation_state(&self, now: i64) -> Result<State, StoreError> {
        self.read_state(now, true).await
    }

    async fn revocation_head(&self, now: i64) -> Result<State, StoreError> {
        self.read_state(now, false).await
    }

    async fn revoked_tokens_page(
        &self,
        after: u64,
        through: u64,
        now: i64,
        limit: u32,
    ) -> Result<Vec<RevokedToken>, StoreError> {
        let mut connection = self.reader.acquire().await.map_err(unavailable)?;
        read_tokens(&mut connection, now, after, through, limit).await
    }

    async fn purge(&self, now: i64) -> Result<u64, StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let purged_max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(sequence) FROM changes WHERE keep_until < ?")
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        let mut removed = 0;
        for statement in [
            "DELETE FROM changes WHERE keep_until < ?",
            "DELETE FROM revoked_tokens WHERE keep_until < ?",
            "DELETE FROM client_cutoffs WHERE keep_until < ?",
        ] {
            removed += sqlx::query(statement)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(write_error)?
                .rows_affected();
        }
        if let Some(max) = purged_max {
            sqlx::query(
                "INSERT INTO log_meta (name, value) VALUES ('purged_through', ?) \
                 ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
            )
            .bind(max)
            .execute(&mut *tx)
            .await
            .map_err(write_error)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(removed)
    }

    async fn sync_config_client(
        &self,
        client: &Client,
        overwrite: bool,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<ClientSync, StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM clients WHERE id = ?")
            .bind(client.id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let outcome = match (exists.is_some(), overwrite) {
            (false, _) => {
                insert(&mut tx, client, now).await?;
                ClientSync::Inserted
            }
            (true, false) => ClientSync::Kept,
            (true, true) => {
                write_policy(&mut tx, client, now).await?;
                // The config file is the authority here, enabled state included.
                sqlx::query("UPDATE clients SET enabled = ? WHERE id = ?")
                    .bind(i64::from(client.enabled))
                    .bind(client.id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(write_error)?;
                ClientSync::Overwritten
            }
        };
        if outcome != ClientSync::Kept {
            write_audit(&mut *tx, audit, now).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(outcome)
    }

    async fn update_client_policy(
        &self,
        client: &Client,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<ClientFlags, StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let flags = sqlx::query(
            "SELECT enabled, secret_hash IS NOT NULL AS has_secret FROM clients WHERE id = ?",
        )
        .bind(client.id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| StoreError::NotFound(format!("client {}", client.id)))?;
        let flags = ClientFlags {
            enabled: flags.flag("enabled")?,
            has_secret: flags.flag("has_secret")?,
        };
        write_policy(&mut tx, client, now).await?;
        write_audit(&mut *tx, audit, now).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(flags)
    }

    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM audit_events WHERE id > ?1 AND (?2 IS NULL OR actor = ?2) \
             AND (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR target = ?4) \
             AND (?5 IS NULL OR at >= ?5) ORDER BY id LIMIT ?6",
        )
        .bind(cast_after(query.after_id))
        .bind(&query.actor)
        .bind(&query.action)
        .bind(&query.target)
        .bind(query.since)
        .bind(i64::from(query.limit))
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.iter().map(audit_event_from).collect()
    }

    async fn purge_audit(&self, before: i64) -> Result<u64, StoreError> {
        let removed = sqlx::query("DELETE FROM audit_events WHERE at < ?")
            .bind(before)
            .execute(&self.writer)
            .await
            .map_err(write_error)?
            .rows_affected();
        Ok(removed)
    }
}

/// Inserts `client` and its pins, inside the caller's transaction.
async fn insert(
    tx: &mut sqlx::SqliteConnection,
    client: &Client,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO clients (id, matcher_kind, matcher_value, scopes, default_scopes, audiences, \
         default_audiences, permissions, default_lifetime_s, max_lifetime_s, enabled, secret_hash, \
         created_at, updated_at, introspect_audiences) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(client.id.as_str())
    .bind(client.matcher.kind())
    .bind(client.matcher.value())
    .bind(json_list(&client.scopes))
    .bind(json_list(&client.default_scopes))
    .bind(json_list(&client.audiences))
    .bind(json_list(&client.default_audiences))
    .bind(json_list(&permission_names(client)))
    .bind(seconds(client.default_lifetime))
    .bind(seconds(client.max_lifetime))
    .bind(i64::from(client.enabled))
    .bind(client.secret_hash.as_deref())
    .bind(now)
    .bind(now)
    .bind(json_list(&client.introspect_audiences))
    .execute(&mut *tx)
    .await
    .map_err(write_error)?;
    write_pins(tx, client).await
}

impl SqliteStore {
    /// The revocation state in force at `now` (its revoked tokens only `with_tokens`), read in
    /// one transaction so that the state and its marks agree.
    async fn read_state(&self, now: i64, with_tokens: bool) -> Result<State, StoreError> {
        // One read transaction, so the state and its high-water mark agree.
        let mut tx = self.reader.begin().await.map_err(unavailable)?;
        let tokens = if with_tokens {
            read_tokens(&mut tx, now, 0, u64::MAX, u32::MAX).await?
        } else {
            Vec::new()
        };
        let cutoffs = sqlx::query(
            "SELECT client_id, issued_at_or_before, sequence FROM client_cutoffs \
             WHERE keep_until >= ? ORDER BY sequence",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?
        .iter()
        .map(|row| {
            Ok(Cutoff {
                client_id: row.try_get("client_id").map_err(corrupt)?,
                issued_at_or_before: row.try_get("issued_at_or_before").map_err(corrupt)?,
                sequence: row.sequence("sequence")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let disabled_clients = sqlx::query(
            "SELECT id, COALESCE(disabled_sequence, 0) AS sequence FROM clients WHERE enabled = 0 ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?
        .iter()
        .map(|row| Ok((row.try_get("id").map_err(corrupt)?, row.sequence("sequence")?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
        let revoked_keys =
            sqlx::query("SELECT kid FROM signing_keys WHERE state = 'revoked' ORDER BY kid")
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?
                .iter()
                .map(|row| Ok((row.try_get("kid").map_err(corrupt)?, 0)))
                .collect::<Result<Vec<_>, StoreError>>()?;
        let high_water: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        let purged_through: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT value FROM log_meta WHERE name = 'purged_through'), 0)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(State {
            tokens,
            cutoffs,
            disabled_clients,
            revoked_keys,
            high_water: u64::try_from(high_water).unwrap_or(0),
            purged_through: u64::try_from(purged_through).unwrap_or(0),
        })
    }
}

/// Up to `limit` revoked tokens in force at `now` with a sequence in (`after`, `through`], in
/// sequence order.
async fn read_tokens(
    connection: &mut sqlx::SqliteConnection,
    now: i64,
    after: u64,
    through: u64,
    limit: u32,
) -> Result<Vec<RevokedToken>, StoreError> {
    sqlx::query(
        "SELECT token_id, expires_at, client_id, revoked_by, sequence, revoked_at \
         FROM revoked_tokens WHERE keep_until >= ? AND sequence > ? AND sequence <= ? \
         ORDER BY sequence LIMIT ?",
    )
    .bind(now)
    .bind(cast_after(after))
    .bind(cast_after(through))
    .bind(i64::from(limit))
    .fetch_all(&mut *connection)
    .await
    .map_err(unavailable)?
    .iter()
    .map(revoked_token_from)
    .collect()
}
