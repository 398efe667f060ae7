//! Platform KEK administration: the inventory (`GET /admin/v1/keks`), on-demand rotation
//! (`POST /admin/v1/keks/{id}/rotate`, for incident response) and, at start, automatic rotation
//! for every recorded platform KEK that does not have it at the configured period yet.
//!
//! Rotation changes a KEK's backing material, never its id: KMS (and the local provider) keeps
//! every earlier material and decrypts each wrapped DEK with the material it was made under, so no
//! stored DEK or object is touched and every earlier object stays readable.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use crate::audit::{self, AuditLog};
use crate::auth::Principal;
use crate::error::{Error, ErrorCode};
use crate::keyring::Keyring;
use crate::kms::{KekRef, KmsErrorClass, KmsFailure};
// Re-exported: the admin API's wire types describe it without reaching into the store.
pub use crate::store::PlatformKekRecord;
use crate::store::Store;

pub struct PlatformKeks {
    store: Store,
    keyring: Arc<Keyring>,
    audit: AuditLog,
}

/// One page of the inventory: the KEKs, objects per KEK id, and whether more follow.
pub struct PlatformKekPage {
    pub keks: Vec<PlatformKekRecord>,
    pub objects: HashMap<String, u64>,
    pub more: bool,
}

impl PlatformKeks {
    pub fn new(store: Store, keyring: Arc<Keyring>, audit: AuditLog) -> Self {
        Self {
            store,
            keyring,
            audit,
        }
    }

    /// The configured automatic rotation period, in days.
    pub fn rotation_period_days(&self) -> u32 {
        self.keyring.rotation_period_days()
    }

    /// Enables automatic rotation on every recorded platform KEK the store does not record at the
    /// configured period (created before rotation existed, or under another period). One KEK at
    /// a time: a start with many KEKs must not spend the account's KMS request quota in a burst.
    /// Returns how many now have it; failures are logged and retried at the next start or use.
    pub async fn enable_rotation_on_existing(&self) -> usize {
        let period = self.rotation_period_days();
        let pending = match self.store.platform_keks_without_rotation(period).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "could not list platform KEKs for automatic rotation; retried at the next start");
                return 0;
            }
        };
        let mut enabled = 0;
        for kek_id in &pending {
            if self.keyring.ensure_platform_rotation(kek_id).await {
                enabled += 1;
            }
        }
        if !pending.is_empty() {
            tracing::info!(
                enabled,
                pending = pending.len(),
                period_days = period,
                "automatic rotation enabled on existing platform KEKs"
            );
        }
        enabled
    }

    pub async fn list(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<PlatformKekPage, Error> {
        let (keks, more) = self.store.list_platform_keks(after, limit).await?;
        let objects = self.store.count_objects_by_kek().await?;
        Ok(PlatformKekPage {
            keks,
            objects,
            more,
        })
    }

    /// Rotates a platform KEK's backing material now (`RotateKeyOnDemand`) and records
    /// `vault.kek.rotated` with the admin who asked. `id` is the KEK id or its key id alone.
    pub async fn rotate(&self, id: &str, actor: &Principal) -> Result<PlatformKekRecord, Error> {
        let record = self
            .store
            .find_platform_kek(id)
            .await?
            .ok_or(Error::NotFound("platform KEK"))?;
        let kek = KekRef::platform(&record.kek_id);
        if let Err(e) = self.keyring.provider().rotate_key_on_demand(&kek).await {
            tracing::warn!(kek_id = %record.kek_id, error = %e, "on-demand rotation of a platform KEK failed");
            return Err(match (e.class(), e.failure) {
                (KmsErrorClass::Retryable, _) => Error::KmsUnavailable(e),
                (KmsErrorClass::Revoked, _)
                | (KmsErrorClass::Invalid, KmsFailure::InvalidRequest) => refused(),
                _ => Error::Provider(e),
            });
        }
        self.store
            .record_platform_kek_rotated(&record.kek_id)
            .await?;
        let fields = json!({"kek_id": record.kek_id, "context_hash": record.context_hash, "trigger": "on_demand"});
        self.audit
            .record(audit::event(Some(actor), "vault.kek.rotated", None, fields))
            .await?;
        tracing::info!(kek_id = %record.kek_id, actor = %actor.key_id, "platform KEK rotated on demand");
        self.store
            .find_platform_kek(&record.kek_id)
            .await?
            .ok_or(Error::NotFound("platform KEK"))
    }
}

fn refused() -> Error {
    Error::invalid(
        ErrorCode::KekRotationRefused,
        "KMS refused to rotate this KEK now: it is disabled or pending deletion, or a rotation is still in progress",
    )
}
