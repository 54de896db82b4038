//! Registering a client: the one path for the AdminService's `RegisterClient` and the CLI's
//! offline `client add`. The client is built by the one client rule first; here it gets its
//! secret (if asked), and is stored with its audit event in one transaction.

use tokenmint_core::{
    audit::AuditRecord,
    client::Client,
    clock::UnixTime,
    crypto::{self, SecretHasher},
};
use tokenmint_store::{Store, StoreError};
use zeroize::Zeroizing;

/// Who registers, and how.
#[derive(Clone, Copy, Debug)]
pub struct Registrar<'a> {
    /// The acting client id, or the operator.
    pub actor: &'a str,
    /// Seconds since the epoch.
    pub now: UnixTime,
    /// Written straight to the store by the CLI, not through a running server.
    pub offline: bool,
}

/// Why a registration failed; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The id or the certificate matcher belongs to another client.
    #[error("client {id} or its certificate matcher ({kind} {value}) is already registered")]
    Taken {
        /// The id asked for.
        id: String,
        /// The matcher kind.
        kind: &'static str,
        /// The matcher value.
        value: String,
    },
    /// No secret could be generated (the system's random source failed).
    #[error("the client secret could not be generated: {0}")]
    Secret(crypto::CryptoError),
    /// The store refused or could not be reached.
    #[error(transparent)]
    Store(StoreError),
}

/// Stores `client` with its audit event; with `hasher`, first gives it a new secret, which is
/// returned (shown once, never stored in clear).
pub async fn register(
    store: &dyn Store,
    mut client: Client,
    hasher: Option<&SecretHasher>,
    by: Registrar<'_>,
) -> Result<(Client, Option<Zeroizing<String>>), RegisterError> {
    let secret = match hasher {
        Some(hasher) => {
            let secret = crypto::generate_client_secret().map_err(RegisterError::Secret)?;
            client.secret_hash = Some(hasher.hash(&secret));
            Some(secret)
        }
        None => None,
    };
    let mut audit = AuditRecord::new(by.actor, "client.registered", client.id.as_str())
        .with("matcher", client.matcher.kind())
        .with("with_secret", secret.is_some());
    if by.offline {
        audit = audit.with("offline", true);
    }
    match store.insert_client(&client, by.now, &audit).await {
        Ok(()) => Ok((client, secret)),
        Err(StoreError::Conflict(_)) => Err(RegisterError::Taken {
            id: client.id.to_string(),
            kind: client.matcher.kind(),
            value: client.matcher.value(),
        }),
        Err(e) => Err(RegisterError::Store(e)),
    }
}

/// When the store refuses a client `id` serving `serves` as a conflict, it says only that
/// something is taken: if one of those audiences is another client's, that is the reason,
/// named here; `None` when none is (its id, certificate matcher or a pin is taken then).
pub async fn served_elsewhere(store: &dyn Store, id: &str, serves: &[String]) -> Option<String> {
    if serves.is_empty() {
        return None;
    }
    let clients = match store.clients().await {
        Ok(clients) => clients,
        Err(e) => {
            tracing::warn!(error = %e, "reading the clients to explain a conflict failed");
            return None;
        }
    };
    serves.iter().find_map(|audience| {
        let other = clients
            .iter()
            .find(|c| c.id.as_str() != id && c.exchange.serves.contains(audience))?;
        Some(served_by_another(audience, other.id.as_str()))
    })
}

/// The refusal of an audience another client serves, named like a draft's field.
fn served_by_another(audience: &str, other: &str) -> String {
    let cut: String = audience.chars().take(140).collect();
    let ellipsis = if cut.len() < audience.len() {
        "…"
    } else {
        ""
    };
    format!(
        "serves `{cut}{ellipsis}`, which client {other} already serves: an audience is served by one client only; remove it from this client's serves or from {other}'s"
    )
}
