//! Idempotency records: the first response to `(api key, Idempotency-Key)`, replayed for retries
//! of the same request. A key is claimed atomically before any work (a pending row; the primary
//! key decides between concurrent requests), and the response replaces the claim in the same
//! transaction as the object, so one key never yields two objects. On PostgreSQL a claim also
//! names the writer session that made it: once that session is gone (its broker was killed), the
//! claim is taken over at once instead of after `STALE_CLAIM`.

use super::objects::NewObject;
use super::sql::{Dialect, Sql, args};
use super::{AuditEvent, Store, StoreError};
use crate::timestamp::Timestamp;

/// A pending claim older than this may be taken over: its holder crashed or hung. The holder's
/// completion checks its token, so a takeover can cost a slow request its object, never duplicate it.
const STALE_CLAIM: std::time::Duration = std::time::Duration::from_secs(60);

/// PostgreSQL: the claim's holder is gone, because the writer session whose backend pid ends its
/// token (`<random>.<pid>`) no longer exists; a broker's writer session ends with its process.
/// A pid reused meanwhile only delays the takeover until `STALE_CLAIM`; a session lost while its
/// broker lives costs that request its claim (completion checks the token), never a duplicate.
/// Tokens without a pid (made by earlier releases) wait for `STALE_CLAIM`.
const HOLDER_GONE_POSTGRES: &str = "(idempotency.claim_token IS NOT NULL \
     AND split_part(idempotency.claim_token, '.', 2) <> '' \
     AND NOT EXISTS (SELECT 1 FROM pg_stat_activity \
     WHERE pid::TEXT = split_part(idempotency.claim_token, '.', 2)))";

/// Whether a pending claim's holder is known to be gone, as SQL for `dialect`: on SQLite one
/// process owns the database, so a holder it cannot see is only ever a stale one.
fn holder_gone(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => HOLDER_GONE_POSTGRES,
        Dialect::Sqlite => "0",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub request_hash: Vec<u8>,
    pub status: u16,
    pub body: String,
}

/// A claim this request holds on an `Idempotency-Key`; only its token completes or releases it.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    api_key_id: String,
    key: String,
    token: String,
}

/// What another request left under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyRecord {
    /// Finished: replay it.
    Completed(StoredResponse),
    /// Claimed by a request still running (`request_hash` of that request).
    InFlight { request_hash: Vec<u8> },
}

#[derive(Debug)]
pub enum ClaimOutcome {
    Won(IdempotencyClaim),
    Taken(IdempotencyRecord),
}

/// The record under `key`, unless it expired (created before `expired_before`). With
/// `skip_orphaned`, a pending claim whose holder is gone counts as no record: the caller may claim.
fn find_in(
    c: &mut dyn Sql,
    api_key_id: &str,
    key: &str,
    expired_before: &str,
    skip_orphaned: bool,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let sql = format!(
        "SELECT request_hash, status, body, claim_token IS NOT NULL, {} FROM idempotency \
         WHERE api_key_id = ?1 AND key = ?2 AND created_at >= ?3",
        holder_gone(c.dialect())
    );
    let Some(r) = c.query_opt(&sql, args![api_key_id, key, expired_before])? else {
        return Ok(None);
    };
    if skip_orphaned && r.get::<bool>(4)? {
        return Ok(None);
    }
    let request_hash: Vec<u8> = r.get(0)?;
    Ok(Some(if r.get::<bool>(3)? {
        IdempotencyRecord::InFlight { request_hash }
    } else {
        IdempotencyRecord::Completed(StoredResponse {
            request_hash,
            status: r.get::<i64>(1)? as u16,
            body: r.get(2)?,
        })
    }))
}

impl Store {
    /// Claims `key` for a request with `request_hash`, unless another request holds or finished it
    /// within the retention period (an expired record is replaced, as if the key were new).
    pub async fn claim_idempotency(
        &self,
        api_key_id: &str,
        key: &str,
        request_hash: Vec<u8>,
    ) -> Result<ClaimOutcome, StoreError> {
        let claim = IdempotencyClaim {
            api_key_id: api_key_id.to_owned(),
            key: key.to_owned(),
            token: uuid::Uuid::new_v4().simple().to_string(),
        };
        let now = Timestamp::now();
        let stale_before = Timestamp(now.0.saturating_sub(STALE_CLAIM.as_micros() as i64));
        let expired_before = self.idempotency_expired_before();
        self.run(move |c| {
            // On PostgreSQL the stored token also names the writer session that made the claim
            // (`<random>.<backend pid>`), computed in the upsert itself: no extra round trip.
            let token = match c.dialect() {
                Dialect::Postgres => "?5 || '.' || pg_backend_pid()",
                Dialect::Sqlite => "?5",
            };
            let holder_gone = holder_gone(c.dialect());
            let won = c.query_opt(
                &format!(
                    "INSERT INTO idempotency (api_key_id, key, request_hash, status, body, created_at, claim_token) \
                     VALUES (?1, ?2, ?3, 0, '', ?4, {token}) \
                     ON CONFLICT (api_key_id, key) DO UPDATE SET request_hash = excluded.request_hash, \
                     created_at = excluded.created_at, claim_token = excluded.claim_token \
                     WHERE (idempotency.claim_token IS NOT NULL AND idempotency.created_at < ?6) \
                     OR idempotency.created_at < ?7 OR {holder_gone} \
                     RETURNING claim_token"
                ),
                args![claim.api_key_id, claim.key, request_hash, now.to_rfc3339(), claim.token, stale_before.to_rfc3339(), expired_before],
            )?;
            if let Some(stored) = won {
                let token = stored.get(0)?;
                return Ok(ClaimOutcome::Won(IdempotencyClaim { token, ..claim }));
            }
            // The row that refused the claim is still there: SQLite's one writer runs nothing in
            // between, and on PostgreSQL the upsert locked it even though its WHERE refused.
            find_in(c, &claim.api_key_id, &claim.key, &expired_before, false)?
                .map(ClaimOutcome::Taken)
                .ok_or_else(|| StoreError::Internal("idempotency row vanished during its claim".into()))
        })
        .await
    }

    /// The record under `key` as a waiting retry sees it: a claim whose holder is gone is none,
    /// so the retry claims the key again instead of waiting for the claim to go stale.
    pub async fn find_idempotent(
        &self,
        api_key_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let (api_key_id, key) = (api_key_id.to_owned(), key.to_owned());
        let expired_before = self.idempotency_expired_before();
        self.read(move |c| find_in(c, &api_key_id, &key, &expired_before, true))
            .await
    }

    /// Records created before this have expired (RFC 3339, which orders as text).
    fn idempotency_expired_before(&self) -> String {
        let retention = self.retention.idempotency.as_micros();
        let now = Timestamp::now();
        Timestamp(
            now.0
                .saturating_sub(i64::try_from(retention).unwrap_or(i64::MAX)),
        )
        .to_rfc3339()
    }

    /// Gives a claim up after a failed attempt, so a retry can run; a stored response stays.
    pub async fn release_idempotency(&self, claim: &IdempotencyClaim) -> Result<(), StoreError> {
        let claim = claim.clone();
        self.run(move |c| {
            c.execute(
                "DELETE FROM idempotency WHERE api_key_id = ?1 AND key = ?2 AND claim_token = ?3",
                args![claim.api_key_id, claim.key, claim.token],
            )?;
            Ok(())
        })
        .await
    }

    /// Inserts an object (as [`Store::insert_object`]) and, in the same transaction, replaces
    /// `claim` with `response`. A claim taken over meanwhile rolls the object back.
    pub async fn insert_object_idempotent(
        &self,
        object: NewObject,
        events: Vec<AuditEvent>,
        claim: &IdempotencyClaim,
        response: StoredResponse,
    ) -> Result<(), StoreError> {
        let claim = claim.clone();
        self.insert_object_then(object, events, move |c| {
            let completed = c.execute(
                "UPDATE idempotency SET status = ?1, body = ?2, claim_token = NULL \
                 WHERE api_key_id = ?3 AND key = ?4 AND claim_token = ?5",
                args![
                    i64::from(response.status),
                    response.body,
                    claim.api_key_id,
                    claim.key,
                    claim.token
                ],
            )?;
            if completed == 1 {
                Ok(())
            } else {
                Err(StoreError::IdempotencyClaimLost)
            }
        })
        .await
    }
}

#[cfg(test)]
#[path = "idempotency_tests.rs"]
mod tests;
