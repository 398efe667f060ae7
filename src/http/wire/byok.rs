//! BYOK admin wire shapes (`/admin/v1/byok-keys`, `/admin/v1/byok-external-ids`): requests,
//! the binding with its CMKs and object counts, deletion, external ids. Response fields are in
//! byte order (`keks` before `key_arn`), the order the earlier `json!` bodies had.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::context::KeyContext;
use crate::context::json::ContextJson;
use crate::keyring::bindings::{Binding, BindingState, TenantKekRecord};
use crate::services::byok::TenantKekRotation;
use crate::services::byok::external_id::ExternalId;
use crate::services::byok::service::KeySpec;

/// Tenant CMK rotation statuses by key ARN, as last read (see `services::byok::rotation_status`).
pub type Rotations = HashMap<String, TenantKekRotation>;

/// `POST /admin/v1/byok-keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterByokKeyRequest {
    #[schema(value_type = KeyContext)]
    pub match_context: ContextJson,
    /// `aws_kms`, the one provider.
    #[schema(pattern = "^aws_kms$")]
    pub provider: String,
    pub key_arn: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub role_arn: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
}

impl RegisterByokKeyRequest {
    /// The match context, the provider and the CMK.
    pub fn into_parts(self) -> (ContextJson, String, KeySpec) {
        let spec = KeySpec {
            key_arn: self.key_arn,
            region: self.region,
            role_arn: self.role_arn,
            external_id: self.external_id,
        };
        (self.match_context, self.provider, spec)
    }
}

/// `PUT /admin/v1/byok-keys/{id}`: the CMK to rotate to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateByokKeyRequest {
    pub key_arn: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub role_arn: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
}

impl From<RotateByokKeyRequest> for KeySpec {
    fn from(key: RotateByokKeyRequest) -> Self {
        KeySpec {
            key_arn: key.key_arn,
            region: key.region,
            role_arn: key.role_arn,
            external_id: key.external_id,
        }
    }
}

/// `byok_key`: a binding with how many objects each of its CMKs still protects and how many
/// covered objects still sit under another (platform) KEK.
#[derive(Serialize, ToSchema)]
pub struct ByokKey<'a> {
    pub created_at: &'a str,
    pub external_id: Option<&'a str>,
    pub id: &'a str,
    pub keks: Vec<Kek<'a>>,
    pub key_arn: &'a str,
    pub last_checked_at: Option<&'a str>,
    pub match_context: &'a KeyContext,
    pub object: &'static str,
    pub objects_under_other_keys: u64,
    pub provider: &'a str,
    pub reason: Option<String>,
    pub region: Option<&'a str>,
    pub role_arn: Option<&'a str>,
    /// The current CMK's automatic rotation, as last read from KMS.
    pub rotation: Rotation<'a>,
    pub state: &'static str,
    pub updated_at: &'a str,
}

/// A tenant CMK's automatic rotation as the broker last read it (`GetKeyRotationStatus` through
/// the tenant's role). `enabled` is `null` until a read succeeded; `error` says why the last read
/// failed (earlier values are kept); `warning` is set when rotation is off or cannot be read.
#[derive(Serialize, ToSchema)]
pub struct Rotation<'a> {
    pub checked_at: Option<&'a str>,
    pub enabled: Option<bool>,
    pub error: Option<&'a str>,
    pub next_rotation_at: Option<&'a str>,
    pub period_days: Option<u32>,
    pub warning: Option<&'static str>,
}

impl<'a> Rotation<'a> {
    fn of(key_arn: &str, rotations: &'a Rotations) -> Self {
        let Some(status) = rotations.get(key_arn) else {
            return Self {
                checked_at: None,
                enabled: None,
                error: None,
                next_rotation_at: None,
                period_days: None,
                warning: None,
            };
        };
        let warning = match (status.enabled, &status.error) {
            (Some(false), _) => Some(
                "automatic rotation is off for this key: its backing material never changes unless the tenant rotates it",
            ),
            (None, Some(_)) => Some(
                "the broker cannot read this key's rotation status: allow kms:GetKeyRotationStatus to the role",
            ),
            _ => None,
        };
        Self {
            checked_at: Some(&status.checked_at),
            enabled: status.enabled,
            error: status.error.as_deref(),
            next_rotation_at: status.next_rotation.as_deref(),
            period_days: status.period_days,
            warning,
        }
    }
}

impl<'a> ByokKey<'a> {
    /// `counts`: objects per KEK id; `outside`: covered objects under other KEKs; `rotations`:
    /// rotation statuses by key ARN.
    pub fn of(
        binding: &'a Binding,
        counts: &HashMap<String, u64>,
        outside: u64,
        rotations: &'a Rotations,
    ) -> Self {
        let record = &binding.record;
        let current = binding.current_kek();
        let state = binding.state();
        let reason = match &state {
            BindingState::Unavailable(reason) => Some(reason.clone()),
            BindingState::Disabled => Some("disabled_by_admin".to_owned()),
            BindingState::Active | BindingState::Retired => None,
        };
        Self {
            created_at: &record.created_at,
            external_id: current.and_then(|k| k.external_id.as_deref()),
            id: &record.id,
            keks: record
                .keks
                .iter()
                .map(|kek| Kek::of(kek, &record.current_kek, counts, rotations))
                .collect(),
            key_arn: &record.current_kek,
            last_checked_at: current.and_then(|k| k.last_checked_at.as_deref()),
            match_context: &binding.match_context,
            object: "byok_key",
            objects_under_other_keys: outside,
            provider: &record.provider,
            reason,
            region: current.and_then(|k| k.region.as_deref()),
            role_arn: current.and_then(|k| k.role_arn.as_deref()),
            rotation: Rotation::of(&record.current_kek, rotations),
            state: state.as_str(),
            updated_at: &record.updated_at,
        }
    }
}

/// One of a binding's CMKs.
#[derive(Serialize, ToSchema)]
pub struct Kek<'a> {
    pub available: bool,
    pub current: bool,
    pub external_id: Option<&'a str>,
    pub key_arn: &'a str,
    pub last_checked_at: Option<&'a str>,
    pub objects: u64,
    pub reason: Option<&'a str>,
    pub region: Option<&'a str>,
    pub role_arn: Option<&'a str>,
    pub rotation: Rotation<'a>,
}

impl<'a> Kek<'a> {
    fn of(
        kek: &'a TenantKekRecord,
        current_kek: &str,
        counts: &HashMap<String, u64>,
        rotations: &'a Rotations,
    ) -> Self {
        Self {
            available: kek.available,
            current: kek.key_arn == current_kek,
            external_id: kek.external_id.as_deref(),
            key_arn: &kek.key_arn,
            last_checked_at: kek.last_checked_at.as_deref(),
            objects: counts.get(&kek.key_arn).copied().unwrap_or(0),
            reason: kek.reason.as_deref(),
            region: kek.region.as_deref(),
            role_arn: kek.role_arn.as_deref(),
            rotation: Rotation::of(&kek.key_arn, rotations),
        }
    }
}

/// The answer to `DELETE /admin/v1/byok-keys/{id}`.
#[derive(Serialize, ToSchema)]
pub struct Deleted<'a> {
    pub deleted: bool,
    pub id: &'a str,
}

/// `byok_external_id`.
#[derive(Serialize, ToSchema)]
pub struct ByokExternalId<'a> {
    pub created_at: &'a str,
    pub external_id: &'a str,
    pub object: &'static str,
    pub organization_id: &'a str,
}

impl<'a> ByokExternalId<'a> {
    pub fn of(id: &'a ExternalId) -> Self {
        Self {
            created_at: &id.created_at,
            external_id: &id.external_id,
            object: "byok_external_id",
            organization_id: &id.organization_id,
        }
    }
}

#[cfg(test)]
#[path = "byok_tests.rs"]
mod tests;
