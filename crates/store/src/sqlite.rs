//! The embedded SQLite back-end: one file, WAL, `synchronous=FULL`, a single writer
//! connection taking `BEGIN IMMEDIATE`, readers beside it, migrations on open. The store
//! methods are written once, in `shared`; this module gives the pools, the few statements
//! SQLite spells its own way, and its locking, which is the single writer's.

use std::{path::Path, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Row, Sqlite, SqliteConnection, SqlitePool,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};

use super::StoreError;
use super::dialect::{Dialect, Lock, Statements};
use super::rows::{Columns, corrupt, unavailable};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// A SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    file: FileIdentity,
}

/// The database file as it was opened: its path and, on Unix, its device and inode. SQLite
/// keeps writing to a file removed or replaced under it, and those writes are lost at the
/// next start; a write is acknowledged only while the path still names this file.
#[derive(Clone, Debug)]
struct FileIdentity {
    path: std::path::PathBuf,
    id: Option<(u64, u64)>,
}

impl FileIdentity {
    fn of(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            id: Self::read(path),
        }
    }

    fn read(path: &Path) -> Option<(u64, u64)> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
        }
        #[cfg(not(unix))]
        {
            path.exists().then_some((0, 0))
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.id.is_some() && Self::read(&self.path) == self.id {
            return Ok(());
        }
        Err(StoreError::Unavailable(format!(
            "the database file {} was removed or replaced under the running server: nothing \
             written now would survive a restart; restore it and restart",
            self.path.display()
        )))
    }
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
        Ok(Self {
            writer,
            reader,
            file: FileIdentity::of(path),
        })
    }

    /// `PRAGMA synchronous` as the writer connection runs it (2 = FULL).
    pub async fn writer_synchronous(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.writer)
            .await
            .map_err(unavailable)
    }
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
impl Dialect for SqliteStore {
    type Db = Sqlite;

    const SQL: Statements = Statements {
        // Takes the database's write lock at once.
        begin_write: "BEGIN IMMEDIATE",
        begin_snapshot: "BEGIN",
        keys: "SELECT * FROM signing_keys ORDER BY created_at, kid",
        clients: "SELECT * FROM clients ORDER BY id",
        client_flags: "SELECT enabled, secret_hash FROM clients WHERE id = $1",
        upsert_cutoff: "INSERT INTO client_cutoffs (client_id, issued_at_or_before, sequence, \
             keep_until) VALUES ($1, $2, $3, $4) ON CONFLICT (client_id) DO UPDATE SET \
             issued_at_or_before = MAX(issued_at_or_before, excluded.issued_at_or_before), \
             sequence = excluded.sequence, keep_until = MAX(keep_until, excluded.keep_until)",
        raise_purged_through: "INSERT INTO log_meta (name, value) VALUES ('purged_through', $1) \
             ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
        disabled_clients: "SELECT id, COALESCE(disabled_sequence, 0) AS sequence FROM clients \
             WHERE enabled = 0 ORDER BY id",
        revoked_keys: "SELECT kid FROM signing_keys WHERE state = 'revoked' ORDER BY kid",
        high_water: "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0) \
             AS high_water",
        next_sequence: None,
    };

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn check_target(&self) -> Result<(), StoreError> {
        self.file.check()
    }

    async fn lock(_conn: &mut SqliteConnection, _lock: Lock) -> Result<(), StoreError> {
        // Nothing to take: `BEGIN IMMEDIATE` made this transaction the only writer.
        Ok(())
    }
}
