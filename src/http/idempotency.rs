//! The `Idempotency-Key` flow of creates: validate the header (1–255 printable ASCII characters,
//! else 422), claim the key atomically in the store, and replay a finished response or wait briefly
//! for one in flight. A different body under a used key is 422; a key is never silently ignored.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::{Error, ErrorCode};
use crate::store::{ClaimOutcome, IdempotencyClaim, IdempotencyRecord, Store, StoredResponse};

/// Longest key accepted (Stripe's bound; the SDKs send `retry-<uuid>`, 42 characters).
pub const MAX_KEY_CHARS: usize = 255;
/// How long a retry waits for the same request in flight before answering 409: longer than a
/// typical create, short enough that a hung first attempt does not hold connections.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);

/// The request's `Idempotency-Key`, if any; present but malformed (or repeated) is an error.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let printable = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
    if values.next().is_some() || bytes.is_empty() || bytes.len() > MAX_KEY_CHARS || !printable {
        return Err(Error::invalid(
            ErrorCode::InvalidIdempotencyKey,
            format!(
                "Idempotency-Key must be one header of 1-{MAX_KEY_CHARS} printable ASCII characters"
            ),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

pub enum Begin {
    /// The first response to this request, to send again.
    Replay(Response),
    /// This request holds the key: run it, then complete or release the claim.
    Run(IdempotencyClaim),
}

/// Claims `key`, or replays / refuses according to what another request left under it.
pub async fn begin(
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
                IdempotencyRecord::Completed(stored) => return replay(stored, request_hash),
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

fn replay(stored: StoredResponse, request_hash: &[u8]) -> Result<Begin, Error> {
    if stored.request_hash != request_hash {
        return Err(Error::IdempotencyKeyReused);
    }
    let status = StatusCode::from_u16(stored.status)
        .map_err(|e| Error::Internal(format!("stored idempotent status: {e}")))?;
    let body: Value = serde_json::from_str(&stored.body)
        .map_err(|e| Error::Internal(format!("stored idempotent body: {e}")))?;
    Ok(Begin::Replay((status, Json(body)).into_response()))
}

/// Releases `claim` after its request failed, so a retry can run. Should the release itself fail,
/// the claim lapses after the store's stale-claim bound.
pub async fn release(store: &Store, claim: &IdempotencyClaim) {
    if let Err(e) = store.release_idempotency(claim).await {
        tracing::warn!(error = %e, "idempotency claim not released; it lapses when stale");
    }
}

/// Releases the claim if the request is dropped mid-way (client gone): the future never reaches
/// its own release. Disarmed once the request finished either way.
pub struct ReleaseOnDrop {
    pub store: Store,
    pub claim: Option<IdempotencyClaim>,
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
