//! Command-line clients of a running broker (its API over HTTP/1.1, plain or TLS), `audit`,
//! which reads the database directly, and the process's log setup. Part of the binary, not of the
//! library.

pub mod audit;
pub mod http_client;
pub mod logging;
pub mod rewrap;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The client's TLS settings when a CA file or a client certificate is given (`None`: the
/// public web roots, no client certificate).
pub fn tls_config(
    ca_file: Option<&Path>,
    client: Option<(PathBuf, PathBuf)>,
) -> Result<Option<rustls::ClientConfig>, String> {
    if ca_file.is_none() && client.is_none() {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for certificate in CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("CA file {}: {e}", path.display()))?
        {
            let certificate =
                certificate.map_err(|e| format!("CA file {}: {e}", path.display()))?;
            roots
                .add(certificate)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(&cert)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
            // The reason only: a PEM error message never quotes a key.
            let key = PrivateKeyDer::from_pem_file(&key)
                .map_err(|_| format!("client key {}: no usable PEM private key", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
    };
    Ok(Some(config))
}
