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
    client::{Client, ClientDraft, IdentityDraft, LifetimeDefaults, PeerCertificate, Permission},
    clock::{UnixTime, whole_secs},
    introspection::ActiveToken,
    revocation::{Change, Event},
    token::{RequestedLifetime, TokenRequest},
};
use tokenmint_store::Store;

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
    EnableClientRequest, EnableClientResponse, GetClientRequest, GetJwksRequest, GetJwksResponse,
    IntrospectTokenRequest, IntrospectTokenResponse, IssueTokenRequest, IssueTokenResponse,
    KeyInfo, ListAuditEventsRequest, ListAuditEventsResponse, ListClientsRequest,
    ListClientsResponse, ListKeysRequest, ListKeysResponse, ListRevocationsRequest,
    ListRevocationsResponse, RegisterClientRequest, RegisterClientResponse, RevocationEvent,
    RevokeClientTokensRequest, RevokeClientTokensResponse, RevokeKeyRequest, RevokeKeyResponse,
    RevokeTokenIdRequest, RevokeTokenIdResponse, RevokeTokenRequest, RevokeTokenResponse,
    RotateKeysRequest, RotateKeysResponse, UpdateClientRequest, WatchJwksRequest,
    WatchRevocationsRequest, admin_service_server::AdminService, key_service_server::KeyService,
    revocation_event, revocation_service_server::RevocationService,
    token_service_server::TokenService,
};

/// `tokenmint.v1.TokenService`.
#[derive(Clone, Debug)]
pub struct TokenApi {
    authority: Arc<Authority>,
    changes: Arc<ChangeLog>,
}

impl TokenApi {
    /// The service over `authority`, committing revocations through `changes`.
    pub fn new(authority: Arc<Authority>, changes: Arc<ChangeLog>) -> Self {
        Self { authority, changes }
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

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

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn issue_token(
        &self,
        request: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let (remote, peer) = peer_of(&request);
        let message = request.into_inner();
        let token_request = TokenRequest {
            client_id: non_empty(message.client_id),
            client_secret: non_empty(message.client_secret),
            scopes: message.scopes,
            audiences: message.audiences,
            lifetime: message.lifetime.map(|d| RequestedLifetime {
                seconds: d.seconds,
                nanos: d.nanos,
            }),
        };
        let issued = self
            .authority
            .issue(peer.as_deref(), &token_request)
            .map_err(|e| wire::grpc(wire::issue_refused(&e, remote)))?;
        tracing::debug!(client_id = %issued.client_id, jti = %issued.token_id, kid = %issued.key_id, "token issued");
        wire::issued(&issued.client_id);
        Ok(Response::new(IssueTokenResponse {
            access_token: issued.access_token,
            token_type: "Bearer".into(),
            expires_in: issued.expires_in,
            scopes: issued.scopes,
            audiences: issued.audiences,
            key_id: issued.key_id,
        }))
    }

    async fn introspect_token(
        &self,
        request: Request<IntrospectTokenRequest>,
    ) -> Result<Response<IntrospectTokenResponse>, Status> {
        let (remote, peer) = peer_of(&request);
        let caller = self
            .authority
            .caller(peer.as_deref(), Permission::Introspect)
            .map_err(|e| wire::grpc(wire::caller_refused(&e, remote)))?;
        crate::ops::record_client(caller.id.as_str());
        let message = request.into_inner();
        let answer = self
            .authority
            .introspect(
                &caller,
                &message.token,
                message.presented_certificate_thumbprint.as_deref(),
            )
            .map_err(|e| wire::grpc(wire::introspect_refused(&e, remote)))?;
        let response = match answer {
            Ok(claims) => {
                metrics::counter!("tokenmint_introspections_total", "outcome" => "active")
                    .increment(1);
                introspection_response(claims.into())
            }
            Err(reason) => {
                metrics::counter!("tokenmint_introspections_total", "outcome" => reason.label())
                    .increment(1);
                tracing::debug!(caller = %caller.id, reason = %reason, "introspection: inactive");
                IntrospectTokenResponse::default()
            }
        };
        Ok(Response::new(response))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let (remote, peer) = peer_of(&request);
        let caller = self
            .authority
            .caller(peer.as_deref(), Permission::Issue)
            .map_err(|e| wire::grpc(wire::caller_refused(&e, remote)))?;
        crate::ops::record_client(caller.id.as_str());
        let token = request.into_inner().token;
        let change = self
            .authority
            .revocation_of(&caller, &token)
            .map_err(|e| wire::grpc(wire::revoke_refused(&e, remote)))?;
        if let Some(change) = change {
            self.changes
                .commit(change, caller.id.as_str())
                .await
                .map_err(|e| wire::grpc(wire::store_failed(&e)))?;
        }
        Ok(Response::new(RevokeTokenResponse {}))
    }
}

/// `tokenmint.v1.KeyService`: no client certificate needed.
#[derive(Clone, Debug)]
pub struct KeyApi {
    authority: Arc<Authority>,
    stop: CancellationToken,
    limits: WatchLimits,
}

impl KeyApi {
    /// The service over `authority`; its watch streams end when `stop` fires.
    pub fn new(authority: Arc<Authority>, stop: CancellationToken, limits: WatchLimits) -> Self {
        Self {
            authority,
            stop,
            limits,
        }
    }
}

/// A boxed stream of key sets.
pub type JwksStream = Pin<Box<dyn Stream<Item = Result<GetJwksResponse, Status>> + Send>>;

fn jwks_response(ring: &tokenmint_core::keys::KeyRing) -> GetJwksResponse {
    GetJwksResponse {
        jwks_json: ring.jwks_json().to_string(),
        version: ring.version().to_owned(),
    }
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    type WatchJwksStream = JwksStream;

    async fn watch_jwks(
        &self,
        request: Request<WatchJwksRequest>,
    ) -> Result<Response<Self::WatchJwksStream>, Status> {
        let connection = connection_of(&request);
        let connection_watch = open_connection_watch(connection.as_ref())?;
        let (_, peer) = peer_of(&request);
        let pool = if peer.is_some() {
            &self.limits.jwks
        } else {
            &self.limits.jwks_without_certificate
        };
        let permit = pool.clone().try_acquire_owned().map_err(|_| {
            wire::resource_exhausted(
                "tokenmint holds its limit of key-set watch streams (keys.max_jwks_watches; a quarter of it for connections without a client certificate); use GetJwks or retry later",
                5,
            )
        })?;
        let mut keys = self.authority.watch_keys();
        let stop = self.stop.clone();
        let stall = self.limits.stall_timeout;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let _counted = (permit, connection_watch);
            let mut last = String::new();
            loop {
                let ring = keys.borrow_and_update().clone();
                if ring.version() != last {
                    last = ring.version().to_owned();
                    match send_within(&tx, Ok(jwks_response(&ring)), stall).await {
                        Ok(()) => {}
                        Err(Unsent::Closed) => return,
                        Err(Unsent::Stalled) => return close_stalled(connection.as_ref(), "jwks"),
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => {
                        let _ = tx.try_send(Err(shutting_down()));
                        return;
                    }
                    () = tx.closed() => return,
                    changed = keys.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_jwks(
        &self,
        _request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(jwks_response(&self.authority.key_ring())))
    }
}

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
            if changes.watch(from, tx, stop, stall).await == WatchEnd::Stalled {
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

/// How a watch stream ends when the server stops.
fn shutting_down() -> Status {
    Status::unavailable(
        "tokenmint is shutting down: reconnect, to another replica if there is one, and resume from your last sequence",
    )
}

/// `tokenmint.v1.AdminService`: needs the `admin` permission.
#[derive(Clone)]
pub struct AdminApi {
    authority: Arc<Authority>,
    changes: Arc<ChangeLog>,
    store: Arc<dyn Store>,
    rotator: Arc<Rotator>,
    lifetimes: LifetimeDefaults,
}

impl fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminApi").finish_non_exhaustive()
    }
}

impl AdminApi {
    /// The service.
    pub fn new(
        authority: Arc<Authority>,
        changes: Arc<ChangeLog>,
        store: Arc<dyn Store>,
        rotator: Arc<Rotator>,
        lifetimes: LifetimeDefaults,
    ) -> Self {
        Self {
            authority,
            changes,
            store,
            rotator,
            lifetimes,
        }
    }

    /// A client from a registration request (see [`client_from_spec`]).
    fn client_from_spec(&self, spec: ClientSpec) -> Result<Client, Status> {
        client_from_spec(spec, self.lifetimes)
    }

    fn admin<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Arc<tokenmint_core::client::Client>, Status> {
        let (remote, peer) = peer_of(request);
        let caller = self
            .authority
            .caller(peer.as_deref(), Permission::Admin)
            .map_err(|e| wire::grpc(wire::caller_refused(&e, remote)))?;
        crate::ops::record_client(caller.id.as_str());
        Ok(caller)
    }

    async fn commit(&self, change: Change, admin: &Client) -> Result<u64, Status> {
        let event = self
            .changes
            .commit(change, admin.id.as_str())
            .await
            .map_err(|e| wire::grpc(wire::store_failed(&e)))?;
        Ok(event.map_or(0, |e| e.sequence))
    }
}

/// What a client looks like to an admin: never its secret.
fn client_info(client: &Client) -> ClientInfo {
    ClientInfo {
        client_id: client.id.to_string(),
        matcher_kind: client.matcher.kind().to_owned(),
        matcher_value: client.matcher.value(),
        scopes: client.scopes.clone(),
        default_scopes: client.default_scopes.clone(),
        audiences: client.audiences.clone(),
        default_audiences: client.default_audiences.clone(),
        introspect_audiences: client.introspect_audiences.clone(),
        permissions: client
            .permissions
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        default_lifetime: Some(duration_to_proto(client.default_lifetime)),
        max_lifetime: Some(duration_to_proto(client.max_lifetime)),
        enabled: client.enabled,
        has_secret: client.secret_hash.is_some(),
        pinned_sha256: client
            .matcher
            .pins()
            .iter()
            .map(|pin| pin.to_b64url())
            .collect(),
    }
}

/// A client from a registration request, by the one client rule ([`ClientDraft::build`]):
/// for `RegisterClient`, `UpdateClient` and the offline `tokenmint client add`. The API's
/// empty values mean "not given" (an empty default list: the defaults).
pub fn client_from_spec(spec: ClientSpec, defaults: LifetimeDefaults) -> Result<Client, Status> {
    let invalid = |message: String| {
        wire::oauth_status(tokenmint_core::oauth::ErrorCode::InvalidRequest, &message)
    };
    let given = |s: String| (!s.is_empty()).then_some(s);
    let listed = |v: Vec<String>| (!v.is_empty()).then_some(v);
    let seconds = |d: Option<prost_types::Duration>, field: &str| match d {
        None => Ok(None),
        Some(d) => match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
            (Ok(secs), Ok(nanos)) => Ok(Some(Duration::new(secs, nanos))),
            _ => Err(invalid(format!(
                "{field} must be a positive whole number of seconds"
            ))),
        },
    };
    ClientDraft {
        default_lifetime: seconds(spec.default_lifetime, "default_lifetime")?,
        max_lifetime: seconds(spec.max_lifetime, "max_lifetime")?,
        id: spec.client_id,
        identity: IdentityDraft {
            san_uri: given(spec.san_uri),
            san_dns: given(spec.san_dns),
            subject_dn: given(spec.subject_dn),
            pinned_sha256: listed(spec.pinned_sha256),
        },
        scopes: spec.scopes,
        default_scopes: listed(spec.default_scopes),
        audiences: spec.audiences,
        default_audiences: listed(spec.default_audiences),
        introspect_audiences: spec.introspect_audiences,
        permissions: listed(spec.permissions),
        enabled: !spec.disabled,
    }
    .build(defaults)
    .map_err(|e| invalid(e.to_string()))
}

/// The introspection answer for an active token, as the gRPC response carries it.
fn introspection_response(t: ActiveToken) -> IntrospectTokenResponse {
    IntrospectTokenResponse {
        active: true,
        client_id: t.client_id,
        subject: t.sub,
        scopes: t.scopes,
        audiences: t.aud,
        issuer: t.iss,
        expires_at: t.exp.as_secs(),
        issued_at: t.iat.as_secs(),
        not_before: t.nbf.as_secs(),
        token_id: t.jti,
        certificate_thumbprint: t.cnf.x5t_s256,
    }
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

/// The longest `ListAuditEvents` filter value accepted.
const MAX_AUDIT_FILTER_LEN: usize = 256;

/// The most clients one `ListClients` page holds.
const MAX_CLIENT_PAGE: usize = 1000;

/// The most token revocations one `ListRevocations` page holds.
const MAX_PAGE: usize = 1000;

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn register_client(
        &self,
        request: Request<RegisterClientRequest>,
    ) -> Result<Response<RegisterClientResponse>, Status> {
        let admin = self.admin(&request)?;
        let message = request.into_inner();
        let spec = message.client.ok_or_else(|| {
            wire::oauth_status(
                tokenmint_core::oauth::ErrorCode::InvalidRequest,
                "client is required",
            )
        })?;
        let client = self.client_from_spec(spec)?;
        let by = Registrar {
            actor: admin.id.as_str(),
            now: self.authority.now(),
            offline: false,
        };
        let hasher = message.with_secret.then(|| self.authority.secret_hasher());
        let (client, secret) = registration::register(self.store.as_ref(), client, hasher, by)
            .await
            .map_err(|e| match e {
                RegisterError::Taken { .. } => Status::already_exists(e.to_string()),
                RegisterError::Secret(e) => {
                    tracing::error!(error = %e, "generating a client secret failed");
                    Status::internal("the client secret could not be generated")
                }
                RegisterError::Store(e) => wire::grpc(wire::store_failed(&e)),
            })?;
        // Usable here at once; other replicas pick it up at their next catch-up.
        self.changes.reload_clients().await;
        tracing::info!(admin = %admin.id, client_id = %client.id, matcher = client.matcher.kind(), with_secret = secret.is_some(), "client registered");
        Ok(Response::new(RegisterClientResponse {
            client: Some(client_info(&client)),
            client_secret: secret.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        }))
    }

    async fn update_client(
        &self,
        request: Request<UpdateClientRequest>,
    ) -> Result<Response<ClientInfo>, Status> {
        let admin = self.admin(&request)?;
        let spec = request.into_inner().client.ok_or_else(|| {
            wire::oauth_status(
                tokenmint_core::oauth::ErrorCode::InvalidRequest,
                "client is required",
            )
        })?;
        let client = self.client_from_spec(spec)?;
        // One store operation: the policy is replaced and the enabled state and secret are
        // kept as they are in the store then, so a disable landing meanwhile is never undone.
        let flags = match self
            .store
            .update_client_policy(
                &client,
                self.authority.now(),
                &AuditRecord::new(admin.id.as_str(), "client.updated", client.id.as_str())
                    .with("matcher", client.matcher.kind()),
            )
            .await
        {
            Ok(flags) => flags,
            Err(tokenmint_store::StoreError::NotFound(_)) => {
                return Err(Status::not_found(format!(
                    "no client {} is registered: register it first",
                    client.id
                )));
            }
            Err(tokenmint_store::StoreError::Conflict(_)) => {
                return Err(Status::already_exists(format!(
                    "the certificate matcher ({} {}) belongs to another client",
                    client.matcher.kind(),
                    client.matcher.value()
                )));
            }
            Err(e) => return Err(wire::grpc(wire::store_failed(&e))),
        };
        self.changes.reload_clients().await;
        tracing::info!(admin = %admin.id, client_id = %client.id, "client updated");
        let mut info = client_info(&client);
        info.enabled = flags.enabled;
        info.has_secret = flags.has_secret;
        Ok(Response::new(info))
    }

    async fn get_client(
        &self,
        request: Request<GetClientRequest>,
    ) -> Result<Response<ClientInfo>, Status> {
        self.admin(&request)?;
        let id = request.into_inner().client_id;
        let clients = self
            .store
            .clients()
            .await
            .map_err(|e| wire::grpc(wire::store_failed(&e)))?;
        clients
            .iter()
            .find(|c| c.id.as_str() == id)
            .map(|c| Response::new(client_info(c)))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no client {:?} is registered",
                    id.chars().take(140).collect::<String>()
                ))
            })
    }

    async fn list_clients(
        &self,
        request: Request<ListClientsRequest>,
    ) -> Result<Response<ListClientsResponse>, Status> {
        self.admin(&request)?;
        let message = request.into_inner();
        let size = page_size(message.page_size, 100, MAX_CLIENT_PAGE);
        let mut clients = self
            .store
            .clients()
            .await
            .map_err(|e| wire::grpc(wire::store_failed(&e)))?;
        clients.sort_by(|a, b| a.id.cmp(&b.id));
        // The page token is the last id of the previous page.
        let after = message.page_token;
        let page: Vec<_> = clients
            .iter()
            .filter(|c| after.is_empty() || c.id.as_str() > after.as_str())
            .take(size + 1)
            .collect();
        let next_page_token = if page.len() > size {
            page[size - 1].id.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(ListClientsResponse {
            clients: page.iter().take(size).map(|c| client_info(c)).collect(),
            next_page_token,
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        self.admin(&request)?;
        let message = request.into_inner();
        let invalid = |message: String| {
            wire::oauth_status(tokenmint_core::oauth::ErrorCode::InvalidRequest, &message)
        };
        let after_id = numeric_page_token(&message.page_token)?;
        let filter = |name: &str, value: String| -> Result<Option<String>, Status> {
            if value.len() > MAX_AUDIT_FILTER_LEN {
                return Err(invalid(format!(
                    "{name} is longer than {MAX_AUDIT_FILTER_LEN} bytes"
                )));
            }
            Ok((!value.is_empty()).then_some(value))
        };
        let limit = page_size(
            message.page_size,
            100,
            tokenmint_core::audit::MAX_PAGE as usize,
        );
        let query = tokenmint_core::audit::AuditQuery {
            after_id,
            // One more than asked, to know whether another page follows.
            limit: u32::try_from(limit + 1).unwrap_or(u32::MAX),
            actor: filter("actor", message.actor)?,
            action: filter("action", message.action)?,
            target: filter("target", message.target)?,
            since: (message.since != 0).then_some(UnixTime::from_secs(message.since)),
        };
        let mut events = self
            .store
            .audit_events(&query)
            .await
            .map_err(|e| wire::grpc(wire::store_failed(&e)))?;
        let more = events.len() > limit;
        events.truncate(limit);
        let next_page_token = match (more, events.last()) {
            (true, Some(last)) => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListAuditEventsResponse {
            events: events
                .into_iter()
                .map(|e| AuditEvent {
                    id: e.id,
                    at: e.at.as_secs(),
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    detail: e.detail.into_iter().collect(),
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn revoke_token_id(
        &self,
        request: Request<RevokeTokenIdRequest>,
    ) -> Result<Response<RevokeTokenIdResponse>, Status> {
        let caller = self.admin(&request)?;
        let token_id = request.into_inner().token_id;
        let change = self
            .authority
            .revocation_of_id(&caller, &token_id)
            .map_err(|e| wire::grpc(wire::revoke_refused(&e, None)))?;
        let sequence = match change {
            Some(change) => self.commit(change, &caller).await?,
            None => 0,
        };
        Ok(Response::new(RevokeTokenIdResponse { sequence }))
    }

    async fn revoke_client_tokens(
        &self,
        request: Request<RevokeClientTokensRequest>,
    ) -> Result<Response<RevokeClientTokensResponse>, Status> {
        let admin = self.admin(&request)?;
        let client_id = request.into_inner().client_id;
        let change = self
            .authority
            .cutoff_of(&client_id)
            .map_err(|e| wire::grpc(wire::revoke_refused(&e, None)))?;
        let issued_at_or_before = match &change {
            Change::ClientCutoff {
                issued_at_or_before,
                ..
            } => issued_at_or_before.as_secs(),
            _ => 0,
        };
        let sequence = self.commit(change, &admin).await?;
        Ok(Response::new(RevokeClientTokensResponse {
            issued_at_or_before,
            sequence,
        }))
    }

    async fn disable_client(
        &self,
        request: Request<DisableClientRequest>,
    ) -> Result<Response<DisableClientResponse>, Status> {
        let admin = self.admin(&request)?;
        let client_id = request.into_inner().client_id;
        let sequence = self
            .commit(Change::ClientDisabled { client_id }, &admin)
            .await?;
        Ok(Response::new(DisableClientResponse { sequence }))
    }

    async fn enable_client(
        &self,
        request: Request<EnableClientRequest>,
    ) -> Result<Response<EnableClientResponse>, Status> {
        let admin = self.admin(&request)?;
        let client_id = request.into_inner().client_id;
        let sequence = self
            .commit(Change::ClientEnabled { client_id }, &admin)
            .await?;
        Ok(Response::new(EnableClientResponse { sequence }))
    }

    async fn list_keys(
        &self,
        request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        self.admin(&request)?;
        let keys = self
            .rotator
            .keys()
            .await
            .map_err(|e| wire::grpc(wire::store_failed(&e)))?;
        let (next_step_at, age) = self
            .rotator
            .schedule()
            .await
            .map_err(|e| wire::grpc(wire::store_failed(&e)))?;
        Ok(Response::new(ListKeysResponse {
            keys: keys
                .into_iter()
                .map(|k| KeyInfo {
                    key_id: k.kid.to_string(),
                    algorithm: k.algorithm.as_str().to_owned(),
                    state: k.state.as_str().to_owned(),
                    created_at: k.created_at.as_secs(),
                    activated_at: k.activated_at.map_or(0, UnixTime::as_secs),
                    retired_at: k.retired_at.map_or(0, UnixTime::as_secs),
                    revoked_at: k.revoked_at.map_or(0, UnixTime::as_secs),
                })
                .collect(),
            next_step_at: next_step_at.map_or(0, UnixTime::as_secs).max(0),
            current_key_age_seconds: age.map_or(0, whole_secs),
        }))
    }

    async fn rotate_keys(
        &self,
        request: Request<RotateKeysRequest>,
    ) -> Result<Response<RotateKeysResponse>, Status> {
        let admin = self.admin(&request)?;
        let force = request.into_inner().force;
        let rotated = self
            .rotator
            .rotate(force, admin.id.as_str())
            .await
            .map_err(|e| wire::grpc(wire::lifecycle_failed(&e)))?;
        let warning = if rotated.forced_early {
            "forced before the new key was published for keys.publish_ahead: verifiers that cached the key set before it appeared reject its tokens until their copy expires (at most keys.jwks_max_age); WatchJwks subscribers and introspection have it now".to_owned()
        } else {
            String::new()
        };
        Ok(Response::new(RotateKeysResponse {
            current_key_id: rotated.current.to_string(),
            retired_key_id: rotated.retired.to_string(),
            forced_early: rotated.forced_early,
            warning,
        }))
    }

    async fn revoke_key(
        &self,
        request: Request<RevokeKeyRequest>,
    ) -> Result<Response<RevokeKeyResponse>, Status> {
        let admin = self.admin(&request)?;
        let key_id = request.into_inner().key_id;
        let event = self
            .rotator
            .revoke(&key_id, admin.id.as_str())
            .await
            .map_err(|e| wire::grpc(wire::lifecycle_failed(&e)))?;
        Ok(Response::new(RevokeKeyResponse {
            sequence: event.map_or(0, |e| e.sequence),
        }))
    }

    async fn list_revocations(
        &self,
        request: Request<ListRevocationsRequest>,
    ) -> Result<Response<ListRevocationsResponse>, Status> {
        use proto::list_revocations_response::{ClientCutoff, RevokedToken};
        self.admin(&request)?;
        let message = request.into_inner();
        let page_size = page_size(message.page_size, MAX_PAGE, MAX_PAGE);
        let after = numeric_page_token(&message.page_token)?;
        let state = self
            .store
            .revocation_state(self.authority.now())
            .await
            .map_err(|e| wire::grpc(wire::store_failed(&e)))?;
        let mut tokens: Vec<_> = state
            .tokens
            .into_iter()
            .filter(|t| t.sequence > after)
            .collect();
        let more = tokens.len() > page_size;
        tokens.truncate(page_size);
        let next_page_token = if more {
            tokens
                .last()
                .map(|t| t.sequence.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let first_page = after == 0;
        Ok(Response::new(ListRevocationsResponse {
            tokens: tokens
                .into_iter()
                .map(|t| RevokedToken {
                    token_id: t.token_id,
                    expires_at: t.expires_at.as_secs(),
                    client_id: t.client_id.unwrap_or_default(),
                    revoked_at: t.revoked_at.as_secs(),
                    sequence: t.sequence,
                })
                .collect(),
            cutoffs: if first_page {
                state
                    .cutoffs
                    .into_iter()
                    .map(|c| ClientCutoff {
                        client_id: c.client_id,
                        issued_at_or_before: c.issued_at_or_before.as_secs(),
                        sequence: c.sequence,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            disabled_clients: if first_page {
                state.disabled_clients.into_iter().map(|(c, _)| c).collect()
            } else {
                Vec::new()
            },
            next_page_token,
        }))
    }
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
