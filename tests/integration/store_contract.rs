//! The storage contract (SPEC §9): one set of test bodies that every `Store` back-end must
//! pass, in the style of SPIRE's keymanagertest. Each `contract_*` body runs once against
//! SQLite (a fresh file per test) and once against PostgreSQL (a fresh database per test,
//! created through `TOKENMINT_TEST_POSTGRES_URL` and dropped afterwards, even on failure).
//! Without that variable the PostgreSQL runs print a line and pass.
//!
//! A last test checks that the two dialects' migrated schemas agree: the same tables with the
//! same columns, loosely typed.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use sqlx::{ConnectOptions, Connection, Executor, Row};
use tempfile::TempDir;

use crate::support::test_audit;
use tokenmint_core::{
    client::{Client, ClientId, ExchangePolicy, Permission},
    clock::UnixTime,
    crypto::{self, Algorithm, Kek, Sealed},
    identity::CertificateMatcher,
    keys::{KekRing, KeyId, KeyRecord, KeyState, PrivateHalf},
    revocation::{Change, Event, RevokedToken, State},
    rotation::{self, KeyTransition, Policy, Step},
};
use tokenmint_store::{
    ClientFlags, ClientSync, Committed, Store, StoreError, postgres::PostgresStore,
    sqlite::SqliteStore,
};

/// The environment variable naming a PostgreSQL server the tests may create databases on.
const POSTGRES_URL_VAR: &str = "TOKENMINT_TEST_POSTGRES_URL";
/// A fixed "now" (Unix seconds).
const T0: UnixTime = UnixTime::from_secs(1_700_000_000);

/// `n` seconds, for arithmetic on test times.
fn secs(n: i64) -> Duration {
    Duration::from_secs(n.unsigned_abs())
}
const PEPPER_AAD: &[u8] = b"tokenmint/client-secret-pepper/v1";

// ---------------------------------------------------------------------------------------------
// Back-ends
// ---------------------------------------------------------------------------------------------

/// One store under test; `open` gives another handle on the same data (another "replica").
enum Backend {
    Sqlite { _dir: TempDir, path: PathBuf },
    Postgres { db: TestDatabase },
}

impl Backend {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenmint.db");
        Backend::Sqlite { _dir: dir, path }
    }

    /// A fresh database, or `None` (after saying so) when no server is configured.
    async fn postgres() -> Option<Self> {
        let Some(url) = postgres_url() else {
            println!("skipped: {POSTGRES_URL_VAR} is not set");
            return None;
        };
        Some(Backend::Postgres {
            db: TestDatabase::create(&url).await,
        })
    }

    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite { path, .. } => Arc::new(
                SqliteStore::open(path)
                    .await
                    .unwrap_or_else(|e| panic!("opening {}: {e}", path.display())),
            ),
            Backend::Postgres { db } => Arc::new(
                PostgresStore::open(&db.url)
                    .await
                    .unwrap_or_else(|e| panic!("opening database {}: {e}", db.name)),
            ),
        }
    }
}

pub(crate) fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// `url` with its database (the path) replaced by `database`; the query string is kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..authority_start.max(authority_end)]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A database of its own for one test: `CREATE DATABASE tm_test_<random hex>` on the server
/// of `TOKENMINT_TEST_POSTGRES_URL`, dropped (`WITH (FORCE)`) when the guard is dropped —
/// also when the test panics.
pub(crate) struct TestDatabase {
    admin_url: String,
    name: String,
    pub(crate) url: String,
}

impl TestDatabase {
    pub(crate) async fn create(admin_url: &str) -> Self {
        let name = format!(
            "tm_test_{}",
            crypto::hex(&crypto::random_bytes::<8>().unwrap())
        );
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {POSTGRES_URL_VAR}: {e}"));
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        conn.close().await.ok();
        Self {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime (perhaps while unwinding): do the async work on
        // a thread of its own with a runtime of its own.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.ok();
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// Runs each named contract body against both back-ends: `sqlite::<name>` and
/// `postgres::<name>`.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = super::Backend::sqlite();
                    super::$name(&backend).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = super::Backend::postgres().await else {
                        return;
                    };
                    super::$name(&backend).await;
                }
            )*
        }
    };
}

contract_tests!(
    contract_empty_store,
    contract_initial_keys_are_created_once_and_round_trip,
    contract_keys_stored_before_the_low_s_migration_accept_both_forms,
    contract_keys_held_elsewhere_round_trip_and_are_not_resealed,
    contract_key_transitions_apply_like_the_model,
    contract_stale_key_transition_conflicts_and_changes_nothing,
    contract_a_step_over_two_lanes_conflicts_when_either_changed,
    contract_reseal_replaces_sealed_forms,
    contract_pepper_is_insert_if_absent,
    contract_clients_round_trip,
    contract_client_conflicts_change_nothing,
    contract_an_audience_is_served_by_one_client,
    contract_sync_config_client,
    contract_commit_change_each_kind,
    contract_token_revoked_twice_is_already_in_force,
    contract_client_changes_for_unknown_client_are_not_found,
    contract_client_disable_and_enable_flip_enabled,
    contract_a_policy_update_keeps_enabled_and_the_secret,
    contract_changes_after_pages_in_order,
    contract_revocation_state,
    contract_revoked_tokens_in_pages_and_the_state_head,
    contract_cutoffs_keep_the_latest_time,
    contract_purge,
    contract_audit_events_are_written_with_their_change_listed_and_purged,
    contract_concurrent_commits_are_numbered_in_commit_order,
    contract_replicas_race_and_the_first_writer_wins,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn copy_kek(kek: &Kek) -> Kek {
    Kek::try_from_base64(&kek.to_base64()).unwrap()
}

fn policy(algorithm: Algorithm) -> Policy {
    Policy {
        algorithm,
        also: tokenmint_core::crypto::AlgorithmSet::EMPTY,
        rsa_bits: tokenmint_core::crypto::RsaBits::default(),
        rotation_period: Duration::from_secs(24 * 3600),
        publish_ahead: Duration::from_secs(3600),
        retention: Duration::from_secs(2 * 3600),
    }
}

fn key(algorithm: Algorithm, state: KeyState, kek: &Kek, at: UnixTime) -> KeyRecord {
    KeyRecord::generate(algorithm, state, kek, at).unwrap()
}

fn sorted(mut keys: Vec<KeyRecord>) -> Vec<KeyRecord> {
    keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    keys
}

fn sorted_clients(mut clients: Vec<Client>) -> Vec<Client> {
    clients.sort_by(|a, b| a.id.cmp(&b.id));
    clients
}

async fn stored_keys(store: &dyn Store) -> Vec<KeyRecord> {
    sorted(store.keys().await.unwrap())
}

async fn stored_clients(store: &dyn Store) -> Vec<Client> {
    sorted_clients(store.clients().await.unwrap())
}

fn id(text: &str) -> ClientId {
    ClientId::try_new(text).unwrap()
}

/// A client with every field set to something other than a default.
fn client(client_id: &str, matcher: CertificateMatcher) -> Client {
    Client {
        id: id(client_id),
        matcher,
        scopes: vec![
            "billing:read".into(),
            "billing:write".into(),
            "odd:{a,b}[c]".into(),
        ],
        default_scopes: vec!["billing:read".into()],
        audiences: vec![
            "https://ledger.internal".into(),
            "https://audit.internal".into(),
        ],
        default_audiences: vec!["https://ledger.internal".into()],
        introspect_audiences: vec![],
        permissions: vec![Permission::Issue],
        default_lifetime: Duration::from_secs(300),
        max_lifetime: Duration::from_secs(900),
        enabled: true,
        secret_hash: None,
        exchange: Default::default(),
    }
}

fn uri(value: &str) -> CertificateMatcher {
    CertificateMatcher::try_san_uri(value).unwrap()
}

fn dns(value: &str) -> CertificateMatcher {
    CertificateMatcher::try_san_dns(value).unwrap()
}

fn dn(value: &str) -> CertificateMatcher {
    CertificateMatcher::try_subject_dn(value).unwrap()
}

fn revoke_token(token_id: &str, client_id: Option<&str>, revoked_by: &str) -> Change {
    Change::TokenRevoked {
        token_id: token_id.into(),
        expires_at: T0 + secs(300),
        client_id: client_id.map(Into::into),
        revoked_by: revoked_by.into(),
    }
}

fn cutoff(client_id: &str, issued_at_or_before: UnixTime) -> Change {
    Change::ClientCutoff {
        client_id: client_id.into(),
        issued_at_or_before,
    }
}

/// Commits `change` at `now`, keeping state for `state_for` and the log entry for `log_for`
/// seconds; the event, checked against the change and the time.
async fn commit(
    store: &dyn Store,
    change: &Change,
    now: UnixTime,
    state_for: i64,
    log_for: i64,
) -> Event {
    match store
        .commit_change(
            change,
            now,
            now + secs(state_for),
            now + secs(log_for),
            &test_audit(),
        )
        .await
    {
        Ok(Committed::Event(event)) => {
            assert_eq!(&event.change, change);
            assert_eq!(event.committed_at, now);
            assert!(event.sequence > 0, "{event:?}");
            event
        }
        other => panic!("committing {change:?}: {other:?}"),
    }
}

async fn all_changes(store: &dyn Store) -> Vec<Event> {
    store.changes_after(0, 100_000).await.unwrap()
}

async fn high_water(store: &dyn Store) -> u64 {
    store.revocation_state(T0).await.unwrap().high_water
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "{what}: expected Conflict, got {result:?}"
    );
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::NotFound(_))),
        "{what}: expected NotFound, got {result:?}"
    );
}

fn strictly_increasing(events: &[Event]) -> bool {
    events.windows(2).all(|w| w[0].sequence < w[1].sequence)
}

/// Runs two store calls as two tasks released together (as two replicas would make them).
async fn race<A, B>(a: A, b: B) -> (A::Output, B::Output)
where
    A: std::future::Future + Send + 'static,
    A::Output: Send + 'static,
    B: std::future::Future + Send + 'static,
    B::Output: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let (ba, bb) = (barrier.clone(), barrier);
    let ta = tokio::spawn(async move {
        ba.wait().await;
        a.await
    });
    let tb = tokio::spawn(async move {
        bb.wait().await;
        b.await
    });
    (ta.await.unwrap(), tb.await.unwrap())
}

/// The current and next key of a fresh store: (kek, [current, next]).
async fn with_initial_keys(store: &dyn Store, algorithm: Algorithm) -> (Kek, Vec<KeyRecord>) {
    let kek = Kek::generate().unwrap();
    let initial = vec![
        key(algorithm, KeyState::Current, &kek, T0),
        key(algorithm, KeyState::Next, &kek, T0),
    ];
    assert!(store.create_initial_keys(&initial).await.unwrap());
    (kek, initial)
}

// ---------------------------------------------------------------------------------------------
// The contract
// ---------------------------------------------------------------------------------------------

async fn contract_empty_store(backend: &Backend) {
    let store = backend.open().await;
    assert!(store.keys().await.unwrap().is_empty());
    assert!(store.pepper().await.unwrap().is_none());
    assert!(store.clients().await.unwrap().is_empty());
    assert!(all_changes(&*store).await.is_empty());
    assert_eq!(store.revocation_state(T0).await.unwrap(), State::default());
    assert_eq!(store.purge(T0).await.unwrap(), 0);
    assert_eq!(store.revocation_state(T0).await.unwrap(), State::default());
    // Opening again (a restart, or migrations run twice) keeps working.
    let again = backend.open().await;
    assert!(again.keys().await.unwrap().is_empty());
}

async fn contract_initial_keys_are_created_once_and_round_trip(backend: &Backend) {
    let store = backend.open().await;
    let kek = Kek::generate().unwrap();
    // Every field set, both key shapes, every state.
    let mut retired = key(Algorithm::Es256, KeyState::Retired, &kek, T0 - secs(7200));
    retired.activated_at = Some(T0 - secs(7000));
    retired.retired_at = Some(T0 - secs(10));
    // Created before the low-S cut-over (the others, generated now, are after it).
    retired.low_s_only = false;
    let mut revoked = key(Algorithm::EdDsa, KeyState::Revoked, &kek, T0 - secs(5000));
    revoked.activated_at = Some(T0 - secs(4000));
    revoked.retired_at = Some(T0 - secs(3000));
    revoked.revoked_at = Some(T0 - secs(1));
    let initial = vec![
        key(Algorithm::Es256, KeyState::Current, &kek, T0),
        key(Algorithm::EdDsa, KeyState::Next, &kek, T0 + secs(1)),
        retired,
        revoked,
    ];
    assert!(store.create_initial_keys(&initial).await.unwrap());
    assert_eq!(stored_keys(&*store).await, sorted(initial.clone()));

    // A second call, here or on another replica, stores nothing.
    let other = vec![
        key(Algorithm::Es256, KeyState::Current, &kek, T0 + secs(5)),
        key(Algorithm::Es256, KeyState::Next, &kek, T0 + secs(5)),
    ];
    assert!(!store.create_initial_keys(&other).await.unwrap());
    let replica = backend.open().await;
    assert!(!replica.create_initial_keys(&other).await.unwrap());
    assert_eq!(stored_keys(&*store).await, sorted(initial.clone()));
    assert_eq!(stored_keys(&*replica).await, sorted(initial));
    // Key changes are not logged.
    assert!(all_changes(&*store).await.is_empty());
}

async fn contract_keys_held_elsewhere_round_trip_and_are_not_resealed(backend: &Backend) {
    let store = backend.open().await;
    let kek = Kek::generate().unwrap();
    let current = key(Algorithm::Es256, KeyState::Current, &kek, T0);
    // A key whose private half is in a device: the store keeps its public half and reference.
    let mut held = key(Algorithm::EdDsa, KeyState::Next, &kek, T0 + secs(1));
    held.private = PrivateHalf::Held {
        custody: "pkcs11".into(),
        reference: format!("tokenmint-{}", held.kid),
    };
    let initial = vec![current, held.clone()];
    assert!(store.create_initial_keys(&initial).await.unwrap());
    assert_eq!(stored_keys(&*store).await, sorted(initial.clone()));
    // A KEK rotation re-seals the sealed key only.
    let new = Kek::generate().unwrap();
    let both = KekRing::try_new(vec![copy_kek(&new), copy_kek(&kek)]).unwrap();
    let done = tokenmint::server::rotate_kek(store.as_ref(), &both, T0 + secs(2))
        .await
        .unwrap();
    assert_eq!(done.keys, 1);
    let stored = stored_keys(&*store).await;
    let stored_held = stored.iter().find(|k| k.kid == held.kid).unwrap();
    assert_eq!(stored_held, &held);
    let stored_current = stored.iter().find(|k| k.kid != held.kid).unwrap();
    assert_eq!(stored_current.sealed().unwrap().kek_id, new.id());
}

/// The schema as it was before the low-S cut-over: migrations up to 0004 only.
async fn migrator_before_low_s(dialect: &str) -> sqlx::migrate::Migrator {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/store/migrations")
        .join(dialect);
    let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    let before: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= 4)
        .cloned()
        .collect();
    assert_eq!(before.len(), 4);
    migrator.migrations = before.into();
    migrator
}

async fn contract_keys_stored_before_the_low_s_migration_accept_both_forms(backend: &Backend) {
    let kek = Kek::generate().unwrap();
    let mut old = key(Algorithm::Es256, KeyState::Current, &kek, T0);
    let (x, y) = match &old.public {
        crypto::PublicKey::P256 { x, y } => (x.clone(), y.clone()),
        _ => unreachable!("an ES256 key"),
    };
    let sealed = old.sealed().unwrap().clone();
    // A row written by the previous release, before migration 0005 existed.
    match backend {
        Backend::Sqlite { path, .. } => {
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .connect()
                .await
                .unwrap();
            migrator_before_low_s("sqlite")
                .await
                .run(&mut conn)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, state, public_x, public_y, kek_id, \
                 nonce, ciphertext, created_at, activated_at) \
                 VALUES (?, 'ES256', 'current', ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(old.kid.as_str())
            .bind(x)
            .bind(y)
            .bind(&sealed.kek_id)
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .bind(old.created_at.as_secs())
            .bind(old.activated_at.map(UnixTime::as_secs))
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }
        Backend::Postgres { db } => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            migrator_before_low_s("postgres")
                .await
                .run(&mut conn)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, state, public_x, public_y, kek_id, \
                 nonce, ciphertext, created_at, activated_at) \
                 VALUES ($1, 'ES256', 'current', $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(old.kid.as_str())
            .bind(x)
            .bind(y)
            .bind(&sealed.kek_id)
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .bind(old.created_at.as_secs())
            .bind(old.activated_at.map(UnixTime::as_secs))
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }
    }
    // Opening migrates to the current schema: the existing key accepts both forms.
    let store = backend.open().await;
    old.low_s_only = false;
    assert_eq!(stored_keys(&*store).await, vec![old.clone()]);
    // A key stored from now on keeps its flag.
    let new = key(Algorithm::Es256, KeyState::Next, &kek, T0 + secs(1));
    assert!(new.low_s_only);
    let step = KeyTransition {
        lane: Algorithm::Es256,
        expect_current: Some(old.kid.clone()),
        expect_states: vec![],
        set_state: vec![],
        insert: vec![new.clone()],
        delete: vec![],
        event: None,
        at: T0 + secs(1),
    };
    store
        .apply_key_transition(&step, T0 + secs(1), &test_audit())
        .await
        .unwrap();
    assert_eq!(stored_keys(&*store).await, sorted(vec![old, new]));
}

async fn contract_key_transitions_apply_like_the_model(backend: &Backend) {
    let store = backend.open().await;
    let (kek, initial) = with_initial_keys(&*store, Algorithm::Es256).await;
    let es256 = policy(Algorithm::Es256);
    let eddsa = policy(Algorithm::EdDsa);
    let mut model = initial.clone();
    let mut events = Vec::new();

    // Applies `t` to the store and to the model, and compares them.
    async fn step(
        store: &dyn Store,
        model: &mut Vec<KeyRecord>,
        t: &KeyTransition,
        log_until: UnixTime,
    ) -> Option<Event> {
        let event = store
            .apply_key_transition(t, log_until, &test_audit())
            .await
            .unwrap_or_else(|e| panic!("applying {t:?}: {e}"));
        assert!(rotation::apply(model, t));
        assert_eq!(
            stored_keys(store).await,
            sorted(model.clone()),
            "after {t:?}"
        );
        match (&event, &t.event) {
            (None, None) => {}
            (Some(event), Some(change)) => {
                assert_eq!(&event.change, change);
                assert_eq!(event.committed_at, t.at);
            }
            _ => panic!("transition {t:?} returned {event:?}"),
        }
        event
    }

    let find = |model: &[KeyRecord], state: KeyState| -> KeyId {
        let found: Vec<_> = model.iter().filter(|k| k.state == state).collect();
        assert_eq!(found.len(), 1, "one {state:?} key in {model:?}");
        found[0].kid.clone()
    };

    // Promote: current → retired, next → current, a new next.
    let t1 = T0 + secs(100);
    let (a, b) = (
        find(&model, KeyState::Current),
        find(&model, KeyState::Next),
    );
    let keys = store.keys().await.unwrap();
    let t = rotation::transition_for(
        &Step::Promote {
            next: b.clone(),
            current: Some(a.clone()),
        },
        &keys,
        &es256,
        &kek,
        t1,
    )
    .unwrap();
    assert_eq!(t.insert.len(), 1);
    assert!(step(&*store, &mut model, &t, t1).await.is_none());

    // Revoke the retired key: logged and numbered.
    let t2 = T0 + secs(200);
    let keys = store.keys().await.unwrap();
    let t = rotation::revocation(&keys, a.as_str(), &es256, &kek, t2)
        .unwrap()
        .unwrap();
    let event = step(&*store, &mut model, &t, t2 + secs(1000))
        .await
        .unwrap();
    assert_eq!(
        event.change,
        Change::KeyRevoked {
            key_id: a.to_string()
        }
    );
    events.push(event);

    // The default algorithm changes: the old next key leaves (it never signed), a next key of
    // the new algorithm arrives.
    let t3 = T0 + secs(300);
    let c = find(&model, KeyState::Next);
    let keys = store.keys().await.unwrap();
    let t = rotation::transition_for(&Step::DropNext { kid: c.clone() }, &keys, &eddsa, &kek, t3)
        .unwrap();
    assert!(step(&*store, &mut model, &t, t3).await.is_none());
    assert!(!stored_keys(&*store).await.iter().any(|k| k.kid == c));
    let keys = store.keys().await.unwrap();
    let create = Step::CreateNext {
        algorithm: Algorithm::EdDsa,
    };
    let t = rotation::transition_for(&create, &keys, &eddsa, &kek, t3).unwrap();
    assert_eq!(t.lane, Algorithm::EdDsa);
    assert!(step(&*store, &mut model, &t, t3).await.is_none());
    let d = find(&model, KeyState::Next);
    assert_eq!(
        model.iter().find(|k| k.kid == d).unwrap().algorithm,
        Algorithm::EdDsa
    );

    // Revoke next: a new next.
    let t4 = T0 + secs(400);
    let keys = store.keys().await.unwrap();
    let t = rotation::revocation(&keys, d.as_str(), &eddsa, &kek, t4)
        .unwrap()
        .unwrap();
    events.push(
        step(&*store, &mut model, &t, t4 + secs(1000))
            .await
            .unwrap(),
    );

    // Revoke current: next is promoted at once, a new next.
    let t5 = T0 + secs(500);
    let keys = store.keys().await.unwrap();
    let t = rotation::revocation(&keys, b.as_str(), &eddsa, &kek, t5)
        .unwrap()
        .unwrap();
    assert_eq!(t.expect_current, Some(b.clone()));
    events.push(
        step(&*store, &mut model, &t, t5 + secs(1000))
            .await
            .unwrap(),
    );

    // Promote again, then remove the retired key.
    let t6 = T0 + secs(600);
    let keys = store.keys().await.unwrap();
    let (e, f) = (
        find(&model, KeyState::Current),
        find(&model, KeyState::Next),
    );
    let t = rotation::transition_for(
        &Step::Promote {
            next: f.clone(),
            current: Some(e.clone()),
        },
        &keys,
        &eddsa,
        &kek,
        t6,
    )
    .unwrap();
    assert!(step(&*store, &mut model, &t, t6).await.is_none());
    let t7 = T0 + secs(700);
    let keys = store.keys().await.unwrap();
    let t = rotation::transition_for(&Step::Remove { kid: e.clone() }, &keys, &eddsa, &kek, t7)
        .unwrap();
    assert!(step(&*store, &mut model, &t, t7).await.is_none());
    assert!(!stored_keys(&*store).await.iter().any(|k| k.kid == e));

    // The key revocations are numbered in order and logged exactly once each.
    assert!(strictly_increasing(&events), "{events:?}");
    assert_eq!(all_changes(&*store).await, events);
    let state = store.revocation_state(t7).await.unwrap();
    assert_eq!(state.high_water, events.last().unwrap().sequence);
    let revoked: BTreeSet<String> = state.revoked_keys.into_iter().map(|(k, _)| k).collect();
    let expected: BTreeSet<String> = [&a, &d, &b].iter().map(|k| k.to_string()).collect();
    assert_eq!(revoked, expected);

    // A key-revocation event is numbered among the other changes.
    let client_event = {
        store
            .insert_client(&client("c1", uri("spiffe://t/c1")), t7, &test_audit())
            .await
            .unwrap();
        commit(&*store, &cutoff("c1", t7), t7, 100, 200).await
    };
    assert!(client_event.sequence > events.last().unwrap().sequence);
    let keys = store.keys().await.unwrap();
    let g = find(&model, KeyState::Next);
    let t = rotation::revocation(&keys, g.as_str(), &eddsa, &kek, t7 + secs(1))
        .unwrap()
        .unwrap();
    let last = step(&*store, &mut model, &t, t7 + secs(1000))
        .await
        .unwrap();
    assert!(last.sequence > client_event.sequence);
}

/// A step that changes a key of another lane than the one it is guarded by (revoking a
/// removed algorithm's current key promotes the default's next) applies only if that key is
/// still as it was: a revoked key never comes back. And a lane never holds two next keys.
async fn contract_a_step_over_two_lanes_conflicts_when_either_changed(backend: &Backend) {
    let store = backend.open().await;
    let kek = Kek::generate().unwrap();
    let e1 = key(Algorithm::EdDsa, KeyState::Current, &kek, T0);
    let r1 = key(Algorithm::Es256, KeyState::Next, &kek, T0);
    assert!(
        store
            .create_initial_keys(&[e1.clone(), r1.clone()])
            .await
            .unwrap()
    );
    // ES256 is the default now, EdDSA no longer configured.
    let es256 = policy(Algorithm::Es256);
    let keys = store.keys().await.unwrap();
    let of_e1 = rotation::revocation(&keys, e1.kid.as_str(), &es256, &kek, T0 + secs(1))
        .unwrap()
        .unwrap();
    assert!(
        of_e1
            .set_state
            .contains(&(r1.kid.clone(), KeyState::Current))
    );
    let of_r1 = rotation::revocation(&keys, r1.kid.as_str(), &es256, &kek, T0 + secs(1))
        .unwrap()
        .unwrap();
    store
        .apply_key_transition(&of_r1, T0 + secs(1000), &test_audit())
        .await
        .unwrap();
    assert_conflict(
        store
            .apply_key_transition(&of_e1, T0 + secs(1000), &test_audit())
            .await,
        "a step computed when the revoked key was next",
    );
    let after = store.keys().await.unwrap();
    let state = |kid: &KeyId| after.iter().find(|k| &k.kid == kid).unwrap().state;
    assert_eq!(state(&r1.kid), KeyState::Revoked);
    assert_eq!(state(&e1.kid), KeyState::Current);

    // A second next key of ES256 (a racing replica's CreateNext) conflicts.
    let create = Step::CreateNext {
        algorithm: Algorithm::Es256,
    };
    let mut second = rotation::transition_for(&create, &after, &es256, &kek, T0).unwrap();
    second.expect_current = None;
    assert_conflict(
        store.apply_key_transition(&second, T0, &test_audit()).await,
        "two next keys of one algorithm",
    );
}

async fn contract_stale_key_transition_conflicts_and_changes_nothing(backend: &Backend) {
    let store = backend.open().await;
    let kek = Kek::generate().unwrap();
    let es256 = policy(Algorithm::Es256);

    // On an empty store: a transition expecting a current key conflicts; one expecting none
    // applies.
    let phantom = key(Algorithm::Es256, KeyState::Current, &kek, T0);
    let create = Step::CreateNext {
        algorithm: Algorithm::Es256,
    };
    let mut t = rotation::transition_for(&create, &[], &es256, &kek, T0).unwrap();
    t.expect_current = Some(phantom.kid.clone());
    assert_conflict(
        store.apply_key_transition(&t, T0, &test_audit()).await,
        "expect_current on an empty store",
    );
    assert!(store.keys().await.unwrap().is_empty());
    t.expect_current = None;
    assert_eq!(
        store
            .apply_key_transition(&t, T0, &test_audit())
            .await
            .unwrap(),
        None
    );
    assert_eq!(stored_keys(&*store).await, t.insert);

    // Still no current key: a transition that adds one expects none.
    let first_next = t.insert[0].kid.clone();
    let current = key(Algorithm::Es256, KeyState::Current, &kek, T0);
    let t = KeyTransition {
        lane: Algorithm::Es256,
        expect_current: None,
        expect_states: vec![],
        set_state: vec![],
        insert: vec![current.clone()],
        delete: vec![],
        event: None,
        at: T0,
    };
    store
        .apply_key_transition(&t, T0, &test_audit())
        .await
        .unwrap();
    let keys = store.keys().await.unwrap();
    assert_eq!(keys.len(), 2);

    // Two transitions computed against the same keys: a scheduled promotion and a revocation
    // of the current key. The revocation goes first; the promotion must then conflict.
    let now = T0 + secs(24) * 3600;
    let promotion = rotation::transition_for(
        &Step::Promote {
            next: first_next.clone(),
            current: Some(current.kid.clone()),
        },
        &keys,
        &es256,
        &kek,
        now,
    )
    .unwrap();
    let revoke_next = rotation::revocation(&keys, first_next.as_str(), &es256, &kek, now)
        .unwrap()
        .unwrap();
    let revoke_current = rotation::revocation(&keys, current.kid.as_str(), &es256, &kek, now)
        .unwrap()
        .unwrap();
    let event = store
        .apply_key_transition(&revoke_current, now + secs(1000), &test_audit())
        .await
        .unwrap()
        .unwrap();
    let keys_after = stored_keys(&*store).await;
    let changes_after = all_changes(&*store).await;
    assert_eq!(changes_after, vec![event.clone()]);

    // Stale: the current key moved. Nothing changes — no key, no log entry.
    assert_conflict(
        store
            .apply_key_transition(&promotion, now, &test_audit())
            .await,
        "a promotion computed against the old current key",
    );
    assert_conflict(
        store
            .apply_key_transition(&revoke_next, now + secs(1000), &test_audit())
            .await,
        "a key revocation computed against the old current key",
    );
    assert_conflict(
        store
            .apply_key_transition(&revoke_current, now + secs(1000), &test_audit())
            .await,
        "the same revocation twice",
    );
    let mut expecting_none = promotion.clone();
    expecting_none.expect_current = None;
    assert_conflict(
        store
            .apply_key_transition(&expecting_none, now, &test_audit())
            .await,
        "expecting no current key when there is one",
    );
    assert_eq!(stored_keys(&*store).await, keys_after);
    assert_eq!(all_changes(&*store).await, changes_after);
    assert_eq!(high_water(&*store).await, event.sequence);

    // A replica sees the same.
    let replica = backend.open().await;
    assert_conflict(
        replica
            .apply_key_transition(&promotion, now, &test_audit())
            .await,
        "the stale promotion on another replica",
    );
    assert_eq!(stored_keys(&*replica).await, keys_after);
}

async fn contract_reseal_replaces_sealed_forms(backend: &Backend) {
    let store = backend.open().await;
    let old = Kek::generate().unwrap();
    let mut retired = key(Algorithm::EdDsa, KeyState::Retired, &old, T0 - secs(100));
    retired.retired_at = Some(T0 - secs(50));
    let initial = vec![
        key(Algorithm::Es256, KeyState::Current, &old, T0),
        key(Algorithm::EdDsa, KeyState::Next, &old, T0),
        retired,
    ];
    assert!(store.create_initial_keys(&initial).await.unwrap());
    let pepper_plain = [0x5au8; 32];
    let pepper = old.seal(&pepper_plain, PEPPER_AAD).unwrap();
    assert_eq!(store.create_pepper(&pepper).await.unwrap(), pepper);

    // Rotate to a new KEK, as `tokenmint kek rotate` does.
    let new = Kek::generate().unwrap();
    let both = KekRing::try_new(vec![copy_kek(&new), copy_kek(&old)]).unwrap();
    let resealed: Vec<(KeyId, Sealed)> = initial
        .iter()
        .map(|k| (k.kid.clone(), k.reseal(&both, &new).unwrap().unwrap()))
        .collect();
    let new_pepper = new.seal(&pepper_plain, PEPPER_AAD).unwrap();
    store
        .reseal(&resealed, Some(&new_pepper), &test_audit(), UnixTime::EPOCH)
        .await
        .unwrap();

    let mut expected = initial.clone();
    for k in &mut expected {
        let sealed = resealed
            .iter()
            .find(|(kid, _)| kid == &k.kid)
            .unwrap()
            .1
            .clone();
        assert_eq!(sealed.kek_id, new.id());
        k.private = PrivateHalf::Sealed(sealed);
    }
    let stored = stored_keys(&*store).await;
    assert_eq!(stored, sorted(expected.clone()));
    assert_eq!(store.pepper().await.unwrap(), Some(new_pepper.clone()));
    // Only the new KEK is needed now.
    let only_new = KekRing::try_new(vec![copy_kek(&new)]).unwrap();
    for k in &stored {
        k.unseal(&only_new).unwrap();
    }
    assert_eq!(
        *new.open(&store.pepper().await.unwrap().unwrap(), PEPPER_AAD)
            .unwrap(),
        pepper_plain.to_vec()
    );

    // Nothing listed: nothing changes (no pepper means the pepper is left alone).
    store
        .reseal(&[], None, &test_audit(), UnixTime::EPOCH)
        .await
        .unwrap();
    assert_eq!(stored_keys(&*store).await, sorted(expected));
    assert_eq!(store.pepper().await.unwrap(), Some(new_pepper));
}

async fn contract_pepper_is_insert_if_absent(backend: &Backend) {
    let store = backend.open().await;
    let kek = Kek::generate().unwrap();
    let first = kek.seal(&[1u8; 32], PEPPER_AAD).unwrap();
    let second = kek.seal(&[2u8; 32], PEPPER_AAD).unwrap();
    assert_eq!(store.pepper().await.unwrap(), None);
    assert_eq!(store.create_pepper(&first).await.unwrap(), first);
    assert_eq!(store.pepper().await.unwrap(), Some(first.clone()));
    // Another replica that raced and lost gets the stored one back.
    assert_eq!(store.create_pepper(&second).await.unwrap(), first);
    let replica = backend.open().await;
    assert_eq!(replica.create_pepper(&second).await.unwrap(), first);
    assert_eq!(replica.pepper().await.unwrap(), Some(first));
}

fn three_clients() -> Vec<Client> {
    let billing = client("billing", uri("spiffe://tokenmint.test/billing"));
    let mut rs = client("rs.introspector-1", dns("RS.Example.org"));
    rs.scopes = vec![];
    rs.default_scopes = vec![];
    rs.audiences = vec![];
    rs.default_audiences = vec![];
    rs.introspect_audiences = vec![
        "https://ledger.internal".into(),
        "https://audit.internal".into(),
    ];
    rs.permissions = vec![Permission::Introspect, Permission::Issue];
    rs.exchange = ExchangePolicy {
        serves: vec![
            "https://ledger.internal".into(),
            "https://audit.internal".into(),
        ],
        act_for: vec!["billing".into(), "*".into()],
        delegate_audiences: vec![],
        delegate_scopes: vec!["ledger:read".into()],
        asserts_txn_subjects: true,
    };
    rs.enabled = false;
    rs.secret_hash = Some((0u8..32).map(|b| b.wrapping_mul(37) ^ 0x80).collect());
    let mut admin = client("admin:ops_2", dn("CN=admin,O=Acme,C=US"));
    admin.permissions = vec![Permission::Issue, Permission::Introspect, Permission::Admin];
    admin.default_lifetime = Duration::from_secs(3600);
    admin.max_lifetime = Duration::from_secs(86_400);
    admin.secret_hash = Some(vec![0, 255, 0, 1]);
    vec![billing, rs, admin]
}

async fn contract_clients_round_trip(backend: &Backend) {
    let store = backend.open().await;
    let clients = three_clients();
    for c in &clients {
        store.insert_client(c, T0, &test_audit()).await.unwrap();
    }
    assert_eq!(
        stored_clients(&*store).await,
        sorted_clients(clients.clone())
    );
    let replica = backend.open().await;
    assert_eq!(stored_clients(&*replica).await, sorted_clients(clients));
    // Registering a client is not a revocation change.
    assert!(all_changes(&*store).await.is_empty());
}

async fn contract_client_conflicts_change_nothing(backend: &Backend) {
    let store = backend.open().await;
    let clients = three_clients();
    for c in &clients {
        store.insert_client(c, T0, &test_audit()).await.unwrap();
    }
    let before = stored_clients(&*store).await;

    // The same id with a free matcher.
    let same_id = client("billing", uri("spiffe://tokenmint.test/free"));
    assert_conflict(
        store.insert_client(&same_id, T0, &test_audit()).await,
        "a duplicate id",
    );
    // A free id with a taken matcher, in each kind, also as an equivalent spelling.
    for matcher in [
        uri("spiffe://tokenmint.test/billing"),
        dns("rs.example.ORG"),
        dn("cn=ADMIN, o=acme, c=us"),
    ] {
        let what = format!("a duplicate matcher {matcher:?}");
        let taken = client("newcomer", matcher);
        assert_conflict(store.insert_client(&taken, T0, &test_audit()).await, &what);
    }
    assert_eq!(stored_clients(&*store).await, before);

    // A URI matcher is exact: a different case is another matcher.
    store
        .insert_client(
            &client("newcomer", uri("spiffe://tokenmint.test/Billing")),
            T0,
            &test_audit(),
        )
        .await
        .unwrap();
    assert_eq!(stored_clients(&*store).await.len(), 4);
}

/// The audiences a client serves are unique across clients, on insert and on a policy update;
/// a client may keep, drop or move its own.
async fn contract_an_audience_is_served_by_one_client(backend: &Backend) {
    let store = backend.open().await;
    for c in &three_clients() {
        store.insert_client(c, T0, &test_audit()).await.unwrap();
    }
    let before = stored_clients(&*store).await;
    let mut newcomer = client("newcomer", uri("spiffe://tokenmint.test/newcomer"));
    newcomer.exchange.serves = vec!["https://audit.internal".into()];
    let refused = store.insert_client(&newcomer, T0, &test_audit()).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(why)) if why.contains("https://audit.internal")),
        "{refused:?}"
    );
    assert_eq!(
        stored_clients(&*store).await,
        before,
        "nothing half-written"
    );
    // Billing may not take it by an update either.
    let mut billing = before
        .iter()
        .find(|c| c.id.as_str() == "billing")
        .unwrap()
        .clone();
    billing.exchange.serves = vec!["https://ledger.internal".into()];
    assert_conflict(
        store
            .update_client_policy(&billing, T0, &test_audit())
            .await,
        "an update taking a served audience",
    );
    assert_eq!(
        stored_clients(&*store).await,
        before,
        "nothing half-written"
    );
    // Once its server lets it go, it is free.
    let mut rs = before
        .iter()
        .find(|c| c.id.as_str() == "rs.introspector-1")
        .unwrap()
        .clone();
    rs.exchange.serves = vec!["https://audit.internal".into()];
    store
        .update_client_policy(&rs, T0, &test_audit())
        .await
        .unwrap();
    store
        .update_client_policy(&billing, T0, &test_audit())
        .await
        .unwrap();
    let after = stored_clients(&*store).await;
    let served = |id: &str| {
        after
            .iter()
            .find(|c| c.id.as_str() == id)
            .unwrap()
            .exchange
            .serves
            .clone()
    };
    assert_eq!(served("billing"), ["https://ledger.internal"]);
    assert_eq!(served("rs.introspector-1"), ["https://audit.internal"]);
}

async fn contract_sync_config_client(backend: &Backend) {
    let store = backend.open().await;
    let configured = client("billing", uri("spiffe://tokenmint.test/billing"));

    // Absent: inserted.
    assert_eq!(
        store
            .sync_config_client(&configured, false, T0, &test_audit())
            .await
            .unwrap(),
        ClientSync::Inserted
    );
    assert_eq!(stored_clients(&*store).await, vec![configured.clone()]);

    // Present, not overwriting: kept as stored, whatever the config says now.
    let mut changed = configured.clone();
    changed.scopes = vec!["billing:read".into()];
    changed.audiences = vec!["https://ledger.internal".into()];
    changed.enabled = false;
    changed.matcher = uri("spiffe://tokenmint.test/billing-v2");
    assert_eq!(
        store
            .sync_config_client(&changed, false, T0 + secs(1), &test_audit())
            .await
            .unwrap(),
        ClientSync::Kept
    );
    assert_eq!(stored_clients(&*store).await, vec![configured.clone()]);

    // Present, overwriting: the config's fields, the stored secret.
    let mut registered = client("payments", dns("payments.internal"));
    registered.secret_hash = Some(vec![9; 32]);
    store
        .insert_client(&registered, T0, &test_audit())
        .await
        .unwrap();
    let mut from_config = client("payments", dns("payments-v2.internal"));
    from_config.scopes = vec!["pay:write".into()];
    from_config.default_scopes = vec![];
    from_config.introspect_audiences = vec!["https://ledger.internal".into()];
    from_config.permissions = vec![Permission::Introspect];
    from_config.default_lifetime = Duration::from_secs(60);
    from_config.max_lifetime = Duration::from_secs(120);
    from_config.enabled = false;
    assert_eq!(
        store
            .sync_config_client(&from_config, true, T0 + secs(2), &test_audit())
            .await
            .unwrap(),
        ClientSync::Overwritten
    );
    let mut expected_payments = from_config.clone();
    expected_payments.secret_hash = registered.secret_hash.clone();
    assert_eq!(
        stored_clients(&*store).await,
        vec![configured.clone(), expected_payments.clone()]
    );
    // A client overwritten as disabled is disabled in the revocation state too.
    let state = store.revocation_state(T0 + secs(2)).await.unwrap();
    assert_eq!(
        state
            .disabled_clients
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>(),
        vec!["payments"]
    );

    // Absent, overwriting: inserted.
    let third = client("third", dn("CN=third"));
    assert_eq!(
        store
            .sync_config_client(&third, true, T0 + secs(3), &test_audit())
            .await
            .unwrap(),
        ClientSync::Inserted
    );

    // Overwriting onto a matcher another client holds: a conflict, nothing changes.
    let before = stored_clients(&*store).await;
    let mut clash = configured.clone();
    clash.matcher = dns("PAYMENTS-v2.internal");
    assert_conflict(
        store
            .sync_config_client(&clash, true, T0 + secs(4), &test_audit())
            .await,
        "overwriting onto a taken matcher",
    );
    let stealer = client("stealer", dn("cn=THIRD"));
    assert_conflict(
        store
            .sync_config_client(&stealer, false, T0 + secs(4), &test_audit())
            .await,
        "inserting with a taken matcher",
    );
    assert_eq!(stored_clients(&*store).await, before);
    assert!(all_changes(&*store).await.is_empty());
}

async fn contract_commit_change_each_kind(backend: &Backend) {
    let store = backend.open().await;
    store
        .insert_client(&client("c1", uri("spiffe://t/c1")), T0, &test_audit())
        .await
        .unwrap();
    let changes = [
        revoke_token("jti-1", Some("c1"), "c1"),
        revoke_token("jti-2", None, "admin"),
        cutoff("c1", T0 - secs(5)),
        Change::ClientDisabled {
            client_id: "c1".into(),
        },
        Change::ClientEnabled {
            client_id: "c1".into(),
        },
        Change::KeyRevoked {
            key_id: "kid-from-elsewhere".into(),
        },
    ];
    let mut events = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let now = T0 + secs(i64::try_from(i).unwrap());
        events.push(commit(&*store, change, now, 1000, 2000).await);
    }
    assert!(strictly_increasing(&events), "{events:?}");
    assert_eq!(all_changes(&*store).await, events);
    let replica = backend.open().await;
    assert_eq!(all_changes(&*replica).await, events);
    assert_eq!(high_water(&*replica).await, events.last().unwrap().sequence);
}

async fn contract_token_revoked_twice_is_already_in_force(backend: &Backend) {
    let store = backend.open().await;
    let first = commit(
        &*store,
        &revoke_token("jti-1", None, "admin"),
        T0,
        600,
        1200,
    )
    .await;
    // The same token id again, from anyone and with any details: already in force.
    for (again, replica) in [
        (revoke_token("jti-1", None, "admin"), false),
        (revoke_token("jti-1", Some("c1"), "c1"), false),
        (revoke_token("jti-1", None, "admin"), true),
    ] {
        let target = if replica {
            backend.open().await
        } else {
            store.clone()
        };
        assert_eq!(
            target
                .commit_change(
                    &again,
                    T0 + secs(10),
                    T0 + secs(900),
                    T0 + secs(1800),
                    &test_audit()
                )
                .await
                .unwrap(),
            Committed::AlreadyInForce
        );
    }
    assert_eq!(all_changes(&*store).await, vec![first.clone()]);
    let state = store.revocation_state(T0 + secs(10)).await.unwrap();
    assert_eq!(state.high_water, first.sequence);
    assert_eq!(
        state.tokens,
        vec![RevokedToken {
            token_id: "jti-1".into(),
            expires_at: T0 + secs(300),
            client_id: None,
            revoked_by: "admin".into(),
            sequence: first.sequence,
            revoked_at: T0,
        }]
    );
    // Another token is a new change.
    let second = commit(
        &*store,
        &revoke_token("jti-2", None, "admin"),
        T0,
        600,
        1200,
    )
    .await;
    assert!(second.sequence > first.sequence);
}

async fn contract_client_changes_for_unknown_client_are_not_found(backend: &Backend) {
    let store = backend.open().await;
    store
        .insert_client(&client("known", uri("spiffe://t/known")), T0, &test_audit())
        .await
        .unwrap();
    for change in [
        cutoff("ghost", T0),
        Change::ClientDisabled {
            client_id: "ghost".into(),
        },
        Change::ClientEnabled {
            client_id: "ghost".into(),
        },
    ] {
        let what = format!("{change:?}");
        assert_not_found(
            store
                .commit_change(&change, T0, T0 + secs(100), T0 + secs(200), &test_audit())
                .await,
            &what,
        );
    }
    // Nothing was logged or put in force.
    assert!(all_changes(&*store).await.is_empty());
    assert_eq!(store.revocation_state(T0).await.unwrap(), State::default());
    assert!(stored_clients(&*store).await[0].enabled);
    // The log goes on as usual afterwards.
    let event = commit(&*store, &cutoff("known", T0), T0, 100, 200).await;
    assert_eq!(all_changes(&*store).await, vec![event]);
}

async fn contract_a_policy_update_keeps_enabled_and_the_secret(backend: &Backend) {
    let store = backend.open().await;
    let c1 = client("c1", uri("spiffe://t/c1"));
    store.insert_client(&c1, T0, &test_audit()).await.unwrap();
    store
        .insert_client(&client("c2", uri("spiffe://t/c2")), T0, &test_audit())
        .await
        .unwrap();
    let off = Change::ClientDisabled {
        client_id: "c1".into(),
    };
    commit(&*store, &off, T0 + secs(1), 0, 100).await;

    // The update carries enabled = true (as a stale read would): the store keeps its own.
    let mut wider = c1.clone();
    wider.scopes = vec!["a".into(), "b".into()];
    wider.enabled = true;
    let flags = store
        .update_client_policy(&wider, T0 + secs(2), &test_audit())
        .await
        .unwrap();
    assert_eq!(
        flags,
        ClientFlags {
            enabled: false,
            has_secret: false
        }
    );
    let stored = stored_clients(&*store)
        .await
        .into_iter()
        .find(|c| c.id.as_str() == "c1")
        .unwrap();
    assert!(!stored.enabled);
    assert_eq!(stored.scopes, ["a", "b"]);

    // Unknown client; another client's matcher (nothing changes).
    assert_not_found(
        store
            .update_client_policy(
                &client("nobody", uri("spiffe://t/nobody")),
                T0,
                &test_audit(),
            )
            .await,
        "an unknown client",
    );
    assert_conflict(
        store
            .update_client_policy(&client("c1", uri("spiffe://t/c2")), T0, &test_audit())
            .await,
        "another client's matcher",
    );
    let stored = stored_clients(&*store)
        .await
        .into_iter()
        .find(|c| c.id.as_str() == "c1")
        .unwrap();
    assert_eq!(stored.matcher, uri("spiffe://t/c1"));
}

async fn contract_client_disable_and_enable_flip_enabled(backend: &Backend) {
    let store = backend.open().await;
    let c1 = client("c1", uri("spiffe://t/c1"));
    let mut c2 = client("c2", uri("spiffe://t/c2"));
    c2.enabled = false; // configured so
    store.insert_client(&c1, T0, &test_audit()).await.unwrap();
    store.insert_client(&c2, T0, &test_audit()).await.unwrap();
    let disabled = |state: State| -> Vec<(String, u64)> {
        let mut d = state.disabled_clients;
        d.sort();
        d
    };
    assert_eq!(
        disabled(store.revocation_state(T0).await.unwrap()),
        vec![("c2".to_owned(), 0)]
    );

    let off = Change::ClientDisabled {
        client_id: "c1".into(),
    };
    let event = commit(&*store, &off, T0 + secs(1), 0, 100).await;
    let mut c1_off = c1.clone();
    c1_off.enabled = false;
    assert_eq!(stored_clients(&*store).await, vec![c1_off, c2.clone()]);
    let replica = backend.open().await;
    assert_eq!(
        disabled(replica.revocation_state(T0 + secs(1)).await.unwrap()),
        vec![("c1".to_owned(), event.sequence), ("c2".to_owned(), 0)]
    );

    let on = Change::ClientEnabled {
        client_id: "c1".into(),
    };
    let enabled = commit(&*store, &on, T0 + secs(2), 0, 100).await;
    assert!(enabled.sequence > event.sequence);
    assert_eq!(stored_clients(&*store).await, vec![c1.clone(), c2.clone()]);
    assert_eq!(
        disabled(store.revocation_state(T0 + secs(2)).await.unwrap()),
        vec![("c2".to_owned(), 0)]
    );

    let on2 = Change::ClientEnabled {
        client_id: "c2".into(),
    };
    commit(&*store, &on2, T0 + secs(3), 0, 100).await;
    let mut c2_on = c2.clone();
    c2_on.enabled = true;
    assert_eq!(stored_clients(&*store).await, vec![c1, c2_on]);
    assert!(
        store
            .revocation_state(T0 + secs(3))
            .await
            .unwrap()
            .disabled_clients
            .is_empty()
    );
    assert_eq!(all_changes(&*store).await.len(), 3);
}

async fn contract_changes_after_pages_in_order(backend: &Backend) {
    let store = backend.open().await;
    let mut events = Vec::new();
    for i in 0..25 {
        let change = revoke_token(&format!("jti-{i:02}"), None, "admin");
        events.push(commit(&*store, &change, T0 + secs(i), 600, 1200).await);
    }
    assert!(strictly_increasing(&events));

    let mut paged = Vec::new();
    let mut cursor = 0;
    let mut pages = Vec::new();
    loop {
        let page = store.changes_after(cursor, 10).await.unwrap();
        pages.push(page.len());
        if page.is_empty() {
            break;
        }
        assert!(page.iter().all(|e| e.sequence > cursor));
        cursor = page.last().unwrap().sequence;
        paged.extend(page);
    }
    assert_eq!(pages, vec![10, 10, 5, 0]);
    assert_eq!(paged, events);

    // From the middle, from the head, past the head.
    let middle = events[12].sequence;
    assert_eq!(
        store.changes_after(middle, 1000).await.unwrap(),
        events[13..].to_vec()
    );
    assert_eq!(
        store.changes_after(middle, 3).await.unwrap(),
        events[13..16].to_vec()
    );
    let head = events.last().unwrap().sequence;
    assert!(store.changes_after(head, 10).await.unwrap().is_empty());
    assert!(
        store
            .changes_after(head + 1000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.changes_after(u64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(
        store.changes_after(0, 1).await.unwrap(),
        events[..1].to_vec()
    );
}

async fn contract_revocation_state(backend: &Backend) {
    let store = backend.open().await;
    let (kek, initial) = with_initial_keys(&*store, Algorithm::Es256).await;
    store
        .insert_client(&client("c1", uri("spiffe://t/c1")), T0, &test_audit())
        .await
        .unwrap();
    let mut off = client("off", uri("spiffe://t/off"));
    off.enabled = false;
    store.insert_client(&off, T0, &test_audit()).await.unwrap();

    let short = commit(
        &*store,
        &revoke_token("short", Some("c1"), "c1"),
        T0,
        100,
        1000,
    )
    .await;
    let long = Change::TokenRevoked {
        token_id: "long".into(),
        expires_at: T0 + secs(900),
        client_id: None,
        revoked_by: "admin".into(),
    };
    let long = commit(&*store, &long, T0 + secs(1), 999, 2000).await;
    let cut = commit(
        &*store,
        &cutoff("c1", T0 - secs(60)),
        T0 + secs(2),
        500,
        1000,
    )
    .await;
    let disabled = Change::ClientDisabled {
        client_id: "c1".into(),
    };
    let disabled = commit(&*store, &disabled, T0 + secs(3), 0, 1000).await;
    let next = initial[1].kid.clone();
    let keys = store.keys().await.unwrap();
    let t = rotation::revocation(
        &keys,
        next.as_str(),
        &policy(Algorithm::Es256),
        &kek,
        T0 + secs(4),
    )
    .unwrap()
    .unwrap();
    let key_event = store
        .apply_key_transition(&t, T0 + secs(1000), &test_audit())
        .await
        .unwrap()
        .unwrap();

    let short_token = RevokedToken {
        token_id: "short".into(),
        expires_at: T0 + secs(300),
        client_id: Some("c1".into()),
        revoked_by: "c1".into(),
        sequence: short.sequence,
        revoked_at: T0,
    };
    let long_token = RevokedToken {
        token_id: "long".into(),
        expires_at: T0 + secs(900),
        client_id: None,
        revoked_by: "admin".into(),
        sequence: long.sequence,
        revoked_at: T0 + secs(1),
    };
    let tokens = |state: &State| -> Vec<RevokedToken> {
        let mut t = state.tokens.clone();
        t.sort_by_key(|t| t.sequence);
        t
    };

    for replica in [store.clone(), backend.open().await] {
        // At the last second the short entry is needed, it is in force.
        let state = replica.revocation_state(T0 + secs(100)).await.unwrap();
        assert_eq!(
            tokens(&state),
            vec![short_token.clone(), long_token.clone()]
        );
        assert_eq!(state.cutoffs.len(), 1);
        assert_eq!(state.cutoffs[0].client_id, "c1");
        assert_eq!(state.cutoffs[0].issued_at_or_before, T0 - secs(60));
        assert_eq!(state.cutoffs[0].sequence, cut.sequence);
        let mut disabled_clients = state.disabled_clients.clone();
        disabled_clients.sort();
        assert_eq!(
            disabled_clients,
            vec![("c1".to_owned(), disabled.sequence), ("off".to_owned(), 0)]
        );
        assert_eq!(
            state
                .revoked_keys
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            vec![next.as_str()]
        );
        assert_eq!(state.high_water, key_event.sequence);
        assert_eq!(state.purged_through, 0);

        // A second later it is not (purge has not run: the state is filtered by time).
        let state = replica.revocation_state(T0 + secs(101)).await.unwrap();
        assert_eq!(tokens(&state), vec![long_token.clone()]);
        let state = replica
            .revocation_state(T0 + secs(2) + secs(501))
            .await
            .unwrap();
        assert!(state.cutoffs.is_empty(), "{:?}", state.cutoffs);
        assert_eq!(tokens(&state), vec![long_token.clone()]);
        let state = replica.revocation_state(T0 + secs(1000)).await.unwrap();
        assert_eq!(tokens(&state), vec![long_token.clone()]);
        let state = replica.revocation_state(T0 + secs(1001)).await.unwrap();
        assert_eq!(state.tokens, vec![]);
        // Client and key state does not expire with time.
        assert_eq!(state.disabled_clients.len(), 2);
        assert_eq!(state.revoked_keys.len(), 1);
        assert_eq!(state.high_water, key_event.sequence);
    }
}

async fn contract_revoked_tokens_in_pages_and_the_state_head(backend: &Backend) {
    let store = backend.open().await;
    store
        .insert_client(&client("c1", uri("spiffe://t/c1")), T0, &test_audit())
        .await
        .unwrap();
    // Five tokens; the third is kept only 10 s; a cut-off between the second and third.
    let mut sequences = Vec::new();
    for (i, keep) in [(0, 300), (1, 300), (2, 10), (3, 300), (4, 300)] {
        let event = commit(
            &*store,
            &revoke_token(&format!("t{i}"), Some("c1"), "c1"),
            T0,
            keep,
            1000,
        )
        .await;
        sequences.push(event.sequence);
        if i == 1 {
            commit(&*store, &cutoff("c1", T0 - secs(5)), T0, 300, 1000).await;
        }
    }
    let ids = |page: &[tokenmint_core::revocation::RevokedToken]| {
        page.iter().map(|t| t.token_id.clone()).collect::<Vec<_>>()
    };
    let all = store
        .revoked_tokens_page(0, u64::MAX, T0, 100)
        .await
        .unwrap();
    assert_eq!(ids(&all), ["t0", "t1", "t2", "t3", "t4"]);
    // Pages: after a sequence, at most `limit`, in order.
    let first = store.revoked_tokens_page(0, u64::MAX, T0, 2).await.unwrap();
    assert_eq!(ids(&first), ["t0", "t1"]);
    let second = store
        .revoked_tokens_page(first[1].sequence, u64::MAX, T0, 2)
        .await
        .unwrap();
    assert_eq!(ids(&second), ["t2", "t3"]);
    assert_eq!(second[0].sequence, sequences[2]);
    // Up to `through` only, and only what is in force at `now`.
    let through = store
        .revoked_tokens_page(0, sequences[3], T0 + secs(60), 100)
        .await
        .unwrap();
    assert_eq!(ids(&through), ["t0", "t1", "t3"]);
    // The head: the state without its tokens, with the same marks.
    let head = store.revocation_head(T0).await.unwrap();
    let state = store.revocation_state(T0).await.unwrap();
    assert!(head.tokens.is_empty());
    assert_eq!(state.tokens.len(), 5);
    assert_eq!(head.cutoffs, state.cutoffs);
    assert_eq!(head.cutoffs.len(), 1);
    assert_eq!(head.high_water, state.high_water);
    assert_eq!(head.purged_through, state.purged_through);
}

async fn contract_cutoffs_keep_the_latest_time(backend: &Backend) {
    let store = backend.open().await;
    for c in ["c1", "c2"] {
        store
            .insert_client(
                &client(c, uri(&format!("spiffe://t/{c}"))),
                T0,
                &test_audit(),
            )
            .await
            .unwrap();
    }
    let at = |state: &State, c: &str| -> Option<(UnixTime, u64)> {
        let found: Vec<_> = state.cutoffs.iter().filter(|x| x.client_id == c).collect();
        assert!(
            found.len() <= 1,
            "one cut-off per client: {:?}",
            state.cutoffs
        );
        found.first().map(|x| (x.issued_at_or_before, x.sequence))
    };

    // A later time wins; an earlier one never moves the cut-off back, nor shortens how long it
    // is kept.
    let first = commit(&*store, &cutoff("c1", T0 + secs(100)), T0, 1000, 2000).await;
    let lower = commit(&*store, &cutoff("c1", T0 + secs(50)), T0, 500, 2000).await;
    let other = commit(&*store, &cutoff("c2", T0 + secs(10)), T0, 300, 2000).await;
    let state = store.revocation_state(T0 + secs(800)).await.unwrap();
    let (time, sequence) = at(&state, "c1").expect("c1's cut-off is kept until T0 + secs(1000)");
    assert_eq!(time, T0 + secs(100));
    // The sequence of a change that made it (the reference back-end names the latest).
    assert!([first.sequence, lower.sequence].contains(&sequence));
    assert_eq!(at(&state, "c2"), None);
    let state = store.revocation_state(T0 + secs(300)).await.unwrap();
    assert_eq!(at(&state, "c2"), Some((T0 + secs(10), other.sequence)));

    let higher = commit(
        &*store,
        &cutoff("c1", T0 + secs(200)),
        T0 + secs(1),
        1500,
        2000,
    )
    .await;
    let state = store.revocation_state(T0 + secs(1001)).await.unwrap();
    assert_eq!(at(&state, "c1"), Some((T0 + secs(200), higher.sequence)));
    let state = store
        .revocation_state(T0 + secs(1) + secs(1501))
        .await
        .unwrap();
    assert_eq!(at(&state, "c1"), None);
    assert_eq!(all_changes(&*store).await.len(), 4);
}

async fn contract_audit_events_are_written_with_their_change_listed_and_purged(backend: &Backend) {
    use tokenmint_core::audit::{AuditQuery, AuditRecord};
    let store = backend.open().await;
    let query = |after_id, limit| AuditQuery {
        after_id,
        limit,
        ..AuditQuery::default()
    };
    let c1 = client("c1", uri("spiffe://t/c1"));
    let registered =
        AuditRecord::new("admin", "client.registered", "c1").with("matcher", "san_uri");
    store.insert_client(&c1, T0, &registered).await.unwrap();
    let revocation = revoke_token("a", Some("c1"), "c1");
    let revoked = AuditRecord::for_change(&revocation, "c1");
    store
        .commit_change(
            &revocation,
            T0 + secs(100),
            T0 + secs(400),
            T0 + secs(500),
            &revoked,
        )
        .await
        .unwrap();
    // Already in force: nothing is written, audit event included.
    assert_eq!(
        store
            .commit_change(
                &revocation,
                T0 + secs(101),
                T0 + secs(400),
                T0 + secs(500),
                &revoked
            )
            .await
            .unwrap(),
        Committed::AlreadyInForce
    );
    // A refused write leaves no audit event either.
    assert_conflict(
        store.insert_client(&c1, T0 + secs(102), &registered).await,
        "a duplicate id",
    );

    let events = store.audit_events(&query(0, 100)).await.unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.at, e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (T0, "admin", "client.registered", "c1"),
            (T0 + secs(100), "c1", "token.revoked", "a"),
        ]
    );
    assert!(events[0].id < events[1].id);
    assert_eq!(events[0].detail["matcher"], "san_uri");
    assert_eq!(events[1].detail["client_id"], "c1");

    // Paging by id, and each filter.
    let first = store.audit_events(&query(0, 1)).await.unwrap();
    let rest = store.audit_events(&query(first[0].id, 10)).await.unwrap();
    assert_eq!([first, rest].concat(), events);
    for (filter, expected) in [
        (
            AuditQuery {
                actor: Some("c1".into()),
                ..query(0, 10)
            },
            "token.revoked",
        ),
        (
            AuditQuery {
                action: Some("client.registered".into()),
                ..query(0, 10)
            },
            "client.registered",
        ),
        (
            AuditQuery {
                target: Some("a".into()),
                ..query(0, 10)
            },
            "token.revoked",
        ),
        (
            AuditQuery {
                since: Some(T0 + secs(50)),
                ..query(0, 10)
            },
            "token.revoked",
        ),
    ] {
        let found = store.audit_events(&filter).await.unwrap();
        assert_eq!(found.len(), 1, "{filter:?}");
        assert_eq!(found[0].action, expected, "{filter:?}");
    }

    // Purge: older than the bound goes, the rest stays.
    assert_eq!(store.purge_audit(T0 + secs(50)).await.unwrap(), 1);
    assert_eq!(
        store.audit_events(&query(0, 10)).await.unwrap(),
        events[1..].to_vec()
    );
    assert_eq!(store.purge_audit(T0 + secs(50)).await.unwrap(), 0);
}

async fn contract_purge(backend: &Backend) {
    let store = backend.open().await;
    store
        .insert_client(&client("c1", uri("spiffe://t/c1")), T0, &test_audit())
        .await
        .unwrap();
    // (change, state kept for, log kept for)
    let plan = [
        (revoke_token("a", None, "admin"), 10, 20),
        (revoke_token("b", None, "admin"), 100, 200),
        (cutoff("c1", T0), 10, 20),
        (
            Change::ClientDisabled {
                client_id: "c1".into(),
            },
            0,
            20,
        ),
        (revoke_token("c", None, "admin"), 1000, 2000),
    ];
    let mut events = Vec::new();
    for (change, state_for, log_for) in &plan {
        events.push(commit(&*store, change, T0, *state_for, *log_for).await);
    }
    let head = events[4].sequence;

    // State past its time goes; the log stays while kept.
    assert_eq!(
        store.purge(T0 + secs(15)).await.unwrap(),
        2,
        "token a and the cut-off"
    );
    let state = store.revocation_state(T0 + secs(15)).await.unwrap();
    assert_eq!(
        state
            .tokens
            .iter()
            .map(|t| t.token_id.as_str())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["b", "c"])
    );
    assert!(state.cutoffs.is_empty());
    assert_eq!(state.purged_through, 0, "no log entry was removed");
    assert_eq!(state.high_water, head);
    // Even read as of an earlier time, purged state is gone.
    let state = store.revocation_state(T0).await.unwrap();
    assert_eq!(state.tokens.len(), 2);
    assert!(state.cutoffs.is_empty());
    assert_eq!(all_changes(&*store).await, events);

    // Log entries past their time go; purged_through is the highest removed.
    assert_eq!(store.purge(T0 + secs(21)).await.unwrap(), 3);
    assert_eq!(
        all_changes(&*store).await,
        vec![events[1].clone(), events[4].clone()]
    );
    let state = store.revocation_state(T0 + secs(21)).await.unwrap();
    assert_eq!(state.purged_through, events[3].sequence);
    assert_eq!(state.high_water, head);
    assert_eq!(
        state.disabled_clients,
        vec![("c1".to_owned(), events[3].sequence)]
    );
    // Idempotent.
    assert_eq!(store.purge(T0 + secs(21)).await.unwrap(), 0);
    assert_eq!(
        store
            .revocation_state(T0 + secs(21))
            .await
            .unwrap()
            .purged_through,
        events[3].sequence
    );

    // Everything: the log is empty, but its marks stay.
    assert_eq!(store.purge(T0 + secs(5000)).await.unwrap(), 4);
    assert!(all_changes(&*store).await.is_empty());
    let state = store.revocation_state(T0 + secs(5000)).await.unwrap();
    assert_eq!(state.purged_through, head);
    assert_eq!(
        state.high_water, head,
        "purging never lowers the high-water mark"
    );
    assert!(state.tokens.is_empty());
    assert_eq!(
        state.disabled_clients.len(),
        1,
        "client state is not purged"
    );
    // A purge at an earlier time removes nothing and moves no mark back.
    assert_eq!(store.purge(T0).await.unwrap(), 0);
    assert_eq!(
        store.revocation_state(T0).await.unwrap().purged_through,
        head
    );

    // The next change is numbered above every earlier one, on any replica, and a purged token
    // id can be revoked again.
    let replica = backend.open().await;
    let next = commit(
        &*replica,
        &revoke_token("a", None, "admin"),
        T0 + secs(5000),
        100,
        200,
    )
    .await;
    assert!(next.sequence > head, "{} after {head}", next.sequence);
    assert_eq!(all_changes(&*store).await, vec![next.clone()]);
    assert_eq!(
        store.changes_after(head, 10).await.unwrap(),
        vec![next.clone()]
    );
    let state = store.revocation_state(T0 + secs(5000)).await.unwrap();
    assert_eq!(state.high_water, next.sequence);
    assert_eq!(state.purged_through, head);
}

async fn contract_concurrent_commits_are_numbered_in_commit_order(backend: &Backend) {
    const TASKS: u64 = 8;
    const EACH: u64 = 200;
    const TOTAL: u64 = TASKS * EACH;
    // Two "replicas" on one database, and a third that tails the log while they write.
    let replicas = [backend.open().await, backend.open().await];
    let tail_store = backend.open().await;

    // A reader that follows the log as a watcher does must never see a sequence before every
    // lower one is visible: otherwise it would skip that change for good.
    let tail = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        let mut cursor = 0u64;
        let mut seen = Vec::new();
        while cursor < TOTAL {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tailing stopped at {cursor}"
            );
            let batch = tail_store.changes_after(cursor, 100).await.unwrap();
            if batch.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            for event in batch {
                assert_eq!(
                    event.sequence,
                    cursor + 1,
                    "a tailing reader saw {} while {} was not yet visible",
                    event.sequence,
                    cursor + 1
                );
                cursor = event.sequence;
                seen.push(event);
            }
        }
        seen
    });

    let writers: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = replicas[usize::try_from(task % 2).unwrap()].clone();
            tokio::spawn(async move {
                let mut committed = Vec::new();
                for i in 0..EACH {
                    let change = revoke_token(&format!("t{task}-{i:03}"), None, "admin");
                    let event = commit(&*store, &change, T0, 3600, 7200).await;
                    committed.push(event);
                }
                committed
            })
        })
        .collect();
    let mut by_sequence = BTreeMap::new();
    for writer in writers {
        let committed = writer.await.unwrap();
        // Each writer's own commits are numbered in the order it made them.
        assert!(strictly_increasing(&committed));
        for event in committed {
            assert!(
                by_sequence.insert(event.sequence, event.clone()).is_none(),
                "sequence {} given twice",
                event.sequence
            );
        }
    }
    assert_eq!(
        by_sequence.keys().copied().collect::<Vec<_>>(),
        (1..=TOTAL).collect::<Vec<_>>(),
        "sequences are 1..={TOTAL}, distinct, with no gaps"
    );
    let expected: Vec<Event> = by_sequence.into_values().collect();
    assert_eq!(tail.await.unwrap(), expected);

    // Paging from any replica gives them in order.
    for store in replicas.iter() {
        let mut paged = Vec::new();
        let mut cursor = 0;
        loop {
            let page = store.changes_after(cursor, 500).await.unwrap();
            let Some(last) = page.last() else { break };
            cursor = last.sequence;
            paged.extend(page);
        }
        assert_eq!(paged, expected);
        let state = store.revocation_state(T0).await.unwrap();
        assert_eq!(state.tokens.len(), usize::try_from(TOTAL).unwrap());
        assert_eq!(state.high_water, TOTAL);
    }
}

async fn contract_replicas_race_and_the_first_writer_wins(backend: &Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    let kek = Kek::generate().unwrap();
    let es256 = policy(Algorithm::Es256);

    // Two replicas start at once on an empty store: one set of initial keys wins.
    let set = |at| {
        vec![
            key(Algorithm::Es256, KeyState::Current, &kek, at),
            key(Algorithm::Es256, KeyState::Next, &kek, at),
        ]
    };
    let (set_a, set_b) = (set(T0), set(T0));
    let (won_a, won_b) = race(
        {
            let (a, keys) = (a.clone(), set_a.clone());
            async move { a.create_initial_keys(&keys).await }
        },
        {
            let (b, keys) = (b.clone(), set_b.clone());
            async move { b.create_initial_keys(&keys).await }
        },
    )
    .await;
    let (won_a, won_b) = (won_a.unwrap(), won_b.unwrap());
    assert!(won_a ^ won_b, "exactly one wins: {won_a} {won_b}");
    let winner = if won_a { set_a } else { set_b };
    assert_eq!(stored_keys(&*a).await, sorted(winner.clone()));
    assert_eq!(stored_keys(&*b).await, sorted(winner.clone()));

    // And one pepper.
    let (pa, pb) = (
        kek.seal(&[1; 32], PEPPER_AAD).unwrap(),
        kek.seal(&[2; 32], PEPPER_AAD).unwrap(),
    );
    let (got_a, got_b) = race(
        {
            let (a, p) = (a.clone(), pa.clone());
            async move { a.create_pepper(&p).await }
        },
        {
            let (b, p) = (b.clone(), pb.clone());
            async move { b.create_pepper(&p).await }
        },
    )
    .await;
    let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
    assert_eq!(got_a, got_b);
    assert!(got_a == pa || got_a == pb);
    assert_eq!(a.pepper().await.unwrap(), Some(got_a));

    // Both sync the same config client (rounds in a row, as the race is narrow): one inserts,
    // the other keeps it; neither fails.
    let mut expected_clients = Vec::new();
    for round in 0..40 {
        let configured = client(
            &format!("billing-{round}"),
            uri(&format!("spiffe://t/billing-{round}")),
        );
        let outcomes = race(
            {
                let (a, c) = (a.clone(), configured.clone());
                async move { a.sync_config_client(&c, false, T0, &test_audit()).await }
            },
            {
                let (b, c) = (b.clone(), configured.clone());
                async move { b.sync_config_client(&c, false, T0, &test_audit()).await }
            },
        )
        .await;
        let mut outcomes = [format!("{:?}", outcomes.0), format!("{:?}", outcomes.1)];
        outcomes.sort();
        assert_eq!(
            outcomes,
            ["Ok(Inserted)", "Ok(Kept)"],
            "round {round}: two replicas syncing the same config client"
        );
        expected_clients.push(configured);
    }
    assert_eq!(stored_clients(&*b).await, sorted_clients(expected_clients));

    // Both register the same new client: one conflicts.
    for round in 0..10 {
        let newcomer = client(
            &format!("newcomer-{round}"),
            uri(&format!("spiffe://t/newcomer-{round}")),
        );
        let results = race(
            {
                let (a, c) = (a.clone(), newcomer.clone());
                async move { a.insert_client(&c, T0, &test_audit()).await }
            },
            {
                let (b, c) = (b.clone(), newcomer.clone());
                async move { b.insert_client(&c, T0, &test_audit()).await }
            },
        )
        .await;
        let results = [results.0, results.1];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(StoreError::Conflict(_)))),
            "round {round}: {results:?}"
        );
    }

    // Both compute the due promotion from the same keys, rounds in a row: one applies, the
    // other conflicts, and the keys are exactly the winner's result.
    let mut model = winner;
    for round in 0..5 {
        let now = T0 + secs((round + 1) * 24 * 3600);
        let keys = a.keys().await.unwrap();
        let step = rotation::due_step_at(&keys, &es256, now, &|_| false).unwrap();
        assert!(matches!(step, Step::Promote { .. }), "{step:?}");
        let ta = rotation::transition_for(&step, &keys, &es256, &kek, now).unwrap();
        let tb = rotation::transition_for(&step, &keys, &es256, &kek, now).unwrap();
        let (ra, rb) = race(
            {
                let (a, t) = (a.clone(), ta.clone());
                async move { a.apply_key_transition(&t, now, &test_audit()).await }
            },
            {
                let (b, t) = (b.clone(), tb.clone());
                async move { b.apply_key_transition(&t, now, &test_audit()).await }
            },
        )
        .await;
        let applied = match (&ra, &rb) {
            (Ok(None), Err(StoreError::Conflict(_))) => &ta,
            (Err(StoreError::Conflict(_)), Ok(None)) => &tb,
            _ => panic!("round {round}: expected one promotion and one conflict: {ra:?} {rb:?}"),
        };
        assert!(rotation::apply(&mut model, applied));
        assert_eq!(
            stored_keys(&*b).await,
            sorted(model.clone()),
            "round {round}"
        );
    }

    // A revocation of the current key on one replica races a promotion on the other.
    let now = T0 + secs(10) * 24 * 3600;
    let keys = a.keys().await.unwrap();
    let current = keys
        .iter()
        .find(|k| k.state == KeyState::Current)
        .unwrap()
        .kid
        .clone();
    let step = rotation::due_step_at(&keys, &es256, now, &|_| false).unwrap();
    let promote = rotation::transition_for(&step, &keys, &es256, &kek, now).unwrap();
    let revoke = rotation::revocation(&keys, current.as_str(), &es256, &kek, now)
        .unwrap()
        .unwrap();
    let (ra, rb) = race(
        {
            let (a, t) = (a.clone(), promote.clone());
            async move { a.apply_key_transition(&t, now, &test_audit()).await }
        },
        {
            let (b, t) = (b.clone(), revoke.clone());
            async move {
                b.apply_key_transition(&t, now + secs(1000), &test_audit())
                    .await
            }
        },
    )
    .await;
    let applied = match (&ra, &rb) {
        (Ok(None), Err(StoreError::Conflict(_))) => {
            assert!(all_changes(&*a).await.is_empty());
            &promote
        }
        (Err(StoreError::Conflict(_)), Ok(Some(event))) => {
            assert_eq!(all_changes(&*a).await, vec![event.clone()]);
            &revoke
        }
        _ => panic!("expected one transition and one conflict: {ra:?} {rb:?}"),
    };
    assert!(rotation::apply(&mut model, applied));
    assert_eq!(stored_keys(&*a).await, sorted(model));
}

// ---------------------------------------------------------------------------------------------
// Schema agreement
// ---------------------------------------------------------------------------------------------

/// table → column → (loose type, not null).
type Schema = BTreeMap<String, BTreeMap<String, (String, bool)>>;

/// SQLite's declared types and PostgreSQL's `data_type`, mapped to one loose name.
fn loose_type(dialect_type: &str) -> String {
    match dialect_type.to_ascii_lowercase().as_str() {
        "integer" | "bigint" | "smallint" | "int" | "int4" | "int8" | "int2" => "integer".into(),
        "blob" | "bytea" => "bytes".into(),
        "text" | "character varying" | "varchar" => "text".into(),
        other => format!("other: {other}"),
    }
}

async fn sqlite_schema(path: &std::path::Path) -> Schema {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for table in tables {
        let rows = sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?)")
            .bind(&table)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let columns = rows
            .iter()
            .map(|row| {
                let name: String = row.get("name");
                let declared: String = row.get("type");
                let not_null = row.get::<i64, _>("notnull") == 1 || row.get::<i64, _>("pk") > 0;
                (name, (loose_type(&declared), not_null))
            })
            .collect();
        schema.insert(table, columns);
    }
    conn.close().await.ok();
    schema
}

async fn postgres_schema(url: &str) -> Schema {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT table_name::text AS table_name, column_name::text AS column_name, \
         data_type::text AS data_type, is_nullable::text AS is_nullable \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.ok();
    let mut schema = Schema::new();
    for row in rows {
        let table: String = row.get("table_name");
        let column: String = row.get("column_name");
        let data_type: String = row.get("data_type");
        let nullable: String = row.get("is_nullable");
        schema
            .entry(table)
            .or_default()
            .insert(column, (loose_type(&data_type), nullable == "NO"));
    }
    schema
}

mod schema {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrated_sqlite_and_postgres_schemas_agree() {
        let Some(postgres) = Backend::postgres().await else {
            return;
        };
        let sqlite = Backend::sqlite();
        // Opening migrates.
        drop(sqlite.open().await);
        drop(postgres.open().await);
        let (Backend::Sqlite { path, .. }, Backend::Postgres { db }) = (&sqlite, &postgres) else {
            unreachable!()
        };
        let lite = sqlite_schema(path).await;
        let pg = postgres_schema(&db.url).await;
        assert!(!lite.is_empty());

        let tables = |s: &Schema| s.keys().cloned().collect::<Vec<_>>();
        assert_eq!(tables(&pg), tables(&lite), "the same tables");
        let mut differences = Vec::new();
        for (table, columns) in &lite {
            let pg_columns = &pg[table];
            let names =
                |c: &BTreeMap<String, (String, bool)>| c.keys().cloned().collect::<Vec<_>>();
            if names(columns) != names(pg_columns) {
                differences.push(format!(
                    "{table}: columns sqlite {:?}, postgres {:?}",
                    names(columns),
                    names(pg_columns)
                ));
                continue;
            }
            for (column, lite_kind) in columns {
                let pg_kind = &pg_columns[column];
                if lite_kind != pg_kind {
                    differences.push(format!(
                        "{table}.{column}: sqlite (type, not null) {lite_kind:?}, postgres {pg_kind:?}"
                    ));
                }
            }
        }
        assert!(
            differences.is_empty(),
            "the schemas disagree:\n{}",
            differences.join("\n")
        );
    }

    #[test]
    fn a_test_database_url_keeps_everything_but_the_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "tm_test_ab"),
            "postgres://postgres@127.0.0.1:5432/tm_test_ab"
        );
        assert_eq!(
            with_database("postgres://u:p@host/test?sslmode=disable", "x"),
            "postgres://u:p@host/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://host:5432", "x"),
            "postgres://host:5432/x"
        );
        assert_eq!(
            with_database("postgres:///test?host=/run/postgresql", "x"),
            "postgres:///x?host=/run/postgresql"
        );
    }
}

/// The SQLite database and its journal files are readable by their owner only, whether
/// created now or found readable by others from an earlier run.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    let path = dir.path().join("tokenmint.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .insert_client(&client("c1", uri("spiffe://t/c1")), T0, &test_audit())
        .await
        .unwrap();
    for name in ["tokenmint.db", "tokenmint.db-wal", "tokenmint.db-shm"] {
        assert_eq!(mode(name), 0o600, "{name}");
    }
    drop(store);

    // A database an earlier version left readable by others is narrowed at open.
    for name in ["tokenmint.db", "tokenmint.db-wal", "tokenmint.db-shm"] {
        let file = dir.path().join(name);
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.clients().await.unwrap().len(), 1);
    assert_eq!(mode("tokenmint.db"), 0o600);
    for name in ["tokenmint.db-wal", "tokenmint.db-shm"] {
        if dir.path().join(name).exists() {
            assert_eq!(mode(name), 0o600, "{name}");
        }
    }
}

/// SQLite goes on writing to a database file removed or replaced under it, and those writes
/// are gone at the next start: such a write is refused as unavailable, never acknowledged.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refuses_writes_once_its_file_is_removed_or_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenmint.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let commit = |id: &'static str| {
        let store = store.clone();
        async move {
            let change = revoke_token(id, None, "admin");
            store
                .commit_change(&change, T0, T0 + secs(100), T0 + secs(200), &test_audit())
                .await
        }
    };
    assert!(commit("before").await.is_ok());
    std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
    let removed = commit("removed").await;
    assert!(
        matches!(&removed, Err(StoreError::Unavailable(m)) if m.contains("removed or replaced")),
        "{removed:?}"
    );
    assert!(
        store.probe_write(T0).await.is_err(),
        "the probe sees it too"
    );
    // Another file at the path is not the database the writer holds either.
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        commit("replaced").await,
        Err(StoreError::Unavailable(_))
    ));
    // The file back where it was: writes go on.
    std::fs::rename(dir.path().join("moved.db"), &path).unwrap();
    assert!(store.probe_write(T0).await.is_ok());
    assert!(commit("restored").await.is_ok());
}
