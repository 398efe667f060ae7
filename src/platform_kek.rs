//! Policy for just-in-time platform KEKs: which context fields select one (the whole context is
//! still the encryption context) and creation limits per API key per hour and in total, counted in
//! the store (a KMS key costs money monthly and uses a per-account quota all tenants share).

pub use crate::config::platform_keks::PlatformKekConfig;
use crate::context::KeyContext;
use crate::store::{KekCreationRefused, PlatformKekReservation, Store, StoreError};

/// Who causes a KEK creation: an API key (limited per hour and in total) or the broker's own
/// work started by an admin, such as a rewrap job (limited in total only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekCreator<'a> {
    ApiKey(&'a str),
    Broker,
}

/// The part of a context that selects its platform KEK.
pub fn select(fields: Option<&[String]>, context: &KeyContext) -> Result<KeyContext, String> {
    let Some(fields) = fields else {
        return Ok(context.clone());
    };
    let mut pairs = Vec::with_capacity(fields.len());
    for field in fields {
        let value = context.get(field).ok_or_else(|| field.clone())?;
        pairs.push((field.as_str(), value));
    }
    // A subset of a valid context is valid: the error arm cannot be reached, but fails closed.
    KeyContext::new(pairs).map_err(|_| fields.join(","))
}

/// The creation limits, checked and recorded in the store in one transaction.
#[derive(Clone)]
pub struct CreationQuota {
    store: Store,
    per_key_per_hour: u32,
    max_total: u64,
    rotation_period_days: u32,
}

impl CreationQuota {
    pub fn new(store: Store, config: &PlatformKekConfig) -> Self {
        Self {
            store,
            per_key_per_hour: config.new_per_key_per_hour,
            max_total: config.max_total,
            rotation_period_days: config.rotation_period_days,
        }
    }

    pub async fn reserve(
        &self,
        creator: KekCreator<'_>,
        context_hash: &str,
    ) -> Result<Result<PlatformKekReservation, KekCreationRefused>, StoreError> {
        let creator = match creator {
            KekCreator::ApiKey(id) => Some(id),
            KekCreator::Broker => None,
        };
        self.store
            .reserve_platform_kek(creator, context_hash, self.per_key_per_hour, self.max_total)
            .await
    }

    /// The hash of the selection `kek_id` was created for, if the broker recorded its creation.
    pub async fn selection_of(&self, kek_id: &str) -> Result<Option<String>, StoreError> {
        self.store.platform_kek_selection(kek_id).await
    }

    pub async fn confirm(&self, reservation: PlatformKekReservation, kek_id: &str) {
        if let Err(e) = self.store.confirm_platform_kek(reservation, kek_id).await {
            // The row stays reserved and keeps counting: the limit errs on the safe side.
            tracing::error!(kek_id, error = %e, "could not record a new platform KEK");
        }
    }

    /// The automatic rotation period every platform KEK gets, in days.
    pub fn rotation_period_days(&self) -> u32 {
        self.rotation_period_days
    }

    /// Whether the store records `kek_id`'s automatic rotation as enabled at the configured period.
    pub async fn rotation_recorded(&self, kek_id: &str) -> Result<bool, StoreError> {
        Ok(self.store.platform_kek_rotation_period(kek_id).await?
            == Some(self.rotation_period_days))
    }

    pub async fn record_rotation(&self, kek_id: &str) {
        if let Err(e) = self
            .store
            .record_platform_kek_rotation(kek_id, self.rotation_period_days)
            .await
        {
            // Harmless: the next start or first use enables it again (idempotent in KMS).
            tracing::warn!(kek_id, error = %e, "could not record a platform KEK's rotation");
        }
    }

    pub async fn release(&self, reservation: PlatformKekReservation) {
        if let Err(e) = self.store.release_platform_kek(reservation).await {
            tracing::error!(error = %e, "could not release a platform KEK reservation");
        }
    }
}

/// Whether some non-empty part of `context` hashes to `selection_hash` (hex): the context could
/// have selected that platform KEK under some choice of selector fields. At most 1,023 parts.
pub fn is_selection_of(context: &KeyContext, selection_hash: &str) -> bool {
    let pairs: Vec<(&String, &String)> = context.pairs().iter().collect();
    (1u32..(1 << pairs.len())).any(|mask| {
        let part = pairs
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, (k, v))| (k.as_str(), v.as_str()));
        KeyContext::new(part).is_ok_and(|part| part.hash().to_hex() == selection_hash)
    })
}
