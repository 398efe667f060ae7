//! Objects and their version history. Every write is atomic (one savepoint of the writer's group
//! commit): an object and its first version land together, an update appends a version and moves
//! `current_version` only if the caller's version check still holds (checked and written together).

use rusqlite::{OptionalExtension, Row, params};

use super::audit::insert_events_in;
use super::{AuditEvent, Store, StoreError};
use crate::timestamp::Timestamp;

#[derive(Debug, Clone)]
pub struct NewVersion {
    pub id: String,
    pub created_at: Timestamp,
    pub size: u64,
    pub etag: String,
    pub kek_id: String,
    pub sealed: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct NewObject {
    pub id: String,
    pub name: String,
    pub context_json: String,
    pub context_hash: String,
    pub actor_id: String,
    pub actor_name: String,
    pub version: NewVersion,
}

/// An object with its current version's sealed value.
#[derive(Debug, Clone)]
pub struct ObjectRecord {
    pub id: String,
    pub name: String,
    pub context_json: String,
    pub current_version: String,
    pub updated_at: String,
    pub updated_by_id: String,
    pub updated_by_name: String,
    pub kek_id: String,
    pub sealed: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct VersionRecord {
    pub id: String,
    pub created_at: String,
    pub size: u64,
    pub etag: String,
    pub current: bool,
}

const SELECT_OBJECT: &str = "SELECT o.id, o.name, o.context_json, o.current_version, o.updated_at, \
     o.updated_by_id, o.updated_by_name, v.kek_id, v.sealed \
     FROM objects o JOIN versions v ON v.id = o.current_version";

fn object_from_row(row: &Row<'_>) -> rusqlite::Result<ObjectRecord> {
    Ok(ObjectRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        context_json: row.get(2)?,
        current_version: row.get(3)?,
        updated_at: row.get(4)?,
        updated_by_id: row.get(5)?,
        updated_by_name: row.get(6)?,
        kek_id: row.get(7)?,
        sealed: row.get(8)?,
    })
}

fn insert_version(
    tx: &rusqlite::Connection,
    object_id: &str,
    seq: i64,
    v: &NewVersion,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO versions (id, object_id, seq, created_at, size, etag, kek_id, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![v.id, object_id, seq, v.created_at.to_rfc3339(), v.size as i64, v.etag, v.kek_id, v.sealed],
    )?;
    Ok(())
}

fn current_version(tx: &rusqlite::Connection, object_id: &str) -> Result<String, StoreError> {
    tx.query_row(
        "SELECT current_version FROM objects WHERE id = ?1",
        [object_id],
        |r| r.get(0),
    )
    .optional()?
    .ok_or(StoreError::NotFound("object"))
}

fn check_version(current: &str, expected: Option<&str>) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != current => Err(StoreError::VersionMismatch {
            current: current.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The SQLite JSON path of a top-level member, quoted so any name is safe.
pub(super) fn json_path(name: &str) -> String {
    format!("$.\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Appends "the context in `column` contains every `scope` pair" (an API key's scope) to `sql`.
pub(super) fn push_scope_filter(
    sql: &mut String,
    args: &mut Vec<rusqlite::types::Value>,
    column: &str,
    scope: &[(String, String)],
) {
    for (name, value) in scope {
        sql.push_str(&format!(
            " AND json_extract({column}, ?{}) = ?{}",
            args.len() + 1,
            args.len() + 2
        ));
        args.push(json_path(name).into());
        args.push(value.clone().into());
    }
}

impl Store {
    /// Inserts an object, its first version and `events` in one atomic write.
    pub async fn insert_object(
        &self,
        object: NewObject,
        events: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        self.insert_object_then(object, events, |_| Ok(())).await
    }

    /// [`Store::insert_object`], running `then` in the same atomic write (its error undoes all).
    pub(super) async fn insert_object_then<F>(
        &self,
        object: NewObject,
        events: Vec<AuditEvent>,
        then: F,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<(), StoreError> + Send + 'static,
    {
        self.run(move |c| {
            let tx = c.savepoint()?;
            let at = object.version.created_at.to_rfc3339();
            let inserted = tx.execute(
                "INSERT INTO objects (id, name, context_json, context_hash, current_version, created_at, updated_at, updated_by_id, updated_by_name) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8) ON CONFLICT (name, context_hash) DO NOTHING",
                params![object.id, object.name, object.context_json, object.context_hash, object.version.id, at, object.actor_id, object.actor_name],
            )?;
            if inserted == 0 {
                return Err(StoreError::NameTaken);
            }
            insert_version(&tx, &object.id, 1, &object.version)?;
            insert_events_in(&tx, &events)?;
            then(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn get_object(&self, id: &str) -> Result<ObjectRecord, StoreError> {
        if let Some(record) = self.records.get(id) {
            return Ok((*record).clone());
        }
        let generation = self.records.generation();
        let key = id.to_owned();
        let record = self
            .read(move |c| {
                c.query_row(
                    &format!("{SELECT_OBJECT} WHERE o.id = ?1"),
                    [key],
                    object_from_row,
                )
                .optional()?
                .ok_or(StoreError::NotFound("object"))
            })
            .await?;
        self.records
            .insert_if_current(std::sync::Arc::new(record.clone()), generation);
        Ok(record)
    }

    /// Up to `limit` objects named `name` whose context contains every `scope` pair.
    pub async fn find_objects_by_name(
        &self,
        name: &str,
        scope: Vec<(String, String)>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            let mut sql = format!("{SELECT_OBJECT} WHERE o.name = ?1");
            let mut args: Vec<rusqlite::types::Value> = vec![name.into()];
            push_scope_filter(&mut sql, &mut args, "o.context_json", &scope);
            sql.push_str(&format!(" LIMIT {limit}"));
            let mut statement = c.prepare(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(args), object_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Whether the context (by canonical hash) already holds an object named `name`: the cheap
    /// check before spending a KMS call; the unique index decides under races.
    pub async fn name_taken_in_context(
        &self,
        name: &str,
        context_hash: &str,
    ) -> Result<bool, StoreError> {
        let (name, context_hash) = (name.to_owned(), context_hash.to_owned());
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE name = ?1 AND context_hash = ?2)",
                [name, context_hash],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Appends a version if `expected_version` (when given) is still current. Atomic: of many
    /// concurrent updates carrying the same check, exactly one succeeds.
    pub async fn append_version(
        &self,
        object_id: &str,
        expected_version: Option<String>,
        version: NewVersion,
        actor_id: String,
        actor_name: String,
        events: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        let object_id = object_id.to_owned();
        let invalidate_id = object_id.clone();
        self.run(move |c| {
            let tx = c.savepoint()?;
            check_version(&current_version(&tx, &object_id)?, expected_version.as_deref())?;
            let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE object_id = ?1", [&object_id], |r| r.get(0))?;
            insert_version(&tx, &object_id, seq, &version)?;
            tx.execute(
                "UPDATE objects SET current_version = ?1, updated_at = ?2, updated_by_id = ?3, updated_by_name = ?4 WHERE id = ?5",
                params![version.id, version.created_at.to_rfc3339(), actor_id, actor_name, object_id],
            )?;
            insert_events_in(&tx, &events)?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        self.records.invalidate(&invalidate_id);
        Ok(())
    }

    /// Deletes an object and its versions if `expected_version` (when given) is still current.
    pub async fn delete_object(
        &self,
        object_id: &str,
        expected_version: Option<String>,
        events: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        let object_id = object_id.to_owned();
        let invalidate_id = object_id.clone();
        self.run(move |c| {
            let tx = c.savepoint()?;
            check_version(
                &current_version(&tx, &object_id)?,
                expected_version.as_deref(),
            )?;
            tx.execute("DELETE FROM versions WHERE object_id = ?1", [&object_id])?;
            tx.execute("DELETE FROM objects WHERE id = ?1", [&object_id])?;
            insert_events_in(&tx, &events)?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        self.records.invalidate(&invalidate_id);
        Ok(())
    }

    /// Newest first.
    pub async fn list_versions(&self, object_id: &str) -> Result<Vec<VersionRecord>, StoreError> {
        let object_id = object_id.to_owned();
        self.read(move |c| {
            let current = c
                .query_row("SELECT current_version FROM objects WHERE id = ?1", [&object_id], |r| r.get::<_, String>(0))
                .optional()?
                .ok_or(StoreError::NotFound("object"))?;
            let mut statement = c.prepare("SELECT id, created_at, size, etag FROM versions WHERE object_id = ?1 ORDER BY seq DESC")?;
            let rows = statement.query_map([&object_id], |r| {
                let id: String = r.get(0)?;
                Ok(VersionRecord { current: id == current, id, created_at: r.get(1)?, size: r.get::<_, i64>(2)? as u64, etag: r.get(3)? })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}
