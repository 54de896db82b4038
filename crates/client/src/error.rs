//! Why no token: the issuer's refusal with its OAuth2 code, or no valid token while the issuer
//! cannot be reached.

use std::time::Duration;

/// Why a token source has no valid token to give. `Display` never contains a token.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The issuer refused to issue (the client is disabled or unknown, a scope or audience is
    /// no longer allowed, …): `code` is the OAuth2 error code (`invalid_client`,
    /// `invalid_scope`, `invalid_target`, `unauthorized_client`, …).
    #[error("the issuer refused a token: {code}: {description}")]
    Refused {
        /// The OAuth2 error code (RFC 6749 §5.2).
        code: String,
        /// The issuer's description.
        description: String,
    },
    /// No valid token is held and the issuer cannot give one now (unreachable, unavailable,
    /// over the client's rate).
    #[error("no valid token and the issuer is unavailable: {reason}")]
    Unavailable {
        /// What went wrong, for the operator.
        reason: String,
        /// The issuer's hint of when to retry, if it gave one.
        retry_after: Option<Duration>,
    },
}

impl TokenError {
    /// The OAuth2 error code of a refusal (`temporarily_unavailable` for `Unavailable`).
    pub fn oauth_code(&self) -> &str {
        match self {
            Self::Refused { code, .. } => code,
            Self::Unavailable { .. } => "temporarily_unavailable",
        }
    }

    /// The answer of one call to the issuer made within its timeout (`call` names it), or
    /// why there is none: the issuer's refusal ([`Self::of_status`]) or the timeout.
    pub(crate) fn of_call<T>(
        outcome: Result<Result<tonic::Response<T>, tonic::Status>, tokio::time::error::Elapsed>,
        call: &str,
    ) -> Result<T, Self> {
        match outcome {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(Self::of_status(&status)),
            Err(_) => Err(Self::Unavailable {
                reason: format!("{call} timed out"),
                retry_after: None,
            }),
        }
    }

    /// The error of a failed `IssueToken`: a refusal if the issuer named an OAuth2 code that
    /// says "not for you", else unavailable.
    pub(crate) fn of_status(status: &tonic::Status) -> Self {
        let metadata = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let description = status.message().escape_debug().to_string();
        match metadata("oauth-error") {
            Some(code)
                if !matches!(code.as_str(), "temporarily_unavailable" | "server_error")
                    && code.len() <= 64 =>
            {
                Self::Refused { code, description }
            }
            _ => Self::Unavailable {
                reason: format!("{:?}: {description}", status.code()),
                retry_after: metadata("retry-after")
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(Duration::from_secs),
            },
        }
    }
}

/// Why a [`crate::Client`] could not be built.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The issuer URL is not an `https://` URL with a host.
    #[error("{0:?} is not an https:// URL with a host")]
    BadUrl(String),
    /// Not called inside a tokio runtime.
    #[error("build the client inside a tokio runtime")]
    NoRuntime,
}
