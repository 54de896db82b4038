//! The caller's certificate as a request extension: what the certificate binding is checked
//! against.
//!
//! tonic exposes the peer's certificate only on its own TLS server, and `axum::serve` has no
//! TLS at all, so a host that terminates TLS itself (tokio-rustls, as the examples do) puts a
//! [`PeerCertificate`] into each request's extensions once per connection; the layer reads it
//! from there.

use std::{fmt, sync::Arc};

use tokenmint_core::crypto::CertificateThumbprint;
use tokio_rustls::rustls::CommonState;

/// The leaf certificate the peer presented on this connection, with its SHA-256 thumbprint
/// computed once (so a request costs no hashing of it).
#[derive(Clone)]
pub struct PeerCertificate {
    der: Arc<[u8]>,
    thumbprint: CertificateThumbprint,
}

impl PeerCertificate {
    /// The certificate of these DER bytes.
    pub fn from_der(der: impl Into<Arc<[u8]>>) -> Self {
        let der = der.into();
        let thumbprint = CertificateThumbprint::of_der(&der);
        Self { der, thumbprint }
    }

    /// The leaf certificate a finished rustls handshake received, if the peer sent one
    /// (`tls_stream.get_ref().1` is the connection for a tokio-rustls server stream).
    pub fn from_connection(connection: &CommonState) -> Option<Self> {
        connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| Self::from_der(leaf.as_ref()))
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Its SHA-256 thumbprint, what `cnf.x5t#S256` carries.
    pub fn thumbprint(&self) -> &CertificateThumbprint {
        &self.thumbprint
    }
}

impl fmt::Debug for PeerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PeerCertificate")
            .field(&self.thumbprint)
            .finish()
    }
}
