//! `tokenmint.v1.TokenService`: issuance, token exchange (RFC 8693, transaction tokens
//! included), introspection and revocation of tokens.

use super::*;

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

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn issue_token(
        &self,
        request: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let (remote, peer) = peer_of(&request);
        let message = request.into_inner();
        let token_request = tokenmint_proto::convert::token_request(message);
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

    async fn exchange_token(
        &self,
        request: Request<ExchangeTokenRequest>,
    ) -> Result<Response<ExchangeTokenResponse>, Status> {
        let (remote, peer) = peer_of(&request);
        let exchange = tokenmint_proto::convert::exchange_request(request.into_inner());
        let issued = self
            .authority
            .exchange(peer.as_deref(), &exchange)
            .map_err(|e| wire::grpc(wire::issue_refused(&e, remote)))?;
        tracing::debug!(client_id = %issued.client_id, jti = %issued.token_id, kid = %issued.key_id, "token exchanged");
        wire::issued(&issued.client_id);
        Ok(Response::new(ExchangeTokenResponse {
            access_token: issued.access_token,
            issued_token_type: issued.issued_token_type.into(),
            token_type: issued.token_type.into(),
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
        actors: t
            .act
            .as_ref()
            .map(|act| act.chain().into_iter().map(str::to_owned).collect())
            .unwrap_or_default(),
        may_act: t.may_act.map(|m| m.sub).unwrap_or_default(),
    }
}
