//! The gRPC edge (tonic's one home): `TokenService` and `KeyService` over the core, plus the
//! generated code and descriptor set for `tokenmint.v1`.

use std::{fmt, sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use crate::{
    authority::Authority,
    tls::ConnectionInfo,
    token::{RequestedLifetime, TokenRequest},
    wire,
};

/// The generated protobuf and gRPC code for `tokenmint.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("tokenmint.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tokenmint_descriptor");
}

use proto::{
    GetJwksRequest, GetJwksResponse, IssueTokenRequest, IssueTokenResponse,
    key_service_server::KeyService, token_service_server::TokenService,
};

/// The largest request message accepted (SPEC §11); larger ones get `OUT_OF_RANGE`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

impl fmt::Debug for IssueTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssueTokenRequest")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &(!self.client_secret.is_empty()).then_some("…"),
            )
            .field("scopes", &self.scopes)
            .field("audiences", &self.audiences)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl fmt::Debug for IssueTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssueTokenResponse")
            .field("access_token", &"…")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scopes", &self.scopes)
            .field("audiences", &self.audiences)
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// `tokenmint.v1.TokenService`.
#[derive(Clone, Debug)]
pub struct TokenApi {
    authority: Arc<Authority>,
}

impl TokenApi {
    /// The service over `authority`.
    pub fn new(authority: Arc<Authority>) -> Self {
        Self { authority }
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn issue_token(
        &self,
        request: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let info = request.extensions().get::<ConnectionInfo>().cloned();
        let (remote, peer) = info.map_or((None, None), |i| (i.remote_addr, i.peer));
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
            .map_err(|e| wire::issue_refused(&e, remote))?;
        tracing::debug!(client_id = %issued.client_id, jti = %issued.token_id, kid = %issued.key_id, "token issued");
        Ok(Response::new(IssueTokenResponse {
            access_token: issued.access_token,
            token_type: "Bearer".into(),
            expires_in: issued.expires_in,
            scopes: issued.scopes,
            audiences: issued.audiences,
            key_id: issued.key_id,
        }))
    }
}

/// `tokenmint.v1.KeyService`: no client certificate needed.
#[derive(Clone, Debug)]
pub struct KeyApi {
    authority: Arc<Authority>,
}

impl KeyApi {
    /// The service over `authority`.
    pub fn new(authority: Arc<Authority>) -> Self {
        Self { authority }
    }
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn get_jwks(
        &self,
        _request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        let ring = self.authority.key_ring();
        Ok(Response::new(GetJwksResponse {
            jwks_json: ring.jwks_json().to_string(),
            version: ring.version().to_owned(),
        }))
    }
}

/// Converts a configured duration to the protobuf form (saturating).
pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
