//! Counters for operators, rendered in the Prometheus text format at `/admin/v1/metrics`:
//! KMS calls per key account, operation and outcome (through [`MeteredProvider`]), key-state
//! checks and revocations; gauges for BYOK key states and the DEK cache are computed at render.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use crate::byok::bindings::BindingSet;
use crate::cache::DekCacheStats;
use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::kms::{AliasOutcome, GeneratedDataKey, KekRef, KeyDescription, KeyProvider, KmsError};

#[derive(Default)]
pub struct Metrics {
    /// Rendered series (`name{labels}`) → count.
    counters: Mutex<BTreeMap<String, u64>>,
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let rendered: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{name}{{{}}}", rendered.join(","))
}

/// The AWS account in a key ARN (the tenant, for tenant CMKs); "local" or "unknown" otherwise.
fn account_of(key_id: &str) -> &str {
    if key_id.starts_with("local/") {
        return "local";
    }
    key_id
        .split(':')
        .nth(4)
        .filter(|a| !a.is_empty())
        .unwrap_or("unknown")
}

impl Metrics {
    pub fn increment(&self, name: &str, labels: &[(&str, &str)]) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        *counters.entry(series(name, labels)).or_default() += 1;
    }

    pub fn record_key_check(&self, key_arn: &str, available: bool) {
        let outcome = if available {
            "available"
        } else {
            "unavailable"
        };
        self.increment(
            "byok_broker_key_checks_total",
            &[("account", account_of(key_arn)), ("outcome", outcome)],
        );
    }

    pub fn record_revocation(&self, cause: &str) {
        self.increment("byok_broker_revocations_total", &[("cause", cause)]);
    }

    fn record_kms_call(&self, key_id: &str, operation: &str, error: Option<&KmsError>) {
        let outcome = error.map_or_else(|| "ok".to_owned(), |e| e.class().to_string());
        self.increment(
            "byok_broker_kms_calls_total",
            &[
                ("account", account_of(key_id)),
                ("operation", operation),
                ("outcome", &outcome),
            ],
        );
    }

    pub fn render(&self, bindings: &BindingSet, cache: DekCacheStats) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        for (series, value) in counters.iter() {
            let _ = writeln!(out, "{series} {value}");
        }
        drop(counters);
        let mut states: BTreeMap<&str, u64> =
            [("active", 0), ("disabled", 0), ("unavailable", 0)].into();
        for binding in bindings.all() {
            *states.entry(binding.state().as_str()).or_default() += 1;
        }
        for (state, count) in states {
            let _ = writeln!(
                out,
                "{} {count}",
                series("byok_broker_byok_keys", &[("state", state)])
            );
        }
        for (name, value) in [
            ("hits", cache.hits),
            ("misses", cache.misses),
            ("kms_calls", cache.kms_calls),
            ("evictions", cache.evictions),
        ] {
            let _ = writeln!(out, "byok_broker_dek_cache_{name}_total {value}");
        }
        let _ = writeln!(out, "byok_broker_dek_cache_entries {}", cache.entries);
        out
    }
}

/// Wraps the broker's key provider and counts every call by key account, operation and outcome.
pub struct MeteredProvider {
    pub inner: Arc<dyn KeyProvider>,
    pub metrics: Arc<Metrics>,
}

impl MeteredProvider {
    fn note<T>(&self, key_id: &str, operation: &str, result: &Result<T, KmsError>) {
        self.metrics
            .record_kms_call(key_id, operation, result.as_ref().err());
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
        let result = self.inner.generate_data_key(kek, context).await;
        self.note(&kek.key_id, "generate_data_key", &result);
        result
    }
    async fn decrypt(
        &self,
        kek: &KekRef,
        wrapped: &[u8],
        context: &KeyContext,
    ) -> Result<DataKey, KmsError> {
        let result = self.inner.decrypt(kek, wrapped, context).await;
        self.note(&kek.key_id, "decrypt", &result);
        result
    }
    async fn encrypt(
        &self,
        kek: &KekRef,
        key: &DataKey,
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        let result = self.inner.encrypt(kek, key, context).await;
        self.note(&kek.key_id, "encrypt", &result);
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
        self.note(&destination.key_id, "reencrypt", &result);
        result
    }
    async fn describe(&self, kek: &KekRef) -> Result<KeyDescription, KmsError> {
        let result = self.inner.describe(kek).await;
        self.note(&kek.key_id, "describe", &result);
        result
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let metrics = Metrics::default();
        metrics.record_key_check("arn:aws:kms:us-east-1:111111111111:key/a", false);
        metrics.record_revocation("aws");
        let text = metrics.render(&BindingSet::default(), DekCacheStats::default());
        assert!(
            text.contains(
                "byok_broker_key_checks_total{account=\"111111111111\",outcome=\"unavailable\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("byok_broker_revocations_total{cause=\"aws\"} 1"));
        assert!(text.contains("byok_broker_byok_keys{state=\"active\"} 0"));
        assert!(text.contains("byok_broker_dek_cache_entries 0"));
    }
}
