//! Grant types: how an authenticated request becomes what policy grants ([`Grant`]). Each
//! grant type decides scopes, audiences and lifetime its own way; minting and signing the
//! token is the same for all (`token::Issuer::mint`): `client_credentials`, and token
//! exchange (RFC 8693) for down-scoping and delegation. [`SigningChoice`]: which algorithm
//! signs a grant's token, by its audiences.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    client::Client,
    clock::UnixTime,
    crypto::{Algorithm, CertificateThumbprint},
    token::{
        AccessTokenClaims, Actor, ExchangeRefusal, Grant, IssueError, MAX_REQUESTED_VALUES, MayAct,
        RequestedLifetime, TokenRequest, within,
    },
    txn,
};

/// Which algorithm signs a token: the one its audiences take (`[keys] audience_algorithms`,
/// for consumers that accept only, say, RS256), else the default (`keys.algorithm`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SigningChoice {
    /// `keys.algorithm`.
    pub default: Algorithm,
    /// Audiences that take another algorithm.
    pub by_audience: BTreeMap<String, Algorithm>,
}

impl SigningChoice {
    /// The algorithm a token for `audiences` is signed with. Audiences not listed take any
    /// algorithm; listed ones must agree, or the request is refused (`invalid_target`): one
    /// signature cannot suit consumers that each accept only their own algorithm.
    pub fn for_audiences(&self, audiences: &[String]) -> Result<Algorithm, IssueError> {
        let mut chosen: Option<(&str, Algorithm)> = None;
        for audience in audiences {
            let Some(&algorithm) = self.by_audience.get(audience) else {
                continue;
            };
            match chosen {
                Some((first, other)) if other != algorithm => {
                    return Err(IssueError::MixedAlgorithms(
                        first.chars().take(140).collect(),
                        audience.chars().take(140).collect(),
                    ));
                }
                _ => chosen = Some((audience, algorithm)),
            }
        }
        Ok(chosen.map_or(self.default, |(_, algorithm)| algorithm))
    }
}

/// A grant type this issuer supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantType {
    /// RFC 6749 §4.4.
    ClientCredentials,
    /// RFC 8693.
    TokenExchange,
}

impl GrantType {
    /// Every supported grant type, as the metadata lists them.
    pub const ALL: [GrantType; 2] = [GrantType::ClientCredentials, GrantType::TokenExchange];

    /// The `grant_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
        }
    }

    /// The grant type a `grant_type` value names, if supported.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == name)
    }
}

/// At most [`MAX_REQUESTED_VALUES`] scopes and audiences.
fn check_counts(request: &TokenRequest) -> Result<(), IssueError> {
    if request.scopes.len() > MAX_REQUESTED_VALUES {
        return Err(IssueError::TooMany("scopes"));
    }
    if request.audiences.len() > MAX_REQUESTED_VALUES {
        return Err(IssueError::TooMany("audiences"));
    }
    Ok(())
}

/// The lifetime a request asks of `client`: its default when none, else what it asked,
/// clamped to its maximum under `ceiling`; whole seconds, at least one.
fn lifetime(
    client: &Client,
    asked: Option<RequestedLifetime>,
    ceiling: Duration,
) -> Result<Duration, IssueError> {
    let maximum = client.max_lifetime.min(ceiling);
    let lifetime = match asked {
        None => client.default_lifetime.min(maximum),
        // A positive sub-second request is below JWT's one-second resolution.
        Some(RequestedLifetime { seconds, nanos }) if seconds <= 0 || nanos < 0 => {
            return Err(IssueError::Lifetime);
        }
        Some(RequestedLifetime { seconds, .. }) => {
            Duration::from_secs(seconds.unsigned_abs()).min(maximum)
        }
    };
    Ok(Duration::from_secs(lifetime.as_secs().max(1)))
}

/// `client_credentials`: applies the client's policy to a request (SPEC §3): scopes a
/// subset of the allowed ones, audiences allowed (or the default; neither is
/// `invalid_target`), the lifetime clamped to the client's maximum under the global
/// `ceiling`. `may_act`, when asked, is the client the authority found registered to act
/// for this one (`None` when asked and not found: refused).
pub fn client_credentials(
    client: &Client,
    request: &TokenRequest,
    ceiling: Duration,
    may_act: Option<&Client>,
) -> Result<Grant, IssueError> {
    check_counts(request)?;
    let scopes = within(
        &request.scopes,
        &client.scopes,
        &client.default_scopes,
        IssueError::Scope,
    )?;
    let audiences = within(
        &request.audiences,
        &client.audiences,
        &client.default_audiences,
        IssueError::Audience,
    )?;
    if audiences.is_empty() {
        return Err(IssueError::NoAudience);
    }
    let may_act = match (&request.may_act, may_act) {
        (None, _) => None,
        (Some(_), Some(actor)) if actor.exchange.may_act_for(client.id.as_str()) => Some(MayAct {
            sub: actor.id.to_string(),
        }),
        (Some(_), _) => return Err(IssueError::MayAct),
    };
    Ok(Grant {
        scopes,
        audiences,
        lifetime: lifetime(client, request.lifetime, ceiling)?,
        may_act,
        ..Grant::default()
    })
}

pub use crate::token::{ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE};

/// The token type a `*_token_type` value names, if this issuer takes it.
fn token_type(value: &str) -> Option<&'static str> {
    [ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE]
        .into_iter()
        .find(|t| *t == value)
}

/// A token-exchange request (RFC 8693 §2.1). The caller authenticates with its certificate
/// (and secret, if it has one) as for `client_credentials`; `request` carries that, and the
/// scopes, audiences (`audience` and `resource`) and lifetime asked for.
#[derive(Clone, Default)]
pub struct ExchangeRequest {
    /// Authentication and what is asked for.
    pub request: TokenRequest,
    /// The token exchanged.
    pub subject_token: String,
    /// Its type.
    pub subject_token_type: String,
    /// The caller's own token, optional.
    pub actor_token: Option<String>,
    /// Its type (given exactly when `actor_token` is).
    pub actor_token_type: Option<String>,
    /// The type asked for.
    pub requested_token_type: Option<String>,
    /// `request_context` (transaction tokens): a JSON object, as sent.
    pub request_context: Option<String>,
    /// `request_details` (transaction tokens): a JSON object, as sent.
    pub request_details: Option<String>,
}

impl std::fmt::Debug for ExchangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("request", &self.request)
            .field("subject_token_type", &self.subject_token_type)
            .field("actor_token_type", &self.actor_token_type)
            .field("requested_token_type", &self.requested_token_type)
            .field(
                "request_context",
                &self.request_context.as_ref().map(String::len),
            )
            .field(
                "request_details",
                &self.request_details.as_ref().map(String::len),
            )
            .finish_non_exhaustive()
    }
}

impl ExchangeRequest {
    /// The token types checked; the `issued_token_type` of the answer: the one requested,
    /// else an access token.
    pub fn issued_token_type(&self) -> Result<&'static str, IssueError> {
        if self.wants_txn_token() {
            return self.txn_token_types();
        }
        if token_type(&self.subject_token_type).is_none() {
            return Err(IssueError::TokenType(
                "subject_token_type must be urn:ietf:params:oauth:token-type:access_token or urn:ietf:params:oauth:token-type:jwt",
            ));
        }
        match (&self.actor_token, &self.actor_token_type) {
            (Some(_), Some(t)) if token_type(t).is_some() => {}
            (None, None) => {}
            (Some(_), Some(_)) => {
                return Err(IssueError::TokenType(
                    "actor_token_type must be urn:ietf:params:oauth:token-type:access_token or urn:ietf:params:oauth:token-type:jwt",
                ));
            }
            _ => {
                return Err(IssueError::TokenType(
                    "actor_token and actor_token_type are sent together or not at all",
                ));
            }
        }
        match &self.requested_token_type {
            None => Ok(ACCESS_TOKEN_TYPE),
            Some(t) => token_type(t).ok_or(IssueError::TokenType(
                "requested_token_type must be urn:ietf:params:oauth:token-type:access_token, urn:ietf:params:oauth:token-type:jwt or urn:ietf:params:oauth:token-type:txn_token",
            )),
        }
    }

    /// Whether a transaction token is asked for.
    pub fn wants_txn_token(&self) -> bool {
        self.requested_token_type.as_deref() == Some(txn::TXN_TOKEN_TYPE)
    }

    /// A transaction-token request's types: an access token (or JWT), a transaction token to
    /// replace, or a self-signed or unsigned subject (draft §11.2); no actor token.
    fn txn_token_types(&self) -> Result<&'static str, IssueError> {
        let subject = self.subject_token_type.as_str();
        let other = [
            txn::TXN_TOKEN_TYPE,
            txn::SELF_SIGNED_TYPE,
            txn::UNSIGNED_JSON_TYPE,
        ];
        if token_type(subject).is_none() && !other.contains(&subject) {
            return Err(IssueError::TokenType(
                "subject_token_type must be the access_token, jwt, txn_token, self_signed or unsigned_json token type URN",
            ));
        }
        if self.actor_token.is_some() || self.actor_token_type.is_some() {
            return Err(IssueError::TokenType(
                "a transaction token request takes no actor_token",
            ));
        }
        if self.request.may_act.is_some() || self.request.lifetime.is_some() {
            return Err(IssueError::TokenType(
                "a transaction token request takes no may_act or lifetime (it lives txn_tokens.lifetime)",
            ));
        }
        check_counts(&self.request)?;
        Ok(txn::TXN_TOKEN_TYPE)
    }
}

/// What an exchange is decided on, as the authority found it: the authenticated caller and
/// the certificate it presented, the subject token's claims (active), the time and limits.
#[derive(Clone, Copy, Debug)]
pub struct Exchange<'a> {
    /// The client asking.
    pub caller: &'a Client,
    /// The certificate it presented.
    pub thumbprint: &'a CertificateThumbprint,
    /// The subject token's claims.
    pub subject: &'a AccessTokenClaims,
    /// Now.
    pub now: UnixTime,
    /// `tokens.max_lifetime`.
    pub ceiling: Duration,
    /// `tokens.max_exchange_depth`: the most exchanges behind a token.
    pub max_depth: usize,
}

/// What the caller may take from the subject token: audiences and scopes allowed, the
/// audiences and scopes when none are asked for, and who the new token is for and who acts.
struct Allowance {
    audiences: Vec<String>,
    default_audiences: Vec<String>,
    scopes: Vec<String>,
    subject: String,
    act: Option<Actor>,
    may_act: Option<MayAct>,
}

/// Token exchange (RFC 8693). A subject token issued to the caller and bound to the
/// certificate it presents is **down-scoped**: audiences and scopes within its own, the same
/// subject and actors. Any other is **delegated**: it must be for an audience the caller
/// serves, the caller registered to act for its subject, its `may_act` (if any) naming the
/// caller; the new token is for the same subject with the caller added to the actor chain,
/// for audiences the caller may call on another's behalf and scopes within both the subject
/// token's and those it may pass on. Either way it is bound to the caller, never outlives
/// the subject token, and lists the subject token and its ancestors.
pub fn token_exchange(x: &Exchange<'_>, request: &TokenRequest) -> Result<Grant, IssueError> {
    check_counts(request)?;
    if request.may_act.is_some() {
        return Err(IssueError::Exchange(ExchangeRefusal::MayActInExchange));
    }
    let subject = x.subject;
    if subject.ancestors.len() >= x.max_depth {
        return Err(IssueError::Exchange(ExchangeRefusal::TooDeep(
            subject.ancestors.len(),
        )));
    }
    let allowance = if exchangeable(x.caller, x.thumbprint, subject)? {
        down_scoping(subject)
    } else {
        delegation(x.caller, subject)?
    };
    let audiences = within(
        &request.audiences,
        &allowance.audiences,
        &allowance.default_audiences,
        IssueError::ExchangeAudience,
    )?;
    if audiences.is_empty() {
        return Err(IssueError::NoAudience);
    }
    let scopes = within(
        &request.scopes,
        &allowance.scopes,
        &allowance.scopes,
        IssueError::ExchangeScope,
    )?;
    let remaining = subject.exp.since(x.now);
    if remaining.as_secs() == 0 {
        return Err(IssueError::SubjectToken("expires within the second"));
    }
    let mut ancestors = subject.ancestors.clone();
    ancestors.push(subject.as_ancestor());
    Ok(Grant {
        scopes,
        audiences,
        lifetime: lifetime(x.caller, request.lifetime, x.ceiling)?.min(remaining),
        subject: Some(allowance.subject),
        act: allowance.act,
        may_act: allowance.may_act,
        ancestors,
    })
}

/// Whether `caller`, presenting `thumbprint`, may exchange a token with `claims` at all: a
/// token of its own, issued to it and bound to that certificate (`true`: down-scoping), or
/// another's for an audience it serves (`false`: delegation). The authority asks before it
/// looks at the token's standing, so a caller learns nothing of the standing of a token it
/// could not exchange.
pub fn exchangeable(
    caller: &Client,
    thumbprint: &CertificateThumbprint,
    claims: &AccessTokenClaims,
) -> Result<bool, IssueError> {
    let own = issued_to(claims, caller.id.as_str(), thumbprint);
    let serves = || (claims.aud.iter()).any(|a| caller.exchange.serves.iter().any(|s| s == a));
    if own || serves() {
        Ok(own)
    } else {
        Err(IssueError::Exchange(ExchangeRefusal::NotServed))
    }
}

/// Whether the token with `claims` was issued to `client_id` and is bound to the certificate
/// whose thumbprint is `thumbprint`: the caller's own, as it presents it now.
pub fn issued_to(
    claims: &AccessTokenClaims,
    client_id: &str,
    thumbprint: &CertificateThumbprint,
) -> bool {
    claims.client_id == client_id
        && CertificateThumbprint::from_b64url(&claims.cnf.x5t_s256)
            .is_some_and(|bound| bound.ct_eq(thumbprint))
}

/// A token of the caller's own: no broader than it is, its `may_act` kept (dropping it
/// would let more parties act).
fn down_scoping(subject: &AccessTokenClaims) -> Allowance {
    let audiences = subject.aud.to_vec();
    Allowance {
        default_audiences: audiences.clone(),
        audiences,
        scopes: subject.scopes(),
        subject: subject.sub.clone(),
        act: subject.act.clone(),
        may_act: subject.may_act.clone(),
    }
}

/// Another party's token, for an audience the caller serves (`exchangeable` found it so):
/// both policies must allow it, the registration and `may_act`; a subject token with scopes
/// must leave some to pass on.
fn delegation(caller: &Client, subject: &AccessTokenClaims) -> Result<Allowance, IssueError> {
    let policy = &caller.exchange;
    if !policy.may_act_for(&subject.sub) {
        return Err(IssueError::Exchange(ExchangeRefusal::MayNotActFor));
    }
    if subject
        .may_act
        .as_ref()
        .is_some_and(|m| m.sub != caller.id.as_str())
    {
        return Err(IssueError::Exchange(ExchangeRefusal::MayActOther));
    }
    let held = subject.scopes();
    let scopes: Vec<String> = held
        .iter()
        .filter(|s| policy.delegate_scopes.contains(s))
        .cloned()
        .collect();
    // Acting for the subject with none of its scopes would hand on `sub` alone.
    if scopes.is_empty() && !held.is_empty() {
        return Err(IssueError::Exchange(ExchangeRefusal::NoScopeToPassOn));
    }
    let default_audiences = match policy.delegate_audiences.as_slice() {
        [only] => vec![only.clone()],
        _ => Vec::new(),
    };
    Ok(Allowance {
        audiences: policy.delegate_audiences.clone(),
        default_audiences,
        scopes,
        subject: subject.sub.clone(),
        act: Some(Actor {
            sub: caller.id.to_string(),
            act: subject.act.clone().map(Box::new),
        }),
        may_act: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_choose_their_algorithm_and_must_agree() {
        let choice = SigningChoice {
            default: Algorithm::Es256,
            by_audience: [
                ("aws".to_owned(), Algorithm::Rs256),
                ("legacy".to_owned(), Algorithm::Rs256),
                ("pq".to_owned(), Algorithm::MlDsa65),
            ]
            .into(),
        };
        let auds = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            choice.for_audiences(&auds(&["api"])).unwrap(),
            Algorithm::Es256
        );
        assert_eq!(choice.for_audiences(&auds(&[])).unwrap(), Algorithm::Es256);
        assert_eq!(
            choice
                .for_audiences(&auds(&["api", "aws", "legacy"]))
                .unwrap(),
            Algorithm::Rs256
        );
        let mixed = choice
            .for_audiences(&auds(&["aws", "api", "pq"]))
            .unwrap_err();
        assert!(
            matches!(&mixed, IssueError::MixedAlgorithms(a, b) if a == "aws" && b == "pq"),
            "{mixed:?}"
        );
        assert_eq!(mixed.code(), crate::oauth::ErrorCode::InvalidTarget);
    }
    use crate::client::{ClientDraft, IdentityDraft, LifetimeDefaults};

    /// The token lifetimes the test clients fall back on.
    const DEFAULTS: LifetimeDefaults = LifetimeDefaults {
        default: Duration::from_secs(300),
        max: Duration::from_secs(3600),
    };

    fn client() -> Client {
        ClientDraft {
            id: "billing".into(),
            identity: IdentityDraft {
                san_uri: Some("spiffe://x/billing".into()),
                ..IdentityDraft::default()
            },
            scopes: vec!["read".into(), "write".into()],
            default_scopes: Some(vec!["read".into()]),
            audiences: vec!["https://api".into()],
            enabled: true,
            ..ClientDraft::default()
        }
        .build(DEFAULTS)
        .unwrap()
    }

    #[test]
    fn only_supported_grant_types_are_named() {
        assert_eq!(
            GrantType::from_name("client_credentials"),
            Some(GrantType::ClientCredentials)
        );
        assert_eq!(GrantType::from_name("password"), None);
        assert_eq!(GrantType::from_name("CLIENT_CREDENTIALS"), None);
    }

    #[test]
    fn client_credentials_grants_within_the_policy() {
        let ceiling = Duration::from_secs(600);
        let defaults =
            client_credentials(&client(), &TokenRequest::default(), ceiling, None).unwrap();
        assert_eq!(defaults.scopes, ["read"]);
        assert_eq!(defaults.audiences, ["https://api"]);
        assert_eq!(defaults.lifetime, Duration::from_secs(300));
        let asked = TokenRequest {
            scopes: vec!["write".into(), "write".into()],
            lifetime: Some(RequestedLifetime {
                seconds: 7200,
                nanos: 0,
            }),
            ..TokenRequest::default()
        };
        let grant = client_credentials(&client(), &asked, ceiling, None).unwrap();
        assert_eq!(grant.scopes, ["write"], "duplicates collapse");
        assert_eq!(grant.lifetime, ceiling, "clamped to the ceiling");
        let broader = TokenRequest {
            scopes: vec!["admin".into()],
            ..TokenRequest::default()
        };
        assert!(matches!(
            client_credentials(&client(), &broader, ceiling, None),
            Err(IssueError::Scope(_))
        ));
    }

    /// Client `id`, serving `serves`, acting for `act_for`, calling `delegate` on another's
    /// behalf with `pass_on` scopes.
    fn party(
        id: &str,
        serves: &[&str],
        act_for: &[&str],
        delegate: &[&str],
        pass_on: &[&str],
    ) -> Client {
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        ClientDraft {
            id: id.into(),
            identity: IdentityDraft {
                san_uri: Some(format!("spiffe://x/{id}")),
                ..IdentityDraft::default()
            },
            scopes: vec!["read".into(), "write".into()],
            audiences: list(delegate)
                .into_iter()
                .chain(["https://own".to_owned()])
                .collect(),
            default_audiences: Some(vec!["https://own".into()]),
            serves: list(serves),
            act_for: list(act_for),
            delegate_audiences: list(delegate),
            delegate_scopes: list(pass_on),
            enabled: true,
            ..ClientDraft::default()
        }
        .build(DEFAULTS)
        .unwrap()
    }

    fn thumbprint(id: &str) -> CertificateThumbprint {
        CertificateThumbprint::of_der(id.as_bytes())
    }

    /// A token A holds: for `aud`, bound to A's certificate, `scope`, expiring at 1000.
    fn token_of(client: &str, aud: &str, scope: &str) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://issuer".into(),
            sub: client.into(),
            client_id: client.into(),
            aud: crate::token::Audience::One(aud.into()),
            scope: Some(scope.into()),
            iat: UnixTime::from_secs(100),
            nbf: UnixTime::from_secs(100),
            exp: UnixTime::from_secs(1000),
            jti: format!("jti-{client}"),
            cnf: crate::token::Confirmation {
                x5t_s256: thumbprint(client).to_b64url(),
            },
            act: None,
            may_act: None,
            ancestors: Vec::new(),
        }
    }

    fn exchange(
        caller: &Client,
        subject: &AccessTokenClaims,
        request: &TokenRequest,
    ) -> Result<Grant, IssueError> {
        let thumbprint = thumbprint(caller.id.as_str());
        token_exchange(
            &Exchange {
                caller,
                thumbprint: &thumbprint,
                subject,
                now: UnixTime::from_secs(900),
                ceiling: Duration::from_secs(3600),
                max_depth: 2,
            },
            request,
        )
    }

    fn jtis(grant: &Grant) -> Vec<&str> {
        grant.ancestors.iter().map(|a| a.jti.as_str()).collect()
    }

    fn asking(audiences: &[&str], scopes: &[&str]) -> TokenRequest {
        TokenRequest {
            audiences: audiences.iter().map(|s| (*s).to_owned()).collect(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ..TokenRequest::default()
        }
    }

    #[test]
    fn down_scoping_narrows_and_never_broadens() {
        let b = party("b", &[], &[], &[], &[]);
        let mut own = token_of("b", "https://c", "read write");
        own.aud = crate::token::Audience::Many(vec!["https://c".into(), "https://d".into()]);
        let narrower = exchange(&b, &own, &asking(&["https://d"], &["read"])).unwrap();
        assert_eq!(narrower.audiences, ["https://d"]);
        assert_eq!(narrower.scopes, ["read"]);
        assert_eq!(narrower.subject.as_deref(), Some("b"));
        assert_eq!(narrower.act, None);
        assert_eq!(jtis(&narrower), ["jti-b"]);
        assert_eq!(
            narrower.lifetime,
            Duration::from_secs(100),
            "never past the subject's exp"
        );
        let same = exchange(&b, &own, &TokenRequest::default()).unwrap();
        assert_eq!((same.audiences.len(), same.scopes.len()), (2, 2));
        own.may_act = Some(MayAct { sub: "c".into() });
        let kept = exchange(&b, &own, &TokenRequest::default()).unwrap();
        assert_eq!(
            kept.may_act, own.may_act,
            "dropping may_act would broaden it"
        );
        assert!(matches!(
            exchange(&b, &own, &asking(&["https://own"], &[])),
            Err(IssueError::ExchangeAudience(a)) if a == "https://own"
        ));
        assert!(matches!(
            exchange(&b, &own, &asking(&[], &["admin"])),
            Err(IssueError::ExchangeScope(s)) if s == "admin"
        ));
        // A subject token with under a second left gives nothing to grant (now is 900).
        own.exp = UnixTime::from_secs(900);
        assert!(matches!(
            exchange(&b, &own, &TokenRequest::default()),
            Err(IssueError::SubjectToken("expires within the second"))
        ));
    }

    #[test]
    fn delegation_needs_the_served_audience_and_the_registration() {
        let a_token = token_of("a", "https://b", "read write");
        let b = party("b", &["https://b"], &["a"], &["https://c"], &["read"]);
        let grant = exchange(&b, &a_token, &TokenRequest::default()).unwrap();
        assert_eq!(grant.subject.as_deref(), Some("a"));
        assert_eq!(grant.act, Actor::from_chain(&["b".into()]));
        assert_eq!(grant.audiences, ["https://c"], "the one delegate audience");
        assert_eq!(
            grant.scopes,
            ["read"],
            "within both the token's and what b passes on"
        );
        assert_eq!(jtis(&grant), ["jti-a"]);
        assert!(matches!(
            exchange(&b, &a_token, &asking(&[], &["write"])),
            Err(IssueError::ExchangeScope(_))
        ));
        assert!(matches!(
            exchange(&b, &a_token, &asking(&["https://own"], &[])),
            Err(IssueError::ExchangeAudience(_))
        ));
        let not_serving = party(
            "b",
            &["https://elsewhere"],
            &["a"],
            &["https://c"],
            &["read"],
        );
        assert!(matches!(
            exchange(&not_serving, &a_token, &TokenRequest::default()),
            Err(IssueError::Exchange(ExchangeRefusal::NotServed))
        ));
        let not_for_a = party("b", &["https://b"], &["z"], &["https://c"], &["read"]);
        assert!(matches!(
            exchange(&not_for_a, &a_token, &TokenRequest::default()),
            Err(IssueError::Exchange(ExchangeRefusal::MayNotActFor))
        ));
        let anyone = party("b", &["https://b"], &["*"], &["https://c"], &["read"]);
        assert!(exchange(&anyone, &a_token, &TokenRequest::default()).is_ok());
    }

    #[test]
    fn may_act_and_the_registration_must_both_allow() {
        let b = party("b", &["https://b"], &["a"], &["https://c"], &["read"]);
        let mut a_token = token_of("a", "https://b", "read");
        a_token.may_act = Some(MayAct { sub: "b".into() });
        assert!(exchange(&b, &a_token, &TokenRequest::default()).is_ok());
        a_token.may_act = Some(MayAct { sub: "x".into() });
        assert!(matches!(
            exchange(&b, &a_token, &TokenRequest::default()),
            Err(IssueError::Exchange(ExchangeRefusal::MayActOther))
        ));
        // may_act naming b does not stand in for b's registration.
        a_token.may_act = Some(MayAct { sub: "b".into() });
        let unregistered = party("b", &["https://b"], &[], &[], &[]);
        assert!(matches!(
            exchange(&unregistered, &a_token, &TokenRequest::default()),
            Err(IssueError::Exchange(ExchangeRefusal::MayNotActFor))
        ));
        let asking_may_act = TokenRequest {
            may_act: Some("c".into()),
            ..TokenRequest::default()
        };
        assert!(matches!(
            exchange(&b, &a_token, &asking_may_act),
            Err(IssueError::Exchange(ExchangeRefusal::MayActInExchange))
        ));
    }

    #[test]
    fn chains_nest_the_actors_and_stop_at_the_depth() {
        let b = party("b", &["https://b"], &["a"], &["https://c"], &["read"]);
        let c = party("c", &["https://c"], &["a"], &["https://d"], &["read"]);
        let d = party("d", &["https://d"], &["a"], &["https://e"], &["read"]);
        let a_token = token_of("a", "https://b", "read");
        let hop = |caller: &Client, grant: Grant, parent: &AccessTokenClaims| AccessTokenClaims {
            sub: grant.subject.unwrap(),
            client_id: caller.id.to_string(),
            aud: crate::token::Audience::Many(grant.audiences),
            scope: Some(grant.scopes.join(" ")),
            jti: format!("jti-{}", caller.id),
            cnf: crate::token::Confirmation {
                x5t_s256: thumbprint(caller.id.as_str()).to_b64url(),
            },
            act: grant.act,
            ancestors: grant.ancestors,
            ..parent.clone()
        };
        let b_token = hop(
            &b,
            exchange(&b, &a_token, &TokenRequest::default()).unwrap(),
            &a_token,
        );
        let grant = exchange(&c, &b_token, &TokenRequest::default()).unwrap();
        assert_eq!(grant.act, Actor::from_chain(&["c".into(), "b".into()]));
        assert_eq!(grant.subject.as_deref(), Some("a"));
        assert_eq!(jtis(&grant), ["jti-a", "jti-b"]);
        let clients: Vec<&str> = grant
            .ancestors
            .iter()
            .map(|a| a.client_id.as_str())
            .collect();
        assert_eq!(
            clients,
            ["a", "b"],
            "each ancestor names the client it was issued to"
        );
        let c_token = hop(&c, grant, &b_token);
        // C's own, then its subject and the earlier actor (C, acting now, is not named twice).
        assert_eq!(c_token.parties().collect::<Vec<_>>(), ["c", "a", "b"]);
        assert!(matches!(
            exchange(&d, &c_token, &TokenRequest::default()),
            Err(IssueError::Exchange(ExchangeRefusal::TooDeep(2)))
        ));
    }

    #[test]
    fn may_act_at_issuance_needs_the_actor_registered_for_the_client() {
        let a = client();
        let b = party("b", &[], &["billing"], &["https://c"], &[]);
        let stranger = party("x", &[], &["someone-else"], &["https://c"], &[]);
        let asking = TokenRequest {
            may_act: Some("b".into()),
            ..TokenRequest::default()
        };
        let ceiling = Duration::from_secs(600);
        let grant = client_credentials(&a, &asking, ceiling, Some(&b)).unwrap();
        assert_eq!(grant.may_act, Some(MayAct { sub: "b".into() }));
        assert!(matches!(
            client_credentials(&a, &asking, ceiling, Some(&stranger)),
            Err(IssueError::MayAct)
        ));
        assert!(matches!(
            client_credentials(&a, &asking, ceiling, None),
            Err(IssueError::MayAct)
        ));
    }

    #[test]
    fn a_token_of_the_callers_on_another_certificate_is_not_its_own() {
        // Issued to b but bound to another of b's certificates: not down-scoping, so b must
        // serve its audience and be registered to act for its subject (itself).
        let b = party("b", &[], &[], &[], &[]);
        let mut elsewhere = token_of("b", "https://c", "read");
        elsewhere.cnf.x5t_s256 = thumbprint("b's other certificate").to_b64url();
        assert!(matches!(
            exchange(&b, &elsewhere, &TokenRequest::default()),
            Err(IssueError::Exchange(ExchangeRefusal::NotServed))
        ));
        let mut malformed = token_of("b", "https://c", "read");
        malformed.cnf.x5t_s256 = "not a thumbprint".into();
        assert!(matches!(
            exchange(&b, &malformed, &TokenRequest::default()),
            Err(IssueError::Exchange(ExchangeRefusal::NotServed))
        ));
    }

    #[test]
    fn a_delegation_that_would_pass_on_no_scope_is_invalid_scope() {
        let b = party("b", &["https://b"], &["a"], &["https://c"], &["other"]);
        let refused = exchange(
            &b,
            &token_of("a", "https://b", "read write"),
            &TokenRequest::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                refused,
                IssueError::Exchange(ExchangeRefusal::NoScopeToPassOn)
            ),
            "{refused:?}"
        );
        assert_eq!(refused.code(), crate::oauth::ErrorCode::InvalidScope);
        let mut unscoped = token_of("a", "https://b", "");
        unscoped.scope = None;
        let grant = exchange(&b, &unscoped, &TokenRequest::default()).unwrap();
        assert!(grant.scopes.is_empty(), "nothing held, nothing to pass on");
    }
}
