//! Platform KEK admin wire shapes (`/admin/v1/keks`): the inventory query and the `platform_kek`
//! object. Response fields are in byte order, as elsewhere.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::services::platform_keks::PlatformKekRecord;
use crate::timestamp::Timestamp;

/// `GET /admin/v1/keks` parameters, as text (each parsed by the handler for its own error code).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeksQuery {
    /// The `list_metadata.after` of the previous page (a KEK id).
    pub after: Option<String>,
    /// KEKs per page, 1-100 (default 10).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
}

/// `platform_kek`.
#[derive(Serialize, ToSchema)]
pub struct PlatformKek<'a> {
    /// The hash of the context selection it serves; `null` for a KEK counted at an upgrade.
    pub context_hash: Option<&'a str>,
    /// `null` for a KEK counted at an upgrade (its creation time is unknown).
    pub created_at: Option<String>,
    /// The KEK id: the KMS key ARN (or `local/<uuid>` for the local provider).
    pub id: &'a str,
    pub key_arn: &'a str,
    pub object: &'static str,
    /// Objects whose current version's DEK is wrapped under it.
    pub objects: u64,
    pub rotation: PlatformKekRotation<'a>,
}

/// What the broker set up: automatic rotation (as it recorded enabling it) and the last
/// on-demand rotation through the admin API.
#[derive(Serialize, ToSchema)]
pub struct PlatformKekRotation<'a> {
    pub enabled: bool,
    pub enabled_at: Option<&'a str>,
    pub last_on_demand_at: Option<&'a str>,
    pub period_days: Option<u32>,
}

impl<'a> PlatformKek<'a> {
    pub fn of(record: &'a PlatformKekRecord, objects: &HashMap<String, u64>) -> Self {
        Self {
            context_hash: Some(record.context_hash.as_str()).filter(|h| !h.is_empty()),
            created_at: (record.created_unix > 0)
                .then(|| Timestamp(record.created_unix.saturating_mul(1_000_000)).to_rfc3339()),
            id: &record.kek_id,
            key_arn: &record.kek_id,
            object: "platform_kek",
            objects: objects.get(&record.kek_id).copied().unwrap_or(0),
            rotation: PlatformKekRotation {
                enabled: record.rotation_period_days.is_some(),
                enabled_at: record.rotation_enabled_at.as_deref(),
                last_on_demand_at: record.rotated_at.as_deref(),
                period_days: record.rotation_period_days,
            },
        }
    }
}
