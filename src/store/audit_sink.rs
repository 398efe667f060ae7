//! Where the audit writer's events become durable, off the path object writes take.
//!
//! - SQLite: the segment log (`audit_segments.rs`): one write and one `fdatasync` per batch, no
//!   index; the indexer ([`Store::index_audit_log`]) moves events into `audit_events`, chained,
//!   a few thousand per transaction, with the log checkpoint in the same transaction.
//! - PostgreSQL: a connection of its own (not the object writer's), one transaction per batch
//!   that inserts the events already chained, many rows per statement.
//!
//! Backpressure, never a silent drop: while the log's unindexed backlog exceeds
//! [`MAX_BACKLOG_BYTES`] appends wait for the indexer (and fail after [`BACKLOG_PATIENCE`] with
//! its last failure, or 503, rather than hang); while the database is full (so the indexer cannot
//! move events) appends fail with that error (507 `storage_full`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::audit::AuditEvent;
use super::audit_chain::insert_chained;
use super::audit_segments::{self, SegmentLog};
use super::sql::args;
use super::writer::Writer;
use super::{Store, StoreError};

/// Unindexed bytes in the log at most before appends wait (about 150,000 read events).
pub const MAX_BACKLOG_BYTES: u64 = 64 * 1024 * 1024;
/// Events the indexer moves per transaction at most.
const INDEX_BATCH: usize = 4096;
/// How often a waiting append looks at the backlog again.
const BACKLOG_POLL: Duration = Duration::from_millis(2);
/// How long an append waits for the indexer to bring the backlog under its bound before it
/// fails (503 `storage_unavailable`, or the indexer's own failure) rather than hang.
const BACKLOG_PATIENCE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(super) enum AuditSink {
    Segments(Arc<SegmentSink>),
    /// The PostgreSQL audit connection, a writer of its own.
    Postgres(Writer),
    /// Opened to inspect (`audit verify`): appends are refused; the log's directory, if any, is
    /// only measured.
    Inspecting {
        log: Option<PathBuf>,
    },
}

pub(super) struct SegmentSink {
    /// `None` once the store is closed (which releases the log's lock for a later open).
    log: Mutex<Option<SegmentLog>>,
    dir: PathBuf,
    /// The log offset up to which appends are synced.
    appended: AtomicU64,
    /// The log offset up to which events are in `audit_events` (the checkpoint).
    indexed: AtomicU64,
    /// One index pass at a time.
    indexing: tokio::sync::Mutex<()>,
    /// Signalled after each append, for the indexer task.
    appended_signal: Notify,
    /// Set while the database is full: the indexer cannot move events, so appends fail.
    full: Mutex<Option<StoreError>>,
    /// Why the last index pass failed (cleared by one that succeeds): what an append that gave
    /// up waiting reports.
    last_failure: Mutex<Option<StoreError>>,
    /// [`MAX_BACKLOG_BYTES`] and [`BACKLOG_PATIENCE`] (tests make them small).
    max_backlog: u64,
    patience: Duration,
}

impl SegmentSink {
    pub fn open(dir: &Path, indexed_through: u64) -> Result<Self, StoreError> {
        let log = SegmentLog::open(dir, indexed_through)?;
        Ok(Self {
            appended: AtomicU64::new(log.end()),
            // At least the checkpoint: a fresh segment may start past it.
            indexed: AtomicU64::new(indexed_through),
            dir: log.dir().to_path_buf(),
            log: Mutex::new(Some(log)),
            indexing: tokio::sync::Mutex::new(()),
            appended_signal: Notify::new(),
            full: Mutex::new(None),
            last_failure: Mutex::new(None),
            max_backlog: MAX_BACKLOG_BYTES,
            patience: BACKLOG_PATIENCE,
        })
    }

    /// Runs `work` on the open log; fails once the store is closed.
    fn with_log<T>(
        &self,
        work: impl FnOnce(&mut SegmentLog) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        match log.as_mut() {
            Some(log) => work(log),
            None => Err(StoreError::Unavailable("the audit log is closed".into())),
        }
    }

    /// Closes the log file and releases its lock.
    pub fn close(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn backlog(&self) -> u64 {
        self.appended
            .load(Ordering::Acquire)
            .saturating_sub(self.indexed.load(Ordering::Acquire))
    }

    fn full(&self) -> Option<StoreError> {
        self.full
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_full(&self, why: Option<StoreError>) {
        *self.full.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    fn set_last_failure(&self, why: Option<StoreError>) {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// Why an append gave up waiting for the indexer.
    fn not_keeping_up(&self) -> StoreError {
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| {
                StoreError::Unavailable(
                    "the audit log's indexer is not keeping up; the request's event was not recorded"
                        .into(),
                )
            })
    }
}

/// How an index pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexPass {
    /// Events moved into `audit_events`.
    pub indexed: usize,
    /// Bytes of the log still to index after it.
    pub remaining: u64,
}

impl Store {
    /// Makes `events` durable (the SQLite log, or PostgreSQL's audit connection); returns once
    /// they are, or why they are not.
    pub async fn append_audit_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        match &self.audit {
            AuditSink::Segments(sink) => {
                if sink.full().is_some() {
                    // Space may have been freed since: the pass that succeeds clears it.
                    let _ = self.index_audit_log().await;
                    if let Some(why) = sink.full() {
                        return Err(why);
                    }
                }
                let waiting = tokio::time::Instant::now();
                while sink.backlog() >= sink.max_backlog {
                    if let Some(why) = sink.full() {
                        return Err(why);
                    }
                    if waiting.elapsed() >= sink.patience {
                        return Err(sink.not_keeping_up());
                    }
                    tokio::time::sleep(BACKLOG_POLL).await;
                }
                let appending = Arc::clone(sink);
                let end = tokio::task::spawn_blocking(move || {
                    appending.with_log(|log| log.append(&events))
                })
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))??;
                sink.appended.fetch_max(end, Ordering::AcqRel);
                sink.appended_signal.notify_one();
                Ok(())
            }
            AuditSink::Postgres(writer) => writer.run(move |tx| insert_chained(tx, &events)).await,
            AuditSink::Inspecting { .. } => Err(StoreError::Internal(
                "this store was opened to inspect the audit trail; it records nothing".into(),
            )),
        }
    }

    /// Moves up to a batch of events from the log into `audit_events` (SQLite; elsewhere there
    /// is nothing to move). The checkpoint moves in the same transaction. The pass runs as a task
    /// of its own: a caller dropped halfway (a listing's request timing out) must not leave its
    /// transaction committed and the in-memory checkpoint behind it.
    pub async fn index_audit_log(&self) -> Result<IndexPass, StoreError> {
        let store = self.clone();
        tokio::spawn(async move { store.index_pass().await })
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    async fn index_pass(&self) -> Result<IndexPass, StoreError> {
        let AuditSink::Segments(sink) = &self.audit else {
            return Ok(IndexPass {
                indexed: 0,
                remaining: 0,
            });
        };
        let _pass = sink.indexing.lock().await;
        let from = sink.indexed.load(Ordering::Acquire);
        let end = sink.appended.load(Ordering::Acquire);
        if from >= end {
            return Ok(IndexPass {
                indexed: 0,
                remaining: 0,
            });
        }
        let dir = sink.dir.clone();
        let read = tokio::task::spawn_blocking(move || {
            audit_segments::read_from(&dir, from, end, INDEX_BATCH)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?;
        let (events, next) = read.inspect_err(|why| sink.set_last_failure(Some(why.clone())))?;
        let indexed = events.len();
        if indexed > 0 {
            let moved = self
                .run(move |tx| {
                    insert_chained(tx, &events)?;
                    let moved = tx.execute(
                        "UPDATE audit_log_checkpoint SET indexed_through = ?1 WHERE id = 1 AND indexed_through <= ?2",
                        args![next, from],
                    )?;
                    if moved != 1 {
                        return Err(StoreError::Internal(
                            "the audit log checkpoint moved under the indexer".into(),
                        ));
                    }
                    Ok(())
                })
                .await;
            if let Err(why) = moved {
                if matches!(why, StoreError::Full(_)) {
                    sink.set_full(Some(why.clone()));
                }
                sink.set_last_failure(Some(why.clone()));
                return Err(why);
            }
            sink.set_full(None);
            sink.set_last_failure(None);
        }
        // Past a segment's header alone, nothing is written to the database: the next pass
        // starts there anyway.
        sink.indexed.fetch_max(next, Ordering::AcqRel);
        let removing = Arc::clone(sink);
        tokio::task::spawn_blocking(move || removing.with_log(|log| log.remove_indexed(next)))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))??;
        Ok(IndexPass {
            indexed,
            remaining: end.saturating_sub(next),
        })
    }

    /// Resolves after the next append to the log (never, without one).
    pub async fn audit_log_appended(&self) {
        match &self.audit {
            AuditSink::Segments(sink) => sink.appended_signal.notified().await,
            _ => std::future::pending().await,
        }
    }

    /// Bytes of events in this broker's SQLite audit log not yet in `audit_events` (`None` on
    /// PostgreSQL, or when inspecting).
    pub fn audit_log_backlog_now(&self) -> Option<u64> {
        match &self.audit {
            AuditSink::Segments(sink) => Some(sink.backlog()),
            _ => None,
        }
    }

    /// Like [`Store::audit_log_backlog_now`]; a store opened to inspect reads it from the files.
    pub async fn audit_log_backlog(&self) -> Result<Option<u64>, StoreError> {
        match &self.audit {
            AuditSink::Segments(sink) => Ok(Some(sink.backlog())),
            AuditSink::Postgres(_) | AuditSink::Inspecting { log: None } => Ok(None),
            AuditSink::Inspecting { log: Some(dir) } => {
                let dir = dir.clone();
                let checkpoint = self.audit_log_checkpoint().await?;
                let pending = tokio::task::spawn_blocking(move || {
                    audit_segments::pending_bytes(&dir, checkpoint)
                })
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))??;
                Ok(Some(pending))
            }
        }
    }

    async fn audit_log_checkpoint(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            c.query_one(
                "SELECT indexed_through FROM audit_log_checkpoint WHERE id = 1",
                &[],
            )?
            .get(0)
        })
        .await
    }
}

#[cfg(test)]
#[path = "audit_sink_tests.rs"]
mod tests;
