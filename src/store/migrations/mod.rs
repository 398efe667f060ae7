//! Schema migrations: versioned, forward-only, applied at start. Both backends share the version
//! numbering, so one number names one schema; a database whose version is newer than this binary
//! knows is refused (an older binary would misread it). Never edit a released migration: append
//! one to both lists.

mod postgres;
mod sqlite;

pub(super) use postgres::apply as apply_postgres;
pub(super) use sqlite::apply as apply_sqlite;

use super::StoreError;

/// The PostgreSQL channel every committed BYOK or API-key change is announced on (version 11's
/// triggers send to it, `store::changes` listens to it).
pub(super) const CHANGE_CHANNEL: &str = "byok_broker_changes";

/// The schema version this binary writes and understands.
pub(super) const LATEST: i64 = sqlite::MIGRATIONS.len() as i64;

/// Refuses a database a newer broker has migrated.
fn refuse_newer(database: i64) -> Result<(), StoreError> {
    if database > LATEST {
        return Err(StoreError::SchemaTooNew {
            database,
            binary: LATEST,
        });
    }
    Ok(())
}
