//! The gRPC edge (tonic's one home): `TokenService`, `KeyService`, `RevocationService` and
//! `AdminService` over the core, plus the generated code and descriptor set for `tokenmint.v1`.

use std::{fmt, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    authority::Authority,
    changes::{ChangeLog, Unsent, WatchCaps, WatchEnd, WatchFrom, WatchItem, send_within},
    connection::{ConnectionInfo, ConnectionState, ConnectionWatch},
    lifecycle::Rotator,
    registration::{self, RegisterError, Registrar},
    wire,
};
use tokenmint_core::{
    audit::AuditRecord,
    client::{Client, LifetimeDefaults, PeerCertificate, Permission},
    clock::{UnixTime, whole_secs},
    introspection::ActiveToken,
    revocation::{Change, Event},
};
use tokenmint_store::Store;

mod admin;
mod key;
mod revocation;
mod token;

pub use admin::{AdminApi, client_from_spec};
pub use key::KeyApi;
pub use revocation::RevocationApi;
pub use token::TokenApi;

/// The generated gRPC services of `tokenmint.v1` over the messages of `tokenmint_proto::v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    pub use tokenmint_proto::v1::*;

    tonic::include_proto!("tokenmint.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tokenmint_descriptor");
}

use proto::{
    AuditEvent, ClientInfo, ClientSpec, DisableClientRequest, DisableClientResponse,
    EnableClientRequest, EnableClientResponse, ExchangeTokenRequest, ExchangeTokenResponse,
    GetClientRequest, GetJwksRequest, GetJwksResponse, IntrospectTokenRequest,
    IntrospectTokenResponse, IssueTokenRequest, IssueTokenResponse, KeyInfo,
    ListAuditEventsRequest, ListAuditEventsResponse, ListClientsRequest, ListClientsResponse,
    ListKeysRequest, ListKeysResponse, ListRevocationsRequest, ListRevocationsResponse,
    RegisterClientRequest, RegisterClientResponse, RevocationEvent, RevokeClientTokensRequest,
    RevokeClientTokensResponse, RevokeKeyRequest, RevokeKeyResponse, RevokeTokenIdRequest,
    RevokeTokenIdResponse, RevokeTokenRequest, RevokeTokenResponse, RotateKeysRequest,
    RotateKeysResponse, UpdateClientRequest, WatchJwksRequest, WatchRevocationsRequest,
    admin_service_server::AdminService, key_service_server::KeyService, revocation_event,
    revocation_service_server::RevocationService, token_service_server::TokenService,
};

/// Watch streams (of either service) one connection may hold at once.
pub const WATCHES_PER_CONNECTION: u32 = 16;

/// Items a watch stream buffers for its reader beyond what HTTP/2 holds.
const WATCH_BUFFER: usize = 32;

/// How watch streams are bounded: their stall timeout and the caps on how many are open.
#[derive(Clone, Debug)]
pub struct WatchLimits {
    /// A stream whose reader takes nothing for this long is ended, with its connection.
    pub stall_timeout: Duration,
    /// `WatchRevocations` streams in all and per client.
    pub revocations: Arc<WatchCaps>,
    /// `WatchJwks` streams from connections with a client certificate, and from connections
    /// without one (a quarter as many, apart: peers without a certificate cannot take the
    /// streams verifiers with one need).
    pub jwks: Arc<tokio::sync::Semaphore>,
    /// See `jwks`.
    pub jwks_without_certificate: Arc<tokio::sync::Semaphore>,
}

impl WatchLimits {
    /// `stall_timeout`; `revocations` streams in all and per client; `max_jwks` key-set
    /// streams with a certificate and a quarter of that without.
    pub fn new(stall_timeout: Duration, revocations: Arc<WatchCaps>, max_jwks: u32) -> Self {
        let slots = |n: u32| {
            Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(n).unwrap_or(usize::MAX),
            ))
        };
        Self {
            stall_timeout,
            revocations,
            jwks: slots(max_jwks),
            jwks_without_certificate: slots((max_jwks / 4).max(1)),
        }
    }
}

/// The connection a request came on.
fn connection_of<T>(request: &Request<T>) -> Option<Arc<ConnectionState>> {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .map(|i| i.state.clone())
}

/// Counts a watch stream against its connection's cap.
fn open_connection_watch(
    connection: Option<&Arc<ConnectionState>>,
) -> Result<Option<ConnectionWatch>, Status> {
    connection
        .map(|c| {
            c.try_open_watch(WATCHES_PER_CONNECTION).ok_or_else(|| {
                wire::resource_exhausted(
                    &format!("this connection holds its limit of {WATCHES_PER_CONNECTION} watch streams: open another connection"),
                    1,
                )
            })
        })
        .transpose()
}

/// Ends a stream whose reader took nothing for the stall bound: HTTP/2 gives a server no way
/// to reclaim one stream's buffers, so its connection is closed.
fn close_stalled(connection: Option<&Arc<ConnectionState>>, which: &'static str) {
    metrics::counter!("tokenmint_watch_streams_stalled_total", "stream" => which).increment(1);
    tracing::info!(
        stream = which,
        "a watch stream's reader took nothing within the stall timeout; closing its connection"
    );
    if let Some(connection) = connection {
        connection.close();
    }
}

/// The connection's address and verified client certificate.
fn peer_of<T>(request: &Request<T>) -> (Option<SocketAddr>, Option<Arc<PeerCertificate>>) {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .map_or((None, None), |i| (i.remote_addr, i.peer.clone()))
}

/// How a watch stream ends when the server stops.
fn shutting_down() -> Status {
    Status::unavailable(
        "tokenmint is shutting down: reconnect, to another replica if there is one, and resume from your last sequence",
    )
}

/// A requested page size: `default` for 0, at most `max`.
fn page_size(requested: u32, default: usize, max: usize) -> usize {
    match usize::try_from(requested) {
        Ok(0) => default,
        Ok(n) => n.min(max),
        Err(_) => max,
    }
}

/// A page token that is a number this server returned (a sequence or an id); empty is 0.
fn numeric_page_token(token: &str) -> Result<u64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token.parse().map_err(|_| {
        wire::oauth_status(
            tokenmint_core::oauth::ErrorCode::InvalidRequest,
            "page_token is not one this server returned: start again without it",
        )
    })
}

/// Converts a configured duration to the protobuf form (saturating).
pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: tokenmint_core::clock::whole_secs(d),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_at_zero_and_stop_at_the_maximum() {
        assert_eq!(page_size(0, 100, 1000), 100);
        assert_eq!(page_size(7, 100, 1000), 7);
        assert_eq!(page_size(u32::MAX, 100, 1000), 1000);
    }

    #[test]
    fn a_page_token_is_empty_or_a_number_this_server_gave() {
        assert_eq!(numeric_page_token("").unwrap(), 0);
        assert_eq!(numeric_page_token("42").unwrap(), 42);
        for bad in ["-1", "x", "1.5", "99999999999999999999999"] {
            let refused = numeric_page_token(bad).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }
}
