//! Persistence: the only code that imports the database driver. Embedded SQLite by default (WAL,
//! `synchronous=FULL`, so an acknowledged write survives `kill -9` and power loss): one
//! group-committing writer thread, four read-only connections, migrations in order, one file per
//! aggregate. SQL stays portable so a PostgreSQL backend is an addition.

mod api_keys;
mod audit;
mod byok;
mod idempotency;
mod migrations;
mod object_list;
mod objects;
mod platform_keks;
mod record_cache;
mod rewrap;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

pub use crate::config::limits::StoreOptions;
pub use api_keys::{ApiKeyRecord, NewApiKey};
pub use audit::{AuditEvent, EventQuery};
pub use byok::{ByokFlag, ByokKeyRecord, ByokSnapshot, TenantKekRecord};
pub use idempotency::{ClaimOutcome, IdempotencyClaim, IdempotencyRecord, StoredResponse};
pub use object_list::{ListPosition, ListQuery, ListedObject, Order};
pub use objects::{NewObject, NewVersion, ObjectRecord, VersionRecord};
pub use platform_keks::{KekCreationRefused, PlatformKekReservation};
pub use rewrap::{RewrapCandidate, RewrapJobRecord};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// Names the thing that was not found ("object", "API key", "BYOK key", ...).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("an object with this name already exists")]
    NameTaken,
    #[error("version check failed: the current version is {current}")]
    VersionMismatch { current: String },
    /// Names what already exists ("a BYOK key for this match_context", ...).
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error("{0} objects still depend on it")]
    InUse(u64),
    #[error("the idempotency claim was taken over by another request")]
    IdempotencyClaimLost,
    /// The disk (or `store.max_page_count`) is full; SQLite's own message. Clears once space is freed.
    #[error("storage full: {0}")]
    Full(String),
    /// The database file cannot be read or written (I/O error, cannot open); SQLite's own message.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A SQLite failure that is neither of the above; keeps rusqlite's error as its source (shared,
    /// because the group-commit writer hands one failure to every waiter of the batch).
    #[error("database failure")]
    Database(#[source] Arc<rusqlite::Error>),
    #[error("storage failure: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        // SQLite's message names the condition and never a value, so it may be logged as is.
        let text = e.to_string();
        match e.sqlite_error() {
            Some(failure) => {
                let text = format!("{text} (SQLite code {})", failure.extended_code);
                match failure.code {
                    ErrorCode::DiskFull => StoreError::Full(text),
                    ErrorCode::SystemIoFailure | ErrorCode::CannotOpen => {
                        StoreError::Unavailable(text)
                    }
                    _ => StoreError::Database(Arc::new(e)),
                }
            }
            None => StoreError::Database(Arc::new(e)),
        }
    }
}

/// The database. One connection serialises writes (SQLite allows one writer anyway); every call
/// runs on the blocking pool so the async runtime never waits on disk.
/// Read-only connections: WAL lets them read a consistent snapshot while the writer commits,
/// so reads never queue behind writes (or their fsync).
const READERS: usize = 4;

#[derive(Clone)]
pub struct Store {
    writer: writer::Writer,
    /// `None` once the store is closed.
    readers: Arc<[Mutex<Option<Connection>>]>,
    next_reader: Arc<AtomicUsize>,
    records: Arc<record_cache::RecordCache>,
}

fn configure(connection: &Connection) -> Result<(), StoreError> {
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

impl Store {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default()).await
    }

    pub async fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let (writer, readers) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Internal(e.to_string()))?;
            }
            let mut writer = Connection::open(&path)?;
            writer.pragma_update(None, "journal_mode", "WAL")?;
            // FULL: a commit is on disk before the write is acknowledged (survives power loss).
            writer.pragma_update(None, "synchronous", "FULL")?;
            configure(&writer)?;
            migrations::apply(&mut writer)?;
            if let Some(pages) = options.max_page_count {
                // A connection setting, so only the writer (the one that grows the file) needs it.
                writer.pragma_update(None, "max_page_count", pages as i64)?;
            }
            let readers = (0..READERS)
                .map(|_| {
                    let reader = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    configure(&reader)?;
                    Ok(Mutex::new(Some(reader)))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok((writer, readers))
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        Ok(Self {
            writer: writer::Writer::start(writer)?,
            readers: readers.into(),
            next_reader: Arc::new(AtomicUsize::new(0)),
            records: Arc::new(record_cache::RecordCache::new()),
        })
    }

    /// Runs a write through the group-committing writer: in its own savepoint, acknowledged only
    /// once its group's transaction is committed.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Savepoint<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.run(work).await
    }

    /// Runs a read on one of the read-only connections (round robin).
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let guard = readers[index]
                .lock()
                .map_err(|_| StoreError::Internal("database lock poisoned".into()))?;
            let reader = guard
                .as_ref()
                .ok_or_else(|| StoreError::Unavailable("the database is closed".into()))?;
            work(reader)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Shutdown's last step: commits every queued write, joins the writer thread (closing its
    /// connection) and closes the readers. Later calls fail; closing twice is harmless.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.writer.close().await?;
        for reader in self.readers.iter() {
            let taken = reader
                .lock()
                .map_err(|_| StoreError::Internal("database lock poisoned".into()))?
                .take();
            drop(taken);
        }
        Ok(())
    }

    /// Whether `close` has joined the writer thread.
    pub fn is_closed(&self) -> bool {
        self.writer.has_joined()
    }

    /// Readiness: the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}
