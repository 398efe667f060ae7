//! Idempotency records: the first response to `(api key, Idempotency-Key)`, replayed for retries
//! of the same request, so a retried create does not come back as 409.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};
use crate::timestamp::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub request_hash: Vec<u8>,
    pub status: u16,
    pub body: String,
}

impl Store {
    pub async fn find_idempotent(
        &self,
        api_key_id: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let (api_key_id, key) = (api_key_id.to_owned(), key.to_owned());
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT request_hash, status, body FROM idempotency WHERE api_key_id = ?1 AND key = ?2",
                params![api_key_id, key],
                |r| Ok(StoredResponse { request_hash: r.get(0)?, status: r.get::<_, i64>(1)? as u16, body: r.get(2)? }),
            )
            .optional()?)
        })
        .await
    }

    pub async fn save_idempotent(
        &self,
        api_key_id: &str,
        key: &str,
        response: StoredResponse,
    ) -> Result<(), StoreError> {
        let (api_key_id, key) = (api_key_id.to_owned(), key.to_owned());
        self.run(move |c| {
            c.execute(
                "INSERT INTO idempotency (api_key_id, key, request_hash, status, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![api_key_id, key, response.request_hash, response.status as i64, response.body, Timestamp::now().to_rfc3339()],
            )?;
            Ok(())
        })
        .await
    }
}
