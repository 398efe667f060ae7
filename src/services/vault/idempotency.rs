//! Idempotent create (`Idempotency-Key`): claim the key atomically in the store, replay a finished
//! response or wait briefly for one in flight. A different body under a used key is refused; a
//! failed (or abandoned) attempt frees the claim; the response is stored in the object's transaction.

use std::time::Duration;

use crate::auth::Principal;
use crate::context::KeyContext;
use crate::error::Error;
use crate::store::{ClaimOutcome, IdempotencyClaim, IdempotencyRecord, Store, StoredResponse};

use super::{IdempotentCreate, ObjectMeta, Vault};

/// How long a retry waits for the same request in flight before answering 409: longer than a
/// typical create, short enough that a hung first attempt does not hold connections.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);

/// What an idempotent create answers.
pub enum IdempotentOutcome {
    /// This request created the object.
    Created(ObjectMeta),
    /// An earlier request with this key and body did: its response, to send again.
    Replay { status: u16, body: String },
}

/// An idempotent create's request: the key, a hash of the exact body, and how to render the
/// response to store from the new object's metadata (status, body).
pub struct IdempotencyRequest<'a> {
    pub key: &'a str,
    pub request_hash: Vec<u8>,
    pub respond: fn(&ObjectMeta) -> (u16, String),
}

enum Begin {
    Replay(StoredResponse),
    Run(IdempotencyClaim),
}

impl Vault {
    /// Creates an object once per (API key, `Idempotency-Key`).
    pub async fn create_object_idempotent(
        &self,
        principal: &Principal,
        name: &str,
        value: &str,
        context: KeyContext,
        request: IdempotencyRequest<'_>,
    ) -> Result<IdempotentOutcome, Error> {
        let claim = match begin(
            &self.store,
            &principal.key_id,
            request.key,
            &request.request_hash,
        )
        .await?
        {
            Begin::Replay(stored) => {
                return Ok(IdempotentOutcome::Replay {
                    status: stored.status,
                    body: stored.body,
                });
            }
            Begin::Run(claim) => claim,
        };
        let mut guard = ReleaseOnDrop {
            store: self.store.clone(),
            claim: Some(claim.clone()),
        };
        let once = IdempotentCreate {
            claim: &claim,
            respond: request.respond,
            request_hash: request.request_hash,
        };
        let created = self
            .create_object_once(principal, name, value, context, Some(once))
            .await;
        guard.claim = None;
        match created {
            Ok(meta) => Ok(IdempotentOutcome::Created(meta)),
            Err(e) => {
                // A failed attempt leaves nothing to replay: free the key for a retry.
                release(&self.store, &claim).await;
                Err(e)
            }
        }
    }
}

/// Claims `key`, or replays / refuses according to what another request left under it.
async fn begin(
    store: &Store,
    api_key_id: &str,
    key: &str,
    request_hash: &[u8],
) -> Result<Begin, Error> {
    let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        let record = match store
            .claim_idempotency(api_key_id, key, request_hash.to_vec())
            .await?
        {
            ClaimOutcome::Won(claim) => return Ok(Begin::Run(claim)),
            ClaimOutcome::Taken(record) => record,
        };
        // Poll with reads (not claims) while the first request runs; a released key is claimed again.
        let mut record = Some(record);
        while let Some(current) = record {
            match current {
                IdempotencyRecord::Completed(stored) if stored.request_hash != request_hash => {
                    return Err(Error::IdempotencyKeyReused);
                }
                IdempotencyRecord::Completed(stored) => return Ok(Begin::Replay(stored)),
                IdempotencyRecord::InFlight {
                    request_hash: theirs,
                } if theirs != request_hash => {
                    return Err(Error::IdempotencyKeyReused);
                }
                IdempotencyRecord::InFlight { .. } => {
                    if tokio::time::Instant::now() + pause > deadline {
                        return Err(Error::IdempotencyInFlight);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                    record = store.find_idempotent(api_key_id, key).await?;
                }
            }
        }
    }
}

/// Releases `claim` after its request failed, so a retry can run. Should the release itself fail,
/// the claim lapses after the store's stale-claim bound.
async fn release(store: &Store, claim: &IdempotencyClaim) {
    if let Err(e) = store.release_idempotency(claim).await {
        tracing::warn!(error = %e, "idempotency claim not released; it lapses when stale");
    }
}

/// Releases the claim if the request is dropped mid-way (client gone): the future never reaches
/// its own release. Disarmed once the request finished either way.
struct ReleaseOnDrop {
    store: Store,
    claim: Option<IdempotencyClaim>,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let (Some(claim), Ok(runtime)) =
            (self.claim.take(), tokio::runtime::Handle::try_current())
        {
            let store = self.store.clone();
            runtime.spawn(async move { release(&store, &claim).await });
        }
    }
}
