//! The HTTP layer of a TLS listener: serves each accepted connection with hyper (HTTP/1.1 or
//! HTTP/2 by its preface) under limits chosen by whether its peer presented a verified
//! client certificate, and admits each request to the service only once its body is complete.
//!
//! Capacity is split so that no peer without a certificate can take what authenticated
//! clients use (docs/decisions.md, "Capacity before authentication"):
//!
//! - a connection without a certificate gets a small HTTP/2 stream budget; there are at most
//!   `server.max_connections_without_certificate` of them at once (a sixteenth from one
//!   address), and one with no request open for `server.idle_timeout_without_certificate`
//!   is closed;
//! - a request's body must arrive in full within `server.body_timeout` (on HTTP/1.1 its
//!   headers too), and the whole request must be answered within `server.request_timeout`;
//! - a request takes a slot in flight only after its body is complete, from
//!   `server.max_in_flight` when its connection has a certificate and from the separate
//!   `server.max_in_flight_without_certificate` when not.

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::Response,
};
use http_body_util::BodyExt as _;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    connection::{ConnectionInfo, OpenRequest},
    tls::TlsConnection,
    wire::AdmissionRefusal,
};

/// What one connection's peer may make this process hold: stream budgets, header limits and
/// the connection's lifetime.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// HTTP/2 streams at once on a connection whose peer presented a verified certificate.
    pub max_streams: u32,
    /// HTTP/2 streams at once on a connection without one.
    pub max_streams_without_certificate: u32,
    /// Connections without a certificate open at once (one address: a sixteenth); a new one
    /// beyond is closed.
    pub max_connections_without_certificate: u32,
    /// A connection without a certificate with no request open this long is closed.
    pub idle_without_certificate: Duration,
    /// Bytes of request headers (HTTP/2 header list; HTTP/1.1 request line and headers).
    pub max_header_bytes: u32,
    /// How long an HTTP/1.1 peer may take to send a request's headers.
    pub header_timeout: Duration,
    /// HTTP/2 pings on idle connections, and how long one may go unanswered.
    pub keepalive_interval: Duration,
    /// See `keepalive_interval`.
    pub keepalive_timeout: Duration,
    /// Then the connection is asked to go away.
    pub max_age: Duration,
    /// How long calls in flight get after `max_age` (never longer than the age itself).
    pub age_grace: Duration,
    /// How long calls in flight get after shutdown is asked for.
    pub grace: Duration,
}

/// The most response bytes one HTTP/2 stream may have buffered unsent (hyper's default is
/// 400 KiB): a peer that stops reading holds at most this much per stream.
const MAX_SEND_BUFFER_PER_STREAM: usize = 64 * 1024;

/// One address (an IPv6 /64 counts as one) may hold this fraction of the connections without
/// a client certificate: 1/16, 64 of the default 1024.
const CONNECTIONS_WITHOUT_CERTIFICATE_SHARE: u32 = 16;

/// hyper refuses an HTTP/1.1 read buffer smaller than this.
const MIN_HTTP1_BUFFER: usize = 8 * 1024;

/// One hyper builder per kind of peer.
#[derive(Clone)]
struct Builders {
    certified: auto::Builder<TokioExecutor>,
    uncertified: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &ConnectionLimits) -> Self {
        Self {
            certified: builder(limits, limits.max_streams),
            uncertified: builder(limits, limits.max_streams_without_certificate),
        }
    }
}

fn builder(limits: &ConnectionLimits, max_streams: u32) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let header_bytes = usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The read buffer bounds the request line and headers: past it, 431.
        .max_buf_size(header_bytes.max(MIN_HTTP1_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(max_streams)
        .max_header_list_size(limits.max_header_bytes)
        .max_send_buf_size(MAX_SEND_BUFFER_PER_STREAM)
        .keep_alive_interval(Some(limits.keepalive_interval))
        .keep_alive_timeout(limits.keepalive_timeout);
    builder
}

/// Serves the connections `incoming` brings with `service` until `stop`, then lets each
/// finish what it has in flight within `limits.grace` and closes what is left.
pub async fn serve_connections(
    mut incoming: mpsc::Receiver<TlsConnection>,
    service: axum::Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let builders = Builders::new(&limits);
    let uncertified = Arc::new(Semaphore::new(
        usize::try_from(limits.max_connections_without_certificate).unwrap_or(usize::MAX),
    ));
    let uncertified_per_address = crate::address_shares::AddressShares::new(
        (limits.max_connections_without_certificate / CONNECTIONS_WITHOUT_CERTIFICATE_SHARE).max(1),
        &[],
        0,
    );
    let tracker = TaskTracker::new();
    let force = CancellationToken::new();
    loop {
        let connection = tokio::select! {
            () = stop.cancelled() => break,
            next = incoming.recv() => match next {
                Some(connection) => connection,
                None => break,
            },
        };
        let info = connection.info().clone();
        let (builder, permit) = if info.peer.is_some() {
            (builders.certified.clone(), None)
        } else {
            let place = info
                .remote_addr
                .map(|addr| uncertified_per_address.enter(addr.ip()))
                .transpose();
            let permit = uncertified.clone().try_acquire_owned();
            let (Ok(place), Ok(permit)) = (place, permit) else {
                metrics::counter!("tokenmint_connections_shed_total", "reason" => "without_certificate")
                    .increment(1);
                tracing::debug!(remote_addr = ?info.remote_addr, "too many connections without a client certificate, in all or from this address; connection closed");
                continue;
            };
            (builders.uncertified.clone(), Some((permit, place)))
        };
        let service = service.clone();
        let (stop, force) = (stop.clone(), force.clone());
        let limits = limits.clone();
        tracker.spawn(async move {
            serve_one(connection, info, builder, service, &limits, stop, force).await;
            drop(permit);
        });
    }
    tracker.close();
    if tokio::time::timeout(limits.grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.grace, "connections still open after the shutdown grace; closing them");
        force.cancel();
        tracker.wait().await;
    }
}

/// Serves one connection: until its peer closes it, it reaches `max_age` (then asked to go
/// away, closed after the grace), the server stops (the same), or a handler closes it.
async fn serve_one(
    connection: TlsConnection,
    info: ConnectionInfo,
    builder: auto::Builder<TokioExecutor>,
    service: axum::Router,
    limits: &ConnectionLimits,
    stop: CancellationToken,
    force: CancellationToken,
) {
    let state = info.state.clone();
    let remote_addr = info.remote_addr;
    // A connection without a certificate is closed once idle for its limit: such connections
    // are few, and an idle one must not keep its place.
    let idle_limit = info
        .peer
        .is_none()
        .then_some(limits.idle_without_certificate);
    let hyper_service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        // Open requests are counted where idleness is watched: without a certificate (a
        // connection with one pays nothing per request for it).
        let open = idle_limit.map(|_| OpenRequest::start(&info.state));
        request.extensions_mut().insert(info.clone());
        let mut service = service.clone();
        async move {
            let response: Result<Response, Infallible> =
                tower::Service::call(&mut service, request.map(Body::new)).await;
            // The request stays open until its response body ends or is dropped.
            let Some(open) = open else {
                return response;
            };
            response.map(|response| {
                response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _open = &open;
                        frame
                    }))
                })
            })
        }
    });
    let served = builder.serve_connection(TokioIo::new(connection), hyper_service);
    tokio::pin!(served);
    let age = tokio::time::sleep(limits.max_age);
    tokio::pin!(age);
    let mut closing_by: Option<tokio::time::Instant> = None;
    let mut idle_check = tokio::time::interval(limits.idle_without_certificate / 4);
    loop {
        let deadline = closing_by.unwrap_or_else(far_future);
        tokio::select! {
            _ = idle_check.tick(), if closing_by.is_none() && idle_limit.is_some() => {
                if idle_limit.is_some_and(|limit| state.idle_for() >= limit) {
                    served.as_mut().graceful_shutdown();
                    closing_by = Some(tokio::time::Instant::now() + limits.grace);
                }
            }
            result = &mut served => {
                if let Err(e) = result {
                    tracing::debug!(?remote_addr, error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut age, if closing_by.is_none() => {
                served.as_mut().graceful_shutdown();
                closing_by = Some(tokio::time::Instant::now() + limits.age_grace.min(limits.max_age));
            }
            () = stop.cancelled(), if closing_by.is_none() => {
                served.as_mut().graceful_shutdown();
                closing_by = Some(tokio::time::Instant::now() + limits.grace);
            }
            () = tokio::time::sleep_until(deadline), if closing_by.is_some() => return,
            () = force.cancelled() => return,
            () = state.closing() => {
                tracing::debug!(?remote_addr, "connection closed by its handler");
                return;
            }
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// The admission rules of one listener's requests.
#[derive(Debug)]
pub struct Admission {
    with_certificate: Semaphore,
    without_certificate: Semaphore,
    body_timeout: Duration,
    request_timeout: Duration,
}

/// Admission settings, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionLimits {
    /// Requests in flight from connections with a verified certificate.
    pub max_in_flight: u32,
    /// Requests in flight from connections without one.
    pub max_in_flight_without_certificate: u32,
    /// How long a peer may take to send a request's body.
    pub body_timeout: Duration,
    /// How long a request may take from its headers to its response.
    pub request_timeout: Duration,
}

/// The largest gRPC request body read: a message of `limits::MAX_MESSAGE_BYTES` with its
/// 5-byte frame header (HTTP bodies: `limits::MAX_BODY_BYTES`).
const MAX_GRPC_BODY: usize = tokenmint_core::limits::MAX_MESSAGE_BYTES + 5;

impl Admission {
    /// The rules for one listener.
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        let slots = |n: u32| Semaphore::new(usize::try_from(n).unwrap_or(usize::MAX));
        Arc::new(Self {
            with_certificate: slots(limits.max_in_flight),
            without_certificate: slots(limits.max_in_flight_without_certificate),
            body_timeout: limits.body_timeout,
            request_timeout: limits.request_timeout,
        })
    }
}

/// The requests whose body is a stream rather than one message (server reflection, which
/// grpcurl keeps open while it waits for answers): admitted without reading the body first;
/// tonic bounds each of their messages.
const STREAMING_REQUESTS: &[&str] = &[
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Middleware on every request of a TLS listener: reads the body in full within
/// `body_timeout` (at most `MAX_GRPC_BODY` or `limits::MAX_BODY_BYTES`), then takes a slot in
/// flight from the pool of its kind of connection — refused at once past it, with
/// `RESOURCE_EXHAUSTED` and a retry hint (HTTP: 429 with `Retry-After`) — and answers
/// within `request_timeout`. A stream holds its slot only until its first response.
pub async fn admit(
    State(admission): State<Arc<Admission>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let with_certificate = request
        .extensions()
        .get::<ConnectionInfo>()
        .is_some_and(|info| info.peer.is_some());
    let request = if STREAMING_REQUESTS.contains(&request.uri().path()) {
        request
    } else {
        match admission.read_body(request, grpc).await {
            Ok(request) => request,
            Err(refused) => return refused_response(refused, grpc),
        }
    };
    let pool = if with_certificate {
        &admission.with_certificate
    } else {
        &admission.without_certificate
    };
    let Ok(_slot) = pool.try_acquire() else {
        metrics::counter!("tokenmint_requests_shed_total").increment(1);
        return refused_response(AdmissionRefusal::Shed { with_certificate }, grpc);
    };
    let left = admission.request_timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, next.run(request)).await {
        Ok(response) => response,
        Err(_) => refused_response(AdmissionRefusal::TimedOut(admission.request_timeout), grpc),
    }
}

fn refused_response(refused: AdmissionRefusal, grpc: bool) -> Response {
    metrics::counter!("tokenmint_requests_refused_total", "reason" => refused.label()).increment(1);
    refused.into_response(grpc)
}

impl Admission {
    /// The request with its body read in full, within `body_timeout` and the size limit.
    async fn read_body(&self, request: Request, grpc: bool) -> Result<Request, AdmissionRefusal> {
        let limit = if grpc {
            MAX_GRPC_BODY
        } else {
            tokenmint_core::limits::MAX_BODY_BYTES
        };
        let (parts, body) = request.into_parts();
        let read = http_body_util::Limited::new(body, limit).collect();
        match tokio::time::timeout(self.body_timeout, read).await {
            Ok(Ok(collected)) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(AdmissionRefusal::BodyTooLarge(limit))
            }
            Ok(Err(_)) => Err(AdmissionRefusal::BodyUnreadable),
            Err(_) => Err(AdmissionRefusal::BodyTimedOut(self.body_timeout)),
        }
    }
}
