//! The gRPC source: `WatchJwks` and `WatchRevocations` over mTLS, with heartbeats, resumed by
//! cursor after a disconnect (no full snapshot while the issuer still holds the history), and
//! reconnected with jittered backoff. A stream silent past the staleness bound is dropped and
//! reconnected, so a half-open connection cannot hold the verifier stale.

use std::sync::Arc;

use tokenmint_core::{
    clock::UnixTime,
    jose,
    revocation::{Change, Cutoff, Event, RevokedToken, State as Revocations},
};
use tokenmint_proto::v1::{
    GetJwksRequest, RevocationEvent, SnapshotResume, WatchJwksRequest, WatchRevocationsRequest,
    key_service_client::KeyServiceClient, revocation_event::Event as Kind,
    revocation_service_client::RevocationServiceClient,
};
use tokio::{runtime::Handle, task::JoinHandle};
use tokio_rustls::rustls::ClientConfig;
use tonic::transport::Channel;

use super::{BoxFuture, Fetch, Started};
use tokenmint_proto::backoff::Backoff;

use crate::{
    error::BuildError,
    settings::Settings,
    state::{IssuerKeys, State, Stats},
};

/// The largest message taken from the issuer (a JWKS, a revocation event).
const MAX_MESSAGE: usize = 512 * 1024;
/// The most revoked tokens a snapshot may hold (the issuer's own cap is a million by default),
/// so a faulty issuer cannot grow a verifier's memory without bound.
const MAX_SNAPSHOT_TOKENS: usize = 16_000_000;

pub(crate) fn start(
    endpoint: &str,
    tls: Arc<ClientConfig>,
    settings: &Settings,
    state: Arc<State>,
    runtime: &Handle,
) -> Result<Started, BuildError> {
    let channel = channel(endpoint, &tls, settings, runtime)?;
    let fetch = Arc::new(GrpcFetch {
        channel: channel.clone(),
    });
    let tasks: Vec<JoinHandle<()>> = vec![
        runtime.spawn(watch_keys(channel.clone(), state.clone(), settings.clone())),
        runtime.spawn(watch_revocations(channel, state, settings.clone())),
    ];
    Ok(Started { fetch, tasks })
}

/// A lazily connecting channel whose connections are TLS with the caller's configuration.
fn channel(
    endpoint: &str,
    tls: &ClientConfig,
    settings: &Settings,
    runtime: &Handle,
) -> Result<Channel, BuildError> {
    let _entered = runtime.enter();
    tokenmint_proto::connect::channel(endpoint, tls, settings.fetch_timeout)
        .map_err(|bad| BuildError::BadUrl(bad.0))
}

struct GrpcFetch {
    channel: Channel,
}

impl Fetch for GrpcFetch {
    fn fetch(&self) -> BoxFuture<'_, Result<IssuerKeys, String>> {
        Box::pin(async move {
            let mut client =
                KeyServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE);
            let response = client
                // Every key: parse_jwks keeps those this build verifies, ML-DSA included in
                // the aws-lc build.
                .get_jwks(GetJwksRequest {
                    include_post_quantum: true,
                })
                .await
                .map_err(|status| status_text(&status))?
                .into_inner();
            issuer_keys(&response.jwks_json, response.version)
        })
    }
}

/// A key set message as [`IssuerKeys`].
fn issuer_keys(jwks_json: &str, version: String) -> Result<IssuerKeys, String> {
    let parsed = jose::parse_jwks(jwks_json).map_err(|e| format!("unusable key set: {e}"))?;
    Ok(IssuerKeys { parsed, version })
}

fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message().escape_debug())
}

/// Watches the key set for as long as the verifier lives.
async fn watch_keys(channel: Channel, state: Arc<State>, settings: Settings) {
    let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
    loop {
        let outcome = key_stream(&channel, &state, &settings, &mut backoff).await;
        state.stats.note_error(format!("key watch: {outcome}"));
        Stats::count(&state.stats.reconnects);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One `WatchJwks` stream, until it ends: why it ended.
async fn key_stream(
    channel: &Channel,
    state: &State,
    settings: &Settings,
    backoff: &mut Backoff,
) -> String {
    let mut client = KeyServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE);
    let opening = client.watch_jwks(WatchJwksRequest {
        progress: true,
        include_post_quantum: true,
    });
    let mut stream = match tokio::time::timeout(settings.staleness, opening).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return status_text(&status),
        Err(_) => return "the stream did not open in time".into(),
    };
    loop {
        let message = match tokio::time::timeout(settings.staleness, stream.message()).await {
            Err(_) => return "the stream went silent".into(),
            Ok(Err(status)) => return status_text(&status),
            Ok(Ok(None)) => return "the stream ended".into(),
            Ok(Ok(Some(message))) => message,
        };
        if message.progress.is_some() {
            // A heartbeat for another version than the one held (a one-off fetch raced a
            // change): start over, the stream's first message is the current set.
            if !state.holds_version(&message.version) {
                return "the key set held is not the issuer's current one".into();
            }
            state.mark_keys_fresh();
            continue;
        }
        let keys = issuer_keys(&message.jwks_json, message.version);
        match keys.and_then(|keys| state.set_keys(keys)) {
            Ok(()) => backoff.reset(),
            Err(error) => return error,
        }
    }
}

/// Where the revocation watch stands: nothing yet, current through a sequence, or inside a
/// snapshot (with what has arrived of it).
enum Cursor {
    Fresh,
    After(u64),
    InSnapshot {
        through: u64,
        after: u64,
        partial: Box<Revocations>,
    },
}

impl Cursor {
    fn request(&self) -> WatchRevocationsRequest {
        let mut request = WatchRevocationsRequest {
            progress: true,
            ..Default::default()
        };
        match self {
            Cursor::Fresh => {}
            Cursor::After(sequence) => request.after_sequence = *sequence,
            Cursor::InSnapshot { through, after, .. } => {
                request.resume_snapshot = Some(SnapshotResume {
                    through: *through,
                    after: *after,
                });
            }
        }
        request
    }
}

/// Watches revocations for as long as the verifier lives, resuming from the cursor.
async fn watch_revocations(channel: Channel, state: Arc<State>, settings: Settings) {
    let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
    let mut cursor = Cursor::Fresh;
    loop {
        let outcome =
            revocation_stream(&channel, &state, &settings, &mut cursor, &mut backoff).await;
        state
            .stats
            .note_error(format!("revocation watch: {outcome}"));
        Stats::count(&state.stats.reconnects);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One `WatchRevocations` stream, until it ends: why it ended.
async fn revocation_stream(
    channel: &Channel,
    state: &State,
    settings: &Settings,
    cursor: &mut Cursor,
    backoff: &mut Backoff,
) -> String {
    let mut client =
        RevocationServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE);
    let resuming = matches!(cursor, Cursor::After(_));
    let opening = client.watch_revocations(cursor.request());
    let mut stream = match tokio::time::timeout(settings.staleness, opening).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return status_text(&status),
        Err(_) => return "the stream did not open in time".into(),
    };
    let mut first = true;
    loop {
        let event = match tokio::time::timeout(settings.staleness, stream.message()).await {
            Err(_) => return "the stream went silent".into(),
            Ok(Err(status)) => return status_text(&status),
            Ok(Ok(None)) => return "the stream ended".into(),
            Ok(Ok(Some(event))) => event,
        };
        if first && resuming && !matches!(event.event, Some(Kind::SnapshotBegin(_))) {
            Stats::count(&state.stats.resumes);
        }
        first = false;
        if apply(state, cursor, event) {
            backoff.reset();
        }
        if let Cursor::InSnapshot { partial, .. } = cursor
            && partial.tokens.len() > MAX_SNAPSHOT_TOKENS
        {
            *cursor = Cursor::Fresh;
            return format!("a snapshot of over {MAX_SNAPSHOT_TOKENS} revoked tokens: refused");
        }
    }
}

/// Applies one event to the cursor and the state; whether the state is now current.
fn apply(state: &State, cursor: &mut Cursor, event: RevocationEvent) -> bool {
    let sequence = event.sequence;
    let Some(kind) = event.event else {
        return false;
    };
    let now = state.clock.unix_now();
    match (kind, &mut *cursor) {
        (Kind::SnapshotBegin(begin), _) => {
            Stats::count(&state.stats.snapshots);
            *cursor = Cursor::InSnapshot {
                through: begin.through,
                after: 0,
                partial: Box::default(),
            };
            false
        }
        (Kind::SnapshotComplete(_), Cursor::InSnapshot { partial, .. }) => {
            partial.high_water = sequence;
            state.blocklist.load(partial, now);
            *cursor = Cursor::After(sequence);
            state.mark_revocations_fresh();
            true
        }
        (Kind::Progress(progress), Cursor::After(through)) => {
            // Everything through `sequence` has been sent (changes this caller may not see
            // included), so the cursor moves there.
            *through = (*through).max(sequence);
            note_as_of(state, progress.as_of.as_ref());
            state.mark_revocations_fresh();
            true
        }
        (kind, Cursor::InSnapshot { after, partial, .. }) => {
            add_to_snapshot(partial, after, sequence, kind);
            false
        }
        (kind, Cursor::After(through)) => {
            if let Some(change) = change_of(kind) {
                let event = Event {
                    sequence,
                    committed_at: now,
                    change,
                };
                state.blocklist.apply(&event, now);
                *through = (*through).max(sequence);
            }
            false
        }
        (_, Cursor::Fresh) => false,
    }
}

/// Records the issuer's `as_of` of a heartbeat (for the feed-lag figure).
fn note_as_of(state: &State, as_of: Option<&prost_types::Timestamp>) {
    if let Some(ms) = as_of.and_then(|t| {
        let seconds = u64::try_from(t.seconds).ok()?;
        let millis = u64::try_from(t.nanos / 1_000_000).ok()?;
        seconds.checked_mul(1000)?.checked_add(millis)
    }) {
        state
            .stats
            .revocations_as_of_ms
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One entry of a snapshot into the state being assembled.
fn add_to_snapshot(partial: &mut Revocations, after: &mut u64, sequence: u64, kind: Kind) {
    match kind {
        Kind::TokenRevoked(token) => {
            *after = sequence;
            partial.tokens.push(RevokedToken {
                token_id: token.token_id,
                expires_at: UnixTime::from_secs(token.expires_at),
                client_id: None,
                revoked_by: String::new(),
                sequence,
                revoked_at: UnixTime::EPOCH,
            });
        }
        Kind::ClientCutoff(cutoff) => partial.cutoffs.push(Cutoff {
            client_id: cutoff.client_id,
            issued_at_or_before: UnixTime::from_secs(cutoff.issued_at_or_before),
            sequence,
        }),
        Kind::ClientDisabled(disabled) => {
            partial
                .disabled_clients
                .push((disabled.client_id, sequence));
        }
        Kind::KeyRevoked(key) => partial.revoked_keys.push((key.key_id, sequence)),
        _ => {}
    }
}

/// The change a live event carries (heartbeats and snapshot markers carry none).
fn change_of(kind: Kind) -> Option<Change> {
    Some(match kind {
        Kind::TokenRevoked(token) => Change::TokenRevoked {
            token_id: token.token_id,
            expires_at: UnixTime::from_secs(token.expires_at),
            client_id: None,
            revoked_by: String::new(),
        },
        Kind::ClientCutoff(cutoff) => Change::ClientCutoff {
            client_id: cutoff.client_id,
            issued_at_or_before: UnixTime::from_secs(cutoff.issued_at_or_before),
        },
        Kind::ClientDisabled(c) => Change::ClientDisabled {
            client_id: c.client_id,
        },
        Kind::ClientEnabled(c) => Change::ClientEnabled {
            client_id: c.client_id,
        },
        Kind::KeyRevoked(key) => Change::KeyRevoked { key_id: key.key_id },
        _ => return None,
    })
}
