//! BYOK use cases on the broker: register (verified), enable/disable, rotate, delete, and state
//! changes from the watcher or from requests. Every change is written to the store first, then
//! the routing view is rebuilt and the affected CMKs' cached DEKs are purged.

use serde_json::json;

use super::bindings::{Binding, BindingSet, kek_ref};
use super::verify::verify_kek;
use crate::audit;
use crate::broker::Broker;
use crate::context::KeyContext;
use crate::error::Error;
use crate::kms::KmsError;
use crate::store::{ByokFlag, ByokKeyRecord, StoreError, TenantKekRecord};
use crate::timestamp::Timestamp;

pub const PROVIDER_AWS_KMS: &str = "aws_kms";

/// What an admin sends to register or rotate a key.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub key_arn: String,
    pub region: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
}

impl KeySpec {
    /// Key ARNs only (no aliases: an alias can be retargeted behind the tenant's back), and a
    /// role ARN in IAM form when given.
    pub fn validate(&self) -> Result<(), Error> {
        let parts: Vec<&str> = self.key_arn.split(':').collect();
        let key_ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[2] == "kms"
            && !parts[3].is_empty()
            && parts[4].len() == 12
            && parts[4].bytes().all(|b| b.is_ascii_digit())
            && parts[5]
                .strip_prefix("key/")
                .is_some_and(|id| !id.is_empty());
        if !key_ok {
            return Err(Error::invalid(
                "invalid_key_arn",
                "key_arn must be a KMS key ARN: arn:aws:kms:<region>:<account>:key/<key id>",
            ));
        }
        if let Some(role) = &self.role_arn {
            let parts: Vec<&str> = role.split(':').collect();
            let role_ok = parts.len() == 6
                && parts[0] == "arn"
                && parts[2] == "iam"
                && parts[4].len() == 12
                && parts[5].starts_with("role/");
            if !role_ok {
                return Err(Error::invalid(
                    "invalid_role_arn",
                    "role_arn must be an IAM role ARN: arn:aws:iam::<account>:role/<name>",
                ));
            }
        }
        if self
            .external_id
            .as_ref()
            .is_some_and(|e| e.is_empty() || e.len() > 1224)
        {
            return Err(Error::invalid(
                "invalid_external_id",
                "external_id must be 2-1224 characters",
            ));
        }
        Ok(())
    }

    fn record(&self, byok_key_id: &str) -> TenantKekRecord {
        TenantKekRecord {
            key_arn: self.key_arn.clone(),
            byok_key_id: byok_key_id.to_owned(),
            region: self.region.clone(),
            role_arn: self.role_arn.clone(),
            external_id: self.external_id.clone(),
            available: true,
            reason: None,
            last_checked_at: None,
        }
    }
}

fn organization(context: &KeyContext) -> Option<&str> {
    context.get("organization_id")
}

impl Broker {
    /// Rebuilds the routing view from the store. Called after every BYOK change and at start.
    pub async fn reload_bindings(&self) -> Result<(), Error> {
        let records = self.store.list_byok_keys().await?;
        let set = BindingSet::from_records(records).map_err(Error::Internal)?;
        // Registered tenant accounts are the only tenant accounts metrics may name.
        self.metrics.allow_accounts_of(
            set.all()
                .iter()
                .flat_map(|b| b.record.keks.iter().map(|k| k.key_arn.as_str())),
        );
        self.keyring.replace_bindings(set);
        Ok(())
    }

    fn binding(&self, id: &str) -> Result<Binding, Error> {
        self.keyring
            .bindings()
            .get(id)
            .cloned()
            .ok_or(Error::NotFound("BYOK key"))
    }

    async fn verify_and_audit(
        &self,
        spec: &KeySpec,
        match_context: &KeyContext,
    ) -> Result<(), Error> {
        if self.provider().name() != PROVIDER_AWS_KMS {
            return Err(Error::invalid(
                "byok_unavailable",
                "BYOK needs the broker to run with the aws KMS provider",
            ));
        }
        let kek = kek_ref(&spec.record(""));
        let verdict = verify_kek(self.provider(), &kek, match_context).await;
        if matches!(verdict, Ok(()) | Err(Error::ByokVerificationFailed { .. })) {
            let fields = json!({"organization_id": organization(match_context), "key_provider": PROVIDER_AWS_KMS, "verified": verdict.is_ok()});
            self.audit
                .record(audit::event(
                    None,
                    "vault.byok_key.verification_completed",
                    organization(match_context),
                    fields,
                ))
                .await?;
        }
        verdict
    }

    pub async fn register_byok_key(
        &self,
        match_context: KeyContext,
        spec: KeySpec,
    ) -> Result<Binding, Error> {
        spec.validate()?;
        if let Some((existing, identical)) =
            self.keyring.bindings().conflict_for(&match_context, None)
        {
            return Err(if identical {
                Error::AlreadyExists("a BYOK key for this match_context")
            } else {
                Error::AmbiguousMatch(existing.id().to_owned())
            });
        }
        self.verify_and_audit(&spec, &match_context).await?;
        let id = format!("byok_{}", uuid::Uuid::new_v4().simple());
        let record = ByokKeyRecord {
            id: id.clone(),
            match_context_json: serde_json::to_string(&match_context)
                .map_err(|e| Error::Internal(e.to_string()))?,
            match_context_hash: match_context.hash().to_hex(),
            provider: PROVIDER_AWS_KMS.into(),
            current_kek: spec.key_arn.clone(),
            admin_disabled: false,
            retired: false,
            created_at: String::new(),
            updated_at: String::new(),
            keks: Vec::new(),
        };
        self.store
            .insert_byok_key(record, spec.record(&id))
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists => {
                    Error::AlreadyExists("a BYOK key for this match_context or key_arn")
                }
                other => other.into(),
            })?;
        self.reload_bindings().await?;
        tracing::info!(byok_key_id = %id, key_arn = %spec.key_arn, "BYOK key registered");
        self.binding(&id)
    }

    /// Disables in the broker: the next request for a covered context is refused without a KMS
    /// call, and every cached DEK of the binding's CMKs is purged.
    pub async fn disable_byok_key(&self, id: &str) -> Result<Binding, Error> {
        let binding = self.binding(id)?;
        self.store
            .set_byok_flag(id, ByokFlag::AdminDisabled, true)
            .await?;
        self.reload_bindings().await?;
        self.metrics.record_revocation("admin");
        for kek in &binding.record.keks {
            self.dek_cache.purge_kek(&kek.key_arn).await;
        }
        let fields = json!({"byok_key_id": id, "state": "disabled"});
        self.audit
            .record(audit::event(
                None,
                "vault.byok_key.disabled",
                organization(&binding.match_context),
                fields,
            ))
            .await?;
        self.binding(id)
    }

    /// Enables after verifying the current CMK again.
    pub async fn enable_byok_key(&self, id: &str) -> Result<Binding, Error> {
        let binding = self.binding(id)?;
        let current = binding
            .current_kek()
            .ok_or_else(|| Error::Internal("binding without current key".into()))?;
        let spec = KeySpec {
            key_arn: current.key_arn.clone(),
            region: current.region.clone(),
            role_arn: current.role_arn.clone(),
            external_id: current.external_id.clone(),
        };
        self.verify_and_audit(&spec, &binding.match_context).await?;
        self.store
            .record_kek_check(&spec.key_arn, true, None)
            .await?;
        self.store
            .set_byok_flag(id, ByokFlag::AdminDisabled, false)
            .await?;
        self.reload_bindings().await?;
        let fields = json!({"byok_key_id": id, "state": "active"});
        self.audit
            .record(audit::event(
                None,
                "vault.byok_key.enabled",
                organization(&binding.match_context),
                fields,
            ))
            .await?;
        self.binding(id)
    }

    /// Rotates to a new CMK, verified like a new key. New writes use it at once; objects under
    /// earlier CMKs stay readable through them until rewrapped.
    pub async fn rotate_byok_key(&self, id: &str, spec: KeySpec) -> Result<Binding, Error> {
        spec.validate()?;
        let binding = self.binding(id)?;
        self.verify_and_audit(&spec, &binding.match_context).await?;
        self.store
            .rotate_byok_key(id, spec.record(id))
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists => {
                    Error::AlreadyExists("another BYOK key using this key_arn")
                }
                other => other.into(),
            })?;
        self.reload_bindings().await?;
        let fields = json!({"byok_key_id": id, "key_arn": spec.key_arn});
        self.audit
            .record(audit::event(
                None,
                "vault.byok_key.rotated",
                organization(&binding.match_context),
                fields,
            ))
            .await?;
        self.binding(id)
    }

    /// Turns BYOK off for the binding's contexts: new writes go to platform KEKs at once, objects
    /// under its CMKs stay readable through them until a rewrap job moves them; then it can be
    /// deleted.
    pub async fn retire_byok_key(&self, id: &str) -> Result<Binding, Error> {
        let binding = self.binding(id)?;
        self.store
            .set_byok_flag(id, ByokFlag::Retired, true)
            .await?;
        self.reload_bindings().await?;
        let fields = json!({"byok_key_id": id, "state": "retired"});
        self.audit
            .record(audit::event(
                None,
                "vault.byok_key.retired",
                organization(&binding.match_context),
                fields,
            ))
            .await?;
        self.binding(id)
    }

    /// Deletes a binding once no object depends on its CMKs (409 `key_in_use` before that).
    pub async fn delete_byok_key(&self, id: &str) -> Result<(), Error> {
        let binding = self.binding(id)?;
        self.store.delete_byok_key(id).await?;
        self.reload_bindings().await?;
        for kek in &binding.record.keks {
            self.dek_cache.purge_kek(&kek.key_arn).await;
        }
        let fields = json!({"organization_id": organization(&binding.match_context), "key_provider": PROVIDER_AWS_KMS});
        self.audit
            .record(audit::event(
                None,
                "vault.byok_key.deleted",
                organization(&binding.match_context),
                fields,
            ))
            .await?;
        Ok(())
    }

    /// Records what KMS said about a tenant CMK. On a change: rebuild routing, purge the CMK's
    /// cached DEKs when it became unavailable, and audit it.
    pub async fn record_kek_state(
        &self,
        key_arn: &str,
        available: bool,
        reason: Option<String>,
    ) -> Result<(), Error> {
        let changed = self
            .store
            .record_kek_check(key_arn, available, reason.clone())
            .await?;
        if !changed {
            return Ok(());
        }
        self.reload_bindings().await?;
        if !available {
            self.dek_cache.purge_kek(key_arn).await;
            self.metrics.record_revocation("kms");
        }
        let bindings = self.keyring.bindings();
        let owner = bindings.owner_of(key_arn);
        let org = owner.and_then(|b| organization(&b.match_context));
        let state = if available {
            "available"
        } else {
            "unavailable"
        };
        tracing::warn!(
            key_arn,
            state,
            reason = reason.as_deref().unwrap_or(""),
            "tenant CMK changed state"
        );
        let fields = json!({"byok_key_id": owner.map(Binding::id), "key_arn": key_arn, "state": state, "reason": reason, "at": Timestamp::now().to_rfc3339()});
        self.audit
            .record(audit::event(
                None,
                "vault.byok_key.state_changed",
                org,
                fields,
            ))
            .await
    }

    /// A request met a revoked-class KMS answer for a tenant CMK: fail closed from now on.
    pub(crate) async fn mark_kek_unavailable(&self, key_arn: &str, error: &KmsError) {
        if let Err(e) = self
            .record_kek_state(key_arn, false, Some(error.failure.as_str().to_owned()))
            .await
        {
            tracing::error!(key_arn, error = %e, "could not record a tenant CMK as unavailable");
        }
    }
}
