//! Short-lived cache of plaintext DEKs, keyed by KEK id, wrapped-DEK digest and context hash.
//! Single flight: concurrent misses for one key make one KMS call. Entries are zeroized when the
//! last holder drops them (eviction, expiry, purge). A purge by KEK also defeats loads that were
//! already in flight when it started, so a revoked key's DEK never stays cached.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

pub use crate::config::limits::DekCacheConfig;
use crate::context::{ContextHash, KeyContext};
use crate::data_key::DataKey;
use crate::kms::{KekRef, KeyProvider, KmsError};

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    kek_id: Arc<str>,
    wrapped_digest: [u8; 32],
    context: ContextHash,
}

/// Counters since start. `kms_calls` counts loads actually executed (after single flight).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DekCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub kms_calls: u64,
    pub evictions: u64,
    pub entries: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    kms_calls: AtomicU64,
    evictions: AtomicU64,
    /// Bumped by every purge; a load that sees it change while in flight drops its result.
    purge_generation: AtomicU64,
}

#[derive(Clone)]
pub struct DekCache {
    entries: Option<moka::future::Cache<CacheKey, Arc<DataKey>>>,
    counters: Arc<Counters>,
}

impl DekCache {
    pub fn new(config: DekCacheConfig) -> Self {
        let counters = Arc::new(Counters::default());
        let enabled = !config.ttl.is_zero() && config.capacity > 0;
        let entries = enabled.then(|| {
            let on_evict = Arc::clone(&counters);
            moka::future::Cache::builder()
                .max_capacity(config.capacity)
                .time_to_live(config.ttl)
                .support_invalidation_closures()
                .eviction_listener(move |_key, _value, _cause| {
                    on_evict.evictions.fetch_add(1, Ordering::Relaxed);
                })
                .build()
        });
        Self { entries, counters }
    }

    /// The DEK for `wrapped`, from the cache or from `load` (run at most once per key at a time).
    pub async fn get_or_load<F, Fut>(
        &self,
        kek_id: &str,
        wrapped: &[u8],
        context: &KeyContext,
        load: F,
    ) -> Result<Arc<DataKey>, KmsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<DataKey, KmsError>>,
    {
        let Some(entries) = &self.entries else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            self.counters.kms_calls.fetch_add(1, Ordering::Relaxed);
            return load().await.map(Arc::new);
        };
        let key = CacheKey {
            kek_id: Arc::from(kek_id),
            wrapped_digest: Sha256::digest(wrapped).into(),
            context: context.hash(),
        };
        if let Some(hit) = entries.get(&key).await {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let generation = self.counters.purge_generation.load(Ordering::Acquire);
        let counters = &self.counters;
        let result = entries
            .try_get_with_by_ref(&key, async {
                counters.kms_calls.fetch_add(1, Ordering::Relaxed);
                load().await.map(Arc::new)
            })
            .await
            .map_err(|shared: Arc<KmsError>| (*shared).clone());
        if self.counters.purge_generation.load(Ordering::Acquire) != generation {
            entries.invalidate(&key).await;
        }
        result
    }

    /// Unwraps through `provider`, with caching and single flight.
    pub async fn unwrap(
        &self,
        provider: &dyn KeyProvider,
        kek: &KekRef,
        wrapped: &[u8],
        context: &KeyContext,
    ) -> Result<Arc<DataKey>, KmsError> {
        self.get_or_load(&kek.key_id, wrapped, context, || {
            provider.decrypt(kek, wrapped, context)
        })
        .await
    }

    /// Drops every cached DEK wrapped under `kek_id`, now and from loads already in flight.
    pub async fn purge_kek(&self, kek_id: &str) {
        self.counters
            .purge_generation
            .fetch_add(1, Ordering::AcqRel);
        let Some(entries) = &self.entries else { return };
        let target: Arc<str> = Arc::from(kek_id);
        // Only fails when closures are unsupported, which the builder enabled; fall back to all.
        if entries
            .invalidate_entries_if(move |key, _| key.kek_id == target)
            .is_err()
        {
            entries.invalidate_all();
        }
        entries.run_pending_tasks().await;
    }

    /// The distinct KEK ids that have DEKs in the cache now: the keys that could serve a read
    /// without asking KMS, so the ones whose state the watcher must follow.
    pub fn cached_kek_ids(&self) -> Vec<String> {
        let Some(entries) = &self.entries else {
            return Vec::new();
        };
        let ids: std::collections::BTreeSet<Arc<str>> = entries
            .iter()
            .map(|(key, _)| Arc::clone(&key.kek_id))
            .collect();
        ids.into_iter().map(|id| id.to_string()).collect()
    }

    pub fn stats(&self) -> DekCacheStats {
        let c = &self.counters;
        DekCacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            kms_calls: c.kms_calls.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            entries: self.entries.as_ref().map_or(0, |e| e.entry_count()),
        }
    }

    /// Applies pending expirations and evictions now (tests and metrics want exact counts).
    pub async fn run_pending_tasks(&self) {
        if let Some(entries) = &self.entries {
            entries.run_pending_tasks().await;
        }
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
