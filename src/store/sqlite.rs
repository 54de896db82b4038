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

use super::{ClientSync, Store, StoreError};
use crate::{
    client::{Client, ClientId, Permission},
    crypto::{Algorithm, PublicKey, Sealed},
    identity::CertificateMatcher,
    keys::{KeyId, KeyRecord, KeyState},
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// A SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn write_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        _ => unavailable(e),
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
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
}

fn json_list(value: &[String]) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_list(row: &SqliteRow, column: &str) -> Result<Vec<String>, StoreError> {
    let text: String = row
        .try_get(column)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn corrupt(e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn key_from_row(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    let kid: String = row.try_get("kid").map_err(corrupt)?;
    let algorithm_name: String = row.try_get("algorithm").map_err(corrupt)?;
    let algorithm = Algorithm::try_from_name(&algorithm_name)
        .ok_or_else(|| StoreError::Corrupt(format!("key {kid}: algorithm {algorithm_name:?}")))?;
    let state_name: String = row.try_get("state").map_err(corrupt)?;
    let state = KeyState::try_from_name(&state_name)
        .ok_or_else(|| StoreError::Corrupt(format!("key {kid}: state {state_name:?}")))?;
    let x: Vec<u8> = row.try_get("public_x").map_err(corrupt)?;
    let y: Option<Vec<u8>> = row.try_get("public_y").map_err(corrupt)?;
    let public = match (algorithm, y) {
        (Algorithm::Es256, Some(y)) => PublicKey::P256 { x, y },
        (Algorithm::EdDsa, None) => PublicKey::Ed25519 { x },
        _ => return Err(StoreError::Corrupt(format!("key {kid}: public key shape"))),
    };
    Ok(KeyRecord {
        kid: KeyId::from_stored(kid),
        algorithm,
        state,
        public,
        sealed: Sealed {
            kek_id: row.try_get("kek_id").map_err(corrupt)?,
            nonce: row.try_get("nonce").map_err(corrupt)?,
            ciphertext: row.try_get("ciphertext").map_err(corrupt)?,
        },
        created_at: row.try_get("created_at").map_err(corrupt)?,
        activated_at: row.try_get("activated_at").map_err(corrupt)?,
        retired_at: row.try_get("retired_at").map_err(corrupt)?,
        revoked_at: row.try_get("revoked_at").map_err(corrupt)?,
    })
}

fn client_from_row(row: &SqliteRow) -> Result<Client, StoreError> {
    let id: String = row.try_get("id").map_err(corrupt)?;
    let id = ClientId::try_new(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let kind: String = row.try_get("matcher_kind").map_err(corrupt)?;
    let value: String = row.try_get("matcher_value").map_err(corrupt)?;
    let matcher = CertificateMatcher::try_from_parts(&kind, &value)
        .map_err(|e| StoreError::Corrupt(format!("client {id}: {e}")))?;
    let permissions = parse_list(row, "permissions")?
        .iter()
        .map(|p| {
            Permission::try_from_name(p)
                .ok_or_else(|| StoreError::Corrupt(format!("client {id}: permission {p:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let lifetime = |column: &str| -> Result<Duration, StoreError> {
        let s: i64 = row.try_get(column).map_err(corrupt)?;
        u64::try_from(s)
            .map(Duration::from_secs)
            .map_err(|_| StoreError::Corrupt(format!("client {id}: {column}")))
    };
    Ok(Client {
        matcher,
        scopes: parse_list(row, "scopes")?,
        default_scopes: parse_list(row, "default_scopes")?,
        audiences: parse_list(row, "audiences")?,
        default_audiences: parse_list(row, "default_audiences")?,
        permissions,
        default_lifetime: lifetime("default_lifetime_s")?,
        max_lifetime: lifetime("max_lifetime_s")?,
        enabled: row.try_get::<i64, _>("enabled").map_err(corrupt)? == 1,
        secret_hash: row.try_get("secret_hash").map_err(corrupt)?,
        id,
    })
}

fn permission_names(client: &Client) -> Vec<String> {
    client
        .permissions
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        rows.iter().map(key_from_row).collect()
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
            let (x, y) = match &key.public {
                PublicKey::P256 { x, y } => (x.clone(), Some(y.clone())),
                PublicKey::Ed25519 { x } => (x.clone(), None),
            };
            sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, state, public_x, public_y, kek_id, nonce, \
                 ciphertext, created_at, activated_at, retired_at, revoked_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            .execute(&mut *tx)
            .await
            .map_err(write_error)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn pepper(&self) -> Result<Option<Sealed>, StoreError> {
        let row = sqlx::query(
            "SELECT kek_id, nonce, ciphertext FROM sealed_secrets WHERE name = 'pepper'",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.map(|row| {
            Ok(Sealed {
                kek_id: row.try_get("kek_id").map_err(corrupt)?,
                nonce: row.try_get("nonce").map_err(corrupt)?,
                ciphertext: row.try_get("ciphertext").map_err(corrupt)?,
            })
        })
        .transpose()
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
        Ok(Sealed {
            kek_id: row.try_get("kek_id").map_err(corrupt)?,
            nonce: row.try_get("nonce").map_err(corrupt)?,
            ciphertext: row.try_get("ciphertext").map_err(corrupt)?,
        })
    }

    async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        let rows = sqlx::query("SELECT * FROM clients ORDER BY id")
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        rows.iter().map(client_from_row).collect()
    }

    async fn insert_client(&self, client: &Client, now: i64) -> Result<(), StoreError> {
        insert(&self.writer, client, now).await
    }

    async fn sync_config_client(
        &self,
        client: &Client,
        overwrite: bool,
        now: i64,
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
                insert(&mut *tx, client, now).await?;
                ClientSync::Inserted
            }
            (true, false) => ClientSync::Kept,
            (true, true) => {
                sqlx::query(
                    "UPDATE clients SET matcher_kind = ?, matcher_value = ?, scopes = ?, \
                     default_scopes = ?, audiences = ?, default_audiences = ?, permissions = ?, \
                     default_lifetime_s = ?, max_lifetime_s = ?, enabled = ?, updated_at = ? \
                     WHERE id = ?",
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
                .bind(i64::from(client.enabled))
                .bind(now)
                .bind(client.id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
                ClientSync::Overwritten
            }
        };
        tx.commit().await.map_err(unavailable)?;
        Ok(outcome)
    }
}

async fn insert<'e, E>(executor: E, client: &Client, now: i64) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT INTO clients (id, matcher_kind, matcher_value, scopes, default_scopes, audiences, \
         default_audiences, permissions, default_lifetime_s, max_lifetime_s, enabled, secret_hash, \
         created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .execute(executor)
    .await
    .map_err(write_error)?;
    Ok(())
}
