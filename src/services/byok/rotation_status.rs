//! Tenant CMK rotation is watched, never changed: the broker reads `GetKeyRotationStatus` through
//! the tenant's role at verification and on each pass of the key-state watcher's leader, stores
//! what it read (so every instance shows the same in the admin view), and when a CMK's automatic
//! rotation turns off (or is first found off) logs a warning, records
//! `vault.byok_key.rotation_changed` and counts it in `byok_broker_tenant_key_rotation_disabled`.
//!
//! This call is not a crypto operation: any failure (typically the tenant's role lacking
//! `kms:GetKeyRotationStatus`) is recorded as the status's `error` and revokes nothing.

use serde_json::json;

use super::Byok;
use crate::audit;
use crate::context::KeyContext;
use crate::keyring::bindings::kek_ref;
use crate::kms::KekRef;
use crate::store::{RotationChange, RotationReading, TenantKekRecord};

impl Byok {
    /// Every tenant CMK's rotation status as last read, by key ARN (for the admin view).
    pub async fn kek_rotations(
        &self,
    ) -> Result<
        std::collections::HashMap<String, crate::store::TenantKekRotation>,
        crate::error::Error,
    > {
        Ok(self.store.tenant_kek_rotations().await?)
    }

    /// The watcher's hook: reads and records one CMK's rotation status.
    pub(super) async fn watch_rotation(&self, kek: &TenantKekRecord) {
        self.observe_rotation(&kek_ref(kek), None).await;
    }

    /// The verification's hook (after a successful verification of `kek` for `match_context`).
    pub(super) async fn observe_rotation_at_verification(
        &self,
        kek: &KekRef,
        match_context: &KeyContext,
    ) {
        self.observe_rotation(kek, Some(match_context)).await;
    }

    async fn observe_rotation(&self, kek: &KekRef, match_context: Option<&KeyContext>) {
        let key_arn = kek.key_id.as_str();
        let reading = match self.provider().key_rotation_status(kek).await {
            Ok(status) => RotationReading::Read {
                enabled: status.enabled,
                period_days: status.period_days,
                next_rotation: status.next_rotation,
            },
            Err(e) => {
                tracing::debug!(key_arn, error = %e, "could not read a tenant CMK's rotation status (nothing revoked)");
                RotationReading::Failed(e.failure.as_str().to_owned())
            }
        };
        let read = match &reading {
            RotationReading::Read {
                enabled,
                period_days,
                ..
            } => Some((*enabled, *period_days)),
            RotationReading::Failed(_) => None,
        };
        let change = match self
            .store
            .record_tenant_kek_rotation(key_arn, reading)
            .await
        {
            Ok(change) => change,
            Err(e) => {
                tracing::warn!(key_arn, error = %e, "could not record a tenant CMK's rotation status");
                return;
            }
        };
        let Some((enabled, period_days)) = read else {
            return;
        };
        let RotationChange::Changed { before, now } = change else {
            self.metrics.record_tenant_rotation(key_arn, enabled, false);
            return;
        };
        self.metrics.record_tenant_rotation(key_arn, now, !now);
        // First found with rotation on: nothing to warn about, nothing changed.
        if now && before.is_none() {
            return;
        }
        let bindings = self.keyring.bindings();
        let owner = bindings.owner_of(key_arn);
        let org = match_context
            .or(owner.map(|b| &b.match_context))
            .and_then(|c| c.get("organization_id"))
            .map(str::to_owned);
        if now {
            tracing::info!(
                key_arn,
                period_days,
                "tenant CMK's automatic rotation turned on"
            );
        } else {
            tracing::warn!(
                key_arn,
                "tenant CMK has automatic rotation turned off: its backing material never changes unless the tenant rotates it"
            );
        }
        let fields = json!({
            "byok_key_id": owner.map(|b| b.id()),
            "key_arn": key_arn,
            "rotation_enabled": now,
            "rotation_period_days": period_days,
            "previously_enabled": before,
        });
        if let Err(e) = self
            .audit
            .record(audit::event(
                None,
                "vault.byok_key.rotation_changed",
                org.as_deref(),
                fields,
            ))
            .await
        {
            tracing::error!(key_arn, error = %e, "could not record a tenant CMK's rotation change");
        }
    }
}
