//! Connection-level settings of the HTTP server (timeouts, connection bound, drain, request-head
//! limits), read from the `[server]` table and `BYOK_BROKER_*` variables. The connection bound is
//! clamped below the process's open-file limit so that accepting can never exhaust descriptors.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::sources::Sources;

/// Descriptors kept free for the database, the key provider's connections, logs and the listener.
pub const RESERVED_DESCRIPTORS: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// Time a client has to send a complete request head, from connecting or from its first byte.
    pub header_read_timeout: Duration,
    /// Time a client has to send the whole request body, from the moment the head was read.
    pub body_timeout: Duration,
    /// Time a keep-alive connection may sit between requests.
    pub idle_timeout: Duration,
    /// Open connections at most; at the bound the connection idle the longest is closed.
    pub max_connections: usize,
    /// On SIGTERM, time in-flight requests get to finish before remaining connections are cut.
    pub shutdown_drain: Duration,
    /// On SIGTERM, after the drain: time each shutdown stage (workers to their checkpoint, the
    /// audit flush, the database close) gets before what is left of it is aborted.
    pub worker_stop: Duration,
    /// Longest request target (path and query) accepted, in bytes; longer gets 414.
    pub max_uri_bytes: usize,
    /// Largest header section accepted (names, values, separators), in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Time a request may take from routing to its response head; then 503 `processing_timeout`.
    pub request_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            shutdown_drain: Duration::from_secs(10),
            worker_stop: Duration::from_secs(10),
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    header_read_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    shutdown_drain_ms: Option<u64>,
    worker_stop_ms: Option<u64>,
    max_uri_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    request_timeout_ms: Option<u64>,
}

impl ServerSettings {
    /// `raw` from the file, overridden by `BYOK_BROKER_<SETTING>` (e.g. `BYOK_BROKER_IDLE_TIMEOUT_MS`).
    pub fn load(raw: RawServer, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let sources = Sources::new(env);
        let defaults = Self::default();
        let settings = Self {
            header_read_timeout: sources.millis(
                "BYOK_BROKER_HEADER_READ_TIMEOUT_MS",
                raw.header_read_timeout_ms,
                defaults.header_read_timeout,
            )?,
            body_timeout: sources.millis(
                "BYOK_BROKER_BODY_TIMEOUT_MS",
                raw.body_timeout_ms,
                defaults.body_timeout,
            )?,
            idle_timeout: sources.millis(
                "BYOK_BROKER_IDLE_TIMEOUT_MS",
                raw.idle_timeout_ms,
                defaults.idle_timeout,
            )?,
            max_connections: sources.value(
                "BYOK_BROKER_MAX_CONNECTIONS",
                raw.max_connections,
                defaults.max_connections,
            )?,
            shutdown_drain: sources.millis(
                "BYOK_BROKER_SHUTDOWN_DRAIN_MS",
                raw.shutdown_drain_ms,
                defaults.shutdown_drain,
            )?,
            worker_stop: sources.millis(
                "BYOK_BROKER_WORKER_STOP_MS",
                raw.worker_stop_ms,
                defaults.worker_stop,
            )?,
            max_uri_bytes: sources.value(
                "BYOK_BROKER_MAX_URI_BYTES",
                raw.max_uri_bytes,
                defaults.max_uri_bytes,
            )?,
            max_header_bytes: sources.value(
                "BYOK_BROKER_MAX_HEADER_BYTES",
                raw.max_header_bytes,
                defaults.max_header_bytes,
            )?,
            request_timeout: sources.millis(
                "BYOK_BROKER_REQUEST_TIMEOUT_MS",
                raw.request_timeout_ms,
                defaults.request_timeout,
            )?,
        };
        let timeouts = [
            settings.header_read_timeout,
            settings.body_timeout,
            settings.idle_timeout,
            settings.request_timeout,
        ];
        if timeouts.iter().any(Duration::is_zero) {
            return Err(invalid("server.*_timeout_ms", "timeouts must be positive"));
        }
        if settings.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if settings.max_uri_bytes < 256 || settings.max_header_bytes < 1024 {
            return Err(invalid(
                "server.max_uri_bytes / server.max_header_bytes",
                "must be at least 256 and 1024 bytes",
            ));
        }
        Ok(settings)
    }

    /// The connection bound actually used: the configured one, or fewer when the open-file limit
    /// (`open_files`, `None` when unknown) would not leave [`RESERVED_DESCRIPTORS`] free.
    pub fn effective_max_connections(&self, open_files: Option<u64>) -> usize {
        match open_files {
            Some(limit) => {
                let room = limit.saturating_sub(RESERVED_DESCRIPTORS).max(1);
                self.max_connections
                    .min(usize::try_from(room).unwrap_or(usize::MAX))
            }
            None => self.max_connections,
        }
    }
}

/// The soft `RLIMIT_NOFILE` of this process, read from `/proc/self/limits` (Linux; `None` elsewhere
/// or when unlimited), so no `unsafe` libc call is needed.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn invalid(name: &'static str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_stays_below_the_open_file_limit() {
        let settings = ServerSettings::default();
        assert_eq!(settings.effective_max_connections(None), 1024);
        assert_eq!(settings.effective_max_connections(Some(1 << 20)), 1024);
        assert_eq!(settings.effective_max_connections(Some(256)), 192);
        assert_eq!(settings.effective_max_connections(Some(10)), 1);
    }

    #[test]
    fn the_open_file_limit_is_readable_here() {
        if cfg!(target_os = "linux") {
            assert!(open_file_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn environment_overrides_and_bad_values_are_named() {
        let env = |name: &str| match name {
            "BYOK_BROKER_IDLE_TIMEOUT_MS" => Some("1500".to_owned()),
            _ => None,
        };
        let settings = ServerSettings::load(RawServer::default(), &env).unwrap();
        assert_eq!(settings.idle_timeout, Duration::from_millis(1500));
        assert_eq!(settings.request_timeout, Duration::from_secs(60));
        let request =
            |name: &str| (name == "BYOK_BROKER_REQUEST_TIMEOUT_MS").then(|| "250".to_owned());
        let settings = ServerSettings::load(RawServer::default(), &request).unwrap();
        assert_eq!(settings.request_timeout, Duration::from_millis(250));
        let zero = |name: &str| (name == "BYOK_BROKER_MAX_CONNECTIONS").then(|| "0".to_owned());
        let err = ServerSettings::load(RawServer::default(), &zero).unwrap_err();
        assert!(err.to_string().contains("max_connections"), "{err}");
    }
}
