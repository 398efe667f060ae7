//! Context → KEK resolution. Platform KEKs are created just in time: the first use of a context
//! creates one KMS key and an alias derived from the context hash; later uses find the alias.
//! Concurrent first uses converge on one key: in-process through single flight, across processes
//! through the alias (CreateAlias fails for all but one creator; losers schedule their key for
//! deletion and use the winner's).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::context::{ContextHash, KeyContext};
use crate::kms::{AliasOutcome, KekRef, KeyProvider, KmsError, KmsFailure};

/// Attempts to read back an alias another creator just won; covers its brief write window.
const ALIAS_READBACK_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyringStats {
    pub keks_created: u64,
    pub orphans_scheduled_for_deletion: u64,
}

#[derive(Default)]
struct Counters {
    keks_created: AtomicU64,
    orphans: AtomicU64,
}

pub struct Keyring {
    provider: Arc<dyn KeyProvider>,
    alias_prefix: String,
    /// Resolved platform KEK ids; a KEK's id for a context never changes, so no expiry is needed.
    resolved: moka::future::Cache<ContextHash, Arc<str>>,
    counters: Counters,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid KEK alias prefix {0:?}: use 1-100 characters of [A-Za-z0-9/_-], not starting with 'aws'"
)]
pub struct AliasPrefixError(pub String);

impl Keyring {
    /// `alias_prefix` namespaces this deployment's aliases: `alias/<prefix>/ctx-<context hash>`.
    pub fn new(
        provider: Arc<dyn KeyProvider>,
        alias_prefix: &str,
    ) -> Result<Self, AliasPrefixError> {
        validate_alias_prefix(alias_prefix)?;
        Ok(Self {
            provider,
            alias_prefix: alias_prefix.trim_matches('/').to_owned(),
            resolved: moka::future::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            counters: Counters::default(),
        })
    }

    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    /// The alias naming the platform KEK of `context`.
    pub fn alias_for(&self, context: &KeyContext) -> String {
        format!(
            "alias/{}/ctx-{}",
            self.alias_prefix,
            context.hash().to_hex()
        )
    }

    /// The platform KEK for `context`, created on first use.
    pub async fn platform_kek(&self, context: &KeyContext) -> Result<KekRef, KmsError> {
        self.resolve_platform_kek(context).await.map(|(kek, _)| kek)
    }

    /// The platform KEK for `context`, and whether this very call created it (so the caller can
    /// record `vault.kek.created` exactly once).
    pub async fn resolve_platform_kek(
        &self,
        context: &KeyContext,
    ) -> Result<(KekRef, bool), KmsError> {
        let created_here = AtomicBool::new(false);
        let id = self
            .resolved
            .try_get_with(context.hash(), async {
                let (id, created) = self.find_or_create(context).await?;
                created_here.store(created, Ordering::Relaxed);
                Ok::<_, KmsError>(id)
            })
            .await
            .map_err(|shared: Arc<KmsError>| (*shared).clone())?;
        Ok((
            KekRef::platform(id.as_ref()),
            created_here.load(Ordering::Relaxed),
        ))
    }

    pub fn stats(&self) -> KeyringStats {
        KeyringStats {
            keks_created: self.counters.keks_created.load(Ordering::Relaxed),
            orphans_scheduled_for_deletion: self.counters.orphans.load(Ordering::Relaxed),
        }
    }

    /// The KEK id, and true when this call created the key that won.
    async fn find_or_create(&self, context: &KeyContext) -> Result<(Arc<str>, bool), KmsError> {
        let alias = self.alias_for(context);
        if let Some(id) = self.provider.find_alias(&alias).await? {
            return Ok((id.into(), false));
        }
        let hash = context.hash();
        let key_id = self
            .provider
            .create_key(&format!("byok-broker platform KEK for context {hash}"))
            .await?;
        self.counters.keks_created.fetch_add(1, Ordering::Relaxed);
        match self.provider.create_alias(&alias, &key_id).await? {
            AliasOutcome::Created => {
                tracing::info!(kek_id = %key_id, context_hash = %hash, "created platform KEK");
                Ok((key_id.into(), true))
            }
            AliasOutcome::AlreadyExists => {
                // Another broker process won the race: ours is an orphan nobody will ever use.
                match self.provider.schedule_key_deletion(&key_id).await {
                    Ok(()) => {
                        self.counters.orphans.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(orphan = %key_id, context_hash = %hash, "lost KEK creation race; orphan scheduled for deletion");
                    }
                    Err(e) => {
                        tracing::warn!(orphan = %key_id, error = %e, "could not schedule orphan KEK for deletion")
                    }
                }
                self.read_back(&alias).await.map(|id| (id.into(), false))
            }
        }
    }

    async fn read_back(&self, alias: &str) -> Result<String, KmsError> {
        for attempt in 0..ALIAS_READBACK_ATTEMPTS {
            if let Some(id) = self.provider.find_alias(alias).await? {
                return Ok(id);
            }
            tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
        }
        Err(KmsError::new(
            KmsFailure::ServiceInternal,
            format!("alias {alias} exists but could not be read"),
        ))
    }
}

fn validate_alias_prefix(prefix: &str) -> Result<(), AliasPrefixError> {
    let trimmed = prefix.trim_matches('/');
    let valid = !trimmed.is_empty()
        && trimmed.len() <= 100
        && !trimmed.starts_with("aws")
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(AliasPrefixError(prefix.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::validate_alias_prefix;

    #[test]
    fn alias_prefixes_follow_kms_alias_rules() {
        assert!(validate_alias_prefix("byok-broker").is_ok());
        assert!(validate_alias_prefix("byok-broker/prod_eu").is_ok());
        for bad in ["", "/", "aws/x", "has space", "dot.ted", &"x".repeat(101)] {
            assert!(validate_alias_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
