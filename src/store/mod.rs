//! Storage: one async trait the core's state lives behind, with an embedded SQLite back-end
//! (sqlx's one home). Every write is one transaction; nothing is half-written.

use async_trait::async_trait;

use crate::{client::Client, crypto::Sealed, keys::KeyRecord};

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

    /// The sealed client-secret pepper, if one was created.
    async fn pepper(&self) -> Result<Option<Sealed>, StoreError>;

    /// Stores the pepper only if none exists; returns the one stored (this or an earlier one).
    async fn create_pepper(&self, sealed: &Sealed) -> Result<Sealed, StoreError>;

    /// Every registered client.
    async fn clients(&self) -> Result<Vec<Client>, StoreError>;

    /// Registers a new client; `Conflict` if its id or certificate matcher is taken.
    async fn insert_client(&self, client: &Client, now: i64) -> Result<(), StoreError>;

    /// Inserts a client from the config file when absent; when present, overwrites it only if
    /// `overwrite` (keeping its secret), so a restart never undoes a change made since.
    async fn sync_config_client(
        &self,
        client: &Client,
        overwrite: bool,
        now: i64,
    ) -> Result<ClientSync, StoreError>;
}
