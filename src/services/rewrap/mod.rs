//! Rewrap: moving wrapped DEKs to the KEK their context resolves to now, without touching data
//! ciphertext. `rewrap_dek` is the one mechanism (also behind `/vault/v1/keys/rekey`): `ReEncrypt`
//! inside KMS when one set of credentials reaches both keys, else `Decrypt` + `Encrypt` under each
//! side's credentials. Jobs walk the objects under a source in order, checkpoint after each batch,
//! write each object back by compare-and-swap, pace KMS calls, and resume after a restart.
//! With several instances on one database, a job runs on the instance holding its lease; every
//! instance scans for jobs whose lease ran out (their instance died) and resumes them.

mod worker;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
pub use crate::config::workers::RewrapConfig;
use crate::context::KeyContext;
use crate::error::{Error, ErrorCode};
use crate::keyring::Keyring;
use crate::kms::{KekRef, KeyProvider, KmsError};
use crate::services::actor::Actor;
use crate::services::byok::Byok;
pub use crate::store::RewrapJobRecord;
use crate::store::Store;
use crate::supervisor::{Stage, Supervisor};
use worker::run_job;

/// Rewrap jobs: start, status, cancel, resume (at start, and jobs other instances left). Each
/// running job is one task holding the service; the worker writes through the store only.
pub struct Rewrap {
    store: Store,
    keyring: Arc<Keyring>,
    /// Reloads the routing view before resuming a job another instance started: a job must
    /// resolve destinations from the bindings as stored, never from a stale view.
    byok: Arc<Byok>,
    /// Starts and cancellations are recorded with their actor.
    audit: AuditLog,
    config: RewrapConfig,
    /// Owns the job tasks, so a shutdown stops them at a checkpoint.
    supervisor: Supervisor,
    /// This instance's name as a lease owner.
    instance: String,
    /// Jobs with a task here: a scan never starts a second one for the same job.
    active: Mutex<HashSet<String>>,
}

/// What the rewrap service is built from.
pub struct RewrapParts {
    pub store: Store,
    pub keyring: Arc<Keyring>,
    pub byok: Arc<Byok>,
    pub audit: AuditLog,
    pub config: RewrapConfig,
    pub supervisor: Supervisor,
    /// Unique per process (a restart is a new owner): see `Broker::start`.
    pub instance: String,
}

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

/// Moves a wrapped DEK from `source` to `destination`, binding it to `destination_context`.
pub async fn rewrap_dek(
    provider: &dyn KeyProvider,
    source: &KekRef,
    wrapped: &[u8],
    source_context: &KeyContext,
    destination: &KekRef,
    destination_context: &KeyContext,
) -> Result<Vec<u8>, KmsError> {
    if source.shares_identity_with(destination) {
        // One identity reaches both keys: the plaintext DEK never enters the broker.
        return provider
            .reencrypt(
                source,
                wrapped,
                source_context,
                destination,
                destination_context,
            )
            .await;
    }
    let key = provider.decrypt(source, wrapped, source_context).await?;
    provider
        .encrypt(destination, &key, destination_context)
        .await
}

impl Rewrap {
    pub fn new(parts: RewrapParts) -> Self {
        Self {
            store: parts.store,
            keyring: parts.keyring,
            byok: parts.byok,
            audit: parts.audit,
            config: parts.config,
            supervisor: parts.supervisor,
            instance: parts.instance,
            active: Mutex::default(),
        }
    }

    fn provider(&self) -> &dyn KeyProvider {
        self.keyring.provider().as_ref()
    }

    pub async fn start_rewrap_job(
        self: &Arc<Self>,
        actor: Actor<'_>,
        source: RewrapSource,
    ) -> Result<RewrapJobRecord, Error> {
        let (kind, id, keks, organization) = match &source {
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
                let organization = binding
                    .match_context
                    .get("organization_id")
                    .map(str::to_owned);
                ("byok_key_id", id.clone(), keks, organization)
            }
            RewrapSource::Kek(kek) => {
                check_kek_id(kek)?;
                ("kek_id", kek.clone(), vec![kek.clone()], None)
            }
        };
        let job_id = format!("rewrap_{}", uuid::Uuid::new_v4().simple());
        let job = self
            .store
            .insert_rewrap_job(
                job_id,
                kind.into(),
                id.clone(),
                keks,
                self.instance.clone(),
                self.config.lease,
            )
            .await?;
        tracing::info!(job_id = %job.id, total = job.total, "rewrap job started");
        self.try_begin(&job.id);
        self.spawn_job(job.clone()).await;
        // After the start: the job runs whether or not its record commits, and a failed record
        // fails the request (the caller learns the job id from the events or the admin API).
        let fields = json!({"rewrap_job_id": job.id, kind: id, "total": job.total});
        self.audit
            .record(actor.event("vault.rewrap_job.started", organization.as_deref(), fields))
            .await?;
        Ok(job)
    }

    pub async fn rewrap_status(&self, id: &str) -> Result<RewrapStatus, Error> {
        let job = self.store.get_rewrap_job(id).await?;
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

    pub async fn cancel_rewrap_job(
        &self,
        actor: Actor<'_>,
        id: &str,
    ) -> Result<RewrapStatus, Error> {
        let before = self.rewrap_status(id).await?;
        // False when the job had already ended: recorded as asked, with the state it kept.
        let cancelled = self
            .store
            .finish_rewrap_job(id, "cancelled", None, None)
            .await?;
        let status = self.rewrap_status(id).await?;
        let organization = self.organization_of(&before.job);
        let fields = json!({"rewrap_job_id": id, "cancelled": cancelled, "state": status.job.state, "remaining": status.remaining});
        self.audit
            .record(actor.event(
                "vault.rewrap_job.cancelled",
                organization.as_deref(),
                fields,
            ))
            .await?;
        Ok(status)
    }

    /// The organization a job's BYOK key serves, when the key is still bound.
    fn organization_of(&self, job: &RewrapJobRecord) -> Option<String> {
        if job.source_kind != "byok_key_id" {
            return None;
        }
        self.keyring
            .bindings()
            .get(&job.source_id)
            .and_then(|b| b.match_context.get("organization_id"))
            .map(str::to_owned)
    }

    /// Resumes the running jobs no live instance holds (at start: those this broker was running
    /// when it stopped; later: those whose instance died), each from its checkpoint.
    pub async fn resume_rewrap_jobs(self: &Arc<Self>) -> Result<(), Error> {
        for job in self.store.claimable_rewrap_jobs().await? {
            // Taken here before the claim: the start-up resume and the first periodic scan can
            // overlap, and both would win the claim (it is this instance's own lease).
            if !self.try_begin(&job.id) {
                continue;
            }
            match self
                .store
                .claim_rewrap_job(&job.id, &self.instance, self.config.lease)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    self.finished_here(&job.id);
                    continue; // another instance claimed it first
                }
                Err(e) => {
                    self.finished_here(&job.id);
                    return Err(e.into());
                }
            }
            if let Err(e) = self.byok.reload_bindings().await {
                // Fail closed: no job runs on a routing view that may be stale.
                let _ = self.store.release_rewrap_job(&job.id, &self.instance).await;
                self.finished_here(&job.id);
                return Err(e);
            }
            tracing::info!(job_id = %job.id, checkpoint = job.checkpoint_seq, instance = %self.instance, "resuming rewrap job");
            self.spawn_job(job).await;
        }
        Ok(())
    }

    /// Runs a job this instance holds the lease of and has marked as its own ([`Self::try_begin`]).
    /// Refused during shutdown: the lease is given up at once, so another instance resumes the
    /// job at its next scan instead of after the lease runs out.
    async fn spawn_job(self: &Arc<Self>, job: RewrapJobRecord) {
        let rewrap = Arc::clone(self);
        let job_id = job.id.clone();
        let started = self
            .supervisor
            .spawn(Stage::Workers, "rewrap job", move |stop| {
                run_job(rewrap, job, stop)
            });
        if !started {
            self.finished_here(&job_id);
            if let Err(e) = self.store.release_rewrap_job(&job_id, &self.instance).await {
                tracing::warn!(job_id, error = %e, "could not give up the lease of a job not started at shutdown; it resumes once the lease runs out");
            }
        }
    }

    /// Marks a job as run here; false when a task here already has it. The one gate against
    /// running a job twice in this process.
    fn try_begin(&self, job_id: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job_id.to_owned())
    }

    fn finished_here(&self, job_id: &str) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(job_id);
    }
}

/// Every claim scan, resumes the jobs whose lease ran out; ends with `stop` or the service.
pub async fn run_claims(rewrap: Weak<Rewrap>, stop: CancellationToken) {
    loop {
        let Some(scan) = rewrap.upgrade().map(|r| r.config.claim_scan()) else {
            return;
        };
        if stop
            .run_until_cancelled(tokio::time::sleep(scan))
            .await
            .is_none()
        {
            return;
        }
        let Some(rewrap) = rewrap.upgrade() else {
            return;
        };
        if let Err(e) = rewrap.resume_rewrap_jobs().await {
            tracing::warn!(error = %e, "rewrap claim scan failed; retried at the next scan");
        }
    }
}
