//! Platform KEKs: finding the one a context's selection names (cache, then alias; never created
//! for a read), creating it just in time within the creation quota, and recognising KEKs made
//! under an earlier selector. Concurrent creators converge on one key through the alias.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{ALIAS_READBACK_ATTEMPTS, KeyAccessError, Keyring};
use crate::context::KeyContext;
use crate::kms::{AliasOutcome, KekRef, KmsError, KmsFailure};
use crate::platform_kek::{self, KekCreator};

impl Keyring {
    /// Whether `kek_id` is a platform KEK the broker made for `context`: the one its selector
    /// fields select now, or one an earlier selector (or none: the whole context) selected, so
    /// objects stay readable and rewrappable after the operator changes the selector.
    pub(super) async fn is_platform_kek_of(
        &self,
        context: &KeyContext,
        kek_id: &str,
    ) -> Result<bool, KeyAccessError> {
        let selection = self.platform_selection(context).ok();
        if let Some(selection) = &selection
            && self.resolved.get(&selection.hash()).await.as_deref() == Some(kek_id)
        {
            return Ok(true);
        }
        // Any selection the operator had configured before is in the store's record of the
        // platform KEKs the broker created (the selection's hash): no KMS call needed.
        let verdict_key = (Arc::<str>::from(kek_id), context.hash());
        if let Some(held) = self.held_verdicts.get(&verdict_key).await {
            return Ok(held);
        }
        if let Some(quota) = &self.quota
            && let Some(hash) = quota
                .selection_of(kek_id)
                .await
                .map_err(KeyAccessError::Store)?
            && !hash.is_empty()
        {
            let held = platform_kek::is_selection_of(context, &hash);
            self.held_verdicts.insert(verdict_key, held).await;
            return Ok(held);
        }
        // Unknown to the store (created before it kept a record), or counted at upgrade: by alias.
        if let Some(selection) = &selection
            && self
                .find_platform_kek(selection)
                .await
                .map_err(KeyAccessError::Kms)?
                .as_deref()
                == Some(kek_id)
        {
            return Ok(true);
        }
        if self.selector_fields.is_none() {
            return Ok(false);
        }
        let whole = self
            .find_platform_kek(context)
            .await
            .map_err(KeyAccessError::Kms)?;
        Ok(whole.as_deref() == Some(kek_id))
    }

    /// The platform KEK that `selection` selects if it exists: the resolved cache, else its alias
    /// (a DescribeKey, never a create: a read must not mint keys). Absence is not cached, because
    /// a write may create the KEK at any moment.
    async fn find_platform_kek(
        &self,
        selection: &KeyContext,
    ) -> Result<Option<Arc<str>>, KmsError> {
        let hash = selection.hash();
        if let Some(id) = self.resolved.get(&hash).await {
            return Ok(Some(id));
        }
        let Some(id) = self.provider.find_alias(&self.alias_for(selection)).await? else {
            return Ok(None);
        };
        self.ensure_platform_rotation(&id).await;
        let id: Arc<str> = id.into();
        self.resolved.insert(hash, Arc::clone(&id)).await;
        Ok(Some(id))
    }

    /// The platform KEK `selection` names, and whether this very call created it (so the caller
    /// can record `vault.kek.created` exactly once).
    pub(super) async fn resolve_platform_kek(
        &self,
        selection: &KeyContext,
        creator: KekCreator<'_>,
    ) -> Result<(KekRef, bool), KeyAccessError> {
        let created_here = AtomicBool::new(false);
        let id = self
            .resolved
            .try_get_with(selection.hash(), async {
                let (id, created) = self.find_or_create(selection, creator).await?;
                created_here.store(created, Ordering::Relaxed);
                Ok::<_, KeyAccessError>(id)
            })
            .await
            .map_err(|shared: Arc<KeyAccessError>| (*shared).clone())?;
        Ok((
            KekRef::platform(id.as_ref()),
            created_here.load(Ordering::Relaxed),
        ))
    }

    /// The KEK id, and true when this call created the key that won. A creation is reserved
    /// against the limits first and given back if it did not produce the alias's key.
    async fn find_or_create(
        &self,
        selection: &KeyContext,
        creator: KekCreator<'_>,
    ) -> Result<(Arc<str>, bool), KeyAccessError> {
        let alias = self.alias_for(selection);
        if let Some(id) = self
            .provider
            .find_alias(&alias)
            .await
            .map_err(KeyAccessError::Kms)?
        {
            self.ensure_platform_rotation(&id).await;
            return Ok((id.into(), false));
        }
        let hash = selection.hash();
        let reservation = match &self.quota {
            Some(quota) => Some(
                quota
                    .reserve(creator, &hash.to_hex())
                    .await
                    .map_err(KeyAccessError::Store)?
                    .map_err(KeyAccessError::CreationRefused)?,
            ),
            None => None,
        };
        let outcome = self.create_with_alias(&alias, selection).await;
        if let (Some(quota), Some(reservation)) = (&self.quota, reservation) {
            match &outcome {
                Ok((id, true)) => quota.confirm(reservation, id).await,
                _ => quota.release(reservation).await,
            }
        }
        if let Ok((id, _)) = &outcome {
            self.ensure_platform_rotation(id).await;
        }
        outcome.map_err(KeyAccessError::Kms)
    }

    /// Makes sure automatic rotation at the configured period is on for the platform KEK
    /// `kek_id`: asked of KMS only when the store does not record it (so once per KEK, not per
    /// use), recorded once KMS accepted. Called when a KEK is created or first resolved by this
    /// process, and at start for every recorded KEK. Never fails the caller: rotation is not needed
    /// to use the key, and the next start or first use tries again. Returns true if it is on.
    pub async fn ensure_platform_rotation(&self, kek_id: &str) -> bool {
        let period = self.rotation_period_days();
        if let Some(quota) = &self.quota {
            match quota.rotation_recorded(kek_id).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(kek_id, error = %e, "could not read a platform KEK's rotation record; asking KMS")
                }
            }
        }
        match self
            .provider
            .enable_key_rotation(&KekRef::platform(kek_id), period)
            .await
        {
            Ok(()) => {
                if let Some(quota) = &self.quota {
                    quota.record_rotation(kek_id).await;
                }
                tracing::info!(
                    kek_id,
                    period_days = period,
                    "automatic rotation enabled on platform KEK"
                );
                true
            }
            Err(e) => {
                tracing::warn!(kek_id, error = %e, "could not enable automatic rotation on a platform KEK; retried at the next start or first use");
                false
            }
        }
    }

    async fn create_with_alias(
        &self,
        alias: &str,
        selection: &KeyContext,
    ) -> Result<(Arc<str>, bool), KmsError> {
        let hash = selection.hash();
        let key_id = self
            .provider
            .create_key(&format!("byok-broker platform KEK for context {hash}"))
            .await?;
        self.counters.keks_created.fetch_add(1, Ordering::Relaxed);
        match self.provider.create_alias(alias, &key_id).await? {
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
                self.read_back(alias).await.map(|id| (id.into(), false))
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
