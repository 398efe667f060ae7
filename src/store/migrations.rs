//! Schema migrations, applied in order inside one transaction each; `PRAGMA user_version` records
//! how many have run. Never edit a released migration: append a new one.

use rusqlite::Connection;

use super::StoreError;

const MIGRATIONS: &[&str] = &[
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
];

pub(super) fn apply(connection: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
        let tx = connection.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
