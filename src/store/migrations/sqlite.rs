//! SQLite's migrations, applied in order inside one transaction each; `PRAGMA user_version` records
//! how many have run. Never edit a released migration: append a new one. Foreign keys are off
//! while they run (a table rebuild must not cascade) and checked before each commit.

use rusqlite::Connection;

use crate::store::StoreError;

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE objects (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL UNIQUE,
    context_json     TEXT NOT NULL,
    context_hash     TEXT NOT NULL,
    current_version  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    updated_by_id    TEXT NOT NULL,
    updated_by_name  TEXT NOT NULL
);
CREATE INDEX objects_updated_at ON objects(updated_at);
CREATE TABLE versions (
    id          TEXT PRIMARY KEY,
    object_id   TEXT NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    size        INTEGER NOT NULL,
    etag        TEXT NOT NULL,
    kek_id      TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    UNIQUE (object_id, seq)
);
CREATE INDEX versions_kek ON versions(kek_id);
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('app', 'admin')),
    scope_json  TEXT,
    key_hash    BLOB NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE TABLE audit_events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    event            TEXT NOT NULL,
    organization_id  TEXT,
    data_json        TEXT NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE INDEX audit_events_filter ON audit_events(event, organization_id, created_at);
CREATE TABLE idempotency (
    api_key_id    TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  BLOB NOT NULL,
    status        INTEGER NOT NULL,
    body          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (api_key_id, key)
);
"#,
    r#"
CREATE TABLE byok_keys (
    id                  TEXT PRIMARY KEY,
    match_context_json  TEXT NOT NULL,
    match_context_hash  TEXT NOT NULL UNIQUE,
    provider            TEXT NOT NULL,
    current_kek         TEXT NOT NULL,
    admin_disabled      INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE TABLE tenant_keks (
    key_arn        TEXT PRIMARY KEY,
    byok_key_id    TEXT NOT NULL REFERENCES byok_keys(id) ON DELETE CASCADE,
    region         TEXT,
    role_arn       TEXT,
    external_id    TEXT,
    available      INTEGER NOT NULL DEFAULT 1,
    reason         TEXT,
    last_checked_at TEXT,
    added_at       TEXT NOT NULL
);
CREATE INDEX tenant_keks_binding ON tenant_keks(byok_key_id);
"#,
    r#"
ALTER TABLE byok_keys ADD COLUMN retired INTEGER NOT NULL DEFAULT 0;
CREATE INDEX versions_object ON versions(object_id);
CREATE TABLE rewrap_jobs (
    id               TEXT PRIMARY KEY,
    source_kind      TEXT NOT NULL CHECK (source_kind IN ('byok_key_id', 'kek_id')),
    source_id        TEXT NOT NULL,
    source_keks_json TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('running', 'completed', 'failed', 'cancelled')),
    total            INTEGER NOT NULL,
    done             INTEGER NOT NULL DEFAULT 0,
    skipped          INTEGER NOT NULL DEFAULT 0,
    failed           INTEGER NOT NULL DEFAULT 0,
    checkpoint_seq   INTEGER NOT NULL DEFAULT 0,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    error            TEXT
);
CREATE TABLE rewrap_failures (
    job_id     TEXT NOT NULL REFERENCES rewrap_jobs(id) ON DELETE CASCADE,
    object_id  TEXT NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (job_id, object_id)
);
"#,
    // Names are unique per key context, not globally: a global constraint told a scoped key which
    // names other tenants use. SQLite cannot drop a column's UNIQUE, so the table is rebuilt with
    // the same `seq` values and AUTOINCREMENT high-water mark (rewrap checkpoints are seqs).
    // `objects_created` serves list cursors, which are (created_at, id) positions.
    r#"
CREATE TABLE objects_rebuilt (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    context_json     TEXT NOT NULL,
    context_hash     TEXT NOT NULL,
    current_version  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    updated_by_id    TEXT NOT NULL,
    updated_by_name  TEXT NOT NULL
);
INSERT INTO objects_rebuilt (seq, id, name, context_json, context_hash, current_version, created_at, updated_at, updated_by_id, updated_by_name)
    SELECT seq, id, name, context_json, context_hash, current_version, created_at, updated_at, updated_by_id, updated_by_name FROM objects;
DELETE FROM sqlite_sequence WHERE name = 'objects_rebuilt';
INSERT INTO sqlite_sequence (name, seq) SELECT 'objects_rebuilt', seq FROM sqlite_sequence WHERE name = 'objects';
DROP TABLE objects;
ALTER TABLE objects_rebuilt RENAME TO objects;
CREATE INDEX objects_updated_at ON objects(updated_at);
CREATE UNIQUE INDEX objects_name_per_context ON objects(name, context_hash);
CREATE INDEX objects_created ON objects(created_at, id);
"#,
    // One sts:ExternalId per organization, generated by the broker (confused-deputy guidance).
    r#"
CREATE TABLE byok_external_ids (
    organization_id  TEXT PRIMARY KEY,
    external_id      TEXT NOT NULL UNIQUE,
    created_at       TEXT NOT NULL
);
"#,
    // An idempotency row is first a claim (`claim_token` set, no response yet) and becomes the
    // stored response (`claim_token` NULL) in the transaction that creates the object.
    r#"
ALTER TABLE idempotency ADD COLUMN claim_token TEXT;
"#,
    // Platform KEKs created just in time, for the creation limits. A row with kek_id NULL is a
    // creation in flight (or one a crash interrupted: it keeps counting, which fails closed).
    // KEKs that already wrap stored versions are counted from the start; their creator is unknown.
    r#"
CREATE TABLE platform_keks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    creator       TEXT,
    kek_id        TEXT UNIQUE,
    context_hash  TEXT NOT NULL,
    created_unix  INTEGER NOT NULL
);
CREATE INDEX platform_keks_creator ON platform_keks(creator, created_unix);
INSERT INTO platform_keks (creator, kek_id, context_hash, created_unix)
    SELECT DISTINCT NULL, kek_id, '', 0 FROM versions
    WHERE kek_id NOT IN (SELECT key_arn FROM tenant_keks);
"#,
    // The BYOK routing revision: bumped by triggers in the transaction of every change to a
    // binding or its CMKs, so a routing snapshot read with it can be ordered against another.
    r#"
CREATE TABLE byok_revision (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    revision  INTEGER NOT NULL
);
INSERT INTO byok_revision (id, revision) VALUES (1, 1);
CREATE TRIGGER byok_keys_insert AFTER INSERT ON byok_keys BEGIN UPDATE byok_revision SET revision = revision + 1; END;
CREATE TRIGGER byok_keys_update AFTER UPDATE ON byok_keys BEGIN UPDATE byok_revision SET revision = revision + 1; END;
CREATE TRIGGER byok_keys_delete AFTER DELETE ON byok_keys BEGIN UPDATE byok_revision SET revision = revision + 1; END;
CREATE TRIGGER tenant_keks_insert AFTER INSERT ON tenant_keks BEGIN UPDATE byok_revision SET revision = revision + 1; END;
CREATE TRIGGER tenant_keks_update AFTER UPDATE ON tenant_keks BEGIN UPDATE byok_revision SET revision = revision + 1; END;
CREATE TRIGGER tenant_keks_delete AFTER DELETE ON tenant_keks BEGIN UPDATE byok_revision SET revision = revision + 1; END;
"#,
    // Retention: the purge finds expired idempotency records and old audit events by age.
    r#"
CREATE INDEX idempotency_created ON idempotency(created_at);
CREATE INDEX audit_events_created ON audit_events(created_at);
"#,
    // Several instances: a rewrap job is run by the instance holding its lease (expiry in ms on
    // the database's clock); platform KEK states the key-state watcher's leader found, and the
    // platform KEKs instances have DEKs of in their caches (so the leader checks those too).
    r#"
ALTER TABLE rewrap_jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE rewrap_jobs ADD COLUMN lease_expires_ms INTEGER NOT NULL DEFAULT 0;
CREATE TABLE platform_kek_watch (
    kek_id            TEXT PRIMARY KEY,
    failure           TEXT,
    cached_until_ms   INTEGER NOT NULL DEFAULT 0
);
"#,
    // Coherence between brokers: the API-key revision (see `COHERENCE` below).
    COHERENCE,
    // Only a routing change bumps the BYOK revision: a watcher check that finds a CMK as it was
    // moves `last_checked_at` alone, and must not make every broker reload its routing view.
    r#"
DROP TRIGGER tenant_keks_update;
CREATE TRIGGER tenant_keks_update AFTER UPDATE ON tenant_keks
    WHEN OLD.key_arn IS NOT NEW.key_arn OR OLD.byok_key_id IS NOT NEW.byok_key_id
      OR OLD.region IS NOT NEW.region OR OLD.role_arn IS NOT NEW.role_arn
      OR OLD.external_id IS NOT NEW.external_id OR OLD.available IS NOT NEW.available
      OR OLD.reason IS NOT NEW.reason OR OLD.added_at IS NOT NEW.added_at
    BEGIN UPDATE byok_revision SET revision = revision + 1; END;
"#,
    // A CMK's state sequence: moves with every change of `available`, so a check that read the
    // state before a revocation cannot restore the CMK after it (see `record_kek_check`).
    "ALTER TABLE tenant_keks ADD COLUMN state_seq INTEGER NOT NULL DEFAULT 0;",
    // Version 14: KEK rotation (see `KEK_ROTATION`).
    KEK_ROTATION,
    // Version 15: the admin portal's links and sessions (see `PORTAL`).
    PORTAL,
    // Version 16: the audit hash chain (see `AUDIT_CHAIN`).
    AUDIT_CHAIN,
    // Version 17: how far the audit log is indexed (see `AUDIT_LOG`).
    AUDIT_LOG,
];

/// Version 17. The audit log (`store/audit_segments.rs`): the log offset up to which its events
/// are in `audit_events`, moved in the same transaction as the events it counts, so a crash
/// neither loses nor repeats one.
const AUDIT_LOG: &str = r#"
CREATE TABLE audit_log_checkpoint (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_through  INTEGER NOT NULL
);
INSERT INTO audit_log_checkpoint (id, indexed_through) VALUES (1, 0);
"#;

/// Version 16. The audit hash chain (docs/ARCHITECTURE.md, "Audit trail"): each event's place in
/// its organization's chain, the hash of its predecessor and its own; each chain's head (the
/// anchor that makes a truncated tail visible); the points up to which retention purged a chain;
/// and the last event written before chaining began (older events stay unchained, later ones
/// without a chain position are forgeries).
const AUDIT_CHAIN: &str = r#"
ALTER TABLE audit_events ADD COLUMN chain_position INTEGER;
ALTER TABLE audit_events ADD COLUMN chain_previous TEXT;
ALTER TABLE audit_events ADD COLUMN chain_hash TEXT;
CREATE INDEX audit_events_chain ON audit_events(organization_id, chain_position);
CREATE TABLE audit_chain_heads (
    chain     TEXT PRIMARY KEY,
    position  INTEGER NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TABLE audit_chain_purges (
    chain     TEXT NOT NULL,
    position  INTEGER NOT NULL,
    hash      TEXT NOT NULL,
    PRIMARY KEY (chain, position)
);
CREATE TABLE audit_chain_genesis (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    unchained_through  INTEGER NOT NULL
);
INSERT INTO audit_chain_genesis (id, unchained_through)
    SELECT 1, MAX(COALESCE((SELECT MAX(seq) FROM audit_events), 0),
                  COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'), 0));
"#;

/// Version 15. The admin portal: single-use links and the sessions they start, in the database so
/// a link generated through one instance opens on another and a session survives a restart. Only
/// SHA-256 hashes of the secrets are stored. Times are milliseconds on the database's clock.
const PORTAL: &str = r#"
CREATE TABLE portal_links (
    token_hash       TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL,
    intent           TEXT NOT NULL,
    return_url       TEXT,
    success_url      TEXT,
    expires_ms       INTEGER NOT NULL,
    used_ms          INTEGER
);
CREATE TABLE portal_sessions (
    id_hash          TEXT PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    organization_id  TEXT NOT NULL,
    return_url       TEXT,
    success_url      TEXT,
    created_ms       INTEGER NOT NULL,
    last_seen_ms     INTEGER NOT NULL,
    ended_ms         INTEGER
);
CREATE INDEX portal_links_expires ON portal_links(expires_ms);
CREATE INDEX portal_sessions_last_seen ON portal_sessions(last_seen_ms);
"#;

/// Version 14. KEK rotation: what the broker enabled on each platform KEK (so it is not requested
/// again on every use) and when an admin last rotated one; the rotation status the watcher's
/// leader (or a verification) last read for each tenant CMK, so every instance shows the same.
/// Not part of the routing view: no trigger bumps the BYOK revision for it.
const KEK_ROTATION: &str = r#"
ALTER TABLE platform_keks ADD COLUMN rotation_period_days INTEGER;
ALTER TABLE platform_keks ADD COLUMN rotation_enabled_at TEXT;
ALTER TABLE platform_keks ADD COLUMN rotated_at TEXT;
CREATE TABLE tenant_kek_rotation (
    key_arn        TEXT PRIMARY KEY,
    enabled        INTEGER,
    period_days    INTEGER,
    next_rotation  TEXT,
    error          TEXT,
    checked_at     TEXT NOT NULL,
    changed_at     TEXT
);
"#;

/// Version 11. The API-key revision: bumped by triggers in the transaction of every change to a
/// key (a revocation), so a broker that cached a verified key can tell its copy is stale. One
/// process uses a SQLite file, so nothing else reads it here; the table keeps both schemas alike.
const COHERENCE: &str = r#"
CREATE TABLE api_key_revision (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    revision  INTEGER NOT NULL
);
INSERT INTO api_key_revision (id, revision) VALUES (1, 1);
CREATE TRIGGER api_keys_update AFTER UPDATE ON api_keys BEGIN UPDATE api_key_revision SET revision = revision + 1; END;
CREATE TRIGGER api_keys_delete AFTER DELETE ON api_keys BEGIN UPDATE api_key_revision SET revision = revision + 1; END;
"#;

pub(in crate::store) fn apply(connection: &mut Connection) -> Result<(), StoreError> {
    // Outside a transaction, or SQLite ignores it. With foreign keys on, dropping a table being
    // rebuilt would cascade into its children (every object's versions).
    connection.pragma_update(None, "foreign_keys", "OFF")?;
    let result = apply_pending(connection);
    connection.pragma_update(None, "foreign_keys", "ON")?;
    result
}

fn apply_pending(connection: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    super::refuse_newer(applied)?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
        let tx = connection.transaction()?;
        tx.execute_batch(sql)?;
        let dangling = tx
            .prepare("PRAGMA foreign_key_check")?
            .query([])?
            .next()?
            .is_some();
        if dangling {
            return Err(StoreError::Internal(format!(
                "migration {} leaves dangling references",
                index + 1
            )));
        }
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database as the previous release left it: globally unique names, objects with versions.
    fn database_before_per_context_names() -> Connection {
        let connection = Connection::open_in_memory().unwrap();
        connection
            .pragma_update(None, "foreign_keys", "ON")
            .unwrap();
        for sql in &MIGRATIONS[..3] {
            connection.execute_batch(sql).unwrap();
        }
        connection.pragma_update(None, "user_version", 3).unwrap();
        for (seq, id, name) in [(1, "o1", "a"), (2, "o2", "b"), (3, "o3", "deleted")] {
            connection
                .execute(
                    "INSERT INTO objects VALUES (?1, ?2, ?3, '{}', 'h1', ?2 || 'v', 't', 't', 'k', 'n')",
                    rusqlite::params![seq, id, name],
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO versions VALUES (?1 || 'v', ?1, 1, 't', 1, 'e', 'kek', x'00')",
                    [id],
                )
                .unwrap();
        }
        connection
            .execute("DELETE FROM objects WHERE id = 'o3'", [])
            .unwrap();
        connection
    }

    #[test]
    fn a_database_from_a_newer_binary_is_refused_naming_both_versions() {
        let mut connection = Connection::open_in_memory().unwrap();
        apply(&mut connection).unwrap();
        let newer = MIGRATIONS.len() as i64 + 1;
        connection
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let refused = apply(&mut connection).unwrap_err();
        assert_eq!(
            refused,
            StoreError::SchemaTooNew {
                database: newer,
                binary: MIGRATIONS.len() as i64
            }
        );
        let text = refused.to_string();
        assert!(
            text.contains(&newer.to_string()) && text.contains(&MIGRATIONS.len().to_string()),
            "{text}"
        );
    }

    #[test]
    fn per_context_names_keep_existing_objects_versions_and_sequence() {
        let mut connection = database_before_per_context_names();
        apply(&mut connection).unwrap();
        let count = |sql: &str| -> i64 { connection.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT COUNT(*) FROM objects"), 2);
        assert_eq!(
            count("SELECT COUNT(*) FROM versions"),
            2,
            "the rebuild must not cascade into versions"
        );
        assert_eq!(count("SELECT seq FROM objects WHERE id = 'o2'"), 2);
        assert_eq!(
            count("SELECT seq FROM sqlite_sequence WHERE name = 'objects'"),
            3,
            "a deleted object's seq is never reused"
        );
        assert_eq!(count("PRAGMA foreign_keys"), 1);
        let insert = |id: &str, hash: &str| {
            connection.execute(
                "INSERT INTO objects (id, name, context_json, context_hash, current_version, created_at, updated_at, updated_by_id, updated_by_name) \
                 VALUES (?1, 'a', '{}', ?2, 'v', 't', 't', 'k', 'n')",
                [id, hash],
            )
        };
        insert("o4", "h2").expect("the same name in another context");
        insert("o5", "h1").expect_err("the same name in the same context");
        assert_eq!(count("SELECT seq FROM objects WHERE id = 'o4'"), 4);
    }
}
