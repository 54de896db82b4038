//! Envoy's ext_authz over gRPC (`envoy.service.auth.v3.Authorization/Check`): the same
//! decision as forward auth, asked with what Envoy sends. Allowed → `OK` with the
//! `x-tokenmint-*` headers set upstream; refused → `UNAUTHENTICATED` (`401`),
//! `PERMISSION_DENIED` (`403`) or `UNAVAILABLE` (`503`), with the RFC 6750 challenge.
//!
//! The caller's certificate is `attributes.source.certificate` (URL-encoded PEM, filled with
//! `include_peer_certificate: true`), or else the `x-forwarded-client-cert` header. The
//! headers come from `headers`, or from `header_map` when the filter sets
//! `encode_raw_headers`. A `CheckRequest` carries the bearer token: it is never logged.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use http::StatusCode;
use tokenmint_core::forwarded::HeaderFormat;
use tonic::{Code, Request, Response, Status};

use super::Sidecar;
use super::decision::{Ask, Decision, Denial, Rules, decide, upstream_headers};
use tokenmint_verify::TXN_TOKEN_HEADER;

/// The `Authorization` service over `sidecar`.
pub fn service(sidecar: Arc<Sidecar>) -> AuthorizationServer<ExtAuthz> {
    AuthorizationServer::new(ExtAuthz { sidecar })
}

/// Answers Envoy's `Check`.
#[derive(Debug)]
pub struct ExtAuthz {
    sidecar: Arc<Sidecar>,
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let http = attributes
            .request
            .and_then(|request| request.http)
            .unwrap_or_default();
        let peer_certificate = attributes
            .source
            .map(|source| source.certificate)
            .unwrap_or_default();
        let headers = request_headers(&http);
        let header = |name: &str| headers.get(name).map(String::as_str);
        let (format, certificate) = if peer_certificate.trim().is_empty() {
            (HeaderFormat::Envoy, header("x-forwarded-client-cert"))
        } else {
            // The URL-encoded PEM of the TLS peer: nginx's encoding exactly.
            (HeaderFormat::Nginx, Some(peer_certificate.as_str()))
        };
        let ask = Ask {
            authorization: header("authorization"),
            certificate,
            path: Some(http.path.as_str()).filter(|p| !p.is_empty()),
            txn_token: header(TXN_TOKEN_HEADER),
        };
        let sidecar = &self.sidecar;
        let rules = Rules {
            format,
            ..Rules::of(&sidecar.config)
        };
        let decision = decide(&sidecar.verifier, rules, ask).await;
        super::count(&decision);
        Ok(Response::new(answer(&decision)))
    }
}

/// The request's headers as Envoy sent them: the `headers` map (names lower-cased, repeated
/// names merged), or, with the filter's `encode_raw_headers: true`, the `header_map` list,
/// merged the same way here — names lower-cased, a repeated name's values joined with `,` (so
/// a second `x-forwarded-client-cert` is a second element, refused), bytes that are not UTF-8
/// replaced (a certificate or token so damaged is refused).
fn request_headers(
    http: &envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
) -> std::borrow::Cow<'_, std::collections::HashMap<String, String>> {
    let Some(raw) = http.header_map.as_ref().filter(|_| http.headers.is_empty()) else {
        return std::borrow::Cow::Borrowed(&http.headers);
    };
    let mut merged = std::collections::HashMap::<String, String>::new();
    for entry in &raw.headers {
        let value = if entry.raw_value.is_empty() {
            entry.value.clone()
        } else {
            String::from_utf8_lossy(&entry.raw_value).into_owned()
        };
        merged
            .entry(entry.key.to_ascii_lowercase())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    std::borrow::Cow::Owned(merged)
}

/// The `CheckResponse` of a decision.
fn answer(decision: &Decision) -> CheckResponse {
    match decision {
        Decision::Allow(allowed) => {
            let headers = upstream_headers(allowed)
                .into_iter()
                .map(|(name, value)| header(name, value))
                .collect();
            CheckResponse {
                status: Some(status(Code::Ok)),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    ..OkHttpResponse::default()
                })),
                ..CheckResponse::default()
            }
        }
        Decision::Deny(denial) => refusal(denial),
    }
}

/// A refusal: the status Envoy answers the caller with, the challenge, `Retry-After` when the
/// sidecar cannot vouch for its state, and the gRPC code that matches the status.
fn refusal(denial: &Denial) -> CheckResponse {
    let http_status = denial.status();
    let code = match http_status {
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        _ => Code::PermissionDenied,
    };
    let mut headers = vec![header("www-authenticate", denial.challenge())];
    if matches!(denial, Denial::Unavailable(_)) {
        headers.push(header("retry-after", "1".into()));
    }
    CheckResponse {
        status: Some(status(code)),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            // Envoy's `envoy.type.v3.StatusCode` numbers are the HTTP statuses.
            status: Some(HttpStatus {
                code: i32::from(http_status.as_u16()),
            }),
            headers,
            body: String::new(),
        })),
        ..CheckResponse::default()
    }
}

/// A header that replaces any of the same name, even when empty (an empty scope must still
/// replace a scope header the caller sent).
fn header(name: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value,
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        keep_empty_value: true,
        ..HeaderValueOption::default()
    }
}

/// A `google.rpc.Status` with no message: the caller learns nothing from it.
fn status(code: Code) -> rpc::Status {
    rpc::Status {
        code: code.into(),
        ..rpc::Status::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gRPC code, the HTTP status and the header names of a refusal.
    fn refused(denial: Denial) -> (i32, i32, Vec<String>) {
        let response = refusal(&denial);
        let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
            panic!("not a denial");
        };
        let names = denied
            .headers
            .into_iter()
            .filter_map(|option| option.header.map(|header| header.key))
            .collect();
        (
            response.status.map_or(-1, |status| status.code),
            denied.status.map_or(-1, |status| status.code),
            names,
        )
    }

    #[test]
    fn each_denial_has_the_code_that_matches_its_status() {
        assert_eq!(
            refused(Denial::NoToken),
            (16, 401, vec!["www-authenticate".into()])
        );
        assert_eq!(
            refused(Denial::InsufficientScope("orders:admin".into())),
            (7, 403, vec!["www-authenticate".into()])
        );
        for txn in [
            Denial::TxnToken("txn_token_missing"),
            Denial::TxnPurpose("orders:write".into()),
        ] {
            assert_eq!(refused(txn), (7, 403, vec!["www-authenticate".into()]));
        }
        assert_eq!(
            refused(Denial::Unavailable("stale")),
            (
                14,
                503,
                vec!["www-authenticate".into(), "retry-after".into()]
            )
        );
    }
}
