//! Rewrap: moving wrapped DEKs to the KEK their context resolves to now, without touching data
//! ciphertext. `rewrap_dek` is the one mechanism (also behind `/vault/v1/keys/rekey`): `ReEncrypt`
//! inside KMS when one set of credentials reaches both keys, else `Decrypt` + `Encrypt` under each
//! side's credentials. Jobs walk the objects under a source in order, checkpoint after each batch,
//! write each object back by compare-and-swap, pace KMS calls, and resume after a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Mutex;

use crate::broker::Broker;
pub use crate::config::workers::RewrapConfig;
use crate::context::KeyContext;
use crate::envelope::{SealedValue, WrappedKey};
use crate::error::{Error, ErrorCode};
use crate::kms::{KekRef, KmsError};
use crate::platform_kek::KekCreator;
use crate::store::{RewrapCandidate, RewrapJobRecord, StoreError};

/// What a job moves away from.
#[derive(Debug, Clone)]
pub enum RewrapSource {
    /// Every CMK of a BYOK key that is not where its contexts resolve now (after rotation: the
    /// old CMKs; after retirement: all of them).
    ByokKey(String),
    /// One KEK, by id (e.g. a platform KEK, to onboard its objects to a tenant CMK).
    Kek(String),
}

/// Progress as the admin API reports it.
#[derive(Debug, Clone)]
pub struct RewrapStatus {
    pub job: RewrapJobRecord,
    pub remaining: u64,
    pub failures: Vec<(String, u64)>,
}

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

/// The longest key id KMS accepts (a key ARN or alias ARN; `KeyId` is 1-2048 characters).
const MAX_KEK_ID_CHARS: usize = 2048;

/// A KEK id as KMS could accept it: 1-2048 visible ASCII characters (ARNs, aliases, local ids).
/// Refused up front so a job never records, or a log never echoes, an arbitrary blob.
fn check_kek_id(kek_id: &str) -> Result<(), Error> {
    if kek_id.is_empty()
        || kek_id.len() > MAX_KEK_ID_CHARS
        || !kek_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::invalid(
            ErrorCode::InvalidKekId,
            format!(
                "kek_id must be 1-{MAX_KEK_ID_CHARS} visible ASCII characters (a KMS key ARN or id)"
            ),
        ));
    }
    Ok(())
}

/// The stable reason recorded for an object that could not be moved.
fn failure_reason(e: &Error) -> String {
    match e {
        Error::KeyUnavailable { .. } | Error::KeyRevoked => "key_unavailable".into(),
        other => other.status_and_code().1.to_owned(),
    }
}

impl Broker {
    /// Moves a wrapped DEK from `source` to `destination`, binding it to `destination_context`.
    pub async fn rewrap_dek(
        &self,
        source: &KekRef,
        wrapped: &[u8],
        source_context: &KeyContext,
        destination: &KekRef,
        destination_context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        if source.shares_identity_with(destination) {
            // One identity reaches both keys: the plaintext DEK never enters the broker.
            return self
                .provider()
                .reencrypt(
                    source,
                    wrapped,
                    source_context,
                    destination,
                    destination_context,
                )
                .await;
        }
        let key = self
            .provider()
            .decrypt(source, wrapped, source_context)
            .await?;
        self.provider()
            .encrypt(destination, &key, destination_context)
            .await
    }

    pub async fn start_rewrap_job(
        self: &Arc<Self>,
        source: RewrapSource,
    ) -> Result<RewrapJobRecord, Error> {
        let (kind, id, keks) = match &source {
            RewrapSource::ByokKey(id) => {
                let bindings = self.keyring.bindings();
                let binding = bindings.get(id).ok_or(Error::NotFound("BYOK key"))?;
                let keks = binding
                    .record
                    .keks
                    .iter()
                    .filter(|k| binding.record.retired || k.key_arn != binding.record.current_kek)
                    .map(|k| k.key_arn.clone())
                    .collect();
                ("byok_key_id", id.clone(), keks)
            }
            RewrapSource::Kek(kek) => {
                check_kek_id(kek)?;
                ("kek_id", kek.clone(), vec![kek.clone()])
            }
        };
        let job_id = format!("rewrap_{}", uuid::Uuid::new_v4().simple());
        let job = self
            .store
            .insert_rewrap_job(job_id, kind.into(), id, keks)
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists => {
                    Error::AlreadyExists("a running rewrap job for this source")
                }
                other => other.into(),
            })?;
        tracing::info!(job_id = %job.id, total = job.total, "rewrap job started");
        tokio::spawn(run_job(Arc::clone(self), job.clone()));
        Ok(job)
    }

    pub async fn rewrap_status(&self, id: &str) -> Result<RewrapStatus, Error> {
        let job = self.store.get_rewrap_job(id).await.map_err(|e| match e {
            StoreError::NotFound(_) => Error::NotFound("rewrap job"),
            other => other.into(),
        })?;
        let remaining = self
            .store
            .count_objects_under(job.source_keks.clone())
            .await?;
        let failures = self.store.rewrap_failure_summary(id).await?;
        Ok(RewrapStatus {
            job,
            remaining,
            failures,
        })
    }

    pub async fn cancel_rewrap_job(&self, id: &str) -> Result<RewrapStatus, Error> {
        self.rewrap_status(id).await?;
        self.store.finish_rewrap_job(id, "cancelled", None).await?;
        self.rewrap_status(id).await
    }

    /// Resumes jobs that were running when the broker stopped, from their checkpoints.
    pub async fn resume_rewrap_jobs(self: &Arc<Self>) -> Result<(), Error> {
        for job in self.store.running_rewrap_jobs().await? {
            tracing::info!(job_id = %job.id, checkpoint = job.checkpoint_seq, "resuming rewrap job");
            tokio::spawn(run_job(Arc::clone(self), job));
        }
        Ok(())
    }

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
        let wrapped = self
            .rewrap_dek(
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

async fn run_job(broker: Arc<Broker>, job: RewrapJobRecord) {
    let config = broker.config.rewrap;
    let pacer = Pacer::new(config.kms_calls_per_second);
    let mut checkpoint = job.checkpoint_seq;
    let outcome: Result<(), Error> = async {
        loop {
            if broker.store.get_rewrap_job(&job.id).await?.state != "running" {
                return Ok(()); // cancelled
            }
            let batch = broker.store.rewrap_candidates(job.source_keks.clone(), checkpoint, config.batch_size).await?;
            let Some(last) = batch.last() else { return Ok(()) };
            let last_seq = last.seq;
            futures_util::stream::iter(&batch)
                .for_each_concurrent(config.concurrency.max(1), |candidate| {
                    let (broker, pacer, job_id) = (&broker, &pacer, &job.id);
                    async move {
                        if let Err(e) = broker.rewrap_object(job_id, candidate, pacer).await {
                            let reason = failure_reason(&e);
                            tracing::warn!(job_id, object_id = %candidate.object_id, reason, error = %e, "object not rewrapped; left intact");
                            if let Err(e) = broker.store.record_rewrap_failure(job_id, &candidate.object_id, &reason).await {
                                tracing::error!(job_id, error = %e, "could not record a rewrap failure");
                            }
                        }
                    }
                })
                .await;
            broker.store.advance_rewrap_checkpoint(&job.id, last_seq).await?;
            checkpoint = last_seq;
        }
    }
    .await;
    let (state, error) = match outcome {
        Err(e) => ("failed", Some(e.to_string())),
        Ok(()) => match broker.store.get_rewrap_job(&job.id).await {
            Ok(current) if current.failed > 0 => (
                "failed",
                Some(format!("{} objects could not be rewrapped", current.failed)),
            ),
            _ => ("completed", None),
        },
    };
    if let Err(e) = broker.store.finish_rewrap_job(&job.id, state, error).await {
        tracing::error!(job_id = %job.id, error = %e, "could not finish rewrap job");
    }
    tracing::info!(job_id = %job.id, state, "rewrap job ended");
}
