//! The caller's certificate as a proxy forwards it in a header, in the formats proxies really
//! send: nginx's `$ssl_client_escaped_cert` (URL-encoded PEM), Traefik's
//! `X-Forwarded-Tls-Client-Cert` (base64 DER without armour, a chain comma-joined leaf first,
//! URL-escaped), and Envoy's `x-forwarded-client-cert` (`Cert="<URL-encoded PEM>"`, one element
//! only). Pure parsing with size limits; the result is the leaf's DER, which parses as X.509.

use base64::{Engine as _, engine::general_purpose::STANDARD};

use crate::crypto;

/// The longest header value looked at.
pub const MAX_HEADER_LEN: usize = 16 * 1024;

/// How a proxy encodes the certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderFormat {
    /// nginx `$ssl_client_escaped_cert`: the leaf as URL-encoded PEM.
    Nginx,
    /// Traefik `X-Forwarded-Tls-Client-Cert`: base64 DER, comma-joined chain, leaf first.
    Traefik,
    /// Envoy `x-forwarded-client-cert` with `Cert="…"` (a single element).
    Envoy,
}

impl HeaderFormat {
    /// The header each proxy uses by default.
    pub fn default_header(self) -> &'static str {
        match self {
            HeaderFormat::Nginx => "x-ssl-client-cert",
            HeaderFormat::Traefik => "x-forwarded-tls-client-cert",
            HeaderFormat::Envoy => "x-forwarded-client-cert",
        }
    }
}

/// Why a forwarded certificate was refused. Never echoes the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedError {
    /// Longer than [`MAX_HEADER_LEN`].
    #[error("the certificate header is too long")]
    TooLong,
    /// Not the encoding the format names.
    #[error("the certificate header is not {0}")]
    Malformed(&'static str),
    /// More than one certificate where the format carries the leaf alone.
    #[error("the certificate header holds more than one certificate")]
    Chain,
    /// An XFCC value with more than one element: the proxy appended to one a client sent.
    #[error("the x-forwarded-client-cert header has more than one element")]
    SeveralElements,
    /// An XFCC element without `Cert`.
    #[error("the x-forwarded-client-cert element carries no Cert")]
    NoCertificate,
    /// The XFCC `Hash` is not the SHA-256 of its `Cert`.
    #[error("the x-forwarded-client-cert Hash does not match its Cert")]
    HashMismatch,
    /// The bytes are not an X.509 certificate.
    #[error("the forwarded certificate is not an X.509 certificate")]
    NotX509,
}

/// The leaf certificate's DER from a header value in `format`.
pub fn leaf_certificate(format: HeaderFormat, value: &str) -> Result<Vec<u8>, ForwardedError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(ForwardedError::TooLong);
    }
    let der = match format {
        HeaderFormat::Nginx => single_pem(&percent_decode(value)?)?,
        HeaderFormat::Traefik => traefik_leaf(value)?,
        HeaderFormat::Envoy => xfcc_leaf(value)?,
    };
    match x509_parser::parse_x509_certificate(&der) {
        Ok(([], _)) => Ok(der),
        _ => Err(ForwardedError::NotX509),
    }
}

/// `%XX` decoded (no `+` → space: these are not forms); malformed escapes refused.
fn percent_decode(value: &str) -> Result<String, ForwardedError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(ForwardedError::Malformed("URL-encoded"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ForwardedError::Malformed("URL-encoded text"))
}

/// The one `CERTIFICATE` block of a PEM text.
fn single_pem(pem: &str) -> Result<Vec<u8>, ForwardedError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN).ok_or(ForwardedError::Malformed("PEM"))?;
    let body_start = start + BEGIN.len();
    let end = pem[body_start..]
        .find(END)
        .map(|e| body_start + e)
        .ok_or(ForwardedError::Malformed("PEM"))?;
    if pem[end + END.len()..].contains(BEGIN) {
        return Err(ForwardedError::Chain);
    }
    base64_der(&pem[body_start..end], "PEM")
}

/// Standard base64 with whitespace ignored.
fn base64_der(text: &str, what: &'static str) -> Result<Vec<u8>, ForwardedError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(compact)
        .map_err(|_| ForwardedError::Malformed(what))
}

/// Traefik: URL-escaped, comma-joined base64 DER, leaf first.
fn traefik_leaf(value: &str) -> Result<Vec<u8>, ForwardedError> {
    let decoded = percent_decode(value)?;
    let leaf = decoded.split(',').next().unwrap_or_default();
    base64_der(leaf, "base64 DER")
}

/// Envoy XFCC: exactly one element, its `Cert` (URL-encoded PEM), checked against its `Hash`
/// when there is one.
fn xfcc_leaf(value: &str) -> Result<Vec<u8>, ForwardedError> {
    let pairs = xfcc_pairs(value)?;
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let cert = field("Cert").ok_or(ForwardedError::NoCertificate)?;
    let der = single_pem(&percent_decode(cert)?)?;
    if let Some(hash) = field("Hash")
        && !hash.eq_ignore_ascii_case(&crypto::hex(&crypto::sha256(&der)))
    {
        return Err(ForwardedError::HashMismatch);
    }
    Ok(der)
}

/// The `key=value` pairs of a single-element XFCC value (`;` between pairs, `,` between
/// elements, both allowed inside double quotes, `\"` escaping a quote).
fn xfcc_pairs(value: &str) -> Result<Vec<(String, String)>, ForwardedError> {
    let mut pairs = Vec::new();
    let (mut key, mut current) = (None::<String>, String::new());
    let (mut quoted, mut escaped) = (false, false);
    for c in value.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => return Err(ForwardedError::SeveralElements),
            '=' if !quoted && key.is_none() => key = Some(std::mem::take(&mut current)),
            ';' if !quoted => pairs.push(xfcc_pair(key.take(), std::mem::take(&mut current))?),
            _ => current.push(c),
        }
    }
    if quoted {
        return Err(ForwardedError::Malformed("an XFCC value"));
    }
    pairs.push(xfcc_pair(key, current)?);
    Ok(pairs)
}

fn xfcc_pair(key: Option<String>, value: String) -> Result<(String, String), ForwardedError> {
    let key = key.ok_or(ForwardedError::Malformed("an XFCC value"))?;
    Ok((key.trim().to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(name: &str) -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), cert.der().to_vec())
    }

    /// URL-encoding as nginx's `$ssl_client_escaped_cert` does it (reserved bytes escaped).
    fn escape(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    #[test]
    fn each_proxys_format_gives_the_leaf() {
        let (pem, der) = certificate("leaf");
        let (_, other) = certificate("intermediate");
        assert_eq!(
            leaf_certificate(HeaderFormat::Nginx, &escape(&pem)),
            Ok(der.clone())
        );
        let traefik = format!("{},{}", STANDARD.encode(&der), STANDARD.encode(&other));
        assert_eq!(
            leaf_certificate(HeaderFormat::Traefik, &escape(&traefik)),
            Ok(der.clone())
        );
        assert_eq!(
            leaf_certificate(HeaderFormat::Traefik, &traefik),
            Ok(der.clone())
        );
        let hash = crypto::hex(&crypto::sha256(&der));
        let xfcc = format!(
            "By=spiffe://proxy;Hash={hash};Cert=\"{}\";Subject=\"CN=leaf,O=x\";URI=spiffe://c",
            escape(&pem)
        );
        assert_eq!(leaf_certificate(HeaderFormat::Envoy, &xfcc), Ok(der));
    }

    #[test]
    fn what_a_proxy_never_sends_is_refused_cleanly() {
        let (pem, der) = certificate("leaf");
        let (pem2, _) = certificate("second");
        let nginx = |v: &str| leaf_certificate(HeaderFormat::Nginx, v);
        let envoy = |v: &str| leaf_certificate(HeaderFormat::Envoy, v);
        assert_eq!(nginx(""), Err(ForwardedError::Malformed("PEM")));
        assert_eq!(
            nginx("garbage%ZZ"),
            Err(ForwardedError::Malformed("URL-encoded"))
        );
        assert_eq!(
            nginx(&"A".repeat(MAX_HEADER_LEN + 1)),
            Err(ForwardedError::TooLong)
        );
        assert_eq!(
            nginx(&escape(&format!("{pem}{pem2}"))),
            Err(ForwardedError::Chain)
        );
        let not_x509 = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode(b"not a certificate")
        );
        assert_eq!(nginx(&escape(&not_x509)), Err(ForwardedError::NotX509));
        let trailing = [der.clone(), vec![0]].concat();
        assert_eq!(
            leaf_certificate(HeaderFormat::Traefik, &STANDARD.encode(trailing)),
            Err(ForwardedError::NotX509)
        );
        let one = format!("Cert=\"{}\"", escape(&pem));
        assert!(envoy(&one).is_ok());
        assert_eq!(
            envoy(&format!("{one},{one}")),
            Err(ForwardedError::SeveralElements)
        );
        assert_eq!(
            envoy("By=spiffe://proxy"),
            Err(ForwardedError::NoCertificate)
        );
        assert_eq!(
            envoy(&format!("Hash=00;{one}")),
            Err(ForwardedError::HashMismatch)
        );
        assert_eq!(
            envoy("Cert=\"unterminated"),
            Err(ForwardedError::Malformed("an XFCC value"))
        );
        assert_eq!(
            envoy("novalue"),
            Err(ForwardedError::Malformed("an XFCC value"))
        );
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(value in ".{0,400}", format in 0..3u8) {
            let format = [HeaderFormat::Nginx, HeaderFormat::Traefik, HeaderFormat::Envoy]
                [usize::from(format)];
            let _ = leaf_certificate(format, &value);
        }
    }
}
