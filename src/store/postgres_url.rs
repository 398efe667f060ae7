//! A `postgres://` URL and the store settings turned into what the PostgreSQL pool connects with.
//! tokio-postgres parses the URL itself but knows only `sslmode` disable/prefer/require; the
//! libpq modes that authenticate the server (`verify-ca`, `verify-full`, with `sslrootcert`) are
//! taken out here and enforced by the rustls configuration. TLS uses the ring provider the AWS SDK
//! already builds.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{StoreError, StoreOptions};

/// How the server's certificate is checked (libpq's `sslmode` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verification {
    /// `disable`, `prefer`, `require`: encryption at most, no authentication of the server.
    None,
    /// `verify-ca`: the chain leads to a trusted root; any host name.
    Chain,
    /// `verify-full`: the chain, and the name the URL connects to.
    Full,
}

/// Where and how the store connects.
pub struct PostgresTarget {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

impl PostgresTarget {
    /// The same server and settings for a pool of `pool_size` connections.
    pub fn with_pool_size(&self, pool_size: usize) -> Self {
        Self {
            config: self.config.clone(),
            tls: self.tls.clone(),
            pool_size,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
        }
    }

    pub fn new(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let invalid = |why: String| StoreError::Internal(format!("store.url: {why}"));
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut verification = Verification::None;
        let mut root_file = None;
        let mut require = false;
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", "verify-ca")) => verification = Verification::Chain,
                Some(("sslmode", "verify-full")) => verification = Verification::Full,
                Some(("sslrootcert", path)) => root_file = Some(path.to_owned()),
                Some(("sslmode", "require")) => {
                    require = true;
                    passed.push(pair);
                }
                _ => passed.push(pair),
            }
        }
        // libpq: `require` with a root certificate file verifies the chain, as `verify-ca`.
        if require && root_file.is_some() {
            verification = Verification::Chain;
        }
        // libpq would read ~/.postgresql/root.crt; here the trust anchor is always explicit:
        // a file, or `system` for the public web roots. Without one, verifying means nothing.
        if verification != Verification::None && root_file.is_none() {
            return Err(invalid(
                "sslmode=verify-ca / verify-full needs sslrootcert=<CA file> (or sslrootcert=system)"
                    .into(),
            ));
        }
        let rebuilt = if passed.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passed.join("&"))
        };
        // tokio-postgres's parse errors name the option, never the password.
        let mut config = tokio_postgres::Config::from_str(&rebuilt)
            .map_err(|e| invalid(format!("not a PostgreSQL URL: {e}")))?;
        // Without `sslmode`, tokio-postgres does what libpq does: `prefer`.
        if verification != Verification::None {
            config.ssl_mode(SslMode::Require);
        }
        config.connect_timeout(options.connect_timeout);
        config.application_name("byok-broker");
        // A peer that vanished without closing (failover, a dropped NAT entry) is noticed in
        // about a minute rather than after the kernel's two hours.
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(3);
        let timeout_ms = options.statement_timeout.as_millis();
        // A statement that runs longer is cancelled by the server: a stuck query answers 503
        // instead of holding a connection and a request forever. Added to the URL's own
        // `options`, which setting them would replace.
        let server_options = match config.get_options() {
            Some(given) => format!("{given} -c statement_timeout={timeout_ms}"),
            None => format!("-c statement_timeout={timeout_ms}"),
        };
        config.options(server_options);
        let tls = tls_config(verification, root_file.as_deref()).map_err(invalid)?;
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(tls),
            pool_size: options.pool_size,
            connect_timeout: options.connect_timeout,
            statement_timeout: options.statement_timeout,
        })
    }
}

fn tls_config(verification: Verification, root_file: Option<&str>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    if verification == Verification::None {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptionOnly(provider)))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    match root_file {
        Some("system") | None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {path}: {e}"))?
            {
                let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("TLS roots: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match verification {
        Verification::Chain => Arc::new(ChainOnly(webpki)),
        _ => webpki,
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `sslmode=prefer` and `require`: the libpq meaning (encrypt, do not authenticate). Handshake signatures are
/// still checked, so the session key belongs to whoever holds the presented certificate.
#[derive(Debug)]
struct EncryptionOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the full check except the host name.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> StoreOptions {
        StoreOptions::default()
    }

    #[test]
    fn libpq_verification_modes_are_taken_out_of_the_url() {
        let target = PostgresTarget::new(
            "postgres://u:secret@db.internal/app?sslmode=verify-full&sslrootcert=system",
            &options(),
        )
        .unwrap();
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(target.config.get_dbname(), Some("app"));
        let plain = PostgresTarget::new("postgres://u@127.0.0.1/app", &options()).unwrap();
        assert_eq!(
            plain.config.get_ssl_mode(),
            SslMode::Prefer,
            "libpq's default"
        );
        let required =
            PostgresTarget::new("postgres://u@h/app?sslmode=require", &options()).unwrap();
        assert_eq!(required.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn verification_needs_an_explicit_trust_anchor_and_keeps_the_urls_options() {
        for url in [
            "postgres://u@h/app?sslmode=verify-full",
            "postgres://u@h/app?sslmode=verify-ca",
        ] {
            let Err(e) = PostgresTarget::new(url, &options()) else {
                panic!("{url} accepted without sslrootcert")
            };
            assert!(e.to_string().contains("sslrootcert"), "{e}");
        }
        let given = PostgresTarget::new(
            "postgres://u@h/app?options=-c%20search_path%3Dbyok",
            &options(),
        )
        .unwrap();
        let server_options = given.config.get_options().unwrap();
        assert!(
            server_options.contains("search_path=byok"),
            "{server_options}"
        );
        assert!(
            server_options.contains("statement_timeout="),
            "{server_options}"
        );
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_the_password() {
        let Err(e) =
            PostgresTarget::new("postgres://u:hunter2@h/app?sslmode=sometimes", &options())
        else {
            panic!("accepted")
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let Err(e) = PostgresTarget::new(
            "postgres://u@h/app?sslmode=verify-full&sslrootcert=/nonexistent.pem",
            &options(),
        ) else {
            panic!("accepted")
        };
        assert!(e.to_string().contains("sslrootcert"), "{e}");
    }
}
