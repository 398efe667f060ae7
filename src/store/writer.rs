//! The single database writer with group commit: a dedicated thread owns the write connection,
//! takes every write queued at the moment, runs each in its own savepoint inside one transaction,
//! and commits once (one fsync for the whole group). A write's result is delivered only after the
//! commit, so an acknowledged write is durable; a write that fails rolls back its savepoint alone.

use rusqlite::{Connection, Savepoint};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Writes committed together at most.
const GROUP: usize = 256;
/// Writes queued at most before callers wait.
const QUEUE: usize = 4096;

/// Called once the group's commit is decided (`true` = committed).
type Completion = Box<dyn FnOnce(bool) + Send>;
/// Runs one write inside its savepoint; reports whether it succeeded and how to deliver it.
type Job = Box<dyn FnOnce(&mut Savepoint<'_>) -> (bool, Completion) + Send>;

#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Moves `connection` into the writer thread.
    pub fn start(connection: Connection) -> Result<Self, StoreError> {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("byok-db-writer".into())
            .spawn(move || write_groups(connection, receiver))
            .map_err(|e| StoreError::Internal(format!("cannot start the database writer: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `work` in the next group; resolves after that group committed (or failed).
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Savepoint<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (deliver, delivered) = oneshot::channel();
        let job: Job = Box::new(move |savepoint| {
            let result = work(savepoint);
            let succeeded = result.is_ok();
            let completion: Completion = Box::new(move |committed| {
                let outcome = match result {
                    Ok(_) if !committed => Err(StoreError::Internal(
                        "the write transaction did not commit".into(),
                    )),
                    other => other,
                };
                let _ = deliver.send(outcome);
            });
            (succeeded, completion)
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Internal("the database writer has stopped".into()))?;
        delivered
            .await
            .map_err(|_| StoreError::Internal("the write transaction did not commit".into()))?
    }
}

fn write_groups(mut connection: Connection, mut receiver: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(GROUP);
    while receiver.blocking_recv_many(&mut group, GROUP) > 0 {
        let mut completions = Vec::with_capacity(group.len());
        let committed = run_group(&mut connection, group.drain(..), &mut completions).is_ok();
        for complete in completions {
            complete(committed);
        }
    }
}

/// One transaction for the whole group; a savepoint per write. Jobs not reached because the
/// transaction itself failed are dropped, which their callers see as "did not commit".
fn run_group(
    connection: &mut Connection,
    jobs: impl Iterator<Item = Job>,
    completions: &mut Vec<Completion>,
) -> rusqlite::Result<()> {
    let mut transaction = connection.transaction()?;
    for job in jobs {
        let mut savepoint = transaction.savepoint()?;
        let (succeeded, complete) = job(&mut savepoint);
        if succeeded {
            savepoint.commit()?;
        }
        // else: the savepoint rolls back when dropped, undoing only this write.
        completions.push(complete);
    }
    transaction.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_write_rolls_back_alone_and_the_rest_of_its_group_commits() {
        let path =
            std::env::temp_dir().join(format!("byok-writer-{}.db", uuid::Uuid::new_v4().simple()));
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        let writer = Writer::start(connection).unwrap();
        // 50 concurrent writes; every fifth inserts a row and then violates NOT NULL.
        let writes = (0..50).map(|k| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .run(move |c| {
                        c.execute("INSERT INTO t (k, v) VALUES (?1, 'ok')", [k])?;
                        if k % 5 == 0 {
                            c.execute("INSERT INTO t (k, v) VALUES (?1, NULL)", [k + 1000])?;
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
}
