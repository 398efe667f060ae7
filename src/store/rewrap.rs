//! Rewrap jobs: the job row (progress counters and checkpoint), per-object failures, and the
//! compare-and-swap that swaps one version's wrapped DEK. The swap and the job's counter move in
//! one atomic write (a savepoint of the writer's group commit), so a crash never loses or
//! double-counts an object; the swap applies only while the version is still current and still
//! under the source KEK (a concurrent update wins). With several instances, one runs a job at a
//! time: the one holding its lease (renewed at each checkpoint and between them; an expired
//! lease, its owner dead, is claimed by another instance, which resumes at the checkpoint).

use std::time::Duration;

use super::objects::serialize_counting;
use super::sql::{Dialect, Row, Sql, ToValue, Value, args};
use super::{Store, StoreError};
use crate::timestamp::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapJobRecord {
    pub id: String,
    pub source_kind: String,
    pub source_id: String,
    pub source_keks: Vec<String>,
    pub state: String,
    pub total: u64,
    pub done: u64,
    pub skipped: u64,
    pub failed: u64,
    pub checkpoint_seq: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

/// An object whose current version is wrapped under a source KEK.
#[derive(Debug, Clone)]
pub struct RewrapCandidate {
    pub seq: i64,
    pub object_id: String,
    pub context_json: String,
    pub version_id: String,
    pub kek_id: String,
    pub sealed: Vec<u8>,
}

const JOB_COLUMNS: &str = "id, source_kind, source_id, source_keks_json, state, total, done, skipped, failed, checkpoint_seq, started_at, finished_at, error";

fn job_from_row(r: &Row) -> Result<RewrapJobRecord, StoreError> {
    let keks: String = r.get(3)?;
    Ok(RewrapJobRecord {
        id: r.get(0)?,
        source_kind: r.get(1)?,
        source_id: r.get(2)?,
        source_keks: serde_json::from_str(&keks).unwrap_or_default(),
        state: r.get(4)?,
        total: r.get(5)?,
        done: r.get(6)?,
        skipped: r.get(7)?,
        failed: r.get(8)?,
        checkpoint_seq: r.get(9)?,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        error: r.get(12)?,
    })
}

fn kek_list(keks: &[String], first_param: usize) -> String {
    (0..keks.len())
        .map(|i| format!("?{}", first_param + i))
        .collect::<Vec<_>>()
        .join(", ")
}

fn count_under(c: &mut dyn Sql, keks: &[String]) -> Result<u64, StoreError> {
    if keks.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "SELECT COUNT(*) FROM objects o JOIN versions v ON v.id = o.current_version WHERE v.kek_id IN ({})",
        kek_list(keks, 1)
    );
    let args: Vec<Value> = keks.iter().cloned().map(Value::Text).collect();
    c.query_one(&sql, &args)?.get(0)
}

impl Store {
    /// Creates a running job; `total` is the number of objects under the source KEKs now.
    /// Refuses (`AlreadyExists`) while another job for the same source is running.
    pub async fn insert_rewrap_job(
        &self,
        id: String,
        source_kind: String,
        source_id: String,
        source_keks: Vec<String>,
        owner: String,
        lease: Duration,
    ) -> Result<RewrapJobRecord, StoreError> {
        let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.run(move |tx| {
            // "None running" is a count, not a row to lock: job creations take turns.
            serialize_counting(tx, "rewrap_jobs")?;
            let running: i64 = tx.query_one("SELECT COUNT(*) FROM rewrap_jobs WHERE source_id = ?1 AND state = 'running'", args![source_id])?.get(0)?;
            if running > 0 {
                return Err(StoreError::AlreadyExists(
                    "a running rewrap job for this source",
                ));
            }
            let total = count_under(tx, &source_keks)?;
            let keks_json = serde_json::to_string(&source_keks).map_err(|e| StoreError::Internal(e.to_string()))?;
            // Leased to its starter from the first moment: no other instance's scan takes it.
            let now = tx.dialect().now_ms();
            tx.execute(
                &format!("INSERT INTO rewrap_jobs (id, source_kind, source_id, source_keks_json, state, total, started_at, lease_owner, lease_expires_ms) \
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, {now} + ?8)"),
                args![id, source_kind, source_id, keks_json, total, Timestamp::now().to_rfc3339(), owner, lease],
            )?;
            job_from_row(&tx.query_one(&format!("SELECT {JOB_COLUMNS} FROM rewrap_jobs WHERE id = ?1"), args![id])?)
        })
        .await
    }

    pub async fn get_rewrap_job(&self, id: &str) -> Result<RewrapJobRecord, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            let row = c
                .query_opt(
                    &format!("SELECT {JOB_COLUMNS} FROM rewrap_jobs WHERE id = ?1"),
                    args![id],
                )?
                .ok_or(StoreError::NotFound("rewrap job"))?;
            job_from_row(&row)
        })
        .await
    }

    /// Running jobs no live instance holds: never claimed, or their lease expired (the owner
    /// died or lost the database). On SQLite every running job: one process uses the file, so an
    /// owner other than the caller is an earlier run of it, dead.
    pub async fn claimable_rewrap_jobs(&self) -> Result<Vec<RewrapJobRecord>, StoreError> {
        self.read(|c| {
            let free = match c.dialect() {
                Dialect::Sqlite => String::new(),
                Dialect::Postgres => format!(
                    " AND (lease_owner IS NULL OR lease_expires_ms < {})",
                    c.dialect().now_ms()
                ),
            };
            c.query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM rewrap_jobs WHERE state = 'running'{free} ORDER BY started_at"
                ),
                &[],
            )?
            .iter()
            .map(job_from_row)
            .collect()
        })
        .await
    }

    /// Takes (or renews) the job's lease for `owner` until `lease` from now, unless another
    /// owner's lease is still running (on PostgreSQL; see [`Self::claimable_rewrap_jobs`] for
    /// SQLite). One conditional statement: of two instances claiming at once, PostgreSQL lets the
    /// second re-check the row after the first commits, so it sees the new lease and fails.
    /// True when `owner` holds the lease now.
    pub async fn claim_rewrap_job(
        &self,
        job_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let (job_id, owner) = (job_id.to_owned(), owner.to_owned());
        let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.run(move |tx| {
            let now = tx.dialect().now_ms();
            let free = match tx.dialect() {
                Dialect::Sqlite => String::new(),
                Dialect::Postgres => format!(
                    " AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_expires_ms < {now})"
                ),
            };
            let claimed = tx.execute(
                &format!(
                    "UPDATE rewrap_jobs SET lease_owner = ?2, lease_expires_ms = {now} + ?3 \
                     WHERE id = ?1 AND state = 'running'{free}"
                ),
                args![job_id, owner, lease],
            )?;
            Ok(claimed == 1)
        })
        .await
    }

    /// Gives the lease up (an ordered shutdown): another instance, or a restart, resumes the job
    /// at once instead of after the lease runs out.
    pub async fn release_rewrap_job(&self, job_id: &str, owner: &str) -> Result<(), StoreError> {
        let (job_id, owner) = (job_id.to_owned(), owner.to_owned());
        self.run(move |c| {
            c.execute(
                "UPDATE rewrap_jobs SET lease_owner = NULL, lease_expires_ms = 0 WHERE id = ?1 AND lease_owner = ?2",
                args![job_id, owner],
            )?;
            Ok(())
        })
        .await
    }

    /// The next objects under the source KEKs after `after_seq`, in object order.
    pub async fn rewrap_candidates(
        &self,
        source_keks: Vec<String>,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<RewrapCandidate>, StoreError> {
        self.read(move |c| {
            if source_keks.is_empty() {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT o.seq, o.id, o.context_json, v.id, v.kek_id, v.sealed FROM objects o JOIN versions v ON v.id = o.current_version \
                 WHERE v.kek_id IN ({}) AND o.seq > ?{} ORDER BY o.seq LIMIT ?{}",
                kek_list(&source_keks, 1),
                source_keks.len() + 1,
                source_keks.len() + 2
            );
            let mut args: Vec<Value> = source_keks.into_iter().map(Value::Text).collect();
            args.push(Value::Integer(after_seq));
            args.push((limit as u64).to_value());
            c.query(&sql, &args)?
                .iter()
                .map(|r| {
                    Ok(RewrapCandidate { seq: r.get(0)?, object_id: r.get(1)?, context_json: r.get(2)?, version_id: r.get(3)?, kek_id: r.get(4)?, sealed: r.get(5)? })
                })
                .collect()
        })
        .await
    }

    /// Swaps the version's sealed value (new wrapped DEK, same data ciphertext) if it is still the
    /// object's current version under the old KEK; counts it in the job either way. Returns
    /// whether the swap happened.
    pub async fn apply_rewrap(
        &self,
        job_id: &str,
        candidate: &RewrapCandidate,
        new_kek_id: String,
        new_sealed: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let (job_id, object_id, version_id, old_kek) = (
            job_id.to_owned(),
            candidate.object_id.clone(),
            candidate.version_id.clone(),
            candidate.kek_id.clone(),
        );
        self.run(move |tx| {
            // One conditional statement, so PostgreSQL needs no lock either: a concurrent swap of
            // this version makes it re-check `kek_id` and skip; an update of the object that
            // commits meanwhile simply comes after the swap, as it could on SQLite.
            let swapped = new_kek_id != old_kek
                && tx.execute(
                    "UPDATE versions SET kek_id = ?1, sealed = ?2 WHERE id = ?3 AND kek_id = ?4 \
                     AND id = (SELECT current_version FROM objects WHERE id = ?5)",
                    args![new_kek_id, new_sealed, version_id, old_kek, object_id],
                )? == 1;
            let counter = if swapped { "done" } else { "skipped" };
            tx.execute(
                &format!("UPDATE rewrap_jobs SET {counter} = {counter} + 1 WHERE id = ?1"),
                args![job_id],
            )?;
            Ok(swapped)
        })
        .await
        .inspect(|_| self.records.invalidate(&candidate.object_id))
    }

    pub async fn record_rewrap_failure(
        &self,
        job_id: &str,
        object_id: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (job_id, object_id, reason) =
            (job_id.to_owned(), object_id.to_owned(), reason.to_owned());
        self.run(move |tx| {
            let inserted = tx.execute("INSERT INTO rewrap_failures (job_id, object_id, reason) VALUES (?1, ?2, ?3) ON CONFLICT (job_id, object_id) DO NOTHING", args![job_id, object_id, reason])?;
            tx.execute("UPDATE rewrap_jobs SET failed = failed + ?1 WHERE id = ?2", args![inserted, job_id])?;
            Ok(())
        })
        .await
    }

    /// Moves the checkpoint forwards and renews `owner`'s lease, in one statement; false (and
    /// nothing written) when another instance holds the job now.
    pub async fn advance_rewrap_checkpoint(
        &self,
        job_id: &str,
        seq: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let (job_id, owner) = (job_id.to_owned(), owner.to_owned());
        let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.run(move |c| {
            let now = c.dialect().now_ms();
            // Only forwards (no two-argument MAX on PostgreSQL, hence the CASE).
            let advanced = c.execute(
                &format!(
                    "UPDATE rewrap_jobs SET checkpoint_seq = CASE WHEN checkpoint_seq < ?1 THEN ?1 ELSE checkpoint_seq END, \
                     lease_expires_ms = {now} + ?4 WHERE id = ?2 AND lease_owner = ?3"
                ),
                args![seq, job_id, owner, lease],
            )?;
            Ok(advanced == 1)
        })
        .await
    }

    /// Moves a running job to a final state and frees its lease; a job already final (e.g.
    /// cancelled) stays as it is. With `owner` (a worker ending its job), only while `owner`
    /// still holds the lease: a worker that lost it to another instance must not end the job
    /// that instance is running. `None`: an admin's cancel, whoever runs it. True if it ended.
    pub async fn finish_rewrap_job(
        &self,
        job_id: &str,
        state: &str,
        error: Option<String>,
        owner: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (job_id, state) = (job_id.to_owned(), state.to_owned());
        let owner = owner.map(str::to_owned);
        self.run(move |c| {
            const END: &str = "UPDATE rewrap_jobs SET state = ?1, error = ?2, finished_at = ?3, lease_owner = NULL, lease_expires_ms = 0 \
                 WHERE id = ?4 AND state = 'running'";
            let now = Timestamp::now().to_rfc3339();
            let ended = match owner {
                Some(owner) => c.execute(
                    &format!("{END} AND lease_owner = ?5"),
                    args![state, error, now, job_id, owner],
                )?,
                None => c.execute(END, args![state, error, now, job_id])?,
            };
            Ok(ended == 1)
        })
        .await
    }

    /// Failure reasons with how many objects each affected.
    pub async fn rewrap_failure_summary(
        &self,
        job_id: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let job_id = job_id.to_owned();
        self.read(move |c| {
            c.query("SELECT reason, COUNT(*) FROM rewrap_failures WHERE job_id = ?1 GROUP BY reason ORDER BY reason", args![job_id])?
                .iter()
                .map(|r| Ok((r.get(0)?, r.get(1)?)))
                .collect()
        })
        .await
    }

    /// Objects whose current version is still under one of `keks`.
    pub async fn count_objects_under(&self, keks: Vec<String>) -> Result<u64, StoreError> {
        self.read(move |c| count_under(c, &keks)).await
    }
}
