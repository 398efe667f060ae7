//! BYOK bindings and the tenant KEKs (CMKs) each has used. A binding keeps every CMK it ever
//! pointed at, so objects wrapped before a rotation stay readable through the old CMK's role.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

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

fn load_all(c: &Connection) -> Result<Vec<ByokKeyRecord>, StoreError> {
    let mut keks: HashMap<String, Vec<TenantKekRecord>> = HashMap::new();
    let mut statement = c.prepare("SELECT key_arn, byok_key_id, region, role_arn, external_id, available, reason, last_checked_at FROM tenant_keks ORDER BY added_at")?;
    let rows = statement.query_map([], |r| {
        Ok(TenantKekRecord {
            key_arn: r.get(0)?,
            byok_key_id: r.get(1)?,
            region: r.get(2)?,
            role_arn: r.get(3)?,
            external_id: r.get(4)?,
            available: r.get::<_, i64>(5)? != 0,
            reason: r.get(6)?,
            last_checked_at: r.get(7)?,
        })
    })?;
    for row in rows {
        let row = row?;
        keks.entry(row.byok_key_id.clone()).or_default().push(row);
    }
    let mut statement = c.prepare("SELECT id, match_context_json, match_context_hash, provider, current_kek, admin_disabled, created_at, updated_at, retired FROM byok_keys ORDER BY created_at, id")?;
    let rows = statement.query_map([], |r| {
        Ok(ByokKeyRecord {
            id: r.get(0)?,
            match_context_json: r.get(1)?,
            match_context_hash: r.get(2)?,
            provider: r.get(3)?,
            current_kek: r.get(4)?,
            admin_disabled: r.get::<_, i64>(5)? != 0,
            created_at: r.get(6)?,
            updated_at: r.get(7)?,
            retired: r.get::<_, i64>(8)? != 0,
            keks: Vec::new(),
        })
    })?;
    let mut out = Vec::new();
    for row in rows {
        let mut row = row?;
        row.keks = keks.remove(&row.id).unwrap_or_default();
        out.push(row);
    }
    Ok(out)
}

fn upsert_kek(c: &Connection, kek: &TenantKekRecord) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO tenant_keks (key_arn, byok_key_id, region, role_arn, external_id, available, reason, last_checked_at, added_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 1, NULL, ?6, ?6) \
         ON CONFLICT (key_arn) DO UPDATE SET region = ?3, role_arn = ?4, external_id = ?5, available = 1, reason = NULL, last_checked_at = ?6 \
         WHERE byok_key_id = ?2",
        params![kek.key_arn, kek.byok_key_id, kek.region, kek.role_arn, kek.external_id, Timestamp::now().to_rfc3339()],
    )?;
    let owner: Option<String> = c
        .query_row(
            "SELECT byok_key_id FROM tenant_keks WHERE key_arn = ?1",
            [&kek.key_arn],
            |r| r.get(0),
        )
        .optional()?;
    if owner.as_deref() != Some(kek.byok_key_id.as_str()) {
        return Err(StoreError::AlreadyExists(
            "another BYOK key using this key_arn",
        ));
    }
    Ok(())
}

impl Store {
    /// Every binding with its CMKs, and the revision they were read at, from one read
    /// transaction: a snapshot with a higher revision is never older than one with a lower.
    pub async fn byok_snapshot(&self) -> Result<ByokSnapshot, StoreError> {
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            let revision: i64 =
                tx.query_row("SELECT revision FROM byok_revision", [], |r| r.get(0))?;
            let records = load_all(&tx)?;
            tx.finish()?;
            Ok(ByokSnapshot {
                revision: revision.max(0) as u64,
                records,
            })
        })
        .await
    }

    /// Inserts a binding and its first CMK; a second binding for the same match context, or a CMK
    /// another binding already uses, is `AlreadyExists`.
    pub async fn insert_byok_key(
        &self,
        record: ByokKeyRecord,
        kek: TenantKekRecord,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            let tx = c.savepoint()?;
            let now = Timestamp::now().to_rfc3339();
            let inserted = tx.execute(
                "INSERT INTO byok_keys (id, match_context_json, match_context_hash, provider, current_kek, admin_disabled, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6) ON CONFLICT (match_context_hash) DO NOTHING",
                params![record.id, record.match_context_json, record.match_context_hash, record.provider, record.current_kek, now],
            )?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(
                    "a BYOK key for this match_context",
                ));
            }
            upsert_kek(&tx, &kek)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Points a binding at a new CMK (rotation); earlier CMKs stay recorded for reads.
    pub async fn rotate_byok_key(&self, id: &str, kek: TenantKekRecord) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let tx = c.savepoint()?;
            let changed = tx.execute(
                "UPDATE byok_keys SET current_kek = ?1, updated_at = ?2 WHERE id = ?3",
                params![kek.key_arn, Timestamp::now().to_rfc3339(), id],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound("BYOK key"));
            }
            upsert_kek(&tx, &kek)?;
            tx.commit()?;
            Ok(())
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
                params![value as i64, Timestamp::now().to_rfc3339(), id],
            )?;
            if changed == 0 {
                Err(StoreError::NotFound("BYOK key"))
            } else {
                Ok(())
            }
        })
        .await
    }

    /// Records a watcher observation; returns true when availability changed.
    pub async fn record_kek_check(
        &self,
        key_arn: &str,
        available: bool,
        reason: Option<String>,
    ) -> Result<bool, StoreError> {
        let key_arn = key_arn.to_owned();
        self.run(move |c| {
            let tx = c.savepoint()?;
            let before: Option<i64> = tx.query_row("SELECT available FROM tenant_keks WHERE key_arn = ?1", [&key_arn], |r| r.get(0)).optional()?;
            let Some(before) = before else { return Err(StoreError::NotFound("tenant KEK")) };
            tx.execute(
                "UPDATE tenant_keks SET available = ?1, reason = ?2, last_checked_at = ?3 WHERE key_arn = ?4",
                params![available as i64, reason, Timestamp::now().to_rfc3339(), key_arn],
            )?;
            tx.commit()?;
            Ok((before != 0) != available)
        })
        .await
    }

    /// Deletes a binding unless objects still depend on one of its CMKs (`InUse` with the count).
    pub async fn delete_byok_key(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let tx = c.savepoint()?;
            let dependent: i64 = tx.query_row(
                "SELECT COUNT(*) FROM objects o JOIN versions v ON v.id = o.current_version \
                 WHERE v.kek_id IN (SELECT key_arn FROM tenant_keks WHERE byok_key_id = ?1)",
                [&id],
                |r| r.get(0),
            )?;
            if dependent > 0 {
                return Err(StoreError::InUse(dependent as u64));
            }
            let changed = tx.execute("DELETE FROM byok_keys WHERE id = ?1", [&id])?;
            if changed == 0 {
                return Err(StoreError::NotFound("BYOK key"));
            }
            tx.commit()?;
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
                params![organization_id, candidate, Timestamp::now().to_rfc3339()],
            )?;
            Ok(c.query_row(
                "SELECT external_id, created_at FROM byok_external_ids WHERE organization_id = ?1",
                [&organization_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
    }

    /// Objects per KEK id (their current version's KEK).
    pub async fn count_objects_by_kek(&self) -> Result<HashMap<String, u64>, StoreError> {
        self.read(|c| {
            let mut statement = c.prepare("SELECT v.kek_id, COUNT(*) FROM objects o JOIN versions v ON v.id = o.current_version GROUP BY v.kek_id")?;
            let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<HashMap<_, _>, _>>()?)
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
            let mut sql = String::from("SELECT COUNT(*) FROM objects o JOIN versions v ON v.id = o.current_version WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            for (name, value) in selector {
                sql.push_str(&format!(" AND json_extract(o.context_json, ?{}) = ?{}", args.len() + 1, args.len() + 2));
                args.push(super::objects::json_path(&name).into());
                args.push(value.into());
            }
            for kek in keks {
                args.push(kek.into());
                sql.push_str(&format!(" AND v.kek_id != ?{}", args.len()));
            }
            Ok(c.query_row(&sql, rusqlite::params_from_iter(args), |r| r.get::<_, i64>(0))? as u64)
        })
        .await
    }
}
