//! The gRPC face's requests as the core's types, written once for the server and the fuzz
//! target `proto`: empty strings and lists mean "not given", durations must be whole and
//! non-negative. What the core then checks (`grant::client_credentials`,
//! `grant::ExchangeRequest`, `ClientDraft::build`) is the core's.

use std::time::Duration;

use tokenmint_core::{
    client::{ClientDraft, IdentityDraft},
    grant::ExchangeRequest,
    token::{RequestedLifetime, TokenRequest},
};

use crate::v1::{ClientSpec, ExchangeTokenRequest, IssueTokenRequest};

/// An `IssueTokenRequest` as the core's request.
pub fn token_request(message: IssueTokenRequest) -> TokenRequest {
    TokenRequest {
        client_id: given(message.client_id),
        client_secret: given(message.client_secret),
        scopes: message.scopes,
        audiences: message.audiences,
        lifetime: message.lifetime.map(lifetime),
        may_act: given(message.may_act),
    }
}

/// An `ExchangeTokenRequest` as the core's request.
pub fn exchange_request(message: ExchangeTokenRequest) -> ExchangeRequest {
    ExchangeRequest {
        request: TokenRequest {
            client_id: given(message.client_id),
            client_secret: given(message.client_secret),
            scopes: message.scopes,
            audiences: message.audiences,
            lifetime: message.lifetime.map(lifetime),
            may_act: None,
        },
        subject_token: message.subject_token,
        subject_token_type: message.subject_token_type,
        actor_token: given(message.actor_token),
        actor_token_type: given(message.actor_token_type),
        requested_token_type: given(message.requested_token_type),
        request_context: given(message.request_context),
        request_details: given(message.request_details),
    }
}

fn lifetime(d: prost_types::Duration) -> RequestedLifetime {
    RequestedLifetime {
        seconds: d.seconds,
        nanos: d.nanos,
    }
}

/// A `ClientSpec` (`RegisterClient`, `UpdateClient`, `tokenmint client add`) as a draft for
/// the one client rule; `Err` names a duration that is negative.
pub fn client_draft(spec: ClientSpec) -> Result<ClientDraft, String> {
    let listed = |v: Vec<String>| (!v.is_empty()).then_some(v);
    Ok(ClientDraft {
        default_lifetime: duration(spec.default_lifetime, "default_lifetime")?,
        max_lifetime: duration(spec.max_lifetime, "max_lifetime")?,
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
        serves: spec.serves,
        act_for: spec.act_for,
        delegate_audiences: spec.delegate_audiences,
        delegate_scopes: spec.delegate_scopes,
        asserts_txn_subjects: spec.asserts_txn_subjects,
    })
}

fn given(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn duration(d: Option<prost_types::Duration>, field: &str) -> Result<Option<Duration>, String> {
    match d {
        None => Ok(None),
        Some(d) => match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
            (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => Ok(Some(Duration::new(secs, nanos))),
            _ => Err(format!(
                "{field} must be a positive whole number of seconds"
            )),
        },
    }
}
