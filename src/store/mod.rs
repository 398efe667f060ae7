//! Persistence: the only code that imports the database driver. Embedded SQLite by default (WAL,
//! `synchronous=FULL`, so an acknowledged write survives `kill -9` and power loss), migrations in
//! order, one file per aggregate. SQL stays portable so a PostgreSQL backend is an addition.

mod api_keys;
mod audit;
mod byok;
mod idempotency;
mod migrations;
mod objects;
mod rewrap;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

pub use api_keys::{ApiKeyRecord, NewApiKey};
pub use audit::{AuditEvent, EventQuery};
pub use byok::{ByokKeyRecord, TenantKekRecord};
pub use idempotency::StoredResponse;
pub use objects::{
    ListQuery, ListedObject, NewObject, NewVersion, ObjectRecord, Order, VersionRecord,
};
pub use rewrap::{RewrapCandidate, RewrapJobRecord};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("an object with this name already exists")]
    NameTaken,
    #[error("version check failed: the current version is {current}")]
    VersionMismatch { current: String },
    #[error("already exists")]
    AlreadyExists,
    #[error("{0} objects still depend on it")]
    InUse(u64),
    #[error("storage failure: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Internal(e.to_string())
    }
}

/// The database. One connection serialises writes (SQLite allows one writer anyway); every call
/// runs on the blocking pool so the async runtime never waits on disk.
#[derive(Clone)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
}

impl Store {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let connection = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Internal(e.to_string()))?;
            }
            let mut connection = Connection::open(&path)?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            connection.pragma_update(None, "synchronous", "FULL")?;
            connection.pragma_update(None, "foreign_keys", "ON")?;
            connection.busy_timeout(std::time::Duration::from_secs(5))?;
            migrations::apply(&mut connection)?;
            Ok(connection)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs `work` with the connection on the blocking pool.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut guard = connection
                .lock()
                .map_err(|_| StoreError::Internal("database lock poisoned".into()))?;
            work(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Readiness: the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}
