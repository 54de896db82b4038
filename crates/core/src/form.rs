//! The OAuth2 HTTP face's request bodies, read: `application/x-www-form-urlencoded`
//! parameters (RFC 6749 §3.2 for the token endpoint, RFC 7662 for introspection, RFC 7009 for
//! revocation) and `client_secret_basic` credentials (§2.3.1). Pure parsing: the server maps
//! each [`FormError`] to its status, and the fuzz target `oauth_form` drives the same code.

use base64::{Engine as _, engine::general_purpose::STANDARD};

use crate::{
    grant::{ExchangeRequest, GrantType},
    oauth::ErrorCode,
    token::TokenRequest,
};

/// Why a request body or its credentials were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A malformed request (`400` with `code`: `invalid_request` or `unsupported_grant_type`).
    #[error("{description}")]
    BadRequest {
        /// The OAuth2 code.
        code: ErrorCode,
        /// What was wrong, naming the parameter (never echoing a secret).
        description: String,
    },
    /// The `Authorization: Basic` credentials cannot be read (`401 invalid_client`).
    #[error("the Authorization header is not valid Basic credentials")]
    InvalidClient,
}

impl FormError {
    fn invalid_request(description: String) -> Self {
        FormError::BadRequest {
            code: ErrorCode::InvalidRequest,
            description,
        }
    }
}

/// A parsed form body: parameters in order, repeats kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// The parameters of `body` (percent-escapes and `+` decoded; invalid UTF-8 replaced).
    pub fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The one value of `name`, an empty one counting as absent; a repeated parameter is
    /// `invalid_request` (RFC 6749 §3.1).
    pub fn single(&self, name: &str) -> Result<Option<&str>, FormError> {
        Ok(self.single_as_sent(name)?.filter(|v| !v.is_empty()))
    }

    /// The one value of `name` as sent: present but empty is `Some("")`.
    pub fn single_as_sent(&self, name: &str) -> Result<Option<&str>, FormError> {
        let mut values = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(FormError::invalid_request(format!(
                "the parameter {name} must not be repeated"
            )));
        }
        Ok(first)
    }

    /// The one value of `name`, which must be present.
    pub fn required(&self, name: &str) -> Result<&str, FormError> {
        self.single(name)?
            .ok_or_else(|| FormError::invalid_request(format!("{name} is required")))
    }

    /// Every non-empty value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every single-valued parameter (all but `resource` and `audience`) must not repeat.
    pub fn check_no_repeats(&self) -> Result<(), FormError> {
        for (i, (name, _)) in self.0.iter().enumerate() {
            let many = name == "resource" || name == "audience";
            if !many && self.0[..i].iter().any(|(n, _)| n == name) {
                return Err(FormError::invalid_request(format!(
                    "the parameter {} must not be repeated",
                    name.escape_debug()
                )));
            }
        }
        Ok(())
    }
}

/// `client_secret_basic`: the client id and secret of an `Authorization: Basic` value, each
/// form-decoded (RFC 6749 §2.3.1).
pub fn basic_credentials(authorization: &[u8]) -> Result<(String, String), FormError> {
    let text = std::str::from_utf8(authorization).map_err(|_| FormError::InvalidClient)?;
    let encoded = text
        .strip_prefix("Basic ")
        .or_else(|| text.strip_prefix("basic "))
        .ok_or(FormError::InvalidClient)?;
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| FormError::InvalidClient)?;
    let decoded = String::from_utf8(decoded).map_err(|_| FormError::InvalidClient)?;
    let (id, secret) = decoded.split_once(':').ok_or(FormError::InvalidClient)?;
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok((unescape(id), unescape(secret)))
}

/// A token endpoint request, by its grant type.
#[derive(Clone, Debug)]
pub enum GrantRequest {
    /// `client_credentials`.
    ClientCredentials(TokenRequest),
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    TokenExchange(ExchangeRequest),
}

/// The token endpoint's request: the form checked for repeats and the grant type, then the
/// grant's parameters (`credentials_request`; `exchange_request`).
pub fn token_request(form: &Form, authorization: Option<&[u8]>) -> Result<GrantRequest, FormError> {
    form.check_no_repeats()?;
    let grant = match form.single("grant_type")?.map(GrantType::from_name) {
        Some(Some(grant)) => grant,
        Some(None) => {
            return Err(FormError::BadRequest {
                code: ErrorCode::UnsupportedGrantType,
                description: "grant_type must be client_credentials or urn:ietf:params:oauth:grant-type:token-exchange".into(),
            });
        }
        None => return Err(FormError::invalid_request("grant_type is required".into())),
    };
    let request = credentials_request(form, authorization)?;
    Ok(match grant {
        GrantType::ClientCredentials => GrantRequest::ClientCredentials(request),
        GrantType::TokenExchange => GrantRequest::TokenExchange(exchange_request(form, request)?),
    })
}

/// What every grant reads: the client authenticated by one method only (`Basic` from
/// `authorization`, or `client_id`/`client_secret` in the body, or neither: the
/// certificate), `scope` split on spaces, every `resource` an audience, and `may_act`.
fn credentials_request(
    form: &Form,
    authorization: Option<&[u8]>,
) -> Result<TokenRequest, FormError> {
    let basic = authorization.map(basic_credentials).transpose()?;
    let (post_id, post_secret) = (form.single("client_id")?, form.single("client_secret")?);
    if basic.is_some() && post_secret.is_some() {
        return Err(FormError::invalid_request(
            "use one client authentication method, not both Basic and client_secret".into(),
        ));
    }
    let (client_id, client_secret) = match basic {
        Some((id, secret)) => (Some(id), (!secret.is_empty()).then_some(secret)),
        None => (post_id.map(str::to_owned), post_secret.map(str::to_owned)),
    };
    let scopes = form
        .single("scope")?
        .map(|s| crate::token::split_scope(s).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(TokenRequest {
        client_id,
        client_secret,
        scopes,
        audiences: form.all("resource"),
        lifetime: None,
        may_act: form.single("may_act")?.map(str::to_owned),
    })
}

/// The token-exchange parameters (RFC 8693 §2.1) beside `request`; each `audience` is an
/// audience as each `resource` is (a `client_credentials` request ignores `audience`, as
/// RFC 6749 §3.2 asks of parameters it does not define).
fn exchange_request(form: &Form, mut request: TokenRequest) -> Result<ExchangeRequest, FormError> {
    let mut audiences = form.all("audience");
    audiences.append(&mut request.audiences);
    request.audiences = audiences;
    let owned = |name| Ok::<_, FormError>(form.single(name)?.map(str::to_owned));
    Ok(ExchangeRequest {
        request,
        subject_token: form.required("subject_token")?.to_owned(),
        subject_token_type: form.required("subject_token_type")?.to_owned(),
        actor_token: owned("actor_token")?,
        actor_token_type: owned("actor_token_type")?,
        requested_token_type: owned("requested_token_type")?,
        request_context: owned("request_context")?,
        request_details: owned("request_details")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_request_is_read_from_the_form_and_one_authentication_method() {
        let form =
            Form::parse(b"grant_type=client_credentials&scope=a+b%20c&resource=x&resource=y");
        let credentials = |form: &Form, auth: Option<&[u8]>| match token_request(form, auth) {
            Ok(GrantRequest::ClientCredentials(request)) => request,
            other => panic!("{other:?}"),
        };
        let request = credentials(&form, None);
        assert_eq!(request.scopes, ["a", "b", "c"]);
        assert_eq!(request.audiences, ["x", "y"]);
        let basic = format!("Basic {}", STANDARD.encode("id%3A1:s%26cret"));
        let request = credentials(&form, Some(basic.as_bytes()));
        assert_eq!(request.client_id.as_deref(), Some("id:1"));
        assert_eq!(request.client_secret.as_deref(), Some("s&cret"));
        let both = Form::parse(b"grant_type=client_credentials&client_secret=s");
        assert!(token_request(&both, Some(basic.as_bytes())).is_err());
    }

    #[test]
    fn bad_forms_are_refused_with_their_code() {
        let code = |body: &[u8], auth: Option<&[u8]>| match token_request(&Form::parse(body), auth)
        {
            Err(FormError::BadRequest { code, .. }) => Some(code),
            Err(FormError::InvalidClient) => Some(ErrorCode::InvalidClient),
            Ok(_) => None,
        };
        assert_eq!(code(b"", None), Some(ErrorCode::InvalidRequest));
        assert_eq!(
            code(b"grant_type=password", None),
            Some(ErrorCode::UnsupportedGrantType)
        );
        assert_eq!(
            code(b"grant_type=client_credentials&scope=a&scope=b", None),
            Some(ErrorCode::InvalidRequest)
        );
        for auth in [&b"Bearer x"[..], b"Basic !!!", b"Basic \xff", b"Basic YWJj"] {
            assert_eq!(
                code(b"grant_type=client_credentials", Some(auth)),
                Some(ErrorCode::InvalidClient)
            );
        }
        assert_eq!(code(b"grant_type=client_credentials", None), None);
        let exchange = b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";
        assert_eq!(code(exchange, None), Some(ErrorCode::InvalidRequest));
    }

    #[test]
    fn an_exchange_request_reads_its_tokens_and_every_audience() {
        let form = Form::parse(
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
              &subject_token=s.t.x&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
              &audience=a&audience=b&resource=c&scope=read",
        );
        let Ok(GrantRequest::TokenExchange(exchange)) = token_request(&form, None) else {
            panic!("not read as an exchange");
        };
        assert_eq!(exchange.subject_token, "s.t.x");
        assert_eq!(exchange.request.audiences, ["a", "b", "c"]);
        assert_eq!(exchange.request.scopes, ["read"]);
        assert_eq!(exchange.actor_token, None);
        assert_eq!(
            exchange.issued_token_type().unwrap(),
            crate::grant::ACCESS_TOKEN_TYPE
        );
        assert!(
            !format!("{exchange:?}").contains("s.t.x"),
            "no token in Debug"
        );
    }
}
