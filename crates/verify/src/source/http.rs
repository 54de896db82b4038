//! The HTTP source: the issuer's JWKS URL, polled as its `Cache-Control: max-age` allows, with
//! `If-None-Match` so an unchanged set costs a `304`. It carries no revocations.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokenmint_core::jose::{self, MAX_JWKS_LEN};
use tokio::{runtime::Handle, sync::Mutex};
use tokio_rustls::rustls::ClientConfig;

use tokenmint_proto::{
    backoff::Backoff,
    connect::{Target, with_alpn},
};

use super::{BoxFuture, Fetch, Started};
use crate::{
    error::BuildError,
    settings::Settings,
    state::{IssuerKeys, State, Stats},
};

/// The poll interval when the response names no `max-age`, and the bounds put on one that does.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
const MIN_MAX_AGE: Duration = Duration::from_secs(1);
const MAX_MAX_AGE: Duration = Duration::from_secs(3600);

pub(crate) fn start(
    url: &str,
    tls: Arc<ClientConfig>,
    settings: &Settings,
    state: Arc<State>,
    runtime: &Handle,
) -> Result<Started, BuildError> {
    let poller = Arc::new(Poller {
        target: Target::parse(url).map_err(|bad| BuildError::BadUrl(bad.0))?,
        tls: with_alpn(&tls, b"http/1.1"),
        timeout: settings.fetch_timeout,
        etag: Mutex::new(None),
        state: state.clone(),
    });
    state.set_poll_interval(DEFAULT_MAX_AGE);
    let task = runtime.spawn(poll(poller.clone(), settings.clone()));
    Ok(Started {
        fetch: poller,
        tasks: vec![task],
    })
}

struct Poller {
    target: Target,
    tls: Arc<ClientConfig>,
    timeout: Duration,
    /// The `ETag` of the key set held, for `If-None-Match`.
    etag: Mutex<Option<String>>,
    state: Arc<State>,
}

/// What one GET brought.
enum Fetched {
    NotModified,
    Changed { text: String, etag: Option<String> },
}

/// Polls for as long as the verifier lives: every `max-age`, or with backoff after a failure.
async fn poll(poller: Arc<Poller>, settings: Settings) {
    let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
    loop {
        let delay = match poller.refresh().await {
            Ok(max_age) => {
                backoff.reset();
                poller.state.set_poll_interval(max_age);
                max_age
            }
            Err(error) => {
                poller
                    .state
                    .stats
                    .note_error(format!("JWKS fetch: {error}"));
                Stats::count(&poller.state.stats.reconnects);
                backoff.next_delay()
            }
        };
        tokio::time::sleep(delay).await;
    }
}

impl Poller {
    /// One conditional GET applied to the state; the `max-age` to wait before the next.
    async fn refresh(&self) -> Result<Duration, String> {
        let mut etag = self.etag.lock().await;
        let (fetched, max_age) = self.get(etag.as_deref()).await?;
        Stats::count(&self.state.stats.key_polls);
        match fetched {
            Fetched::NotModified => {
                Stats::count(&self.state.stats.key_polls_unchanged);
                self.state.mark_keys_fresh();
            }
            Fetched::Changed { text, etag: tag } => {
                self.state.set_keys(issuer_keys(&text, tag.as_deref())?)?;
                *etag = tag;
            }
        }
        Ok(max_age)
    }

    /// `GET` the JWKS URL over a new TLS connection.
    async fn get(&self, etag: Option<&str>) -> Result<(Fetched, Duration), String> {
        let tls = self
            .target
            .connect(self.tls.clone(), self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        let _driver = AbortOnDrop(tokio::spawn(connection));
        let mut request = http::Request::get(self.target.path_and_query())
            .header(http::header::HOST, self.target.authority())
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            );
        if let Some(etag) = etag {
            request = request.header(http::header::IF_NONE_MATCH, etag);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            read_response(response).await
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| "timed out".to_owned())?
    }
}

async fn read_response(
    response: http::Response<hyper::body::Incoming>,
) -> Result<(Fetched, Duration), String> {
    let max_age = max_age(response.headers());
    let status = response.status();
    if status == http::StatusCode::NOT_MODIFIED {
        return Ok((Fetched::NotModified, max_age));
    }
    if !status.is_success() {
        return Err(format!("the issuer answered {status}"));
    }
    let etag = response
        .headers()
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(response.into_body(), MAX_JWKS_LEN)
        .collect()
        .await
        .map_err(|e| format!("reading the key set: {e}"))?
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).map_err(|_| "the key set is not UTF-8")?;
    Ok((Fetched::Changed { text, etag }, max_age))
}

/// `Cache-Control: max-age` (names compared without case), kept within sane bounds;
/// `no-cache` or `no-store` poll as often as allowed; the default when absent.
fn max_age(headers: &http::HeaderMap) -> Duration {
    let directives: Vec<String> = headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    if directives
        .iter()
        .any(|d| d == "no-cache" || d == "no-store")
    {
        return MIN_MAX_AGE;
    }
    directives
        .iter()
        .filter_map(|directive| directive.strip_prefix("max-age="))
        .find_map(|seconds| seconds.trim().parse::<u64>().ok())
        .map_or(DEFAULT_MAX_AGE, |s| {
            Duration::from_secs(s).clamp(MIN_MAX_AGE, MAX_MAX_AGE)
        })
}

/// Aborts the connection's task when the request is done, whichever way it ended.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Fetch for Poller {
    fn fetch(&self) -> BoxFuture<'_, Result<IssuerKeys, String>> {
        Box::pin(async move {
            // Unconditional: an unknown kid means the held set is not the issuer's.
            let (fetched, _) = self.get(None).await?;
            match fetched {
                Fetched::Changed { text, etag } => {
                    let keys = issuer_keys(&text, etag.as_deref())?;
                    // The tag only once the set is known usable: else a later 304 would
                    // vouch for keys that are not the issuer's.
                    if !keys.parsed.keys.published().is_empty() {
                        *self.etag.lock().await = etag;
                    }
                    Ok(keys)
                }
                Fetched::NotModified => Err("304 to an unconditional request".into()),
            }
        })
    }
}

/// The key set of a response; its version is the `ETag` when there is one.
fn issuer_keys(text: &str, etag: Option<&str>) -> Result<IssuerKeys, String> {
    let parsed = jose::parse_jwks(text).map_err(|e| format!("unusable key set: {e}"))?;
    let version = etag.map_or_else(|| parsed.keys.version().to_owned(), str::to_owned);
    Ok(IssuerKeys { parsed, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_and_bounded() {
        let headers = |value: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CACHE_CONTROL, value.parse().unwrap());
            h
        };
        assert_eq!(
            max_age(&headers("public, max-age=60")),
            Duration::from_secs(60)
        );
        assert_eq!(max_age(&headers("max-age=0")), MIN_MAX_AGE);
        assert_eq!(max_age(&headers("max-age=99999999")), MAX_MAX_AGE);
        assert_eq!(max_age(&headers("no-cache")), MIN_MAX_AGE);
        assert_eq!(
            max_age(&headers("Public, Max-Age=60")),
            Duration::from_secs(60)
        );
        assert_eq!(max_age(&headers("private")), DEFAULT_MAX_AGE);
        assert_eq!(max_age(&http::HeaderMap::new()), DEFAULT_MAX_AGE);
    }
}
