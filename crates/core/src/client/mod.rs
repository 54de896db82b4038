//! Registered clients: who may ask for tokens, how a certificate proves it is them, and the
//! policy (scopes, audiences, lifetimes, permissions) their tokens are granted under.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

mod draft;

pub use draft::{
    ClientDraft, DraftError, DraftField, IdentityDraft, LifetimeDefaults, MAX_AUDIENCE_LEN,
    MAX_CLIENT_ID_LEN, MAX_SCOPE_LEN,
};

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
    /// Two clients say they serve the same audience.
    #[error(
        "clients {first} and {second} both serve {audience:?}: an audience is served by one client"
    )]
    DuplicateServes {
        /// One client.
        first: String,
        /// The other.
        second: String,
        /// The audience.
        audience: String,
    },
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

/// An audience value: 1–[`MAX_AUDIENCE_LEN`] characters, no whitespace or control characters.
pub fn is_audience(audience: &str) -> bool {
    !audience.is_empty()
        && audience.chars().count() <= MAX_AUDIENCE_LEN
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
    /// Who it is in a call chain, and whom it may act for (token exchange).
    pub exchange: ExchangePolicy,
}

/// A client's place in call chains (RFC 8693 token exchange): the audiences it *is*, and
/// whom it may act for, calling which audiences with which scopes. Empty: none of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangePolicy {
    /// The audiences this client serves, unique across clients: it may exchange a token
    /// whose `aud` names one of them.
    pub serves: Vec<String>,
    /// The client ids it may act for (`*`: any), as the actor of a delegated token.
    pub act_for: Vec<String>,
    /// The audiences it may call on another's behalf (a subset of its `audiences`).
    pub delegate_audiences: Vec<String>,
    /// The scopes it may pass on when acting for another.
    pub delegate_scopes: Vec<String>,
    /// Whether it may name a transaction token's subject itself, in a self-signed JWT or an
    /// unsigned JSON object (an edge gateway that authenticated a caller tokenmint never
    /// saw); never by default.
    pub asserts_txn_subjects: bool,
}

impl ExchangePolicy {
    /// Whether this client may act for `subject`.
    pub fn may_act_for(&self, subject: &str) -> bool {
        self.act_for.iter().any(|s| s == "*" || s == subject)
    }
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
            .field("exchange", &self.exchange)
            .field("enabled", &self.enabled)
            .field("has_secret", &self.secret_hash.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
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

/// A client that proved who it is: the registered client and the certificate it proved it
/// with (what its tokens are bound to).
#[derive(Clone, Debug)]
pub struct Authenticated<'a> {
    /// The client.
    pub client: Arc<Client>,
    /// Its certificate (borrowed from the connection: nothing is copied per request).
    pub peer: &'a PeerCertificate,
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
    by_serves: HashMap<String, ClientId>,
}

impl ClientRegistry {
    /// Indexes `clients`, refusing duplicate ids, matchers and served audiences.
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
            for audience in &client.exchange.serves {
                if let Some(first) = registry.by_serves.get(audience) {
                    return Err(ClientError::DuplicateServes {
                        first: first.to_string(),
                        second: client.id.to_string(),
                        audience: audience.clone(),
                    });
                }
                registry
                    .by_serves
                    .insert(audience.clone(), client.id.clone());
            }
            registry.by_id.insert(client.id.clone(), Arc::new(client));
        }
        Ok(registry)
    }

    /// The client with this id.
    pub fn find(&self, id: &str) -> Option<&Arc<Client>> {
        self.by_id.get(id)
    }

    /// The client that serves `audience`, if one does.
    pub fn serving(&self, audience: &str) -> Option<&Arc<Client>> {
        self.by_serves
            .get(audience)
            .and_then(|id| self.by_id.get(id))
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
    pub fn authenticate<'a>(
        &self,
        peer: Option<&'a PeerCertificate>,
        client_id: Option<&str>,
        secret: Option<&str>,
        hasher: &SecretHasher,
    ) -> Result<Authenticated<'a>, AuthError> {
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
        Ok(Authenticated {
            client: client.clone(),
            peer,
        })
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
            identity: IdentityDraft {
                san_uri: Some("spiffe://x/billing".into()),
                ..IdentityDraft::default()
            },
            scopes: vec!["a".into(), "b".into()],
            audiences: vec!["https://api.example".into()],
            enabled: true,
            ..ClientDraft::default()
        }
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);
    const HOUR: Duration = Duration::from_secs(3600);
    const DEFAULTS: LifetimeDefaults = LifetimeDefaults {
        default: FIVE_MIN,
        max: HOUR,
    };

    fn refusal(draft: ClientDraft) -> DraftError {
        draft.build(DEFAULTS).unwrap_err()
    }

    #[test]
    fn a_draft_takes_the_defaults_an_operator_left_out() {
        let client = draft().build(DEFAULTS).unwrap();
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
        // Two audiences: no default is guessed; a short maximum caps the default lifetime
        // that was left out.
        let mut two = draft();
        two.audiences.push("https://other.example".into());
        two.max_lifetime = Some(Duration::from_secs(60));
        let client = two.build(DEFAULTS).unwrap();
        assert!(client.default_audiences.is_empty());
        assert_eq!(client.default_lifetime, Duration::from_secs(60));
        // Defaults given as empty lists mean none.
        let mut none = draft();
        none.default_scopes = Some(vec![]);
        none.default_audiences = Some(vec![]);
        let client = none.build(DEFAULTS).unwrap();
        assert!(client.default_scopes.is_empty() && client.default_audiences.is_empty());
    }

    #[test]
    fn a_client_says_which_audiences_it_serves_and_whom_it_may_act_for() {
        let mut d = draft();
        d.serves = vec!["https://billing.internal".into()];
        d.act_for = vec!["web".into()];
        d.delegate_audiences = vec!["https://api.example".into()];
        d.delegate_scopes = vec!["a".into(), "ledger:read".into()];
        let client = d.build(DEFAULTS).unwrap();
        assert_eq!(client.exchange.serves, ["https://billing.internal"]);
        assert!(client.exchange.may_act_for("web"));
        assert!(!client.exchange.may_act_for("mobile"));
        let mut any = draft();
        any.act_for = vec!["*".into()];
        any.delegate_audiences = vec!["https://api.example".into()];
        assert!(any.build(DEFAULTS).unwrap().exchange.may_act_for("mobile"));
        // None of it by default.
        assert_eq!(
            draft().build(DEFAULTS).unwrap().exchange,
            ExchangePolicy::default()
        );
    }

    #[test]
    fn delegation_is_refused_half_set_or_beyond_the_clients_audiences() {
        let with = |f: fn(&mut ClientDraft)| {
            let mut d = draft();
            f(&mut d);
            refusal(d)
        };
        let e = with(|d| {
            d.act_for = vec!["web".into()];
            d.delegate_audiences = vec!["https://elsewhere.example".into()];
        });
        assert_eq!(e.field, DraftField::DelegateAudiences);
        assert!(e.to_string().contains("not in audiences"), "{e}");
        let e = with(|d| d.act_for = vec!["web".into()]);
        assert_eq!(e.field, DraftField::DelegateAudiences);
        assert!(e.to_string().contains("act_for is set"), "{e}");
        let e = with(|d| d.delegate_audiences = vec!["https://api.example".into()]);
        assert_eq!(e.field, DraftField::ActFor);
        let e = with(|d| d.delegate_scopes = vec!["a".into()]);
        assert_eq!(e.field, DraftField::ActFor);
        let e = with(|d| {
            d.act_for = vec!["not a client".into()];
            d.delegate_audiences = vec!["https://api.example".into()];
        });
        assert_eq!(e.field, DraftField::ActFor);
        let e = with(|d| d.serves = vec!["has space".into()]);
        assert_eq!(e.field, DraftField::Serves);
        let e = with(|d| d.serves = vec!["https://x".into(), "https://x".into()]);
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn an_audience_is_served_by_one_client() {
        let mut a = draft();
        a.serves = vec!["https://billing.internal".into()];
        let mut b = draft();
        b.id = "ledger".into();
        b.identity.san_uri = Some("spiffe://x/ledger".into());
        b.serves = vec!["https://ledger.internal".into()];
        let (a, b) = (a.build(DEFAULTS).unwrap(), b.build(DEFAULTS).unwrap());
        let registry = ClientRegistry::try_new([a.clone(), b.clone()]).unwrap();
        assert_eq!(
            registry
                .serving("https://ledger.internal")
                .map(|c| c.id.as_str()),
            Some("ledger")
        );
        assert!(registry.serving("https://nobody.internal").is_none());
        let mut both = b;
        both.exchange.serves.push("https://billing.internal".into());
        let e = ClientRegistry::try_new([a, both]).unwrap_err();
        assert!(
            matches!(&e, ClientError::DuplicateServes { audience, .. } if audience == "https://billing.internal"),
            "{e}"
        );
    }

    #[test]
    fn a_default_lifetime_given_above_the_maximum_is_refused_not_lowered() {
        let mut d = draft();
        d.max_lifetime = Some(Duration::from_secs(60));
        d.default_lifetime = Some(Duration::from_secs(600));
        let e = refusal(d);
        assert_eq!(e.field, DraftField::DefaultLifetime);
        assert!(
            e.to_string().contains("10m") && e.to_string().contains("1m"),
            "{e}"
        );
    }

    #[test]
    fn lifetimes_are_positive_whole_seconds_under_the_ceiling() {
        for (default, max, field) in [
            (Some(Duration::ZERO), None, DraftField::DefaultLifetime),
            (
                Some(Duration::from_millis(1500)),
                None,
                DraftField::DefaultLifetime,
            ),
            (None, Some(Duration::ZERO), DraftField::MaxLifetime),
            (None, Some(2 * HOUR), DraftField::MaxLifetime),
        ] {
            let mut d = draft();
            d.default_lifetime = default;
            d.max_lifetime = max;
            assert_eq!(refusal(d).field, field, "{default:?} {max:?}");
        }
    }

    #[test]
    fn an_audience_is_counted_in_characters() {
        // 512 two-byte characters: 1024 bytes, within the rule.
        let mut d = draft();
        d.audiences = vec!["é".repeat(MAX_AUDIENCE_LEN)];
        assert!(d.build(DEFAULTS).is_ok());
        let mut d = draft();
        d.audiences = vec!["é".repeat(MAX_AUDIENCE_LEN + 1)];
        let e = refusal(d);
        assert_eq!(e.field, DraftField::Audiences);
        assert!(e.problem.contains("too long"), "{e}");
    }

    #[test]
    fn each_bad_field_is_named() {
        type Case = (fn(&mut ClientDraft), DraftField, &'static str);
        let cases: [Case; 12] = [
            (|d| d.id = "no spaces".into(), DraftField::Id, "not allowed"),
            (|d| d.id = "x".repeat(129), DraftField::Id, "too long"),
            (|d| d.id = String::new(), DraftField::Id, "empty"),
            (
                |d| d.identity = IdentityDraft::default(),
                DraftField::Client,
                "no identity",
            ),
            (
                |d| d.identity.san_dns = Some("a.example".into()),
                DraftField::Client,
                "san_uri and san_dns",
            ),
            (
                |d| d.identity.san_uri = Some(" ".into()),
                DraftField::SanUri,
                "empty",
            ),
            (|d| d.scopes.push("a b".into()), DraftField::Scopes, "`a b`"),
            (|d| d.scopes.push("a".into()), DraftField::Scopes, "twice"),
            (
                |d| d.default_scopes = Some(vec!["c".into()]),
                DraftField::DefaultScopes,
                "not in scopes",
            ),
            (
                |d| d.default_audiences = Some(vec!["https://x".into()]),
                DraftField::DefaultAudiences,
                "not in audiences",
            ),
            (
                |d| d.permissions = Some(vec!["root".into()]),
                DraftField::Permissions,
                "issue, introspect, admin",
            ),
            (
                |d| d.permissions = Some(vec!["issue".into(), "issue".into()]),
                DraftField::Permissions,
                "twice",
            ),
        ];
        for (change, field, words) in cases {
            let mut d = draft();
            change(&mut d);
            let e = refusal(d);
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().contains(words), "{e} lacks {words}");
        }
    }
}
