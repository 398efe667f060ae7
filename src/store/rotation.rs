//! KEK rotation records (migration 14): per platform KEK, the automatic rotation period the broker
//! enabled and when an admin last rotated it on demand; per tenant CMK, the rotation status last
//! read from KMS. The tenant status is kept apart from the routing view (no revision bump): it
//! changes nothing about which key serves a request.

use std::collections::HashMap;

use super::objects::for_update;
use super::sql::{Row, Value, args};
use super::{Store, StoreError};
use crate::timestamp::Timestamp;

/// A confirmed platform KEK as the inventory shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformKekRecord {
    pub kek_id: String,
    /// The hash of the selection it was created for; empty for KEKs counted at an upgrade.
    pub context_hash: String,
    /// Unix seconds; 0 for KEKs counted at an upgrade (creation time unknown).
    pub created_unix: i64,
    /// The automatic rotation period the broker enabled; `None` until it has.
    pub rotation_period_days: Option<u32>,
    pub rotation_enabled_at: Option<String>,
    /// The last on-demand rotation through the admin API.
    pub rotated_at: Option<String>,
}

/// A tenant CMK's rotation status as last read. `enabled` is `None` until a read succeeds;
/// `error` names why the last read failed (the earlier values are kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKekRotation {
    pub enabled: Option<bool>,
    pub period_days: Option<u32>,
    pub next_rotation: Option<String>,
    pub error: Option<String>,
    pub checked_at: String,
    /// When `enabled` last changed (or was first known).
    pub changed_at: Option<String>,
}

/// What one read of a tenant CMK's rotation status found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationReading {
    Read {
        enabled: bool,
        period_days: Option<u32>,
        next_rotation: Option<String>,
    },
    Failed(String),
}

const PLATFORM_COLUMNS: &str =
    "kek_id, context_hash, created_unix, rotation_period_days, rotation_enabled_at, rotated_at";

fn days(value: Option<i64>) -> Option<u32> {
    value.and_then(|d| u32::try_from(d).ok())
}

fn platform_from_row(r: &Row) -> Result<PlatformKekRecord, StoreError> {
    Ok(PlatformKekRecord {
        kek_id: r.get(0)?,
        context_hash: r.get(1)?,
        created_unix: r.get(2)?,
        rotation_period_days: days(r.get(3)?),
        rotation_enabled_at: r.get(4)?,
        rotated_at: r.get(5)?,
    })
}

impl Store {
    /// The rotation period recorded as enabled on `kek_id`; `None` when none is (or the ledger
    /// does not know the KEK).
    pub async fn platform_kek_rotation_period(
        &self,
        kek_id: &str,
    ) -> Result<Option<u32>, StoreError> {
        let kek_id = kek_id.to_owned();
        self.read(move |c| {
            let period: Option<Option<i64>> = c
                .query_opt(
                    "SELECT rotation_period_days FROM platform_keks WHERE kek_id = ?1",
                    args![kek_id],
                )?
                .map(|r| r.get(0))
                .transpose()?;
            Ok(days(period.flatten()))
        })
        .await
    }

    /// Records that automatic rotation every `period_days` is enabled on `kek_id`.
    pub async fn record_platform_kek_rotation(
        &self,
        kek_id: &str,
        period_days: u32,
    ) -> Result<(), StoreError> {
        let kek_id = kek_id.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE platform_keks SET rotation_period_days = ?1, rotation_enabled_at = ?2 WHERE kek_id = ?3",
                args![i64::from(period_days), Timestamp::now().to_rfc3339(), kek_id],
            )?;
            Ok(())
        })
        .await
    }

    /// Records an on-demand rotation of `kek_id`.
    pub async fn record_platform_kek_rotated(&self, kek_id: &str) -> Result<(), StoreError> {
        let kek_id = kek_id.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE platform_keks SET rotated_at = ?1 WHERE kek_id = ?2",
                args![Timestamp::now().to_rfc3339(), kek_id],
            )?;
            Ok(())
        })
        .await
    }

    /// Confirmed platform KEKs whose recorded rotation period is not `period_days`.
    pub async fn platform_keks_without_rotation(
        &self,
        period_days: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |c| {
            c.query(
                "SELECT kek_id FROM platform_keks WHERE kek_id IS NOT NULL \
                 AND (rotation_period_days IS NULL OR rotation_period_days != ?1) ORDER BY id",
                args![i64::from(period_days)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
        })
        .await
    }

    /// One page of confirmed platform KEKs in creation order, after the KEK `after` names, and
    /// whether more follow. An unknown cursor is `UnknownCursor`.
    pub async fn list_platform_keks(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<PlatformKekRecord>, bool), StoreError> {
        self.read(move |c| {
            let mut sql =
                format!("SELECT {PLATFORM_COLUMNS} FROM platform_keks WHERE kek_id IS NOT NULL");
            let mut args: Vec<Value> = Vec::new();
            if let Some(after) = after {
                let id: i64 = c
                    .query_opt(
                        "SELECT id FROM platform_keks WHERE kek_id = ?1",
                        args![after],
                    )?
                    .ok_or(StoreError::UnknownCursor)?
                    .get(0)?;
                args.push(Value::Integer(id));
                sql.push_str(" AND id > ?1");
            }
            args.push(Value::Integer(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" ORDER BY id ASC LIMIT ?{}", args.len()));
            let mut rows = c
                .query(&sql, &args)?
                .iter()
                .map(platform_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            Ok((rows, more))
        })
        .await
    }

    /// The confirmed platform KEK named by its full id, or by its key id alone (the part after
    /// the last `/`: an ARN's or a `local/` id's UUID), which needs no escaping in a URL path.
    pub async fn find_platform_kek(
        &self,
        id: &str,
    ) -> Result<Option<PlatformKekRecord>, StoreError> {
        let exact = id.to_owned();
        // Only a plain key id may match as a suffix: no LIKE wildcards, no separators.
        let suffix = (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .then(|| format!("%/{id}"));
        self.read(move |c| {
            let sql = format!(
                "SELECT {PLATFORM_COLUMNS} FROM platform_keks WHERE kek_id = ?1 OR kek_id LIKE ?2 ORDER BY id LIMIT 2"
            );
            let rows = c.query(&sql, args![exact, suffix])?;
            let mut found = rows
                .iter()
                .map(platform_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            // LIKE is case-insensitive on SQLite: only an exact tail counts, and only one.
            found.retain(|r| r.kek_id == exact || r.kek_id.rsplit('/').next() == Some(exact.as_str()));
            Ok(if found.len() == 1 { found.pop() } else { None })
        })
        .await
    }

    /// Records a read of a tenant CMK's rotation status; says whether it changed whether rotation
    /// is on. A failed read keeps the values known before and records why it failed.
    pub async fn record_tenant_kek_rotation(
        &self,
        key_arn: &str,
        reading: RotationReading,
    ) -> Result<RotationChange, StoreError> {
        let key_arn = key_arn.to_owned();
        self.run(move |tx| {
            let now = Timestamp::now().to_rfc3339();
            // Locked: two instances recording the same change would both report it.
            let sql = format!(
                "SELECT enabled FROM tenant_kek_rotation WHERE key_arn = ?1{}",
                for_update(tx)
            );
            let before: Option<Option<bool>> = tx
                .query_opt(&sql, args![key_arn])?
                .map(|r| r.get(0))
                .transpose()?;
            let known_before = before.flatten();
            match reading {
                RotationReading::Read {
                    enabled,
                    period_days,
                    next_rotation,
                } => {
                    let changed = known_before != Some(enabled);
                    tx.execute(
                        "INSERT INTO tenant_kek_rotation (key_arn, enabled, period_days, next_rotation, error, checked_at, changed_at) \
                         VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?5) \
                         ON CONFLICT (key_arn) DO UPDATE SET enabled = ?2, period_days = ?3, next_rotation = ?4, error = NULL, checked_at = ?5, \
                         changed_at = CASE WHEN ?6 = 1 THEN ?5 ELSE tenant_kek_rotation.changed_at END",
                        args![key_arn, enabled, period_days.map(i64::from), next_rotation, now, changed],
                    )?;
                    Ok(if changed {
                        RotationChange::Changed { before: known_before, now: enabled }
                    } else {
                        RotationChange::Unchanged
                    })
                }
                RotationReading::Failed(error) => {
                    tx.execute(
                        "INSERT INTO tenant_kek_rotation (key_arn, enabled, period_days, next_rotation, error, checked_at, changed_at) \
                         VALUES (?1, NULL, NULL, NULL, ?2, ?3, NULL) \
                         ON CONFLICT (key_arn) DO UPDATE SET error = ?2, checked_at = ?3",
                        args![key_arn, error, now],
                    )?;
                    Ok(RotationChange::Unchanged)
                }
            }
        })
        .await
    }

    /// Every tenant CMK's recorded rotation status, by key ARN.
    pub async fn tenant_kek_rotations(
        &self,
    ) -> Result<HashMap<String, TenantKekRotation>, StoreError> {
        self.read(|c| {
            c.query(
                "SELECT key_arn, enabled, period_days, next_rotation, error, checked_at, changed_at FROM tenant_kek_rotation",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.get(0)?,
                    TenantKekRotation {
                        enabled: r.get(1)?,
                        period_days: days(r.get(2)?),
                        next_rotation: r.get(3)?,
                        error: r.get(4)?,
                        checked_at: r.get(5)?,
                        changed_at: r.get(6)?,
                    },
                ))
            })
            .collect()
        })
        .await
    }
}

/// Whether a read changed what is known about a tenant CMK's rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationChange {
    Unchanged,
    /// `before`: `None` when nothing was known (first read).
    Changed {
        before: Option<bool>,
        now: bool,
    },
}
