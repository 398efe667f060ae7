//! Counters for operators, rendered in the Prometheus text format at `/admin/v1/metrics`:
//! KMS calls per key account, operation and outcome (through [`MeteredProvider`]), key-state
//! checks and revocations; gauges for BYOK key states and the DEK cache are computed at render.
//! Label values come only from bounded sets the broker knows (its own account, registered tenant
//! accounts, fixed names), never from caller input, and are escaped per the exposition format.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;

use crate::cache::DekCacheStats;
use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::keyring::bindings::BindingSet;
use crate::kms::{AliasOutcome, GeneratedDataKey, KekRef, KeyDescription, KeyProvider, KmsError};

/// The label for key ids in accounts the broker does not know: a caller may name any key id in
/// an `encrypted_keys` blob, and each distinct label value would be a new series.
const OTHER_ACCOUNT: &str = "other";

#[derive(Default)]
pub struct Metrics {
    /// Rendered series (`name{labels}`) → count.
    counters: Mutex<BTreeMap<String, u64>>,
    /// Accounts that may appear as label values: the broker's own (learned from KMS answers about
    /// keys it created or resolved) and those of registered BYOK keys.
    known_accounts: RwLock<BTreeSet<String>>,
}

/// `name{k="v",...}` with label values escaped as the text exposition format requires
/// (backslash, double quote and line feed), so no value can end a line or a label early.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let rendered: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
        .collect();
    format!("{name}{{{}}}", rendered.join(","))
}

fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
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
            &[
                ("account", &self.account_label(key_arn)),
                ("outcome", outcome),
            ],
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
                ("account", &self.account_label(key_id)),
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
        if let Ok(generated) = &result {
            self.metrics.allow_accounts_of([generated.kek_id.as_str()]);
        }
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
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
