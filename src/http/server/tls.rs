//! TLS on the listener (rustls with the ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`): the
//! certificate is served through a resolver whose certified key is swapped on reload (SIGHUP, or
//! a change of the files), so new connections get the new certificate while open ones keep theirs;
//! a reload that fails keeps the current certificate and logs why (paths and reasons, never key
//! material). With a client CA, every connection must present a certificate that chains to it;
//! its subject travels with each request on the connection, for the audit actor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;

/// How often the certificate and key files are checked for a change (besides SIGHUP).
pub const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate file {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("TLS key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS client CA file {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The subject of the verified client certificate of the connection a request came on (RFC 4514,
/// e.g. `CN=billing-backend,O=Acme`), inserted into each request's extensions.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    pub subject: Arc<str>,
}

/// The listener's TLS: the acceptor, and the certificate it serves, reloadable.
pub struct Tls {
    acceptor: TlsAcceptor,
    certificate: Arc<ReloadableCertificate>,
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// Hands every handshake the current certified key; a reload swaps it.
#[derive(Debug)]
struct ReloadableCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for ReloadableCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

impl Tls {
    /// Reads the files named by `files`: a missing or bad file is an error naming it.
    pub fn load(files: &TlsFiles) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = certified_key(files, &provider)?;
        let certificate = Arc::new(ReloadableCertificate(RwLock::new(Arc::new(certified))));
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &files.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = client_roots(path)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&certificate) as _);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
            files: files.clone(),
            provider,
        }))
    }

    /// Re-reads the certificate and key; on success new handshakes use them, on failure the
    /// current ones stay and the error says why. (The client CA file is read at start only.)
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified = certified_key(&self.files, &self.provider)?;
        *self
            .certificate
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        Ok(())
    }

    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca_file.is_some()
    }

    pub(super) async fn accept(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.acceptor.accept(stream).await
    }

    /// Reloads on SIGHUP (`hangup`, registered by the caller before the server starts so that an
    /// early signal is not fatal) and when the files' modification times or sizes change, until
    /// `stop`.
    pub async fn watch(
        self: Arc<Self>,
        mut hangup: tokio::signal::unix::Signal,
        stop: CancellationToken,
    ) {
        let mut seen = self.fingerprint();
        let mut tick = tokio::time::interval(FILE_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let cause = tokio::select! {
                () = stop.cancelled() => return,
                _ = hangup.recv() => "SIGHUP",
                _ = tick.tick() => {
                    let now = self.fingerprint();
                    if now == seen {
                        continue;
                    }
                    "file change"
                }
            };
            // Taken before reading, so a write that lands during the reload is seen next time.
            seen = self.fingerprint();
            match self.reload() {
                Ok(()) => {
                    tracing::info!(cause, cert_file = %self.files.cert_file.display(), "TLS certificate reloaded: new connections use it")
                }
                Err(e) => {
                    tracing::warn!(cause, error = %e, "TLS certificate not reloaded: keeping the current one")
                }
            }
        }
    }

    fn fingerprint(&self) -> [Option<(SystemTime, u64)>; 2] {
        let stamp = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        [stamp(&self.files.cert_file), stamp(&self.files.key_file)]
    }
}

/// The subject of the verified leaf certificate a client presented, if any.
pub(super) fn client_certificate(stream: &TlsStream<TcpStream>) -> Option<ClientCertificate> {
    use x509_cert::der::Decode;
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    let subject = match x509_cert::Certificate::from_der(leaf.as_ref()) {
        Ok(certificate) => certificate.tbs_certificate.subject.to_string(),
        // Verified by webpki, so it parses; should it not, the actor still says a certificate was used.
        Err(_) => "<unparsed subject>".to_owned(),
    };
    Some(ClientCertificate {
        subject: subject.into(),
    })
}

fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: files.cert_file.clone(),
        reason,
    };
    let key_error = |reason: String| TlsError::Key {
        path: files.key_file.clone(),
        reason,
    };
    let chain = certificates(&files.cert_file).map_err(cert_error)?;
    let text = std::fs::read(&files.key_file).map_err(|e| key_error(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        key_error(format!(
            "no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {}",
            pem_reason(&e)
        ))
    })?;
    drop(zeroize::Zeroizing::new(text));
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => key_error(format!(
            "the key does not belong to the certificate in {}",
            files.cert_file.display()
        )),
        // rustls's messages about a key name its kind or algorithm, never its bytes.
        other => key_error(other.to_string()),
    })
}

/// The PEM certificates in `path`, at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {}", pem_reason(&e)))?;
    if chain.is_empty() {
        return Err("no PEM CERTIFICATE in the file".into());
    }
    Ok(chain)
}

fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let error = |reason: String| TlsError::ClientCa {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path).map_err(error)? {
        roots
            .add(certificate)
            .map_err(|e| error(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// What went wrong in a PEM file, without quoting its content (it may be a key).
fn pem_reason(error: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match error {
        Error::MissingSectionEnd { .. } => "a section has no END line".into(),
        Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".into(),
        Error::Base64Decode(_) => "a section is not valid base64".into(),
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no section of the expected kind".into(),
        _ => "not valid PEM".into(),
    }
}
