//! Who a client certificate says its holder is: SAN URIs, SAN DNS names and the subject DN as parsed names, the matchers a registered client uses to claim a certificate, and its key ([`CertificateKey`], for a workload's self-signed assertion).
//!
//! A registered client claims certificates with exactly one [`CertificateMatcher`]: a name
//! (RFC 8705 `tls_client_auth`, for CA-issued certificates) or pinned thumbprints
//! (`self_signed_tls_client_auth`, [`CertificateMatcher::Pinned`], matched only for peers TLS
//! accepted by their pin). The certificate side is a [`CertificateIdentity`], read from the
//! leaf certificate's DER after TLS has verified it.
//!
//! # Matching rules
//!
//! These rules decide which client a certificate authenticates as, so they
//! are deliberately strict:
//!
//! * **SAN URI**: exact byte equality with one of the certificate's URI SANs.
//!   A URI that merely starts with, or is a prefix of, the registered one
//!   (`spiffe://x/demo-evil` or `spiffe://x/demo/sub` against
//!   `spiffe://x/demo`) does not match. No case folding, no normalisation.
//! * **SAN DNS**: ASCII-case-insensitive equality with one of the certificate's
//!   DNS SANs, literal only. Wildcards are refused at registration, and a
//!   certificate DNS SAN that is itself a wildcard (`*.example.com`) never
//!   matches anything.
//! * **Subject DN**: compared as parsed names, never as strings:
//!   - the same number of RDNs in the same order (`CN=a,O=b` ≠ `O=b,CN=a`,
//!     and neither a prefix nor an extension of a name matches it);
//!   - within one multi-valued RDN (`CN=a+UID=b`) the attributes form a set,
//!     so their order does not matter;
//!   - attribute types are compared by OID (`CN`, `cn`, `commonName` and
//!     `2.5.4.3` are one type);
//!   - string values are compared after RFC 4518-style preparation, as
//!     RFC 5280 §7.1 asks: every Unicode white-space character counts as a
//!     space, leading and trailing spaces are removed, inner runs of spaces
//!     collapse to one, and case is ignored (Unicode lowercase). Unicode
//!     normalisation (NFKC) is not applied;
//!   - RFC 4514 escapes are decoded before comparison: `CN=Acme\, Inc.` is the
//!     single value `Acme, Inc.`, while an unescaped comma always separates
//!     RDNs, so it never equals a certificate whose subject has the two RDNs
//!     `CN=Acme` and `O=Inc.`;
//!   - a certificate attribute whose value cannot be read as a string is kept
//!     as `#` + the hex of its DER encoding. Configured names may not use the
//!     `#hex` form, so such an attribute never equals a configured name;
//!   - an empty subject never matches, so a `subject_dn` matcher can never
//!     claim every certificate that has no subject.
//!
//! Every name has one canonical RFC 4514 string ([`DistinguishedName::canonical`]):
//! most specific RDN first, known attribute types by their upper-case short name
//! (others as a dotted OID), prepared values, re-escaped, the attributes of a
//! multi-valued RDN sorted. Two names are equal exactly when their canonical
//! strings are equal, which makes the canonical string usable as a storage key
//! ([`MatcherKey`]).
//!
//! # Limits
//!
//! Input can come from the network or a configuration file, so it is bounded:
//! DN strings to [`MAX_DN_LEN`] bytes and [`MAX_RDNS`] RDNs, certificates to
//! [`MAX_CERTIFICATE_DER_LEN`] bytes, SAN URIs to [`MAX_SAN_URI_LEN`] bytes and
//! DNS names to [`MAX_DNS_NAME_LEN`] bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::crypto::{Algorithm, CertificateThumbprint, PublicKey};
use x509_parser::asn1_rs::{Any, Class, Header, Tag};
use x509_parser::extensions::GeneralName;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Longest accepted RFC 4514 distinguished-name string, in bytes.
pub const MAX_DN_LEN: usize = 4096;
/// Most RDNs accepted in a distinguished-name string.
pub const MAX_RDNS: usize = 64;
/// Largest accepted certificate, in DER bytes.
pub const MAX_CERTIFICATE_DER_LEN: usize = 64 * 1024;
/// Longest accepted SAN URI, in bytes.
pub const MAX_SAN_URI_LEN: usize = 2048;
/// Longest accepted SAN DNS name, in bytes.
pub const MAX_DNS_NAME_LEN: usize = 253;

const MAX_DNS_LABEL_LEN: usize = 63;

const KIND_SAN_URI: &str = "san_uri";
const KIND_SAN_DNS: &str = "san_dns";
const KIND_SUBJECT_DN: &str = "subject_dn";
const KIND_SELF_SIGNED: &str = "self_signed";
/// Most thumbprints one self-signed client may pin (room to roll its certificate over).
pub const MAX_PINS: usize = 8;

/// Why a certificate, a name or a matcher was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The certificate DER could not be parsed.
    #[error("the certificate could not be parsed as X.509: {0}")]
    Certificate(String),
    /// A distinguished-name string is not a valid RFC 4514 name.
    #[error("invalid distinguished name {input:?}: {reason}")]
    DistinguishedName {
        /// The string as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A SAN URI matcher is not an absolute URI.
    #[error(
        "invalid SAN URI {0:?}: expected an absolute ASCII URI `scheme:rest` \
         (scheme [a-zA-Z][a-zA-Z0-9+.-]*) without white space or control characters"
    )]
    SanUri(String),
    /// A SAN DNS matcher is not a hostname.
    #[error(
        "invalid SAN DNS name {0:?}: expected a hostname of dot-separated labels, \
         each 1 to 63 letters, digits or '-', not starting or ending with '-'"
    )]
    SanDns(String),
    /// A SAN DNS matcher is a wildcard; matchers are literal names only.
    #[error("invalid SAN DNS name {0:?}: wildcards are not allowed, register the literal name")]
    WildcardDns(String),
    /// A subject DN matcher is the empty name, which would claim every certificate without a subject.
    #[error("invalid subject DN: the empty name cannot identify a client")]
    EmptySubjectDn,
    /// An input is longer than its limit (the input itself is not echoed).
    #[error("{what} is {len} bytes long, more than the limit of {max} bytes")]
    TooLong {
        /// Which input.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A stored matcher kind is none of `san_uri`, `san_dns`, `subject_dn`, `self_signed`.
    #[error(
        "unknown certificate matcher kind {0:?}: expected san_uri, san_dns, subject_dn or self_signed"
    )]
    UnknownMatcherKind(String),
    /// A pinned thumbprint is not a SHA-256 digest.
    #[error(
        "invalid certificate thumbprint {0:?}: expected a SHA-256 digest as 64 hex digits \
         (colons allowed, as `openssl x509 -fingerprint -sha256` prints it) or 43 base64url characters"
    )]
    Thumbprint(String),
    /// A self-signed client pins no thumbprint, or too many.
    #[error("a self-signed client pins between 1 and {MAX_PINS} certificate thumbprints, not {0}")]
    PinCount(usize),
}

fn refuse_if_longer(what: &'static str, input: &[u8], max: usize) -> Result<(), IdentityError> {
    if input.len() > max {
        return Err(IdentityError::TooLong {
            what,
            len: input.len(),
            max,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Attribute types
// ---------------------------------------------------------------------------

/// An attribute type with a well-known short name.
struct KnownAttributeType {
    oid: &'static str,
    /// Canonical (upper-case) short name.
    name: &'static str,
    /// Other names accepted on input, compared ASCII-case-insensitively.
    aliases: &'static [&'static str],
}

#[rustfmt::skip]
const KNOWN_ATTRIBUTE_TYPES: &[KnownAttributeType] = &[
    KnownAttributeType { oid: "2.5.4.3", name: "CN", aliases: &["commonName"] },
    KnownAttributeType { oid: "2.5.4.4", name: "SN", aliases: &["surname"] },
    KnownAttributeType { oid: "2.5.4.5", name: "SERIALNUMBER", aliases: &[] },
    KnownAttributeType { oid: "2.5.4.6", name: "C", aliases: &["countryName"] },
    KnownAttributeType { oid: "2.5.4.7", name: "L", aliases: &["localityName"] },
    KnownAttributeType { oid: "2.5.4.8", name: "ST", aliases: &["S", "stateOrProvinceName"] },
    KnownAttributeType { oid: "2.5.4.9", name: "STREET", aliases: &["streetAddress"] },
    KnownAttributeType { oid: "2.5.4.10", name: "O", aliases: &["organizationName"] },
    KnownAttributeType { oid: "2.5.4.11", name: "OU", aliases: &["organizationalUnitName"] },
    KnownAttributeType { oid: "2.5.4.12", name: "TITLE", aliases: &[] },
    KnownAttributeType { oid: "2.5.4.42", name: "GIVENNAME", aliases: &[] },
    KnownAttributeType { oid: "0.9.2342.19200300.100.1.1", name: "UID", aliases: &["userId"] },
    KnownAttributeType { oid: "0.9.2342.19200300.100.1.25", name: "DC", aliases: &["domainComponent"] },
    KnownAttributeType { oid: "1.2.840.113549.1.9.1", name: "EMAILADDRESS", aliases: &["E", "email"] },
];

/// The OID (dotted decimal) named by an RFC 4514 attribute type: a known
/// short name or alias (any case), or a dotted OID.
fn attribute_type_oid(attribute_type: &str) -> Result<String, String> {
    if attribute_type.is_empty() {
        return Err("an attribute type is empty".to_owned());
    }
    if attribute_type.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_numeric_oid(attribute_type);
    }
    KNOWN_ATTRIBUTE_TYPES
        .iter()
        .find(|known| {
            known.name.eq_ignore_ascii_case(attribute_type)
                || known
                    .aliases
                    .iter()
                    .any(|alias| alias.eq_ignore_ascii_case(attribute_type))
        })
        .map(|known| known.oid.to_owned())
        .ok_or_else(|| {
            format!(
                "unknown attribute type {attribute_type:?} (use a known short name or a dotted OID)"
            )
        })
}

/// Checks RFC 4512 `numericoid`: at least two arcs of decimal digits, no leading zeros.
fn parse_numeric_oid(oid: &str) -> Result<String, String> {
    let arcs_are_valid = oid.split('.').all(|arc| {
        !arc.is_empty()
            && arc.bytes().all(|b| b.is_ascii_digit())
            && (arc == "0" || !arc.starts_with('0'))
    });
    if !arcs_are_valid || !oid.contains('.') {
        return Err(format!(
            "attribute type {oid:?} is not a dotted OID (digits separated by '.', no leading zeros)"
        ));
    }
    Ok(oid.to_owned())
}

/// The canonical name of an attribute type: its short name if known, else its dotted OID.
fn attribute_type_name(oid: &str) -> &str {
    KNOWN_ATTRIBUTE_TYPES
        .iter()
        .find(|known| known.oid == oid)
        .map_or(oid, |known| known.name)
}

// ---------------------------------------------------------------------------
// Distinguished names
// ---------------------------------------------------------------------------

/// A distinguished name as a sequence of RDNs, compared as parsed names.
///
/// Equality, hashing and [`canonical`](Self::canonical) all follow the
/// subject-DN matching rules in the [module documentation](self).
/// Serialised (serde) as its canonical string; deserialised with
/// [`parse_rfc4514`](Self::parse_rfc4514). A name read from a certificate
/// with an unreadable value (canonical `#hex`) therefore does not deserialise.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DistinguishedName {
    /// Most specific RDN first (RFC 4514 order).
    rdns: Vec<Rdn>,
}

/// One relative distinguished name: a non-empty set of attributes, kept
/// sorted by their canonical text so that set equality is `Vec` equality.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Rdn {
    attributes: Vec<Attribute>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Attribute {
    /// Dotted decimal.
    oid: String,
    value: AttributeValue,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum AttributeValue {
    /// A string value after preparation (see [`prepare_value`]).
    Text(String),
    /// The DER encoding of a value that could not be read as a string.
    Unreadable(Vec<u8>),
}

impl DistinguishedName {
    /// Parses an RFC 4514 string, e.g. `CN=billing,O=Acme\, Inc.,C=US` (most
    /// specific RDN first, as RFC 4514 writes it; the reverse of DER order).
    ///
    /// Backslash escapes are decoded: `\,` `\+` `\"` `\\` `\<` `\>` `\;`
    /// `\=` `\#` `\ ` and `\XX` hex pairs (which together must form UTF-8).
    /// Attribute types are known short names or aliases in any case, or dotted
    /// OIDs. Spaces around attribute types are tolerated; spaces around values
    /// are insignificant anyway. Values in the `#hex` (BER) form, quoted values,
    /// unescaped `"`, `;`, `<`, `>` or NUL, and the same type=value pair twice
    /// within one RDN are refused. The empty string is the empty name.
    pub fn parse_rfc4514(s: &str) -> Result<Self, IdentityError> {
        refuse_if_longer("the distinguished name", s.as_bytes(), MAX_DN_LEN)?;
        Rfc4514Parser::new(s)
            .distinguished_name()
            .map_err(|reason| IdentityError::DistinguishedName {
                input: s.to_owned(),
                reason,
            })
    }

    /// Canonical RFC 4514 text: stable, used as the storage/uniqueness key.
    /// Two names are equal iff their canonical strings are equal.
    pub fn canonical(&self) -> String {
        let rdns: Vec<String> = self.rdns.iter().map(Rdn::canonical).collect();
        rdns.join(",")
    }

    /// Whether this is the empty name (no RDNs).
    pub fn is_empty(&self) -> bool {
        self.rdns.is_empty()
    }

    /// Reads a name from a parsed certificate. Never fails: a value that is
    /// not a readable string is kept as its DER encoding.
    fn from_x509_name(name: &X509Name<'_>) -> Self {
        let mut rdns: Vec<Rdn> = name
            .iter()
            .map(|rdn| Rdn::from_attributes(rdn.iter().map(Attribute::from_x509).collect()))
            .collect();
        // DER lists the least specific RDN first.
        rdns.reverse();
        DistinguishedName { rdns }
    }
}

impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl FromStr for DistinguishedName {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_rfc4514(s)
    }
}

impl TryFrom<String> for DistinguishedName {
    type Error = IdentityError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse_rfc4514(&s)
    }
}

impl From<DistinguishedName> for String {
    fn from(name: DistinguishedName) -> Self {
        name.canonical()
    }
}

impl Rdn {
    fn from_attributes(mut attributes: Vec<Attribute>) -> Self {
        attributes.sort_by_cached_key(Attribute::canonical);
        Rdn { attributes }
    }

    fn has_repeated_attribute(&self) -> bool {
        self.attributes
            .windows(2)
            .any(|pair| matches!(pair, [a, b] if a == b))
    }

    fn canonical(&self) -> String {
        let attributes: Vec<String> = self.attributes.iter().map(Attribute::canonical).collect();
        attributes.join("+")
    }
}

impl Attribute {
    fn from_x509(attribute: &AttributeTypeAndValue<'_>) -> Self {
        let value = attribute.attr_value();
        Attribute {
            oid: attribute.attr_type().to_id_string(),
            value: match decode_string_value(value) {
                Some(text) => AttributeValue::Text(prepare_value(&text)),
                None => AttributeValue::Unreadable(der_encoding(value)),
            },
        }
    }

    fn canonical(&self) -> String {
        let mut out = String::from(attribute_type_name(&self.oid));
        out.push('=');
        match &self.value {
            AttributeValue::Text(text) => push_escaped_value(&mut out, text),
            AttributeValue::Unreadable(der) => {
                out.push('#');
                for byte in der {
                    out.push_str(&format!("{byte:02x}"));
                }
            }
        }
        out
    }
}

/// RFC 4518-style preparation (RFC 5280 §7.1): white space as single inner
/// spaces, none leading or trailing, Unicode lowercase.
fn prepare_value(value: &str) -> String {
    let mut prepared = String::with_capacity(value.len());
    let mut space_pending = false;
    for c in value.chars() {
        if c.is_whitespace() {
            space_pending = !prepared.is_empty();
            continue;
        }
        if space_pending {
            prepared.push(' ');
            space_pending = false;
        }
        prepared.extend(c.to_lowercase());
    }
    prepared
}

/// Appends `value` escaped as an RFC 4514 `string`. Control characters are
/// written as `\XX` hex pairs so that canonical strings stay printable.
fn push_escaped_value(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut utf8 = [0u8; 4];
                for byte in c.encode_utf8(&mut utf8).bytes() {
                    out.push_str(&format!("\\{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
}

/// Reads a certificate attribute value as text, if it is a string type whose
/// contents decode. `None` for everything else.
fn decode_string_value(value: &Any<'_>) -> Option<String> {
    if value.header.class() != Class::Universal || value.header.is_constructed() {
        return None;
    }
    let data = value.data;
    match value.header.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::BmpString => decode_utf16_be(data),
        Tag::UniversalString => decode_utf32_be(data),
        // Read as Latin-1, as most software does in practice.
        Tag::TeletexString => Some(data.iter().copied().map(char::from).collect()),
        _ => None,
    }
}

fn decode_utf16_be(data: &[u8]) -> Option<String> {
    let chunks = data.chunks_exact(2);
    if !chunks.remainder().is_empty() {
        return None;
    }
    let units = chunks.map(|pair| pair.try_into().map(u16::from_be_bytes));
    let units: Result<Vec<u16>, _> = units.collect();
    char::decode_utf16(units.ok()?)
        .collect::<Result<String, _>>()
        .ok()
}

fn decode_utf32_be(data: &[u8]) -> Option<String> {
    let chunks = data.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return None;
    }
    chunks
        .map(|quad| {
            quad.try_into()
                .ok()
                .map(u32::from_be_bytes)
                .and_then(char::from_u32)
        })
        .collect()
}

/// Re-encodes a parsed value as DER: identifier octets, definite length, contents.
fn der_encoding(value: &Any<'_>) -> Vec<u8> {
    let mut der = identifier_octets(&value.header);
    push_der_length(&mut der, value.data.len());
    der.extend_from_slice(value.data);
    der
}

fn identifier_octets(header: &Header<'_>) -> Vec<u8> {
    let class_bits = (header.class() as u8) << 6;
    let constructed_bit = if header.is_constructed() { 0x20 } else { 0 };
    let Tag(number) = header.tag();
    match u8::try_from(number) {
        Ok(low) if low < 0x1f => vec![class_bits | constructed_bit | low],
        _ => {
            let mut octets = vec![class_bits | constructed_bit | 0x1f];
            push_base128(&mut octets, number);
            octets
        }
    }
}

/// Big-endian base 128, continuation bit on all but the last octet.
fn push_base128(out: &mut Vec<u8>, mut number: u32) {
    let mut groups = vec![(number & 0x7f) as u8];
    number >>= 7;
    while number > 0 {
        groups.push((number & 0x7f) as u8 | 0x80);
        number >>= 7;
    }
    out.extend(groups.iter().rev());
}

fn push_der_length(out: &mut Vec<u8>, len: usize) {
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let bytes = len.to_be_bytes();
            let significant: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
            out.push(0x80 | significant.len() as u8);
            out.extend(significant);
        }
    }
}

// ---------------------------------------------------------------------------
// RFC 4514 parsing
// ---------------------------------------------------------------------------

/// What ended an attribute value.
enum ValueEnd {
    /// `+`: another attribute of the same RDN follows.
    Plus,
    /// `,`: another RDN follows.
    Comma,
    /// End of input.
    End,
}

/// A single-pass RFC 4514 parser. Errors are plain reasons; the caller adds
/// the input.
struct Rfc4514Parser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    input: &'a str,
}

impl<'a> Rfc4514Parser<'a> {
    fn new(input: &'a str) -> Self {
        Rfc4514Parser {
            chars: input.chars().peekable(),
            input,
        }
    }

    fn distinguished_name(mut self) -> Result<DistinguishedName, String> {
        if self.input.trim().is_empty() {
            return Ok(DistinguishedName { rdns: Vec::new() });
        }
        let mut rdns = Vec::new();
        let mut attributes = Vec::new();
        loop {
            let oid = self.attribute_type()?;
            let (value, end) = self.attribute_value()?;
            attributes.push(Attribute {
                oid,
                value: AttributeValue::Text(value),
            });
            if matches!(end, ValueEnd::Plus) {
                continue;
            }
            let rdn = Rdn::from_attributes(std::mem::take(&mut attributes));
            if rdn.has_repeated_attribute() {
                return Err(format!(
                    "the RDN {:?} repeats an attribute",
                    rdn.canonical()
                ));
            }
            rdns.push(rdn);
            if rdns.len() > MAX_RDNS {
                return Err(format!("more than {MAX_RDNS} RDNs"));
            }
            if matches!(end, ValueEnd::End) {
                break;
            }
        }
        Ok(DistinguishedName { rdns })
    }

    /// Reads up to and including `=`, returning the attribute type's OID.
    fn attribute_type(&mut self) -> Result<String, String> {
        let mut attribute_type = String::new();
        loop {
            match self.chars.next() {
                Some('=') => break,
                Some(c @ (',' | '+')) => {
                    return Err(format!(
                        "expected `type=value` but found {c:?} after {:?}",
                        attribute_type.trim()
                    ));
                }
                None if attribute_type.trim().is_empty() => {
                    return Err("expected `type=value` after the last separator".to_owned());
                }
                None => {
                    return Err(format!(
                        "attribute type {:?} is not followed by '='",
                        attribute_type.trim()
                    ));
                }
                Some(c) => attribute_type.push(c),
            }
        }
        attribute_type_oid(attribute_type.trim())
    }

    /// Reads a value up to an unescaped `,` or `+` or the end, decoding
    /// escapes, and returns it prepared.
    fn attribute_value(&mut self) -> Result<(String, ValueEnd), String> {
        while self.chars.next_if_eq(&' ').is_some() {}
        if self.chars.peek() == Some(&'#') {
            return Err(
                "values in the #hex (BER) form are not supported; write the value as a string"
                    .to_owned(),
            );
        }
        let mut bytes = Vec::new();
        let end = loop {
            match self.chars.next() {
                None => break ValueEnd::End,
                Some(',') => break ValueEnd::Comma,
                Some('+') => break ValueEnd::Plus,
                Some('\\') => bytes.push(self.escaped_byte()?),
                Some('"') => {
                    return Err("quoted values are not supported; escape '\"' as '\\\"'".to_owned());
                }
                Some(c @ (';' | '<' | '>' | '\0')) => {
                    return Err(format!(
                        "{c:?} must be escaped with a backslash inside a value"
                    ));
                }
                Some(c) => {
                    let mut utf8 = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
        };
        let value = String::from_utf8(bytes)
            .map_err(|_| "escaped hex pairs do not form valid UTF-8".to_owned())?;
        Ok((prepare_value(&value), end))
    }

    /// Decodes what follows a backslash: a special character or a hex pair.
    /// A special character is returned as its (ASCII) byte.
    fn escaped_byte(&mut self) -> Result<u8, String> {
        match self.chars.next() {
            Some(c @ (',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' | '#' | ' ')) => Ok(c as u8),
            Some(high) if high.is_ascii_hexdigit() => {
                let low = self
                    .chars
                    .next()
                    .filter(char::is_ascii_hexdigit)
                    .ok_or_else(|| {
                        format!("escape '\\{high}' must be followed by a second hex digit")
                    })?;
                let pair = [high, low].iter().collect::<String>();
                u8::from_str_radix(&pair, 16)
                    .map_err(|_| format!("escape '\\{pair}' is not a hex pair"))
            }
            Some(c) => Err(format!("'\\{c}' is not a valid escape")),
            None => Err("the name ends with an unfinished '\\' escape".to_owned()),
        }
    }
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// What a certificate says about its holder.
#[derive(Clone, Debug)]
pub struct CertificateIdentity {
    /// URI SANs, exactly as the certificate carries them.
    pub san_uris: Vec<String>,
    /// DNS SANs, exactly as the certificate carries them (including wildcards,
    /// which never match).
    pub san_dns: Vec<String>,
    /// The subject, as a parsed name.
    pub subject: DistinguishedName,
    /// Its public key, where it is one a JWS can be checked under (P-256, Ed25519, RSA), with
    /// the one algorithm taken under it: what a workload's self-signed assertion is verified
    /// with.
    pub key: Option<CertificateKey>,
}

/// A certificate's public key and the algorithm a signature under it must use (decided by
/// the key, never by what is signed): ES256 for P-256, EdDSA for Ed25519, RS256 for RSA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateKey {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The key.
    pub public: PublicKey,
}

impl CertificateKey {
    /// The key of `spki`, if it is one of the three kinds.
    fn of(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<Self> {
        use x509_parser::oid_registry::{
            OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
        };
        let oid = &spki.algorithm.algorithm;
        let bits: &[u8] = &spki.subject_public_key.data;
        let (algorithm, public) = if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
            match bits {
                [4, point @ ..] if curve == OID_EC_P256 && point.len() == 64 => {
                    let (x, y) = point.split_at(32);
                    let (x, y) = (x.to_vec(), y.to_vec());
                    (Algorithm::Es256, PublicKey::P256 { x, y })
                }
                _ => return None,
            }
        } else if *oid == OID_SIG_ED25519 && bits.len() == 32 {
            let x = bits.to_vec();
            (Algorithm::EdDsa, PublicKey::Ed25519 { x })
        } else if *oid == OID_PKCS1_RSAENCRYPTION {
            let x509_parser::public_key::PublicKey::RSA(rsa) = spki.parsed().ok()? else {
                return None;
            };
            let unpadded = |b: &[u8]| b.iter().skip_while(|&&x| x == 0).copied().collect();
            let (n, e) = (unpadded(rsa.modulus), unpadded(rsa.exponent));
            (Algorithm::Rs256, PublicKey::Rsa { n, e })
        } else {
            return None;
        };
        Some(Self { algorithm, public })
    }
}

impl CertificateIdentity {
    /// Parses the leaf certificate's DER (SAN extension and subject only; no
    /// signature checks — TLS did those).
    ///
    /// Fails on anything that is not exactly one well-formed certificate, on
    /// a malformed or repeated SAN extension, and on more than
    /// [`MAX_CERTIFICATE_DER_LEN`] bytes. SAN entries of other types (IP
    /// addresses, e-mail, …) are ignored.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        refuse_if_longer("the certificate", der, MAX_CERTIFICATE_DER_LEN)?;
        let (rest, certificate) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(IdentityError::Certificate(format!(
                "{} unexpected bytes after the certificate",
                rest.len()
            )));
        }
        let san = certificate
            .subject_alternative_name()
            .map_err(|e| IdentityError::Certificate(format!("subject alternative name: {e}")))?;
        let mut san_uris = Vec::new();
        let mut san_dns = Vec::new();
        for name in san.iter().flat_map(|san| &san.value.general_names) {
            match name {
                GeneralName::URI(uri) => san_uris.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => san_dns.push((*dns).to_owned()),
                _ => {}
            }
        }
        Ok(CertificateIdentity {
            san_uris,
            san_dns,
            subject: DistinguishedName::from_x509_name(certificate.subject()),
            key: CertificateKey::of(certificate.public_key()),
        })
    }

    /// Every key under which a registered matcher could claim this
    /// certificate (one per SAN URI, SAN DNS and the subject), without
    /// duplicates.
    ///
    /// For any matcher `m` built by the `try_*` constructors,
    /// `m.matches(self)` exactly when `self.lookup_keys()` contains
    /// `m.key()`. Wildcard DNS SANs and an empty subject yield no key, as
    /// they never match.
    pub fn lookup_keys(&self) -> Vec<MatcherKey> {
        let uris = self
            .san_uris
            .iter()
            .filter(|uri| !uri.is_empty())
            .map(|uri| MatcherKey::new(KIND_SAN_URI, uri.clone()));
        let dns_names = self
            .san_dns
            .iter()
            .filter(|dns| is_literal_dns_san(dns))
            .map(|dns| MatcherKey::new(KIND_SAN_DNS, dns.to_ascii_lowercase()));
        let subject = (!self.subject.is_empty())
            .then(|| MatcherKey::new(KIND_SUBJECT_DN, self.subject.canonical()));
        let mut keys: Vec<MatcherKey> = Vec::new();
        for key in uris.chain(dns_names).chain(subject) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }
}

/// Whether a certificate DNS SAN may match at all: non-empty and not a wildcard.
fn is_literal_dns_san(dns: &str) -> bool {
    !dns.is_empty() && !dns.contains('*')
}

// ---------------------------------------------------------------------------
// Matchers
// ---------------------------------------------------------------------------

/// How a registered client claims certificates (RFC 8705 `tls_client_auth`:
/// exactly one of these). See the [module documentation](self) for the
/// matching rules.
///
/// Build matchers with the `try_*` constructors, which validate and
/// normalise; a variant built directly still never matches an empty value,
/// a wildcard DNS name or an empty subject.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CertificateMatcher {
    /// Exact equality with a URI SAN (`tls_client_auth_san_uri`).
    SanUri(String),
    /// ASCII-case-insensitive equality with a literal DNS SAN
    /// (`tls_client_auth_san_dns`); stored lower-case.
    SanDns(String),
    /// Parsed-name equality with the subject (`tls_client_auth_subject_dn`).
    SubjectDn(DistinguishedName),
    /// The SHA-256 thumbprint of the whole certificate is one of these
    /// (`self_signed_tls_client_auth`); sorted, without duplicates, 1 to [`MAX_PINS`].
    /// Matched only for peers accepted by their pin, never for CA-verified ones.
    Pinned(Vec<CertificateThumbprint>),
}

impl CertificateMatcher {
    /// A SAN URI matcher: an absolute URI (`scheme://…` or `scheme:…`, scheme
    /// `[a-zA-Z][a-zA-Z0-9+.-]*`, something after the colon), ASCII only, no
    /// white space or control characters, at most [`MAX_SAN_URI_LEN`] bytes.
    /// Stored as given: comparison is exact and case-sensitive.
    pub fn try_san_uri(s: &str) -> Result<Self, IdentityError> {
        refuse_if_longer("the SAN URI", s.as_bytes(), MAX_SAN_URI_LEN)?;
        if !is_absolute_uri(s) {
            return Err(IdentityError::SanUri(s.to_owned()));
        }
        Ok(CertificateMatcher::SanUri(s.to_owned()))
    }

    /// A SAN DNS matcher: a hostname (labels of 1–63 of `[a-z0-9-]`, not
    /// starting or ending with `-`, at most [`MAX_DNS_NAME_LEN`] bytes, no
    /// trailing dot), ASCII-lowercased. Wildcards (`*.example.com`) are refused.
    pub fn try_san_dns(s: &str) -> Result<Self, IdentityError> {
        refuse_if_longer("the SAN DNS name", s.as_bytes(), MAX_DNS_NAME_LEN)?;
        if s.contains('*') {
            return Err(IdentityError::WildcardDns(s.to_owned()));
        }
        let name = s.to_ascii_lowercase();
        if !name.split('.').all(is_dns_label) {
            return Err(IdentityError::SanDns(s.to_owned()));
        }
        Ok(CertificateMatcher::SanDns(name))
    }

    /// A subject DN matcher from an RFC 4514 string (see
    /// [`DistinguishedName::parse_rfc4514`]). The empty name is refused.
    pub fn try_subject_dn(s: &str) -> Result<Self, IdentityError> {
        let name = DistinguishedName::parse_rfc4514(s)?;
        if name.is_empty() {
            return Err(IdentityError::EmptySubjectDn);
        }
        Ok(CertificateMatcher::SubjectDn(name))
    }

    /// A pinned-thumbprint matcher from thumbprints written as hex (64 digits, colons and
    /// either case allowed) or base64url (43 characters): 1 to [`MAX_PINS`] of them,
    /// duplicates folded.
    pub fn try_pinned<S: AsRef<str>>(thumbprints: &[S]) -> Result<Self, IdentityError> {
        if thumbprints.len() > MAX_PINS {
            return Err(IdentityError::PinCount(thumbprints.len()));
        }
        let mut pins = thumbprints
            .iter()
            .map(|t| parse_thumbprint(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        pins.sort();
        pins.dedup();
        if pins.is_empty() {
            return Err(IdentityError::PinCount(0));
        }
        Ok(CertificateMatcher::Pinned(pins))
    }

    /// Parses the stored form: kind is `"san_uri"` | `"san_dns"` |
    /// `"subject_dn"` | `"self_signed"`, value as for the matching `try_*` constructor
    /// (for `self_signed`, the thumbprints joined by commas).
    /// `try_from_parts(m.kind(), &m.value())` gives back `m`.
    pub fn try_from_parts(kind: &str, value: &str) -> Result<Self, IdentityError> {
        match kind {
            KIND_SAN_URI => Self::try_san_uri(value),
            KIND_SAN_DNS => Self::try_san_dns(value),
            KIND_SUBJECT_DN => Self::try_subject_dn(value),
            KIND_SELF_SIGNED => Self::try_pinned(&value.split(',').collect::<Vec<_>>()),
            other => Err(IdentityError::UnknownMatcherKind(other.to_owned())),
        }
    }

    /// `"san_uri"` | `"san_dns"` | `"subject_dn"` | `"self_signed"`.
    pub fn kind(&self) -> &'static str {
        match self {
            CertificateMatcher::SanUri(_) => KIND_SAN_URI,
            CertificateMatcher::SanDns(_) => KIND_SAN_DNS,
            CertificateMatcher::SubjectDn(_) => KIND_SUBJECT_DN,
            CertificateMatcher::Pinned(_) => KIND_SELF_SIGNED,
        }
    }

    /// The canonical value: the URI as given, the DNS name lower-cased, the
    /// DN's [`canonical`](DistinguishedName::canonical) string, the pinned thumbprints in
    /// base64url joined by commas.
    pub fn value(&self) -> String {
        match self {
            CertificateMatcher::SanUri(uri) => uri.clone(),
            CertificateMatcher::SanDns(dns) => dns.to_ascii_lowercase(),
            CertificateMatcher::SubjectDn(name) => name.canonical(),
            CertificateMatcher::Pinned(pins) => pins
                .iter()
                .map(CertificateThumbprint::to_b64url)
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// The pinned thumbprints (empty for the CA-chain matchers).
    pub fn pins(&self) -> &[CertificateThumbprint] {
        match self {
            CertificateMatcher::Pinned(pins) => pins,
            _ => &[],
        }
    }

    /// The name lookup key `(kind, canonical value)` of a CA-chain matcher; `None` for a
    /// pinned one, which is looked up by its thumbprints ([`Self::pins`]).
    pub fn key(&self) -> Option<MatcherKey> {
        match self {
            CertificateMatcher::Pinned(_) => None,
            _ => Some(MatcherKey::new(self.kind(), self.value())),
        }
    }

    /// Whether this matcher claims the certificate (rules in the
    /// [module documentation](self)).
    pub fn matches(&self, id: &CertificateIdentity) -> bool {
        match self {
            CertificateMatcher::SanUri(uri) => {
                !uri.is_empty() && id.san_uris.iter().any(|san| san == uri)
            }
            CertificateMatcher::SanDns(dns) => {
                is_literal_dns_san(dns)
                    && id
                        .san_dns
                        .iter()
                        .any(|san| is_literal_dns_san(san) && san.eq_ignore_ascii_case(dns))
            }
            CertificateMatcher::SubjectDn(name) => !name.is_empty() && id.subject == *name,
            // A pin is matched on the thumbprint of a pinned peer, never on names.
            CertificateMatcher::Pinned(_) => false,
        }
    }
}

/// A SHA-256 thumbprint written as 64 hex digits (colons allowed) or 43 base64url characters.
fn parse_thumbprint(s: &str) -> Result<CertificateThumbprint, IdentityError> {
    let s = s.trim();
    CertificateThumbprint::from_hex(s)
        .or_else(|| CertificateThumbprint::from_b64url(s))
        .ok_or_else(|| IdentityError::Thumbprint(s.chars().take(120).collect()))
}

/// `scheme ":" rest` with a valid scheme, a non-empty rest, printable ASCII only.
pub fn is_absolute_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let scheme_is_valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'));
    scheme_is_valid && !rest.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

/// One lower-case hostname label.
fn is_dns_label(label: &str) -> bool {
    (1..=MAX_DNS_LABEL_LEN).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Hashable lookup key: (kind, canonical value).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MatcherKey {
    kind: &'static str,
    value: String,
}

impl MatcherKey {
    fn new(kind: &'static str, value: String) -> Self {
        MatcherKey { kind, value }
    }

    /// `"san_uri"` | `"san_dns"` | `"subject_dn"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The canonical value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::string::{BmpString, Ia5String};
    use rcgen::{CertificateParams, DnType, DnValue, KeyPair, SanType};
    use x509_parser::prelude::FromDer;

    // --- helpers -----------------------------------------------------------

    /// A self-signed certificate; `subject` is in DER order (least specific first).
    fn certificate_der(subject: &[(DnType, DnValue)], uris: &[&str], dns: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in subject {
            params.distinguished_name.push(ty.clone(), value.clone());
        }
        let uris = uris
            .iter()
            .map(|u| SanType::URI(Ia5String::try_from(*u).unwrap()));
        let dns = dns
            .iter()
            .map(|d| SanType::DnsName(Ia5String::try_from(*d).unwrap()));
        params.subject_alt_names = uris.chain(dns).collect();
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    /// Identity of a certificate with UTF8String subject values, in DER order.
    fn identity(subject: &[(DnType, &str)], uris: &[&str], dns: &[&str]) -> CertificateIdentity {
        let subject: Vec<(DnType, DnValue)> = subject
            .iter()
            .map(|(ty, value)| (ty.clone(), DnValue::Utf8String((*value).to_owned())))
            .collect();
        CertificateIdentity::from_der(&certificate_der(&subject, uris, dns)).unwrap()
    }

    fn subject_only(subject: &[(DnType, &str)]) -> CertificateIdentity {
        identity(subject, &[], &[])
    }

    fn dn(s: &str) -> DistinguishedName {
        DistinguishedName::parse_rfc4514(s).unwrap()
    }

    fn subject_matcher(s: &str) -> CertificateMatcher {
        CertificateMatcher::try_subject_dn(s).unwrap()
    }

    fn dn_error_reason(s: &str) -> String {
        match DistinguishedName::parse_rfc4514(s) {
            Err(IdentityError::DistinguishedName { reason, .. }) => reason,
            other => panic!("expected a DN error for {s:?}, got {other:?}"),
        }
    }

    /// DER TLV with a short-form length.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = u8::try_from(content.len()).unwrap();
        assert!(len < 0x80);
        [&[tag, len][..], content].concat()
    }

    const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
    const UTF8: u8 = 0x0c;

    fn attribute_der(oid: &[u8], value_tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(0x30, &[tlv(0x06, oid), tlv(value_tag, value)].concat())
    }

    /// A Name from RDNs in DER order, each a list of encoded attributes.
    fn name_from_rdns(rdns: &[Vec<Vec<u8>>]) -> DistinguishedName {
        let rdns: Vec<u8> = rdns
            .iter()
            .flat_map(|rdn| tlv(0x31, &rdn.concat()))
            .collect();
        let der = tlv(0x30, &rdns);
        let (rest, name) = X509Name::from_der(&der).unwrap();
        assert!(rest.is_empty());
        DistinguishedName::from_x509_name(&name)
    }

    fn single_cn(value_tag: u8, value: &[u8]) -> DistinguishedName {
        name_from_rdns(&[vec![attribute_der(OID_CN, value_tag, value)]])
    }

    // --- SAN URI -----------------------------------------------------------

    #[test]
    fn san_uri_matches_exactly() {
        let id = identity(&[], &["spiffe://x/demo", "https://other.example/"], &[]);
        assert!(
            CertificateMatcher::try_san_uri("spiffe://x/demo")
                .unwrap()
                .matches(&id)
        );
        assert!(
            CertificateMatcher::try_san_uri("https://other.example/")
                .unwrap()
                .matches(&id)
        );
    }

    #[test]
    fn san_uri_prefix_suffix_and_case_variants_do_not_match() {
        let id = identity(
            &[],
            &[
                "spiffe://x/demo-evil",
                "spiffe://x/demo/sub",
                "SPIFFE://x/Demo",
            ],
            &[],
        );
        let registered = CertificateMatcher::try_san_uri("spiffe://x/demo").unwrap();
        assert!(
            !registered.matches(&id),
            "a longer URI must not match its prefix"
        );

        let exact = identity(&[], &["spiffe://x/demo"], &[]);
        for other in [
            "spiffe://x/dem",
            "spiffe://x/demo/",
            "spiffe://x/demo-evil",
            "spiffe://x/Demo",
        ] {
            let matcher = CertificateMatcher::try_san_uri(other).unwrap();
            assert!(
                !matcher.matches(&exact),
                "{other} must not match spiffe://x/demo"
            );
        }
    }

    #[test]
    fn san_uri_is_validated() {
        for ok in [
            "spiffe://x/demo",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "a+b.c-d:x",
        ] {
            assert_eq!(
                CertificateMatcher::try_san_uri(ok).unwrap(),
                CertificateMatcher::SanUri(ok.to_owned())
            );
        }
        for bad in [
            "",
            "spiffe",
            "spiffe:",
            "://x",
            "1spiffe://x",
            "sp iffe://x",
            "spiffe://x/ demo",
            "spiffe://x/demo\n",
            "spiffe://x/\u{7f}",
            "spiffe://x/dëmo",
        ] {
            assert!(
                matches!(
                    CertificateMatcher::try_san_uri(bad),
                    Err(IdentityError::SanUri(_))
                ),
                "{bad:?} must be refused"
            );
        }
    }

    // --- SAN DNS -----------------------------------------------------------

    #[test]
    fn san_dns_is_ascii_case_insensitive() {
        let id = identity(&[], &[], &["Billing.Example.COM"]);
        let matcher = CertificateMatcher::try_san_dns("BILLING.example.com").unwrap();
        assert_eq!(
            matcher,
            CertificateMatcher::SanDns("billing.example.com".to_owned())
        );
        assert!(matcher.matches(&id));
        assert!(
            !CertificateMatcher::try_san_dns("example.com")
                .unwrap()
                .matches(&id)
        );
        assert!(
            !CertificateMatcher::try_san_dns("billing.example.co")
                .unwrap()
                .matches(&id)
        );
    }

    #[test]
    fn wildcard_dns_is_refused_and_never_matches() {
        for wildcard in ["*.example.com", "*", "a*.example.com"] {
            assert!(matches!(
                CertificateMatcher::try_san_dns(wildcard),
                Err(IdentityError::WildcardDns(_))
            ));
        }
        let id = identity(&[], &[], &["*.example.com"]);
        assert!(
            !CertificateMatcher::try_san_dns("billing.example.com")
                .unwrap()
                .matches(&id)
        );
        // Even a hand-built wildcard matcher does not match a wildcard SAN.
        assert!(!CertificateMatcher::SanDns("*.example.com".to_owned()).matches(&id));
        assert!(id.lookup_keys().is_empty());
    }

    #[test]
    fn san_dns_is_validated() {
        let longest_label = "a".repeat(63);
        assert!(CertificateMatcher::try_san_dns(&format!("{longest_label}.example")).is_ok());
        assert!(CertificateMatcher::try_san_dns("localhost").is_ok());
        assert!(CertificateMatcher::try_san_dns("a-1.b2.example").is_ok());
        let long_label = "a".repeat(64);
        for bad in [
            "",
            ".",
            "example.com.",
            ".example.com",
            "a..example",
            "-a.example",
            "a-.example",
            "under_score.example",
            "spa ce.example",
            "dëmo.example",
            long_label.as_str(),
        ] {
            assert!(
                matches!(
                    CertificateMatcher::try_san_dns(bad),
                    Err(IdentityError::SanDns(_))
                ),
                "{bad:?} must be refused"
            );
        }
    }

    // --- Subject DN: escaping ----------------------------------------------

    #[test]
    fn escaped_comma_matches_the_unescaped_certificate_value() {
        let id = subject_only(&[
            (DnType::OrganizationName, "Acme"),
            (DnType::CommonName, "Acme, Inc."),
        ]);
        assert!(subject_matcher(r"CN=Acme\, Inc.,O=Acme").matches(&id));
        assert!(subject_matcher(r"CN=Acme\2C Inc.,O=Acme").matches(&id));
        assert_eq!(id.subject.canonical(), r"CN=acme\, inc.,O=acme");
    }

    #[test]
    fn escaped_comma_does_not_match_a_name_split_into_two_rdns() {
        // DER order: O=Inc. then CN=Acme, i.e. RFC 4514 "CN=Acme,O=Inc.".
        let split = subject_only(&[
            (DnType::OrganizationName, "Inc."),
            (DnType::CommonName, "Acme"),
        ]);
        // One RDN whose CN contains a comma.
        let joined = subject_only(&[(DnType::CommonName, "Acme,O=Inc.")]);

        let escaped = subject_matcher(r"CN=Acme\,O=Inc.");
        let unescaped = subject_matcher("CN=Acme,O=Inc.");
        assert!(escaped.matches(&joined));
        assert!(!escaped.matches(&split));
        assert!(unescaped.matches(&split));
        assert!(!unescaped.matches(&joined));
        assert_ne!(split.subject.canonical(), joined.subject.canonical());
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(dn(r"CN=caf\C3\A9"), dn("CN=café"));
        assert_eq!(
            dn(r#"CN=a\+b\=c\;d\<e\>f\#g\\h\"i"#),
            dn("CN=a\\+b=c\\;d\\<e\\>f#g\\\\h\\\"i")
        );
        assert_eq!(dn(r"CN=\#1"), single_cn(UTF8, b"#1"));
        assert_eq!(dn(r"CN=\ x\ "), dn("CN=x"));
        assert!(dn_error_reason(r"CN=\zz").contains("not a valid escape"));
        assert!(dn_error_reason(r"CN=\4").contains("second hex digit"));
        assert!(dn_error_reason(r"CN=\4g").contains("second hex digit"));
        assert!(dn_error_reason(r"CN=a\").contains("unfinished"));
        assert!(dn_error_reason(r"CN=\FF").contains("UTF-8"));
        for unescaped in ["CN=a;b", "CN=a<b", "CN=a>b", "CN=a\0b"] {
            assert!(
                dn_error_reason(unescaped).contains("must be escaped"),
                "{unescaped:?}"
            );
        }
        assert!(dn_error_reason("CN=\"quoted\"").contains("quoted"));
    }

    #[test]
    fn hex_values_are_refused() {
        assert!(dn_error_reason("CN=#0c0161").contains("#hex"));
        assert!(dn_error_reason("CN=x,O= #0c0161").contains("#hex"));
        assert!(matches!(
            CertificateMatcher::try_subject_dn("CN=#0c0161"),
            Err(IdentityError::DistinguishedName { .. })
        ));
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "CN",
            "CN=a,",
            ",CN=a",
            "CN=a,,O=b",
            "CN=a+",
            "=a",
            "CN=a,O",
            "CN=a+CN=a",
        ] {
            assert!(
                DistinguishedName::parse_rfc4514(bad).is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!(dn_error_reason("XX=a").contains("unknown attribute type"));
        for bad_oid in ["2=a", "2.=a", "2..5=a", "2.05.4.3=a", "2.5.4.3a=a"] {
            assert!(
                dn_error_reason(bad_oid).contains("dotted OID"),
                "{bad_oid:?}"
            );
        }
    }

    // --- Subject DN: structure ---------------------------------------------

    #[test]
    fn rdn_order_is_significant() {
        let id = subject_only(&[
            (DnType::CountryName, "US"),
            (DnType::OrganizationName, "Acme"),
            (DnType::CommonName, "billing"),
        ]);
        assert!(subject_matcher("CN=billing,O=Acme,C=US").matches(&id));
        for other in [
            "C=US,O=Acme,CN=billing",
            "O=Acme,CN=billing,C=US",
            "CN=billing,O=Acme",
            "O=Acme,C=US",
            "CN=billing,O=Acme,C=US,DC=com",
            "CN=billing+O=Acme,C=US",
        ] {
            assert!(
                !subject_matcher(other).matches(&id),
                "{other} must not match"
            );
        }
        assert_ne!(dn("CN=a,O=b"), dn("O=b,CN=a"));
    }

    #[test]
    fn multi_valued_rdn_is_a_set() {
        let a = dn("CN=a+UID=b,O=x");
        let b = dn("UID=b+CN=a,O=x");
        assert_eq!(a, b);
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.canonical(), "CN=a+UID=b,O=x");
        assert_ne!(a, dn("CN=a,UID=b,O=x"));
        assert_ne!(a, dn("CN=a+UID=b+L=y,O=x"));
    }

    #[test]
    fn multi_valued_rdn_from_der_is_a_set() {
        let name = name_from_rdns(&[vec![
            attribute_der(OID_O, UTF8, b"Acme"),
            attribute_der(OID_CN, UTF8, b"Billing"),
        ]]);
        assert_eq!(name, dn("CN=billing+O=acme"));
        assert_eq!(name, dn("O=ACME+CN=Billing"));
        assert_ne!(name, dn("CN=billing,O=acme"));
    }

    #[test]
    fn attribute_types_are_compared_by_oid() {
        let canonical = dn("CN=x");
        for alias in [
            "cn=x",
            "Cn=x",
            "commonName=x",
            "COMMONNAME=x",
            "2.5.4.3=x",
            " CN =x",
        ] {
            assert_eq!(dn(alias), canonical, "{alias}");
        }
        assert_eq!(dn("E=a@b.example"), dn("emailAddress=a@b.example"));
        assert_eq!(dn("E=a@b.example"), dn("1.2.840.113549.1.9.1=a@b.example"));
        assert_eq!(dn("S=x,DC=y"), dn("ST=x,domainComponent=y"));
        assert_eq!(dn("userId=u").canonical(), "UID=u");
        assert_eq!(dn("1.2.3.4=v").canonical(), "1.2.3.4=v");
        assert_ne!(dn("CN=x"), dn("2.5.4.4=x"));

        let id = subject_only(&[(
            DnType::CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 1]),
            "u1",
        )]);
        assert!(subject_matcher("uid=U1").matches(&id));
        assert!(subject_matcher("0.9.2342.19200300.100.1.1=u1").matches(&id));
    }

    #[test]
    fn values_fold_case_and_spaces() {
        let id = subject_only(&[
            (DnType::OrganizationName, "ACME Corp"),
            (DnType::CommonName, "Billing  Service"),
        ]);
        assert_eq!(id.subject.canonical(), "CN=billing service,O=acme corp");
        assert!(subject_matcher("CN=  billing \t SERVICE  , O = Acme   corp ").matches(&id));
        assert!(subject_matcher("cn=BILLING SERVICE,o=acme corp").matches(&id));
        assert!(!subject_matcher("CN=billingservice,O=acme corp").matches(&id));
        assert_eq!(dn("CN=ÉCOLE"), dn("CN=école"));
    }

    #[test]
    fn string_types_are_read_from_certificates() {
        let der = certificate_der(
            &[
                (
                    DnType::OrganizationName,
                    DnValue::PrintableString("Acme".try_into().unwrap()),
                ),
                (
                    DnType::CommonName,
                    DnValue::BmpString(BmpString::try_from("Ünïcode").unwrap()),
                ),
            ],
            &[],
            &[],
        );
        let id = CertificateIdentity::from_der(&der).unwrap();
        assert!(subject_matcher("CN=ünïcode,O=acme").matches(&id));

        assert_eq!(single_cn(0x14, b"caf\xe9"), dn("CN=café")); // TeletexString as Latin-1
        assert_eq!(
            single_cn(0x1c, &[0, 0, 0, b'a', 0, 1, 0xf6, 0x00]),
            dn("CN=a\u{1f600}")
        ); // UniversalString
        assert_eq!(single_cn(0x16, b"a@b"), dn("CN=a@b")); // IA5String
    }

    #[test]
    fn unreadable_values_never_equal_a_configured_name() {
        let integer = single_cn(0x02, &[0x01]);
        assert_eq!(integer.canonical(), "CN=#020101");
        assert_ne!(integer, dn("CN=1"));
        assert_ne!(integer, dn(r"CN=\#020101"));

        let bad_utf8 = single_cn(UTF8, &[0xff]);
        assert_eq!(bad_utf8.canonical(), "CN=#0c01ff");
        let odd_bmp = single_cn(0x1e, &[0x00]);
        assert_eq!(odd_bmp.canonical(), "CN=#1e0100");
        let lone_surrogate = single_cn(0x1e, &[0xd8, 0x00]);
        assert_eq!(lone_surrogate.canonical(), "CN=#1e02d800");
        assert!(DistinguishedName::parse_rfc4514(&bad_utf8.canonical()).is_err());
    }

    #[test]
    fn canonical_round_trips() {
        for s in [
            "",
            "CN=billing,O=Acme\\, Inc.,C=US",
            r#"CN=\#lead,O=a\+b\\c\"d\<e\>f\;g"#,
            "CN=x+UID=y,DC=example,DC=com",
            "CN=tab\\09here",
            "CN=bell\\07",
            "CN=Ünïcode 😀,1.2.3.4=v",
        ] {
            let name = dn(s);
            let canonical = name.canonical();
            assert_eq!(dn(&canonical), name, "{s:?} -> {canonical:?}");
            assert_eq!(dn(&canonical).canonical(), canonical);
            assert_eq!(name.to_string(), canonical);
            assert_eq!(canonical.parse::<DistinguishedName>().unwrap(), name);
        }
        assert_eq!(dn("CN=bell\\07").canonical(), "CN=bell\\07");
        assert_eq!(dn("").canonical(), "");
    }

    #[test]
    fn distinguished_name_serialises_as_its_canonical_string() {
        let name = dn("O=Acme, CN=Billing");
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, "\"O=acme,CN=billing\"");
        assert_eq!(
            serde_json::from_str::<DistinguishedName>(&json).unwrap(),
            name
        );
        assert!(serde_json::from_str::<DistinguishedName>("\"CN=#00\"").is_err());
    }

    #[test]
    fn empty_subject_never_matches() {
        assert!(matches!(
            CertificateMatcher::try_subject_dn(""),
            Err(IdentityError::EmptySubjectDn)
        ));
        let id = identity(&[], &["spiffe://x/demo"], &[]);
        assert!(id.subject.is_empty());
        assert!(!CertificateMatcher::SubjectDn(dn("")).matches(&id));
        assert_eq!(
            id.lookup_keys(),
            vec![MatcherKey::new(KIND_SAN_URI, "spiffe://x/demo".to_owned())]
        );
    }

    // --- certificates and limits --------------------------------------------

    #[test]
    fn garbage_der_is_an_error() {
        let real = certificate_der(&[(DnType::CommonName, "x".into())], &[], &[]);
        let truncated = &real[..real.len() / 2];
        let trailing = [real.as_slice(), &[0]].concat();
        let mut corrupted = real.clone();
        corrupted[1] ^= 0x55;
        for garbage in [
            &[][..],
            b"not a certificate",
            &[0x30, 0x82, 0xff, 0xff],
            truncated,
            &trailing,
            &corrupted,
        ] {
            assert!(
                matches!(
                    CertificateIdentity::from_der(garbage),
                    Err(IdentityError::Certificate(_))
                ),
                "{garbage:02x?}"
            );
        }
    }

    fn is_too_long<T>(result: Result<T, IdentityError>) -> bool {
        matches!(result, Err(IdentityError::TooLong { .. }))
    }

    #[test]
    fn over_long_inputs_are_refused() {
        let long_dn = format!("CN={}", "a".repeat(MAX_DN_LEN - 2));
        assert!(is_too_long(DistinguishedName::parse_rfc4514(&long_dn)));
        assert!(DistinguishedName::parse_rfc4514(&long_dn[..MAX_DN_LEN]).is_ok());

        let rdns = |n: usize| vec!["DC=x"; n].join(",");
        assert!(DistinguishedName::parse_rfc4514(&rdns(MAX_RDNS)).is_ok());
        assert!(dn_error_reason(&rdns(MAX_RDNS + 1)).contains("RDNs"));

        let der = vec![0x30; MAX_CERTIFICATE_DER_LEN + 1];
        assert!(is_too_long(CertificateIdentity::from_der(&der)));

        let uri = format!("spiffe://x/{}", "a".repeat(MAX_SAN_URI_LEN));
        assert!(is_too_long(CertificateMatcher::try_san_uri(&uri)));
        assert!(CertificateMatcher::try_san_uri(&uri[..MAX_SAN_URI_LEN]).is_ok());

        // Three 63-byte labels, three dots and a last label: 253 bytes with 61.
        let host = |last: usize| format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(last));
        assert_eq!(host(61).len(), MAX_DNS_NAME_LEN);
        assert!(CertificateMatcher::try_san_dns(&host(61)).is_ok());
        assert!(is_too_long(CertificateMatcher::try_san_dns(&host(62))));
    }

    // --- matchers and keys ---------------------------------------------------

    #[test]
    fn try_from_parts_round_trips_kind_and_value() {
        for matcher in [
            CertificateMatcher::try_san_uri("spiffe://x/demo").unwrap(),
            CertificateMatcher::try_san_dns("Billing.Example.com").unwrap(),
            CertificateMatcher::try_subject_dn(r"cn=Acme\, Inc.+uid=7, o=Acme").unwrap(),
        ] {
            let parsed =
                CertificateMatcher::try_from_parts(matcher.kind(), &matcher.value()).unwrap();
            assert_eq!(parsed, matcher);
            assert_eq!(parsed.key(), matcher.key());
        }
        let dns = CertificateMatcher::try_from_parts("san_dns", "Billing.Example.com").unwrap();
        assert_eq!(
            (dns.kind(), dns.value().as_str()),
            ("san_dns", "billing.example.com")
        );
        let subject =
            CertificateMatcher::try_from_parts("subject_dn", "uid=7+CN=Acme\\, Inc.,O=Acme")
                .unwrap();
        assert_eq!(subject.value(), r"CN=acme\, inc.+UID=7,O=acme");
        assert!(matches!(
            CertificateMatcher::try_from_parts("SAN_URI", "spiffe://x/demo"),
            Err(IdentityError::UnknownMatcherKind(_))
        ));
    }

    #[test]
    fn lookup_keys_agree_with_matches() {
        let id = identity(
            &[
                (DnType::OrganizationName, "Acme"),
                (DnType::CommonName, "Billing"),
            ],
            &["spiffe://x/demo", "spiffe://x/demo"],
            &["Billing.Example.com", "*.example.com"],
        );
        let keys = id.lookup_keys();
        assert_eq!(
            keys,
            vec![
                MatcherKey::new(KIND_SAN_URI, "spiffe://x/demo".to_owned()),
                MatcherKey::new(KIND_SAN_DNS, "billing.example.com".to_owned()),
                MatcherKey::new(KIND_SUBJECT_DN, "CN=billing,O=acme".to_owned()),
            ]
        );
        for (kind, value) in [
            ("san_uri", "spiffe://x/demo"),
            ("san_uri", "spiffe://x/demo/sub"),
            ("san_dns", "BILLING.example.com"),
            ("san_dns", "other.example.com"),
            ("subject_dn", "cn=billing, o=ACME"),
            ("subject_dn", "O=Acme,CN=Billing"),
        ] {
            let matcher = CertificateMatcher::try_from_parts(kind, value).unwrap();
            assert_eq!(
                matcher.matches(&id),
                keys.contains(&matcher.key().unwrap()),
                "{kind} {value}"
            );
        }
    }

    #[test]
    fn a_certificates_key_is_read_with_the_one_algorithm_it_takes() {
        for (alg, algorithm) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::Es256),
            (&rcgen::PKCS_ED25519, Algorithm::EdDsa),
        ] {
            let key = KeyPair::generate_for(alg).unwrap();
            let der = CertificateParams::new(vec!["w.example".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap()
                .der()
                .to_vec();
            let read = CertificateIdentity::from_der(&der).unwrap().key.unwrap();
            let raw = key.public_key_raw();
            let expected = match algorithm {
                Algorithm::Es256 => PublicKey::P256 {
                    x: raw[1..33].to_vec(),
                    y: raw[33..].to_vec(),
                },
                _ => PublicKey::Ed25519 { x: raw.to_vec() },
            };
            assert_eq!(
                read,
                CertificateKey {
                    algorithm,
                    public: expected
                }
            );
        }
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let der = CertificateParams::new(vec!["w.example".into()])
            .unwrap()
            .self_signed(&p384)
            .unwrap();
        let identity = CertificateIdentity::from_der(der.der()).unwrap();
        assert_eq!(identity.key, None, "a P-384 key has no algorithm here");
    }
}
