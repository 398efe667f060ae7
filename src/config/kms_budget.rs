//! `[kms.budget]`: the share of the AWS account's KMS request quota this process may use. AWS
//! throttles the account that calls, not the one that owns the key, so every tenant's CMK and every
//! platform KEK draw on the broker's one per-region quota for cryptographic operations; the budget
//! keeps one tenant's burst from taking it all (see `kms::budget`).

use std::time::Duration;

use serde::Deserialize;

use super::sources::Sources;
use super::{ConfigError, invalid};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KmsBudget {
    /// Cryptographic calls (`Decrypt`, `Encrypt`, `GenerateDataKey`, `ReEncrypt`) per second and
    /// region; 0 turns the budget off.
    pub per_second: u32,
    /// Calls that may go at once after a quiet period.
    pub burst: u32,
    /// How long a live request waits for capacity before 503 `kms_busy`.
    pub max_wait: Duration,
    /// Live calls waiting at once, per region; beyond that a call is refused without waiting.
    pub max_waiters: usize,
    /// `DescribeKey` calls per second (the key-state watcher, verifications): a budget of its own,
    /// since AWS counts them against another quota.
    pub describe_per_second: u32,
}

impl Default for KmsBudget {
    fn default() -> Self {
        Self {
            // AWS's smallest shared quota for symmetric cryptographic operations in a region.
            per_second: 5_500,
            burst: 5_500,
            max_wait: Duration::from_secs(1),
            max_waiters: 1024,
            describe_per_second: 100,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKmsBudget {
    per_second: Option<u32>,
    burst: Option<u32>,
    max_wait_ms: Option<u64>,
    max_waiters: Option<usize>,
    describe_per_second: Option<u32>,
}

impl KmsBudget {
    pub(super) fn load(raw: RawKmsBudget, sources: &Sources<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let per_second = sources.value(
            "BYOK_BROKER_KMS_BUDGET_PER_SECOND",
            raw.per_second,
            defaults.per_second,
        )?;
        let budget = Self {
            per_second,
            // The burst follows a configured rate unless set: a small budget must not start with
            // AWS-sized savings.
            burst: sources.value("BYOK_BROKER_KMS_BUDGET_BURST", raw.burst, per_second)?,
            max_wait: sources.millis(
                "BYOK_BROKER_KMS_BUDGET_MAX_WAIT_MS",
                raw.max_wait_ms,
                defaults.max_wait,
            )?,
            max_waiters: sources.value(
                "BYOK_BROKER_KMS_BUDGET_MAX_WAITERS",
                raw.max_waiters,
                defaults.max_waiters,
            )?,
            describe_per_second: sources.value(
                "BYOK_BROKER_KMS_DESCRIBE_PER_SECOND",
                raw.describe_per_second,
                defaults.describe_per_second,
            )?,
        };
        if budget.per_second > 0 && budget.burst == 0 {
            return Err(invalid(
                "kms.budget.burst",
                "must be at least 1 when the budget is on".into(),
            ));
        }
        if budget.max_wait.is_zero() || budget.max_waiters == 0 {
            return Err(invalid(
                "kms.budget.max_wait_ms / kms.budget.max_waiters",
                "must be at least 1".into(),
            ));
        }
        Ok(budget)
    }
}
