//! Persistence: the only code that imports a database driver. Embedded SQLite by default (WAL,
//! `synchronous=FULL`, so an acknowledged write survives `kill -9` and power loss), or PostgreSQL
//! when `store.url` names one. Either way: one group-committing writer thread, reads on their own
//! connections, migrations in order, one file per aggregate, and every query written once against
//! [`sql::Sql`].

mod api_keys;
mod audit;
mod audit_chain;
mod audit_segments;
mod audit_sink;
mod byok;
mod changes;
mod idempotency;
mod key_watch;
mod leadership;
mod migrations;
mod object_list;
mod objects;
mod platform_keks;
mod portal;
mod postgres_url;
mod record_cache;
mod retention;
mod rewrap;
mod rotation;
mod sql;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

pub use crate::config::{Retention, StoreOptions};
pub use api_keys::{ApiKeyRecord, NewApiKey};
pub use audit::{AuditEvent, EventQuery};
pub use audit_chain::{
    ChainHead, ChainLink, ChainedFields, ExportQuery, GENESIS_HASH, StoredEvent, chain_of,
    event_hash, organization_of,
};
pub use audit_sink::{IndexPass, MAX_BACKLOG_BYTES};
pub use byok::{ByokFlag, ByokKeyRecord, ByokSnapshot, TenantKekRecord};
pub use changes::{Change, ChangeListener, LISTENER_APPLICATION_NAME, Revisions};
pub use idempotency::{ClaimOutcome, IdempotencyClaim, IdempotencyRecord, StoredResponse};
pub use leadership::{Attempt, Contender, Leadership};
pub use object_list::{ListPosition, ListQuery, ListedObject, Order};
pub use objects::{NewObject, NewVersion, ObjectRecord, VersionRecord};
pub use platform_keks::{KekCreationRefused, PlatformKekReservation};
pub use portal::{PortalLinkRecord, PortalSessionRecord};
pub use retention::Purged;
pub use rewrap::{RewrapCandidate, RewrapJobRecord};
pub use rotation::{PlatformKekRecord, RotationChange, RotationReading, TenantKekRotation};
pub use sql::{Dialect, PoolStats};

use sql::{PostgresConnector, PostgresWriteConnection, Sql, SqliteWriteConnection};

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
    /// A database failure that is neither of the above: the driver's description, which names
    /// the condition (an error code, a constraint) and never a stored value.
    #[error("database failure: {0}")]
    Database(String),
    /// A list cursor names a row that no longer exists (purged by retention) or never did.
    #[error("the cursor names an event that no longer exists; list again from a time range")]
    UnknownCursor,
    /// Text the database cannot hold (PostgreSQL refuses U+0000): the caller's input.
    #[error("text containing U+0000 cannot be stored or searched")]
    UnstorableText,
    /// The database was migrated by a newer broker; this one would misread it.
    #[error(
        "the database schema is version {database}, newer than this broker's version {binary}: \
         run a broker release that knows schema {database}, or point this one at another database"
    )]
    SchemaTooNew { database: i64, binary: i64 },
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
                    _ => StoreError::Database(text),
                }
            }
            None => StoreError::Database(text),
        }
    }
}

/// The database. One connection serialises writes (SQLite allows one writer anyway; on
/// PostgreSQL it keeps group commit and its ordering); every call runs on a blocking thread so the
/// async runtime never waits on the database.
#[derive(Clone)]
pub struct Store {
    writer: writer::Writer,
    readers: Readers,
    records: Arc<record_cache::RecordCache>,
    retention: Retention,
    /// Where the change listener connects (PostgreSQL only: other processes share the database).
    listen: Option<Arc<changes::ListenTarget>>,
    /// A small pool of its own for the reads that keep cached state coherent (PostgreSQL only):
    /// see [`Store::reserved`].
    reserved: Option<PostgresConnector>,
    /// Where the audit writer's events go (`audit_sink.rs`).
    audit: audit_sink::AuditSink,
}

/// Whether an opened SQLite store appends to the audit log beside it (a broker) or only
/// inspects it (`audit verify`, which may run beside a broker holding the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuditLogUse {
    Append,
    Inspect,
}

/// Where reads run.
#[derive(Clone)]
enum Readers {
    /// Read-only connections: WAL lets them read a consistent snapshot while the writer commits,
    /// so reads never queue behind writes (or their fsync). `None` once the store is closed.
    Sqlite {
        connections: Arc<[Mutex<Option<Connection>>]>,
        next: Arc<AtomicUsize>,
    },
    /// The pool the writer's connection also comes from.
    Postgres(PostgresConnector),
}

/// SQLite read-only connections.
const SQLITE_READERS: usize = 4;

/// Connections of [`Store::reserved`]'s pool: the coherence worker's check and a reload at once.
const RESERVED_CONNECTIONS: usize = 2;

fn configure(connection: &Connection) -> Result<(), StoreError> {
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

impl Store {
    /// The store `options` select: PostgreSQL when they carry a URL, else the SQLite file
    /// `broker.db` in `data_dir`.
    pub async fn open_configured(
        data_dir: &Path,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        match options.url.clone() {
            Some(url) => Self::open_postgres(&url.0, &options).await,
            None => Self::open_with(&data_dir.join("broker.db"), options).await,
        }
    }

    /// The configured store, to read the audit trail beside a running broker: on SQLite it does
    /// not take the audit log (a broker holds it), and records nothing.
    pub async fn inspect_configured(
        data_dir: &Path,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        match options.url.clone() {
            Some(url) => Self::open_postgres(&url.0, &options).await,
            None => {
                Self::open_sqlite(&data_dir.join("broker.db"), options, AuditLogUse::Inspect).await
            }
        }
    }

    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default()).await
    }

    /// The embedded SQLite file at `path`, and its audit log beside it.
    pub async fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        Self::open_sqlite(path, options, AuditLogUse::Append).await
    }

    async fn open_sqlite(
        path: &Path,
        options: StoreOptions,
        log_use: AuditLogUse,
    ) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let (writer, readers, audit) =
            tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| StoreError::Internal(e.to_string()))?;
                }
                let mut writer = Connection::open(&path)?;
                writer.pragma_update(None, "journal_mode", "WAL")?;
                // FULL: a commit is on disk before the write is acknowledged (survives power loss).
                writer.pragma_update(None, "synchronous", "FULL")?;
                configure(&writer)?;
                migrations::apply_sqlite(&mut writer)?;
                if let Some(pages) = options.max_page_count {
                    // A connection setting, so only the writer (the one that grows the file) needs it.
                    writer.pragma_update(None, "max_page_count", pages as i64)?;
                }
                let readers = (0..SQLITE_READERS)
                    .map(|_| {
                        let reader = Connection::open_with_flags(
                            &path,
                            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                        )?;
                        configure(&reader)?;
                        Ok(Mutex::new(Some(reader)))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                let log_dir = audit_segments::directory_for(&path);
                let audit = match log_use {
                    AuditLogUse::Append => {
                        let checkpoint: i64 = writer.query_row(
                            "SELECT indexed_through FROM audit_log_checkpoint WHERE id = 1",
                            [],
                            |row| row.get(0),
                        )?;
                        let checkpoint = u64::try_from(checkpoint).unwrap_or(0);
                        audit_sink::AuditSink::Segments(Arc::new(audit_sink::SegmentSink::open(
                            &log_dir, checkpoint,
                        )?))
                    }
                    AuditLogUse::Inspect => {
                        audit_sink::AuditSink::Inspecting { log: Some(log_dir) }
                    }
                };
                Ok((writer, readers, audit))
            })
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))??;
        Ok(Self {
            writer: writer::Writer::start(
                SqliteWriteConnection(writer),
                audit_chain::ChainSealer::default(),
            )?,
            readers: Readers::Sqlite {
                connections: readers.into(),
                next: Arc::new(AtomicUsize::new(0)),
            },
            records: Arc::new(record_cache::RecordCache::new()),
            retention: options.retention,
            listen: None,
            reserved: None,
            audit,
        })
    }

    /// PostgreSQL at `url`: migrates it (under the migration lock) before anything else runs.
    async fn open_postgres(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let target = postgres_url::PostgresTarget::new(url, options)?;
        let connector = PostgresConnector::new(&target)?;
        let migrating = connector.clone();
        tokio::task::spawn_blocking(move || {
            // Its own connection, closed afterwards: waiting for another broker's migration, or
            // building an index on a large table, may take longer than any statement bound.
            let mut sql = migrating.dedicated()?.unbounded();
            sql.batch("SET statement_timeout = 0")?;
            migrations::apply_postgres(&mut sql)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        let reserved = PostgresConnector::new(&target.with_pool_size(RESERVED_CONNECTIONS))?;
        let audit_connection = PostgresConnector::new(&target.with_pool_size(1))?;
        Ok(Self {
            writer: writer::Writer::start(
                PostgresWriteConnection::new(connector.clone()),
                audit_chain::ChainSealer::default(),
            )?,
            readers: Readers::Postgres(connector),
            records: Arc::new(record_cache::RecordCache::disabled()),
            retention: options.retention,
            listen: Some(Arc::new(changes::ListenTarget::new(&target))),
            reserved: Some(reserved),
            audit: audit_sink::AuditSink::Postgres(writer::Writer::start(
                PostgresWriteConnection::new(audit_connection),
                writer::NoHook,
            )?),
        })
    }

    /// This store with its reads on connections reserved for coherence (the revision checks and
    /// the routing view's reloads), so requests saturating the pool never starve them: a broker
    /// that cannot check refuses keyed requests (fail closed), which must mean the database is
    /// in trouble, not merely busy. Writes still go through the one writer. On SQLite, itself.
    pub fn reserved(&self) -> Store {
        let mut store = self.clone();
        if let Some(reserved) = &self.reserved {
            store.readers = Readers::Postgres(reserved.clone());
        }
        store
    }

    /// Which database this store runs on.
    pub fn dialect(&self) -> Dialect {
        match self.readers {
            Readers::Sqlite { .. } => Dialect::Sqlite,
            Readers::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs a write through the group-committing writer: in its own savepoint, acknowledged only
    /// once its group's transaction is committed.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Sql) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.run(work).await
    }

    /// Runs a read on a read connection (SQLite: round robin; PostgreSQL: from the pool).
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Sql) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        // On PostgreSQL the connection is awaited here, so waiting for a free one (or for one to
        // open after a restart) holds no blocking thread.
        let pooled = match &readers {
            Readers::Postgres(connector) => Some(connector.checkout().await?),
            Readers::Sqlite { .. } => None,
        };
        tokio::task::spawn_blocking(move || match readers {
            Readers::Sqlite { connections, next } => {
                let index = next.fetch_add(1, Ordering::Relaxed) % connections.len();
                let mut guard = connections[index]
                    .lock()
                    .map_err(|_| StoreError::Internal("database lock poisoned".into()))?;
                let reader = guard
                    .as_mut()
                    .ok_or_else(|| StoreError::Unavailable("the database is closed".into()))?;
                work(reader)
            }
            Readers::Postgres(_) => match pooled {
                Some(mut sql) => work(&mut sql),
                None => Err(StoreError::Internal("no PostgreSQL connection".into())),
            },
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Shutdown's last step: commits every queued write, joins the writer thread (closing its
    /// connection) and closes the readers. Later calls fail; closing twice is harmless.
    pub async fn close(&self) -> Result<(), StoreError> {
        match &self.audit {
            audit_sink::AuditSink::Segments(sink) => sink.close(),
            audit_sink::AuditSink::Postgres(writer) => writer.close().await?,
            audit_sink::AuditSink::Inspecting { .. } => {}
        }
        self.writer.close().await?;
        match &self.readers {
            Readers::Sqlite { connections, .. } => {
                for reader in connections.iter() {
                    let taken = reader
                        .lock()
                        .map_err(|_| StoreError::Internal("database lock poisoned".into()))?
                        .take();
                    drop(taken);
                }
            }
            Readers::Postgres(connector) => connector.close(),
        }
        Ok(())
    }

    /// Whether `close` has joined the writer thread.
    pub fn is_closed(&self) -> bool {
        self.writer.has_joined()
    }

    /// Readiness: the database answers a trivial query.
    /// The request pool's use (PostgreSQL; SQLite has a fixed set of connections: `None`).
    pub fn pool_stats(&self) -> Option<PoolStats> {
        match &self.readers {
            Readers::Postgres(connector) => Some(connector.pool_stats()),
            Readers::Sqlite { .. } => None,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query("SELECT 1", &[]).map(|_| ())).await
    }
}
