//! BYOK bindings and the tenant KEKs (CMKs) each has used. A binding keeps every CMK it ever
//! pointed at, so objects wrapped before a rotation stay readable through the old CMK's role.

use std::collections::HashMap;

use super::objects::{for_update, push_scope_filter};
use super::sql::{Row, Sql, Value, args};
use super::{Store, StoreError};
use crate::timestamp::Timestamp;

/// A binding's flags an admin sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByokFlag {
    AdminDisabled,
    Retired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKekRecord {
    pub key_arn: String,
    pub byok_key_id: String,
    pub region: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub available: bool,
    pub reason: Option<String>,
    pub last_checked_at: Option<String>,
    /// Moves with every change of `available`: what a check read before calling KMS, so its
    /// verdict cannot undo a revocation recorded meanwhile.
    pub state_seq: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByokKeyRecord {
    pub id: String,
    pub match_context_json: String,
    pub match_context_hash: String,
    pub provider: String,
    pub current_kek: String,
    pub admin_disabled: bool,
    /// Retired by an admin (BYOK turned off): covers no context any more, but objects still
    /// under its CMKs stay readable through them until rewrapped.
    pub retired: bool,
    pub created_at: String,
    pub updated_at: String,
    /// Every CMK this binding has used, current one included.
    pub keks: Vec<TenantKekRecord>,
}

/// The stored BYOK bindings at one revision (see [`Store::byok_snapshot`]).
#[derive(Debug, Clone)]
pub struct ByokSnapshot {
    pub revision: u64,
    pub records: Vec<ByokKeyRecord>,
}

/// The revision, then one row per binding and CMK (a binding without CMKs once, with NULLs; no
/// binding: one row of NULLs), bindings in creation order and each binding's CMKs in the order
/// they were added. One statement, so the revision and the bindings come from one snapshot on
/// either database, whatever isolation the read connection has.
const SNAPSHOT: &str = "SELECT r.revision, \
     k.id, k.match_context_json, k.match_context_hash, k.provider, k.current_kek, k.admin_disabled, k.created_at, k.updated_at, k.retired, \
     t.key_arn, t.region, t.role_arn, t.external_id, t.available, t.reason, t.last_checked_at, t.state_seq \
     FROM byok_revision r \
     LEFT JOIN byok_keys k ON 1 = 1 \
     LEFT JOIN tenant_keks t ON t.byok_key_id = k.id \
     ORDER BY k.created_at, k.id, t.added_at";

fn binding_from_row(r: &Row, id: String) -> Result<ByokKeyRecord, StoreError> {
    Ok(ByokKeyRecord {
        id,
        match_context_json: r.get(2)?,
        match_context_hash: r.get(3)?,
        provider: r.get(4)?,
        current_kek: r.get(5)?,
        admin_disabled: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        retired: r.get(9)?,
        keks: Vec::new(),
    })
}

fn kek_from_row(
    r: &Row,
    key_arn: String,
    byok_key_id: &str,
) -> Result<TenantKekRecord, StoreError> {
    Ok(TenantKekRecord {
        key_arn,
        byok_key_id: byok_key_id.to_owned(),
        region: r.get(11)?,
        role_arn: r.get(12)?,
        external_id: r.get(13)?,
        available: r.get(14)?,
        reason: r.get(15)?,
        last_checked_at: r.get(16)?,
        state_seq: r.get(17)?,
    })
}

fn load_snapshot(c: &mut dyn Sql) -> Result<ByokSnapshot, StoreError> {
    let rows = c.query(SNAPSHOT, &[])?;
    if rows.is_empty() {
        return Err(StoreError::Internal(
            "the BYOK revision row is missing".into(),
        ));
    }
    let mut revision: i64 = 0;
    let mut records: Vec<ByokKeyRecord> = Vec::new();
    for r in &rows {
        revision = r.get(0)?;
        let Some(id) = r.get::<Option<String>>(1)? else {
            continue;
        };
        // A binding's rows are adjacent (ordered by binding first).
        if records.last().is_none_or(|last| last.id != id) {
            records.push(binding_from_row(r, id)?);
        }
        if let (Some(key_arn), Some(record)) = (r.get::<Option<String>>(10)?, records.last_mut()) {
            record.keks.push(kek_from_row(r, key_arn, &record.id)?);
        }
    }
    Ok(ByokSnapshot {
        revision: revision.max(0) as u64,
        records,
    })
}

fn upsert_kek(c: &mut dyn Sql, kek: &TenantKekRecord) -> Result<(), StoreError> {
    // `tenant_keks.byok_key_id`, qualified: PostgreSQL finds an unqualified column of the upsert's
    // WHERE ambiguous between the row and `excluded`.
    c.execute(
        "INSERT INTO tenant_keks (key_arn, byok_key_id, region, role_arn, external_id, available, reason, last_checked_at, added_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 1, NULL, ?6, ?6) \
         ON CONFLICT (key_arn) DO UPDATE SET region = ?3, role_arn = ?4, external_id = ?5, available = 1, reason = NULL, last_checked_at = ?6, \
         state_seq = tenant_keks.state_seq + 1 WHERE tenant_keks.byok_key_id = ?2",
        args![kek.key_arn, kek.byok_key_id, kek.region, kek.role_arn, kek.external_id, Timestamp::now().to_rfc3339()],
    )?;
    // The row is there and stays (a conflicting upsert locks it on PostgreSQL even when its WHERE
    // refuses the update); whose it is decides.
    let owner: Option<String> = c
        .query_opt(
            "SELECT byok_key_id FROM tenant_keks WHERE key_arn = ?1",
            args![kek.key_arn],
        )?
        .map(|r| r.get(0))
        .transpose()?;
    if owner.as_deref() != Some(kek.byok_key_id.as_str()) {
        return Err(StoreError::AlreadyExists(
            "another BYOK key using this key_arn",
        ));
    }
    Ok(())
}

impl Store {
    /// Every binding with its CMKs, and the revision they were read at, from one statement (one
    /// snapshot): a snapshot with a higher revision is never older than one with a lower.
    pub async fn byok_snapshot(&self) -> Result<ByokSnapshot, StoreError> {
        self.read(load_snapshot).await
    }

    /// Inserts a binding and its first CMK; a second binding for the same match context, or a CMK
    /// another binding already uses, is `AlreadyExists`.
    pub async fn insert_byok_key(
        &self,
        record: ByokKeyRecord,
        kek: TenantKekRecord,
    ) -> Result<(), StoreError> {
        self.run(move |tx| {
            let now = Timestamp::now().to_rfc3339();
            let inserted = tx.execute(
                "INSERT INTO byok_keys (id, match_context_json, match_context_hash, provider, current_kek, admin_disabled, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6) ON CONFLICT (match_context_hash) DO NOTHING",
                args![record.id, record.match_context_json, record.match_context_hash, record.provider, record.current_kek, now],
            )?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(
                    "a BYOK key for this match_context",
                ));
            }
            upsert_kek(tx, &kek)
        })
        .await
    }

    /// Points a binding at a new CMK (rotation); earlier CMKs stay recorded for reads.
    pub async fn rotate_byok_key(&self, id: &str, kek: TenantKekRecord) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |tx| {
            let changed = tx.execute(
                "UPDATE byok_keys SET current_kek = ?1, updated_at = ?2 WHERE id = ?3",
                args![kek.key_arn, Timestamp::now().to_rfc3339(), id],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound("BYOK key"));
            }
            upsert_kek(tx, &kek)
        })
        .await
    }

    /// Sets one of a binding's admin flags (disabled, retired).
    pub async fn set_byok_flag(
        &self,
        id: &str,
        flag: ByokFlag,
        value: bool,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        // The column comes from a fixed match, never from input.
        let column = match flag {
            ByokFlag::AdminDisabled => "admin_disabled",
            ByokFlag::Retired => "retired",
        };
        self.run(move |c| {
            let changed = c.execute(
                &format!("UPDATE byok_keys SET {column} = ?1, updated_at = ?2 WHERE id = ?3"),
                args![value, Timestamp::now().to_rfc3339(), id],
            )?;
            if changed == 0 {
                Err(StoreError::NotFound("BYOK key"))
            } else {
                Ok(())
            }
        })
        .await
    }

    /// Records what a check of a CMK found; returns true when availability changed. A verdict of
    /// "unavailable" always applies (fail closed). One of "available" that would restore the CMK
    /// applies only when its state has not changed since `seen_seq`, the `state_seq` the check
    /// read before asking KMS: a check that started before a revocation (another instance's
    /// watcher, a key event, a request's refusal) must not undo it. `None`: a check made just
    /// now that must apply (an admin re-enabling after a fresh verification).
    pub async fn record_kek_check(
        &self,
        key_arn: &str,
        available: bool,
        reason: Option<String>,
        seen_seq: Option<i64>,
    ) -> Result<bool, StoreError> {
        let key_arn = key_arn.to_owned();
        self.run(move |tx| {
            // Locked (see `for_update`): another broker's watcher reporting the same change
            // meanwhile would otherwise make both report it.
            let sql = format!(
                "SELECT available, state_seq FROM tenant_keks WHERE key_arn = ?1{}",
                for_update(tx)
            );
            let Some(row) = tx.query_opt(&sql, args![key_arn])? else {
                return Err(StoreError::NotFound("tenant KEK"));
            };
            let (before, seq): (bool, i64) = (row.get(0)?, row.get(1)?);
            let changed = before != available;
            if changed && available && seen_seq.is_some_and(|seen| seen != seq) {
                tracing::debug!(
                    key_arn,
                    "a check older than the CMK's last state change did not restore it"
                );
                return Ok(false);
            }
            tx.execute(
                "UPDATE tenant_keks SET available = ?1, reason = ?2, last_checked_at = ?3, \
                 state_seq = state_seq + ?4 WHERE key_arn = ?5",
                args![
                    available,
                    reason,
                    Timestamp::now().to_rfc3339(),
                    i64::from(changed),
                    key_arn
                ],
            )?;
            Ok(changed)
        })
        .await
    }

    /// Deletes a binding unless objects still depend on one of its CMKs (`InUse` with the count).
    pub async fn delete_byok_key(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |tx| {
            // The binding's row locked first (see `for_update`): a rotation, or a CMK added to it,
            // by another broker waits until this write ends, so it cannot slip in between the
            // count and the delete.
            let sql = format!("SELECT id FROM byok_keys WHERE id = ?1{}", for_update(tx));
            if tx.query_opt(&sql, args![id])?.is_none() {
                return Err(StoreError::NotFound("BYOK key"));
            }
            let dependent: u64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM objects o JOIN versions v ON v.id = o.current_version \
                     WHERE v.kek_id IN (SELECT key_arn FROM tenant_keks WHERE byok_key_id = ?1)",
                    args![id],
                )?
                .get(0)?;
            if dependent > 0 {
                return Err(StoreError::InUse(dependent));
            }
            // Rotation statuses read for its CMKs (migration 14) go with them.
            tx.execute(
                "DELETE FROM tenant_kek_rotation WHERE key_arn IN (SELECT key_arn FROM tenant_keks WHERE byok_key_id = ?1)",
                args![id],
            )?;
            let changed = tx.execute("DELETE FROM byok_keys WHERE id = ?1", args![id])?;
            if changed == 0 {
                return Err(StoreError::NotFound("BYOK key"));
            }
            Ok(())
        })
        .await
    }

    /// The organization's external id for `sts:ExternalId`: the stored one, or `candidate` stored
    /// now if there is none. Returns the id and when it was created; never changes once stored.
    pub async fn external_id_for(
        &self,
        organization_id: &str,
        candidate: String,
    ) -> Result<(String, String), StoreError> {
        let organization_id = organization_id.to_owned();
        self.run(move |c| {
            c.execute(
                "INSERT INTO byok_external_ids (organization_id, external_id, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (organization_id) DO NOTHING",
                args![organization_id, candidate, Timestamp::now().to_rfc3339()],
            )?;
            let row = c.query_one(
                "SELECT external_id, created_at FROM byok_external_ids WHERE organization_id = ?1",
                args![organization_id],
            )?;
            Ok((row.get(0)?, row.get(1)?))
        })
        .await
    }

    /// Objects per KEK id (their current version's KEK).
    pub async fn count_objects_by_kek(&self) -> Result<HashMap<String, u64>, StoreError> {
        self.read(|c| {
            c.query("SELECT v.kek_id, COUNT(*) FROM objects o JOIN versions v ON v.id = o.current_version GROUP BY v.kek_id", &[])?
                .iter()
                .map(|r| Ok((r.get(0)?, r.get(1)?)))
                .collect()
        })
        .await
    }

    /// Objects whose context contains `selector` and whose current KEK is none of `keks`: the
    /// objects a binding covers that still sit under another key (a platform KEK).
    pub async fn count_objects_outside(
        &self,
        selector: Vec<(String, String)>,
        keks: Vec<String>,
    ) -> Result<u64, StoreError> {
        self.read(move |c| {
            let (sql, args) = objects_outside("COUNT(*)", c.dialect(), &selector, keks);
            c.query_one(&sql, &args)?.get(0)
        })
        .await
    }

    /// The KEK ids those objects sit under (what an onboarding rewrap starts from).
    pub async fn keks_outside(
        &self,
        selector: Vec<(String, String)>,
        keks: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |c| {
            let (mut sql, args) =
                objects_outside("DISTINCT v.kek_id", c.dialect(), &selector, keks);
            sql.push_str(" ORDER BY v.kek_id");
            c.query(&sql, &args)?.iter().map(|r| r.get(0)).collect()
        })
        .await
    }
}

/// `SELECT <what>` over objects whose context contains `selector` and whose current KEK is none
/// of `keks`.
fn objects_outside(
    what: &str,
    dialect: super::Dialect,
    selector: &[(String, String)],
    keks: Vec<String>,
) -> (String, Vec<Value>) {
    let mut sql = format!(
        "SELECT {what} FROM objects o JOIN versions v ON v.id = o.current_version WHERE 1 = 1"
    );
    let mut args: Vec<Value> = Vec::new();
    push_scope_filter(dialect, &mut sql, &mut args, "o.context_json", selector);
    for kek in keks {
        args.push(Value::Text(kek));
        sql.push_str(&format!(" AND v.kek_id != ?{}", args.len()));
    }
    (sql, args)
}
