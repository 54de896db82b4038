//! `tokenmint.v1.RevocationService`: the revocation watch stream.

use super::*;

/// `tokenmint.v1.RevocationService`: needs the `introspect` permission.
#[derive(Clone, Debug)]
pub struct RevocationApi {
    authority: Arc<Authority>,
    changes: Arc<ChangeLog>,
    stop: CancellationToken,
    limits: WatchLimits,
}

impl RevocationApi {
    /// The service; its streams end when `stop` fires.
    pub fn new(
        authority: Arc<Authority>,
        changes: Arc<ChangeLog>,
        stop: CancellationToken,
        limits: WatchLimits,
    ) -> Self {
        Self {
            authority,
            changes,
            stop,
            limits,
        }
    }
}

/// The wire form of a watch item.
fn watch_item_to_proto(item: WatchItem) -> RevocationEvent {
    use revocation_event::{
        ClientCutoff, ClientDisabled, ClientEnabled, Event as E, KeyRevoked, SnapshotBegin,
        SnapshotComplete, TokenRevoked,
    };
    match item {
        WatchItem::SnapshotBegin(through) => RevocationEvent {
            sequence: 0,
            event: Some(E::SnapshotBegin(SnapshotBegin { through })),
        },
        WatchItem::SnapshotComplete(sequence) => RevocationEvent {
            sequence,
            event: Some(E::SnapshotComplete(SnapshotComplete {})),
        },
        WatchItem::Progress { through, as_of } => RevocationEvent {
            sequence: through,
            event: Some(E::Progress(revocation_event::Progress {
                as_of: Some(prost_types::Timestamp::from(as_of)),
            })),
        },
        WatchItem::Change(Event {
            sequence, change, ..
        }) => RevocationEvent {
            sequence,
            event: Some(match change {
                Change::TokenRevoked {
                    token_id,
                    expires_at,
                    ..
                } => E::TokenRevoked(TokenRevoked {
                    token_id,
                    expires_at: expires_at.as_secs(),
                }),
                Change::ClientCutoff {
                    client_id,
                    issued_at_or_before,
                } => E::ClientCutoff(ClientCutoff {
                    client_id,
                    issued_at_or_before: issued_at_or_before.as_secs(),
                }),
                Change::ClientDisabled { client_id } => {
                    E::ClientDisabled(ClientDisabled { client_id })
                }
                Change::ClientEnabled { client_id } => {
                    E::ClientEnabled(ClientEnabled { client_id })
                }
                Change::KeyRevoked { key_id } => E::KeyRevoked(KeyRevoked { key_id }),
            }),
        },
    }
}

/// A boxed server stream.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<RevocationEvent, Status>> + Send>>;

#[tonic::async_trait]
impl RevocationService for RevocationApi {
    type WatchRevocationsStream = EventStream;

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let (remote, peer) = peer_of(&request);
        let caller = self
            .authority
            .caller(peer.as_deref(), Permission::Introspect)
            .map_err(|e| wire::grpc(wire::caller_refused(&e, remote)))?;
        crate::ops::record_client(caller.id.as_str());
        self.authority
            .check_fresh()
            .map_err(|e| wire::grpc(wire::caller_refused(&e, remote)))?;
        let connection = connection_of(&request);
        let connection_watch = open_connection_watch(connection.as_ref())?;
        let permit = self
            .limits
            .revocations
            .try_open(caller.id.as_str())
            .map_err(|refused| wire::resource_exhausted(&refused.to_string(), 5))?;
        let message = request.into_inner();
        let progress = message.progress;
        let from = match message.resume_snapshot {
            Some(position) => WatchFrom::Snapshot {
                through: position.through,
                after: position.after,
            },
            None => WatchFrom::Sequence(message.after_sequence),
        };
        tracing::info!(caller = %caller.id, ?from, "revocation watch started");
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let changes = self.changes.clone();
        let stop = self.stop.clone();
        let stall = self.limits.stall_timeout;
        tokio::spawn(async move {
            let _counted = (permit, connection_watch);
            if changes.watch(from, tx, stop, stall, progress).await == WatchEnd::Stalled {
                close_stalled(connection.as_ref(), "revocations");
            }
        });
        let stream =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |item| {
                match item {
                    Ok(item) => Ok(watch_item_to_proto(item)),
                    Err(e) => Err(wire::grpc(wire::store_failed(&e))),
                }
            });
        // A stream that ends because the server stops says so, so the watcher reconnects.
        let stop = self.stop.clone();
        let ending = tokio_stream::StreamExt::filter_map(tokio_stream::once(()), move |()| {
            stop.is_cancelled().then(|| Err(shutting_down()))
        });
        let stream = tokio_stream::StreamExt::chain(stream, ending);
        Ok(Response::new(Box::pin(stream)))
    }
}
