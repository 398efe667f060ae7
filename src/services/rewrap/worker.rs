//! The rewrap worker: walks a job's candidate objects in order, moves each wrapped DEK by
//! compare-and-swap (an object changed meanwhile is left to its writer), paces KMS calls across
//! the job's concurrent tasks, checkpoints after each batch and records per-object failures.
//! It keeps the job's lease while it runs (renewed with each checkpoint and every third of the
//! lease) and stops at the next checkpoint if another instance holds the job.

use std::convert::Infallible;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use futures_util::StreamExt;
use tokio::sync::Mutex;

use super::{Rewrap, rewrap_dek};
use crate::context::KeyContext;
use crate::envelope::{SealedValue, WrappedKey};
use crate::error::Error;
use crate::kms::budget::background;
use crate::platform_kek::KekCreator;
use crate::store::{RewrapCandidate, RewrapJobRecord};

/// Spaces KMS calls evenly at a fixed rate across all workers of a job.
struct Pacer {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(per_second: u32) -> Self {
        let interval =
            (per_second > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(per_second)));
        Self {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self, calls: u32) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + interval * calls;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// The stable reason recorded for an object that could not be moved.
fn failure_reason(e: &Error) -> String {
    match e {
        Error::KeyUnavailable { .. } | Error::KeyRevoked => "key_unavailable".into(),
        other => other.status_and_code().1.to_owned(),
    }
}

impl Rewrap {
    async fn rewrap_object(
        &self,
        job_id: &str,
        candidate: &RewrapCandidate,
        pacer: &Pacer,
    ) -> Result<(), Error> {
        let context: KeyContext = serde_json::from_str(&candidate.context_json)
            .map_err(|e| Error::Internal(format!("stored context: {e}")))?;
        let sealed = SealedValue::decode(&candidate.sealed)?;
        let source = self
            .keyring
            .kek_for_read(&sealed.key.kek_id, &context)
            .await?;
        let destination = self
            .keyring
            .kek_for_write(&context, KekCreator::Broker)
            .await
            .map_err(Error::from)?
            .kek;
        if destination.key_id == source.key_id {
            // Nothing to move: the context resolves to the key it is already under (counted as
            // skipped by the store, which never rewrites a version onto its own KEK).
            self.store
                .apply_rewrap(
                    job_id,
                    candidate,
                    candidate.kek_id.clone(),
                    candidate.sealed.clone(),
                )
                .await?;
            return Ok(());
        }
        pacer
            .wait(if source.shares_identity_with(&destination) {
                1
            } else {
                2
            })
            .await;
        let wrapped = rewrap_dek(
            self.provider(),
            &source,
            &sealed.key.wrapped,
            &context,
            &destination,
            &context,
        )
        .await
        .map_err(Error::from_kms)?;
        // Same DEK id, same data ciphertext: only the wrapped DEK and its KEK change.
        let moved = SealedValue {
            key: WrappedKey {
                kek_id: destination.key_id.clone(),
                wrapped,
            },
            ..sealed
        };
        self.store
            .apply_rewrap(job_id, candidate, destination.key_id, moved.encode()?)
            .await?;
        Ok(())
    }
}

/// Whether `e` says "not now" (the database, KMS capacity or KMS availability, or a routing view
/// this broker cannot confirm) rather than something about the object.
fn is_transient(e: &Error) -> bool {
    matches!(
        e,
        Error::StorageUnavailable(_) | Error::KmsBusy(_) | Error::KmsUnavailable(_)
    )
}

/// How a job's loop ended.
enum JobEnd {
    /// Nothing left, or cancelled by an admin: the job gets its final state.
    Finished,
    /// Shutdown, at a checkpoint: the job stays `running`, its lease is given up, and it resumes
    /// on the next start or on another instance.
    Stopped,
    /// Another instance holds the job's lease now (this one could not renew it in time): that
    /// one carries on from the checkpoint; objects both touched are swapped once (compare-and-swap).
    Lost,
}

/// Renews the job's lease every [`RewrapConfig::renewal`](crate::config::workers::RewrapConfig::renewal);
/// once another instance holds it, cancels `lost` and waits forever (the job's loop stops at its
/// next checkpoint). A renewal that fails (the database is unreachable) is retried: if it stays
/// unreachable past the lease, the lease is lost, as it should be.
async fn keep_lease(rewrap: &Rewrap, job_id: &str, lost: &CancellationToken) -> Infallible {
    loop {
        tokio::time::sleep(rewrap.config.renewal()).await;
        match rewrap
            .store
            .claim_rewrap_job(job_id, &rewrap.instance, rewrap.config.lease)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                lost.cancel();
                return std::future::pending().await;
            }
            Err(e) => tracing::warn!(job_id, error = %e, "could not renew a rewrap job's lease"),
        }
    }
}

/// Forgets the job in the service's set of jobs running here, however its task ends.
struct Running<'a>(&'a Rewrap, &'a str);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.finished_here(self.1);
    }
}

pub(super) async fn run_job(rewrap: Arc<Rewrap>, job: RewrapJobRecord, stop: CancellationToken) {
    let _running = Running(&rewrap, &job.id);
    let lost = CancellationToken::new();
    let outcome = tokio::select! {
        // Background work for the KMS budget: it takes only what live traffic leaves.
        outcome = background(process(&rewrap, &job, &stop, &lost)) => outcome,
        never = keep_lease(&rewrap, &job.id, &lost) => match never {},
    };
    end_job(&rewrap, &job, outcome).await;
}

/// The job's loop: batches from the checkpoint on until nothing is left, a stop or a lost lease.
async fn process(
    rewrap: &Arc<Rewrap>,
    job: &RewrapJobRecord,
    stop: &CancellationToken,
    lost: &CancellationToken,
) -> Result<JobEnd, Error> {
    let config = rewrap.config;
    let pacer = Pacer::new(config.kms_calls_per_second);
    let mut checkpoint = job.checkpoint_seq;
    loop {
        // Checked only between batches: a batch, once started, finishes and is checkpointed.
        if stop.is_cancelled() {
            return Ok(JobEnd::Stopped);
        }
        if lost.is_cancelled() {
            return Ok(JobEnd::Lost);
        }
        if rewrap.store.get_rewrap_job(&job.id).await?.state != "running" {
            return Ok(JobEnd::Finished); // cancelled
        }
        let batch = rewrap
            .store
            .rewrap_candidates(job.source_keks.clone(), checkpoint, config.batch_size)
            .await?;
        let Some(last) = batch.last() else {
            return Ok(JobEnd::Finished);
        };
        let last_seq = last.seq;
        // The first error that says "not now" rather than "not this object": the batch is not
        // checkpointed and the job pauses, so those objects are retried, not counted failed.
        let transient: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
        futures_util::stream::iter(&batch)
            .for_each_concurrent(config.concurrency.max(1), |candidate| {
                let (rewrap, pacer, job_id, transient) = (&rewrap, &pacer, &job.id, &transient);
                async move {
                    let Err(e) = rewrap.rewrap_object(job_id, candidate, pacer).await else {
                        return;
                    };
                    if is_transient(&e) {
                        tracing::debug!(job_id, object_id = %candidate.object_id, error = %e, "object not rewrapped for now; the job pauses");
                        transient.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
                        return;
                    }
                    let reason = failure_reason(&e);
                    tracing::warn!(job_id, object_id = %candidate.object_id, reason, error = %e, "object not rewrapped; left intact");
                    if let Err(e) = rewrap.store.record_rewrap_failure(job_id, &candidate.object_id, &reason).await {
                        tracing::error!(job_id, error = %e, "could not record a rewrap failure");
                    }
                }
            })
            .await;
        if let Some(e) = transient
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return Err(e);
        }
        if !rewrap
            .store
            .advance_rewrap_checkpoint(&job.id, last_seq, &rewrap.instance, config.lease)
            .await?
        {
            return Ok(JobEnd::Lost);
        }
        checkpoint = last_seq;
    }
}

async fn end_job(rewrap: &Rewrap, job: &RewrapJobRecord, outcome: Result<JobEnd, Error>) {
    let (state, error) = match outcome {
        Ok(JobEnd::Stopped) => {
            if let Err(e) = rewrap
                .store
                .release_rewrap_job(&job.id, &rewrap.instance)
                .await
            {
                tracing::warn!(job_id = %job.id, error = %e, "could not give up a stopped rewrap job's lease; it resumes once the lease runs out");
            }
            tracing::info!(job_id = %job.id, "rewrap job stopped at its checkpoint; it resumes on the next start or on another instance");
            return;
        }
        Ok(JobEnd::Lost) => {
            tracing::warn!(job_id = %job.id, instance = %rewrap.instance, "rewrap job's lease taken over by another instance; stopped here");
            return;
        }
        // The database (or the job's own row) could not be reached: nothing says the job failed,
        // only that this instance cannot run it now. Left running with its lease given up, it
        // resumes from its checkpoint on whichever instance's claim scan finds it first.
        Err(e) if is_transient(&e) => {
            if let Err(release) = rewrap
                .store
                .release_rewrap_job(&job.id, &rewrap.instance)
                .await
            {
                tracing::warn!(job_id = %job.id, error = %release, "could not give up the lease either; the job resumes once it runs out");
            }
            tracing::warn!(job_id = %job.id, error = %e, "rewrap job paused: the database or KMS is unavailable for now (or this broker's routing view is unconfirmed); it resumes from its checkpoint");
            return;
        }
        Err(e) => ("failed", Some(e.to_string())),
        Ok(JobEnd::Finished) => match rewrap.store.get_rewrap_job(&job.id).await {
            Ok(current) if current.failed > 0 => (
                "failed",
                Some(format!("{} objects could not be rewrapped", current.failed)),
            ),
            _ => ("completed", None),
        },
    };
    match rewrap
        .store
        .finish_rewrap_job(&job.id, state, error, Some(&rewrap.instance))
        .await
    {
        Ok(true) => tracing::info!(job_id = %job.id, state, "rewrap job ended"),
        Ok(false) => {
            tracing::info!(job_id = %job.id, "rewrap job already ended (cancelled) or run by another instance now; left as it is")
        }
        Err(e) => {
            tracing::error!(job_id = %job.id, error = %e, "could not finish rewrap job; it resumes once its lease runs out")
        }
    }
}
