//! API keys, stored only as SHA-256 hashes of the token (tokens are 256-bit random, so a fast
//! hash is enough); lookups go by hash and the caller compares in constant time.

use super::sql::{Row, args};
use super::{Store, StoreError};
use crate::timestamp::Timestamp;

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub role: String,
    pub scope_json: Option<String>,
    pub key_hash: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub scope_json: Option<String>,
    pub key_hash: Vec<u8>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

const COLUMNS: &str = "id, name, role, scope_json, key_hash, created_at, revoked_at";

fn from_row(r: &Row) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        scope_json: r.get(3)?,
        key_hash: r.get(4)?,
        created_at: r.get(5)?,
        revoked_at: r.get(6)?,
    })
}

impl Store {
    /// Inserts a key; a key whose hash exists already is left as it is (bootstrap keys on restart).
    pub async fn insert_api_key(&self, key: NewApiKey) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO api_keys (id, name, role, scope_json, key_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key_hash) DO NOTHING",
                args![key.id, key.name, key.role, key.scope_json, key.key_hash.as_slice(), Timestamp::now().to_rfc3339()],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn find_api_key_by_hash(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(move |c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = ?1"),
                args![hash.as_slice()],
            )?
            .as_ref()
            .map(from_row)
            .transpose()
        })
        .await
    }

    pub async fn find_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                args![id],
            )?
            .as_ref()
            .map(from_row)
            .transpose()
        })
        .await
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|c| {
            c.query(
                &format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"),
                &[],
            )?
            .iter()
            .map(from_row)
            .collect()
        })
        .await
    }

    pub async fn count_api_keys(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            c.query_one(
                "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL",
                &[],
            )?
            .get(0)
        })
        .await
    }

    pub async fn revoke_api_key(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let changed = c.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = ?2",
                args![Timestamp::now().to_rfc3339(), id],
            )?;
            if changed == 0 {
                Err(StoreError::NotFound("API key"))
            } else {
                Ok(())
            }
        })
        .await
    }
}
