//! Grant types: how an authenticated request becomes what policy grants ([`Grant`]). Each
//! grant type decides scopes, audiences and lifetime its own way; minting and signing the
//! token is the same for all (`token::Issuer::mint`). `client_credentials` is the one there is
//! today; token exchange sits beside it. [`SigningChoice`]: which algorithm signs a grant's
//! token, by its audiences.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use crate::{
    client::Client,
    crypto::Algorithm,
    token::{Grant, IssueError, MAX_REQUESTED_VALUES, RequestedLifetime, TokenRequest},
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
}

impl GrantType {
    /// Every supported grant type, as the metadata lists them.
    pub const ALL: [GrantType; 1] = [GrantType::ClientCredentials];

    /// The `grant_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
        }
    }

    /// The grant type a `grant_type` value names, if supported.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == name)
    }
}

fn dedup(values: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .iter()
        .filter(|v| seen.insert(v.as_str()))
        .cloned()
        .collect()
}

/// `client_credentials`: applies the client's policy to a request (SPEC §3): scopes a subset of the allowed ones,
/// audiences allowed (or the default; neither is `invalid_target`), the lifetime clamped to
/// the client's maximum under the global `ceiling`.
pub fn client_credentials(
    client: &Client,
    request: &TokenRequest,
    ceiling: Duration,
) -> Result<Grant, IssueError> {
    if request.scopes.len() > MAX_REQUESTED_VALUES {
        return Err(IssueError::TooMany("scopes"));
    }
    if request.audiences.len() > MAX_REQUESTED_VALUES {
        return Err(IssueError::TooMany("audiences"));
    }
    let scopes = if request.scopes.is_empty() {
        client.default_scopes.clone()
    } else {
        let requested = dedup(&request.scopes);
        if let Some(bad) = requested.iter().find(|s| !client.scopes.contains(s)) {
            return Err(IssueError::Scope(bad.chars().take(140).collect()));
        }
        requested
    };
    let audiences = if request.audiences.is_empty() {
        client.default_audiences.clone()
    } else {
        let requested = dedup(&request.audiences);
        if let Some(bad) = requested.iter().find(|a| !client.audiences.contains(a)) {
            return Err(IssueError::Audience(bad.chars().take(140).collect()));
        }
        requested
    };
    if audiences.is_empty() {
        return Err(IssueError::NoAudience);
    }
    let maximum = client.max_lifetime.min(ceiling);
    let lifetime = match request.lifetime {
        None => client.default_lifetime.min(maximum),
        Some(RequestedLifetime { seconds, nanos }) => {
            if seconds < 0 || nanos < 0 || (seconds == 0 && nanos == 0) {
                return Err(IssueError::Lifetime);
            }
            if seconds == 0 {
                // A positive sub-second request is below JWT's one-second resolution.
                return Err(IssueError::Lifetime);
            }
            Duration::from_secs(seconds.unsigned_abs()).min(maximum)
        }
    };
    // JWT times are whole seconds.
    let lifetime = Duration::from_secs(lifetime.as_secs().max(1));
    Ok(Grant {
        scopes,
        audiences,
        lifetime,
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
        .build(LifetimeDefaults {
            default: Duration::from_secs(300),
            max: Duration::from_secs(3600),
        })
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
        let defaults = client_credentials(&client(), &TokenRequest::default(), ceiling).unwrap();
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
        let grant = client_credentials(&client(), &asked, ceiling).unwrap();
        assert_eq!(grant.scopes, ["write"], "duplicates collapse");
        assert_eq!(grant.lifetime, ceiling, "clamped to the ceiling");
        let broader = TokenRequest {
            scopes: vec!["admin".into()],
            ..TokenRequest::default()
        };
        assert!(matches!(
            client_credentials(&client(), &broader, ceiling),
            Err(IssueError::Scope(_))
        ));
    }
}
