//! The store, written once for every [`Dialect`]: what each method checks, writes and
//! returns, and the audit event written in the same transaction. A statement both dialects
//! accept is written here, with `$N` placeholders (sqlx's SQLite driver binds `$N` by
//! number, as PostgreSQL does); a statement whose text differs comes from the dialect's
//! [`Statements`](super::dialect::Statements), and locking from [`Dialect::lock`].

use async_trait::async_trait;
use sqlx::{Pool, Transaction, pool::PoolConnection};

use super::{
    ClientFlags, ClientSync, Committed, Store, StoreError,
    dialect::{Conn, Dialect, Lock},
    rows::{
        ChangeColumns, Columns, audit_event_from, cast_after, client_from, cutoff_from, event_from,
        json_list, key_from, permission_names, public_columns, revoked_token_from, sealed_from,
        sequence_column, unavailable, write_error,
    },
    sql::{Bound, Run, Sql},
};
use tokenmint_core::{
    audit::{AuditEvent, AuditQuery, AuditRecord},
    client::Client,
    clock::{UnixTime, whole_secs},
    crypto::Sealed,
    keys::{KeyId, KeyRecord, KeyState, PrivateHalf},
    revocation::{Change, Event, RevokedToken, State},
    rotation::KeyTransition,
};

#[async_trait]
impl<D: Dialect> Store for D {
    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut conn = acquire(self.reader()).await?;
        read_all(conn.sql(D::SQL.keys), key_from).await
    }

    async fn create_initial_keys(&self, keys: &[KeyRecord]) -> Result<bool, StoreError> {
        let mut tx = begin_write(self, &[Lock::Keys]).await?;
        let any = tx
            .sql("SELECT 1 FROM signing_keys LIMIT 1")
            .maybe_row()
            .await
            .map_err(unavailable)?;
        if any.is_some() {
            return Ok(false);
        }
        for key in keys {
            insert_key::<D::Db>(&mut tx, key).await?;
        }
        commit(self, tx).await?;
        Ok(true)
    }

    async fn apply_key_transition(
        &self,
        t: &KeyTransition,
        log_until: UnixTime,
        audit: &AuditRecord,
    ) -> Result<Option<Event>, StoreError> {
        // Key lock, then (if this step logs) the change-log lock: the one order.
        let locks = match t.event {
            Some(_) => [Lock::Keys, Lock::ChangeLog].as_slice(),
            None => &[Lock::Keys],
        };
        let mut tx = begin_write(self, locks).await?;
        let current = tx
            .sql("SELECT kid FROM signing_keys WHERE state = 'current' AND algorithm = $1")
            .arg(t.lane.as_str())
            .maybe_row()
            .await
            .map_err(unavailable)?
            .map(|row| row.text("kid"))
            .transpose()?;
        if current.as_deref() != t.expect_current.as_ref().map(KeyId::as_str) {
            return Err(StoreError::Conflict(
                "the current key of this algorithm changed since this step was computed".into(),
            ));
        }
        for (kid, state) in &t.expect_states {
            let stored = tx
                .sql("SELECT state FROM signing_keys WHERE kid = $1")
                .arg(kid.as_str())
                .maybe_row()
                .await
                .map_err(unavailable)?
                .map(|row| row.text("state"))
                .transpose()?;
            if stored.as_deref() != Some(state.as_str()) {
                return Err(StoreError::Conflict(format!(
                    "key {kid} changed since this step was computed"
                )));
            }
        }
        change_keys::<D::Db>(&mut tx, t).await?;
        let event = match &t.event {
            Some(change @ Change::KeyRevoked { .. }) => {
                Some(log_change::<D>(&mut tx, change, t.at, log_until).await?)
            }
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "a key transition cannot carry {other:?}"
                )));
            }
            None => None,
        };
        write_audit::<D>(&mut tx, audit, t.at).await?;
        commit(self, tx).await?;
        Ok(event)
    }

    async fn reseal(
        &self,
        keys: &[(KeyId, Sealed)],
        pepper: Option<&Sealed>,
        audit: &AuditRecord,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(self, &[Lock::Keys]).await?;
        for (kid, sealed) in keys {
            let statement = tx.sql(
                "UPDATE signing_keys SET kek_id = $1, nonce = $2, ciphertext = $3 WHERE kid = $4",
            );
            bind_sealed(statement, sealed)
                .arg(kid.as_str())
                .run()
                .await
                .map_err(write_error)?;
        }
        if let Some(sealed) = pepper {
            let statement = tx.sql(
                "UPDATE sealed_secrets SET kek_id = $1, nonce = $2, ciphertext = $3 \
                 WHERE name = 'pepper'",
            );
            bind_sealed(statement, sealed)
                .run()
                .await
                .map_err(write_error)?;
        }
        write_audit::<D>(&mut tx, audit, now).await?;
        commit(self, tx).await
    }

    async fn pepper(&self) -> Result<Option<Sealed>, StoreError> {
        let mut conn = acquire(self.reader()).await?;
        let row = conn.sql(PEPPER).maybe_row().await.map_err(unavailable)?;
        row.as_ref().map(sealed_from).transpose()
    }

    async fn create_pepper(&self, sealed: &Sealed) -> Result<Sealed, StoreError> {
        let mut conn = acquire(self.writer()).await?;
        let statement = conn.sql(
            "INSERT INTO sealed_secrets (name, kek_id, nonce, ciphertext) \
             VALUES ('pepper', $1, $2, $3) ON CONFLICT (name) DO NOTHING",
        );
        bind_sealed(statement, sealed)
            .run()
            .await
            .map_err(write_error)?;
        let row = conn.sql(PEPPER).row().await.map_err(unavailable)?;
        sealed_from(&row)
    }

    async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        let mut conn = acquire(self.reader()).await?;
        read_all(conn.sql(D::SQL.clients), client_from).await
    }

    async fn insert_client(
        &self,
        client: &Client,
        now: UnixTime,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = begin_write(self, &[]).await?;
        insert_client::<D::Db>(&mut tx, client, now, false).await?;
        write_audit::<D>(&mut tx, audit, now).await?;
        commit(self, tx).await
    }

    async fn commit_change(
        &self,
        change: &Change,
        now: UnixTime,
        state_until: UnixTime,
        log_until: UnixTime,
        audit: &AuditRecord,
    ) -> Result<Committed, StoreError> {
        // The change-log lock first, so the checks below see every change committed before
        // this one.
        let mut tx = begin_write(self, &[Lock::ChangeLog]).await?;
        if in_force::<D::Db>(&mut tx, change).await? {
            return Ok(Committed::AlreadyInForce);
        }
        let event = log_change::<D>(&mut tx, change, now, log_until).await?;
        put_in_force::<D>(&mut tx, change, event.sequence, now, state_until).await?;
        write_audit::<D>(&mut tx, audit, now).await?;
        commit(self, tx).await?;
        Ok(Committed::Event(event))
    }

    async fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let mut conn = acquire(self.reader()).await?;
        let statement = conn
            .sql("SELECT * FROM changes WHERE sequence > $1 ORDER BY sequence LIMIT $2")
            .arg(cast_after(after))
            .arg(i64::from(limit));
        read_all(statement, event_from).await
    }

    async fn revocation_state(&self, now: UnixTime) -> Result<State, StoreError> {
        read_state(self, now, true).await
    }

    async fn revocation_head(&self, now: UnixTime) -> Result<State, StoreError> {
        read_state(self, now, false).await
    }

    async fn revoked_tokens_page(
        &self,
        after: u64,
        through: u64,
        now: UnixTime,
        limit: u32,
    ) -> Result<Vec<RevokedToken>, StoreError> {
        let mut conn = acquire(self.reader()).await?;
        read_tokens::<D::Db>(&mut conn, now, after, through, limit).await
    }

    async fn probe_write(&self, now: UnixTime) -> Result<(), StoreError> {
        let mut tx = begin_write(self, &[]).await?;
        tx.sql(
            "INSERT INTO log_meta (name, value) VALUES ('write_probe', $1) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .arg(now.as_secs())
        .run()
        .await
        .map_err(unavailable)?;
        commit(self, tx).await
    }

    async fn purge(&self, now: UnixTime) -> Result<u64, StoreError> {
        // Serialised with appends, as SQLite's single writer serialises everything.
        let mut tx = begin_write(self, &[Lock::ChangeLog]).await?;
        let purged_max = tx
            .sql("SELECT MAX(sequence) AS purged FROM changes WHERE keep_until < $1")
            .arg(now.as_secs())
            .row()
            .await
            .map_err(unavailable)?
            .opt_sequence("purged")?;
        let mut removed = 0;
        for statement in [
            "DELETE FROM changes WHERE keep_until < $1",
            "DELETE FROM revoked_tokens WHERE keep_until < $1",
            "DELETE FROM client_cutoffs WHERE keep_until < $1",
        ] {
            removed += tx
                .sql(statement)
                .arg(now.as_secs())
                .run()
                .await
                .map_err(write_error)?;
        }
        if let Some(max) = purged_max {
            tx.sql(D::SQL.raise_purged_through)
                .arg(sequence_column(max)?)
                .run()
                .await
                .map_err(write_error)?;
        }
        commit(self, tx).await?;
        Ok(removed)
    }

    async fn wait_for_change(&self, at_most: std::time::Duration) {
        self.wait_for_announcement(at_most).await;
    }

    async fn update_client_policy(
        &self,
        client: &Client,
        now: UnixTime,
        audit: &AuditRecord,
    ) -> Result<ClientFlags, StoreError> {
        let mut tx = begin_write(self, &[]).await?;
        // Where the dialect locks the row, a disable or enable cannot land between this read
        // and the write: it waits, and comes after.
        let row = tx
            .sql(D::SQL.client_flags)
            .arg(client.id.as_str())
            .maybe_row()
            .await
            .map_err(unavailable)?
            .ok_or_else(|| StoreError::NotFound(format!("client {}", client.id)))?;
        let flags = ClientFlags {
            enabled: row.flag("enabled")?,
            has_secret: row.opt_bytes("secret_hash")?.is_some(),
        };
        write_policy::<D::Db>(&mut tx, client, now).await?;
        write_audit::<D>(&mut tx, audit, now).await?;
        commit(self, tx).await?;
        Ok(flags)
    }

    async fn sync_config_client(
        &self,
        client: &Client,
        overwrite: bool,
        now: UnixTime,
        audit: &AuditRecord,
    ) -> Result<ClientSync, StoreError> {
        // Replicas syncing the same config at once take turns: the second one finds the
        // client and keeps it. Without the lock, its insert would clash on the matcher's
        // unique index (not only on the id) and fail the start-up. A matcher taken by another
        // client is still `Conflict`.
        let mut tx = begin_write(self, &[Lock::ClientSync]).await?;
        let outcome = if insert_client::<D::Db>(&mut tx, client, now, true).await? {
            ClientSync::Inserted
        } else if overwrite {
            write_policy::<D::Db>(&mut tx, client, now).await?;
            // The config file is the authority here, enabled state included.
            tx.sql("UPDATE clients SET enabled = $1 WHERE id = $2")
                .arg(flag(client.enabled))
                .arg(client.id.as_str())
                .run()
                .await
                .map_err(write_error)?;
            ClientSync::Overwritten
        } else {
            ClientSync::Kept
        };
        if outcome != ClientSync::Kept {
            write_audit::<D>(&mut tx, audit, now).await?;
        }
        commit(self, tx).await?;
        Ok(outcome)
    }

    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let mut conn = acquire(self.reader()).await?;
        let statement = conn
            .sql(
                "SELECT * FROM audit_events WHERE id > $1 \
                 AND (CAST($2 AS TEXT) IS NULL OR actor = $2) \
                 AND (CAST($3 AS TEXT) IS NULL OR action = $3) \
                 AND (CAST($4 AS TEXT) IS NULL OR target = $4) \
                 AND (CAST($5 AS BIGINT) IS NULL OR at >= $5) ORDER BY id LIMIT $6",
            )
            .arg(cast_after(query.after_id))
            .arg(query.actor.as_deref())
            .arg(query.action.as_deref())
            .arg(query.target.as_deref())
            .arg(query.since.map(UnixTime::as_secs))
            .arg(i64::from(query.limit));
        read_all(statement, audit_event_from).await
    }

    async fn purge_audit(&self, before: UnixTime) -> Result<u64, StoreError> {
        let mut conn = acquire(self.writer()).await?;
        conn.sql("DELETE FROM audit_events WHERE at < $1")
            .arg(before.as_secs())
            .run()
            .await
            .map_err(write_error)
    }
}

/// The sealed pepper.
const PEPPER: &str = "SELECT kek_id, nonce, ciphertext FROM sealed_secrets WHERE name = 'pepper'";

/// A connection from `pool`.
async fn acquire<DB: Sql>(pool: &Pool<DB>) -> Result<PoolConnection<DB>, StoreError> {
    pool.acquire().await.map_err(unavailable)
}

/// A write transaction on the store's writer, holding `locks` (taken in this order).
async fn begin_write<D: Dialect>(
    store: &D,
    locks: &[Lock],
) -> Result<Transaction<'static, D::Db>, StoreError> {
    store.check_target()?;
    let mut tx = match store.writer().begin_with(D::SQL.begin_write).await {
        Ok(tx) => tx,
        // Every connection busy is load, not a stuck connection: no retry.
        Err(error @ sqlx::Error::PoolTimedOut) => return Err(unavailable(error)),
        Err(_) => {
            // The writer may be stuck inside a transaction a failed commit left open: a fresh
            // connection gets one more try.
            close_writer(store).await;
            store
                .writer()
                .begin_with(D::SQL.begin_write)
                .await
                .map_err(unavailable)?
        }
    };
    for lock in locks {
        D::lock(&mut tx, *lock).await?;
    }
    Ok(tx)
}

/// Commits `tx`, then checks the store is still where its path says: a write that went to a
/// database file removed or replaced under the running server is not acknowledged.
async fn commit<D: Dialect>(store: &D, tx: Transaction<'static, D::Db>) -> Result<(), StoreError> {
    if let Err(error) = tx.commit().await {
        // A commit refused by the database (SQLite's "database or disk is full") leaves the
        // transaction open on the connection, and sqlx then refuses every later `BEGIN` on it:
        // close it, so the next write starts on a fresh connection once the cause is gone.
        close_writer(store).await;
        return Err(unavailable(error));
    }
    store.check_target()
}

/// Closes the writer pool's idle connection (the pool opens a new one when next asked).
async fn close_writer<D: Dialect>(store: &D) {
    if let Ok(connection) = store.writer().acquire().await {
        let _ = connection.close().await;
    }
}

/// Runs `statement`; every row it returns, each read by `read`.
async fn read_all<DB: Sql, T>(
    statement: Bound<'_, DB>,
    read: impl Fn(&DB::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let rows = statement.rows().await.map_err(unavailable)?;
    rows.iter().map(read).collect()
}

/// `statement` with `sealed`'s `kek_id`, `nonce` and `ciphertext` bound to its next three
/// placeholders.
fn bind_sealed<'a, DB: Sql>(statement: Bound<'a, DB>, sealed: &'a Sealed) -> Bound<'a, DB> {
    statement
        .arg(sealed.kek_id.as_str())
        .arg(sealed.nonce.as_slice())
        .arg(sealed.ciphertext.as_slice())
}

/// A 0/1 flag as the schema stores it.
fn flag(value: bool) -> i16 {
    i16::from(value)
}

/// The revocation state in force at `now` (its revoked tokens only `with_tokens`), read in
/// one transaction so that the state and its marks agree.
async fn read_state<D: Dialect>(
    store: &D,
    now: UnixTime,
    with_tokens: bool,
) -> Result<State, StoreError> {
    let mut tx = store
        .reader()
        .begin_with(D::SQL.begin_snapshot)
        .await
        .map_err(unavailable)?;
    let tokens = if with_tokens {
        read_tokens::<D::Db>(&mut tx, now, 0, u64::MAX, u32::MAX).await?
    } else {
        Vec::new()
    };
    let cutoffs = tx
        .sql(
            "SELECT client_id, issued_at_or_before, sequence FROM client_cutoffs \
             WHERE keep_until >= $1 ORDER BY sequence",
        )
        .arg(now.as_secs());
    let cutoffs = read_all(cutoffs, cutoff_from).await?;
    let disabled_clients = read_all(tx.sql(D::SQL.disabled_clients), |row| {
        Ok((row.text("id")?, row.sequence("sequence")?))
    })
    .await?;
    let revoked_keys =
        read_all(tx.sql(D::SQL.revoked_keys), |row| Ok((row.text("kid")?, 0))).await?;
    let high_water = tx
        .sql(D::SQL.high_water)
        .row()
        .await
        .map_err(unavailable)?
        .sequence("high_water")?;
    let purged_through = tx
        .sql(
            "SELECT COALESCE((SELECT value FROM log_meta WHERE name = 'purged_through'), 0) \
             AS purged_through",
        )
        .row()
        .await
        .map_err(unavailable)?
        .sequence("purged_through")?;
    tx.commit().await.map_err(unavailable)?;
    Ok(State {
        tokens,
        cutoffs,
        disabled_clients,
        revoked_keys,
        high_water,
        purged_through,
    })
}

/// Up to `limit` revoked tokens in force at `now` with a sequence in (`after`, `through`], in
/// sequence order.
async fn read_tokens<DB: Sql>(
    conn: &mut DB::Connection,
    now: UnixTime,
    after: u64,
    through: u64,
    limit: u32,
) -> Result<Vec<RevokedToken>, StoreError> {
    let statement = conn
        .sql(
            "SELECT token_id, expires_at, client_id, revoked_by, sequence, revoked_at \
             FROM revoked_tokens WHERE keep_until >= $1 AND sequence > $2 AND sequence <= $3 \
             ORDER BY sequence LIMIT $4",
        )
        .arg(now.as_secs())
        .arg(cast_after(after))
        .arg(cast_after(through))
        .arg(i64::from(limit));
    read_all(statement, revoked_token_from).await
}

/// Applies a key step's state changes, deletions and new keys, after its check.
async fn change_keys<DB: Sql>(
    conn: &mut DB::Connection,
    t: &KeyTransition,
) -> Result<(), StoreError> {
    for (kid, state) in &t.set_state {
        let column = match state {
            KeyState::Current => "activated_at",
            KeyState::Retired => "retired_at",
            KeyState::Revoked => "revoked_at",
            KeyState::Next => "created_at",
        };
        let updated = conn
            .sql(&format!(
                "UPDATE signing_keys SET state = $1, {column} = $2 WHERE kid = $3"
            ))
            .arg(state.as_str())
            .arg(t.at.as_secs())
            .arg(kid.as_str())
            .run()
            .await
            .map_err(write_error)?;
        if updated != 1 {
            return Err(StoreError::NotFound(format!("key {kid}")));
        }
        crate::failpoint::hit("key-step");
    }
    for kid in &t.delete {
        conn.sql("DELETE FROM signing_keys WHERE kid = $1")
            .arg(kid.as_str())
            .run()
            .await
            .map_err(write_error)?;
    }
    for key in &t.insert {
        insert_key::<DB>(&mut *conn, key).await?;
    }
    Ok(())
}

/// Inserts one signing key.
async fn insert_key<DB: Sql>(conn: &mut DB::Connection, key: &KeyRecord) -> Result<(), StoreError> {
    let (x, y) = public_columns(&key.public);
    let statement = conn.sql(
        "INSERT INTO signing_keys (kek_id, nonce, ciphertext, held_by, held_ref, kid, algorithm, \
         state, public_x, public_y, created_at, activated_at, retired_at, revoked_at, \
         low_s_only) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    );
    let sealed = key.sealed();
    let held = match &key.private {
        PrivateHalf::Held { custody, reference } => Some((custody.as_str(), reference.as_str())),
        PrivateHalf::Sealed(_) => None,
    };
    statement
        .arg(sealed.map(|s| s.kek_id.as_str()))
        .arg(sealed.map(|s| s.nonce.as_slice()))
        .arg(sealed.map(|s| s.ciphertext.as_slice()))
        .arg(held.map(|(custody, _)| custody))
        .arg(held.map(|(_, reference)| reference))
        .arg(key.kid.as_str())
        .arg(key.algorithm.as_str())
        .arg(key.state.as_str())
        .arg(x.as_slice())
        .arg(y.as_deref())
        .arg(key.created_at.as_secs())
        .arg(key.activated_at.map(UnixTime::as_secs))
        .arg(key.retired_at.map(UnixTime::as_secs))
        .arg(key.revoked_at.map(UnixTime::as_secs))
        .arg(flag(key.low_s_only))
        .run()
        .await
        .map_err(write_error)?;
    Ok(())
}

/// Whether `change` is already in force (a token already revoked), so committing it writes
/// nothing; `NotFound` for a client change naming an unknown client.
async fn in_force<DB: Sql>(conn: &mut DB::Connection, change: &Change) -> Result<bool, StoreError> {
    match change {
        Change::TokenRevoked { token_id, .. } => {
            let revoked = "SELECT 1 FROM revoked_tokens WHERE token_id = $1";
            exists::<DB>(conn, revoked, token_id).await
        }
        Change::ClientCutoff { client_id, .. }
        | Change::ClientDisabled { client_id }
        | Change::ClientEnabled { client_id } => {
            if exists::<DB>(conn, "SELECT 1 FROM clients WHERE id = $1", client_id).await? {
                Ok(false)
            } else {
                Err(StoreError::NotFound(format!("client {client_id}")))
            }
        }
        Change::KeyRevoked { .. } => Ok(false),
    }
}

/// Whether `statement` finds a row for `key` (its `$1`).
async fn exists<DB: Sql>(
    conn: &mut DB::Connection,
    statement: &str,
    key: &str,
) -> Result<bool, StoreError> {
    let row = conn
        .sql(statement)
        .arg(key)
        .maybe_row()
        .await
        .map_err(unavailable)?;
    Ok(row.is_some())
}

/// Appends `change` to the change log, numbered in commit order, and announces it: its event.
/// The transaction holds [`Lock::ChangeLog`] (taken again here, which is a no-op when held),
/// so that sequence order is commit order.
async fn log_change<D: Dialect>(
    conn: &mut Conn<D>,
    change: &Change,
    now: UnixTime,
    log_until: UnixTime,
) -> Result<Event, StoreError> {
    D::lock(&mut *conn, Lock::ChangeLog).await?;
    let assigned = match D::SQL.next_sequence {
        Some(statement) => {
            let row = conn.sql(statement).row().await.map_err(write_error)?;
            Some(sequence_column(row.sequence("value")?)?)
        }
        None => None,
    };
    let columns = ChangeColumns::of(change);
    let row = conn
        .sql(
            "INSERT INTO changes (sequence, kind, token_id, client_id, key_id, revoked_by, \
         expires_at, issued_at_or_before, committed_at, keep_until) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING sequence",
        )
        .arg(assigned)
        .arg(columns.kind)
        .arg(columns.token_id)
        .arg(columns.client_id)
        .arg(columns.key_id)
        .arg(columns.revoked_by)
        .arg(columns.expires_at)
        .arg(columns.issued_at_or_before)
        .arg(now.as_secs())
        .arg(log_until.as_secs())
        .row()
        .await
        .map_err(write_error)?;
    let sequence = row.sequence("sequence")?;
    D::announce(&mut *conn, sequence).await?;
    Ok(Event {
        sequence,
        committed_at: now,
        change: change.clone(),
    })
}

/// Writes the state `change`, logged as `sequence`, puts in force (needed until
/// `state_until`): a revoked token, a cut-off, a client's `enabled` flag. A key revocation's
/// state is its key's.
async fn put_in_force<D: Dialect>(
    conn: &mut Conn<D>,
    change: &Change,
    sequence: u64,
    now: UnixTime,
    state_until: UnixTime,
) -> Result<(), StoreError> {
    let sequence = sequence_column(sequence)?;
    let statement = match change {
        Change::TokenRevoked {
            token_id,
            expires_at,
            client_id,
            revoked_by,
        } => conn.sql(
            "INSERT INTO revoked_tokens (token_id, expires_at, client_id, revoked_by, \
             sequence, revoked_at, keep_until) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .arg(token_id.as_str())
        .arg(expires_at.as_secs())
        .arg(client_id.as_deref())
        .arg(revoked_by.as_str())
        .arg(sequence)
        .arg(now.as_secs())
        .arg(state_until.as_secs()),
        Change::ClientCutoff {
            client_id,
            issued_at_or_before,
        } => conn.sql(D::SQL.upsert_cutoff)
            .arg(client_id.as_str())
            .arg(issued_at_or_before.as_secs())
            .arg(sequence)
            .arg(state_until.as_secs()),
        Change::ClientDisabled { client_id } => conn.sql(
            "UPDATE clients SET enabled = 0, disabled_sequence = $1, updated_at = $2 WHERE id = $3",
        )
        .arg(sequence)
        .arg(now.as_secs())
        .arg(client_id.as_str()),
        Change::ClientEnabled { client_id } => conn.sql(
            "UPDATE clients SET enabled = 1, disabled_sequence = NULL, updated_at = $1 WHERE id = $2",
        )
        .arg(now.as_secs())
        .arg(client_id.as_str()),
        Change::KeyRevoked { .. } => return Ok(()),
    };
    statement.run().await.map_err(write_error)?;
    Ok(())
}

/// Writes one audit event, in the transaction of the change it records.
async fn write_audit<D: Dialect>(
    conn: &mut Conn<D>,
    record: &AuditRecord,
    at: UnixTime,
) -> Result<(), StoreError> {
    D::lock(&mut *conn, Lock::Audit).await?;
    conn.sql(
        "INSERT INTO audit_events (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .arg(at.as_secs())
    .arg(record.actor.as_str())
    .arg(record.action)
    .arg(record.target.as_str())
    .arg(record.detail_json())
    .run()
    .await
    .map_err(write_error)?;
    Ok(())
}

/// Inserts `client` and its pins; with `if_absent`, an existing id is left alone. Whether a
/// row was inserted.
async fn insert_client<DB: Sql>(
    conn: &mut DB::Connection,
    client: &Client,
    now: UnixTime,
    if_absent: bool,
) -> Result<bool, StoreError> {
    let statement = format!(
        "INSERT INTO clients ({POLICY_COLUMNS}, id, enabled, secret_hash, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
         $16, $17, $18, $19, $19){}",
        if if_absent {
            " ON CONFLICT (id) DO NOTHING"
        } else {
            ""
        }
    );
    let inserted = bind_policy(conn.sql(&statement), client)
        .arg(client.id.as_str())
        .arg(flag(client.enabled))
        .arg(client.secret_hash.as_deref())
        .arg(now.as_secs())
        .run()
        .await
        .map_err(write_error)?;
    if inserted != 1 {
        return Ok(false);
    }
    write_pins::<DB>(conn, client).await?;
    write_serves::<DB>(conn, client).await?;
    Ok(true)
}

/// Writes a stored client's policy from `client`: everything but its enabled state and its
/// secret.
async fn write_policy<DB: Sql>(
    conn: &mut DB::Connection,
    client: &Client,
    now: UnixTime,
) -> Result<(), StoreError> {
    let statement = format!(
        "UPDATE clients SET ({POLICY_COLUMNS}, updated_at) = \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) WHERE id = $17"
    );
    bind_policy(conn.sql(&statement), client)
        .arg(now.as_secs())
        .arg(client.id.as_str())
        .run()
        .await
        .map_err(write_error)?;
    write_pins::<DB>(conn, client).await?;
    write_serves::<DB>(conn, client).await
}

/// A client's policy columns, in the order [`bind_policy`] binds them.
const POLICY_COLUMNS: &str = "matcher_kind, matcher_value, scopes, default_scopes, audiences, \
     default_audiences, permissions, default_lifetime_s, max_lifetime_s, introspect_audiences, \
     serves, act_for, delegate_audiences, delegate_scopes, asserts_txn_subjects";

/// `statement` with `client`'s [`POLICY_COLUMNS`] bound to its next fifteen placeholders.
fn bind_policy<'a, DB: Sql>(statement: Bound<'a, DB>, client: &Client) -> Bound<'a, DB> {
    statement
        .arg(client.matcher.kind())
        .arg(client.matcher.value())
        .arg(json_list(&client.scopes))
        .arg(json_list(&client.default_scopes))
        .arg(json_list(&client.audiences))
        .arg(json_list(&client.default_audiences))
        .arg(json_list(&permission_names(client)))
        .arg(whole_secs(client.default_lifetime))
        .arg(whole_secs(client.max_lifetime))
        .arg(json_list(&client.introspect_audiences))
        .arg(json_list(&client.exchange.serves))
        .arg(json_list(&client.exchange.act_for))
        .arg(json_list(&client.exchange.delegate_audiences))
        .arg(json_list(&client.exchange.delegate_scopes))
        .arg(flag(client.exchange.asserts_txn_subjects))
}

/// Replaces the audiences `client` serves; one another client serves is a `Conflict`.
async fn write_serves<DB: Sql>(
    conn: &mut DB::Connection,
    client: &Client,
) -> Result<(), StoreError> {
    conn.sql("DELETE FROM client_serves WHERE client_id = $1")
        .arg(client.id.as_str())
        .run()
        .await
        .map_err(write_error)?;
    for audience in &client.exchange.serves {
        conn.sql("INSERT INTO client_serves (audience, client_id) VALUES ($1, $2)")
            .arg(audience.as_str())
            .arg(client.id.as_str())
            .run()
            .await
            .map_err(|e| match write_error(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!(
                    "audience {audience:?} is served by another client"
                )),
                other => other,
            })?;
    }
    Ok(())
}

/// Replaces the pinned thumbprints of `client`; a thumbprint another client pins is a
/// `Conflict`.
async fn write_pins<DB: Sql>(conn: &mut DB::Connection, client: &Client) -> Result<(), StoreError> {
    conn.sql("DELETE FROM client_pins WHERE client_id = $1")
        .arg(client.id.as_str())
        .run()
        .await
        .map_err(write_error)?;
    for pin in client.matcher.pins() {
        conn.sql("INSERT INTO client_pins (thumbprint, client_id) VALUES ($1, $2)")
            .arg(pin.to_b64url())
            .arg(client.id.as_str())
            .run()
            .await
            .map_err(write_error)?;
    }
    Ok(())
}
