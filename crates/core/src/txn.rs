//! Transaction tokens (draft-ietf-oauth-transaction-tokens-10): who started a request, and
//! why, carried through the services it crosses inside one trust domain. A transaction
//! token is asked for by token exchange with `requested_token_type` [`TXN_TOKEN_TYPE`],
//! lives a minute or so, is never an access token (its `typ` is [`TXN_JWT_TYPE`], which no
//! access-token check takes), and is replaced — never widened — along the chain, keeping its
//! `txn`, `sub` and `aud`. [`txn_claims`] decides one (the server signs it); [`verify_txn`]
//! and [`check_claims`] check one; [`self_signed_subject`] and [`unsigned_subject`] read a
//! subject a workload names itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    clock::UnixTime,
    identity::CertificateKey,
    jose::{self, KeyId, KeySet, PublishedKey},
    token::{AccessTokenClaims, Audience, IssueError, VerifyError},
};

pub use crate::token::TxnRefusal;

/// `requested_token_type` (and the `issued_token_type` answered) for a transaction token.
pub const TXN_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:txn_token";
/// A self-signed JWT naming the subject (draft §11.2.1).
pub const SELF_SIGNED_TYPE: &str = "urn:ietf:params:oauth:token-type:self_signed";
/// An unsigned JSON object naming the subject (draft §11.2.2).
pub const UNSIGNED_JSON_TYPE: &str = "urn:ietf:params:oauth:token-type:unsigned_json";
/// The JWS `typ` of a transaction token (draft §9.1).
pub const TXN_JWT_TYPE: &str = "txntoken+jwt";
/// The `token_type` of the answer (draft §11.4): not a bearer access token.
pub const TXN_TOKEN_TYPE_NAME: &str = "N_A";
/// The longest `request_context` or `request_details` taken, in bytes of JSON.
pub const MAX_CONTEXT_LEN: usize = 4096;
/// The longest subject a workload may name, in bytes.
pub const MAX_SUBJECT_LEN: usize = 255;
/// The longest a self-signed subject assertion may live (`exp` − `iat`).
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(300);

/// The claims of a transaction token (draft §9.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnTokenClaims {
    /// This issuer (optional in the draft; always set here, and checked).
    pub iss: String,
    /// Issued at.
    pub iat: UnixTime,
    /// Expires.
    pub exp: UnixTime,
    /// The trust domain.
    pub aud: String,
    /// The transaction id: one for the whole call chain.
    pub txn: String,
    /// The principal the transaction is for.
    pub sub: String,
    /// The purpose: space-separated scopes, never more than the subject token held.
    pub scope: String,
    /// The requesting workloads, comma-separated in the order they asked (the first asked
    /// for the token, each later one for a replacement): client ids, which hold no comma.
    pub req_wl: String,
    /// The transaction context: immutable along the chain; a replacement may add members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tctx: Option<Map<String, Value>>,
    /// The request context, as `tctx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rctx: Option<Map<String, Value>>,
}

impl TxnTokenClaims {
    /// The purpose as a list.
    pub fn scopes(&self) -> Vec<&str> {
        crate::token::split_scope(&self.scope).collect()
    }

    /// The requesting workloads, in the order they asked.
    pub fn requesters(&self) -> Vec<&str> {
        self.req_wl.split(',').filter(|s| !s.is_empty()).collect()
    }
}

/// What a transaction token is made from: a tokenmint access token, a subject the caller
/// names itself (its registration allowing it), or a transaction token to replace.
#[derive(Clone, Copy, Debug)]
pub enum TxnSubject<'a> {
    /// A new transaction, for the subject of this access token.
    AccessToken(&'a AccessTokenClaims),
    /// A new transaction, for a subject the caller asserts, its purpose within `ceiling`
    /// (the caller's registered scopes).
    Asserted {
        /// The subject.
        asserted: &'a AssertedSubject,
        /// The scopes the purpose must be within.
        ceiling: &'a [String],
    },
    /// A replacement of this transaction token.
    Replacement(&'a TxnTokenClaims),
}

/// A subject a workload names itself (draft §11.2.1, §11.2.2): whom the transaction is
/// for, and until when the assertion holds (a self-signed JWT's `exp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertedSubject {
    /// `sub`.
    pub sub: String,
    /// The assertion's `exp`, if it has one.
    pub until: Option<UnixTime>,
}

/// What a transaction-token request asks for (draft §11.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// `scope`: the purpose (required).
    pub scopes: Vec<String>,
    /// `audience`: must be the trust domain (required).
    pub audiences: Vec<String>,
    /// `request_context`: input to `rctx`.
    pub request_context: Option<Map<String, Value>>,
    /// `request_details`: input to `tctx`.
    pub request_details: Option<Map<String, Value>>,
}

/// The trust domain and lifetime (`[txn_tokens]`), the issuer, the time, and the caller.
#[derive(Clone, Copy, Debug)]
pub struct TxnIssuance<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `aud` of every transaction token.
    pub trust_domain: &'a str,
    /// How long one lives.
    pub lifetime: Duration,
    /// Now.
    pub now: UnixTime,
    /// The requesting workload: the authenticated caller's client id.
    pub requester: &'a str,
    /// A new transaction id (used for a new transaction only).
    pub new_txn: &'a str,
}

/// The claims of the transaction token `request` asks of `subject` (draft §11.3, §13.15):
/// the trust domain as `aud`; a purpose within the subject token's scopes; a new `txn` and
/// the access token's `sub` for a new transaction, or the replaced token's `txn`, `sub` and
/// contexts (members only added) for a replacement; this caller appended to `req_wl`; and an
/// expiry no later than the subject token's.
pub fn txn_claims(
    x: &TxnIssuance<'_>,
    subject: TxnSubject<'_>,
    request: &TxnRequest,
) -> Result<TxnTokenClaims, IssueError> {
    if request.audiences.len() != 1 || request.audiences[0] != x.trust_domain {
        return Err(TxnRefusal::Audience(x.trust_domain.to_owned()).into());
    }
    if request.scopes.is_empty() {
        return Err(TxnRefusal::NoScope.into());
    }
    if x.requester.is_empty() || x.requester.contains(',') {
        return Err(TxnRefusal::Requester.into());
    }
    let fresh = |sub: &str| {
        (
            x.new_txn.to_owned(),
            sub.to_owned(),
            x.requester.to_owned(),
            request.request_details.clone(),
            request.request_context.clone(),
        )
    };
    let (held, exp, (txn, sub, req_wl, tctx, rctx)) = match subject {
        TxnSubject::AccessToken(t) => (t.scopes(), t.exp, fresh(&t.sub)),
        TxnSubject::Asserted { asserted, ceiling } => (
            ceiling.to_vec(),
            asserted.until.unwrap_or(x.now.saturating_add(x.lifetime)),
            fresh(&asserted.sub),
        ),
        TxnSubject::Replacement(t) => (
            t.scopes().into_iter().map(str::to_owned).collect(),
            t.exp,
            (
                t.txn.clone(),
                t.sub.clone(),
                format!("{},{}", t.req_wl, x.requester),
                extended("tctx", &t.tctx, &request.request_details)?,
                extended("rctx", &t.rctx, &request.request_context)?,
            ),
        ),
    };
    if exp <= x.now {
        return Err(IssueError::SubjectToken("expired"));
    }
    let refuse = |bad| IssueError::Txn(TxnRefusal::Scope(bad));
    let scopes = crate::token::within(&request.scopes, &held, &[], refuse)?;
    Ok(TxnTokenClaims {
        iss: x.issuer.to_owned(),
        iat: x.now,
        exp: x.now.saturating_add(x.lifetime).min(exp),
        aud: x.trust_domain.to_owned(),
        txn,
        sub,
        scope: scopes.join(" "),
        req_wl,
        tctx,
        rctx,
    })
}

/// A context carried into a replacement: `held` with `added`'s new members; a member
/// `added` would change is refused.
fn extended(
    name: &'static str,
    held: &Option<Map<String, Value>>,
    added: &Option<Map<String, Value>>,
) -> Result<Option<Map<String, Value>>, IssueError> {
    let Some(added) = added else {
        return Ok(held.clone());
    };
    let mut merged = held.clone().unwrap_or_default();
    for (key, value) in added {
        match merged.get(key) {
            Some(kept) if kept != value => {
                return Err(
                    TxnRefusal::ContextChanged(name, key.chars().take(140).collect()).into(),
                );
            }
            _ => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(Some(merged))
}

/// A transaction token checked as a receiving workload checks it (draft §12.3), and as a
/// replacement's subject is: `typ` [`TXN_JWT_TYPE`], the key its `kid` names (and that key's
/// algorithm), the signature, `iss`, `aud` the trust domain, and the times with `leeway`.
pub fn verify_txn(
    token: &str,
    keys: &KeySet,
    issuer: &str,
    trust_domain: &str,
    now: UnixTime,
    leeway: Duration,
) -> Result<TxnTokenClaims, VerifyError> {
    let claims = jose::verify_compact::<TxnTokenClaims>(token, keys, &[TXN_JWT_TYPE])?.payload;
    check_claims(&claims, issuer, trust_domain, now, leeway)?;
    Ok(claims)
}

/// The checks of a transaction token's claims once its signature verified, wherever it is
/// verified (here, and in `tokenmint-verify`): `iss`, `aud` the trust domain, and the times
/// with `leeway`.
pub fn check_claims(
    claims: &TxnTokenClaims,
    issuer: &str,
    trust_domain: &str,
    now: UnixTime,
    leeway: Duration,
) -> Result<(), VerifyError> {
    if claims.iss != issuer {
        return Err(VerifyError::WrongIssuer);
    }
    if claims.aud != trust_domain {
        return Err(VerifyError::WrongTrustDomain);
    }
    if claims.exp.saturating_add(leeway) <= now {
        return Err(VerifyError::Expired);
    }
    if claims.iat.saturating_sub(leeway) > now {
        return Err(VerifyError::NotYetValid);
    }
    Ok(())
}

/// An unsigned JSON subject (draft §11.2.2): a JSON object of at most [`MAX_CONTEXT_LEN`]
/// bytes whose `sub` names the subject; other members are not read.
pub fn unsigned_subject(text: &str) -> Result<AssertedSubject, TxnRefusal> {
    let refused = |why: String| TxnRefusal::Asserted("unsigned_json", why);
    let object = context_object("it", text).map_err(refused)?;
    let sub = match object.get("sub") {
        Some(Value::String(sub)) => checked_subject(sub).map_err(refused)?,
        _ => {
            return Err(refused(
                "must name the subject in a string member `sub`".into(),
            ));
        }
    };
    Ok(AssertedSubject { sub, until: None })
}

/// The claims of a self-signed subject assertion that are read.
#[derive(Deserialize)]
struct SelfSigned {
    iss: String,
    sub: String,
    aud: Audience,
    iat: UnixTime,
    exp: UnixTime,
    #[serde(default)]
    nbf: Option<UnixTime>,
}

/// A self-signed JWT subject (draft §11.2.1), from the workload `caller` that presented the
/// certificate whose key is `key`: `typ` `JWT`; signed under that key with its algorithm;
/// `iss` the caller's client id; `aud` naming this `issuer`; issued no later than `now` (with
/// `leeway`), not expired, and living at most [`MAX_ASSERTION_LIFETIME`].
pub fn self_signed_subject(
    token: &str,
    key: &CertificateKey,
    caller: &str,
    issuer: &str,
    now: UnixTime,
    leeway: Duration,
) -> Result<AssertedSubject, TxnRefusal> {
    let refused = |why: &str| TxnRefusal::Asserted("self_signed", why.to_owned());
    let key = PublishedKey {
        kid: KeyId::from_stored(""),
        algorithm: key.algorithm,
        public: key.public.clone(),
        low_s_only: false,
    };
    let claims: SelfSigned = jose::verify_compact_under(token, &key, &["JWT"]).map_err(|e| {
        refused(match e {
            jose::JwsError::WrongType => "must have `typ` JWT",
            jose::JwsError::AlgorithmMismatch => {
                "must be signed with the algorithm of the certificate's key (ES256, EdDSA or RS256)"
            }
            jose::JwsError::BadSignature | jose::JwsError::UnknownKey => {
                "is not signed with the key of the certificate presented"
            }
            jose::JwsError::Malformed(_) => {
                "is not a compact JWT with string `iss`, `sub`, `aud` and numeric `iat`, `exp`"
            }
        })
    })?;
    if claims.iss != caller {
        return Err(refused("must name the calling client as `iss`"));
    }
    if !claims.aud.iter().any(|a| a == issuer) {
        return Err(refused("must name this issuer in `aud`"));
    }
    let starts = claims.nbf.map_or(claims.iat, |nbf| nbf.max(claims.iat));
    if claims.exp <= now || starts.saturating_sub(leeway) > now {
        return Err(refused("is expired or not yet valid"));
    }
    if claims.exp <= claims.iat || claims.exp.since(claims.iat) > MAX_ASSERTION_LIFETIME {
        return Err(refused(
            "must have `exp` after `iat`, at most 5 minutes after it",
        ));
    }
    let sub =
        checked_subject(&claims.sub).map_err(|why| TxnRefusal::Asserted("self_signed", why))?;
    Ok(AssertedSubject {
        sub,
        until: Some(claims.exp),
    })
}

/// A subject a workload names: 1 to [`MAX_SUBJECT_LEN`] bytes of visible ASCII (it goes
/// upstream in a header, where anything else could read differently).
fn checked_subject(sub: &str) -> Result<String, String> {
    if sub.is_empty() || sub.len() > MAX_SUBJECT_LEN || !sub.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "`sub` must be 1 to {MAX_SUBJECT_LEN} characters of visible ASCII, without spaces"
        ));
    }
    Ok(sub.to_owned())
}

/// A `request_context` or `request_details` parameter: a JSON object of at most
/// [`MAX_CONTEXT_LEN`] bytes.
pub fn context_object(name: &str, text: &str) -> Result<Map<String, Value>, String> {
    if text.len() > MAX_CONTEXT_LEN {
        return Err(format!("{name} is longer than {MAX_CONTEXT_LEN} bytes"));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(format!("{name} must be a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Audience, Confirmation};

    const DOMAIN: &str = "spiffe://example.org";

    fn access(scope: &str) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://issuer".into(),
            sub: "alice-app".into(),
            client_id: "gateway".into(),
            aud: Audience::One("https://gateway".into()),
            scope: Some(scope.into()),
            iat: UnixTime::from_secs(100),
            nbf: UnixTime::from_secs(100),
            exp: UnixTime::from_secs(1000),
            jti: "jti".into(),
            cnf: Confirmation {
                x5t_s256: String::new(),
            },
            act: None,
            may_act: None,
            ancestors: Vec::new(),
        }
    }

    fn issuance(requester: &str) -> TxnIssuance<'_> {
        TxnIssuance {
            issuer: "https://issuer",
            trust_domain: DOMAIN,
            lifetime: Duration::from_secs(60),
            now: UnixTime::from_secs(200),
            requester,
            new_txn: "txn-1",
        }
    }

    fn asking(scopes: &[&str], details: Option<Value>) -> TxnRequest {
        TxnRequest {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            audiences: vec![DOMAIN.into()],
            request_details: details.and_then(|d| d.as_object().cloned()),
            request_context: None,
        }
    }

    #[test]
    fn a_new_transaction_takes_the_access_tokens_subject_and_a_narrower_purpose() {
        let subject = access("orders:read orders:write");
        let details = serde_json::json!({ "order": 42 });
        let claims = txn_claims(
            &issuance("gateway"),
            TxnSubject::AccessToken(&subject),
            &asking(&["orders:read"], Some(details.clone())),
        )
        .unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.txn.as_str()),
            ("alice-app", "txn-1")
        );
        assert_eq!(
            (claims.aud.as_str(), claims.scope.as_str()),
            (DOMAIN, "orders:read")
        );
        assert_eq!(claims.req_wl, "gateway");
        assert_eq!(claims.exp, UnixTime::from_secs(260));
        assert_eq!(claims.tctx, details.as_object().cloned());
        let broader = txn_claims(
            &issuance("gateway"),
            TxnSubject::AccessToken(&subject),
            &asking(&["orders:admin"], None),
        );
        assert!(
            matches!(broader, Err(IssueError::Txn(TxnRefusal::Scope(s))) if s == "orders:admin")
        );
        let mut elsewhere = asking(&["orders:read"], None);
        elsewhere.audiences = vec!["spiffe://other.org".into()];
        assert!(matches!(
            txn_claims(
                &issuance("gateway"),
                TxnSubject::AccessToken(&subject),
                &elsewhere
            ),
            Err(IssueError::Txn(TxnRefusal::Audience(_)))
        ));
        assert!(matches!(
            txn_claims(
                &issuance("gateway"),
                TxnSubject::AccessToken(&subject),
                &asking(&[], None)
            ),
            Err(IssueError::Txn(TxnRefusal::NoScope))
        ));
        // No scope held: nothing to narrow to (never read as unconstrained).
        let mut unscoped = subject.clone();
        unscoped.scope = None;
        assert!(
            txn_claims(
                &issuance("gateway"),
                TxnSubject::AccessToken(&unscoped),
                &asking(&["orders:read"], None)
            )
            .is_err()
        );
    }

    #[test]
    fn a_replacement_keeps_txn_sub_and_aud_narrows_and_only_adds_context() {
        let subject = access("orders:read orders:write");
        let first = txn_claims(
            &issuance("gateway"),
            TxnSubject::AccessToken(&subject),
            &asking(
                &["orders:read", "orders:write"],
                Some(serde_json::json!({ "order": 42 })),
            ),
        )
        .unwrap();
        let mut later = issuance("orders");
        later.now = UnixTime::from_secs(230);
        later.new_txn = "not used";
        let replaced = txn_claims(
            &later,
            TxnSubject::Replacement(&first),
            &asking(
                &["orders:read"],
                Some(serde_json::json!({ "order": 42, "warehouse": "w1" })),
            ),
        )
        .unwrap();
        assert_eq!(
            (replaced.txn.as_str(), replaced.sub.as_str()),
            ("txn-1", "alice-app")
        );
        assert_eq!(replaced.aud, DOMAIN);
        assert_eq!(replaced.scope, "orders:read");
        assert_eq!(replaced.requesters(), ["gateway", "orders"]);
        assert_eq!(replaced.exp, first.exp, "never past the replaced token");
        assert_eq!(replaced.tctx.as_ref().unwrap()["warehouse"], "w1");
        let changed = txn_claims(
            &later,
            TxnSubject::Replacement(&first),
            &asking(&["orders:read"], Some(serde_json::json!({ "order": 43 }))),
        );
        assert!(matches!(
            changed,
            Err(IssueError::Txn(TxnRefusal::ContextChanged("tctx", k))) if k == "order"
        ));
        let widened = txn_claims(
            &later,
            TxnSubject::Replacement(&replaced),
            &asking(&["orders:write"], None),
        );
        assert!(matches!(
            widened,
            Err(IssueError::Txn(TxnRefusal::Scope(_)))
        ));
        assert!(matches!(
            txn_claims(
                &issuance("a,b"),
                TxnSubject::AccessToken(&subject),
                &asking(&["orders:read"], None)
            ),
            Err(IssueError::Txn(TxnRefusal::Requester))
        ));
    }

    #[test]
    fn refusals_carry_the_oauth_code_the_draft_and_rfc_8693_give() {
        use crate::oauth::ErrorCode;
        let code = |r: TxnRefusal| IssueError::from(r).code();
        assert_eq!(code(TxnRefusal::Scope("x".into())), ErrorCode::InvalidScope);
        assert_eq!(
            code(TxnRefusal::Audience(DOMAIN.into())),
            ErrorCode::InvalidTarget
        );
        for refusal in [TxnRefusal::Off, TxnRefusal::NoScope, TxnRefusal::Requester] {
            assert_eq!(code(refusal), ErrorCode::InvalidRequest);
        }
    }

    #[test]
    fn context_parameters_are_bounded_json_objects() {
        assert!(context_object("request_details", r#"{"a":1}"#).is_ok());
        for bad in ["[1]", "\"x\"", "{", ""] {
            assert!(context_object("request_details", bad).is_err(), "{bad:?}");
        }
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_CONTEXT_LEN));
        assert!(
            context_object("request_context", &long)
                .unwrap_err()
                .contains("longer")
        );
    }

    /// Signs as a workload does with its certificate's key.
    #[derive(Debug)]
    struct Workload(crate::crypto::SigningKey, KeyId);

    impl jose::Signer for Workload {
        fn kid(&self) -> &KeyId {
            &self.1
        }
        fn algorithm(&self) -> crate::crypto::Algorithm {
            self.0.algorithm()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, crate::crypto::CryptoError> {
            self.0.sign(message)
        }
    }

    fn workload(algorithm: crate::crypto::Algorithm) -> (std::sync::Arc<Workload>, CertificateKey) {
        let (key, _) = crate::crypto::SigningKey::generate(algorithm).unwrap();
        let certificate = CertificateKey {
            algorithm,
            public: key.public_key(),
        };
        (
            std::sync::Arc::new(Workload(key, KeyId::from_stored("k"))),
            certificate,
        )
    }

    fn assertion(signer: &std::sync::Arc<Workload>, typ: &str, claims: Value) -> String {
        jose::CompactSigner::new(signer.clone(), typ)
            .sign_compact(claims.to_string().as_bytes())
            .unwrap()
    }

    fn good_claims() -> Value {
        serde_json::json!({
            "iss": "gateway", "sub": "user:alice", "aud": "https://issuer",
            "iat": 190, "exp": 250,
        })
    }

    #[test]
    fn a_self_signed_subject_is_verified_under_the_presenters_certificate_key() {
        let (signer, key) = workload(crate::crypto::Algorithm::Es256);
        let now = UnixTime::from_secs(200);
        let leeway = Duration::from_secs(5);
        let token = assertion(&signer, "JWT", good_claims());
        let asserted =
            self_signed_subject(&token, &key, "gateway", "https://issuer", now, leeway).unwrap();
        assert_eq!(asserted.sub, "user:alice");
        assert_eq!(asserted.until, Some(UnixTime::from_secs(250)));

        let (_, other_key) = workload(crate::crypto::Algorithm::Es256);
        let (ed_signer, _) = workload(crate::crypto::Algorithm::EdDsa);
        let with = |change: &dyn Fn(&mut Value)| {
            let mut claims = good_claims();
            change(&mut claims);
            assertion(&signer, "JWT", claims)
        };
        let refusals = [
            (token.clone(), &other_key, "not signed with the key"),
            (
                assertion(&ed_signer, "JWT", good_claims()),
                &key,
                "algorithm of the certificate",
            ),
            (
                assertion(&signer, "at+jwt", good_claims()),
                &key,
                "`typ` JWT",
            ),
            (with(&|c| c["iss"] = "edge".into()), &key, "`iss`"),
            (with(&|c| c["aud"] = "https://other".into()), &key, "`aud`"),
            (with(&|c| c["exp"] = 200.into()), &key, "expired"),
            (with(&|c| c["iat"] = 206.into()), &key, "not yet valid"),
            (with(&|c| c["exp"] = 491.into()), &key, "at most 5 minutes"),
            (
                with(&|c| {
                    c["iat"] = 204.into();
                    c["exp"] = 203.into();
                }),
                &key,
                "`exp` after `iat`",
            ),
            (with(&|c| c["nbf"] = 206.into()), &key, "not yet valid"),
            (
                with(&|c| c["sub"] = " user:alice".into()),
                &key,
                "`sub` must be",
            ),
            (
                with(&|c| c["sub"] = "us\u{202e}er".into()),
                &key,
                "`sub` must be",
            ),
            (with(&|c| c["sub"] = "".into()), &key, "`sub` must be"),
            (
                with(&|c| c["sub"] = "a\u{7}b".into()),
                &key,
                "`sub` must be",
            ),
            (
                with(&|c| drop(c.as_object_mut().unwrap().remove("sub"))),
                &key,
                "compact JWT",
            ),
        ];
        for (token, key, why) in refusals {
            let refused =
                self_signed_subject(&token, key, "gateway", "https://issuer", now, leeway)
                    .unwrap_err()
                    .to_string();
            assert!(
                refused.starts_with("the self_signed subject_token"),
                "{refused}"
            );
            assert!(refused.contains(why), "{why}: {refused}");
        }
    }

    /// An RSA-2048 PKCS#8 key, a test fixture used nowhere else (ring signs with RSA but
    /// does not generate it), base64url.
    const RSA_2048_PKCS8: &str = concat!(
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDVmu3N0beuWKbBQypMXOBUzoDechlH3m02N5hL",
        "Nv23eiFz1iHRF2id9E_d8tqMNxjG9kfowFUe8d131UKiqlJwGwUBwdzyHSkY_0VKdkz3jVuIcIvKfl1F_9wNFviM",
        "-fMs3plBzXfFZ4ym1sCu9SIPhombsALtTUC6OnoBYQpH_QtQIDoYBAto3s0kLjqCfUUUS1a7WuGTLiduH8DAS-6a",
        "Ps2CV1521RTi1V_CmKQa4U4hjKH47G4m-msvk7MZM3wG1O8UdSvDmm1lKoS_0JfunOTxAOY_pLBT-JIRs6lq0PsV",
        "ISzzO2ZcMBXKzfZ24qfsN6gdcFCC2W6ZGLKp5d35AgMBAAECggEAUHD6ekauti0zi1eIb96QKs_jzyHH7H1Swpa4",
        "Nycb8ENBotZywMPghY-SnkKNVD2RiqgH15rK048BONYqtIiQ6B_8yDciRll99yh3Bz466QUmgeDkfBsPdEORMqrC",
        "apDcp7qim5nNr5055kC8qoatT4x6eROVXpl3tUo9VRSe4xGz1nv9suhTo-k_Jg6-UUqRMt9Yf4n1NhVisdYaNFn3",
        "61BDFBXN4XZXHZxFMFPypafSElJNPTA9bRivY-gv6Wvmhi5vl5nH3CBzTnUuyWXECsSIbiXGrB--8E4UIKuSNu3r",
        "A7AsNnfrtcCcV_fRB5vDOn36ztd17iLQ24eTCUtZ0wKBgQDqNVh14JXKUagIxILgo4wzTpnC9ClMSERIFVcc2Vod",
        "xdV_nVaYD6LHcCCjeesGIOD-awrSONjJGb-0Ta95W-c9ZbsP8O9DWUPE67tpftd1F-33j0cclXYhi2nO791lxcoo",
        "pcHDUOdcn9pWseNmtmDgxePlOsLt5r9PXiF4GA642wKBgQDpetT__U11_lN-Ryj8HOiXB3cyVuaaPr7cF7v9kCKE",
        "bX4vc-GPI_mNrkA4-1gZzEYsZJNV2MzJ4D9h1ji46T4-BDdrk-KaSPd9lF8lTyWRTQSU8tdGDGKLXCYOnwAnr3XH",
        "I2L2CR506zM1xNxMncl1jncuMldI8R5BaiqyXnNiuwKBgQCDYgGJvr7IjB4TLQmuMpDHh2RCNO2l2TRUq4P-rv8a",
        "jIxD1mNpUfwinQfyLMZm3bLZhfrACxuxVDxyTNIO5jtF-feB7cqKoVye7w5nE7yR9yaLJVji9AUctDRa3bv5B4ds",
        "Xe_gPVZMY2_8CjZivBSEgv5g7SHEixju0QM9d2Fq2QKBgAghOM15GntjUbDx9WFh-E9Z-TKNiBYS3T54rRkVLb6C",
        "uYQZet8rF4Nxb9cMGXM8g60EC4VPuUHGRy628N6vcHVkXDGowpkwtT1wLyfza5F1pxUwp4JO6BeGK-UScETxfR5k",
        "AwwiISddETlsE2evjtZDEa9QHW3yx2Trt3TiiQ4FAoGAF1cKpd2NAJtbJNS9IlnOnTzetMN4cc1Zb97y7Cige8YC",
        "cPB8pzda8BiL0qwMHDuf-bNt1TgZ3CwMAWeYXAxzZUljrZAzj9R0MZy99S0N2-fy-F1mDq6PrJ0_AIIbUoXIcZ6I",
        "4wF3EfrSsfIEwzrSNfx8SwAE4PD0ZWLgjybf--A",
    );

    #[test]
    fn a_self_signed_subject_under_an_rsa_certificate_is_rs256() {
        use crate::identity::CertificateIdentity;
        // A certificate for an RSA key, as a workload would present it.
        let pkcs8 = crate::crypto::b64url_decode(RSA_2048_PKCS8).unwrap();
        let key =
            crate::crypto::SigningKey::try_from_pkcs8(crate::crypto::Algorithm::Rs256, &pkcs8)
                .unwrap();
        let pair = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        let der = rcgen::CertificateParams::new(vec!["w.example".into()])
            .unwrap()
            .self_signed(&pair)
            .unwrap()
            .der()
            .to_vec();
        let read = CertificateIdentity::from_der(&der).unwrap().key.unwrap();
        let public = key.public_key();
        assert_eq!(
            read,
            CertificateKey {
                algorithm: crate::crypto::Algorithm::Rs256,
                public
            }
        );
        let signer = std::sync::Arc::new(Workload(key, KeyId::from_stored("k")));
        let token = assertion(&signer, "JWT", good_claims());
        let now = UnixTime::from_secs(200);
        let asserted = self_signed_subject(
            &token,
            &read,
            "gateway",
            "https://issuer",
            now,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(asserted.sub, "user:alice");
    }

    #[test]
    fn an_unsigned_subject_names_sub_in_a_bounded_json_object() {
        let asserted = unsigned_subject(r#"{"sub": "user:alice", "amr": "pwd"}"#).unwrap();
        assert_eq!(
            (asserted.sub.as_str(), asserted.until),
            ("user:alice", None)
        );
        let long = format!(r#"{{"sub": "{}"}}"#, "a".repeat(MAX_SUBJECT_LEN + 1));
        let padded = format!(r#"{{"sub": "a", "x": "{}"}}"#, "a".repeat(MAX_CONTEXT_LEN));
        for bad in [
            r#"{"sub": 7}"#,
            r#"{}"#,
            r#"["a"]"#,
            "user:alice",
            &long,
            &padded,
        ] {
            let refused = unsigned_subject(bad).unwrap_err().to_string();
            assert!(
                refused.starts_with("the unsigned_json subject_token"),
                "{refused}"
            );
        }
    }

    #[test]
    fn an_asserted_subject_starts_a_transaction_within_the_callers_scopes() {
        let ceiling = ["orders:read".to_owned(), "orders:write".to_owned()];
        // Self-signed (until its `exp`), then unsigned (the configured lifetime).
        for (until, exp) in [(Some(230), 230), (None, 260)] {
            let asserted = AssertedSubject {
                sub: "user:alice".into(),
                until: until.map(UnixTime::from_secs),
            };
            let subject = TxnSubject::Asserted {
                asserted: &asserted,
                ceiling: &ceiling,
            };
            let asked = asking(&["orders:read"], None);
            let claims = txn_claims(&issuance("gateway"), subject, &asked).unwrap();
            assert_eq!(
                (claims.sub.as_str(), claims.txn.as_str()),
                ("user:alice", "txn-1")
            );
            assert_eq!(
                (claims.req_wl.as_str(), claims.scope.as_str()),
                ("gateway", "orders:read")
            );
            assert_eq!(claims.exp, UnixTime::from_secs(exp), "{until:?}");
            let refused = txn_claims(&issuance("gateway"), subject, &asking(&["admin"], None));
            assert!(matches!(
                refused,
                Err(IssueError::Txn(TxnRefusal::Scope(_)))
            ));
        }
    }
}
