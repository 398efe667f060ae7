//! PostgreSQL's migrations. The first is a baseline: the schema SQLite reaches at the same version
//! (PostgreSQL support began there), so the two lists share one numbering from then on. Applied
//! under a session advisory lock, so brokers starting together migrate once: the first takes the
//! lock and migrates, the others wait and then find nothing to do. `schema_version` records the
//! version, in the transaction of each migration.
//!
//! Types: integers are BIGINT (the store binds 64-bit integers), blobs BYTEA, booleans stay 0/1
//! integers as on SQLite. Text columns use the "C" collation: ordering and comparison are by
//! bytes, as on SQLite, so list order and cursors mean the same on both backends.

use crate::store::StoreError;
use crate::store::sql::{Sql, args};

/// The advisory lock key that serialises migrations ("byokmigr").
const MIGRATION_LOCK: i64 = 0x6279_6f6b_6d69_6772;

const MIGRATIONS: &[(i64, &str)] = &[
    (8, BASELINE),
    // Retention: the purge finds expired idempotency records and old audit events by age.
    (
        9,
        "CREATE INDEX idempotency_created ON idempotency(created_at); \
         CREATE INDEX audit_events_created ON audit_events(created_at);",
    ),
    // Several instances: rewrap job leases, and the key-state watcher's platform KEK findings
    // (see the SQLite list).
    (
        10,
        r#"
ALTER TABLE rewrap_jobs ADD COLUMN lease_owner TEXT COLLATE "C";
ALTER TABLE rewrap_jobs ADD COLUMN lease_expires_ms BIGINT NOT NULL DEFAULT 0;
CREATE TABLE platform_kek_watch (
    kek_id            TEXT COLLATE "C" PRIMARY KEY,
    failure           TEXT COLLATE "C",
    cached_until_ms   BIGINT NOT NULL DEFAULT 0
);
"#,
    ),
    (11, COHERENCE),
    (12, ROUTING_CHANGES_ONLY),
    // A CMK's state sequence (see the SQLite list).
    (
        13,
        "ALTER TABLE tenant_keks ADD COLUMN state_seq BIGINT NOT NULL DEFAULT 0;",
    ),
    (14, KEK_ROTATION),
    (15, PORTAL),
    (16, AUDIT_CHAIN),
    (17, AUDIT_LOG),
];

/// Version 17: the SQLite audit log's checkpoint (see the SQLite migration of the same number).
/// Unused on PostgreSQL, where the audit writer inserts events itself; created so one schema
/// number means one set of tables on both backends.
const AUDIT_LOG: &str = r#"
CREATE TABLE audit_log_checkpoint (
    id               BIGINT PRIMARY KEY CHECK (id = 1),
    indexed_through  BIGINT NOT NULL
);
INSERT INTO audit_log_checkpoint (id, indexed_through) VALUES (1, 0);
"#;

/// Version 16: the audit hash chain; see the SQLite migration of the same number.
const AUDIT_CHAIN: &str = r#"
ALTER TABLE audit_events ADD COLUMN chain_position BIGINT;
ALTER TABLE audit_events ADD COLUMN chain_previous TEXT COLLATE "C";
ALTER TABLE audit_events ADD COLUMN chain_hash TEXT COLLATE "C";
CREATE INDEX audit_events_chain ON audit_events(organization_id, chain_position);
CREATE TABLE audit_chain_heads (
    chain     TEXT COLLATE "C" PRIMARY KEY,
    position  BIGINT NOT NULL,
    hash      TEXT COLLATE "C" NOT NULL
);
CREATE TABLE audit_chain_purges (
    chain     TEXT COLLATE "C" NOT NULL,
    position  BIGINT NOT NULL,
    hash      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (chain, position)
);
CREATE TABLE audit_chain_genesis (
    id                 BIGINT PRIMARY KEY CHECK (id = 1),
    unchained_through  BIGINT NOT NULL
);
INSERT INTO audit_chain_genesis (id, unchained_through)
    SELECT 1, COALESCE(MAX(seq), 0) FROM audit_events;
"#;

/// Version 15: the admin portal's links and sessions (see the SQLite list).
const PORTAL: &str = r#"
CREATE TABLE portal_links (
    token_hash       TEXT COLLATE "C" PRIMARY KEY,
    organization_id  TEXT COLLATE "C" NOT NULL,
    intent           TEXT COLLATE "C" NOT NULL,
    return_url       TEXT COLLATE "C",
    success_url      TEXT COLLATE "C",
    expires_ms       BIGINT NOT NULL,
    used_ms          BIGINT
);
CREATE TABLE portal_sessions (
    id_hash          TEXT COLLATE "C" PRIMARY KEY,
    id               TEXT COLLATE "C" NOT NULL UNIQUE,
    organization_id  TEXT COLLATE "C" NOT NULL,
    return_url       TEXT COLLATE "C",
    success_url      TEXT COLLATE "C",
    created_ms       BIGINT NOT NULL,
    last_seen_ms     BIGINT NOT NULL,
    ended_ms         BIGINT
);
CREATE INDEX portal_links_expires ON portal_links(expires_ms);
CREATE INDEX portal_sessions_last_seen ON portal_sessions(last_seen_ms);
"#;

/// Version 14: KEK rotation (see the SQLite list).
const KEK_ROTATION: &str = r#"
ALTER TABLE platform_keks ADD COLUMN rotation_period_days BIGINT;
ALTER TABLE platform_keks ADD COLUMN rotation_enabled_at TEXT COLLATE "C";
ALTER TABLE platform_keks ADD COLUMN rotated_at TEXT COLLATE "C";
CREATE TABLE tenant_kek_rotation (
    key_arn        TEXT COLLATE "C" PRIMARY KEY,
    enabled        BIGINT,
    period_days    BIGINT,
    next_rotation  TEXT COLLATE "C",
    error          TEXT COLLATE "C",
    checked_at     TEXT COLLATE "C" NOT NULL,
    changed_at     TEXT COLLATE "C"
);
"#;

/// Version 12: a watcher check that finds a CMK as it was updates only `last_checked_at`; that is
/// no routing change, and bumping the revision (and notifying every broker) for it made each
/// broker reload its routing view after every check of every key.
const ROUTING_CHANGES_ONLY: &str = r#"
DROP TRIGGER tenant_keks_change ON tenant_keks;
CREATE TRIGGER tenant_keks_change AFTER INSERT OR DELETE ON tenant_keks
    FOR EACH ROW EXECUTE FUNCTION byok_revision_bump();
CREATE TRIGGER tenant_keks_routing_update AFTER UPDATE ON tenant_keks
    FOR EACH ROW
    WHEN ((OLD.key_arn, OLD.byok_key_id, OLD.region, OLD.role_arn, OLD.external_id, OLD.available,
           OLD.reason, OLD.added_at)
          IS DISTINCT FROM
          (NEW.key_arn, NEW.byok_key_id, NEW.region, NEW.role_arn, NEW.external_id, NEW.available,
           NEW.reason, NEW.added_at))
    EXECUTE FUNCTION byok_revision_bump();
"#;

/// Version 11: coherence between brokers on one database. The API-key revision (bumped in the
/// transaction of every change to a key, as `byok_revision` is for BYOK), and a `pg_notify` in
/// both bump functions: sent in the changing transaction, so delivered only on its commit, never
/// ahead of the data. The payload says which cache is stale; it carries no key or value.
const COHERENCE: &str = r#"
CREATE TABLE api_key_revision (
    id        BIGINT PRIMARY KEY CHECK (id = 1),
    revision  BIGINT NOT NULL
);
INSERT INTO api_key_revision (id, revision) VALUES (1, 1);
CREATE OR REPLACE FUNCTION byok_revision_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE byok_revision SET revision = revision + 1;
    PERFORM pg_notify('byok_broker_changes', 'byok');
    RETURN NULL;
END
$$;
CREATE FUNCTION api_key_revision_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE api_key_revision SET revision = revision + 1;
    PERFORM pg_notify('byok_broker_changes', 'api_keys');
    RETURN NULL;
END
$$;
CREATE TRIGGER api_keys_change AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_key_revision_bump();
"#;

const BASELINE: &str = r#"
CREATE TABLE objects (
    seq              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id               TEXT COLLATE "C" NOT NULL UNIQUE,
    name             TEXT COLLATE "C" NOT NULL,
    context_json     TEXT COLLATE "C" NOT NULL,
    context_hash     TEXT COLLATE "C" NOT NULL,
    current_version  TEXT COLLATE "C" NOT NULL,
    created_at       TEXT COLLATE "C" NOT NULL,
    updated_at       TEXT COLLATE "C" NOT NULL,
    updated_by_id    TEXT COLLATE "C" NOT NULL,
    updated_by_name  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX objects_updated_at ON objects(updated_at);
CREATE UNIQUE INDEX objects_name_per_context ON objects(name, context_hash);
CREATE INDEX objects_created ON objects(created_at, id);
CREATE TABLE versions (
    id          TEXT COLLATE "C" PRIMARY KEY,
    object_id   TEXT COLLATE "C" NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL,
    etag        TEXT COLLATE "C" NOT NULL,
    kek_id      TEXT COLLATE "C" NOT NULL,
    sealed      BYTEA NOT NULL,
    UNIQUE (object_id, seq)
);
CREATE INDEX versions_kek ON versions(kek_id);
CREATE INDEX versions_object ON versions(object_id);
CREATE TABLE api_keys (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    role        TEXT COLLATE "C" NOT NULL CHECK (role IN ('app', 'admin')),
    scope_json  TEXT COLLATE "C",
    key_hash    BYTEA NOT NULL UNIQUE,
    created_at  TEXT COLLATE "C" NOT NULL,
    revoked_at  TEXT COLLATE "C"
);
CREATE TABLE audit_events (
    seq              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id               TEXT COLLATE "C" NOT NULL UNIQUE,
    event            TEXT COLLATE "C" NOT NULL,
    organization_id  TEXT COLLATE "C",
    data_json        TEXT COLLATE "C" NOT NULL,
    created_at       TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_events_filter ON audit_events(event, organization_id, created_at);
CREATE TABLE idempotency (
    api_key_id    TEXT COLLATE "C" NOT NULL,
    key           TEXT COLLATE "C" NOT NULL,
    request_hash  BYTEA NOT NULL,
    status        BIGINT NOT NULL,
    body          TEXT COLLATE "C" NOT NULL,
    created_at    TEXT COLLATE "C" NOT NULL,
    claim_token   TEXT COLLATE "C",
    PRIMARY KEY (api_key_id, key)
);
CREATE TABLE byok_keys (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    match_context_json  TEXT COLLATE "C" NOT NULL,
    match_context_hash  TEXT COLLATE "C" NOT NULL UNIQUE,
    provider            TEXT COLLATE "C" NOT NULL,
    current_kek         TEXT COLLATE "C" NOT NULL,
    admin_disabled      BIGINT NOT NULL DEFAULT 0,
    created_at          TEXT COLLATE "C" NOT NULL,
    updated_at          TEXT COLLATE "C" NOT NULL,
    retired             BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE tenant_keks (
    key_arn         TEXT COLLATE "C" PRIMARY KEY,
    byok_key_id     TEXT COLLATE "C" NOT NULL REFERENCES byok_keys(id) ON DELETE CASCADE,
    region          TEXT COLLATE "C",
    role_arn        TEXT COLLATE "C",
    external_id     TEXT COLLATE "C",
    available       BIGINT NOT NULL DEFAULT 1,
    reason          TEXT COLLATE "C",
    last_checked_at TEXT COLLATE "C",
    added_at        TEXT COLLATE "C" NOT NULL
);
CREATE INDEX tenant_keks_binding ON tenant_keks(byok_key_id);
CREATE TABLE rewrap_jobs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    source_kind      TEXT COLLATE "C" NOT NULL CHECK (source_kind IN ('byok_key_id', 'kek_id')),
    source_id        TEXT COLLATE "C" NOT NULL,
    source_keks_json TEXT COLLATE "C" NOT NULL,
    state            TEXT COLLATE "C" NOT NULL CHECK (state IN ('running', 'completed', 'failed', 'cancelled')),
    total            BIGINT NOT NULL,
    done             BIGINT NOT NULL DEFAULT 0,
    skipped          BIGINT NOT NULL DEFAULT 0,
    failed           BIGINT NOT NULL DEFAULT 0,
    checkpoint_seq   BIGINT NOT NULL DEFAULT 0,
    started_at       TEXT COLLATE "C" NOT NULL,
    finished_at      TEXT COLLATE "C",
    error            TEXT COLLATE "C"
);
CREATE TABLE rewrap_failures (
    job_id     TEXT COLLATE "C" NOT NULL REFERENCES rewrap_jobs(id) ON DELETE CASCADE,
    object_id  TEXT COLLATE "C" NOT NULL,
    reason     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (job_id, object_id)
);
CREATE TABLE byok_external_ids (
    organization_id  TEXT COLLATE "C" PRIMARY KEY,
    external_id      TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at       TEXT COLLATE "C" NOT NULL
);
CREATE TABLE platform_keks (
    id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    creator       TEXT COLLATE "C",
    kek_id        TEXT COLLATE "C" UNIQUE,
    context_hash  TEXT COLLATE "C" NOT NULL,
    created_unix  BIGINT NOT NULL
);
CREATE INDEX platform_keks_creator ON platform_keks(creator, created_unix);
CREATE TABLE byok_revision (
    id        BIGINT PRIMARY KEY CHECK (id = 1),
    revision  BIGINT NOT NULL
);
INSERT INTO byok_revision (id, revision) VALUES (1, 1);
CREATE FUNCTION byok_revision_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE byok_revision SET revision = revision + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER byok_keys_change AFTER INSERT OR UPDATE OR DELETE ON byok_keys
    FOR EACH ROW EXECUTE FUNCTION byok_revision_bump();
CREATE TRIGGER tenant_keks_change AFTER INSERT OR UPDATE OR DELETE ON tenant_keks
    FOR EACH ROW EXECUTE FUNCTION byok_revision_bump();
"#;

/// Brings the database to [`super::LATEST`], holding the migration lock throughout.
pub(in crate::store) fn apply(sql: &mut dyn Sql) -> Result<(), StoreError> {
    sql.execute("SELECT pg_advisory_lock(?1)", args![MIGRATION_LOCK])?;
    let migrated = apply_pending(sql);
    // Session-level: held until released or the connection closes, whatever happened above.
    let unlocked = sql.execute("SELECT pg_advisory_unlock(?1)", args![MIGRATION_LOCK]);
    migrated?;
    unlocked.map(|_| ())
}

fn apply_pending(sql: &mut dyn Sql) -> Result<(), StoreError> {
    sql.batch(
        "CREATE TABLE IF NOT EXISTS schema_version (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)",
    )?;
    let current: i64 =
        match sql.query_opt("SELECT version FROM schema_version WHERE id = 1", &[])? {
            Some(row) => row.get(0)?,
            None => 0,
        };
    super::refuse_newer(current)?;
    for (version, migration) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        sql.batch("BEGIN")?;
        let applied = sql.batch(migration).and_then(|()| {
            sql.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                args![version],
            )
        });
        match applied {
            Ok(_) => sql.batch("COMMIT")?,
            Err(why) => {
                let _ = sql.batch("ROLLBACK");
                return Err(why);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_end_at_the_same_schema_version() {
        assert_eq!(
            MIGRATIONS.last().map(|(v, _)| *v),
            Some(super::super::LATEST)
        );
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn both_revision_bumps_notify_on_the_channel_the_listener_listens_to() {
        let notify = format!("pg_notify('{}', ", super::super::CHANGE_CHANNEL);
        assert_eq!(COHERENCE.matches(&notify).count(), 2, "{COHERENCE}");
    }
}
