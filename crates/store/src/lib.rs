//! Storage: one async trait the core's state lives behind, with two back-ends (sqlx's one
//! home): embedded SQLite, and PostgreSQL for replicas. Every write is one transaction, its
//! audit event included; nothing is half-written. The trait's methods are written once, for
//! any back-end's `Dialect`: its pools, the few statements it spells its own way, its locks.

use async_trait::async_trait;

use tokenmint_core::{
    audit::{AuditEvent, AuditQuery, AuditRecord},
    client::Client,
    clock::UnixTime,
    crypto::Sealed,
    keys::{KeyId, KeyRecord},
    revocation::{Change, Event, RevokedToken, State},
    rotation::KeyTransition,
};

mod dialect;
pub mod failpoint;
pub mod postgres;
mod rows;
mod shared;
mod sql;
pub mod sqlite;

/// What failed in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or the operation failed; nothing was committed.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The write conflicts with what is stored (a duplicate id or certificate matcher).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored row does not decode: the database was altered or written by another version.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The change names something that does not exist (an unknown client).
    #[error("not found: {0}")]
    NotFound(String),
}

/// What committing a change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committed {
    /// The change is committed with this event.
    Event(Event),
    /// Nothing to do: the change was already in force (a token already revoked).
    AlreadyInForce,
}

/// A stored client's state that a policy update leaves as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientFlags {
    /// Whether the client may authenticate.
    pub enabled: bool,
    /// Whether it has a secret.
    pub has_secret: bool,
}

/// What syncing a client from the config file did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientSync {
    /// The client was absent and is now stored.
    Inserted,
    /// The client exists and was left as it is (it may have been changed since).
    Kept,
    /// The client existed and was overwritten from the config (`--sync-clients`).
    Overwritten,
}

/// The persistent state. Implementations commit every method's writes atomically.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every stored signing key, in any state.
    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// Stores `keys` only if the store holds no key yet; whether it did.
    async fn create_initial_keys(&self, keys: &[KeyRecord]) -> Result<bool, StoreError>;

    /// Applies one key-lifecycle step in one transaction — state changes, new and removed
    /// keys, its event (a key revocation) logged and numbered, kept until `log_until`, and its
    /// audit event. `Conflict` if the current key is no longer `t.expect_current` (another
    /// writer moved first).
    async fn apply_key_transition(
        &self,
        t: &KeyTransition,
        log_until: UnixTime,
        audit: &AuditRecord,
    ) -> Result<Option<Event>, StoreError>;

    /// Replaces the sealed form of every listed key and of the pepper, with its audit event,
    /// in one transaction (KEK rotation).
    async fn reseal(
        &self,
        keys: &[(KeyId, Sealed)],
        pepper: Option<&Sealed>,
        audit: &AuditRecord,
        now: UnixTime,
    ) -> Result<(), StoreError>;

    /// The sealed client-secret pepper, if one was created.
    async fn pepper(&self) -> Result<Option<Sealed>, StoreError>;

    /// Stores the pepper only if none exists; returns the one stored (this or an earlier one).
    async fn create_pepper(&self, sealed: &Sealed) -> Result<Sealed, StoreError>;

    /// Every registered client.
    async fn clients(&self) -> Result<Vec<Client>, StoreError>;

    /// Registers a new client with its audit event; `Conflict` if its id, certificate matcher
    /// or one of its pinned thumbprints is taken.
    async fn insert_client(
        &self,
        client: &Client,
        now: UnixTime,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;

    /// Commits a revocation or client change in one transaction, numbered in commit order:
    /// the log entry (kept until `log_until`), the state it puts in force (needed until
    /// `state_until`), for client changes the client's `enabled` flag, and its audit event.
    /// A change already in force writes nothing, audit event included.
    async fn commit_change(
        &self,
        change: &Change,
        now: UnixTime,
        state_until: UnixTime,
        log_until: UnixTime,
        audit: &AuditRecord,
    ) -> Result<Committed, StoreError>;

    /// Up to `limit` logged events with a sequence above `after`, in order.
    async fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Event>, StoreError>;

    /// The revocation state in force at `now`, with the log's high-water mark and purge mark.
    async fn revocation_state(&self, now: UnixTime) -> Result<State, StoreError>;

    /// As `revocation_state`, without its revoked tokens: the head of a watch snapshot, whose
    /// tokens are read in pages with `revoked_tokens_page`.
    async fn revocation_head(&self, now: UnixTime) -> Result<State, StoreError>;

    /// Up to `limit` revoked tokens in force at `now` whose change has a sequence in
    /// (`after`, `through`], in sequence order.
    async fn revoked_tokens_page(
        &self,
        after: u64,
        through: u64,
        now: UnixTime,
        limit: u32,
    ) -> Result<Vec<RevokedToken>, StoreError>;

    /// Removes state and log entries kept past their time; returns the rows removed.
    async fn purge(&self, now: UnixTime) -> Result<u64, StoreError>;

    /// Whether a write commits now: one small write (`log_meta 'write_probe'`, the time) in a
    /// transaction of its own, as every change's. Run while writes are being refused, to see
    /// them accepted again without waiting for a client's write.
    async fn probe_write(&self, now: UnixTime) -> Result<(), StoreError>;

    /// Waits until the store may have a change this process has not seen, or `at_most`
    /// passes. The default just sleeps; a back-end that can announce changes (PostgreSQL's
    /// `LISTEN/NOTIFY`) wakes early. A lost notification connection must return at once, so
    /// the caller catches up immediately.
    async fn wait_for_change(&self, at_most: std::time::Duration) {
        tokio::time::sleep(at_most).await;
    }

    /// Replaces a registered client's policy (matcher and pins, scopes, audiences,
    /// permissions, lifetimes) with `client`'s, in one transaction with its audit event,
    /// leaving its `enabled` state and its secret as they are in the store at that moment:
    /// an update never undoes a disable or enable that landed before it. Returns those two
    /// as the update left them; `NotFound` for an unknown client, `Conflict` for a matcher
    /// another client claims.
    async fn update_client_policy(
        &self,
        client: &Client,
        now: UnixTime,
        audit: &AuditRecord,
    ) -> Result<ClientFlags, StoreError>;

    /// Inserts a client when absent; when present, overwrites it only if `overwrite` (keeping
    /// its secret), so a restart never undoes a change made since. The audit event is written
    /// when something was.
    async fn sync_config_client(
        &self,
        client: &Client,
        overwrite: bool,
        now: UnixTime,
        audit: &AuditRecord,
    ) -> Result<ClientSync, StoreError>;

    /// The audit events `query` selects, oldest first.
    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;

    /// Removes audit events older than `before` (Unix seconds); returns how many.
    async fn purge_audit(&self, before: UnixTime) -> Result<u64, StoreError>;
}
