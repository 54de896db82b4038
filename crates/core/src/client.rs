//! Registered clients: who may ask for tokens, how a certificate proves it is them, and the
//! policy (scopes, audiences, lifetimes, permissions) their tokens are granted under.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use crate::{
    crypto::{CertificateThumbprint, SecretHasher},
    identity::{CertificateIdentity, CertificateMatcher, MatcherKey},
};

/// What a client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Get tokens for itself.
    Issue,
    /// Introspect tokens for its `introspect_audiences`.
    Introspect,
    /// Everything, including administration.
    Admin,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 3] = [Permission::Issue, Permission::Introspect, Permission::Admin];

    /// The configured name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Issue => "issue",
            Permission::Introspect => "introspect",
            Permission::Admin => "admin",
        }
    }

    /// Parses a configured name.
    pub fn try_from_name(name: &str) -> Option<Self> {
        Some(match name {
            "issue" => Permission::Issue,
            "introspect" => Permission::Introspect,
            "admin" => Permission::Admin,
            _ => return None,
        })
    }
}

/// A name that is not a permission's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not one of issue, introspect, admin")]
pub struct UnknownPermission(pub String);

impl std::str::FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from_name(s).ok_or_else(|| UnknownPermission(s.to_owned()))
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client definition is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// The id is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    #[error("client id {0:?} must be 1–128 characters of A–Z, a–z, 0–9, '.', '_', ':' or '-'")]
    InvalidId(String),
    /// A scope is not an RFC 6749 scope-token.
    #[error("scope {0:?} must be 1–128 printable ASCII characters without spaces, '\"' or '\\'")]
    InvalidScope(String),
    /// An audience is empty, too long or has whitespace.
    #[error("audience {0:?} must be 1–512 characters without whitespace")]
    InvalidAudience(String),
    /// A default is not among the allowed values.
    #[error("default {what} {value:?} is not among the client's allowed {what}s")]
    DefaultNotAllowed {
        /// "scope" or "audience".
        what: &'static str,
        /// The value.
        value: String,
    },
    /// Lifetimes are zero, not whole seconds, or the default exceeds the maximum.
    #[error(
        "lifetimes must be positive whole seconds and default_lifetime ({default:?}) at most max_lifetime ({max:?})"
    )]
    Lifetimes {
        /// The default.
        default: Duration,
        /// The maximum.
        max: Duration,
    },
    /// Two clients claim the same certificate matcher.
    #[error(
        "clients {first} and {second} both claim {kind} {value:?}: certificate matchers must be unique"
    )]
    DuplicateMatcher {
        /// One client.
        first: String,
        /// The other.
        second: String,
        /// The matcher kind.
        kind: &'static str,
        /// The matcher value.
        value: String,
    },
    /// Two clients share an id.
    #[error("client id {0} is registered twice")]
    DuplicateId(String),
    /// A client's `max_lifetime` is above the global ceiling.
    #[error("max_lifetime ({max:?}) is above tokens.max_lifetime ({ceiling:?})")]
    AboveCeiling {
        /// The client's maximum.
        max: Duration,
        /// `tokens.max_lifetime`.
        ceiling: Duration,
    },
}

/// A client as an operator describes it (`tokenmint client add`, `RegisterClient`,
/// `UpdateClient`); [`ClientDraft::build`] fills in what is left out.
#[derive(Clone, Debug)]
pub struct ClientDraft {
    /// Its id.
    pub id: String,
    /// How its certificate is recognised.
    pub matcher: CertificateMatcher,
    /// Scopes it may ask for.
    pub scopes: Vec<String>,
    /// Empty: every allowed scope.
    pub default_scopes: Vec<String>,
    /// Audiences it may ask for.
    pub audiences: Vec<String>,
    /// Empty: the only audience, if there is exactly one.
    pub default_audiences: Vec<String>,
    /// Audiences whose tokens it may introspect.
    pub introspect_audiences: Vec<String>,
    /// Empty: `issue`.
    pub permissions: Vec<Permission>,
    /// `None`: `tokens.default_lifetime` (at most the client's maximum).
    pub default_lifetime: Option<Duration>,
    /// `None`: `tokens.max_lifetime`, which is also its ceiling.
    pub max_lifetime: Option<Duration>,
    /// Whether it starts enabled.
    pub enabled: bool,
}

impl ClientDraft {
    /// The client, with the defaults applied and every client rule checked; `default_lifetime`
    /// and `ceiling` are `tokens.default_lifetime` and `tokens.max_lifetime`.
    pub fn build(
        self,
        default_lifetime: Duration,
        ceiling: Duration,
    ) -> Result<Client, ClientError> {
        let max_lifetime = self.max_lifetime.unwrap_or(ceiling);
        if max_lifetime > ceiling {
            return Err(ClientError::AboveCeiling {
                max: max_lifetime,
                ceiling,
            });
        }
        let default_audiences = if self.default_audiences.is_empty() && self.audiences.len() == 1 {
            self.audiences.clone()
        } else {
            self.default_audiences
        };
        let default_scopes = if self.default_scopes.is_empty() {
            self.scopes.clone()
        } else {
            self.default_scopes
        };
        let permissions = if self.permissions.is_empty() {
            vec![Permission::Issue]
        } else {
            self.permissions
        };
        let client = Client {
            id: ClientId::try_new(&self.id)?,
            matcher: self.matcher,
            scopes: self.scopes,
            default_scopes,
            audiences: self.audiences,
            default_audiences,
            introspect_audiences: self.introspect_audiences,
            permissions,
            default_lifetime: self
                .default_lifetime
                .unwrap_or(default_lifetime)
                .min(max_lifetime),
            max_lifetime,
            enabled: self.enabled,
            secret_hash: None,
        };
        client.validate()?;
        Ok(client)
    }
}

/// A client id: 1–128 characters of `[A-Za-z0-9._:-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

impl ClientId {
    /// Checks and wraps an id.
    pub fn try_new(id: &str) -> Result<Self, ClientError> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(ClientError::InvalidId(id.chars().take(140).collect()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Lookups by `&str` allocate nothing; the derived `Hash`/`Eq` match `str`'s, as `Borrow`
// requires.
impl std::borrow::Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({})", self.0)
    }
}

/// RFC 6749 §3.3 scope-token: `%x21 / %x23-5B / %x5D-7E`, here at most 128 characters.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= 128
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// An audience value: 1–512 characters, no whitespace or control characters.
pub fn is_audience(audience: &str) -> bool {
    !audience.is_empty()
        && audience.len() <= 512
        && !audience
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
}

/// A registered client and its policy.
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    /// Its id (the token's `sub` and `client_id`).
    pub id: ClientId,
    /// How its certificate is recognised.
    pub matcher: CertificateMatcher,
    /// Scopes it may ask for.
    pub scopes: Vec<String>,
    /// Scopes granted when it asks for none.
    pub default_scopes: Vec<String>,
    /// Audiences it may ask for.
    pub audiences: Vec<String>,
    /// Audiences granted when it asks for none.
    pub default_audiences: Vec<String>,
    /// Audiences whose tokens it may introspect (with the `introspect` permission).
    pub introspect_audiences: Vec<String>,
    /// What it may do.
    pub permissions: Vec<Permission>,
    /// Lifetime granted when it asks for none.
    pub default_lifetime: Duration,
    /// The most it is granted (itself under the global ceiling).
    pub max_lifetime: Duration,
    /// A disabled client gets `invalid_client`.
    pub enabled: bool,
    /// HMAC-SHA-256 of its secret under the pepper, if it has one.
    pub secret_hash: Option<Vec<u8>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("matcher", &self.matcher)
            .field("scopes", &self.scopes)
            .field("audiences", &self.audiences)
            .field("introspect_audiences", &self.introspect_audiences)
            .field("permissions", &self.permissions)
            .field("enabled", &self.enabled)
            .field("has_secret", &self.secret_hash.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Checks the policy's own consistency (values well-formed, defaults allowed, lifetimes).
    pub fn validate(&self) -> Result<(), ClientError> {
        for scope in self.scopes.iter().chain(&self.default_scopes) {
            if !is_scope_token(scope) {
                return Err(ClientError::InvalidScope(scope.clone()));
            }
        }
        for audience in self
            .audiences
            .iter()
            .chain(&self.default_audiences)
            .chain(&self.introspect_audiences)
        {
            if !is_audience(audience) {
                return Err(ClientError::InvalidAudience(audience.clone()));
            }
        }
        if let Some(s) = self
            .default_scopes
            .iter()
            .find(|s| !self.scopes.contains(s))
        {
            return Err(ClientError::DefaultNotAllowed {
                what: "scope",
                value: s.clone(),
            });
        }
        if let Some(a) = self
            .default_audiences
            .iter()
            .find(|a| !self.audiences.contains(a))
        {
            return Err(ClientError::DefaultNotAllowed {
                what: "audience",
                value: a.clone(),
            });
        }
        if self.default_lifetime.is_zero()
            || self.max_lifetime.is_zero()
            || self.default_lifetime.subsec_nanos() != 0
            || self.max_lifetime.subsec_nanos() != 0
            || self.default_lifetime > self.max_lifetime
        {
            return Err(ClientError::Lifetimes {
                default: self.default_lifetime,
                max: self.max_lifetime,
            });
        }
        Ok(())
    }

    /// The same client without the `admin` permission (on a listener that serves no admin
    /// plane).
    pub fn without_admin(&self) -> Self {
        let mut client = self.clone();
        client.permissions.retain(|p| *p != Permission::Admin);
        client
    }

    /// Whether it holds `permission` (admin implies every permission).
    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission) || self.permissions.contains(&Permission::Admin)
    }
}

/// How TLS verified the peer's certificate; decided once per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// The certificate chains to a configured client CA.
    CaChain,
    /// The certificate's thumbprint is pinned by a `self_signed_tls_client_auth` client; only
    /// that client's pin matches it, whatever names it carries.
    Pinned,
}

/// The client certificate of a connection, as the core sees it.
#[derive(Clone, Debug)]
pub struct PeerCertificate {
    /// What the certificate names.
    pub identity: CertificateIdentity,
    /// SHA-256 of its DER (the token's `cnf.x5t#S256`).
    pub thumbprint: CertificateThumbprint,
    /// How it was verified.
    pub verification: Verification,
    /// Whether the connection may use the `admin` permission: false on the data-plane
    /// listener when a separate admin listener serves the admin plane.
    pub admin_allowed: bool,
}

/// Why a peer is not accepted as a client. The detail is for the log only.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No certificate was presented.
    #[error("no client certificate was presented")]
    NoCertificate,
    /// No registered client claims the certificate.
    #[error("the certificate matches no registered client")]
    UnknownCertificate,
    /// More than one client claims the certificate: its SANs and subject match different
    /// clients' matchers (each matcher is unique, but one certificate can carry several names).
    #[error("the certificate matches several clients ({0}); name one with client_id")]
    Ambiguous(String),
    /// The named client does not exist.
    #[error("client {0} is not registered")]
    UnknownClient(String),
    /// The named client does not claim this certificate.
    #[error("the certificate does not belong to client {0}")]
    CertificateMismatch(String),
    /// The client is disabled.
    #[error("client {0} is disabled")]
    Disabled(String),
    /// The client has a secret and the request did not carry the right one.
    #[error("client {0} requires its secret and the one given is missing or wrong")]
    BadSecret(String),
    /// The request carried a secret for a client that has none.
    #[error("client {0} has no secret; send none")]
    UnexpectedSecret(String),
}

/// Every registered client, indexed by id, by name matcher and by pinned thumbprint.
/// Immutable: changes build a new one.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    by_id: HashMap<ClientId, Arc<Client>>,
    by_matcher: HashMap<MatcherKey, ClientId>,
    by_pin: HashMap<CertificateThumbprint, ClientId>,
}

impl ClientRegistry {
    /// Indexes `clients`, refusing duplicate ids and duplicate matchers.
    pub fn try_new(clients: impl IntoIterator<Item = Client>) -> Result<Self, ClientError> {
        let mut registry = Self::default();
        for client in clients {
            if registry.by_id.contains_key(&client.id) {
                return Err(ClientError::DuplicateId(client.id.to_string()));
            }
            let duplicate = |first: &ClientId, kind, value| ClientError::DuplicateMatcher {
                first: first.to_string(),
                second: client.id.to_string(),
                kind,
                value,
            };
            if let Some(key) = client.matcher.key() {
                if let Some(first) = registry.by_matcher.get(&key) {
                    return Err(duplicate(first, key.kind(), key.value().to_owned()));
                }
                registry.by_matcher.insert(key, client.id.clone());
            }
            for pin in client.matcher.pins() {
                if let Some(first) = registry.by_pin.get(pin) {
                    return Err(duplicate(first, client.matcher.kind(), pin.to_b64url()));
                }
                registry.by_pin.insert(*pin, client.id.clone());
            }
            registry.by_id.insert(client.id.clone(), Arc::new(client));
        }
        Ok(registry)
    }

    /// The client with this id.
    pub fn find(&self, id: &str) -> Option<&Arc<Client>> {
        self.by_id.get(id)
    }

    /// Every client, ordered by id.
    pub fn clients(&self) -> Vec<Arc<Client>> {
        let mut all: Vec<_> = self.by_id.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// The enabled client `peer`'s certificate belongs to (no `client_id`, no secret).
    pub fn identify(&self, peer: Option<&PeerCertificate>) -> Result<Arc<Client>, AuthError> {
        let peer = peer.ok_or(AuthError::NoCertificate)?;
        let client = self.claimant(peer)?;
        if !client.enabled {
            return Err(AuthError::Disabled(client.id.to_string()));
        }
        Ok(client.clone())
    }

    /// Whether some client (enabled or not) pins this certificate thumbprint.
    pub fn is_pinned(&self, thumbprint: &CertificateThumbprint) -> bool {
        self.by_pin.contains_key(thumbprint)
    }

    fn claimant(&self, peer: &PeerCertificate) -> Result<&Arc<Client>, AuthError> {
        if peer.verification == Verification::Pinned {
            // A thumbprint is pinned by one client at most (try_new refuses duplicates).
            return self
                .by_pin
                .get(&peer.thumbprint)
                .and_then(|id| self.by_id.get(id))
                .ok_or(AuthError::UnknownCertificate);
        }
        let mut found = peer
            .identity
            .lookup_keys()
            .into_iter()
            .filter_map(|key| self.by_matcher.get(&key))
            .filter_map(|id| self.by_id.get(id))
            .filter(|client| self.claims(client, peer))
            .collect::<Vec<_>>();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.dedup_by(|a, b| a.id == b.id);
        match found.as_slice() {
            [] => Err(AuthError::UnknownCertificate),
            [one] => Ok(*one),
            many => {
                let ids = many.iter().map(|c| c.id.as_str()).collect::<Vec<_>>();
                Err(AuthError::Ambiguous(ids.join(", ")))
            }
        }
    }

    /// Finds the client a certificate belongs to. With `client_id`, the certificate must
    /// belong to that client; without, it must match exactly one. Disabled clients and wrong
    /// or missing secrets are refused.
    pub fn authenticate(
        &self,
        peer: Option<&PeerCertificate>,
        client_id: Option<&str>,
        secret: Option<&str>,
        hasher: &SecretHasher,
    ) -> Result<Arc<Client>, AuthError> {
        let peer = peer.ok_or(AuthError::NoCertificate)?;
        let client = match client_id {
            Some(id) => {
                let client = self
                    .find(id)
                    .ok_or_else(|| AuthError::UnknownClient(id.chars().take(140).collect()))?;
                if !self.claims(client, peer) {
                    return Err(AuthError::CertificateMismatch(client.id.to_string()));
                }
                client
            }
            None => self.claimant(peer)?,
        };
        if !client.enabled {
            return Err(AuthError::Disabled(client.id.to_string()));
        }
        match (&client.secret_hash, secret) {
            (None, None) => {}
            (None, Some(_)) => return Err(AuthError::UnexpectedSecret(client.id.to_string())),
            (Some(stored), Some(given)) if hasher.verify(given, stored) => {}
            (Some(_), _) => return Err(AuthError::BadSecret(client.id.to_string())),
        }
        Ok(client.clone())
    }

    /// Whether `client`'s matcher claims `peer`, given how TLS verified it: CA-chain matchers
    /// (SAN URI, SAN DNS, subject DN) only ever match CA-verified peers, pins only ever match
    /// pinned peers.
    fn claims(&self, client: &Client, peer: &PeerCertificate) -> bool {
        match (peer.verification, &client.matcher) {
            (Verification::CaChain, CertificateMatcher::Pinned(_)) => false,
            (Verification::CaChain, matcher) => matcher.matches(&peer.identity),
            (Verification::Pinned, CertificateMatcher::Pinned(pins)) => {
                pins.contains(&peer.thumbprint)
            }
            (Verification::Pinned, _) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> ClientDraft {
        ClientDraft {
            id: "billing".into(),
            matcher: CertificateMatcher::try_san_uri("spiffe://x/billing").unwrap(),
            scopes: vec!["a".into(), "b".into()],
            default_scopes: vec![],
            audiences: vec!["https://api.example".into()],
            default_audiences: vec![],
            introspect_audiences: vec![],
            permissions: vec![],
            default_lifetime: None,
            max_lifetime: None,
            enabled: true,
        }
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_draft_takes_the_defaults_an_operator_left_out() {
        let client = draft().build(FIVE_MIN, HOUR).unwrap();
        assert_eq!(client.default_scopes, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(
            client.default_audiences,
            vec!["https://api.example".to_owned()]
        );
        assert_eq!(client.permissions, vec![Permission::Issue]);
        assert_eq!(
            (client.default_lifetime, client.max_lifetime),
            (FIVE_MIN, HOUR)
        );
        assert!(client.secret_hash.is_none());
        // Two audiences: no default is guessed; a short maximum caps the default lifetime.
        let mut two = draft();
        two.audiences.push("https://other.example".into());
        two.max_lifetime = Some(Duration::from_secs(60));
        let client = two.build(FIVE_MIN, HOUR).unwrap();
        assert!(client.default_audiences.is_empty());
        assert_eq!(client.default_lifetime, Duration::from_secs(60));
    }

    #[test]
    fn a_draft_above_the_ceiling_or_with_a_bad_id_is_refused() {
        let mut long = draft();
        long.max_lifetime = Some(2 * HOUR);
        assert!(matches!(
            long.build(FIVE_MIN, HOUR),
            Err(ClientError::AboveCeiling { .. })
        ));
        let mut bad = draft();
        bad.id = "no spaces".into();
        assert!(matches!(
            bad.build(FIVE_MIN, HOUR),
            Err(ClientError::InvalidId(_))
        ));
    }
}
