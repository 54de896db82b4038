//! `tokenmint.v1.AdminService`: clients, revocations, keys and the audit trail.

use super::*;

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
        serves: client.exchange.serves.clone(),
        act_for: client.exchange.act_for.clone(),
        delegate_audiences: client.exchange.delegate_audiences.clone(),
        delegate_scopes: client.exchange.delegate_scopes.clone(),
        asserts_txn_subjects: client.exchange.asserts_txn_subjects,
    }
}

/// A client from a registration request, by the one client rule ([`ClientDraft::build`]):
/// for `RegisterClient`, `UpdateClient` and the offline `tokenmint client add`. The API's
/// empty values mean "not given" (an empty default list: the defaults).
pub fn client_from_spec(spec: ClientSpec, defaults: LifetimeDefaults) -> Result<Client, Status> {
    let invalid = |message: String| {
        wire::oauth_status(tokenmint_core::oauth::ErrorCode::InvalidRequest, &message)
    };
    tokenmint_proto::convert::client_draft(spec)
        .map_err(invalid)?
        .build(defaults)
        .map_err(|e| invalid(e.to_string()))
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
        let (id, serves) = (client.id.clone(), client.exchange.serves.clone());
        let (client, secret) =
            match registration::register(self.store.as_ref(), client, hasher, by).await {
                Ok(registered) => registered,
                Err(e @ RegisterError::Taken { .. }) => {
                    let message =
                        registration::served_elsewhere(self.store.as_ref(), id.as_str(), &serves)
                            .await
                            .unwrap_or_else(|| e.to_string());
                    return Err(Status::already_exists(message));
                }
                Err(RegisterError::Secret(e)) => {
                    tracing::error!(error = %e, "generating a client secret failed");
                    return Err(Status::internal("the client secret could not be generated"));
                }
                Err(RegisterError::Store(e)) => return Err(wire::grpc(wire::store_failed(&e))),
            };
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
                let served = registration::served_elsewhere(
                    self.store.as_ref(),
                    client.id.as_str(),
                    &client.exchange.serves,
                )
                .await;
                return Err(Status::already_exists(served.unwrap_or_else(|| {
                    format!(
                        "the certificate matcher ({} {}) belongs to another client",
                        client.matcher.kind(),
                        client.matcher.value()
                    )
                })));
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
            retired_key_id: rotated
                .retired
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
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
