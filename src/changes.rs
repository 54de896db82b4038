//! Committing changes to revocation state, durable before OK: the store first, then the
//! blocklist, then every `WatchRevocations` subscriber — and the watch streams themselves,
//! resumable by sequence number, with heartbeats for the watchers that ask.

use std::sync::Arc;

use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

use crate::authority::Authority;
use tokenmint_core::{
    audit::AuditRecord,
    client::{Client, ClientRegistry},
    clock::UnixTime,
    revocation::{Change, Event, Retention, RevokedToken, State},
    rotation::KeyTransition,
};
use tokenmint_store::{Committed, Store, StoreError};

/// How many events a slow watcher may fall behind before it re-reads from the store.
const BROADCAST_CAPACITY: usize = 4096;
/// How many log entries one catch-up read fetches.
const CATCH_UP_BATCH: u32 = 1000;
/// How many revoked tokens one snapshot page holds, and how many log entries a watcher's
/// catch-up reads: what a watch stream holds from the store at a time.
const SNAPSHOT_PAGE: u32 = 256;

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
    // Why the store refused the last commit (full, read-only, its file gone), until one
    // succeeds again: RevocationService and AdminService are not serving meanwhile.
    write_failure: arc_swap::ArcSwapOption<String>,
}

impl std::fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeLog").finish_non_exhaustive()
    }
}

/// One item of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// Drop what you hold; the state follows, current through this sequence.
    SnapshotBegin(u64),
    /// A change (live, caught up, or part of a snapshot).
    Change(Event),
    /// The snapshot is complete, current through this sequence.
    SnapshotComplete(u64),
    /// A heartbeat: every change through `through` has been sent, and nothing newer was
    /// known at `as_of`, when this process last confirmed its state with the store.
    Progress {
        /// The sequence the watcher's state is current through.
        through: u64,
        /// When this process's state was last confirmed current.
        as_of: std::time::SystemTime,
    },
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
            write_failure: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Why the store refused the last commit, while no commit has succeeded since.
    pub fn write_failure(&self) -> Option<Arc<String>> {
        self.write_failure.load_full()
    }

    /// While writes are being refused: one probe write, which clears the refusal if it
    /// commits (a probe that fails is not counted as another refused write).
    pub async fn probe_write(&self) {
        if self.write_failure.load().is_none() {
            return;
        }
        let probed = self.store.probe_write(self.authority.now()).await;
        if probed.is_ok() {
            self.record_write(&probed);
        }
    }

    /// Records how a commit ended: `tokenmint_store_write_failures_total` and
    /// `tokenmint_store_writable` (0 from a refused commit until the next that succeeds).
    fn record_write<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Err(StoreError::Unavailable(reason)) => {
                metrics::counter!("tokenmint_store_write_failures_total").increment(1);
                metrics::gauge!("tokenmint_store_writable").set(0.0);
                self.write_failure.store(Some(Arc::new(reason.clone())));
            }
            Ok(_) if self.write_failure.load().is_some() => {
                metrics::gauge!("tokenmint_store_writable").set(1.0);
                self.write_failure.store(None);
                tracing::info!("the store accepts writes again");
            }
            _ => {}
        }
    }

    /// The authority this log applies to.
    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// Loads the state in force from the store into the blocklist.
    pub async fn load(&self) -> Result<State, StoreError> {
        let now = self.authority.now();
        let state = self.store.revocation_state(now).await?;
        self.authority.blocklist().load(&state, now);
        *self.caught_up_through.lock().await = state.high_water;
        self.authority.mark_fresh();
        if self.write_failure.load().is_none() {
            metrics::gauge!("tokenmint_store_writable").set(1.0);
        }
        Ok(state)
    }

    /// Commits `change`, made by `actor`: to the store with its audit event (an error here
    /// means nothing changed), then the blocklist, then the watchers. `None` when it was
    /// already in force. The commit runs to its end in a task of its own, even if the caller
    /// stops waiting (`server.request_timeout`, a call dropped): a change in the store always
    /// reaches this process's blocklist and watchers with it.
    pub async fn commit(
        self: &Arc<Self>,
        change: Change,
        actor: &str,
    ) -> Result<Option<Event>, StoreError> {
        let log = self.clone();
        let actor = actor.to_owned();
        tokio::spawn(async move { log.commit_now(change, &actor).await })
            .await
            .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("the commit failed: {e}"))))
    }

    async fn commit_now(&self, change: Change, actor: &str) -> Result<Option<Event>, StoreError> {
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
            .await;
        self.record_write(&committed);
        let committed = committed?;
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
            .await;
        self.record_write(&event);
        let event = event?;
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
                        .record(now.since(event.committed_at).as_secs_f64());
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
        self.store
            .purge_audit(self.authority.now().saturating_sub(retention))
            .await
    }

    /// A stream of the state and then every change, until `stop`: from `from.after_sequence`
    /// (a snapshot when it is 0, ahead of the log, or older than its purged history;
    /// otherwise exactly the missed events), or the rest of an unfinished snapshot. Items
    /// are sent to `out`, each within `limits.stall` (else the stream ends as stalled).
    /// Returns how the stream ended: `out` closed, `stop` fired, stalled, or the store failed
    /// (the error is sent too, if it can be).
    /// With `progress`, a [`WatchItem::Progress`] follows every second once the stream is
    /// current, while this process is fresh.
    pub async fn watch(
        &self,
        from: WatchFrom,
        out: tokio::sync::mpsc::Sender<Result<WatchItem, StoreError>>,
        stop: CancellationToken,
        stall: std::time::Duration,
        progress: bool,
    ) -> WatchEnd {
        // Subscribe before reading the store, so nothing committed in between is missed.
        let mut live = self.events.subscribe();
        let sender = Sender {
            out: &out,
            stop: &stop,
            stall,
            progress,
        };
        let result = async {
            let mut cursor = match from {
                WatchFrom::Sequence(after) => self.bring_up_to_date(after, true, &sender).await?,
                WatchFrom::Snapshot { through, after } => {
                    let through = self.resume_snapshot(through, after, &sender).await?;
                    // What was committed since `through`, before this stream subscribed.
                    self.bring_up_to_date(through, false, &sender).await?
                }
            };
            self.follow(&mut live, &mut cursor, &sender).await
        }
        .await;
        match result {
            Ok(()) | Err(Closed::Receiver) => WatchEnd::Closed,
            Err(Closed::Stalled) => WatchEnd::Stalled,
            Err(Closed::Store(e)) => {
                let _ = out.try_send(Err(e));
                WatchEnd::StoreFailed
            }
        }
    }

    /// Sends each change as it is committed, from `cursor` on; a gap, or a watcher fallen
    /// behind the broadcast, is filled from the log.
    async fn follow(
        &self,
        live: &mut broadcast::Receiver<Event>,
        cursor: &mut u64,
        sender: &Sender<'_>,
    ) -> Result<(), Closed> {
        // A stream must not go on vouching for a state this process can no longer refresh:
        // past `max_staleness` it ends with UNAVAILABLE (SPEC §9), checked every second.
        let mut freshness = tokio::time::interval(std::time::Duration::from_secs(1));
        freshness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                () = sender.stop.cancelled() => return Ok(()),
                () = sender.out.closed() => return Ok(()),
                _ = freshness.tick() => match self.authority.check_fresh() {
                    Ok(()) => {
                        self.send_progress(*cursor, sender).await?;
                        continue;
                    }
                    Err(e) => return Err(Closed::Store(StoreError::Unavailable(e.to_string()))),
                },
                received = live.recv() => received,
            };
            match event {
                Ok(event) if event.sequence <= *cursor => {}
                Ok(event) if event.sequence == *cursor + 1 => {
                    *cursor = event.sequence;
                    sender.send(WatchItem::Change(event)).await?;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    *cursor = self.bring_up_to_date(*cursor, false, sender).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }

    /// A heartbeat to a watcher that asked for them, unless a change this process has
    /// applied is still on its way to the watcher (the heartbeat would vouch for it early).
    async fn send_progress(&self, cursor: u64, sender: &Sender<'_>) -> Result<(), Closed> {
        if !sender.progress || self.authority.blocklist().applied_through() > cursor {
            return Ok(());
        }
        let item = WatchItem::Progress {
            through: cursor,
            as_of: self.authority.fresh_as_of(),
        };
        sender.send(item).await
    }

    /// The state's head now (keys, disabled clients, cut-offs and the log's marks).
    async fn head(&self) -> Result<State, Closed> {
        self.store
            .revocation_head(self.authority.now())
            .await
            .map_err(Closed::Store)
    }

    /// Brings a watcher at `cursor` up to the log's head: a snapshot if it must (or if
    /// `initial` and the cursor is 0), else the missed events. Returns the new cursor.
    async fn bring_up_to_date(
        &self,
        cursor: u64,
        initial: bool,
        sender: &Sender<'_>,
    ) -> Result<u64, Closed> {
        let head = self.head().await?;
        let needs_snapshot =
            (initial && cursor == 0) || cursor < head.purged_through || cursor > head.high_water;
        if needs_snapshot {
            return self.snapshot(&head, 0, true, sender).await;
        }
        let mut cursor = cursor;
        loop {
            let batch = self
                .store
                .changes_after(cursor, SNAPSHOT_PAGE)
                .await
                .map_err(Closed::Store)?;
            let done = batch.len() < SNAPSHOT_PAGE as usize;
            for event in batch {
                cursor = event.sequence;
                sender.send(WatchItem::Change(event)).await?;
            }
            if done {
                return Ok(cursor);
            }
        }
    }

    /// The rest of a snapshot current through `through` whose tokens were sent up to the one
    /// of sequence `after`: as it is now, since every change after `through` follows from
    /// the log. A fresh snapshot instead if the log no longer holds what follows `through`.
    /// Returns the sequence the watcher's state is current through.
    async fn resume_snapshot(
        &self,
        through: u64,
        after: u64,
        sender: &Sender<'_>,
    ) -> Result<u64, Closed> {
        let head = self.head().await?;
        // Before its first token the watcher holds only the head, which a fresh snapshot
        // resends anyway: starting again costs nothing and never replays older changes
        // over a newer head.
        if after == 0 || through < head.purged_through || through > head.high_water {
            return self.snapshot(&head, 0, true, sender).await;
        }
        let head = State {
            high_water: through,
            ..head
        };
        self.snapshot(&head, after.min(through), false, sender)
            .await
    }

    /// Sends a snapshot current through `head.high_water`: `SnapshotBegin` if `begin`; the
    /// head's keys, disabled clients and cut-offs unless resuming past them (`after` > 0);
    /// the revoked tokens after `after` in pages of `SNAPSHOT_PAGE`; `SnapshotComplete`.
    /// Entries are read after `head.high_water` was, so any change since is one the watcher
    /// gets from the log next.
    async fn snapshot(
        &self,
        head: &State,
        after: u64,
        begin: bool,
        sender: &Sender<'_>,
    ) -> Result<u64, Closed> {
        let through = head.high_water;
        if begin {
            sender.send(WatchItem::SnapshotBegin(through)).await?;
        }
        if after == 0 {
            for event in head_events(head) {
                sender.send(WatchItem::Change(event)).await?;
            }
        }
        let mut after = after;
        loop {
            let page = self
                .store
                .revoked_tokens_page(after, through, self.authority.now(), SNAPSHOT_PAGE)
                .await
                .map_err(Closed::Store)?;
            let done = page.len() < SNAPSHOT_PAGE as usize;
            for token in page {
                after = token.sequence;
                sender.send(WatchItem::Change(token_event(token))).await?;
            }
            if done {
                break;
            }
        }
        sender.send(WatchItem::SnapshotComplete(through)).await?;
        Ok(through)
    }
}

/// Where a watch stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFrom {
    /// After this sequence (0: from a snapshot).
    Sequence(u64),
    /// In the snapshot current through `through`, after its token of sequence `after` (0:
    /// before its first).
    Snapshot {
        /// The snapshot's `SnapshotBegin` mark.
        through: u64,
        /// The last token sequence received.
        after: u64,
    },
}

/// How a watch stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The receiver went away, or the server stops.
    Closed,
    /// The receiver took nothing for the stall bound.
    Stalled,
    /// The store failed, or this process went stale.
    StoreFailed,
}

/// Why a watch stream ended early.
enum Closed {
    /// The receiver went away.
    Receiver,
    /// The receiver took nothing for the stall bound.
    Stalled,
    /// The store failed.
    Store(StoreError),
}

/// Sends one stream's items.
struct Sender<'a> {
    out: &'a tokio::sync::mpsc::Sender<Result<WatchItem, StoreError>>,
    stop: &'a CancellationToken,
    stall: std::time::Duration,
    /// Whether the watcher asked for heartbeats.
    progress: bool,
}

impl Sender<'_> {
    /// Sends one item, giving up when the receiver goes away, takes nothing within the stall
    /// bound, or the server stops (a watcher that does not read must not hold up shutdown).
    async fn send(&self, item: WatchItem) -> Result<(), Closed> {
        tokio::select! {
            sent = send_within(self.out, Ok(item), self.stall) => sent.map_err(|unsent| match unsent {
                Unsent::Closed => Closed::Receiver,
                Unsent::Stalled => Closed::Stalled,
            }),
            () = self.stop.cancelled() => Err(Closed::Receiver),
        }
    }
}

/// Why an item of a watch stream was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsent {
    /// The receiver went away.
    Closed,
    /// The receiver took nothing within the stall bound.
    Stalled,
}

/// Sends `item` to a watch stream's reader, who must take something within `stall`: the one
/// rule every watch stream (revocations and key sets) keeps.
pub async fn send_within<T>(
    out: &tokio::sync::mpsc::Sender<T>,
    item: T,
    stall: std::time::Duration,
) -> Result<(), Unsent> {
    match tokio::time::timeout(stall, out.send(item)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Unsent::Closed),
        Err(_) => Err(Unsent::Stalled),
    }
}

/// A revoked token as the event that revoked it.
fn token_event(t: RevokedToken) -> Event {
    Event {
        sequence: t.sequence,
        committed_at: t.revoked_at,
        change: Change::TokenRevoked {
            token_id: t.token_id,
            expires_at: t.expires_at,
            client_id: t.client_id,
            revoked_by: t.revoked_by,
        },
    }
}

/// A snapshot head's entries as events, each with the sequence of the change that made it:
/// revoked keys, disabled clients, then cut-offs (revoked tokens are read in pages).
fn head_events(state: &State) -> Vec<Event> {
    let mut events = Vec::with_capacity(
        state.cutoffs.len() + state.disabled_clients.len() + state.revoked_keys.len(),
    );
    events.extend(state.revoked_keys.iter().map(|(key_id, sequence)| Event {
        sequence: *sequence,
        committed_at: UnixTime::EPOCH,
        change: Change::KeyRevoked {
            key_id: key_id.clone(),
        },
    }));
    events.extend(
        state
            .disabled_clients
            .iter()
            .map(|(client_id, sequence)| Event {
                sequence: *sequence,
                committed_at: UnixTime::EPOCH,
                change: Change::ClientDisabled {
                    client_id: client_id.clone(),
                },
            }),
    );
    events.extend(state.cutoffs.iter().map(|c| Event {
        sequence: c.sequence,
        committed_at: UnixTime::EPOCH,
        change: Change::ClientCutoff {
            client_id: c.client_id.clone(),
            issued_at_or_before: c.issued_at_or_before,
        },
    }));
    events
}

/// The caps on open `WatchRevocations` streams: in all, and per client (`[revocation]`
/// `max_watches`, `max_watches_per_client`). The per-connection cap is the edge's.
#[derive(Debug)]
pub struct WatchCaps {
    max_total: usize,
    max_per_client: usize,
    open: std::sync::Mutex<OpenWatches>,
}

#[derive(Debug, Default)]
struct OpenWatches {
    total: usize,
    by_client: std::collections::HashMap<String, usize>,
}

/// Why a watch stream was not opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchRefused {
    /// The server holds its cap.
    #[error("tokenmint holds its limit of {0} revocation watch streams (revocation.max_watches)")]
    Total(usize),
    /// The client holds its cap.
    #[error(
        "this client holds its limit of {0} revocation watch streams (revocation.max_watches_per_client)"
    )]
    Client(usize),
}

impl WatchCaps {
    /// At most `max_total` streams, and `max_per_client` for any one client.
    pub fn new(max_total: u32, max_per_client: u32) -> Arc<Self> {
        Arc::new(Self {
            max_total: usize::try_from(max_total).unwrap_or(usize::MAX),
            max_per_client: usize::try_from(max_per_client).unwrap_or(usize::MAX),
            open: std::sync::Mutex::default(),
        })
    }

    /// Counts a stream for `client` until the permit is dropped, if both caps allow.
    pub fn try_open(self: &Arc<Self>, client: &str) -> Result<WatchPermit, WatchRefused> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.total >= self.max_total {
            return Err(WatchRefused::Total(self.max_total));
        }
        let mine = open.by_client.get(client).copied().unwrap_or(0);
        if mine >= self.max_per_client {
            return Err(WatchRefused::Client(self.max_per_client));
        }
        open.total += 1;
        open.by_client.insert(client.to_owned(), mine + 1);
        Ok(WatchPermit {
            caps: self.clone(),
            client: client.to_owned(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .total
    }
}

/// One open watch stream, counted until dropped.
#[derive(Debug)]
pub struct WatchPermit {
    caps: Arc<WatchCaps>,
    client: String,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut open = self
            .caps
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(mine) = open.by_client.get_mut(&self.client) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_caps_count_per_client_and_in_all_and_give_back_on_drop() {
        let caps = WatchCaps::new(3, 2);
        let a1 = caps.try_open("a").unwrap();
        let _a2 = caps.try_open("a").unwrap();
        assert_eq!(caps.try_open("a").unwrap_err(), WatchRefused::Client(2));
        let b1 = caps.try_open("b").unwrap();
        assert_eq!(caps.try_open("c").unwrap_err(), WatchRefused::Total(3));
        drop(b1);
        let _c1 = caps.try_open("c").unwrap();
        drop(a1);
        assert_eq!(caps.open(), 2);
        let _a3 = caps.try_open("a").unwrap();
        assert_eq!(caps.try_open("a").unwrap_err(), WatchRefused::Total(3));
    }
}
