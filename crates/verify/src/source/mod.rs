//! Where keys and revocations come from: the issuer's gRPC watch streams (the default), or a
//! JWKS URL polled over HTTPS (keys only). Each source starts its tasks and offers a one-off
//! key fetch for unknown `kid`s.

mod grpc;
mod http;

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use tokio::{runtime::Handle, task::JoinHandle};
use tokio_rustls::rustls::ClientConfig;

use crate::{
    error::BuildError,
    settings::Settings,
    state::{IssuerKeys, State},
};

/// A boxed future, for the source seam.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Fetches the key set once, on demand (a token names a `kid` not held).
pub(crate) trait Fetch: Send + Sync {
    fn fetch(&self) -> BoxFuture<'_, Result<IssuerKeys, String>>;
}

/// A source of keys (and maybe revocations), as the builder names it.
pub(crate) enum Source {
    /// `WatchJwks` and `WatchRevocations` over mTLS.
    Grpc {
        endpoint: String,
        tls: Arc<ClientConfig>,
    },
    /// A JWKS URL; no revocations.
    Http { url: String, tls: Arc<ClientConfig> },
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Grpc { endpoint, .. } => write!(f, "Grpc({endpoint})"),
            Self::Http { url, .. } => write!(f, "Http({url})"),
        }
    }
}

impl Source {
    pub(crate) fn watches_revocations(&self) -> bool {
        !matches!(self, Self::Http { .. })
    }
}

/// A started source: its on-demand fetch and its tasks (aborted with the verifier).
pub(crate) struct Started {
    pub(crate) fetch: Arc<dyn Fetch>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

/// Starts `source` on `runtime`, feeding `state`.
pub(crate) fn start(
    source: Source,
    settings: &Settings,
    state: Arc<State>,
    runtime: &Handle,
) -> Result<Started, BuildError> {
    match source {
        Source::Grpc { endpoint, tls } => grpc::start(&endpoint, tls, settings, state, runtime),
        Source::Http { url, tls } => http::start(&url, tls, settings, state, runtime),
    }
}
