//! The standard OAuth2 HTTP face on the same TLS listener as gRPC (axum's one home): the
//! token (RFC 6749 §4.4 + RFC 8705, and RFC 8693 token exchange), introspection (RFC 7662) and revocation (RFC 7009)
//! endpoints, the JWK Set and the RFC 8414 metadata. Every rule is the core's; refusals go
//! through `wire`.

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use crate::{
    authority::Authority,
    changes::ChangeLog,
    connection::ConnectionInfo,
    wire::{self, HttpError},
};
use tokenmint_core::{
    client::Permission,
    form::{self, Form, FormError, GrantRequest},
    grant::GrantType,
    introspection::Introspection,
    oauth::ErrorCode,
};

use tokenmint_core::limits::MAX_BODY_BYTES;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpFace {
    authority: Arc<Authority>,
    changes: Arc<ChangeLog>,
    jwks_max_age: Duration,
}

impl std::fmt::Debug for HttpFace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFace").finish_non_exhaustive()
    }
}

/// The routes of the HTTP face.
pub fn router(
    authority: Arc<Authority>,
    changes: Arc<ChangeLog>,
    jwks_max_age: Duration,
) -> Router {
    let face = HttpFace {
        authority,
        changes,
        jwks_max_age,
    };
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/oauth2/introspect", post(introspect))
        .route("/oauth2/revoke", post(revoke))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/jwks-all.json", get(jwks_all))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(face)
}

/// The form of a request body, refused as the core says unless its type is
/// `application/x-www-form-urlencoded` and it could be read.
fn read_form(headers: &HeaderMap, body: &Result<Bytes, BytesRejection>) -> Result<Form, HttpError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidRequest,
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    // An unreadable body (over MAX_BODY_BYTES: 413) gets the JSON error body too, not
    // axum's plain-text rejection.
    let body = body.as_ref().map_err(|rejection| {
        HttpError::new(
            rejection.status(),
            ErrorCode::InvalidRequest,
            &format!("the request body could not be read (at most {MAX_BODY_BYTES} bytes)"),
        )
    })?;
    Ok(Form::parse(body))
}

/// A form refusal as the HTTP face answers it.
fn form_error(error: FormError) -> HttpError {
    match error {
        FormError::BadRequest { code, description } => HttpError::bad_request(code, &description),
        FormError::InvalidClient => HttpError::invalid_client(&error.to_string()),
    }
}

fn peer(
    info: &Option<Extension<ConnectionInfo>>,
) -> (
    Option<std::net::SocketAddr>,
    Option<Arc<tokenmint_core::client::PeerCertificate>>,
) {
    info.as_ref()
        .map_or((None, None), |Extension(i)| (i.remote_addr, i.peer.clone()))
}

async fn token(
    State(face): State<HttpFace>,
    info: Option<Extension<ConnectionInfo>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (remote, peer) = peer(&info);
    let result = (|| {
        let form = read_form(&headers, &body)?;
        let authorization = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        let request = form::token_request(&form, authorization).map_err(form_error)?;
        let peer = peer.as_deref();
        let (issued, exchanged) = match &request {
            GrantRequest::ClientCredentials(request) => {
                (face.authority.issue(peer, request), false)
            }
            GrantRequest::TokenExchange(exchange) => {
                (face.authority.exchange(peer, exchange), true)
            }
        };
        issued
            .map(|issued| (issued, exchanged))
            .map_err(|e| HttpError::from(wire::issue_refused(&e, remote)).per_rfc6749())
    })();
    match result {
        Ok((issued, exchanged)) => {
            wire::issued(&issued.client_id);
            let mut body = json!({
                "access_token": issued.access_token,
                "token_type": issued.token_type,
                "expires_in": issued.expires_in,
            });
            if !issued.scopes.is_empty() {
                body["scope"] = Value::from(issued.scopes.join(" "));
            }
            // RFC 8693 §2.2.1: an exchange's answer says what it issued.
            if exchanged {
                body["issued_token_type"] = Value::from(issued.issued_token_type);
            }
            wire::no_store(Json(body).into_response())
        }
        Err(e) => wire::no_store(e.into_response()),
    }
}

/// The form of an introspection or revocation request and its caller, who must hold
/// `permission`.
fn authorized_form(
    face: &HttpFace,
    peer: Option<&tokenmint_core::client::PeerCertificate>,
    remote: Option<std::net::SocketAddr>,
    headers: &HeaderMap,
    body: &Result<Bytes, BytesRejection>,
    permission: Permission,
) -> Result<(Form, Arc<tokenmint_core::client::Client>), HttpError> {
    let form = read_form(headers, body)?;
    form.check_no_repeats().map_err(form_error)?;
    let caller = face
        .authority
        .caller(peer, permission)
        .map_err(|e| HttpError::from(wire::caller_refused(&e, remote)).per_rfc6749())?;
    crate::ops::record_client(caller.id.as_str());
    Ok((form, caller))
}

async fn introspect(
    State(face): State<HttpFace>,
    info: Option<Extension<ConnectionInfo>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (remote, peer) = peer(&info);
    let result = (|| {
        let (form, caller) = authorized_form(
            &face,
            peer.as_deref(),
            remote,
            &headers,
            &body,
            Permission::Introspect,
        )?;
        let token = form.required("token").map_err(form_error)?;
        // Sent empty is not left out: the core refuses it.
        let presented = form
            .single_as_sent("presented_certificate_thumbprint")
            .map_err(form_error)?;
        face.authority
            .introspect(&caller, token, presented)
            .map_err(|e| HttpError::from(wire::introspect_refused(&e, remote)))
    })();
    match result {
        Ok(Ok(claims)) => {
            metrics::counter!("tokenmint_introspections_total", "outcome" => "active").increment(1);
            let answer = Introspection::Active(Box::new(claims.into()));
            wire::no_store(Json(answer.to_json()).into_response())
        }
        Ok(Err(reason)) => {
            metrics::counter!("tokenmint_introspections_total", "outcome" => reason.label())
                .increment(1);
            tracing::debug!(reason = %reason, "introspection: inactive");
            wire::no_store(Json(Introspection::Inactive.to_json()).into_response())
        }
        Err(e) => wire::no_store(e.into_response()),
    }
}

async fn revoke(
    State(face): State<HttpFace>,
    info: Option<Extension<ConnectionInfo>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (remote, peer) = peer(&info);
    let decided = (|| {
        let (form, caller) = authorized_form(
            &face,
            peer.as_deref(),
            remote,
            &headers,
            &body,
            Permission::Issue,
        )?;
        let token = form.required("token").map_err(form_error)?;
        face.authority
            .revocation_of(&caller, token)
            .map(|change| (change, caller.id.clone()))
            .map_err(|e| HttpError::from(wire::revoke_refused(&e, remote)).per_rfc6749())
    })();
    let (change, caller_id) = match decided {
        Ok(decided) => decided,
        Err(e) => return wire::no_store(e.into_response()),
    };
    if let Some(change) = change
        && let Err(e) = face.changes.commit(change, caller_id.as_str()).await
    {
        return wire::no_store(HttpError::from(wire::store_failed(&e)).into_response());
    }
    wire::no_store(StatusCode::OK.into_response())
}

async fn jwks(State(face): State<HttpFace>, headers: HeaderMap) -> Response {
    jwks_of(&face, &headers, false)
}

/// Every key, post-quantum ones included (`pq_jwks_uri`): for verifiers that know `AKP`.
async fn jwks_all(State(face): State<HttpFace>, headers: HeaderMap) -> Response {
    jwks_of(&face, &headers, true)
}

/// A key set with its `ETag` and `Cache-Control`: the classical keys, or with `full` all.
fn jwks_of(face: &HttpFace, headers: &HeaderMap, full: bool) -> Response {
    let ring = face.authority.key_ring();
    let etag = format!("\"{}\"", ring.version());
    let cache = format!("public, max-age={}", face.jwks_max_age.as_secs());
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| if_none_match(v, &etag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            )],
            if full {
                ring.full_jwks_json().to_string()
            } else {
                ring.jwks_json().to_string()
            },
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cache) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    response
}

/// Whether an `If-None-Match` list names `etag`, by the weak comparison RFC 9110 §13.1.2
/// asks for there (`W/"v"` matches `"v"`), or is `*`.
fn if_none_match(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

async fn metadata(State(face): State<HttpFace>) -> Response {
    let issuer = face.authority.issuer().name().to_owned();
    let mtls = ["tls_client_auth", "self_signed_tls_client_auth"];
    // A secret is a second factor on the token endpoint, beside the certificate.
    let token_auth = [
        "tls_client_auth",
        "self_signed_tls_client_auth",
        "client_secret_basic",
        "client_secret_post",
    ];
    Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "pq_jwks_uri": format!("{issuer}/.well-known/jwks-all.json"),
        // REQUIRED by RFC 8414 and non-empty for common validators; there is no
        // authorization endpoint, and "none" (the registered type that issues nothing) says so.
        "response_types_supported": ["none"],
        "grant_types_supported": GrantType::ALL.map(GrantType::as_str),
        "token_endpoint_auth_methods_supported": token_auth,
        "introspection_endpoint_auth_methods_supported": mtls,
        "revocation_endpoint_auth_methods_supported": mtls,
        "tls_client_certificate_bound_access_tokens": true,
    }))
    .into_response()
}

async fn not_found() -> Response {
    HttpError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::InvalidRequest,
        "no such endpoint",
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidRequest,
        "this endpoint does not accept that method",
    )
    .into_response()
}
