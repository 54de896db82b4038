//! The answer to an introspection (RFC 7662): which of a token's claims a caller sees, written
//! once for every face — the gRPC response is this answer field by field, and the HTTP
//! endpoint and the CLI print its JSON.

use serde_json::{Value, json};

use crate::{
    clock::UnixTime,
    token::{AccessTokenClaims, Actor, Confirmation, MayAct},
};

/// What introspection says of an active token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveToken {
    /// The client the token was issued to.
    pub client_id: String,
    /// Its subject.
    pub sub: String,
    /// The scopes granted (none: no `scope` member).
    pub scopes: Vec<String>,
    /// Its audiences.
    pub aud: Vec<String>,
    /// Its issuer.
    pub iss: String,
    /// Expiry, issue and not-before times (seconds since the epoch).
    pub exp: UnixTime,
    /// Issued at.
    pub iat: UnixTime,
    /// Not before.
    pub nbf: UnixTime,
    /// The token id.
    pub jti: String,
    /// The certificate it is bound to.
    pub cnf: Confirmation,
    /// The actor chain of a delegated token, as the token carries it.
    pub act: Option<Actor>,
    /// Whom the subject lets act for it.
    pub may_act: Option<MayAct>,
}

/// An introspection answer: active with its claims, or inactive with nothing else (RFC 7662
/// §2.2: an inactive answer says no more, whatever the reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Introspection {
    /// The token is good and the caller may see it.
    Active(Box<ActiveToken>),
    /// Anything else.
    Inactive,
}

impl From<AccessTokenClaims> for ActiveToken {
    fn from(claims: AccessTokenClaims) -> Self {
        Self {
            scopes: claims.scopes(),
            client_id: claims.client_id,
            sub: claims.sub,
            aud: claims.aud.to_vec(),
            iss: claims.iss,
            exp: claims.exp,
            iat: claims.iat,
            nbf: claims.nbf,
            jti: claims.jti,
            cnf: claims.cnf,
            act: claims.act,
            may_act: claims.may_act,
        }
    }
}

impl Introspection {
    /// The RFC 7662 JSON answer.
    pub fn to_json(&self) -> Value {
        let Self::Active(t) = self else {
            return json!({ "active": false });
        };
        let mut body = json!({
            "active": true,
            "client_id": t.client_id,
            "sub": t.sub,
            "aud": t.aud,
            "iss": t.iss,
            "exp": t.exp,
            "iat": t.iat,
            "nbf": t.nbf,
            "jti": t.jti,
            "token_type": "Bearer",
            "cnf": { "x5t#S256": t.cnf.x5t_s256 },
        });
        if !t.scopes.is_empty() {
            body["scope"] = Value::from(t.scopes.join(" "));
        }
        if let Some(act) = &t.act {
            body["act"] = json!(act);
        }
        if let Some(may_act) = &t.may_act {
            body["may_act"] = json!(may_act);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_answer_follows_rfc_7662() {
        let active = Introspection::Active(Box::new(ActiveToken {
            client_id: "billing".into(),
            sub: "billing".into(),
            scopes: vec!["a".into(), "b".into()],
            aud: vec!["https://api".into()],
            iss: "https://issuer".into(),
            exp: UnixTime::from_secs(30),
            iat: UnixTime::from_secs(10),
            nbf: UnixTime::from_secs(10),
            jti: "id".into(),
            cnf: Confirmation {
                x5t_s256: "thumb".into(),
            },
            act: None,
            may_act: None,
        }));
        let json = active.to_json();
        assert!(json.get("act").is_none() && json.get("may_act").is_none());
        assert_eq!(json["active"], true);
        assert_eq!(json["scope"], "a b");
        assert_eq!(json["token_type"], "Bearer");
        assert_eq!(json["cnf"]["x5t#S256"], "thumb");
        let Introspection::Active(mut t) = active else {
            unreachable!()
        };
        t.scopes.clear();
        t.act = Actor::from_chain(&["c".into(), "b".into()]);
        t.may_act = Some(MayAct { sub: "d".into() });
        let json = Introspection::Active(t).to_json();
        assert!(json.get("scope").is_none());
        assert_eq!(json["act"], json!({ "sub": "c", "act": { "sub": "b" } }));
        assert_eq!(json["may_act"], json!({ "sub": "d" }));
        assert_eq!(
            Introspection::Inactive.to_json(),
            json!({ "active": false })
        );
    }
}
