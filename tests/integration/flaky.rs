//! A SQLite store with faults a test can switch on: failed commits and reads, and commits
//! held inside their request (which then holds its slot in flight).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokenmint::{grpc::proto::IssueTokenRequest, pki::Issued};
use tokenmint_core::{
    audit::{AuditEvent, AuditQuery, AuditRecord},
    client::Client,
    clock::UnixTime,
    crypto::Sealed,
    keys::KeyRecord,
    revocation::{Change, Event, RevokedToken, State},
};
use tokenmint_store::{ClientFlags, ClientSync, Committed, Store, StoreError, sqlite::SqliteStore};

use crate::support::*;

/// A SQLite store whose `commit_change` fails while `fail_commits` is set, or waits while
/// `hold_commits` is set (its request then holds its slot in flight), and whose log reads
/// (`changes_after`) fail while `fail_reads` is set.
pub struct FlakyStore {
    pub inner: SqliteStore,
    pub fail_commits: AtomicBool,
    pub fail_reads: AtomicBool,
    pub hold_commits: AtomicBool,
    /// Commits waiting on `hold_commits` now.
    pub commits_waiting: AtomicUsize,
    /// While set, client policy writes wait until cleared.
    pub hold_client_writes: AtomicBool,
    /// Client policy writes waiting on `hold_client_writes` now.
    pub client_writes_waiting: AtomicUsize,
}

impl FlakyStore {
    /// Over the database `setup` configures, with no fault set.
    pub async fn open(setup: &Setup) -> Self {
        Self {
            inner: SqliteStore::open(&setup.path().join("tokenmint.db"))
                .await
                .unwrap(),
            fail_commits: AtomicBool::new(false),
            fail_reads: AtomicBool::new(false),
            hold_commits: AtomicBool::new(false),
            commits_waiting: AtomicUsize::new(0),
            hold_client_writes: AtomicBool::new(false),
            client_writes_waiting: AtomicUsize::new(0),
        }
    }

    async fn wait_while_held(&self) {
        wait_while(&self.hold_commits, &self.commits_waiting).await;
    }
}

/// Waits while `hold` is set, counted in `waiting` while it does (and not once the wait ends
/// or is dropped).
async fn wait_while(hold: &AtomicBool, waiting: &AtomicUsize) {
    struct Waiting<'a>(&'a AtomicUsize);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    if !hold.load(Ordering::SeqCst) {
        return;
    }
    waiting.fetch_add(1, Ordering::SeqCst);
    let _waiting = Waiting(waiting);
    while hold.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[async_trait::async_trait]
impl Store for FlakyStore {
    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.keys().await
    }

    async fn create_initial_keys(&self, keys: &[KeyRecord]) -> Result<bool, StoreError> {
        self.inner.create_initial_keys(keys).await
    }

    async fn pepper(&self) -> Result<Option<Sealed>, StoreError> {
        self.inner.pepper().await
    }

    async fn create_pepper(&self, sealed: &Sealed) -> Result<Sealed, StoreError> {
        self.inner.create_pepper(sealed).await
    }

    async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        self.inner.clients().await
    }

    async fn insert_client(
        &self,
        client: &Client,
        now: UnixTime,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.inner.insert_client(client, now, audit).await
    }

    async fn commit_change(
        &self,
        change: &Change,
        now: UnixTime,
        state_until: UnixTime,
        log_until: UnixTime,
        audit: &AuditRecord,
    ) -> Result<Committed, StoreError> {
        self.wait_while_held().await;
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        self.inner
            .commit_change(change, now, state_until, log_until, audit)
            .await
    }

    async fn probe_write(&self, now: UnixTime) -> Result<(), StoreError> {
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        self.inner.probe_write(now).await
    }

    async fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Event>, StoreError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        self.inner.changes_after(after, limit).await
    }

    async fn revocation_state(&self, now: UnixTime) -> Result<State, StoreError> {
        self.inner.revocation_state(now).await
    }

    async fn revocation_head(&self, now: UnixTime) -> Result<State, StoreError> {
        self.inner.revocation_head(now).await
    }

    async fn revoked_tokens_page(
        &self,
        after: u64,
        through: u64,
        now: UnixTime,
        limit: u32,
    ) -> Result<Vec<RevokedToken>, StoreError> {
        self.inner
            .revoked_tokens_page(after, through, now, limit)
            .await
    }

    async fn purge(&self, now: UnixTime) -> Result<u64, StoreError> {
        self.inner.purge(now).await
    }

    async fn apply_key_transition(
        &self,
        t: &tokenmint_core::rotation::KeyTransition,
        log_until: UnixTime,
        audit: &AuditRecord,
    ) -> Result<Option<Event>, StoreError> {
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        self.inner.apply_key_transition(t, log_until, audit).await
    }

    async fn reseal(
        &self,
        keys: &[(tokenmint_core::keys::KeyId, Sealed)],
        pepper: Option<&Sealed>,
        audit: &AuditRecord,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.inner.reseal(keys, pepper, audit, now).await
    }

    async fn update_client_policy(
        &self,
        client: &Client,
        now: UnixTime,
        audit: &AuditRecord,
    ) -> Result<ClientFlags, StoreError> {
        wait_while(&self.hold_client_writes, &self.client_writes_waiting).await;
        self.inner.update_client_policy(client, now, audit).await
    }

    async fn sync_config_client(
        &self,
        client: &Client,
        overwrite: bool,
        now: UnixTime,
        audit: &AuditRecord,
    ) -> Result<ClientSync, StoreError> {
        wait_while(&self.hold_client_writes, &self.client_writes_waiting).await;
        self.inner
            .sync_config_client(client, overwrite, now, audit)
            .await
    }

    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.audit_events(query).await
    }

    async fn purge_audit(&self, before: UnixTime) -> Result<u64, StoreError> {
        self.inner.purge_audit(before).await
    }
}

/// A revocation by `cert` that the server has taken in and whose commit waits in `store`: it
/// holds one slot in flight until `finish`.
pub struct HeldCommit {
    store: Arc<FlakyStore>,
    call: tokio::task::JoinHandle<Result<(), tonic::Status>>,
}

impl HeldCommit {
    /// Issues a token to `cert`, then revokes it with commits held, and waits until the
    /// revocation is inside its commit.
    pub async fn start(server: &TestServer, store: &Arc<FlakyStore>, cert: &Issued) -> Self {
        let token = issue(server, cert, IssueTokenRequest::default())
            .await
            .unwrap()
            .access_token;
        store.hold_commits.store(true, Ordering::SeqCst);
        let mut client = server.client(cert).await;
        let call = tokio::spawn(async move {
            client
                .revoke_token(tokenmint::grpc::proto::RevokeTokenRequest { token })
                .await
                .map(|_| ())
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.commits_waiting.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the revocation never reached its commit"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Self {
            store: store.clone(),
            call,
        }
    }

    /// Lets the commit through; the revocation's answer.
    pub async fn finish(self) -> Result<(), tonic::Status> {
        self.store.hold_commits.store(false, Ordering::SeqCst);
        self.call.await.unwrap()
    }

    /// The revocation's answer while its commit is still held (the server answers on its
    /// own, e.g. at `server.request_timeout`); then lets the commit through.
    pub async fn answer_while_held(self) -> Result<(), tonic::Status> {
        let answer = tokio::time::timeout(Duration::from_secs(10), self.call)
            .await
            .expect("the server answers while the commit is held")
            .unwrap();
        self.store.hold_commits.store(false, Ordering::SeqCst);
        answer
    }
}
