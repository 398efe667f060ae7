//! A quota-aware key provider: every cryptographic KMS call the broker makes draws on a per-region
//! budget ([`scheduler::RegionBudget`]) before it is sent, because AWS throttles the account that
//! calls (the broker's), whoever owns the key. Under contention the budget serves reads before
//! writes before background work, and tenants (the key context's `organization_id`) in turn
//! within a class, so one tenant's flood of creates cannot starve another's reads or writes. A live
//! call waits at most `kms.budget.max_wait_ms`, then fails with [`KmsFailure::BudgetExhausted`]
//! (503 `kms_busy` with `Retry-After`); background work (rewrap jobs, and the key-state watcher's
//! `DescribeKey` calls, which have a budget of their own) waits as long as it takes, inside
//! [`background`].
//!
//! Throttling by KMS itself (`ThrottlingException`, `LimitExceededException`) is recognised by
//! its code (`kms/aws/classify.rs`) and retried by the SDK's standard retry mode: exponential
//! backoff with full jitter, at most `kms.aws.max_attempts` attempts within the operation
//! timeout, and a client-wide retry quota that stops retrying when most attempts fail (no retry
//! storm). What still fails is 503 `kms_busy` too.

mod scheduler;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::time::Instant;

pub use crate::config::kms_budget::KmsBudget;
use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::kms::{
    AliasOutcome, GeneratedDataKey, KekRef, KeyDescription, KeyProvider, KmsError, KmsFailure,
    RotationStatus,
};
pub use scheduler::Priority;
use scheduler::{Rate, Refusal, RegionBudget};

tokio::task_local! {
    static BACKGROUND: ();
}

/// Runs `work` as background work: its KMS calls go after every live one and wait without a
/// deadline (rewrap jobs, the key-state watcher).
pub async fn background<F: Future>(work: F) -> F::Output {
    BACKGROUND.scope((), work).await
}

fn in_background() -> bool {
    BACKGROUND.try_with(|_| ()).is_ok()
}

/// The budget's own metrics; `metrics.rs` renders them.
#[derive(Clone)]
pub struct BudgetMetrics {
    pub waited: Family<PriorityLabels, Histogram, fn() -> Histogram>,
    pub refused: Family<PriorityLabels, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PriorityLabels {
    pub priority: &'static str,
}

/// Waits from 100 µs to about 16 s.
fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 3.0, 10))
}

impl Default for BudgetMetrics {
    fn default() -> Self {
        Self {
            waited: Family::new_with_constructor(wait_histogram),
            refused: Family::default(),
        }
    }
}

/// Wraps the broker's key provider with the budget; see the module header.
pub struct BudgetedProvider {
    inner: Arc<dyn KeyProvider>,
    settings: KmsBudget,
    /// Cryptographic calls, by region (tenant keys may live in other regions than the broker's).
    regions: Mutex<HashMap<String, Arc<RegionBudget>>>,
    /// `DescribeKey`, one budget for the process.
    describes: Option<Arc<RegionBudget>>,
    metrics: BudgetMetrics,
}

/// Calls without a region in their key id (bare ids, the local provider) share this budget.
const DEFAULT_REGION: &str = "default";

impl BudgetedProvider {
    /// `inner` behind the budget `settings` describe; with the budget off (0 per second), `inner`
    /// itself. Must be called on a Tokio runtime.
    pub fn wrap(
        inner: Arc<dyn KeyProvider>,
        settings: KmsBudget,
        metrics: BudgetMetrics,
    ) -> Arc<dyn KeyProvider> {
        if settings.per_second == 0 {
            return inner;
        }
        let describes = (settings.describe_per_second > 0).then(|| {
            RegionBudget::start(Rate {
                per_second: f64::from(settings.describe_per_second),
                burst: f64::from(settings.describe_per_second),
                max_waiters: settings.max_waiters,
            })
        });
        Arc::new(Self {
            inner,
            settings,
            regions: Mutex::default(),
            describes,
            metrics,
        })
    }

    fn region_budget(&self, kek: &KekRef) -> Arc<RegionBudget> {
        let region = kek.region_hint().unwrap_or(DEFAULT_REGION);
        let mut regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(budget) = regions.get(region) {
            return Arc::clone(budget);
        }
        let budget = RegionBudget::start(Rate {
            per_second: f64::from(self.settings.per_second),
            burst: f64::from(self.settings.burst),
            max_waiters: self.settings.max_waiters,
        });
        regions.insert(region.to_owned(), Arc::clone(&budget));
        budget
    }

    /// Capacity for one call of a live request of `priority` (background work inside
    /// [`background`] whatever the caller says), for `tenant`.
    async fn admit(
        &self,
        budget: &RegionBudget,
        priority: Priority,
        tenant: &str,
    ) -> Result<(), KmsError> {
        let (priority, deadline) = if in_background() {
            (Priority::Background, None)
        } else {
            (priority, Some(Instant::now() + self.settings.max_wait))
        };
        let labels = PriorityLabels {
            priority: priority.as_str(),
        };
        match budget.acquire(priority, tenant, deadline).await {
            Ok(waited) => {
                self.metrics
                    .waited
                    .get_or_create(&labels)
                    .observe(waited.as_secs_f64());
                Ok(())
            }
            Err(refusal) => {
                self.metrics.refused.get_or_create(&labels).inc();
                let why = match refusal {
                    Refusal::Deadline => "no capacity within kms.budget.max_wait_ms",
                    Refusal::QueueFull => "kms.budget.max_waiters calls already waiting",
                };
                Err(KmsError::new(
                    KmsFailure::BudgetExhausted,
                    format!("the broker's KMS budget is in use: {why}"),
                ))
            }
        }
    }

    async fn admit_crypto(
        &self,
        kek: &KekRef,
        priority: Priority,
        context: &KeyContext,
    ) -> Result<(), KmsError> {
        let budget = self.region_budget(kek);
        self.admit(&budget, priority, &tenant_of(context)).await
    }
}

/// Whose share a call counts against: the context's organization, else the context itself.
fn tenant_of(context: &KeyContext) -> String {
    match context.get("organization_id") {
        Some(org) => org.to_owned(),
        None => context.hash().to_hex(),
    }
}

#[async_trait]
impl KeyProvider for BudgetedProvider {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn generate_data_key(
        &self,
        kek: &KekRef,
        context: &KeyContext,
    ) -> Result<GeneratedDataKey, KmsError> {
        self.admit_crypto(kek, Priority::Write, context).await?;
        self.inner.generate_data_key(kek, context).await
    }
    async fn decrypt(
        &self,
        kek: &KekRef,
        wrapped: &[u8],
        context: &KeyContext,
    ) -> Result<DataKey, KmsError> {
        self.admit_crypto(kek, Priority::Read, context).await?;
        self.inner.decrypt(kek, wrapped, context).await
    }
    async fn encrypt(
        &self,
        kek: &KekRef,
        key: &DataKey,
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.admit_crypto(kek, Priority::Write, context).await?;
        self.inner.encrypt(kek, key, context).await
    }
    async fn reencrypt(
        &self,
        source: &KekRef,
        wrapped: &[u8],
        source_context: &KeyContext,
        destination: &KekRef,
        destination_context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        // Sent in the destination's region, with its credentials.
        self.admit_crypto(destination, Priority::Write, destination_context)
            .await?;
        self.inner
            .reencrypt(
                source,
                wrapped,
                source_context,
                destination,
                destination_context,
            )
            .await
    }
    async fn describe(&self, kek: &KekRef) -> Result<KeyDescription, KmsError> {
        if let Some(budget) = &self.describes {
            self.admit(budget, Priority::Write, &kek.key_id).await?;
        }
        self.inner.describe(kek).await
    }
    // Control-plane calls: AWS counts them against quotas of their own, and the broker bounds
    // key creation itself (`platform_kek`).
    async fn find_alias(&self, alias: &str) -> Result<Option<String>, KmsError> {
        self.inner.find_alias(alias).await
    }
    async fn create_key(&self, description: &str) -> Result<String, KmsError> {
        self.inner.create_key(description).await
    }
    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<AliasOutcome, KmsError> {
        self.inner.create_alias(alias, key_id).await
    }
    async fn schedule_key_deletion(&self, key_id: &str) -> Result<(), KmsError> {
        self.inner.schedule_key_deletion(key_id).await
    }
    async fn enable_key_rotation(&self, kek: &KekRef, period_days: u32) -> Result<(), KmsError> {
        self.inner.enable_key_rotation(kek, period_days).await
    }
    /// Read with every watcher pass, like `DescribeKey`: on the same budget.
    async fn key_rotation_status(&self, kek: &KekRef) -> Result<RotationStatus, KmsError> {
        if let Some(budget) = &self.describes {
            self.admit(budget, Priority::Write, &kek.key_id).await?;
        }
        self.inner.key_rotation_status(kek).await
    }
    async fn rotate_key_on_demand(&self, kek: &KekRef) -> Result<(), KmsError> {
        self.inner.rotate_key_on_demand(kek).await
    }
}
