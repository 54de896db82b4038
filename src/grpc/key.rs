//! `tokenmint.v1.KeyService`: the published key set, fetched or watched.

use super::*;

/// `tokenmint.v1.KeyService`: no client certificate needed.
#[derive(Clone, Debug)]
pub struct KeyApi {
    authority: Arc<Authority>,
    stop: CancellationToken,
    limits: WatchLimits,
}

impl KeyApi {
    /// The service over `authority`; its watch streams end when `stop` fires.
    pub fn new(authority: Arc<Authority>, stop: CancellationToken, limits: WatchLimits) -> Self {
        Self {
            authority,
            stop,
            limits,
        }
    }
}

/// A boxed stream of key sets.
pub type JwksStream = Pin<Box<dyn Stream<Item = Result<GetJwksResponse, Status>> + Send>>;

/// The key set: the classical keys, or with `full` every key (post-quantum ones included).
fn jwks_response(ring: &tokenmint_core::keys::KeyRing, full: bool) -> GetJwksResponse {
    let text = if full {
        ring.full_jwks_json()
    } else {
        ring.jwks_json()
    };
    GetJwksResponse {
        jwks_json: text.to_string(),
        version: ring.version().to_owned(),
        progress: None,
    }
}

/// One `WatchJwks` stream: the key set, again at each change, and a heartbeat every second
/// if asked for, while this process is fresh.
struct KeySetWatch {
    authority: Arc<Authority>,
    stop: CancellationToken,
    stall: Duration,
    progress: bool,
    full: bool,
}

impl KeySetWatch {
    /// Sends until the stream ends; `Some` when a send was not taken.
    async fn run(
        self,
        tx: &tokio::sync::mpsc::Sender<Result<GetJwksResponse, Status>>,
    ) -> Option<Unsent> {
        let mut keys = self.authority.watch_keys();
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = String::new();
        loop {
            let ring = keys.borrow_and_update().clone();
            if ring.version() != last {
                last = ring.version().to_owned();
                if let Err(unsent) =
                    send_within(tx, Ok(jwks_response(&ring, self.full)), self.stall).await
                {
                    return Some(unsent);
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => {
                    let _ = tx.try_send(Err(shutting_down()));
                    return None;
                }
                () = tx.closed() => return None,
                changed = keys.changed() => if changed.is_err() { return None },
                _ = heartbeat.tick(), if self.progress => {
                    if self.authority.check_fresh().is_ok() {
                        if let Err(unsent) = send_within(tx, Ok(self.heartbeat(&last)), self.stall).await {
                            return Some(unsent);
                        }
                    }
                }
            }
        }
    }

    fn heartbeat(&self, version: &str) -> GetJwksResponse {
        GetJwksResponse {
            jwks_json: String::new(),
            version: version.to_owned(),
            progress: Some(proto::get_jwks_response::Progress {
                as_of: Some(prost_types::Timestamp::from(self.authority.fresh_as_of())),
            }),
        }
    }
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    type WatchJwksStream = JwksStream;

    async fn watch_jwks(
        &self,
        request: Request<WatchJwksRequest>,
    ) -> Result<Response<Self::WatchJwksStream>, Status> {
        let connection = connection_of(&request);
        let connection_watch = open_connection_watch(connection.as_ref())?;
        let (_, peer) = peer_of(&request);
        let pool = if peer.is_some() {
            &self.limits.jwks
        } else {
            &self.limits.jwks_without_certificate
        };
        let permit = pool.clone().try_acquire_owned().map_err(|_| {
            wire::resource_exhausted(
                "tokenmint holds its limit of key-set watch streams (keys.max_jwks_watches; a quarter of it for connections without a client certificate); use GetJwks or retry later",
                5,
            )
        })?;
        let watch = KeySetWatch {
            authority: self.authority.clone(),
            stop: self.stop.clone(),
            stall: self.limits.stall_timeout,
            progress: request.get_ref().progress,
            full: request.get_ref().include_post_quantum,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let _counted = (permit, connection_watch);
            if watch.run(&tx).await == Some(Unsent::Stalled) {
                close_stalled(connection.as_ref(), "jwks");
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_jwks(
        &self,
        request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        let full = request.get_ref().include_post_quantum;
        Ok(Response::new(jwks_response(
            &self.authority.key_ring(),
            full,
        )))
    }
}
