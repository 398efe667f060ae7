//! Objects and their version history. Every write is atomic (one savepoint of the writer's group
//! commit): an object and its first version land together, an update appends a version and moves
//! `current_version` only if the caller's version check still holds (checked and written together).

use super::audit::insert_events_in;
use super::sql::{Dialect, Row, Sql, ToValue, Value, args};
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

fn object_from_row(row: &Row) -> Result<ObjectRecord, StoreError> {
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

/// Appended to a `SELECT` in a write whose decision rests on the rows it reads: on PostgreSQL,
/// where other brokers write concurrently at READ COMMITTED, it locks them until the commit.
/// SQLite has no `FOR UPDATE` and needs none: its one writer runs writes one at a time.
pub(super) fn for_update(tx: &dyn Sql) -> &'static str {
    match tx.dialect() {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE",
    }
}

/// For a write that decides from rows it counts (a limit, "none running") and then inserts: no
/// row to lock stops another broker inserting meanwhile, so on PostgreSQL such writes of one
/// `table` (a name from the code, never input) take turns on a transaction-scoped advisory lock
/// keyed by the table's OID (released at the commit), and each counts what the previous
/// committed. Only these writes insert into the tables it is used on, and other writes never wait
/// for it. SQLite's one writer already serialises them.
pub(super) fn serialize_counting(tx: &mut dyn Sql, table: &str) -> Result<(), StoreError> {
    match tx.dialect() {
        Dialect::Sqlite => Ok(()),
        Dialect::Postgres => tx.batch(&format!(
            "SELECT pg_advisory_xact_lock(CAST(CAST(CAST('{table}' AS regclass) AS oid) AS BIGINT))"
        )),
    }
}

fn insert_version(
    tx: &mut dyn Sql,
    object_id: &str,
    seq: i64,
    v: &NewVersion,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO versions (id, object_id, seq, created_at, size, etag, kek_id, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![v.id, object_id, seq, v.created_at.to_rfc3339(), v.size, v.etag, v.kek_id, v.sealed],
    )?;
    Ok(())
}

/// The object's current version, its row locked for the rest of the write (see [`for_update`]):
/// a version check and the write it guards cannot interleave with another broker's.
fn current_version(tx: &mut dyn Sql, object_id: &str) -> Result<String, StoreError> {
    let sql = format!(
        "SELECT current_version FROM objects WHERE id = ?1{}",
        for_update(tx)
    );
    tx.query_opt(&sql, args![object_id])?
        .ok_or(StoreError::NotFound("object"))?
        .get(0)
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
fn json_path(name: &str) -> String {
    format!("$.\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Appends "the context in `column` contains every `scope` pair" (an API key's scope) to `sql`.
/// Contexts are JSON objects of strings, so the member's text is compared: SQLite's
/// `json_extract` at a quoted path, PostgreSQL's `->>` with the bare member name.
pub(super) fn push_scope_filter(
    dialect: Dialect,
    sql: &mut String,
    args: &mut Vec<Value>,
    column: &str,
    scope: &[(String, String)],
) {
    for (name, value) in scope {
        let (member, value_at) = (args.len() + 1, args.len() + 2);
        match dialect {
            Dialect::Sqlite => {
                sql.push_str(&format!(
                    " AND json_extract({column}, ?{member}) = ?{value_at}"
                ));
                args.push(Value::Text(json_path(name)));
            }
            Dialect::Postgres => {
                sql.push_str(&format!(
                    " AND ({column}::jsonb ->> ?{member}) = ?{value_at}"
                ));
                args.push(Value::Text(name.clone()));
            }
        }
        args.push(Value::Text(value.clone()));
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
        F: FnOnce(&mut dyn Sql) -> Result<(), StoreError> + Send + 'static,
    {
        self.run(move |tx| {
            let at = object.version.created_at.to_rfc3339();
            let inserted = tx.execute(
                "INSERT INTO objects (id, name, context_json, context_hash, current_version, created_at, updated_at, updated_by_id, updated_by_name) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8) ON CONFLICT (name, context_hash) DO NOTHING",
                args![object.id, object.name, object.context_json, object.context_hash, object.version.id, at, object.actor_id, object.actor_name],
            )?;
            if inserted == 0 {
                return Err(StoreError::NameTaken);
            }
            insert_version(tx, &object.id, 1, &object.version)?;
            insert_events_in(tx, &events)?;
            then(tx)
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
                let row = c
                    .query_opt(&format!("{SELECT_OBJECT} WHERE o.id = ?1"), args![key])?
                    .ok_or(StoreError::NotFound("object"))?;
                object_from_row(&row)
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
            let mut args = vec![Value::Text(name)];
            push_scope_filter(c.dialect(), &mut sql, &mut args, "o.context_json", &scope);
            args.push((limit as u64).to_value());
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
            c.query(&sql, &args)?.iter().map(object_from_row).collect()
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
            c.query_one(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE name = ?1 AND context_hash = ?2)",
                args![name, context_hash],
            )?
            .get(0)
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
        self.run(move |tx| {
            // Locks the object's row, so the next seq below is also this write's alone.
            check_version(&current_version(tx, &object_id)?, expected_version.as_deref())?;
            let seq: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE object_id = ?1",
                    args![object_id],
                )?
                .get(0)?;
            insert_version(tx, &object_id, seq, &version)?;
            tx.execute(
                "UPDATE objects SET current_version = ?1, updated_at = ?2, updated_by_id = ?3, updated_by_name = ?4 WHERE id = ?5",
                args![version.id, version.created_at.to_rfc3339(), actor_id, actor_name, object_id],
            )?;
            insert_events_in(tx, &events)
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
        self.run(move |tx| {
            check_version(
                &current_version(tx, &object_id)?,
                expected_version.as_deref(),
            )?;
            tx.execute(
                "DELETE FROM versions WHERE object_id = ?1",
                args![object_id],
            )?;
            tx.execute("DELETE FROM objects WHERE id = ?1", args![object_id])?;
            insert_events_in(tx, &events)
        })
        .await?;
        self.records.invalidate(&invalidate_id);
        Ok(())
    }

    /// Newest first.
    pub async fn list_versions(&self, object_id: &str) -> Result<Vec<VersionRecord>, StoreError> {
        let object_id = object_id.to_owned();
        self.read(move |c| {
            let current: String = c
                .query_opt("SELECT current_version FROM objects WHERE id = ?1", args![object_id])?
                .ok_or(StoreError::NotFound("object"))?
                .get(0)?;
            c.query(
                "SELECT id, created_at, size, etag FROM versions WHERE object_id = ?1 ORDER BY seq DESC",
                args![object_id],
            )?
            .iter()
            .map(|r| {
                let id: String = r.get(0)?;
                Ok(VersionRecord { current: id == current, id, created_at: r.get(1)?, size: r.get(2)?, etag: r.get(3)? })
            })
            .collect()
        })
        .await
    }
}
