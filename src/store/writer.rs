//! The single database writer with group commit: a dedicated thread owns the write connection,
//! takes every write queued at the moment, runs each in its own savepoint inside one transaction,
//! and commits once (one fsync for the whole group). A write's result is delivered only after the
//! commit, so an acknowledged write is durable; a write that fails rolls back its savepoint alone.
//! The same on both backends: transaction control is plain SQL both databases speak.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::sql::{Dialect, Sql};

/// Writes committed together at most.
const GROUP: usize = 256;
/// Writes queued at most before callers wait.
const QUEUE: usize = 4096;

/// The writer thread's connection: opened again after a failure that broke it (PostgreSQL
/// restarted, network cut), so the store recovers by itself once the database is back.
pub(super) trait WriteConnection: Send + 'static {
    /// The connection, reconnecting first if the last one broke.
    fn connection(&mut self) -> Result<&mut dyn Sql, StoreError>;
    /// Called after a group failed: drop the connection if it no longer works.
    fn after_failure(&mut self);
}

/// Work every group does in its transaction besides its writes (the audit chain's seal).
pub(super) trait GroupHook: Send + 'static {
    /// After `BEGIN`, before the group's first write.
    fn begin(&mut self, sql: &mut dyn Sql) -> Result<(), StoreError>;
    /// After the group's last write, before `COMMIT`; a failure rolls the whole group back.
    fn before_commit(&mut self, sql: &mut dyn Sql) -> Result<(), StoreError>;
}

/// A writer whose groups do nothing besides their writes (the PostgreSQL audit connection's:
/// its events are chained as they are inserted).
pub(super) struct NoHook;

impl GroupHook for NoHook {
    fn begin(&mut self, _: &mut dyn Sql) -> Result<(), StoreError> {
        Ok(())
    }
    fn before_commit(&mut self, _: &mut dyn Sql) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Called once the group's commit is decided: `Ok` = committed, else why it did not.
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Runs one write inside its savepoint (or, when its group already failed, is given that
/// failure instead); reports how it ended and how to deliver it.
type Job = Box<
    dyn FnOnce(Result<&mut dyn Sql, StoreError>) -> (Result<(), StoreError>, Completion) + Send,
>;

enum Message {
    Write(Job),
    /// Commit what is queued, refuse what comes later, end the thread (closing the connection).
    Close,
}

#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Message>,
    /// `None` once the thread has been joined.
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Writer {
    /// Moves `connection` and `hook` into the writer thread.
    pub fn start(
        connection: impl WriteConnection,
        hook: impl GroupHook,
    ) -> Result<Self, StoreError> {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("byok-db-writer".into())
            .spawn(move || write_groups(connection, hook, receiver))
            .map_err(|e| StoreError::Internal(format!("cannot start the database writer: {e}")))?;
        Ok(Self {
            jobs,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Commits every write queued before the call, then joins the writer thread; later writes
    /// fail with "the database writer has stopped".
    pub async fn close(&self) -> Result<(), StoreError> {
        // Fails only if the thread already ended, which is what closing asks for.
        let _ = self.jobs.send(Message::Close).await;
        let thread = self
            .thread
            .lock()
            .map_err(|_| StoreError::Internal("database writer lock poisoned".into()))?
            .take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))?
                .map_err(|_| StoreError::Internal("the database writer panicked".into()))?;
        }
        Ok(())
    }

    /// Whether `close` has joined the writer thread.
    pub fn has_joined(&self) -> bool {
        self.thread.lock().is_ok_and(|thread| thread.is_none())
    }

    /// Runs `work` in the next group; resolves after that group committed (or failed, with the
    /// database's reason, e.g. [`StoreError::Full`]).
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Sql) -> Result<T, StoreError> + Send + 'static,
    {
        let (deliver, delivered) = oneshot::channel();
        let job: Job = Box::new(move |savepoint| {
            let result = savepoint.and_then(work);
            let ended = result.as_ref().map(|_| ()).map_err(Clone::clone);
            let completion: Completion = Box::new(move |committed| {
                let outcome = match (result, committed) {
                    (Ok(_), Err(why)) => Err(why),
                    (result, _) => result,
                };
                let _ = deliver.send(outcome);
            });
            (ended, completion)
        });
        self.jobs
            .send(Message::Write(job))
            .await
            .map_err(|_| StoreError::Internal("the database writer has stopped".into()))?;
        delivered
            .await
            .map_err(|_| StoreError::Internal("the write transaction did not commit".into()))?
    }
}

fn write_groups(
    mut connection: impl WriteConnection,
    mut hook: impl GroupHook,
    mut receiver: mpsc::Receiver<Message>,
) {
    let mut messages = Vec::with_capacity(GROUP);
    let mut group = Vec::with_capacity(GROUP);
    while receiver.blocking_recv_many(&mut messages, GROUP) > 0 {
        for message in messages.drain(..) {
            match message {
                Message::Write(job) => group.push(job),
                // What is already queued still runs (the loop ends once it is drained).
                Message::Close => receiver.close(),
            }
        }
        if group.is_empty() {
            continue;
        }
        let mut completions = Vec::with_capacity(group.len());
        let mut jobs = group.drain(..);
        let outcome = match connection.connection() {
            Ok(sql) => run_group(sql, &mut hook, &mut jobs, &mut completions),
            Err(why) => Err(why),
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, writes = completions.len() + jobs.len(), "write group not committed");
            connection.after_failure();
        }
        // Jobs the failed group never reached learn why, without running.
        for job in jobs {
            completions.push(
                job(Err(outcome.clone().err().unwrap_or_else(|| {
                    StoreError::Internal("the write group ended early".into())
                })))
                .1,
            );
        }
        for complete in completions {
            complete(outcome.clone());
        }
    }
}

/// One transaction for the whole group; a savepoint per write. Stops at the first failure of the
/// transaction itself: the database may have rolled it back on its own (SQLite may on
/// `SQLITE_FULL` or an I/O error; a PostgreSQL connection may be gone), and later writes would
/// otherwise run, and commit, outside any transaction. Rolling back to a savepoint is what fails
/// then, so that failure ends the group.
fn run_group(
    sql: &mut dyn Sql,
    hook: &mut impl GroupHook,
    jobs: &mut impl Iterator<Item = Job>,
    completions: &mut Vec<Completion>,
) -> Result<(), StoreError> {
    sql.batch("BEGIN")?;
    let outcome = hook
        .begin(sql)
        .and_then(|()| run_savepoints(sql, jobs, completions))
        .and_then(|()| hook.before_commit(sql));
    match outcome {
        Ok(()) => {
            if sql.dialect() == Dialect::Postgres {
                // With synchronous replication, a COMMIT cancelled by statement_timeout while
                // waiting for the standby still commits locally, and says so only in a warning:
                // the commit must not be cancelled. The client's own bound still applies, and
                // reports an overrun as a failure (never as an acknowledgement). One round trip
                // for both: a group's commit is what its writes wait for.
                return sql.batch("SET LOCAL statement_timeout = 0; COMMIT");
            }
            sql.batch("COMMIT")
        }
        Err(why) => {
            // Best effort: the transaction may already be gone with its connection.
            let _ = sql.batch("ROLLBACK");
            Err(why)
        }
    }
}

fn run_savepoints(
    sql: &mut dyn Sql,
    jobs: &mut impl Iterator<Item = Job>,
    completions: &mut Vec<Completion>,
) -> Result<(), StoreError> {
    for job in jobs.by_ref() {
        if let Err(why) = sql.batch("SAVEPOINT write") {
            // This job is out of the iterator already: it must learn the failure here, or its
            // caller would be left without an answer (and report an internal error).
            completions.push(job(Err(why.clone())).1);
            return Err(why);
        }
        let (ended, complete) = job(Ok(&mut *sql));
        completions.push(complete);
        match ended {
            Ok(()) => sql.batch("RELEASE SAVEPOINT write")?,
            // Undoes only this write; if that fails, the transaction itself is gone.
            Err(why) => sql
                .batch("ROLLBACK TO SAVEPOINT write; RELEASE SAVEPOINT write")
                .map_err(|_| why)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::{SqliteWriteConnection, args};
    use rusqlite::Connection;

    #[tokio::test]
    async fn a_failed_write_rolls_back_alone_and_the_rest_of_its_group_commits() {
        let path =
            std::env::temp_dir().join(format!("byok-writer-{}.db", uuid::Uuid::new_v4().simple()));
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        let writer = Writer::start(SqliteWriteConnection(connection), NoHook).unwrap();
        // 50 concurrent writes; every fifth inserts a row and then violates NOT NULL.
        let writes = (0..50).map(|k| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .run(move |c| {
                        c.execute("INSERT INTO t (k, v) VALUES (?1, 'ok')", args![k])?;
                        if k % 5 == 0 {
                            c.execute("INSERT INTO t (k, v) VALUES (?1, NULL)", args![k + 1000])?;
                        }
                        Ok(k)
                    })
                    .await
            })
        });
        let results: Vec<_> = futures_util::future::join_all(writes)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 10);
        let check = Connection::open(&path).unwrap();
        let rows: i64 = check
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            rows, 40,
            "the failed writes left nothing behind, the others all committed"
        );
        let _ = std::fs::remove_file(path);
    }

    /// A connection that dies between statements: `SAVEPOINT` fails as a lost PostgreSQL
    /// connection does.
    struct SavepointsFail;

    impl Sql for SavepointsFail {
        fn dialect(&self) -> Dialect {
            Dialect::Postgres
        }
        fn execute(&mut self, _: &str, _: &[crate::store::sql::Value]) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn query(
            &mut self,
            _: &str,
            _: &[crate::store::sql::Value],
        ) -> Result<Vec<crate::store::sql::Row>, StoreError> {
            Ok(Vec::new())
        }
        fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
            if sql.starts_with("SAVEPOINT") {
                return Err(StoreError::Unavailable("connection closed".into()));
            }
            Ok(())
        }
    }

    impl WriteConnection for SavepointsFail {
        fn connection(&mut self) -> Result<&mut dyn Sql, StoreError> {
            Ok(self)
        }
        fn after_failure(&mut self) {}
    }

    /// A write whose savepoint could not be opened learns the database's reason (503), instead of
    /// being dropped unanswered ("did not commit", a 500).
    #[tokio::test]
    async fn a_write_whose_savepoint_fails_gets_the_connections_failure() {
        let writer = Writer::start(SavepointsFail, NoHook).unwrap();
        let outcome = writer.run(|_| Ok(())).await;
        assert!(
            matches!(outcome, Err(StoreError::Unavailable(_))),
            "{outcome:?}"
        );
    }
}
