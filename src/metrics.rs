//! Metrics for operators, rendered by `prometheus-client` in the text format at
//! `/admin/v1/metrics`: KMS calls per key account, operation and outcome (through
//! [`MeteredProvider`]), key-state checks, revocations and request latency by route template,
//! method and status; BYOK key states and the DEK cache are read at render. Label values come only
//! from bounded sets the broker knows (its own account, registered tenant accounts, route
//! templates, fixed names), never from caller input; escaping is the crate's.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::DekCacheStats;
use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::keyring::bindings::BindingSet;
use crate::kms::budget::BudgetMetrics;
use crate::kms::{
    AliasOutcome, GeneratedDataKey, KekRef, KeyDescription, KeyProvider, KmsError, KmsFailure,
    RotationStatus,
};
use crate::store::PoolStats;

/// The label for key ids in accounts the broker does not know: a caller may name any key id in
/// an `encrypted_keys` blob, and each distinct label value would be a new series.
const OTHER_ACCOUNT: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmsLatencyLabels {
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmsThrottleLabels {
    account: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmsCallLabels {
    account: String,
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyCheckLabels {
    account: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

type LatencyFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// Request latency buckets: 0.5 ms to about 12 s (a KMS call with retries and a slow disk).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.5, 12))
}

pub struct Metrics {
    kms_calls: Family<KmsCallLabels, Counter>,
    key_checks: Family<KeyCheckLabels, Counter>,
    revocations: Family<CauseLabels, Counter>,
    /// Key events from the push queue, by what became of them.
    key_events: Family<OutcomeLabels, Counter>,
    request_latency: LatencyFamily,
    /// 1 while this instance leads the key-state watcher (polls KMS for every instance).
    watcher_leader: Gauge,
    /// KMS call latency (KMS's own, excluding any wait for budget) by operation and outcome.
    kms_latency: Family<KmsLatencyLabels, Histogram, fn() -> Histogram>,
    /// Calls KMS answered with throttling (after the SDK's retries), by account and operation.
    kms_throttles: Family<KmsThrottleLabels, Counter>,
    /// The KMS budget's waits and refusals (`kms::budget`).
    pub budget: BudgetMetrics,
    /// Tenant CMKs found to turn automatic rotation off (a change, or first read without it).
    rotation_disabled: Counter,
    /// Tenant CMKs this instance last read without automatic rotation (the watcher's leader
    /// reads them each pass; a follower knows only those it verified).
    without_rotation: RwLock<BTreeSet<String>>,
    /// Accounts that may appear as label values: the broker's own (learned from KMS answers about
    /// keys it created or resolved) and those of registered BYOK keys.
    known_accounts: RwLock<BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            kms_calls: Family::default(),
            key_checks: Family::default(),
            revocations: Family::default(),
            key_events: Family::default(),
            request_latency: Family::new_with_constructor(latency_histogram),
            watcher_leader: Gauge::default(),
            kms_latency: Family::new_with_constructor(latency_histogram),
            kms_throttles: Family::default(),
            budget: BudgetMetrics::default(),
            rotation_disabled: Counter::default(),
            without_rotation: RwLock::default(),
            known_accounts: RwLock::default(),
        }
    }
}

/// The AWS account in a key ARN, `None` for anything else.
fn arn_account(key_id: &str) -> Option<&str> {
    key_id.split(':').nth(4).filter(|a| !a.is_empty())
}

impl Metrics {
    /// Lets the accounts of these key ARNs appear as label values (registered BYOK keys, and keys
    /// KMS itself reported for the broker's own calls).
    pub fn allow_accounts_of<'a>(&self, key_ids: impl IntoIterator<Item = &'a str>) {
        let accounts: Vec<&str> = key_ids.into_iter().filter_map(arn_account).collect();
        let known = self
            .known_accounts
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if accounts.iter().all(|a| known.contains(*a)) {
            return;
        }
        drop(known);
        let mut known = self
            .known_accounts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        known.extend(accounts.into_iter().map(str::to_owned));
    }

    /// The account label of a key id: "local", a known account, or "other".
    fn account_label(&self, key_id: &str) -> String {
        if key_id.starts_with("local/") {
            return "local".into();
        }
        let known = self
            .known_accounts
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match arn_account(key_id) {
            Some(account) if known.contains(account) => account.to_owned(),
            _ => OTHER_ACCOUNT.into(),
        }
    }

    pub fn record_key_check(&self, key_arn: &str, available: bool) {
        let outcome = if available {
            "available"
        } else {
            "unavailable"
        };
        let labels = KeyCheckLabels {
            account: self.account_label(key_arn),
            outcome: outcome.into(),
        };
        self.key_checks.get_or_create(&labels).inc();
    }

    pub fn set_watcher_leader(&self, leading: bool) {
        self.watcher_leader.set(i64::from(leading));
    }

    /// A read of a tenant CMK's rotation status: `turned_off` when it changed to off.
    pub fn record_tenant_rotation(&self, key_arn: &str, enabled: bool, turned_off: bool) {
        if turned_off {
            self.rotation_disabled.inc();
        }
        let mut without = self
            .without_rotation
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if enabled {
            without.remove(key_arn);
        } else {
            without.insert(key_arn.to_owned());
        }
    }

    /// A key event from the push queue: `handled`, `irrelevant` (not a key change), `malformed`
    /// (left for the dead-letter queue) or `failed` (delivered again).
    pub fn record_key_event(&self, outcome: &'static str) {
        self.key_events
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn record_revocation(&self, cause: &str) {
        let labels = CauseLabels {
            cause: cause.into(),
        };
        self.revocations.get_or_create(&labels).inc();
    }

    /// One answered request: `route` is the matched route template (or "unmatched"), never the
    /// raw path, and `method` one of a fixed set, so the series stay bounded.
    pub fn record_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let labels = RequestLabels {
            route: route.into(),
            method: method.into(),
            status,
        };
        self.request_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    fn record_kms_call(
        &self,
        key_id: &str,
        operation: &str,
        error: Option<&KmsError>,
        elapsed: Duration,
    ) {
        let outcome = error.map_or_else(|| "ok".to_owned(), |e| e.class().to_string());
        self.kms_latency
            .get_or_create(&KmsLatencyLabels {
                operation: operation.into(),
                outcome: outcome.clone(),
            })
            .observe(elapsed.as_secs_f64());
        let account = self.account_label(key_id);
        if error.is_some_and(|e| e.failure == KmsFailure::Throttled) {
            self.kms_throttles
                .get_or_create(&KmsThrottleLabels {
                    account: account.clone(),
                    operation: operation.into(),
                })
                .inc();
        }
        let labels = KmsCallLabels {
            account,
            operation: operation.into(),
            outcome,
        };
        self.kms_calls.get_or_create(&labels).inc();
    }

    /// The text exposition: the recorded families plus the BYOK key states and DEK cache
    /// counters as they are now.
    pub fn render(&self, bindings: &BindingSet, cache: DekCacheStats) -> String {
        self.render_broker(bindings, cache, None, |_| {})
    }

    /// [`Self::render`] plus the database pool's use (PostgreSQL) and what `register_others`
    /// adds: families other components own (the keyring's revocation timing, the audit writer's).
    pub fn render_broker(
        &self,
        bindings: &BindingSet,
        cache: DekCacheStats,
        pool: Option<PoolStats>,
        register_others: impl FnOnce(&mut Registry),
    ) -> String {
        let mut registry = Registry::default();
        register_others(&mut registry);
        if let Some(pool) = pool {
            register_pool(&mut registry, pool);
        }
        // Counters are named without `_total`: the encoder appends it.
        registry.register(
            "byok_broker_kms_calls",
            "KMS calls by key account, operation and outcome",
            self.kms_calls.clone(),
        );
        registry.register(
            "byok_broker_key_checks",
            "Key-state checks by key account and outcome",
            self.key_checks.clone(),
        );
        registry.register(
            "byok_broker_key_events",
            "Key events received from the push queue, by outcome",
            self.key_events.clone(),
        );
        registry.register(
            "byok_broker_revocations",
            "Keys marked revoked or unavailable, by cause",
            self.revocations.clone(),
        );
        registry.register(
            "byok_broker_http_request_duration_seconds",
            "Time from a routed request to its response head, by route template, method and status",
            self.request_latency.clone(),
        );
        registry.register(
            "byok_broker_kms_call_duration_seconds",
            "KMS call latency (without any wait for the KMS budget) by operation and outcome",
            self.kms_latency.clone(),
        );
        registry.register(
            "byok_broker_kms_throttles",
            "KMS calls that ended throttled after the SDK's retries, by key account and operation",
            self.kms_throttles.clone(),
        );
        registry.register(
            "byok_broker_kms_budget_wait_seconds",
            "Time KMS calls waited for the broker's KMS budget, by priority",
            self.budget.waited.clone(),
        );
        registry.register(
            "byok_broker_kms_budget_refusals",
            "KMS calls refused by the broker's KMS budget (503 kms_busy), by priority",
            self.budget.refused.clone(),
        );
        registry.register(
            "byok_broker_key_state_watcher_leader",
            "1 while this instance leads the key-state watcher (the one polling KMS)",
            self.watcher_leader.clone(),
        );
        registry.register(
            "byok_broker_tenant_key_rotation_disabled",
            "Tenant CMKs found with automatic rotation turned off (each change counted once)",
            self.rotation_disabled.clone(),
        );
        let without = self
            .without_rotation
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|arn| bindings.owner_of(arn).is_some())
            .count();
        registry.register(
            "byok_broker_tenant_keys_without_rotation",
            "Registered tenant CMKs last read without automatic rotation",
            ConstGauge::new(i64::try_from(without).unwrap_or(i64::MAX)),
        );
        let states: Family<StateLabels, Gauge> = Family::default();
        for state in ["active", "disabled", "unavailable"] {
            let labels = StateLabels {
                state: state.into(),
            };
            states.get_or_create(&labels).set(0);
        }
        for binding in bindings.all() {
            let labels = StateLabels {
                state: binding.state().as_str().into(),
            };
            states.get_or_create(&labels).inc();
        }
        registry.register("byok_broker_byok_keys", "BYOK keys by state", states);
        for (name, value) in [
            ("hits", cache.hits),
            ("misses", cache.misses),
            ("kms_calls", cache.kms_calls),
            ("evictions", cache.evictions),
        ] {
            registry.register(
                format!("byok_broker_dek_cache_{name}"),
                format!("DEK cache {name}"),
                ConstCounter::new(value),
            );
        }
        registry.register(
            "byok_broker_dek_cache_entries",
            "DEKs in the cache",
            ConstGauge::new(i64::try_from(cache.entries).unwrap_or(i64::MAX)),
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// The request pool's connections by state, its bound and its waiters.
fn register_pool(registry: &mut Registry, pool: PoolStats) {
    let gauge = |n: usize| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
    let connections: Family<StateLabels, Gauge> = Family::default();
    for (state, count) in [
        ("in_use", pool.open.saturating_sub(pool.idle)),
        ("idle", pool.idle),
    ] {
        connections
            .get_or_create(&StateLabels {
                state: state.into(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register(
        "byok_broker_db_pool_connections",
        "Open connections of the database request pool, by state",
        connections,
    );
    registry.register(
        "byok_broker_db_pool_max_connections",
        "The database request pool's bound",
        gauge(pool.max),
    );
    registry.register(
        "byok_broker_db_pool_waiting",
        "Requests waiting for a database connection",
        gauge(pool.waiting),
    );
}

/// Wraps the broker's key provider and counts every call by key account, operation and outcome.
pub struct MeteredProvider {
    pub inner: Arc<dyn KeyProvider>,
    pub metrics: Arc<Metrics>,
}

impl MeteredProvider {
    fn note<T>(
        &self,
        key_id: &str,
        operation: &str,
        started: std::time::Instant,
        result: &Result<T, KmsError>,
    ) {
        self.metrics
            .record_kms_call(key_id, operation, result.as_ref().err(), started.elapsed());
    }
}

#[async_trait]
impl KeyProvider for MeteredProvider {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn generate_data_key(
        &self,
        kek: &KekRef,
        context: &KeyContext,
    ) -> Result<GeneratedDataKey, KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.generate_data_key(kek, context).await;
        if let Ok(generated) = &result {
            self.metrics.allow_accounts_of([generated.kek_id.as_str()]);
        }
        self.note(&kek.key_id, "generate_data_key", started, &result);
        result
    }
    async fn decrypt(
        &self,
        kek: &KekRef,
        wrapped: &[u8],
        context: &KeyContext,
    ) -> Result<DataKey, KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.decrypt(kek, wrapped, context).await;
        self.note(&kek.key_id, "decrypt", started, &result);
        result
    }
    async fn encrypt(
        &self,
        kek: &KekRef,
        key: &DataKey,
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.encrypt(kek, key, context).await;
        self.note(&kek.key_id, "encrypt", started, &result);
        result
    }
    async fn reencrypt(
        &self,
        source: &KekRef,
        wrapped: &[u8],
        source_context: &KeyContext,
        destination: &KekRef,
        destination_context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        let started = std::time::Instant::now();
        let result = self
            .inner
            .reencrypt(
                source,
                wrapped,
                source_context,
                destination,
                destination_context,
            )
            .await;
        self.note(&destination.key_id, "reencrypt", started, &result);
        result
    }
    async fn describe(&self, kek: &KekRef) -> Result<KeyDescription, KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.describe(kek).await;
        self.note(&kek.key_id, "describe", started, &result);
        result
    }
    async fn find_alias(&self, alias: &str) -> Result<Option<String>, KmsError> {
        let result = self.inner.find_alias(alias).await;
        if let Ok(Some(key_id)) = &result {
            self.metrics.allow_accounts_of([key_id.as_str()]);
        }
        result
    }
    async fn create_key(&self, description: &str) -> Result<String, KmsError> {
        let result = self.inner.create_key(description).await;
        if let Ok(key_id) = &result {
            self.metrics.allow_accounts_of([key_id.as_str()]);
        }
        result
    }
    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<AliasOutcome, KmsError> {
        self.inner.create_alias(alias, key_id).await
    }
    async fn schedule_key_deletion(&self, key_id: &str) -> Result<(), KmsError> {
        self.inner.schedule_key_deletion(key_id).await
    }
    async fn enable_key_rotation(&self, kek: &KekRef, period_days: u32) -> Result<(), KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.enable_key_rotation(kek, period_days).await;
        self.note(&kek.key_id, "enable_key_rotation", started, &result);
        result
    }
    async fn key_rotation_status(&self, kek: &KekRef) -> Result<RotationStatus, KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.key_rotation_status(kek).await;
        self.note(&kek.key_id, "get_key_rotation_status", started, &result);
        result
    }
    async fn rotate_key_on_demand(&self, kek: &KekRef) -> Result<(), KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.rotate_key_on_demand(kek).await;
        self.note(&kek.key_id, "rotate_key_on_demand", started, &result);
        result
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
