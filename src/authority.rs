//! The issuing authority: the core's entry point for a token request. It authenticates the
//! peer as a client, applies the client's policy and signs with the current key, reading the
//! key ring and client registry it is handed — no lock is held while anything awaits.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::{
    client::{ClientRegistry, PeerCertificate},
    clock::{Clock, unix_seconds},
    crypto::SecretHasher,
    keys::KeyRing,
    token::{IssueError, IssuedToken, Issuer, TokenRequest},
};

/// Issues tokens against the current key ring and client registry. Cheap to share (`Arc`).
pub struct Authority {
    issuer: Issuer,
    keys: watch::Receiver<Arc<KeyRing>>,
    clients: ArcSwap<ClientRegistry>,
    hasher: SecretHasher,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// An authority for `issuer`, reading keys from `keys` and the time from `clock`.
    pub fn new(
        issuer: Issuer,
        keys: watch::Receiver<Arc<KeyRing>>,
        clients: ClientRegistry,
        hasher: SecretHasher,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            issuer,
            keys,
            clients: ArcSwap::from_pointee(clients),
            hasher,
            clock,
        }
    }

    /// Authenticates `peer` as a client and issues it a token as `request` asks.
    pub fn issue(
        &self,
        peer: Option<&PeerCertificate>,
        request: &TokenRequest,
    ) -> Result<IssuedToken, IssueError> {
        let client = self.clients.load().authenticate(
            peer,
            request.client_id.as_deref(),
            request.client_secret.as_deref(),
            &self.hasher,
        )?;
        // authenticate() refuses a missing certificate, so `peer` is present here.
        let peer = peer.ok_or(IssueError::Auth(crate::client::AuthError::NoCertificate))?;
        let signer = self.keys.borrow().signer().clone();
        let now = unix_seconds(self.clock.now());
        self.issuer.issue_at(now, &client, peer, request, &signer)
    }

    /// The key ring as it is now.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.keys.borrow().clone()
    }

    /// A receiver that sees every new key ring.
    pub fn watch_keys(&self) -> watch::Receiver<Arc<KeyRing>> {
        self.keys.clone()
    }

    /// The client registry as it is now.
    pub fn clients(&self) -> Arc<ClientRegistry> {
        self.clients.load_full()
    }

    /// Replaces the client registry (after a reload from the store).
    pub fn replace_clients(&self, registry: ClientRegistry) {
        self.clients.store(Arc::new(registry));
    }

    /// The issuer this authority signs as.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// Reads the authority's clock.
    pub fn now(&self) -> i64 {
        unix_seconds(self.clock.now())
    }
}
