//! Configuration: an optional TOML file overridden by `BYOK_BROKER_*` environment variables,
//! validated into [`Config`]. With neither, the broker runs on its embedded default (local key
//! provider under `./data`). AWS settings not given here come from the standard AWS configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod file;
pub mod kms;
pub mod kms_budget;
pub mod limits;
pub mod platform_keks;
pub mod portal;
pub mod server;
mod sources;
mod store;
pub mod tls;
pub mod workers;

use file::RawConfig;
pub use kms::{AwsOptions, ProviderKind};
pub use limits::{DekCacheConfig, Limits, RateLimitConfig};
pub use platform_keks::PlatformKekConfig;
pub use portal::PortalConfig;
use server::ServerSettings;
use sources::Sources;
pub use store::{Retention, StoreOptions};
pub use tls::TlsFiles;
use workers::{CoherenceConfig, RewrapConfig, WatcherConfig};

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
    /// TLS on the listener; `None`: plain HTTP (loopback, or `listen_insecure`).
    pub tls: Option<TlsFiles>,
    /// Plain HTTP on a non-loopback address was asked for explicitly (behind a TLS proxy).
    pub listen_insecure: bool,
    /// A second, unauthenticated listener serving only `GET /metrics` (for scrapers on an
    /// internal network); `None`: metrics only at `/admin/v1/metrics` with an admin key.
    pub metrics_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub provider: ProviderKind,
    pub kek_alias_prefix: String,
    pub aws: AwsOptions,
    /// The share of the account's KMS quota this process may use, and how it is shared.
    pub kms_budget: kms_budget::KmsBudget,
    pub dek_cache: DekCacheConfig,
    pub limits: Limits,
    pub rate_limit: RateLimitConfig,
    pub watcher: WatcherConfig,
    pub rewrap: RewrapConfig,
    pub coherence: CoherenceConfig,
    /// Connection timeouts and bounds of the HTTP server.
    pub server: ServerSettings,
    /// BYOK registrations without a role: the broker's own identity uses the tenant's key, which
    /// the tenant's key policy must pin to its organization (README, BYOK). Off by default.
    pub byok_allow_direct_key_access: bool,
    /// The SQS queue of tenant KMS key events (push revocation, `services::byok::push`); `None`
    /// turns the consumer off and leaves the watcher's polling alone.
    pub byok_events_queue_url: Option<String>,
    pub store: StoreOptions,
    pub platform_keks: PlatformKekConfig,
    /// The tenant admin portal (`/portal`).
    pub portal: PortalConfig,
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
            Some(path) => file::parse_file(path)?,
            None => RawConfig::default(),
        };
        let sources = Sources::new(&env);
        let listen_text = sources.value("BYOK_BROKER_LISTEN", raw.listen, DEFAULT_LISTEN.into())?;
        let listen = listen_text.parse().map_err(|e| {
            invalid(
                "BYOK_BROKER_LISTEN / listen",
                format!("{listen_text:?}: {e}"),
            )
        })?;
        let tls = tls::load(raw.tls, &sources)?;
        let listen_insecure =
            sources.value("BYOK_BROKER_LISTEN_INSECURE", raw.listen_insecure, false)?;
        tls::check_listener(listen, tls.as_ref(), listen_insecure)?;
        let metrics_listen = sources
            .optional("BYOK_BROKER_METRICS_LISTEN", raw.metrics_listen)?
            .map(|text| {
                text.parse::<SocketAddr>().map_err(|e| {
                    invalid(
                        "BYOK_BROKER_METRICS_LISTEN / metrics_listen",
                        format!("{text:?}: {e}"),
                    )
                })
            })
            .transpose()?;
        if metrics_listen
            .is_some_and(|address| address.port() == listen.port() && address.ip() == listen.ip())
        {
            return Err(invalid(
                "BYOK_BROKER_METRICS_LISTEN / metrics_listen",
                "must differ from the API listener's address".into(),
            ));
        }
        let data_dir = sources.value("BYOK_BROKER_DATA_DIR", raw.data_dir, "data".into())?;
        let provider = sources.value("BYOK_BROKER_KMS", raw.kms.provider, ProviderKind::Local)?;
        let kek_alias_prefix = sources.value(
            "BYOK_BROKER_KEK_ALIAS_PREFIX",
            raw.kms.kek_alias_prefix,
            DEFAULT_ALIAS_PREFIX.into(),
        )?;
        let aws = aws_options(raw.kms.aws)?;
        let kms_budget = kms_budget::KmsBudget::load(raw.kms.budget, &sources)?;

        let cache_defaults = DekCacheConfig::default();
        let dek_cache = DekCacheConfig {
            ttl: sources.seconds(
                "BYOK_BROKER_DEK_CACHE_TTL_SECONDS",
                raw.dek_cache.ttl_seconds,
                cache_defaults.ttl,
            )?,
            capacity: sources.value(
                "BYOK_BROKER_DEK_CACHE_CAPACITY",
                raw.dek_cache.capacity,
                cache_defaults.capacity,
            )?,
        };
        let limit_defaults = Limits::default();
        let limits = Limits {
            max_value_bytes: sources.value(
                "BYOK_BROKER_MAX_VALUE_BYTES",
                raw.limits.max_value_bytes,
                limit_defaults.max_value_bytes,
            )?,
            max_request_bytes: (raw.limits.max_request_bytes)
                .unwrap_or(limit_defaults.max_request_bytes),
            accept_legacy_data_key_blobs: sources.value(
                "BYOK_BROKER_ACCEPT_LEGACY_DATA_KEY_BLOBS",
                raw.limits.accept_legacy_data_key_blobs,
                limit_defaults.accept_legacy_data_key_blobs,
            )?,
        };
        if limits.max_request_bytes < limits.max_value_bytes {
            return Err(invalid(
                "limits.max_request_bytes",
                "must be at least limits.max_value_bytes".into(),
            ));
        }
        let rate_defaults = RateLimitConfig::default();
        let rate_limit = RateLimitConfig {
            per_second: sources.value(
                "BYOK_BROKER_RATE_LIMIT_PER_SECOND",
                raw.rate_limit.per_second,
                rate_defaults.per_second,
            )?,
            burst: raw.rate_limit.burst.unwrap_or(rate_defaults.burst),
        };
        let watcher_defaults = WatcherConfig::default();
        let watcher = WatcherConfig {
            interval: sources.millis(
                "BYOK_BROKER_BYOK_WATCH_INTERVAL_MS",
                raw.byok.watch_interval_ms,
                watcher_defaults.interval,
            )?,
            concurrency: (raw.byok.watch_concurrency).unwrap_or(watcher_defaults.concurrency),
        };
        if watcher.interval < Duration::from_millis(100) || watcher.concurrency == 0 {
            return Err(invalid(
                "byok.watch_interval_ms / byok.watch_concurrency",
                "interval must be at least 100 ms and concurrency at least 1".into(),
            ));
        }
        let byok_allow_direct_key_access = sources.value(
            "BYOK_BROKER_BYOK_ALLOW_DIRECT_KEY_ACCESS",
            raw.byok.allow_direct_key_access,
            false,
        )?;
        // Empty counts as unset, so an environment can switch the consumer off over a file's URL.
        let byok_events_queue_url = sources
            .optional(
                "BYOK_BROKER_BYOK_EVENTS_QUEUE_URL",
                raw.byok.events_queue_url,
            )?
            .filter(|url: &String| !url.trim().is_empty());
        if byok_events_queue_url.is_some() && provider != ProviderKind::Aws {
            return Err(invalid(
                "byok.events_queue_url / BYOK_BROKER_BYOK_EVENTS_QUEUE_URL",
                "key events concern AWS KMS keys: set kms.provider = \"aws\"".into(),
            ));
        }
        let rewrap_defaults = RewrapConfig::default();
        let rewrap = RewrapConfig {
            kms_calls_per_second: sources.value(
                "BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND",
                raw.rewrap.kms_calls_per_second,
                rewrap_defaults.kms_calls_per_second,
            )?,
            concurrency: sources.value(
                "BYOK_BROKER_REWRAP_CONCURRENCY",
                raw.rewrap.concurrency,
                rewrap_defaults.concurrency,
            )?,
            batch_size: raw.rewrap.batch_size.unwrap_or(rewrap_defaults.batch_size),
            lease: sources.millis(
                "BYOK_BROKER_REWRAP_LEASE_MS",
                raw.rewrap.lease_ms,
                rewrap_defaults.lease,
            )?,
        };
        if rewrap.concurrency == 0 || rewrap.batch_size == 0 {
            return Err(invalid(
                "rewrap.concurrency / rewrap.batch_size",
                "must be at least 1".into(),
            ));
        }
        // Renewals every third of the lease must fit several database round trips.
        if rewrap.lease < Duration::from_millis(1000) {
            return Err(invalid(
                "rewrap.lease_ms",
                "must be at least 1000 ms".into(),
            ));
        }
        let coherence = CoherenceConfig {
            check_interval: sources.millis(
                "BYOK_BROKER_COHERENCE_CHECK_MS",
                raw.store.coherence_check_ms,
                CoherenceConfig::default().check_interval,
            )?,
        };
        if coherence.check_interval < Duration::from_millis(50) {
            return Err(invalid(
                "store.coherence_check_ms / BYOK_BROKER_COHERENCE_CHECK_MS",
                "must be at least 50".into(),
            ));
        }
        let server = ServerSettings::load(raw.server, &env)?;
        // A wait for KMS capacity must end before the request's own timeout drops it.
        if kms_budget.max_wait >= server.request_timeout {
            return Err(invalid(
                "kms.budget.max_wait_ms",
                format!(
                    "must be less than server.request_timeout_ms ({} ms)",
                    server.request_timeout.as_millis()
                ),
            ));
        }
        let portal = portal::load(raw.portal, &sources)?;
        let store = store::load(raw.store, &sources)?;
        let platform_keks = platform_keks::load(
            raw.platform_kek,
            platform_keks::RawPlatformKekLimits {
                per_key_per_hour: raw.limits.new_platform_keks_per_key_per_hour,
                max_total: raw.limits.max_platform_keks,
            },
            &env,
        )?;
        Ok(Self {
            limits,
            rate_limit,
            watcher,
            rewrap,
            coherence,
            server,
            byok_allow_direct_key_access,
            byok_events_queue_url,
            store,
            platform_keks,
            portal,
            bootstrap_app_key: sources.secret("BYOK_BROKER_APP_KEY"),
            bootstrap_admin_key: sources.secret("BYOK_BROKER_ADMIN_KEY"),
            listen,
            tls,
            listen_insecure,
            metrics_listen,
            data_dir,
            provider,
            kek_alias_prefix,
            aws,
            kms_budget,
            dek_cache,
        })
    }
}

/// `[kms.aws]`: file only, since AWS's own variables (`AWS_REGION`, `AWS_ENDPOINT_URL`) already
/// reach the SDK through the standard AWS configuration.
fn aws_options(file: file::RawAws) -> Result<AwsOptions, ConfigError> {
    let defaults = AwsOptions::default();
    let aws = AwsOptions {
        region: file.region,
        endpoint_url: file.endpoint_url,
        sts_endpoint_url: file.sts_endpoint_url,
        static_credentials: None,
        attempt_timeout: (file.attempt_timeout_ms)
            .map_or(defaults.attempt_timeout, Duration::from_millis),
        operation_timeout: (file.operation_timeout_ms)
            .map_or(defaults.operation_timeout, Duration::from_millis),
        max_attempts: file.max_attempts.unwrap_or(defaults.max_attempts),
        tenant_session_length: (file.tenant_session_seconds)
            .map_or(defaults.tenant_session_length, Duration::from_secs),
        ..defaults
    };
    if aws.max_attempts == 0 {
        return Err(invalid("kms.aws.max_attempts", "must be at least 1".into()));
    }
    Ok(aws)
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
        assert_eq!(config.coherence.check_interval, Duration::from_millis(500));
    }

    #[test]
    fn the_coherence_check_interval_is_set_by_name_and_bounded_below() {
        let config = Config::load(None, env(&[("BYOK_BROKER_COHERENCE_CHECK_MS", "250")])).unwrap();
        assert_eq!(config.coherence.check_interval, Duration::from_millis(250));
        let err = Config::load(None, env(&[("BYOK_BROKER_COHERENCE_CHECK_MS", "10")])).unwrap_err();
        assert!(err.to_string().contains("coherence_check_ms"), "{err}");
    }

    #[test]
    fn the_kms_budget_is_read_by_name_and_its_wait_ends_before_the_request_timeout() {
        let config = Config::load(
            None,
            env(&[
                ("BYOK_BROKER_KMS_BUDGET_PER_SECOND", "100"),
                ("BYOK_BROKER_KMS_BUDGET_MAX_WAIT_MS", "250"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (config.kms_budget.per_second, config.kms_budget.burst),
            (100, 100),
            "the burst follows the rate"
        );
        assert_eq!(config.kms_budget.max_wait, Duration::from_millis(250));
        let err = Config::load(
            None,
            env(&[
                ("BYOK_BROKER_KMS_BUDGET_MAX_WAIT_MS", "5000"),
                ("BYOK_BROKER_REQUEST_TIMEOUT_MS", "5000"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("kms.budget.max_wait_ms"), "{err}");
    }

    #[test]
    fn the_key_events_queue_is_off_unless_named_and_needs_aws() {
        assert_eq!(
            Config::load(None, env(&[])).unwrap().byok_events_queue_url,
            None
        );
        let url = "https://sqs.us-east-1.amazonaws.com/000000000000/kms-events";
        let aws = [
            ("BYOK_BROKER_KMS", "aws"),
            ("BYOK_BROKER_BYOK_EVENTS_QUEUE_URL", url),
        ];
        let config = Config::load(None, env(&aws)).unwrap();
        assert_eq!(config.byok_events_queue_url.as_deref(), Some(url));
        let off = [
            ("BYOK_BROKER_KMS", "aws"),
            ("BYOK_BROKER_BYOK_EVENTS_QUEUE_URL", ""),
        ];
        assert_eq!(
            Config::load(None, env(&off)).unwrap().byok_events_queue_url,
            None
        );
        let err = Config::load(None, env(&aws[1..])).unwrap_err();
        assert!(err.to_string().contains("events_queue_url"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("byok-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("broker.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\n[kms]\nprovider = \"aws\"\n[kms.aws]\nregion = \"eu-west-1\"\n[dek_cache]\nttl_seconds = 60\n").unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("BYOK_BROKER_LISTEN", "0.0.0.0:1234"),
                ("BYOK_BROKER_LISTEN_INSECURE", "true"),
            ]),
        )
        .unwrap();
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
    #[test]
    fn the_metrics_listener_is_an_address_other_than_the_apis() {
        assert_eq!(Config::load(None, env(&[])).unwrap().metrics_listen, None);
        let config = Config::load(
            None,
            env(&[("BYOK_BROKER_METRICS_LISTEN", "127.0.0.1:9464")]),
        )
        .unwrap();
        assert_eq!(config.metrics_listen.unwrap().to_string(), "127.0.0.1:9464");
        for (value, complaint) in [("nine", "\"nine\""), (DEFAULT_LISTEN, "must differ")] {
            let err =
                Config::load(None, env(&[("BYOK_BROKER_METRICS_LISTEN", value)])).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("BYOK_BROKER_METRICS_LISTEN") && message.contains(complaint),
                "{message}"
            );
        }
    }

    #[test]
    fn plain_http_outside_loopback_needs_listen_insecure() {
        for listen in ["0.0.0.0:8787", "[::]:8787", "192.0.2.10:8787"] {
            let err = Config::load(None, env(&[("BYOK_BROKER_LISTEN", listen)])).unwrap_err();
            assert!(err.to_string().contains("listen_insecure"), "{err}");
            let config = Config::load(
                None,
                env(&[
                    ("BYOK_BROKER_LISTEN", listen),
                    ("BYOK_BROKER_LISTEN_INSECURE", "true"),
                ]),
            )
            .unwrap();
            assert!(config.listen_insecure && config.tls.is_none());
            let tls = Config::load(
                None,
                env(&[
                    ("BYOK_BROKER_LISTEN", listen),
                    ("BYOK_BROKER_TLS_CERT", "/etc/broker/cert.pem"),
                    ("BYOK_BROKER_TLS_KEY", "/etc/broker/key.pem"),
                ]),
            )
            .unwrap();
            assert_eq!(
                tls.tls.unwrap().cert_file,
                PathBuf::from("/etc/broker/cert.pem")
            );
        }
        for listen in ["127.0.0.1:8787", "127.0.0.2:1", "[::1]:8787"] {
            let config = Config::load(None, env(&[("BYOK_BROKER_LISTEN", listen)])).unwrap();
            assert!(config.tls.is_none() && !config.listen_insecure);
        }
    }

    #[test]
    fn tls_needs_both_files_and_client_certificates_need_tls() {
        let err = Config::load(None, env(&[("BYOK_BROKER_TLS_CERT", "c.pem")])).unwrap_err();
        assert!(err.to_string().contains("tls.key_file"), "{err}");
        let err = Config::load(None, env(&[("BYOK_BROKER_TLS_CLIENT_CA", "ca.pem")])).unwrap_err();
        assert!(
            err.to_string().contains("BYOK_BROKER_TLS_CLIENT_CA"),
            "{err}"
        );
        let config = Config::load(
            None,
            env(&[
                ("BYOK_BROKER_TLS_CERT", "c.pem"),
                ("BYOK_BROKER_TLS_KEY", "k.pem"),
                ("BYOK_BROKER_TLS_CLIENT_CA", "ca.pem"),
            ]),
        )
        .unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(tls.client_ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.key_file, PathBuf::from("k.pem"));
    }

    #[test]
    fn an_unknown_file_key_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("byok-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("broker.toml");
        std::fs::write(&file, "[dek_cache]\nttl_secs = 60\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err();
        std::fs::remove_dir_all(dir).unwrap();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("ttl_secs"), "{err}");
    }

    #[test]
    fn a_bad_number_in_the_environment_is_named_and_not_replaced_by_the_file() {
        for (name, text) in [
            ("BYOK_BROKER_DEK_CACHE_CAPACITY", "lots"),
            ("BYOK_BROKER_REWRAP_CONCURRENCY", "-1"),
            ("BYOK_BROKER_RATE_LIMIT_PER_SECOND", "4294967296"),
            ("BYOK_BROKER_IDLE_TIMEOUT_MS", "1.5"),
            ("BYOK_BROKER_MAX_PLATFORM_KEKS", ""),
        ] {
            let err = Config::load(None, env(&[(name, text)])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { name: n, .. } if *n == name),
                "{name}={text:?}: {err}"
            );
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
        let err = Config::load(
            None,
            env(&[("BYOK_BROKER_ACCEPT_LEGACY_DATA_KEY_BLOBS", "yes")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("BYOK_BROKER_ACCEPT_LEGACY_DATA_KEY_BLOBS"),
            "{err}"
        );
    }
}
