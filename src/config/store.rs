//! The `[store]` table: which database (embedded SQLite, or PostgreSQL by URL), how it is reached,
//! and how long idempotency records and audit events are kept.

use std::time::Duration;

use super::file::RawStore;
use super::sources::Sources;
use super::{ConfigError, Redacted, invalid};

/// Where the store lives and how it is reached.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `postgres://…` selects PostgreSQL (`store.url`, `BYOK_BROKER_DATABASE_URL`); unset, the
    /// embedded SQLite file in the data directory. Redacted: it may carry a password.
    pub url: Option<Redacted>,
    /// PostgreSQL connections for reads per broker process; the writer holds one more.
    pub pool_size: usize,
    /// How long opening a PostgreSQL connection, or waiting for a free one, may take before the
    /// request answers 503 `storage_unavailable`.
    pub connect_timeout: Duration,
    /// PostgreSQL cancels a statement that runs longer (the request answers 503).
    pub statement_timeout: Duration,
    /// Caps the database at this many pages (SQLite's `max_page_count`; 4 KiB pages): writes
    /// beyond it fail as on a full disk. A quota for the data directory, and how tests fill it.
    pub max_page_count: Option<u64>,
    pub retention: Retention,
}

/// How long records are kept, and how the background purge removes the rest.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// An `Idempotency-Key` is honoured this long after its first request; then the key is
    /// free again and the record is purged.
    pub idempotency: Duration,
    /// Audit events older than this are purged; `None` keeps them all (the default: an audit
    /// trail is often evidence, and deleting it is the operator's decision).
    pub audit: Option<Duration>,
    /// How often the purge runs.
    pub purge_interval: Duration,
    /// Rows deleted per transaction: a purge never holds the writer for long.
    pub purge_batch: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            idempotency: Duration::from_secs(24 * 3600),
            audit: None,
            purge_interval: Duration::from_secs(60),
            purge_batch: 1000,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            max_page_count: None,
            retention: Retention::default(),
        }
    }
}

pub(super) fn load(raw: RawStore, sources: &Sources<'_>) -> Result<StoreOptions, ConfigError> {
    let defaults = StoreOptions::default();
    let url = sources
        .secret("BYOK_BROKER_DATABASE_URL")
        .or_else(|| raw.url.map(|url| Redacted(zeroize::Zeroizing::new(url))));
    if let Some(url) = &url
        && !(url.0.starts_with("postgres://") || url.0.starts_with("postgresql://"))
    {
        return Err(invalid(
            "store.url / BYOK_BROKER_DATABASE_URL",
            "must be a postgres:// URL (leave it unset for the embedded SQLite store)".into(),
        ));
    }
    let hours = sources.optional(
        "BYOK_BROKER_STORE_IDEMPOTENCY_RETENTION_HOURS",
        raw.idempotency_retention_hours,
    )?;
    let audit_days = sources.optional(
        "BYOK_BROKER_STORE_AUDIT_RETENTION_DAYS",
        raw.audit_retention_days,
    )?;
    let retention = Retention {
        idempotency: hours.map_or(defaults.retention.idempotency, |h| {
            Duration::from_secs(h.saturating_mul(3600))
        }),
        // 0 keeps everything, as unset does.
        audit: audit_days
            .filter(|days| *days > 0)
            .map(|days| Duration::from_secs(days.saturating_mul(86_400))),
        purge_interval: sources.seconds(
            "BYOK_BROKER_STORE_PURGE_INTERVAL_SECONDS",
            raw.purge_interval_seconds,
            defaults.retention.purge_interval,
        )?,
        purge_batch: sources.value(
            "BYOK_BROKER_STORE_PURGE_BATCH_SIZE",
            raw.purge_batch_size,
            defaults.retention.purge_batch,
        )?,
    };
    let options = StoreOptions {
        url,
        pool_size: sources.value(
            "BYOK_BROKER_STORE_POOL_SIZE",
            raw.pool_size,
            defaults.pool_size,
        )?,
        connect_timeout: sources.millis(
            "BYOK_BROKER_STORE_CONNECT_TIMEOUT_MS",
            raw.connect_timeout_ms,
            defaults.connect_timeout,
        )?,
        statement_timeout: sources.millis(
            "BYOK_BROKER_STORE_STATEMENT_TIMEOUT_MS",
            raw.statement_timeout_ms,
            defaults.statement_timeout,
        )?,
        max_page_count: sources.optional("BYOK_BROKER_STORE_MAX_PAGE_COUNT", raw.max_page_count)?,
        retention,
    };
    // One for reads would serialise every read behind the slowest.
    if options.pool_size < 2 {
        return Err(invalid("store.pool_size", "must be at least 2".into()));
    }
    if options.connect_timeout.is_zero() || options.statement_timeout.is_zero() {
        return Err(invalid(
            "store.connect_timeout_ms / store.statement_timeout_ms",
            "must be at least 1".into(),
        ));
    }
    if retention.idempotency.is_zero()
        || retention.purge_interval.is_zero()
        || retention.purge_batch == 0
    {
        return Err(invalid(
            "store.idempotency_retention_hours / purge_interval_seconds / purge_batch_size",
            "must be at least 1".into(),
        ));
    }
    Ok(options)
}
