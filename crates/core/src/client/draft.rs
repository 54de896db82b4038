//! The one rule for a client definition, whichever face it comes through: the config file's
//! `[[clients]]`, the CLI's `client add`, and the AdminService's `RegisterClient` and
//! `UpdateClient`. Each face turns its own format into a [`ClientDraft`] (parsing durations,
//! say) and [`ClientDraft::build`] decides the rest, with the same words for every face.

use std::{fmt, time::Duration};

use super::{Client, ClientId, ExchangePolicy, Permission};
use crate::identity::CertificateMatcher;

/// The longest client id, in characters (ids are ASCII, so also bytes).
pub const MAX_CLIENT_ID_LEN: usize = 128;
/// The longest scope, in characters (scopes are ASCII, so also bytes).
pub const MAX_SCOPE_LEN: usize = 128;
/// The longest audience, in characters.
pub const MAX_AUDIENCE_LEN: usize = 512;

/// How a client's certificate is recognised, as an operator writes it: exactly one of the
/// four may be set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityDraft {
    /// `san_uri`.
    pub san_uri: Option<String>,
    /// `san_dns`.
    pub san_dns: Option<String>,
    /// `subject_dn`.
    pub subject_dn: Option<String>,
    /// `pinned_sha256`.
    pub pinned_sha256: Option<Vec<String>>,
}

/// A client as an operator describes it; [`ClientDraft::build`] checks it and fills in what
/// is left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientDraft {
    /// Its id.
    pub id: String,
    /// How its certificate is recognised.
    pub identity: IdentityDraft,
    /// Scopes it may ask for.
    pub scopes: Vec<String>,
    /// `None`: every allowed scope.
    pub default_scopes: Option<Vec<String>>,
    /// Audiences it may ask for.
    pub audiences: Vec<String>,
    /// `None`: the only audience, if there is exactly one; else none.
    pub default_audiences: Option<Vec<String>>,
    /// Audiences whose tokens it may introspect.
    pub introspect_audiences: Vec<String>,
    /// Permission names; `None`: `issue`.
    pub permissions: Option<Vec<String>>,
    /// `None`: `tokens.default_lifetime`, at most the client's maximum.
    pub default_lifetime: Option<Duration>,
    /// `None`: `tokens.max_lifetime`, which is also its ceiling.
    pub max_lifetime: Option<Duration>,
    /// Whether it starts enabled.
    pub enabled: bool,
    /// The audiences it serves (unique across clients).
    pub serves: Vec<String>,
    /// The client ids it may act for (`*`: any).
    pub act_for: Vec<String>,
    /// The audiences it may call on another's behalf: a subset of `audiences`.
    pub delegate_audiences: Vec<String>,
    /// The scopes it may pass on when acting for another.
    pub delegate_scopes: Vec<String>,
    /// Whether it may name a transaction token's subject itself (self-signed or unsigned).
    pub asserts_txn_subjects: bool,
}

/// The token lifetimes a client falls back on: `tokens.default_lifetime` and
/// `tokens.max_lifetime` (also the ceiling of every client's maximum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifetimeDefaults {
    /// `tokens.default_lifetime`.
    pub default: Duration,
    /// `tokens.max_lifetime`.
    pub max: Duration,
}

/// Which part of a draft a refusal is about: the key each face names it by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftField {
    /// The whole client (no identity, or more than one).
    Client,
    /// `id`.
    Id,
    /// `san_uri`.
    SanUri,
    /// `san_dns`.
    SanDns,
    /// `subject_dn`.
    SubjectDn,
    /// `pinned_sha256`.
    PinnedSha256,
    /// `scopes`.
    Scopes,
    /// `default_scopes`.
    DefaultScopes,
    /// `audiences`.
    Audiences,
    /// `default_audiences`.
    DefaultAudiences,
    /// `introspect_audiences`.
    IntrospectAudiences,
    /// `permissions`.
    Permissions,
    /// `default_lifetime`.
    DefaultLifetime,
    /// `max_lifetime`.
    MaxLifetime,
    /// `serves`.
    Serves,
    /// `act_for`.
    ActFor,
    /// `delegate_audiences`.
    DelegateAudiences,
    /// `delegate_scopes`.
    DelegateScopes,
}

impl DraftField {
    /// The key, as the config file and the API spell it; empty for the whole client.
    pub fn key(self) -> &'static str {
        match self {
            Self::Client => "",
            Self::Id => "id",
            Self::SanUri => "san_uri",
            Self::SanDns => "san_dns",
            Self::SubjectDn => "subject_dn",
            Self::PinnedSha256 => "pinned_sha256",
            Self::Scopes => "scopes",
            Self::DefaultScopes => "default_scopes",
            Self::Audiences => "audiences",
            Self::DefaultAudiences => "default_audiences",
            Self::IntrospectAudiences => "introspect_audiences",
            Self::Permissions => "permissions",
            Self::DefaultLifetime => "default_lifetime",
            Self::MaxLifetime => "max_lifetime",
            Self::Serves => "serves",
            Self::ActFor => "act_for",
            Self::DelegateAudiences => "delegate_audiences",
            Self::DelegateScopes => "delegate_scopes",
        }
    }
}

/// Why a draft is refused: the field, and what is wrong with it in words that follow the
/// field's name (`scopes` + "`a b` has a character that is not allowed: …").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", field_prefix(self.field))]
pub struct DraftError {
    /// The field.
    pub field: DraftField,
    /// What is wrong, and how to put it right.
    pub problem: String,
}

fn field_prefix(field: DraftField) -> String {
    match field {
        DraftField::Client => String::new(),
        other => format!("{} ", other.key()),
    }
}

fn refuse<T>(field: DraftField, problem: String) -> Result<T, DraftError> {
    Err(DraftError { field, problem })
}

/// Shows a value from a draft in a message: quoted as written, cut at 140 characters.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(140).collect();
    if cut.len() < value.len() {
        format!("`{cut}…`")
    } else {
        format!("`{cut}`")
    }
}

fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl ClientDraft {
    /// The client, with every client rule checked and the defaults applied.
    pub fn build(self, defaults: LifetimeDefaults) -> Result<Client, DraftError> {
        let id = check_id(&self.id)?;
        let matcher = self.identity.matcher()?;
        check_values(DraftField::Scopes, &self.scopes, check_scope, SCOPE_RULE)?;
        check_values(
            DraftField::Audiences,
            &self.audiences,
            check_audience,
            AUDIENCE_RULE,
        )?;
        check_values(
            DraftField::IntrospectAudiences,
            &self.introspect_audiences,
            check_audience,
            AUDIENCE_RULE,
        )?;
        let default_scopes = match self.default_scopes {
            Some(d) => subset(DraftField::DefaultScopes, d, &self.scopes, "scopes")?,
            None => self.scopes.clone(),
        };
        let default_audiences = match self.default_audiences {
            Some(d) => subset(
                DraftField::DefaultAudiences,
                d,
                &self.audiences,
                "audiences",
            )?,
            None if self.audiences.len() == 1 => self.audiences.clone(),
            None => Vec::new(),
        };
        let permissions = permissions(self.permissions)?;
        let (default_lifetime, max_lifetime) =
            lifetimes(self.default_lifetime, self.max_lifetime, defaults)?;
        let exchange = exchange_policy(
            self.serves,
            self.act_for,
            self.delegate_audiences,
            self.delegate_scopes,
            &self.audiences,
            self.asserts_txn_subjects,
        )?;
        Ok(Client {
            id,
            matcher,
            scopes: self.scopes,
            default_scopes,
            audiences: self.audiences,
            default_audiences,
            introspect_audiences: self.introspect_audiences,
            permissions,
            default_lifetime,
            max_lifetime,
            enabled: self.enabled,
            secret_hash: None,
            exchange,
        })
    }
}

/// The exchange policy: served audiences and delegation audiences are audiences; `act_for`
/// names client ids (or `*`); delegation is all or nothing — whom, and what it may call;
/// `asserts_txn_subjects` as registered.
fn exchange_policy(
    serves: Vec<String>,
    act_for: Vec<String>,
    delegate_audiences: Vec<String>,
    delegate_scopes: Vec<String>,
    audiences: &[String],
    asserts_txn_subjects: bool,
) -> Result<ExchangePolicy, DraftError> {
    check_values(DraftField::Serves, &serves, check_audience, AUDIENCE_RULE)?;
    check_values(DraftField::ActFor, &act_for, check_actee, ACT_FOR_RULE)?;
    check_values(
        DraftField::DelegateScopes,
        &delegate_scopes,
        check_scope,
        SCOPE_RULE,
    )?;
    let delegate_audiences = subset(
        DraftField::DelegateAudiences,
        delegate_audiences,
        audiences,
        "audiences",
    )?;
    match (act_for.is_empty(), delegate_audiences.is_empty()) {
        (false, true) => refuse(
            DraftField::DelegateAudiences,
            "is empty, but act_for is set: name the audiences this client may call on another's behalf".into(),
        ),
        (true, false) => refuse(
            DraftField::ActFor,
            "is empty, but delegate_audiences is set: name the clients this client may act for (or \"*\")".into(),
        ),
        _ if act_for.is_empty() && !delegate_scopes.is_empty() => refuse(
            DraftField::ActFor,
            "is empty, but delegate_scopes is set: name the clients this client may act for (or \"*\")".into(),
        ),
        _ => Ok(ExchangePolicy {
            serves,
            act_for,
            delegate_audiences,
            delegate_scopes,
            asserts_txn_subjects,
        }),
    }
}

const ACT_FOR_RULE: &str =
    "act_for names client ids (1–128 characters of A-Z a-z 0-9 . _ : -) or \"*\" for any";

fn check_actee(value: &str) -> Result<(), &'static str> {
    if value == "*" || ClientId::try_new(value).is_ok() {
        Ok(())
    } else {
        Err("is not a client id")
    }
}

impl IdentityDraft {
    /// The one matcher set, checked.
    fn matcher(self) -> Result<CertificateMatcher, DraftError> {
        let set: Vec<DraftField> = [
            (DraftField::SanUri, self.san_uri.is_some()),
            (DraftField::SanDns, self.san_dns.is_some()),
            (DraftField::SubjectDn, self.subject_dn.is_some()),
            (DraftField::PinnedSha256, self.pinned_sha256.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, is_set)| is_set.then_some(field))
        .collect();
        const ONE_OF: &str = "san_uri, san_dns, subject_dn or pinned_sha256";
        match set.as_slice() {
            [] => refuse(
                DraftField::Client,
                format!("has no identity: set exactly one of {ONE_OF}"),
            ),
            [_] => self.the_one(),
            more => {
                let keys: Vec<&str> = more.iter().map(|f| f.key()).collect();
                refuse(
                    DraftField::Client,
                    format!("sets {}: keep exactly one of {ONE_OF}", keys.join(" and ")),
                )
            }
        }
    }

    fn the_one(self) -> Result<CertificateMatcher, DraftError> {
        let empty = |field: DraftField| {
            refuse(
                field,
                "is empty: give the certificate identity this client presents".into(),
            )
        };
        let (field, built) = match self {
            Self {
                san_uri: Some(v), ..
            } if v.trim().is_empty() => return empty(DraftField::SanUri),
            Self {
                san_dns: Some(v), ..
            } if v.trim().is_empty() => return empty(DraftField::SanDns),
            Self {
                subject_dn: Some(v),
                ..
            } if v.trim().is_empty() => {
                return empty(DraftField::SubjectDn);
            }
            Self {
                pinned_sha256: Some(v),
                ..
            } if v.is_empty() => {
                return empty(DraftField::PinnedSha256);
            }
            Self {
                san_uri: Some(v), ..
            } => (DraftField::SanUri, CertificateMatcher::try_san_uri(&v)),
            Self {
                san_dns: Some(v), ..
            } => (DraftField::SanDns, CertificateMatcher::try_san_dns(&v)),
            Self {
                subject_dn: Some(v),
                ..
            } => (
                DraftField::SubjectDn,
                CertificateMatcher::try_subject_dn(&v),
            ),
            Self {
                pinned_sha256: Some(v),
                ..
            } => (DraftField::PinnedSha256, CertificateMatcher::try_pinned(&v)),
            Self { .. } => return refuse(DraftField::Client, "has no identity".into()),
        };
        built.or_else(|e| refuse(field, format!("is not usable: {e}")))
    }
}

const SCOPE_RULE: &str = "a scope is 1–128 printable ASCII characters without space, '\"' or '\\'";
const AUDIENCE_RULE: &str = "an audience is 1–512 characters without whitespace, usually a URL";

fn check_id(id: &str) -> Result<ClientId, DraftError> {
    let problem = if id.is_empty() {
        "is empty"
    } else if id.chars().count() > MAX_CLIENT_ID_LEN {
        "is too long"
    } else {
        match ClientId::try_new(id) {
            Ok(id) => return Ok(id),
            Err(_) => "has a character that is not allowed",
        }
    };
    refuse(
        DraftField::Id,
        format!(
            "{} {problem}: use 1–{MAX_CLIENT_ID_LEN} characters of A-Z a-z 0-9 . _ : -",
            shown(id)
        ),
    )
}

/// RFC 6749 §3.3 scope-token: `1*( %x21 / %x23-5B / %x5D-7E )`, here at most
/// [`MAX_SCOPE_LEN`] characters.
fn check_scope(scope: &str) -> Result<(), &'static str> {
    if scope.is_empty() {
        Err("is empty")
    } else if scope.chars().count() > MAX_SCOPE_LEN {
        Err("is too long")
    } else if super::is_scope_token(scope) {
        Ok(())
    } else {
        Err("has a character that is not allowed")
    }
}

/// An audience: 1–[`MAX_AUDIENCE_LEN`] characters, no whitespace or control characters.
fn check_audience(audience: &str) -> Result<(), &'static str> {
    if audience.is_empty() {
        Err("is empty")
    } else if audience.chars().count() > MAX_AUDIENCE_LEN {
        Err("is too long")
    } else if super::is_audience(audience) {
        Ok(())
    } else {
        Err("contains whitespace")
    }
}

/// Every value well-formed, none twice.
fn check_values(
    field: DraftField,
    values: &[String],
    check: fn(&str) -> Result<(), &'static str>,
    rule: &str,
) -> Result<(), DraftError> {
    for (n, value) in values.iter().enumerate() {
        if let Err(problem) = check(value) {
            return refuse(field, format!("{} {problem}: {rule}", shown(value)));
        }
        if values[..n].contains(value) {
            return refuse(
                field,
                format!("lists {} twice: remove the duplicate", shown(value)),
            );
        }
    }
    Ok(())
}

/// Defaults that are all allowed values, none twice.
fn subset(
    field: DraftField,
    items: Vec<String>,
    of: &[String],
    of_key: &str,
) -> Result<Vec<String>, DraftError> {
    for (n, item) in items.iter().enumerate() {
        if !of.contains(item) {
            return refuse(
                field,
                format!(
                    "{} is not in {of_key}: add it to {of_key} or remove it from {}",
                    shown(item),
                    field.key()
                ),
            );
        }
        if items[..n].contains(item) {
            return refuse(
                field,
                format!("lists {} twice: remove the duplicate", shown(item)),
            );
        }
    }
    Ok(items)
}

fn permissions(names: Option<Vec<String>>) -> Result<Vec<Permission>, DraftError> {
    let Some(names) = names else {
        return Ok(vec![Permission::Issue]);
    };
    let mut permissions = Vec::with_capacity(names.len());
    for name in &names {
        let Some(p) = Permission::try_from_name(name) else {
            return refuse(
                DraftField::Permissions,
                format!(
                    "{} is not a permission: use any of {}",
                    shown(name),
                    Permission::ALL.map(Permission::as_str).join(", ")
                ),
            );
        };
        if permissions.contains(&p) {
            return refuse(
                DraftField::Permissions,
                format!("lists {} twice: remove the duplicate", shown(name)),
            );
        }
        permissions.push(p);
    }
    Ok(permissions)
}

/// Positive whole seconds; the maximum under the ceiling; a default given at most the
/// maximum (refused, not lowered: the operator wrote it); a default left out is
/// `tokens.default_lifetime`, lowered to the maximum.
fn lifetimes(
    default: Option<Duration>,
    max: Option<Duration>,
    defaults: LifetimeDefaults,
) -> Result<(Duration, Duration), DraftError> {
    let whole = |field: DraftField, d: Option<Duration>| match d {
        Some(d) if d.is_zero() || d.subsec_nanos() != 0 => refuse(
            field,
            format!("({d:?}) must be a positive whole number of seconds, like \"300s\" or \"5m\""),
        ),
        d => Ok(d),
    };
    let default = whole(DraftField::DefaultLifetime, default)?;
    let max = match whole(DraftField::MaxLifetime, max)? {
        None => defaults.max,
        Some(d) if d > defaults.max => {
            return refuse(
                DraftField::MaxLifetime,
                format!(
                    "({}) must not exceed tokens.max_lifetime ({}), the global ceiling: lower it or raise tokens.max_lifetime",
                    show_duration(d),
                    show_duration(defaults.max)
                ),
            );
        }
        Some(d) => d,
    };
    match default {
        None => Ok((defaults.default.min(max), max)),
        Some(d) if d > max => refuse(
            DraftField::DefaultLifetime,
            format!(
                "({}) must not exceed this client's max_lifetime ({}): lower default_lifetime or raise max_lifetime",
                show_duration(d),
                show_duration(max)
            ),
        ),
        Some(d) => Ok((d, max)),
    }
}

impl fmt::Display for DraftField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}
