//! Configuration: an optional TOML file overridden by `BYOK_BROKER_*` environment variables,
//! validated into [`Config`]. With neither, the broker runs on its embedded default (local key
//! provider under `./data`). AWS settings not given here come from the standard AWS configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod kms;
pub mod limits;
pub mod platform_keks;
pub mod server;
pub mod workers;

pub use kms::{AwsOptions, ProviderKind};
pub use limits::{DekCacheConfig, Limits, RateLimitConfig, StoreOptions};
pub use platform_keks::PlatformKekConfig;
use server::{RawServer, ServerSettings};
use workers::{RewrapConfig, WatcherConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// The validated configuration the broker runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub provider: ProviderKind,
    pub kek_alias_prefix: String,
    pub aws: AwsOptions,
    pub dek_cache: DekCacheConfig,
    pub limits: Limits,
    pub rate_limit: RateLimitConfig,
    pub watcher: WatcherConfig,
    pub rewrap: RewrapConfig,
    /// Connection timeouts and bounds of the HTTP server.
    pub server: ServerSettings,
    /// BYOK registrations without a role: the broker's own identity uses the tenant's key, which
    /// the tenant's key policy must pin to its organization (README, BYOK). Off by default.
    pub byok_allow_direct_key_access: bool,
    pub store: StoreOptions,
    pub platform_keks: PlatformKekConfig,
    /// Bootstrap API keys from `BYOK_BROKER_APP_KEY` / `BYOK_BROKER_ADMIN_KEY` (never from files).
    pub bootstrap_app_key: Option<Redacted>,
    pub bootstrap_admin_key: Option<Redacted>,
}

/// A secret string that prints as `<redacted>`.
#[derive(Clone)]
pub struct Redacted(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    kms: RawKms,
    #[serde(default)]
    dek_cache: RawCache,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default)]
    byok: RawByok,
    #[serde(default)]
    rewrap: RawRewrap,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    platform_kek: platform_keks::RawPlatformKek,
}

/// Operational limits of the embedded store (not in the example configs: rarely needed).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    max_page_count: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrap {
    kms_calls_per_second: Option<u32>,
    concurrency: Option<usize>,
    batch_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawByok {
    watch_interval_ms: Option<u64>,
    watch_concurrency: Option<usize>,
    allow_direct_key_access: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_second: Option<u32>,
    burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_value_bytes: Option<usize>,
    max_request_bytes: Option<usize>,
    new_platform_keks_per_key_per_hour: Option<u32>,
    max_platform_keks: Option<u64>,
    accept_legacy_data_key_blobs: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKms {
    provider: Option<ProviderKind>,
    kek_alias_prefix: Option<String>,
    #[serde(default)]
    aws: RawAws,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: Option<String>,
    endpoint_url: Option<String>,
    sts_endpoint_url: Option<String>,
    attempt_timeout_ms: Option<u64>,
    operation_timeout_ms: Option<u64>,
    max_attempts: Option<u32>,
    tenant_session_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    ttl_seconds: Option<u64>,
    capacity: Option<u64>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
pub const DEFAULT_ALIAS_PREFIX: &str = "byok-broker";

impl Config {
    /// Loads `file` (if any), then applies environment overrides read through `env`.
    /// Passing the environment as a function keeps tests free of process-global state.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw = match file {
            Some(path) => parse_file(path)?,
            None => RawConfig::default(),
        };
        let listen_text = env("BYOK_BROKER_LISTEN")
            .or(raw.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_text.parse().map_err(|e| {
            invalid(
                "BYOK_BROKER_LISTEN / listen",
                format!("{listen_text:?}: {e}"),
            )
        })?;
        let data_dir = env("BYOK_BROKER_DATA_DIR")
            .map(PathBuf::from)
            .or(raw.data_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        let provider = match env("BYOK_BROKER_KMS") {
            Some(text) => parse_provider(&text)?,
            None => raw.kms.provider.unwrap_or(ProviderKind::Local),
        };
        let kek_alias_prefix = env("BYOK_BROKER_KEK_ALIAS_PREFIX")
            .or(raw.kms.kek_alias_prefix)
            .unwrap_or_else(|| DEFAULT_ALIAS_PREFIX.into());

        let defaults = AwsOptions::default();
        let a = raw.kms.aws;
        let aws = AwsOptions {
            region: a.region,
            endpoint_url: a.endpoint_url,
            sts_endpoint_url: a.sts_endpoint_url,
            static_credentials: None,
            attempt_timeout: a
                .attempt_timeout_ms
                .map_or(defaults.attempt_timeout, Duration::from_millis),
            operation_timeout: a
                .operation_timeout_ms
                .map_or(defaults.operation_timeout, Duration::from_millis),
            max_attempts: a.max_attempts.unwrap_or(defaults.max_attempts),
            tenant_session_length: a
                .tenant_session_seconds
                .map_or(defaults.tenant_session_length, Duration::from_secs),
            ..defaults
        };
        if aws.max_attempts == 0 {
            return Err(invalid("kms.aws.max_attempts", "must be at least 1".into()));
        }

        let cache_defaults = DekCacheConfig::default();
        let ttl = match env("BYOK_BROKER_DEK_CACHE_TTL_SECONDS") {
            Some(text) => {
                Duration::from_secs(parse_number("BYOK_BROKER_DEK_CACHE_TTL_SECONDS", &text)?)
            }
            None => raw
                .dek_cache
                .ttl_seconds
                .map_or(cache_defaults.ttl, Duration::from_secs),
        };
        let capacity = match env("BYOK_BROKER_DEK_CACHE_CAPACITY") {
            Some(text) => parse_number("BYOK_BROKER_DEK_CACHE_CAPACITY", &text)?,
            None => raw.dek_cache.capacity.unwrap_or(cache_defaults.capacity),
        };
        let limit_defaults = Limits::default();
        let limits = Limits {
            max_value_bytes: match env("BYOK_BROKER_MAX_VALUE_BYTES") {
                Some(text) => parse_number("BYOK_BROKER_MAX_VALUE_BYTES", &text)? as usize,
                None => raw
                    .limits
                    .max_value_bytes
                    .unwrap_or(limit_defaults.max_value_bytes),
            },
            max_request_bytes: raw
                .limits
                .max_request_bytes
                .unwrap_or(limit_defaults.max_request_bytes),
            accept_legacy_data_key_blobs: match env("BYOK_BROKER_ACCEPT_LEGACY_DATA_KEY_BLOBS") {
                Some(text) => parse_bool("BYOK_BROKER_ACCEPT_LEGACY_DATA_KEY_BLOBS", &text)?,
                None => raw
                    .limits
                    .accept_legacy_data_key_blobs
                    .unwrap_or(limit_defaults.accept_legacy_data_key_blobs),
            },
        };
        if limits.max_request_bytes < limits.max_value_bytes {
            return Err(invalid(
                "limits.max_request_bytes",
                "must be at least limits.max_value_bytes".into(),
            ));
        }
        let rate_defaults = RateLimitConfig::default();
        let rate_limit = RateLimitConfig {
            per_second: match env("BYOK_BROKER_RATE_LIMIT_PER_SECOND") {
                Some(text) => parse_number("BYOK_BROKER_RATE_LIMIT_PER_SECOND", &text)? as u32,
                None => raw
                    .rate_limit
                    .per_second
                    .unwrap_or(rate_defaults.per_second),
            },
            burst: raw.rate_limit.burst.unwrap_or(rate_defaults.burst),
        };
        let watcher_defaults = WatcherConfig::default();
        let watcher = WatcherConfig {
            interval: match env("BYOK_BROKER_BYOK_WATCH_INTERVAL_MS") {
                Some(text) => Duration::from_millis(parse_number(
                    "BYOK_BROKER_BYOK_WATCH_INTERVAL_MS",
                    &text,
                )?),
                None => raw
                    .byok
                    .watch_interval_ms
                    .map_or(watcher_defaults.interval, Duration::from_millis),
            },
            concurrency: raw
                .byok
                .watch_concurrency
                .unwrap_or(watcher_defaults.concurrency),
        };
        if watcher.interval < Duration::from_millis(100) || watcher.concurrency == 0 {
            return Err(invalid(
                "byok.watch_interval_ms / byok.watch_concurrency",
                "interval must be at least 100 ms and concurrency at least 1".into(),
            ));
        }
        let byok_allow_direct_key_access = match env("BYOK_BROKER_BYOK_ALLOW_DIRECT_KEY_ACCESS") {
            Some(text) => parse_bool("BYOK_BROKER_BYOK_ALLOW_DIRECT_KEY_ACCESS", &text)?,
            None => raw.byok.allow_direct_key_access.unwrap_or(false),
        };
        let rewrap_defaults = RewrapConfig::default();
        let rewrap = RewrapConfig {
            kms_calls_per_second: match env("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND") {
                Some(text) => {
                    parse_number("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND", &text)? as u32
                }
                None => raw
                    .rewrap
                    .kms_calls_per_second
                    .unwrap_or(rewrap_defaults.kms_calls_per_second),
            },
            concurrency: match env("BYOK_BROKER_REWRAP_CONCURRENCY") {
                Some(text) => parse_number("BYOK_BROKER_REWRAP_CONCURRENCY", &text)? as usize,
                None => raw
                    .rewrap
                    .concurrency
                    .unwrap_or(rewrap_defaults.concurrency),
            },
            batch_size: raw.rewrap.batch_size.unwrap_or(rewrap_defaults.batch_size),
        };
        if rewrap.concurrency == 0 || rewrap.batch_size == 0 {
            return Err(invalid(
                "rewrap.concurrency / rewrap.batch_size",
                "must be at least 1".into(),
            ));
        }
        let server = ServerSettings::load(raw.server, &env)?;
        let store = StoreOptions {
            max_page_count: match env("BYOK_BROKER_STORE_MAX_PAGE_COUNT") {
                Some(text) => Some(parse_number("BYOK_BROKER_STORE_MAX_PAGE_COUNT", &text)?),
                None => raw.store.max_page_count,
            },
        };
        let platform_keks = platform_keks::load(
            raw.platform_kek,
            platform_keks::RawPlatformKekLimits {
                per_key_per_hour: raw.limits.new_platform_keks_per_key_per_hour,
                max_total: raw.limits.max_platform_keks,
            },
            &env,
        )?;
        let secret = |name: &str| {
            env(name)
                .filter(|v| !v.is_empty())
                .map(|v| Redacted(zeroize::Zeroizing::new(v)))
        };
        Ok(Self {
            limits,
            rate_limit,
            watcher,
            rewrap,
            server,
            byok_allow_direct_key_access,
            store,
            platform_keks,
            bootstrap_app_key: secret("BYOK_BROKER_APP_KEY"),
            bootstrap_admin_key: secret("BYOK_BROKER_ADMIN_KEY"),
            listen,
            data_dir,
            provider,
            kek_alias_prefix,
            aws,
            dek_cache: DekCacheConfig { ttl, capacity },
        })
    }
}

fn parse_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.to_string(),
    })
}

fn parse_provider(text: &str) -> Result<ProviderKind, ConfigError> {
    match text {
        "local" => Ok(ProviderKind::Local),
        "aws" => Ok(ProviderKind::Aws),
        other => Err(invalid(
            "BYOK_BROKER_KMS",
            format!("{other:?}: expected \"local\" or \"aws\""),
        )),
    }
}

fn parse_number(name: &'static str, text: &str) -> Result<u64, ConfigError> {
    text.trim()
        .parse()
        .map_err(|e| invalid(name, format!("{text:?}: {e}")))
}

fn parse_bool(name: &'static str, text: &str) -> Result<bool, ConfigError> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(invalid(name, format!("{other:?} is not true or false"))),
    }
}

fn invalid(name: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { name, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn no_configuration_gives_the_embedded_default() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.provider, ProviderKind::Local);
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.dek_cache.ttl, Duration::from_secs(300));
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("byok-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("broker.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\n[kms]\nprovider = \"aws\"\n[kms.aws]\nregion = \"eu-west-1\"\n[dek_cache]\nttl_seconds = 60\n").unwrap();
        let config =
            Config::load(Some(&file), env(&[("BYOK_BROKER_LISTEN", "0.0.0.0:1234")])).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:1234");
        assert_eq!(config.provider, ProviderKind::Aws);
        assert_eq!(config.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(config.dek_cache.ttl, Duration::from_secs(60));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn example_configs_parse() {
        for file in ["default.toml", "localstack.toml", "production.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(file);
            Config::load(Some(&path), env(&[])).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::load(None, env(&[("BYOK_BROKER_KMS", "vault")])).unwrap_err();
        assert!(err.to_string().contains("BYOK_BROKER_KMS"), "{err}");
        let err = Config::load(None, env(&[("BYOK_BROKER_LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("BYOK_BROKER_LISTEN"), "{err}");
        let err = Config::load(Some(Path::new("/nonexistent/broker.toml")), env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}
