//! Retention: expired idempotency records and (when a retention period is set) old audit events
//! are deleted in bounded batches, each its own write, so a purge of a large backlog never holds
//! the writer, or a lock, for long.

use super::audit_chain::purge_events;
use super::sql::args;
use super::{Store, StoreError};
use crate::timestamp::Timestamp;

/// What one purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub idempotency_records: u64,
    pub audit_events: u64,
}

impl Store {
    /// Deletes what the retention settings say has expired, as of `now`, batch by batch until
    /// none is left (or the store fails: the next run resumes).
    pub async fn purge_expired(&self, now: Timestamp) -> Result<Purged, StoreError> {
        let retention = self.retention;
        let before = |period: std::time::Duration| {
            let micros = i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
            Timestamp(now.0.saturating_sub(micros)).to_rfc3339()
        };
        let mut purged = Purged {
            idempotency_records: self
                .purge_in_batches(
                    // The age is checked again on the row itself: a key re-claimed meanwhile is
                    // a new record, and stays.
                    "DELETE FROM idempotency WHERE created_at < ?1 AND (api_key_id, key) IN \
                     (SELECT api_key_id, key FROM idempotency WHERE created_at < ?1 LIMIT ?2)",
                    before(retention.idempotency),
                )
                .await?,
            audit_events: 0,
        };
        if let Some(audit) = retention.audit {
            purged.audit_events = self.purge_audit_events(before(audit)).await?;
        }
        Ok(purged)
    }

    /// Deletes audit events created before `cutoff`, batch by batch; each batch first records
    /// where it cut each hash chain, so a verifier tells a purge from a deletion.
    async fn purge_audit_events(&self, cutoff: String) -> Result<u64, StoreError> {
        let batch = i64::try_from(self.retention.purge_batch).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let cutoff = cutoff.clone();
            let removed = self
                .run(move |c| {
                    let seqs = c
                        .query(
                            "SELECT seq FROM audit_events WHERE created_at < ?1 ORDER BY seq LIMIT ?2",
                            args![cutoff, batch],
                        )?
                        .iter()
                        .map(|row| row.get::<i64>(0))
                        .collect::<Result<Vec<_>, _>>()?;
                    purge_events(c, &seqs)
                })
                .await?;
            total += removed;
            if removed < batch as u64 {
                return Ok(total);
            }
        }
    }

    /// Runs `delete` (`?1` = cutoff, `?2` = batch size) until a batch removes fewer than a full
    /// batch; the total removed.
    async fn purge_in_batches(
        &self,
        delete: &'static str,
        cutoff: String,
    ) -> Result<u64, StoreError> {
        let batch = i64::try_from(self.retention.purge_batch).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let cutoff = cutoff.clone();
            let removed = self
                .run(move |c| c.execute(delete, args![cutoff, batch]))
                .await?;
            total += removed;
            if removed < batch as u64 {
                return Ok(total);
            }
        }
    }
}
