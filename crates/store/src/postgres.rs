//! The PostgreSQL back-end, for several replicas sharing one database. It implements the
//! same [`Store`](crate::Store) contract as the SQLite back-end, with the same results;
//! where SQLite relies on its single writer, this back-end takes transaction-scoped advisory
//! locks. The store methods are written once for both back-ends (`shared`); this module
//! gives the pool, the statements PostgreSQL spells its own way, its locks and its change
//! notifications.
//!
//! # Sequence numbers: commit order is sequence order
//!
//! A `BIGSERIAL` column would hand out numbers at insert time, so two replicas could commit
//! 11 before 10 and a watcher resuming after 11 would never see 10. Instead every
//! transaction that appends to `changes` (a revocation or client change, a key step that
//! carries a key revocation) and the log purge first take
//! `pg_advisory_xact_lock(`[`CHANGE_LOG_LOCK`]`)`. Holding it, the writer bumps the
//! one-row counter `log_meta 'high_water'` and uses its new value as the sequence, all in
//! the same transaction. The lock is released only after the commit is visible, so the next
//! writer numbers its change after every change committed before it; a rolled-back writer
//! rolls the counter back too, so there are no gaps. The counter outlives purged rows, so a
//! number is never reused; [`revocation_state`](crate::Store::revocation_state) reports it
//! as `high_water`, read with the state in one `REPEATABLE READ` read-only transaction so
//! the two agree. After each append the transaction calls
//! `pg_notify(`[`CHANGES_CHANNEL`]`, sequence)`, delivered at commit: it only wakes
//! listeners, which then read by sequence.
//!
//! # Key steps: one replica applies each rotation step
//!
//! `create_initial_keys`, `apply_key_transition` and `reseal` take
//! `pg_advisory_xact_lock(`[`KEY_LOCK`]`)` first, then check (an empty key table; the
//! expected current key), so when replicas race exactly one step applies and the others get
//! `false` or `Conflict`. A key step that logs an event takes [`KEY_LOCK`] before
//! [`CHANGE_LOG_LOCK`], and nothing takes them in the other order, so they cannot deadlock.
//!
//! # Connections
//!
//! A pool of [`MAX_CONNECTIONS`] connections (acquire timeout [`ACQUIRE_TIMEOUT`]). Each
//! pooled connection sets `lock_timeout` (a write waiting that long for a lock fails as
//! `Unavailable` rather than hanging) and `idle_in_transaction_session_timeout` (a replica
//! that stalls inside a transaction cannot hold the change-log lock for every other replica
//! indefinitely). Migrations run on open, on their own connection, under sqlx's migration
//! lock, so replicas starting together migrate once. The URL may carry a password: errors
//! name only the host, port and database, and error text from the driver is scrubbed of the
//! URL's secrets.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Connection, Executor, PgPool, Postgres, Row,
    postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions, PgRow},
};

use super::StoreError;
use super::dialect::{Dialect, Lock, Statements};
use super::rows::{Columns, corrupt, unavailable};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The advisory-lock key every transaction that appends to (or purges) the change log holds
/// while it assigns a sequence number and commits (ASCII `tmchglog`).
pub const CHANGE_LOG_LOCK: i64 = 0x746d_6368_676c_6f67;

/// The advisory-lock key every key-lifecycle step holds (ASCII `tmkeyset`).
pub const KEY_LOCK: i64 = 0x746d_6b65_7973_6574;

/// The advisory-lock key a config-client sync holds, so replicas starting at once with the
/// same config insert each client once (ASCII `tmclisyn`).
pub const CLIENT_SYNC_LOCK: i64 = 0x746d_636c_6973_796e;

/// The advisory-lock key every audited write holds from its audit insert to its commit, so
/// audit ids are assigned in commit order and a reader paging by id never skips one (ASCII
/// `tmaudits`). Always the last lock a transaction takes.
pub const AUDIT_LOCK: i64 = 0x746d_6175_6469_7473;

/// The `LISTEN/NOTIFY` channel a committed change is announced on; the payload is its
/// sequence number. A notification only wakes a replica, which then reads by sequence.
pub const CHANGES_CHANNEL: &str = "tokenmint_changes";

/// How many connections the pool holds at most.
pub const MAX_CONNECTIONS: u32 = 8;

/// How long an operation waits for a pooled connection before failing as `Unavailable`.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Set on every pooled connection: lock waits are bounded, and so are stalled transactions.
const SESSION_SETTINGS: &str =
    "SET lock_timeout = '10s'; SET idle_in_transaction_session_timeout = '30s'";

/// A PostgreSQL database shared by the replicas.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    // The notification connection `wait_for_change` waits on (`None`: not yet, or lost).
    listener: std::sync::Arc<tokio::sync::Mutex<Option<PgListener>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

/// `text` with `%XX` escapes decoded (lossily), as a URL's user info is written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'%'), Some(&h), Some(&l)) => match (hex(h), hex(l)) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            (Some(&b), _, _) => {
                out.push(b);
                i += 1;
            }
            (None, _, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Everything in `url` that may be secret: the URL itself, its user info and password (as
/// written and decoded), and any `password=` query parameter.
fn secrets_of(url: &str) -> Vec<String> {
    let mut secrets = vec![url.to_owned()];
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    if let Some((userinfo, _)) = before_query.rsplit_once('@') {
        secrets.push(userinfo.to_owned());
        if let Some((_, password)) = userinfo.split_once(':') {
            secrets.push(password.to_owned());
            secrets.push(percent_decode(password));
        }
    }
    for pair in query.split('&') {
        if let Some((name, value)) = pair.split_once('=')
            && name.eq_ignore_ascii_case("password")
        {
            secrets.push(value.to_owned());
            secrets.push(percent_decode(value));
        }
    }
    secrets.retain(|s| !s.is_empty());
    // Longest first, so a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// `message` with every secret replaced by `***`.
fn scrub(message: &str, secrets: &[String]) -> String {
    secrets.iter().fold(message.to_owned(), |m, secret| {
        m.replace(secret.as_str(), "***")
    })
}

/// Where the options point, without credentials: `host:port/database`.
fn describe(options: &PgConnectOptions) -> String {
    let host = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let database = options
        .get_database()
        .unwrap_or_else(|| options.get_username());
    format!("{host}/{database}")
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://…` or `postgresql://…`), applies the
    /// migrations in `crates/store/migrations/postgres`, and opens the connection pool. Errors name the
    /// server and database, never the password.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let secrets = secrets_of(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Unavailable(format!(
                "store.url is not a usable PostgreSQL URL: {}",
                scrub(&e.to_string(), &secrets)
            ))
        })?;
        Self::open_with(options, &secrets).await
    }

    async fn open_with(options: PgConnectOptions, secrets: &[String]) -> Result<Self, StoreError> {
        let target = describe(&options);
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!(
                "{what} PostgreSQL at {target}: {}",
                scrub(&e.to_string(), secrets)
            ))
        };
        // Migrations on a connection of their own: sqlx holds a session advisory lock while
        // it migrates, which the pool's lock_timeout must not cut short.
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(|e| fail("cannot connect to", &e))?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| fail("migrating", &e))?;
        conn.close().await.map_err(|e| fail("migrating", &e))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(SESSION_SETTINGS).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| fail("cannot connect to", &e))?;
        let store = Self {
            pool,
            listener: std::sync::Arc::default(),
        };
        match store.connection_encrypted().await {
            Ok(true) => tracing::info!(%target, "connected to PostgreSQL over TLS"),
            Ok(false) => tracing::warn!(
                %target,
                "the PostgreSQL connection is not encrypted: add sslmode=verify-full (and sslrootcert) to store.url unless the server is on this host"
            ),
            Err(e) => {
                tracing::debug!(error = %e, "could not tell whether the PostgreSQL connection uses TLS")
            }
        }
        Ok(store)
    }

    /// Whether a pooled connection is encrypted with TLS (`pg_stat_ssl`).
    pub async fn connection_encrypted(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)
    }

    /// `SHOW synchronous_commit` as a pooled connection runs it (`on` unless configured
    /// otherwise: a commit is durable before it is acknowledged).
    pub async fn synchronous_commit(&self) -> Result<String, StoreError> {
        sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)
    }

    /// A listener on a connection of its own, subscribed to [`CHANGES_CHANNEL`]. A
    /// notification (payload: the sequence) only says "read the log"; sqlx reconnects a lost
    /// listener, after which the caller should catch up by sequence at once.
    pub async fn listen(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(unavailable)?;
        listener
            .listen(CHANGES_CHANNEL)
            .await
            .map_err(unavailable)?;
        Ok(listener)
    }
}

/// Takes the transaction-scoped advisory lock `key` (released at commit or rollback).
async fn advisory_lock(conn: &mut PgConnection, key: i64) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await
        .map_err(unavailable)?;
    Ok(())
}

impl Columns for PgRow {
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
        Ok(self.try_get::<i16, _>(column).map_err(corrupt)? == 1)
    }
}

#[async_trait]
impl Dialect for PostgresStore {
    type Db = Postgres;

    const SQL: Statements = Statements {
        begin_write: "BEGIN",
        // One snapshot, so the state and its high-water mark agree.
        begin_snapshot: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        // COLLATE "C": byte order, as SQLite sorts text.
        keys: "SELECT * FROM signing_keys ORDER BY created_at, kid COLLATE \"C\"",
        clients: "SELECT * FROM clients ORDER BY id COLLATE \"C\"",
        // The row lock keeps a disable or enable from landing between this read and the
        // write: it waits, and comes after.
        client_flags: "SELECT enabled, secret_hash FROM clients WHERE id = $1 FOR UPDATE",
        upsert_cutoff: "INSERT INTO client_cutoffs (client_id, issued_at_or_before, sequence, \
             keep_until) VALUES ($1, $2, $3, $4) ON CONFLICT (client_id) DO UPDATE SET \
             issued_at_or_before = GREATEST(client_cutoffs.issued_at_or_before, \
             excluded.issued_at_or_before), sequence = excluded.sequence, \
             keep_until = GREATEST(client_cutoffs.keep_until, excluded.keep_until)",
        raise_purged_through: "INSERT INTO log_meta (name, value) VALUES ('purged_through', $1) \
             ON CONFLICT (name) DO UPDATE SET value = GREATEST(log_meta.value, excluded.value)",
        disabled_clients: "SELECT id, COALESCE(disabled_sequence, 0) AS sequence FROM clients \
             WHERE enabled = 0 ORDER BY id COLLATE \"C\"",
        revoked_keys: "SELECT kid FROM signing_keys WHERE state = 'revoked' \
             ORDER BY kid COLLATE \"C\"",
        high_water: "SELECT COALESCE((SELECT value FROM log_meta WHERE name = 'high_water'), 0) \
             AS high_water",
        // The counter starts above anything already logged or purged, and is only ever bumped.
        next_sequence: Some(
            "INSERT INTO log_meta (name, value) VALUES ('high_water', \
             GREATEST((SELECT COALESCE(MAX(sequence), 0) FROM changes), \
             (SELECT COALESCE(MAX(value), 0) FROM log_meta WHERE name = 'purged_through')) + 1) \
             ON CONFLICT (name) DO UPDATE SET value = log_meta.value + 1 RETURNING value",
        ),
    };

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    async fn lock(conn: &mut PgConnection, lock: Lock) -> Result<(), StoreError> {
        let key = match lock {
            Lock::Keys => KEY_LOCK,
            Lock::ChangeLog => CHANGE_LOG_LOCK,
            Lock::ClientSync => CLIENT_SYNC_LOCK,
            Lock::Audit => AUDIT_LOCK,
        };
        advisory_lock(conn, key).await
    }

    async fn announce(conn: &mut PgConnection, sequence: u64) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(sequence.to_string())
            .execute(conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn wait_for_announcement(&self, at_most: Duration) {
        let mut guard = self.listener.lock().await;
        let Some(listener) = guard.as_mut() else {
            match self.listen().await {
                // Newly listening: whatever was committed before is read by the catch-up that
                // follows at once.
                Ok(listener) => *guard = Some(listener),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for change notifications; polling");
                    drop(guard);
                    tokio::time::sleep(at_most).await;
                }
            }
            return;
        };
        match tokio::time::timeout(at_most, listener.try_recv()).await {
            // A notification, or the periodic catch-up: read the log either way.
            Ok(Ok(Some(_))) | Err(_) => {}
            // The connection was lost (sqlx reconnects on the next call): catch up at once.
            Ok(Ok(None)) => tracing::info!("change notifications reconnected; catching up"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "change notifications failed; catching up and listening again");
                *guard = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Checks that need a server run only when `TOKENMINT_TEST_POSTGRES_URL` names one (a
    //! role that may create databases); each creates and drops a scratch database of its own.
    //! The shared contract suite lives in tests/integration/store_contract.rs.

    use std::sync::Arc;

    use super::*;
    use crate::{ClientSync, Committed, Store, sqlite::SqliteStore};
    use std::time::Duration;
    use tokenmint_core::clock::UnixTime;
    use tokenmint_core::{
        client::{Client, ClientId, Permission},
        crypto::{Algorithm, Kek, Sealed},
        identity::CertificateMatcher,
        keys::{KeyId, KeyRecord, KeyState},
        revocation::Change,
        rotation::KeyTransition,
    };

    const URL_VAR: &str = "TOKENMINT_TEST_POSTGRES_URL";

    /// An audit record for store calls made directly by a test.
    fn audit() -> tokenmint_core::audit::AuditRecord {
        tokenmint_core::audit::AuditRecord::new("test", "test.change", "")
    }

    struct Scratch {
        admin: PgConnectOptions,
        options: PgConnectOptions,
        name: String,
    }

    impl Scratch {
        async fn create() -> Option<Self> {
            let Ok(url) = std::env::var(URL_VAR) else {
                println!("skipped: {URL_VAR} is not set");
                return None;
            };
            let admin = PgConnectOptions::from_str(&url).unwrap();
            let name = format!(
                "tm_unit_{}",
                tokenmint_core::crypto::hex(&tokenmint_core::crypto::random_bytes::<8>().unwrap())
            );
            let mut conn = PgConnection::connect_with(&admin).await.unwrap();
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap();
            conn.close().await.unwrap();
            let options = admin.clone().database(&name);
            Some(Self {
                admin,
                options,
                name,
            })
        }

        async fn open(&self) -> PostgresStore {
            PostgresStore::open_with(self.options.clone(), &[])
                .await
                .unwrap()
        }

        async fn drop_database(self) {
            let mut conn = PgConnection::connect_with(&self.admin).await.unwrap();
            conn.execute(format!("DROP DATABASE {} WITH (FORCE)", self.name).as_str())
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }

    #[tokio::test]
    async fn tls_is_used_when_asked_and_a_server_certificate_from_another_ca_is_refused() {
        use sqlx::postgres::PgSslMode;
        let Some(scratch) = Scratch::create().await else {
            return;
        };
        let mut conn = PgConnection::connect_with(&scratch.admin).await.unwrap();
        let ssl: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        if ssl != "on" {
            println!("skipped: the PostgreSQL server has ssl = {ssl}");
            scratch.drop_database().await;
            return;
        }

        let required = scratch.options.clone().ssl_mode(PgSslMode::Require);
        let store = PostgresStore::open_with(required, &[]).await.unwrap();
        assert!(store.connection_encrypted().await.unwrap());
        store.pool.close().await;
        let plain = scratch.options.clone().ssl_mode(PgSslMode::Disable);
        let store = PostgresStore::open_with(plain, &[]).await.unwrap();
        assert!(!store.connection_encrypted().await.unwrap());
        store.pool.close().await;

        // verify-full against a CA that did not sign the server's certificate.
        let dir = tempfile::tempdir().unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["not-the-servers-ca".into()]).unwrap();
        let root = dir.path().join("root.pem");
        std::fs::write(&root, other.cert.pem()).unwrap();
        let wrong = scratch
            .options
            .clone()
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert(&root);
        let refused = PostgresStore::open_with(wrong, &[]).await.unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains("cannot connect to PostgreSQL"),
            "{message}"
        );
        assert!(
            message.to_ascii_lowercase().contains("certificate")
                || message.to_ascii_lowercase().contains("tls"),
            "{message}"
        );
        scratch.drop_database().await;
    }

    fn client(id: &str, uri: &str) -> Client {
        Client {
            id: ClientId::try_new(id).unwrap(),
            matcher: CertificateMatcher::try_san_uri(uri).unwrap(),
            scopes: vec!["read".into(), "write".into()],
            default_scopes: vec!["read".into()],
            audiences: vec!["api".into()],
            default_audiences: vec!["api".into()],
            introspect_audiences: vec![],
            exchange: Default::default(),
            permissions: vec![Permission::Issue],
            default_lifetime: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(900),
            enabled: true,
            secret_hash: Some(vec![1, 2, 3]),
        }
    }

    fn outcome<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
        match r {
            Ok(v) => format!("{v:?}"),
            Err(StoreError::Unavailable(_)) => "Unavailable".into(),
            Err(StoreError::Conflict(_)) => "Conflict".into(),
            Err(StoreError::Corrupt(_)) => "Corrupt".into(),
            Err(StoreError::NotFound(_)) => "NotFound".into(),
        }
    }

    /// One scripted run of every method; a transcript of what each call returned.
    async fn script(store: &dyn Store, keys: &[KeyRecord]) -> Vec<String> {
        let mut out = Vec::new();
        let now = UnixTime::from_secs(1_000);
        out.push(outcome(store.keys().await));
        out.push(outcome(store.create_initial_keys(&keys[..2]).await));
        out.push(outcome(store.create_initial_keys(&keys[2..]).await));
        out.push(outcome(store.keys().await));
        // A step against the wrong current key, then a real one that revokes the current key.
        let wrong = KeyTransition {
            lane: keys[1].algorithm,
            expect_current: Some(keys[1].kid.clone()),
            expect_states: vec![],
            set_state: vec![],
            insert: vec![],
            delete: vec![],
            event: None,
            at: now,
        };
        out.push(outcome(
            store
                .apply_key_transition(&wrong, now + Duration::from_secs(10), &audit())
                .await,
        ));
        let revoke = KeyTransition {
            lane: keys[0].algorithm,
            expect_current: Some(keys[0].kid.clone()),
            expect_states: vec![],
            set_state: vec![
                (keys[0].kid.clone(), KeyState::Revoked),
                (keys[1].kid.clone(), KeyState::Current),
            ],
            insert: vec![keys[2].clone()],
            delete: vec![],
            event: Some(Change::KeyRevoked {
                key_id: keys[0].kid.as_str().to_owned(),
            }),
            at: now,
        };
        out.push(outcome(
            store
                .apply_key_transition(&revoke, now + Duration::from_secs(10), &audit())
                .await,
        ));
        let missing = KeyTransition {
            lane: keys[1].algorithm,
            expect_current: Some(keys[1].kid.clone()),
            expect_states: vec![],
            set_state: vec![(KeyId::from_stored("nope"), KeyState::Retired)],
            insert: vec![],
            delete: vec![],
            event: None,
            at: now,
        };
        out.push(outcome(
            store.apply_key_transition(&missing, now, &audit()).await,
        ));
        out.push(outcome(store.keys().await));
        // Pepper and reseal.
        out.push(outcome(store.pepper().await));
        let pepper = Sealed {
            kek_id: "k1".into(),
            nonce: vec![0; 12],
            ciphertext: vec![9; 48],
        };
        out.push(outcome(store.create_pepper(&pepper).await));
        let other = Sealed {
            kek_id: "k2".into(),
            ..pepper.clone()
        };
        out.push(outcome(store.create_pepper(&other).await));
        out.push(outcome(
            store
                .reseal(
                    &[(keys[1].kid.clone(), other.clone())],
                    Some(&other),
                    &audit(),
                    UnixTime::EPOCH,
                )
                .await,
        ));
        out.push(outcome(store.pepper().await));
        out.push(outcome(store.keys().await));
        // Clients: ordering is byte order, conflicts on id and matcher.
        for (id, uri) in [
            ("b-svc", "spiffe://x/b"),
            ("a_svc", "spiffe://x/a"),
            ("B", "spiffe://x/B"),
        ] {
            out.push(outcome(
                store.insert_client(&client(id, uri), now, &audit()).await,
            ));
        }
        out.push(outcome(
            store
                .insert_client(&client("a_svc", "spiffe://x/z"), now, &audit())
                .await,
        ));
        out.push(outcome(
            store
                .insert_client(&client("c", "spiffe://x/a"), now, &audit())
                .await,
        ));
        out.push(outcome(store.clients().await));
        let mut changed = client("a_svc", "spiffe://x/a2");
        changed.enabled = false;
        changed.secret_hash = None;
        out.push(outcome(
            store
                .sync_config_client(&changed, false, now + Duration::from_secs(1), &audit())
                .await,
        ));
        out.push(outcome(
            store
                .sync_config_client(&changed, true, now + Duration::from_secs(1), &audit())
                .await,
        ));
        out.push(outcome(
            store
                .sync_config_client(&client("d", "spiffe://x/d"), false, now, &audit())
                .await,
        ));
        out.push(outcome(
            store
                .sync_config_client(&client("e", "spiffe://x/d"), false, now, &audit())
                .await,
        ));
        out.push(outcome(store.clients().await));
        // Changes.
        let token = Change::TokenRevoked {
            token_id: "jti-1".into(),
            expires_at: now + Duration::from_secs(100),
            client_id: Some("b-svc".into()),
            revoked_by: "b-svc".into(),
        };
        let short = Change::TokenRevoked {
            token_id: "jti-2".into(),
            expires_at: now + Duration::from_secs(1),
            client_id: None,
            revoked_by: "B".into(),
        };
        let changes = [
            (
                token.clone(),
                now + Duration::from_secs(100),
                now + Duration::from_secs(200),
            ),
            (
                token.clone(),
                now + Duration::from_secs(100),
                now + Duration::from_secs(200),
            ),
            (
                short,
                now + Duration::from_secs(1),
                now + Duration::from_secs(2),
            ),
            (
                Change::ClientCutoff {
                    client_id: "b-svc".into(),
                    issued_at_or_before: now,
                },
                now + Duration::from_secs(50),
                now + Duration::from_secs(60),
            ),
            (
                Change::ClientCutoff {
                    client_id: "b-svc".into(),
                    issued_at_or_before: now - Duration::from_secs(5),
                },
                now + Duration::from_secs(40),
                now + Duration::from_secs(60),
            ),
            (
                Change::ClientCutoff {
                    client_id: "ghost".into(),
                    issued_at_or_before: now,
                },
                now,
                now,
            ),
            (
                Change::ClientDisabled {
                    client_id: "B".into(),
                },
                now,
                now + Duration::from_secs(5),
            ),
            (
                Change::ClientDisabled {
                    client_id: "b-svc".into(),
                },
                now,
                now + Duration::from_secs(5),
            ),
            (
                Change::ClientEnabled {
                    client_id: "b-svc".into(),
                },
                now,
                now + Duration::from_secs(5),
            ),
            (
                Change::ClientEnabled {
                    client_id: "ghost".into(),
                },
                now,
                now + Duration::from_secs(5),
            ),
            (
                Change::KeyRevoked {
                    key_id: "other".into(),
                },
                now,
                now + Duration::from_secs(5),
            ),
        ];
        for (change, state_until, log_until) in &changes {
            out.push(outcome(
                store
                    .commit_change(change, now, *state_until, *log_until, &audit())
                    .await,
            ));
        }
        out.push(outcome(store.changes_after(0, 100).await));
        out.push(outcome(store.changes_after(3, 2).await));
        out.push(outcome(store.changes_after(u64::MAX, 2).await));
        out.push(outcome(store.revocation_state(now).await));
        out.push(outcome(store.clients().await));
        // Purge all but the longest-kept, then everything: numbers are never reused.
        out.push(outcome(store.purge(now + Duration::from_secs(10)).await));
        out.push(outcome(
            store.revocation_state(now + Duration::from_secs(10)).await,
        ));
        out.push(outcome(store.changes_after(0, 100).await));
        out.push(outcome(store.purge(now + Duration::from_secs(1_000)).await));
        out.push(outcome(
            store
                .revocation_state(now + Duration::from_secs(1_000))
                .await,
        ));
        out.push(outcome(
            store
                .commit_change(
                    &Change::ClientCutoff {
                        client_id: "d".into(),
                        issued_at_or_before: now,
                    },
                    now + Duration::from_secs(1_000),
                    now + Duration::from_secs(2_000),
                    now + Duration::from_secs(2_000),
                    &audit(),
                )
                .await,
        ));
        out.push(outcome(
            store
                .revocation_state(now + Duration::from_secs(1_000))
                .await,
        ));
        out
    }

    fn test_keys() -> Vec<KeyRecord> {
        let kek = Kek::generate().unwrap();
        vec![
            KeyRecord::generate(
                Algorithm::Es256,
                KeyState::Current,
                &kek,
                UnixTime::from_secs(10),
            )
            .unwrap(),
            KeyRecord::generate(
                Algorithm::EdDsa,
                KeyState::Next,
                &kek,
                UnixTime::from_secs(10),
            )
            .unwrap(),
            KeyRecord::generate(
                Algorithm::Es256,
                KeyState::Next,
                &kek,
                UnixTime::from_secs(20),
            )
            .unwrap(),
        ]
    }

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        let url = "postgres://tm:p%40ss%2Fw0rd@db.example.com:5433/tokenmint?sslmode=require";
        let secrets = secrets_of(url);
        let message = format!("failed: {url}; p@ss/w0rd; p%40ss%2Fw0rd; tm:p%40ss%2Fw0rd");
        let scrubbed = scrub(&message, &secrets);
        assert!(!scrubbed.contains("p@ss"), "{scrubbed}");
        assert!(!scrubbed.contains("p%40ss"), "{scrubbed}");
        let query = secrets_of("postgres://db/x?user=tm&password=hunter2");
        assert!(!scrub("hunter2!", &query).contains("hunter2"));
        let options = PgConnectOptions::from_str(url).unwrap();
        assert_eq!(describe(&options), "db.example.com:5433/tokenmint");
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[tokio::test]
    async fn open_errors_never_show_the_password() {
        let e = PostgresStore::open("postgres://tm:hunter2@127.0.0.1:1/tokenmint")
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Unavailable(_)), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("127.0.0.1:1/tokenmint"), "{text}");
        let e = PostgresStore::open("postgres://tm:hunter2@[::1/x")
            .await
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[tokio::test]
    async fn behaves_as_sqlite_does() {
        let Some(scratch) = Scratch::create().await else {
            return;
        };
        let keys = test_keys();
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        let expected = script(&sqlite, &keys).await;
        // Opening twice: migrations apply once.
        drop(scratch.open().await);
        let postgres = scratch.open().await;
        let got = script(&postgres, &keys).await;
        for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
            assert_eq!(e, g, "call {i} differs");
        }
        assert_eq!(expected.len(), got.len());
        assert_eq!(postgres.synchronous_commit().await.unwrap(), "on");
        // A row that does not decode is Corrupt.
        sqlx::query("UPDATE clients SET scopes = 'not json' WHERE id = 'd'")
            .execute(&postgres.pool)
            .await
            .unwrap();
        assert!(matches!(
            postgres.clients().await,
            Err(StoreError::Corrupt(_))
        ));
        postgres.pool.close().await;
        scratch.drop_database().await;
    }

    #[tokio::test]
    async fn replicas_number_changes_in_commit_order() {
        let Some(scratch) = Scratch::create().await else {
            return;
        };
        const REPLICAS: usize = 4;
        const EACH: usize = 40;
        let mut replicas = Vec::new();
        for _ in 0..REPLICAS {
            replicas.push(Arc::new(scratch.open().await));
        }
        let mut listener = replicas[0].listen().await.unwrap();
        // Initial keys: exactly one replica creates them.
        let keys = test_keys();
        let created = futures_join(replicas.iter().map(|r| {
            let r = r.clone();
            let keys = keys[..2].to_vec();
            tokio::spawn(async move { r.create_initial_keys(&keys).await.unwrap() })
        }))
        .await;
        assert_eq!(created.iter().filter(|c| **c).count(), 1);
        // Config sync at once: one inserts, the others keep.
        let synced = futures_join(replicas.iter().map(|r| {
            let r = r.clone();
            tokio::spawn(async move {
                r.sync_config_client(
                    &client("svc", "spiffe://x/svc"),
                    false,
                    UnixTime::from_secs(1),
                    &audit(),
                )
                .await
                .unwrap()
            })
        }))
        .await;
        assert_eq!(
            synced
                .iter()
                .filter(|s| **s == ClientSync::Inserted)
                .count(),
            1
        );
        // A reader following the log while the replicas write must never see a gap.
        let reader = replicas[0].clone();
        let follower = tokio::spawn(async move {
            let mut cursor = 0u64;
            while cursor < (REPLICAS * EACH) as u64 {
                for event in reader.changes_after(cursor, 7).await.unwrap() {
                    assert_eq!(event.sequence, cursor + 1, "a gap after {cursor}");
                    cursor = event.sequence;
                }
                let state = reader.revocation_state(UnixTime::EPOCH).await.unwrap();
                assert!(state.tokens.iter().all(|t| t.sequence <= state.high_water));
                assert!(state.tokens.len() as u64 <= state.high_water);
            }
            cursor
        });
        let writers = futures_join(replicas.iter().enumerate().map(|(r, store)| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut sequences = Vec::new();
                for i in 0..EACH {
                    let change = Change::TokenRevoked {
                        token_id: format!("jti-{r}-{i}"),
                        expires_at: UnixTime::from_secs(5_000),
                        client_id: Some("svc".into()),
                        revoked_by: "svc".into(),
                    };
                    match store
                        .commit_change(
                            &change,
                            UnixTime::from_secs(1),
                            UnixTime::from_secs(5_000),
                            UnixTime::from_secs(6_000),
                            &audit(),
                        )
                        .await
                        .unwrap()
                    {
                        Committed::Event(e) => sequences.push(e.sequence),
                        Committed::AlreadyInForce => panic!("fresh token"),
                    }
                }
                sequences
            })
        }))
        .await;
        let mut all: Vec<u64> = writers.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(all, (1..=(REPLICAS * EACH) as u64).collect::<Vec<_>>());
        assert_eq!(follower.await.unwrap(), (REPLICAS * EACH) as u64);
        // The same token revoked by every replica at once: one event, the rest in force.
        let same = Change::TokenRevoked {
            token_id: "shared".into(),
            expires_at: UnixTime::from_secs(5_000),
            client_id: None,
            revoked_by: "svc".into(),
        };
        let results = futures_join(replicas.iter().map(|r| {
            let r = r.clone();
            let same = same.clone();
            tokio::spawn(async move {
                r.commit_change(
                    &same,
                    UnixTime::from_secs(2),
                    UnixTime::from_secs(5_000),
                    UnixTime::from_secs(6_000),
                    &audit(),
                )
                .await
                .unwrap()
            })
        }))
        .await;
        assert_eq!(
            results
                .iter()
                .filter(|c| matches!(c, Committed::Event(_)))
                .count(),
            1
        );
        // Racing rotation steps: exactly one applies.
        let step = KeyTransition {
            lane: keys[0].algorithm,
            expect_current: Some(keys[0].kid.clone()),
            expect_states: vec![],
            set_state: vec![
                (keys[0].kid.clone(), KeyState::Retired),
                (keys[1].kid.clone(), KeyState::Current),
            ],
            insert: vec![keys[2].clone()],
            delete: vec![],
            event: None,
            at: UnixTime::from_secs(3),
        };
        let steps = futures_join(replicas.iter().map(|r| {
            let r = r.clone();
            let step = step.clone();
            tokio::spawn(async move {
                outcome(
                    r.apply_key_transition(&step, UnixTime::from_secs(10), &audit())
                        .await,
                )
            })
        }))
        .await;
        assert_eq!(
            steps.iter().filter(|s| *s == "None").count(),
            1,
            "{steps:?}"
        );
        assert_eq!(
            steps.iter().filter(|s| *s == "Conflict").count(),
            REPLICAS - 1
        );
        // Every commit was announced.
        let first = listener.recv().await.unwrap();
        assert_eq!(first.channel(), CHANGES_CHANNEL);
        assert_eq!(first.payload(), "1");
        drop(listener);
        for r in replicas {
            r.pool.close().await;
        }
        scratch.drop_database().await;
    }

    async fn futures_join<T: Send + 'static>(
        handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for handle in handles.collect::<Vec<_>>() {
            out.push(handle.await.unwrap());
        }
        out
    }
}
