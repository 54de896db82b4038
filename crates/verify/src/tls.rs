//! Building the client TLS configuration the sources use, from PEM, with the crypto provider the
//! caller names. Nothing here installs a process-wide provider.

use std::{path::Path, sync::Arc};

use tokio_rustls::rustls::{
    ClientConfig, RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM holds no certificate or no private key, or is not PEM.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the pieces (a key that does not match the certificate, say).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] tokio_rustls::rustls::Error),
}

/// A client configuration trusting `trust_pem`'s certificates, presenting `cert_pem` with
/// `key_pem`, over `provider`.
pub fn client_config(
    provider: Arc<CryptoProvider>,
    trust_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(trust_pem)? {
        roots.add(cert)?;
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Pem(format!("no private key in the key PEM: {e}")))?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certificates(cert_pem)?, key)?)
}

/// As [`client_config`], from files.
pub fn client_config_from_files(
    provider: Arc<CryptoProvider>,
    trust: &Path,
    cert: &Path,
    key: &Path,
) -> Result<ClientConfig, TlsError> {
    client_config(provider, &read(trust)?, &read(cert)?, &read(key)?)
}

/// The certificates of a PEM text (at least one).
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("unreadable certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate in the PEM".into()));
    }
    Ok(certs)
}

/// A file's bytes.
pub fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}
