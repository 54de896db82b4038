//! What differs between the back-ends. A [`Dialect`] gives its pools, the statements whose
//! text is its own ([`Statements`]), how a write takes its [`Lock`]s and how a logged change
//! is announced. What each store method checks, writes and returns is written once, in
//! `shared`, for every dialect.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Database, Pool};

use super::{StoreError, sql::Sql};

/// The connection type of dialect `D`.
pub(crate) type Conn<D> = <<D as Dialect>::Db as Database>::Connection;

/// The locks a write may take, held until its transaction ends. PostgreSQL takes an advisory
/// lock for each (see the `postgres` module for the order); SQLite takes none, its one writer
/// holding the database's write lock from `BEGIN IMMEDIATE` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lock {
    /// Key-lifecycle steps: one replica applies each.
    Keys,
    /// Appending to or purging the change log: sequence order is commit order.
    ChangeLog,
    /// Syncing clients from the config file: replicas take turns.
    ClientSync,
    /// Writing an audit event: audit ids in commit order. Always the last lock taken.
    Audit,
}

/// The statements whose text differs between the dialects. Every other statement is written
/// once, in `shared`, with `$N` placeholders, which both drivers bind by number.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Statements {
    /// Begins a write transaction.
    pub begin_write: &'static str,
    /// Begins the read-only transaction a revocation state is read in, so the state and its
    /// marks agree.
    pub begin_snapshot: &'static str,
    /// Every signing key, by creation time, then by kid in byte order.
    pub keys: &'static str,
    /// Every client, by id in byte order.
    pub clients: &'static str,
    /// A client's `enabled` and `secret_hash` (`$1`: its id), the row locked until commit
    /// where the dialect locks rows.
    pub client_flags: &'static str,
    /// Puts a cut-off in force: `$1` client id, `$2` issued-at-or-before, `$3` sequence, `$4`
    /// keep-until; the later cut-off and keep-until of the stored and the new one win.
    pub upsert_cutoff: &'static str,
    /// Raises `log_meta 'purged_through'` to `$1` (never lowers it).
    pub raise_purged_through: &'static str,
    /// Disabled clients: `id`, and as `sequence` the change that disabled them (0: none),
    /// by id in byte order.
    pub disabled_clients: &'static str,
    /// The `kid` of every revoked key, in byte order.
    pub revoked_keys: &'static str,
    /// The highest sequence ever assigned, as `high_water` (0: none).
    pub high_water: &'static str,
    /// Assigns the next sequence and returns it as `value`. `None`: the log's AUTOINCREMENT
    /// assigns it when a change is inserted without one.
    pub next_sequence: Option<&'static str>,
}

/// A back-end: its pools, its statements, its locking. The store methods themselves are
/// written once for every dialect (`impl<D: Dialect> Store for D`).
#[async_trait]
pub(crate) trait Dialect: Send + Sync + 'static {
    /// The database sqlx drives.
    type Db: Sql;

    /// The statements whose text is this dialect's own.
    const SQL: Statements;

    /// The pool writes run on.
    fn writer(&self) -> &Pool<Self::Db>;

    /// The pool reads run on.
    fn reader(&self) -> &Pool<Self::Db>;

    /// Takes `lock` in the transaction open on `conn`, until it ends.
    async fn lock(conn: &mut Conn<Self>, lock: Lock) -> Result<(), StoreError>;

    /// Announces change `sequence`, logged in the transaction open on `conn`, to whoever
    /// waits for changes. Nobody, by default.
    async fn announce(_conn: &mut Conn<Self>, _sequence: u64) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether what the writer writes to is still the store the path names: checked before a
    /// write begins and after it commits, before it is acknowledged. Always, by default (a
    /// server's database is not a file of ours).
    fn check_target(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// `Store::wait_for_change`: by default, sleeps for `at_most`.
    async fn wait_for_announcement(&self, at_most: Duration) {
        tokio::time::sleep(at_most).await;
    }
}
