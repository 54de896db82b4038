//! What a request knows about the connection it came on: the peer's address and verified
//! client certificate (classified once by `tls`), and the connection's own state — the
//! requests open on it, its watch streams, and a handle to close it — which `transport`
//! keeps and handlers use.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use tokenmint_core::client::PeerCertificate;

/// What a handler knows about its connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// The verified client certificate, classified once at accept; `None` without one.
    pub peer: Option<Arc<PeerCertificate>>,
    /// The connection's own state (its watch streams, a handle to close it).
    pub state: Arc<ConnectionState>,
}

/// What a connection's handlers may do to the connection itself, and what it holds.
#[derive(Debug)]
pub struct ConnectionState {
    close: CancellationToken,
    watches: AtomicU32,
    /// Requests whose response has not ended yet (a stream counts until it ends).
    open_requests: AtomicU32,
    /// When the last request ended, or the connection began.
    last_ended: std::sync::Mutex<Instant>,
}

impl Default for ConnectionState {
    fn default() -> Self {
        Self {
            close: CancellationToken::new(),
            watches: AtomicU32::new(0),
            open_requests: AtomicU32::new(0),
            last_ended: std::sync::Mutex::new(Instant::now()),
        }
    }
}

/// A request counted as open on its connection until dropped (with its response body).
pub struct OpenRequest(Arc<ConnectionState>);

impl OpenRequest {
    /// Counts a request that starts now.
    pub fn start(state: &Arc<ConnectionState>) -> Self {
        state.open_requests.fetch_add(1, Ordering::AcqRel);
        Self(state.clone())
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        *self
            .0
            .last_ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        self.0.open_requests.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionState {
    /// How long the connection has had no request open (zero while one is).
    pub fn idle_for(&self) -> Duration {
        if self.open_requests.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        self.last_ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
    }

    /// Closes the connection now, whatever is in flight on it: for a peer that stopped
    /// reading a stream (HTTP/2 gives a server no other way to reclaim it).
    pub fn close(&self) {
        self.close.cancel();
    }

    /// Takes one of `max` watch streams on this connection, if one is free.
    pub fn try_open_watch(self: &Arc<Self>, max: u32) -> Option<ConnectionWatch> {
        self.watches
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        Some(ConnectionWatch(self.clone()))
    }
}

/// A watch stream counted against its connection's cap, until dropped.
#[derive(Debug)]
pub struct ConnectionWatch(Arc<ConnectionState>);

impl Drop for ConnectionWatch {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionState {
    /// Completes when the connection is to be closed now.
    pub async fn closing(&self) {
        self.close.cancelled().await;
    }
}
