//! Committing changes to revocation state, durable before OK: the store first, then the
//! blocklist, then every `WatchRevocations` subscriber — and the watch streams themselves,
//! resumable by sequence number.

use std::sync::Arc;

use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

use crate::{
    audit::AuditRecord,
    authority::Authority,
    client::{Client, ClientRegistry},
    revocation::{Change, Event, Retention, State},
    rotation::KeyTransition,
    store::{Committed, Store, StoreError},
};

/// How many events a slow watcher may fall behind before it re-reads from the store.
const BROADCAST_CAPACITY: usize = 4096;
/// How many log entries one catch-up read fetches.
const CATCH_UP_BATCH: u32 = 1000;

/// The single path every revocation and client change takes.
pub struct ChangeLog {
    store: Arc<dyn Store>,
    authority: Arc<Authority>,
    retention: Retention,
    events: broadcast::Sender<Event>,
    // One commit at a time, so events reach the blocklist and watchers in sequence order.
    commit_lock: Mutex<()>,
    // The highest sequence read back from the store's log (commits by this process and by
    // other replicas alike); one catch-up at a time.
    caught_up_through: Mutex<u64>,
    // The clients last installed in the registry. Held across the store read and the swap,
    // so a slower reload can never install an older list over a newer one.
    clients_seen: Mutex<Option<Vec<Client>>>,
}

impl std::fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeLog").finish_non_exhaustive()
    }
}

/// One item of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// Drop what you hold; the state follows.
    SnapshotBegin,
    /// A change (live, caught up, or part of a snapshot).
    Change(Event),
    /// The snapshot is complete, current through this sequence.
    SnapshotComplete(u64),
}

impl ChangeLog {
    /// The change log over `store`, applying to `authority`'s blocklist.
    pub fn new(store: Arc<dyn Store>, authority: Arc<Authority>, retention: Retention) -> Self {
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            store,
            authority,
            retention,
            events,
            commit_lock: Mutex::new(()),
            clients_seen: Mutex::new(None),
            caught_up_through: Mutex::new(0),
        }
    }

    /// Loads the state in force from the store into the blocklist.
    pub async fn load(&self) -> Result<State, StoreError> {
        let now = self.authority.now();
        let state = self.store.revocation_state(now).await?;
        self.authority.blocklist().load(&state, now);
        *self.caught_up_through.lock().await = state.high_water;
        self.authority.mark_fresh();
        Ok(state)
    }

    /// Commits `change`, made by `actor`: to the store with its audit event (an error here
    /// means nothing changed), then the blocklist, then the watchers. `None` when it was
    /// already in force.
    pub async fn commit(&self, change: Change, actor: &str) -> Result<Option<Event>, StoreError> {
        let _serial = self.commit_lock.lock().await;
        let now = self.authority.now();
        let committed = self
            .store
            .commit_change(
                &change,
                now,
                self.retention.state_until(&change, now),
                self.retention.log_until(&change, now),
                &AuditRecord::for_change(&change, actor),
            )
            .await?;
        let Committed::Event(event) = committed else {
            return Ok(None);
        };
        self.authority.blocklist().apply(&event, now);
        if matches!(
            event.change,
            Change::ClientDisabled { .. } | Change::ClientEnabled { .. }
        ) {
            self.reload_clients().await;
        }
        // No receiver is not an error: nobody is watching.
        let _ = self.events.send(event.clone());
        tracing::info!(sequence = event.sequence, change = ?event.change, "revocation state changed");
        Ok(Some(event))
    }

    /// Commits a key-lifecycle step (with its key-revocation event, if any) in the same order
    /// as every other change: the store, then the blocklist, then the watchers.
    pub async fn commit_key_transition(
        &self,
        transition: &KeyTransition,
        actor: &str,
    ) -> Result<Option<Event>, StoreError> {
        let _serial = self.commit_lock.lock().await;
        let log_until = transition.event.as_ref().map_or(transition.at, |change| {
            self.retention.log_until(change, transition.at)
        });
        let event = self
            .store
            .apply_key_transition(
                transition,
                log_until,
                &AuditRecord::for_key_transition(transition, actor),
            )
            .await?;
        if let Some(event) = &event {
            self.authority.blocklist().apply(event, transition.at);
            let _ = self.events.send(event.clone());
            tracing::info!(sequence = event.sequence, change = ?event.change, "revocation state changed");
        }
        Ok(event)
    }

    /// Re-reads the clients from the store and installs a new registry if they changed. The
    /// periodic refresh and the commit path both come through here, one at a time.
    pub async fn reload_clients(&self) {
        let mut seen = self.clients_seen.lock().await;
        let clients = match self.store.clients().await {
            Ok(clients) => clients,
            Err(e) => {
                tracing::warn!(error = %e, "could not reload clients; keeping the previous registry");
                return;
            }
        };
        if seen.as_ref() == Some(&clients) {
            return;
        }
        match ClientRegistry::try_new(clients.clone()) {
            Ok(registry) => {
                if seen.is_some() {
                    tracing::info!(clients = clients.len(), "client registry reloaded");
                }
                self.authority.replace_clients(registry);
                *seen = Some(clients);
            }
            Err(e) => {
                tracing::error!(error = %e, "stored clients conflict; keeping the previous registry")
            }
        }
    }

    /// Reads every change committed since the last catch-up — by this process or by another
    /// replica — in sequence order, and applies it: the blocklist, the watchers, the client
    /// registry. Applying is idempotent, so a change this process committed itself is simply
    /// seen again. On success the authority is marked fresh. Returns the events read and
    /// whether any of them was a key revocation (the key ring must then be rebuilt).
    pub async fn catch_up(&self) -> Result<(usize, bool), StoreError> {
        let mut through = self.caught_up_through.lock().await;
        let mut read = 0;
        let mut keys_changed = false;
        let mut clients_changed = false;
        loop {
            let batch = self.store.changes_after(*through, CATCH_UP_BATCH).await?;
            let done = batch.len() < CATCH_UP_BATCH as usize;
            let now = self.authority.now();
            for event in batch {
                // A change another replica committed (this process applied its own at
                // commit): how long it took to arrive. committed_at is in whole seconds.
                if event.sequence > self.authority.blocklist().applied_through() {
                    metrics::histogram!("tokenmint_replication_lag_seconds")
                        .record(now.saturating_sub(event.committed_at).max(0) as f64);
                }
                self.authority.blocklist().apply(&event, now);
                keys_changed |= matches!(event.change, Change::KeyRevoked { .. });
                clients_changed |= matches!(
                    event.change,
                    Change::ClientDisabled { .. } | Change::ClientEnabled { .. }
                );
                *through = event.sequence;
                read += 1;
                let _ = self.events.send(event);
            }
            if done {
                break;
            }
        }
        drop(through);
        if clients_changed {
            self.reload_clients().await;
        }
        self.authority.mark_fresh();
        metrics::gauge!("tokenmint_changes_applied_sequence")
            .set(self.authority.blocklist().applied_through() as f64);
        Ok((read, keys_changed))
    }

    /// Removes expired state and old log entries from the store.
    pub async fn purge(&self) -> Result<u64, StoreError> {
        let removed = self.store.purge(self.authority.now()).await?;
        self.authority.blocklist().run_pending_tasks();
        Ok(removed)
    }

    /// Removes stored audit events older than `retention`; returns how many.
    pub async fn purge_audit(&self, retention: std::time::Duration) -> Result<u64, StoreError> {
        let age = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        self.store
            .purge_audit(self.authority.now().saturating_sub(age))
            .await
    }

    /// A stream of the state after `after_sequence` and then every change, until `stop`.
    /// Sends a snapshot when `after_sequence` is 0, ahead of the log, or older than its purged
    /// history; otherwise exactly the missed events. Items are sent to `out`; the function
    /// returns when `out` closes, `stop` fires, or the store fails.
    pub async fn watch(
        &self,
        after_sequence: u64,
        out: tokio::sync::mpsc::Sender<Result<WatchItem, StoreError>>,
        stop: CancellationToken,
    ) {
        // Subscribe before reading the store, so nothing committed in between is missed.
        let mut live = self.events.subscribe();
        let mut cursor = after_sequence;
        // A stream must not go on vouching for a state this process can no longer refresh:
        // past `max_staleness` it ends with UNAVAILABLE (SPEC §9), checked every second.
        let mut freshness = tokio::time::interval(std::time::Duration::from_secs(1));
        freshness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sent = async {
            cursor = self.bring_up_to_date(cursor, true, &out, &stop).await?;
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = out.closed() => return Ok(()),
                    _ = freshness.tick() => match self.authority.check_fresh() {
                        Ok(()) => continue,
                        Err(e) => return Err(Closed::Store(StoreError::Unavailable(e.to_string()))),
                    },
                    received = live.recv() => received,
                };
                match event {
                    Ok(event) if event.sequence <= cursor => {}
                    Ok(event) if event.sequence == cursor + 1 => {
                        cursor = event.sequence;
                        send(&out, WatchItem::Change(event), &stop).await?;
                    }
                    // A gap, or this watcher fell behind the broadcast: read from the log.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        cursor = self.bring_up_to_date(cursor, false, &out, &stop).await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        };
        let result: Result<(), Closed> = sent.await;
        if let Err(Closed::Store(e)) = result {
            let _ = out.send(Err(e)).await;
        }
    }

    /// Brings a watcher at `cursor` up to the log's head: a snapshot if it must (or if
    /// `initial` and the cursor is 0), else the missed events. Returns the new cursor.
    async fn bring_up_to_date(
        &self,
        cursor: u64,
        initial: bool,
        out: &tokio::sync::mpsc::Sender<Result<WatchItem, StoreError>>,
        stop: &CancellationToken,
    ) -> Result<u64, Closed> {
        let state = self
            .store
            .revocation_state(self.authority.now())
            .await
            .map_err(Closed::Store)?;
        let needs_snapshot =
            (initial && cursor == 0) || cursor < state.purged_through || cursor > state.high_water;
        if needs_snapshot {
            send(out, WatchItem::SnapshotBegin, stop).await?;
            for item in snapshot_events(&state) {
                send(out, WatchItem::Change(item), stop).await?;
            }
            send(out, WatchItem::SnapshotComplete(state.high_water), stop).await?;
            return Ok(state.high_water);
        }
        let mut cursor = cursor;
        loop {
            let batch = self
                .store
                .changes_after(cursor, CATCH_UP_BATCH)
                .await
                .map_err(Closed::Store)?;
            let done = batch.len() < CATCH_UP_BATCH as usize;
            for event in batch {
                cursor = event.sequence;
                send(out, WatchItem::Change(event), stop).await?;
            }
            if done {
                return Ok(cursor);
            }
        }
    }
}

/// Why a watch stream ended early.
enum Closed {
    /// The receiver went away.
    Receiver,
    /// The store failed.
    Store(StoreError),
}

/// Sends one item, giving up when the receiver goes away or the server stops (a watcher that
/// does not read must not hold up shutdown).
async fn send(
    out: &tokio::sync::mpsc::Sender<Result<WatchItem, StoreError>>,
    item: WatchItem,
    stop: &CancellationToken,
) -> Result<(), Closed> {
    tokio::select! {
        sent = out.send(Ok(item)) => sent.map_err(|_| Closed::Receiver),
        () = stop.cancelled() => Err(Closed::Receiver),
    }
}

/// The state as events, each with the sequence of the change that made it.
fn snapshot_events(state: &State) -> Vec<Event> {
    let mut events = Vec::with_capacity(
        state.tokens.len()
            + state.cutoffs.len()
            + state.disabled_clients.len()
            + state.revoked_keys.len(),
    );
    events.extend(state.tokens.iter().map(|t| Event {
        sequence: t.sequence,
        committed_at: t.revoked_at,
        change: Change::TokenRevoked {
            token_id: t.token_id.clone(),
            expires_at: t.expires_at,
            client_id: t.client_id.clone(),
            revoked_by: t.revoked_by.clone(),
        },
    }));
    events.extend(state.cutoffs.iter().map(|c| Event {
        sequence: c.sequence,
        committed_at: 0,
        change: Change::ClientCutoff {
            client_id: c.client_id.clone(),
            issued_at_or_before: c.issued_at_or_before,
        },
    }));
    events.extend(
        state
            .disabled_clients
            .iter()
            .map(|(client_id, sequence)| Event {
                sequence: *sequence,
                committed_at: 0,
                change: Change::ClientDisabled {
                    client_id: client_id.clone(),
                },
            }),
    );
    events.extend(state.revoked_keys.iter().map(|(key_id, sequence)| Event {
        sequence: *sequence,
        committed_at: 0,
        change: Change::KeyRevoked {
            key_id: key_id.clone(),
        },
    }));
    events
}
