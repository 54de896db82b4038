//! The development PKI (rcgen's one home outside tests): a CA, a server certificate for
//! localhost, client certificates with SPIFFE-style SAN URIs — and `init`, which writes them
//! with a starter config and a KEK into an empty directory for `serve --dev`, and adds what a
//! directory written by an older `init` lacks.

use std::{
    fs,
    io::{self, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub use rcgen::DnType;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnValue, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use tokenmint_core::crypto::Kek;

/// What failed while making or writing the development PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Some development files exist and others are missing.
    #[error(
        "{present} exists but {missing} does not: remove the certs/ directory to regenerate the development PKI, or restore the file"
    )]
    Partial {
        /// A file that exists.
        present: PathBuf,
        /// A file that is missing.
        missing: PathBuf,
    },
    /// A CA certificate and key that cannot issue.
    #[error("the CA certificate and key cannot issue: {0}")]
    Ca(&'static str),
    /// A random or key-generation failure.
    #[error("{0}")]
    Crypto(#[from] tokenmint_core::crypto::CryptoError),
}

/// Extended key usage of a leaf certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// TLS client authentication.
    Client,
    /// TLS server authentication.
    Server,
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issued { … }")
    }
}

/// What a leaf certificate says.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// Subject attributes, in DER order (most general first).
    pub subject: Vec<(DnType, String)>,
    /// SAN URIs.
    pub san_uris: Vec<String>,
    /// SAN DNS names.
    pub san_dns: Vec<String>,
    /// SAN IP addresses.
    pub san_ips: Vec<IpAddr>,
    /// Extended key usages (empty: no EKU extension).
    pub usages: Vec<Usage>,
    /// Valid from.
    pub not_before: OffsetDateTime,
    /// Valid until.
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A client certificate for a SAN URI, valid from an hour ago for `validity`.
    pub fn client_uri(common_name: &str, uri: &str, validity: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            subject: vec![(DnType::CommonName, common_name.to_owned())],
            san_uris: vec![uri.to_owned()],
            san_dns: vec![],
            san_ips: vec![],
            usages: vec![Usage::Client],
            not_before: now - time::Duration::hours(1),
            not_after: now + validity,
        }
    }
}

/// A certificate authority that can issue leaves.
pub struct CertificateAuthority {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateAuthority { … }")
    }
}

impl CertificateAuthority {
    /// A new self-signed CA named `common_name`, valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let mut params = Self::params(DistinguishedName::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            params,
            key,
            cert_pem,
        })
    }

    /// The CA of a PEM certificate and its PEM private key, as [`generate`](Self::generate)
    /// writes them: the certificate must be a CA's, for that key, its subject made of UTF8String
    /// or PrintableString attributes (so that a leaf's issuer is the same bytes).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        use x509_parser::der_parser::asn1_rs::Tag;
        let key = KeyPair::from_pem(key_pem).map_err(|_| PkiError::Ca("the key does not parse"))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|_| PkiError::Ca("the certificate is not PEM"))?;
        let cert = pem
            .parse_x509()
            .map_err(|_| PkiError::Ca("the certificate does not parse"))?;
        if !cert.is_ca() {
            return Err(PkiError::Ca("the certificate is not a CA's"));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::Ca("the key is not the certificate's"));
        }
        let mut name = DistinguishedName::new();
        for attribute in cert.subject().iter_attributes() {
            let text = attribute.as_str().ok();
            let value = match (attribute.attr_value().tag(), text) {
                (Tag::Utf8String, Some(text)) => DnValue::Utf8String(text.to_owned()),
                (Tag::PrintableString, Some(text)) => DnValue::PrintableString(text.try_into()?),
                _ => return Err(PkiError::Ca("a subject attribute is not a plain string")),
            };
            let oid = attribute
                .attr_type()
                .iter()
                .ok_or(PkiError::Ca("a subject attribute type is too long"))?
                .collect::<Vec<u64>>();
            name.push(DnType::from_oid(&oid), value);
        }
        Ok(Self {
            params: Self::params(name)?,
            key,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// A CA's parameters for `name`, without validity dates.
    fn params(name: DistinguishedName) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ok(params)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    /// Issues a leaf certificate as `spec` says, with a fresh P-256 key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        for (ty, value) in &spec.subject {
            params.distinguished_name.push(ty.clone(), value.as_str());
        }
        for uri in &spec.san_uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        for dns in &spec.san_dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into()?));
        }
        for ip in &spec.san_ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.extended_key_usages = spec
            .usages
            .iter()
            .map(|u| match u {
                Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
                Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            })
            .collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// A certificate revocation list (PEM) signed by this CA, listing `revoked`, valid for a
    /// day from an hour ago.
    pub fn revocation_list(&self, revoked: &[&Issued]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for cert in revoked {
            let (_, parsed) = x509_parser::parse_x509_certificate(&cert.cert_der)
                .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(parsed.raw_serial()),
                revocation_time: now - time::Duration::minutes(5),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        Ok(params.signed_by(&issuer)?.pem()?)
    }

    /// A server certificate for `localhost` and 127.0.0.1, valid for two years.
    pub fn issue_localhost_server(&self) -> Result<Issued, PkiError> {
        let now = OffsetDateTime::now_utc();
        self.issue(&LeafSpec {
            subject: vec![(DnType::CommonName, "localhost".into())],
            san_uris: vec![],
            san_dns: vec!["localhost".into()],
            san_ips: vec![IpAddr::from([127, 0, 0, 1])],
            usages: vec![Usage::Server],
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(730),
        })
    }
}

/// The SAN URI of a development client.
pub fn dev_client_uri(name: &str) -> String {
    format!("spiffe://tokenmint.dev/{name}")
}

/// The files `init` writes, relative to its directory.
pub const DEV_FILES: [&str; 10] = [
    "certs/ca.pem",
    "certs/ca.key",
    "certs/server.pem",
    "certs/server.key",
    "certs/admin.pem",
    "certs/admin.key",
    "certs/demo.pem",
    "certs/demo.key",
    "certs/resource.pem",
    "certs/resource.key",
];

/// The resource server's pair, the last of [`DEV_FILES`]: a directory written before `init`
/// made it holds all the others, and gets this pair from its own CA.
const RESOURCE_PAIR: [&str; 2] = ["certs/resource.pem", "certs/resource.key"];

/// The client of the development resource server: its id, and the name in its SAN URI.
pub const DEV_RESOURCE_CLIENT: &str = "demo-resource";

/// How long the development client certificates are valid.
const DEV_CLIENT_VALIDITY: Duration = Duration::from_secs(730 * 24 * 3600);

/// What `init` did.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files that already existed and were kept.
    pub kept: Vec<PathBuf>,
    /// What the user should add by hand to a file that was kept.
    pub notes: Vec<InitNote>,
}

/// A change `init` leaves to the user, because it would edit a file of theirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitNote {
    /// One line: what is missing, what needs it, and where to add it.
    pub summary: String,
    /// The text to add.
    pub add: &'static str,
}

/// Writes, into `dir`, whatever of the development set-up is missing: the PKI under `certs/`,
/// `tokenmint.toml` and the KEK file `tokenmint.kek`. Existing files are never overwritten; a
/// kept `tokenmint.toml` without the resource server's client gets a note instead.
pub fn init(dir: &Path) -> Result<InitReport, PkiError> {
    let mut report = InitReport::default();
    let certs = dir.join("certs");
    fs::create_dir_all(&certs).map_err(|source| PkiError::Io {
        path: certs.clone(),
        source,
    })?;
    init_pki(dir, &mut report)?;
    init_config(dir, &mut report)?;
    init_kek(dir, &mut report)?;
    Ok(report)
}

/// The PKI: all of it into an empty `certs/`; only the resource pair, from the CA there, into
/// one an older `init` wrote; nothing into a complete one. Any other mix is refused.
fn init_pki(dir: &Path, report: &mut InitReport) -> Result<(), PkiError> {
    let (present, missing): (Vec<&str>, Vec<&str>) = DEV_FILES
        .iter()
        .copied()
        .partition(|f| dir.join(f).exists());
    report.kept.extend(present.iter().map(PathBuf::from));
    match (present.first(), missing.first()) {
        (_, None) => Ok(()),
        (None, Some(_)) => write_dev_pki(dir, report),
        (Some(_), Some(_)) if missing == RESOURCE_PAIR => {
            let read = |name: &str| {
                let path = dir.join(name);
                fs::read_to_string(&path)
                    .map(Zeroizing::new)
                    .map_err(|source| PkiError::Io { path, source })
            };
            let ca =
                CertificateAuthority::from_pem(&read("certs/ca.pem")?, &read("certs/ca.key")?)?;
            let resource = issue_dev_client(&ca, DEV_RESOURCE_CLIENT)?;
            write_files(
                dir,
                &[
                    ("certs/resource.pem", &resource.cert_pem, false),
                    ("certs/resource.key", &resource.key_pem, true),
                ],
                report,
            )
        }
        (Some(present), Some(missing)) => Err(PkiError::Partial {
            present: PathBuf::from(present),
            missing: PathBuf::from(missing),
        }),
    }
}

/// A new CA and every certificate of [`DEV_FILES`], written.
fn write_dev_pki(dir: &Path, report: &mut InitReport) -> Result<(), PkiError> {
    let ca = CertificateAuthority::generate("tokenmint development CA")?;
    let ca_key = ca.key_pem();
    let server = ca.issue_localhost_server()?;
    let admin = issue_dev_client(&ca, "admin")?;
    let demo = issue_dev_client(&ca, "demo")?;
    let resource = issue_dev_client(&ca, DEV_RESOURCE_CLIENT)?;
    let files: [(&str, &str, bool); 10] = [
        ("certs/ca.pem", ca.cert_pem(), false),
        ("certs/ca.key", &ca_key, true),
        ("certs/server.pem", &server.cert_pem, false),
        ("certs/server.key", &server.key_pem, true),
        ("certs/admin.pem", &admin.cert_pem, false),
        ("certs/admin.key", &admin.key_pem, true),
        ("certs/demo.pem", &demo.cert_pem, false),
        ("certs/demo.key", &demo.key_pem, true),
        ("certs/resource.pem", &resource.cert_pem, false),
        ("certs/resource.key", &resource.key_pem, true),
    ];
    write_files(dir, &files, report)
}

/// A development client certificate for `name`, SAN URI [`dev_client_uri`]`(name)`.
fn issue_dev_client(ca: &CertificateAuthority, name: &str) -> Result<Issued, PkiError> {
    ca.issue(&LeafSpec::client_uri(
        name,
        &dev_client_uri(name),
        DEV_CLIENT_VALIDITY,
    ))
}

/// Each (name, contents, private) with [`write_new`], reported as written.
fn write_files(
    dir: &Path,
    files: &[(&str, &str, bool)],
    report: &mut InitReport,
) -> Result<(), PkiError> {
    for &(name, contents, private) in files {
        write_new(&dir.join(name), contents.as_bytes(), private)?;
        report.written.push(PathBuf::from(name));
    }
    Ok(())
}

/// The starter `tokenmint.toml`, unless there is one; a kept file that does not name the
/// resource server's client gets a note with the block to add (it is the user's: not edited).
fn init_config(dir: &Path, report: &mut InitReport) -> Result<(), PkiError> {
    let config = dir.join("tokenmint.toml");
    if !config.exists() {
        write_new(&config, crate::config::starter_toml().as_bytes(), false)?;
        report.written.push("tokenmint.toml".into());
        return Ok(());
    }
    report.kept.push("tokenmint.toml".into());
    // An unreadable or invalid file gets no note: loading it says what is wrong.
    let text = fs::read_to_string(&config).unwrap_or_default();
    if crate::config::lacks_client(&text, DEV_RESOURCE_CLIENT) {
        report.notes.push(InitNote {
            summary: format!(
                "tokenmint.toml has no client \"{DEV_RESOURCE_CLIENT}\", the identity \
                 (certs/resource.pem) with which a resource server such as the tokenmint-verify \
                 examples watches keys and revocations. The file is kept as it is; add this \
                 client to it"
            ),
            add: crate::config::resource_client_toml(),
        });
    }
    Ok(())
}

/// The KEK file, unless there is one.
fn init_kek(dir: &Path, report: &mut InitReport) -> Result<(), PkiError> {
    let kek_path = dir.join("tokenmint.kek");
    if kek_path.exists() {
        report.kept.push("tokenmint.kek".into());
    } else {
        let kek = Kek::generate()?;
        let mut text = kek.to_base64();
        text.push('\n');
        write_new(&kek_path, text.as_bytes(), true)?;
        report.written.push("tokenmint.kek".into());
    }
    Ok(())
}

/// Writes a new file whole or not at all: a temporary file beside it, synced, then renamed.
/// Private files are created readable by the owner only.
pub fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), PkiError> {
    let io_err = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_loaded_from_its_pem_files_issues_under_the_same_name() {
        let ca = CertificateAuthority::generate("tokenmint test CA").unwrap();
        let loaded = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let leaf = loaded
            .issue(&LeafSpec::client_uri(
                "x",
                &dev_client_uri("x"),
                Duration::from_secs(60),
            ))
            .unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf.cert_der).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let ca_cert = pem.parse_x509().unwrap();
        assert_eq!(leaf.issuer().as_raw(), ca_cert.subject().as_raw());
    }

    #[test]
    fn a_ca_is_not_loaded_from_a_leaf_a_foreign_key_or_garbage() {
        let ca = CertificateAuthority::generate("tokenmint test CA").unwrap();
        let other = CertificateAuthority::generate("another CA").unwrap();
        let leaf = ca.issue_localhost_server().unwrap();
        let cases: [(&str, &str, &str); 4] = [
            (
                ca.cert_pem(),
                &other.key_pem(),
                "the key is not the certificate's",
            ),
            (
                &leaf.cert_pem,
                &leaf.key_pem,
                "the certificate is not a CA's",
            ),
            ("not PEM", &ca.key_pem(), "the certificate is not PEM"),
            (ca.cert_pem(), "not PEM", "the key does not parse"),
        ];
        for (cert, key, reason) in cases {
            let error = CertificateAuthority::from_pem(cert, key).unwrap_err();
            assert!(matches!(error, PkiError::Ca(r) if r == reason), "{error}");
        }
    }
}
