//! `[tls]`: the listener's certificate and key, and optionally the CA that client certificates
//! must chain to; plus the rule that plain HTTP outside loopback needs `listen_insecure = true`.
//! Only paths are checked here; the files are read (and their errors reported) when the server
//! starts, and again on every reload (`http::server::tls`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::sources::Sources;
use super::{ConfigError, invalid};

/// The files the TLS listener reads, at start and on every reload (SIGHUP, or a file change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates: when set, every connection must present a client certificate that
    /// chains to one of them (in addition to the API key).
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
}

/// `[tls]` and `BYOK_BROKER_TLS_*`; an empty variable counts as unset (the file's value stands).
pub(super) fn load(raw: RawTls, sources: &Sources<'_>) -> Result<Option<TlsFiles>, ConfigError> {
    let path = |name: &'static str, file: Option<PathBuf>| {
        let set = sources
            .optional::<String>(name, None)?
            .filter(|text| !text.is_empty());
        Ok::<_, ConfigError>(set.map(PathBuf::from).or(file))
    };
    let cert_file = path("BYOK_BROKER_TLS_CERT", raw.cert_file)?;
    let key_file = path("BYOK_BROKER_TLS_KEY", raw.key_file)?;
    let client_ca_file = path("BYOK_BROKER_TLS_CLIENT_CA", raw.client_ca_file)?;
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsFiles {
            cert_file,
            key_file,
            client_ca_file,
        })),
        (None, None) if client_ca_file.is_none() => Ok(None),
        (None, None) => Err(invalid(
            "tls.client_ca_file / BYOK_BROKER_TLS_CLIENT_CA",
            "client certificates need TLS: set tls.cert_file and tls.key_file too".into(),
        )),
        _ => Err(invalid(
            "tls.cert_file / tls.key_file (BYOK_BROKER_TLS_CERT / BYOK_BROKER_TLS_KEY)",
            "set both the certificate and the key, or neither".into(),
        )),
    }
}

/// Plain HTTP is the default only on loopback: anywhere else it needs `listen_insecure = true`
/// (a deployment behind a TLS-terminating proxy), and the server warns at start.
pub(super) fn check_listener(
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    listen_insecure: bool,
) -> Result<(), ConfigError> {
    if tls.is_none() && !listen.ip().is_loopback() && !listen_insecure {
        return Err(invalid(
            "listen / BYOK_BROKER_LISTEN",
            format!(
                "{listen} is not a loopback address: serve TLS there (tls.cert_file and tls.key_file, \
                 or BYOK_BROKER_TLS_CERT and BYOK_BROKER_TLS_KEY), or, behind a TLS-terminating \
                 proxy, set listen_insecure = true (BYOK_BROKER_LISTEN_INSECURE=true)"
            ),
        ));
    }
    Ok(())
}
