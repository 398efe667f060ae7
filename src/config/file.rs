//! The configuration file as written: every table and key optional, unknown keys refused, so a
//! typo is an error instead of a silently ignored setting. `Config::load` gives each key its
//! environment override and default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, ProviderKind};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<String>,
    pub(super) listen_insecure: Option<bool>,
    pub(super) metrics_listen: Option<String>,
    #[serde(default)]
    pub(super) tls: super::tls::RawTls,
    pub(super) data_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) kms: RawKms,
    #[serde(default)]
    pub(super) dek_cache: RawCache,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) rate_limit: RawRateLimit,
    #[serde(default)]
    pub(super) byok: RawByok,
    #[serde(default)]
    pub(super) rewrap: RawRewrap,
    #[serde(default)]
    pub(super) server: super::server::RawServer,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) platform_kek: super::platform_keks::RawPlatformKek,
    #[serde(default)]
    pub(super) portal: super::portal::RawPortal,
}

/// Where the store lives (`url`: PostgreSQL) and its operational limits.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: Option<String>,
    pub(super) pool_size: Option<usize>,
    pub(super) connect_timeout_ms: Option<u64>,
    pub(super) statement_timeout_ms: Option<u64>,
    pub(super) max_page_count: Option<u64>,
    pub(super) idempotency_retention_hours: Option<u64>,
    pub(super) audit_retention_days: Option<u64>,
    pub(super) purge_interval_seconds: Option<u64>,
    pub(super) purge_batch_size: Option<u64>,
    pub(super) coherence_check_ms: Option<u64>,
}

// By hand: the URL may carry a password.
impl std::fmt::Debug for RawStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStore")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("max_page_count", &self.max_page_count)
            .field(
                "idempotency_retention_hours",
                &self.idempotency_retention_hours,
            )
            .field("audit_retention_days", &self.audit_retention_days)
            .field("purge_interval_seconds", &self.purge_interval_seconds)
            .field("purge_batch_size", &self.purge_batch_size)
            .field("coherence_check_ms", &self.coherence_check_ms)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRewrap {
    pub(super) kms_calls_per_second: Option<u32>,
    pub(super) concurrency: Option<usize>,
    pub(super) batch_size: Option<usize>,
    pub(super) lease_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawByok {
    pub(super) watch_interval_ms: Option<u64>,
    pub(super) watch_concurrency: Option<usize>,
    pub(super) allow_direct_key_access: Option<bool>,
    pub(super) events_queue_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) per_second: Option<u32>,
    pub(super) burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_value_bytes: Option<usize>,
    pub(super) max_request_bytes: Option<usize>,
    pub(super) new_platform_keks_per_key_per_hour: Option<u32>,
    pub(super) max_platform_keks: Option<u64>,
    pub(super) accept_legacy_data_key_blobs: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKms {
    pub(super) provider: Option<ProviderKind>,
    pub(super) kek_alias_prefix: Option<String>,
    #[serde(default)]
    pub(super) aws: RawAws,
    #[serde(default)]
    pub(super) budget: super::kms_budget::RawKmsBudget,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    pub(super) region: Option<String>,
    pub(super) endpoint_url: Option<String>,
    pub(super) sts_endpoint_url: Option<String>,
    pub(super) attempt_timeout_ms: Option<u64>,
    pub(super) operation_timeout_ms: Option<u64>,
    pub(super) max_attempts: Option<u32>,
    pub(super) tenant_session_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) ttl_seconds: Option<u64>,
    pub(super) capacity: Option<u64>,
}

/// Reads and parses `path`; an unknown key is an error naming it (every table denies them).
pub(super) fn parse_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.to_string(),
    })
}
